# SPDX-License-Identifier: MIT
"""The OS catalog and VM requests (PROTOCOL.md part 2): os.create/list/delete
(ids never reused, names and descriptions within their limits), and the whole
flow of a request: a user files it, an admin approves it (count VMs described
from it, each with a password that logs in, owner = the requester, status
`requested` until its first login), rejects it, or its requester cancels it
while it is pending; each error, its precedence and every limit."""

import pytest

import p2util
from p2util import LONG, admin, tcp, watch
from vmmtest import now_ms

REQUEST_KEYS = {'id', 'requester', 'description', 'ram', 'cpu', 'disks', 'os_id', 'count',
                'state', 'created_at', 'decided_at', 'decided_by', 'reason', 'vm_ids'}
OS_KEYS = {'id', 'name', 'version', 'iso', 'qcow2', 'description'}


@pytest.fixture(scope='module')
def d(tmp_path_factory):
    yield from p2util.shared_daemon(tmp_path_factory, ['--auth-failures-per-minute', '1000'],
                                    'requests')


@pytest.fixture(scope='module')
def people(d):
    return p2util.People(d, {'rq-alice': 'user', 'rq-bob': 'user', 'rq-viewer': 'viewer',
                             'rq-admin': 'admin'})


# ---------------------------------------------------------------------------
# the OS catalog


def test_os_ids_count_from_one_never_reused(make_daemon):
    dd = make_daemon()
    with admin(dd) as a:
        o1 = a.ok('os.create', {'name': 'Debian', 'version': '12'})
        # (an absent description comes back "" where an absent iso is nil:
        # the contract does not say which; vmadm's tests hold it to "")
        assert o1.pop('description') in (None, ''), o1
        assert o1 == {'id': 1, 'name': 'Debian', 'version': '12', 'iso': None, 'qcow2': None}, o1
        assert a.ok('os.create', {'name': 'Debian', 'version': '13'})['id'] == 2
        assert a.ok('os.delete', {'id': 2}) == {}
        assert a.ok('os.create', {'name': 'Alpine', 'version': '3'})['id'] == 3
        a.ok('os.delete', {'id': 3})
    dd.restart()
    with admin(dd) as a:
        assert a.ok('os.create', {'name': 'Fedora', 'version': '40'})['id'] == 4
        assert [o['id'] for o in a.ok('os.list', {})['os']] == [1, 4]


def test_request_ids_count_from_one_never_reused(make_daemon):
    dd = make_daemon()
    with admin(dd) as a:
        p2util.make_user(a, 'ri-user')
    with p2util.user_login(dd, 'ri-user') as c:
        token = c.token
        assert c.ok('request.create', {'description': 'a', 'ram': 1, 'cpu': 1})['id'] == 1
        assert c.ok('request.create', {'description': 'b', 'ram': 1, 'cpu': 1})['id'] == 2
        c.ok('request.cancel', {'id': 2})
    dd.restart()
    with p2util.resumed(dd, token) as c:
        assert c.ok('request.create', {'description': 'c', 'ram': 1, 'cpu': 1})['id'] == 3
        assert [r['id'] for r in c.ok('request.list', {})['requests']] == [1, 2, 3]


def test_os_create_list_delete(d, people):
    with admin(d) as a:
        w = admin(d)
        watch(w, types=['os.'])
        full = {'name': 'Ubuntu', 'version': '24.04 LTS', 'iso': 'https://example.com/u.iso',
                'qcow2': '/srv/images/u.qcow2', 'description': 'with \u00e9 and\nlines'}
        o = a.ok('os.create', full)
        assert set(o) >= OS_KEYS and {k: o[k] for k in full} == full, o
        with people.conn('rq-viewer') as v:
            assert o in v.ok('os.list', {})['os']
            v.err('os.create', {'name': 'x', 'version': '1'}, 'forbidden')
            v.err('os.delete', {'id': o['id']}, 'forbidden')
        with people.conn('rq-admin') as t:
            o2 = t.ok('os.create', {'name': 'Ubuntu', 'version': '22.04'})
        assert a.ok('os.delete', {'id': o['id']}) == {}
        a.err('os.delete', {'id': o['id']}, 'not_found')
        assert o not in a.ok('os.list', {})['os']
        assert o2 in a.ok('os.list', {})['os']
        evs = p2util.read_events(w, lambda e: len(e) >= 3)
        assert [(e['type'], e['id']) for e in evs] == [('os.created', o['id']),
                                                        ('os.created', o2['id']),
                                                        ('os.deleted', o['id'])], evs
        w.close()


@pytest.mark.parametrize('params', [
    {}, {'name': 'x'}, {'version': '1'}, {'name': '', 'version': '1'},
    {'name': 'x' * 65, 'version': '1'}, {'name': '\u00e9' * 32 + 'x', 'version': '1'},
    {'name': 'a\nb', 'version': '1'}, {'name': 'a\x01', 'version': '1'},
    {'name': 'a\x7f', 'version': '1'}, {'name': 'x', 'version': 1},
    {'name': 'x', 'version': '1', 'description': 'd' * 4097},
    {'name': 'x', 'version': '1', 'description': '\u00e9' * 2048 + 'd'},
    {'name': 'x', 'version': '1', 'iso': 5}, {'name': 'x', 'version': '1', 'bogus': 1},
])
def test_os_create_bad_request(d, params):
    with admin(d) as a:
        a.err('os.create', params, 'bad_request')


def test_os_limits_ok(d):
    with admin(d) as a:
        for p in ({'name': 'x' * 64, 'version': '1'}, {'name': '\u00e9' * 32, 'version': '1'},
                  {'name': 'x', 'version': '1', 'description': 'd' * 4096},
                  {'name': 'x', 'version': '1', 'description': '\u00e9' * 2048}):
            o = a.ok('os.create', p)
            assert {k: o[k] for k in p} == p
            a.ok('os.delete', {'id': o['id']})
        for bad in ({'id': 'x'}, {'id': -1}, {}):
            a.err('os.delete', bad, 'bad_request')


# ---------------------------------------------------------------------------
# requests


def check_request(r, **want):
    assert set(r) >= REQUEST_KEYS, r
    for k, v in want.items():
        assert r[k] == v, (k, r)
    return r


def test_request_flow_approve(d, people):
    with admin(d) as a:
        os_id = a.ok('os.create', {'name': 'Debian', 'version': '12'})['id']
        w = admin(d)
        watch(w, types=['request.', 'vm.created'])
    with people.conn('rq-alice') as c:
        t0 = now_ms()
        r = check_request(c.ok('request.create', {'description': 'two build boxes', 'ram': 2048,
                                                  'cpu': 2, 'disks': [20, 30], 'os_id': os_id,
                                                  'count': 2}),
                          requester='rq-alice', description='two build boxes', ram=2048, cpu=2,
                          disks=[20, 30], os_id=os_id, count=2, state='pending',
                          decided_at=None, decided_by=None, reason=None)
        assert t0 - 2000 <= r['created_at'] <= now_ms() + 2000, r
        assert r['vm_ids'] in ([], None), r
        assert r in c.ok('request.list', {})['requests']
    with people.conn('rq-admin') as t:
        # wrong count of vm_ids: bad_request, nothing made
        for ids in (['rqa-1'], ['rqa-1', 'rqa-2', 'rqa-3'], []):
            t.err('request.approve', {'id': r['id'], 'vm_ids': ids}, 'bad_request')
        # a name taken: exists, nothing made (all or nothing)
        with admin(d) as a:
            p2util.create_vms(a, ['rqa-taken'])
        t.err('request.approve', {'id': r['id'], 'vm_ids': ['rqa-1', 'rqa-taken']}, 'exists',
              timeout=LONG)
        t.err('vm.get', {'vm_id': 'rqa-1'}, 'not_found')
        t.err('request.approve', {'id': 999999, 'vm_ids': ['rqa-1']}, 'not_found')
        t.err('request.approve', {'id': r['id'], 'vm_ids': ['rqa-1', 'bad id!']}, 'bad_request')
        t0 = now_ms()
        res = t.ok('request.approve', {'id': r['id'], 'vm_ids': ['rqa-1', 'rqa-2']},
                   timeout=LONG)
        req = check_request(res['request'], id=r['id'], state='approved', decided_by='rq-admin',
                            vm_ids=['rqa-1', 'rqa-2'], requester='rq-alice')
        assert t0 - 2000 <= req['decided_at'] <= now_ms() + 2000, req
        vms = res['vms']
        assert [v['vm_id'] for v in vms] == ['rqa-1', 'rqa-2'], res
        assert len({v['password'] for v in vms}) == 2, res
        for v in vms:
            rec = t.ok('vm.get', {'vm_id': v['vm_id']})
            assert (rec['ram'], rec['cpu']) == (2048, 2), rec
            assert [x['size'] for x in rec['disks']] == [20, 30], rec
            assert rec['owner'] == 'rq-alice' and rec['status'] == 'requested', rec
            assert rec['access'] == 'active', rec
        listed = t.ok('vm.list', {'filter': 'all', 'status': 'requested'})['vms']
        assert {'rqa-1', 'rqa-2'} <= {x['vm_id'] for x in listed}, listed
        # once decided, it stays so
        t.err('request.approve', {'id': r['id'], 'vm_ids': ['rqa-3', 'rqa-4']}, 'conflict',
              timeout=LONG)
        t.err('request.reject', {'id': r['id'], 'reason': 'late'}, 'conflict')
    with people.conn('rq-alice') as c:
        c.err('request.cancel', {'id': r['id']}, 'conflict')
        mine = [x for x in c.ok('request.list', {})['requests'] if x['id'] == r['id']]
        assert mine and mine[0]['state'] == 'approved', mine
    # the passwords log in; the first login ends `requested`
    with tcp(d) as vm:
        vm.ok('auth', {'vm_id': 'rqa-1', 'password': vms[0]['password']}, timeout=LONG)
        with admin(d) as a:
            assert a.ok('vm.get', {'vm_id': 'rqa-1'})['status'] == 'on'
            assert a.ok('vm.get', {'vm_id': 'rqa-2'})['status'] == 'requested'
    with admin(d) as a:
        assert p2util.wait_until(lambda: a.ok('vm.get', {'vm_id': 'rqa-1'})['status'] == 'off',
                                 70)
    with tcp(d) as vm:
        vm.ok('auth', {'vm_id': 'rqa-2', 'password': vms[1]['password']}, timeout=LONG)
    evs = p2util.read_events(w, lambda e: any(x['type'] == 'request.approved' for x in e))
    w.close()
    kinds = [(e['type'], e.get('id'), e.get('vm_id'), e.get('requester')) for e in evs]
    assert kinds[0] == ('request.created', r['id'], None, 'rq-alice'), kinds
    assert ('vm.created', None, 'rqa-1', None) in kinds and \
        ('vm.created', None, 'rqa-2', None) in kinds, kinds
    assert kinds[-1] == ('request.approved', r['id'], None, 'rq-alice'), kinds


def test_request_reject_and_cancel(d, people):
    with people.conn('rq-alice') as c, people.conn('rq-bob') as b:
        r1 = c.ok('request.create', {'description': 'one', 'ram': 1, 'cpu': 1})
        assert r1['count'] == 1 and r1['disks'] == [] and r1['os_id'] is None, r1
        r2 = c.ok('request.create', {'description': 'two', 'ram': 1, 'cpu': 1})
        # bob may not cancel alice's; a viewer may not cancel at all
        b.err('request.cancel', {'id': r1['id']}, 'forbidden')
        with people.conn('rq-viewer') as v:
            v.err('request.cancel', {'id': r1['id']}, 'forbidden')
            v.err('request.create', {'description': 'v', 'ram': 1, 'cpu': 1}, 'forbidden')
            v.err('request.list', {}, 'forbidden')
        b.err('request.cancel', {'id': 999999}, 'not_found')
        res = c.ok('request.cancel', {'id': r1['id']})
        check_request(res, id=r1['id'], state='cancelled')
        c.err('request.cancel', {'id': r1['id']}, 'conflict')
        # forbidden before conflict: not bob's, and not pending
        b.err('request.cancel', {'id': r1['id']}, 'forbidden')
        with people.conn('rq-admin') as t:
            t.err('request.approve', {'id': r1['id'], 'vm_ids': ['rqc-1']}, 'conflict',
                  timeout=LONG)
            t.err('request.reject', {'id': r1['id'], 'reason': 'x'}, 'conflict')
            rej = t.ok('request.reject', {'id': r2['id'], 'reason': 'no budget'})
            check_request(rej, id=r2['id'], state='rejected', reason='no budget',
                          decided_by='rq-admin')
            t.err('request.reject', {'id': r2['id'], 'reason': 'again'}, 'conflict')
            t.err('request.reject', {'id': 999999, 'reason': 'x'}, 'not_found')
            for bad in ({'id': r2['id']}, {'reason': 'x'}, {'id': 'x', 'reason': 'x'},
                        {'id': r2['id'], 'reason': 5}):
                t.err('request.reject', bad, 'bad_request')
        c.err('request.cancel', {'id': r2['id']}, 'conflict')
        states = {x['id']: x['state'] for x in c.ok('request.list', {})['requests']}
        assert states[r1['id']] == 'cancelled' and states[r2['id']] == 'rejected', states
        # a user sees only its own
        assert all(x['requester'] == 'rq-bob' for x in b.ok('request.list', {})['requests'])
        assert r1['id'] not in {x['id'] for x in b.ok('request.list', {})['requests']}
        # and nobody else's events of requests (see test_part2_feed.py)


def test_approve_precedence(d, people):
    """bad_request > not_found > exists > conflict (the errors table)."""
    with admin(d) as a:
        p2util.create_vms(a, ['rqp-taken'])
    with people.conn('rq-alice') as c:
        r = c.ok('request.create', {'description': 'p', 'ram': 1, 'cpu': 1, 'count': 1})
    with admin(d) as a:
        a.ok('request.reject', {'id': r['id'], 'reason': 'x'})
        # not pending, and the wrong count: bad_request
        a.err('request.approve', {'id': r['id'], 'vm_ids': ['a1', 'a2']}, 'bad_request')
        # not pending, and the name taken: exists comes before conflict
        a.err('request.approve', {'id': r['id'], 'vm_ids': ['rqp-taken']}, 'exists',
              timeout=LONG)
        a.err('request.approve', {'id': r['id'], 'vm_ids': ['rqp-new']}, 'conflict',
              timeout=LONG)
        a.err('request.approve', {'id': 999999, 'vm_ids': ['rqp-taken']}, 'not_found')


def test_approve_vm_ids_limits(d, people):
    """A number of vm_ids other than the request's count is bad_request, up
    to the 1,000 a request may carry; past that the list is too_large."""
    with people.conn('rq-alice') as c:
        r = c.ok('request.create', {'description': 'l', 'ram': 1, 'cpu': 1, 'count': 16})
    with admin(d) as a:
        for n in (15, 17, 100, 1000):
            a.err('request.approve', {'id': r['id'], 'vm_ids': [f'rql-{i}' for i in range(n)]},
                  'bad_request')
        a.err('request.approve', {'id': r['id'], 'vm_ids': [f'rql-{i}' for i in range(1001)]},
              'too_large')
        a.err('request.approve', {'id': r['id'], 'vm_ids': ['rql-1', 'rql-1'] + [
            f'rql-{i}' for i in range(2, 16)]}, 'bad_request')
        assert a.ok('request.list', {'state': 'pending'})['requests']
        a.err('vm.get', {'vm_id': 'rql-1'}, 'not_found')
        a.ok('request.reject', {'id': r['id'], 'reason': 'too many'})


@pytest.mark.parametrize('params', [
    {'ram': 1, 'cpu': 1}, {'description': 'x', 'cpu': 1}, {'description': 'x', 'ram': 1},
    {'description': 'x', 'ram': 0, 'cpu': 1}, {'description': 'x', 'ram': 1 << 32, 'cpu': 1},
    {'description': 'x', 'ram': 1, 'cpu': 0}, {'description': 'x', 'ram': 1, 'cpu': 1025},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'count': 0},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'count': 17},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'count': 1.0},
    {'description': 'd' * 4097, 'ram': 1, 'cpu': 1},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'disks': [0]},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'disks': [(1 << 40) + 1]},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'disks': [{'size': 1}]},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'disks': 5},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'os_id': 'debian'},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'bogus': 1},
    {'description': 'x', 'ram': 1, 'cpu': 1, 'requester': 'rq-bob'},
    {'description': 1, 'ram': 1, 'cpu': 1},
    # bad_request before not_found
    {'description': 'x', 'ram': 0, 'cpu': 1, 'os_id': 999999},
])
def test_request_create_bad_request(d, people, params):
    with people.conn('rq-alice') as c:
        before = len(c.ok('request.list', {})['requests'])
        c.err('request.create', params, 'bad_request')
        assert len(c.ok('request.list', {})['requests']) == before


def test_request_create_limits(d, people):
    with people.conn('rq-alice') as c:
        for p in ({'count': 16}, {'count': 1}, {'description': 'd' * 4096},
                  {'description': '\u00e9' * 2048}, {'disks': [1, 1 << 40]},
                  {'disks': [1] * 64}, {'ram': (1 << 32) - 1, 'cpu': 1024}):
            r = c.ok('request.create', dict({'description': 'lim', 'ram': 1, 'cpu': 1}, **p))
            for k, v in p.items():
                assert r[k] == v, (k, r)
            c.ok('request.cancel', {'id': r['id']})
        c.err('request.create', {'description': 'x', 'ram': 1, 'cpu': 1, 'os_id': 999999},
              'not_found')
        # more disks than a VM may have: a list over its limit
        c.err('request.create', {'description': 'x', 'ram': 1, 'cpu': 1, 'disks': [1] * 65},
              'too_large')


def test_request_list_paging_and_state(d, people):
    with people.conn('rq-bob') as b:
        made = [b.ok('request.create', {'description': f'pg{i}', 'ram': 1, 'cpu': 1})['id']
                for i in range(5)]
        b.ok('request.cancel', {'id': made[0]})
    with admin(d) as a:
        def listing(**p):
            out, after = [], None
            for _ in range(1000):
                q = dict(p)
                if after is not None:
                    q['after'] = after
                res = a.ok('request.list', q)
                out += res['requests']
                if res['next'] is None:
                    return out
                assert res['next'] == res['requests'][-1]['id'], res
                after = res['next']
            raise AssertionError('request.list does not end')
        every = listing()
        ids = [r['id'] for r in every]
        assert ids == sorted(ids) and set(made) <= set(ids), ids
        assert listing(limit=2) == every
        pend = listing(state='pending')
        assert pend and all(r['state'] == 'pending' for r in pend)
        assert made[0] not in {r['id'] for r in pend}
        assert made[0] in {r['id'] for r in listing(state='cancelled')}
        # both users' requests are there for an admin
        assert {'rq-alice', 'rq-bob'} <= {r['requester'] for r in every}
        for bad in ({'state': 'done'}, {'limit': 0}, {'after': 'x'}):
            a.err('request.list', bad, 'bad_request')
