# SPDX-License-Identifier: MIT
"""Crash consistency: writers update their VMs while vmmd is killed with
SIGKILL at a random moment, then restarted on the same state directory, many
times over. After every kill: each VM holds a value between its last
acknowledged write and the last one sent, with exactly the disk set of that
write (nothing half applied), `mdb_stat -a` reads the file, and vmmd-check
finds the database consistent.

CRASH_SEED and CRASH_CYCLES override the random seed (printed) and the number
of cycles (default 100; at least 50 must run). VMMD_CHECK_BIN names vmmd-check (meson sets it)."""

import os
import random
import shutil
import subprocess
import threading
import time

from vmmtest import PASSWORD, Client, Closed

WRITERS = 8
CYCLES = int(os.environ.get('CRASH_CYCLES', '100'))
BUDGET_S = 120            # stop adding cycles past this (the test must stay bounded)
KILL_MIN_MS, KILL_MAX_MS = 50, 600


def disks_for(vm, n):
    """The disk set written with ram = n: n % 5 + 1 disks named after n, so
    a mix of two writes (or a half-applied one) is visible."""
    return [{'id': f'{vm}-c{n}-{i}', 'size': n + i} for i in range(n % 5 + 1)]


def check_bin():
    path = os.environ.get('VMMD_CHECK_BIN')
    assert path, 'VMMD_CHECK_BIN is not set: this test needs vmmd-check (meson sets it)'
    assert os.access(path, os.X_OK), f'VMMD_CHECK_BIN={path} is not executable'
    return path


def run_checks(state_dir, cycle):
    """mdb_stat -a on the file and vmmd-check on the directory must pass."""
    mdb_stat = shutil.which('mdb_stat')
    assert mdb_stat, 'mdb_stat not found (Debian package lmdb-utils)'
    db = os.path.join(state_dir, 'vmmd.mdb')
    p = subprocess.run([mdb_stat, '-n', '-a', db], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f'cycle {cycle}: mdb_stat -a failed ({p.returncode}):\n' \
                              f'{p.stdout}\n{p.stderr}'
    for name in ('vms', 'disks', 'vm_disks', 'sessions', 'vm_sessions'):
        assert f'Status of {name}' in p.stdout, f'cycle {cycle}: no table {name}:\n{p.stdout}'
    p = subprocess.run([check_bin(), state_dir], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.rstrip().endswith('ok'), \
        f'cycle {cycle}: vmmd-check failed ({p.returncode}):\n{p.stdout}\n{p.stderr}'
    return p.stdout


class Writer(threading.Thread):
    """Updates one VM in a loop until its connection dies."""

    def __init__(self, port, vm, token, first):
        super().__init__(daemon=True)
        self.port, self.vm, self.token = port, vm, token
        self.n = first - 1          # the next write sends n + 1
        self.sent = None            # last value sent (maybe in flight)
        self.acked = None           # last value acknowledged in this cycle
        self.count = 0
        self.error = None
        self.ready = threading.Event()

    def run(self):
        try:
            c = Client(self.port, timeout=30)
        except OSError as e:
            self.error = f'{self.vm}: connect: {e!r}'
            self.ready.set()
            return
        try:
            err, res = c.call('resume', {'token': self.token})
            assert err is None, f'{self.vm}: resume: {err}'
            self.ready.set()
            while True:
                n = self.n + 1
                self.n = n
                self.sent = n
                err, res = c.call('vm.update', {'ram': n, 'disks': disks_for(self.vm, n)})
                assert err is None, f'{self.vm}: vm.update ram={n}: {err}'
                assert res['ram'] == n and res['disks'] == disks_for(self.vm, n), \
                    f'{self.vm}: vm.update ram={n} answered {res!r}'
                self.acked = n
                self.count += 1
        except (Closed, OSError):
            pass     # the kill
        except Exception as e:    # reported by the main thread
            self.error = f'{self.vm}: {e!r}'
        finally:
            self.ready.set()
            c.close()


def test_kill_9_cycles(make_daemon):
    seed = int(os.environ.get('CRASH_SEED', str(random.SystemRandom().randrange(1 << 32))))
    print(f'seed {seed} (CRASH_SEED={seed} repeats this run)')
    rng = random.Random(seed)
    d = make_daemon()
    vms = [f'crash{i}' for i in range(WRITERS)]
    tokens = {}
    with d.client(timeout=60) as c:
        for res in c.pipeline([('register', {'vm_id': v, 'password': PASSWORD, 'ram': 1,
                                             'cpu': 1, 'disks': disks_for(v, 1)})
                               for v in vms], timeout=60):
            assert res[0] is None, res
        for res in c.pipeline([('auth', {'vm_id': v, 'password': PASSWORD}) for v in vms],
                              timeout=60):
            assert res[0] is None, res
            tokens[res[1]['vm_id']] = res[1]['token']

    stored = {v: 1 for v in vms}     # the value each VM holds (checked after each restart)
    acked_total = 0
    in_flight_seen = 0               # cycles where a VM held its unacknowledged value
    t0 = time.monotonic()
    cycles = 0
    for cycle in range(1, CYCLES + 1):
        if time.monotonic() - t0 > BUDGET_S:
            break
        writers = [Writer(d.port, v, tokens[v], stored[v] + 1) for v in vms]
        for w in writers:
            w.start()
        for w in writers:
            assert w.ready.wait(30), f'cycle {cycle}: {w.vm} did not resume'
        delay = rng.randint(KILL_MIN_MS, KILL_MAX_MS) / 1000
        time.sleep(delay)
        d.kill()
        for w in writers:
            w.join(30)
            assert not w.is_alive(), f'cycle {cycle}: {w.vm} still running after the kill'
        errors = [w.error for w in writers if w.error]
        assert not errors, f'cycle {cycle} (seed {seed}): {errors}'

        run_checks(d.state_dir, cycle)
        d.start()
        with d.client(timeout=30) as c:
            for w in writers:
                rec = c.ok('vm.get', {'token': tokens[w.vm]})
                low = w.acked if w.acked is not None else stored[w.vm]
                high = w.sent if w.sent is not None else stored[w.vm]
                ram = rec['ram']
                assert low <= ram <= high, \
                    f'cycle {cycle} (seed {seed}, kill after {delay:.3f} s): {w.vm} ram {ram}' \
                    f' outside [acknowledged {low}, sent {high}]'
                # a write is one transaction: the value and its whole disk set
                assert rec['disks'] == disks_for(w.vm, ram), \
                    f'cycle {cycle} (seed {seed}): {w.vm} ram {ram} with disks {rec["disks"]}'
                if w.acked is not None and ram > w.acked:
                    in_flight_seen += 1
                stored[w.vm] = ram
                acked_total += w.count
            # the disks table holds exactly the disks of the records
            listed = []
            after = None
            while True:
                p = {'limit': 1000, 'token': tokens[vms[0]]}
                if after is not None:
                    p['after'] = after
                res = c.ok('disk.list', p)
                listed += [(dk['id'], dk['vm_id'], dk['size']) for dk in res['disks']]
                after = res['next']
                if after is None:
                    break
            expect = sorted(((dk['id'], v, dk['size']) for v in vms
                             for dk in disks_for(v, stored[v])), key=lambda t: t[0].encode())
            assert listed == expect, f'cycle {cycle}: disk.list {listed} != {expect}'
        cycles = cycle

    # one check against the running daemon too (it reads beside a live writer)
    out = run_checks(d.state_dir, 'final')
    elapsed = time.monotonic() - t0
    print(f'cycles survived: {cycles} in {elapsed:.1f} s; writes acknowledged: {acked_total}; '
          f'cycles with an in-flight write found applied: {in_flight_seen}')
    print(out)
    assert cycles >= min(CYCLES, 50), f'only {cycles} cycles in {elapsed:.1f} s (50 needed)'
    assert acked_total > cycles, f'too few writes acknowledged: {acked_total}'
