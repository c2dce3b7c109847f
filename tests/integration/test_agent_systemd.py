#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""vmclient-agent.service for real: the shipped unit under a real
`systemd --user` manager with a real journald, in a private mount namespace
(unshare) with a tmpfs /run and an overlay on /etc, so nothing of the host
changes. The agent discovers the real machine from inside its sandbox,
talks to fakevmmd (part 2), and runs a booking hook: the condition on
agent.conf, READY after the first report, the status line, the watchdog, the
sandbox around the agent and its hooks (/etc/motd writable, the rest of /etc
not), and native journal records with the VMCLIENT_* fields."""

import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from fakevmmd import FakeVmmd  # noqa: E402
from test_systemd import (JOURNALD, SYSTEMD, journal_records, show, start_journald,  # noqa: E402
                          stop_pid, systemctl)
from vmmtest import wait_until  # noqa: E402

try:
    import pytest
except ImportError:     # the child runs without pytest
    pytest = None

TOP = os.path.normpath(os.path.join(HERE, '..', '..'))
UNIT = os.path.join(TOP, 'systemd', 'vmclient-agent.service')
MOTD_HOOK = os.path.join(TOP, 'tools', 'vmclient', 'examples', 'booking.d', '50-motd')
PASSWORD = 'unit-secret-pw-7'
PROBE = '''#!/bin/sh
echo "probe stdout $VMM_EVENT"
echo "probe stderr $VMM_USER" >&2
if touch /etc/vmclient-probe 2>/dev/null; then echo "etc writable"; else echo "etc read-only"; fi
if head -c 1 /proc/meminfo >/dev/null; then echo "proc readable"; fi
echo "uid $(id -u)"
'''


def vmclient_bin():
    b = os.environ.get('VMCLIENT_BIN')
    assert b and os.access(b, os.X_OK), 'VMCLIENT_BIN is not set (meson sets it)'
    return b


def child(scratch):
    res = {}
    # /etc: an overlay, so agent.conf and the hooks exist only in here
    upper = os.path.join(scratch, 'etc-upper')
    work = os.path.join(scratch, 'etc-work')
    os.makedirs(upper)
    os.makedirs(work)
    subprocess.run(['mount', '-t', 'overlay', 'overlay', '-o',
                    f'lowerdir=/etc,upperdir={upper},workdir={work}', '/etc'], check=True)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/run'], check=True)
    os.makedirs('/run/systemd/system')
    os.makedirs('/run/user/0', mode=0o700)
    journald = start_journald(scratch, mount_run=False)
    fake = FakeVmmd(vms={'vm-unit': PASSWORD})
    manager = None
    try:
        # the binary outside /tmp (PrivateTmp= hides it)
        base = '/run/vmclient-test'
        os.makedirs(base, mode=0o755)
        exe = os.path.join(base, 'vmclient')
        shutil.copy(vmclient_bin(), exe)
        # and libvmm: the build's RUNPATH is relative to the build tree
        libdir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(vmclient_bin())))), 'src', 'libvmm')
        for name in os.listdir(libdir):
            if name.startswith('libvmm.so') and not name.endswith('.p'):
                shutil.copy(os.path.join(libdir, name), os.path.join(base, name),
                            follow_symlinks=True)
        unitdir = '/run/user/0/systemd/user'
        os.makedirs(os.path.join(unitdir, 'vmclient-agent.service.d'))
        with open(UNIT) as f:
            text = f.read()
        with open(os.path.join(unitdir, 'vmclient-agent.service'), 'w') as f:
            f.write(text.replace('@bindir@/vmclient', exe))
        with open(os.path.join(unitdir, 'vmclient-agent.service.d', 'test.conf'), 'w') as f:
            # a short watchdog, to see it fed
            f.write(f'[Service]\nWatchdogSec=2s\nEnvironment=LD_LIBRARY_PATH={base}\n')
            # Artefacts of this machine: here any unit that keeps the host's
            # /proc (no ProcSubset=pid, which the agent cannot have: it reads
            # /proc/meminfo) fails at 226/NAMESPACE with ProtectKernelTunables=
            # or ProtectKernelLogs= (checked with a oneshot /bin/true under this
            # same manager); both work on a normal systemd host and stay in the
            # shipped unit, whose exposure test_agent.py checks
            f.write('ProtectKernelTunables=no\nProtectKernelLogs=no\n')
            # LeakSanitizer's stop-the-world needs ptrace, which the system
            # call filter rightly forbids; every other test checks leaks
            if 'ASAN_OPTIONS' in os.environ:
                f.write(f'Environment=ASAN_OPTIONS={os.environ["ASAN_OPTIONS"]}'
                        ':detect_leaks=0\n')
            if 'UBSAN_OPTIONS' in os.environ:
                f.write(f'Environment=UBSAN_OPTIONS={os.environ["UBSAN_OPTIONS"]}\n')
        home = os.path.join(base, 'home')
        os.makedirs(home)
        mlog = open(os.path.join(scratch, 'manager.log'), 'wb')
        env = {'PATH': os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin'),
               'HOME': home, 'XDG_RUNTIME_DIR': '/run/user/0', 'USER': 'root',
               'LANG': 'C.UTF-8'}
        manager = subprocess.Popen([SYSTEMD, '--user'], stdin=subprocess.DEVNULL,
                                   stdout=mlog, stderr=mlog, env=env)
        assert wait_until(lambda: os.path.exists('/run/user/0/systemd/private')
                          or manager.poll() is not None, timeout=30), 'no systemd --user'
        assert manager.poll() is None, 'systemd --user exited'
        assert wait_until(lambda: systemctl('is-system-running', check=False)[1]
                          in ('running', 'degraded'), timeout=30)

        # not configured: the condition keeps it from starting
        systemctl('start', 'vmclient-agent.service')
        res['unconfigured'] = systemctl('is-active', 'vmclient-agent.service', check=False)[1]
        res['condition'] = show('vmclient-agent.service', 'ConditionResult')

        os.makedirs('/etc/vmclient/booking.d')
        with open('/etc/vmclient/agent.conf', 'w') as f:
            f.write(f'[agent]\nserver = 127.0.0.1:{fake.port}\nvm_id = vm-unit\n'
                    'interval = 1\nhook_timeout = 5\n')
        with open('/etc/vmclient/password', 'w') as f:
            f.write(PASSWORD + '\n')
        os.chmod('/etc/vmclient/password', 0o600)
        shutil.copy(MOTD_HOOK, '/etc/vmclient/booking.d/50-motd')
        with open('/etc/vmclient/booking.d/10-probe', 'w') as f:
            f.write(PROBE)
        os.chmod('/etc/vmclient/booking.d/10-probe', 0o755)
        with open('/etc/motd', 'w') as f:
            f.write('before\n')

        t0 = time.monotonic()
        systemctl('start', 'vmclient-agent.service', timeout=60)    # waits for READY=1
        res['start_seconds'] = time.monotonic() - t0
        res['active'] = systemctl('is-active', 'vmclient-agent.service', check=False)[1]
        res['reports_at_ready'] = len(fake.calls('vm.report'))
        pid = int(show('vmclient-agent.service', 'MainPID'))
        res['status_text'] = show('vmclient-agent.service', 'StatusText')
        with open(f'/proc/{pid}/status') as f:
            st = dict(line.rstrip('\n').split(':\t', 1) for line in f if ':\t' in line)
        res['no_new_privs'] = st.get('NoNewPrivs')
        res['seccomp'] = st.get('Seccomp')
        res['cap_bnd'] = st.get('CapBnd')
        res['uid'] = st.get('Uid')

        fake.push_event({'type': 'booking.created', 'vm_id': 'vm-unit', 'user': 'alice',
                         'expires_at': 1767283200000})
        res['motd'] = wait_until(lambda: 'alice' in open('/etc/motd').read(), timeout=20) \
            and open('/etc/motd').read()
        res['status_booked'] = wait_until(
            lambda: 'booked by alice' in show('vmclient-agent.service', 'StatusText'),
            timeout=5) and show('vmclient-agent.service', 'StatusText')
        res['probe_file'] = os.path.exists('/etc/vmclient-probe')
        wd1 = int(show('vmclient-agent.service', 'WatchdogTimestampMonotonic') or 0)
        time.sleep(2.5)
        wd2 = int(show('vmclient-agent.service', 'WatchdogTimestampMonotonic') or 0)
        res['watchdog_advanced'] = wd2 > wd1 > 0
        res['token_calls'] = len(fake.calls('auth'))
        res['describe'] = [m for _, m, _ in fake.calls() if m in ('vm.add', 'vm.update')]

        systemctl('stop', 'vmclient-agent.service', timeout=30)
        res['after_stop'] = systemctl('is-active', 'vmclient-agent.service', check=False)[1]
        res['result'] = show('vmclient-agent.service', 'Result')
        res['exec_status'] = show('vmclient-agent.service', 'ExecMainStatus')
        recs = journal_records('SYSLOG_IDENTIFIER=vmclient')
        res['records'] = [{k: v for k, v in r.items()
                           if k in ('MESSAGE', 'MESSAGE_ID', 'PRIORITY', '_TRANSPORT')
                           or k.startswith('VMCLIENT_')}
                          for r in recs]
        export = subprocess.run(['journalctl', '-o', 'export', '--no-pager'],
                                check=True, capture_output=True).stdout
        res['password_in_journal'] = PASSWORD.encode() in export
        res['token_in_journal'] = any(t.encode() in export for t in list(fake.tokens))
    except BaseException:
        subprocess.run(['journalctl', '--sync'], timeout=30)
        print(systemctl('status', 'vmclient-agent.service', check=False)[1], file=sys.stderr)
        subprocess.run(['journalctl', '--no-pager', '-n', '60'], stdout=sys.stderr, timeout=30)
        raise
    finally:
        fake.close()
        if manager is not None:
            try:
                systemctl('stop', 'vmclient-agent.service', check=False, timeout=20)
            except subprocess.TimeoutExpired:
                pass
            stop_pid(manager)
        stop_pid(journald)
    with open(os.path.join(scratch, 'result.json'), 'w') as f:
        json.dump(res, f)


if pytest is not None:
    def test_agent_unit_under_systemd_user_manager(tmp_path):
        if os.geteuid() != 0:
            pytest.skip('needs root (mount namespaces, journald, systemd --user); CI runs '
                        'as root')
        for tool in ('unshare', 'systemctl', 'journalctl'):
            if shutil.which(tool) is None:
                pytest.skip(f'{tool} is not installed (Debian package systemd)')
        for path in (SYSTEMD, JOURNALD):
            if not os.access(path, os.X_OK):
                pytest.skip(f'{path} missing (Debian package systemd)')
        p = subprocess.run(['unshare', '--mount', '--propagation', 'private', sys.executable,
                            os.path.abspath(__file__), 'child', str(tmp_path)],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=240)
        out = p.stdout.decode('utf-8', 'replace') + p.stderr.decode('utf-8', 'replace')
        assert p.returncode == 0, f'the scenario failed ({p.returncode}):\n{out}'
        with open(tmp_path / 'result.json') as f:
            r = json.load(f)
        info = json.dumps(r, indent=1)
        assert r['unconfigured'] == 'inactive' and r['condition'] == 'no', info
        assert r['active'] == 'active', info
        # Type=notify: started means READY, and READY follows the first report
        assert r['reports_at_ready'] >= 1, info
        assert r['status_text'].startswith('connected to 127.0.0.1:'), info
        assert r['status_booked'].endswith('booked by alice until 2026-01-01 16:00 UTC'), info
        assert r['motd'] == 'This VM (vm-unit) is booked by alice until 2026-01-01 16:00 UTC.\n'
        assert r['no_new_privs'] == '1' and r['seccomp'] == '2', info
        assert int(r['cap_bnd'], 16) == 0, info
        assert not r['probe_file'], 'a hook could write to /etc\n' + info
        assert r['watchdog_advanced'], info
        assert r['token_calls'] == 1 and r['describe'] == ['vm.add'], info
        assert r['after_stop'] == 'inactive' and r['result'] == 'success', info
        assert r['exec_status'] == '0', info
        recs = r['records']
        assert {x.get('_TRANSPORT') for x in recs} == {'journal'}, info

        def find(**kw):
            return [x for x in recs if all(x.get(k) == v for k, v in kw.items())]
        assert find(VMCLIENT_HOOK='10-probe', VMCLIENT_HOOK_STREAM='stdout',
                    MESSAGE='hook 10-probe: probe stdout booking.created',
                    VMCLIENT_EVENT='booking.created', VMCLIENT_USER='alice',
                    VMCLIENT_FEED='1', PRIORITY='6'), info
        assert find(VMCLIENT_HOOK='10-probe', VMCLIENT_HOOK_STREAM='stderr',
                    MESSAGE='hook 10-probe: probe stderr alice', PRIORITY='5'), info
        assert find(MESSAGE='hook 10-probe: etc read-only'), info
        assert find(MESSAGE='hook 10-probe: proc readable'), info
        assert find(MESSAGE='hook 10-probe: uid 0'), info
        assert find(VMCLIENT_HOOK='50-motd', MESSAGE_ID='9f86d03ab28b43ab9ae36c2b5a99d881'), info
        assert find(MESSAGE_ID='d1ae6be09a4f457b9cce16d4208d9ea3', VMCLIENT_VM_ID='vm-unit'), info
        assert find(MESSAGE_ID='bf88d6a3f6ea4837a43e7a67bffc2719',
                    VMCLIENT_SERVER=r['status_text'].split()[2].rstrip(',')), info
        assert not r['password_in_journal'] and not r['token_in_journal'], info


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == 'child':
        child(sys.argv[2])
    else:
        sys.exit('usage: test_agent_systemd.py child SCRATCH')
