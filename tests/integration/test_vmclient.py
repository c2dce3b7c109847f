# SPDX-License-Identifier: MIT
"""vmclient against the real vmmd: one-shot commands with a session token,
exit codes, help, and the interactive shell driven through a pipe with the
seeds' text commands.

Needs VMMD_BIN and VMCLIENT_BIN (meson passes both); fails without them."""

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import msgpack
import pytest

VMMD_BIN = os.environ.get('VMMD_BIN')
VMCLIENT_BIN = os.environ.get('VMCLIENT_BIN')
TOKEN_RE = re.compile(r'^[A-Za-z0-9_-]{43}$')


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


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
    def __init__(self, tmp):
        assert VMMD_BIN, 'VMMD_BIN is not set: this test needs the real vmmd'
        assert os.access(VMMD_BIN, os.X_OK), f'VMMD_BIN={VMMD_BIN} is not executable'
        self.dir = tmp
        self.port = free_port()
        self.server = f'127.0.0.1:{self.port}'
        self.admin = os.path.join(tmp, 'admin.sock')
        self.log = open(os.path.join(tmp, 'vmmd.log'), 'w+b')
        os.makedirs(os.path.join(tmp, 'state'))
        self.proc = subprocess.Popen(
            [VMMD_BIN, '--state-dir', os.path.join(tmp, 'state'),
             '--listen', self.server, '--admin-socket', self.admin, '--log-level', 'debug'],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_ready()

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
