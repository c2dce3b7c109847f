# SPDX-License-Identifier: MIT
"""Sessions over TCP: auth, resume, tokens, passwd, logout, and what each
does to the connections attached to a session (PROTOCOL.md)."""

import time

import pytest

from vmmtest import PASSWORD, TOKEN_RE, ids, now_ms, wait_until

DAY_MS = 86400 * 1000


def test_auth_result(daemon):
    daemon.register('vm1')
    with daemon.client() as c:
        t0 = now_ms()
        res = c.ok('auth', {'vm_id': 'vm1', 'password': PASSWORD})
        t1 = now_ms()
        assert res['vm_id'] == 'vm1'
        assert isinstance(res['token'], str) and TOKEN_RE.match(res['token']), res
        assert isinstance(res['expires_at'], int)
        assert t0 + DAY_MS - 5000 <= res['expires_at'] <= t1 + DAY_MS + 5000, (t0, res)
        # the connection is attached
        rec = c.ok('vm.get')
        assert rec['vm_id'] == 'vm1' and rec['connected'] is True
        assert t0 - 2000 <= rec['last_seen_at'] <= now_ms() + 2000


def test_auth_tokens_are_distinct(daemon):
    daemon.register('vm1')
    tokens = set()
    with daemon.client() as c:
        for _ in range(3):
            tokens.add(c.auth('vm1')['token'])
    assert len(tokens) == 3


def test_auth_wrong_password_and_unknown_vm_look_alike(daemon):
    daemon.register('vm1')
    with daemon.client() as c:
        m1 = c.err('auth', {'vm_id': 'vm1', 'password': 'wrong-password'}, 'unauthenticated')
        m2 = c.err('auth', {'vm_id': 'nosuchvm', 'password': 'wrong-password'},
                   'unauthenticated')
        m3 = c.err('auth', {'vm_id': 'nosuchvm', 'password': PASSWORD}, 'unauthenticated')
        assert m1 == m2 == m3
        assert 'nosuchvm' not in m2
        # a failed auth leaves the connection anonymous
        c.err('vm.get', None, 'unauthenticated')


def test_auth_unknown_vm_takes_as_long(daemon):
    """Same time for an unknown VM as for a wrong password (no probing by
    timing): the unknown VM must cost a hash too. Medians of 3, lenient."""
    daemon.register('vm1')

    def median_time(vm_id):
        ts = []
        with daemon.client() as c:
            for _ in range(3):
                t0 = time.monotonic()
                c.err('auth', {'vm_id': vm_id, 'password': 'wrong-password'}, 'unauthenticated')
                ts.append(time.monotonic() - t0)
        return sorted(ts)[1]

    wrong = median_time('vm1')
    unknown = median_time('nosuchvm')
    print(f'auth wrong password {wrong * 1000:.1f} ms, unknown VM {unknown * 1000:.1f} ms')
    assert unknown >= 0.3 * wrong, (wrong, unknown)


@pytest.mark.parametrize('password', ['12345', 'p' * 1025, ''])
def test_auth_password_length(daemon, password):
    daemon.register('vm1')
    with daemon.client() as c:
        c.err('auth', {'vm_id': 'vm1', 'password': password}, 'bad_request')
        c.err('auth', {'vm_id': 'nosuchvm', 'password': password}, 'bad_request')


def test_auth_bad_params(daemon):
    with daemon.client() as c:
        c.err('auth', {'vm_id': 'vm1'}, 'bad_request')
        c.err('auth', {'password': PASSWORD}, 'bad_request')
        c.err('auth', {'vm_id': 'vm1', 'password': PASSWORD, 'ram': 1}, 'bad_request')
        c.err('auth', {'vm_id': '-x', 'password': PASSWORD}, 'bad_request')
        c.err('auth', None, 'bad_request')


def test_auth_switches_attached_connection(daemon):
    daemon.register('vmb')
    c = daemon.login('vma')
    token_a = c.token
    res = c.auth('vmb')
    assert res['vm_id'] == 'vmb'
    assert c.ok('vm.get')['vm_id'] == 'vmb'
    # the old session was not ended: resume it elsewhere
    with daemon.client() as o:
        assert o.ok('resume', {'token': token_a})['vm_id'] == 'vma'
        assert o.ok('vm.get')['vm_id'] == 'vma'
    c.close()


def test_failed_auth_on_attached_connection_keeps_other_vms_out(daemon):
    c = daemon.login('vma')
    c.err('auth', {'vm_id': 'vma', 'password': 'wrong-password'}, 'unauthenticated')
    # whatever happened to the attachment, it is still vma or nobody
    err, res = c.call('vm.get')
    assert (err is None and res['vm_id'] == 'vma') or err[0] == 'unauthenticated', (err, res)
    c.close()


def test_resume(daemon):
    a = daemon.login('vm1')
    token = a.token
    with daemon.client() as c:
        t0 = now_ms()
        res = c.ok('resume', {'token': token})
        assert res['vm_id'] == 'vm1'
        assert isinstance(res['expires_at'], int)
        assert t0 + DAY_MS - 5000 <= res['expires_at'] <= now_ms() + DAY_MS + 5000
        rec = c.ok('vm.get')
        assert rec['vm_id'] == 'vm1' and rec['connected'] is True
        assert 'token' not in res
    a.close()


def test_resume_invalid_token(daemon):
    with daemon.client() as c:
        c.err('resume', {'token': 'A' * 43}, 'unauthenticated')
        c.err('resume', {'token': 'abcdefghij_-' + 'x' * 30 + 'A'}, 'unauthenticated')
        c.err('vm.get', None, 'unauthenticated')


def test_resume_token_any_43_chars_well_formed(daemon):
    # The contract's token syntax is 43 characters of [A-Za-z0-9_-]; a token
    # whose last character carries non-zero padding bits still matches it,
    # so it is a wrong token (unauthenticated), not a malformed one.
    with daemon.client() as c:
        c.err('resume', {'token': 'abcdefghij_-' + 'x' * 31}, 'unauthenticated')
        c.err('vm.get', {'token': 'B' * 43}, 'unauthenticated')


@pytest.mark.parametrize('token', ['A' * 42, 'A' * 44, '!' * 43, 'A' * 42 + '=', '', 5, None,
                                   b'A' * 43, 'A' * 42 + '+'],
                         ids=['42', '44', 'bang', 'pad', 'empty', 'int', 'nil', 'bin', 'plus'])
def test_resume_malformed_token(daemon, token):
    with daemon.client() as c:
        c.err('resume', {'token': token}, 'bad_request')
        assert c.is_open()


def test_resume_params(daemon):
    with daemon.client() as c:
        c.err('resume', None, 'bad_request')
        c.err('resume', {'token': 'A' * 43, 'vm_id': 'vm1'}, 'bad_request')


def test_before_auth_allowed_methods(daemon):
    with daemon.client() as c:
        assert c.ok('ping')['pong'] is True
        c.register('vm1')
        res = c.ok('auth', {'vm_id': 'vm1', 'password': PASSWORD})
        with daemon.client() as o:
            assert o.ok('resume', {'token': res['token']})['vm_id'] == 'vm1'


# ---------------------------------------------------------------- passwd

def test_passwd_wrong_current(daemon):
    c = daemon.login('vm1')
    c.err('passwd', {'password': 'wrong-password', 'new_password': 'new-password'},
          'unauthenticated')
    # nothing changed; the session still works
    assert c.ok('vm.get')['vm_id'] == 'vm1'
    with daemon.client() as o:
        o.auth('vm1', PASSWORD)
        o.err('auth', {'vm_id': 'vm1', 'password': 'new-password'}, 'unauthenticated')
    c.close()


def test_passwd_validation(daemon):
    c = daemon.login('vm1')
    c.err('passwd', {'password': PASSWORD, 'new_password': '12345'}, 'bad_request')
    c.err('passwd', {'password': PASSWORD, 'new_password': 'p' * 1025}, 'bad_request')
    c.err('passwd', {'password': PASSWORD}, 'bad_request')
    c.err('passwd', {'new_password': 'new-password'}, 'bad_request')
    c.err('passwd', {'password': PASSWORD, 'new_password': 'new-password', 'x': 1},
          'bad_request')
    c.close()


def test_passwd_success(daemon):
    c = daemon.login('vm1')
    other = daemon.login('vm1', register=False)
    spare = other.token
    with daemon.client() as s:
        stateless = s.auth('vm1')['token']
    assert c.ok('passwd', {'password': PASSWORD, 'new_password': 'new-password'}) == {}
    # the current session stays
    assert c.ok('vm.get')['vm_id'] == 'vm1'
    assert c.ok('vm.get', {'token': c.token})['vm_id'] == 'vm1'
    # the other sessions ended, and a connection attached to one is anonymous
    with daemon.client() as o:
        o.err('vm.get', {'token': spare}, 'unauthenticated')
        o.err('vm.get', {'token': stateless}, 'unauthenticated')
        o.err('resume', {'token': stateless}, 'unauthenticated')
    other.err('vm.get', None, 'unauthenticated')
    # old password fails, new works
    with daemon.client() as o:
        o.err('auth', {'vm_id': 'vm1', 'password': PASSWORD}, 'unauthenticated')
        o.auth('vm1', 'new-password')
    other.close()
    c.close()


def test_passwd_needs_session(daemon):
    daemon.register('vm1')
    with daemon.client() as c:
        c.err('passwd', {'password': PASSWORD, 'new_password': 'new-password'},
              'unauthenticated')
        c.auth('vm1', PASSWORD)


# ---------------------------------------------------------------- logout

def test_logout(daemon):
    obs = daemon.login('obs')
    c = daemon.login('vm1')
    token = c.token
    with daemon.client() as twin:
        twin.ok('resume', {'token': token})
        assert ids(obs.ok('vm.list', {'filter': 'authorized'})['vms']) == ['obs', 'vm1']
        assert c.ok('logout') == {}
        c.err('vm.get', None, 'unauthenticated')
        # every connection attached to the session is anonymous again
        twin.err('vm.get', None, 'unauthenticated')
        twin.err('logout', None, 'unauthenticated')
        c.err('resume', {'token': token}, 'unauthenticated')
        assert ids(obs.ok('vm.list', {'filter': 'authorized'})['vms']) == ['obs']
        assert ids(obs.ok('vm.list', {'filter': 'connected'})['vms']) == ['obs']
        # the connections stay open and can log in again
        assert twin.is_open()
        c.auth('vm1')
        assert c.ok('vm.get')['vm_id'] == 'vm1'
    obs.close()
    c.close()


def test_logout_keeps_other_sessions(daemon):
    obs = daemon.login('obs')
    a = daemon.login('vm1')
    b = daemon.login('vm1', register=False)
    assert a.ok('logout') == {}
    assert b.ok('vm.get')['vm_id'] == 'vm1'
    assert ids(obs.ok('vm.list', {'filter': 'authorized'})['vms']) == ['obs', 'vm1']
    assert ids(obs.ok('vm.list', {'filter': 'connected'})['vms']) == ['obs', 'vm1']
    for c in (obs, a, b):
        c.close()


def test_logout_with_token(daemon):
    a = daemon.login('vm1')
    token = a.token
    with daemon.client() as s:
        assert s.ok('logout', {'token': token}) == {}
        s.err('vm.get', {'token': token}, 'unauthenticated')
    a.err('vm.get', None, 'unauthenticated')
    a.close()


def test_logout_anonymous(daemon):
    with daemon.client() as c:
        c.err('logout', None, 'unauthenticated')


def test_last_seen_at(daemon):
    daemon.register('vm1')
    with daemon.client() as c:
        c.auth('vm1')
        t = c.ok('vm.get')['last_seen_at']
        token = c.token
    with daemon.client() as c:
        # the end of the connection moves last_seen_at
        assert wait_until(lambda: c.ok('vm.get', {'token': token})['last_seen_at'] >= t)
        rec = c.ok('vm.get', {'token': token})
        assert rec['last_seen_at'] >= t
        c.ok('resume', {'token': token})
        assert c.ok('vm.get')['last_seen_at'] >= rec['last_seen_at']
