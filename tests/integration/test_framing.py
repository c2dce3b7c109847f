# SPDX-License-Identifier: MIT
"""Framing over TCP (PROTOCOL.md, "Framing errors"): bytes that are not
MessagePack, messages that are not requests, size and depth limits. Each
gets one msgid-0 error, then the server closes; requests before the bad
bytes are answered in order, nothing after them runs, and other connections
are not disturbed."""

import struct
import time

import pytest

from vmmtest import (PASSWORD, assert_error_frame, expect_framing_close, nested_arrays, pack,
                     request_bytes)


def check_served(daemon):
    with daemon.client() as c:
        assert c.ok('ping')['pong'] is True


def test_garbage_byte(daemon):
    with daemon.client() as c:
        c.send_raw(b'\xc1')
        expect_framing_close(c, 'bad_request')
    check_served(daemon)


def test_garbage_after_valid_message(daemon):
    with daemon.client() as c:
        c.send_raw(request_bytes(1, 'ping') + b'\xc1')
        msg = c.read_response()
        assert msg[1] == 1 and msg[2] is None
        expect_framing_close(c, 'bad_request')


@pytest.mark.parametrize('obj', [
    {'a': 1},
    [0, 1, 'ping'],
    [0, 1, 'ping', [], 5],
    [0, -1, 'ping', []],
    [0, 2 ** 32, 'ping', []],
    [0, '1', 'ping', []],
    [0, 1.0, 'ping', []],
    [0, None, 'ping', []],
    [1, 1, 'ping', []],
    [3, 1, 'ping', []],
    [-1, 1, 'ping', []],
    ['0', 1, 'ping', []],
    [],
    5,
    'ping',
], ids=['map', 'three', 'five', 'msgid_neg', 'msgid_2_32', 'msgid_str', 'msgid_float',
        'msgid_nil', 'type_response', 'type_3', 'type_neg', 'type_str',
        'empty', 'int', 'str'])
def test_not_a_request(daemon, obj):
    with daemon.client() as c:
        c.send_raw(pack(obj))
        expect_framing_close(c, 'bad_request')
    check_served(daemon)


def test_msgid_range(daemon):
    with daemon.client() as c:
        for msgid in (2 ** 32 - 1, 0, 1, 2 ** 31):
            c.send_raw(request_bytes(msgid, 'ping'))
            msg = c.read_response()
            assert msg[1] == msgid and msg[2] is None, msg


def test_client_notification_ignored(daemon):
    with daemon.client() as c:
        c.send_raw(pack([2, 'x', []]) + pack([2, 'ping', []]) + request_bytes(5, 'ping'))
        msg = c.read_response()
        assert msg[1] == 5 and msg[2] is None, msg
        assert c.is_open()


def test_split_writes(daemon):
    with daemon.client() as c:
        data = request_bytes(1, 'ping') + request_bytes(2, 'register', {
            'vm_id': 'vm1', 'password': PASSWORD, 'ram': 1, 'cpu': 1,
            'disks': [{'id': 'd1', 'size': 1}]})
        for i in range(len(data)):
            c.send_raw(data[i:i + 1])
            time.sleep(0.002)
        m1 = c.read_response()
        m2 = c.read_response()
        assert m1[1] == 1 and m1[2] is None
        assert m2[1] == 2 and m2[2] is None and m2[3]['vm_id'] == 'vm1'


def test_many_messages_one_write(daemon):
    with daemon.client() as c:
        c.send_raw(b''.join(request_bytes(i, 'ping') for i in range(1, 501)))
        for i in range(1, 501):
            msg = c.read_response()
            assert msg[1] == i and msg[2] is None


def test_pipelined_then_garbage_then_request(daemon):
    with daemon.client() as c:
        data = b''.join(request_bytes(i, 'ping') for i in (1, 2, 3))
        data += request_bytes(4, 'register', {'vm_id': 'before', 'password': PASSWORD,
                                              'ram': 1, 'cpu': 1})
        data += b'\xc1'
        data += request_bytes(5, 'register', {'vm_id': 'after', 'password': PASSWORD,
                                              'ram': 1, 'cpu': 1})
        data += request_bytes(6, 'ping')
        c.send_raw(data)
        for i in (1, 2, 3, 4):
            msg = c.read_response()
            assert msg[1] == i and msg[2] is None, msg
        expect_framing_close(c, 'bad_request')
    with daemon.client() as o:
        # 'before' ran, 'after' did not
        o.err('register', {'vm_id': 'before', 'password': PASSWORD, 'ram': 1, 'cpu': 1},
              'exists')
        o.register('after')


def test_other_connections_keep_being_served(daemon):
    with daemon.client() as a, daemon.client() as b:
        a.register('vm1')
        a.auth('vm1')
        b.send_raw(b'\xc1\xc1\xc1')
        expect_framing_close(b, 'bad_request')
        assert a.ok('vm.get')['vm_id'] == 'vm1'


def ping_with_pad(msgid, total):
    """A ping [0, msgid, "ping", [{"pad": "xxx..."}]] exactly total bytes long
    (bad_request for the unknown key once it passes framing)."""
    head = b'\x94' + pack(0) + pack(msgid) + pack('ping') + b'\x91\x81' + pack('pad')
    n = total - len(head) - 5
    body = b'\xdb' + struct.pack('>I', n) + b'x' * n
    data = head + body
    assert len(data) == total
    return data


def test_message_at_size_limit(daemon):
    c = daemon.login('vm1')
    err, _ = c.call_raw(ping_with_pad(77, 65536), 77)
    assert err and err[0] == 'bad_request', err
    assert c.is_open()
    c.close()


def test_message_over_size_limit(daemon):
    c = daemon.login('vm1')
    c.send_raw_tolerant(ping_with_pad(77, 65537))
    expect_framing_close(c, 'too_large')
    c.close()
    check_served(daemon)


def test_message_over_size_limit_anonymous(daemon):
    with daemon.client() as c:
        c.send_raw_tolerant(request_bytes(1, 'ping') + ping_with_pad(2, 70000))
        msg = c.read_response()
        assert msg[1] == 1 and msg[2] is None
        expect_framing_close(c, 'too_large')


def test_big_message_in_small_pieces(daemon):
    """Over the limit without any declared length over it: 8 KiB strings."""
    c = daemon.login('vm1')
    pairs = b''.join(pack(f'k{i}') + b'\xda\x20\x00' + b'y' * 8192 for i in range(9))
    data = b'\x94' + pack(0) + pack(1) + pack('ping') + b'\x91\x89' + pairs
    assert len(data) > 65536
    c.send_raw_tolerant(data)
    expect_framing_close(c, 'too_large')
    c.close()


@pytest.mark.parametrize('bomb', [
    b'\x94\x00\x01\xa4ping\x91\x81\xa1x\xdd\x00\x40\x00\x00',
    b'\x94\x00\x01\xa4ping\x91\x81\xa1x\xdf\x7f\xff\xff\xff',
    b'\x94\x00\x01\xa4ping\x91\x81\xa1x\xdb\x40\x00\x00\x00',
    b'\x94\x00\x01\xa4ping\x91\x81\xa1x\xc6\x00\x10\x00\x00',
    b'\xdd\x00\x40\x00\x00',
], ids=['array32_inner', 'map32_inner', 'str32_inner', 'bin32_inner', 'array32_top'])
def test_declared_length_bomb(daemon, bomb):
    """A header declaring more than the limit is refused at once, without
    waiting for the bytes (the idle timeout is 30 s)."""
    with daemon.client() as c:
        t0 = time.monotonic()
        c.send_raw(bomb)
        expect_framing_close(c, 'too_large', timeout=5)
        assert time.monotonic() - t0 < 5
    check_served(daemon)


def deep_request(levels_inside_map):
    """[0, 1, "ping", [{"a": X}]] where X is that many nested arrays; the
    request array is level 1, params 2, the map 3, X starts at 4."""
    return pack([0, 1, 'ping', [{'a': nested_arrays(levels_inside_map)}]])


def test_depth_8_passes_framing(daemon):
    with daemon.client() as c:
        err, _ = c.call_raw(deep_request(5), 1)   # deepest container at level 8
        assert err and err[0] == 'bad_request', err   # unknown key 'a'
        assert c.is_open()


def test_depth_9_too_large(daemon):
    with daemon.client() as c:
        c.send_raw(request_bytes(1, 'ping') + deep_request(6))
        msg = c.read_response()
        assert msg[1] == 1 and msg[2] is None
        expect_framing_close(c, 'too_large')


def test_depth_9_maps(daemon):
    obj = {}
    for _ in range(5):           # {"a": {"a": ... }} : maps at levels 4..9
        obj = {'a': obj}
    with daemon.client() as c:
        c.send_raw(pack([0, 1, 'ping', [{'a': obj}]]))
        expect_framing_close(c, 'too_large')


def test_depth_bomb(daemon):
    with daemon.client() as c:
        c.send_raw(b'\x94\x00\x01\xa4ping' + b'\x91' * 100000)
        expect_framing_close(c, 'too_large')
    check_served(daemon)


def test_framing_error_response_shape(daemon):
    with daemon.client() as c:
        c.send_raw(b'\xc1')
        closed, msgs = c.wait_closed(5)
        assert closed and len(msgs) == 1
        assert_error_frame(msgs[0], 'bad_request')
        assert msgs[0][2]['message']


def test_framing_error_after_slow_request(daemon):
    """A register waiting for the hash workers is still answered before the
    framing error that follows it."""
    with daemon.client() as c:
        c.send_raw(request_bytes(1, 'register', {'vm_id': 'vm1', 'password': PASSWORD,
                                                 'ram': 1, 'cpu': 1}) + b'\xc1')
        msg = c.read_response()
        assert msg[1] == 1 and msg[2] is None, msg
        expect_framing_close(c, 'bad_request')
    with daemon.client() as o:
        o.auth('vm1')


def test_framing_error_on_attached_connection(daemon):
    c = daemon.login('vm1')
    token = c.token
    c.send_raw(b'\x94\x00\x01\xa4ping\xc1')
    expect_framing_close(c, 'bad_request')
    c.close()
    with daemon.client() as o:
        # the session survives its connection's framing error
        assert o.ok('resume', {'token': token})['vm_id'] == 'vm1'


def test_declared_map_filled_past_limit(daemon):
    """A map16 declaring 40000 entries, then bytes that keep coming: once the
    message passes 64 KiB it is too_large."""
    with daemon.client() as c:
        c.send_raw_tolerant(b'\x94\x00\x01\xa4ping\x91\xde\x9c\x40' + b'\x00' * 70000)
        expect_framing_close(c, 'too_large')


@pytest.mark.parametrize('msgid', [b'\xd4\x00\x01', b'\xcb' + b'\x3f\xf0' + b'\x00' * 6, b'\xc3'],
                         ids=['ext', 'float64', 'true'])
def test_msgid_wrong_type(daemon, msgid):
    with daemon.client() as c:
        c.send_raw(b'\x94\x00' + msgid + b'\xa4ping\x90')
        expect_framing_close(c, 'bad_request')
