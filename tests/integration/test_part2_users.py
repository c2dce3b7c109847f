# SPDX-License-Identifier: MIT
"""People (PROTOCOL.md part 2, "Principals and roles" and the user.* rows of
the methods table): user.create/get/list/set/delete with their errors and
limits, user.auth (one error and a like time for an unknown name and a wrong
password), whoami on both sockets, passwd for a user session, user.set
password true (a generated password that logs in; the user's sessions end),
role changes that apply to existing sessions at once, and one namespace for
a Unix login and a user record of the same name."""

import os
import statistics
import time

import pytest

import p2util
from p2util import LONG, PW, admin, make_user, resumed, tcp, user_login
from vmmtest import TOKEN_RE, now_ms

USER_KEYS = {'name', 'role', 'created_at', 'last_login_at'}
NAME_OK = ['a', 'Z9', 'alice@example.com', 'a.b_c-d+e', '9' * 64, 'x' * 64]
NAME_BAD = ['', 'x' * 65, '-a', '.a', '@a', '+a', '_a', 'a b', 'a/b', 'al\u00e9', 'a:b']
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='needs root (useradd, setpriv)')


@pytest.fixture(scope='module')
def d(tmp_path_factory):
    yield from p2util.shared_daemon(tmp_path_factory, ['--auth-failures-per-minute', '1000',
                                                       '--tcp-admin', 'yes'], 'users')


def check_user(rec, name, role):
    assert set(rec) >= USER_KEYS, rec
    assert not {'password', 'pwhash', 'hash'} & set(rec), f'a secret in a user record: {rec}'
    assert rec['name'] == name and rec['role'] == role, rec
    assert isinstance(rec['created_at'], int), rec


def test_create_get_list_delete(d):
    with admin(d) as a:
        t0 = now_ms()
        res = a.ok('user.create', {'name': 'cg-alice', 'password': PW}, timeout=LONG)
        assert res == {'name': 'cg-alice', 'role': 'user', 'password': PW}, res
        rec = a.ok('user.get', {'name': 'cg-alice'})
        check_user(rec, 'cg-alice', 'user')
        assert t0 - 2000 <= rec['created_at'] <= now_ms() + 2000, rec
        assert rec['last_login_at'] is None, rec
        for role in ('viewer', 'admin'):
            res = a.ok('user.create', {'name': f'cg-{role}', 'role': role, 'password': PW},
                       timeout=LONG)
            assert res['role'] == role
            check_user(a.ok('user.get', {'name': f'cg-{role}'}), f'cg-{role}', role)
        # exists, whatever the other fields; the first record is untouched;
        # no password is hashed for it
        hashes = a.ok('status')['jobs']['hashes']
        a.err('user.create', {'name': 'cg-alice', 'role': 'admin', 'password': 'other-pw-2'},
              'exists', timeout=LONG)
        a.err('user.create', {'name': 'cg-alice'}, 'exists', timeout=LONG)
        assert a.ok('status')['jobs']['hashes'] == hashes
        check_user(a.ok('user.get', {'name': 'cg-alice'}), 'cg-alice', 'user')
        # bad_request wins over exists
        a.err('user.create', {'name': 'cg-alice', 'role': 'root'}, 'bad_request')
        a.err('user.create', {'name': 'cg-alice', 'password': 'short'}, 'bad_request')
        # list holds them, by name
        names = [u['name'] for u in list_users(a)]
        assert {'cg-alice', 'cg-viewer', 'cg-admin'} <= set(names), names
        assert names == sorted(names), names
        for u in list_users(a):
            assert not {'password', 'pwhash'} & set(u), u
        # delete
        assert a.ok('user.delete', {'name': 'cg-viewer'}) == {}
        a.err('user.get', {'name': 'cg-viewer'}, 'not_found')
        a.err('user.delete', {'name': 'cg-viewer'}, 'not_found')
        a.err('user.set', {'name': 'cg-viewer', 'role': 'user'}, 'not_found')
        assert 'cg-viewer' not in [u['name'] for u in list_users(a)]
        # the name can be taken again
        make_user(a, 'cg-viewer', 'viewer')


def list_users(a, limit=None):
    out = []
    after = None
    for _ in range(10000):
        p = {}
        if limit:
            p['limit'] = limit
        if after is not None:
            p['after'] = after
        res = a.ok('user.list', p)
        assert set(res) >= {'users', 'next'}, res
        out += res['users']
        if res['next'] is None:
            return out
        assert res['users'] and res['next'] == res['users'][-1]['name'], res
        after = res['next']
    raise AssertionError('user.list does not end')


def test_generated_password_logs_in(d):
    with admin(d) as a:
        res = a.ok('user.create', {'name': 'gp-bob', 'role': 'viewer'}, timeout=LONG)
        pw = res['password']
        assert isinstance(pw, str) and 6 <= len(pw) <= 1024, res
        # returned only there
        assert 'password' not in a.ok('user.get', {'name': 'gp-bob'})
    with tcp(d) as c:
        t0 = now_ms()
        res = c.ok('user.auth', {'name': 'gp-bob', 'password': pw}, timeout=LONG)
        assert set(res) >= {'name', 'role', 'token', 'expires_at'}, res
        assert res['name'] == 'gp-bob' and res['role'] == 'viewer', res
        assert TOKEN_RE.match(res['token']), res
        assert res['expires_at'] >= t0 + 86400 * 1000 - 5000, res
        assert c.ok('whoami') == {'kind': 'user', 'name': 'gp-bob', 'role': 'viewer'}
    with admin(d) as a:
        rec = a.ok('user.get', {'name': 'gp-bob'})
        assert t0 - 2000 <= rec['last_login_at'] <= now_ms() + 2000, rec


@pytest.mark.parametrize('name', NAME_OK)
def test_name_ok(d, name):
    with admin(d) as a:
        # a user.get of a valid name that does not exist is not_found, not bad_request
        a.err('user.get', {'name': name}, 'not_found')
        a.err('user.delete', {'name': name}, 'not_found')


def test_name_ok_creates(d):
    with admin(d) as a:
        for name in ('alice@example.com', 'x' * 64):
            make_user(a, name, 'viewer')
            check_user(a.ok('user.get', {'name': name}), name, 'viewer')


@pytest.mark.parametrize('name', NAME_BAD)
def test_name_bad(d, name):
    with admin(d) as a:
        for m, p in (('user.create', {'name': name, 'password': PW}),
                     ('user.get', {'name': name}), ('user.delete', {'name': name}),
                     ('user.set', {'name': name, 'role': 'user'})):
            a.err(m, p, 'bad_request')
    with tcp(d) as c:
        # user.auth: bad_request too (no hash spent, no failure counted)
        c.err('user.auth', {'name': name, 'password': PW}, 'bad_request')


def test_name_with_nul_is_bad(d):
    with admin(d) as a:
        for name in ('nul-a\x00', 'nul-b\x00x'):
            a.err('user.create', {'name': name, 'password': PW}, 'bad_request', timeout=LONG)
            a.err('user.get', {'name': name}, 'bad_request')


@pytest.mark.parametrize('params', [
    {}, {'name': 'bp-x', 'role': 'root'}, {'name': 'bp-x', 'role': 1},
    {'name': 'bp-x', 'password': 'p' * 5}, {'name': 'bp-x', 'password': 'p' * 1025},
    {'name': 'bp-x', 'password': 123456}, {'name': 'bp-x', 'bogus': 1}, {'name': 7},
    {'name': 'bp-x', 'role': None}, {'name': 'bp-x', 'token': 'x' * 43},
])
def test_create_bad_params(d, params):
    with admin(d) as a:
        a.err('user.create', params, 'bad_request')
        a.err('user.get', {'name': 'bp-x'}, 'not_found')


def test_password_length_limits(d):
    with admin(d) as a:
        make_user(a, 'pl-six', 'viewer', password='p' * 6)
        make_user(a, 'pl-long', 'viewer', password='q' * 1024)
    for name, pw in (('pl-six', 'p' * 6), ('pl-long', 'q' * 1024)):
        with tcp(d) as c:
            assert c.ok('user.auth', {'name': name, 'password': pw}, timeout=LONG)['name'] == name
    with tcp(d) as c:
        c.err('user.auth', {'name': 'pl-six', 'password': 'p' * 5}, 'bad_request')
        c.err('user.auth', {'name': 'pl-six', 'password': 'p' * 1025}, 'bad_request')


def test_list_paging(d):
    with admin(d) as a:
        for i in range(5):
            make_user(a, f'pg-{i}', 'viewer', password=None)
        whole = [u['name'] for u in list_users(a)]
        paged = [u['name'] for u in list_users(a, limit=2)]
        assert whole == paged, (whole, paged)
        assert len(set(whole)) == len(whole)
        res = a.ok('user.list', {'limit': 1, 'after': 'pg-2'})
        assert [u['name'] for u in res['users']] == ['pg-3'], res
        res = a.ok('user.list', {'limit': 2, 'after': 'pg-1z'})     # after need not exist
        assert [u['name'] for u in res['users']][:1] == ['pg-2'], res
        for lim in (0, 10001, -1):
            a.err('user.list', {'limit': lim}, 'bad_request')
        a.err('user.list', {'limit': 1.5}, 'bad_request')


def test_user_auth_unknown_name_and_wrong_password_look_alike(d):
    with admin(d) as a:
        make_user(a, 'ua-carol')
    with tcp(d) as c:
        times = {'wrong': [], 'unknown': []}
        msgs = set()
        for i in range(6):
            for kind in ('wrong', 'unknown'):
                name = 'ua-carol' if kind == 'wrong' else f'ua-nobody{i}'
                t0 = time.monotonic()
                msgs.add(c.err('user.auth', {'name': name, 'password': 'wrong-pw-9'},
                               'unauthenticated', timeout=LONG))
                times[kind].append(time.monotonic() - t0)
        assert len(msgs) == 1, f'different messages: {msgs}'
        assert 'ua-nobody' not in msgs.pop()
        # a failed login leaves the connection anonymous
        c.err('whoami', {}, 'unauthenticated')
    wrong = statistics.median(times['wrong'])
    unknown = statistics.median(times['unknown'])
    print(f'user.auth wrong password {wrong * 1000:.1f} ms, unknown name {unknown * 1000:.1f} ms')
    # an unknown name must cost a hash too (interleaved, medians: lenient
    # enough for a loaded machine, far from the microseconds of a lookup)
    assert unknown >= 0.3 * wrong, (wrong, unknown)
    assert wrong >= 0.3 * unknown, (wrong, unknown)


def test_user_auth_not_a_vm(d):
    """VM and user namespaces are distinct logins: user.auth does not log a
    VM in, auth does not log a user in."""
    with admin(d) as a:
        make_user(a, 'ns-dave')
        a.ok('vm.create', {'vm_id': 'ns-dave', 'password': 'vm-pw-1234'}, timeout=LONG)
    with tcp(d) as c:
        c.err('user.auth', {'name': 'ns-dave', 'password': 'vm-pw-1234'}, 'unauthenticated',
              timeout=LONG)
        c.err('auth', {'vm_id': 'ns-dave', 'password': PW}, 'unauthenticated', timeout=LONG)
        assert c.ok('user.auth', {'name': 'ns-dave', 'password': PW}, timeout=LONG)
        assert c.ok('whoami') == {'kind': 'user', 'name': 'ns-dave', 'role': 'user'}
        # switching to a VM session on the same connection
        c.ok('auth', {'vm_id': 'ns-dave', 'password': 'vm-pw-1234'}, timeout=LONG)
        assert c.ok('whoami') == {'kind': 'vm', 'vm_id': 'ns-dave'}


def test_user_auth_failures_are_throttled(make_daemon):
    dd = make_daemon(args=['--auth-failures-per-minute', '3'])
    with admin(dd) as a:
        make_user(a, 'th-erin')
    with tcp(dd) as c:
        for _ in range(3):
            c.err('user.auth', {'name': 'th-erin', 'password': 'wrong-pw-9'}, 'unauthenticated',
                  timeout=LONG)
        # now refused, even with the right password, and for auth too
        c.err('user.auth', {'name': 'th-erin', 'password': PW}, 'rate_limited')
        c.err('user.auth', {'name': 'nobody', 'password': PW}, 'rate_limited')
        c.err('auth', {'vm_id': 'vm1', 'password': PW}, 'rate_limited')
        # bad_request still wins
        c.err('user.auth', {'name': 'th-erin', 'password': 'x'}, 'bad_request')


def test_whoami_everywhere(d):
    with admin(d) as a:
        assert a.ok('whoami') == {'kind': 'user', 'name': 'root', 'role': 'admin'}
        make_user(a, 'wh-fay', 'viewer')
        a.ok('vm.create', {'vm_id': 'wh-vm', 'password': PW}, timeout=LONG)
    with tcp(d) as c:
        c.err('whoami', {}, 'unauthenticated')
        c.err('whoami', None, 'unauthenticated')
        c.auth('wh-vm', PW)
        assert c.ok('whoami') == {'kind': 'vm', 'vm_id': 'wh-vm'}
        c.err('whoami', {'bogus': 1}, 'bad_request')
        vm_token = c.token
    with user_login(d, 'wh-fay') as c:
        assert c.ok('whoami') == {'kind': 'user', 'name': 'wh-fay', 'role': 'viewer'}
        user_token = c.token
    with tcp(d) as c:
        # stateless: the token names the caller
        assert c.ok('whoami', {'token': vm_token}) == {'kind': 'vm', 'vm_id': 'wh-vm'}
        assert c.ok('whoami', {'token': user_token})['name'] == 'wh-fay'
        c.err('whoami', {}, 'unauthenticated')
        # resume answers name and role for a user session
        res = c.ok('resume', {'token': user_token})
        assert res['name'] == 'wh-fay' and res['role'] == 'viewer' and 'expires_at' in res, res
        assert 'vm_id' not in res or res['vm_id'] is None, res
    with admin(d) as a:
        a.err('whoami', {'token': vm_token}, 'bad_request')


@needs_root
def test_whoami_user_peer_and_one_namespace(make_daemon):
    users = p2util.UnixUsers()
    try:
        login = users.add()
        dd = make_daemon(args=['--users-group', users.group])
        p2util.open_admin_socket(dd)
        with admin(dd) as a:
            p2util.create_vms(a, ['ns-vm1', 'ns-vm2'])
        with p2util.connect_as(dd.admin_socket, login) as u:
            assert u.ok('whoami') == {'kind': 'user', 'name': login, 'role': 'user'}
            b = u.ok('booking.create', {'vm_id': 'ns-vm1', 'minutes': 30})
            assert b['user'] == login, b
            u.err('user.list', {}, 'forbidden')
        # a user record of the same name is the same person
        with admin(dd) as a:
            make_user(a, login, 'user')
        with user_login(dd, login) as c:
            assert c.ok('booking.get', {'vm_id': 'ns-vm1'})['booking']['user'] == login
            ents = c.ok('booking.history', {})['entries']
            assert [(e['vm_id'], e['action']) for e in ents] == [('ns-vm1', 'book')], ents
            assert c.ok('booking.cancel', {'vm_id': 'ns-vm1'}) == {}
            c.ok('booking.create', {'vm_id': 'ns-vm2', 'minutes': 30})
        with p2util.connect_as(dd.admin_socket, login) as u:
            assert u.ok('booking.list', {'user': login})['bookings'][0]['vm_id'] == 'ns-vm2'
            assert u.ok('booking.cancel', {'vm_id': 'ns-vm2'}) == {}
            acts = [(e['vm_id'], e['action']) for e in u.ok('booking.history', {})['entries']]
            assert acts == [('ns-vm2', 'cancel'), ('ns-vm2', 'book'), ('ns-vm1', 'cancel'),
                            ('ns-vm1', 'book')], acts
    finally:
        users.remove()


def test_passwd_for_a_user_session(d):
    with admin(d) as a:
        make_user(a, 'pw-gus', 'viewer')
    c1 = user_login(d, 'pw-gus')
    c2 = user_login(d, 'pw-gus')
    try:
        c1.err('passwd', {'password': 'wrong-pw-9', 'new_password': 'new-pw-123'},
               'unauthenticated', timeout=LONG)
        c1.err('passwd', {'password': PW, 'new_password': 'short'}, 'bad_request')
        c1.err('passwd', {'password': PW}, 'bad_request')
        assert c1.ok('passwd', {'password': PW, 'new_password': 'new-pw-123'},
                     timeout=LONG) == {}
        # this session stays, the other one ended
        assert c1.ok('whoami')['name'] == 'pw-gus'
        c2.err('whoami', {}, 'unauthenticated')
        with tcp(d) as c:
            c.err('resume', {'token': c2.token}, 'unauthenticated')
            c.err('user.auth', {'name': 'pw-gus', 'password': PW}, 'unauthenticated',
                  timeout=LONG)
            c.ok('user.auth', {'name': 'pw-gus', 'password': 'new-pw-123'}, timeout=LONG)
        # by token, on an anonymous connection, too
        with tcp(d) as c:
            assert c.ok('passwd', {'password': 'new-pw-123', 'new_password': PW,
                                   'token': c1.token}, timeout=LONG) == {}
    finally:
        c1.close()
        c2.close()


def test_user_set_password_true_generates_and_ends_sessions(d):
    with admin(d) as a:
        make_user(a, 'us-hal', 'user')
    c = user_login(d, 'us-hal')
    try:
        with admin(d) as a:
            w = admin(d)
            p2util.watch(w, types=['session.'])
            res = a.ok('user.set', {'name': 'us-hal', 'password': True}, timeout=LONG)
            pw = res.get('password')
            assert isinstance(pw, str) and 6 <= len(pw) <= 1024 and pw != PW, res
            check_user({k: v for k, v in res.items() if k != 'password'}, 'us-hal', 'user')
            evs = p2util.read_events(w, lambda e: any(x['type'] == 'session.ended' for x in e))
            ended = [x for x in evs if x['type'] == 'session.ended']
            assert ended[0]['user'] == 'us-hal' and ended[0]['reason'] == 'password', ended
            assert ended[0].get('feed') is not None, ended
            w.close()
            # password: false and other types are not a request to generate
            a.err('user.set', {'name': 'us-hal', 'password': False}, 'bad_request')
            a.err('user.set', {'name': 'us-hal', 'password': 1}, 'bad_request')
        c.err('whoami', {}, 'unauthenticated')
        with tcp(d) as c2:
            c2.err('resume', {'token': c.token}, 'unauthenticated')
            c2.err('user.auth', {'name': 'us-hal', 'password': PW}, 'unauthenticated',
                   timeout=LONG)
            c2.ok('user.auth', {'name': 'us-hal', 'password': pw}, timeout=LONG)
            # an explicit password, too, ends the sessions
            with admin(d) as a:
                res = a.ok('user.set', {'name': 'us-hal', 'password': 'fixed-pw-77'},
                           timeout=LONG)
                assert res['name'] == 'us-hal'
            c2.err('whoami', {}, 'unauthenticated')
            c2.ok('user.auth', {'name': 'us-hal', 'password': 'fixed-pw-77'}, timeout=LONG)
    finally:
        c.close()


def test_role_change_applies_to_existing_sessions_at_once(d):
    with admin(d) as a:
        make_user(a, 'rc-ivy', 'user')
        p2util.create_vms(a, ['rc-vm'])
    c = user_login(d, 'rc-ivy')
    try:
        c.err('user.list', {}, 'forbidden')
        b = c.ok('booking.create', {'vm_id': 'rc-vm', 'minutes': 10})
        with admin(d) as a:
            rec = a.ok('user.set', {'name': 'rc-ivy', 'role': 'viewer'})
            check_user(rec, 'rc-ivy', 'viewer')
            assert 'password' not in rec, rec
        # the same connection, no new login
        assert c.ok('whoami') == {'kind': 'user', 'name': 'rc-ivy', 'role': 'viewer'}
        c.err('booking.cancel', {'vm_id': 'rc-vm'}, 'forbidden')
        c.err('booking.create', {'vm_id': 'rc-vm', 'minutes': 10}, 'forbidden')
        assert c.ok('booking.get', {'vm_id': 'rc-vm'})['booking']['expires_at'] == \
            b['expires_at']
        # and through its token on another connection
        with tcp(d) as s:
            s.err('booking.cancel', {'vm_id': 'rc-vm', 'token': c.token}, 'forbidden')
        with admin(d) as a:
            a.ok('user.set', {'name': 'rc-ivy', 'role': 'admin'})
        assert c.ok('whoami')['role'] == 'admin'
        assert any(u['name'] == 'rc-ivy' for u in c.ok('user.list', {})['users'])
        with admin(d) as a:
            a.ok('user.set', {'name': 'rc-ivy', 'role': 'user'})
        c.err('user.list', {}, 'forbidden')
        # the log says what changed
        for line in ("changed user 'rc-ivy' (role viewer)\n",
                     "changed user 'rc-ivy' (role admin)\n",
                     "changed user 'rc-ivy' (role user)\n"):
            assert p2util.wait_until(lambda: line in d.log_text(), 5), d.log_text()[-2000:]
        assert c.ok('booking.cancel', {'vm_id': 'rc-vm'}) == {}
        # the session was not ended by role changes
        with tcp(d) as s:
            assert s.ok('resume', {'token': c.token})['role'] == 'user'
    finally:
        c.close()


def test_user_delete_ends_sessions(d):
    with admin(d) as a:
        make_user(a, 'ud-jo', 'user')
    c = user_login(d, 'ud-jo')
    try:
        with admin(d) as a:
            w = admin(d)
            p2util.watch(w, types=['session.', 'user.'])
            assert a.ok('user.delete', {'name': 'ud-jo'}) == {}
            evs = p2util.read_events(
                w, lambda e: {'session.ended', 'user.deleted'} <= {x['type'] for x in e})
            w.close()
            ended = [x for x in evs if x['type'] == 'session.ended']
            assert ended and ended[0]['user'] == 'ud-jo', evs
            assert [x['name'] for x in evs if x['type'] == 'user.deleted'] == ['ud-jo'], evs
        c.err('whoami', {}, 'unauthenticated')
        with tcp(d) as s:
            s.err('resume', {'token': c.token}, 'unauthenticated')
    finally:
        c.close()


def test_user_sessions_on_session_list_and_revoke(d):
    """session.list entries and session.revoke take a user as well as a VM;
    the entries carry user instead of vm_id."""
    with admin(d) as a:
        make_user(a, 'sl-kim', 'viewer')
    c = user_login(d, 'sl-kim')
    try:
        with admin(d) as a:
            res = a.ok('session.list', {'user': 'sl-kim'})
            ss = res['sessions']
            assert len(ss) == 1 and ss[0]['user'] == 'sl-kim', res
            assert ss[0].get('vm_id') is None and ss[0]['connected'] is True, ss
            assert c.token not in repr(res)
            # an admin user on TCP (tcp_admin yes) sees the same
            make_user(a, 'sl-admin', 'admin')
            with user_login(d, 'sl-admin') as t:
                got = t.ok('session.list', {'user': 'sl-kim'})['sessions']
                assert [s['id'] for s in got] == [ss[0]['id']], got
            assert a.ok('session.revoke', {'user': 'sl-kim'}) == {'revoked': 1}
            assert a.ok('session.list', {'user': 'sl-kim'})['sessions'] == []
            a.err('session.revoke', {'user': 'bad name'}, 'bad_request')
        c.err('whoami', {}, 'unauthenticated')
    finally:
        c.close()


def test_user_session_expires_like_a_vm_session(make_daemon):
    dd = make_daemon(args=['--session-ttl', '2'])
    with admin(dd) as a:
        make_user(a, 'ttl-lee', 'viewer')
        w = admin(dd)
        p2util.watch(w, types=['session.'])
    c = user_login(dd, 'ttl-lee')
    token = c.token
    # attached and in use: it stays
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert c.ok('whoami')['name'] == 'ttl-lee'
        time.sleep(0.2)
    c.close()
    # unused for longer than the ttl: it ends, and says so
    evs = p2util.read_events(w, lambda e: any(x['type'] == 'session.ended' for x in e), 15)
    ended = [x for x in evs if x['type'] == 'session.ended']
    assert ended[0]['user'] == 'ttl-lee' and ended[0]['reason'] == 'expired', evs
    w.close()
    with tcp(dd) as s:
        s.err('resume', {'token': token}, 'unauthenticated')
        s.err('whoami', {'token': token}, 'unauthenticated')


def test_user_auth_peer_from_a_trusted_proxy(make_daemon):
    """user.auth takes `peer` only from a trusted proxy; failed logins then
    count against the address it names."""
    plain = make_daemon(args=['--auth-failures-per-minute', '2'])
    with admin(plain) as a:
        make_user(a, 'tp-max')
    with tcp(plain) as c:
        c.err('user.auth', {'name': 'tp-max', 'password': PW, 'peer': '203.0.113.5'},
              'forbidden')
    dd = make_daemon(args=['--trusted-proxies', '127.0.0.1', '--auth-failures-per-minute', '2'])
    with admin(dd) as a:
        make_user(a, 'tp-max')
        w = admin(dd)
        p2util.watch(w, types=['auth.', 'session.started'])
    with tcp(dd) as c:
        for _ in range(2):
            c.err('user.auth', {'name': 'tp-max', 'password': 'wrong-pw-9',
                                'peer': '203.0.113.5'}, 'unauthenticated', timeout=LONG)
        c.err('user.auth', {'name': 'tp-max', 'password': PW, 'peer': '203.0.113.5'},
              'rate_limited')
        # another address behind the same proxy is not limited, nor the proxy
        res = c.ok('user.auth', {'name': 'tp-max', 'password': PW, 'peer': '203.0.113.6'},
                   timeout=LONG)
        assert res['name'] == 'tp-max'
    with tcp(dd) as c:
        c.ok('user.auth', {'name': 'tp-max', 'password': PW}, timeout=LONG)
    evs = p2util.read_events(w, lambda e: len(e) >= 4)
    w.close()
    assert [e['type'] for e in evs] == ['auth.failed'] * 2 + ['session.started'] * 2, evs
    assert all(e['peer'] == '203.0.113.5' or e['peer'].startswith('203.0.113.5:')
               for e in evs[:2]), evs
    # the login through the proxy names the address it gave, in the event and
    # the log; the proxy's own login names the proxy
    assert evs[2]['peer'] == '203.0.113.6', evs
    assert evs[3]['peer'].startswith('127.0.0.1:'), evs
    assert "User 'tp-max' logged in from 203.0.113.6" in dd.log_text()


def test_token_only_where_a_session_is_needed(d):
    with admin(d) as a:
        make_user(a, 'tk-ned', 'viewer')
    with user_login(d, 'tk-ned') as c:
        token = c.token
    with tcp(d) as c:
        c.err('user.auth', {'name': 'tk-ned', 'password': PW, 'token': token}, 'bad_request')
        c.err('ping', {'token': token}, 'bad_request')
        assert c.ok('booking.list', {'token': token})['bookings'] == []


def test_sessions_per_user(make_daemon):
    """A user holds at most sessions_per_vm sessions; a new login past that
    ends its oldest (reason evicted)."""
    dd = make_daemon(args=['--sessions-per-vm', '2'])
    with admin(dd) as a:
        make_user(a, 'sp-ola', 'viewer')
        w = admin(dd)
        p2util.watch(w, types=['session.ended'])
    conns = [user_login(dd, 'sp-ola') for _ in range(3)]
    try:
        evs = p2util.read_events(w, lambda e: e, 10)
        assert evs[0]['user'] == 'sp-ola' and evs[0]['reason'] == 'evicted', evs
        conns[0].err('whoami', {}, 'unauthenticated')
        for c in conns[1:]:
            assert c.ok('whoami')['name'] == 'sp-ola'
        with admin(dd) as a:
            assert len(a.ok('session.list', {'user': 'sp-ola'})['sessions']) == 2
    finally:
        w.close()
        for c in conns:
            c.close()
