# SPDX-License-Identifier: MIT
"""The admin Unix socket of vmmd against the "Admin methods" section of
PROTOCOL.md, spoken as raw MessagePack-RPC over AF_UNIX (Python's msgpack and
socket modules only, so nothing here shares code with the C side): every
method and its errors, what admin actions do to live TCP clients, the event
stream (including a watcher that never reads), backups with a descriptor sent
by SCM_RIGHTS and restored on a second daemon, shutdown, and who is served
(SO_PEERCRED: root, the daemon's uid, the admin group; everyone else is
refused at once).

Needs VMMD_BIN (meson sets it). The access tests need root (they create a
user and a group and connect as other users with setpriv)."""

import json
import fcntl
import os
import secrets
import shutil
import socket
import stat
import statistics
import subprocess
import threading
import time

import msgpack
import pytest

import vmmtest
from vmmtest import (PASSWORD, TOKEN_RE, Client, Closed, assert_error_frame,
                     expect_framing_close, now_ms, request_bytes, wait_until)

PYTHON = '/usr/bin/python3'
GENERATED_PASSWORD_LEN = 24
STATUS_KEYS = ('version', 'protocol', 'uptime_ms', 'vms', 'disks', 'sessions', 'connections',
               'connected_vms', 'requests', 'db')
SESSION_KEYS = ('id', 'vm_id', 'created_at', 'expires_at', 'connected')
CONN_KEYS = ('id', 'peer', 'vm_id', 'since', 'requests')
VM_KEYS = ('vm_id', 'ram', 'cpu', 'disks', 'registered_at', 'updated_at', 'last_seen_at',
           'connected', 'authorized')
# part 1's admin methods that stay off TCP (events.watch left it in part 2)
ADMIN_ONLY = ('status', 'vm.create', 'vm.delete', 'vm.passwd', 'session.list', 'session.revoke',
              'conn.list', 'conn.kill', 'backup', 'shutdown')
CLIENT_ONLY = ('ping', 'register', 'auth', 'resume', 'vm.add', 'vm.update', 'passwd', 'logout')


class Admin(Client):
    """One connection to the admin socket; the msgpack-rpc machinery of
    vmmtest.Client over AF_UNIX."""

    def __init__(self, path, timeout=10.0, rcvbuf=None):   # noqa: super() connects over TCP
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.timeout = timeout
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.next_id = 1
        self.token = None
        self.vm_id = None

    def call_with_fds(self, method, params, fds, timeout=None):
        """The request's bytes go out in one sendmsg() carrying fds."""
        msgid = self.new_id()
        data = request_bytes(msgid, method, params)
        n = socket.send_fds(self.sock, [data], list(fds))
        assert n == len(data), f'short sendmsg: {n} of {len(data)}'
        msg = self.read_response(timeout)
        assert msg[1] == msgid, f'response msgid {msg[1]} for request {msgid}: {msg!r}'
        return self.split(msg)


def admin(d, **kw):
    return Admin(d.admin_socket, **kw)


def tcp_login(d, vm_id, password=PASSWORD, register=True, **kw):
    return d.login(vm_id, password=password, register=register, **kw)


def local_peer(c):
    host, port = c.sock.getsockname()[:2]
    return f'{host}:{port}'


def check_vm_record(rec, vm_id=None):
    assert isinstance(rec, dict), rec
    for k in VM_KEYS:
        assert k in rec, f'VM record without {k}: {rec!r}'
    if vm_id is not None:
        assert rec['vm_id'] == vm_id, rec


def follow(a, method, key, params=None, limit=None):
    """Follow next to the end on the admin socket; -> (items, pages)."""
    items = []
    pages = 0
    after = None
    while True:
        p = dict(params or {})
        if limit is not None:
            p['limit'] = limit
        if after is not None:
            p['after'] = after
        res = a.ok(method, p)
        pages += 1
        assert set(res) >= {key, 'next'}, res
        items += res[key]
        if res['next'] is None:
            return items, pages
        assert res[key], f'empty page with next={res["next"]!r}: {res!r}'
        idkey = 'vm_id' if key == 'vms' else 'id'
        assert res['next'] == res[key][-1][idkey], f'next is not the last id: {res!r}'
        after = res['next']
        assert pages < 10000


def find_conn(a, peer):
    conns, _ = follow(a, 'conn.list', 'connections')
    hits = [c for c in conns if c['peer'] == peer]
    assert len(hits) <= 1, conns
    return hits[0] if hits else None


def sessions_of(a, vm_id):
    items, _ = follow(a, 'session.list', 'sessions', {'vm_id': vm_id})
    return items


# ---------------------------------------------------------------------------
# events


def read_events(w, until, timeout=5.0):
    """Read notifications from watcher w until until(events) is true; -> events.
    Every message must be an event notification with one map."""
    events = []
    deadline = time.monotonic() + timeout
    while not until(events):
        left = deadline - time.monotonic()
        assert left > 0, f'events did not arrive in time; got {events!r}'
        try:
            msg = w.read(left)
        except socket.timeout:
            continue
        assert isinstance(msg, list) and len(msg) == 3 and msg[0] == 2, \
            f'not a notification: {msg!r}'
        assert msg[1] == 'event', msg
        assert isinstance(msg[2], list) and len(msg[2]) == 1 and isinstance(msg[2][0], dict), msg
        ev = msg[2][0]
        for k in ('seq', 'type', 'time'):
            assert k in ev, f'event without {k}: {ev!r}'
        events.append(ev)
    return events


def check_seqs(events, first=1):
    seqs = [e['seq'] for e in events]
    assert seqs == list(range(first, first + len(seqs))), f'seq not counting from {first}: {seqs}'


def has_types(types):
    def pred(events):
        got = [e['type'] for e in events]
        it = iter(got)
        return all(t in it for t in types)
    return pred


def watcher(d):
    w = admin(d)
    assert w.ok('events.watch') == {}
    return w


# ---------------------------------------------------------------------------
# status


def test_status_keys(daemon):
    t0 = time.monotonic()
    with admin(daemon) as a:
        s = a.ok('status')
        for k in STATUS_KEYS:
            assert k in s, f'status without {k}: {s!r}'
        assert isinstance(s['version'], str) and s['version'], s
        assert s['protocol'] == 1, s
        for k in ('uptime_ms', 'vms', 'disks', 'sessions', 'connections', 'connected_vms',
                  'requests'):
            assert isinstance(s[k], int) and not isinstance(s[k], bool) and s[k] >= 0, (k, s)
        assert (s['vms'], s['disks'], s['sessions'], s['connected_vms']) == (0, 0, 0, 0), s
        db = s['db']
        assert isinstance(db, dict) and set(db) >= {'path', 'size_bytes', 'map_size_bytes'}, s
        assert os.path.dirname(os.path.realpath(db['path'])) == \
            os.path.realpath(daemon.state_dir), (db, daemon.state_dir)
        assert os.path.isfile(db['path']), db
        assert 0 < db['size_bytes'] <= db['map_size_bytes'], db
        # uptime grows, requests count
        time.sleep(0.3)
        s2 = a.ok('status')
        assert s2['uptime_ms'] >= s['uptime_ms'] + 250, (s, s2)
        assert s2['uptime_ms'] <= (time.monotonic() - t0) * 1000 + 15000, s2
        assert s2['requests'] > s['requests'], (s, s2)
        # ping the version over TCP: the same daemon
        with daemon.client() as c:
            assert c.ok('ping')['version'] == s['version']


def test_status_counts_follow_tcp_activity(daemon):
    with admin(daemon) as a:
        s0 = a.ok('status')
        daemon.register('vmA', disks=[{'id': 'a1', 'size': 10}, {'id': 'a2', 'size': 20}])
        daemon.register('vmB', disks=[{'id': 'b1', 'size': 5}])
        daemon.register('vmC')
        s1 = a.ok('status')
        assert (s1['vms'], s1['disks']) == (3, 3), s1
        assert s1['sessions'] == 0 and s1['connected_vms'] == 0, s1
        assert s1['requests'] >= s0['requests'] + 3, (s0, s1)
        c1 = tcp_login(daemon, 'vmA', register=False)
        c2 = tcp_login(daemon, 'vmA', register=False)
        c3 = daemon.client()
        try:
            with daemon.client() as tmp:
                tmp.auth('vmB')           # a session that outlives its connection
            s2 = a.ok('status')
            assert s2['sessions'] == 3, s2
            assert s2['connected_vms'] == 1, s2
            assert s2['connections'] >= 3, s2
            assert s2['requests'] > s1['requests'], (s1, s2)
            c1.close()
            c2.close()
            assert wait_until(lambda: a.ok('status')['connected_vms'] == 0), a.ok('status')
            s3 = a.ok('status')
            assert s3['connections'] == s2['connections'] - 2, (s2, s3)
            assert s3['sessions'] == 3, s3
        finally:
            c1.close()
            c2.close()
            c3.close()


# ---------------------------------------------------------------------------
# vm.list / vm.get / disk.list


def test_lists_match_tcp(daemon):
    for i in range(7):
        daemon.register(f'vm{i}', disks=[{'id': f'd{i}', 'size': i + 1}] if i % 2 else [])
    c = tcp_login(daemon, 'vm3', register=False)
    try:
        with admin(daemon) as a:
            for flt in ('all', 'authorized', 'connected'):
                mine, _ = follow(a, 'vm.list', 'vms', {'filter': flt})
                theirs, _ = vmmtest.list_all(c, 'vm.list', filter=flt)
                assert mine == theirs, (flt, mine, theirs)
                for r in mine:
                    check_vm_record(r)
            assert [r['vm_id'] for r in follow(a, 'vm.list', 'vms', {'filter': 'connected'})[0]] \
                == ['vm3']
            # paging, and after need not exist
            paged, pages = follow(a, 'vm.list', 'vms', {'filter': 'all'}, limit=3)
            assert pages == 3 and [r['vm_id'] for r in paged] == [f'vm{i}' for i in range(7)]
            res = a.ok('vm.list', {'filter': 'all', 'after': 'vm3a', 'limit': 2})
            assert [r['vm_id'] for r in res['vms']] == ['vm4', 'vm5'] and res['next'] == 'vm5'
            a.err('vm.list', {}, 'bad_request')
            a.err('vm.list', {'filter': 'nope'}, 'bad_request')
            a.err('vm.list', {'filter': 'all', 'limit': 0}, 'bad_request')
            # disks
            mine, _ = follow(a, 'disk.list', 'disks')
            theirs, _ = vmmtest.list_all(c, 'disk.list')
            assert mine == theirs
            assert mine == [{'id': f'd{i}', 'size': i + 1, 'vm_id': f'vm{i}'} for i in (1, 3, 5)]
            paged, pages = follow(a, 'disk.list', 'disks', limit=2)
            assert pages == 2 and paged == mine
            # vm.get by id = the VM's own vm.get over TCP
            rec = a.ok('vm.get', {'vm_id': 'vm3'})
            check_vm_record(rec, 'vm3')
            assert rec == c.ok('vm.get')
            assert rec['connected'] is True and rec['authorized'] is True
            assert rec['disks'] == [{'id': 'd3', 'size': 4}]
            assert a.ok('vm.get', {'vm_id': 'vm0'})['connected'] is False
            a.err('vm.get', {'vm_id': 'nosuchvm'}, 'not_found')
            a.err('vm.get', {}, 'bad_request')
            a.err('vm.get', None, 'bad_request')
            a.err('vm.get', {'vm_id': 'bad id!'}, 'bad_request')
    finally:
        c.close()


# ---------------------------------------------------------------------------
# vm.create


def test_create_generated_password_then_agent_describes_itself(daemon):
    with admin(daemon) as a:
        t0 = now_ms()
        res = a.ok('vm.create', {'vm_id': 'fresh'})
        t1 = now_ms()
        assert set(res) >= {'vm_id', 'password'} and res['vm_id'] == 'fresh', res
        pw = res['password']
        assert isinstance(pw, str) and len(pw) == GENERATED_PASSWORD_LEN, res
        assert a.ok('vm.create', {'vm_id': 'fresh2'})['password'] != pw
        rec = a.ok('vm.get', {'vm_id': 'fresh'})
        check_vm_record(rec, 'fresh')
        assert rec['ram'] is None and rec['cpu'] is None and rec['disks'] == [], rec
        assert rec['connected'] is False and rec['authorized'] is False, rec
        assert rec['last_seen_at'] is None, rec
        assert t0 - 2000 <= rec['registered_at'] <= t1 + 2000, rec
        assert a.ok('status')['vms'] == 2
        # the agent logs in with the generated password and describes itself
        with daemon.client() as c:
            c.err('auth', {'vm_id': 'fresh', 'password': 'not-the-password'}, 'unauthenticated')
            c.auth('fresh', pw)
            c.err('vm.update', {'ram': 512}, 'not_found')
            added = c.ok('vm.add', {'vm_id': 'fresh', 'ram': 4096, 'cpu': 4,
                                    'disks': [{'id': 'fd1', 'size': 8}]})
            assert added['ram'] == 4096 and added['cpu'] == 4
            rec = a.ok('vm.get', {'vm_id': 'fresh'})
            assert rec == c.ok('vm.get')
            assert rec['ram'] == 4096 and rec['disks'] == [{'id': 'fd1', 'size': 8}]
            assert rec['connected'] is True and rec['authorized'] is True
            c.err('vm.add', {'vm_id': 'fresh', 'ram': 1, 'cpu': 1, 'disks': []}, 'exists')


def test_create_with_password_and_errors(daemon):
    daemon.register('taken')
    with admin(daemon) as a:
        res = a.ok('vm.create', {'vm_id': 'given', 'password': 'my-own-password'})
        assert res['vm_id'] == 'given' and res['password'] == 'my-own-password', res
        with daemon.client() as c:
            c.auth('given', 'my-own-password')
        a.err('vm.create', {'vm_id': 'given'}, 'exists')
        a.err('vm.create', {'vm_id': 'taken', 'password': 'whatever-pw'}, 'exists')
        a.err('vm.create', {'vm_id': 'short', 'password': 'abc'}, 'bad_request')
        a.err('vm.create', {'vm_id': 'long', 'password': 'x' * 1025}, 'bad_request')
        a.err('vm.create', {'vm_id': '-dash'}, 'bad_request')
        a.err('vm.create', {'vm_id': 'x' * 49}, 'bad_request')
        a.err('vm.create', {}, 'bad_request')
        a.err('vm.create', {'vm_id': 'extra', 'ram': 5}, 'bad_request')
        # nothing was created by the failures
        vms, _ = follow(a, 'vm.list', 'vms', {'filter': 'all'})
        assert [r['vm_id'] for r in vms] == ['given', 'taken']
        # the existing VM's password was not touched
        with daemon.client() as c:
            c.auth('taken')
        # over TCP, registering a created id is exists too
        with daemon.client() as c:
            c.err('register', {'vm_id': 'given', 'password': PASSWORD, 'ram': 1, 'cpu': 1},
                  'exists')


def test_admin_changes_are_logged_with_uid_and_pid(daemon):
    with admin(daemon) as a:
        a.ok('vm.create', {'vm_id': 'logged-vm'})
    pid = str(os.getpid())
    ok = wait_until(lambda: any('logged-vm' in line and pid in line
                                for line in daemon.log_text().splitlines()))
    assert ok, f'no log line names the VM and our pid {pid}:\n{daemon.log_text()}'


# ---------------------------------------------------------------------------
# vm.delete


def test_delete_removes_everything_and_detaches(daemon):
    attached = tcp_login(daemon, 'gone', disks=[{'id': 'g1', 'size': 1}, {'id': 'g2', 'size': 2}])
    daemon.register('stay', disks=[{'id': 's1', 'size': 3}])
    token = attached.token
    other = tcp_login(daemon, 'gone', register=False)     # a second session
    try:
        with admin(daemon) as a:
            assert len(sessions_of(a, 'gone')) == 2
            assert a.ok('vm.delete', {'vm_id': 'gone'}) == {}
            a.err('vm.get', {'vm_id': 'gone'}, 'not_found')
            assert [r['vm_id'] for r in follow(a, 'vm.list', 'vms', {'filter': 'all'})[0]] \
                == ['stay']
            assert follow(a, 'disk.list', 'disks')[0] == [{'id': 's1', 'size': 3,
                                                            'vm_id': 'stay'}]
            assert [s for s in follow(a, 'session.list', 'sessions')[0]
                    if s['vm_id'] == 'gone'] == []
            s = a.ok('status')
            assert (s['vms'], s['disks'], s['sessions'], s['connected_vms']) == (1, 1, 0, 0), s
            # the live connections are anonymous at once, still open
            attached.err('vm.get', None, 'unauthenticated')
            other.err('vm.get', None, 'unauthenticated')
            assert attached.is_open()
            conn = find_conn(a, local_peer(attached))
            assert conn is not None and conn['vm_id'] is None, conn
            # the token is dead
            with daemon.client() as c:
                c.err('vm.get', {'token': token}, 'unauthenticated')
                c.err('resume', {'token': token}, 'unauthenticated')
                c.err('auth', {'vm_id': 'gone', 'password': PASSWORD}, 'unauthenticated')
            a.err('vm.delete', {'vm_id': 'gone'}, 'not_found')
            a.err('vm.delete', {}, 'bad_request')
            # the id and the disk ids are free again
            daemon.register('gone', password='another-pw', disks=[{'id': 'g1', 'size': 9}])
            with daemon.client() as c:
                c.err('resume', {'token': token}, 'unauthenticated')
                c.auth('gone', 'another-pw')
    finally:
        attached.close()
        other.close()


# ---------------------------------------------------------------------------
# vm.passwd


def test_passwd_generate_and_set(daemon):
    c = tcp_login(daemon, 'pw1')
    old_token = c.token
    try:
        with admin(daemon) as a:
            with daemon.client() as tmp:
                tmp.auth('pw1')
            assert len(sessions_of(a, 'pw1')) == 2
            res = a.ok('vm.passwd', {'vm_id': 'pw1'})
            assert res['vm_id'] == 'pw1', res
            gen = res['password']
            assert isinstance(gen, str) and len(gen) == GENERATED_PASSWORD_LEN and gen != PASSWORD
            # sessions ended: the attached connection is anonymous, the token dead
            assert sessions_of(a, 'pw1') == []
            c.err('vm.get', None, 'unauthenticated')
            with daemon.client() as t:
                t.err('vm.get', {'token': old_token}, 'unauthenticated')
                t.err('auth', {'vm_id': 'pw1', 'password': PASSWORD}, 'unauthenticated')
                t.auth('pw1', gen)
            assert a.ok('vm.get', {'vm_id': 'pw1'})['ram'] == 1024     # record kept
            res = a.ok('vm.passwd', {'vm_id': 'pw1', 'password': 'chosen-password'})
            assert res == {'vm_id': 'pw1', 'password': 'chosen-password'} or \
                (res['vm_id'] == 'pw1' and res['password'] == 'chosen-password'), res
            with daemon.client() as t:
                t.err('auth', {'vm_id': 'pw1', 'password': gen}, 'unauthenticated')
                t.auth('pw1', 'chosen-password')
            a.err('vm.passwd', {'vm_id': 'nosuchvm'}, 'not_found')
            a.err('vm.passwd', {'vm_id': 'pw1', 'password': 'short'}, 'bad_request')
            a.err('vm.passwd', {'password': 'long-enough'}, 'bad_request')
            with daemon.client() as t:
                t.auth('pw1', 'chosen-password')     # the failures changed nothing
    finally:
        c.close()


# ---------------------------------------------------------------------------
# sessions


def test_session_list(daemon):
    conns = []
    tokens = []
    try:
        daemon.register('sa')
        daemon.register('sb')
        for vm in ('sa', 'sa', 'sa', 'sb', 'sb'):
            c = tcp_login(daemon, vm, register=False)
            conns.append(c)
            tokens.append(c.token)
        conns[0].close()          # its session stays, no longer connected
        with admin(daemon) as a:
            t1 = now_ms()
            allsess, _ = follow(a, 'session.list', 'sessions')
            assert len(allsess) == 5, allsess
            ids = [s['id'] for s in allsess]
            assert len(set(ids)) == 5
            assert ids == sorted(ids), f'sessions not in id order: {ids}'
            raw = msgpack.packb(allsess, use_bin_type=True)
            for s in allsess:
                assert tuple(k for k in SESSION_KEYS if k in s) == SESSION_KEYS, s
                assert isinstance(s['id'], str) and 0 < len(s['id']) < 43, s
                assert s['id'] not in tokens and not TOKEN_RE.match(s['id']), s
                assert s['vm_id'] in ('sa', 'sb')
                assert t1 - 60000 <= s['created_at'] <= t1 + 2000, s
                assert s['expires_at'] > s['created_at'], s
                assert isinstance(s['connected'], bool)
            for t in tokens:
                assert t.encode() not in raw, 'a token appears in session.list'
            assert sorted(s['connected'] for s in allsess if s['vm_id'] == 'sa') == \
                [False, True, True]
            assert all(s['connected'] for s in allsess if s['vm_id'] == 'sb')
            # filter
            sa = sessions_of(a, 'sa')
            assert len(sa) == 3 and all(s['vm_id'] == 'sa' for s in sa)
            assert [s['id'] for s in sa] == [s['id'] for s in allsess if s['vm_id'] == 'sa']
            # pages
            paged, pages = follow(a, 'session.list', 'sessions', limit=2)
            # (expires_at may move: a closed connection was the session's last use)
            assert pages == 3 and [(s['id'], s['vm_id'], s['created_at']) for s in paged] == \
                [(s['id'], s['vm_id'], s['created_at']) for s in allsess]
            res = a.ok('session.list', {'limit': 2, 'after': ids[1]})
            assert [s['id'] for s in res['sessions']] == ids[2:4] and res['next'] == ids[3]
            res = a.ok('session.list', {'vm_id': 'sb', 'limit': 1})
            assert len(res['sessions']) == 1 and res['next'] == res['sessions'][0]['id']
            a.err('session.list', {'limit': 0}, 'bad_request')
            a.err('session.list', {'after': 17}, 'bad_request')
            a.err('session.list', {'token': tokens[1]}, 'bad_request')
    finally:
        for c in conns:
            c.close()


def test_session_revoke(daemon):
    daemon.register('ra')
    daemon.register('rb')
    ca1 = tcp_login(daemon, 'ra', register=False)
    ca2 = tcp_login(daemon, 'ra', register=False)
    cb1 = tcp_login(daemon, 'rb', register=False)
    cb2 = tcp_login(daemon, 'rb', register=False)
    try:
        with admin(daemon) as a:
            assert a.ok('session.revoke', {'vm_id': 'ra'}) == {'revoked': 2}
            assert sessions_of(a, 'ra') == []
            ca1.err('vm.get', None, 'unauthenticated')
            ca2.err('vm.get', None, 'unauthenticated')
            with daemon.client() as t:
                t.err('resume', {'token': ca1.token}, 'unauthenticated')
            assert a.ok('vm.get', {'vm_id': 'ra'})['authorized'] is False
            assert a.ok('session.revoke', {'vm_id': 'ra'}) == {'revoked': 0}
            # by id: only that session
            sb = sessions_of(a, 'rb')
            assert len(sb) == 2
            assert a.ok('session.revoke', {'id': sb[0]['id']}) == {'revoked': 1}
            left = sessions_of(a, 'rb')
            assert [s['id'] for s in left] == [sb[1]['id']]
            results = [c.call('vm.get') for c in (cb1, cb2)]
            assert sorted(e[0] if e else 'ok' for e, _ in results) == ['ok', 'unauthenticated'], \
                results
            assert a.ok('vm.get', {'vm_id': 'rb'})['connected'] is True
            a.err('session.revoke', {'id': sb[0]['id']}, 'not_found')
            a.err('session.revoke', {'vm_id': 'nosuchvm'}, 'not_found')
            a.err('session.revoke', {}, 'bad_request')
            a.err('session.revoke', {'vm_id': 'rb', 'id': sb[1]['id']}, 'bad_request')
            a.err('session.revoke', {'token': cb1.token}, 'bad_request')
            assert len(sessions_of(a, 'rb')) == 1        # the failures changed nothing
    finally:
        for c in (ca1, ca2, cb1, cb2):
            c.close()


# ---------------------------------------------------------------------------
# connections


def test_conn_list(daemon):
    anon = daemon.client()
    authed = tcp_login(daemon, 'cl1')
    extra = [daemon.client() for _ in range(4)]
    try:
        t0 = now_ms()
        for _ in range(3):
            anon.ok('ping')
        with admin(daemon) as a:
            conns, _ = follow(a, 'conn.list', 'connections')
            for c in conns:
                assert tuple(k for k in CONN_KEYS if k in c) == CONN_KEYS, c
                assert isinstance(c['id'], int) and c['id'] >= 0
            cids = [c['id'] for c in conns]
            assert cids == sorted(cids) and len(set(cids)) == len(cids), cids
            by_peer = {c['peer']: c for c in conns}
            ca = by_peer.get(local_peer(anon))
            assert ca is not None, (local_peer(anon), conns)
            assert ca['peer'].startswith('127.0.0.1:')
            assert ca['vm_id'] is None and ca['requests'] == 3, ca
            assert t0 - 10000 <= ca['since'] <= now_ms() + 2000, ca
            cb = by_peer.get(local_peer(authed))
            assert cb is not None and cb['vm_id'] == 'cl1', cb
            assert cb['requests'] == 2, cb                 # register + auth
            for e in extra:
                assert local_peer(e) in by_peer
            tcp = [c for c in conns if c['peer'].startswith('127.0.0.1:')]
            assert len(tcp) == 6, tcp
            # pages by id
            paged, pages = follow(a, 'conn.list', 'connections', limit=2)
            assert [c['id'] for c in paged] == cids and pages >= 3
            res = a.ok('conn.list', {'after': cb['id'], 'limit': 10000})
            assert [c['id'] for c in res['connections']] == [i for i in cids if i > cb['id']]
            a.err('conn.list', {'after': 'x'}, 'bad_request')
            a.err('conn.list', {'limit': 10001}, 'bad_request')
            # requests counts up, a closed connection leaves the list
            anon.ok('ping')
            assert find_conn(a, local_peer(anon))['requests'] == 4
            gone = local_peer(extra[0])
            extra[0].close()
            assert wait_until(lambda: find_conn(a, gone) is None)
    finally:
        for c in [anon, authed] + extra:
            c.close()


def test_conn_kill(daemon):
    victim = tcp_login(daemon, 'kv')
    bystander = daemon.client()
    try:
        with admin(daemon) as a:
            conn = find_conn(a, local_peer(victim))
            assert conn is not None
            assert a.ok('conn.kill', {'id': conn['id']}) == {}
            closed, msgs = victim.wait_closed(5)
            assert closed, 'the killed connection did not see EOF'
            assert msgs == [], msgs
            assert wait_until(lambda: find_conn(a, local_peer(victim)) is None)
            assert bystander.is_open()
            # the session survives its connection
            assert len(sessions_of(a, 'kv')) == 1
            assert wait_until(lambda: a.ok('vm.get', {'vm_id': 'kv'})['connected'] is False)
            a.err('conn.kill', {'id': conn['id']}, 'not_found')
            a.err('conn.kill', {'id': 4000000000}, 'not_found')
            a.err('conn.kill', {'id': 'one'}, 'bad_request')
            a.err('conn.kill', {}, 'bad_request')
            a.err('conn.kill', {'id': -1}, 'bad_request')
    finally:
        victim.close()
        bystander.close()


# ---------------------------------------------------------------------------
# events


def test_events_scripted_session(daemon):
    w = watcher(daemon)
    try:
        t0 = now_ms()
        c = daemon.client()
        peer = local_peer(c)
        c.register('ev1')
        c.auth('ev1')
        c.ok('vm.update', {'ram': 2048})
        with admin(daemon) as a:
            sid = sessions_of(a, 'ev1')[0]['id']
            cid = find_conn(a, peer)['id']
        c.ok('logout')
        c.close()

        def mine(e):
            if e['type'].startswith('conn.'):
                return e.get('peer') == peer
            return e.get('vm_id') == 'ev1'
        want = ['conn.opened', 'vm.registered', 'session.started', 'vm.updated',
                'session.ended', 'conn.closed']
        events = read_events(w, has_types(want))
        t1 = now_ms()
        check_seqs(events)
        got = [e for e in events if mine(e)]
        assert [e['type'] for e in got] == want, got
        for e in events:
            assert t0 - 1000 <= e['time'] <= t1 + 1000, e
        opened, registered, started, updated, ended, closed = got
        assert opened['conn'] == cid and opened['peer'] == peer, opened
        assert registered['vm_id'] == 'ev1'
        assert started['vm_id'] == 'ev1' and started['session'] == sid, started
        assert started['peer'] == peer, started
        assert updated['vm_id'] == 'ev1'
        assert ended['vm_id'] == 'ev1' and ended['session'] == sid, ended
        assert ended['reason'] == 'logout', ended
        assert closed['conn'] == cid and closed['peer'] == peer, closed
        assert 'vm_id' in closed and closed['vm_id'] is None, closed   # anonymous after logout
        assert closed['reason'] == 'eof', closed
        times = [e['time'] for e in got]
        assert times == sorted(times), got
        # no session token in any event
        raw = json.dumps(events)
        assert not any(TOKEN_RE.match(v) for e in events for v in e.values()
                       if isinstance(v, str)), raw
    finally:
        w.close()


def test_events_attached_close_auth_failed_and_admin_actions(daemon):
    w = watcher(daemon)
    try:
        c = daemon.client()
        peer = local_peer(c)
        c.err('auth', {'vm_id': 'nobody-here', 'password': 'wrong-password'}, 'unauthenticated')
        with admin(daemon) as a:
            pw = a.ok('vm.create', {'vm_id': 'ev2'})['password']
            c.err('auth', {'vm_id': 'ev2', 'password': 'wrong-password'}, 'unauthenticated')
            c.auth('ev2', pw)
            c.ok('vm.add', {'vm_id': 'ev2', 'ram': 1, 'cpu': 1, 'disks': []})
            s1 = sessions_of(a, 'ev2')[0]['id']
            a.ok('vm.passwd', {'vm_id': 'ev2', 'password': 'second-password'})
            c.auth('ev2', 'second-password')
            s2 = sessions_of(a, 'ev2')[0]['id']
            assert a.ok('session.revoke', {'id': s2}) == {'revoked': 1}
            c.auth('ev2', 'second-password')
            s3 = sessions_of(a, 'ev2')[0]['id']
            a.ok('vm.delete', {'vm_id': 'ev2'})
            # an attached connection closing names its VM; a killed one says killed
            daemon.register('ev3')
            k = tcp_login(daemon, 'ev3', register=False)
            kpeer = local_peer(k)
            a.ok('conn.kill', {'id': find_conn(a, kpeer)['id']})
            k.close()
            e3 = tcp_login(daemon, 'ev3', register=False)
            epeer = local_peer(e3)
            e3.close()
        c.close()
        want = ['auth.failed', 'vm.created', 'auth.failed', 'session.started', 'vm.described',
                'session.ended', 'vm.password_changed', 'session.started', 'session.ended',
                'session.started', 'session.ended', 'vm.deleted']
        events = read_events(w, lambda evs: any(e['type'] == 'conn.closed' and
                                                e.get('peer') == peer for e in evs))
        check_seqs(events)
        # vm.status (part 2, live only) follows connections: monitoring's tests
        ev2 = [e for e in events if e.get('vm_id') in ('nobody-here', 'ev2')
               and not e['type'].startswith('conn.') and e['type'] != 'vm.status']
        # the contract does not order a change against the sessions it ends
        for i in range(len(ev2) - 1):
            if ev2[i]['type'] in ('vm.password_changed', 'vm.deleted') and \
                    ev2[i + 1]['type'] == 'session.ended':
                ev2[i], ev2[i + 1] = ev2[i + 1], ev2[i]
        assert [e['type'] for e in ev2] == want, ev2
        (f1, created, f2, st1, described, en1, pwch, st2, en2, st3, en3, deleted) = ev2
        assert f1['vm_id'] == 'nobody-here' and f1['peer'] == peer, f1
        assert f2['vm_id'] == 'ev2' and f2['peer'] == peer, f2
        assert created['vm_id'] == described['vm_id'] == pwch['vm_id'] == deleted['vm_id'] == 'ev2'
        assert (st1['session'], en1['session'], en1['reason']) == (s1, s1, 'password'), (st1, en1)
        assert (st2['session'], en2['session'], en2['reason']) == (s2, s2, 'revoked'), (st2, en2)
        assert (st3['session'], en3['session'], en3['reason']) == (s3, s3, 'deleted'), (st3, en3)
        ev3 = [e for e in events if e['type'] == 'conn.closed' and e.get('peer') in (kpeer, epeer)]
        assert len(ev3) == 2, events
        killed, eof = ev3
        assert killed['peer'] == kpeer and killed['reason'] == 'killed', killed
        assert killed['vm_id'] == 'ev3', killed
        assert eof['peer'] == epeer and eof['reason'] == 'eof' and eof['vm_id'] == 'ev3', eof
        last = [e for e in events if e['type'] == 'conn.closed' and e.get('peer') == peer][0]
        assert last['vm_id'] is None and last['reason'] == 'eof', last   # its VM was deleted
    finally:
        w.close()


def test_events_two_watchers_count_from_one(daemon):
    w1 = watcher(daemon)
    try:
        daemon.register('w1vm')
        w2 = watcher(daemon)
        try:
            daemon.register('w2vm')
            e1 = read_events(w1, lambda evs: any(e.get('vm_id') == 'w2vm' for e in evs))
            e2 = read_events(w2, lambda evs: any(e.get('vm_id') == 'w2vm' for e in evs))
            check_seqs(e1)
            check_seqs(e2)
            assert len(e1) > len(e2)
            assert [e['type'] for e in e1[-len(e2):]] == [e['type'] for e in e2]
        finally:
            w2.close()
    finally:
        w1.close()


def daemon_fds(d):
    return len(os.listdir(f'/proc/{d.pid}/fd'))


def test_events_slow_watcher_is_disconnected(daemon):
    """A watcher that never reads falls behind and is dropped, while everyone
    else is served promptly. Events come from connections opened and closed
    (conn.opened + conn.closed each); bounded to about 20 s."""
    pinger = daemon.client()
    adm = admin(daemon)
    slow = admin(daemon, rcvbuf=4096)
    assert slow.ok('events.watch') == {}
    time.sleep(0.2)
    base = daemon_fds(daemon)
    lat = []
    cycles = 0
    gone_after = None
    t0 = time.monotonic()
    linger = b'\x01\x00\x00\x00\x00\x00\x00\x00'          # l_onoff=1, l_linger=0: no TIME_WAIT
    try:
        while time.monotonic() - t0 < 20:
            for _ in range(50):
                s = socket.create_connection(('127.0.0.1', daemon.port), timeout=5)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                s.close()
                cycles += 1
            t = time.monotonic()
            pinger.ok('ping', timeout=10)
            lat.append(time.monotonic() - t)
            if cycles % 500 == 0:
                t = time.monotonic()
                adm.ok('status', timeout=10)
                lat.append(time.monotonic() - t)
                if daemon_fds(daemon) < base:
                    gone_after = time.monotonic() - t0
                    break
        print(f'\nslow watcher: {cycles} connections ({2 * cycles} events) in '
              f'{time.monotonic() - t0:.1f} s; dropped after '
              f'{gone_after if gone_after is None else round(gone_after, 2)} s; '
              f'ping latency median {statistics.median(lat) * 1000:.2f} ms, '
              f'p99 {sorted(lat)[int(len(lat) * 0.99)] * 1000:.2f} ms, '
              f'max {max(lat) * 1000:.2f} ms over {len(lat)} calls')
        assert gone_after is not None, \
            f'the watcher that never reads was not disconnected after {2 * cycles} events'
        assert max(lat) < 2.0, f'a ping took {max(lat):.2f} s while the watcher lagged'
        assert statistics.median(lat) < 0.2
        # what the slow watcher did get: a prefix of its stream, then EOF
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        closed, msgs = slow.wait_closed(10)
        assert closed, 'the slow watcher saw no EOF'
        evs = [m[2][0] for m in msgs if isinstance(m, list) and m[0] == 2]
        assert evs, msgs[:3]
        check_seqs(evs)
        assert len(evs) < 2 * cycles
        assert all(m[0] == 2 for m in msgs), [m for m in msgs if m[0] != 2][:3]
        # still serving
        assert pinger.is_open()
        assert adm.ok('status')['protocol'] == 1
        with admin(daemon) as a2:
            a2.ok('status')
    finally:
        pinger.close()
        adm.close()
        slow.close()


# ---------------------------------------------------------------------------
# backup


def db_name(d):
    with admin(d) as a:
        return os.path.basename(a.ok('status')['db']['path'])


def take_backup(d, path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with admin(d) as a:
            err, res = a.call_with_fds('backup', None, [fd], timeout=60)
            assert err is None, f'backup failed: {err}'
            a.ok('status')                      # the connection goes on
    finally:
        os.close(fd)
    assert isinstance(res.get('bytes'), int) and res['bytes'] > 0, res
    assert os.path.getsize(path) == res['bytes'], (os.path.getsize(path), res)
    return res['bytes']


def restore(make_daemon, tmp_path, backup, name, tag):
    state = os.path.join(str(tmp_path), f'restored-{tag}')
    os.makedirs(state)
    shutil.copyfile(backup, os.path.join(state, name))
    return make_daemon(state_dir=state)


def test_backup_and_restore(daemon, make_daemon, tmp_path):
    daemon.register('bk1', disks=[{'id': 'bd1', 'size': 11}])
    daemon.register('bk2', password='bk2-password', ram=2048, cpu=2)
    with admin(daemon) as a:
        a.ok('vm.create', {'vm_id': 'bk3', 'password': 'bk3-password'})
        before, _ = follow(a, 'vm.list', 'vms', {'filter': 'all'})
    path = os.path.join(str(tmp_path), 'backup.mdb')
    n = take_backup(daemon, path)
    with open(path, 'rb') as f:
        head = f.read(4096)
    assert len(head) == 4096 and head.count(0) < 4096
    if shutil.which('mdb_stat'):
        p = subprocess.run(['mdb_stat', '-n', path], capture_output=True, text=True)
        assert p.returncode == 0, f'mdb_stat rejects the backup:\n{p.stdout}{p.stderr}'
    # the daemon still serves and the original is untouched
    with daemon.client() as c:
        c.auth('bk1')
    r = restore(make_daemon, tmp_path, path, db_name(daemon), 'a')
    with admin(r) as a:
        after, _ = follow(a, 'vm.list', 'vms', {'filter': 'all'})
        strip = lambda recs: [{k: v for k, v in x.items() if k not in ('connected', 'last_seen_at',
                                                                      'authorized')}
                              for x in recs]
        assert strip(after) == strip(before)
        assert follow(a, 'disk.list', 'disks')[0] == [{'id': 'bd1', 'size': 11, 'vm_id': 'bk1'}]
        s = a.ok('status')
        assert s['vms'] == 3 and s['disks'] == 1, s
        assert s['db']['size_bytes'] > 0
    with r.client() as c:
        c.auth('bk2', 'bk2-password')
        c.auth('bk3', 'bk3-password')
        assert c.ok('vm.get')['ram'] is None
    print(f'backup: {n} bytes')


def test_backup_errors(daemon, tmp_path):
    with admin(daemon) as a:
        a.err('backup', None, 'bad_request')
        a.err('backup', {}, 'bad_request')
        # a read-only descriptor cannot take a backup; the daemon must not die
        ro = os.path.join(str(tmp_path), 'ro')
        open(ro, 'w').close()
        fd = os.open(ro, os.O_RDONLY | os.O_CLOEXEC)
        try:
            err, res = a.call_with_fds('backup', None, [fd])
        finally:
            os.close(fd)
        assert err is not None, f'backup to a read-only fd succeeded: {res!r}'
        assert a.ok('status')['protocol'] == 1
        # the fd travels with the request: a later request without one fails again
        a.err('backup', None, 'bad_request')
    with daemon.client() as c:
        c.err('backup', None, 'unknown_method')


def drain_pipe(r, out):
    data = bytearray()
    while True:
        x = os.read(r, 65536)
        if not x:
            break
        data += x
    out.append(bytes(data))


def test_backup_into_a_pipe(daemon, make_daemon, tmp_path):
    """The descriptor need not be a seekable file: bytes counts what was
    written, and what came through the pipe restores."""
    for i in range(50):
        daemon.register(f'pp{i}', disks=[{'id': f'ppd{i}', 'size': i + 1}])
    r, w = os.pipe()
    got = []
    t = threading.Thread(target=drain_pipe, args=(r, got))
    t.start()
    try:
        with admin(daemon) as a:
            err, res = a.call_with_fds('backup', None, [w], timeout=60)
    finally:
        os.close(w)
        t.join(30)
        os.close(r)
    assert err is None, err
    data = got[0]
    assert len(data) > 0
    assert res['bytes'] == len(data), f'backup says {res} but {len(data)} bytes came through'
    path = os.path.join(str(tmp_path), 'piped.mdb')
    with open(path, 'wb') as f:
        f.write(data)
    rd = restore(make_daemon, tmp_path, path, db_name(daemon), 'pipe')
    with admin(rd) as a:
        assert a.ok('status')['vms'] == 50


def test_backup_descriptor_belongs_to_its_request(daemon, tmp_path):
    """A descriptor sent with another request is not kept for a later backup."""
    path = os.path.join(str(tmp_path), 'stray.mdb')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with admin(daemon) as a:
            err, res = a.call_with_fds('status', None, [fd])
            assert err is None and res['protocol'] == 1
            err, res = a.call('backup')
            assert err is not None and err[0] == 'bad_request', \
                f'backup without a descriptor answered {err or res} (used the one sent with status)'
    finally:
        os.close(fd)
    assert os.path.getsize(path) == 0, 'the stray descriptor was written to'


def test_backup_to_a_broken_pipe(daemon):
    r, w = os.pipe()
    os.close(r)
    try:
        with admin(daemon) as a:
            err, res = a.call_with_fds('backup', None, [w], timeout=30)
            assert err is not None, f'backup into a pipe without reader succeeded: {res}'
            print(f'backup to a broken pipe: {err}')
            assert a.ok('status')['protocol'] == 1
    finally:
        os.close(w)
    assert daemon.proc.poll() is None


def test_shutdown_with_a_stuck_backup(make_daemon):
    """A backup blocked on a descriptor nobody drains neither stalls the
    others nor keeps the daemon from exiting within 10 s."""
    d = make_daemon()
    for i in range(20):
        d.register(f'sb{i}', disks=[{'id': f'sbd{i}', 'size': 1}])
    r, w = os.pipe()                                 # never read
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)         # smaller than the database
    b = admin(d)
    try:
        socket.send_fds(b.sock, [request_bytes(1, 'backup')], [w])
        os.close(w)
        w = None
        time.sleep(0.3)
        with d.client() as c:
            for _ in range(5):
                t = time.monotonic()
                c.ok('ping', timeout=5)
                assert time.monotonic() - t < 1.0
        with admin(d) as a:
            assert a.ok('status')['protocol'] == 1
            t = time.monotonic()
            assert a.ok('shutdown') == {}
            try:
                rc = d.proc.wait(12)
            except subprocess.TimeoutExpired:
                rc = None
            took = time.monotonic() - t
        assert rc == 0 and took < 10.5, \
            f'vmmd had not exited 0 {took:.1f} s after shutdown (rc {rc}) with a backup stuck'
    finally:
        if w is not None:
            os.close(w)
        os.close(r)                                  # lets a stuck backup fail
        b.close()


def test_idle_watcher_is_kept(make_daemon):
    """An admin connection is not an anonymous TCP one: a watcher that sends
    nothing for longer than the idle limit (3 s here) still gets its events."""
    daemon = make_daemon(args=['--idle-timeout', '3'])
    w = watcher(daemon)
    a = admin(daemon)
    anon = daemon.client()           # the limit is real: this one is closed
    try:
        time.sleep(4.5)
        assert not anon.is_open(), 'the idle limit did not close an anonymous TCP client'
        daemon.register('late-vm')
        evs = read_events(w, lambda evs: any(e.get('vm_id') == 'late-vm' for e in evs))
        check_seqs(evs)
        assert a.ok('status')['vms'] == 1
    finally:
        w.close()
        a.close()
        anon.close()


def test_backup_under_load(daemon, make_daemon, tmp_path):
    nthreads = 8
    attempts = {}
    counts = [0] * nthreads
    stop = threading.Event()
    errors = []
    for i in range(nthreads):
        vm = f'load{i}'
        init = [{'id': f'{vm}-init', 'size': 1}]
        daemon.register(vm, ram=1, disks=init)
        attempts[vm] = [(1, tuple((d['id'], d['size']) for d in init))]

    def worker(i):
        vm = f'load{i}'
        try:
            with tcp_login(daemon, vm, register=False) as c:
                k = 1
                t0 = time.monotonic()
                while not stop.is_set() and k < 2000 and time.monotonic() - t0 < 30:
                    k += 1
                    disks = [{'id': f'{vm}-d{k}', 'size': k}, {'id': f'{vm}-e{k}', 'size': 1}]
                    attempts[vm].append((k, tuple((d['id'], d['size']) for d in disks)))
                    c.ok('vm.update', {'ram': k, 'disks': disks}, timeout=30)
                    counts[i] += 1
        except BaseException as e:      # noqa: reported below
            errors.append(f'{vm}: {e!r}')

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: min(counts) >= 5 or errors, timeout=30), counts
        assert not errors, errors
        path = os.path.join(str(tmp_path), 'load.mdb')
        t = time.monotonic()
        n = take_backup(daemon, path)
        took = time.monotonic() - t
        mid = list(counts)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert sum(counts) > sum(mid), f'writes stalled during/after the backup: {mid} -> {counts}'
    print(f'backup under load: {n} bytes in {took:.2f} s; updates per thread {counts}')
    r = restore(make_daemon, tmp_path, path, db_name(daemon), 'load')
    with admin(r) as a:
        vms, _ = follow(a, 'vm.list', 'vms', {'filter': 'all'})
        assert [v['vm_id'] for v in vms] == [f'load{i}' for i in range(nthreads)], vms
        ndisks = 0
        for v in vms:
            got = (v['ram'], tuple((d['id'], d['size']) for d in v['disks']))
            assert got in attempts[v['vm_id']], f'{v["vm_id"]}: {got} is none of its updates'
            ndisks += len(v['disks'])
        disks, _ = follow(a, 'disk.list', 'disks')
        assert len(disks) == ndisks
        assert sorted((d['vm_id'], d['id']) for d in disks) == \
            sorted((v['vm_id'], d['id']) for v in vms for d in v['disks'])
        s = a.ok('status')
        assert s['vms'] == nthreads and s['disks'] == ndisks, s


# ---------------------------------------------------------------------------
# shutdown


def test_shutdown(make_daemon):
    d = make_daemon()
    c = tcp_login(d, 'sd1')
    try:
        with admin(d) as a:
            t = time.monotonic()
            assert a.ok('shutdown') == {}
            rc = d.proc.wait(10)
            took = time.monotonic() - t
        assert rc == 0, f'vmmd exited {rc} after shutdown'
        assert took < 10
        closed, _ = c.wait_closed(2)
        assert closed
    finally:
        c.close()
    d.stop()        # reaps the exited process, checks status 0 and the log
    # it comes back with the data
    d.start()
    with d.client() as c2:
        c2.auth('sd1')


# ---------------------------------------------------------------------------
# socket: methods, tokens, limits


def test_methods_per_socket(daemon):
    c = tcp_login(daemon, 'ms1')
    try:
        for m in ADMIN_ONLY:
            c.err(m, None, 'unknown_method')
            c.err(m, {'vm_id': 'ms1'}, 'unknown_method')
        with daemon.client() as anon:
            for m in ADMIN_ONLY:
                anon.err(m, None, 'unknown_method')
            anon.err('events.watch', None, 'unauthenticated')
        with admin(daemon) as a:
            for m in CLIENT_ONLY:
                a.err(m, None, 'unknown_method')
            a.err('auth', {'vm_id': 'ms1', 'password': PASSWORD}, 'unknown_method')
            a.err('register', {'vm_id': 'ms2', 'password': PASSWORD, 'ram': 1, 'cpu': 1},
                  'unknown_method')
            a.err('no.such.method', None, 'unknown_method')
            a.err('no.such.method', {'x': 1}, 'unknown_method')
            a.err('vm.get', {'vm_id': 'ms2'}, 'not_found')       # register did not run
            assert a.ok('status')['protocol'] == 1
    finally:
        c.close()


def test_token_never_accepted_on_admin(daemon):
    c = tcp_login(daemon, 'tk1')
    try:
        with admin(daemon) as a:
            for method, params in (('status', {}), ('vm.get', {'vm_id': 'tk1'}),
                                   ('vm.list', {'filter': 'all'}), ('disk.list', {}),
                                   ('vm.create', {'vm_id': 'tk2'}),
                                   ('vm.delete', {'vm_id': 'tk1'}),
                                   ('conn.list', {}), ('events.watch', {}), ('shutdown', {})):
                p = dict(params, token=c.token)
                msg = a.err(method, p, 'bad_request')
                assert isinstance(msg, str)
            a.ok('vm.get', {'vm_id': 'tk1'})                    # delete did not run
            a.err('vm.get', {'vm_id': 'tk2'}, 'not_found')      # create did not run
            assert a.ok('status')['protocol'] == 1             # shutdown did not run
    finally:
        c.close()
    assert daemon.proc.poll() is None


def test_bad_params_keep_connection(daemon):
    with admin(daemon) as a:
        a.err('status', [1], 'bad_request')
        a.err('status', [{}, {}], 'bad_request')
        a.err('status', {'x': 1}, 'bad_request')
        a.err('vm.get', {'vm_id': 5}, 'bad_request')
        a.err('vm.get', {'vm_id': b'bin'}, 'bad_request')
        msgid = a.new_id()
        err, _ = a.call_raw(vmmtest.pack([0, msgid, 'status', {}]), msgid)
        assert err[0] == 'bad_request'
        msgid = a.new_id()
        err, _ = a.call_raw(vmmtest.pack([0, msgid, 7, []]), msgid)
        assert err[0] == 'bad_request'
        # duplicate key
        msgid = a.new_id()
        err, _ = a.call_raw(vmmtest.raw_request(msgid, 'vm.get',
                                                vmmtest.raw_map([('vm_id', 'a'),
                                                                 ('vm_id', 'b')])), msgid)
        assert err[0] == 'bad_request'
        # pipelined, answered in order
        res = a.pipeline([('status', None), ('vm.get', {'vm_id': 'zz'}), ('status', None)])
        assert res[0][0] is None and res[1][0][0] == 'not_found' and res[2][0] is None
        assert a.ok('status')['protocol'] == 1


def test_admin_message_limit(daemon):
    big = {'vm_id': 'lim', 'pad': 'x' * 70000}       # 70 KB: fine here, too large on TCP
    with admin(daemon) as a:
        data = request_bytes(1, 'vm.get', big)
        assert 65536 < len(data) < 1 << 20
        a.next_id = 2
        err, _ = a.call_raw(data, 1)
        assert err is not None and err[0] == 'bad_request', err    # the unknown key, not size
        assert a.ok('status')['protocol'] == 1
    with daemon.client() as c:
        c.send_raw_tolerant(request_bytes(1, 'vm.get', big))
        expect_framing_close(c, 'too_large')
    with admin(daemon) as a:
        a.ok('status')
        a.send_raw_tolerant(request_bytes(1, 'status', [{'pad': 'y' * ((1 << 20) + 16)}]))
        expect_framing_close(a, 'too_large')
    with admin(daemon) as a:
        # a framing error: bad bytes after a good request
        a.send_raw(request_bytes(1, 'status') + b'\xc1')
        msg = a.read_response()
        assert msg[1] == 1 and msg[2] is None
        expect_framing_close(a, 'bad_request')
    with admin(daemon) as a:
        assert a.ok('status')['protocol'] == 1


# ---------------------------------------------------------------------------
# the socket file and who is served


def run(cmd, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd='/')
    if check:
        assert p.returncode == 0, f'{cmd}: {p.returncode}\n{p.stdout}{p.stderr}'
    return p


CHILD = r'''
import json, socket, sys, time
import msgpack
out = {"msgs": [], "eof": False, "error": None, "first_ms": None, "uid": None}
import os
out["uid"] = os.getuid()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    t0 = time.monotonic()
    s.connect(sys.argv[1])
    if sys.argv[2] == "status":
        try:
            s.send(msgpack.packb([0, 1, "status", []]), socket.MSG_NOSIGNAL)
        except OSError as e:
            out["send_error"] = repr(e)
    u = msgpack.Unpacker(raw=False)
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            out["reset"] = True
            d = b""
        if not d:
            out["eof"] = True
            break
        u.feed(d)
        for m in u:
            if out["first_ms"] is None:
                out["first_ms"] = (time.monotonic() - t0) * 1000
            out["msgs"].append(m)
            if sys.argv[2] == "status" and m[0] == 1 and m[1] == 1:
                raise SystemExit(print(json.dumps(out)))
except SystemExit:
    raise
except Exception as e:
    out["error"] = repr(e)
print(json.dumps(out))
'''


def connect_as(path, setpriv_args, send='status'):
    p = run(['setpriv', *setpriv_args, PYTHON, '-c', CHILD, path, send])
    return json.loads(p.stdout)


def open_socket_to_all(d):
    os.chmod(d.sockdir, 0o755)
    os.chmod(d.admin_socket, 0o777)


def assert_forbidden(out):
    assert out['error'] is None, out
    assert len(out['msgs']) == 1, f'expected one forbidden error: {out}'
    assert_error_frame(out['msgs'][0], 'forbidden')
    assert out['eof'], f'not disconnected after forbidden: {out}'
    assert out['first_ms'] < 2000, out


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='needs root (setpriv, useradd)')


def test_socket_file_mode(daemon):
    st = os.stat(daemon.admin_socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)


@needs_root
def test_non_admin_is_refused(daemon):
    open_socket_to_all(daemon)
    for send in ('status', 'nothing'):
        out = connect_as(daemon.admin_socket,
                         ['--reuid=nobody', '--regid=nogroup', '--clear-groups'], send)
        assert out['uid'] == 65534, out
        assert_forbidden(out)
    # root still is
    with admin(daemon) as a:
        assert a.ok('status')['protocol'] == 1
    # and without the chmod, nobody cannot even connect
    os.chmod(daemon.admin_socket, 0o660)
    out = connect_as(daemon.admin_socket,
                     ['--reuid=nobody', '--regid=nogroup', '--clear-groups'])
    assert out['msgs'] == [] and 'Permission' in (out['error'] or ''), out


@pytest.fixture
def admin_user():
    tag = secrets.token_hex(3)
    group = f'vmmdtest-{tag}'
    user = f'vmmdtest-{tag}'
    run(['groupadd', '-f', group])
    try:
        run(['useradd', '-M', '-N', '-g', 'nogroup', '-G', group, user])
        try:
            yield user, group
        finally:
            run(['userdel', user], check=False)
    finally:
        run(['groupdel', group], check=False)


@needs_root
def test_admin_group(make_daemon, admin_user):
    import grp
    user, group = admin_user
    d = make_daemon(args=['--admin-group', group])
    st = os.stat(d.admin_socket)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_gid == grp.getgrnam(group).gr_gid, (st.st_gid, group)
    os.chmod(d.sockdir, 0o755)         # the socket itself keeps 0660 and its group
    # a member with the group in its credentials
    out = connect_as(d.admin_socket, [f'--reuid={user}', '--regid=nogroup', '--init-groups'])
    assert out['error'] is None, out
    assert len(out['msgs']) == 1, out
    m = out['msgs'][0]
    assert m[0] == 1 and m[1] == 1 and m[2] is None and m[3]['protocol'] == 1, out
    # a non-member, socket opened up: refused
    os.chmod(d.admin_socket, 0o777)
    out = connect_as(d.admin_socket, ['--reuid=nobody', '--regid=nogroup', '--clear-groups'])
    assert_forbidden(out)
    # the member still is served with the socket open to all
    out = connect_as(d.admin_socket, [f'--reuid={user}', '--regid=nogroup', '--init-groups'])
    assert out['error'] is None and len(out['msgs']) == 1, out
    assert out['msgs'][0][1] == 1 and out['msgs'][0][2] is None, out


def test_stale_socket_is_replaced(make_daemon):
    d = make_daemon(start=False)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(d.admin_socket)
    s.close()                          # the file stays, nobody listens
    assert stat.S_ISSOCK(os.stat(d.admin_socket).st_mode)
    d.start()
    with admin(d) as a:
        assert a.ok('status')['protocol'] == 1


def test_second_daemon_on_live_socket_refused(daemon, tmp_path):
    state = os.path.join(str(tmp_path), 'second-state')
    os.makedirs(state)
    port = vmmtest.free_port()
    p = subprocess.run([vmmtest.vmmd_bin(), '--state-dir', state, '--listen', f'127.0.0.1:{port}',
                        '--admin-socket', daemon.admin_socket], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode == 1, f'second vmmd exited {p.returncode}:\n{p.stdout}{p.stderr}'
    for m in vmmtest.CRASH_MARKERS:
        assert m not in p.stderr
    # the first one still owns it
    with admin(daemon) as a:
        assert a.ok('status')['protocol'] == 1
    assert stat.S_IMODE(os.stat(daemon.admin_socket).st_mode) == 0o660
