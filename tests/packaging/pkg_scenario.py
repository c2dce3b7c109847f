#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The install scenario of tests/packaging, run as a script (never imported
by pytest). It installs the built packages into a throw-away overlay of this
machine, uses them under a real systemd manager, removes and purges them,
and writes what it saw as JSON for test_packages.py to judge.

    unshare --mount --propagation private pkg_scenario.py outer OUT DEBS SCRATCH

outer: a tmpfs on SCRATCH (an empty directory), an overlay with lowerdir=/ (nothing of the machine
       changes), /dev, /sys, a tmpfs /run and /tmp; then a new PID
       namespace with its /proc, and chroot into the overlay: the scenario is
       that namespace's PID 1 (systemctl sees no chroot), and whatever it
       starts (journald, systemd --user, vmmd) ends with it
inner: the phases, each writing OUT/<phase>.json:
  install  apt-get install of the .debs (the machine's network, so that a
           dependency the machine lacks could come from the archive)
  run      in a private network namespace (127.0.0.1:7707 is ours): journald
           and a root `systemd --user` with the installed units, unmodified
           (HOME outside /root, so StateDirectory= lands where the sandbox
           lets it); socket activation, the README's commands as root and as
           an admin-group member, reload, a configuration error, a crash
           loop, a socket restart (what an upgrade does); then a database in
           /var/lib/vmmd as the system manager would leave it
  remove   dpkg -r, dpkg -P, and a reinstall over what survived
"""

import glob
import json
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

ENV = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LANG': 'C.UTF-8', 'HOME': '/root',
       'DEBIAN_FRONTEND': 'noninteractive'}
JOURNALD = '/lib/systemd/systemd-journald'
SYSTEMD = '/lib/systemd/systemd'
UNITS = ('vmmd.service', 'vmmd.socket', 'vmmd-admin.socket')
CONF = '/etc/vmmd/vmmd.conf'
ADMIN_SOCK = '/run/vmmd/admin.sock'
MGR_HOME = '/run/mgrhome'
RUNTIME = '/run/user/0'


def sh(argv, input=None, timeout=60, env=None, check=False):
    """-> (exit status, stdout+stderr as text); never raises on a status."""
    e = dict(ENV)
    if env:
        e.update(env)
    try:
        p = subprocess.run(argv, input=input.encode() if input else None,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=e)
    except subprocess.TimeoutExpired as ex:
        out = (ex.stdout or b'').decode('utf-8', 'replace')
        return 124, out + f'\n[timed out after {timeout} s]'
    out = p.stdout.decode('utf-8', 'replace')
    if check and p.returncode != 0:
        raise RuntimeError(f'{argv}: exit {p.returncode}:\n{out}')
    return p.returncode, out


def wait_until(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(step)


class Recorder:
    """res[name] = value; a step that raises is recorded, the next goes on."""

    def __init__(self, path):
        self.path = path
        self.res = {'errors': {}}

    def step(self, name, fn):
        try:
            fn()
        except BaseException:
            self.res['errors'][name] = traceback.format_exc()

    def write(self):
        with open(self.path, 'w') as f:
            json.dump(self.res, f, indent=1)


# ---------------------------------------------------------------------------
# outer: the overlay and the chroot

def lo_up():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # SIOCSIFFLAGS, IFF_UP | IFF_LOOPBACK | IFF_RUNNING
        import fcntl
        fcntl.ioctl(s.fileno(), 0x8914, struct.pack('16sH', b'lo', 0x1 | 0x8 | 0x40))
    finally:
        s.close()


HOST_LEFTOVERS = ('/var/lib/vmmd', '/var/lib/vmclient', '/etc/vmmd')


def outer(out, debs, scratch):
    sh(['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', scratch], check=True)
    for d in ('upper', 'work', 'root'):
        os.mkdir(os.path.join(scratch, d))
    root = os.path.join(scratch, 'root')
    sh(['mount', '-t', 'overlay', 'overlay', '-o',
        f'lowerdir=/,upperdir={scratch}/upper,workdir={scratch}/work', root], check=True)
    # what vmmd or its packages left on this machine before (a vmmd run as
    # root without --state-dir makes /var/lib/vmmd, owned by root): gone from
    # the overlay, as on a machine that never had them; the machine keeps them
    for d in HOST_LEFTOVERS:
        if os.path.lexists(root + d):
            print(f'pkg_scenario: hiding this machine\'s {d} from the scenario',
                  file=sys.stderr)
            if os.path.isdir(root + d) and not os.path.islink(root + d):
                shutil.rmtree(root + d)
            else:
                os.unlink(root + d)
    sh(['mount', '--rbind', '/dev', f'{root}/dev'], check=True)
    sh(['mount', '--rbind', '/sys', f'{root}/sys'], check=True)
    sh(['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', f'{root}/run'], check=True)
    sh(['mount', '-t', 'tmpfs', '-o', 'mode=1777', 'tmpfs', f'{root}/tmp'], check=True)
    os.makedirs(f'{root}/output', exist_ok=True)
    sh(['mount', '--bind', out, f'{root}/output'], check=True)
    os.makedirs(f'{root}/tmp/debs')
    for f in glob.glob(os.path.join(debs, '*.deb')):
        if '-dbgsym_' not in f:
            shutil.copy(f, f'{root}/tmp/debs/')
    shutil.copy(os.path.abspath(__file__), f'{root}/tmp/pkg_scenario.py')
    p = subprocess.run(['unshare', '--pid', '--fork', f'--mount-proc={root}/proc',
                        'chroot', root, '/usr/bin/python3', '/tmp/pkg_scenario.py', 'inner',
                        '/output', '/tmp/debs'], env=ENV, timeout=900)
    # the mounts go with this namespace; the empty mount point stays behind
    sys.exit(p.returncode)


def inner(out, debs):
    os.chdir('/')
    for phase in ('install', 'run', 'remove'):
        argv = ['/usr/bin/python3', '/tmp/pkg_scenario.py', phase, out, debs]
        if phase == 'run':
            argv = ['unshare', '--net'] + argv
        p = subprocess.run(argv, env=ENV, timeout=600)
        if p.returncode != 0:
            print(f'pkg_scenario: phase {phase} exited {p.returncode}', file=sys.stderr)
        if phase == 'run':
            try:
                with open(os.path.join(out, 'cgroups.json')) as f:
                    remove_cgroups(json.load(f))
            except (OSError, ValueError):
                pass


# ---------------------------------------------------------------------------
# install

def deb_files(debs):
    return sorted(glob.glob(os.path.join(debs, '*.deb')))


def is_enabled(*units):
    out = {}
    for u in units:
        rc, o = sh(['systemctl', 'is-enabled', u])
        out[u] = o.strip().splitlines()[-1] if o.strip() else f'rc {rc}'
    return out


def user_info(name):
    try:
        u = pwd.getpwnam(name)
    except KeyError:
        return None
    return {'uid': u.pw_uid, 'gid': u.pw_gid, 'home': u.pw_dir, 'shell': u.pw_shell,
            'group': grp.getgrgid(u.pw_gid).gr_name}


def phase_install(out, debs):
    r = Recorder(os.path.join(out, 'install.json'))
    res = r.res
    # man-db's trigger only costs time here
    sh(['debconf-set-selections'], input='man-db man-db/auto-update boolean false\n')
    files = deb_files(debs)
    res['debs'] = [os.path.basename(f) for f in files]

    def install():
        # the README's command: apt install ./build-deb/...deb
        rc, o = _in_dir(debs, ['apt-get', 'install', '-y', '--no-install-recommends']
                        + ['./' + os.path.basename(f) for f in files], timeout=300)
        res['install_rc'], res['install_out'] = rc, o[-6000:]
    r.step('install', install)

    def facts():
        res['user'] = user_info('vmmd')
        try:
            g = grp.getgrnam('vmmd')
            res['group'] = {'gid': g.gr_gid, 'members': list(g.gr_mem)}
        except KeyError:
            res['group'] = None
        res['enabled'] = is_enabled('vmmd.socket', 'vmmd-admin.socket', 'vmmd.service')
        res['wants'] = sorted(os.listdir('/etc/systemd/system/sockets.target.wants')) \
            if os.path.isdir('/etc/systemd/system/sockets.target.wants') else []
        rc, o = sh(['journalctl', '--list-catalog', '--no-pager'])
        res['catalog_ids'] = sorted({ln.split()[0] for ln in o.splitlines() if ln.strip()})
        with open(CONF) as f:
            res['conf'] = f.read()
        rc, o = sh(['dpkg-query', '-W', '-f=${Conffiles}', 'vmmd'])
        res['conffiles'] = [ln.split()[0] for ln in o.splitlines() if ln.strip()]
        rc, o = sh(['dpkg-query', '-W', '-f=${Package} ${Status}\n'])
        res['status'] = {ln.split()[0]: ' '.join(ln.split()[1:]) for ln in o.splitlines()
                         if ln.split() and ln.split()[0] in
                         ('vmmd', 'vmclient', 'libvmm0', 'libvmm-dev', 'vmm-web')}
        if os.path.exists('/lib/systemd/system/vmm-web.socket'):
            res['web_enabled'] = is_enabled('vmm-web.socket', 'vmmd-web.socket',
                                            'vmm-web.service')
        res['agent_enabled'] = is_enabled('vmclient-agent.service')
    r.step('facts', facts)

    def probes():
        # what the other branches add, so that the tests can say what is missing
        res['vmadm_has_reload'] = sh(['vmadm', 'help', 'reload'])[0] == 0
        d = tempfile.mkdtemp()
        bad = os.path.join(d, 'bad.conf')
        with open(bad, 'w') as f:
            f.write('[vmmd]\nno_such_key = 1\n')
        rc, o = sh(['vmmd', '--config', bad, '--state-dir', os.path.join(d, 's'),
                    '--admin-socket', os.path.join(d, 'a.sock')], timeout=30)
        res['config_error_exit'], res['config_error_out'] = rc, o
        rc, o = sh(['vmmd', '--no-such-flag'], timeout=30)
        res['usage_error_exit'] = rc
        shutil.rmtree(d, ignore_errors=True)
    r.step('probes', probes)

    def users():
        for u in ('alice', 'bob'):
            sh(['useradd', '--create-home', '--shell', '/bin/sh', u], check=True)
        # the README's step for a new administrator
        res['usermod'] = sh(['usermod', '-aG', 'vmmd', 'alice'])
    r.step('users', users)
    r.write()


def _in_dir(d, argv, timeout=60):
    old = os.getcwd()
    os.chdir(d)
    try:
        return sh(argv, timeout=timeout)
    finally:
        os.chdir(old)


# ---------------------------------------------------------------------------
# run: a real systemd manager

def start_journald():
    os.makedirs('/run/systemd/journald.conf.d', exist_ok=True)
    with open('/run/systemd/journald.conf.d/test.conf', 'w') as f:
        f.write('[Journal]\nStorage=volatile\nReadKMsg=no\nRateLimitBurst=0\n'
                'ForwardToSyslog=no\nForwardToWall=no\nForwardToConsole=no\n'
                'ForwardToKMsg=no\n')
    log = open('/run/journald.log', 'wb')
    p = subprocess.Popen([JOURNALD], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                         env=ENV)
    ok = wait_until(lambda: os.path.exists('/run/systemd/journal/socket')
                    and os.path.exists('/run/systemd/journal/stdout'), 10)
    if not ok:
        raise RuntimeError('journald did not come up')
    return p


def stop_pid(p, timeout=10):
    if p is not None and p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def uctl(*args, timeout=60):
    return sh(['systemctl', '--user', '--no-pager'] + list(args), timeout=timeout,
              env={'XDG_RUNTIME_DIR': RUNTIME, 'HOME': MGR_HOME})


def show(unit, prop):
    return uctl('show', '-P', prop, unit)[1].strip()


def journal(match=()):
    sh(['journalctl', '--sync'], timeout=30)
    rc, o = sh(['journalctl', '-o', 'json', '--no-pager'] + list(match), timeout=30)
    recs = []
    for ln in o.splitlines():
        try:
            recs.append(json.loads(ln))
        except ValueError:
            pass
    return recs


def unit_messages(since_cursor=None):
    """MESSAGE of every record from vmmd.service or about it (the manager's)."""
    out = []
    for r in journal():
        if r.get('_SYSTEMD_USER_UNIT') == 'vmmd.service' or \
           r.get('USER_UNIT') == 'vmmd.service' or r.get('SYSLOG_IDENTIFIER') == 'vmmd' or \
           r.get('USER_UNIT', '').startswith('vmmd'):
            m = r.get('MESSAGE')
            if isinstance(m, list):
                m = bytes(m).decode('utf-8', 'replace')
            out.append(m or '')
    return out


def state(unit='vmmd.service'):
    return {k: show(unit, k) for k in ('ActiveState', 'SubState', 'Result', 'MainPID',
                                       'ExecMainStatus', 'NRestarts')}


def proc_status(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            return dict(ln.rstrip('\n').split(':\t', 1) for ln in f if ':\t' in ln)
    except OSError:
        return {}


def proc_limit(pid, name):
    try:
        with open(f'/proc/{pid}/limits') as f:
            for ln in f:
                if ln.startswith(name):
                    return ln[len(name):].split()[:2]
    except OSError:
        pass
    return None


def wait_state(pred, timeout):
    last = {}

    def check():
        last.update(state())
        return pred(last)
    wait_until(check, timeout, step=0.2)
    return dict(last)


def ping():
    return sh(['vmclient', 'ping'], timeout=15)


def own_cgroups(name):
    """Moves this process into a new cgroup NAME below its own, in the
        hierarchies a manager tracks processes with (cgroup2, name=systemd)
        and those that enforce TasksMax= and MemoryMax= here (pids, memory):
        a root `systemd --user` builds its tree below its own cgroup, which is
        otherwise the machine's top level, shared with every other test
        manager running at the same time. -> {hierarchy: directory}"""
    made = {}
    with open('/proc/self/cgroup') as f:
        lines = [ln.rstrip('\n').split(':', 2) for ln in f]
    for hid, ctrls, path in lines:
        if hid == '0':
            base = '/sys/fs/cgroup/unified' if os.path.isdir('/sys/fs/cgroup/unified') \
                else '/sys/fs/cgroup'
            key = 'unified'
        elif ctrls == 'name=systemd':
            base, key = '/sys/fs/cgroup/systemd', 'systemd'
        elif ctrls in ('pids', 'memory'):
            base, key = f'/sys/fs/cgroup/{ctrls}', ctrls
        else:
            continue
        d = os.path.join(base + path.rstrip('/'), name)
        try:
            os.mkdir(d)
            with open(os.path.join(d, 'cgroup.procs'), 'w') as f:
                f.write(str(os.getpid()))
            made[key] = d
        except OSError:
            pass
    return made


def remove_cgroups(dirs):
    for top in dirs:
        for base, subdirs, _ in os.walk(top, topdown=False):
            for sd in subdirs:
                try:
                    os.rmdir(os.path.join(base, sd))
                except OSError:
                    pass
        try:
            os.rmdir(top)
        except OSError:
            pass


def cgroup_value(cg, key, name):
    try:
        with open(os.path.join(cg[key], 'app.slice', 'vmmd.service', name)) as f:
            return f.read().strip()
    except (OSError, KeyError):
        return None


def phase_run(out, debs):
    r = Recorder(os.path.join(out, 'run.json'))
    res = r.res
    journald = manager = None
    lo_up()
    cg = own_cgroups(f'vmmd-pkg-{os.getpid()}')
    res['cgroups'] = cg
    with open(os.path.join(out, 'cgroups.json'), 'w') as f:
        json.dump(list(cg.values()), f)
    try:
        os.makedirs('/run/systemd/system')
        # the manager's notify socket is in its runtime directory: 0755, not
        # 0700, and the socket 0777 below, as the system manager's is, or
        # vmmd (as the vmmd user) could not send READY=1 to it
        os.makedirs(RUNTIME)
        os.chmod(RUNTIME, 0o755)
        os.makedirs(MGR_HOME)
        journald = start_journald()
        unitdir = os.path.join(RUNTIME, 'systemd', 'user')
        os.makedirs(unitdir)
        for u in UNITS:
            # the installed units, unchanged ...
            shutil.copy(os.path.join('/lib/systemd/system', u), unitdir)
        # ... but for what a user manager cannot do (HOST-NOTES): it cannot
        # set up ProtectHome=yes (exit 226/NAMESPACE); User=vmmd works, as
        # this manager runs as root
        os.makedirs(os.path.join(unitdir, 'vmmd.service.d'))
        with open(os.path.join(unitdir, 'vmmd.service.d', 'user-manager.conf'), 'w') as f:
            f.write('[Service]\nProtectHome=read-only\n')
        mlog = open('/run/manager.log', 'wb')
        manager = subprocess.Popen([SYSTEMD, '--user'], stdin=subprocess.DEVNULL, stdout=mlog,
                                   stderr=mlog, env=dict(ENV, HOME=MGR_HOME,
                                                         XDG_RUNTIME_DIR=RUNTIME, USER='root',
                                                         SYSTEMD_LOG_TARGET='journal'))
        if not wait_until(lambda: os.path.exists(f'{RUNTIME}/systemd/private')
                          or manager.poll() is not None, 30) or manager.poll() is not None:
            raise RuntimeError('systemd --user did not come up')
        wait_until(lambda: uctl('is-system-running')[1].strip() in ('running', 'degraded'), 30)
        os.chmod(f'{RUNTIME}/systemd/notify', 0o777)

        def activation():
            res['start_sockets'] = uctl('start', 'vmmd.socket', 'vmmd-admin.socket')
            res['before'] = show('vmmd.service', 'ActiveState')
            st = os.stat(ADMIN_SOCK)
            res['admin_sock'] = {'mode': oct(st.st_mode & 0o777),
                                 'group': grp.getgrgid(st.st_gid).gr_name}
            res['ping'] = ping()                      # the README: vmclient ping
            res['after'] = state()
            pid = int(res['after']['MainPID'])
            ps = proc_status(pid)
            res['main_uid'] = int(ps.get('Uid', '-1').split()[0])
            res['nofile'] = proc_limit(pid, 'Max open files')
            res['props'] = {k: show('vmmd.service', k) for k in
                            ('TasksMax', 'MemoryMax', 'LimitNOFILE', 'LimitNOFILESoft',
                             'RestartPreventExitStatus', 'StartLimitBurst',
                             'StartLimitIntervalUSec', 'ExecReload')}
            res['state_dir'] = sh(['ls', '-ld', f'{MGR_HOME}/.config/vmmd'])[1]
            res['pids_max'] = cgroup_value(cg, 'pids', 'pids.max')
            res['memory_limit'] = cgroup_value(cg, 'memory', 'memory.limit_in_bytes')
        r.step('activation', activation)

        def admin():
            # the README's commands, literally (a failure costs 15 s, not vmadm's 60)
            res['root_status'] = sh(['vmadm', 'status'], timeout=15)
            res['register'] = sh(['vmclient', 'register', 'vm1', '--ram', '2048', '--cpu', '2',
                                  '--disk', 'disk1:100', '--disk', 'disk2:200'],
                                 env={'VMCLIENT_PASSWORD': 'secret123'}, timeout=15)
            res['create'] = sh(['vmadm', 'create', 'vm1'], timeout=15)
            m = re.search(r'^password: (\S+)$', res['create'][1], re.M)
            if m:
                res['auth'] = sh(['vmclient', 'auth', 'vm1'], env={'VMCLIENT_PASSWORD': m.group(1)}, timeout=15)
            res['alice_status'] = sh(['runuser', '-u', 'alice', '--', 'vmadm', 'status'], timeout=15)
            res['alice_status_socket'] = sh(['runuser', '-u', 'alice', '--', 'vmadm', '--socket',
                                             ADMIN_SOCK, 'status'], timeout=15)
            res['bob_status_socket'] = sh(['runuser', '-u', 'bob', '--', 'vmadm', '--socket',
                                           ADMIN_SOCK, 'status'], timeout=15)
        r.step('admin', admin)

        def reload():
            before = show('vmmd.service', 'MainPID')
            res['reload_good'] = uctl('reload', 'vmmd.service', timeout=30)
            with open(CONF) as f:
                saved = f.read()
            with open(CONF, 'a') as f:
                f.write('session_ttl = soon\n')
            bad_line = saved.count('\n') + 1
            res['reload_bad_line'] = f'{CONF}:{bad_line}'
            res['reload_bad'] = uctl('reload', 'vmmd.service', timeout=30)
            res['after_bad_reload'] = state()
            res['reload_same_pid'] = show('vmmd.service', 'MainPID') == before
            res['ping_after_bad_reload'] = ping()
            with open(CONF, 'w') as f:
                f.write(saved)
            res['reload_messages'] = [m for m in unit_messages() if 'vmmd.conf' in m
                                      or 'eload' in m][-20:]
        r.step('reload', reload)

        def upgrade_restart():
            # what the postinst does on upgrade: try-restart vmmd.service; the
            # sockets are left alone and stay open
            pid1 = int(show('vmmd.service', 'MainPID') or 0)
            if pid1 == 0:
                ping()
                pid1 = int(show('vmmd.service', 'MainPID') or 0)
            res['restart_pid1'] = pid1
            ino = os.stat(ADMIN_SOCK).st_ino
            # a VM agent stays connected: vmmd closes it as it stops
            agent = socket.create_connection(('127.0.0.1', 7707), timeout=5)
            res['restart'] = uctl('try-restart', 'vmmd.service')
            agent.close()
            res['restart_old_gone'] = wait_until(lambda: not os.path.exists(f'/proc/{pid1}'), 20)
            res['restart_sockets'] = {u: show(u, 'ActiveState') for u in
                                      ('vmmd.socket', 'vmmd-admin.socket')}
            res['restart_same_admin_socket'] = os.stat(ADMIN_SOCK).st_ino == ino
            res['restart_ping'] = ping()
            res['restart_pid2'] = int(show('vmmd.service', 'MainPID') or 0)
        r.step('upgrade_restart', upgrade_restart)

        def config_error():
            uctl('stop', 'vmmd.service')
            with open(CONF) as f:
                saved = f.read()
            with open(CONF, 'a') as f:
                f.write('no_such_key = 1\n')
            res['conf_error_line'] = f'{CONF}:{saved.count(chr(10)) + 1}'
            t0 = time.monotonic()
            res['conf_error_ping'] = ping()
            st = wait_state(lambda s: s.get('ActiveState') == 'failed', 30)
            res['conf_error_seconds'] = round(time.monotonic() - t0, 1)
            res['conf_error_state'] = st
            res['conf_error_socket'] = show('vmmd.socket', 'ActiveState')
            res['conf_error_messages'] = [m for m in unit_messages()
                                          if 'vmmd.conf' in m or 'ailed' in m][-20:]
            with open(CONF, 'w') as f:
                f.write(saved)
            uctl('reset-failed', 'vmmd.service', 'vmmd.socket', 'vmmd-admin.socket')
            res['conf_error_restart_sockets'] = uctl('start', 'vmmd.socket', 'vmmd-admin.socket')
            res['conf_error_recovered'] = ping()
        r.step('config_error', config_error)

        def crash_loop():
            # every start is killed at once: systemd must give up, not loop
            ping()
            t0 = time.monotonic()
            kills = []
            while time.monotonic() - t0 < 120:
                st = wait_state(lambda s: s.get('ActiveState') in ('active', 'failed')
                                and (s.get('ActiveState') == 'failed' or s.get('MainPID') != '0'),
                                45)
                if st.get('ActiveState') != 'active':
                    break
                pid = int(st['MainPID'])
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                except ProcessLookupError:
                    pass
                wait_until(lambda: not os.path.exists(f'/proc/{pid}'), 5)
            res['crash_kills'] = len(kills)
            res['crash_seconds'] = round(time.monotonic() - t0, 1)
            res['crash_state'] = state()
            res['crash_sockets'] = {u: show(u, 'ActiveState') + '/' + show(u, 'Result')
                                    for u in ('vmmd.socket', 'vmmd-admin.socket')}
            res['crash_refused'] = ping()
            res['crash_messages'] = [m for m in unit_messages()
                                     if 'too quickly' in m or 'start-limit' in m
                                     or 'signal' in m.lower()][-20:]
            uctl('reset-failed', 'vmmd.service', 'vmmd.socket', 'vmmd-admin.socket')
            uctl('start', 'vmmd.socket', 'vmmd-admin.socket')
        r.step('crash_loop', crash_loop)

        def stop():
            # what the prerm does on removal: stop the sockets; vmmd goes with them
            ping()
            res['stop_running'] = show('vmmd.service', 'ActiveState')
            res['stop'] = uctl('stop', 'vmmd.socket', 'vmmd-admin.socket')
            res['stop_service'] = state()
            res['admin_sock_removed'] = not os.path.exists(ADMIN_SOCK)
        r.step('stop', stop)
    except BaseException:
        res['errors']['run'] = traceback.format_exc()
    finally:
        try:
            res['unit_journal'] = [f"{r.get('__MONOTONIC_TIMESTAMP')} {r.get('_PID')} {r.get('MESSAGE')}" for r in journal()][-200:]
        except BaseException:
            pass
        if manager is not None:
            stop_pid(manager, 20)
            with open('/run/manager.log', 'rb') as f:
                res['manager_log'] = f.read().decode('utf-8', 'replace')[-3000:]
        stop_pid(journald)
        # maintainer scripts must not look for a system manager from here on
        shutil.rmtree('/run/systemd/system', ignore_errors=True)

    def data():
        # /var/lib/vmmd as the system manager leaves it (StateDirectory=,
        # owned by vmmd, 0700), with a VM in the database
        sh(['install', '-d', '-o', 'vmmd', '-g', 'vmmd', '-m', '0700', '/var/lib/vmmd'],
           check=True)
        d = tempfile.mkdtemp()
        os.chmod(d, 0o755)
        shutil.chown(d, 'vmmd', 'vmmd')
        sock = os.path.join(d, 'admin.sock')
        log = open(os.path.join(d, 'vmmd.log'), 'wb')
        p = subprocess.Popen(['setpriv', '--reuid=vmmd', '--regid=vmmd', '--init-groups',
                              'vmmd', '--state-dir', '/var/lib/vmmd', '--listen', '127.0.0.1:7707',
                              '--admin-socket', sock], stdout=log, stderr=log, env=ENV)
        try:
            wait_until(lambda: os.path.exists(sock) or p.poll() is not None, 10)
            res['data_create'] = sh(['vmadm', '--socket', sock, 'create', 'keep-vm'])
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(15)
        res['data_files'] = sorted(os.listdir('/var/lib/vmmd'))
    r.step('data', data)
    r.write()


# ---------------------------------------------------------------------------
# remove and purge

ADMIN_DROPIN = '/etc/systemd/system/vmmd.socket.d/override.conf'
ADMIN_FILE = '/etc/vmmd/README.local'


VMMD_UNITS = ('vmmd.service', 'vmmd.socket', 'vmmd-admin.socket')


def ours(name):
    """A file about one of the vmmd package's units (not vmm-web's vmmd-web.socket)."""
    return any(name == u or name.startswith(u + '.') for u in VMMD_UNITS)


def snapshot():
    helper = '/var/lib/systemd/deb-systemd-helper-enabled'
    helper_files = []
    for base, dirs, files in os.walk(helper):
        helper_files += [os.path.join(base, n) for n in dirs + files if ours(n)]
    return {
        'binary': os.path.exists('/usr/sbin/vmmd'),
        'unit': os.path.exists('/lib/systemd/system/vmmd.service'),
        'conf': os.path.exists(CONF),
        'etc_dir': sorted(os.listdir('/etc/vmmd')) if os.path.isdir('/etc/vmmd') else None,
        'db': os.path.exists('/var/lib/vmmd/vmmd.mdb'),
        'user': user_info('vmmd'),
        'group': grp.getgrnam('vmmd').gr_gid if _has_group('vmmd') else None,
        'admin_dropin': os.path.exists(ADMIN_DROPIN),
        'admin_file': os.path.exists(ADMIN_FILE),
        'wants': sorted(f for f in os.listdir('/etc/systemd/system/sockets.target.wants')
                        if ours(f))
        if os.path.isdir('/etc/systemd/system/sockets.target.wants') else [],
        'masked': sorted(f for f in os.listdir('/etc/systemd/system')
                         if ours(f) and os.path.islink(f'/etc/systemd/system/{f}')
                         and os.readlink(f'/etc/systemd/system/{f}') == '/dev/null'),
        'helper_state': helper_files,
        'status': sh(['dpkg-query', '-W', '-f=${Status}', 'vmmd'])[1].strip(),
    }


def _has_group(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def phase_remove(out, debs):
    r = Recorder(os.path.join(out, 'remove.json'))
    res = r.res

    def admin_files():
        # what an administrator adds: "systemctl edit vmmd.socket" writes a
        # drop-in; a file of their own beside vmmd.conf; an edited vmmd.conf
        os.makedirs(os.path.dirname(ADMIN_DROPIN), exist_ok=True)
        with open(ADMIN_DROPIN, 'w') as f:
            f.write('[Socket]\nListenStream=\nListenStream=127.0.0.1:7708\n')
        with open(ADMIN_FILE, 'w') as f:
            f.write('notes of the administrator\n')
        with open(CONF, 'a') as f:
            f.write('log_level = notice\n')
        res['before'] = snapshot()
    r.step('admin_files', admin_files)

    def remove():
        res['remove'] = sh(['dpkg', '-r', 'vmmd'], timeout=120)
        res['after_remove'] = snapshot()
    r.step('remove', remove)

    def purge():
        res['purge'] = sh(['dpkg', '-P', 'vmmd'], timeout=120)
        res['after_purge'] = snapshot()
    r.step('purge', purge)

    def reinstall():
        f = [x for x in deb_files(debs) if os.path.basename(x).startswith('vmmd_')]
        res['reinstall'] = _in_dir(debs, ['apt-get', 'install', '-y', '--no-install-recommends',
                                          './' + os.path.basename(f[0])], timeout=300)
        res['after_reinstall'] = snapshot()
        res['check'] = sh(['runuser', '-u', 'vmmd', '--', 'vmmd-check', '/var/lib/vmmd'],
                          timeout=60)
        with open(CONF) as f:
            res['conf_after_reinstall'] = f.read()
    r.step('reinstall', reinstall)
    r.write()


if __name__ == '__main__':
    mode, out = sys.argv[1], sys.argv[2]
    debs = sys.argv[3] if len(sys.argv) > 3 else None
    if mode == 'outer':
        outer(out, debs, sys.argv[4])
    else:
        {'inner': inner, 'install': phase_install, 'run': phase_run,
         'remove': phase_remove}[mode](out, debs)
