#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""libvmm against a scripted fake server.

    test_libvmm.py PATH/TO/test-libvmm

Each scenario starts a small msgpack-rpc server here (a thread), runs
test-libvmm with the scenario name and the server's address, and checks both
what the C side reports (its exit status and output) and what the server
received. This only exercises libvmm's framing and I/O; vmmd itself is
tested by tests/integration."""

import array
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import msgpack

FAILED = []


def recv_requests(conn, unpacker, n):
    """Reads until n request objects arrived; returns them."""
    out = []
    while len(out) < n:
        for obj in unpacker:
            out.append(obj)
        if len(out) >= n:
            break
        data = conn.recv(65536)
        if not data:
            raise AssertionError(f'EOF after {len(out)} of {n} requests')
        unpacker.feed(data)
    return out


def check_request(req, msgid, method):
    assert isinstance(req, list) and len(req) == 4, req
    assert req[0] == 0 and req[1] == msgid and req[2] == method, req
    assert isinstance(req[3], list) and len(req[3]) in (0, 1), req


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def response(msgid, result, error=None):
    return pack([1, msgid, error, result])


def srv_basic(conn):
    u = msgpack.Unpacker(raw=False, unicode_errors='surrogateescape')
    [ping] = recv_requests(conn, u, 1)
    check_request(ping, 1, 'ping')
    assert ping[3] == [], ping
    for b in response(1, {'pong': True, 'version': 'fake', 'protocol': 1, 'time': 1}):
        conn.sendall(bytes([b]))
        time.sleep(0.001)

    reqs = recv_requests(conn, u, 200)
    out = [pack([2, 'event', [{'seq': 1, 'type': 'vm.updated'}]])]
    for i, r in enumerate(reqs):
        check_request(r, 2 + i, 'vm.get')
        assert r[3] == [{'n': i}], r
        if i == 100:
            out.append(response(r[1], None, {'code': 'not_found', 'message': 'no such vm'}))
        elif i == 101:
            out.append(response(r[1], None, {'code': 'weird_code', 'message': 'new'}))
        else:
            out.append(response(r[1], {'n': i, 'unknown_key': 'ignored'}))
    conn.sendall(b''.join(out))

    # the too-large request was refused locally: the next one is the echo
    [echo] = recv_requests(conn, u, 1)
    check_request(echo, 203, 'echo')
    params = echo[3][0]
    assert params['s'] == 'quote" back\\slash\nnl\ttab\x01 \u00e9 \u20ac', params
    conn.sendall(msgpack.packb([1, echo[1], None, params], use_bin_type=True,
                               unicode_errors='surrogateescape'))

    [huge] = recv_requests(conn, u, 1)
    check_request(huge, 204, 'huge')
    # [1, 204, nil, array32 of 2^30 elements] and nothing more
    conn.sendall(b'\x94\x01\xcc\xcc\xc0\xdd\x40\x00\x00\x00')
    time.sleep(0.2)


def srv_garbage(conn):
    u = msgpack.Unpacker(raw=False)
    recv_requests(conn, u, 1)
    conn.sendall(b'\xc1')
    time.sleep(0.2)


def srv_notarray(conn):
    u = msgpack.Unpacker(raw=False)
    recv_requests(conn, u, 1)
    conn.sendall(pack({'not': 'a response'}))
    time.sleep(0.2)


def srv_eof(conn):
    u = msgpack.Unpacker(raw=False)
    recv_requests(conn, u, 1)
    conn.sendall(response(1, {'pong': True})[:5])
    conn.shutdown(socket.SHUT_RDWR)


def srv_msgid0(conn):
    u = msgpack.Unpacker(raw=False)
    recv_requests(conn, u, 1)
    conn.sendall(response(0, None, {'code': 'too_large', 'message': 'message too large'}))
    conn.shutdown(socket.SHUT_RDWR)


def srv_timeout(conn):
    u = msgpack.Unpacker(raw=False)
    recv_requests(conn, u, 1)
    time.sleep(1.0)


def srv_pipeline(conn):
    # Answer each request as soon as it is read, with a blocking sendall:
    # if the client does not read while it writes, both sides block.
    u = msgpack.Unpacker(raw=False)
    seen = 0
    conn.settimeout(20)
    while seen < 3000:
        data = conn.recv(65536)
        if not data:
            raise AssertionError(f'EOF after {seen} requests')
        u.feed(data)
        for r in u:
            seen += 1
            check_request(r, seen, 'echo')
            conn.sendall(pack([1, r[1], None, r[3][0]]))


def srv_fd(conn):
    data = b''
    fds = []
    while True:
        msg, anc, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(4 * 4))
        if not msg:
            raise AssertionError('EOF before the backup request')
        data += msg
        for level, typ, payload in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                a = array.array('i')
                a.frombytes(payload[:len(payload) - len(payload) % a.itemsize])
                fds.extend(a)
        u = msgpack.Unpacker(raw=False)
        u.feed(data)
        reqs = list(u)
        if len(reqs) >= 2:
            break
    check_request(reqs[0], 1, 'status')
    check_request(reqs[1], 2, 'backup')
    assert len(fds) == 1, fds
    os.write(fds[0], b'backup-bytes')
    os.close(fds[0])
    conn.sendall(response(1, {}) + response(2, {'bytes': 12}))
    time.sleep(0.2)


def srv_ping(conn):
    u = msgpack.Unpacker(raw=False)
    [ping] = recv_requests(conn, u, 1)
    check_request(ping, 1, 'ping')
    conn.sendall(response(1, {'pong': True}))
    time.sleep(0.2)


def srv_part2(conn):
    token = 'A' * 43
    u = msgpack.Unpacker(raw=False)
    want = [
        ('whoami', []),
        ('whoami', [{'token': token}]),
        ('user.auth', [{'name': 'alice@example.org', 'password': 'secret-pw'}]),
        ('booking.get', [{'vm_id': 'vm1'}]),
        ('booking.get', [{'token': token}]),
        ('booking.get', []),
        ('events.watch', []),
        ('events.watch', [{'since': 41, 'types': ['booking.', 'group.']}]),
    ]
    answers = [
        {'kind': 'user', 'name': 'root', 'role': 'admin', 'owner': None, 'before': -1500,
         'after': 1763800000000, 'huge': 2**64 - 1, 'load': 0.25, 'yes': True},
        {'kind': 'vm', 'vm_id': 'vm1'},
        None,
        {'booking': {'user': 'alice', 'started_at': 1, 'expires_at': 2}},
        {'booking': None},
        {'booking': None},
        {'feed': 0, 'oldest': None},
        {'feed': 50, 'oldest': 1},
    ]
    for i, (method, params) in enumerate(want):
        [req] = recv_requests(conn, u, 1)
        check_request(req, i + 1, method)
        assert req[3] == params, (req, params)
        if answers[i] is None:
            conn.sendall(response(i + 1, None, {'code': 'unauthenticated',
                                                'message': 'unknown name or wrong password'}))
        else:
            out = response(i + 1, answers[i])
            if method == 'events.watch' and params:
                out += pack([2, 'event', [{'seq': 1, 'feed': 42, 'type': 'booking.created'}]])
            conn.sendall(out)
    [echo] = recv_requests(conn, u, 1)
    check_request(echo, len(want) + 1, 'echo')
    assert echo[3] == [{'owner': None, 'vm_ids': ['vm1', 'vm2'], 'disks': [10, 2**40],
                        'none': []}], echo
    conn.sendall(response(echo[1], {}))
    time.sleep(0.2)


def run_scenario(binary, name, server, family='tcp4'):
    """Starts a one-connection server and runs the C side against it."""
    tmpdir = None
    if family == 'unix':
        tmpdir = tempfile.mkdtemp(prefix='test-libvmm-')
        path = os.path.join(tmpdir, 'sock')
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(path)
        addr = path
    elif family == 'tcp6':
        ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        ls.bind(('::1', 0))
        addr = f'[::1]:{ls.getsockname()[1]}'
    else:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.bind(('127.0.0.1', 0))
        addr = f'127.0.0.1:{ls.getsockname()[1]}'
    if family != 'unix':
        # small buffers (inherited by the accepted socket): see srv_pipeline
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    ls.listen(1)
    ls.settimeout(20)
    errors = []

    def serve():
        try:
            conn, _ = ls.accept()
            with conn:
                conn.settimeout(20)
                server(conn)
        except Exception:  # reported below
            errors.append(traceback.format_exc())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    proc = subprocess.run([binary, name, addr], capture_output=True, timeout=60)
    t.join(30)
    ls.close()
    if tmpdir:
        os.unlink(path)
        os.rmdir(tmpdir)
    ok = proc.returncode == 0 and not errors and not t.is_alive()
    label = f'{name} ({family})'
    if not ok:
        FAILED.append(label)
        print(f'FAIL {label}: exit {proc.returncode}')
        sys.stdout.write(proc.stderr.decode(errors='replace'))
        for e in errors:
            sys.stdout.write(e)
        if t.is_alive():
            print('server thread still running')
    else:
        print(f'ok   {label}')
    return proc


def check_json(proc):
    """The basic scenario prints the echoed map twice: compact and pretty."""
    lines = proc.stdout.decode('utf-8').split('\n', 1)
    compact = json.loads(lines[0])
    pretty = json.loads(lines[1])
    expect = {
        's': 'quote" back\\slash\nnl\ttab\x01 \u00e9 \u20ac',
        'bad': 'a\ufffdb\ufffd',
        'big': 2**64 - 1,
        't': True,
        'list': [-42, None, 1.5, {}],
    }
    ok = compact == expect and pretty == expect and '\n  "s"' in lines[1]
    if not ok:
        FAILED.append('json output')
        print('FAIL json output:', repr(proc.stdout))
    else:
        print('ok   json output')


def main():
    if len(sys.argv) != 2:
        print('usage: test_libvmm.py TEST-LIBVMM-BINARY')
        return 2
    binary = sys.argv[1]
    proc = run_scenario(binary, 'basic', srv_basic)
    if proc.returncode == 0:
        check_json(proc)
    run_scenario(binary, 'garbage', srv_garbage)
    run_scenario(binary, 'notarray', srv_notarray)
    run_scenario(binary, 'eof', srv_eof)
    run_scenario(binary, 'msgid0', srv_msgid0)
    run_scenario(binary, 'timeout', srv_timeout)
    run_scenario(binary, 'pipeline', srv_pipeline)
    run_scenario(binary, 'fd', srv_fd, family='unix')
    run_scenario(binary, 'ping', srv_ping, family='tcp6')
    run_scenario(binary, 'part2', srv_part2)

    for name in ('addresses', 'async'):    # no server: the C side needs none
        p = subprocess.run([binary, name, '-'], capture_output=True, timeout=60)
        if p.returncode != 0:
            FAILED.append(name)
            print(f'FAIL {name}:', p.stderr.decode(errors='replace'))
        else:
            print(f'ok   {name}')

    if FAILED:
        print(f'{len(FAILED)} failed: {", ".join(FAILED)}')
        return 1
    print('all passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
