# SPDX-License-Identifier: MIT
"""`vmclient agent` against a real vmmd: register or log in and describe on
first start, a changed disk set sent once, resume (no password login) after a
restart of vmmd, reconnect with backoff after a kill -9, the next server when
one is down, the token file (0600, replaced after a revoke), sd_notify
(READY, STATUS, WATCHDOG, STOPPING).

The agent reads a fake root (VMCLIENT_ROOT) so that every VM has its own
disks. The tests marked part2 need vmmd's part 2 (vm.report, booking
events on TCP): they run against the real vmmd once it has them."""

import os
import re
import stat
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agenttest import (Admin, Agent, Notify, disk, fake_root, remove_disk,  # noqa: E402
                       set_disk)
from vmmtest import PASSWORD, free_port, wait_until  # noqa: E402

HEARTBEAT = r'first (heartbeat|report) to \S+ done: ready'
# a first login costs vmmd up to three password hashes on niced worker
# threads: on a busy machine that takes long
FIRST = 120
BACKOFF_RE = re.compile(r'reconnecting in (\d+\.\d) s \(attempt (\d+), at most (\d+) s\)')


def vmmd_has_part2(daemon):
    """whoami is part 2: part 1 answers unknown_method, part 2 unauthenticated."""
    with daemon.client() as c:
        err, _ = c.call('whoami')
    return err is not None and err[0] != 'unknown_method'


@pytest.fixture
def make_agent(tmp_path, request):
    agents = []

    def make(daemon=None, vm='vm1', register=True, password=PASSWORD, args=(), disks=None,
             servers=None, env=None, interval=1, **root_kw):
        sub = tmp_path / f'a{len(agents)}'
        sub.mkdir()
        if disks is None:
            disks = [disk('vda', gib=20, dev='254:0', files={'serial': f'{vm}-S1\n'})]
        root = fake_root(sub / 'root', disks=disks, **root_kw)
        pw = sub / 'password'
        pw.write_text(password + '\n')
        pw.chmod(0o600)
        a = ['--vm-id', vm, '--password-file', str(pw), '--state-dir', str(sub / 'state'),
             '--interval', str(interval), '--hooks', str(sub / 'hooks'),
             '--config', str(sub / 'agent.conf')]
        (sub / 'agent.conf').write_text('# empty: flags only\n')
        for s in servers or [f'127.0.0.1:{daemon.port}']:
            a += ['--server', s]
        if register:
            a.append('--register')
        ag = Agent(sub, root, a + list(args), env=env)
        ag.state = str(sub / 'state')
        ag.vm = vm
        agents.append(ag)
        return ag.start()

    yield make
    failed = getattr(request.node, 'rep_call', None) is None or request.node.rep_call.failed
    for ag in agents:
        try:
            ag.stop()
        except AssertionError as e:
            print(e)
            failed = True
        if failed:
            print(f'--- agent log ({ag.vm}) ---\n' + ag.log_text(all_runs=True))


def admin(daemon):
    return Admin(daemon.admin_socket)


def password_logins(daemon, vm):
    """Password logins of vm in every run's log ("VM 'x' logged in from")."""
    return len(re.findall(rf"VM '{re.escape(vm)}' logged in from", daemon.log_text()))


def auth_calls_this_run(daemon):
    """auth calls since the daemon started, from status's per-method figures
    when vmmd has them (None otherwise)."""
    a = admin(daemon)
    try:
        st = a.ok('status')
    finally:
        a.close()
    m = st.get('methods')
    if not isinstance(m, dict):
        return None
    return m.get('auth', {}).get('calls', 0)


def token_of(ag):
    path = os.path.join(ag.state, 'token')
    st = os.stat(path)
    with open(path) as f:
        return f.read().strip(), stat.S_IMODE(st.st_mode), st.st_ino


def sessions(daemon, vm):
    a = admin(daemon)
    try:
        return a.ok('session.list', {'vm_id': vm})['sessions']
    finally:
        a.close()


def record(daemon, vm):
    a = admin(daemon)
    try:
        return a.ok('vm.get', {'vm_id': vm})
    finally:
        a.close()


def test_first_start_registers_and_describes(daemon, make_agent):
    ag = make_agent(daemon, vm='vm1', ram_kib=2097152, cpus='0-3',
                    disks=[disk('vda', gib=20, dev='254:0', files={'serial': 'vm1-S1\n'}),
                           disk('vdb', gib=5, dev='254:16')])
    ag.wait_log(HEARTBEAT, timeout=FIRST)
    text = ag.log_text()
    assert 'registering it' in text and 'registered vm1' in text
    rec = record(daemon, 'vm1')
    assert rec['ram'] == 2048 and rec['cpu'] == 4
    assert rec['disks'] == [{'id': 'vm1-S1', 'size': 20}, {'id': 'vm1-vdb', 'size': 5}]
    assert rec['connected'] is True
    tok, mode, _ = token_of(ag)
    assert re.fullmatch(r'[A-Za-z0-9_-]{43}', tok) and mode == 0o600
    assert stat.S_IMODE(os.stat(ag.state).st_mode) == 0o700
    assert password_logins(daemon, 'vm1') == 1
    # registered with the description: ram, cpu and disks needed no vm.add or
    # vm.update (what register cannot carry, hostname and os, follows)
    assert not re.search(r'described vm1 to vmmd: .*\b(ram|cpu|disks)\b', text), text


def test_first_start_logs_in_and_describes_a_provisioned_vm(daemon, make_agent):
    a = admin(daemon)
    a.ok('vm.create', {'vm_id': 'vm2', 'password': PASSWORD})
    assert a.ok('vm.get', {'vm_id': 'vm2'})['ram'] is None
    a.close()
    ag = make_agent(daemon, vm='vm2', register=False, cpus='0')
    ag.wait_log(HEARTBEAT, timeout=FIRST)
    assert re.search(r'described vm2 to vmmd: ram, cpu, disks', ag.log_text())
    rec = record(daemon, 'vm2')
    assert rec['ram'] == 4096 and rec['cpu'] == 1
    assert rec['disks'] == [{'id': 'vm2-S1', 'size': 20}]
    assert 'registering' not in ag.log_text()


def test_unknown_vm_without_register_backs_off(daemon, make_agent):
    ag = make_agent(daemon, vm='ghost', register=False)
    ag.wait_log(r'unknown VM or wrong password .*--register registers an unknown VM',
                timeout=FIRST)
    ag.wait_log(BACKOFF_RE.pattern)
    a = admin(daemon)
    err, _ = a.call('vm.get', {'vm_id': 'ghost'})
    a.close()
    assert err['code'] == 'not_found'
    assert not os.path.exists(os.path.join(ag.state, 'token'))


def test_wrong_password_with_register_backs_off(daemon, make_agent):
    with daemon.client(timeout=FIRST) as c:     # a password hash: slow on a busy machine
        c.register('vm3', password='another-password')
    ag = make_agent(daemon, vm='vm3')
    ag.wait_log(r'vmmd knows vm3 but refused its password: the password in \S+ is wrong',
                timeout=FIRST)
    ag.wait_log(BACKOFF_RE.pattern)
    assert ag.proc.poll() is None


def test_changed_disk_set_is_sent_once(daemon, make_agent):
    ag = make_agent(daemon, vm='vm4')
    ag.wait_log(HEARTBEAT, timeout=FIRST)
    a = admin(daemon)
    a.ok('events.watch')
    # nothing changes: nothing is sent over several intervals
    events = a.collect(2.5)
    assert [e for e in events if e['type'].startswith('vm.')] == []
    set_disk(ag.root, disk('vdb', gib=7, dev='254:16', files={'serial': 'vm4-S2\n'}))
    a.wait_event(lambda e: e['type'] == 'vm.updated' and e['vm_id'] == 'vm4')
    a.collect(3.5)
    assert len([e for e in a.events if e['type'] == 'vm.updated']) == 1
    assert record(daemon, 'vm4')['disks'] == [{'id': 'vm4-S1', 'size': 20},
                                              {'id': 'vm4-S2', 'size': 7}]
    # a disk removed: once more, and the RAM with it
    remove_disk(ag.root, 'vda')
    with open(os.path.join(ag.root, 'proc/meminfo'), 'w') as f:
        f.write('MemTotal: 1048576 kB\nMemAvailable: 524288 kB\n')
    a.collect(3.5)
    assert len([e for e in a.events if e['type'] == 'vm.updated']) == 2
    a.close()
    rec = record(daemon, 'vm4')
    assert rec['disks'] == [{'id': 'vm4-S2', 'size': 7}] and rec['ram'] == 1024
    assert len(re.findall(r'described vm4 to vmmd: disks\n', ag.log_text())) == 1
    assert len(re.findall(r'described vm4 to vmmd: ram, disks\n', ag.log_text())) == 1


def test_restart_of_vmmd_resumes_without_password_login(daemon, make_agent):
    ag = make_agent(daemon, vm='vm5')
    ag.wait_log(HEARTBEAT, timeout=FIRST)
    before = sessions(daemon, 'vm5')
    assert len(before) == 1
    tok, _, ino = token_of(ag)
    assert password_logins(daemon, 'vm5') == 1
    mark = ag.log_len()
    daemon.restart()
    ag.wait_log(r'resumed the session of vm5', start=mark, timeout=40)
    assert wait_until(lambda: record(daemon, 'vm5')['connected'], timeout=10)
    after = sessions(daemon, 'vm5')
    assert [s['id'] for s in after] == [s['id'] for s in before]
    assert password_logins(daemon, 'vm5') == 1
    calls = auth_calls_this_run(daemon)
    assert calls in (None, 0)
    assert token_of(ag)[0] == tok and token_of(ag)[2] == ino     # the file is untouched
    assert 'with the password' not in ag.log_text()[mark:]


def test_kill9_of_vmmd_reconnects_with_backoff(daemon, make_agent):
    ag = make_agent(daemon, vm='vm6')
    ag.wait_log(HEARTBEAT, timeout=FIRST)
    mark = ag.log_len()
    t0 = time.monotonic()
    daemon.kill()
    ag.wait_log(BACKOFF_RE.pattern, count=4, start=mark, timeout=40)
    found = BACKOFF_RE.findall(ag.log_text()[mark:])
    attempts = [int(n) for _, n, _ in found]
    assert attempts[:4] == [1, 2, 3, 4]
    for delay, n, ceiling in found:
        # full jitter: a random time up to min(30 s, 1 s * 2^(attempt-1)), at least 0.1 s
        assert int(ceiling) == min(30, 2 ** (int(n) - 1))
        assert 0.1 <= float(delay) <= int(ceiling)
    # the attempts are spread in time as the delays say (not all at once)
    elapsed = time.monotonic() - t0
    assert elapsed >= sum(float(d) for d, _, _ in found[:3]) - 0.5
    daemon.start()
    ag.wait_log(r'resumed the session of vm6', start=mark, timeout=40)
    assert password_logins(daemon, 'vm6') == 1
    assert wait_until(lambda: record(daemon, 'vm6')['connected'], timeout=10)


def test_next_server_when_one_is_down(daemon, make_agent):
    dead = free_port()
    ag = make_agent(daemon, vm='vm7', servers=[f'127.0.0.1:{dead}', f'127.0.0.1:{daemon.port}'])
    ag.wait_log(rf'cannot connect to 127.0.0.1:{dead}: Connection refused; trying '
                rf'127.0.0.1:{daemon.port}')
    ag.wait_log(HEARTBEAT, timeout=FIRST)
    assert record(daemon, 'vm7')['connected'] is True
    # all down: one backoff per round of servers, not per server
    mark = ag.log_len()
    daemon.kill()
    ag.wait_log(BACKOFF_RE.pattern, count=2, start=mark, timeout=30)
    text = ag.log_text()[mark:]
    assert f'trying 127.0.0.1:{dead}' in text
    daemon.start()
    ag.wait_log(r'resumed the session of vm7', start=mark, timeout=60)


def test_server_by_name(daemon, make_agent):
    # resolved on a thread; localhost may give ::1 first, where nobody
    # listens: the next address is tried
    ag = make_agent(daemon, vm='vm14', servers=[f'localhost:{daemon.port}'])
    ag.wait_log(HEARTBEAT, timeout=FIRST)
    assert record(daemon, 'vm14')['connected'] is True
    bad = make_agent(daemon, vm='vm15', servers=['no-such-host.invalid:7707'])
    bad.wait_log(r'cannot resolve no-such-host.invalid: ')
    bad.wait_log(BACKOFF_RE.pattern)


def test_token_file_replaced_after_revoke(daemon, make_agent):
    ag = make_agent(daemon, vm='vm8')
    ag.wait_log(HEARTBEAT, timeout=FIRST)
    tok, mode, ino = token_of(ag)
    assert mode == 0o600
    mark = ag.log_len()
    a = admin(daemon)
    assert a.ok('session.revoke', {'vm_id': 'vm8'})['revoked'] == 1
    a.close()
    ag.wait_log(r'logged in to \S+ as vm8 with the password', start=mark, timeout=FIRST)
    new, mode2, ino2 = token_of(ag)
    assert new != tok and re.fullmatch(r'[A-Za-z0-9_-]{43}', new)
    # the dead token's file is removed at once, so the new one (written to a
    # temporary file and renamed) may get the freed inode: no inode check,
    # but no temporary file may be left behind
    assert mode2 == 0o600
    assert [f for f in os.listdir(ag.state) if f.startswith('.token.')] == []
    assert password_logins(daemon, 'vm8') == 2
    assert len(sessions(daemon, 'vm8')) == 1
    assert wait_until(lambda: record(daemon, 'vm8')['connected'], timeout=10)
    # no temporary file left behind
    assert sorted(os.listdir(ag.state)) in (['token'], ['feed', 'token'])


def test_stored_token_of_another_vm_is_not_used(daemon, make_agent):
    # a token file left from another VM id: the agent logs in with the password
    ag = make_agent(daemon, vm='vm9')
    ag.wait_log(HEARTBEAT, timeout=FIRST)
    ag.stop()
    other = make_agent(daemon, vm='vm10', args=['--state-dir', ag.state])
    other.wait_log(r"the stored session is not vm10's", timeout=FIRST)
    other.wait_log(HEARTBEAT, timeout=FIRST)
    assert password_logins(daemon, 'vm10') == 1


def test_missing_password_file(daemon, make_agent, tmp_path):
    ag = make_agent(daemon, vm='vm11', args=['--password-file', str(tmp_path / 'nope')])
    ag.wait_log(r'cannot log in: \S+nope No such file or directory')
    ag.wait_log(BACKOFF_RE.pattern)


def test_no_vm_id_is_a_usage_error(tmp_path):
    root = fake_root(tmp_path / 'r', hostname='bad_host')
    ag = Agent(tmp_path, root, ['--config', str(tmp_path / 'none.conf')])
    (tmp_path / 'none.conf').write_text('')
    ag.start()
    assert ag.proc.wait(10) == 2
    ag.proc = None
    ag.logf.close()
    assert 'no vm_id' in ag.log_text()


def test_notify_ready_status_watchdog_stopping(daemon, make_agent):
    n = Notify()
    try:
        ag = make_agent(daemon, vm='vm12', env={'NOTIFY_SOCKET': n.path,
                                                'WATCHDOG_USEC': '400000'})
        ag.wait_log(HEARTBEAT, timeout=FIRST)
        assert wait_until(lambda: n.values('READY') == ['1'], timeout=5)
        statuses = n.values('STATUS')
        assert f'connecting to 127.0.0.1:{daemon.port}' in statuses
        # once its booking is known, the status says it ("..., not booked")
        assert statuses[-1].startswith(f'connected to 127.0.0.1:{daemon.port}'), statuses
        # the watchdog is fed by the loop (sd-event, every quarter to half period)
        t0 = len(n.values('WATCHDOG'))
        time.sleep(1.0)
        assert len(n.values('WATCHDOG')) - t0 >= 2
        daemon.kill()
        assert wait_until(lambda: any(re.fullmatch(r'reconnecting in \d+ s', s)
                                      for s in n.values('STATUS')), timeout=10)
        daemon.start()
        assert wait_until(lambda: n.values('STATUS')[-1].startswith(
                          f'connected to 127.0.0.1:{daemon.port}'), timeout=40)
        assert n.values('READY') == ['1']            # once
        assert ag.stop() == 0
        assert wait_until(lambda: n.values('STOPPING') == ['1'], timeout=5)
    finally:
        n.close()


def test_sigterm_with_vmmd_down(make_agent, tmp_path):
    ag = make_agent(None, vm='vm13', servers=[f'127.0.0.1:{free_port()}'])
    ag.wait_log(BACKOFF_RE.pattern)
    t0 = time.monotonic()
    assert ag.stop() == 0
    assert time.monotonic() - t0 < 5


# ---- part 2 (vm.report, booking events): against the real vmmd once it has them ----

@pytest.fixture
def part2(daemon):
    if not vmmd_has_part2(daemon):
        pytest.skip('needs vmmd part 2 (vm.report, booking.*, events.watch on TCP): this '
                    'vmmd answers whoami with unknown_method')
    return daemon


def test_part2_report_reaches_vm_monitor(part2, make_agent):
    daemon = part2
    ag = make_agent(daemon, vm='p2vm1', hostname='p2vm1', addresses=['10.9.0.1'],
                    loadavg='0.25 0.50 0.75 1/1 1\n')
    ag.wait_log(r'first report to \S+ done: ready', timeout=FIRST)
    a = admin(daemon)
    rec = a.ok('vm.get', {'vm_id': 'p2vm1'})
    assert rec['hostname'] == 'p2vm1' and rec['ip'] == ['10.9.0.1']
    assert rec['os'] == {'name': 'Debian GNU/Linux', 'version': '12'}
    mon = a.ok('vm.monitor', {'vm_id': 'p2vm1'})
    a.close()
    assert mon['report']['load'] == [0.25, 0.5, 0.75]
    assert mon['report']['mem_total'] == 4096
    assert mon['status'] == 'on'


def add_hook(ag, name, body):
    """An executable hook NAME (a shell script of body) in the hooks
    directory make_agent gives the agent (created on first use)."""
    hooks = os.path.join(os.path.dirname(ag.state), 'hooks')
    os.makedirs(hooks, exist_ok=True)
    p = os.path.join(hooks, name)
    with open(p, 'w') as f:
        f.write('#!/bin/sh\n' + body)
    os.chmod(p, 0o755)


def test_part2_booking_runs_hooks_in_order(part2, make_agent, tmp_path):
    daemon = part2
    out = tmp_path / 'hooks.out'
    ag = make_agent(daemon, vm='p2vm2')
    for name in ('20-second', '10-first'):
        add_hook(ag, name, 'echo "$0 $VMM_EVENT $VMM_USER $VMM_VM_ID $VMM_REASON '
                 f'[$VMM_EXPIRES_AT]" >> {out}\n')
    ag.wait_log(r'first report to \S+ done: ready', timeout=FIRST)
    a = admin(daemon)
    a.ok('user.create', {'name': 'alice', 'password': 'alice-pw-1'})
    b = a.ok('booking.create', {'vm_id': 'p2vm2', 'hours': 1, 'user': 'alice'})
    a.ok('booking.renew', {'vm_id': 'p2vm2', 'hours': 1})
    a.ok('booking.cancel', {'vm_id': 'p2vm2'})
    a.close()
    assert wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 6,
                      timeout=20)
    lines = [l.split(' ', 1)[1] for l in out.read_text().splitlines()]
    assert [l.split()[0] for l in lines] == ['booking.created'] * 2 + ['booking.renewed'] * 2 + \
        ['booking.ended'] * 2
    names = [os.path.basename(l.split()[0]) for l in out.read_text().splitlines()]
    assert names == ['10-first', '20-second'] * 3
    assert f'booking.created alice p2vm2  [{b["expires_at"]}]' in lines
    # root cancelled alice's booking: the reason is admin (PROTOCOL.md)
    assert lines[-1].startswith('booking.ended alice p2vm2 admin [')


def test_part2_booking_made_while_away_runs_once(part2, make_agent, tmp_path):
    daemon = part2
    out = tmp_path / 'hooks.out'
    ag = make_agent(daemon, vm='p2vm3')
    add_hook(ag, 'log', f'echo "$VMM_EVENT $VMM_FEED" >> {out}\n')
    ag.wait_log(r'first report to \S+ done: ready', timeout=FIRST)
    ag.stop()
    a = admin(daemon)
    a.ok('user.create', {'name': 'bob', 'password': 'bob-pw-12'})
    a.ok('booking.create', {'vm_id': 'p2vm3', 'hours': 1, 'user': 'bob'})
    a.close()
    ag.start()
    assert wait_until(lambda: out.exists() and out.read_text().startswith('booking.created'),
                      timeout=20)
    # the event counts as handled once its hooks have ended (vmclient(1)):
    # stopping before that reruns it, which the next test shows
    ag.wait_log(r'hook log done \(booking\.created\)', timeout=20)
    ag.stop()
    ag.start()
    ag.wait_log(r'first report to \S+ done: ready', timeout=FIRST)
    time.sleep(2)
    assert len(out.read_text().splitlines()) == 1
    feed = int(out.read_text().split()[1])
    with open(os.path.join(ag.state, 'feed')) as f:
        assert int(f.read()) >= feed
    assert stat.S_IMODE(os.stat(os.path.join(ag.state, 'feed')).st_mode) == 0o600


def test_part2_event_interrupted_by_a_stop_runs_again(part2, make_agent, tmp_path):
    """vmclient(1): the feed position is stored once every hook of an event
    has run, so an agent stopped while a hook runs runs it again."""
    daemon = part2
    out = tmp_path / 'hooks.out'
    ag = make_agent(daemon, vm='p2vm4')
    # the first run writes, then hangs until killed; the second ends
    add_hook(ag, 'slow', f'echo "$VMM_EVENT $VMM_FEED" >> {out}\n'
             f'[ "$(wc -l < {out})" -gt 1 ] || sleep 60\n')
    ag.wait_log(r'first report to \S+ done: ready', timeout=FIRST)
    a = admin(daemon)
    a.ok('user.create', {'name': 'carol', 'password': 'carol-pw-12'})
    a.ok('booking.create', {'vm_id': 'p2vm4', 'hours': 1, 'user': 'carol'})
    a.close()
    assert wait_until(lambda: out.exists() and out.read_text().startswith('booking.created'),
                      timeout=20)
    ag.stop()
    assert 'stopping: killing hook slow' in ag.log_text()
    ag.start()
    ag.wait_log(r'hook slow done \(booking\.created\)', timeout=20)
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], lines


# ---- the unit ----

UNIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'systemd',
                    'vmclient-agent.service')


def test_unit_verify_and_exposure(tmp_path):
    import shutil
    import subprocess
    if shutil.which('systemd-analyze') is None:
        pytest.skip('systemd-analyze is not installed (Debian package systemd)')
    from agenttest import vmclient_bin
    with open(UNIT) as f:
        text = f.read()
    assert 'ExecStart=@bindir@/vmclient agent' in text
    unit = tmp_path / 'vmclient-agent.service'
    unit.write_text(text.replace('@bindir@/vmclient', os.path.abspath(vmclient_bin())))
    p = subprocess.run(['systemd-analyze', 'verify', '--man=no', str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout + p.stderr == '', p.stdout + p.stderr
    p = subprocess.run(['systemd-analyze', 'security', '--offline=yes', '--no-pager',
                        str(unit)], capture_output=True, text=True, timeout=60)
    m = re.search(r'Overall exposure level for \S+: (\d+\.\d+)', p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 1.7, p.stdout
    for key in ('Type=notify', 'WatchdogSec=', 'ConditionPathExists=/etc/vmclient/agent.conf',
                'StateDirectory=vmclient', 'ReadWritePaths=-/etc/motd'):
        assert key in text
