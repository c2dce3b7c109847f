# SPDX-License-Identifier: MIT
"""The schema upgrade: tests/data/schema1.mdb, written by the previous vmmd
(tests/data/README and schema1.json say what it holds), opens in this one,
is upgraded at start (vmmd logs it) and keeps every VM, disk and session:
the tokens it holds resume (they expire in December 2027), the passwords
log in. vmmd-check passes on it before (read-only: the file is not touched,
schema 1) and after (the new schema, every new table walked)."""

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

import p2util
from p2util import LONG, admin, tcp
from vmmtest import Daemon

# the log line names the versions (paths of tests hold "upgrade" too)
UPGRADED = re.compile(r'upgrad\w* from schema( version)? 1 to [2-9]', re.I)
DATA = os.path.join(p2util.TOP, 'tests', 'data')
VMS = {
    'vm1': {'ram': 2048, 'cpu': 2, 'disks': [{'id': 'disk1', 'size': 100},
                                             {'id': 'disk2', 'size': 200}]},
    'vm2': {'ram': 1024, 'cpu': 1, 'disks': [{'id': 'vm2-disk1', 'size': 10}]},
    'web-01': {'ram': 4096, 'cpu': 4, 'disks': []},
    'spare': {'ram': None, 'cpu': None, 'disks': []},
}


def check_bin():
    path = os.environ.get('VMMD_CHECK_BIN')
    assert path and os.access(path, os.X_OK), \
        'VMMD_CHECK_BIN is not set: this test needs vmmd-check (meson sets it)'
    return path


def vmmd_check(state_dir):
    p = subprocess.run([check_bin(), state_dir], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.rstrip().endswith('ok'), \
        f'vmmd-check failed ({p.returncode}):\n{p.stdout}\n{p.stderr}'
    counts = dict(re.findall(r'^([a-z ]+): (\d+)', p.stdout, re.M))
    return p.stdout, {k: int(v) for k, v in counts.items()}


def sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def copy_db(tmp_path, name):
    """tests/data/NAME.mdb copied into a new state directory: (state dir,
    database path, what NAME.json says of it)."""
    with open(os.path.join(DATA, f'{name}.json')) as f:
        about = json.load(f)
    state = tmp_path / f'state-{name}'
    state.mkdir()
    db = state / 'vmmd.mdb'
    shutil.copyfile(os.path.join(DATA, f'{name}.mdb'), db)
    return str(state), str(db), about


@pytest.fixture
def old_db(tmp_path):
    return copy_db(tmp_path, 'schema1')


def test_vmmd_check_reads_schema_1_without_writing(old_db):
    state, db, _ = old_db
    before = sha(db)
    out, counts = vmmd_check(state)
    assert sha(db) == before, 'vmmd-check changed the database'
    assert counts['schema version'] == 1, out
    assert counts['vms'] == 4 and counts['disks'] == 3 and counts['sessions'] == 2, out


def test_upgrade_keeps_vms_disks_sessions(old_db, tmp_path):
    state, db, sec = old_db
    d = Daemon(tmp_path, state_dir=state)
    try:
        log = d.log_text()
        assert UPGRADED.search(log), f'vmmd did not log the upgrade:\n{log}'
        with admin(d) as a:
            vms = {v['vm_id']: v for v in a.ok('vm.list', {'filter': 'all'})['vms']}
            assert set(vms) == set(VMS), vms
            for vm_id, want in VMS.items():
                rec = vms[vm_id]
                for k, v in want.items():
                    assert rec[k] == v, (vm_id, k, rec)
                # the new keys, at their defaults
                assert rec['access'] == 'active' and rec['booking'] is None, rec
                assert rec['group'] is None and rec['owner'] is None, rec
                assert rec['hostname'] is None and rec['ip'] == [] and rec['os'] is None, rec
                assert rec['status'] in ('on', 'off'), rec
                assert a.ok('vm.get', {'vm_id': vm_id}) == rec
            assert vms['vm1']['authorized'] is True and vms['vm2']['authorized'] is True
            assert vms['web-01']['authorized'] is False
            disks = a.ok('disk.list', {})['disks']
            assert sorted((x['id'], x['vm_id'], x['size']) for x in disks) == \
                [('disk1', 'vm1', 100), ('disk2', 'vm1', 200), ('vm2-disk1', 'vm2', 10)], disks
            sessions = a.ok('session.list', {})['sessions']
            assert sorted(s['vm_id'] for s in sessions) == ['vm1', 'vm2'], sessions
            st = a.ok('status')
            assert (st['vms'], st['disks'], st['sessions']) == (4, 3, 2), st
        # the tokens resume (not expired), and say who they are
        for vm_id, token in sec['tokens'].items():
            with tcp(d) as c:
                res = c.ok('resume', {'token': token})
                assert res['vm_id'] == vm_id and res['expires_at'] > p2util.now_ms(), res
                assert c.ok('whoami') == {'kind': 'vm', 'vm_id': vm_id}
                assert c.ok('vm.get')['disks'] == VMS[vm_id]['disks']
                # stateless too
                with tcp(d) as s:
                    assert s.ok('vm.get', {'token': token})['vm_id'] == vm_id
        # every password logs in
        for vm_id, pw in sec['passwords'].items():
            with tcp(d) as c:
                c.ok('auth', {'vm_id': vm_id, 'password': pw}, timeout=LONG)
                c.err('auth', {'vm_id': vm_id, 'password': pw + 'x'}, 'unauthenticated',
                      timeout=LONG)
        # part 2 works on it: the feed counts from 1
        with admin(d) as a:
            p2util.make_user(a, 'up-alice')
            g = a.ok('group.create', {'name': 'up', 'vm_ids': ['vm1', 'web-01']})
            assert g['id'] == 1, g
            a.ok('booking.create', {'vm_id': 'vm2', 'minutes': 30, 'user': 'up-alice'})
        res, evs = p2util.replay(d, since=0)
        assert [e['feed'] for e in evs] == list(range(1, res['feed'] + 1)), evs
        assert [e['type'] for e in evs][-3:] == ['user.created', 'group.created',
                                                 'booking.created'], evs
        d.stop()
        out, counts = vmmd_check(state)
        assert counts['schema version'] >= 2, out
        assert (counts['vms'], counts['disks'], counts['users'], counts['groups'],
                counts['bookings']) == (4, 3, 1, 1, 1), out
        assert counts['sessions'] >= 2, out
        # a second start does not upgrade again, and keeps everything
        d.start()
        log2 = open(d.logs[-1], encoding='utf-8', errors='replace').read()
        assert not UPGRADED.search(log2), log2
        with admin(d) as a:
            assert len(a.ok('vm.list', {'filter': 'all'})['vms']) == 4
            assert a.ok('booking.get', {'vm_id': 'vm2'})['booking']['user'] == 'up-alice'
        with tcp(d) as c:
            assert c.ok('resume', {'token': sec['tokens']['vm1']})['vm_id'] == 'vm1'
    finally:
        try:
            d.stop()
        finally:
            d.cleanup()


def test_upgrade_is_one_transaction_on_a_copy(old_db, tmp_path):
    """A daemon killed right after the upgrade leaves a database that opens
    (either schema, never a mix): vmmd-check passes, and a start serves it."""
    state, db, sec = old_db
    d = Daemon(tmp_path, state_dir=state)
    d.kill()
    out, counts = vmmd_check(state)
    assert counts['schema version'] >= 2 and counts['vms'] == 4, out
    d.start()
    try:
        with tcp(d) as c:
            assert c.ok('resume', {'token': sec['tokens']['vm2']})['vm_id'] == 'vm2'
    finally:
        d.stop()
        d.cleanup()


# ---- schema 2 -> 3: the booking history indexes become plain tables ----

UPGRADED_2 = re.compile(r'upgraded from schema version 2 to 3', re.I)


@pytest.fixture
def schema2_db(tmp_path):
    return copy_db(tmp_path, 'schema2')


def history_pages(a, before, **p):
    """booking.history in pages of 4, entries older than feed `before` (the
    fixture's bookings may have expired since, adding newer entries)."""
    entries, after = [], before
    while True:
        res = a.ok('booking.history', dict(p, limit=4, after=after))
        entries += res['entries']
        if res.get('next') is None:
            return entries
        assert res['next'] < after, res
        after = res['next']


def test_vmmd_check_reads_schema_2_without_writing(schema2_db):
    state, db, want = schema2_db
    before = sha(db)
    out, counts = vmmd_check(state)
    assert sha(db) == before, 'vmmd-check changed the database'
    assert counts['schema version'] == 2, out
    assert counts['history'] == len(want['history']['all']), out


def test_upgrade_from_2_keeps_the_history(schema2_db, tmp_path):
    state, db, want = schema2_db
    newest = max(e['feed'] for e in want['history']['all'])
    d = Daemon(tmp_path, state_dir=state)
    try:
        log = d.log_text()
        assert UPGRADED_2.search(log), f'vmmd did not log the upgrade:\n{log}'
        with admin(d) as a:
            for view, entries in want['history'].items():
                p = {}
                for part in view.split(','):
                    if part != 'all':
                        key, name = part.split(':')
                        p['vm_id' if key == 'vm' else 'user'] = name
                assert history_pages(a, newest + 1, **p) == entries, view
            # a name that is a prefix of another has only its own entries
            assert {e['user'] for e in history_pages(a, newest + 1, user='al')} == {'al'}
            assert {e['vm_id'] for e in history_pages(a, newest + 1, vm_id='vm-a')} == {'vm-a'}
            # new entries go on top of the upgraded ones, in both indexes
            if a.ok('booking.get', {'vm_id': 'vm-b'})['booking']:
                a.ok('booking.cancel', {'vm_id': 'vm-b'})
            b = a.ok('booking.create', {'vm_id': 'vm-b', 'user': 'bob', 'hours': 1})
            for p in ({'vm_id': 'vm-b'}, {'user': 'bob'}):
                got = a.ok('booking.history', dict(p, limit=100))['entries']
                assert got[0]['action'] == 'book' and got[0]['user'] == 'bob' and \
                    got[0]['vm_id'] == 'vm-b' and got[0]['expires_at'] == b['expires_at'], got
                old = want['history']['vm:vm-b' if 'vm_id' in p else 'user:bob']
                assert [e for e in got if e['feed'] <= newest] == old, p
    finally:
        d.stop()
    out, counts = vmmd_check(state)
    assert counts['schema version'] == 3, out
    assert counts['history'] >= len(want['history']['all']), out
    d.cleanup()
