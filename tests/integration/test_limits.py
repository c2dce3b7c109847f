# SPDX-License-Identifier: MIT
"""Resource bounds (PROTOCOL.md "Limits", DESIGN.md property 3), shrunk by
flags so they are quick to reach: idle and half-message timeouts,
connections per peer and in all, failed logins per peer, sessions per VM,
session expiry, message size, and backpressure on a client that does not
read its replies."""

import time

from hostile_util import Admin
from vmmtest import PASSWORD, Client, expect_framing_close, ids, request_bytes, wait_until

# ---------------------------------------------------------------- idle timeout


def closed_after(c, timeout):
    """Seconds until the server closed c (None if it did not within timeout).
    Any message sent before the close must be a msgid-0 response."""
    t0 = time.monotonic()
    closed, msgs = c.wait_closed(timeout)
    for m in msgs:
        assert m[0] == 1 and m[1] == 0, f'unexpected message before close: {m!r}'
    return time.monotonic() - t0 if closed else None


def test_idle_anonymous_closed(make_daemon):
    d = make_daemon(args=['--idle-timeout', '1'])
    with d.client() as c:
        assert c.ok('ping')['pong'] is True
        t = closed_after(c, 6)
        assert t is not None, 'an idle anonymous connection stayed open'
        assert t >= 0.7, f'closed after {t:.2f} s, before the 1 s idle timeout'


def test_idle_anonymous_active_stays(make_daemon):
    d = make_daemon(args=['--idle-timeout', '1'])
    with d.client() as c:
        for _ in range(8):
            assert c.ok('ping')['pong'] is True
            time.sleep(0.35)
        assert c.is_open()


def test_idle_authenticated_stays(make_daemon):
    d = make_daemon(args=['--idle-timeout', '1'])
    c = d.login('vm1')
    assert closed_after(c, 2.5) is None, 'an authenticated idle connection was closed'
    assert c.ok('vm.get')['vm_id'] == 'vm1'
    c.close()


def test_half_message_closed_even_authenticated(make_daemon):
    d = make_daemon(args=['--idle-timeout', '1'])
    c = d.login('vm1')
    data = request_bytes(9, 'vm.get')
    c.send_raw(data[:len(data) // 2])
    t = closed_after(c, 6)
    assert t is not None, 'a half-received message did not time out'
    assert t >= 0.7
    c.close()


def test_logout_makes_idle_count(make_daemon):
    d = make_daemon(args=['--idle-timeout', '1'])
    c = d.login('vm1')
    assert c.ok('logout') == {}
    assert closed_after(c, 6) is not None
    c.close()


# ---------------------------------------------------------------- connections

def refused(c):
    """The server sent one rate_limited (msgid 0) and closed."""
    expect_framing_close(c, 'rate_limited')
    return True


def test_connections_per_peer(make_daemon):
    d = make_daemon(args=['--max-connections-per-peer', '5'])
    time.sleep(0.2)   # let the readiness probe's connection go
    conns = [d.client() for _ in range(5)]
    for c in conns:
        assert c.ok('ping')['pong'] is True
    extra = d.client()
    refused(extra)
    extra.close()
    for c in conns:
        assert c.ok('ping')['pong'] is True
    # another peer address is not affected
    with Client(d.port, source='127.0.0.2') as o:
        assert o.ok('ping')['pong'] is True
    # a freed slot can be used again
    conns.pop().close()

    def can_connect():
        with d.client() as c:
            try:
                return c.is_open()
            except AssertionError:
                return False
    assert wait_until(can_connect, 5)
    for c in conns:
        c.close()


def test_connections_in_all(make_daemon):
    d = make_daemon(args=['--max-connections', '8'])
    time.sleep(0.2)   # let the readiness probe's connection go
    conns = [Client(d.port, source=f'127.0.0.{2 + i % 2}') for i in range(8)]
    for c in conns:
        assert c.ok('ping')['pong'] is True
    extra = Client(d.port, source='127.0.0.5')
    refused(extra)
    extra.close()
    for c in conns:
        assert c.ok('ping')['pong'] is True
        c.close()


# ---------------------------------------------------------------- failed logins

def test_auth_failures_rate_limited(make_daemon):
    d = make_daemon(args=['--auth-failures-per-minute', '3'])
    d.register('vm1')
    with d.client() as c:
        for _ in range(3):
            c.err('auth', {'vm_id': 'vm1', 'password': 'wrong-password'}, 'unauthenticated')
        # even the right password is refused now
        c.err('auth', {'vm_id': 'vm1', 'password': PASSWORD}, 'rate_limited')
        c.err('auth', {'vm_id': 'nosuch', 'password': PASSWORD}, 'rate_limited')
        # nothing else is rate limited
        assert c.ok('ping')['pong'] is True
        c.register('vm2')
    with d.client() as c:
        c.err('auth', {'vm_id': 'vm1', 'password': PASSWORD}, 'rate_limited')
        c.err('resume', {'token': 'A' * 43}, 'rate_limited')
    # another peer address logs in fine
    with Client(d.port, source='127.0.0.2') as o:
        assert o.auth('vm1')['vm_id'] == 'vm1'
        # a token from elsewhere still works on the limited address (not a login)
        token = o.token
    with d.client() as c:
        assert c.ok('vm.get', {'token': token})['vm_id'] == 'vm1'
        # bad_request is checked first
        c.err('auth', {'vm_id': 'vm1', 'password': '123'}, 'bad_request')


def test_hashes_per_peer_counts_tcp_addresses_not_the_admin_socket(make_daemon):
    """At most --hashes-per-peer password checks in flight per TCP address;
    the admin socket's peers are not counted so (they all share one
    "address" there, and are trusted)."""
    d = make_daemon(args=['--hashes-per-peer', '2', '--hash-workers', '1'])
    n = 8
    for i in range(n):
        d.register(f'hp{i}')
    # TCP: n logins sent at once from one address, then read
    conns = [d.client() for _ in range(n)]
    try:
        for i, c in enumerate(conns):
            c.send('auth', {'vm_id': f'hp{i}', 'password': PASSWORD})
        codes = [Client.split(c.read_response(timeout=60))[0] for c in conns]
    finally:
        for c in conns:
            c.close()
    limited = [e for e in codes if e and e[0] == 'rate_limited']
    assert len(limited) >= n - 2 - 1, codes     # 2 in flight (one may end before the last)
    assert all(e is None or e[0] == 'rate_limited' for e in codes), codes
    # the admin socket: n password-setting calls at once, none refused
    admins = [Admin(d.admin_socket) for _ in range(n)]
    try:
        for i, a in enumerate(admins):
            a.send('vm.passwd', {'vm_id': f'hp{i}', 'password': PASSWORD + 'x'})
        codes = [Client.split(a.read_response(timeout=60))[0] for a in admins]
    finally:
        for a in admins:
            a.close()
    assert codes == [None] * n, codes


def test_resume_failures_count(make_daemon):
    d = make_daemon(args=['--auth-failures-per-minute', '3'])
    d.register('vm1')
    with Client(d.port, source='127.0.0.3') as c:
        for _ in range(3):
            c.err('resume', {'token': 'A' * 43}, 'unauthenticated')
        c.err('auth', {'vm_id': 'vm1', 'password': PASSWORD}, 'rate_limited')
    with Client(d.port, source='127.0.0.4') as o:
        token = o.auth('vm1')['token']
    with Client(d.port, source='127.0.0.3') as c:
        # a valid token proves possession: never refused for the address's
        # failures (PROTOCOL.md); another bad one still is
        assert c.ok('resume', {'token': token})['vm_id'] == 'vm1'
        c.err('resume', {'token': 'B' * 43}, 'rate_limited')


def test_successful_logins_not_limited(make_daemon):
    d = make_daemon(args=['--auth-failures-per-minute', '2'])
    d.register('vm1')
    with d.client() as c:
        for _ in range(4):
            token = c.auth('vm1')['token']
        for _ in range(4):
            c.ok('resume', {'token': token})


# ---------------------------------------------------------------- sessions per VM

def test_sessions_per_vm(make_daemon):
    d = make_daemon(args=['--sessions-per-vm', '3'])
    d.register('vm1')
    tokens = []
    with d.client() as c:
        for _ in range(4):
            tokens.append(c.auth('vm1')['token'])
            time.sleep(0.01)
        c.err('vm.get', {'token': tokens[0]}, 'unauthenticated')
        for t in tokens[1:]:
            assert c.ok('vm.get', {'token': t})['vm_id'] == 'vm1'
        tokens.append(c.auth('vm1')['token'])
        c.err('vm.get', {'token': tokens[1]}, 'unauthenticated')
        for t in tokens[2:]:
            assert c.ok('vm.get', {'token': t})['vm_id'] == 'vm1'


# ---------------------------------------------------------------- session expiry

def test_session_expires(make_daemon):
    d = make_daemon(args=['--session-ttl', '1'])
    d.register('vm1')
    with d.client() as c:
        res = c.auth('vm1')
        assert res['expires_at'] - time.time() * 1000 < 2500
        token = c.token
    time.sleep(2.2)
    with d.client() as c:
        c.err('vm.get', {'token': token}, 'unauthenticated')
        c.err('resume', {'token': token}, 'unauthenticated')
        c.auth('vm1')
        assert 'vm1' in ids(c.ok('vm.list', {'filter': 'authorized'})['vms'])


def test_session_expiry_unauthorizes(make_daemon):
    d = make_daemon(args=['--session-ttl', '1'])
    d.register('vm1')
    with d.client() as c:
        c.auth('vm1')
    obs = Client(d.port)
    obs.register('obs')
    time.sleep(2.2)
    obs.auth('obs')
    # vm1's session expired: not authorized any more
    assert ids(obs.ok('vm.list', {'filter': 'authorized'})['vms']) == ['obs']
    rec = [r for r in obs.ok('vm.list', {'filter': 'all'})['vms'] if r['vm_id'] == 'vm1'][0]
    assert rec['authorized'] is False and rec['connected'] is False
    obs.close()


def test_session_ttl_slides_with_use(make_daemon):
    d = make_daemon(args=['--session-ttl', '2'])
    d.register('vm1')
    with d.client() as c:
        token = c.auth('vm1')['token']
    with d.client() as c:
        t_end = time.monotonic() + 3.5
        while time.monotonic() < t_end:
            assert c.ok('vm.get', {'token': token})['vm_id'] == 'vm1'
            time.sleep(0.5)


def test_attached_connection_keeps_session(make_daemon):
    d = make_daemon(args=['--session-ttl', '1'])
    c = d.login('vm1')
    token = c.token
    time.sleep(2.2)
    # attached while open counts as use
    assert c.ok('vm.get')['vm_id'] == 'vm1'
    with d.client() as o:
        assert o.ok('vm.get', {'token': token})['vm_id'] == 'vm1'
    c.close()
    time.sleep(2.5)
    with d.client() as o:
        o.err('vm.get', {'token': token}, 'unauthenticated')


# ---------------------------------------------------------------- message size flag

def test_max_message_tcp_flag(make_daemon):
    d = make_daemon(args=['--max-message-tcp', '1024'])
    with d.client() as c:
        err, _ = c.call('ping', {'pad': 'x' * 900})
        assert err[0] == 'bad_request', err
        c.send_raw_tolerant(request_bytes(2, 'ping', {'pad': 'x' * 1100}))
        expect_framing_close(c, 'too_large')


# ---------------------------------------------------------------- backpressure

def test_backpressure(make_daemon):
    """A client that pipelines requests without reading replies: the daemon
    stops reading it (our sends block), keeps serving others, and its
    memory stays bounded."""
    d = make_daemon()
    with d.client() as r:
        r.pipeline([('register', {'vm_id': f'vm{i}', 'password': PASSWORD, 'ram': 1, 'cpu': 1,
                                  'disks': [{'id': f'vm{i}-{j:02d}'.ljust(64, 'x'), 'size': 1}
                                            for j in range(64)]})
                    for i in range(5)])
    hog = d.login('vm0', register=False)
    other = d.client()
    rss0 = d.rss_kib()
    hog.sock.setblocking(False)
    req = b''.join(request_bytes(1000 + i, 'vm.list', {'filter': 'all'}) for i in range(100))
    sent = 0
    stalled_since = None
    t0 = time.monotonic()
    latencies = []
    while True:
        now = time.monotonic()
        try:
            n = hog.sock.send(req)
            sent += n
            stalled_since = None
        except BlockingIOError:
            if stalled_since is None:
                stalled_since = now
            t = time.monotonic()
            assert other.ok('ping', timeout=2)['pong'] is True
            latencies.append(time.monotonic() - t)
            if now - stalled_since > 1.5:
                break
            time.sleep(0.05)
        assert sent < 64 * 1024 * 1024, 'vmmd read 64 MiB from a client that does not read'
        assert now - t0 < 20, f'vmmd kept reading for 20 s ({sent} bytes)'
    rss1 = d.rss_kib()
    growth = (rss1 - rss0) / 1024
    print(f'backpressure: sent {sent / 1e6:.1f} MB before the daemon stopped reading; '
          f'RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB (+{growth:.1f}); '
          f'ping max {max(latencies) * 1000:.1f} ms')
    assert growth < 64, f'RSS grew by {growth:.1f} MiB'
    assert max(latencies) < 1.0
    # the hog's replies start in order
    hog.sock.setblocking(True)
    for i in range(5):
        msg = hog.read_response()
        assert msg[1] == 1000 + i and msg[2] is None
    hog.close()
    other.close()
    # the daemon is fine afterwards
    with d.client() as c:
        assert c.ok('ping')['pong'] is True


# ---------------------------------------------------------------- storage full

def test_storage_full_unavailable(make_daemon):
    """Past --map-size-max, writes fail with unavailable, change nothing, and
    reads go on."""
    d = make_daemon(args=['--map-size-max', str(1024 * 1024)])
    obs = d.login('obs')
    full_at = None
    c = d.client(timeout=30)
    for i in range(300):
        v = f'{i:03d}'.ljust(48, 'v')
        disks = [{'id': f'{v}-{j:02d}'.ljust(64, 'd'), 'size': 1} for j in range(64)]
        err, res = c.call('register', {'vm_id': v, 'password': PASSWORD, 'ram': 1, 'cpu': 1,
                                       'disks': disks})
        if err:
            assert err[0] == 'unavailable', err
            full_at = i
            break
    assert full_at is not None, 'a 1 MiB database took 300 VMs with 64 disks each'
    failed = f'{full_at:03d}'.ljust(48, 'v')
    # nothing was changed by the failed write; reads go on
    vms = ids(obs.ok('vm.list', {'filter': 'all', 'limit': 10000})['vms'])
    assert failed not in vms and len(vms) == full_at + 1
    disks = obs.ok('disk.list', {'limit': 10000})['disks']
    assert not [x for x in disks if x['vm_id'] == failed]
    assert len(disks) == 64 * full_at
    assert obs.ok('vm.get')['vm_id'] == 'obs'
    # earlier codes in the table still win
    c.err('register', {'vm_id': 'obs', 'password': PASSWORD, 'ram': 1, 'cpu': 1}, 'exists')
    c.err('register', {'vm_id': 'newvm', 'password': PASSWORD, 'ram': 1, 'cpu': 1,
                       'disks': [{'id': disks[0]['id'], 'size': 1}]}, 'conflict')
    assert c.ok('ping')['pong'] is True
    c.close()
    obs.close()


# ---------------------------------------------------------------- accounting

def test_connection_slots_freed_on_every_close_path(make_daemon):
    """Per-peer counts come back down however a connection ends: client
    close, framing error, idle timeout, refusal."""
    d = make_daemon(args=['--max-connections-per-peer', '3', '--idle-timeout', '1'])
    time.sleep(0.2)
    src = '127.0.0.7'
    for _ in range(3):
        with Client(d.port, source=src) as c:
            assert c.ok('ping')['pong'] is True
        with Client(d.port, source=src) as c:
            c.send_raw(b'\xc1')
            expect_framing_close(c, 'bad_request')
        held = [Client(d.port, source=src) for _ in range(3)]
        for c in held:
            assert c.ok('ping')['pong'] is True
        extra = Client(d.port, source=src)
        refused(extra)
        extra.close()
        for c in held:
            c.close()
        time.sleep(0.2)
    idle = [Client(d.port, source=src) for _ in range(3)]
    for c in idle:
        assert closed_after(c, 5) is not None
        c.close()
    time.sleep(0.2)
    final = [Client(d.port, source=src) for _ in range(3)]
    for c in final:
        assert c.ok('ping')['pong'] is True
        c.close()


def test_connected_cleared_on_error_close(make_daemon):
    d = make_daemon(args=['--idle-timeout', '1'])
    obs = d.login('obs')

    def connected():
        return ids(obs.ok('vm.list', {'filter': 'connected'})['vms'])

    a = d.login('vma')
    a.send_raw(b'\xc1')
    expect_framing_close(a, 'bad_request')
    a.close()
    assert wait_until(lambda: connected() == ['obs']), connected()
    b = d.login('vmb')
    b.send_raw(request_bytes(5, 'ping')[:3])       # half a message: timeout
    assert closed_after(b, 5) is not None
    b.close()
    assert wait_until(lambda: connected() == ['obs']), connected()
    assert ids(obs.ok('vm.list', {'filter': 'authorized'})['vms']) == ['obs', 'vma', 'vmb']
    obs.close()
