# SPDX-License-Identifier: MIT
"""vmclient against the real vmmd: one-shot commands with a session token,
exit codes, help, and the interactive shell driven through a pipe with the
seeds' text commands.

Needs VMMD_BIN and VMCLIENT_BIN (meson passes both); fails without them."""

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import msgpack
import pytest

import vmmtest

VMMD_BIN = os.environ.get('VMMD_BIN')
VMCLIENT_BIN = os.environ.get('VMCLIENT_BIN')
TOKEN_RE = re.compile(r'^[A-Za-z0-9_-]{43}$')


def wait_until(cond, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# below the kernel's ephemeral range, so that no test's outgoing connection
# takes the port before vmmd binds it (vmmtest.free_port says more)
free_port = vmmtest.free_port


def rpc(sock, unpacker, msgid, method, params=None):
    sock.sendall(msgpack.packb([0, msgid, method, [params] if params is not None else []]))
    while True:
        for msg in unpacker:
            if msg[0] == 1:
                return msg
        data = sock.recv(65536)
        if not data:
            raise ConnectionError('daemon closed the connection')
        unpacker.feed(data)


class Daemon:
    def __init__(self, tmp, args=()):
        assert VMMD_BIN, 'VMMD_BIN is not set: this test needs the real vmmd'
        assert os.access(VMMD_BIN, os.X_OK), f'VMMD_BIN={VMMD_BIN} is not executable'
        self.dir = tmp
        self.args = list(args)
        self.port = free_port()
        self.server = f'127.0.0.1:{self.port}'
        self.admin = os.path.join(tmp, 'admin.sock')
        self.log = open(os.path.join(tmp, 'vmmd.log'), 'w+b')
        os.makedirs(os.path.join(tmp, 'state'))
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [VMMD_BIN, '--state-dir', os.path.join(self.dir, 'state'),
             '--listen', self.server, '--admin-socket', self.admin, '--log-level', 'debug',
             *self.args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def restart(self):
        """SIGTERM, wait for a clean exit, start again on the same port and state."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(15) == 0, self.log_text()
        self.start()

    def wait_ready(self):
        deadline = time.monotonic() + 15
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f'vmmd exited with {self.proc.returncode}:\n'
                                     + self.log_text())
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=2) as s:
                    s.settimeout(5)
                    resp = rpc(s, msgpack.Unpacker(raw=False), 1, 'ping')
                    if resp[2] is None and resp[3].get('pong') is True:
                        return
                    last = resp
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f'vmmd did not answer ping: {last}\n' + self.log_text())

    def admin_call(self, method, params=None):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.admin)
            return rpc(s, msgpack.Unpacker(raw=False), 1, method, params)

    def log_text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors='replace')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # printed only when the test failed (pytest shows captured output then)
        print(f'--- vmmd log (exit {self.proc.returncode}) ---')
        print(self.log_text())
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def vmmd():
    with tempfile.TemporaryDirectory(prefix='test-vmclient-') as tmp:
        d = Daemon(tmp)
        try:
            yield d
        finally:
            rc = d.stop()
        assert rc == 0, f'vmmd exited with {rc} after SIGTERM (crash?)'


def run(daemon, *args, token=None, password=None, new_password=None, stdin=None,
        server=None, check=None):
    """Runs vmclient with a clean environment; returns CompletedProcess."""
    assert VMCLIENT_BIN, 'VMCLIENT_BIN is not set: this test needs vmclient'
    env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'TZ': 'UTC', 'LC_ALL': 'C'}
    for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS'):
        if k in os.environ:
            env[k] = os.environ[k]
    if daemon is not None or server is not None:
        env['VMCLIENT_SERVER'] = server or daemon.server
    if token is not None:
        env['VMCLIENT_TOKEN'] = token
    if password is not None:
        env['VMCLIENT_PASSWORD'] = password
    if new_password is not None:
        env['VMCLIENT_NEW_PASSWORD'] = new_password
    p = subprocess.run([VMCLIENT_BIN, *args], input=(stdin or '').encode(), env=env,
                       capture_output=True, timeout=60)
    p.out = p.stdout.decode()
    p.err = p.stderr.decode()
    if check is not None:
        assert p.returncode == check, (
            f'vmclient {" ".join(args)}: exit {p.returncode}, expected {check}\n'
            f'stdout: {p.out}\nstderr: {p.err}')
    return p


def kv(text):
    """Parses 'key: value' lines of a single VM."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(':')
        assert sep and ' ' not in k, f'not a key: value line: {line!r}'
        out[k] = v.strip()
    return out


def tables(text, header_first):
    """Every table whose header starts with header_first, as lists of rows
    (cells split on two or more spaces)."""
    result = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith(header_first + ' '):
            header = re.split(r'\s{2,}', lines[i].strip())
            rows = []
            i += 1
            while i < len(lines):
                cells = re.split(r'\s{2,}', lines[i].strip())
                if len(cells) != len(header) or lines[i].startswith(header_first + ' '):
                    break
                rows.append(dict(zip(header, cells)))
                i += 1
            result.append(rows)
        else:
            i += 1
    return result


def test_oneshot_flow(vmmd):
    p = run(vmmd, 'ping', check=0)
    assert p.out.startswith('pong: vmmd '), p.out
    pong = json.loads(run(vmmd, '--json', 'ping', check=0).out)
    assert pong['pong'] is True and pong['protocol'] == 1

    # register: password from the environment; one disk with an explicit id
    p = run(vmmd, 'register', 'vm1', '--ram', '2048', '--cpu', '2',
            '--disk', 'disk1:100', '--disk', '200', password='secret-one', check=0)
    rec = kv(p.out)
    assert rec['vm_id'] == 'vm1' and rec['ram'] == '2048 MiB' and rec['cpu'] == '2', p.out
    assert rec['disks'] == 'disk1 100 GiB, vm1-disk1 200 GiB', p.out
    assert re.match(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$', rec['registered_at']), p.out
    assert rec['last_seen_at'] == '-' and rec['connected'] == 'no', p.out
    # register with the password on stdin, JSON out (options after the command)
    p = run(vmmd, 'register', 'vm2', '--ram', '512', '--cpu', '1', '--json',
            stdin='secret-two\n', check=0)
    rec2 = json.loads(p.out)
    assert rec2['vm_id'] == 'vm2' and rec2['disks'] == [] and rec2['ram'] == 512

    p = run(vmmd, 'register', 'vm1', '--ram', '1', '--cpu', '1', password='secret-one',
            check=1)
    assert p.err.startswith('vmclient: exists: '), p.err

    # auth prints the token alone, for $(vmclient auth vm1)
    p = run(vmmd, 'auth', 'vm1', password='secret-one', check=0)
    token = p.out.strip()
    assert TOKEN_RE.match(token), p.out
    p = run(vmmd, '--json', 'auth', 'vm1', stdin='secret-one\n', check=0)
    a = json.loads(p.out)
    assert a['vm_id'] == 'vm1' and TOKEN_RE.match(a['token']) and a['expires_at'] > 0
    p = run(vmmd, 'auth', 'vm1', password='wrong-password', check=1)
    assert p.err.startswith('vmclient: unauthenticated: '), p.err
    assert p.out == ''

    # get
    p = run(vmmd, 'get', token=token, check=0)
    assert kv(p.out)['vm_id'] == 'vm1' and kv(p.out)['authorized'] == 'yes', p.out
    g = json.loads(run(vmmd, '--token', token, 'get', '--json', check=0).out)
    assert g['vm_id'] == 'vm1' and g['disks'] == [
        {'id': 'disk1', 'size': 100}, {'id': 'vm1-disk1', 'size': 200}]

    # vm.add on a VM that register already described: a daemon error
    p = run(vmmd, 'add', 'vm1', '--ram', '1', '--cpu', '1', token=token, check=1)
    assert p.err.startswith('vmclient: exists: '), p.err

    # update: --disk replaces the whole set; --no-disks empties it
    u = json.loads(run(vmmd, '--json', 'update', '--ram', '4096', '--disk', 'disk9:50',
                       token=token, check=0).out)
    assert u['ram'] == 4096 and u['cpu'] == 2 and u['disks'] == [{'id': 'disk9', 'size': 50}]
    p = run(vmmd, 'update', '--cpu', '8', token=token, check=0)
    assert kv(p.out)['cpu'] == '8' and kv(p.out)['disks'] == 'disk9 50 GiB', p.out
    u = json.loads(run(vmmd, '--json', 'update', '--no-disks', token=token, check=0).out)
    assert u['disks'] == [] and u['ram'] == 4096
    run(vmmd, 'update', '--disk', 'disk1:10', '--disk', 'disk2:20', token=token, check=0)

    # list: tables, JSON, paging
    p = run(vmmd, 'list', 'all', token=token, check=0)
    [rows] = tables(p.out, 'VM_ID')
    assert [r['VM_ID'] for r in rows] == ['vm1', 'vm2'], p.out
    assert rows[0]['RAM'] == '4096 MiB' and rows[0]['CPU'] == '8', p.out
    assert rows[0]['DISKS'] == 'disk1 10 GiB, disk2 20 GiB' and rows[1]['DISKS'] == '-', p.out
    # no filter is all, as for vmadm list
    assert run(vmmd, 'list', token=token, check=0).out == p.out
    assert rows[0]['AUTHORIZED'] == 'yes' and rows[1]['AUTHORIZED'] == 'no', p.out
    every = json.loads(run(vmmd, '--json', 'list', 'all', '--limit', '1', token=token,
                           check=0).out)
    assert [v['vm_id'] for v in every['vms']] == ['vm1', 'vm2'] and every['next'] is None
    page = json.loads(run(vmmd, '--json', 'list', 'all', '--limit', '1', '--single-page',
                          token=token, check=0).out)
    assert [v['vm_id'] for v in page['vms']] == ['vm1'] and page['next'] == 'vm1'
    page = json.loads(run(vmmd, '--json', 'list', 'all', '--after', 'vm1', token=token,
                          check=0).out)
    assert [v['vm_id'] for v in page['vms']] == ['vm2']
    auth_list = json.loads(run(vmmd, '--json', 'list', 'authorized', token=token,
                               check=0).out)
    assert [v['vm_id'] for v in auth_list['vms']] == ['vm1']
    # a token call does not attach its connection: nobody is connected
    p = run(vmmd, 'list', 'connected', token=token, check=0)
    assert p.out.strip() == '(no VMs)', p.out

    # disks
    p = run(vmmd, 'disks', token=token, check=0)
    [rows] = tables(p.out, 'DISK')
    assert p.out.splitlines()[0].split() == ['DISK', 'SIZE', 'VM'], p.out
    assert rows == [{'DISK': 'disk1', 'VM': 'vm1', 'SIZE': '10 GiB'},
                    {'DISK': 'disk2', 'VM': 'vm1', 'SIZE': '20 GiB'}], p.out
    d = json.loads(run(vmmd, '--json', 'disks', '--limit', '1', token=token, check=0).out)
    assert [(x['id'], x['vm_id'], x['size']) for x in d['disks']] == [
        ('disk1', 'vm1', 10), ('disk2', 'vm1', 20)]

    # passwd (env), then the old password no longer works
    p = run(vmmd, 'passwd', token=token, password='secret-one', new_password='secret-1b',
            check=0)
    assert p.out.strip() == 'password changed'
    run(vmmd, 'auth', 'vm1', password='secret-one', check=1)
    token2 = run(vmmd, 'auth', 'vm1', password='secret-1b', check=0).out.strip()
    # passwd with two stdin lines; a wrong current password is a daemon error
    run(vmmd, 'passwd', token=token2, stdin='wrong-current\nsecret-1c\n', check=1)
    run(vmmd, 'passwd', token=token2, stdin='secret-1b\nsecret-1c\n', check=0)
    token3 = run(vmmd, 'auth', 'vm1', password='secret-1c', check=0).out.strip()

    # logout ends that session only
    p = run(vmmd, 'logout', token=token3, check=0)
    assert p.out.strip() == 'logged out'
    p = run(vmmd, 'get', token=token3, check=1)
    assert p.err.startswith('vmclient: unauthenticated: '), p.err


def test_add_describes_admin_created_vm(vmmd):
    # a VM provisioned by an administrator has no ram/cpu until vm.add
    resp = vmmd.admin_call('vm.create', {'vm_id': 'fresh', 'password': 'fresh-pass'})
    assert resp[2] is None, resp
    token = run(vmmd, 'auth', 'fresh', password='fresh-pass', check=0).out.strip()
    p = run(vmmd, 'add', 'fresh', '--ram', '1024', '--cpu', '1', '--disk', '5',
            '--disk', 'data:7', token=token, check=0)
    rec = kv(p.out)
    assert rec['ram'] == '1024 MiB' and rec['disks'] == 'fresh-disk1 5 GiB, data 7 GiB', p.out
    p = run(vmmd, 'add', 'other', '--ram', '1', '--cpu', '1', token=token, check=1)
    assert p.err.startswith('vmclient: forbidden: '), p.err


def test_exit_codes(vmmd, tmp_path):
    # usage errors: 2
    for args, token in [
            (['frobnicate'], None),
            ([], None),
            (['get'], None),                              # no token
            (['register', 'vm1', '--cpu', '1'], None),    # no --ram
            (['register', 'vm1', '--ram', 'lots', '--cpu', '1'], None),
            (['update'], 'x' * 43),
            (['update', '--disk', 'a:1', '--no-disks'], 'x' * 43),
            (['update', '--disk', 'a:0'], 'x' * 43),
            (['list', 'sideways'], 'x' * 43),
            (['list', 'all', '--limit', '0'], 'x' * 43),
            (['ping', 'extra'], None),
            (['ping', '--ram', '1'], None),
            (['--bogus', 'ping'], None),
    ]:
        p = run(vmmd, *args, token=token, check=2)
        assert p.err.startswith('vmclient: '), (args, p.err)
        assert p.out == '', (args, p.out)
    # a daemon error: 1, the code and message on stderr
    p = run(vmmd, 'get', token='A' * 43, check=1)
    assert re.match(r'^vmclient: unauthenticated: .+', p.err), p.err
    # the daemon cannot be reached: 3
    closed = free_port()
    p = run(None, 'ping', server=f'127.0.0.1:{closed}', check=3)
    assert 'cannot connect' in p.err, p.err
    p = run(None, '--server', f'127.0.0.1:{closed}', 'shell', stdin='PING\n', check=3)
    assert 'connection refused' in p.out + p.err and '--server' in p.out + p.err


def test_help_and_version():
    p = run(None, '--help', check=0)
    assert p.out.startswith('Usage: vmclient ') and 'register' in p.out and 'shell' in p.out
    p = run(None, '--version', check=0)
    assert re.match(r'^vmclient \(vmmd\) \S+, protocol 1$', p.out.strip()), p.out
    for args in (['help', 'register'], ['register', '--help']):
        p = run(None, *args, check=0)
        assert p.out.startswith('Usage: vmclient [OPTIONS] register VM --ram'), p.out
    p = run(None, 'help', 'nothing', check=2)


SEED_FLOW = '''\
PING
REGISTER vm1 secret1 2048 2 disk1:100 disk2:200
auth vm1 secret1
ADD_VM vm1 2048 2 disk1:100 disk2:200
LIST_DISKS
UPDATE_VM 4096 4 disk1:150 disk3:300
LIST_DISKS
LIST_CONNECTED
LIST_AUTHORIZED
List_All
BOGUS_CMD x
ADD_VM vm1 many 2
LOGOUT
LIST_ALL
EXIT
PING
'''


def test_shell_seed_flow(vmmd):
    p = run(vmmd, 'shell', stdin=SEED_FLOW, check=0)
    out = p.out
    assert 'vmm> ' not in out, 'no prompt when stdin is not a terminal'
    assert out.count('pong: vmmd ') == 1, 'the PING after EXIT must not run\n' + out
    assert re.search(r'^authenticated as vm1 \(session expires .+\)$', out, re.M), out
    # ADD_VM on a VM that REGISTER described: an error line, and the shell goes on
    assert re.search(r'^error: exists: .+$', out, re.M), out
    before, after = tables(out, 'DISK')
    assert {(r['DISK'], r['VM'], r['SIZE']) for r in before} == {
        ('disk1', 'vm1', '100 GiB'), ('disk2', 'vm1', '200 GiB')}, out
    # UPDATE_VM replaced the whole disk set: disk2 is gone
    assert [(r['DISK'], r['VM'], r['SIZE']) for r in after] == [
        ('disk1', 'vm1', '150 GiB'), ('disk3', 'vm1', '300 GiB')], out
    connected, authorized, all_vms = tables(out, 'VM_ID')
    # the shell's connection is attached by AUTH: vm1 is connected
    assert [(r['VM_ID'], r['CONNECTED']) for r in connected] == [('vm1', 'yes')], out
    assert [(r['VM_ID'], r['AUTHORIZED']) for r in authorized] == [('vm1', 'yes')], out
    assert [(r['VM_ID'], r['RAM'], r['CPU'], r['DISKS']) for r in all_vms] == [
        ('vm1', '4096 MiB', '4', 'disk1 150 GiB, disk3 300 GiB')], out
    assert re.search(r"^error: usage: unknown command 'BOGUS_CMD'", out, re.M), out
    assert re.search(r'^error: usage: <ram MiB> <cpu count>', out, re.M), out
    assert re.search(r'^logged out$', out, re.M), out
    # after LOGOUT the connection is anonymous again
    tail = out[out.index('logged out'):]
    assert re.search(r'^error: unauthenticated: .+$', tail, re.M), out
    # errors in the shell go to stdout, nothing to stderr
    assert p.err == '', p.err

    # the session's VM record survived: a one-shot auth sees the update
    token = run(vmmd, 'auth', 'vm1', password='secret1', check=0).out.strip()
    g = json.loads(run(vmmd, '--json', 'get', token=token, check=0).out)
    assert g['ram'] == 4096 and [d['id'] for d in g['disks']] == ['disk1', 'disk3']


def test_shell_json_and_auto_disk_ids(vmmd):
    script = ('REGISTER auto1 password1 128 1 7 big:9\n'
              'AUTH auto1 password1\n'
              'GET_VM\n'
              'UPDATE_VM 256 2 3\n')
    p = run(vmmd, '--json', 'shell', stdin=script, check=0)
    lines = [json.loads(x) for x in p.out.splitlines()]
    assert lines[0]['disks'] == [{'id': 'auto1-disk1', 'size': 7}, {'id': 'big', 'size': 9}]
    assert lines[1]['vm_id'] == 'auto1' and TOKEN_RE.match(lines[1]['token'])
    assert lines[2]['vm_id'] == 'auto1' and lines[2]['connected'] is True
    assert lines[3]['ram'] == 256 and lines[3]['disks'] == [{'id': 'auto1-disk1', 'size': 3}]


# ---- the shell keeps its place ----

@pytest.fixture
def make_vmmd():
    made = []

    def make(*args):
        tmp = tempfile.mkdtemp(prefix='test-vmclient-')
        d = Daemon(tmp, args)
        made.append((d, tmp))
        return d

    yield make
    codes = []
    for d, tmp in made:
        codes.append(d.stop())
        shutil.rmtree(tmp, ignore_errors=True)
    assert codes == [0] * len(codes), f'vmmd exit codes after SIGTERM: {codes}'


def clean_env(extra=None):
    env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'TZ': 'UTC', 'LC_ALL': 'C'}
    for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS'):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update(extra or {})
    return env


class ShellProc:
    """vmclient shell with a pipe for stdin: lines written one at a time."""

    def __init__(self, daemon, *opts):
        assert VMCLIENT_BIN, 'VMCLIENT_BIN is not set: this test needs vmclient'
        self.proc = subprocess.Popen([VMCLIENT_BIN, '--server', daemon.server, *opts, 'shell'],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=clean_env())
        self.q = queue.Queue()
        self.seen = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.q.put(line.decode(errors='replace'))
        self.q.put(None)

    def send(self, line):
        self.proc.stdin.write((line + '\n').encode())
        self.proc.stdin.flush()

    def expect(self, pattern, timeout=15):
        """Lines up to the first that matches pattern."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f'no line matching {pattern!r} in time; got {got!r}')
            assert line is not None, f'vmclient shell ended; got {got!r}: ' + \
                self.proc.stderr.read().decode(errors='replace')
            got.append(line)
            self.seen.append(line)
            if re.search(pattern, line):
                return got

    def close(self):
        self.proc.stdin.close()
        rc = self.proc.wait(30)
        while True:
            line = self.q.get(timeout=10)
            if line is None:
                break
            self.seen.append(line)
        return rc, self.proc.stderr.read().decode(errors='replace')


def admin_conns(daemon):
    resp = daemon.admin_call('conn.list')
    assert resp[2] is None, resp
    return resp[3]['connections']


def test_shell_keeps_its_place(make_vmmd):
    """Idle timeout, vmadm kick and a daemon restart: the shell reconnects,
    resumes its session and the command runs."""
    d = make_vmmd('--idle-timeout', '1')
    run(d, 'register', 'vm1', '--ram', '512', '--cpu', '1', password='secret-one', check=0)
    sh = ShellProc(d)
    sh.send('PING')
    sh.expect(r'^pong: ')
    # the daemon closes the anonymous connection after 1 s idle ...
    assert wait_until(lambda: admin_conns(d) == [], timeout=10), admin_conns(d)
    # ... and the next command reconnects without a word
    sh.send('PING')
    sh.expect(r'^pong: ')

    sh.send('AUTH vm1 secret-one')
    sh.expect(r'^authenticated as vm1 ')
    [mine] = [c for c in admin_conns(d) if c['vm_id'] == 'vm1']
    # an administrator closes it
    vmadm_bin = os.environ.get('VMADM_BIN')
    assert vmadm_bin, 'VMADM_BIN is not set (meson sets it)'
    k = subprocess.run([vmadm_bin, '--socket', d.admin, 'kick', str(mine['id'])],
                       capture_output=True, env=clean_env(), timeout=30)
    assert k.returncode == 0, k.stderr
    assert wait_until(lambda: all(c['id'] != mine['id'] for c in admin_conns(d)))
    # the session goes on: resumed on a new connection, attached again
    sh.send('GET_VM')
    out = sh.expect(r'^connected:')
    assert any(re.match(r'^vm_id:\s+vm1$', l) for l in out), out
    assert re.match(r'^connected:\s+yes$', out[-1]), out
    [again] = [c for c in admin_conns(d) if c['vm_id'] == 'vm1']
    assert again['id'] != mine['id']

    # the daemon restarts: sessions are on disk, the shell resumes
    d.restart()
    sh.send('UPDATE_VM 1024 2 d1:5')
    sh.expect(r'^disks:\s+d1 5 GiB$')
    sh.send('LIST_CONNECTED')
    sh.expect(r'^vm1\s+1024 MiB\s+2\s')
    # the shell stays quiet about all this: no error lines
    rc, err = sh.close()
    assert rc == 0, err
    assert not [l for l in sh.seen if l.startswith('error:')], sh.seen
    assert err == '', err


def test_shell_unreachable_interactive_goes_on_script_stops(make_vmmd):
    d = make_vmmd()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    # a script stops at the first command that cannot reach the daemon: status 3
    p = run(d, 'shell', stdin='HELP\nPING\nPING\n', check=3)
    assert p.out.count('connection refused') == 1, p.out
    assert 'Is vmmd running there?' in p.out and '--server HOST:PORT' in p.out, p.out
    d.start()


def test_shell_session_ended_meanwhile(make_vmmd):
    """An administrator revokes the session while the shell is away: the shell
    says so once, in words, and goes on as anonymous."""
    d = make_vmmd()
    run(d, 'register', 'vm1', '--ram', '512', '--cpu', '1', password='secret-one', check=0)
    sh = ShellProc(d)
    sh.send('AUTH vm1 secret-one')
    sh.expect(r'^authenticated as vm1 ')
    assert d.admin_call('session.revoke', {'vm_id': 'vm1'})[2] is None
    [mine] = [c for c in admin_conns(d)]
    assert d.admin_call('conn.kill', {'id': mine['id']})[2] is None
    assert wait_until(lambda: admin_conns(d) == [])
    sh.send('GET_VM')
    out = sh.expect(r'^error: unauthenticated: log in first')
    assert any(re.match(r'^error: unauthenticated: the session has ended .*AUTH VM_ID', l)
               for l in out), out
    rc, err = sh.close()
    assert rc == 0, err


# ---- errors: JSON, plain words, connection hints ----

PROTOCOL_WORDS = re.compile(r'\bvm\.(add|update|get|list)\b|\bresume\b|expected a string|'
                            r'\.\.\d+ bytes|\bparams\b')


def test_json_errors(vmmd):
    # a daemon error: one document on stdout, the sentence on stderr, status 1
    p = run(vmmd, '--json', 'get', token='A' * 43, check=1)
    assert p.out.count('\n') == 1, p.out
    doc = json.loads(p.out)
    assert doc['error']['code'] == 'unauthenticated', doc
    assert 'vmclient auth' in doc['error']['message'], doc
    assert p.err.startswith('vmclient: unauthenticated: '), p.err
    # the daemon cannot be reached: status 3
    p = run(None, '--json', 'ping', server=f'127.0.0.1:{free_port()}', check=3)
    assert json.loads(p.out)['error']['code'] == 'unreachable', p.out
    # a usage error: status 2
    p = run(vmmd, 'list', 'sideways', '--json', token='A' * 43, check=2)
    assert json.loads(p.out)['error']['code'] == 'usage', p.out
    # the shell: one document per command, errors too
    p = run(vmmd, '--json', 'shell', stdin='LIST_ALL\nPING\nBOGUS\n', check=0)
    docs = [json.loads(l) for l in p.out.splitlines()]
    assert len(docs) == 3, p.out
    assert docs[0]['error']['code'] == 'unauthenticated'
    assert 'AUTH VM_ID PASSWORD' in docs[0]['error']['message']
    assert docs[1]['pong'] is True
    assert docs[2]['error']['code'] == 'usage'
    assert p.err.count('\n') == 2, p.err


def test_messages_say_what_to_type(vmmd):
    texts = []
    p = run(vmmd, 'get', check=2)
    assert 'vmclient auth VM_ID' in p.err, p.err
    texts.append(p.err)
    p = run(vmmd, 'get', token='too-short', check=2)
    assert '43 characters' in p.err and 'VMCLIENT_TOKEN' in p.err, p.err
    texts.append(p.err)
    run(vmmd, 'register', 'vm1', '--ram', '512', '--cpu', '1', password='secret-one', check=0)
    token = run(vmmd, 'auth', 'vm1', password='secret-one', check=0).out.strip()
    p = run(vmmd, 'add', 'vm1', '--ram', '1', '--cpu', '1', token=token, check=1)
    assert 'vmclient update' in p.err, p.err
    texts.append(p.err)
    p = run(vmmd, 'get', token='B' * 43, check=1)
    assert 'log in again with vmclient auth' in p.err, p.err
    texts.append(p.err)
    p = run(vmmd, 'register', 'bad id!', '--ram', '1', '--cpu', '1', password='secret-one',
            check=1)
    assert 'a VM id is 1 to 48' in p.err, p.err
    texts.append(p.err)
    p = run(vmmd, 'register', 'vm2', '--ram', '1', '--cpu', '1', password='short', check=1)
    assert 'a password is 6 to 1024 bytes' in p.err, p.err
    texts.append(p.err)
    p = run(vmmd, 'shell', stdin='LIST_ALL\nAUTH vm1 secret-one\nADD_VM vm1 1 1\n', check=0)
    assert re.search(r'^error: unauthenticated: log in first: AUTH VM_ID PASSWORD$', p.out,
                     re.M), p.out
    assert 'change it with UPDATE_VM' in p.out, p.out
    texts.append(p.out)
    for t in texts:
        assert not PROTOCOL_WORDS.search(t), t


def test_connection_errors_give_the_next_step(vmmd):
    p = run(None, 'ping', server=f'127.0.0.1:{free_port()}', check=3)
    assert 'connection refused' in p.err and 'Is vmmd running there?' in p.err, p.err
    assert '--server HOST:PORT' in p.err, p.err
    # a name that does not resolve is said so (not "no route to host")
    p = run(None, 'ping', server='no..such..host:7707', check=3)
    assert 'does not resolve' in p.err, p.err
    assert 'route' not in p.err.lower(), p.err
    p = run(None, 'ping', server='[::1', check=2)
    assert 'not an address' in p.err, p.err


# ---- text from the wire is escaped ----

NASTY = '\x1b[2J\x1b]0;owned\x07\u009b31m\x7f\r'
CONTROL = re.compile('[\x00-\x08\x0a-\x1f\x7f\u0080-\u009f]')


def fake_server(answer):
    """A one-thread msgpack-rpc server on loopback: answer(method, params) ->
    (error, result) for every request. Returns (address, stop)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(('127.0.0.1', 0))
    ls.listen(8)
    ls.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = ls.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(10)
                u = msgpack.Unpacker(raw=False)
                while True:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        break
                    if not data:
                        break
                    u.feed(data)
                    for req in u:
                        err, res = answer(req[2], req[3][0] if req[3] else {})
                        conn.sendall(msgpack.packb([1, req[1], err, res]))
        ls.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def stop_all():
        stop.set()
        t.join(10)

    return f'127.0.0.1:{ls.getsockname()[1]}', stop_all


def test_wire_text_is_escaped():
    def answer(method, params):
        if method == 'vm.list':
            return None, {'vms': [{'vm_id': 'v' + NASTY, 'ram': 1, 'cpu': 1,
                                   'disks': [{'id': 'd' + NASTY, 'size': 1}],
                                   'connected': False, 'authorized': True,
                                   'last_seen_at': None}], 'next': None}
        if method == 'disk.list':
            return None, {'disks': [{'id': 'd' + NASTY, 'size': 2, 'vm_id': 'v' + NASTY}],
                          'next': None}
        if method == 'vm.get':
            return None, {'vm_id': 'v' + NASTY, 'ram': 1, 'cpu': 1, 'disks': []}
        return {'code': 'not' + NASTY, 'message': 'gone ' + NASTY}, None

    addr, stop = fake_server(answer)
    try:
        outputs = []
        for args in (['list'], ['disks'], ['get'], ['ping']):
            p = run(None, *args, server=addr, token='A' * 43)
            assert p.returncode == (1 if args == ['ping'] else 0), (args, p.out, p.err)
            outputs.append(p.out + p.err)
        p = run(None, 'shell', server=addr, stdin='PING\nGET_VM\nLIST_ALL\n', check=0)
        outputs.append(p.out + p.err)
        for text in outputs:
            assert not CONTROL.search(text.replace('\n', '')), repr(text)
            assert '\\x1b[2J\\x1b]0;owned\\x07\\u009b31m\\x7f\\x0d' in text, repr(text)
        # JSON keeps the exact strings, escaped the JSON way
        p = run(None, '--json', 'list', server=addr, token='A' * 43, check=0)
        assert not CONTROL.search(p.out.strip()), repr(p.out)
        assert json.loads(p.out)['vms'][0]['vm_id'] == 'v' + NASTY
        p = run(None, '--json', 'ping', server=addr, check=1)
        assert json.loads(p.out)['error']['message'] == 'gone ' + NASTY
        assert not CONTROL.search(p.out.strip() + p.err.strip()), repr(p.out + p.err)
    finally:
        stop()


def test_bash_completion():
    comp = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tools',
                        'completion', 'vmclient.bash')
    bindir = os.path.dirname(VMCLIENT_BIN)

    def complete(line):
        words = line.split() + ([''] if line.endswith(' ') else [])
        script = (f'source {comp}\ncomplete -p vmclient\n'
                  'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))\n'
                  '_vmclient vmclient\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
        r = subprocess.run(['bash', '--norc', '--noprofile', '-c', script, 'bash', *words],
                           capture_output=True, text=True, timeout=60,
                           env=clean_env({'PATH': bindir + ':' + os.environ.get('PATH', '')}))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == 'complete -F _vmclient vmclient', lines
        return sorted(l for l in lines[1:] if l)

    helped = re.findall(r'^  ([a-z][a-z-]*) ', run(None, '--help', check=0).out, re.M)
    assert complete('vmclient ') == sorted(helped) and 'shell' in helped
    assert complete('vmclient re') == ['register']
    assert complete('vmclient list ') == ['all', 'authorized', 'connected']
    assert complete('vmclient update --') == sorted(
        ['--ram', '--cpu', '--disk', '--no-disks', '--server', '--token', '--json', '--timeout',
         '--help', '--version'])
    assert complete('vmclient --server x:1 l') == ['list', 'logout']


# ---- on a terminal: line editing, history, completion (libedit) ----

def test_shell_on_a_terminal(vmmd, tmp_path):
    state = tmp_path / 'xdg-state'
    env = clean_env({'TERM': 'xterm', 'HOME': str(tmp_path), 'XDG_STATE_HOME': str(state),
                     'VMCLIENT_SERVER': vmmd.server})
    run(vmmd, 'register', 'vm1', '--ram', '512', '--cpu', '1', password='secret-one', check=0)
    t = vmmtest.Pty([VMCLIENT_BIN, 'shell'], env)
    t.expect(r'vmm> ')
    t.keys('pi\t')                              # TAB completes the command word
    t.expect(r'PING ')
    t.keys('\r')
    t.expect(r'pong: vmmd ')
    t.keys('AUTH vm1 secret-one\r')
    t.expect(r'authenticated as vm1')
    t.keys('\x1b[A\x1b[A\r')                    # up twice: AUTH is not kept, PING is
    out = t.expect(r'pong: vmmd ')
    assert 'AUTH' not in out, out
    t.keys('LIST_A\t')                          # two candidates: both listed
    t.expect(r'LIST_AUTHORIZED\s+LIST_ALL')
    t.keys('L\t\r')                             # the only one left: LIST_ALL
    t.expect(r'vm1\s+512 MiB.*\n.*vmm> ')
    time.sleep(0.3)         # a ^D right at the prompt can fall in cooked mode (test_vmadm)
    t.keys('\x04')                              # end of input
    assert t.close() == 0
    hist = state / 'vmmd' / 'vmclient_history'
    assert hist.exists(), os.listdir(tmp_path)
    assert hist.stat().st_mode & 0o777 == 0o600
    assert (state / 'vmmd').stat().st_mode & 0o777 == 0o700
    text = hist.read_text()
    assert 'PING' in text and 'LIST_ALL' in text and 'secret-one' not in text, text

    # a new shell starts with that history; a piped one neither reads nor writes it
    t = vmmtest.Pty([VMCLIENT_BIN, 'shell'], env)
    t.expect(r'vmm> ')
    t.keys('\x1b[A\r')
    t.expect(r'VM_ID(.|\n)*vmm> ')
    t.keys('EXIT\r')
    assert t.close() == 0
    before = hist.read_text()
    p = subprocess.run([VMCLIENT_BIN, 'shell'], input=b'PING\n', capture_output=True,
                       env=env, timeout=30)
    assert p.returncode == 0 and p.stdout.decode().startswith('pong: '), p
    assert hist.read_text() == before


def test_man_page_matches_help():
    from test_vmadm import page_matches_help
    page = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tools',
                        'vmclient', 'vmclient.1')
    assert page_matches_help(page, run(None, '--help', check=0).out) == ([], [], [], [])
    r = subprocess.run(['groff', '-man', '-Tutf8', '-ww', '-z', page], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == '', r.stderr


def test_readme_tour_works(vmmd, tmp_path):
    """The README's tour, pasted line by line: the one-shot half in bash, the
    shell half fed to vmclient shell; every line succeeds."""
    readme = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                               'README.md')).read()
    tour = readme.split('## A two-minute tour')[1].split('\n## ')[0]
    commands = re.findall(r'^    \$ (.*)$', tour, re.M)
    shell_lines = re.findall(r'^    vmm> (.*)$', tour, re.M)
    assert commands[-1] == 'vmclient shell' and len(commands) >= 8 and len(shell_lines) >= 8
    bindir = os.path.dirname(VMCLIENT_BIN)
    script = 'set -e\n' + '\n'.join(
        c.replace('$PWD/build/tools/vmclient', bindir) for c in commands[:-1]) + '\n'
    env = clean_env({'VMCLIENT_SERVER': vmmd.server, 'HOME': str(tmp_path)})
    r = subprocess.run(['bash', '--norc', '--noprofile', '-c', script], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == '', r.stderr
    p = subprocess.run([VMCLIENT_BIN, 'shell'], input='\n'.join(shell_lines) + '\n',
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and p.stderr == '', p.stdout + p.stderr
    assert 'error:' not in p.stdout, p.stdout
    assert re.search(r'^vm2-data\s+150 GiB\s+vm2$', p.stdout, re.M), p.stdout


def test_shell_with_a_token(vmmd):
    run(vmmd, 'register', 'vm1', '--ram', '512', '--cpu', '1', password='secret-one', check=0)
    token = run(vmmd, 'auth', 'vm1', password='secret-one', check=0).out.strip()
    # a one-shot login continues in the shell: attached, so connected
    p = run(vmmd, 'shell', token=token, stdin='LIST_CONNECTED\n', check=0)
    assert re.search(r'^vm1\s+512 MiB', p.out, re.M), p.out
    # a token that is no token: said in words, once, and the shell goes on
    p = run(vmmd, 'shell', token='not-a-token', stdin='PING\nGET_VM\n', check=0)
    assert p.out.count("not one that 'vmclient auth VM_ID' prints") == 1, p.out
    assert 'pong: vmmd' in p.out and 'log in first: AUTH' in p.out, p.out
    assert not PROTOCOL_WORDS.search(p.out), p.out
