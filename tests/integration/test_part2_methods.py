# SPDX-License-Identifier: MIT
"""Part 2's VM and group methods against PROTOCOL.md: the VM record's new
keys, vm.create with metadata, vm.set (each key, nil clears, the limits of
hostname, ip and os), vm.list's new filters, vm.approve/vm.suspend with
--registration approval, and group.create/get/list/rename/add/remove/delete
(ids never reused, names, all or nothing, vm_ids <= 1000). Each call's
success, each error code and which wins when several apply."""

import pytest

import p2util
from p2util import LONG, PW, admin, create_vms, make_user, tcp, watch
from vmmtest import now_ms, raw_map, raw_request, raw_str

NEW_KEYS = {'hostname', 'ip', 'os', 'owner', 'group', 'access', 'status', 'booking'}
PART1_KEYS = {'vm_id', 'ram', 'cpu', 'disks', 'registered_at', 'updated_at', 'last_seen_at',
              'connected', 'authorized'}


@pytest.fixture(scope='module')
def d(tmp_path_factory):
    yield from p2util.shared_daemon(tmp_path_factory, ['--auth-failures-per-minute', '1000'],
                                    'methods')


@pytest.fixture(scope='module')
def people(d):
    return p2util.People(d, {'mt-viewer': 'viewer', 'mt-alice': 'user', 'mt-bob': 'user'})


def check_vm(rec):
    missing = (PART1_KEYS | NEW_KEYS) - set(rec)
    assert not missing, f'VM record without {missing}: {rec}'
    assert rec['access'] in ('active', 'pending', 'suspended'), rec
    assert rec['status'] in ('on', 'off', 'requested'), rec
    assert isinstance(rec['ip'], list), rec
    return rec


# ---------------------------------------------------------------------------
# the record and vm.create


def test_vm_create_with_metadata(d, people):
    with admin(d) as a:
        gid = a.ok('group.create', {'name': 'vc-group'})['id']
        t0 = now_ms()
        res = a.ok('vm.create', {'vm_id': 'vc-1', 'ram': 2048, 'cpu': 2,
                                 'disks': [{'id': 'vc-d1', 'size': 10}, {'size': 20}],
                                 'hostname': 'web-01.example', 'owner': 'mt-alice',
                                 'group': gid}, timeout=LONG)
        assert set(res) == {'vm_id', 'password'} and res['vm_id'] == 'vc-1', res
        rec = check_vm(a.ok('vm.get', {'vm_id': 'vc-1'}))
        assert (rec['ram'], rec['cpu']) == (2048, 2), rec
        assert rec['disks'] == [{'id': 'vc-d1', 'size': 10}, {'id': 'vc-1-disk1', 'size': 20}]
        assert rec['hostname'] == 'web-01.example' and rec['owner'] == 'mt-alice', rec
        assert rec['group'] == gid and rec['ip'] == [] and rec['os'] is None, rec
        assert rec['access'] == 'active' and rec['status'] == 'off', rec
        assert rec['booking'] is None and rec['connected'] is False, rec
        assert t0 - 2000 <= rec['registered_at'] <= now_ms() + 2000, rec
        assert a.ok('group.get', {'id': gid})['vm_ids'] == ['vc-1']
        # the same record on TCP for a viewer
        with people.conn('mt-viewer') as c:
            assert c.ok('vm.get', {'vm_id': 'vc-1'}) == rec
            c.err('vm.get', {'vm_id': 'vc-none'}, 'not_found')
            c.err('vm.get', {}, 'bad_request')       # a user names the VM
        # without ram and cpu: not described
        a.ok('vm.create', {'vm_id': 'vc-2'}, timeout=LONG)
        rec = check_vm(a.ok('vm.get', {'vm_id': 'vc-2'}))
        assert rec['ram'] is None and rec['cpu'] is None and rec['disks'] == [], rec
        assert rec['group'] is None and rec['owner'] is None and rec['hostname'] is None


def test_vm_create_errors_and_precedence(d):
    with admin(d) as a:
        create_vms(a, ['ve-1'])
        # not_found (no such group) creates nothing
        a.err('vm.create', {'vm_id': 've-2', 'ram': 1, 'cpu': 1, 'group': 999999}, 'not_found')
        a.err('vm.get', {'vm_id': 've-2'}, 'not_found')
        # exists
        a.err('vm.create', {'vm_id': 've-1'}, 'exists', timeout=LONG)
        # not_found before exists
        a.err('vm.create', {'vm_id': 've-1', 'group': 999999}, 'not_found', timeout=LONG)
        # bad_request before all
        for p in ({'vm_id': 've-1', 'hostname': '-bad'}, {'vm_id': 've-1', 'group': -1},
                  {'vm_id': 've-1', 'owner': 'bad name'}, {'vm_id': 've-1', 'ram': 0, 'cpu': 1},
                  {'vm_id': 've-1', 'cpu': 1025, 'ram': 1}, {'vm_id': 've-1', 'ip': ['1.2.3.4']},
                  {'vm_id': 've-1', 'group': 999999, 'hostname': 'a_b'}):
            a.err('vm.create', p, 'bad_request')
        # disk conflict: nothing created
        a.ok('vm.set', {'vm_id': 've-1', 'disks': [{'id': 've-disk', 'size': 1}]})
        msg = a.err('vm.create', {'vm_id': 've-3', 'ram': 1, 'cpu': 1,
                                  'disks': [{'id': 've-disk', 'size': 1}]}, 'conflict',
                    timeout=LONG)
        assert 've-disk' in msg and 've-1' in msg, msg
        a.err('vm.get', {'vm_id': 've-3'}, 'not_found')


# ---------------------------------------------------------------------------
# vm.set

HOST_253 = '.'.join(['a' * 63, 'b' * 63, 'c' * 63, 'd' * 61])
HOST_OK = ['web-01', 'a', '1abc', 'A.b-c.D', 'x' * 63 + '.y', HOST_253]
HOST_BAD = ['', '-a', 'a-', 'a_b', 'a..b', '.a', 'a b', 'x' * 64, HOST_253 + 'e', 'a.-b',
            'h\u00e9']
IP_OK = [['10.0.0.5'], ['fd00::5'], ['10.0.0.5', 'fd00::5', '::1', '0.0.0.0'],
         [f'10.0.0.{i}' for i in range(16)], ['::ffff:1.2.3.4']]
IP_BAD = [['10.0.0.256'], ['abc'], ['1.2.3'], [''], ['fd00:::5'], ['10.0.0.5/24'], [1]]


def test_vm_set_each_key_and_nil_clears(d, people):
    with admin(d) as a:
        create_vms(a, ['vs-1'], ram=512, cpu=1)
        gid = a.ok('group.create', {'name': 'vs-group'})['id']
        before = a.ok('vm.get', {'vm_id': 'vs-1'})
        rec = check_vm(a.ok('vm.set', {'vm_id': 'vs-1', 'hostname': 'db-1', 'ip': ['10.1.1.1'],
                                       'os': {'name': 'Debian', 'version': '12'},
                                       'owner': 'mt-bob', 'group': gid}))
        assert rec['hostname'] == 'db-1' and rec['ip'] == ['10.1.1.1'], rec
        assert rec['os'] == {'name': 'Debian', 'version': '12'}, rec
        assert rec['owner'] == 'mt-bob' and rec['group'] == gid, rec
        assert rec['ram'] == 512 and rec['updated_at'] == before['updated_at'], \
            'metadata is not a change of ram, cpu or disks'
        assert a.ok('vm.get', {'vm_id': 'vs-1'}) == rec
        assert a.ok('group.get', {'id': gid})['vm_ids'] == ['vs-1']
        # ram, cpu, disks
        rec = a.ok('vm.set', {'vm_id': 'vs-1', 'ram': 4096, 'cpu': 4,
                              'disks': [{'id': 'vs-d', 'size': 5}]})
        assert (rec['ram'], rec['cpu'], rec['disks']) == (4096, 4, [{'id': 'vs-d', 'size': 5}])
        assert rec['updated_at'] >= before['updated_at'] and rec['hostname'] == 'db-1', rec
        # nil clears each metadata key, and only it
        rec = a.ok('vm.set', {'vm_id': 'vs-1', 'hostname': None})
        assert rec['hostname'] is None and rec['owner'] == 'mt-bob', rec
        rec = a.ok('vm.set', {'vm_id': 'vs-1', 'ip': None, 'os': None})
        assert rec['ip'] == [] and rec['os'] is None and rec['group'] == gid, rec
        rec = a.ok('vm.set', {'vm_id': 'vs-1', 'owner': None})
        assert rec['owner'] is None, rec
        rec = a.ok('vm.set', {'vm_id': 'vs-1', 'group': None})
        assert rec['group'] is None, rec
        assert a.ok('group.get', {'id': gid})['vm_ids'] == []
        assert rec['ram'] == 4096, rec
        # the VM's own data on TCP
        with people.conn('mt-viewer') as c:
            assert c.ok('vm.get', {'vm_id': 'vs-1'}) == a.ok('vm.get', {'vm_id': 'vs-1'})


def test_vm_set_errors(d):
    with admin(d) as a:
        create_vms(a, ['vse-1', 'vse-2'])
        a.ok('vm.set', {'vm_id': 'vse-2', 'disks': [{'id': 'vse-disk', 'size': 1}]})
        a.err('vm.set', {'vm_id': 'vse-none', 'hostname': 'h'}, 'not_found')
        a.err('vm.set', {'vm_id': 'vse-1', 'group': 999999}, 'not_found')
        msg = a.err('vm.set', {'vm_id': 'vse-1', 'disks': [{'id': 'vse-disk', 'size': 1}]},
                    'conflict')
        assert 'vse-disk' in msg and 'vse-2' in msg, msg
        # precedence: bad_request > not_found > conflict
        a.err('vm.set', {'vm_id': 'vse-none', 'hostname': '-h'}, 'bad_request')
        a.err('vm.set', {'vm_id': 'vse-none', 'disks': [{'id': 'vse-disk', 'size': 1}]},
              'not_found')
        for p in ({'vm_id': 'vse-1', 'os': {'name': 'Debian'}},
                  {'vm_id': 'vse-1', 'os': {'name': 'Debian', 'version': 12}},
                  {'vm_id': 'vse-1', 'os': {'name': 'D', 'version': '1', 'x': 1}},
                  {'vm_id': 'vse-1', 'os': 'Debian 12'},
                  {'vm_id': 'vse-1', 'owner': 'a b'}, {'vm_id': 'vse-1', 'owner': ''},
                  {'vm_id': 'vse-1', 'ram': 1 << 32}, {'vm_id': 'vse-1', 'cpu': 0},
                  {'vm_id': 'vse-1', 'group': 'one'}, {'vm_id': 'vse-1', 'bogus': 1},
                  {'vm_id': 'bad id!', 'hostname': 'h'}):
            a.err('vm.set', p, 'bad_request')
        # nothing of a failed call was kept
        rec = a.ok('vm.get', {'vm_id': 'vse-1'})
        assert rec['os'] is None and rec['owner'] is None and rec['group'] is None, rec
        assert rec['disks'] == [], rec


@pytest.mark.parametrize('host', HOST_OK)
def test_hostname_ok(d, host):
    with admin(d) as a:
        if a.call('vm.get', {'vm_id': 'h-ok'})[0] is not None:
            create_vms(a, ['h-ok'])
        assert a.ok('vm.set', {'vm_id': 'h-ok', 'hostname': host})['hostname'] == host


@pytest.mark.parametrize('host', HOST_BAD)
def test_hostname_bad(d, host):
    with admin(d) as a:
        if a.call('vm.get', {'vm_id': 'h-bad'})[0] is not None:
            create_vms(a, ['h-bad'])
        a.ok('vm.set', {'vm_id': 'h-bad', 'hostname': 'keep'})
        a.err('vm.set', {'vm_id': 'h-bad', 'hostname': host}, 'bad_request')
        assert a.ok('vm.get', {'vm_id': 'h-bad'})['hostname'] == 'keep'


@pytest.mark.parametrize('ip', IP_OK, ids=range(len(IP_OK)))
def test_ip_ok(d, ip):
    with admin(d) as a:
        if a.call('vm.get', {'vm_id': 'ip-ok'})[0] is not None:
            create_vms(a, ['ip-ok'])
        assert a.ok('vm.set', {'vm_id': 'ip-ok', 'ip': ip})['ip'] == ip


@pytest.mark.parametrize('ip', IP_BAD, ids=range(len(IP_BAD)))
def test_ip_bad(d, ip):
    with admin(d) as a:
        if a.call('vm.get', {'vm_id': 'ip-bad'})[0] is not None:
            create_vms(a, ['ip-bad'])
        a.err('vm.set', {'vm_id': 'ip-bad', 'ip': ip}, 'bad_request')


def test_ip_list_limit(d):
    """<= 16 addresses; a list over its limit is too_large (errors table:
    "a list in it (disks) over the limits")."""
    with admin(d) as a:
        create_vms(a, ['ip-lim'])
        a.ok('vm.set', {'vm_id': 'ip-lim', 'ip': [f'10.0.1.{i}' for i in range(16)]})
        a.err('vm.set', {'vm_id': 'ip-lim', 'ip': [f'10.0.1.{i}' for i in range(17)]},
              'too_large')
        assert len(a.ok('vm.get', {'vm_id': 'ip-lim'})['ip']) == 16


def test_vm_sets_its_own_metadata(d, people):
    """hostname, ip and os come from the VM itself with vm.add and vm.update."""
    with tcp(d) as c:
        c.register('vo-1', password=PW)
        c.auth('vo-1', PW)
        rec = c.ok('vm.update', {'hostname': 'self-1', 'ip': ['192.0.2.1'],
                                 'os': {'name': 'Alpine', 'version': '3.19'}})
        assert (rec['hostname'], rec['ip'], rec['os']) == \
            ('self-1', ['192.0.2.1'], {'name': 'Alpine', 'version': '3.19'}), rec
        c.err('vm.update', {'hostname': 'bad_host'}, 'bad_request')
        # what the VM cannot set
        c.err('vm.update', {'owner': 'mt-alice'}, 'bad_request')
        c.err('vm.update', {'group': 1}, 'bad_request')
        # its own record, and nobody else's
        assert c.ok('vm.get', {})['hostname'] == 'self-1'
        assert c.ok('vm.get', {'vm_id': 'vo-1'})['hostname'] == 'self-1'
        c.err('vm.get', {'vm_id': 'vc-1'}, 'forbidden')
        c.err('vm.get', {'vm_id': 'vo-none'}, 'forbidden')
        c.err('booking.get', {'vm_id': 'vc-1'}, 'forbidden')
        # booking.get without vm_id: its own
        assert c.ok('booking.get', {}) == {'booking': None}
        assert c.ok('booking.get', {'vm_id': 'vo-1'}) == {'booking': None}
    # an undescribed VM made by an admin describes itself with vm.add
    with admin(d) as a:
        a.ok('vm.create', {'vm_id': 'vo-2', 'password': PW}, timeout=LONG)
    with p2util.vm_login(d, 'vo-2') as c:
        rec = c.ok('vm.add', {'vm_id': 'vo-2', 'ram': 1, 'cpu': 1, 'disks': [],
                              'hostname': 'added-2', 'ip': ['192.0.2.2']})
        assert rec['hostname'] == 'added-2' and rec['ip'] == ['192.0.2.2'], rec
    with admin(d) as a:
        rec = a.ok('vm.get', {'vm_id': 'vo-2'})
        assert rec['hostname'] == 'added-2' and rec['ip'] == ['192.0.2.2'], rec


# ---------------------------------------------------------------------------
# vm.list filters


def test_vm_list_filters(d, people):
    with admin(d) as a:
        create_vms(a, ['vl-1', 'vl-2', 'vl-3', 'vl-4'])
        g = a.ok('group.create', {'name': 'vl-group', 'vm_ids': ['vl-1', 'vl-2']})['id']
        a.ok('vm.set', {'vm_id': 'vl-1', 'owner': 'vl-owner-a'})
        a.ok('vm.set', {'vm_id': 'vl-3', 'owner': 'vl-owner-a'})
        a.ok('vm.set', {'vm_id': 'vl-2', 'owner': 'vl-owner-b'})
    with people.conn('mt-alice') as c:
        c.ok('booking.create', {'vm_id': 'vl-1', 'minutes': 30})
    with people.conn('mt-bob') as c:
        c.ok('booking.create', {'vm_id': 'vl-3', 'minutes': 30})

    def ids(conn, **f):
        vms, _ = p2util.vmmtest.list_all(conn, filter='all', extra=f, limit=2)
        return sorted(v['vm_id'] for v in vms if v['vm_id'].startswith('vl-'))

    with admin(d) as a, people.conn('mt-viewer') as v:
        for conn in (a, v):
            assert ids(conn, group=g) == ['vl-1', 'vl-2']
            assert ids(conn, owner='vl-owner-a') == ['vl-1', 'vl-3']
            assert ids(conn, booked_by='mt-alice') == ['vl-1']
            assert ids(conn, booked_by='mt-bob') == ['vl-3']
            assert ids(conn, status='off') == ['vl-1', 'vl-2', 'vl-3', 'vl-4']
            assert ids(conn, status='on') == []
            assert ids(conn, status='requested') == []
            # filters combine
            assert ids(conn, group=g, owner='vl-owner-a') == ['vl-1']
            assert ids(conn, group=g, booked_by='mt-bob') == []
            assert ids(conn, owner='vl-owner-a', booked_by='mt-bob') == ['vl-3']
            assert ids(conn, owner='vl-owner-a', booked_by='mt-bob', status='off') == ['vl-3']
            for bad in ({'status': 'up'}, {'group': 'x'}, {'owner': 'a b'},
                        {'booked_by': ''}, {'group': -1}):
                conn.err('vm.list', dict(bad, filter='all'), 'bad_request')
            # connected / authorized combine with them too
            res = conn.ok('vm.list', {'filter': 'connected', 'group': g})
            assert res['vms'] == [] and res['next'] is None, res


# ---------------------------------------------------------------------------
# access: approval and suspension


def test_registration_approval_and_suspend(make_daemon):
    dd = make_daemon(args=['--registration', 'approval', '--auth-failures-per-minute', '1000'])
    with admin(dd) as a:
        make_user(a, 'ap-user')
        w = admin(dd)
        watch(w, types=['vm.', 'session.', 'booking.'])
        with tcp(dd) as c:
            rec = c.register('ap-1', password=PW)
            assert rec['access'] == 'pending', rec
            # cannot log in, awaiting approval; a wrong password still says unauthenticated
            msg = c.err('auth', {'vm_id': 'ap-1', 'password': PW}, 'forbidden', timeout=LONG)
            assert 'approv' in msg, msg
            c.err('auth', {'vm_id': 'ap-1', 'password': 'wrong-pw-9'}, 'unauthenticated',
                  timeout=LONG)
        assert a.ok('vm.get', {'vm_id': 'ap-1'})['access'] == 'pending'
        # a pending VM cannot be booked
        with p2util.user_login(dd, 'ap-user') as u:
            u.err('booking.create', {'vm_id': 'ap-1', 'minutes': 5}, 'conflict')
            rec = a.ok('vm.approve', {'vm_id': 'ap-1'})
            assert check_vm(rec)['access'] == 'active', rec
            vm = p2util.vm_login(dd, 'ap-1')
            assert vm.ok('whoami') == {'kind': 'vm', 'vm_id': 'ap-1'}
            vm2 = p2util.vm_login(dd, 'ap-1')
            u.ok('booking.create', {'vm_id': 'ap-1', 'minutes': 5})
            # suspend: its sessions end, logins refused, bookings refused
            rec = a.ok('vm.suspend', {'vm_id': 'ap-1'})
            assert rec['access'] == 'suspended' and rec['authorized'] is False, rec
            assert rec['connected'] is False, rec
            vm.err('whoami', {}, 'unauthenticated')
            vm2.err('vm.get', {}, 'unauthenticated')
            with tcp(dd) as c:
                c.err('resume', {'token': vm.token}, 'unauthenticated')
                c.err('auth', {'vm_id': 'ap-1', 'password': PW}, 'forbidden', timeout=LONG)
            u.ok('booking.cancel', {'vm_id': 'ap-1'})
            u.err('booking.create', {'vm_id': 'ap-1', 'minutes': 5}, 'conflict')
            # approve again: back
            assert a.ok('vm.approve', {'vm_id': 'ap-1'})['access'] == 'active'
            vm3 = p2util.vm_login(dd, 'ap-1')
            assert vm3.ok('vm.get')['access'] == 'active'
            # approving an active VM is harmless
            assert a.ok('vm.approve', {'vm_id': 'ap-1'})['access'] == 'active'
            for c in (vm, vm2, vm3):
                c.close()
        a.err('vm.approve', {'vm_id': 'ap-none'}, 'not_found')
        a.err('vm.suspend', {'vm_id': 'ap-none'}, 'not_found')
        a.err('vm.suspend', {'vm_id': 'bad id!'}, 'bad_request')
        a.err('vm.suspend', {}, 'bad_request')
        def approved_after_suspend(e):
            t = [x['type'] for x in e]
            return 'vm.suspended' in t and 'vm.approved' in t[t.index('vm.suspended'):]
        evs = p2util.read_events(w, approved_after_suspend)
        types = [e['type'] for e in evs]
        assert types.count('vm.suspended') == 1, types
        i = types.index('vm.suspended')
        ended = [e for e in evs if e['type'] == 'session.ended']
        assert len(ended) == 2 and {e['reason'] for e in ended} == {'suspended'}, ended
        assert all(e['vm_id'] == 'ap-1' for e in evs if e['type'].startswith('vm.')), evs
        assert types[0] == 'vm.registered', types
        assert 'booking.created' in types[:i], types
        w.close()
    # registration open: active at once
    d2 = make_daemon()
    with tcp(d2) as c:
        assert c.register('ap-open', password=PW)['access'] == 'active'


# ---------------------------------------------------------------------------
# groups


def test_group_ids_count_from_one_never_reused(make_daemon):
    dd = make_daemon()
    with admin(dd) as a:
        t0 = now_ms()
        g1 = a.ok('group.create', {'name': 'one'})
        assert g1['id'] == 1 and g1['name'] == 'one' and g1['vm_ids'] == [], g1
        assert t0 - 2000 <= g1['created_at'] <= now_ms() + 2000, g1
        assert a.ok('group.create', {'name': 'two'})['id'] == 2
        assert a.ok('group.delete', {'id': 2}) == {}
        assert a.ok('group.create', {'name': 'three'})['id'] == 3
        assert a.ok('group.delete', {'id': 3}) == {}
    dd.restart()
    with admin(dd) as a:
        assert a.ok('group.create', {'name': 'four'})['id'] == 4
        assert a.ok('group.create', {'name': 'two'})['id'] == 5     # a name is free again
        assert [g['id'] for g in a.ok('group.list', {})['groups']] == [1, 4, 5]


GROUP_NAME_OK = ['a', 'x' * 64, '\u00e9' * 32, 'Team A / lab', '\u65e5\u672c']
GROUP_NAME_BAD = ['', 'x' * 65, '\u00e9' * 32 + 'x', 'a\nb', 'a\x01', 'a\x7f', 'a\u0085b',
                  'a\tb', 'a\x00b']


def test_group_names(d):
    with admin(d) as a:
        for i, name in enumerate(GROUP_NAME_OK):
            g = a.ok('group.create', {'name': name})
            assert g['name'] == name, g
            assert a.ok('group.get', {'id': g['id']})['name'] == name
            # unique
            a.err('group.create', {'name': name}, 'exists')
            a.ok('group.delete', {'id': g['id']})
        for name in GROUP_NAME_BAD:
            a.err('group.create', {'name': name}, 'bad_request')
        # invalid UTF-8
        msgid = a.new_id()
        err, _ = a.call_raw(raw_request(msgid, 'group.create',
                                        raw_map([('name', raw_str(b'ab\xff'))])), msgid)
        assert err and err[0] == 'bad_request', err
        g = a.ok('group.create', {'name': 'gn-keep'})
        for name in GROUP_NAME_BAD:
            a.err('group.rename', {'id': g['id'], 'name': name}, 'bad_request')
        assert a.ok('group.get', {'id': g['id']})['name'] == 'gn-keep'


def test_group_crud_and_moves(d):
    with admin(d) as a:
        create_vms(a, ['gm-1', 'gm-2', 'gm-3'])
        w = admin(d)
        watch(w, types=['group.'])
        g1 = a.ok('group.create', {'name': 'gm-a', 'vm_ids': ['gm-1', 'gm-2']})
        assert sorted(g1['vm_ids']) == ['gm-1', 'gm-2'], g1
        g2 = a.ok('group.create', {'name': 'gm-b'})
        assert a.ok('group.get', {'id': g1['id']}) == g1
        # rename
        r = a.ok('group.rename', {'id': g1['id'], 'name': 'gm-a2'})
        assert r['name'] == 'gm-a2' and r['id'] == g1['id'] and r['vm_ids'] == g1['vm_ids']
        a.err('group.rename', {'id': g1['id'], 'name': 'gm-b'}, 'exists')
        a.err('group.create', {'name': 'gm-a2'}, 'exists')
        a.err('group.rename', {'id': 999999, 'name': 'gm-zz'}, 'not_found')
        # precedence: not_found before exists
        a.err('group.rename', {'id': 999999, 'name': 'gm-b'}, 'not_found')
        a.err('group.create', {'name': 'gm-b', 'vm_ids': ['gm-none']}, 'not_found')
        # add moves the VMs (a VM is in at most one group)
        r = a.ok('group.add', {'id': g2['id'], 'vm_ids': ['gm-2', 'gm-3']})
        assert sorted(r['vm_ids']) == ['gm-2', 'gm-3'], r
        assert a.ok('group.get', {'id': g1['id']})['vm_ids'] == ['gm-1']
        assert a.ok('vm.get', {'vm_id': 'gm-2'})['group'] == g2['id']
        # adding a member again changes nothing
        assert sorted(a.ok('group.add', {'id': g2['id'], 'vm_ids': ['gm-3']})['vm_ids']) == \
            ['gm-2', 'gm-3']
        # all or nothing
        a.err('group.add', {'id': g2['id'], 'vm_ids': ['gm-1', 'gm-none']}, 'not_found')
        assert a.ok('vm.get', {'vm_id': 'gm-1'})['group'] == g1['id']
        a.err('group.add', {'id': 999999, 'vm_ids': ['gm-1']}, 'not_found')
        a.err('group.add', {'id': g2['id'], 'vm_ids': ['gm-1', 'bad id!']}, 'bad_request')
        assert a.ok('vm.get', {'vm_id': 'gm-1'})['group'] == g1['id']
        # remove: with the id, or from whatever group holds it
        r = a.ok('group.remove', {'vm_id': 'gm-2', 'id': g2['id']})
        assert r['id'] == g2['id'] and r['vm_ids'] == ['gm-3'], r
        r = a.ok('group.remove', {'vm_id': 'gm-3'})
        assert r['id'] == g2['id'] and r['vm_ids'] == [], r
        a.err('group.remove', {'vm_id': 'gm-3'}, 'not_found')       # in no group
        a.err('group.remove', {'vm_id': 'gm-none'}, 'not_found')
        a.err('group.remove', {'vm_id': 'gm-1', 'id': 999999}, 'not_found')
        a.err('group.remove', {'id': g1['id']}, 'bad_request')
        assert a.ok('vm.get', {'vm_id': 'gm-3'})['group'] is None
        # delete: its VMs stay, without a group; the log names the group
        assert a.ok('group.delete', {'id': g1['id']}) == {}
        line = f"group.delete group {g1['id']} ('gm-a2')\n"
        assert p2util.wait_until(lambda: line in d.log_text(), 5), d.log_text()[-2000:]
        rec = a.ok('vm.get', {'vm_id': 'gm-1'})
        assert rec['group'] is None, rec
        a.err('group.get', {'id': g1['id']}, 'not_found')
        a.err('group.delete', {'id': g1['id']}, 'not_found')
        a.err('group.add', {'id': g1['id'], 'vm_ids': ['gm-1']}, 'not_found')
        # deleting a VM takes it out of its group
        a.ok('group.add', {'id': g2['id'], 'vm_ids': ['gm-1']})
        a.ok('vm.delete', {'vm_id': 'gm-1'})
        assert a.ok('group.get', {'id': g2['id']})['vm_ids'] == []
        evs = p2util.read_events(w, lambda e: any(x['type'] == 'group.deleted' for x in e))
        w.close()
        kinds = [(e['type'], e['id']) for e in evs]
        assert kinds[:2] == [('group.created', g1['id']), ('group.created', g2['id'])], kinds
        assert ('group.changed', g1['id']) in kinds and ('group.changed', g2['id']) in kinds
        assert kinds[-1] == ('group.deleted', g1['id']), kinds
        assert all(e['feed'] for e in evs), evs


def test_group_list_paging(d):
    with admin(d) as a:
        mine = [a.ok('group.create', {'name': f'gl-{i}'})['id'] for i in range(5)]
        whole = a.ok('group.list', {})
        assert whole['next'] is None
        ids_ = [g['id'] for g in whole['groups']]
        assert ids_ == sorted(ids_) and set(mine) <= set(ids_), ids_
        paged = []
        after = None
        for _ in range(1000):
            p = {'limit': 2}
            if after is not None:
                p['after'] = after
            res = a.ok('group.list', p)
            paged += [g['id'] for g in res['groups']]
            if res['next'] is None:
                break
            assert res['next'] == res['groups'][-1]['id'], res
            after = res['next']
        assert paged == ids_
        for bad in ({'limit': 0}, {'limit': 10001}, {'after': 'x'}, {'after': -1}):
            a.err('group.list', bad, 'bad_request')
        a.err('group.get', {'id': 999999}, 'not_found')
        a.err('group.get', {'id': 'one'}, 'bad_request')
        a.err('group.get', {}, 'bad_request')


def test_group_vm_ids_limit(d):
    """vm_ids in one request <= 1,000; past it too_large (a list over its
    limit), and bad_request still wins."""
    with admin(d) as a:
        g = a.ok('group.create', {'name': 'lim-g'})['id']
        k1000 = [f'lim-{i}' for i in range(1000)]
        a.err('group.create', {'name': 'lim-h', 'vm_ids': k1000}, 'not_found')
        a.err('group.add', {'id': g, 'vm_ids': k1000}, 'not_found')
        a.err('group.create', {'name': 'lim-h', 'vm_ids': k1000 + ['lim-x']}, 'too_large')
        a.err('group.add', {'id': g, 'vm_ids': k1000 + ['lim-x']}, 'too_large')
        # too_large before not_found (no such group)
        a.err('group.add', {'id': 999999, 'vm_ids': k1000 + ['lim-x']}, 'too_large')
        # bad_request before too_large
        a.err('group.add', {'id': g, 'vm_ids': k1000 + ['bad id!']}, 'bad_request')
        a.err('group.create', {'name': '', 'vm_ids': k1000 + ['x']}, 'bad_request')
        # nothing was made
        assert 'lim-h' not in [x['name'] for x in a.ok('group.list', {})['groups']]


def test_moving_a_vm_changes_both_groups(d):
    """group.add moves a VM out of the group that held it: that group changed
    too, and a watcher of group.* must hear of both."""
    with admin(d) as a:
        create_vms(a, ['mv-1'])
        g1 = a.ok('group.create', {'name': 'mv-a', 'vm_ids': ['mv-1']})['id']
        g2 = a.ok('group.create', {'name': 'mv-b'})['id']
        w = admin(d)
        watch(w, types=['group.'])
        a.ok('group.add', {'id': g2, 'vm_ids': ['mv-1']})
        evs = p2util.read_events(w, lambda e: len(e) >= 1)
        evs += p2util.quiet_events(w, 0.5)
        assert sorted((e['type'], e['id']) for e in evs) == \
            sorted([('group.changed', g1), ('group.changed', g2)]), evs
        # the same for a group made with a VM of another group
        g3 = a.ok('group.create', {'name': 'mv-c', 'vm_ids': ['mv-1']})['id']
        evs = p2util.read_events(w, lambda e: len(e) >= 1)
        evs += p2util.quiet_events(w, 0.5)
        assert sorted((e['type'], e['id']) for e in evs) == \
            sorted([('group.created', g3), ('group.changed', g2)]), evs
        assert a.ok('group.get', {'id': g2})['vm_ids'] == []
        w.close()


def test_status_counts_part2_methods(d):
    with admin(d) as a:
        before = a.ok('status')['methods']
        a.ok('group.create', {'name': 'st-g'})
        a.err('group.create', {'name': 'st-g'}, 'exists')
        a.err('group.get', {'id': 999999}, 'not_found')
        after = a.ok('status')['methods']

        def delta(m, k):
            return after.get(m, {}).get(k, 0) - before.get(m, {}).get(k, 0)
        assert (delta('group.create', 'calls'), delta('group.create', 'errors')) == (2, 1), \
            (before.get('group.create'), after.get('group.create'))
        assert (delta('group.get', 'calls'), delta('group.get', 'errors')) == (1, 1)
        for k in ('calls', 'errors', 'p50_us', 'p99_us'):
            assert k in after['group.create'], after['group.create']
