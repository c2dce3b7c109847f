# SPDX-License-Identifier: MIT
"""The agent's part 2 behaviour, against fakevmmd (a stand-in written from
PROTOCOL.md part 2, so that it runs before vmmd has part 2): booking events
run the hooks in run-parts order with the event in the environment and on
stdin, one at a time, a failing hook is logged, a hanging one killed with
its process group at the timeout; events missed while away are replayed
once from the stored feed position; vm.report carries the figures and a
rate_limited report is skipped; hostname/ip/os are described; the status
line names the booking. test_agent.py has the same scenarios against the
real vmmd (part2 tests)."""

import json
import os
import re
import stat
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agenttest import Agent, Notify, disk, fake_root  # noqa: E402
from fakevmmd import FakeVmmd  # noqa: E402
from vmmtest import PASSWORD, process_gone, wait_until  # noqa: E402

READY = r'first report to \S+ done: ready'
# the request that finds the session ended: the report, or the vm.get that
# follows a new login when the session ends right after it (timing)
ANY_CALL = r'(?:vm\.report|vm\.get|vm\.update|events\.watch|booking\.get)'
HOOK_SCRIPT = '''#!/bin/sh
# writes one line per run: its name, the VMM_* variables, NOTIFY_SOCKET, stdin
stdin=$(cat)
printf '%s|%s|%s|%s|%s|%s|%s|%s|%s\\n' "$(basename "$0")" "$VMM_EVENT" "$VMM_USER" \
    "$VMM_VM_ID" "$VMM_EXPIRES_AT" "$VMM_REASON" "$VMM_FEED" "${NOTIFY_SOCKET-unset}" \
    "$stdin" >> OUT
'''


@pytest.fixture
def fake():
    srv = FakeVmmd(vms={'vm1': PASSWORD})
    yield srv
    srv.close()


@pytest.fixture
def setup(tmp_path, request):
    """-> make(srv, hooks={name: (text, mode)}, args=[...], env={}) -> Agent"""
    agents = []

    def make(srv, hooks=None, args=(), env=None, vm='vm1', interval=1, **root_kw):
        sub = tmp_path / f'a{len(agents)}'
        sub.mkdir()
        root_kw.setdefault('disks', [disk('vda', gib=20, dev='254:0', parts=[('vda1', '254:1')],
                                          files={'serial': 'S1\n'})])
        root_kw.setdefault('mounts', [('254:1', '/')])
        root = fake_root(sub / 'root', **root_kw)
        hooks_dir = sub / 'hooks'
        hooks_dir.mkdir()
        for name, (text, mode) in (hooks or {}).items():
            p = hooks_dir / name
            if text is None:
                p.mkdir(mode=mode)
                continue
            p.write_text(text.replace('OUT', str(sub / 'out')))
            p.chmod(mode)
        pw = sub / 'pw'
        pw.write_text(PASSWORD + '\n')
        (sub / 'agent.conf').write_text('')
        a = ['--config', str(sub / 'agent.conf'), '--vm-id', vm, '--password-file', str(pw),
             '--state-dir', str(sub / 'state'), '--interval', str(interval),
             '--hooks', str(hooks_dir), '--server', f'127.0.0.1:{srv.port}'] + list(args)
        ag = Agent(sub, root, a, env=env)
        ag.out = sub / 'out'
        ag.hooks = hooks_dir
        ag.state = str(sub / 'state')
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
            print('--- agent log ---\n' + ag.log_text(all_runs=True))


def out_lines(ag):
    if not ag.out.exists():
        return []
    return [l.split('|', 8) for l in ag.out.read_text().splitlines()]


def booking(kind, user='alice', expires=1900000000000, vm='vm1', **kw):
    ev = {'type': kind, 'vm_id': vm, 'user': user, 'expires_at': expires}
    ev.update(kw)
    return ev


def test_hooks_run_in_order_with_environment(fake, setup, tmp_path):
    outside = tmp_path / 'linked'
    n = Notify()
    try:
        hooks = {name: (HOOK_SCRIPT, 0o755) for name in ('a', '_z', 'A', '2-b', '10-a')}
        hooks.update({
            'b.sh': (HOOK_SCRIPT, 0o755),          # a dot: run-parts skips it
            'c~': (HOOK_SCRIPT, 0o755),
            'README': (HOOK_SCRIPT, 0o644),        # not executable
            'dir': (None, 0o755),                  # not a regular file
        })
        ag = setup(fake, hooks=hooks, env={'NOTIFY_SOCKET': n.path})
        outside.write_text(HOOK_SCRIPT.replace('OUT', str(ag.out)))
        outside.chmod(0o755)
        os.symlink(outside, ag.hooks / 's-link')  # a link to an executable counts
        ag.wait_log(READY)
        f1 = fake.push_event(booking('booking.created', expires=1900000000123))
        assert wait_until(lambda: len(out_lines(ag)) == 6, timeout=15)
        f2 = fake.push_event(booking('booking.ended', expires=None, reason='cancel'))
        assert wait_until(lambda: len(out_lines(ag)) == 12, timeout=15)
    finally:
        n.close()
    lines = out_lines(ag)
    # C-locale byte order, as run-parts
    order = ['10-a', '2-b', 'A', '_z', 'a', 's-link']
    assert [l[0] for l in lines] == order * 2
    for l in lines[:6]:
        assert l[1:8] == ['booking.created', 'alice', 'vm1', '1900000000123', '', str(f1),
                          'unset']
        ev = json.loads(l[8])
        assert ev['type'] == 'booking.created' and ev['feed'] == f1
        assert ev['user'] == 'alice' and ev['expires_at'] == 1900000000123
        assert ev['vm_id'] == 'vm1' and isinstance(ev['time'], int) and ev['seq'] >= 1
    for l in lines[6:]:
        # nil expires_at: empty
        assert l[1:8] == ['booking.ended', 'alice', 'vm1', '', 'cancel', str(f2), 'unset']
        assert json.loads(l[8])['expires_at'] is None
    text = ag.log_text()
    assert 'booking.created (alice): running the hooks' in text
    assert len(re.findall(r'hook \S+ done \(booking\.created\) in \d+ ms', text)) == 6
    # the feed position handled is kept, 0600
    st = os.stat(os.path.join(ag.state, 'feed'))
    assert stat.S_IMODE(st.st_mode) == 0o600
    with open(os.path.join(ag.state, 'feed')) as f:
        assert f.read().strip() == str(f2)
    # the watch asked for booking events only
    watch = fake.calls('events.watch')
    assert watch and watch[0][2] == [{'types': ['booking.']}]


def test_failing_hook_is_logged_and_the_next_runs(fake, setup):
    hooks = {
        '10-fail': ('#!/bin/sh\necho "to stdout"\necho "boom \\033[31m" >&2\nexit 3\n', 0o755),
        '20-ok': (HOOK_SCRIPT, 0o755),
        '30-bad-exec': ('not a script at all\n', 0o755),
        '40-ok': (HOOK_SCRIPT, 0o755),
    }
    ag = setup(fake, hooks=hooks)
    ag.wait_log(READY)
    fake.push_event(booking('booking.renewed'))
    assert wait_until(lambda: len(out_lines(ag)) == 2, timeout=15)
    assert [l[0] for l in out_lines(ag)] == ['20-ok', '40-ok']
    ag.wait_log(r'hook 10-fail failed with status 3 \(booking.renewed\); going on')
    ag.wait_log(r'hook 30-bad-exec failed with status')
    text = ag.log_text()
    assert '<6>hook 10-fail: to stdout' in text
    assert '<5>hook 10-fail: boom ?[31m' in text      # control characters made harmless
    assert ag.proc.poll() is None


def test_hanging_hook_is_killed_with_its_group(fake, setup, tmp_path):
    pids = tmp_path / 'pids'
    hang = f'#!/bin/sh\nsleep 300 &\necho $! > {pids}\nsleep 300\n'
    ag = setup(fake, hooks={'10-hang': (hang, 0o755), '20-next': (HOOK_SCRIPT, 0o755)},
               args=['--hook-timeout', '1'])
    ag.wait_log(READY)
    t0 = time.monotonic()
    fake.push_event(booking('booking.expiring'))
    assert wait_until(lambda: len(out_lines(ag)) == 1, timeout=15)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 6, elapsed
    ag.wait_log(r'hook 10-hang still running after 1 s: killing its process group')
    ag.wait_log(r'hook 10-hang timed out and was killed by signal KILL')
    # the background child of the hook died with it
    child = int(pids.read_text())
    assert wait_until(lambda: process_gone(child), timeout=5)
    assert out_lines(ag)[0][1] == 'booking.expiring'


def test_hooks_run_one_at_a_time(fake, setup, tmp_path):
    slow = '#!/bin/sh\necho "start $VMM_FEED" >> OUT\nsleep 0.3\necho "end $VMM_FEED" >> OUT\n'
    ag = setup(fake, hooks={'10-slow': (slow, 0o755), '20-slow': (slow, 0o755)})
    ag.wait_log(READY)
    for _ in range(3):
        fake.push_event(booking('booking.renewed'))
    assert wait_until(lambda: ag.out.exists() and len(ag.out.read_text().splitlines()) == 12,
                      timeout=20)
    lines = ag.out.read_text().splitlines()
    assert lines == [f'{w} {f}' for f in (1, 2, 3) for w in ('start', 'end', 'start', 'end')]


def test_other_vms_and_other_events_run_nothing(fake, setup):
    fake.no_filter = True
    ag = setup(fake, hooks={'10-log': (HOOK_SCRIPT, 0o755)})
    ag.wait_log(READY)
    fake.push_event(booking('booking.created', vm='vm2'))
    fake.push_event({'type': 'vm.updated', 'vm_id': 'vm1'})
    fake.send_raw_event({'type': 'booking.created', 'vm_id': 'vm1', 'user': 'x',
                         'expires_at': 5, 'feed': None, 'seq': 1})     # no feed position: runs
    f = fake.push_event(booking('booking.ended', reason='expire'))
    assert wait_until(lambda: len(out_lines(ag)) == 2, timeout=15)
    time.sleep(0.5)
    assert [l[1] for l in out_lines(ag)] == ['booking.created', 'booking.ended']
    assert out_lines(ag)[0][6] == ''              # VMM_FEED empty without a position
    with open(os.path.join(ag.state, 'feed')) as fh:
        assert fh.read().strip() == str(f)


def test_events_missed_while_away_run_once(fake, setup):
    fake.push_event(booking('booking.created', user='old'))       # before the first start
    ag = setup(fake, hooks={'10-log': (HOOK_SCRIPT, 0o755)})
    ag.wait_log(READY)
    # first start: from now on, history is not replayed
    with open(os.path.join(ag.state, 'feed')) as f:
        assert f.read().strip() == '1'
    f2 = fake.push_event(booking('booking.renewed'))
    assert wait_until(lambda: len(out_lines(ag)) == 1, timeout=15)
    # handled once its hook has ended (vmclient(1)); a stop before that reruns it
    ag.wait_log(r'hook 10-log done \(booking\.renewed\)', timeout=15)
    ag.stop()
    f3 = fake.add_feed_only(booking('booking.expiring'))
    fake.add_feed_only(booking('booking.created', vm='vm2'))
    f5 = fake.add_feed_only(booking('booking.ended', reason='expire'))
    ag.start()
    assert wait_until(lambda: len(out_lines(ag)) == 3, timeout=15)
    assert [(l[1], l[6]) for l in out_lines(ag)] == [
        ('booking.renewed', str(f2)), ('booking.expiring', str(f3)), ('booking.ended', str(f5))]
    assert fake.calls('events.watch')[-1][2] == [{'since': f2, 'types': ['booking.']}]
    # once more: nothing new, nothing again
    ag.wait_log(r'hook 10-log done \(booking\.ended\)', timeout=15)
    ag.stop()
    ag.start()
    ag.wait_log(READY)
    time.sleep(1)
    assert len(out_lines(ag)) == 3
    assert fake.calls('events.watch')[-1][2] == [{'since': f5, 'types': ['booking.']}]


def test_duplicates_and_reconnects_run_once(fake, setup):
    slow = HOOK_SCRIPT.replace('stdin=$(cat)', 'stdin=$(cat); sleep 0.5')
    ag = setup(fake, hooks={'10-log': (slow, 0o755)})
    ag.wait_log(READY)
    f1 = fake.push_event(booking('booking.created'))
    fake.resend(f1)                              # the same event twice
    ag.wait_log(r'hook 10-log started|running the hooks')
    fake.drop_connections()                      # while the hook runs
    ag.wait_log(r'resumed the session of vm1')
    assert wait_until(lambda: len(out_lines(ag)) >= 1, timeout=15)
    time.sleep(1.5)
    assert len(out_lines(ag)) == 1
    # the new watch starts after what is already queued
    assert fake.calls('events.watch')[-1][2] == [{'since': f1, 'types': ['booking.']}]


def test_report_figures_and_rate_limited_report(setup):
    srv = FakeVmmd(vms={'vm1': PASSWORD}, report_errors=['rate_limited'])
    try:
        ag = setup(srv, ram_kib=4194304, mem_available_kib=1048576,
                   loadavg='0.50 0.25 0.10 1/100 1234\n', uptime='1234.56 1.0\n')
        ag.wait_log(READY)
        reports = srv.calls('vm.report')
        assert len(reports) >= 2
        p = reports[1][2][0]
        assert p['load'] == [0.5, 0.25, 0.1]
        assert p['mem_total'] == 4096 and p['mem_used'] == 3072 and p['uptime'] == 1234
        assert [d['id'] for d in p['disks_used']] == ['S1']
        assert isinstance(p['disks_used'][0]['used'], int)
        assert set(p) == {'load', 'mem_total', 'mem_used', 'uptime', 'disks_used'}
        # the rate_limited one was skipped: same connection, no reconnect
        assert len({cid for cid, _, _ in srv.calls()}) == 1
        assert 'report skipped' not in ag.log_text()      # debug only
        n = len(srv.calls('vm.report'))
        time.sleep(2.2)
        assert len(srv.calls('vm.report')) >= n + 2      # every interval (1 s)
    finally:
        srv.close()


def test_describes_hostname_ip_os_to_a_part2_vmmd(setup):
    srv = FakeVmmd(vms={})
    try:
        ag = setup(srv, args=['--register'], hostname='web-01', addresses=['10.0.0.5', 'fd00::5'])
        ag.wait_log(READY)
        reg = srv.calls('register')[0][2][0]
        assert set(reg) == {'vm_id', 'password', 'ram', 'cpu', 'disks'}   # part 1 keys only
        upd = srv.calls('vm.update')
        assert len(upd) == 1
        assert upd[0][2][0] == {'hostname': 'web-01', 'ip': ['10.0.0.5', 'fd00::5'],
                                'os': {'name': 'Debian GNU/Linux', 'version': '12'}}
        time.sleep(2.2)
        assert len(srv.calls('vm.update')) == 1           # sent once
    finally:
        srv.close()
    # a VM provisioned by an admin: vm.add carries everything
    srv = FakeVmmd(vms={'vm1': PASSWORD})
    try:
        ag = setup(srv, hostname='web-02', addresses=['10.0.0.6'])
        ag.wait_log(READY)
        add = srv.calls('vm.add')[0][2][0]
        assert add == {'vm_id': 'vm1', 'ram': 4096, 'cpu': 2, 'hostname': 'web-02',
                       'disks': [{'id': 'S1', 'size': 20}], 'ip': ['10.0.0.6'],
                       'os': {'name': 'Debian GNU/Linux', 'version': '12'}}
        assert srv.calls('vm.update') == []
    finally:
        srv.close()


def agent_until(ms):
    """The agent's 'until': the time alone when the booking ends today (UTC),
    with the date when it ends another day.  From the booking's own time, not
    the clock at the assert: between the two a minute or a day may turn."""
    end = time.gmtime(ms / 1000)
    if time.strftime('%Y-%m-%d', end) == time.strftime('%Y-%m-%d', time.gmtime()):
        return time.strftime('%H:%M UTC', end)
    return time.strftime('%Y-%m-%d %H:%M UTC', end)


def test_status_names_the_booking(fake, setup):
    n = Notify()
    try:
        expires = int(time.time() * 1000) + 3600_000
        fake.booking['vm1'] = {'user': 'carol', 'started_at': 1, 'expires_at': expires}
        ag = setup(fake, env={'NOTIFY_SOCKET': n.path})
        ag.wait_log(READY)
        until = agent_until(expires)
        host = f'127.0.0.1:{fake.port}'
        assert wait_until(lambda: n.values('STATUS')[-1:] ==
                          [f'connected to {host}, booked by carol until {until}'], timeout=5)
        fake.push_event(booking('booking.ended', user='carol', reason='cancel'))
        assert wait_until(lambda: n.values('STATUS')[-1:] == [f'connected to {host}, not booked'],
                          timeout=5)
        exp = int(time.time() * 1000) + 2 * 86400_000
        fake.push_event(booking('booking.created', user='dave', expires=exp))
        day = agent_until(exp)
        assert day.startswith(time.strftime('%Y-%m-%d', time.gmtime(exp / 1000)))
        assert wait_until(lambda: n.values('STATUS')[-1:] ==
                          [f'connected to {host}, booked by dave until {day}'], timeout=5)
        assert n.values('READY') == ['1']
    finally:
        n.close()


def test_events_truncated_is_logged(fake, setup):
    ag = setup(fake)
    ag.wait_log(READY)
    n = len(fake.calls('booking.get'))
    fake.send_raw_event({'type': 'events.truncated', 'oldest': 50, 'feed': None, 'seq': 1})
    ag.wait_log(r'vmmd no longer keeps the booking events since feed position \d+: their '
                r'hooks will not run')
    assert wait_until(lambda: len(fake.calls('booking.get')) == n + 1, timeout=5)
    assert fake.calls('booking.get')[-1][2] == [{'vm_id': 'vm1'}]


def test_revoked_session_logs_in_again(fake, setup):
    ag = setup(fake)
    ag.wait_log(READY)
    with open(os.path.join(ag.state, 'token')) as f:
        tok = f.read().strip()
    mark = ag.log_len()
    fake.tokens.clear()                          # revoked: the connection is anonymous again
    for c in list(fake.conns):
        c.vm_id = None
    ag.wait_log(rf'vmmd ended the session \({ANY_CALL}: log in first\): logging in again',
                start=mark)
    ag.wait_log(r'logged in to \S+ as vm1 with the password', start=mark)

    def token():
        try:
            with open(os.path.join(ag.state, 'token')) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None
    assert wait_until(lambda: token() not in (None, tok), timeout=5)
    assert len(fake.calls('auth')) == 2


# ---- the example hooks ----

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tools',
                        'vmclient', 'examples', 'booking.d')


def run_example(name, env, path=None):
    import subprocess
    e = {'PATH': path or os.environ['PATH']}
    e.update(env)
    return subprocess.run([os.path.join(EXAMPLES, name)], env=e, capture_output=True,
                          text=True, timeout=30)


def test_example_motd_hook(tmp_path):
    motd = tmp_path / 'motd'
    base = {'MOTD_FILE': str(motd), 'VMM_VM_ID': 'vm1', 'VMM_USER': 'alice', 'VMM_FEED': '7'}
    p = run_example('50-motd', dict(base, VMM_EVENT='booking.created',
                                    VMM_EXPIRES_AT='1767283200000', VMM_REASON=''))
    assert p.returncode == 0, p.stderr
    assert motd.read_text() == 'This VM (vm1) is booked by alice until 2026-01-01 16:00 UTC.\n'
    p = run_example('50-motd', dict(base, VMM_EVENT='booking.expiring',
                                    VMM_EXPIRES_AT='1767283200000', VMM_REASON=''))
    assert 'ends soon' in motd.read_text()
    p = run_example('50-motd', dict(base, VMM_EVENT='booking.ended', VMM_EXPIRES_AT='',
                                    VMM_REASON='expire'))
    assert p.returncode == 0, p.stderr
    assert motd.read_text() == 'This VM (vm1) is free: the booking of alice ended (expire).\n'
    motd.write_text('unchanged\n')
    p = run_example('50-motd', dict(base, VMM_EVENT='vm.updated'))
    assert p.returncode == 0 and motd.read_text() == 'unchanged\n'


def test_example_logout_hook(tmp_path):
    """60-logout-previous with a stand-in loginctl that records its arguments."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    calls = tmp_path / 'calls'
    (bindir / 'loginctl').write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                                     '[ "$1" != show-user ] || [ "$3" != nobody ] || exit 0\n'
                                     '[ "$1" = terminate-user ] || exit 1\n')
    (bindir / 'loginctl').chmod(0o755)
    path = f'{bindir}:{os.environ["PATH"]}'
    ended = {'VMM_EVENT': 'booking.ended', 'VMM_VM_ID': 'vm1', 'VMM_REASON': 'cancel'}
    # nobody (uid 65534) is logged in according to the stand-in: logged out
    p = run_example('60-logout-previous', dict(ended, VMM_USER='nobody'), path)
    assert p.returncode == 0, p.stderr
    assert calls.read_text().splitlines() == ['show-user -- nobody', 'terminate-user -- nobody']
    assert 'logged out nobody' in p.stdout
    calls.unlink()
    # system accounts and unknown names are left alone; other events do nothing
    for env, words in [(dict(ended, VMM_USER='root'), 'system account'),
                       (dict(ended, VMM_USER='no-such-user-x'), 'no local account'),
                       ({'VMM_EVENT': 'booking.created', 'VMM_USER': 'nobody'}, '')]:
        p = run_example('60-logout-previous', env, path)
        assert p.returncode == 0, p.stderr
        assert words in p.stdout
    assert not calls.exists()


def test_feed_that_went_back_is_followed(fake, setup):
    """A restored or new vmmd database: its feed ends before the position the
    agent handled; the agent says so and follows the new feed."""
    fake.push_event(booking('booking.created', vm='other'))
    fake.push_event(booking('booking.ended', vm='other', reason='cancel'))
    ag = setup(fake, hooks={'10-log': (HOOK_SCRIPT, 0o755)}, args=['--log-level', 'info'])
    ag.wait_log(READY)
    ag.stop()
    with open(os.path.join(ag.state, 'feed'), 'w') as f:
        f.write('100\n')
    ag.start()
    ag.wait_log(r"vmmd's event feed ends at 2, before the position 100 handled here")
    ag.wait_log(READY)
    with open(os.path.join(ag.state, 'feed')) as f:
        assert f.read().strip() == '2'
    f3 = fake.push_event(booking('booking.created'))
    assert wait_until(lambda: len(out_lines(ag)) == 1, timeout=15)
    assert out_lines(ag)[0][6] == str(f3)


def test_session_ended_twice_in_a_minute_backs_off(fake, setup):
    ag = setup(fake)
    ag.wait_log(READY)

    def revoke():
        fake.tokens.clear()
        for c in list(fake.conns):
            c.vm_id = None
    mark = ag.log_len()
    revoke()
    ag.wait_log(rf'vmmd ended the session \({ANY_CALL}: log in first\): logging in again',
                start=mark)
    ag.wait_log(r'logged in to \S+ as vm1 with the password', start=mark)
    # the second time within a minute: not at once, with backoff
    mark = ag.log_len()
    revoke()
    ag.wait_log(rf'vmmd ended the session again \({ANY_CALL}: log in first\); reconnecting in '
                r'\d+\.\d s \(attempt 1, at most 1 s\)', start=mark)
    ag.wait_log(r'logged in to \S+ as vm1 with the password', start=mark)
