#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/
from real requests and records (python3-msgpack). Deterministic: running it
again rewrites the same files. Usage: tests/fuzz/make-corpus.py [OUTDIR]"""

import os
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, 'corpus')

PW = 'correct horse battery'
TOKEN = 'A' * 43


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def req(msgid, method, params=None):
    return pack([0, msgid, method, [] if params is None else [params]])


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


DISKS = [{'id': 'root', 'size': 20}, {'size': 100}]

# requests of both sockets, one message each
CLIENT = {
    'ping': req(1, 'ping'),
    'register': req(2, 'register', {'vm_id': 'vm1', 'password': PW, 'ram': 2048, 'cpu': 2,
                                    'disks': DISKS}),
    'register-nodisks': req(3, 'register', {'vm_id': 'vm-2', 'password': PW, 'ram': 1,
                                            'cpu': 1024}),
    'auth': req(4, 'auth', {'vm_id': 'vm1', 'password': PW}),
    'resume': req(5, 'resume', {'token': TOKEN}),
    'vm-add': req(6, 'vm.add', {'vm_id': 'vm1', 'ram': 512, 'cpu': 1, 'disks': []}),
    'vm-get': req(7, 'vm.get', {'token': TOKEN}),
    'vm-update': req(8, 'vm.update', {'ram': 4096, 'disks': [{'id': 'd.1', 'size': 1 << 40}]}),
    'vm-list': req(9, 'vm.list', {'filter': 'all', 'limit': 10, 'after': 'a'}),
    'disk-list': req(10, 'disk.list', {'limit': 1}),
    'passwd': req(11, 'passwd', {'password': PW, 'new_password': 'another password'}),
    'logout': req(12, 'logout'),
}
ADMIN = {
    'status': req(1, 'status'),
    'vm-create': req(2, 'vm.create', {'vm_id': 'vm1'}),
    'vm-create-pw': req(3, 'vm.create', {'vm_id': 'vm2', 'password': PW}),
    'vm-get': req(4, 'vm.get', {'vm_id': 'vm1'}),
    'vm-list': req(5, 'vm.list', {'filter': 'authorized'}),
    'disk-list': req(6, 'disk.list', {'after': 'x'}),
    'vm-passwd': req(7, 'vm.passwd', {'vm_id': 'vm1'}),
    'session-list': req(8, 'session.list', {'vm_id': 'vm1', 'limit': 5}),
    'session-revoke': req(9, 'session.revoke', {'vm_id': 'vm1'}),
    'session-revoke-id': req(10, 'session.revoke', {'id': 'abcdefgh'}),
    'conn-list': req(11, 'conn.list'),
    'conn-kill': req(12, 'conn.kill', {'id': 1}),
    'events-watch': req(13, 'events.watch'),
    'backup': req(14, 'backup'),
    'vm-delete': req(15, 'vm.delete', {'vm_id': 'vm1'}),
    'shutdown': req(16, 'shutdown'),
}

# mpscan: shapes and edges of the codec
MPSCAN = {
    'nil': b'\xc0',
    'never-used': b'\xc1',
    'fixmap': pack({'a': 1, 'b': [1, 2, {'c': None}]}),
    'depth8': pack([[[[[[[[1]]]]]]]]),
    'depth9': pack([[[[[[[[[1]]]]]]]]]),
    'str32-declared': b'\xdb\xff\xff\xff\xff',
    'array32-declared': b'\xdd\x00\x01\x00\x00',
    'map16-declared': b'\xde\x80\x00',
    'bin8': b'\xc4\x03abc',
    'ext': b'\xc7\x02\x05xy' + b'\xd4\x01\x00',
    'floats': pack([1.5, -2.25]) + b'\xca\x00\x00\x00\x00',
    'ints': pack([0, -1, 255, 65535, 1 << 32, -(1 << 40), (1 << 64) - 1]),
    'truncated': req(1, 'ping')[:-1],
    'two-messages': req(1, 'ping') + req(2, 'ping'),
    'big-str': pack('x' * 70000)[:200],
}
for k, v in CLIENT.items():
    MPSCAN['req-' + k] = v

PARAMS = dict(('req-' + k, v) for k, v in CLIENT.items())
PARAMS.update({
    'params-dup-key': b'\x94\x00\x01\xa8register\x91\x82\xa3ram\x01\xa3ram\x02',
    'params-disks-dup': req(1, 'vm.update', {'disks': [{'id': 'a', 'size': 1},
                                                       {'id': 'a', 'size': 2}]}),
    'params-65-disks': req(1, 'vm.update', {'disks': [{'size': 1}] * 65}),
    'params-bad-utf8': b'\x94\x00\x01\xa4auth\x91\x81\xa5vm_id\xa2\xc3\x28',
    'params-bin': pack([0, 1, 'auth', [{'vm_id': b'vm1', 'password': PW}]]),
    'params-token': req(1, 'vm.list', {'filter': 'all', 'token': TOKEN}),
})


def vm_record(v=1, disks=DISKS[:1]):
    return pack({'v': v, 'vm_id': 'vm1', 'pwhash': '$argon2id$v=19$m=65536,t=2,p=1$x$y',
                 'described': True, 'ram': 2048, 'cpu': 2, 'registered_at': 1700000000000,
                 'updated_at': 1700000000001, 'last_seen_at': -1,
                 'disks': [dict(d, id=d.get('id', 'vm1-disk0')) for d in disks]})


RECORD = {
    'vm': vm_record(),
    'vm-nodisks': vm_record(disks=[]),
    'vm-v2': vm_record(v=2),
    'session': pack({'v': 1, 'vm_id': 'vm1', 'created_at': 1, 'expires_at': 86400001}),
    'disk': pack({'v': 1, 'vm_id': 'vm1', 'size': 20}),
    'disk-negative': pack({'v': 1, 'vm_id': 'vm1', 'size': -1}),
}

CLIENT_PATH = {
    'ping': CLIENT['ping'],
    'pipelined': CLIENT['ping'] + req(2, 'vm.get') + req(3, 'vm.list', {'filter': 'all'}),
    'unknown-method': req(1, 'nope'),
    'notification': pack([2, 'ping', []]),
    'malformed': b'\x94\x00\x01\xc1',
    'too-large': b'\xdb\x00\x10\x00\x00',
    'half-message': CLIENT['register'][:20],
    'resume-bogus': CLIENT['resume'] + req(6, 'vm.get'),
    'register-auth-use': (CLIENT['register'] + CLIENT['auth'] + req(5, 'vm.get') +
                          CLIENT['vm-update'] + CLIENT['vm-list'] + CLIENT['disk-list'] +
                          CLIENT['logout'] + req(13, 'vm.get')),
    'register-add': (CLIENT['register-nodisks'] +
                     req(4, 'auth', {'vm_id': 'vm-2', 'password': PW}) +
                     req(5, 'vm.add', {'vm_id': 'vm-2', 'ram': 1, 'cpu': 1,
                                       'disks': [{'id': 'x', 'size': 3}]}) +
                     req(6, 'vm.update', {'cpu': 3}) + req(7, 'disk.list')),
    'passwd': CLIENT['register'] + CLIENT['auth'] + CLIENT['passwd'],
    'auth-unknown': req(1, 'auth', {'vm_id': 'ghost', 'password': PW}),
    'bad-params': req(1, 'register', {'vm_id': '-bad', 'password': 'x', 'ram': 0, 'cpu': 2000}),
}

ADMIN_PATH = {
    'status': ADMIN['status'],
    'create-get-list': (ADMIN['vm-create'] + ADMIN['vm-get'] + ADMIN['vm-list'] +
                        ADMIN['disk-list'] + ADMIN['session-list'] + ADMIN['conn-list']),
    'create-passwd-delete': (ADMIN['vm-create-pw'] + req(20, 'vm.passwd', {'vm_id': 'vm2'}) +
                             req(21, 'session.revoke', {'vm_id': 'vm2'}) +
                             req(22, 'vm.delete', {'vm_id': 'vm2'}) +
                             req(23, 'vm.get', {'vm_id': 'vm2'})),
    'revoke-id': ADMIN['session-revoke-id'],
    'conn-kill-self': ADMIN['conn-list'] + req(2, 'conn.kill', {'id': 1}) + ADMIN['status'],
    'events-watch': ADMIN['events-watch'] + ADMIN['vm-create'] + ADMIN['vm-delete'],
    'backup-no-fd': ADMIN['backup'],
    'shutdown': ADMIN['status'] + ADMIN['shutdown'] + ADMIN['status'],
    'unknown-method': req(1, 'register', {'vm_id': 'x'}),
    'malformed': b'\x94\x00\x01\xc1',
    'reload': ADMIN['status'] + req(2, 'reload') + ADMIN['status'],
}

# part 2 on the admin socket: people, groups, bookings, the catalog, requests,
# monitoring and the feed, each sequence building on what it made
P2 = [
    ('user.create', {'name': 'alice', 'role': 'user', 'password': PW}),
    ('user.create', {'name': 'bob', 'role': 'viewer'}),
    ('user.get', {'name': 'alice'}),
    ('user.list', {'limit': 2, 'after': 'a'}),
    ('user.set', {'name': 'bob', 'role': 'admin', 'password': True}),
    ('vm.create', {'vm_id': 'vm1', 'ram': 1024, 'cpu': 2, 'hostname': 'h1', 'owner': 'alice'}),
    ('vm.create', {'vm_id': 'vm2'}),
    ('group.create', {'name': 'lab', 'vm_ids': ['vm1']}),
    ('group.add', {'id': 1, 'vm_ids': ['vm2']}),
    ('group.rename', {'id': 1, 'name': 'lab2'}),
    ('group.get', {'id': 1}),
    ('group.list', {'limit': 5}),
    ('booking.create', {'vm_id': 'vm1', 'hours': 2, 'user': 'alice'}),
    ('booking.create', {'group': 1, 'minutes': 30, 'user': 'bob'}),
    ('booking.renew', {'vm_id': 'vm1', 'minutes': 15}),
    ('booking.get', {'vm_id': 'vm1'}),
    ('booking.list', {'user': 'alice', 'group': 1, 'limit': 3}),
    ('booking.history', {'user': 'alice', 'vm_id': 'vm1', 'limit': 2}),
    ('booking.cancel', {'vm_id': 'vm1'}),
    ('vm.set', {'vm_id': 'vm2', 'ip': '10.0.0.2', 'os': None, 'group': None}),
    ('vm.suspend', {'vm_id': 'vm2'}),
    ('vm.approve', {'vm_id': 'vm2'}),
    ('vm.monitor', {'vm_id': 'vm1'}),
    ('vm.list', {'filter': 'all', 'group': 1, 'owner': 'alice', 'booked_by': 'bob',
                 'status': 'off'}),
    ('os.create', {'name': 'debian', 'version': '12', 'iso': 'd.iso',
                   'description': 'bookworm'}),
    ('os.list', None),
    ('request.create', {'description': 'two VMs', 'ram': 512, 'cpu': 1, 'disks': [10],
                        'os_id': 1, 'count': 2}),
    ('request.list', {'state': 'pending', 'limit': 4}),
    ('request.approve', {'id': 1, 'vm_ids': ['r1', 'r2']}),
    ('request.reject', {'id': 1, 'reason': 'no'}),
    ('request.cancel', {'id': 1}),
    ('group.remove', {'vm_id': 'vm2'}),
    ('group.delete', {'id': 1}),
    ('os.delete', {'id': 1}),
    ('user.delete', {'name': 'alice'}),
    ('whoami', None),
]


def seq(calls, first=1):
    return b''.join(req(first + i, m, p) for i, (m, p) in enumerate(calls))


ADMIN_PATH.update({
    'part2-all': seq(P2),
    'part2-watch': (req(1, 'events.watch', {'since': 0, 'types': ['booking.', 'group.']}) +
                    seq(P2[:14], 2)),
    'part2-bookings': seq([c for c in P2 if c[0].startswith(('user.create', 'vm.create',
                                                             'booking.'))]),
    'part2-requests': seq([c for c in P2 if c[0].startswith(('os.', 'request.',
                                                             'user.create'))]),
})
CLIENT_PATH.update({
    'user-auth-whoami': (req(1, 'user.auth', {'name': 'alice', 'password': PW}) +
                         req(2, 'whoami') + req(3, 'booking.list') +
                         req(4, 'events.watch', {'since': 0})),
    'report-booking': (CLIENT['register'] + CLIENT['auth'] +
                       req(5, 'vm.report', {'hostname': 'h', 'ip': '10.0.0.1', 'os': 'd',
                                            'uptime': 5, 'load': [0.5, 1, 2.25],
                                            'mem_total': 4096, 'mem_used': 100,
                                            'disks_used': [{'id': 'root', 'used': 3}]}) +
                       req(6, 'booking.get') + req(7, 'whoami') +
                       req(8, 'events.watch', {'types': ['booking.']})),
})

for name, data in MPSCAN.items():
    write('fuzz-mpscan', name, data)
for name, data in PARAMS.items():
    write('fuzz-params', name, data)
for name, data in RECORD.items():
    write('fuzz-record', name, data)
for name, data in CLIENT_PATH.items():
    write('fuzz-client-path', name, data)
for name, data in ADMIN_PATH.items():
    write('fuzz-admin-path', name, data)

# A libFuzzer dictionary: the method names and keys of the contract as
# MessagePack strings, and a few headers.
WORDS = ['ping', 'register', 'auth', 'resume', 'vm.add', 'vm.get', 'vm.update', 'vm.list',
         'disk.list', 'passwd', 'logout', 'status', 'vm.create', 'vm.delete', 'vm.passwd',
         'session.list', 'session.revoke', 'conn.list', 'conn.kill', 'events.watch', 'backup',
         'shutdown', 'vm_id', 'password', 'new_password', 'ram', 'cpu', 'disks', 'id', 'size',
         'token', 'filter', 'limit', 'after', 'connected', 'authorized', 'all', 'v', 'pwhash',
         'described', 'registered_at', 'updated_at', 'last_seen_at', 'created_at', 'expires_at',
         'vm1', PW, TOKEN,
         # part 2
         'user.auth', 'whoami', 'user.create', 'user.get', 'user.list', 'user.set',
         'user.delete', 'vm.set', 'vm.approve', 'vm.suspend', 'vm.report', 'vm.monitor',
         'group.create', 'group.get', 'group.list', 'group.rename', 'group.add', 'group.remove',
         'group.delete', 'booking.create', 'booking.renew', 'booking.cancel', 'booking.get',
         'booking.list', 'booking.history', 'os.create', 'os.list', 'os.delete',
         'request.create', 'request.list', 'request.approve', 'request.reject',
         'request.cancel', 'reload', 'name', 'role', 'user', 'group', 'vm_ids', 'hours',
         'minutes', 'hostname', 'ip', 'os', 'owner', 'booked_by', 'status', 'since', 'types',
         'description', 'count', 'state', 'reason', 'os_id', 'version', 'uptime', 'load',
         'mem_total', 'mem_used', 'disks_used', 'used', 'admin', 'viewer', 'pending',
         'booking.', 'alice']
with open(os.path.join(HERE, 'vmmd.dict'), 'w') as f:
    f.write('# generated by make-corpus.py\n')
    for w in WORDS:
        f.write('"%s"\n' % ''.join('\\x%02x' % b for b in pack(w)))
    for name, b in (('request', b'\x94\x00'), ('params', b'\x91\x81'), ('map2', b'\x82'),
                    ('uint32', b'\xce\xff\xff\xff\xff'), ('uint64', b'\xcf'), ('nil', b'\xc0')):
        f.write('"%s"\n' % ''.join('\\x%02x' % c for c in b))
