# SPDX-License-Identifier: MIT
"""Storage limits (DESIGN.md "Storage", PROTOCOL.md `unavailable`): when the
file system is full, and when the LMDB map is at its configured maximum,
writes fail with `unavailable` and change nothing, reads and existing
sessions go on, and once room is made writes succeed again.

The disk-full scenario mounts a small tmpfs as the state directory inside a
private mount namespace: the test runs this file as a script under
`unshare --mount --propagation private` (root only), so nothing is mounted
outside the test."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import msgpack  # noqa: E402
import pytest  # noqa: E402

from vmmtest import PASSWORD, Client, Daemon  # noqa: E402

PY = '/usr/bin/python3'
TMPFS_SIZE = 2 << 20        # the state directory's file system
TMPFS_ROOM = 384 << 10      # left free by the filler before vmmd starts
MAP_MAX = 1 << 20           # --map-size-max for the map-full case (the flag's minimum)
MAX_WRITES = 3000           # bound on the fill loop


class Admin(Client):
    """The admin Unix socket, with vmmtest.Client's msgpack-rpc machinery."""

    def __init__(self, path, timeout=10.0):   # noqa: super() would connect over TCP
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.timeout = timeout
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.next_id = 1
        self.token = None
        self.vm_id = None


def big_disks(tag, n=64):
    """n disks with 64-byte ids (the maximum): a large record and many index
    entries, so each write takes room."""
    out = []
    for i in range(n):
        head = f'{tag}-{i:02d}-'
        out.append({'id': head + 'd' * (64 - len(head)), 'size': i + 1})
    return out


def same_record(a, b):
    """The stored part of two VM records is the same."""
    keys = ('vm_id', 'ram', 'cpu', 'disks', 'registered_at', 'updated_at')
    return all(a[k] == b[k] for k in keys)


def list_ids(c, token):
    ids, after = [], None
    while True:
        p = {'filter': 'all', 'limit': 1000, 'token': token}
        if after is not None:
            p['after'] = after
        res = c.ok('vm.list', p)
        ids += [r['vm_id'] for r in res['vms']]
        after = res['next']
        if after is None:
            return ids


def db_bytes(state_dir):
    return os.stat(os.path.join(state_dir, 'vmmd.mdb')).st_size


def check_db(state_dir, what):
    """mdb_stat and vmmd-check on the stopped daemon's database."""
    db = os.path.join(state_dir, 'vmmd.mdb')
    p = subprocess.run(['mdb_stat', '-n', '-a', db], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f'{what}: mdb_stat -a failed:\n{p.stdout}\n{p.stderr}'
    check = os.environ.get('VMMD_CHECK_BIN')
    assert check, 'VMMD_CHECK_BIN is not set: this test needs vmmd-check (meson sets it)'
    p = subprocess.run([check, state_dir], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f'{what}: vmmd-check failed:\n{p.stdout}\n{p.stderr}'


def fill_and_recover(d, make_room, what):
    """Writes until `unavailable`, checks the failed writes changed nothing
    and that reads and sessions go on, calls make_room(), and checks that
    writes succeed again. Returns a summary for the log."""
    c = d.client(timeout=30)
    c.register('base', ram=1, cpu=1, disks=big_disks('base'))
    c.auth('base')
    token = c.token

    # 1. register large VMs until the storage refuses one
    n_ok, failed_id = 0, None
    for i in range(MAX_WRITES):
        vm_id = f'fill{i:04d}'
        err, res = c.call('register', {'vm_id': vm_id, 'password': PASSWORD, 'ram': i + 1,
                                       'cpu': 1, 'disks': big_disks(f'f{i:04d}')})
        if err is None:
            n_ok += 1
            continue
        assert err[0] == 'unavailable', f'{what}: register {vm_id} after {n_ok}: {err}'
        failed_id = vm_id
        break
    assert failed_id, f'{what}: {MAX_WRITES} registrations and no unavailable'
    full_bytes = db_bytes(d.state_dir)

    # the failed register left nothing: the id is free, not listed, no disks
    ids = list_ids(c, token)
    assert failed_id not in ids, f'{what}: {failed_id} exists after unavailable'
    assert ids == ['base'] + [f'fill{i:04d}' for i in range(n_ok)], f'{what}: {ids}'
    disks, after = [], None
    while True:
        res = c.ok('disk.list', {'limit': 10000} if after is None else
                   {'limit': 10000, 'after': after})
        disks += res['disks']
        after = res['next']
        if after is None:
            break
    assert len(disks) == 64 * (n_ok + 1), f'{what}: {len(disks)} disks'
    assert not any(dk['vm_id'] == failed_id for dk in disks)
    # and it fails again: nothing has changed since
    err, _ = c.call('register', {'vm_id': failed_id, 'password': PASSWORD, 'ram': 1, 'cpu': 1,
                                 'disks': big_disks(f'f{n_ok:04d}')})
    assert err is not None and err[0] == 'unavailable', f'{what}: register again: {err}'

    # 2. updates of an existing VM that replace its whole disk set: those
    # that fail must leave the previous record exactly
    upd_ok = upd_failed = 0
    for k in range(20):
        before = c.ok('vm.get')
        err, res = c.call('vm.update', {'ram': 1000 + k, 'disks': big_disks(f'u{k:02d}')})
        after = c.ok('vm.get')
        if err is None:
            upd_ok += 1
            assert after['ram'] == 1000 + k and after['disks'] == big_disks(f'u{k:02d}')
            continue
        assert err[0] == 'unavailable', f'{what}: vm.update: {err}'
        upd_failed += 1
        assert same_record(before, after), f'{what}: failed vm.update changed the record:\n' \
                                           f'{before}\n{after}'
    rec_full = c.ok('vm.get')

    # 3. reads go on, on this connection and others; sessions go on
    assert c.ok('vm.get')['vm_id'] == 'base'
    assert len(list_ids(c, token)) == n_ok + 1
    # resume renews the session and stores last_seen_at: see test_resume_when_map_full
    with d.client() as o:
        err, res = o.call('resume', {'token': token})
        resume_result = 'ok' if err is None else err[0]
        assert resume_result in ('ok', 'unavailable'), f'{what}: resume when full: {err}'
        if err is None:
            assert res['vm_id'] == 'base'
            assert same_record(o.ok('vm.get'), rec_full)
    with d.client() as o:   # a stateless request carrying the token
        assert same_record(o.ok('vm.get', {'token': token}), rec_full)
        assert o.ok('ping')['pong'] is True
    # a new auth writes a session: it may be refused, but only as unavailable
    with d.client() as o:
        err, res = o.call('auth', {'vm_id': 'base', 'password': PASSWORD})
        auth_result = 'ok' if err is None else err[0]
        assert auth_result in ('ok', 'unavailable'), f'{what}: auth when full: {err}'
    # the writes still fail while nothing changed: any write that went
    # through since (a vm.update in 2, the resume or the auth just above) let
    # LMDB reuse the pages its commit freed, and a later write may then fit
    # (seen in a CI rehearsal: the auth went through, then the register did)
    if upd_ok == 0 and resume_result != 'ok' and auth_result != 'ok':
        err, _ = c.call('register', {'vm_id': failed_id, 'password': PASSWORD, 'ram': 1,
                                     'cpu': 1, 'disks': big_disks(f'f{n_ok:04d}')})
        assert err is not None and err[0] == 'unavailable', f'{what}: register when full: {err}'

    # 4. make room: writes succeed again
    make_room(c, n_ok)
    c.register(failed_id, ram=7, cpu=1, disks=big_disks(f'f{n_ok:04d}'))
    res = c.ok('vm.update', {'ram': 4242, 'disks': big_disks('again')})
    assert res['ram'] == 4242
    assert c.ok('vm.get')['disks'] == big_disks('again')
    with d.client() as o:
        o.auth(failed_id)
        assert o.ok('vm.get')['ram'] == 7
    c.close()
    return (f'{what}: {n_ok + 1} VMs of 64 disks registered before the limit; database file '
            f'{full_bytes} bytes when full; updates when full: {upd_ok} ok, {upd_failed} '
            f'unavailable; auth when full: {auth_result}; resume when full: {resume_result}')


# ---- disk full (tmpfs in a private mount namespace) ----

def tmpfs_scenario(work):
    """Runs inside `unshare --mount --propagation private`."""
    state = os.path.join(work, 'state')
    os.makedirs(state)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={TMPFS_SIZE},mode=0700', 'tmpfs',
                    state], check=True)
    try:
        st = os.statvfs(state)
        free = st.f_bavail * st.f_frsize
        filler = os.path.join(state, 'filler')
        count = (free - TMPFS_ROOM) // 4096
        subprocess.run(['dd', 'if=/dev/zero', f'of={filler}', 'bs=4096', f'count={count}'],
                       check=True, capture_output=True)
        st = os.statvfs(state)
        print(f'tmpfs {TMPFS_SIZE} bytes, {st.f_bavail * st.f_frsize} free after the filler')

        d = Daemon(os.path.join(work, 'd'), state_dir=state,
                   args=['--map-size-max', str(1 << 30)])
        try:
            def make_room(c, n_ok):
                os.unlink(filler)

            print(fill_and_recover(d, make_room, 'disk full'))
            d.stop()
        finally:
            d.cleanup()
        check_db(state, 'disk full')
    finally:
        subprocess.run(['umount', state], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason='mounting a tmpfs needs root')
def test_disk_full(tmp_path):
    assert shutil.which('unshare'), 'unshare (util-linux) not found'
    (tmp_path / 'd').mkdir()
    p = subprocess.run(['unshare', '--mount', '--propagation', 'private', PY,
                        os.path.abspath(__file__), 'tmpfs', str(tmp_path)],
                       capture_output=True, text=True, timeout=240)
    print(p.stdout)
    print(p.stderr)
    assert p.returncode == 0, f'disk-full scenario failed ({p.returncode}):\n{p.stdout}\n' \
                              f'{p.stderr}'
    assert 'disk full: ' in p.stdout


# ---- map at its maximum ----

def test_map_full(make_daemon):
    d = make_daemon(args=['--map-size-max', str(MAP_MAX)])

    deleted = []

    def make_room(c, n_ok):
        # an administrator deletes half of the VMs; LMDB reuses their pages.
        # A delete needs a few pages itself, and LMDB hands the pages freed
        # by one transaction out only from the next but one: a delete may
        # be refused (as unavailable only), and is tried again.
        with Admin(d.admin_socket) as a:
            todo = [f'fill{i:04d}' for i in range(0, n_ok, 2)]
            for rnd in range(3):
                left = []
                for vm_id in todo:
                    err, res = a.call('vm.delete', {'vm_id': vm_id})
                    if err is None:
                        deleted.append(vm_id)
                    else:
                        assert err[0] == 'unavailable', f'vm.delete {vm_id}: {err}'
                        left.append(vm_id)
                print(f'round {rnd}: deleted {len(todo) - len(left)} of {len(todo)}')
                todo = left
            assert not todo, f'map full: vm.delete refused for good: {todo} ' \
                             f'(deleted {deleted})'

    print(fill_and_recover(d, make_room, 'map full'))
    with Admin(d.admin_socket) as a:
        st = a.ok('status')
        assert st['db']['map_size_bytes'] <= MAP_MAX, st
    d.stop()
    check_db(d.state_dir, 'map full')



def test_resume_when_map_full(make_daemon):
    """An existing session can be resumed while writes are refused: the
    session is on disk, nothing needs to be stored for it to be used."""
    d = make_daemon(args=['--map-size-max', str(MAP_MAX)])
    token = d.login('base').token
    with d.client(timeout=30) as c:
        for i in range(MAX_WRITES):
            err, _ = c.call('register', {'vm_id': f'fill{i:04d}', 'password': PASSWORD,
                                         'ram': 1, 'cpu': 1, 'disks': big_disks(f'f{i:04d}')})
            if err is not None:
                assert err[0] == 'unavailable', err
                break
        else:
            pytest.fail('the map never filled')
        # then small records, until not even those fit
        for i in range(MAX_WRITES):
            err, _ = c.call('register', {'vm_id': f's{i:04d}', 'password': PASSWORD,
                                         'ram': 1, 'cpu': 1})
            if err is not None:
                assert err[0] == 'unavailable', err
                break
        else:
            pytest.fail('the map never filled')
    with d.client() as o:
        assert o.ok('vm.get', {'token': token})['vm_id'] == 'base'   # token use works
        err, res = o.call('resume', {'token': token})
        assert err is None, f'resume of an existing session when full: {err}'
        assert res['vm_id'] == 'base'

if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == 'tmpfs':
        tmpfs_scenario(sys.argv[2])
    else:
        sys.exit(f'usage: {sys.argv[0]} tmpfs WORKDIR (run by pytest under unshare)')
