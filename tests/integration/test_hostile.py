# SPDX-License-Identifier: MIT
"""A table-driven catalogue of malformed and hostile inputs on both sockets
(TCP and the admin Unix socket), each with its expected outcome from
PROTOCOL.md:

  error   an exact error code for the request's msgid; the connection stays
          usable (a ping, or status on the admin socket, then works on it)
  ok      the input is odd but valid: a success for that msgid
  silent  no answer at all (a client notification), the connection usable
  framing one msgid-0 error [1, 0, {code}, nil], then the server closes

After every case a healthy client on another connection of each socket still
gets answers. Separate tests cover what does not fit one row: every prefix of
a real request (half-closed: no answer, closed; completed by a second write:
answered), a 1-byte-at-a-time writer, a client that never reads its replies,
and list pages at the 1 MiB cap."""

import socket
import struct
import time

import pytest

import vmmtest
from hostile_util import (MIB, TOKEN, Admin, Pairs, Raw, enc, ext, f32, f64, i64, rbin,
                          read_sized, req, rss_kib, rstr, sanitized, u64)
from vmmtest import PASSWORD, expect_framing_close, list_all

TCP, ADM = 'tcp', 'admin'
RAN = {'table': 0, 'prefix': 0, 'other': 0}
AT_ONCE = 3.0          # seconds; the idle timeout is 30 s, so "at once" is well below

# ---------------------------------------------------------------- the catalogue

CASES = []


def case(cid, sock, data, expect, code=None, msgid=7, at_once=False):
    """data: bytes, or a function ctx -> bytes."""
    CASES.append(pytest.param(sock, data, expect, code, msgid, at_once, id=f'{sock}-{cid}'))


def E(cid, sock, data, code, msgid=7):
    case(cid, sock, data, 'error', code, msgid)


def OK(cid, sock, data, msgid=7):
    case(cid, sock, data, 'ok', None, msgid)


def F(cid, sock, data, code, at_once=False):
    case(cid, sock, data, 'framing', code, None, at_once)


def R(method, params=None, msgid=7):
    """A request built at run time (params may hold TOKEN)."""
    return lambda ctx: req(msgid, method, params, ctx)


def raw_msg(*parts):
    return b''.join(p if isinstance(p, bytes) else enc(p) for p in parts)


PING_TAIL = b'\xa4ping\x90'
STATUS_TAIL = b'\xa6status\x90'

# Wrong values by expected type (each is bad_request wherever that type is due).
WRONG_STR = [('int', 5), ('nil', None), ('true', True), ('f64', f64(1.5)), ('bin', rbin(b'abc')),
             ('array', ['a']), ('map', {'a': 'b'}), ('fixext1', ext(1, b'x'))]
WRONG_INT = [('str', '5'), ('nil', None), ('true', True), ('f32', f32(2.0)), ('f64', f64(2.0)),
             ('neg', -1), ('array', [1]), ('fixext1', ext(1, b'\x05')), ('bin', rbin(b'\x05'))]
WRONG_DISKS = [('map', {'id': 'x1', 'size': 1}), ('str', 'd'), ('int', 1), ('nil', None)]
WRONG = {'str': WRONG_STR, 'int': WRONG_INT, 'disks': WRONG_DISKS}

# (socket, method, valid params, fields: (path, type)); path 'disks.0.size'
# reaches into the first disk.
TYPE_TABLE = [
    (TCP, 'register', {'vm_id': 'tv1', 'password': PASSWORD, 'ram': 1024, 'cpu': 1,
                       'disks': [{'id': 'tv1-d', 'size': 1}]},
     [('vm_id', 'str'), ('password', 'str'), ('ram', 'int'), ('cpu', 'int'), ('disks', 'disks'),
      ('disks.0.id', 'str'), ('disks.0.size', 'int')]),
    (TCP, 'auth', {'vm_id': 'hvm', 'password': PASSWORD},
     [('vm_id', 'str'), ('password', 'str')]),
    (TCP, 'vm.update', {'token': TOKEN, 'ram': 1, 'cpu': 1, 'disks': [{'id': 'hd1', 'size': 1}]},
     [('ram', 'int'), ('cpu', 'int'), ('disks', 'disks'), ('disks.0.id', 'str'),
      ('disks.0.size', 'int'), ('token', 'str')]),
    (TCP, 'vm.list', {'token': TOKEN, 'filter': 'all', 'limit': 10, 'after': 'a'},
     [('filter', 'str'), ('limit', 'int'), ('after', 'str')]),
    (ADM, 'vm.create', {'vm_id': 'nv1', 'password': PASSWORD},
     [('vm_id', 'str'), ('password', 'str')]),
    (ADM, 'session.list', {'vm_id': 'hvm', 'limit': 10},
     [('vm_id', 'str'), ('limit', 'int'), ('after', 'str')]),
]


def with_field(params, path, value):
    """A deep copy of params with path set to value."""
    def copy(o):
        if isinstance(o, dict):
            return {k: copy(v) for k, v in o.items()}
        if isinstance(o, list):
            return [copy(v) for v in o]
        return o
    p = copy(params)
    keys = path.split('.')
    o = p
    for k in keys[:-1]:
        o = o[int(k)] if isinstance(o, list) else o[k]
    o[keys[-1]] = value
    return p


for sock, method, base, fields in TYPE_TABLE:
    for path, typ in fields:
        for wname, wval in WRONG[typ]:
            E(f'{method}-{path}-{wname}', sock, R(method, with_field(base, path, wval)),
              'bad_request')

# ---- framing: the shape of the message (TCP and admin alike)
for s, tail in ((TCP, PING_TAIL), (ADM, STATUS_TAIL)):
    meth = 'ping' if s == TCP else 'status'
    F('garbage-c1', s, b'\xc1', 'bad_request')
    F('msgid-2^32', s, b'\x94\x00\xcf' + struct.pack('>Q', 2 ** 32) + tail, 'bad_request')
    F('msgid-neg', s, b'\x94\x00\xff' + tail, 'bad_request')
    F('msgid-int64-min', s, b'\x94\x00' + i64(-2 ** 63).data + tail, 'bad_request')
    F('msgid-f64', s, b'\x94\x00' + f64(1.0).data + tail, 'bad_request')
    F('msgid-nil', s, b'\x94\x00\xc0' + tail, 'bad_request')
    F('msgid-str', s, b'\x94\x00\xa11' + tail, 'bad_request')
    F('msgid-fixext', s, b'\x94\x00' + ext(1, b'\x01').data + tail, 'bad_request')
    F('type-1', s, enc([1, 7, meth, []]), 'bad_request')
    F('type-2-four-elements', s, enc([2, 7, meth, []]), 'bad_request')
    F('type-3', s, enc([3, 7, meth, []]), 'bad_request')
    F('five-elements', s, enc([0, 7, meth, [], None]), 'bad_request')
    F('three-elements', s, enc([0, 7, meth]), 'bad_request')
    F('empty-array', s, b'\x90', 'bad_request')
    F('top-map', s, enc({'a': 1}), 'bad_request')
    F('top-int', s, b'\x05', 'bad_request')
    F('top-fixext', s, ext(0, b'\x00').data, 'bad_request')
    OK('msgid-0', s, enc([0, 0, meth, []]), msgid=0)
    OK('msgid-2^32-1', s, b'\x94\x00\xce\xff\xff\xff\xff' + tail, msgid=2 ** 32 - 1)
    OK('msgid-as-int64', s, b'\x94\x00' + i64(7).data + tail)
    OK('msgid-as-uint64', s, b'\x94\x00' + u64(7).data + tail)
    OK('type-as-uint8', s, b'\x94\xcc\x00\x07' + tail)
    OK('array16-header', s, b'\xdc\x00\x04\x00\x07' + tail)
    OK('method-str8', s, b'\x94\x00\x07\xd9' + bytes([len(meth)]) + meth.encode() + b'\x90')
    OK('params-empty-map32', s, b'\x94\x00\x07' + enc(meth) + b'\x91\xdf\x00\x00\x00\x00')
    case('notification', s, enc([2, meth, []]), 'silent')
    case('notification-register', s, enc([2, 'register', [{'vm_id': 'nv2', 'password': PASSWORD,
                                                           'ram': 1, 'cpu': 1}]]), 'silent')
    # ---- declared lengths far beyond the bytes sent: too_large at once
    head = b'\x94\x00\x07' + enc(meth) + b'\x91\x81\xa1x'
    F('str32-huge', s, head + b'\xdb\x40\x00\x00\x00', 'too_large', at_once=True)
    F('bin32-huge', s, head + b'\xc6\x7f\xff\xff\xff', 'too_large', at_once=True)
    F('array32-huge', s, head + b'\xdd\x40\x00\x00\x00', 'too_large', at_once=True)
    F('map32-huge', s, head + b'\xdf\x7f\xff\xff\xff', 'too_large', at_once=True)
    F('ext32-huge', s, head + b'\xc9\x40\x00\x00\x00\x01', 'too_large', at_once=True)
    F('top-array32-huge', s, b'\xdd\xff\xff\xff\xff', 'too_large', at_once=True)
    F('top-map32-huge', s, b'\xdf\x00\x40\x00\x00', 'too_large', at_once=True)
    F('key-str32-huge', s, b'\x94\x00\x07' + enc(meth) + b'\x91\x81\xdb\x10\x00\x00\x00',
      'too_large', at_once=True)
    # ---- nesting
    inner = b'\x94\x00\x07' + enc(meth) + b'\x91\x81\xa1a'     # the map is level 3
    E('depth-8', s, inner + b'\x91' * 4 + b'\x90', 'bad_request')   # unknown key 'a'
    F('depth-9-arrays', s, inner + b'\x91' * 5 + b'\x90', 'too_large')
    F('depth-9-maps', s, inner + b'\x81\xa1a' * 5 + b'\x80', 'too_large')
    F('depth-1000-arrays', s, inner + b'\x91' * 999 + b'\x90', 'too_large', at_once=True)
    F('depth-bomb-100000', s, b'\x94\x00\x07' + enc(meth) + b'\x91' * 100000, 'too_large',
      at_once=True)
    # ---- method and params shapes: bad_request for the msgid, connection kept
    E('method-int', s, enc([0, 7, 5, []]), 'bad_request')
    E('method-nil', s, enc([0, 7, None, []]), 'bad_request')
    E('method-bin', s, enc([0, 7, rbin(meth.encode()), []]), 'bad_request')
    E('method-invalid-utf8', s, enc([0, 7, rstr(meth.encode() + b'\xff'), []]), 'bad_request')
    E('method-fixext', s, enc([0, 7, ext(3, b'ping'), []]), 'bad_request')
    E('method-array', s, enc([0, 7, [meth], []]), 'bad_request')
    E('method-with-nul', s, enc([0, 7, meth + '\x00', []]), 'unknown_method')
    E('method-empty', s, enc([0, 7, '', []]), 'unknown_method')
    E('method-case', s, enc([0, 7, meth.upper(), []]), 'unknown_method')
    E('method-10k', s, enc([0, 7, 'm' * 10000, []]), 'unknown_method')
    E('params-map', s, enc([0, 7, meth, {}]), 'bad_request')
    E('params-nil', s, enc([0, 7, meth, None]), 'bad_request')
    E('params-str', s, enc([0, 7, meth, 'x']), 'bad_request')
    E('params-int-element', s, enc([0, 7, meth, [1]]), 'bad_request')
    E('params-two-maps', s, enc([0, 7, meth, [{}, {}]]), 'bad_request')
    E('params-array-element', s, enc([0, 7, meth, [[]]]), 'bad_request')
    E('params-fixext-element', s, enc([0, 7, meth, [ext(1, b'\x00')]]), 'bad_request')
    E('params-ext8-element', s, enc([0, 7, meth, [Raw(b'\xc7\x03\x05abc')]]), 'bad_request')
    E('key-int', s, req(7, meth, Pairs([(1, 2)])), 'bad_request')
    E('key-nil', s, req(7, meth, Pairs([(None, 2)])), 'bad_request')
    E('key-bin', s, req(7, meth, Pairs([(rbin(b'k'), 2)])), 'bad_request')
    E('key-invalid-utf8', s, req(7, meth, Pairs([(rstr(b'k\xfe'), 2)])), 'bad_request')
    E('key-empty', s, req(7, meth, {'': 1}), 'bad_request')
    E('key-token', s, R(meth, {'token': TOKEN}), 'bad_request')

# ---- message size: 64 KiB on TCP, 1 MiB on the admin socket


def padded(method, msgid, total):
    """[0, msgid, method, [{"pad": "xxx"}]] exactly total bytes (bad_request
    for the unknown key once it passes framing)."""
    head = b'\x94' + enc(0) + enc(msgid) + enc(method) + b'\x91\x81' + enc('pad')
    n = total - len(head) - 5
    return head + b'\xdb' + struct.pack('>I', n) + b'x' * n


E('size-64KiB', TCP, padded('ping', 7, 64 * 1024), 'bad_request')
F('size-64KiB+1', TCP, padded('ping', 7, 64 * 1024 + 1), 'too_large')
F('size-100KiB', TCP, padded('ping', 7, 100 * 1024), 'too_large', at_once=True)
E('size-100KiB', ADM, padded('status', 7, 100 * 1024), 'bad_request')
E('size-1MiB', ADM, padded('status', 7, MIB), 'bad_request')
F('size-1MiB+1', ADM, padded('status', 7, MIB + 1), 'too_large')
F('size-2MiB', ADM, padded('status', 7, 2 * MIB), 'too_large', at_once=True)
# many small strings: no single declared length is over the limit
F('size-small-pieces', TCP, b'\x94\x00\x07\xa4ping\x91\xde\x00\x09' + b''.join(
    enc(f'k{i}') + b'\xda\x20\x00' + b'y' * 8192 for i in range(9)), 'too_large')

# ---- TCP: duplicate keys (raw bytes)
E('dup-register-vm_id', TCP, req(7, 'register', Pairs([
    ('vm_id', 'dv1'), ('vm_id', 'dv1'), ('password', PASSWORD), ('ram', 1), ('cpu', 1)])),
  'bad_request')
E('dup-auth-password', TCP, req(7, 'auth', Pairs([
    ('vm_id', 'hvm'), ('password', 'x' * 8), ('password', PASSWORD)])), 'bad_request')
E('dup-update-ram', TCP, R('vm.update', Pairs([('token', TOKEN), ('ram', 2), ('ram', 2)])),
  'bad_request')
E('dup-token', TCP, R('vm.get', Pairs([('token', TOKEN), ('token', TOKEN)])), 'bad_request')
E('dup-disk-size', TCP, R('vm.update', {'token': TOKEN, 'disks': [
    Pairs([('id', 'hd1'), ('size', 1), ('size', 2)])]}), 'bad_request')
E('dup-list-filter', TCP, R('vm.list', Pairs([('token', TOKEN), ('filter', 'all'),
                                              ('filter', 'connected')])), 'bad_request')
E('dup-disk-ids', TCP, R('vm.update', {'token': TOKEN, 'disks': [
    {'id': 'hd1', 'size': 1}, {'id': 'hd1', 'size': 2}]}), 'bad_request')
E('dup-admin-vm_id', ADM, req(7, 'vm.get', Pairs([('vm_id', 'hvm'), ('vm_id', 'hvm')])),
  'bad_request')

# ---- invalid UTF-8 in values and keys
for name, b in (('overlong-nul', b'a\xc0\x80'), ('surrogate', b'a\xed\xa0\x80'),
                ('truncated', b'a\xe2\x82'), ('over-10ffff', b'a\xf4\x90\x80\x80'),
                ('lone-continuation', b'a\x80'), ('five-byte', b'a\xf8\x88\x80\x80\x80'),
                ('ff', b'a\xff')):
    E(f'utf8-vm_id-{name}', TCP, req(7, 'auth', {'vm_id': rstr(b), 'password': PASSWORD}),
      'bad_request')
    E(f'utf8-key-{name}', TCP, R('vm.get', Pairs([('token', TOKEN), (rstr(b), 1)])),
      'bad_request')
E('utf8-password', TCP, req(7, 'register', {'vm_id': 'uv1', 'password': rstr(b'pass\xffword'),
                                            'ram': 1, 'cpu': 1}), 'bad_request')
E('utf8-filter', TCP, R('vm.list', {'token': TOKEN, 'filter': rstr(b'al\xc3')}), 'bad_request')
E('utf8-disk-id', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'id': rstr(b'd\xed\xbf\xbf'),
                                                                  'size': 1}]}), 'bad_request')
E('utf8-admin-vm_id', ADM, req(7, 'vm.get', {'vm_id': rstr(b'h\xc0\xafvm')}), 'bad_request')
E('utf8-admin-key', ADM, req(7, 'status', Pairs([(rstr(b'\xe0\x80\x80'), 1)])), 'bad_request')
E('non-ascii-vm_id', TCP, req(7, 'auth', {'vm_id': 'vmé', 'password': PASSWORD}), 'bad_request')

# ---- ext and float where values are expected
E('ext8-vm_id', TCP, req(7, 'auth', {'vm_id': Raw(b'\xc7\x03\x01hvm'), 'password': PASSWORD}),
  'bad_request')
E('fixext16-disks', TCP, R('vm.update', {'token': TOKEN, 'disks': ext(2, b'\x00' * 16)}),
  'bad_request')
E('timestamp-limit', TCP, R('vm.list', {'token': TOKEN, 'filter': 'all',
                                        'limit': ext(-1, b'\x00\x00\x00\x01')}), 'bad_request')
E('fixext8-token', TCP, lambda ctx: req(7, 'vm.get', {'token': ext(5, b'\x00' * 8)}),
  'bad_request')
E('fixext2-disk', TCP, R('vm.update', {'token': TOKEN, 'disks': [ext(1, b'\x00\x01')]}),
  'bad_request')
E('f32-nan-size', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'id': 'hd1',
                                                                  'size': f32(float('nan'))}]}),
  'bad_request')
E('f64-inf-ram', TCP, R('vm.update', {'token': TOKEN, 'ram': f64(float('inf'))}), 'bad_request')
E('f64-limit', TCP, R('vm.list', {'token': TOKEN, 'filter': 'all', 'limit': f64(10.0)}),
  'bad_request')
E('ext8-admin-limit', ADM, req(7, 'vm.list', {'filter': 'all', 'limit': Raw(b'\xc7\x01\x01\x05')}),
  'bad_request')
E('f32-admin-conn-id', ADM, req(7, 'conn.kill', {'id': f32(1.0)}), 'bad_request')

# ---- integers at and past their ranges
U64MAX, I64MIN = 2 ** 64 - 1, -2 ** 63
for name, v, code in (('u64max', u64(U64MAX), 'bad_request'), ('neg1', -1, 'bad_request'),
                      ('i64min', i64(I64MIN), 'bad_request'), ('zero', 0, 'bad_request'),
                      ('2^32', 2 ** 32, 'bad_request'), ('2^32-1', 2 ** 32 - 1, None)):
    (E if code else OK)(f'ram-{name}', TCP, R('vm.update', {'token': TOKEN, 'ram': v}),
                        *((code,) if code else ()))
for name, v, code in (('1025', 1025, 'bad_request'), ('0', 0, 'bad_request'), ('1024', 1024, None),
                      ('neg-i8', Raw(b'\xd0\xff'), 'bad_request')):
    (E if code else OK)(f'cpu-{name}', TCP, R('vm.update', {'token': TOKEN, 'cpu': v}),
                        *((code,) if code else ()))
for name, v, code in (('2^40', 2 ** 40, None), ('2^40+1', 2 ** 40 + 1, 'bad_request'),
                      ('0', 0, 'bad_request'), ('u64max', u64(U64MAX), 'bad_request')):
    (E if code else OK)(f'disk-size-{name}', TCP, R('vm.update', {
        'token': TOKEN, 'disks': [{'id': 'hd1', 'size': v}]}), *((code,) if code else ()))
for name, v, code in (('0', 0, 'bad_request'), ('10001', 10001, 'bad_request'),
                      ('10000', 10000, None), ('u64max', u64(U64MAX), 'bad_request'),
                      ('i64min', i64(I64MIN), 'bad_request')):
    (E if code else OK)(f'limit-{name}', TCP, R('vm.list', {'token': TOKEN, 'filter': 'all',
                                                            'limit': v}),
                        *((code,) if code else ()))
E('admin-conn-kill-neg', ADM, req(7, 'conn.kill', {'id': -1}), 'bad_request')
E('admin-conn-kill-str', ADM, req(7, 'conn.kill', {'id': '1'}), 'bad_request')
E('admin-limit-0', ADM, req(7, 'disk.list', {'limit': 0}), 'bad_request')
E('admin-limit-u64max', ADM, req(7, 'conn.list', {'limit': u64(U64MAX)}), 'bad_request')

# ---- ids at and past their limits, disks per VM
OK('vm_id-48', TCP, req(7, 'register', {'vm_id': 'v' * 48, 'password': PASSWORD, 'ram': 1,
                                        'cpu': 1}))
E('vm_id-49', TCP, req(7, 'register', {'vm_id': 'v' * 49, 'password': PASSWORD, 'ram': 1,
                                       'cpu': 1}), 'bad_request')
E('vm_id-49-auth', TCP, req(7, 'auth', {'vm_id': 'v' * 49, 'password': PASSWORD}), 'bad_request')
for name, v in (('empty', ''), ('dot-first', '.x'), ('dash-first', '-x'), ('space', 'a b'),
                ('slash', 'a/b'), ('nul', 'a\x00b')):
    E(f'vm_id-{name}', TCP, req(7, 'register', {'vm_id': v, 'password': PASSWORD, 'ram': 1,
                                                'cpu': 1}), 'bad_request')
OK('disk-id-64', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'id': 'd' * 64, 'size': 1}]}))
E('disk-id-65', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'id': 'd' * 65, 'size': 1}]}),
  'bad_request')
E('disk-id-underscore-first', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'id': '_d',
                                                                             'size': 1}]}),
  'bad_request')
E('disk-missing-size', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'id': 'hd1'}]}),
  'bad_request')
E('disk-unknown-key', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'id': 'hd1', 'size': 1,
                                                                      'vm_id': 'hvm'}]}),
  'bad_request')
OK('disks-64', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'id': f'h{i:02d}'.ljust(64, 'z'),
                                                               'size': 2 ** 40}
                                                              for i in range(64)]}))
E('disks-65', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'id': f'h{i:02d}', 'size': 1}
                                                             for i in range(65)]}), 'too_large')
E('disks-1000', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'size': 1}] * 1000}),
  'too_large')
E('disks-65-bad-first', TCP, R('vm.update', {'token': TOKEN, 'disks': [{'size': 0}] * 65}),
  'bad_request')   # bad_request comes first in the precedence table
OK('disks-empty', TCP, R('vm.update', {'token': TOKEN, 'disks': []}))
E('update-nothing', TCP, R('vm.update', {'token': TOKEN}), 'bad_request')
E('password-5', TCP, req(7, 'auth', {'vm_id': 'hvm', 'password': 'x' * 5}), 'bad_request')
E('password-1025', TCP, req(7, 'register', {'vm_id': 'pv1', 'password': 'x' * 1025, 'ram': 1,
                                            'cpu': 1}), 'bad_request')
E('admin-password-5', ADM, req(7, 'vm.create', {'vm_id': 'pv2', 'password': 'x' * 5}),
  'bad_request')

# ---- tokens and sockets
E('token-42-chars', TCP, req(7, 'vm.get', {'token': 'A' * 42}), 'bad_request')
E('token-bad-chars', TCP, req(7, 'vm.get', {'token': '+' * 43}), 'bad_request')
E('token-unknown', TCP, req(7, 'vm.get', {'token': 'A' * 43}), 'unauthenticated')
E('token-on-ping', TCP, R('ping', {'token': TOKEN}), 'bad_request')
E('anonymous-vm.get', TCP, req(7, 'vm.get'), 'unauthenticated')
E('admin-method-on-tcp', TCP, req(7, 'status'), 'unknown_method')
E('shutdown-on-tcp', TCP, req(7, 'shutdown'), 'unknown_method')
E('client-method-on-admin', ADM, req(7, 'register', {'vm_id': 'x'}), 'unknown_method')
E('admin-token', ADM, R('vm.get', {'vm_id': 'hvm', 'token': TOKEN}), 'bad_request')
E('admin-backup-without-fd', ADM, req(7, 'backup'), 'bad_request')
E('admin-vm.get-49', ADM, req(7, 'vm.get', {'vm_id': 'v' * 49}), 'bad_request')
E('admin-vm.get-missing', ADM, req(7, 'vm.get', {}), 'bad_request')
E('admin-vm.delete-nil', ADM, req(7, 'vm.delete', {'vm_id': None}), 'bad_request')
E('admin-filter-unknown', ADM, req(7, 'vm.list', {'filter': 'everything'}), 'bad_request')
E('tcp-filter-missing', TCP, R('vm.list', {'token': TOKEN}), 'bad_request')

# ---- error precedence (issue 9): shape errors that need no schema come
# before unknown_method, on both sockets, also for a method that exists only
# on the other socket
for s, other in ((TCP, 'status'), (ADM, 'register')):
    for m in ('no.such', other):
        E(f'precedence-{m}-dup-key', s, req(7, m, Pairs([('a', 1), ('a', 1)])), 'bad_request')
        E(f'precedence-{m}-nested-dup-key', s,
          req(7, m, {'a': [Pairs([('b', 1), ('b', 2)])]}), 'bad_request')
        E(f'precedence-{m}-invalid-utf8-value', s, req(7, m, {'a': rstr(b'x\xff')}),
          'bad_request')
        E(f'precedence-{m}-invalid-utf8-key', s, req(7, m, Pairs([(rstr(b'k\xc0\x80'), 1)])),
          'bad_request')
        E(f'precedence-{m}-bin-value', s, req(7, m, {'a': rbin(b'abc')}), 'bad_request')
        E(f'precedence-{m}-int-key', s, req(7, m, Pairs([(1, 2)])), 'bad_request')
        E(f'precedence-{m}-params-map', s, enc([0, 7, m, {}]), 'bad_request')
        E(f'precedence-{m}-two-maps', s, enc([0, 7, m, [{}, {}]]), 'bad_request')
        E(f'precedence-{m}-clean', s, req(7, m, {'a': 1}), 'unknown_method')

# ---- trusted proxies (issue 10): "peer" only from a listed address, and
# only where a login is counted; nothing is hashed for a refused one
E('peer-untrusted-auth', TCP, req(7, 'auth', {'vm_id': 'hvm', 'password': PASSWORD,
                                             'peer': '192.0.2.1'}), 'forbidden')
E('peer-untrusted-register', TCP, req(7, 'register', {'vm_id': 'pr1', 'password': PASSWORD,
                                                     'ram': 1, 'cpu': 1,
                                                     'peer': '192.0.2.1'}), 'forbidden')
E('peer-untrusted-resume', TCP, req(7, 'resume', {'token': 'A' * 43, 'peer': '::1'}),
  'forbidden')
# a malformed value is bad_request, which comes before forbidden
E('peer-untrusted-garbage', TCP, req(7, 'auth', {'vm_id': 'hvm', 'password': PASSWORD,
                                                'peer': 'not an address'}), 'bad_request')
E('peer-on-ping', TCP, req(7, 'ping', {'peer': '192.0.2.1'}), 'bad_request')
E('peer-on-vm.get', TCP, R('vm.get', {'token': TOKEN, 'peer': '192.0.2.1'}), 'bad_request')
E('peer-int', TCP, req(7, 'auth', {'vm_id': 'hvm', 'password': PASSWORD, 'peer': 5}),
  'bad_request')
E('peer-on-admin', ADM, req(7, 'vm.get', {'vm_id': 'hvm', 'peer': '192.0.2.1'}), 'bad_request')


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """One daemon for the catalogue, a healthy client on each socket, and a
    token of the VM 'hvm'."""
    d = vmmtest.Daemon(tmp_path_factory.mktemp('hostile'))
    healthy = None
    adm = None
    try:
        healthy = d.login('hvm', disks=[{'id': 'hd1', 'size': 1}])
        with d.client() as c:
            token = c.auth('hvm')['token']
        adm = Admin(d.admin_socket)
        yield {'d': d, 'healthy': healthy, 'admin': adm, 'token': token}
        assert healthy.is_open(), 'the healthy TCP client was disconnected'
        assert adm.is_open(), 'the healthy admin client was disconnected'
    finally:
        for c in (healthy, adm):
            if c is not None:
                c.close()
        try:
            d.stop()
        except AssertionError:
            print(d.log_text())
            raise
        finally:
            d.cleanup()


def connect(env, sock, **kw):
    d = env['d']
    if sock == TCP:
        c = d.client(**kw)
    else:
        c = Admin(d.admin_socket, **kw)
    return c


def check_healthy(env):
    """Both healthy connections still get answers."""
    assert env['healthy'].ok('ping', timeout=5)['pong'] is True
    assert env['admin'].ok('status', timeout=5)['protocol'] == 1


# ---------------------------------------------------------------- the table

@pytest.mark.parametrize('sock,data,expect,code,msgid,at_once', CASES)
def test_case(env, sock, data, expect, code, msgid, at_once):
    if callable(data):
        data = data(env)
    c = connect(env, sock)
    try:
        t0 = time.monotonic()
        if expect == 'framing':
            c.send_raw_tolerant(data)
            expect_framing_close(c, code, timeout=AT_ONCE if at_once else 10)
            if at_once:
                assert time.monotonic() - t0 < AT_ONCE
        else:
            c.send_raw(data)
            if expect == 'silent':
                with pytest.raises(socket.timeout):
                    msg = c.read(timeout=0.3)
                    pytest.fail(f'an answer to a notification: {msg!r}')
            else:
                msg = c.read_response()
                assert msg[1] == msgid, f'response for msgid {msgid}: {msg!r}'
                err, res = c.split(msg)
                if expect == 'error':
                    assert err is not None, f'expected {code}, got success {res!r}'
                    assert err[0] == code, f'expected {code}, got {err}'
                else:
                    assert err is None, f'expected success, got {err}'
            assert c.is_open(), 'the connection is not usable after the case'
    finally:
        c.close()
    check_healthy(env)
    RAN['table'] += 1


def test_ignored_notification_changed_nothing(env):
    """The 'notification-register' rows must not have registered anything."""
    err, _ = env['admin'].call('vm.get', {'vm_id': 'nv2'})
    assert err is not None and err[0] == 'not_found', err
    RAN['other'] += 1


# ---------------------------------------------------------------- prefixes

def real_requests(env):
    """A real request per socket: a vm.update with disks (TCP, stateless
    token) and an admin vm.list."""
    tcp = req(1, 'vm.update', {'token': env['token'], 'ram': 4096, 'cpu': 2,
                               'disks': [{'id': 'hd1', 'size': 10}, {'size': 20}]})
    adm = req(1, 'vm.list', {'filter': 'all', 'limit': 5})
    return {TCP: tcp, ADM: adm}


@pytest.mark.parametrize('sock', [TCP, ADM])
def test_every_prefix_half_closed(env, sock):
    """Each proper prefix of a real request, then the socket half-closed: no
    answer to an incomplete message, and the server closes."""
    data = real_requests(env)[sock]
    for k in range(len(data)):
        c = connect(env, sock)
        try:
            c.send_raw(data[:k])
            c.sock.shutdown(socket.SHUT_WR)
            closed, msgs = c.wait_closed(5)
            assert closed, f'prefix {k}/{len(data)}: the server did not close'
            assert msgs == [], f'prefix {k}/{len(data)}: answered {msgs!r}'
        finally:
            c.close()
        RAN['prefix'] += 1
    check_healthy(env)


@pytest.mark.parametrize('sock', [TCP, ADM])
def test_every_prefix_completed_later(env, sock):
    """Each prefix, a pause, then the rest in a second write: answered."""
    data = real_requests(env)[sock]
    c = connect(env, sock)
    try:
        if sock == TCP:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for k in range(1, len(data)):
            c.send_raw(data[:k])
            time.sleep(0.003)
            c.send_raw(data[k:])
            msg = c.read_response()
            assert msg[1] == 1 and msg[2] is None, f'split at {k}: {msg!r}'
            RAN['prefix'] += 1
    finally:
        c.close()
    check_healthy(env)


# ---------------------------------------------------------------- slow and deaf clients

@pytest.mark.parametrize('sock', [TCP, ADM])
def test_one_byte_at_a_time(env, sock):
    """A real request trickled one byte per write over about 2 s is answered;
    everyone else is served meanwhile."""
    data = real_requests(env)[sock]
    c = connect(env, sock)
    try:
        if sock == TCP:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pause = 2.0 / len(data)
        t0 = time.monotonic()
        for i in range(len(data)):
            c.send_raw(data[i:i + 1])
            if i % 16 == 0:
                check_healthy(env)
            time.sleep(pause)
        msg = c.read_response()
        assert msg[1] == 1 and msg[2] is None, msg
        assert time.monotonic() - t0 < 10
        assert c.is_open()
    finally:
        c.close()
    RAN['other'] += 1


@pytest.mark.parametrize('sock', [TCP, ADM])
def test_sender_that_never_reads(env, sock):
    """Pipelined vm.list requests, replies never read (bounded: 15 s, 64 MiB
    sent): the daemon stops reading it, keeps serving the others, and its
    memory stays bounded."""
    d = env['d']
    c = connect(env, sock)
    if sock == TCP:
        one = req(0, 'vm.list', {'token': env['token'], 'filter': 'all'})
    else:
        one = req(0, 'vm.list', {'filter': 'all'})
    batch = one * 200
    rss0 = rss_kib(d.pid)
    sent = 0
    stalled = None
    t0 = time.monotonic()
    try:
        c.sock.setblocking(False)
        while True:
            try:
                sent += c.sock.send(batch)
                stalled = None
            except BlockingIOError:
                stalled = stalled or time.monotonic()
                check_healthy(env)
                if time.monotonic() - stalled > 1.0:
                    break
                time.sleep(0.05)
            assert sent < 64 * MIB, f'vmmd read {sent} bytes from a client that never reads'
            assert time.monotonic() - t0 < 15, f'vmmd kept reading for 15 s ({sent} bytes)'
        growth = (rss_kib(d.pid) - rss0) / 1024
        print(f'{sock} non-reader: {sent} bytes sent before vmmd stopped reading; '
              f'RSS +{growth:.1f} MiB')
        assert growth < 64 or sanitized(d.pid), f'RSS grew by {growth:.1f} MiB'
        check_healthy(env)
    finally:
        c.close()
    check_healthy(env)
    RAN['other'] += 1


def test_wide_params_map_costs_little(env):
    """A params map of 12,000 distinct keys (60 KB, under the 64 KiB limit),
    ten times pipelined by an anonymous client, costs the daemon a fraction
    of a second in all (0.25 s: parsing 600 KB takes milliseconds), and a
    healthy client is served meanwhile."""
    import itertools
    import string
    keys = [''.join(p) for p in itertools.product(string.ascii_letters, repeat=3)][:12000]
    one = req(7, 'no.such', Pairs([(k, None) for k in keys]))
    assert len(one) < 64 * 1024
    c = connect(env, TCP, timeout=60)
    try:
        t0 = time.monotonic()
        c.send_raw(one * 10)
        for _ in range(10):
            msg = c.read_response(timeout=60)
            assert msg[1] == 7 and msg[2] is not None, msg
        took = time.monotonic() - t0
        print(f'10 requests with 12,000-key maps: {took:.2f} s')
        check_healthy(env)
    finally:
        c.close()
    RAN['other'] += 1
    assert took < 0.25, f'10 requests with 12,000-key maps took {took:.2f} s of vmmd'


# ---------------------------------------------------------------- pages at 1 MiB

def test_pages_at_the_1mib_cap(make_daemon):
    """VMs with 64 disks of 64-byte ids and 48-byte vm ids make each record
    about 5.6 KB, so about 190 of them fill a 1 MiB page (computed from the
    first record). vm.list and disk.list with limit 10000 must then end the
    page before 1 MiB, set next, and the pages together return everything
    exactly once — on both sockets."""
    d = make_daemon()
    big = 2 ** 40

    def vm_params(i):
        vm_id = f'{i:04d}'.ljust(48, 'v')
        return {'vm_id': vm_id, 'password': PASSWORD, 'ram': 2 ** 32 - 1, 'cpu': 1024,
                'disks': [{'id': f'{i:04d}-{j:02d}'.ljust(64, 'd'), 'size': big}
                          for j in range(64)]}
    with d.client() as c:
        c.ok('register', vm_params(0))
        with Admin(d.admin_socket) as a:
            a.send('vm.get', {'vm_id': vm_params(0)['vm_id']})
            rec, rec_size = read_sized(a)
            assert rec[2] is None, rec
        need = MIB // (rec_size - 40) + 3
        print(f'VM record {rec_size} bytes: registering {need} VMs')
        assert need < 400
        batch = 24
        for start in range(1, need, batch):
            res = c.pipeline([('register', vm_params(i))
                              for i in range(start, min(need, start + batch))], timeout=60)
            assert all(e is None for e, _ in res), res
    total_vms, total_disks = need, need * 64
    clients = [('tcp', d.login(vm_params(0)['vm_id'], register=False)),
               ('admin', Admin(d.admin_socket))]
    try:
        for name, c in clients:
            for method, key, idkey, total, params in (
                    ('vm.list', 'vms', 'vm_id', total_vms, {'filter': 'all', 'limit': 10000}),
                    ('disk.list', 'disks', 'id', total_disks, {'limit': 10000})):
                c.send(method, params)
                msg, size = read_sized(c, timeout=30)
                err, res = c.split(msg)
                assert err is None, err
                items = res[key]
                print(f'{name} {method}: first page {len(items)} items, {size} bytes')
                assert size <= MIB, f'{method} page of {size} bytes passes 1 MiB'
                assert len(items) < min(total, 10000), f'{method} page not cut by its size'
                assert res['next'] == items[-1][idkey], res['next']
                # the page was full: the next item would not have fit
                nxt = c.ok(method, dict(params, limit=1, after=res['next']))[key][0]
                item_size = len(vmmtest.pack(nxt))
                assert size + item_size > MIB - 64, \
                    f'{method}: page of {size} bytes ended early (next item {item_size} bytes)'
                allitems, pages = list_all(c, method, filter=params.get('filter'), limit=10000)
                got = [x[idkey] for x in allitems]
                assert len(got) == total and len(set(got)) == total and got == sorted(got)
                assert pages >= 2
    finally:
        for _, c in clients:
            c.close()
    RAN['other'] += 1


# ---------------------------------------------------------------- summary

def test_zz_count(capsys):
    """Runs last (file order): how many hostile inputs were tried."""
    n = sum(RAN.values())
    with capsys.disabled():
        print(f'\nhostile inputs: {RAN["table"]} catalogue cases of {len(CASES)} '
              f'({sum(1 for p in CASES if p.values[0] == TCP)} TCP, '
              f'{sum(1 for p in CASES if p.values[0] == ADM)} admin), '
              f'{RAN["prefix"]} prefix cases, {RAN["other"]} other; {n} in all')
    assert len(CASES) >= 60
    assert n > 0
