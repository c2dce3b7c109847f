# SPDX-License-Identifier: MIT
"""Helpers for the hostile-input, exhaustion and valgrind tests, on top of
vmmtest.py: a hand encoder that can embed raw MessagePack bytes (duplicate
keys, invalid UTF-8, odd headers, ext types) inside ordinary Python values,
an admin-socket client, RSS and file-limit helpers, and a Daemon that runs
under valgrind."""

import os
import resource
import socket
import struct
import time

import msgpack

import vmmtest
from vmmtest import Client, Closed

MIB = 1024 * 1024


# ---------------------------------------------------------------- encoding

class Raw:
    """Bytes put into the encoded message verbatim."""

    def __init__(self, data):
        self.data = data

    def __repr__(self):
        return f'Raw({self.data.hex()})'


class Pairs:
    """A map given as a list of (key, value) pairs: duplicate and non-string
    keys allowed."""

    def __init__(self, pairs):
        self.pairs = list(pairs)


class Token:
    """Replaced by ctx['token'] at encoding time."""


TOKEN = Token()


def _hdr(n, fix, fixmax, c16, c32):
    if n <= fixmax:
        return bytes([fix | n])
    if n < 65536:
        return bytes([c16]) + struct.pack('>H', n)
    return bytes([c32]) + struct.pack('>I', n)


def enc(obj, ctx=None):
    """MessagePack of obj, where Raw, Pairs and TOKEN may appear anywhere."""
    if isinstance(obj, Raw):
        return obj.data
    if isinstance(obj, Token):
        return vmmtest.pack(ctx['token'])
    if isinstance(obj, Pairs):
        out = _hdr(len(obj.pairs), 0x80, 15, 0xde, 0xdf)
        for k, v in obj.pairs:
            out += enc(k, ctx) + enc(v, ctx)
        return out
    if isinstance(obj, dict):
        return enc(Pairs(obj.items()), ctx)
    if isinstance(obj, (list, tuple)):
        out = _hdr(len(obj), 0x90, 15, 0xdc, 0xdd)
        for v in obj:
            out += enc(v, ctx)
        return out
    return vmmtest.pack(obj)


def req(msgid, method, params=None, ctx=None):
    """[0, msgid, method, [params]] (params None -> [])."""
    return enc([0, msgid, method, [] if params is None else [params]], ctx)


# Hand-made values
def f32(x):
    return Raw(b'\xca' + struct.pack('>f', x))


def f64(x):
    return Raw(b'\xcb' + struct.pack('>d', x))


def ext(code, data):
    n = len(data)
    fixed = {1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8}
    if n in fixed:
        return Raw(bytes([fixed[n]]) + struct.pack('>b', code) + data)
    return Raw(b'\xc7' + bytes([n]) + struct.pack('>b', code) + data)


def u64(v):
    return Raw(b'\xcf' + struct.pack('>Q', v))


def i64(v):
    return Raw(b'\xd3' + struct.pack('>q', v))


def rstr(b):
    return Raw(vmmtest.raw_str(b))


def rbin(b):
    return Raw(b'\xc4' + bytes([len(b)]) + b)


# ---------------------------------------------------------------- admin client

class Admin(Client):
    """One connection to the admin Unix socket (vmmtest.Client's machinery
    over AF_UNIX)."""

    def __init__(self, path, timeout=10.0):   # noqa: Client.__init__ connects over TCP
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.timeout = timeout
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                         max_buffer_size=64 * MIB)
        self.next_id = 1
        self.token = None
        self.vm_id = None

    def is_open(self):
        try:
            err, res = self.call('status')
        except (Closed, OSError):
            return False
        return err is None and res.get('protocol') == 1


def admin(d, **kw):
    return Admin(d.admin_socket, **kw)


def read_sized(c, timeout=None):
    """The next message and its size in bytes on the wire."""
    before = c.unpacker.tell()
    msg = c.read(timeout)
    return msg, c.unpacker.tell() - before


# ---------------------------------------------------------------- process facts

def rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS')


def nofile_limit(pid):
    with open(f'/proc/{pid}/limits') as f:
        for line in f:
            if line.startswith('Max open files'):
                return int(line.split()[3])
    raise AssertionError('no Max open files')


def raise_nofile(want):
    """Raise this process's soft RLIMIT_NOFILE to at least want (children
    inherit it); -> the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if new < want and os.geteuid() == 0:
            new = want
            hard = max(hard, want)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def count_fds(pid):
    return len(os.listdir(f'/proc/{pid}/fd'))


def ping_latency(c, method='ping', params=None):
    t = time.monotonic()
    err, res = c.call(method, params, timeout=5)
    assert err is None, f'{method}: {err}'
    return time.monotonic() - t


def percentile(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))]


# ---------------------------------------------------------------- valgrind

class ValgrindDaemon(vmmtest.Daemon):
    """vmmd under valgrind memcheck; the log goes to valgrind_log."""

    VALGRIND = ['valgrind', '--error-exitcode=99', '--leak-check=full',
                '--errors-for-leak-kinds=definite', '--track-fds=no', '--num-callers=30']

    def __init__(self, tmp_path, valgrind='valgrind', **kw):
        self.valgrind_log = os.path.join(str(tmp_path), 'valgrind.log')
        self.valgrind_bin = valgrind
        super().__init__(tmp_path, **kw)

    def argv(self):
        return ([self.valgrind_bin] + self.VALGRIND[1:] + [f'--log-file={self.valgrind_log}']
                + super().argv())

    def wait_ready(self, timeout=120.0):
        super().wait_ready(timeout)


def sanitized(pid):
    """vmmd runs with AddressSanitizer: its quarantine keeps freed memory, so
    RSS bounds say nothing there (figures are still printed)."""
    with open(f'/proc/{pid}/maps') as f:
        return 'libasan' in f.read()
