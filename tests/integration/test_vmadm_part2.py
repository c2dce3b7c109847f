# SPDX-License-Identifier: MIT
"""vmadm's and vmclient's part 2 commands against the real vmmd: people and
roles, groups, bookings with the time left, history, VM metadata and access,
monitoring, the OS catalog, requests, watch --since replaying the durable
feed, the console's new words, and a member of the users group booking with
plain `vmadm` (a real Unix user and group, made for the test).

Every command in human and --json output, and its errors: status 1 with the
daemon's code, 2 for usage. Needs VMMD_BIN, VMADM_BIN and VMCLIENT_BIN
(meson passes them)."""

import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time

import pytest

import vmmtest
from test_vmadm import Lines, create, table, vmadm, vmadm_bin, vmadm_env, vmadm_json

VMCLIENT_BIN = os.environ.get('VMCLIENT_BIN')
TIME = r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC'
HOUR_MS = 3600 * 1000


def vmadm_err(daemon, code, *args, **kw):
    """A command that the daemon refuses: status 1, 'vmadm: CODE: ...' on
    stderr, nothing on stdout; -> the message."""
    p = vmadm(daemon, *args, check=1, **kw)
    assert p.err.startswith(f'vmadm: {code}: '), (args, p.err)
    assert p.out == '', (args, p.out)
    return p.err[len(f'vmadm: {code}: '):].strip()


def vmadm_usage(daemon, *args, **kw):
    p = vmadm(daemon, *args, check=2, **kw)
    assert p.err.startswith('vmadm: '), (args, p.err)
    assert p.out == '', (args, p.out)
    return p.err


def no_protocol_words(text):
    """Plain messages: no method names or wire fields."""
    for word in ('booking.create', 'vm.set', 'user.create', 'group.', 'vm_ids', 'params',
                 'msgpack', 'expected one of', 'expected a string'):
        assert word not in text, f'protocol words in {text!r}'


def user_login(daemon, name, password):
    """A person's session over TCP (user.auth) -> the attached client."""
    c = daemon.client(timeout=60)
    res = c.ok('user.auth', {'name': name, 'password': password}, timeout=60)
    assert res['name'] == name and vmmtest.TOKEN_RE.match(res['token'])
    c.token = res['token']
    return c


# ---- help ----

def test_help_of_subcommands():
    for word, subs in (('user', ['add', 'list', 'show', 'set', 'del']),
                       ('group', ['add', 'list', 'show', 'rename', 'put', 'rm', 'del']),
                       ('os', ['add', 'list', 'del']),
                       ('request', ['add', 'list', 'approve', 'reject', 'cancel'])):
        p = vmadm(None, 'help', word)
        assert p.out.startswith(f'Usage: vmadm [OPTIONS] {word} {subs[0]} '), p.out
        listed = re.findall(r'^  ([a-z]+)  ', p.out.split('Subcommands:')[1], re.M)
        assert listed == subs, p.out
        assert vmadm(None, word, '--help').out == p.out
        for sub in subs:
            a = vmadm(None, 'help', word, sub)
            b = vmadm(None, word, sub, '--help')
            assert a.out == b.out and a.out.startswith(f'Usage: vmadm [OPTIONS] {word} {sub}')
    vmadm_usage(None, 'user', socket_path='/nonexistent')
    err = vmadm_usage(None, 'user', 'frob', socket_path='/nonexistent')
    assert "unknown subcommand 'frob'" in err and 'add, list, show, set, del' in err
    vmadm_usage(None, 'help', 'user', 'frob')
    vmadm_usage(None, 'help', 'status', 'x')


@pytest.mark.parametrize('args', [
    ['book', 'vm1'], ['book', 'vm1', '--hours', '1', '--minutes', '5'],
    ['book', 'vm1', '--group', 'g', '--hours', '1'], ['book', '--hours', '1'],
    ['book', 'vm1', '--hours', '0'], ['book', 'vm1', '--hours', 'x'],
    ['renew', 'vm1'], ['renew', '--hours', '1'], ['cancel'], ['cancel', 'a', 'b'],
    ['user', 'add'], ['user', 'add', 'a', '--role', 'king'], ['user', 'set', 'a'],
    ['user', 'set', 'a', '--password-stdin', '--new-password'], ['user', 'show'],
    ['group', 'add'], ['group', 'put', '1'], ['group', 'rename', '1'], ['group', 'show', '0'],
    ['set', 'vm1'], ['set', 'vm1', '--ram', 'lots'], ['set', 'vm1', '--os', ':12'],
    ['set', 'vm1', '--disk', 'd1:0'], ['set', 'vm1', '--disk', '', '--disk', '5'],
    ['os', 'add', 'Debian'], ['os', 'del', 'x'], ['request', 'add', 'x', '--ram', '1'],
    ['request', 'list', '--state', 'odd'], ['request', 'approve', '1'],
    ['request', 'reject', 'x', 'why'], ['watch', '--since', 'x'], ['watch', '--types', ','],
    ['list', '--status', 'maybe'], ['bookings', 'x'], ['history', '--vm'],
    ['approve'], ['suspend', 'a', 'b'], ['monitor'], ['whoami', 'x'], ['status', '--hours', '1'],
    ['revoke', 'vm1', '--user', 'u'], ['sessions', 'vm1', '--user', 'u'],
])
def test_usage_errors(args):
    err = vmadm_usage(None, *args, socket_path='/nonexistent/admin.sock')
    assert 'vmadm: ' in err
    p = vmadm(None, '--json', *args, socket_path='/nonexistent/admin.sock', check=2)
    assert json.loads(p.out)['error']['code'] == 'usage'


# ---- whoami, users ----

def test_whoami(daemon):
    p = vmadm(daemon, 'whoami')
    assert re.search(r'^kind:\s+user$', p.out, re.M), p.out
    assert re.search(r'^name:\s+root$', p.out, re.M) and re.search(r'^role:\s+admin$', p.out,
                                                                   re.M), p.out
    assert vmadm_json(daemon, 'whoami') == {'kind': 'user', 'name': 'root', 'role': 'admin'}


def test_users(daemon):
    p = vmadm(daemon, 'user', 'add', 'alice')
    m = re.match(r'^created user alice \(role user\)\npassword: (\S+)\n$', p.out)
    assert m, p.out
    alice_pw = m.group(1)
    res = vmadm_json(daemon, 'user', 'add', 'bob@example.org', '--role', 'viewer',
                     '--password-stdin', stdin='bob-password\n')
    assert res == {'name': 'bob@example.org', 'role': 'viewer', 'password': 'bob-password'}

    header, rows = table(vmadm(daemon, 'user', 'list').out)
    assert header == ['NAME', 'ROLE', 'CREATED', 'LAST_LOGIN']
    assert [r[:2] for r in rows] == [['alice', 'user'], ['bob@example.org', 'viewer']]
    assert re.match(TIME, rows[0][2]) and rows[0][3] == '-', rows
    users = vmadm_json(daemon, 'user', 'list', '--limit', '1')['users']
    assert [u['name'] for u in users] == ['alice', 'bob@example.org']
    assert all(set(u) == {'name', 'role', 'created_at', 'last_login_at'} for u in users)

    # the password works over TCP, and last_login_at follows
    c = user_login(daemon, 'alice', alice_pw)
    assert c.ok('whoami') == {'kind': 'user', 'name': 'alice', 'role': 'user'}
    shown = vmadm(daemon, 'user', 'show', 'alice').out
    assert re.search(r'^role:\s+user$', shown, re.M), shown
    assert re.search(rf'^last_login_at:\s+{TIME}$', shown, re.M), shown
    assert vmadm_json(daemon, 'user', 'show', 'alice')['last_login_at'] > 0

    # a new role keeps the session; a new password ends it
    p = vmadm(daemon, 'user', 'set', 'alice', '--role', 'admin')
    assert p.out == 'changed user alice (role admin)\n', p.out
    assert c.ok('whoami')['role'] == 'admin'
    p = vmadm(daemon, 'user', 'set', 'alice', '--new-password')
    m = re.search(r'^new password for user alice \(its sessions ended\)\npassword: (\S+)$', p.out,
                  re.M)
    assert m, p.out
    assert c.err('whoami', None, 'unauthenticated')
    c.close()
    user_login(daemon, 'alice', m.group(1)).close()
    res = vmadm_json(daemon, 'user', 'set', 'alice', '--password-stdin', '--role', 'user',
                     stdin='third-password\n')
    assert res['role'] == 'user' and res['password'] == 'third-password', res
    user_login(daemon, 'alice', 'third-password').close()

    # a person's sessions: listed and ended by name
    c = user_login(daemon, 'alice', 'third-password')
    header, rows = table(vmadm(daemon, 'sessions', '--user', 'alice').out)
    assert header == ['ID', 'VM', 'USER', 'CREATED', 'EXPIRES', 'CONNECTED']
    # the one of the login before (its connection closed, the session stays) and this one
    assert sorted((r[1], r[2], r[5]) for r in rows) == [('-', 'alice', 'no'),
                                                         ('-', 'alice', 'yes')], rows
    assert vmadm(daemon, 'revoke', '--user', 'alice').out == 'revoked 2 sessions\n'
    c.err('whoami', None, 'unauthenticated')
    c.close()
    assert vmadm_json(daemon, 'sessions', '--user', 'alice') == {'sessions': []}

    # errors, in plain words
    assert 'already exists' in vmadm_err(daemon, 'exists', 'user', 'add', 'alice')
    assert "user 'nobody' does not exist" in vmadm_err(daemon, 'not_found', 'user', 'show',
                                                        'nobody')
    vmadm_err(daemon, 'not_found', 'user', 'set', 'nobody', '--role', 'user')
    vmadm_err(daemon, 'not_found', 'user', 'del', 'nobody')
    msg = vmadm_err(daemon, 'bad_request', 'user', 'add', 'bad name!')
    assert msg.startswith('a user name is 1 to 64 letters'), msg
    msg = vmadm_err(daemon, 'bad_request', 'user', 'add', 'carol', '--password-stdin',
                    stdin='short\n')
    assert msg == 'a password is 6 to 1024 bytes', msg
    assert vmadm_json(daemon, 'user', 'list')['users'][0]['name'] == 'alice'

    p = vmadm(daemon, 'user', 'del', 'bob@example.org')
    assert p.out == 'deleted user bob@example.org (its bookings and sessions ended)\n'
    assert vmadm_json(daemon, 'user', 'del', 'alice') == {}
    assert vmadm(daemon, 'user', 'list').out == '(no users)\n'
    assert vmadm_json(daemon, 'user', 'list') == {'users': []}


# ---- groups ----

def test_groups(daemon):
    for v in ('vm1', 'vm2', 'vm3'):
        create(daemon, v)
    p = vmadm(daemon, 'group', 'add', 'pool', 'vm1', 'vm2')
    assert re.search(r'^id:\s+1$', p.out, re.M) and re.search(r'^vms:\s+vm1, vm2$', p.out, re.M)
    assert re.search(rf'^created_at:\s+{TIME}$', p.out, re.M), p.out
    g2 = vmadm_json(daemon, 'group', 'add', 'empty pool')
    assert g2['id'] == 2 and g2['name'] == 'empty pool' and g2['vm_ids'] == []

    header, rows = table(vmadm(daemon, 'group', 'list').out)
    assert header == ['ID', 'NAME', 'CREATED', 'VMS']
    assert [(r[0], r[1], r[3]) for r in rows] == [('1', 'pool', 'vm1, vm2'),
                                                  ('2', 'empty pool', '-')], rows
    assert [g['id'] for g in vmadm_json(daemon, 'group', 'list', '--limit', '1')['groups']] == \
        [1, 2]

    # show: the record and the pool, by id or by name
    vmadm(daemon, 'book', 'vm2', '--hours', '1')
    out = vmadm(daemon, 'group', 'show', 'pool').out
    rec, pool = out.split('\n\n')
    assert re.search(r'^name:\s+pool$', rec, re.M), out
    header, rows = table(pool)
    assert header == ['VM_ID', 'STATUS', 'ACCESS', 'BOOKED_BY', 'EXPIRES', 'LEFT']
    assert rows[0] == ['vm1', 'off', 'active', '-', '-', '-'], rows
    assert rows[1][:4] == ['vm2', 'off', 'active', 'root'] and re.match(TIME, rows[1][4])
    assert re.match(r'^(1h 0m|59m \d+s) left$', rows[1][5]), rows
    assert vmadm(daemon, 'group', 'show', '1').out == out
    assert vmadm_json(daemon, 'group', 'show', 'pool')['vm_ids'] == ['vm1', 'vm2']

    # rename, put (moves from the other group), rm, del
    assert vmadm_json(daemon, 'group', 'rename', 'pool', 'the pool')['name'] == 'the pool'
    assert vmadm_json(daemon, 'group', 'put', '2', 'vm1', 'vm3')['vm_ids'] == ['vm1', 'vm3']
    assert vmadm_json(daemon, 'group', 'show', '1')['vm_ids'] == ['vm2']
    assert vmadm_json(daemon, 'show', 'vm1')['group'] == 2
    p = vmadm(daemon, 'group', 'rm', 'vm3')
    assert p.out == 'VM vm3 left group 2 (empty pool)\n', p.out
    msg = vmadm_err(daemon, 'not_found', 'group', 'rm', 'vm3')
    assert 'not in any group' in msg, msg
    vmadm_err(daemon, 'not_found', 'group', 'rm', 'vm1', '--group', 'the pool')
    assert vmadm_json(daemon, 'group', 'rm', 'vm1', '--group', '2')['id'] == 2

    # all or nothing: one unknown VM moves none
    msg = vmadm_err(daemon, 'not_found', 'group', 'put', '1', 'vm1', 'nope')
    assert "VM 'nope' does not exist" in msg
    assert vmadm_json(daemon, 'group', 'show', '1')['vm_ids'] == ['vm2']

    vmadm_err(daemon, 'exists', 'group', 'add', 'the pool')
    vmadm_err(daemon, 'exists', 'group', 'rename', '2', 'the pool')
    assert 'group 9 does not exist' in vmadm_err(daemon, 'not_found', 'group', 'show', '9')
    msg = vmadm_err(daemon, 'not_found', 'group', 'show', 'no such pool')
    assert msg == "no group is named 'no such pool' (see 'vmadm group list')", msg
    msg = vmadm_err(daemon, 'bad_request', 'group', 'add', 'x' * 65)
    assert msg.startswith('a group name is 1 to 64 bytes'), msg
    p = vmadm(daemon, '--json', 'group', 'show', 'no such pool', check=1)
    assert json.loads(p.out)['error']['code'] == 'not_found'

    p = vmadm(daemon, 'group', 'del', 'the pool')
    assert p.out == 'deleted group 1 (its VMs stay, in no group)\n', p.out
    assert vmadm_json(daemon, 'show', 'vm2')['group'] is None
    assert vmadm_json(daemon, 'group', 'del', '2') == {}
    assert vmadm(daemon, 'group', 'list').out == '(no groups)\n'


# ---- bookings ----

def booked_re(verb, vm, user, left):
    return rf'^{verb} VM {vm} for {user} until ({TIME}) \(({left}) left\)$'


def test_bookings(daemon):
    for v in ('vm1', 'vm2', 'vm3'):
        create(daemon, v)
    vmadm(daemon, 'group', 'add', 'pool', 'vm2', 'vm3')
    vmadm(daemon, 'user', 'add', 'alice')

    p = vmadm(daemon, 'book', 'vm1', '--hours', '2')
    assert re.match(booked_re('booked', 'vm1', 'root', r'2h 0m|1h 59m'), p.out), p.out
    b1 = vmadm_json(daemon, 'bookings')['bookings'][0]
    assert b1['expires_at'] - b1['started_at'] == 2 * HOUR_MS
    msg = vmadm_err(daemon, 'conflict', 'book', 'vm1', '--minutes', '5')
    assert msg == "VM 'vm1' is booked by root", msg

    # by group: a free VM of it, for someone else
    res = vmadm_json(daemon, 'book', '--group', 'pool', '--minutes', '30', '--for', 'alice')
    assert res['user'] == 'alice' and res['vm_id'] in ('vm2', 'vm3')
    assert res['expires_at'] - res['started_at'] == 30 * 60000
    other = 'vm3' if res['vm_id'] == 'vm2' else 'vm2'
    p = vmadm(daemon, 'book', '--group', '1', '--minutes', '30')
    assert re.match(booked_re('booked', other, 'root', r'30m 0s|29m \d+s'), p.out), p.out
    assert vmadm_err(daemon, 'conflict', 'book', '--group', 'pool', '--hours', '1') == \
        "no VM of group 'pool' is free"

    # renew: from the end, exactly
    p = vmadm(daemon, 'renew', 'vm1', '--minutes', '15')
    assert re.match(booked_re('renewed', 'vm1', 'root', r'2h 15m|2h 14m'), p.out), p.out
    r = vmadm_json(daemon, 'renew', 'vm1', '--hours', '1')
    assert r['expires_at'] == b1['expires_at'] + 15 * 60000 + HOUR_MS
    assert r['started_at'] == b1['started_at']

    # the list, whole and filtered
    header, rows = table(vmadm(daemon, 'bookings').out)
    assert header == ['VM_ID', 'USER', 'STARTED', 'EXPIRES', 'LEFT']
    assert [r[:2] for r in rows] == [['vm1', 'root'], ['vm2', 'alice' if other == 'vm3'
                                                       else 'root'],
                                     ['vm3', 'root' if other == 'vm3' else 'alice']], rows
    assert re.match(r'^3h 15m left|3h 14m left$', rows[0][4]), rows
    assert all(re.match(TIME, r[2]) and re.match(TIME, r[3]) for r in rows)
    assert [b['vm_id'] for b in vmadm_json(daemon, 'bookings', '--user', 'alice')['bookings']] \
        == [res['vm_id']]
    assert sorted(b['vm_id'] for b in
                  vmadm_json(daemon, 'bookings', '--group', 'pool')['bookings']) == ['vm2', 'vm3']
    assert vmadm(daemon, 'bookings', '--user', 'nobody').out == '(no bookings)\n'

    # show tells the booking and its time left
    shown = vmadm(daemon, 'show', 'vm1').out
    assert re.search(rf'^booking:\s+root until {TIME} \((3h 15m|3h 14m) left\)$', shown, re.M), \
        shown
    assert vmadm_json(daemon, 'show', 'vm1')['booking']['user'] == 'root'
    assert vmadm_json(daemon, 'list', '--booked-by', 'alice')['vms'][0]['vm_id'] == res['vm_id']

    # cancel, then history, newest first
    assert vmadm(daemon, 'cancel', 'vm1').out == 'cancelled the booking of VM vm1\n'
    assert vmadm_json(daemon, 'cancel', res['vm_id']) == {}
    msg = vmadm_err(daemon, 'not_found', 'cancel', 'vm1')
    assert msg == "VM 'vm1' is not booked", msg
    vmadm_err(daemon, 'not_found', 'book', 'nope', '--hours', '1')
    vmadm_err(daemon, 'not_found', 'book', '--group', '7', '--hours', '1')
    msg = vmadm_err(daemon, 'bad_request', 'book', 'vm1', '--hours', '169')
    assert msg == 'a booking ends at most 168 hours from now', msg
    no_protocol_words(msg)

    header, rows = table(vmadm(daemon, 'history').out)
    assert header == ['TIME', 'ACTION', 'VM_ID', 'USER', 'EXPIRES', 'BY']
    assert [(r[1], r[2]) for r in rows] == [
        ('end', res['vm_id']), ('cancel', 'vm1'), ('renew', 'vm1'), ('renew', 'vm1'),
        ('book', other), ('book', res['vm_id']), ('book', 'vm1')], rows
    assert rows[0][5] == 'root' and rows[1][5] == '-'      # an admin's cancel says who
    assert rows[5][3] == 'alice' and rows[5][5] == 'root'  # booked for alice by root
    entries = vmadm_json(daemon, 'history', '--vm', 'vm1')['entries']
    assert [e['action'] for e in entries] == ['cancel', 'renew', 'renew', 'book']
    feeds = [e['feed'] for e in entries]
    assert feeds == sorted(feeds, reverse=True)
    assert [e['action'] for e in vmadm_json(daemon, 'history', '--user', 'alice',
                                            '--limit', '1')['entries']] == ['end', 'book']
    assert vmadm(daemon, 'history', '--user', 'nobody').out == '(no history)\n'
    # every page, newest first, nothing twice
    assert vmadm_json(daemon, 'history', '--limit', '2') == vmadm_json(daemon, 'history')
    assert vmadm_json(daemon, 'bookings', '--limit', '1') == vmadm_json(daemon, 'bookings')


def test_book_for_nobody_is_refused(daemon):
    """booking.create for someone else: a user record or a login name
    (PROTOCOL.md), else not_found; a typo in --for books for nobody."""
    create(daemon, 'vm1')
    vmadm_err(daemon, 'not_found', 'book', 'vm1', '--hours', '1', '--for', 'no-such-person')
    assert vmadm_json(daemon, 'bookings') == {'bookings': []}
    # a login name with no user record is a person (here: a system account)
    vmadm(daemon, 'book', 'vm1', '--hours', '1', '--for', 'daemon')
    assert [b['user'] for b in vmadm_json(daemon, 'bookings')['bookings']] == ['daemon']


def test_bookings_per_user_limit(make_daemon):
    d = make_daemon(args=['--bookings-per-user', '1'])
    create(d, 'vm1')
    create(d, 'vm2')
    vmadm(d, 'book', 'vm1', '--minutes', '10')
    msg = vmadm_err(d, 'forbidden', 'book', 'vm2', '--minutes', '10')
    assert 'holds 1 bookings already' in msg, msg


# ---- VM records: set, approve, suspend, monitor ----

def test_set_and_clear(daemon):
    create(daemon, 'vm1')
    vmadm(daemon, 'group', 'add', 'pool')
    vmadm(daemon, 'user', 'add', 'alice')
    p = vmadm(daemon, 'set', 'vm1', '--owner', 'alice', '--hostname', 'web-01',
              '--ip', '10.0.0.5,fd00::5', '--ip', '10.0.0.6', '--os', 'Debian GNU/Linux:12',
              '--group', 'pool', '--ram', '2048', '--cpu', '2', '--disk', 'd1:10',
              '--disk', '20')
    for field, value in (('hostname', 'web-01'), ('ip', '10.0.0.5, fd00::5, 10.0.0.6'),
                         ('os', 'Debian GNU/Linux 12'), ('owner', 'alice'), ('group', '1'),
                         ('ram', '2048 MiB'), ('disks', 'd1 10 GiB, vm1-disk1 20 GiB'),
                         ('access', 'active'), ('status', 'off'), ('booking', '-')):
        assert re.search(rf'^{field}:\s+{re.escape(value)}$', p.out, re.M), (field, p.out)
    rec = vmadm_json(daemon, 'show', 'vm1')
    assert rec['hostname'] == 'web-01' and rec['ip'] == ['10.0.0.5', 'fd00::5', '10.0.0.6']
    assert rec['os'] == {'name': 'Debian GNU/Linux', 'version': '12'} and rec['owner'] == 'alice'
    assert rec['group'] == 1 and rec['cpu'] == 2
    assert [v['vm_id'] for v in vmadm_json(daemon, 'list', '--owner', 'alice')['vms']] == ['vm1']
    assert [v['vm_id'] for v in vmadm_json(daemon, 'list', '--group', 'pool')['vms']] == ['vm1']
    assert vmadm_json(daemon, 'list', '--status', 'on') == {'vms': []}

    # an empty value clears; --disk '' sets no disks; the rest stays
    rec = vmadm_json(daemon, 'set', 'vm1', '--owner', '', '--hostname', '', '--ip', '',
                     '--os', '', '--group', '', '--disk', '')
    assert rec['owner'] is None and rec['hostname'] is None and rec['ip'] == []
    assert rec['os'] is None and rec['group'] is None and rec['disks'] == []
    assert rec['ram'] == 2048
    shown = vmadm(daemon, 'show', 'vm1').out
    assert re.search(r'^owner:\s+-$', shown, re.M) and re.search(r'^ip:\s+-$', shown, re.M)
    rec = vmadm_json(daemon, 'set', 'vm1', '--os', 'Arch')
    assert rec['os'] == {'name': 'Arch', 'version': ''}

    # errors: plain words, nothing changed
    create(daemon, 'vm2')
    msg = vmadm_err(daemon, 'bad_request', 'set', 'vm2', '--disk', '5')
    assert msg == 'this VM has not described itself yet: give --ram and --cpu too', msg
    for args, start in ((['--hostname', 'bad host!'], 'a host name is at most 253 bytes'),
                        (['--ip', '300.1.1.1'], 'an address is an IPv4 or IPv6 address'),
                        (['--owner', 'x y'], 'an owner is a user name')):
        msg = vmadm_err(daemon, 'bad_request', 'set', 'vm1', *args)
        assert msg.startswith(start), msg
        no_protocol_words(msg)
    vmadm_err(daemon, 'not_found', 'set', 'vm1', '--group', '9')
    vmadm_err(daemon, 'not_found', 'set', 'vm1', '--group', 'no such group')
    vmadm_err(daemon, 'not_found', 'set', 'nope', '--owner', 'alice')
    assert vmadm_json(daemon, 'show', 'vm1')['hostname'] is None


def test_approve_and_suspend(make_daemon):
    d = make_daemon(args=['--registration', 'approval'])
    with d.client() as c:
        rec = c.register('vm1', ram=512, cpu=1, disks=[])
        assert rec['access'] == 'pending'
        c.err('auth', {'vm_id': 'vm1', 'password': vmmtest.PASSWORD}, 'forbidden')
    assert re.search(r'^access:\s+pending$', vmadm(d, 'show', 'vm1').out, re.M)
    vmadm_err(d, 'conflict', 'book', 'vm1', '--hours', '1')
    p = vmadm(d, 'approve', 'vm1')
    assert p.out == 'VM vm1 is active: it may log in and be booked\n', p.out
    c = d.client()
    c.auth('vm1')

    p = vmadm(d, 'suspend', 'vm1')
    assert p.out.startswith('VM vm1 is suspended: its sessions ended'), p.out
    c.err('vm.get', None, 'unauthenticated')
    c.err('auth', {'vm_id': 'vm1', 'password': vmmtest.PASSWORD}, 'forbidden')
    assert vmadm_err(d, 'conflict', 'book', 'vm1', '--hours', '1') == "VM 'vm1' is suspended"
    rec = vmadm_json(d, 'approve', 'vm1')
    assert rec['access'] == 'active' and rec['vm_id'] == 'vm1'
    c.auth('vm1')
    assert vmadm_json(d, 'suspend', 'vm1')['access'] == 'suspended'
    vmadm_err(d, 'not_found', 'approve', 'nope')
    vmadm_err(d, 'not_found', 'suspend', 'nope')
    c.close()


def test_monitor(daemon):
    create(daemon, 'idle')
    p = vmadm(daemon, 'monitor', 'idle')
    assert re.search(r'^status:\s+off$', p.out, re.M), p.out
    assert re.search(r'^reported_at:\s+-$', p.out, re.M), p.out
    assert 'history: (no reports in the last hour)' in p.out
    assert vmadm_json(daemon, 'monitor', 'idle') == {'vm_id': 'idle', 'status': 'off',
                                                    'reported_at': None, 'report': None,
                                                    'history': []}
    vmadm_err(daemon, 'not_found', 'monitor', 'nope')

    c = daemon.client()
    c.register('rep1', ram=2048, cpu=2, disks=[{'id': 'rd1', 'size': 20}])
    c.auth('rep1')
    c.ok('vm.report', {'uptime': 93784, 'load': [0.5, 0.25, 1.75], 'mem_total': 2048,
                       'mem_used': 512, 'disks_used': [{'id': 'rd1', 'used': 3}]})
    p = vmadm(daemon, 'monitor', 'rep1')
    for field, value in (('status', 'on'), ('uptime', '1d 2h 3m 4s'),
                         ('load', '0.50 0.25 1.75 (1, 5, 15 min)'),
                         ('memory', '512 MiB used of 2048 MiB'), ('disks_used', 'rd1 3 GiB')):
        assert re.search(rf'^{field}:\s+{re.escape(value)}$', p.out, re.M), (field, p.out)
    assert re.search(rf'^reported_at:\s+{TIME} \(\d+s ago\)$', p.out, re.M), p.out
    header, rows = table(p.out.split('one sample a minute):\n')[1])
    assert header == ['TIME', 'LOAD', 'MEM_USED', 'MEM_TOTAL', 'DISK_USED']
    assert len(rows) == 1 and rows[0][1:] == ['0.50', '512 MiB', '2048 MiB', '3 GiB'], rows
    mon = vmadm_json(daemon, 'monitor', 'rep1')
    assert mon['status'] == 'on' and mon['report']['uptime'] == 93784
    assert mon['report']['load'] == [0.5, 0.25, 1.75] and len(mon['history']) == 1
    c.close()


# ---- the OS catalog and requests ----

def test_os_catalog(daemon):
    p = vmadm(daemon, 'os', 'add', 'Debian', '12', '--iso', 'https://x/debian.iso',
              '--description', 'the stable one')
    assert p.out == 'added OS 1: Debian 12\n', p.out
    res = vmadm_json(daemon, 'os', 'add', 'Arch', '', '--qcow2', '/srv/arch.qcow2')
    assert res == {'id': 2, 'name': 'Arch', 'version': '', 'iso': None,
                   'qcow2': '/srv/arch.qcow2', 'description': ''}
    header, rows = table(vmadm(daemon, 'os', 'list').out)
    assert header == ['ID', 'NAME', 'VERSION', 'ISO', 'QCOW2', 'DESCRIPTION']
    assert rows[0] == ['1', 'Debian', '12', 'https://x/debian.iso', '-', 'the stable one'], rows
    assert [o['id'] for o in vmadm_json(daemon, 'os', 'list')['os']] == [1, 2]
    assert vmadm(daemon, 'os', 'del', '2').out == 'deleted OS 2 from the catalog\n'
    assert vmadm_json(daemon, 'os', 'del', '1') == {}
    assert vmadm(daemon, 'os', 'list').out == '(no OS in the catalog)\n'
    assert vmadm_err(daemon, 'not_found', 'os', 'del', '1') == 'no OS 1 in the catalog'
    msg = vmadm_err(daemon, 'bad_request', 'os', 'add', '', '1')
    assert msg.startswith('an OS name is 1 to 64 bytes'), msg


def test_requests(daemon):
    vmadm(daemon, 'os', 'add', 'Debian', '12')
    p = vmadm(daemon, 'request', 'add', 'two', 'web', 'servers', '--ram', '1024', '--cpu', '1',
              '--disk', '10', '--disk', '20', '--os', '1', '--count', '2')
    assert p.out.startswith('filed request 1\n'), p.out
    r2 = vmadm_json(daemon, 'request', 'add', 'a small one', '--ram', '512', '--cpu', '1')
    assert r2['id'] == 2 and r2['state'] == 'pending' and r2['count'] == 1 and r2['disks'] == []
    vmadm(daemon, 'request', 'add', 'never mind', '--ram', '512', '--cpu', '1')

    header, rows = table(vmadm(daemon, 'request', 'list').out)
    assert header == ['ID', 'STATE', 'REQUESTER', 'CREATED', 'COUNT', 'RAM', 'CPU', 'DISKS',
                      'OS', 'VMS', 'REASON', 'DESCRIPTION']
    assert rows[0][:3] == ['1', 'pending', 'root'] and rows[0][4:] == [
        '2', '1024 MiB', '1', '10 GiB, 20 GiB', '1', '-', '-', 'two web servers'], rows

    msg = vmadm_err(daemon, 'bad_request', 'request', 'approve', '1', 'web1')
    assert 'asks for 2' in msg, msg
    p = vmadm(daemon, '--timeout', '300', 'request', 'approve', '1', 'web1', 'web2',
              timeout=320)
    m = re.match(r'^approved request 1\ncreated VM web1\npassword: (\S+)\ncreated VM web2\n'
                 r'password: (\S+)\n$', p.out)
    assert m, p.out
    rec = vmadm_json(daemon, 'show', 'web1')
    assert rec['owner'] == 'root' and rec['status'] == 'requested' and rec['ram'] == 1024
    assert rec['os'] == {'name': 'Debian', 'version': '12'}, rec
    assert [v['vm_id'] for v in vmadm_json(daemon, 'list', '--status', 'requested')['vms']] == \
        ['web1', 'web2']
    assert [d['size'] for d in rec['disks']] == [10, 20]
    with daemon.client(timeout=60) as c:
        c.auth('web2', m.group(2))

    p = vmadm(daemon, 'request', 'reject', '2', 'no', 'budget', 'left')
    assert p.out == 'rejected request 2\n', p.out
    assert vmadm(daemon, 'request', 'cancel', '3').out == 'cancelled request 3\n'
    rq = vmadm_json(daemon, 'request', 'list', '--state', 'rejected')['requests']
    assert [(r['id'], r['reason'], r['decided_by']) for r in rq] == [(2, 'no budget left',
                                                                      'root')]
    assert [r['id'] for r in vmadm_json(daemon, 'request', 'list', '--state',
                                        'approved')['requests']] == [1]
    assert vmadm(daemon, 'request', 'list', '--state', 'pending').out == '(no requests)\n'
    assert vmadm_err(daemon, 'conflict', 'request', 'approve', '2', 'x') == \
        'request 2 is rejected, not pending'
    vmadm_err(daemon, 'conflict', 'request', 'reject', '1', 'late')
    vmadm_err(daemon, 'not_found', 'request', 'cancel', '9')
    vmadm_err(daemon, 'not_found', 'request', 'add', 'x', '--ram', '1', '--cpu', '1',
              '--os', '7')


# ---- watch --since ----

def start_watch_proc(daemon, *args):
    proc = subprocess.Popen([vmadm_bin(), *args], env=vmadm_env(daemon), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, Lines(proc)


def stop_watch(proc):
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(20)
    err = proc.stderr.read().decode()
    assert rc == 0, f'vmadm watch exited {rc} on SIGINT: {err}'
    return err


def read_events(lines, n, timeout=20):
    out = []
    while len(out) < n:
        line = lines.get(timeout)
        assert line, f'watch stopped after {out}'
        out.append(json.loads(line))
    return out


def test_watch_since_replays(daemon):
    create(daemon, 'vm-a')
    create(daemon, 'vm-b')
    vmadm(daemon, 'group', 'add', 'pool', 'vm-a', 'vm-b')
    vmadm(daemon, 'book', 'vm-a', '--hours', '1')
    vmadm(daemon, 'renew', 'vm-a', '--minutes', '5')
    vmadm(daemon, 'cancel', 'vm-a')

    # replay from the start, bookings only, then live ones: nothing lost or doubled
    proc, lines = start_watch_proc(daemon, '--json', 'watch', '--since', '0', '--types',
                                   'booking.')
    try:
        old = read_events(lines, 3)
        assert [e['type'] for e in old] == ['booking.created', 'booking.renewed',
                                            'booking.ended'], old
        assert old[2]['reason'] == 'cancel' and all(e['vm_id'] == 'vm-a' for e in old)
        vmadm(daemon, 'group', 'rename', 'pool', 'pool2')       # not a booking: not shown
        vmadm(daemon, 'book', 'vm-b', '--minutes', '30')
        [live] = read_events(lines, 1)
        assert live['type'] == 'booking.created' and live['vm_id'] == 'vm-b', live
        feeds = [e['feed'] for e in old + [live]]
        assert feeds == sorted(set(feeds)), feeds
        assert live['feed'] == old[2]['feed'] + 2                # the rename in between
        assert lines.get(0.5) == ''
    finally:
        stop_watch(proc)

    # again from the renewal: the cancel comes first, then the live booking, once
    proc, lines = start_watch_proc(daemon, '--json', 'watch', '--since', str(old[1]['feed']))
    try:
        evs = read_events(lines, 3)
        assert [(e['type'], e['feed']) for e in evs] == [
            ('booking.ended', old[2]['feed']), ('group.changed', old[2]['feed'] + 1),
            ('booking.created', live['feed'])], evs
        assert lines.get(0.5) == ''
    finally:
        stop_watch(proc)

    # human lines: the time of day, the type, key=value, the feed position last
    proc, lines = start_watch_proc(daemon, 'watch', '--since', str(old[0]['feed']), '--types',
                                   'booking.,vm.')
    try:
        line = lines.get(20)
        assert re.match(rf'^{TIME} booking\.renewed vm_id=vm-a user=root '
                        rf'expires_at="{TIME}" feed={old[1]["feed"]}$', line), line
        assert 'feed=' + str(old[2]['feed']) in lines.get(20)
        assert 'feed=' + str(live['feed']) in lines.get(20)
        vmadm(daemon, 'delete', 'vm-b')                          # its booking ends first
        ended = lines.get(20)
        assert re.match(rf'^{TIME} booking\.ended vm_id=vm-b user=root reason=deleted ', ended)
        assert re.match(rf'^{TIME} vm\.deleted vm_id=vm-b feed=\d+$', lines.get(20))
    finally:
        stop_watch(proc)


def test_watch_since_truncated(make_daemon):
    d = make_daemon(args=['--event-history', '3'])
    for v in ('t1', 't2', 't3', 't4', 't5'):
        create(d, v)
    proc, lines = start_watch_proc(d, '--json', 'watch', '--since', '0')
    try:
        first = json.loads(lines.get(20))
        assert first['type'] == 'events.truncated' and first['oldest'] == 3, first
        evs = read_events(lines, 3)
        assert [(e['type'], e['vm_id'], e['feed']) for e in evs] == [
            ('vm.created', 't3', 3), ('vm.created', 't4', 4), ('vm.created', 't5', 5)], evs
    finally:
        stop_watch(proc)
    proc, lines = start_watch_proc(d, 'watch', '--since', '1')
    try:
        assert re.match(r'^\S+ \S+ UTC events\.truncated oldest=3$|^- events\.truncated '
                        r'oldest=3$', lines.get(20))
    finally:
        err = stop_watch(proc)
    assert 'the events before feed position 3 are no longer kept' in err, err


# ---- the console ----

def test_console_part2(daemon):
    create(daemon, 'vm1')
    script = ('HELP\n'
              "group add 'my pool' vm1\n"
              'set vm1 --owner root --hostname "web 01"\n'
              "set vm1 --owner ''\n"
              'book vm1 --minutes 20\n'
              'bookings --json\n'
              'whoami\n'
              "user add 'carol\n"
              'user\n'
              'EXIT\n')
    p = vmadm(daemon, 'console', stdin=script)
    out, err = p.out, p.err
    for line in ('  user add NAME [--role viewer|user|admin] [--password-stdin]',
                 '  book VM|--group GROUP --hours N|--minutes N [--for USER]',
                 '  watch [--since N] [--types PREFIX,...]', '  LIST_CONNECTED'):
        assert line in out, (line, out)
    assert re.search(r'^name:\s+my pool$', out, re.M), out
    assert vmadm_json(daemon, 'show', 'vm1')['owner'] is None       # '' cleared it
    assert "a host name is at most 253 bytes" in err, err         # "web 01" was one word
    assert re.search(booked_re('booked', 'vm1', 'root', r'20m 0s|19m \d+s'), out, re.M), out
    docs = [json.loads(l) for l in out.splitlines() if l.startswith('{"bookings"')]
    assert docs and docs[0]['bookings'][0]['vm_id'] == 'vm1'
    assert re.search(r'^role:\s+admin$', out, re.M)
    assert 'a quote is not closed' in err and 'user: give a subcommand' in err, err


# ---- --json errors ----

def test_json_errors_part2(daemon):
    p = vmadm(daemon, '--json', 'cancel', 'nope', check=1)
    assert json.loads(p.out) == {'error': {'code': 'not_found',
                                           'message': "VM 'nope' is not booked"}}
    p = vmadm(daemon, 'user', 'add', 'x!', '--json', check=1)
    doc = json.loads(p.out)
    assert doc['error']['code'] == 'bad_request'
    assert doc['error']['message'].startswith('a user name is'), doc
    p = vmadm(daemon, 'book', 'vm1', '--json', check=2)
    assert json.loads(p.out)['error']['code'] == 'usage'


# ---- a member of the users group, with plain vmadm ----

@pytest.fixture
def users_member():
    """A real user in a real group that vmmd takes as its users group, and one
    outside it: (user, group, other)."""
    if os.geteuid() != 0:
        pytest.skip('needs root to create a user and a group')
    for tool in ('useradd', 'groupadd', 'setpriv'):
        assert shutil.which(tool), f'{tool} is missing'
    tag = f'{os.getpid() % 100000}'
    group, user, other = f'vmmdt-ug{tag}', f'vmmdt-pu{tag}', f'vmmdt-po{tag}'
    subprocess.run(['groupadd', group], check=True)
    try:
        subprocess.run(['useradd', '--no-create-home', '--gid', 'nogroup', '--groups', group,
                        '--shell', '/usr/sbin/nologin', user], check=True)
        subprocess.run(['useradd', '--no-create-home', '--gid', 'nogroup',
                        '--shell', '/usr/sbin/nologin', other], check=True)
        yield user, group, other
    finally:
        subprocess.run(['userdel', user], capture_output=True)
        subprocess.run(['userdel', other], capture_output=True)
        subprocess.run(['groupdel', group], capture_output=True)


def test_users_group_peer_books(users_member, make_daemon):
    user, group, other = users_member
    d = make_daemon(args=['--users-group', group])
    os.chmod(d.sockdir, 0o755)         # the harness's directory
    # with a users group, vmmd opens the socket to everyone and checks every
    # peer itself (the last assertion below: anyone else is refused)
    assert stat.S_IMODE(os.stat(d.admin_socket).st_mode) == 0o666
    as_user = ['setpriv', f'--reuid={user}', '--regid=nogroup', '--init-groups']
    as_other = ['setpriv', f'--reuid={other}', '--regid=nogroup', '--init-groups']
    for v in ('vm1', 'vm2', 'vm3'):
        create(d, v)
    vmadm(d, 'group', 'add', 'pool', 'vm2', 'vm3')
    vmadm(d, 'book', 'vm3', '--hours', '1')                        # root's

    # who it is: its login name, the role user
    assert vmadm_json(d, 'whoami', prefix=as_user) == {'kind': 'user', 'name': user,
                                                       'role': 'user'}
    # the pool: VMs, groups, bookings
    assert [v['vm_id'] for v in vmadm_json(d, 'list', prefix=as_user)['vms']] == \
        ['vm1', 'vm2', 'vm3']
    out = vmadm(d, 'group', 'show', 'pool', prefix=as_user).out
    assert re.search(r'^vm3\s+off\s+active\s+root\s', out, re.M), out
    # book, renew, cancel its own, with plain vmadm
    p = vmadm(d, 'book', 'vm1', '--hours', '1', prefix=as_user)
    assert re.match(booked_re('booked', 'vm1', user, r'1h 0m|59m \d+s'), p.out), p.out
    res = vmadm_json(d, 'book', '--group', 'pool', '--minutes', '30', prefix=as_user)
    assert res['vm_id'] == 'vm2' and res['user'] == user
    p = vmadm(d, 'renew', 'vm1', '--minutes', '30', prefix=as_user)
    assert re.match(booked_re('renewed', 'vm1', user, r'1h 30m|1h 29m'), p.out), p.out
    header, rows = table(vmadm(d, 'bookings', '--user', user, prefix=as_user).out)
    assert [r[:2] for r in rows] == [['vm1', user], ['vm2', user]], rows
    assert vmadm(d, 'cancel', 'vm2', prefix=as_user).out == 'cancelled the booking of VM vm2\n'
    # its own history only
    entries = vmadm_json(d, 'history', prefix=as_user)['entries']
    assert [(e['action'], e['vm_id']) for e in entries] == [
        ('cancel', 'vm2'), ('renew', 'vm1'), ('book', 'vm2'), ('book', 'vm1')], entries
    assert all(e['user'] == user for e in entries)
    # and the same booking is the person's over TCP too: one namespace
    assert vmadm_json(d, 'show', 'vm1')['booking']['user'] == user

    # what its role does not allow: forbidden, in plain words
    msg = vmadm_err(d, 'forbidden', 'cancel', 'vm3', prefix=as_user)
    assert msg == f"VM 'vm3' is booked by root, not by you", msg
    msg = vmadm_err(d, 'forbidden', 'user', 'add', 'x', prefix=as_user)
    assert msg == 'only an administrator may do that', msg
    vmadm_err(d, 'forbidden', 'book', 'vm2', '--hours', '1', '--for', 'root', prefix=as_user)
    vmadm_err(d, 'forbidden', 'history', '--user', 'root', prefix=as_user)
    vmadm_err(d, 'forbidden', 'set', 'vm1', '--owner', user, prefix=as_user)
    vmadm_err(d, 'forbidden', 'status', prefix=as_user)
    assert vmadm_json(d, 'show', 'vm1')['owner'] is None

    # its requests, which an admin decides
    rq = vmadm_json(d, 'request', 'add', 'for tests', '--ram', '512', '--cpu', '1',
                    prefix=as_user)
    assert rq['requester'] == user
    assert vmadm_json(d, 'request', 'list', prefix=as_user)['requests'][0]['id'] == rq['id']
    vmadm_err(d, 'forbidden', 'request', 'reject', str(rq['id']), 'no', prefix=as_user)
    assert 'cancelled request' in vmadm(d, 'request', 'cancel', str(rq['id']), prefix=as_user).out

    # its watch sees the bookings
    proc = subprocess.Popen([*as_user, vmadm_bin(), '--json', 'watch', '--since', '0',
                             '--types', 'booking.'], env=vmadm_env(d), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = Lines(proc)
    try:
        evs = read_events(lines, 5)
        assert [e['type'] for e in evs] == ['booking.created'] * 3 + ['booking.renewed',
                                                                      'booking.ended'], evs
    finally:
        stop_watch(proc)

    # someone in neither group is refused by the daemon
    p = vmadm(d, 'whoami', prefix=as_other, check=1)
    assert p.err.startswith('vmadm: forbidden: '), p.err


# ---- vmclient: whoami, booking, user-login ----

def vmclient(daemon, *args, stdin=None, check=0, password=None):
    assert VMCLIENT_BIN, 'VMCLIENT_BIN is not set (meson sets it)'
    env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'TZ': 'UTC', 'LC_ALL': 'C',
           'VMCLIENT_SERVER': f'{daemon.host}:{daemon.port}'}
    for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LD_LIBRARY_PATH'):
        if k in os.environ:
            env[k] = os.environ[k]
    if password is not None:
        env['VMCLIENT_PASSWORD'] = password
    p = subprocess.run([VMCLIENT_BIN, *args], input=(stdin or '').encode(), env=env,
                       capture_output=True, timeout=120)
    p.out, p.err = p.stdout.decode(), p.stderr.decode()
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.out, p.err)
    for m in vmmtest.CRASH_MARKERS:
        assert m not in p.out + p.err
    return p


def test_vmclient_part2(daemon):
    pw = create(daemon, 'vm1')
    create(daemon, 'vm2')
    token = vmclient(daemon, 'auth', 'vm1', password=pw).out.strip()
    assert vmmtest.TOKEN_RE.match(token)

    p = vmclient(daemon, '--token', token, 'whoami')
    assert re.search(r'^kind:\s+vm$', p.out, re.M) and re.search(r'^vm_id:\s+vm1$', p.out, re.M)
    assert json.loads(vmclient(daemon, '--json', '--token', token, 'whoami').out) == \
        {'kind': 'vm', 'vm_id': 'vm1'}

    # booking: none, then one, with the time left by the daemon's clock
    assert vmclient(daemon, '--token', token, 'booking').out == 'not booked\n'
    assert json.loads(vmclient(daemon, '--json', '--token', token, 'booking').out) == \
        {'booking': None}
    vmadm(daemon, 'user', 'add', 'alice', '--password-stdin', stdin='alice-password\n')
    vmadm(daemon, 'book', 'vm1', '--hours', '2', '--for', 'alice')
    p = vmclient(daemon, '--token', token, 'booking')
    assert re.match(rf'^VM vm1 is booked by alice until {TIME} \((2h 0m|1h 59m) left\)$',
                    p.out), p.out
    b = json.loads(vmclient(daemon, '--json', '--token', token, 'booking').out)['booking']
    assert b['vm_id'] == 'vm1' and b['user'] == 'alice'
    assert b['expires_at'] - b['started_at'] == 2 * HOUR_MS
    p = vmclient(daemon, '--token', token, 'booking', 'vm2', check=1)
    assert p.err == "vmclient: forbidden: a VM's session sees only its own booking: leave out " \
                    "the VM\n", p.err

    # a person: user-login, then its token
    p = vmclient(daemon, 'user-login', 'alice', password='alice-password')
    utoken = p.out.strip()
    assert vmmtest.TOKEN_RE.match(utoken), p.out
    doc = json.loads(vmclient(daemon, '--json', 'user-login', 'alice',
                              stdin='alice-password\n').out)
    assert doc['name'] == 'alice' and doc['role'] == 'user' and doc['expires_at'] > 0
    p = vmclient(daemon, '--token', utoken, 'whoami')
    assert re.search(r'^name:\s+alice$', p.out, re.M) and re.search(r'^role:\s+user$', p.out,
                                                                    re.M), p.out
    p = vmclient(daemon, '--token', utoken, 'booking', 'vm1')
    assert p.out.startswith('VM vm1 is booked by alice until '), p.out
    assert vmclient(daemon, '--token', utoken, 'booking', 'vm2').out == 'not booked\n'
    p = vmclient(daemon, '--token', utoken, 'booking', check=1)
    assert 'a person\'s session names the VM: vmclient booking VM' in p.err, p.err
    assert [v['vm_id'] for v in json.loads(vmclient(daemon, '--json', '--token', utoken,
                                                    'list').out)['vms']] == ['vm1', 'vm2']
    # a VM's own commands: vm.get names the VM for a person, vm.update is a VM's
    p = vmclient(daemon, '--token', utoken, 'get', check=1)
    assert p.err.startswith("vmclient: bad_request: this is for a VM's own session"), p.err
    p = vmclient(daemon, '--token', utoken, 'update', '--ram', '5', check=1)
    assert p.err.startswith('vmclient: forbidden: '), p.err

    # errors: a wrong password, a token missing
    p = vmclient(daemon, 'user-login', 'alice', password='wrong-password', check=1)
    assert p.err == 'vmclient: unauthenticated: the name or the password is wrong\n', p.err
    p = vmclient(daemon, 'user-login', 'bad name!', password='x' * 8, check=1)
    assert 'a user name is 1 to 64' in p.err, p.err
    p = vmclient(daemon, 'booking', check=2)
    assert 'vmclient user-login NAME' in p.err, p.err
    vmclient(daemon, 'user-login', check=2)
    vmclient(daemon, '--token', token, 'whoami', 'x', check=2)


def test_vmclient_shell_part2(daemon):
    pw = create(daemon, 'vm1')
    vmadm(daemon, 'book', 'vm1', '--minutes', '90')
    script = (f'AUTH vm1 wrong-password\nAUTH vm1 {pw}\nWHOAMI\nBOOKING\nBOOKING vm2\n'
              'BOOKING a b\n')
    p = vmclient(daemon, 'shell', stdin=script)
    out = p.out
    assert 'error: unauthenticated: the name or the password is wrong' in out, out
    assert re.search(r'^kind:\s+vm$', out, re.M) and re.search(r'^vm_id:\s+vm1$', out, re.M)
    assert re.search(rf'^VM vm1 is booked by root until {TIME} \((1h 30m|1h 29m) left\)$', out,
                     re.M), out
    assert "error: forbidden: a VM's session sees only its own booking: BOOKING without a VM " \
           "id" in out, out
    assert re.search(r'^error: usage: .*BOOKING', out, re.M), out


def test_vmclient_help_lists_part2():
    assert VMCLIENT_BIN, 'VMCLIENT_BIN is not set (meson sets it)'
    out = subprocess.run([VMCLIENT_BIN, '--help'], capture_output=True, text=True,
                         timeout=30).stdout
    for c in ('whoami', 'booking', 'user-login'):
        assert re.search(rf'^  {c} ', out, re.M), out
        h = subprocess.run([VMCLIENT_BIN, 'help', c], capture_output=True, text=True,
                           timeout=30).stdout
        assert h.startswith(f'Usage: vmclient [OPTIONS] {c}'), h
