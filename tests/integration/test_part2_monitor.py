# SPDX-License-Identifier: MIT
"""Monitoring (PROTOCOL.md part 2): vm.report (a VM session's; at most one a
second per VM; hostname, ip and os persisted; the result carries the VM's
booking), vm.monitor (the last report and the last hour's, in memory), the
VM's status on/off following connections and reports with
--heartbeat-timeout, and the live vm.status events that say so."""

import time

import pytest

import p2util
from p2util import LONG, PW, admin, read_events, tcp, watch
from vmmtest import now_ms

HEARTBEAT_S = 2


@pytest.fixture(scope='module')
def d(tmp_path_factory):
    yield from p2util.shared_daemon(
        tmp_path_factory, ['--heartbeat-timeout', str(HEARTBEAT_S),
                           '--auth-failures-per-minute', '1000'], 'monitor')


def new_vm(d, vm_id):
    with admin(d) as a:
        a.ok('vm.create', {'vm_id': vm_id, 'password': PW, 'ram': 1, 'cpu': 1}, timeout=LONG)
    return p2util.vm_login(d, vm_id)


REPORT = {'hostname': 'mon-1.lab', 'ip': ['10.9.0.1', 'fd00::9'],
          'os': {'name': 'Debian', 'version': '12'}, 'uptime': 3600,
          'load': [0.5, 1, 2.25], 'mem_total': 4096, 'mem_used': 1024,
          'disks_used': [{'id': 'mon-d', 'used': 3}]}


def test_report_persists_metadata_and_carries_the_booking(d):
    vm = new_vm(d, 'rp-1')
    try:
        res = vm.ok('vm.report', REPORT)
        assert res == {'booking': None}, res
        with admin(d) as a:
            rec = a.ok('vm.get', {'vm_id': 'rp-1'})
            assert rec['hostname'] == 'mon-1.lab' and rec['ip'] == REPORT['ip'], rec
            assert rec['os'] == REPORT['os'], rec
            p2util.person(a, 'rp-user')
            b = a.ok('booking.create', {'vm_id': 'rp-1', 'minutes': 30, 'user': 'rp-user'})
        # a second later: allowed again, and the booking is in the answer
        out = []
        assert p2util.wait_until(
            lambda: out.append(vm.call('vm.report', {'uptime': 3601})) or out[-1][0] is None,
            3.0, 0.1), out
        res = out[-1][1]
        assert res == {'booking': {'vm_id': 'rp-1', 'user': 'rp-user',
                                   'started_at': b['started_at'],
                                   'expires_at': b['expires_at']}} or \
            res == {'booking': {'user': 'rp-user', 'started_at': b['started_at'],
                                'expires_at': b['expires_at']}}, (res, b)
        # what a report leaves out is kept
        with admin(d) as a:
            assert a.ok('vm.get', {'vm_id': 'rp-1'})['hostname'] == 'mon-1.lab'
    finally:
        vm.close()
    # persisted across a restart (the report itself is memory only)
    d.restart()
    with admin(d) as a:
        rec = a.ok('vm.get', {'vm_id': 'rp-1'})
        assert rec['hostname'] == 'mon-1.lab' and rec['os'] == REPORT['os'], rec
        mon = a.ok('vm.monitor', {'vm_id': 'rp-1'})
        assert mon['report'] is None and mon['history'] == [], mon


def test_report_rate_limit_per_vm(d):
    vm = new_vm(d, 'rl-1')
    other = new_vm(d, 'rl-2')
    vm_again = p2util.resumed(d, vm.token)
    s = tcp(d)
    try:
        # every refusal below must fall within the second after a report: on
        # a machine too busy for that, the round is tried again (bounded)
        for attempt in range(5):
            assert p2util.wait_until(lambda: vm.call('vm.report', {'uptime': 1})[0] is None,
                                     3.0, 0.05)
            t0 = time.monotonic()
            got = [vm.call('vm.report', {'uptime': 2}),
                   # per VM: its other connection too, and through the token
                   vm_again.call('vm.report', {'uptime': 2}),
                   s.call('vm.report', {'uptime': 2, 'token': vm.token}),
                   # bad_request comes first
                   vm.call('vm.report', {'uptime': -1})]
            # another VM is not limited by it
            other_res = other.call('vm.report', {'uptime': 1})
            if time.monotonic() - t0 < 0.9:
                break
            time.sleep(1.0)             # let the other VM's window pass too
        else:
            raise AssertionError('never 4 calls within 0.9 s: the machine is too slow')
        codes = [e[0] if e else None for e, _ in got]
        assert codes == ['rate_limited'] * 3 + ['bad_request'], got
        assert other_res[0] is None, other_res
        # a refused report changed nothing
        with admin(d) as a:
            mon = a.ok('vm.monitor', {'vm_id': 'rl-1'})
            assert mon['report']['uptime'] == 1, mon
        # after the second: allowed
        assert p2util.wait_until(lambda: vm.call('vm.report', {'uptime': 3})[0] is None,
                                 3.0, 0.1)
        with admin(d) as a:
            mon = a.ok('vm.monitor', {'vm_id': 'rl-1'})
            assert mon['report']['uptime'] == 3, mon
    finally:
        for c in (vm, other, vm_again, s):
            c.close()


@pytest.mark.parametrize('params', [
    {'load': [1, 2]}, {'load': [1, 2, 3, 4]}, {'load': ['1', 2, 3]}, {'load': 1.0},
    {'load': [-1, 0, 0]}, {'mem_total': -1}, {'mem_used': 1.5}, {'uptime': 'x'},
    {'disks_used': [{'id': 'x'}]}, {'disks_used': [{'used': 1}]},
    {'disks_used': [{'id': 'bad id!', 'used': 1}]}, {'disks_used': {'id': 'x', 'used': 1}},
    {'hostname': '-bad'}, {'ip': ['300.1.1.1']}, {'os': {'name': 'x'}}, {'bogus': 1},
    {'vm_id': 'rb-1'}, {'owner': 'x'},
])
def test_report_bad_params(d, params):
    with admin(d) as a:
        if a.call('vm.get', {'vm_id': 'rb-1'})[0] is not None:
            a.ok('vm.create', {'vm_id': 'rb-1', 'password': PW}, timeout=LONG)
    with p2util.vm_login(d, 'rb-1') as vm:
        vm.err('vm.report', params, 'bad_request')


def test_monitor_report_and_history(d):
    vm = new_vm(d, 'mo-1')
    try:
        with admin(d) as a:
            mon = a.ok('vm.monitor', {'vm_id': 'mo-1'})
            assert set(mon) >= {'vm_id', 'status', 'reported_at', 'report', 'history'}, mon
            assert mon['vm_id'] == 'mo-1' and mon['report'] is None and mon['history'] == []
            assert mon['reported_at'] is None and mon['status'] == 'on', mon
            sent = []
            for i in range(3):
                if i:
                    # the rate limit: one a second
                    assert p2util.wait_until(
                        lambda: vm.call('vm.report', dict(REPORT, uptime=100 + i))[0] is None,
                        3.0, 0.05)
                else:
                    vm.ok('vm.report', dict(REPORT, uptime=100))
                sent.append(now_ms())
            mon = a.ok('vm.monitor', {'vm_id': 'mo-1'})
            assert mon['report']['uptime'] == 102, mon
            for k in ('load', 'mem_total', 'mem_used', 'disks_used'):
                assert mon['report'][k] == REPORT[k], (k, mon)
            assert sent[-1] - 2000 <= mon['reported_at'] <= now_ms() + 1000, (sent, mon)
            # the history keeps the last hour in samples (vmmd keeps the newest
            # report of each minute): these three fall in one or two minutes
            hist = mon['history']
            assert 1 <= len(hist) <= 2, hist
            times = [h['time'] for h in hist]
            assert times == sorted(times) and sent[0] - 2000 <= times[0], (sent, hist)
            assert times[-1] == mon['reported_at'], (hist, mon)
            assert hist[-1]['mem_used'] == 1024 and hist[-1]['mem_total'] == 4096, hist
            a.err('vm.monitor', {'vm_id': 'mo-none'}, 'not_found')
            a.err('vm.monitor', {}, 'bad_request')
            a.err('vm.monitor', {'vm_id': 'bad id!'}, 'bad_request')
        # a viewer reads it on TCP; the VM itself may not
        with admin(d) as a:
            p2util.make_user(a, 'mo-viewer', 'viewer')
        with p2util.user_login(d, 'mo-viewer') as v:
            assert v.ok('vm.monitor', {'vm_id': 'mo-1'})['report']['uptime'] == 102
            v.err('vm.report', {'uptime': 1}, 'forbidden')
        vm.err('vm.monitor', {'vm_id': 'mo-1'}, 'forbidden')
    finally:
        vm.close()


def of_vm(vm_id):
    def pred(events):
        return [e for e in events if e['vm_id'] == vm_id]
    return pred


def next_status(w, vm_id, timeout):
    """The next vm.status event about vm_id (others' are skipped)."""
    return of_vm(vm_id)(read_events(w, of_vm(vm_id), timeout))[0]


def status_of(d, vm_id):
    with admin(d) as a:
        return a.ok('vm.get', {'vm_id': vm_id})['status']


def test_status_follows_connections_and_reports(d):
    with admin(d) as a:
        a.ok('vm.create', {'vm_id': 'st-1', 'password': PW, 'ram': 1, 'cpu': 1}, timeout=LONG)
        assert a.ok('vm.get', {'vm_id': 'st-1'})['status'] == 'off'
        w = admin(d)
        watch(w, types=['vm.status'])
        # connected: on
        vm = p2util.vm_login(d, 'st-1')
        token = vm.token
        ev = next_status(w, 'st-1', 10)
        assert ev['status'] == 'on' and ev['feed'] is None, ev   # a live-only event
        assert status_of(d, 'st-1') == 'on'
        assert [v['vm_id'] for v in a.ok('vm.list', {'filter': 'all', 'status': 'on'})['vms']
                if v['vm_id'] == 'st-1'] == ['st-1']
        # disconnected without a report: off (at once, or within the timeout)
        vm.close()
        assert next_status(w, 'st-1', HEARTBEAT_S + 5)['status'] == 'off'
        assert status_of(d, 'st-1') == 'off'
        assert not [v for v in a.ok('vm.list', {'filter': 'all', 'status': 'on'})['vms']
                    if v['vm_id'] == 'st-1']
        # a report through a token (no connection attached): on, then off
        # heartbeat_timeout later
        with tcp(d) as s:
            s.ok('vm.report', {'uptime': 5, 'token': token})
            t_report = now_ms()
        assert next_status(w, 'st-1', 10)['status'] == 'on'
        assert status_of(d, 'st-1') == 'on'
        ev = next_status(w, 'st-1', HEARTBEAT_S + 5)
        assert ev['status'] == 'off', ev
        late = ev['time'] - t_report
        assert HEARTBEAT_S * 1000 - 500 <= late <= HEARTBEAT_S * 1000 + 1500, \
            f'off {late} ms after the report (heartbeat {HEARTBEAT_S} s)'
        assert status_of(d, 'st-1') == 'off'
        # connected and reporting, then gone: on until the report is stale
        vm = p2util.resumed(d, token)
        assert next_status(w, 'st-1', 10)['status'] == 'on'
        vm.ok('vm.report', {'uptime': 6})
        vm.close()
        early = [e for e in p2util.quiet_events(w, HEARTBEAT_S * 0.5) if e['vm_id'] == 'st-1']
        assert early == [], 'off before the report is stale'
        assert status_of(d, 'st-1') == 'on'
        assert next_status(w, 'st-1', HEARTBEAT_S + 5)['status'] == 'off'
        w.close()


def test_status_events_who_sees_them(d):
    with admin(d) as a:
        for v in ('sv-1', 'sv-2'):
            a.ok('vm.create', {'vm_id': v, 'password': PW, 'ram': 1, 'cpu': 1}, timeout=LONG)
        p2util.make_user(a, 'sv-viewer', 'viewer')
    viewer = p2util.user_login(d, 'sv-viewer')
    own = p2util.vm_login(d, 'sv-1')
    try:
        # sv-1 is on before the watches start
        assert p2util.wait_until(lambda: status_of(d, 'sv-1') == 'on', 5)
        watch(viewer, types=['vm.status'])
        watch(own, types=['vm.status'])
        other = p2util.vm_login(d, 'sv-2')
        assert next_status(viewer, 'sv-2', 10)['status'] == 'on'
        other.close()
        assert next_status(viewer, 'sv-2', HEARTBEAT_S + 5)['status'] == 'off'
        # the VM session sees only its own VM
        assert [e for e in p2util.quiet_events(own, 0.3) if e['vm_id'] != 'sv-1'] == []
    finally:
        viewer.close()
        own.close()
