# SPDX-License-Identifier: MIT
"""Helpers for the part-2 integration tests (test_part2_*.py): an admin-socket
client, connections made as another Unix user (a member of --users-group),
user accounts and sessions, and event watchers. Like vmmtest.py, everything
here speaks the wire contract (PROTOCOL.md) by hand with Python's msgpack:
nothing is shared with the C side."""

import json
import os
import secrets
import socket
import subprocess
import time

import msgpack

import vmmtest
from vmmtest import Client, Closed, now_ms, wait_until  # noqa: F401 (re-exported)

PYTHON = '/usr/bin/python3'
# A call that hashes a password waits in vmmd's queue behind other logins,
# on a machine other people's tests load too.
LONG = 120.0
PW = 'secret-pw-1'
REFUSALS = ('forbidden', 'unauthenticated', 'unknown_method')
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTOCOL_MD = os.path.join(os.path.dirname(TOP), 'shared', 'PROTOCOL.md')


class Admin(Client):
    """One connection to the admin socket (or any connected AF_UNIX socket)."""

    def __init__(self, path=None, sock=None, timeout=LONG):  # noqa: super() connects TCP
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        sock.settimeout(timeout)
        self.sock = sock
        self.timeout = timeout
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.next_id = 1
        self.token = None
        self.vm_id = None

    def call_with_fds(self, method, params, fds, timeout=None):
        msgid = self.new_id()
        data = vmmtest.request_bytes(msgid, method, params)
        n = socket.send_fds(self.sock, [data], list(fds))
        assert n == len(data), f'short sendmsg: {n} of {len(data)}'
        msg = self.read_response(timeout)
        assert msg[1] == msgid, msg
        return self.split(msg)


def admin(d, **kw):
    """An admin peer (root: this test runs as root) on d's admin socket."""
    return Admin(d.admin_socket, **kw)


def tcp(d, timeout=LONG):
    return Client(d.port, d.host, timeout=timeout)


# ---------------------------------------------------------------------------
# Unix users: a peer connects as another user (setpriv), then hands the
# connected socket back to us with SCM_RIGHTS. The daemon judges a peer by
# the credentials it had at connect(), so the test then speaks as that user
# from this process.

def run(cmd, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd='/', **kw)
    if check:
        assert p.returncode == 0, f'{cmd}: {p.returncode}\n{p.stdout}{p.stderr}'
    return p


_CONNECT_CHILD = r'''
import os, socket, sys
back = socket.socket(fileno=int(sys.argv[2]))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    back.sendall(("ERR " + repr(e)).encode())
    raise SystemExit(0)
socket.send_fds(back, [b"OK %d" % os.getuid()], [s.fileno()])
'''


def open_admin_socket(d):
    """Let other users reach d's admin socket (the daemon's own check of
    SO_PEERCRED is what the tests are about)."""
    os.chmod(d.sockdir, 0o755)
    os.chmod(d.admin_socket, 0o777)


def connect_as(path, user, regid='nogroup', timeout=LONG):
    """An Admin connection to path whose peer credentials are user's (with
    the user's groups from the group database)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        run(['setpriv', f'--reuid={user}', f'--regid={regid}', '--init-groups', PYTHON, '-c',
             _CONNECT_CHILD, path, str(theirs.fileno())], pass_fds=[theirs.fileno()])
        theirs.close()
        ours.settimeout(10)
        msg, fds, _, _ = socket.recv_fds(ours, 256, 1)
    finally:
        ours.close()
        theirs.close()
    assert msg.startswith(b'OK'), f'{user} could not connect to {path}: {msg!r}'
    assert len(fds) == 1, (msg, fds)
    return Admin(sock=socket.socket(fileno=fds[0]), timeout=timeout)


class UnixUsers:
    """Unix accounts made for a test (useradd), all members of one group;
    removed at the end."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.group = f'vmmdt-{tag}'
        self.users = []
        self.tag = tag
        run(['groupadd', self.group])

    def add(self, member=True):
        name = f'vmmdt-{self.tag}-{len(self.users)}'
        args = ['useradd', '-M', '-N', '-g', 'nogroup']
        if member:
            args += ['-G', self.group]
        run(args + [name])
        self.users.append(name)
        return name

    def remove(self):
        for u in self.users:
            run(['userdel', u], check=False)
        run(['groupdel', self.group], check=False)


# ---------------------------------------------------------------------------
# accounts and sessions

def make_user(a, name, role='user', password=PW):
    """user.create on an admin connection; -> the password."""
    p = {'name': name, 'role': role}
    if password is not None:
        p['password'] = password
    res = a.ok('user.create', p, timeout=LONG)
    assert res['name'] == name and res['role'] == role, res
    return res['password']


def person(a, name, role='user'):
    """A user record named name, made (without a password) unless there is
    one: booking.create for someone else needs a user record or a login."""
    err, _ = a.call('user.get', {'name': name})
    if err and err[0] == 'not_found':
        a.ok('user.create', {'name': name, 'role': role}, timeout=LONG)


def user_login(d, name, password=PW):
    """A TCP connection attached to a new session of user name (.token set)."""
    c = tcp(d)
    res = c.ok('user.auth', {'name': name, 'password': password}, timeout=LONG)
    assert res['name'] == name and vmmtest.TOKEN_RE.match(res['token']), res
    c.token = res['token']
    c.name = name
    return c


def vm_login(d, vm_id, password=PW):
    c = tcp(d)
    c.auth(vm_id, password)
    return c


def resumed(d, token):
    """A new TCP connection attached to an existing session (no hashing)."""
    c = tcp(d)
    res = c.ok('resume', {'token': token})
    assert 'expires_at' in res, res
    c.token = token
    return c


def create_vms(a, vm_ids, ram=1024, cpu=1, **extra):
    """Described VMs made by an admin (vm.create with ram and cpu)."""
    out = {}
    for v in vm_ids:
        p = {'vm_id': v, 'ram': ram, 'cpu': cpu}
        p.update(extra)
        res = a.ok('vm.create', p, timeout=LONG)
        out[v] = res['password']
    return out


# ---------------------------------------------------------------------------
# events

def as_event(msg):
    assert isinstance(msg, list) and len(msg) == 3 and msg[0] == 2 and msg[1] == 'event', \
        f'not an event notification: {msg!r}'
    assert isinstance(msg[2], list) and len(msg[2]) == 1 and isinstance(msg[2][0], dict), msg
    ev = msg[2][0]
    for k in ('seq', 'type', 'time'):
        assert k in ev, f'event without {k}: {ev!r}'
    return ev


def next_event(w, timeout):
    return as_event(w.read(timeout))


def read_events(w, until, timeout=10.0):
    """Events from w until until(events) is true; fails on the deadline."""
    events = []
    deadline = time.monotonic() + timeout
    while not until(events):
        left = deadline - time.monotonic()
        assert left > 0, f'events did not arrive in time; got {events!r}'
        try:
            events.append(next_event(w, left))
        except socket.timeout:
            continue
    return events


def quiet_events(w, seconds):
    """Every event w gets within seconds (a bounded wait for what must NOT come)."""
    events = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return events
        try:
            events.append(next_event(w, left))
        except socket.timeout:
            return events


def watch(c, since=None, types=None, timeout=None):
    """events.watch {since?, types?} on c; -> the result."""
    p = {}
    if since is not None:
        p['since'] = since
    if types is not None:
        p['types'] = types
    res = c.ok('events.watch', p, timeout=timeout)
    assert set(res) >= {'feed', 'oldest'}, res
    return res


def feed_events(events):
    return [e for e in events if e.get('feed') is not None]


def until_feed(pos):
    """Stop once a feed event at position >= pos arrived."""
    def pred(events):
        return pos == 0 or any((e.get('feed') or 0) >= pos for e in events)
    return pred


def replay(d, since=0, timeout=30.0):
    """The whole kept feed after since, read by an admin watcher; -> (result,
    feed events in order). Every feed event up to the position the reply
    names must arrive."""
    with admin(d) as w:
        res = watch(w, since=since)
        evs = read_events(w, until_feed(res['feed']), timeout)
    return res, feed_events(evs)


def check_feed_seqs(events):
    seqs = [e['seq'] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f'seq does not count from 1: {seqs}'


def jsonable(x):
    return json.loads(json.dumps(x, default=repr))


# ---------------------------------------------------------------------------
# a daemon shared by the tests of one module (fewer starts, fewer hashes)

def shared_daemon(tmp_path_factory, args=(), name='p2'):
    """Generator for a module-scoped fixture: a vmmd that every test of the
    module uses (each with names of its own); it must stop cleanly at the
    end, and its log is printed if it did not."""
    d = vmmtest.Daemon(tmp_path_factory.mktemp(name), args=list(args))
    try:
        yield d
        d.stop()
    except BaseException:
        print(d.log_text())
        raise
    finally:
        d.cleanup()


class People:
    """User accounts with a TCP session each (token), made once."""

    def __init__(self, d, roles):
        """roles: {name: role}."""
        self.d = d
        self.tokens = {}
        with admin(d) as a:
            for name, role in roles.items():
                make_user(a, name, role)
        for name in roles:
            with user_login(d, name) as c:
                self.tokens[name] = c.token

    def conn(self, name):
        """A new connection attached to name's session."""
        c = resumed(self.d, self.tokens[name])
        c.name = name
        return c
