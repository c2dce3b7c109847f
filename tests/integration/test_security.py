# SPDX-License-Identifier: MIT
"""The findings of the security review (issue 10) and the defects of the
structure review (issue 9), each reproduced against the real daemon the way
the reviewers did, as an attacker on the same host or network would:

  password change race   logins in flight when vm.passwd, passwd or user.set
                         changes the password get no session
  hash and registration  a flood from one address neither starves another
  floods                 address's login nor holds up SIGTERM; the bounds on
                         hashes in flight per address, on the hash queue and
                         on registrations per address answer rate_limited at
                         once, with nothing queued; hashes still waiting at
                         shutdown are dropped
  vm_visibility = self   a VM session lists only its own VM and disks
  backups                a backup stalled on a reader that never drains
                         blocks neither writes nor logins; one at a time
  connection slots and   every idle connection is closed within 2 s of its
  memory                 timeout (also at shutdown); an anonymous client that
                         pipelines and never reads is idle; unsent output is
                         bounded in total
  descriptors            the soft RLIMIT_NOFILE is raised, a too small one is
                         warned about; out of descriptors, the admin socket
                         still answers and the accept pause is logged rarely
  lockout                IPv4 per address, IPv4-mapped IPv6 as IPv4, IPv6
                         per /64; a valid token resumes from a locked-out
                         address; wrong old passwords at passwd are failed
                         logins (limit, log line, auth.failed)
  threads                resume, the purge of expired sessions and reloads
                         at once (the test for the ThreadSanitizer pass)
  state directory        a second vmmd on it refuses at once, naming the pid
  packaging              the shipped defaults: registration closed or approval,
                         the unit's LimitNOFILE=, MemoryMax= and TasksMax=

The error precedence cases (bad_request before unknown_method) are rows of
test_hostile.py's catalogue. The tools' findings (vmadm backup O_EXCL and
mode 0600, escaping of server strings) are tested in test_vmadm.py and
test_vmclient.py; leaks at exit by the sanitizer pass (LeakSanitizer is on in
every integration test's ASAN_OPTIONS and vmmtest checks the log).

Timing bounds are stated against a password hash measured in the same test
(argon2id in niced threads: on a loaded machine one takes a second), so they
hold on a busy machine and still fail by a wide margin on the old daemon.
Every server listens on loopback; every loop is bounded in count and time.
The password races run up to 100 rounds, each race stopping at its time
budget (60 s for vm.passwd, 15 s for the others) after at least 5 rounds
(2 for the others): a round costs four or five password hashes.
VMMTEST_RACE_ROUNDS=N runs exactly N rounds of each, whatever the time."""

import os
import re
import select
import signal
import socket
import statistics
import subprocess
import threading
import time

import msgpack
import pytest

import vmmtest
from hostile_util import MIB, Admin, raise_nofile, rss_kib, sanitized
from vmmtest import PASSWORD, Client, Closed, free_port, request_bytes, short_tmpdir, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(os.path.dirname(HERE))
RACE_ROUNDS = int(os.environ.get('VMMTEST_RACE_ROUNDS', '100'))
# given explicitly, the rounds all run whatever the time (e.g. for a report)
RACE_TIMED = 'VMMTEST_RACE_ROUNDS' not in os.environ
# meson passes b_sanitize as VMMD_SANITIZE
SANITIZE = os.environ.get('VMMD_SANITIZE', 'none')
SANITIZED = SANITIZE not in ('', 'none')
# Tests whose bounds are times of the event loop: under ThreadSanitizer it
# runs 5-15 times slower (the login flood's probe took 10 s there), so they
# run in the other builds only.
LOOP_TIMING = pytest.mark.skipif(SANITIZE == 'thread',
                                 reason='bounds on the event loop\'s speed; under '
                                        'ThreadSanitizer it runs 5-15 times slower')
# the defaults (vmmd --help, PROTOCOL.md), given explicitly: the harness
# otherwise lifts them for the tests that are not about them
DEFAULT_LIMITS = ['--registrations-per-minute', '10', '--hashes-per-peer', '4']


class SecDaemon(vmmtest.Daemon):
    """vmmtest.Daemon, optionally started through a prefix command (prlimit)."""

    def __init__(self, tmp_path, prefix=(), **kw):
        self.prefix = list(prefix)
        super().__init__(tmp_path, **kw)

    def argv(self):
        return self.prefix + super().argv()

    def log_now(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')


@pytest.fixture
def sec(tmp_path, request):
    """Factory like make_daemon (conftest.py): every daemon is stopped with
    SIGTERM at the end and must exit 0 without a sanitizer report."""
    daemons = []

    def make(**kw):
        sub = tmp_path / f'd{len(daemons)}'
        sub.mkdir()
        d = SecDaemon(sub, **kw)
        daemons.append(d)
        return d

    yield make
    errors = []
    for d in daemons:
        try:
            d.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            d.cleanup()
    rep = getattr(request.node, 'rep_call', None)
    if rep is None or rep.failed or errors:
        for d in daemons:
            print(d.log_text()[-20000:])
    if errors:
        pytest.fail('\n'.join(errors))


def admin(d, **kw):
    return Admin(d.admin_socket, **kw)


def status(d):
    with admin(d) as a:
        return a.ok('status', timeout=60 if SANITIZED else 10)


def code_of(err):
    return err[0] if err else None


def auth_time(d, vm_id, source, n=3, password=PASSWORD):
    """Median time of n logins from source on an otherwise idle daemon: one
    password hash plus a commit, the unit of the timing bounds here."""
    times = []
    for _ in range(n):
        with Client(d.port, source=source, timeout=60) as c:
            t = time.monotonic()
            c.auth(vm_id, password)
            times.append(time.monotonic() - t)
    return statistics.median(times)


def timed_auth(d, vm_id, source, timeout=60, password=PASSWORD):
    with Client(d.port, source=source, timeout=timeout) as c:
        t = time.monotonic()
        err, res = c.call('auth', {'vm_id': vm_id, 'password': password}, timeout=timeout)
        return time.monotonic() - t, err, res


# ---------------------------------------------------------------- password change race

def pw(i):
    return f'race-pw-{i:04d}'


def password_race(d, what, login_method, login_params, send_change, read_change, check_token,
                  budget, min_rounds):
    """Rounds of: the password changes (send_change, not yet answered), then
    three connections send a login with the old password at once. With one
    hash worker the change's hash runs first and the logins' hashes after
    its write: each login read the old hash before the change committed and
    verifies against it after, the window the review found. Every token a
    login returns must be dead once the change is answered (check_token)."""
    loggers = [d.client(timeout=120) for _ in range(3)]
    checker = d.client(timeout=60)
    survivors = []
    rounds = tokens = refused = 0
    t0 = time.monotonic()
    try:
        for i in range(RACE_ROUNDS):
            if RACE_TIMED and i >= min_rounds and time.monotonic() - t0 > budget:
                break
            old, new = pw(i), pw(i + 1)
            send_change(old, new)
            time.sleep(0.02)            # the change is read first; its hash takes far longer
            ids = [c.send(login_method, login_params(old)) for c in loggers]
            read_change()
            got = []
            for c, msgid in zip(loggers, ids):
                msg = c.read_response(timeout=120)
                assert msg[1] == msgid, msg
                err, res = c.split(msg)
                if err is None:
                    got.append(res['token'])
                else:
                    assert err[0] == 'unauthenticated', f'round {i}: {login_method}: {err}'
                    refused += 1
            for tok in got:
                tokens += 1
                err, res = check_token(checker, tok)
                if err is None:
                    survivors.append((i, res))
                else:
                    assert err[0] == 'unauthenticated', err
            rounds += 1
            if survivors:
                break
    finally:
        for c in loggers + [checker]:
            c.close()
    took = time.monotonic() - t0
    print(f'\n{what}: {rounds} rounds in {took:.1f} s; logins with the old password: '
          f'{tokens} got a token ({len(survivors)} still valid after the change), '
          f'{refused} refused')
    assert not survivors, \
        f'{what}: a token from the old password still works after the change ' \
        f'(round {survivors[0][0]}: {survivors[0][1]!r}); {len(survivors)} in that round'
    assert rounds >= min_rounds


RACE_ARGS = ['--hash-workers', '1', '--auth-failures-per-minute', '1000000']


def test_vm_passwd_race_no_old_token_survives(sec):
    """High: three connections log in with the old password while an admin
    runs vm.passwd, round after round (up to 100, or 60 s): no token from
    the old password survives the change."""
    d = sec(args=RACE_ARGS)
    d.register('race1', password=pw(0))
    a = admin(d, timeout=120)
    pending = []

    def send_change(old, new):
        pending.append(a.send('vm.passwd', {'vm_id': 'race1', 'password': new}))

    def read_change():
        msg = a.read_response(timeout=120)
        assert msg[1] == pending.pop() and msg[2] is None, msg

    try:
        password_race(d, 'vm.passwd', 'auth',
                      lambda old: {'vm_id': 'race1', 'password': old},
                      send_change, read_change,
                      lambda c, tok: c.call('vm.get', {'token': tok}), budget=60, min_rounds=5)
    finally:
        a.close()
        d.stop()                            # exit 0, and no sanitizer report


def test_client_passwd_race_no_old_token_survives(sec):
    """The same race with the VM's own passwd: logins in flight with the old
    password get no session (up to 100 rounds, or 15 s)."""
    d = sec(args=RACE_ARGS)
    owner = d.login('race2', password=pw(0))
    owner.sock.settimeout(120)
    pending = []

    def send_change(old, new):
        pending.append(owner.send('passwd', {'password': old, 'new_password': new}))

    def read_change():
        msg = owner.read_response(timeout=120)
        assert msg[1] == pending.pop() and msg[2] is None, msg

    try:
        password_race(d, 'passwd', 'auth', lambda old: {'vm_id': 'race2', 'password': old},
                      send_change, read_change,
                      lambda c, tok: c.call('vm.get', {'token': tok}), budget=15,
                      min_rounds=2)
        # the session that changed the password is the one that survives
        assert owner.ok('vm.get')['vm_id'] == 'race2'
    finally:
        owner.close()


def test_user_set_password_race_no_old_token_survives(sec):
    """The same race for a person: user.auth in flight while an admin sets a
    new password with user.set (up to 100 rounds, or 15 s)."""
    d = sec(args=RACE_ARGS)
    a = admin(d, timeout=120)
    a.ok('user.create', {'name': 'racer', 'role': 'user', 'password': pw(0)}, timeout=60)
    pending = []

    def send_change(old, new):
        pending.append(a.send('user.set', {'name': 'racer', 'password': new}))

    def read_change():
        msg = a.read_response(timeout=120)
        assert msg[1] == pending.pop() and msg[2] is None, msg

    try:
        password_race(d, 'user.set', 'user.auth', lambda old: {'name': 'racer', 'password': old},
                      send_change, read_change,
                      lambda c, tok: c.call('whoami', {'token': tok}), budget=15,
                      min_rounds=2)
    finally:
        a.close()
        d.stop()                            # exit 0, and no sanitizer report


# ---------------------------------------------------------------- hash and registration floods

class Flooder(threading.Thread):
    """One connection from source pipelining requests (at most DEPTH
    unanswered) until stopped or the server closes; counts answers by code."""

    DEPTH = 16
    RATE = 20           # requests a second per connection at most

    def __init__(self, port, source, make_request, tag):
        super().__init__(daemon=True)
        self.port, self.source, self.make_request, self.tag = port, source, make_request, tag
        self.stop_ev = threading.Event()
        self.codes = {}
        self.sent = 0
        self.error = None

    def run(self):
        # the attacker is on another machine: its CPU must not be the
        # daemon's (on a 2-core box the flooding threads themselves would
        # starve vmmd's niced hash workers)
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass
        t0 = time.monotonic()
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.bind((self.source, 0))
            s.settimeout(10)
            s.connect(('127.0.0.1', self.port))
        except OSError as e:
            self.error = repr(e)
            return
        s.setblocking(False)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        out = bytearray()
        outstanding = 0
        try:
            while not self.stop_ev.is_set():
                allowed = int((time.monotonic() - t0) * self.RATE) + self.DEPTH - self.sent
                if not out and outstanding < self.DEPTH and allowed > 0:
                    for _ in range(min(self.DEPTH - outstanding, allowed)):
                        self.sent += 1
                        out += request_bytes(self.sent, *self.make_request(self.tag, self.sent))
                        outstanding += 1
                if out:
                    try:
                        del out[:s.send(out)]
                    except BlockingIOError:
                        pass
                r, _, _ = select.select([s], [], [], 0.05)
                if not r:
                    continue
                data = s.recv(65536)
                if not data:
                    break
                unpacker.feed(data)
                for msg in unpacker:
                    outstanding -= 1
                    err = msg[2] if isinstance(msg, list) and len(msg) == 4 else None
                    code = err.get('code') if isinstance(err, dict) else 'ok'
                    self.codes[code] = self.codes.get(code, 0) + 1
        except OSError:
            pass
        finally:
            s.close()

    def stop(self):
        self.stop_ev.set()


def flood_request(tag, i):
    kind, n = tag
    if kind == 'register':
        return 'register', {'vm_id': f'fl{n}-{i}', 'password': 'flood-pw-1', 'ram': 1, 'cpu': 1}
    return 'auth', {'vm_id': 'probe1', 'password': f'wrong-pw-{i}'}


def total_codes(flooders):
    out = {}
    for f in flooders:
        for k, v in f.codes.items():
            out[k] = out.get(k, 0) + v
    return out


@LOOP_TIMING
def test_login_flood_other_address_served_and_sigterm_in_time(sec):
    """Medium: 60 connections from one address pipeline register and wrong
    auth for 4 s (the review measured a real auth at 0.30 s before and 7.84 s
    after, and vmmd living 60-80 s past SIGTERM); each connection sends up to
    20 requests a second. With the default limits a login from another
    address waits for its own hash and at most the 4 the flooding address
    may have in flight, but the flood's answers take CPU from the niced hash
    threads: the bound is 12 hash times (measured before the flood) plus
    1 s; measured about 7 here, and about 40 for the old daemon's queue of
    one hash per flooding connection. At most 10 registrations get through;
    SIGTERM under the flood exits 0 within 10 s."""
    d = sec(args=DEFAULT_LIMITS)
    d.register('probe1', password=PASSWORD)
    hash_s = auth_time(d, 'probe1', '127.0.6.2')
    flooders = [Flooder(d.port, '127.0.6.1', flood_request, ('register' if i % 2 else 'auth', i))
                for i in range(60)]
    t0 = time.monotonic()
    for f in flooders:
        f.start()
    try:
        time.sleep(2.5)
        probe_s, err, _ = timed_auth(d, 'probe1', '127.0.6.2', timeout=60)
        assert err is None, f'the probe login failed: {err}'
        time.sleep(max(0.0, 4.0 - (time.monotonic() - t0)))
        codes = total_codes(flooders)
        limit = hash_s * 12 + 1.0
        print(f'\nhash time {hash_s:.2f} s; probe login from another address during the flood '
              f'{probe_s:.2f} s (bound {limit:.2f} s); flood answers after 4 s: {codes}')
        assert not [f.error for f in flooders if f.error]
        assert probe_s <= limit, \
            f'a login from another address took {probe_s:.2f} s under the flood ' \
            f'(hash {hash_s:.2f} s, bound {limit:.2f} s)'
        assert codes.get('rate_limited', 0) > 0, f'nothing was refused: {codes}'
        t = time.monotonic()
        rc = d.stop(timeout=10)
        stop_s = time.monotonic() - t
    finally:
        for f in flooders:
            f.stop()
        for f in flooders:
            f.join(10)
    codes = total_codes(flooders)
    print(f'SIGTERM under the flood: exit {rc} after {stop_s:.2f} s; all answers: {codes}')
    with open(d.log_path, 'rb') as f:
        text = f.read().decode('utf-8', 'replace')
    registered = len(re.findall(r"VM 'fl\d+-\d+' registered", text))
    print(f'registrations that got through: {registered}')
    assert registered <= 10, f'{registered} registrations from one address in a minute'


def test_registrations_per_minute(sec):
    """Medium: register is limited per address like failed logins
    (registrations_per_minute, here 3): the 4th and 5th from one address are
    rate_limited without hashing; another address still registers."""
    d = sec(args=['--registrations-per-minute', '3'])
    with Client(d.port, source='127.0.7.1', timeout=60) as c:
        res = c.pipeline([('register', {'vm_id': f'rg{i}', 'password': PASSWORD, 'ram': 1,
                                        'cpu': 1}) for i in range(5)], timeout=60)
    codes = [code_of(e) for e, _ in res]
    assert codes == [None, None, None, 'rate_limited', 'rate_limited'], codes
    assert 'registrations' in res[3][0][1], res[3][0]
    with Client(d.port, source='127.0.7.2', timeout=60) as c:
        assert c.register('rg9')['vm_id'] == 'rg9'
    st = status(d)
    assert st['vms'] == 4, st


def send_logins(d, sources, params):
    """One login per source address, sent at once on its own connection;
    -> [(code, seconds)] in the order of sources."""
    conns = [Client(d.port, source=s, timeout=120) for s in sources]
    try:
        t0 = time.monotonic()
        for c in conns:
            c.send('auth', params)
        out = [None] * len(conns)
        pending = {c.sock.fileno(): i for i, c in enumerate(conns)}
        while pending:
            r, _, _ = select.select(list(pending), [], [], 120)
            assert r, 'no answer in 120 s'
            for fd in r:
                i = pending.pop(fd)
                err, _ = conns[i].split(conns[i].read_response(timeout=120))
                out[i] = (code_of(err), time.monotonic() - t0)
        return out
    finally:
        for c in conns:
            c.close()


def test_hashes_in_flight_per_address(sec):
    """Medium: at most 4 password checks in flight per address, counted
    before hashing: of 8 logins sent at once from one address, 4 are hashed
    and the others answered rate_limited at once (before any hash ends)."""
    d = sec(args=['--hashes-per-peer', '4', '--hash-workers', '1',
                  '--auth-failures-per-minute', '1000'])
    got = send_logins(d, ['127.0.8.1'] * 8, {'vm_id': 'nobody', 'password': 'wrong-pw-1'})
    print(f'\n8 logins at once from one address: {got}')
    limited = [t for c, t in got if c == 'rate_limited']
    hashed = [t for c, t in got if c == 'unauthenticated']
    assert len(limited) + len(hashed) == 8, got
    assert len(hashed) <= 4 and len(limited) >= 4, got
    assert max(limited) < min(hashed), 'a refused login waited for a hash'
    # another address is not affected
    got = send_logins(d, ['127.0.8.2'], {'vm_id': 'nobody', 'password': 'wrong-pw-1'})
    assert got[0][0] == 'unauthenticated', got


def test_hash_queue_bound(sec):
    """Medium: the hash queue is bounded (--hash-queue-max, here 2 waiting):
    of 10 logins from 10 addresses sent at once, about 3 are hashed (2
    waiting + 1 running) and the rest answered rate_limited at once, with
    nothing queued (status: hashes done = logins hashed)."""
    d = sec(args=['--hash-queue-max', '2', '--hash-workers', '1',
                  '--auth-failures-per-minute', '1000'])
    got = send_logins(d, [f'127.0.9.{i}' for i in range(1, 11)],
                      {'vm_id': 'nobody', 'password': 'wrong-pw-1'})
    print(f'\n10 logins at once, queue bound 2: {got}')
    limited = [t for c, t in got if c == 'rate_limited']
    hashed = [t for c, t in got if c == 'unauthenticated']
    assert len(limited) + len(hashed) == 10, got
    assert len(hashed) <= 4 and len(limited) >= 6, got
    assert max(limited) < min(hashed), 'a refused login waited for a hash'
    st = status(d)
    print(f'jobs: {st.get("jobs")}')
    assert st['jobs']['hashes'] == len(hashed) and st['jobs']['hashes_refused'] == len(limited), st


@LOOP_TIMING
def test_waiting_hashes_dropped_at_shutdown(sec):
    """Medium: pending hash jobs are dropped at shutdown (after a 3 s grace for
    what was received before it): with 100 logins
    waiting for one hash worker (100 hashes of work), SIGTERM still exits 0
    within 10 s, and the waiting logins are answered shutting_down."""
    d = sec(args=['--hash-workers', '1', '--auth-failures-per-minute', '100000'])
    conns = [d.client(timeout=30) for _ in range(100)]
    try:
        for c in conns:
            c.send('auth', {'vm_id': 'nobody', 'password': 'wrong-pw-1'})
        time.sleep(0.5)
        t = time.monotonic()
        d.stop(timeout=10)
        stop_s = time.monotonic() - t
        codes = {}
        for c in conns:
            try:
                err, _ = c.split(c.read_response(timeout=5))
                codes[code_of(err)] = codes.get(code_of(err), 0) + 1
            except (Closed, OSError):
                codes['closed'] = codes.get('closed', 0) + 1
    finally:
        for c in conns:
            c.close()
    print(f'\nSIGTERM with 100 logins waiting: exit after {stop_s:.2f} s; answers {codes}')
    assert codes.get('shutting_down', 0) >= 50, codes


# ---------------------------------------------------------------- vm_visibility

def test_vm_visibility_self(sec):
    """Medium: with vm_visibility = self a VM session's vm.list and disk.list
    show only its own VM and disks (attached or by token); the admin socket
    still sees everything."""
    d = sec(args=['--vm-visibility', 'self'])
    with d.client() as c:
        res = c.pipeline([
            ('register', {'vm_id': 'vis1', 'password': PASSWORD, 'ram': 1, 'cpu': 1,
                          'disks': [{'id': 'vis1-a', 'size': 1}, {'id': 'vis1-b', 'size': 2}]}),
            ('register', {'vm_id': 'vis2', 'password': PASSWORD, 'ram': 1, 'cpu': 1,
                          'disks': [{'id': 'vis2-a', 'size': 3}]})], timeout=60)
        assert all(e is None for e, _ in res), res
    other = d.login('vis2', register=False)
    c = d.login('vis1', register=False)
    try:
        for p in ({}, {'token': c.token}):
            with d.client() as fresh:
                cl = c if not p else fresh
                for f in ('all', 'authorized', 'connected'):
                    vms = cl.ok('vm.list', dict(p, filter=f))['vms']
                    assert [v['vm_id'] for v in vms] == ['vis1'], (f, p, vms)
                disks = cl.ok('disk.list', p)['disks']
                assert [x['id'] for x in disks] == ['vis1-a', 'vis1-b'], disks
                assert cl.ok('vm.list', dict(p, filter='connected', after='vis1'))['vms'] == []
                assert cl.ok('disk.list', dict(p, after='vis1-b'))['disks'] == []
        with admin(d) as a:
            assert len(a.ok('vm.list', {'filter': 'all'})['vms']) == 2
            assert len(a.ok('disk.list')['disks']) == 3
    finally:
        c.close()
        other.close()


def test_vm_visibility_self_pages_after(sec):
    """A VM session's own VM is not on the page after itself (after need
    not exist, and the page holds only ids past it)."""
    d = sec(args=['--vm-visibility', 'self'])
    c = d.login('vis1')
    try:
        assert c.ok('vm.list', {'filter': 'all', 'after': 'vis0'})['vms'][0]['vm_id'] == 'vis1'
        assert c.ok('vm.list', {'filter': 'all', 'after': 'vis1'})['vms'] == []
        assert c.ok('vm.list', {'filter': 'all', 'after': 'zzz'})['vms'] == []
    finally:
        c.close()


# ---------------------------------------------------------------- backups

def pipe_fill(fd):
    import fcntl
    import termios
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, 'little')


def big_disks(tag, n=64):
    return [{'id': f'{tag}-{j:02d}'.ljust(64, 'd'), 'size': 1} for j in range(n)]


def test_backup_to_a_stalled_reader_blocks_nothing(sec, tmp_path):
    """Medium, and issue 9: a backup to a pipe nobody reads (4 KiB of pipe)
    stalls. The database is made larger than the pipes on the way (6 VMs of
    64 disks), so that a backup which kept its read transaction open would
    keep it open now; meanwhile 600 updates that replace 64 disk ids each
    (about 16 MiB of pages that such a reader would pin: the old daemon
    then blocked on the map's growth at about 310) each answer within 1 s,
    a new login within its hash time plus 1 s (twice the hash, on a loaded
    machine), and a second backup is conflict. When the reader goes away
    the stalled backup fails with an error, and the next one works."""
    import fcntl
    d = sec()
    owner = d.login('bk1', disks=big_disks('bk1'))
    with d.client() as c:
        res = c.pipeline([('register', {'vm_id': f'bk{i}', 'password': PASSWORD, 'ram': 1,
                                        'cpu': 1, 'disks': big_disks(f'bk{i}')})
                          for i in range(2, 7)], timeout=120)
        assert all(e is None for e, _ in res), res
    hash_s = auth_time(d, 'bk2', '127.0.10.1', n=2)
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    b = admin(d, timeout=60)
    try:
        socket.send_fds(b.sock, [request_bytes(1, 'backup')], [w])
        os.close(w)
        w = None
        assert wait_until(lambda: pipe_fill(r) >= 4096, timeout=10), \
            f'the backup did not fill the pipe ({pipe_fill(r)} bytes)'
        time.sleep(0.3)
        lat = []
        for i in range(600):
            t = time.monotonic()
            try:
                res = owner.ok('vm.update', {'disks': big_disks(f'u{i % 2}')}, timeout=10)
            except socket.timeout:
                pytest.fail(f'update {i} got no answer in 10 s while a backup was stalled '
                            f'({status(d)["db"]})')
            assert res['disks'][0]['id'].startswith(f'u{i % 2}-')
            lat.append(time.monotonic() - t)
        try:
            auth_s, err, _ = timed_auth(d, 'bk2', '127.0.10.2', timeout=30)
        except socket.timeout:
            pytest.fail('a login got no answer in 30 s while a backup was stalled')
        assert err is None, err
        path = os.path.join(str(tmp_path), 'second.mdb')
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with admin(d) as a2:
                msgid = a2.new_id()
                socket.send_fds(a2.sock, [request_bytes(msgid, 'backup')], [fd])
                second = a2.split(a2.read_response(timeout=30))
        finally:
            os.close(fd)
        print(f'\nwith a stalled backup: 600 vm.update, max {max(lat) * 1000:.0f} ms; login '
              f'{auth_s:.2f} s (hash {hash_s:.2f} s); second backup: {second[0] or second[1]}')
        assert max(lat) < 1.0, f'vm.update took {max(lat):.2f} s while a backup was stalled'
        assert auth_s < 2 * hash_s + 1.0, \
            f'a login took {auth_s:.2f} s while a backup was stalled (hash {hash_s:.2f} s)'
        assert second[0] is not None and second[0][0] == 'conflict', \
            f'a second backup while one runs answered {second}'
        b.sock.settimeout(0.2)
        with pytest.raises(socket.timeout):
            b.read(timeout=0.2)             # the first is still stalled
        os.close(r)
        r = None
        first = b.split(b.read_response(timeout=15))
        assert first[0] is not None, f'a backup whose reader went away succeeded: {first}'
        print(f'stalled backup, reader gone: {first[0]}')
    finally:
        if w is not None:
            os.close(w)
        if r is not None:
            os.close(r)
        b.close()
        owner.close()
    r2, w2 = os.pipe()
    got = []
    t = threading.Thread(target=lambda: got.append(b''.join(iter(lambda: os.read(r2, 65536), b''))))
    t.start()
    try:
        with admin(d) as a:
            msgid = a.new_id()
            socket.send_fds(a.sock, [request_bytes(msgid, 'backup')], [w2])
            os.close(w2)
            w2 = None
            res = a.split(a.read_response(timeout=60))
    finally:
        if w2 is not None:
            os.close(w2)
        t.join(30)
        os.close(r2)
    assert res[0] is None and res[1]['bytes'] == len(got[0]) > 0, res


# ---------------------------------------------------------------- connection slots and memory

def reset_hwm(pid):
    """Peak RSS from now on (clear_refs 5, Linux 4.0): the password hashes
    before (64 MiB each, argon2id) must not count."""
    with open(f'/proc/{pid}/clear_refs', 'w') as f:
        f.write('5')


def hwm_kib(pid):
    """The process's peak RSS (VmHWM): catches a peak between two samples."""
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    raise AssertionError('no VmHWM')


def open_many(port, n, sources, mss=None, rcvbuf=None):
    """n TCP connections spread over source addresses; -> [(socket, opened at)]."""
    out = []
    try:
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            out.append((s, None))
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if mss:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
            s.bind((sources[i % len(sources)], 0))
            s.settimeout(10)
            s.connect(('127.0.0.1', port))
            out[-1] = (s, time.monotonic())
    except BaseException:
        for s, _ in out:
            s.close()
        raise
    return out


def wait_all_eof(conns, deadline):
    """Waits until the server closed each connection (EOF or reset), reading
    and discarding what comes first; -> [seconds from open to EOF or None]."""
    ep = select.epoll()
    closed_at = [None] * len(conns)
    fds = {}
    for i, (s, _) in enumerate(conns):
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        fds[s.fileno()] = i
    try:
        while fds and time.monotonic() < deadline:
            for fd, _ in ep.poll(max(0.0, min(0.2, deadline - time.monotonic()))):
                i = fds.get(fd)
                if i is None:
                    continue
                s = conns[i][0]
                try:
                    while True:
                        data = s.recv(262144)
                        if not data:
                            break
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                closed_at[i] = time.monotonic() - conns[i][1]
                ep.unregister(fd)
                del fds[fd]
    finally:
        ep.close()
    return closed_at


def close_all(conns):
    for s, _ in conns:
        s.close()


N_IDLE = 2000
IDLE_SOURCES = ['127.0.11.1', '127.0.11.2', '127.0.11.3']     # under 1024 per address


def test_idle_timeout_closes_every_connection(sec):
    """Issue 9, issue 10 (a): the idle sweep looked at one connection per
    tick (40 idle connections with --idle-timeout 1 took 20.9 s to close).
    2,000 idle anonymous connections with --idle-timeout 1 are all closed
    within 2 s of their timeout."""
    raise_nofile(2 * N_IDLE + 1024)
    d = sec(args=['--idle-timeout', '1'])
    conns = open_many(d.port, N_IDLE, IDLE_SOURCES)
    try:
        opened = time.monotonic() - conns[0][1]
        closed_at = wait_all_eof(conns, time.monotonic() + 1 + 2 + 3)
    finally:
        close_all(conns)
    done = [t for t in closed_at if t is not None]
    late = [t for t in done if t > 1 + 2]
    print(f'\n{N_IDLE} idle connections opened in {opened:.2f} s; {len(done)} closed, '
          f'last {max(done) if done else float("nan"):.2f} s after its open, {len(late)} '
          f'later than 3 s')
    assert len(done) == N_IDLE, f'{N_IDLE - len(done)} of {N_IDLE} idle connections still open'
    assert not late, f'{len(late)} connections closed more than 2 s after their timeout'
    assert min(done) >= 0.9, f'a connection closed {min(done):.2f} s after its open (timeout 1 s)'


def test_shutdown_closes_every_idle_connection(sec):
    """Issue 9: the shutdown tick also closed one connection per tick (50 ms),
    so 2,000 idle connections held the stop until its 8 s deadline closed
    them all. Now every one is half-closed at the first tick and given 2 s
    to answer with its EOF: SIGTERM exits 0 within 5 s, and every one of
    them is closed."""
    raise_nofile(2 * N_IDLE + 1024)
    d = sec()
    conns = open_many(d.port, N_IDLE, IDLE_SOURCES)
    try:
        assert wait_until(lambda: status(d)['connections'] >= N_IDLE, timeout=10)
        t = time.monotonic()
        d.stop(timeout=10)
        stop_s = time.monotonic() - t
        closed_at = wait_all_eof(conns, time.monotonic() + 2)
    finally:
        close_all(conns)
    print(f'\nSIGTERM with {N_IDLE} idle connections: exit after {stop_s:.2f} s')
    assert all(t is not None for t in closed_at)
    assert stop_s < 5.0, f'SIGTERM with {N_IDLE} idle connections took {stop_s:.2f} s'


@LOOP_TIMING
def test_anonymous_pipelining_non_readers_are_idle(sec):
    """Medium (b): 200 anonymous clients pipeline 4,000 pings each and never
    read (the review: 192 of 200 still open 13 s after a 3 s timeout). Their
    answers fill the socket buffers (a small MSS keeps the kernel's share
    small), nothing moves either way, and the idle timeout (2 s) closes
    every one of them within 2 s of it."""
    raise_nofile(1024)
    d = sec(args=['--idle-timeout', '2', '--max-unsent-total', str(1 << 30)])
    batch = b''.join(request_bytes(i + 1, 'ping') for i in range(4000))
    conns = open_many(d.port, 200, ['127.0.12.1'], mss=536, rcvbuf=4096)
    try:
        for s, _ in conns:
            s.sendall(batch)
        sent_at = time.monotonic()
        # the daemon holds unsent output for them: they would never drain
        unsent = max(status(d).get('unsent_bytes', 0) for _ in range(3))
        # (a sanitizer build takes seconds to answer 800,000 pings: its idle
        # clocks start later)
        ok = wait_until(lambda: status(d)['connections'] == 0,
                        timeout=30 if SANITIZED else 2 + 2 + 1)
        left = status(d)['connections']
        took = time.monotonic() - sent_at
    finally:
        close_all(conns)
    print(f'\n200 pipelining non-readers: {unsent} bytes unsent in vmmd; {left} still open '
          f'{took:.1f} s after the last send (idle timeout 2 s)')
    assert ok, f'{left} of 200 non-reading anonymous clients still open {took:.1f} s ' \
        f'after they stopped (idle timeout 2 s)'
    text = d.log_now()
    assert len(re.findall(r'idle without a session', text)) >= 200, 'not closed as idle'


@pytest.fixture(scope='module')
def non_readers(tmp_path_factory):
    """Medium (c), run once for the two tests below: 200 clients pipeline
    disk.list with a token (answers of about 6 KB, 2 MiB of them each: past
    the 1 MiB per connection at which vmmd stops reading one) and never
    read, all at once. Measures vmmd's RSS, how many were closed as the
    largest non-readers, and a served client's pings meanwhile."""
    raise_nofile(1024)
    d = SecDaemon(tmp_path_factory.mktemp('nonreaders'))
    conns = []
    owner = None
    try:
        disks = [{'id': f'u{j:02d}'.ljust(64, 'd'), 'size': 2 ** 40} for j in range(64)]
        owner = d.login('unsent1', disks=disks)
        one = request_bytes(1, 'disk.list', {'token': owner.token})
        reply = len(vmmtest.pack(owner.ok('disk.list')))
        per_client = (2 * MIB) // reply + 1
        batch = one * per_client
        reset_hwm(d.pid)
        rss0 = rss_kib(d.pid)
        lat = []
        unsent_seen = 0
        conns = open_many(d.port, 200, ['127.0.13.1'], mss=536, rcvbuf=4096)
        for s, _ in conns:
            s.setblocking(False)
        left = {i: batch for i in range(len(conns))}
        deadline = time.monotonic() + 30
        slow = 60 if SANITIZED else 10      # a burst of 34,000 answers to produce
        a = admin(d)
        while left and time.monotonic() < deadline:
            for i in list(left):
                try:
                    n = conns[i][0].send(left[i])
                    left[i] = left[i][n:]
                    if not left[i]:
                        del left[i]
                except BlockingIOError:
                    pass
                except OSError:
                    del left[i]             # closed by vmmd
            unsent_seen = max(unsent_seen, a.ok('status', timeout=slow).get('unsent_bytes', 0))
            t = time.monotonic()
            assert owner.ok('ping', timeout=slow)['pong'] is True
            lat.append(time.monotonic() - t)
            time.sleep(0.01)
        for _ in range(20):
            unsent_seen = max(unsent_seen, a.ok('status', timeout=slow).get('unsent_bytes', 0))
            t = time.monotonic()
            assert owner.ok('ping', timeout=slow)['pong'] is True
            lat.append(time.monotonic() - t)
            time.sleep(0.05)
        a.close()
        peak = hwm_kib(d.pid)
        text = d.log_now()
        out = {'growth_mib': (peak - rss0) / 1024, 'rss0_mib': rss0 / 1024,
               'closed': len(re.findall(r'does not read its replies', text)),
               'unsent_seen': unsent_seen, 'ping_max': max(lat), 'reply': reply,
               'per_client': per_client, 'sanitized': sanitized(d.pid)}
        print(f'\n200 non-readers of disk.list ({reply} bytes an answer, {per_client} each): '
              f'RSS {out["rss0_mib"]:.1f} MiB, +{out["growth_mib"]:.1f} MiB at the peak; '
              f'{out["closed"]} closed as the largest non-readers; unsent at most '
              f'{unsent_seen} bytes when looked at; ping max {out["ping_max"] * 1000:.0f} ms')
        yield out
    finally:
        close_all(conns)
        if owner is not None:
            owner.close()
        try:
            d.stop()
        finally:
            d.cleanup()


@LOOP_TIMING
def test_unsent_output_bounded_in_total(non_readers):
    """Past max_unsent_total (64 MiB) the largest non-reading connections are
    closed; the unsent total vmmd reports never passes it; a client that
    reads is served throughout (within seconds: the burst is 200 MiB of
    answers to produce)."""
    m = non_readers
    assert m['closed'] > 0, 'no non-reader was closed'
    assert 0 < m['unsent_seen'] <= 64 * MIB + MIB, m
    assert m['ping_max'] < 5.0 or SANITIZED, m


@pytest.mark.skipif(SANITIZED, reason='RSS says nothing under a sanitizer (quarantine, shadow '
                    'memory)')
def test_unsent_total_bounds_memory(non_readers):
    """vmmd's RSS stays near max_unsent_total (64 MiB, plus 40 MiB for the
    input buffers and the allocator) with 200 non-readers (the review: +300
    MiB)."""
    m = non_readers
    assert m['growth_mib'] < 64 + 40, \
        f'RSS grew by {m["growth_mib"]:.1f} MiB with 200 non-readers (bound 64 MiB in total)'


# ---------------------------------------------------------------- descriptors

def nofile(pid):
    with open(f'/proc/{pid}/limits') as f:
        for line in f:
            if line.startswith('Max open files'):
                return int(line.split()[3]), int(line.split()[4])
    raise AssertionError('no Max open files')


def test_fd_limit_raised_and_warned(sec):
    """Medium (d): by hand (no LimitNOFILE=), vmmd raises its soft
    RLIMIT_NOFILE to the hard limit at start, and warns when max_connections
    cannot fit in it."""
    d = sec(prefix=['prlimit', '--nofile=256:4096', '--'], args=['--max-connections', '1000'])
    assert nofile(d.pid) == (4096, 4096), f'soft limit not raised: {nofile(d.pid)}'
    assert 'descriptors are allowed' not in d.log_now()
    small = sec(prefix=['prlimit', '--nofile=128:128', '--'])
    assert nofile(small.pid) == (128, 128)
    text = small.log_now()
    assert re.search(r'max_connections is 16384 but only 128 descriptors', text), text


def fill_descriptors(d, n=200):
    """More TCP connections than vmmd has descriptors (RLIMIT_NOFILE 128):
    it accepts what it can, the rest wait in the listen queue."""
    conns = open_many(d.port, n, ['127.0.14.1'])
    assert wait_until(lambda: len(os.listdir(f'/proc/{d.pid}/fd')) >= 127, timeout=10), \
        f'vmmd holds only {len(os.listdir(f"/proc/{d.pid}/fd"))} descriptors'
    return conns


def test_fd_exhaustion_accept_pause_logged_rarely(sec):
    """Low: out of descriptors, vmmd pauses accepting for 100 ms at a time and
    says so at most once per 10 s (the old daemon: a line every 100 ms). The
    daemon keeps serving a connection it already has."""
    d = sec(prefix=['prlimit', '--nofile=128:128', '--'])
    served = d.client()
    conns = fill_descriptors(d)
    try:
        time.sleep(3)
        assert served.ok('ping', timeout=5)['pong'] is True
    finally:
        close_all(conns)
        served.close()
    lines = d.log_now().count('Cannot accept on')
    print(f'\n3 s out of descriptors: {lines} accept-pause log lines')
    assert 1 <= lines <= 2, f'{lines} accept-pause lines in 3 s'


def test_fd_exhaustion_admin_socket_answers(sec):
    """Low: with every descriptor taken by TCP connections (RLIMIT_NOFILE
    128, 200 connections, more waiting), the admin socket still answers
    status at once, by hand and with vmadm."""
    d = sec(prefix=['prlimit', '--nofile=128:128', '--'])
    conns = fill_descriptors(d)
    try:
        time.sleep(0.5)
        t = time.monotonic()
        try:
            with admin(d, timeout=5) as a:
                st = a.ok('status', timeout=5)
        except OSError as e:
            pytest.fail(f'admin status: no answer in 5 s with descriptors exhausted ({e!r})')
        took = time.monotonic() - t
        assert st['connections'] > 0 and took < 2.0, (took, st)
        vmadm = os.environ.get('VMADM_BIN')
        if vmadm:
            p = subprocess.run([vmadm, '--socket', d.admin_socket, '--timeout', '5', 'status'],
                               capture_output=True, text=True, timeout=30)
            assert p.returncode == 0 and 'connections' in p.stdout, (p.returncode, p.stderr)
    finally:
        close_all(conns)


# ---------------------------------------------------------------- lockout

BAD_TOKEN = 'B' * 43


def failed_resumes(port, source, n, host='127.0.0.1', **peer):
    """n resumes with an unknown token (a failed login each, no hash); ->
    their error codes."""
    with Client(port, host, source=source, timeout=30) as c:
        return [code_of(c.call('resume', dict(peer, token=BAD_TOKEN))[0]) for _ in range(n)]


def test_lockout_ipv4_counts_each_address(sec):
    """Low (a guard: the old daemon passed it too): IPv4 addresses count as
    they are, so three 127.0.4.x addresses failing each have their own limit
    (3 a minute here)."""
    d = sec(args=['--auth-failures-per-minute', '3'])
    for i in (1, 2, 3):
        src = f'127.0.4.{i}'
        assert failed_resumes(d.port, src, 4) == ['unauthenticated'] * 3 + ['rate_limited'], src
        with Client(d.port, source=src) as c:
            c.err('auth', {'vm_id': 'nobody', 'password': PASSWORD}, 'rate_limited')
    assert failed_resumes(d.port, '127.0.4.4', 1) == ['unauthenticated']


class Activated:
    """vmmd under systemd-socket-activate (as vmmd.socket hands it over):
    listen is a list of (address, name)."""

    def __init__(self, tmp, listen, args=()):
        self.tmp = str(tmp)
        self.state_dir = os.path.join(self.tmp, 'state')
        os.makedirs(self.state_dir, exist_ok=True)
        self.log_path = os.path.join(self.tmp, 'activate.log')
        self.logf = open(self.log_path, 'wb')
        argv = ['systemd-socket-activate']
        for addr, _ in listen:
            argv += ['-l', addr]
        argv.append('--fdname=' + ':'.join(name for _, name in listen))
        for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS', 'LSAN_OPTIONS', 'TSAN_OPTIONS'):
            if k in os.environ:
                argv += ['-E', f'{k}={os.environ[k]}']
        argv += [vmmtest.vmmd_bin(), '--state-dir', self.state_dir] + list(args)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf)
        ok = wait_until(lambda: self.log().count('Listening on') >= len(listen)
                        or self.proc.poll() is not None, timeout=10)
        assert ok and self.proc.poll() is None, 'systemd-socket-activate:\n' + self.log()

    def log(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError('vmmd did not exit within 10 s of SIGTERM:\n' + self.log())
        finally:
            self.logf.close()


def test_lockout_ipv4_mapped_counts_as_ipv4(tmp_path):
    """Low: IPv4-mapped IPv6 is folded into IPv4. A dual-stack socket (what
    ListenStream=[::]:PORT hands over; vmmd itself binds IPv6 with
    IPV6_V6ONLY) sees 127.0.0.1 as ::ffff:127.0.0.1; its failed logins count
    against 127.0.0.1 on an IPv4 socket of the same daemon, and back."""
    if not shutil_which('systemd-socket-activate'):
        pytest.skip('systemd-socket-activate is not installed')
    try:
        p6 = free_port('::')
    except OSError:
        pytest.skip('no IPv6 here')
    p4 = free_port()
    sockdir = short_tmpdir()
    admin_path = os.path.join(sockdir, 'admin.sock')
    a = Activated(tmp_path, [(f'[::]:{p6}', 'client'), (f'127.0.0.1:{p4}', 'client'),
                             (admin_path, 'admin')],
                  args=vmmtest.compat_argv(['', '--auth-failures-per-minute', '3'],
                                           vmmtest.vmmd_bin())[1:])
    try:
        with Client(p6, '127.0.0.1') as c:      # dual stack: the daemon sees ::ffff:127.0.0.1
            assert c.ok('ping')['pong'] is True
        assert failed_resumes(p6, '127.0.0.1', 3) == ['unauthenticated'] * 3
        assert failed_resumes(p4, '127.0.0.1', 1) == ['rate_limited'], \
            '::ffff:127.0.0.1 and 127.0.0.1 are counted apart'
        # and the other way round, from another address
        assert failed_resumes(p4, '127.0.0.2', 3) == ['unauthenticated'] * 3
        assert failed_resumes(p6, '127.0.0.2', 1) == ['rate_limited']
        assert failed_resumes(p6, '127.0.0.3', 1) == ['unauthenticated']
        assert a.stop() == 0, a.log()
    finally:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        import shutil
        shutil.rmtree(sockdir, ignore_errors=True)
    assert 'Sanitizer' not in a.log() and 'runtime error:' not in a.log(), a.log()


def shutil_which(name):
    import shutil
    return shutil.which(name)


def test_lockout_ipv6_by_prefix_and_mapped_text(sec):
    """Low: IPv6 addresses count per /64 (--ipv6-prefix), and a mapped
    address named by a trusted proxy counts as its IPv4 address. (Loopback
    has one IPv6 address, so the addresses come as a trusted proxy's peer,
    which takes the same way into the per-address counters as a socket's.)"""
    d = sec(args=['--trusted-proxies', '127.0.0.1', '--auth-failures-per-minute', '3'])

    def fails(peer, n):
        return failed_resumes(d.port, '127.0.0.1', n, peer=peer)

    assert fails('2001:db8::1', 3) == ['unauthenticated'] * 3
    assert fails('2001:db8::ffff:2', 1) == ['rate_limited'], 'the same /64 counted apart'
    assert fails('2001:db8:0:1::1', 1) == ['unauthenticated'], 'another /64 counted together'
    assert fails('::ffff:192.0.2.7', 3) == ['unauthenticated'] * 3
    assert fails('192.0.2.7', 1) == ['rate_limited'], '::ffff:192.0.2.7 not folded into IPv4'
    assert fails('192.0.2.8', 1) == ['unauthenticated']
    # the proxy's own address is not what was counted
    assert failed_resumes(d.port, '127.0.0.1', 1) == ['unauthenticated']
    narrow = sec(args=['--trusted-proxies', '127.0.0.1', '--auth-failures-per-minute', '3',
                       '--ipv6-prefix', '128'])
    assert failed_resumes(narrow.port, '127.0.0.1', 3, peer='2001:db8::1') == \
        ['unauthenticated'] * 3
    assert failed_resumes(narrow.port, '127.0.0.1', 1, peer='2001:db8::2') == \
        ['unauthenticated'], '--ipv6-prefix 128 still counts a /64'


def test_valid_resume_from_locked_out_address(sec):
    """Low: a lockout does not refuse resume with a valid token (it proves
    possession); a bad token and auth from there are still rate_limited."""
    d = sec(args=['--auth-failures-per-minute', '3'])
    with Client(d.port, source='127.0.4.9') as c:
        token = c.register('lk1') and c.auth('lk1')['token']
    assert failed_resumes(d.port, '127.0.4.10', 4) == ['unauthenticated'] * 3 + ['rate_limited']
    with Client(d.port, source='127.0.4.10') as c:
        res = c.ok('resume', {'token': token})
        assert res['vm_id'] == 'lk1'
        assert c.ok('vm.get')['vm_id'] == 'lk1'
        c.err('resume', {'token': BAD_TOKEN}, 'rate_limited')
        c.err('auth', {'vm_id': 'lk1', 'password': PASSWORD}, 'rate_limited')


def test_passwd_wrong_old_password_is_a_failed_login(sec):
    """Low: wrong old passwords at passwd count as failed logins: limited
    (3 a minute here, then rate_limited without hashing), logged, and an
    auth.failed event each."""
    d = sec(args=['--auth-failures-per-minute', '3'])
    c = d.login('pw1')
    w = admin(d, timeout=30)
    try:
        assert w.ok('events.watch') is not None
        codes = [code_of(c.call('passwd', {'password': f'wrong-pw-{i}',
                                           'new_password': 'new-pw-123'}, timeout=60)[0])
                 for i in range(4)]
        assert codes == ['unauthenticated'] * 3 + ['rate_limited'], codes
        events = []
        deadline = time.monotonic() + 10
        while len([e for e in events if e.get('type') == 'auth.failed']) < 3:
            assert time.monotonic() < deadline, f'auth.failed events missing: {events}'
            msg = w.read(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(msg, list) and len(msg) == 3 and msg[0] == 2:
                events.append(msg[2][0])
        failed = [e for e in events if e.get('type') == 'auth.failed']
        assert all(e.get('vm_id') == 'pw1' for e in failed), failed
        # the right password still works, once the minute is over only: the
        # address is locked out now
        c.err('passwd', {'password': PASSWORD, 'new_password': 'new-pw-123'}, 'rate_limited')
    finally:
        w.close()
        c.close()
    lines = re.findall(r"Failed login for VM 'pw1'", d.log_now())
    assert len(lines) == 3, d.log_now()


# ---------------------------------------------------------------- threads

def test_resume_purge_reload_at_once(sec, tmp_path):
    """Issue 9 (data race): resume's write ran on the writer thread and
    searched the loop's tree of attached sessions (when the stored session
    had expired but a connection held it); the writer read log_max_level and
    sessions_per_vm while a reload wrote them. Here, for 4 s with a session
    TTL of 1 s (a purge a second): three threads resume on a new connection
    each time (attach and detach, churning that tree), one resumes every
    1.2 s a session that has expired in the store while another connection
    holds it (the old race's path), one updates, a session nobody holds
    expires and is purged, and the configuration is reloaded (SIGHUP) every
    0.2 s with other values. Every answer is right and vmmd exits 0; under a
    ThreadSanitizer build (meson setup build-tsan -Db_sanitize=thread) a
    race report fails the test (vmmtest looks for 'ThreadSanitizer' in the
    log, and TSan makes the exit status non-zero)."""
    conf = tmp_path / 'vmmd.conf'

    def write_conf(i):
        conf.write_text(f'sessions_per_vm = {4 + i % 4}\n'
                        f'log_level = {"debug" if i % 2 else "info"}\n'
                        f'auth_failures_per_minute = {100 + i}\n'
                        f'idle_timeout = {30 + i % 3}\n')

    write_conf(0)
    d = sec(args=['--config', str(conf), '--session-ttl', '1'])
    with d.client(timeout=60) as c:
        res = c.pipeline([('register', {'vm_id': f'tr{i}', 'password': PASSWORD, 'ram': 1,
                                        'cpu': 1}) for i in range(4)], timeout=60)
        assert all(e is None for e, _ in res), res
    # attached connections keep their sessions alive (TTL 1 s) all along
    holders = [d.login(f'tr{i}', register=False) for i in range(4)]
    tokens = [h.token for h in holders]
    with d.client(timeout=60) as c:
        c.auth('tr0')                       # a session left to expire and be purged
    stop = threading.Event()
    errors = []
    counts = {'resume': 0, 'stale': 0, 'update': 0, 'reload': 0}

    def guarded(name, f):
        def run():
            try:
                f()
            except Exception as e:   # noqa: recorded, the test fails on it
                errors.append(f'{name}: {e!r}')
        return run

    def churner(k):
        while not stop.is_set():
            with d.client(timeout=30) as c:
                res = c.pipeline([('resume', {'token': tokens[k]}), ('vm.get', None)],
                                 timeout=30)
                assert all(e is None for e, _ in res), res
                assert res[0][1]['vm_id'] == res[1][1]['vm_id'] == f'tr{k}', res
                counts['resume'] += 1

    def stale():
        with d.client(timeout=30) as c:
            while not stop.wait(1.2):
                assert c.ok('resume', {'token': tokens[3]})['vm_id'] == 'tr3'
                counts['stale'] += 1

    def updater():
        with d.client(timeout=30) as c:
            c.ok('resume', {'token': tokens[0]})
            i = 0
            while not stop.is_set():
                i += 1
                assert c.ok('vm.update', {'ram': 1 + i % 1000})['ram'] == 1 + i % 1000
                counts['update'] += 1

    threads = [threading.Thread(target=guarded(f'churner {k}', lambda k=k: churner(k)))
               for k in range(3)]
    threads += [threading.Thread(target=guarded('stale', stale)),
                threading.Thread(target=guarded('updater', updater))]
    for t in threads:
        t.start()
    try:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 4 and not errors:
            i += 1
            write_conf(i)
            os.kill(d.pid, signal.SIGHUP)
            counts['reload'] += 1
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    print(f'\nresume, purge and reload at once for 4 s: {counts}')
    assert not errors, errors
    assert counts['resume'] > 0 and counts['update'] > 0 and counts['stale'] >= 2, counts
    assert wait_until(lambda: 'Configuration reloaded' in d.log_now(), timeout=5)
    with admin(d) as a:
        left = a.ok('session.list', {'vm_id': 'tr0'})['sessions']
    # the session nobody held expired and was purged; the held one lives
    assert len(left) == 1, left
    with d.client() as c:
        assert c.ok('resume', {'token': tokens[1]})['vm_id'] == 'tr1'
    for h in holders:
        h.close()


# ---------------------------------------------------------------- state directory

def test_second_daemon_on_the_same_state_dir_refused(sec):
    """Issue 9: a second vmmd on a state directory in use refuses at once,
    with a message naming the pid that holds it; the first keeps serving."""
    d = sec()
    sockdir = short_tmpdir()
    try:
        argv = [vmmtest.vmmd_bin(), '--state-dir', d.state_dir, '--listen',
                f'127.0.0.1:{free_port()}', '--admin-socket', os.path.join(sockdir, 'a.sock')]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            pytest.fail('a second vmmd started on a state directory in use:\n'
                        + out.decode(errors='replace'))
        text = out.decode(errors='replace')
        print(f'\nsecond vmmd: exit {p.returncode}: {text.strip()}')
        assert p.returncode != 0, text
        assert str(d.pid) in text and d.state_dir in text, text
    finally:
        import shutil
        shutil.rmtree(sockdir, ignore_errors=True)
    with d.client() as c:
        assert c.ok('ping')['pong'] is True


# ---------------------------------------------------------------- packaging

def unit_values(unit, key):
    with open(os.path.join(SRCDIR, 'systemd', unit)) as f:
        return [line.strip()[len(key) + 1:] for line in f if line.strip().startswith(key + '=')]


def test_packaged_registration_default():
    """Medium: open registration stays for tools/run-dev, but what the package
    ships uses approval or closed (packaging/vmmd.conf, installed as
    /etc/vmmd/vmmd.conf)."""
    conf = os.path.join(SRCDIR, 'packaging', 'vmmd.conf')
    with open(conf) as f:
        values = [m.group(1) for m in re.finditer(r'^\s*registration\s*=\s*(\S+)', f.read(), re.M)]
    assert values and values[-1] in ('approval', 'closed'), values


def test_unit_limits():
    """Medium (d): the unit bounds memory, tasks and descriptors consistently
    with the daemon's limits: LimitNOFILE= above max_connections (16384) plus
    the daemon's own, MemoryMax= above max_unsent_total (64 MiB), and a
    TasksMax=."""
    nofile_v = unit_values('vmmd.service', 'LimitNOFILE')
    assert nofile_v and int(nofile_v[-1].split(':')[-1]) >= 16384 + 64, nofile_v
    mem = unit_values('vmmd.service', 'MemoryMax')
    tasks = unit_values('vmmd.service', 'TasksMax')
    assert mem and tasks, (mem, tasks)
    m = re.fullmatch(r'(\d+)([KMGT]?)', mem[-1])
    assert m, mem
    size = int(m.group(1)) * {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30,
                              'T': 1 << 40}[m.group(2)]
    assert size > 64 * MIB, mem
