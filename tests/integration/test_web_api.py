# SPDX-License-Identifier: MIT
"""vmm-web with part 2 of vmmd (users, sessions, groups, bookings, events):
identity (cookie flags, Bearer, Basic without a hash per request), failed
logins throttled per client address, every /api/v1 route, seed 002's README
curl commands run literally (with -u), seed 003's routes, the error mapping,
Server-Sent Events with Last-Event-ID replay after a forced disconnect, and
HTML in every text field coming back as text."""

import glob
import http.client
import json
import os
import re
import shlex
import socket
import subprocess
import threading
import time

import pytest

import vmmtest
from webtest import (ADMIN_PW, ALICE_PW, BOB_PW, Admin, make_cert, make_web, method_calls,  # noqa: F401
                     part2_config, require_part2, site)

TIME_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')
JSON = {'Content-Type': 'application/json'}
HTML = '<img src=x onerror=alert(1)>'
SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared', 'seeds')


def check_times(obj, where='$'):
    """Every key "time" or "..._at" holds an RFC 3339 UTC string with ms (or null)."""
    n = 0
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (k == 'time' or k.endswith('_at')) and v is not None:
                assert isinstance(v, str) and TIME_RE.match(v), f'{where}.{k} = {v!r}'
                n += 1
            n += check_times(v, f'{where}.{k}')
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            n += check_times(v, f'{where}[{i}]')
    return n


def ok(r, status=200):
    assert r.status == status, r
    j = r.json
    check_times(j)
    return j


def login(w, name, pw):
    r, token = w.login(name, pw)
    assert r.status == 200, r
    return token


# ---- identity ----

def test_login_cookie_me_logout(site):
    r = site.post('/api/v1/login', {'name': 'alice', 'password': ALICE_PW})
    j = ok(r)
    assert set(j) >= {'name', 'role', 'expires_at', 'token'}
    assert j['name'] == 'alice' and j['role'] == 'user'
    assert re.match(r'^[A-Za-z0-9_-]{43}$', j['token'])
    cookie = r.header('Set-Cookie')
    parts = [p.strip() for p in cookie.split(';')]
    assert parts[0] == f'vmm_session={j["token"]}'
    assert {'HttpOnly', 'SameSite=Strict', 'Path=/'} <= set(parts), cookie
    assert 'Secure' not in parts
    me = ok(site.get('/api/v1/me', cookie=j['token']))
    assert me['authenticated'] is True and me['name'] == 'alice' and me['role'] == 'user'
    assert me['email'] == 'alice'
    assert ok(site.get('/me', cookie=j['token']))['email'] == 'alice'
    r = site.request('POST', '/api/v1/logout', body=b'{}', headers=JSON, cookie=j['token'])
    assert ok(r) == {} and 'Max-Age=0' in r.header('Set-Cookie')
    assert ok(site.get('/api/v1/me', cookie=j['token'])) == {'authenticated': False}
    assert site.get('/api/v1/vms', cookie=j['token']).status == 401


def test_wrong_password_and_unknown_user_alike(site):
    a = site.post('/api/v1/login', {'name': 'alice', 'password': 'wrong-pw-1'})
    b = site.post('/api/v1/login', {'name': 'nobody', 'password': 'wrong-pw-1'})
    assert a.status == b.status == 401
    assert a.error() == b.error() == 'unauthenticated'
    assert a.json['error']['message'] == b.json['error']['message']
    assert a.header('Set-Cookie') is None


def test_bearer(site):
    token = login(site, 'alice', ALICE_PW)
    j = ok(site.get('/api/v1/vms', token=token))
    assert [v['vm_id'] for v in j['vms']] == ['web-01', 'web-02', 'web-03', 'web-04']
    assert j['next'] is None
    assert check_times(j) >= 4


def test_basic_costs_no_hash_per_request(site):
    d = site.daemon
    before = method_calls(d, 'user.auth')
    t0 = time.monotonic()
    r = site.post('/api/v1/login', {'name': 'bob', 'password': BOB_PW})
    one_login = time.monotonic() - t0
    assert r.status == 200
    t0 = time.monotonic()
    c = site.conn()
    for i in range(100):
        r = site.request('GET', '/api/v1/vms/web-01', auth=('alice', ALICE_PW), conn=c)
        assert r.status == 200, (i, r)
    c.close()
    hundred = time.monotonic() - t0
    calls = method_calls(d, 'user.auth') - before
    print(f'one login {one_login * 1000:.1f} ms; 100 Basic requests {hundred * 1000:.1f} ms; '
          f'user.auth calls {calls}')
    # the explicit login above and one for the 100 Basic requests
    assert calls == 2, calls
    assert hundred <= 2 * one_login + 2.0, (hundred, one_login)


def test_basic_concurrent_requests_share_one_login(site):
    d = site.daemon
    before = method_calls(d, 'user.auth')
    results = []

    def one():
        results.append(site.get('/api/v1/groups', auth=('bob', BOB_PW)).status)
    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 20, results
    assert method_calls(d, 'user.auth') - before == 1


def test_basic_dropped_at_first_unauthenticated(site):
    assert site.get('/api/v1/disks', auth=('alice', ALICE_PW)).status == 200
    d = site.daemon
    before = method_calls(d, 'user.auth')
    a = Admin(d)
    a.ok('session.revoke', {'user': 'alice'})
    a.close()
    # the kept session is refused once, dropped, and a new login serves the request
    r = site.get('/api/v1/disks', auth=('alice', ALICE_PW))
    assert r.status == 200, r
    assert method_calls(d, 'user.auth') - before == 1
    # wrong credentials are never kept
    for _ in range(3):
        assert site.get('/api/v1/disks', auth=('alice', 'not-her-pw')).status == 401
    assert method_calls(d, 'user.auth') - before == 4


def login_from(w, source, name, pw):
    c = http.client.HTTPConnection(w.host, w.port, timeout=20, source_address=(source, 0))
    try:
        c.request('POST', '/api/v1/login', body=json.dumps({'name': name, 'password': pw}),
                  headers=JSON)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def test_failed_logins_throttled_per_client_address(site):
    codes = [login_from(site, '127.0.0.2', 'alice', 'wrong-pw-1') for _ in range(11)]
    assert codes[:10] == [401] * 10 and codes[10] == 429, codes
    # the attacker's address is locked out, not the other web users
    assert login_from(site, '127.0.0.2', 'alice', ALICE_PW) == 429
    assert login_from(site, '127.0.0.3', 'alice', ALICE_PW) == 200
    assert login_from(site, '127.0.0.4', 'bob', BOB_PW) == 200


def test_without_peer_everyone_shares_the_gateway_limit(make_daemon, make_web, tmp_path):
    require_part2()
    d = make_daemon(args=['--config', part2_config(tmp_path)])
    a = Admin(d)
    a.ok('user.create', {'name': 'alice', 'role': 'user', 'password': ALICE_PW})
    a.close()
    w = make_web(d, args=['--no-peer'])
    codes = [login_from(w, '127.0.0.2', 'alice', 'wrong-pw-1') for _ in range(11)]
    assert codes[10] == 429, codes
    assert login_from(w, '127.0.0.3', 'alice', ALICE_PW) == 429


# ---- /api/v1 routes ----

def test_vm_routes(site):
    admin = login(site, 'admin', ADMIN_PW)
    alice = login(site, 'alice', ALICE_PW)
    vm = ok(site.get('/api/v1/vms/web-01', token=alice))
    assert vm['vm_id'] == 'web-01' and vm['ram'] == 1024
    assert TIME_RE.match(vm['registered_at'])
    assert ok(site.get('/api/v1/vms?filter=all&limit=2', token=alice))['next'] == 'web-02'
    assert ok(site.get('/api/v1/vms?filter=connected', token=alice))['vms'] == []
    assert site.get('/api/v1/vms/nope', token=alice).status == 404
    # admin: create (tcp_admin), set, approve, suspend, password, delete
    j = ok(site.post('/api/v1/vms', {'vm_id': 'new-1', 'ram': 512, 'cpu': 1}, token=admin), 201)
    assert j['vm_id'] == 'new-1' and j['password']
    assert site.post('/api/v1/vms', {'vm_id': 'new-1'}, token=admin).status == 409
    assert site.post('/api/v1/vms', {'vm_id': 'new-2'}, token=alice).status == 403
    j = ok(site.request('PATCH', '/api/v1/vms/new-1', json_body={'hostname': 'web-new'}, token=admin))
    assert j['hostname'] == 'web-new'
    assert site.request('PATCH', '/api/v1/vms/new-1', json_body={'hostname': 'x'}, token=alice).status == 403
    assert ok(site.post('/api/v1/vms/new-1/suspend', token=admin))['access'] == 'suspended'
    assert ok(site.post('/api/v1/vms/new-1/approve', token=admin))['access'] == 'active'
    j = ok(site.post('/api/v1/vms/new-1/password', {}, token=admin))
    assert j['vm_id'] == 'new-1' and j['password']
    mon = ok(site.get('/api/v1/vms/new-1/monitor', token=alice))
    assert mon['vm_id'] == 'new-1'
    assert ok(site.request('DELETE', '/api/v1/vms/new-1', token=admin)) == {}
    assert site.get('/api/v1/vms/new-1', token=admin).status == 404
    assert ok(site.get('/api/v1/disks', token=alice))['disks'] == []
    who = ok(site.get('/api/v1/whoami', token=alice))
    assert who['kind'] == 'user' and who['name'] == 'alice'


def test_group_routes(site):
    admin = login(site, 'admin', ADMIN_PW)
    alice = login(site, 'alice', ALICE_PW)
    g = ok(site.post('/api/v1/groups', {'name': 'Prod', 'vm_ids': ['web-01']}, token=admin), 201)
    gid = g['id']
    assert g['vm_ids'] == ['web-01']
    assert site.post('/api/v1/groups', {'name': 'Prod'}, token=admin).status == 409
    assert site.post('/api/v1/groups', {'name': 'X'}, token=alice).status == 403
    assert ok(site.get(f'/api/v1/groups/{gid}', token=alice))['name'] == 'Prod'
    assert ok(site.request('PATCH', f'/api/v1/groups/{gid}', json_body={'name': 'Production'},
                           token=admin))['name'] == 'Production'
    j = ok(site.post(f'/api/v1/groups/{gid}/vms', {'vm_ids': ['web-02', 'web-03']}, token=admin))
    assert sorted(j['vm_ids']) == ['web-01', 'web-02', 'web-03']
    ok(site.request('DELETE', f'/api/v1/groups/{gid}/vms/web-03', token=admin))
    assert sorted(ok(site.get(f'/api/v1/groups/{gid}', token=alice))['vm_ids']) == ['web-01', 'web-02']
    assert [x['id'] for x in ok(site.get('/api/v1/groups', token=alice))['groups']] == [gid]
    assert ok(site.get(f'/api/v1/vms?group={gid}', token=alice))['vms'][0]['vm_id'] == 'web-01'
    assert ok(site.request('DELETE', f'/api/v1/groups/{gid}', token=admin)) == {}
    assert site.get(f'/api/v1/groups/{gid}', token=alice).status == 404


def test_booking_routes(site):
    admin = login(site, 'admin', ADMIN_PW)
    alice = login(site, 'alice', ALICE_PW)
    bob = login(site, 'bob', BOB_PW)
    b = ok(site.post('/api/v1/vms/web-01/booking', {'hours': 1}, token=alice), 201)
    assert b['vm_id'] == 'web-01' and b['user'] == 'alice'
    t0 = time.strptime(b['started_at'][:19], '%Y-%m-%dT%H:%M:%S')
    t1 = time.strptime(b['expires_at'][:19], '%Y-%m-%dT%H:%M:%S')
    assert time.mktime(t1) - time.mktime(t0) == 3600
    r = site.post('/api/v1/vms/web-01/booking', {'hours': 1}, token=bob)
    assert r.status == 409 and r.error() == 'conflict'
    assert site.post('/api/v1/vms/web-02/booking', {'hours': 1000}, token=bob).status == 400
    assert ok(site.get('/api/v1/vms/web-01/booking', token=bob))['booking']['user'] == 'alice'
    renewed = ok(site.post('/api/v1/vms/web-01/booking/renew', {'minutes': 30}, token=alice))
    assert renewed['expires_at'] > b['expires_at']
    assert site.post('/api/v1/vms/web-01/booking/renew', {'hours': 1}, token=bob).status == 403
    lst = ok(site.get('/api/v1/bookings', token=bob))['bookings']
    assert [x['vm_id'] for x in lst] == ['web-01']
    assert ok(site.request('DELETE', '/api/v1/vms/web-01/booking', token=alice)) == {}
    assert site.request('DELETE', '/api/v1/vms/web-01/booking', token=alice).status == 404
    # a free VM of a group
    g = ok(site.post('/api/v1/groups', {'name': 'Pool', 'vm_ids': ['web-03', 'web-04']}, token=admin), 201)
    gb = ok(site.post('/api/v1/bookings', {'group': g['id'], 'hours': 2}, token=bob), 201)
    assert gb['vm_id'] in ('web-03', 'web-04') and gb['user'] == 'bob'
    hist = ok(site.get('/api/v1/history', token=alice))['entries']
    assert [e['action'] for e in hist][:3] == ['cancel', 'renew', 'book']
    assert all(e['user'] == 'alice' for e in hist)
    assert ok(site.get('/api/v1/history?user=bob', token=admin))['entries'][0]['action'] == 'book'


def test_user_os_request_session_routes(site):
    admin = login(site, 'admin', ADMIN_PW)
    alice = login(site, 'alice', ALICE_PW)
    u = ok(site.post('/api/v1/users', {'name': 'carol@example.com', 'role': 'viewer'}, token=admin), 201)
    assert u['password'] and u['role'] == 'viewer'
    assert site.post('/api/v1/users', {'name': 'dave'}, token=alice).status == 403
    assert ok(site.get('/api/v1/users/carol@example.com', token=admin))['role'] == 'viewer'
    assert ok(site.request('PATCH', '/api/v1/users/carol@example.com', json_body={'role': 'user'},
                           token=admin))['role'] == 'user'
    names = [x['name'] for x in ok(site.get('/api/v1/users', token=admin))['users']]
    assert {'admin', 'alice', 'bob', 'carol@example.com'} <= set(names)
    assert ok(site.request('DELETE', '/api/v1/users/carol@example.com', token=admin)) == {}
    assert site.get('/api/v1/users/carol@example.com', token=admin).status == 404
    # OS catalog
    o = ok(site.post('/api/v1/os', {'name': 'Debian', 'version': '12'}, token=admin), 201)
    assert [x['id'] for x in ok(site.get('/api/v1/os', token=alice))['os']] == [o['id']]
    assert ok(site.request('DELETE', f'/api/v1/os/{o["id"]}', token=admin)) == {}
    # requests
    rq = ok(site.post('/api/v1/requests', {'description': 'CI runner', 'ram': 2048, 'cpu': 2,
                                           'disks': [100], 'count': 2}, token=alice), 201)
    assert rq['state'] == 'pending' and rq['requester'] == 'alice'
    assert site.post(f'/api/v1/requests/{rq["id"]}/approve', {'vm_ids': ['ci-1']},
                     token=admin).status == 400
    ap = ok(site.post(f'/api/v1/requests/{rq["id"]}/approve', {'vm_ids': ['ci-1', 'ci-2']},
                      token=admin))
    assert ap['request']['state'] == 'approved' and len(ap['vms']) == 2
    assert all(v['password'] for v in ap['vms'])
    rq2 = ok(site.post('/api/v1/requests', {'description': 'x', 'ram': 1, 'cpu': 1}, token=alice), 201)
    assert ok(site.post(f'/api/v1/requests/{rq2["id"]}/reject', {'reason': 'no'},
                        token=admin))['state'] == 'rejected'
    rq3 = ok(site.post('/api/v1/requests', {'description': 'y', 'ram': 1, 'cpu': 1}, token=alice), 201)
    assert ok(site.post(f'/api/v1/requests/{rq3["id"]}/cancel', token=alice))['state'] == 'cancelled'
    assert len(ok(site.get('/api/v1/requests', token=alice))['requests']) == 3
    # sessions (tcp_admin)
    sess = ok(site.get('/api/v1/sessions?user=alice', token=admin))['sessions']
    assert sess and all(s.get('user') == 'alice' for s in sess)
    assert ok(site.post('/api/v1/sessions/revoke', {'user': 'alice'}, token=admin))['revoked'] >= 1
    assert site.get('/api/v1/vms', token=alice).status == 401


def test_password_change(site):
    token = login(site, 'bob', BOB_PW)
    assert site.post('/api/v1/me/password', {'password': 'wrong-pw-9', 'new_password': 'x' * 8},
                     token=token).status == 401
    assert ok(site.post('/api/v1/me/password', {'password': BOB_PW, 'new_password': 'bob-new-pw'},
                        token=token)) == {}
    assert site.login('bob', 'bob-new-pw')[0].status == 200


def test_admin_routes_501_without_tcp_admin(make_daemon, make_web, tmp_path):
    require_part2()
    conf = os.path.join(str(tmp_path), 'no-admin.conf')
    with open(conf, 'w') as f:
        f.write('trusted_proxies = 127.0.0.1\n')
    d = make_daemon(args=['--config', conf])
    a = Admin(d)
    a.ok('user.create', {'name': 'admin', 'role': 'admin', 'password': ADMIN_PW})
    a.close()
    w = make_web(d)
    admin = login(w, 'admin', ADMIN_PW)
    r = w.post('/api/v1/vms', {'vm_id': 'x'}, token=admin)
    assert r.status == 501 and r.error() == 'unknown_method'
    assert 'tcp_admin' in r.json['error']['message']
    assert w.get('/api/v1/sessions', token=admin).status == 501
    assert w.post('/add_vm', {'vm_id': 'x', 'ram': 1, 'cpu': 1}, auth=('admin', ADMIN_PW)).status == 501
    # part 2's own methods are there
    assert w.post('/api/v1/groups', {'name': 'g'}, token=admin).status == 201


def test_tls_login_cookie_secure(make_daemon, make_web, tmp_path):
    require_part2()
    d = make_daemon(args=['--config', part2_config(tmp_path)])
    a = Admin(d)
    a.ok('user.create', {'name': 'alice', 'role': 'user', 'password': ALICE_PW})
    a.close()
    w = make_web(d, tls=make_cert(tmp_path))
    r = w.post('/api/v1/login', {'name': 'alice', 'password': ALICE_PW})
    assert r.status == 200
    parts = [p.strip() for p in r.header('Set-Cookie').split(';')]
    assert {'HttpOnly', 'SameSite=Strict', 'Path=/', 'Secure'} <= set(parts)


# ---- seed 002: the README's curl commands, literally, with -u ----

def seed002_commands():
    files = glob.glob(os.path.join(SEEDS, '002_*'))
    assert files, f'seed 002 not found under {SEEDS}'
    text = open(files[0], encoding='utf-8').read()
    cmds = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        block = block.strip()
        if block.startswith('curl'):
            cmds.append(block)
    assert len(cmds) == 10, cmds
    return cmds


def run_curl(cmd, port, user):
    cmd = cmd.replace('http://localhost:8080', f'http://127.0.0.1:{port}')
    argv = shlex.split(cmd)
    assert argv[0] == 'curl'
    argv = ['curl', '-s', '-u', user, '-w', '\n%{http_code}'] + argv[1:]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    body, status = out.rsplit('\n', 1)
    return int(status), body


def test_seed002_readme_curl(site):
    user = f'admin:{ADMIN_PW}'
    results = {}
    for cmd in seed002_commands():
        route = re.search(r'/(\w+)', cmd.split('8080', 1)[1]).group(1)
        results[route] = run_curl(cmd, site.port, user)
    status, body = results['add_vm']
    j = json.loads(body)
    assert status == 201 and j['message'] == 'VM added' and j['vm_id'] == 'vm-1' and j['password']
    status, body = results['update_vm']
    j = json.loads(body)
    assert status == 200 and j['message'] == 'VM updated'
    assert j['vm'] == {'vm_id': 'vm-1', 'ram': 4096, 'cpu': 4,
                       'disks': [{'disk_id': 'disk-1', 'size': 1000, 'vm_id': 'vm-1'}]}
    status, body = results['connect_vm']
    j = json.loads(body)
    assert status == 200 and j['message'] == 'VM connected' and j['created'] is False
    assert j['vm']['ram'] == 2048
    for route, message in (('authorize_vm', 'VM authorized'), ('deauthorize_vm', 'VM deauthorized')):
        status, body = results[route]
        assert status == 200 and json.loads(body)['message'] == message, (route, body)
    status, body = results['get_all_vms']
    vms = json.loads(body)
    assert status == 200 and isinstance(vms, list)
    vm1 = [v for v in vms if v['vm_id'] == 'vm-1']
    assert vm1 == [{'vm_id': 'vm-1', 'ram': 2048, 'cpu': 2,
                    'disks': [{'disk_id': 'disk-1', 'size': 500, 'vm_id': 'vm-1'}]}], vms
    for v in vms:
        assert set(v) == {'vm_id', 'ram', 'cpu', 'disks'} and 'id' not in v
    for route in ('get_connected_vms', 'get_authorized_vms'):
        status, body = results[route]
        lst = json.loads(body)
        assert status == 200 and isinstance(lst, list)
        assert all(set(v) == {'vm_id', 'ram', 'cpu', 'disks'} for v in lst)
    status, body = results['get_all_disks']
    assert status == 200 and json.loads(body) == [{'disk_id': 'disk-1', 'size': 500, 'vm_id': 'vm-1'}]
    assert results['health'] == (200, 'OK')
    # connect_vm of a new VM creates it
    r = site.post('/connect_vm', {'vm_id': 'vm-2', 'ram': 1, 'cpu': 1, 'disks': []},
                  auth=('admin', ADMIN_PW))
    assert r.status == 201 and r.json['created'] is True and r.json['password']


# ---- seed 003 (LoadZone) ----

def test_seed003_routes(site):
    admin = login(site, 'admin', ADMIN_PW)
    alice = login(site, 'alice', ALICE_PW)
    j = ok(site.post('/groups', {'name': 'Продакшн', 'vm_ids': ['web-01', 'web-02']}, token=admin), 201)
    gid = j['id']
    ok(site.post(f'/groups/{gid}/add-existing-vms', {'vm_ids': ['web-03']}, token=admin))
    j = ok(site.post('/add-vm', {'id': 'server-01', 'group_id': gid}, token=admin), 201)
    assert j['vm_id'] == 'server-01' and j['password']
    ok(site.post('/add-vm', {'id': 'server-02', 'group_id': None}, token=admin), 201)
    ok(site.post('/book', {'vm_id': 'web-02', 'hours': 4}, token=alice))
    ok(site.post('/renew', {'vm_id': 'web-02', 'hours': 2}, token=alice))
    state = ok(site.get('/vms', token=alice))
    assert set(state) == {'vms', 'groups'}
    byid = {v['id']: v for v in state['vms']}
    assert set(byid['web-02']) == {'id', 'group', 'booked_by', 'expires_at'}
    assert byid['web-02']['booked_by'] == 'alice' and TIME_RE.match(byid['web-02']['expires_at'])
    assert byid['web-01']['booked_by'] is None and byid['web-01']['expires_at'] is None
    assert byid['server-01']['group'] == gid and byid['server-02']['group'] is None
    assert state['groups'] == [{'id': gid, 'name': 'Продакшн',
                                'vm_ids': state['groups'][0]['vm_ids']}]
    assert set(state['groups'][0]['vm_ids']) == {'web-01', 'web-02', 'web-03', 'server-01'}
    ok(site.post('/cancel', {'vm_id': 'web-02'}, token=alice))
    ok(site.post('/remove-vm-from-group', {'vm_id': 'web-03'}, token=admin))
    ok(site.post('/remove-vm-from-group', {'vm_id': 'web-02', 'group_id': gid}, token=admin))
    ok(site.post('/delete-vm', {'vm_id': 'server-02'}, token=admin))
    ok(site.post('/delete-group', {'group_id': gid}, token=admin))
    state = ok(site.get('/vms', token=alice))
    assert state['groups'] == [] and 'server-02' not in {v['id'] for v in state['vms']}
    me = ok(site.get('/me', cookie=alice))
    assert me['authenticated'] is True and me['email'] == 'alice'
    # the cookie rule applies to the seed routes too
    r = site.request('POST', '/book', body=b'{"vm_id": "web-01", "hours": 1}', cookie=alice)
    assert r.status == 403


# ---- errors ----

def test_error_mapping(site):
    alice = login(site, 'alice', ALICE_PW)
    cases = [
        (site.post('/api/v1/vms/web-01/booking', {'hours': 'two'}, token=alice), 400, 'bad_request'),
        (site.post('/api/v1/vms/web-01/booking', {'hours': 1, 'bogus': 1}, token=alice), 400, 'bad_request'),
        (site.get('/api/v1/vms', token='B' * 43), 401, 'unauthenticated'),
        (site.post('/api/v1/groups', {'name': 'g'}, token=alice), 403, 'forbidden'),
        (site.get('/api/v1/vms/none', token=alice), 404, 'not_found'),
        (site.request('PATCH', '/api/v1/vms', token=alice), 405, 'bad_request'),
    ]
    ok(site.post('/api/v1/vms/web-04/booking', {'hours': 1}, token=alice), 201)
    cases.append((site.post('/api/v1/vms/web-04/booking', {'hours': 1}, token=alice), 409, 'conflict'))
    cases.append((site.request('POST', '/api/v1/requests', body=b'{"description": "' + b'x' * 70000 + b'"}',
                               headers=JSON, token=alice), 413, 'too_large'))
    for r, status, code in cases:
        assert r.status == status and r.error() == code, (status, code, r)


# ---- HTML in every text field ----

def test_html_comes_back_as_text(site):
    admin = login(site, 'admin', ADMIN_PW)
    alice = login(site, 'alice', ALICE_PW)
    g = ok(site.post('/api/v1/groups', {'name': HTML}, token=admin), 201)
    o = ok(site.post('/api/v1/os', {'name': HTML, 'version': '<b>1</b>', 'description': HTML},
                     token=admin), 201)
    rq = ok(site.post('/api/v1/requests', {'description': HTML, 'ram': 1, 'cpu': 1}, token=alice), 201)
    ok(site.request('PATCH', '/api/v1/vms/web-01', json_body={'hostname': 'web-01', 'owner': 'alice'},
                    token=admin))
    for path in ('/api/v1/groups', '/api/v1/os', '/api/v1/requests', '/vms', f'/api/v1/groups/{g["id"]}'):
        r = site.get(path, token=admin)
        assert r.status == 200 and r.header('Content-Type') == 'application/json', (path, r)
        assert r.header('X-Content-Type-Options') == 'nosniff'
        assert HTML in json.dumps(r.json, ensure_ascii=False), path
    assert o['name'] == HTML and rq['description'] == HTML and g['name'] == HTML
    # a name vmmd refuses is refused with its message, still as JSON
    r = site.post('/api/v1/vms', {'vm_id': HTML}, token=admin)
    assert r.status == 400 and r.error() == 'bad_request'
    r = site.get('/api/v1/vms/' + '%3Cscript%3E', token=admin)
    assert r.status in (400, 404) and r.header('Content-Type') == 'application/json'


# ---- live events ----

class Stream:
    """An SSE stream read on a raw socket (so it can be cut at will)."""

    def __init__(self, w, token, last_id=None, timeout=10):
        self.sock = socket.create_connection((w.host, w.port), timeout=timeout)
        h = f'GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n'
        if last_id is not None:
            h += f'Last-Event-ID: {last_id}\r\n'
        self.sock.sendall((h + '\r\n').encode())
        self.buf = b''
        head = self._until(b'\r\n\r\n')
        self.status = int(head.split(b' ')[1])
        self.headers = head.decode('latin-1')
        self.chunked = 'chunked' in self.headers.lower()
        self.text = ''

    def _until(self, sep, timeout=10):
        deadline = time.monotonic() + timeout
        while sep not in self.buf:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError('closed')
            self.buf += data
            if time.monotonic() > deadline:
                raise TimeoutError
        head, self.buf = self.buf.split(sep, 1)
        return head

    def _decode(self):
        if not self.chunked:
            self.text += self.buf.decode()
            self.buf = b''
            return
        while True:
            if b'\r\n' not in self.buf:
                return
            size_line, rest = self.buf.split(b'\r\n', 1)
            n = int(size_line.split(b';')[0], 16)
            if len(rest) < n + 2:
                return
            self.text += rest[:n].decode()
            self.buf = rest[n + 2:]

    def events(self, count, timeout=10):
        """The next count events (not comments): list of (id or None, type line, data dict)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            self._decode()
            while '\n\n' in self.text and len(out) < count:
                block, self.text = self.text.split('\n\n', 1)
                fields = {}
                for line in block.split('\n'):
                    if line.startswith(':') or not line:
                        continue
                    k, _, v = line.partition(': ')
                    fields[k] = v
                if 'data' in fields:
                    out.append((fields.get('id'), fields.get('event'), json.loads(fields['data'])))
            if len(out) >= count:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f'{len(out)} of {count} events')
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError('stream closed')
            self.buf += data
        return out

    def comments(self, timeout):
        deadline = time.monotonic() + timeout
        seen = ''
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            self.buf += data
            self._decode()
            seen += self.text
            self.text = ''
            if ': keep-alive' in seen:
                break
        return seen

    def close(self):
        self.sock.close()


def test_events_replay_after_forced_disconnect(site):
    alice = login(site, 'alice', ALICE_PW)
    bob = login(site, 'bob', BOB_PW)
    s = Stream(site, alice)
    assert s.status == 200
    assert 'text/event-stream' in s.headers
    ok(site.post('/api/v1/vms/web-01/booking', {'hours': 1}, token=bob), 201)
    [(eid, etype, ev)] = s.events(1)
    assert ev['type'] == 'booking.created' and ev['vm_id'] == 'web-01' and ev['user'] == 'bob'
    assert eid is not None and int(eid) == ev['feed'] and etype is None
    assert ev['msg'].startswith('bob booked web-01 until ') and ev['msg'].endswith(' UTC')
    check_times(ev)
    s.close()   # forced disconnect; meanwhile two more changes
    ok(site.post('/api/v1/vms/web-01/booking/renew', {'hours': 1}, token=bob))
    ok(site.request('DELETE', '/api/v1/vms/web-01/booking', token=bob))
    s2 = Stream(site, alice, last_id=eid)
    assert s2.status == 200
    got = s2.events(2)
    assert [e[2]['type'] for e in got] == ['booking.renewed', 'booking.ended']
    assert [int(e[0]) for e in got] == [int(eid) + 1, int(eid) + 2]
    assert got[1][2]['reason'] == 'cancel' and 'cancelled' in got[1][2]['msg']
    # then live, nothing doubled
    ok(site.post('/api/v1/vms/web-02/booking', {'hours': 1}, token=bob), 201)
    [(eid3, _, ev3)] = s2.events(1)
    assert int(eid3) == int(eid) + 3 and ev3['vm_id'] == 'web-02'
    s2.close()


def test_events_refused_before_200(site):
    s = Stream(site, 'C' * 43)
    assert s.status == 401
    s.close()
    alice = login(site, 'alice', ALICE_PW)
    s = Stream(site, alice, last_id='x')
    assert s.status == 400
    s.close()


def test_events_keepalive_comment(site):
    alice = login(site, 'alice', ALICE_PW)
    s = Stream(site, alice)
    t0 = time.monotonic()
    seen = s.comments(17)
    took = time.monotonic() - t0
    s.close()
    assert ': keep-alive' in seen and took <= 16.5, (seen, took)


def gateway_conns(d):
    a = Admin(d)
    try:
        return len(a.ok('conn.list')['connections'])
    finally:
        a.close()


def test_watch_shared_only_within_a_session(site):
    d = site.daemon
    alice = login(site, 'alice', ALICE_PW)
    bob = login(site, 'bob', BOB_PW)
    site.get('/api/v1/vms', token=alice)
    base = gateway_conns(d)
    s1 = Stream(site, alice)
    n1 = gateway_conns(d)
    s2 = Stream(site, alice)
    n2 = gateway_conns(d)
    s3 = Stream(site, bob)
    n3 = gateway_conns(d)
    assert n1 == base + 1 and n2 == n1 and n3 == n2 + 1, (base, n1, n2, n3)
    ok(site.post('/api/v1/vms/web-03/booking', {'hours': 1}, token=bob), 201)
    for s in (s1, s2, s3):
        [(_, _, ev)] = s.events(1)
        assert ev['type'] == 'booking.created' and ev['vm_id'] == 'web-03'
    # alice logs out: her watch ends with her session, bob's goes on
    site.request('POST', '/api/v1/logout', body=b'{}', headers=JSON, token=alice)
    with pytest.raises((ConnectionError, TimeoutError)):
        s1.events(5, timeout=5)
    ok(site.request('DELETE', '/api/v1/vms/web-03/booking', token=bob))
    [(_, _, ev)] = s3.events(1)
    assert ev['type'] == 'booking.ended'
    for s in (s1, s2, s3):
        s.close()
