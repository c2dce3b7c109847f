# SPDX-License-Identifier: MIT
"""vmmd's command line and config file: --help, --version, INI keys,
flags over the file, errors with FILE:LINE, default state directory."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from vmmtest import PASSWORD, Client, free_port, vmmd_bin

FLAGS = ['--state-dir', '--listen', '--admin-socket', '--registration', '--session-ttl',
         '--log-level', '--config', '--idle-timeout', '--max-connections',
         '--max-connections-per-peer', '--auth-failures-per-minute', '--sessions-per-vm',
         '--max-message-tcp', '--map-size-max', '--hash-workers', '--help', '--version']


def run(args, timeout=10, env=None):
    return subprocess.run([vmmd_bin()] + args, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, env=env)


def test_help():
    p = run(['--help'])
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    for f in FLAGS:
        assert f in out, f'--help does not mention {f}'


def test_version():
    p = run(['--version'])
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert 'vmmd' in out and any(ch.isdigit() for ch in out), out


@pytest.mark.parametrize('args', [
    ['--session-ttl', 'abc'],
    ['--session-ttl', '-5'],
    ['--registration', 'maybe'],
    ['--log-level', 'loud'],
    ['--listen', 'nohostport'],
    ['--max-connections', '12x'],
    ['--bogus-flag'],
    ['--idle-timeout'],
], ids=['ttl_abc', 'ttl_neg', 'registration', 'log_level', 'listen', 'maxconn', 'unknown',
        'missing_value'])
def test_bad_flags(tmp_path, args):
    p = run(['--state-dir', str(tmp_path), '--listen', f'127.0.0.1:{free_port()}'] + args)
    # a usage error: exit status 2 (vmmd(8)), which the unit does not restart for
    assert p.returncode == 2, (p.returncode, p.stderr)
    err = p.stderr.decode()
    assert err.strip(), 'no message on stderr'
    flag = args[0].lstrip('-')
    assert flag in err or args[-1] in err, err


def write_conf(tmp_path, text):
    path = tmp_path / 'vmmd.conf'
    path.write_text(text)
    return str(path)


def test_config_file_sets_listen_and_registration(make_daemon, tmp_path):
    port = free_port()
    conf = write_conf(tmp_path, f"""# vmmd settings
[vmmd]
; comment
listen = 127.0.0.1:{port}
registration = closed
session_ttl = 100
""")
    d = make_daemon(listen=[], start=False, args=['--config', conf])
    d.port = port
    d.start()
    with d.client() as c:
        c.err('register', {'vm_id': 'vm1', 'password': PASSWORD, 'ram': 1, 'cpu': 1},
              'forbidden')


def test_config_without_section_and_ttl(make_daemon, tmp_path):
    port = free_port()
    conf = write_conf(tmp_path, f"""listen = 127.0.0.1:{port}
session_ttl = 100
""")
    d = make_daemon(listen=[], start=False, args=['--config', conf])
    d.port = port
    d.start()
    with d.client() as c:
        c.register('vm1')
        res = c.auth('vm1')
        assert abs(res['expires_at'] - time.time() * 1000 - 100000) < 5000, res


def test_config_repeated_listen(make_daemon, tmp_path):
    p1, p2 = free_port(), free_port()
    conf = write_conf(tmp_path, f"""[vmmd]
listen = 127.0.0.1:{p1}
listen = 127.0.0.1:{p2}
""")
    d = make_daemon(listen=[], start=False, args=['--config', conf])
    d.port = p1
    d.start()
    for p in (p1, p2):
        with Client(p) as c:
            assert c.ok('ping')['pong'] is True


def test_flags_win_over_file(make_daemon, tmp_path):
    p_file, p_flag = free_port(), free_port()
    conf = write_conf(tmp_path, f"""[vmmd]
listen = 127.0.0.1:{p_file}
registration = closed
""")
    d = make_daemon(listen=[f'127.0.0.1:{p_flag}'], start=False,
                    args=['--config', conf, '--registration', 'open'])
    d.port = p_flag
    d.start()
    with d.client() as c:
        c.register('vm1')
    with pytest.raises(ConnectionRefusedError):
        Client(p_file)


def test_listen_ipv6_and_v4(make_daemon):
    p4, p6 = free_port(), free_port('::1')
    d = make_daemon(listen=[f'127.0.0.1:{p4}', f'[::1]:{p6}'], start=False)
    d.port = p4
    d.start()
    with Client(p6, host='::1') as c:
        c.register('vm1')
    with Client(p4) as c:
        c.auth('vm1')


@pytest.mark.parametrize('text,line', [
    ('[vmmd]\nregistration = open\nbogus_key = 1\n', 3),
    ('# c\n\nsession_ttl = abc\n', 3),
    ('registration = sometimes\n', 1),
    ('[vmmd]\nthis line has no equals sign\n', 2),
], ids=['unknown_key', 'bad_ttl', 'bad_registration', 'no_equals'])
def test_config_errors(tmp_path, text, line):
    conf = write_conf(tmp_path, text)
    p = run(['--config', conf, '--state-dir', str(tmp_path),
             '--listen', f'127.0.0.1:{free_port()}'])
    # a configuration error: exit status 6 ("not configured", vmmd(8))
    assert p.returncode == 6, (p.returncode, p.stderr)
    err = p.stderr.decode()
    assert f'{conf}:{line}:' in err, err


def test_config_missing_file(tmp_path):
    p = run(['--config', str(tmp_path / 'nope.conf'), '--state-dir', str(tmp_path),
             '--listen', f'127.0.0.1:{free_port()}'])
    assert p.returncode == 6
    assert 'nope.conf' in p.stderr.decode()


def test_logs_on_stderr(make_daemon):
    d = make_daemon(log_level='debug')
    with d.client() as c:
        c.register('vm1')
    d.stop()
    with open(d.log_path, 'rb') as f:
        assert b'vm1' in f.read()


def start_and_ping(argv, env, port, cwd=None):
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=cwd)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                with Client(port, timeout=2) as c:
                    assert c.ok('ping')['pong'] is True
                    c.register('vm1')
                    break
            except OSError:
                assert time.monotonic() < deadline, 'vmmd did not start'
                time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
        out = proc.stdout.read().decode()
    assert rc == 0, out
    return out


def test_default_state_dir_xdg():
    """No --state-dir, not root: $XDG_STATE_HOME/vmmd and
    $XDG_RUNTIME_DIR/vmmd/admin.sock. As root the test runs the daemon as
    nobody (root's default is /var/lib/vmmd, which a test must not touch)."""
    base = tempfile.mkdtemp(prefix='vmmx', dir='/tmp')
    try:
        home = os.path.join(base, 'home')
        state = os.path.join(base, 'state')
        rundir = os.path.join(base, 'run')
        for p in (home, state, rundir):
            os.mkdir(p, 0o700)
        argv = [vmmd_bin()]
        if os.geteuid() == 0:
            import pwd
            nobody = pwd.getpwnam('nobody')
            os.chmod(base, 0o755)
            for p in (home, state, rundir):
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
            argv = ['setpriv', f'--reuid={nobody.pw_uid}', f'--regid={nobody.pw_gid}',
                    '--clear-groups'] + argv
        port = free_port()
        env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'HOME': home,
               'XDG_STATE_HOME': state, 'XDG_RUNTIME_DIR': rundir}
        for k in ('ASAN_OPTIONS', 'UBSAN_OPTIONS'):
            if k in os.environ:
                env[k] = os.environ[k]
        start_and_ping(argv + ['--listen', f'127.0.0.1:{port}'], env, port, cwd=base)
        assert os.path.exists(os.path.join(state, 'vmmd', 'vmmd.mdb')), os.listdir(state)
        assert not os.path.exists(os.path.join(home, '.local', 'state', 'vmmd'))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_default_state_dir_state_directory(tmp_path):
    """$STATE_DIRECTORY (set by systemd) wins, for root too."""
    state = tmp_path / 'sd-state'
    rundir = tmp_path / 'sd-run'
    state.mkdir()
    rundir.mkdir()
    sockdir = tempfile.mkdtemp(prefix='vmmr', dir='/tmp')
    try:
        port = free_port()
        env = dict(os.environ)
        env.update({'STATE_DIRECTORY': str(state), 'RUNTIME_DIRECTORY': sockdir,
                    'XDG_STATE_HOME': str(tmp_path / 'xdg'), 'XDG_RUNTIME_DIR': str(rundir)})
        start_and_ping([vmmd_bin(), '--listen', f'127.0.0.1:{port}'], env, port)
        assert os.path.exists(state / 'vmmd.mdb'), os.listdir(state)
        assert not os.path.exists(tmp_path / 'xdg')
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason='the case of root')
@pytest.mark.parametrize('own', [False, True])
def test_run_dev_as_root_keeps_its_state_in_the_checkout(tmp_path, own):
    """tools/run-dev run as root once put its database in /var/lib/vmmd,
    where an installed package's vmmd (user vmmd) then could not open it.
    Here the real script runs in a copy of the checkout's outline: its
    tools, a build directory ninja finds up to date, and the vmmd built."""
    top = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..'))
    tree = tmp_path / 'checkout'
    (tree / 'tools').mkdir(parents=True)
    for t in ('run-dev', 'install-deps'):
        shutil.copy2(os.path.join(top, 'tools', t), tree / 'tools' / t)
    (tree / 'build' / 'src' / 'daemon').mkdir(parents=True)
    (tree / 'build' / 'build.ninja').write_text('build all: phony\ndefault all\n')
    os.symlink(vmmd_bin(), tree / 'build' / 'src' / 'daemon' / 'vmmd')
    sockdir = tempfile.mkdtemp(prefix='vmmr', dir='/tmp')
    try:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != 'STATE_DIRECTORY'}
        args = ['--listen', f'127.0.0.1:{port}', '--admin-socket', f'{sockdir}/a.sock']
        want = tree / 'build' / 'dev-state'
        if own:
            want = tmp_path / 'mine'
            args += ['--state-dir', str(want)]
        out = start_and_ping([str(tree / 'tools' / 'run-dev')] + args, env, port)
        assert f'database {want}/vmmd.mdb' in out, out
        assert os.path.exists(want / 'vmmd.mdb')
        assert os.path.exists(tree / 'build' / 'dev-state') != own
        # and /var/lib/vmmd is untouched: conftest's guard checks every test
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
