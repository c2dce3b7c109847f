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


# ---- schema 2 and 3 -> 4: the booking history indexes become per-name chains ----
#
# Schema 2 kept the history indexes (by user, by VM) as DUPSORT tables,
# schema 3 as plain tables keyed name NUL be64(feed). Schema 4 has no index
# tables: each history record links to the previous entry of its user and of
# its VM, plus a skip link, and a head table per kind holds each name's
# newest entry. Both old schemas are upgraded at start in one transaction,
# and every view of booking.history (tests/data/schemaN.json, recorded by the
# vmmd that wrote schemaN.mdb) must read back the same: same entries, same
# order, same pages.

SCHEMA = 4
OLD_SCHEMAS = (2, 3)


def upgraded_from(n):
    # manager.c: "Database %s upgraded from schema version %u to %d"
    return re.compile(rf'upgraded from schema version {n} to {SCHEMA}\b', re.I)


@pytest.fixture(params=OLD_SCHEMAS, ids=[f'schema{n}' for n in OLD_SCHEMAS])
def history_db(request, tmp_path):
    """(schema version, state dir, database path, what schemaN.json says)."""
    n = request.param
    return (n,) + copy_db(tmp_path, f'schema{n}')


@pytest.fixture
def schema3_db(tmp_path):
    return copy_db(tmp_path, 'schema3')


def view_params(view):
    """'user:alice,vm:vm-a' -> {'user': 'alice', 'vm_id': 'vm-a'}; 'all' -> {}."""
    p = {}
    for part in view.split(','):
        if part != 'all':
            key, name = part.split(':')
            p['vm_id' if key == 'vm' else 'user'] = name
    return p


def in_view(e, p):
    return all(e[k] == v for k, v in p.items())


def history_pages(a, before, limit=4, **p):
    """booking.history in pages of `limit`, entries older than feed `before`
    (None: from the newest). The fixture's bookings may have expired since it
    was written, adding newer entries: callers pass the fixture's newest feed
    + 1 to read only what it recorded."""
    entries, after = [], before
    while True:
        q = dict(p, limit=limit)
        if after is not None:
            q['after'] = after
        res = a.ok('booking.history', q)
        assert len(res['entries']) <= limit, res
        entries += res['entries']
        if res.get('next') is None:
            return entries
        assert after is None or res['next'] < after, res
        assert res['next'] == res['entries'][-1]['feed'], res
        after = res['next']


def recorded(want):
    """The fixture's bookings, by vm_id."""
    return {b['vm_id']: b for b in want['bookings']}


def test_vmmd_check_reads_old_schema_without_writing(history_db):
    n, state, db, want = history_db
    before = sha(db)
    out, counts = vmmd_check(state)
    assert sha(db) == before, 'vmmd-check changed the database'
    assert counts['schema version'] == n, out
    assert counts['history'] == len(want['history']['all']), out
    assert counts['bookings'] == len(want['bookings']), out


def test_fixture_views_agree(history_db):
    """The recorded views are what they claim to be (each the entries of
    'all' that match it, newest first, no feed twice): a fixture that does not
    hold this cannot catch an upgrade that loses or reorders an entry."""
    n, _, _, want = history_db
    every = want['history']['all']
    feeds = [e['feed'] for e in every]
    assert feeds == sorted(set(feeds), reverse=True), feeds
    for view, entries in want['history'].items():
        assert entries == [e for e in every if in_view(e, view_params(view))], view
    if n == 3:
        # long enough for skip links, prefix names, every action
        assert len(want['history']['user:alice']) >= 20
        assert len(want['history']['vm:vm-a']) >= 20
        assert {e['action'] for e in every} == {'book', 'renew', 'cancel', 'expire', 'end'}
        assert {'user:al', 'user:alice', 'vm:vm-a', 'vm:vm-ab'} <= set(want['history'])


def test_upgrade_keeps_the_history(history_db, tmp_path):
    n, state, db, want = history_db
    newest = max(e['feed'] for e in want['history']['all'])
    d = Daemon(tmp_path, state_dir=state)
    try:
        log = d.log_text()
        assert upgraded_from(n).search(log), f'vmmd did not log the upgrade:\n{log}'
        with admin(d) as a:
            for view, entries in want['history'].items():
                assert history_pages(a, newest + 1, **view_params(view)) == entries, view
            # a name that is a prefix of another has only its own entries
            assert {e['user'] for e in history_pages(a, newest + 1, user='al')} == {'al'}
            assert {e['vm_id'] for e in history_pages(a, newest + 1, vm_id='vm-a')} == {'vm-a'}
            # the bookings are kept (those that have not expired since)
            old = recorded(want)
            got = {b['vm_id']: {k: b[k] for k in ('vm_id', 'user', 'started_at', 'expires_at')}
                   for b in a.ok('booking.list', {})['bookings']}
            assert all(old.get(v) == b for v, b in got.items()), (got, old)
            soon = p2util.now_ms() + 60_000
            assert all(got.get(v) == b for v, b in old.items() if b['expires_at'] > soon), \
                (got, old)
            # new entries go on top of the upgraded ones, for the user and the VM
            if a.ok('booking.get', {'vm_id': 'vm-b'})['booking']:
                a.ok('booking.cancel', {'vm_id': 'vm-b'})
            b = a.ok('booking.create', {'vm_id': 'vm-b', 'user': 'bob', 'hours': 1})
            every = want['history']['all']
            for p in ({'vm_id': 'vm-b'}, {'user': 'bob'}, {'user': 'bob', 'vm_id': 'vm-b'}):
                got = history_pages(a, None, **p)
                assert got[0]['action'] == 'book' and got[0]['user'] == 'bob' and \
                    got[0]['vm_id'] == 'vm-b' and got[0]['expires_at'] == b['expires_at'], got
                assert got[0]['feed'] > newest, got
                assert [e for e in got if e['feed'] <= newest] == \
                    [e for e in every if in_view(e, p)], p
        d.stop()
        out, counts = vmmd_check(state)
        assert counts['schema version'] == SCHEMA, out
        assert counts['history'] >= len(want['history']['all']) + 1, out
        # a second start does not upgrade again, and reads the same history
        d.start()
        log2 = open(d.logs[-1], encoding='utf-8', errors='replace').read()
        assert not re.search(r'upgraded from schema', log2, re.I), log2
        with admin(d) as a:
            for view, entries in want['history'].items():
                assert history_pages(a, newest + 1, **view_params(view)) == entries, view
    finally:
        try:
            d.stop()
        finally:
            d.cleanup()


def test_upgrade_from_3_pages_from_every_position(schema3_db, tmp_path):
    """After the upgrade, booking.history read from any position (after = the
    feed of each entry, and every feed between) returns exactly the tail of
    the recorded view: the walk along a name's chain, skip links included,
    finds its starting point wherever it is. The long histories (alice, vm-a)
    are also read in pages of 1, 3, 4 and 7 from each of their entries."""
    state, db, want = schema3_db
    every = want['history']['all']
    newest = max(e['feed'] for e in every)
    long_views = [v for v, entries in want['history'].items()
                  if v != 'all' and len(entries) >= 20]
    assert {'user:alice', 'vm:vm-a'} <= set(long_views), long_views
    d = Daemon(tmp_path, state_dir=state)
    try:
        assert upgraded_from(3).search(d.log_text()), d.log_text()
        with admin(d) as a:
            for view, entries in want['history'].items():
                p = view_params(view)
                for after in range(1, newest + 2):
                    tail = [e for e in entries if e['feed'] < after]
                    res = a.ok('booking.history', dict(p, after=after, limit=1000))
                    assert res['entries'] == tail, (view, after)
                    assert res.get('next') is None, (view, after, res)
            for view in long_views:
                p = view_params(view)
                entries = want['history'][view]
                for i, e in enumerate(entries):
                    for limit in (1, 3, 4, 7):
                        assert history_pages(a, e['feed'], limit=limit, **p) == \
                            entries[i + 1:], (view, e['feed'], limit)
    finally:
        try:
            d.stop()
        finally:
            d.cleanup()
