# SPDX-License-Identifier: MIT
"""Load: many connections pipelining at once get every response, in order;
a storm of logins (argon2id on the worker pool) does not stall pings on the
event loop (DESIGN.md property 2)."""

import selectors
import socket
import threading
import time

import msgpack

from vmmtest import PASSWORD, Client, request_bytes

NCONN = 200
NREQ = 100


def test_many_pipelined_connections(make_daemon):
    d = make_daemon()
    vms = [f'vm{i}' for i in range(4)]
    tokens = []
    with d.client(timeout=30) as r:
        r.pipeline([('register', {'vm_id': v, 'password': PASSWORD, 'ram': 1, 'cpu': 1,
                                  'disks': [{'id': f'{v}-d', 'size': 1}]}) for v in vms])
        for err, res in r.pipeline([('auth', {'vm_id': v, 'password': PASSWORD}) for v in vms]):
            assert err is None
            tokens.append(res['token'])

    conns = []
    t0 = time.monotonic()
    for i in range(NCONN):
        s = socket.create_connection(('127.0.0.1', d.port), timeout=10)
        s.setblocking(False)
        vm = i % 4
        expect = []
        data = b''
        kind = i % 4
        for j in range(NREQ):
            msgid = (i << 8) + j + 1
            if kind == 0 and j == 0:
                data += request_bytes(msgid, 'resume', {'token': tokens[vm]})
                expect.append((msgid, 'resume', vm))
            elif kind == 0 and j % 2:
                data += request_bytes(msgid, 'vm.get')
                expect.append((msgid, 'get', vm))
            elif kind == 1 or (kind == 3 and j % 3 == 1):
                data += request_bytes(msgid, 'vm.get', {'token': tokens[vm]})
                expect.append((msgid, 'get', vm))
            elif kind == 3 and j % 3 == 2:
                data += request_bytes(msgid, 'disk.list', {'token': tokens[vm], 'limit': 2})
                expect.append((msgid, 'disks', vm))
            else:
                data += request_bytes(msgid, 'ping')
                expect.append((msgid, 'ping', vm))
        conns.append({'sock': s, 'out': data, 'expect': expect, 'got': 0,
                      'unpacker': msgpack.Unpacker(raw=False)})

    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c['sock'], selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    pending = len(conns)
    deadline = time.monotonic() + 120
    while pending:
        assert time.monotonic() < deadline, \
            f'{pending} connections still waiting after 120 s'
        for key, ev in sel.select(timeout=1):
            c = key.data
            s = c['sock']
            if ev & selectors.EVENT_WRITE and c['out']:
                n = s.send(c['out'])
                c['out'] = c['out'][n:]
                if not c['out']:
                    sel.modify(s, selectors.EVENT_READ, c)
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                assert data, f'connection closed after {c["got"]} responses'
                c['unpacker'].feed(data)
                for msg in c['unpacker']:
                    msgid, what, vm = c['expect'][c['got']]
                    assert msg[0] == 1 and msg[1] == msgid, \
                        f'expected response {msgid}, got {msg!r}'
                    assert msg[2] is None, msg
                    res = msg[3]
                    if what == 'ping':
                        assert res['pong'] is True
                    elif what == 'resume':
                        assert res['vm_id'] == vms[vm]
                    elif what == 'get':
                        assert res['vm_id'] == vms[vm]
                    else:
                        assert [x['id'] for x in res['disks']] == ['vm0-d', 'vm1-d']
                    c['got'] += 1
                    if c['got'] == NREQ:
                        sel.unregister(s)
                        pending -= 1
    elapsed = time.monotonic() - t0
    print(f'{NCONN} connections x {NREQ} requests: {elapsed:.2f} s, '
          f'{NCONN * NREQ / elapsed:.0f} req/s')
    for c in conns:
        assert c['got'] == NREQ
        c['sock'].close()
    with d.client() as c:
        assert c.ok('ping')['pong'] is True


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def test_login_storm_does_not_stall_pings(make_daemon):
    d = make_daemon()
    nthreads = 4
    with d.client(timeout=30) as r:
        r.pipeline([('register', {'vm_id': f'storm{i}', 'password': PASSWORD, 'ram': 1,
                                  'cpu': 1}) for i in range(nthreads)])
    stop = threading.Event()
    counts = [0] * nthreads
    errors = []

    def storm(i):
        try:
            with Client(d.port, timeout=30) as c:
                while not stop.is_set():
                    c.auth(f'storm{i}')
                    counts[i] += 1
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=storm, args=(i,)) for i in range(nthreads)]
    lat = []
    with d.client(timeout=5) as p:
        for t in threads:
            t.start()
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            assert p.ok('ping', timeout=5)['pong'] is True
            lat.append(time.monotonic() - t0)
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    total = sum(counts)
    assert total >= nthreads, counts
    ms = [x * 1000 for x in lat]
    print(f'login storm: {total / 3:.1f} auth/s with {nthreads} threads; '
          f'ping p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, '
          f'max {max(ms):.2f} ms over {len(ms)} pings')
    assert max(ms) < 1000, f'a ping took {max(ms):.0f} ms during the login storm'
