# SPDX-License-Identifier: MIT
"""Durability (PROTOCOL.md "Lifecycle and durability"): data and sessions
survive a clean restart and a kill -9 under load; nothing acknowledged is
lost; SIGTERM answers what was already received and exits 0."""

import signal
import socket
import threading
import time

import msgpack

from vmmtest import PASSWORD, Client, Closed, ids, request_bytes


def test_restart_keeps_data_and_sessions(make_daemon):
    d = make_daemon()
    a = d.login('vma', ram=10, cpu=2, disks=[{'id': 'a1', 'size': 5}, {'size': 6}])
    b = d.login('vmb')
    a.ok('vm.update', {'ram': 11})
    rec_a = a.ok('vm.get')
    token_a, token_b = a.token, b.token
    assert b.ok('logout') == {}
    disks = a.ok('disk.list')
    a.close()
    b.close()
    d.restart()
    with d.client() as c:
        # connected is in memory only: empty after a restart
        assert c.ok('vm.list', {'filter': 'connected', 'token': token_a})['vms'] == []
        # authorized is on disk
        assert ids(c.ok('vm.list', {'filter': 'authorized', 'token': token_a})['vms']) == ['vma']
        assert ids(c.ok('vm.list', {'filter': 'all', 'token': token_a})['vms']) == ['vma', 'vmb']
        assert c.ok('disk.list', {'token': token_a}) == disks
        # the logged-out session stays revoked
        c.err('resume', {'token': token_b}, 'unauthenticated')
        res = c.ok('resume', {'token': token_a})
        assert res['vm_id'] == 'vma'
        rec = c.ok('vm.get')
        for k in ('vm_id', 'ram', 'cpu', 'disks', 'registered_at', 'updated_at'):
            assert rec[k] == rec_a[k], k
        assert rec['connected'] is True and rec['authorized'] is True
        # passwords survive too
        c.auth('vmb')
        c.err('register', {'vm_id': 'vma', 'password': PASSWORD, 'ram': 1, 'cpu': 1}, 'exists')


def test_restart_twice_empty(make_daemon):
    d = make_daemon()
    d.restart()
    d.restart()
    with d.client() as c:
        c.register('vm1')
    d.restart()
    with d.client() as c:
        c.auth('vm1')


def disks_for(vm, n):
    """The disk set written with ram = n, derived from n so a mix of two
    writes is visible."""
    return [{'id': f'{vm}-{n % 3}-{k}', 'size': n + k} for k in range(1 + n % 4)]


def test_kill_9_under_load(make_daemon):
    d = make_daemon()
    nvm = 8
    vms = [f'vm{i}' for i in range(nvm)]
    tokens = {}
    with d.client(timeout=60) as r:
        r.pipeline([('register', {'vm_id': v, 'password': PASSWORD, 'ram': 1, 'cpu': 1})
                    for v in vms], timeout=60)
        for res in r.pipeline([('auth', {'vm_id': v, 'password': PASSWORD}) for v in vms],
                              timeout=60):
            assert res[0] is None, res
            tokens[res[1]['vm_id']] = res[1]['token']
    acked = {v: 1 for v in vms}
    inflight = {v: None for v in vms}
    errors = []
    stop = threading.Event()

    def worker(vm):
        try:
            c = Client(d.port, timeout=30)
            c.ok('resume', {'token': tokens[vm]})
            n = 1
            while not stop.is_set():
                n += 1
                inflight[vm] = n
                try:
                    res = c.ok('vm.update', {'ram': n, 'disks': disks_for(vm, n)})
                except (Closed, OSError):
                    return
                assert res['ram'] == n
                acked[vm] = n
        except Exception as e:   # reported by the main thread
            errors.append(f'{vm}: {e!r}')

    threads = [threading.Thread(target=worker, args=(v,)) for v in vms]
    for t in threads:
        t.start()
    time.sleep(1.5)
    d.kill()
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert all(n > 2 for n in acked.values()), f'too few updates: {acked}'
    print('acknowledged before kill -9:', acked)
    d.start()
    with d.client() as c:
        for vm in vms:
            rec = c.ok('vm.get', {'token': tokens[vm]})
            assert rec['ram'] >= acked[vm], (vm, rec['ram'], acked[vm])
            assert rec['ram'] in (acked[vm], inflight[vm]), (vm, rec['ram'], acked[vm],
                                                            inflight[vm])
            assert rec['disks'] == disks_for(vm, rec['ram']), (vm, rec)
        disks = c.ok('disk.list', {'limit': 10000, 'token': tokens[vms[0]]})['disks']
        expect = sorted((dk['id'] for vm in vms
                         for dk in c.ok('vm.get', {'token': tokens[vm]})['disks']),
                        key=lambda s: s.encode())
        assert [dk['id'] for dk in disks] == expect


def test_pipelined_shutdown_then_eof(make_daemon):
    """status, shutdown, status sent at once and the write side closed: the
    stop answers what was received and the connection is not used after the
    close (fuzz-admin-path found a use after free here)."""
    d = make_daemon()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(d.admin_socket)
    s.sendall(request_bytes(1, 'status') + request_bytes(16, 'shutdown') +
              request_bytes(2, 'status'))
    s.shutdown(socket.SHUT_WR)
    unp = msgpack.Unpacker(raw=False)
    got = []
    while True:
        data = s.recv(65536)
        if not data:
            break
        unp.feed(data)
        got.extend(unp)
    s.close()
    assert [m[1] for m in got] == [1, 16, 2], got
    assert all(m[2] is None for m in got), got
    d.proc.wait(timeout=10)
    assert d.stop() == 0      # exit status 0 and a clean log (sanitizers)


def test_sigterm_answers_received_requests(make_daemon):
    d = make_daemon()
    c = d.client(timeout=15)
    data = b''.join(request_bytes(i + 1, 'register', {'vm_id': f'late{i}', 'password': PASSWORD,
                                                      'ram': 1, 'cpu': 1})
                    for i in range(4))
    c.send_raw(data)
    time.sleep(0.05)     # received, still hashing
    d.proc.send_signal(signal.SIGTERM)
    for i in range(4):
        msg = c.read_response()
        assert msg[1] == i + 1, msg
        assert msg[2] is None, f'a request received before SIGTERM was not served: {msg!r}'
    # later requests: shutting_down, or the connection is already closed
    try:
        c.send_raw(request_bytes(9, 'ping'))
        msg = c.read_response(timeout=10)
        assert msg[1] == 9 and msg[2]['code'] == 'shutting_down', msg
    except (Closed, ConnectionResetError, BrokenPipeError):
        pass
    c.close()
    rc = d.stop()
    assert rc == 0
    assert d.stop_seconds < 10
    d.start()
    with d.client() as o:
        for i in range(4):
            o.auth(f'late{i}')


def test_sigterm_idle_connections(make_daemon):
    d = make_daemon()
    conns = [d.client() for _ in range(20)]
    attached = d.login('vm1')
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    rc = d.proc.wait(10)
    assert rc == 0
    assert time.monotonic() - t0 < 10
    # every connection was closed (possibly after a shutting_down notice)
    for c in conns + [attached]:
        closed, msgs = c.wait_closed(2)
        assert closed
        for m in msgs:
            assert m[1] == 0 and m[2]['code'] == 'shutting_down', m
        c.close()
    d.proc = None
    d.logf.close()
    d.check_log()


def test_sigterm_later_requests_shutting_down(make_daemon):
    """A long pipeline of registers is in progress at SIGTERM; a ping sent
    after the signal gets shutting_down (or the connection is closed). What
    was answered with success exists after a restart; what got
    shutting_down does not."""
    d = make_daemon()
    c = d.client(timeout=15)
    n = 20
    c.send_raw(b''.join(request_bytes(i + 1, 'register', {'vm_id': f'p{i}', 'password': PASSWORD,
                                                          'ram': 1, 'cpu': 1})
                        for i in range(n)))
    first = c.read_response()
    assert first[1] == 1 and first[2] is None, first
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    c.send_raw_tolerant(request_bytes(n + 1, 'ping'))
    results = {1: None}
    codes = []
    try:
        while True:
            msg = c.read_response()
            if msg[1] == 0:
                assert msg[2]['code'] == 'shutting_down', msg
                continue
            assert msg[1] == len(results) + 1, f'out of order: {msg!r}'
            results[msg[1]] = msg[2]['code'] if msg[2] else None
            codes.append(results[msg[1]])
            if msg[1] == n + 1:
                break
    except (Closed, ConnectionResetError):
        pass
    c.close()
    print('after SIGTERM:', codes)
    for code in codes:
        assert code in (None, 'shutting_down'), codes
    # no success after the first shutting_down
    if 'shutting_down' in codes:
        assert None not in codes[codes.index('shutting_down'):], codes
    if n + 1 in results:
        assert results[n + 1] == 'shutting_down', results
    d.stop()
    assert d.stop_seconds < 10
    d.start()
    with d.client() as o:
        for i in range(n):
            err, _ = o.call('register', {'vm_id': f'p{i}', 'password': PASSWORD, 'ram': 1,
                                         'cpu': 1})
            if results.get(i + 1, 'missing') is None:
                assert err and err[0] == 'exists', (i, err)
            else:
                assert err is None, (i, results.get(i + 1), err)
