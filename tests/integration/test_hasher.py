# SPDX-License-Identifier: MIT
"""Password hashes run in helper processes (src/daemon/hasher.h): one per
hash worker, "vmmd --hash-helper PPID" at nice 19, started at the first
hash; a helper that dies is replaced; the helpers end with vmmd; the helper
is the binary that runs, also once its file has been replaced. The reason
(the event loop's latency while hashing) is a benchmark figure
(tools/bench/compare: ping p99 during a login flood), not a test here."""

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess

import pytest

from p2util import LONG, admin, tcp
from vmmtest import Daemon, children_of, proc_stat, process_gone, vmmd_bin, wait_until


def helpers(d):
    return {p: a for p, a in children_of(d.pid).items() if a[1:2] == ['--hash-helper']}


def login_works(d, vm_id):
    """A new password for vm_id (a hash), then a login with it (a check)."""
    with admin(d) as a:
        pw = a.ok('vm.passwd', {'vm_id': vm_id}, timeout=LONG)['password']
    with tcp(d) as c:
        c.auth(vm_id, pw)
        assert c.ok('whoami') == {'kind': 'vm', 'vm_id': vm_id}
        c.err('auth', {'vm_id': vm_id, 'password': pw + 'x'}, 'unauthenticated', timeout=LONG)


def test_hashes_run_in_a_helper_process(tmp_path):
    d = Daemon(tmp_path, args=['--hash-workers', '2'])
    try:
        assert helpers(d) == {}, 'a helper before any hash'
        with admin(d) as a:
            a.ok('vm.create', {'vm_id': 'h1'}, timeout=LONG)
        login_works(d, 'h1')
        hs = helpers(d)
        assert 1 <= len(hs) <= 2, children_of(d.pid)
        for pid, argv in hs.items():
            assert argv == ['vmmd', '--hash-helper', str(d.pid)], argv
            assert int(proc_stat(pid)[16]) == 19, proc_stat(pid)
            # nothing of vmmd's but stdio and its socket
            fds = sorted(int(x) for x in os.listdir(f'/proc/{pid}/fd'))
            assert fds == [0, 1, 2, 3], fds
        # and while a helper starts, it holds nothing of vmmd's either: every
        # descriptor of vmmd beyond stdio is close-on-exec (LMDB's data file
        # was not: a helper starting as vmmd was killed kept the database's
        # file system busy)
        leaks = {}
        for fd in os.listdir(f'/proc/{d.pid}/fd'):
            if int(fd) > 2:
                with open(f'/proc/{d.pid}/fdinfo/{fd}') as f:
                    flags = int(f.read().split('flags:')[1].split()[0], 8)
                if not flags & os.O_CLOEXEC:
                    leaks[fd] = os.readlink(f'/proc/{d.pid}/fd/{fd}')
        assert leaks == {}, f'not close-on-exec: {leaks}'
        d.stop()
        assert not any(os.path.exists(f'/proc/{p}') for p in hs), 'a helper outlived vmmd'
    finally:
        d.cleanup()


def hashed_once(tmp_path, workers, vm_id):
    """A vmmd that has made one hash (vm_id's password): (it, its helpers)."""
    d = Daemon(tmp_path, args=['--hash-workers', str(workers)])
    with admin(d) as a:
        a.ok('vm.create', {'vm_id': vm_id}, timeout=LONG)
    return d, helpers(d)


def test_a_killed_helper_is_replaced(tmp_path):
    d, hs = hashed_once(tmp_path, 1, 'k1')
    try:
        (old,) = hs
        os.kill(old, signal.SIGKILL)
        assert wait_until(lambda: process_gone(old), timeout=10)
        login_works(d, 'k1')
        (new,) = helpers(d)
        assert new != old
        assert 'stopped answering; starting another' in d.log_text()
        assert not os.path.exists(f'/proc/{old}'), 'the dead helper was not reaped'
    finally:
        d.stop()
        d.cleanup()


def test_helpers_end_with_a_killed_vmmd(tmp_path):
    d, hs = hashed_once(tmp_path, 2, 'x1')
    try:
        assert hs
        d.kill()
        for pid in hs:
            # reparented, then killed by its parent-death signal
            assert wait_until(lambda: process_gone(pid), timeout=5), \
                f'helper {pid} outlived a killed vmmd'
    finally:
        d.cleanup()


def test_the_helper_is_the_running_binary(tmp_path):
    """An upgrade replaces the file under vmmd's name while it runs: its
    helpers still run its own code (here: the file is gone altogether)."""
    exe = tmp_path / 'vmmd-copy'
    shutil.copy(vmmd_bin(), exe)
    d = Daemon(tmp_path / 'd', start=False)
    d.bin = str(exe)
    d.start()
    try:
        exe.unlink()
        with admin(d) as a:
            a.ok('vm.create', {'vm_id': 'u1'}, timeout=LONG)
        login_works(d, 'u1')
        assert len(helpers(d)) == 1, children_of(d.pid)
        assert 'hashing in vmmd' not in d.log_text(), d.log_text()
    finally:
        d.stop()
        d.cleanup()


def test_the_helper_mode_is_not_for_people():
    p = subprocess.run([vmmd_bin(), '--hash-helper'], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p
    assert "is for vmmd's own use" in p.stderr, p.stderr
    # a user's password never reaches a helper by that route
    p = subprocess.run([vmmd_bin(), '--hash-helper', str(os.getpid())], capture_output=True,
                       text=True, timeout=30, input='V\0\0\0\0')
    assert p.returncode == 2, p


@contextlib.contextmanager
def helper_on_socket():
    """A helper as vmmd starts one (its socket on descriptor 3, this process
    as its parent), and our end of the socket; killed if still running at
    the end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def on_3():
        os.dup2(theirs.fileno(), 3)
    p = subprocess.Popen([vmmd_bin(), '--hash-helper', str(os.getpid())],
                         preexec_fn=on_3, pass_fds=(3,),     # kept after on_3
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    theirs.close()
    ours.settimeout(LONG)
    try:
        yield p, ours
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        ours.close()


def request(op, pw, stored=None):
    return op + struct.pack('=I', len(pw)) + pw + (stored + b'\0' if stored else b'')


def test_the_helper_hashes_checks_and_refuses_malformed_requests():
    with helper_on_socket() as (p, s):
        s.send(request(b'H', b'correct horse'))
        ans = s.recv(4096)
        assert len(ans) == 129 and ans[0] == 0 and ans[1:].startswith(b'$argon2id$'), ans
        stored = ans[1:].rstrip(b'\0')
        s.send(request(b'V', b'correct horse', stored))
        assert s.recv(16) == b'\x01'
        s.send(request(b'V', b'wrong horse', stored))
        assert s.recv(16) == b'\x00'
        # a length beyond the message: the helper ends, it does not guess
        s.send(b'H' + struct.pack('=I', 100) + b'short')
        assert s.recv(16) == b'', 'the helper answered a malformed request'
        assert p.wait(10) == 1


def test_the_helper_refuses_a_check_without_its_hash():
    with helper_on_socket() as (p, s):
        s.send(request(b'V', b'pw'))            # no stored hash after the password
        assert s.recv(16) == b''
        assert p.wait(10) == 1
    with helper_on_socket() as (p, s):
        s.send(b'X' + struct.pack('=I', 2) + b'pw')     # no such request
        assert s.recv(16) == b''
        assert p.wait(10) == 1


class NoexecDaemon(Daemon):
    """vmmd run from a bind mount of its own, in a mount namespace of its own
    (unshare execs it: the pid is vmmd's), so that the mount can be made
    noexec under it: then no helper can start, from outside and without a
    hook in the daemon."""

    def __init__(self, tmp_path, **kw):
        self.exe_dir = tmp_path / 'bin'
        self.exe_dir.mkdir()
        shutil.copy(vmmd_bin(), self.exe_dir / 'vmmd')
        super().__init__(tmp_path, start=False, **kw)
        self.bin = str(self.exe_dir / 'vmmd')
        self.start()

    def argv(self):
        return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c',
                'mount --bind "$1" "$1" && shift && exec "$@"', 'sh', str(self.exe_dir)] + \
            super().argv()

    def set_noexec(self, on):
        subprocess.run(['nsenter', '-t', str(self.pid), '-m', 'mount', '-o',
                        'remount,bind,' + ('noexec' if on else 'exec'), str(self.exe_dir)],
                       check=True, timeout=30)


def test_without_helpers_vmmd_hashes_in_its_own_threads(tmp_path):
    if os.geteuid() != 0 or not shutil.which('unshare') or not shutil.which('nsenter'):
        pytest.skip('needs root, unshare and nsenter for a mount namespace')
    d = NoexecDaemon(tmp_path, args=['--hash-workers', '1'])
    try:
        assert os.readlink(f'/proc/{d.pid}/exe') == d.bin     # vmmd itself, not a wrapper
        d.set_noexec(True)
        with admin(d) as a:
            a.ok('vm.create', {'vm_id': 'f1'}, timeout=LONG)
        login_works(d, 'f1')
        assert helpers(d) == {}, children_of(d.pid)
        log = d.log_text()
        assert "Cannot start a password hash helper" in log, log
        assert "hashing in vmmd's own threads for 60 s" in log, log
        # within those 60 s it does not try again at every hash: one warning
        d.set_noexec(False)
        login_works(d, 'f1')
        assert helpers(d) == {}, children_of(d.pid)
        assert d.log_text().count('Cannot start a password hash helper') == 1, d.log_text()
    finally:
        d.stop()
        d.cleanup()
