# SPDX-License-Identifier: MIT
"""Test harness for vmmd integration tests: a Daemon (start, stop, restart on
the same state directory, crash checks) and a Client speaking the wire
contract of PROTOCOL.md by hand (raw sockets and Python's msgpack), so the
tests are an independent implementation of the client side.

VMMD_BIN names the daemon binary (meson sets it). VMMTEST_IGNORE_EXIT=1 is
a development aid only: it skips the exit-status check after SIGTERM.
VMMTEST_COMPAT_FLAGS=1 is another: flags the binary's --help does not list
are dropped (with their values), so that the tests can be run against an
older vmmd to see them fail for what it does, not for the flags it lacks."""

import os
import pty
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import msgpack

VMMD_BIN = os.environ.get('VMMD_BIN')
TOKEN_RE = re.compile(r'^[A-Za-z0-9_-]{43}$')
PASSWORD = 'secret-pw-1'
CRASH_MARKERS = ('AddressSanitizer', 'runtime error:', 'LeakSanitizer', 'UndefinedBehaviorSanitizer',
                 'ThreadSanitizer')

ERROR_CODES = ('bad_request', 'unknown_method', 'too_large', 'unauthenticated', 'rate_limited',
               'forbidden', 'not_found', 'exists', 'conflict', 'unavailable', 'shutting_down',
               'internal')


def now_ms():
    return int(time.time() * 1000)


def vmmd_bin():
    assert VMMD_BIN, 'VMMD_BIN is not set: these tests need the real vmmd (meson sets it)'
    assert os.access(VMMD_BIN, os.X_OK), f'VMMD_BIN={VMMD_BIN} is not executable'
    return VMMD_BIN


_KNOWN_FLAGS = {}


def known_flags(binary):
    """The long options binary's --help lists."""
    if binary not in _KNOWN_FLAGS:
        out = subprocess.run([binary, '--help'], capture_output=True, text=True,
                             timeout=30).stdout
        _KNOWN_FLAGS[binary] = set(re.findall(r'(--[a-z0-9][a-z0-9-]*)', out))
    return _KNOWN_FLAGS[binary]


def compat_argv(argv, binary):
    """argv without the flags binary does not know (VMMTEST_COMPAT_FLAGS=1);
    every flag vmmd has takes a value, except -h/-V."""
    if os.environ.get('VMMTEST_COMPAT_FLAGS') != '1':
        return argv
    known = known_flags(binary)
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a.startswith('--') and i > 0:
            name = a.split('=', 1)[0]
            if name not in known:
                skip = '=' not in a
                continue
        out.append(a)
    return out


_port_rng = random.Random(os.getpid() * 1000003 + time.monotonic_ns())


def _ephemeral_low():
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host='127.0.0.1'):
    """A port nobody listens on now. It is drawn below the kernel's range of
    ephemeral ports, so that no outgoing connection of a test running in
    parallel takes it before the server binds it (one did: vmmd could not
    listen, "Address already in use"); two tests drawing the same port is
    left to chance (one in thousands) and to Daemon's retry."""
    fam = socket.AF_INET6 if ':' in host else socket.AF_INET
    low = _ephemeral_low()
    if low > 12000:
        for _ in range(100):
            port = _port_rng.randrange(max(10000, low - 12000), low)
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def request_bytes(msgid, method, params=None):
    """params: None -> [], dict -> [dict], anything else is sent as is."""
    if params is None:
        p = []
    elif isinstance(params, dict):
        p = [params]
    else:
        p = params
    return pack([0, msgid, method, p])


# Hand-made msgpack pieces, for what msgpack.packb cannot produce
# (duplicate keys, invalid UTF-8, odd headers).

def raw_str(b):
    """A msgpack str whose payload is the raw bytes b (may be invalid UTF-8)."""
    n = len(b)
    if n < 32:
        return bytes([0xa0 | n]) + b
    if n < 256:
        return b'\xd9' + bytes([n]) + b
    if n < 65536:
        return b'\xda' + struct.pack('>H', n) + b
    return b'\xdb' + struct.pack('>I', n) + b


def raw_map(pairs):
    """A msgpack map from (key, value) pairs, each already msgpack bytes or a
    Python value to pack."""
    n = len(pairs)
    if n < 16:
        out = bytes([0x80 | n])
    else:
        out = b'\xde' + struct.pack('>H', n)
    for k, v in pairs:
        out += k if isinstance(k, bytes) else pack(k)
        out += v if isinstance(v, bytes) else pack(v)
    return out


def raw_request(msgid, method, params_map_bytes):
    """[0, msgid, method, [<params map bytes>]]"""
    return b'\x94' + pack(0) + pack(msgid) + pack(method) + b'\x91' + params_map_bytes


def nested_arrays(levels):
    """levels nested empty arrays: 1 -> [], 2 -> [[]] ..."""
    obj = []
    for _ in range(levels - 1):
        obj = [obj]
    return obj


class Closed(Exception):
    pass


class Client:
    """One TCP connection speaking MessagePack-RPC."""

    def __init__(self, port, host='127.0.0.1', source=None, timeout=10.0, sndbuf=None,
                 rcvbuf=None):
        fam = socket.AF_INET6 if ':' in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.timeout = timeout
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.next_id = 1
        self.token = None
        self.vm_id = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def new_id(self):
        i = self.next_id
        self.next_id += 1
        return i

    # sending

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_raw_tolerant(self, data):
        """Send, ignoring a peer that already closed (it may have answered)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def send(self, method, params=None, msgid=None):
        if msgid is None:
            msgid = self.new_id()
        self.send_raw(request_bytes(msgid, method, params))
        return msgid

    # receiving

    def read(self, timeout=None):
        """Next message from the server; raises Closed on EOF, socket.timeout
        when nothing arrives in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for msg in self.unpacker:
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout('no message from vmmd in time')
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(262144)
            finally:
                self.sock.settimeout(self.timeout)
            if not data:
                raise Closed('vmmd closed the connection')
            self.unpacker.feed(data)

    def read_response(self, timeout=None):
        msg = self.read(timeout)
        assert isinstance(msg, list) and len(msg) == 4 and msg[0] == 1, \
            f'not a response: {msg!r}'
        return msg

    def wait_closed(self, timeout=5.0):
        """True when the server closes the connection within timeout (any
        message received before is returned in the list)."""
        msgs = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, msgs
            try:
                msgs.append(self.read(left))
            except Closed:
                return True, msgs
            except ConnectionResetError:
                return True, msgs
            except socket.timeout:
                return False, msgs

    def is_open(self):
        """The connection still answers a ping."""
        try:
            err, res = self.call('ping')
        except (Closed, OSError):
            return False
        return err is None and res.get('pong') is True

    # calls

    @staticmethod
    def split(msg):
        err = msg[2]
        if err is not None:
            assert isinstance(err, dict), f'error is not a map: {msg!r}'
            assert err.get('code') in ERROR_CODES, f'unknown error code: {msg!r}'
            assert isinstance(err.get('message'), str), f'error without message: {msg!r}'
            assert msg[3] is None, f'result with an error: {msg!r}'
            return (err['code'], err['message']), None
        assert isinstance(msg[3], dict), f'result is not a map: {msg!r}'
        return None, msg[3]

    def call(self, method, params=None, timeout=None):
        """-> (error, result); error is None or (code, message)."""
        msgid = self.send(method, params)
        msg = self.read_response(timeout)
        assert msg[1] == msgid, f'response msgid {msg[1]} for request {msgid}: {msg!r}'
        return self.split(msg)

    def call_raw(self, data, msgid, timeout=None):
        """Send hand-made request bytes whose msgid is msgid."""
        self.send_raw(data)
        msg = self.read_response(timeout)
        assert msg[1] == msgid, f'response msgid {msg[1]} for request {msgid}: {msg!r}'
        return self.split(msg)

    def ok(self, method, params=None, timeout=None):
        err, res = self.call(method, params, timeout)
        assert err is None, f'{method} {params!r} failed: {err}'
        return res

    def err(self, method, params, code, timeout=None):
        """Assert the call fails with code; returns the message."""
        err, res = self.call(method, params, timeout)
        assert err is not None, f'{method} {params!r} succeeded, expected {code}: {res!r}'
        assert err[0] == code, f'{method} {params!r}: expected {code}, got {err}'
        return err[1]

    def pipeline(self, reqs, timeout=None):
        """Send many (method, params) at once, then read as many responses,
        checking msgids; -> list of (error, result)."""
        data = b''
        ids = []
        for method, params in reqs:
            i = self.new_id()
            ids.append(i)
            data += request_bytes(i, method, params)
        self.send_raw(data)
        out = []
        for i in ids:
            msg = self.read_response(timeout)
            assert msg[1] == i, f'response msgid {msg[1]}, expected {i}: {msg!r}'
            out.append(self.split(msg))
        return out

    # helpers

    def register(self, vm_id, password=PASSWORD, ram=1024, cpu=1, disks=None, **extra):
        p = {'vm_id': vm_id, 'password': password, 'ram': ram, 'cpu': cpu}
        if disks is not None:
            p['disks'] = disks
        p.update(extra)
        return self.ok('register', p)

    def auth(self, vm_id, password=PASSWORD, timeout=60):
        # a login waits for its password check in vmmd's queue, which a busy
        # machine (niced hash workers) can make long
        res = self.ok('auth', {'vm_id': vm_id, 'password': password}, timeout=timeout)
        self.token = res['token']
        self.vm_id = vm_id
        return res


def assert_error_frame(msg, code):
    """msg is the one msgid-0 error of a framing error / refusal."""
    assert isinstance(msg, list) and len(msg) == 4, f'not a response: {msg!r}'
    assert msg[0] == 1 and msg[1] == 0, f'expected a msgid 0 response: {msg!r}'
    assert msg[3] is None, f'result with an error: {msg!r}'
    assert isinstance(msg[2], dict) and msg[2].get('code') == code, \
        f'expected {code}: {msg!r}'
    assert isinstance(msg[2].get('message'), str)


def expect_framing_close(client, code, timeout=5.0):
    """After a framing error: exactly one msgid-0 error, then EOF."""
    closed, msgs = client.wait_closed(timeout)
    assert msgs, f'no error response before close (closed={closed})'
    assert len(msgs) == 1, f'expected one error response, got {msgs!r}'
    assert_error_frame(msgs[0], code)
    assert closed, 'vmmd did not close the connection after the framing error'


def short_tmpdir():
    """A short directory for Unix sockets (sun_path is 108 bytes)."""
    return tempfile.mkdtemp(prefix='vmm', dir='/tmp')


class Daemon:
    """vmmd on a free loopback port with its own state directory."""

    def __init__(self, tmp_path, args=(), listen=None, state_dir=None, log_level='info',
                 start=True, env=None):
        self.bin = vmmd_bin()
        self.tmp = str(tmp_path)
        self.state_dir = state_dir or os.path.join(self.tmp, 'state')
        os.makedirs(self.state_dir, exist_ok=True)
        self.sockdir = short_tmpdir()
        self.admin_socket = os.path.join(self.sockdir, 'admin.sock')
        self.host = '127.0.0.1'
        self.port = free_port()
        self.own_port = listen is None         # ours to change if taken at the first start
        self.listen = [f'{self.host}:{self.port}'] if listen is None else listen
        self.args = list(args)
        self.log_level = log_level
        self.env = env
        self.proc = None
        self.logs = []
        self.runs = 0
        if start:
            self.start()

    def argv(self):
        a = [self.bin, '--state-dir', self.state_dir, '--admin-socket', self.admin_socket,
             '--log-level', self.log_level]
        for l in self.listen:
            a += ['--listen', l]
        # Tests register many VMs from one address; the limit on that has
        # tests of its own (test_security.py), which set it themselves.
        if not any(x.startswith('--registrations-per-minute') for x in self.args):
            a += ['--registrations-per-minute', '1000000']
        # ... and log in from one address many at a time; the bound on
        # password checks in flight per address has tests of its own too
        if not any(x.startswith('--hashes-per-peer') for x in self.args):
            a += ['--hashes-per-peer', '1024']
        return compat_argv(a + self.args, self.bin)

    def start(self):
        for attempt in range(3):
            try:
                return self._start()
            except AssertionError as e:
                # the port we drew was taken before vmmd bound it: draw again
                if not (self.own_port and self.runs == 1 + attempt and
                        'Address already in use' in str(e)) or attempt == 2:
                    raise
                self.port = free_port()
                self.listen = [f'{self.host}:{self.port}']
                self.sockdir = short_tmpdir()           # the failed start removed it
                self.admin_socket = os.path.join(self.sockdir, 'admin.sock')

    def _start(self):
        assert self.proc is None
        self.runs += 1
        self.log_path = os.path.join(self.tmp, f'vmmd.{self.runs}.log')
        self.logs.append(self.log_path)
        self.logf = open(self.log_path, 'wb')
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf, env=env)
        try:
            self.wait_ready()
        except BaseException:
            self.cleanup()
            raise

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        out = []
        for p in self.logs:
            try:
                with open(p, 'rb') as f:
                    out.append(f'--- {p} ---\n' + f.read().decode('utf-8', 'replace'))
            except OSError:
                pass
        return '\n'.join(out)

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f'vmmd exited with {self.proc.returncode} at start:\n'
                                     + self.log_text())
            try:
                with Client(self.port, self.host, timeout=2) as c:
                    err, res = c.call('ping')
                    if err is None and res.get('pong') is True:
                        return
                    last = (err, res)
            except (OSError, Closed) as e:
                last = e
            time.sleep(0.02)
        raise AssertionError(f'vmmd did not answer ping in {timeout} s: {last}\n'
                             + self.log_text())

    def client(self, **kw):
        return Client(self.port, self.host, **kw)

    def check_log(self):
        text = self.log_text()
        for m in CRASH_MARKERS:
            assert m not in text, f'sanitizer report in the vmmd log:\n{text}'

    def stop(self, timeout=10.0, check=True):
        """SIGTERM; the daemon must exit 0 within timeout (contract: 10 s)."""
        if self.proc is None:
            return None
        proc = self.proc
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.logf.close()
            raise AssertionError(f'vmmd did not exit within {timeout} s of SIGTERM:\n'
                                 + self.log_text())
        self.stop_seconds = time.monotonic() - t0
        self.logf.close()
        if check and not os.environ.get('VMMTEST_IGNORE_EXIT'):
            assert rc == 0, f'vmmd exited with status {rc} after SIGTERM:\n' + self.log_text()
            self.check_log()
        return rc

    def kill(self):
        """SIGKILL (a crash); no exit check."""
        proc = self.proc
        self.proc = None
        proc.kill()
        proc.wait()
        self.logf.close()

    def restart(self):
        self.stop()
        self.start()

    def rss_kib(self):
        with open(f'/proc/{self.proc.pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
        raise AssertionError('no VmRSS')

    def cleanup(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.logf.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    # convenience

    def register(self, vm_id, **kw):
        with self.client() as c:
            return c.register(vm_id, **kw)

    def login(self, vm_id, password=PASSWORD, register=True, **kw):
        """Register (optionally) and auth on a new connection; -> Client,
        attached, with .token."""
        c = self.client()
        if register:
            c.register(vm_id, password=password, **kw)
        c.auth(vm_id, password)
        return c


def wait_until(pred, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(step)


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name: [0] the state,
    [1] the parent's pid, [16] the nice value."""
    with open(f'/proc/{pid}/stat') as f:
        st = f.read()
    return st[st.rindex(')') + 2:].split()


def process_gone(pid):
    """Exited (a zombie not yet reaped by whoever adopted it counts)."""
    try:
        return proc_stat(pid)[0] == 'Z'
    except OSError:
        return True


def children_of(pid):
    """{pid: argv} of the processes whose parent is pid."""
    out = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            if int(proc_stat(name)[1]) != pid:
                continue
            with open(f'/proc/{name}/cmdline', 'rb') as f:
                out[int(name)] = [a.decode() for a in f.read().split(b'\0') if a]
        except (OSError, ValueError, IndexError):
            continue
    return out


def ids(records):
    return [r['vm_id'] for r in records]


def list_all(client, method='vm.list', filter=None, limit=None, extra=None):
    """Follow next to the end; -> (items, pages)."""
    key = 'vms' if method == 'vm.list' else 'disks'
    idkey = 'vm_id' if method == 'vm.list' else 'id'
    items = []
    pages = 0
    after = None
    while True:
        p = {}
        if filter is not None:
            p['filter'] = filter
        if limit is not None:
            p['limit'] = limit
        if after is not None:
            p['after'] = after
        if extra:
            p.update(extra)
        res = client.ok(method, p)
        pages += 1
        items += res[key]
        if res['next'] is None:
            return items, pages
        assert res[key], f'empty page with next={res["next"]!r}'
        assert res['next'] == res[key][-1][idkey], f'next is not the last id: {res!r}'
        after = res['next']
        assert pages < 100000


class Pty:
    """A program on a pseudo-terminal: keys in, screen text out."""

    def __init__(self, argv, env):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.text = ''

    def keys(self, data):
        os.write(self.master, data.encode())

    def expect(self, pattern, timeout=15):
        deadline = time.monotonic() + timeout
        start = len(self.text)
        while not re.search(pattern, self.text[start:]):
            left = deadline - time.monotonic()
            assert left > 0, f'{pattern!r} not seen; screen: {self.text[start:]!r}'
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b''
                assert chunk, f'the program ended; screen: {self.text[start:]!r}'
                self.text += chunk.decode(errors='replace')
        return self.text[start:]

    def close(self):
        rc = self.proc.wait(15)
        os.close(self.master)
        return rc
