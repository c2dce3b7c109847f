# SPDX-License-Identifier: MIT
"""Helpers for the tests of `vmclient describe` and `vmclient agent`: a fake
root tree (/proc, /sys, /etc and the ip-addresses file the agent reads under
VMCLIENT_ROOT) and the agent as a child process with its log."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

VMCLIENT_BIN = os.environ.get('VMCLIENT_BIN')
GIB_SECTORS = 1 << 21

DEBIAN_OS = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n' \
            'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'


def vmclient_bin():
    assert VMCLIENT_BIN, 'VMCLIENT_BIN is not set (meson sets it)'
    assert os.access(VMCLIENT_BIN, os.X_OK), f'{VMCLIENT_BIN} is not executable'
    return VMCLIENT_BIN


def write(path, data, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    if mode is not None:
        os.chmod(path, mode)


def disk(name, gib=None, sectors=None, dev='8:0', files=None, parts=(), slaves=()):
    """A /sys/block entry: files maps paths relative to /sys/block/NAME to
    contents; parts is [(name, 'MAJ:MIN')]; slaves names what a holder (dm)
    sits on."""
    if sectors is None:
        sectors = int(gib * GIB_SECTORS)
    return {'name': name, 'sectors': sectors, 'dev': dev, 'files': files or {},
            'parts': list(parts), 'slaves': list(slaves)}


def fake_root(path, ram_kib=4194304, cpus='0-1', hostname='vm-test', os_release=DEBIAN_OS,
              os_release_path='/etc/os-release', addresses=(), disks=(), mounts=(),
              loadavg='0.50 0.25 0.10 1/100 1234\n', uptime='1234.56 2000.00\n',
              mem_available_kib=1048576):
    """Builds a fake root in path; returns path. mounts: [('MAJ:MIN', '/mnt')],
    the mount point created inside the root."""
    root = str(path)
    meminfo = f'MemTotal:       {ram_kib} kB\nMemFree:         1000 kB\n'
    if mem_available_kib is not None:
        meminfo += f'MemAvailable:   {mem_available_kib} kB\n'
    write(f'{root}/proc/meminfo', meminfo)
    write(f'{root}/proc/loadavg', loadavg)
    write(f'{root}/proc/uptime', uptime)
    if cpus is not None:
        write(f'{root}/sys/devices/system/cpu/online', cpus + '\n')
    if hostname is not None:
        write(f'{root}/proc/sys/kernel/hostname', hostname + '\n')
    if os_release is not None:
        write(root + os_release_path, os_release)
    write(f'{root}/ip-addresses', ''.join(a + '\n' for a in addresses))
    os.makedirs(f'{root}/sys/block', exist_ok=True)
    for d in disks:
        set_disk(root, d)
    lines = []
    for i, (dev, mnt) in enumerate(mounts):
        os.makedirs(root + mnt, exist_ok=True)
        esc = mnt.replace('\\', '\\134').replace(' ', '\\040')
        lines.append(f'{30 + i} 1 {dev} / {esc} rw,relatime - ext4 /dev/x{i} rw\n')
    lines.append('99 1 0:21 / /proc rw - proc proc rw\n')
    write(f'{root}/proc/self/mountinfo', ''.join(lines))
    return root


def set_disk(root, d):
    base = f'{root}/sys/block/{d["name"]}'
    write(f'{base}/size', f'{d["sectors"]}\n')
    write(f'{base}/dev', d['dev'] + '\n')
    for rel, data in d['files'].items():
        write(f'{base}/{rel}', data)
    for pname, pdev in d['parts']:
        write(f'{base}/{pname}/partition', '1\n')
        write(f'{base}/{pname}/dev', pdev + '\n')
    for s in d['slaves']:
        os.makedirs(f'{base}/slaves/{s}', exist_ok=True)


def remove_disk(root, name):
    shutil.rmtree(f'{root}/sys/block/{name}')


class Agent:
    """`vmclient agent` as a child process; its stderr goes to a file."""

    def __init__(self, tmp, root, args, env=None, name='agent'):
        self.tmp = str(tmp)
        self.root = root
        self.args = list(args)
        self.env = dict(os.environ)
        self.env['VMCLIENT_ROOT'] = root
        self.env.pop('NOTIFY_SOCKET', None)
        self.env.pop('WATCHDOG_USEC', None)
        self.env.pop('JOURNAL_STREAM', None)
        if env:
            self.env.update(env)
        self.name = name
        self.runs = 0
        self.logs = []
        self.proc = None

    def start(self):
        assert self.proc is None
        self.runs += 1
        path = os.path.join(self.tmp, f'{self.name}.{self.runs}.log')
        self.logs.append(path)
        self.logf = open(path, 'wb')
        self.proc = subprocess.Popen([vmclient_bin(), 'agent'] + self.args,
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf, env=self.env)
        return self

    def log_text(self, all_runs=False):
        out = []
        for p in (self.logs if all_runs else self.logs[-1:]):
            with open(p, 'rb') as f:
                out.append(f.read().decode('utf-8', 'replace'))
        return ''.join(out)

    def wait_log(self, pattern, timeout=30.0, count=1, start=0):
        """Waits until pattern (a regex) matched count times in the current
        run's log (from offset start); returns the matches."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[start:]
            found = rx.findall(text)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f'agent exited ({self.proc.returncode}) waiting for '
                                     f'{pattern!r}:\n{self.log_text()}')
            if time.monotonic() >= deadline:
                raise AssertionError(f'no {pattern!r} (x{count}) in the agent log within '
                                     f'{timeout} s:\n{self.log_text()}')
            time.sleep(0.05)

    def log_len(self):
        return len(self.log_text())

    def stop(self, timeout=10.0):
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError('the agent did not stop within 10 s of SIGTERM')
        finally:
            self.logf.close()
        text = self.log_text()
        for m in ('AddressSanitizer', 'runtime error:', 'LeakSanitizer'):
            assert m not in text, f'sanitizer report in the agent log:\n{text}'
        return rc

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.logf.close()


def describe(root, *args, env=None, check=True):
    e = dict(os.environ)
    e['VMCLIENT_ROOT'] = root
    if env:
        e.update(env)
    p = subprocess.run([vmclient_bin(), 'describe'] + list(args), capture_output=True,
                       text=True, env=e, timeout=30)
    if check:
        assert p.returncode == 0, f'describe failed ({p.returncode}): {p.stderr}'
    return p


class Admin:
    """A client of vmmd's admin Unix socket (msgpack-rpc by hand)."""

    def __init__(self, path, timeout=60.0):
        import socket
        import msgpack
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.msgpack = msgpack
        self.next_id = 1
        self.events = []
        self.timeout = timeout

    def close(self):
        self.sock.close()

    def _read(self, timeout=None):
        import socket
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            for msg in self.unpacker:
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout('nothing from vmmd')
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError('vmmd closed the admin connection')
            self.unpacker.feed(data)

    def call(self, method, params=None):
        msgid = self.next_id
        self.next_id += 1
        p = [] if params is None else [params]
        self.sock.sendall(self.msgpack.packb([0, msgid, method, p], use_bin_type=True))
        while True:
            msg = self._read()
            if msg[0] == 2:
                self.events.append(msg[2][0])
                continue
            assert msg[1] == msgid, msg
            return msg[2], msg[3]

    def ok(self, method, params=None):
        err, res = self.call(method, params)
        assert err is None, f'{method} {params!r}: {err}'
        return res

    def collect(self, seconds):
        """Reads events for this long (after events.watch)."""
        import socket
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self.events
            try:
                msg = self._read(left)
            except socket.timeout:
                return self.events
            if msg[0] == 2:
                self.events.append(msg[2][0])

    def wait_event(self, pred, timeout=15.0):
        import socket
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if pred(e):
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f'no such event within {timeout} s: {self.events!r}')
            try:
                msg = self._read(left)
            except socket.timeout:
                continue
            if msg[0] == 2:
                self.events.append(msg[2][0])


class Notify:
    """Our own NOTIFY_SOCKET."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='vmn', dir='/tmp')
        self.path = os.path.join(self.dir, 'notify')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.msgs = []
        self.done = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.msgs.append((time.monotonic(), data.decode()))

    def values(self, key):
        out = []
        for _, text in list(self.msgs):
            for line in text.split('\n'):
                if line.startswith(key + '='):
                    out.append(line[len(key) + 1:])
        return out

    def close(self):
        self.done = True
        self.thread.join()
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
