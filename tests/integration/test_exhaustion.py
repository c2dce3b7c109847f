# SPDX-License-Identifier: MIT
"""Resource exhaustion against the real daemon (PROTOCOL.md "Limits",
DESIGN.md property 3): 10,000 idle TCP connections while an authenticated
client keeps being served, the per-address connection limit at its default,
a flood of failed logins, clients that never read their replies, and a
half-sent message dropped after the idle timeout.

The figures printed here (memory per idle connection, latency under 10k idle
connections, RSS growth under non-readers) are reported, not enforced: the
asserts are generous bounds that catch a leak or a stall, while the targets
(e.g. <= 4 KiB per idle connection) belong to the benchmarks, where the
machine is known. Everything is bounded in count and time, on loopback only,
and every socket is closed."""

import socket
import statistics
import threading
import time

import pytest

from hostile_util import (MIB, Admin, nofile_limit, percentile, raise_nofile, read_sized,
                          rss_kib, sanitized)
from vmmtest import (PASSWORD, Client, assert_error_frame, expect_framing_close,
                     request_bytes, wait_until)

N_IDLE = 10000
# 11 source addresses, about 910 connections each: under the default
# --max-connections-per-peer 1024, so the daemon runs with its defaults.
SOURCES = [f'127.0.0.{i}' for i in range(2, 13)]
PER_PEER = 1024
LIMIT_SOURCE = '127.0.0.13'
FD_NEED = N_IDLE + PER_PEER + 512


def disks(prefix, n=64):
    return [{'id': f'{prefix}-{j:02d}'.ljust(64, 'd'), 'size': 2 ** 40} for j in range(n)]


class Prober(threading.Thread):
    """An authenticated client alternating ping and vm.get, recording each
    latency, until stopped."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.c = client
        self.lat = {'ping': [], 'vm.get': []}
        self.errors = []
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            for m in ('ping', 'vm.get'):
                t = time.monotonic()
                try:
                    err, res = self.c.call(m, timeout=5)
                except Exception as e:   # noqa: recorded, the test fails on it
                    self.errors.append(f'{m}: {e!r}')
                    return
                if err is not None:
                    self.errors.append(f'{m}: {err}')
                    return
                self.lat[m].append(time.monotonic() - t)
            time.sleep(0.005)

    def stop(self):
        self.stop_ev.set()
        self.join(10)

    def summary(self):
        out = []
        for m, xs in self.lat.items():
            if xs:
                out.append(f'{m} n={len(xs)} p50={statistics.median(xs) * 1000:.2f} ms '
                           f'p99={percentile(xs, 0.99) * 1000:.2f} ms '
                           f'max={max(xs) * 1000:.2f} ms')
        return '; '.join(out)


def open_raw(port, source):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(('127.0.0.1', port))
    except BaseException:
        s.close()
        raise
    return s


def status(a):
    return a.ok('status', timeout=10)


def test_10k_idle_connections(make_daemon):
    soft = raise_nofile(FD_NEED + 1024)
    if soft < FD_NEED:
        pytest.skip(f'RLIMIT_NOFILE cannot be raised to {FD_NEED} (hard limit {soft})')
    # vmmd inherits the raised limit; idle anonymous connections would be
    # closed after 30 s, longer than this test may take on a slow machine.
    d = make_daemon(args=['--idle-timeout', '600'])
    assert nofile_limit(d.pid) >= FD_NEED, 'vmmd did not inherit the raised RLIMIT_NOFILE'
    c = d.login('vm1', disks=disks('vm1'))
    a = Admin(d.admin_socket)
    idle = []
    prober = Prober(c)
    try:
        # warm up the paths an idle connection uses (accept, conn state, close)
        for s in [open_raw(d.port, SOURCES[0]) for _ in range(200)]:
            s.close()
        assert wait_until(lambda: status(a)['connections'] <= 3, 10)
        time.sleep(0.2)
        base_conns = status(a)['connections']
        rss0 = rss_kib(d.pid)
        prober.start()
        t0 = time.monotonic()
        for i in range(N_IDLE):
            idle.append(open_raw(d.port, SOURCES[i % len(SOURCES)]))
            assert time.monotonic() - t0 < 120, f'only {i} connections in 120 s'
        t_open = time.monotonic() - t0
        assert wait_until(lambda: status(a)['connections'] >= base_conns + N_IDLE, 30), \
            f'vmmd holds {status(a)["connections"]} connections, expected {N_IDLE} more'
        during_open = prober.summary()
        time.sleep(1.0)   # the prober keeps going with 10k idle connections held
        rss1 = rss_kib(d.pid)
        per_conn = (rss1 - rss0) * 1024 / N_IDLE
        prober.stop()
        assert not prober.errors, prober.errors
        print(f'\n{N_IDLE} idle connections opened in {t_open:.1f} s; '
              f'vmmd RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB: '
              f'{per_conn:.0f} bytes per idle connection (target <= 4096)')
        print(f'latency while opening them: {during_open}')
        print(f'latency overall: {prober.summary()}')
        # generous bounds only (see the module docstring)
        assert per_conn <= 16 * 1024 or sanitized(d.pid), \
            f'{per_conn:.0f} bytes per idle connection'
        assert max(prober.lat['ping']) < 2.0 and max(prober.lat['vm.get']) < 2.0, \
            prober.summary()
        assert len(prober.lat['ping']) >= 10

        # the idle connections are alive: a sample of them still answers
        for s in idle[::500]:
            s.sendall(request_bytes(1, 'ping'))
        for s in idle[::500]:
            data = s.recv(4096)
            assert data and data[:2] == b'\x94\x01', data

        # the per-address limit at its default: 1024 from one address, the
        # next one refused with rate_limited (msgid 0), then closed
        extra = []
        t = time.monotonic()
        for _ in range(PER_PEER):
            extra.append(open_raw(d.port, LIMIT_SOURCE))
        idle += extra
        assert wait_until(lambda: status(a)['connections'] >= base_conns + N_IDLE + PER_PEER,
                          30)
        over = Client(d.port, source=LIMIT_SOURCE)
        try:
            expect_framing_close(over, 'rate_limited')
        finally:
            over.close()
        # the ones already in are served, and so is the authenticated client
        extra[0].sendall(request_bytes(5, 'ping'))
        assert extra[0].recv(4096)[:2] == b'\x94\x01'
        assert c.ok('vm.get')['vm_id'] == 'vm1'
        print(f'per-address limit: {PER_PEER} accepted from {LIMIT_SOURCE}, the next refused '
              f'({time.monotonic() - t:.1f} s)')
    finally:
        prober.stop()
        for s in idle:
            s.close()
        a.close()
        c.close()
    # everything closed is released (how long the loop takes over it is
    # test_mass_disconnect_keeps_serving's business)
    with Admin(d.admin_socket, timeout=120) as a2:
        assert wait_until(lambda: a2.ok('status', timeout=120)['connections'] <= 3, 120)


def test_mass_disconnect_keeps_serving(make_daemon):
    """10,000 idle connections closed at once by their peers (a network blip,
    a NAT reset): the daemon must keep answering the authenticated client
    while it reaps them (DESIGN.md property 2). The stall is printed; the
    bound asserted is generous (2 s)."""
    soft = raise_nofile(FD_NEED + 1024)
    if soft < FD_NEED:
        pytest.skip(f'RLIMIT_NOFILE cannot be raised to {FD_NEED}')
    d = make_daemon(args=['--idle-timeout', '600'])
    c = d.login('vm1')
    idle = []
    try:
        with Admin(d.admin_socket, timeout=120) as a:
            base = a.ok('status')['connections']
            for i in range(N_IDLE):
                idle.append(open_raw(d.port, SOURCES[i % len(SOURCES)]))
            assert wait_until(lambda: a.ok('status')['connections'] >= base + N_IDLE, 30)
            t0 = time.monotonic()
            for s in idle:
                s.close()
            idle = []
            worst = 0.0
            while True:
                t = time.monotonic()
                assert c.ok('ping', timeout=120)['pong'] is True
                worst = max(worst, time.monotonic() - t)
                n = a.ok('status', timeout=120)['connections']
                if n <= base:
                    break
                assert time.monotonic() - t0 < 120
                time.sleep(0.01)
            reaped = time.monotonic() - t0
        print(f'\n{N_IDLE} connections closed at once: reaped in {reaped:.2f} s; '
              f'longest ping meanwhile {worst * 1000:.0f} ms')
        assert worst < 2.0, (f'the event loop stalled {worst:.1f} s while {N_IDLE} closed '
                             f'connections were reaped')
    finally:
        for s in idle:
            s.close()
        c.close()


def test_failed_login_flood(make_daemon):
    """30 wrong passwords from 127.0.0.1, pipelined on one connection, and 5
    connections more pipelining 10 each at once: at most 10 failures are
    answered unauthenticated in the minute, the rest rate_limited (a correct
    password too); ping is not limited there; a correct login from 127.0.0.2
    meanwhile succeeds."""
    d = make_daemon()
    d.register('vm1')
    wrong = [('auth', {'vm_id': 'vm1', 'password': f'wrong-pw-{i}'}) for i in range(30)]
    with Client(d.port, source='127.0.0.1') as bad:
        codes = [e[0] for e, _ in bad.pipeline(wrong, timeout=60)]
        assert set(codes) <= {'unauthenticated', 'rate_limited'}, codes
        assert codes[:10] == ['unauthenticated'] * 10, codes
        assert codes[10:] == ['rate_limited'] * 20, codes
        bad.err('auth', {'vm_id': 'vm1', 'password': PASSWORD}, 'rate_limited')
        bad.err('resume', {'token': 'A' * 43}, 'rate_limited')
        assert bad.ok('ping')['pong'] is True
    t = time.monotonic()
    with Client(d.port, source='127.0.0.2') as good:
        assert good.auth('vm1')['vm_id'] == 'vm1'
        assert good.ok('vm.get')['vm_id'] == 'vm1'
    print(f'\ncorrect login from 127.0.0.2 during the flood: '
          f'{(time.monotonic() - t) * 1000:.0f} ms')



def test_concurrent_failed_logins_limited(make_daemon):
    """20 connections from one address each pipeline 3 wrong passwords at
    once: the limit is per address and per minute, so at most 10 of the 60
    are answered unauthenticated (tried against the hash), the rest
    rate_limited. A limit checked when a request starts but counted when its
    hash finishes lets every concurrent attempt through."""
    d = make_daemon()
    d.register('vm1')
    src = '127.0.0.3'
    conns = [Client(d.port, source=src) for _ in range(20)]
    codes = []
    try:
        for cl in conns:
            cl.send_raw(b''.join(request_bytes(100 + i, 'auth', {
                'vm_id': 'vm1', 'password': f'wrong-pw-{i}'}) for i in range(3)))
        for cl in conns:
            for i in range(3):
                msg = cl.read_response(timeout=60)
                assert msg[1] == 100 + i
                codes.append(cl.split(msg)[0][0])
    finally:
        for cl in conns:
            cl.close()
    n_unauth = codes.count('unauthenticated')
    print(f'\nconcurrent flood (20 connections x 3): {n_unauth} unauthenticated, '
          f'{codes.count("rate_limited")} rate_limited')
    assert set(codes) <= {'unauthenticated', 'rate_limited'}, codes
    assert n_unauth <= 10, f'{n_unauth} wrong passwords tried in the minute (limit 10)'


def test_non_readers_rss_bounded(make_daemon):
    """Four clients pipeline vm.list requests (about 60 KB answers) and never
    read: vmmd stops reading them, keeps serving the others, and its RSS grows
    by less than 64 MiB (printed). Bounded: 20 s, 128 MiB sent per client."""
    d = make_daemon()
    with d.client() as r:
        res = r.pipeline([('register', {'vm_id': f'vm{i}', 'password': PASSWORD, 'ram': 1,
                                        'cpu': 1, 'disks': disks(f'vm{i}')})
                          for i in range(10)], timeout=60)
        assert all(e is None for e, _ in res), res
    hogs = [d.login(f'vm{i}', register=False) for i in range(4)]
    other = d.login('vm9', register=False)
    with d.client() as probe:
        probe.sock.settimeout(10)
        probe.send('vm.list', {'token': other.token, 'filter': 'all'})
        _, reply_size = read_sized(probe)
    a = Admin(d.admin_socket)
    rss0 = rss_kib(d.pid)
    batch = b''.join(request_bytes(1000 + i, 'vm.list', {'filter': 'all'}) for i in range(200))
    sent = [0] * len(hogs)
    stalled = [None] * len(hogs)
    lat = []
    peak = rss0
    t0 = time.monotonic()
    try:
        for h in hogs:
            h.sock.setblocking(False)
        while True:
            now = time.monotonic()
            for i, h in enumerate(hogs):
                if stalled[i] is not None and now - stalled[i] > 1.5:
                    continue
                # as fast as the socket takes it: a loop of one batch per
                # turn sent too slowly to fill the buffers of a loaded machine
                # in time (CI, ASan: 4 MB each took more than 20 s)
                try:
                    while sent[i] < 128 * MIB:
                        sent[i] += h.sock.send(batch)
                        stalled[i] = None
                except BlockingIOError:
                    stalled[i] = stalled[i] or now
                assert sent[i] < 128 * MIB, f'vmmd read {sent[i]} bytes from a non-reader'
            t = time.monotonic()
            assert other.ok('vm.get', timeout=5)['vm_id'] == 'vm9'
            assert a.ok('status', timeout=5)['protocol'] == 1
            lat.append(time.monotonic() - t)
            peak = max(peak, rss_kib(d.pid))
            if all(s is not None and now - s > 1.5 for s in stalled):
                break
            assert now - t0 < 20, f'vmmd kept reading the non-readers for 20 s ({sent})'
            time.sleep(0.02)
        growth = (peak - rss0) / 1024
        print(f'\nnon-readers: 4 clients, vm.list answers of {reply_size} bytes; '
              f'{sum(sent) / 1e6:.1f} MB sent before vmmd stopped reading them; '
              f'RSS {rss0 / 1024:.1f} -> peak {peak / 1024:.1f} MiB (+{growth:.1f} MiB); '
              f'others served: p50 {statistics.median(lat) * 1000:.1f} ms, '
              f'max {max(lat) * 1000:.1f} ms')
        assert growth < 64 or sanitized(d.pid), f'RSS grew by {growth:.1f} MiB'
        assert max(lat) < 2.0
        # a hog that starts reading gets its answers, in order
        h = hogs[0]
        h.sock.setblocking(True)
        for i in range(3):
            msg = h.read_response(timeout=10)
            assert msg[1] == 1000 + i and msg[2] is None, msg[:3]
    finally:
        for h in hogs:
            h.close()
        other.close()
        a.close()
    with d.client() as c:
        assert c.ok('ping')['pong'] is True


def test_half_sent_message_dropped(make_daemon):
    """--idle-timeout 2: a half-received message is dropped with its
    connection (anonymous or authenticated) after about 2 s; an authenticated
    connection idle between messages stays."""
    d = make_daemon(args=['--idle-timeout', '2'])
    auth_half = d.login('vm1')
    auth_idle = d.login('vm2')
    anon_half = d.client()
    admin_half = Admin(d.admin_socket)
    try:
        data = request_bytes(9, 'vm.get')
        auth_half.send_raw(data[:len(data) // 2])
        anon_half.send_raw(request_bytes(3, 'ping')[:5])
        admin_half.send_raw(request_bytes(4, 'status')[:3])
        t0 = time.monotonic()
        closed_at = {}
        conns = {'authenticated': auth_half, 'anonymous': anon_half}
        for name, cl in conns.items():
            closed, msgs = cl.wait_closed(8 - (time.monotonic() - t0))
            assert closed, f'the {name} half message was not dropped in 8 s'
            for m in msgs:
                assert_error_frame(m, m[2]['code'])     # at most a msgid-0 error
            closed_at[name] = time.monotonic() - t0
        for name, t in closed_at.items():
            assert t >= 1.5, f'{name}: dropped after {t:.2f} s, before the 2 s timeout'
            assert t < 6, f'{name}: dropped only after {t:.2f} s (idle timeout 2 s)'
        print('\nhalf-sent message dropped after: ' +
              ', '.join(f'{k} {v:.2f} s' for k, v in closed_at.items()))
        assert auth_idle.ok('vm.get')['vm_id'] == 'vm2'
        # the admin socket: the half message too
        closed, msgs = admin_half.wait_closed(max(0.5, 8 - (time.monotonic() - t0)))
        assert closed, 'the admin half message was not dropped'
        for m in msgs:
            assert_error_frame(m, m[2]['code'])
    finally:
        for cl in (auth_half, auth_idle, anon_half, admin_half):
            cl.close()
