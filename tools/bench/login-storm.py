#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""login-storm: measure how a storm of logins (argon2id on vmmd's hash
workers) affects ping latency on the event loop.

Targets a running vmmd (--server HOST:PORT, loopback only) or starts one on
a temporary state directory (--vmmd PATH). C threads each register their own
VM, then call auth in a loop for N seconds while one more connection pings
every 10 ms. Prints auth/s and ping p50/p99/max in ms.

    tools/bench/login-storm.py --vmmd build/src/daemon/vmmd --seconds 5 --threads 4
"""

import argparse
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import msgpack

PASSWORD = 'login-storm-pw'


class Conn:
    def __init__(self, host, port, timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.msgid = 0

    def call(self, method, params=None):
        self.msgid += 1
        self.sock.sendall(msgpack.packb([0, self.msgid, method, [params] if params else []],
                                        use_bin_type=True))
        while True:
            for msg in self.unpacker:
                if msg[0] == 1 and msg[1] == self.msgid:
                    return msg[2], msg[3]
                raise RuntimeError(f'unexpected message {msg!r}')
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError('vmmd closed the connection')
            self.unpacker.feed(data)

    def close(self):
        self.sock.close()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_vmmd(path, tmp):
    port = free_port()
    log = open(os.path.join(tmp, 'vmmd.log'), 'wb')
    proc = subprocess.Popen([path, '--state-dir', os.path.join(tmp, 'state'),
                             '--admin-socket', os.path.join(tmp, 'admin.sock'),
                             '--listen', f'127.0.0.1:{port}', '--log-level', 'warning'],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            sys.exit(f'vmmd exited with {proc.returncode}; see {log.name}')
        try:
            c = Conn('127.0.0.1', port, 2)
            c.call('ping')
            c.close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit('vmmd did not answer ping within 10 s')
            time.sleep(0.05)


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def storm(host, port, seconds, threads):
    tag = f'storm{os.getpid()}-{int(time.time())}'
    vms = [f'{tag}-{i}' for i in range(threads)]
    setup = Conn(host, port)
    for vm in vms:
        err, _ = setup.call('register', {'vm_id': vm, 'password': PASSWORD, 'ram': 1, 'cpu': 1})
        if err:
            sys.exit(f'register {vm}: {err}')
    setup.close()

    stop = threading.Event()
    counts = [0] * threads
    failures = []

    def worker(i):
        try:
            c = Conn(host, port)
            while not stop.is_set():
                err, _ = c.call('auth', {'vm_id': vms[i], 'password': PASSWORD})
                if err:
                    failures.append(err)
                    return
                counts[i] += 1
            c.call('logout')
            c.close()
        except Exception as e:     # report, do not hang
            failures.append(repr(e))

    pinger = Conn(host, port, timeout=10)
    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    lat = []
    while time.monotonic() - t0 < seconds:
        a = time.monotonic()
        err, res = pinger.call('ping')
        if err:
            sys.exit(f'ping: {err}')
        lat.append((time.monotonic() - a) * 1000)
        time.sleep(0.01)
    stop.set()
    for t in ts:
        t.join(30)
    elapsed = time.monotonic() - t0
    pinger.close()
    lat.sort()
    total = sum(counts)
    print(f'threads {threads}, {elapsed:.1f} s: {total} auth, {total / elapsed:.1f} auth/s')
    print(f'ping: n {len(lat)}, p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, '
          f'max {lat[-1]:.2f} ms')
    if failures:
        print(f'failures: {failures[:5]}', file=sys.stderr)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument('--server', metavar='HOST:PORT', help='a running vmmd (loopback only)')
    g.add_argument('--vmmd', metavar='PATH', help='start this vmmd on a temporary directory')
    ap.add_argument('--seconds', type=float, default=5.0, help='storm length (max 120)')
    ap.add_argument('--threads', type=int, default=4, help='auth threads (1-64)')
    a = ap.parse_args()
    if not 0 < a.seconds <= 120:
        ap.error('--seconds must be in (0, 120]')
    if not 1 <= a.threads <= 64:
        ap.error('--threads must be 1-64')
    if a.server:
        host, _, port = a.server.rpartition(':')
        host = host.strip('[]')
        try:
            if not ipaddress.ip_address(host).is_loopback:
                ap.error('--server must be a loopback address')
        except ValueError:
            ap.error('--server must be an IP address and port')
        return storm(host, int(port), a.seconds, a.threads)
    tmp = tempfile.mkdtemp(prefix='vmmstorm')
    proc = None
    try:
        proc, port = start_vmmd(a.vmmd, tmp)
        return storm('127.0.0.1', port, a.seconds, a.threads)
    finally:
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
