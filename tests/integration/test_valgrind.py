# SPDX-License-Identifier: MIT
"""vmmd under valgrind memcheck for one scripted session over both sockets:
register, auth, vm.add (on an admin-created VM), vm.update, vm.get, vm.list,
disk.list, passwd, logout; admin status, vm.create, vm.delete, backup (a
descriptor by SCM_RIGHTS); a framing error. Then SIGTERM: vmmd must exit 0
and valgrind must report no errors and no definitely lost bytes
(--error-exitcode=99 makes an error an exit status too).

argon2id is slow under valgrind (seconds per hash), so the session hashes
only a handful of passwords (register, two auth, vm.create, passwd)."""

import os
import re
import shutil
import socket

import pytest

from hostile_util import Admin, ValgrindDaemon
from vmmtest import PASSWORD, expect_framing_close, request_bytes

VALGRIND = shutil.which('valgrind')
# valgrind cannot run an AddressSanitizer build: the session runs in the
# plain build's pass of the suite (meson sets VMMD_SANITIZE)
SANITIZED = os.environ.get('VMMD_SANITIZE', 'none') not in ('', 'none')
SLOW = 300   # seconds for any one call under valgrind


@pytest.mark.skipif(not VALGRIND, reason='valgrind is not installed (tools/install-deps has it)')
@pytest.mark.skipif(SANITIZED, reason='a sanitizer build; valgrind runs against the plain build')
def test_scripted_session_under_valgrind(tmp_path):
    d = ValgrindDaemon(tmp_path, valgrind=VALGRIND, args=['--hash-workers', '1'])
    try:
        # the client side
        c = d.client(timeout=SLOW)
        c.register('vm1', disks=[{'id': 'd1', 'size': 10}])
        c.auth('vm1')
        assert c.ok('vm.update', {'ram': 2048, 'disks': [{'id': 'd1', 'size': 20}, {'size': 5}]},
                    timeout=SLOW)['ram'] == 2048
        assert c.ok('vm.get', timeout=SLOW)['disks'][1]['id'] == 'vm1-disk1'
        assert [v['vm_id'] for v in c.ok('vm.list', {'filter': 'connected'},
                                         timeout=SLOW)['vms']] == ['vm1']
        assert len(c.ok('disk.list', timeout=SLOW)['disks']) == 2
        c.err('vm.update', {'ram': 0}, 'bad_request', timeout=SLOW)
        assert c.ok('passwd', {'password': PASSWORD, 'new_password': 'new-pw-22'},
                    timeout=SLOW) == {}
        assert c.ok('logout', timeout=SLOW) == {}
        c.err('vm.get', None, 'unauthenticated', timeout=SLOW)

        # the admin side
        a = Admin(d.admin_socket, timeout=SLOW)
        st = a.ok('status')
        assert st['vms'] == 1 and st['disks'] == 2, st
        created = a.ok('vm.create', {'vm_id': 'vm2'})
        assert created['vm_id'] == 'vm2' and created['password']
        c2 = d.client(timeout=SLOW)
        c2.auth('vm2', created['password'])
        assert c2.ok('vm.add', {'vm_id': 'vm2', 'ram': 1, 'cpu': 1, 'disks': []})['cpu'] == 1
        c2.err('vm.add', {'vm_id': 'vm2', 'ram': 1, 'cpu': 1, 'disks': []}, 'exists')
        assert a.ok('vm.delete', {'vm_id': 'vm2'}) == {}
        c2.err('vm.get', None, 'unauthenticated')
        backup = tmp_path / 'backup.mdb'
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            err, res = send_backup(a, fd)
        finally:
            os.close(fd)
        assert err is None, err
        assert res['bytes'] == os.path.getsize(backup) > 0

        # a framing error, and the daemon goes on
        with d.client(timeout=SLOW) as bad:
            bad.send_raw(b'\x94\x00\x01\xa4ping\xc1')
            expect_framing_close(bad, 'bad_request', timeout=SLOW)
        assert c.ok('ping', timeout=SLOW)['pong'] is True
        for x in (c, c2, a):
            x.close()
        rc = d.stop(timeout=SLOW, check=False)
    finally:
        d.cleanup()
    with open(d.valgrind_log, errors='replace') as f:
        log = f.read()
    print(log[-3000:])
    assert rc == 0, f'vmmd under valgrind exited with {rc} (99: valgrind found errors)\n' + \
        d.log_text()
    assert 'ERROR SUMMARY: 0 errors' in log, log[-6000:]
    lost = re.findall(r'definitely lost: ([\d,]+) bytes', log)
    assert all(int(x.replace(',', '')) == 0 for x in lost), log[-6000:]
    d.check_log()


def send_backup(a, fd):
    """The backup request's bytes in one sendmsg() carrying fd."""
    msgid = a.new_id()
    data = request_bytes(msgid, 'backup')
    assert socket.send_fds(a.sock, [data], [fd]) == len(data)
    msg = a.read_response()
    assert msg[1] == msgid, msg
    return a.split(msg)
