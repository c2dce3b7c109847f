# SPDX-License-Identifier: MIT
"""Bookings (PROTOCOL.md part 2): booking.create/renew/cancel/get/list/history
with their errors, limits and precedence; two users racing for one VM (exactly
one wins, 100 rounds); booking by group (only free, active VMs, the one free
for longest); the renew cap (booking_max_hours); bookings_per_user; deleting
a VM or a user ends its bookings. Expiry in time is test_part2_expiry.py."""

import time

import pytest

import p2util
from p2util import LONG, admin, create_vms, tcp, watch
from vmmtest import now_ms

MIN = 60 * 1000
HOUR = 60 * MIN
MAX_HOURS = 2           # --booking-max-hours for this module
PER_USER = 3            # --bookings-per-user of test_bookings_per_user's daemon


@pytest.fixture(scope='module')
def d(tmp_path_factory):
    yield from p2util.shared_daemon(
        tmp_path_factory, ['--booking-max-hours', str(MAX_HOURS), '--registration', 'approval',
                           '--auth-failures-per-minute', '1000'], 'bookings')


@pytest.fixture(scope='module')
def people(d):
    return p2util.People(d, {'bk-alice': 'user', 'bk-bob': 'user', 'bk-viewer': 'viewer',
                             'bk-admin': 'admin'})


def check_booking(b, vm_id, user):
    assert set(b) >= {'vm_id', 'user', 'started_at', 'expires_at'}, b
    assert b['vm_id'] == vm_id and b['user'] == user, b
    return b


def test_create_get_list(d, people):
    with admin(d) as a:
        create_vms(a, ['bc-1', 'bc-2'])
    with people.conn('bk-alice') as c:
        t0 = now_ms()
        b = check_booking(c.ok('booking.create', {'vm_id': 'bc-1', 'minutes': 30}), 'bc-1',
                          'bk-alice')
        assert t0 - 2000 <= b['started_at'] <= now_ms() + 2000, b
        assert b['expires_at'] == b['started_at'] + 30 * MIN, 'not started_at + duration exactly'
        b2 = c.ok('booking.create', {'vm_id': 'bc-2', 'hours': 1})
        assert b2['expires_at'] == b2['started_at'] + HOUR, b2
        # seen everywhere
        assert c.ok('booking.get', {'vm_id': 'bc-1'}) == {'booking': b}
        rec = c.ok('vm.get', {'vm_id': 'bc-1'})
        assert rec['booking'] == {'user': 'bk-alice', 'started_at': b['started_at'],
                                  'expires_at': b['expires_at']}, rec
    with people.conn('bk-viewer') as v:
        assert v.ok('booking.get', {'vm_id': 'bc-1'}) == {'booking': b}
        got = v.ok('booking.list', {'user': 'bk-alice'})
        assert got['bookings'] == [b, b2] and got['next'] is None, got
        v.err('booking.get', {'vm_id': 'bc-none'}, 'not_found')
        v.err('booking.get', {}, 'bad_request')
    with admin(d) as a:
        assert a.ok('booking.get', {'vm_id': 'bc-1'}) == {'booking': b}
        # a VM never booked
        create_vms(a, ['bc-3'])
        assert a.ok('booking.get', {'vm_id': 'bc-3'}) == {'booking': None}
        assert a.ok('vm.get', {'vm_id': 'bc-3'})['booking'] is None
    # the VM itself sees its booking
    with admin(d) as a:
        a.ok('vm.passwd', {'vm_id': 'bc-1', 'password': p2util.PW}, timeout=LONG)
    with p2util.vm_login(d, 'bc-1') as vm:
        assert vm.ok('booking.get', {'vm_id': 'bc-1'}) == {'booking': b}
        assert vm.ok('vm.get')['booking']['user'] == 'bk-alice'
    with people.conn('bk-alice') as c:
        assert c.ok('booking.cancel', {'vm_id': 'bc-1'}) == {}
        assert c.ok('booking.cancel', {'vm_id': 'bc-2'}) == {}
        assert c.ok('booking.get', {'vm_id': 'bc-1'}) == {'booking': None}


@pytest.mark.parametrize('params', [
    {'minutes': 5},                                          # neither vm_id nor group
    {'vm_id': 'bp-1'},                                       # no duration
    {'vm_id': 'bp-1', 'group': 1, 'minutes': 5},             # both
    {'vm_id': 'bp-1', 'minutes': 5, 'hours': 1},             # both
    {'vm_id': 'bp-1', 'minutes': 0}, {'vm_id': 'bp-1', 'hours': 0},
    {'vm_id': 'bp-1', 'minutes': -1}, {'vm_id': 'bp-1', 'minutes': 1.5},
    {'vm_id': 'bp-1', 'minutes': '5'}, {'vm_id': 'bp-1', 'minutes': True},
    {'vm_id': 'bp-1', 'hours': MAX_HOURS + 1},
    {'vm_id': 'bp-1', 'minutes': MAX_HOURS * 60 + 1},
    {'vm_id': 'bp-1', 'minutes': 1 << 40}, {'vm_id': 'bp-1', 'hours': 1 << 62},
    {'vm_id': 'bad id!', 'minutes': 5}, {'group': 'one', 'minutes': 5},
    {'vm_id': 'bp-1', 'minutes': 5, 'bogus': 1},
    {'vm_id': 'bp-1', 'minutes': 5, 'user': 'bad name'},
    # bad_request first: these name a VM that does not exist, or is booked
    {'vm_id': 'bp-none', 'minutes': 0}, {'vm_id': 'bp-booked', 'hours': MAX_HOURS + 1},
])
def test_create_bad_request(d, people, params):
    with admin(d) as a:
        if a.call('vm.get', {'vm_id': 'bp-1'})[0] is not None:
            create_vms(a, ['bp-1', 'bp-booked'])
            p2util.person(a, 'bk-other')
            a.ok('booking.create', {'vm_id': 'bp-booked', 'minutes': 60, 'user': 'bk-other'})
        a.err('booking.create', params, 'bad_request')
    with people.conn('bk-alice') as c:
        c.err('booking.create', params, 'bad_request')
        assert c.ok('booking.get', {'vm_id': 'bp-1'}) == {'booking': None}


def test_vm_get_follows_every_change(d, people):
    """vm.get answers from a cache while the database is unchanged: after
    each change, the next answer (to the VM itself and to an admin) is the
    new one, also when the same answer was read many times just before."""
    with admin(d) as a:
        create_vms(a, ['vg-1', 'vg-2'])
        a.ok('vm.passwd', {'vm_id': 'vg-1', 'password': p2util.PW}, timeout=LONG)
    with p2util.vm_login(d, 'vg-1') as vm, admin(d) as a, people.conn('bk-alice') as c:
        def both():
            mine = [vm.ok('vm.get') for _ in range(20)]
            theirs = [a.ok('vm.get', {'vm_id': 'vg-1'}) for _ in range(20)]
            assert all(x == mine[0] for x in mine) and all(x == theirs[0] for x in theirs), \
                (mine, theirs)
            # the same record but for who asks: a VM reading itself is authorized
            assert {k: v for k, v in mine[0].items() if k != 'authorized'} == \
                {k: v for k, v in theirs[0].items() if k != 'authorized'}, (mine[0], theirs[0])
            return mine[0]
        assert both()['booking'] is None
        b = c.ok('booking.create', {'vm_id': 'vg-1', 'minutes': 30})
        want = {'user': 'bk-alice', 'started_at': b['started_at'], 'expires_at': b['expires_at']}
        assert both()['booking'] == want
        # another VM's change moves the database, not this answer
        a.ok('vm.set', {'vm_id': 'vg-2', 'hostname': 'other.example'})
        assert both()['booking'] == want
        r = c.ok('booking.renew', {'vm_id': 'vg-1', 'minutes': 60})
        assert r['expires_at'] > b['expires_at']
        assert both()['booking'] == dict(want, expires_at=r['expires_at'])
        a.ok('vm.set', {'vm_id': 'vg-1', 'hostname': 'vg-1.example'})
        rec = both()
        assert rec['hostname'] == 'vg-1.example' and rec['booking']['user'] == 'bk-alice', rec
        assert c.ok('booking.cancel', {'vm_id': 'vg-1'}) == {}
        rec = both()
        assert rec['booking'] is None and rec['hostname'] == 'vg-1.example', rec


def test_create_limits_of_duration(d, people):
    with admin(d) as a:
        create_vms(a, ['bl-1'])
        p2util.person(a, 'bk-lim')
        for p in ({'minutes': 1}, {'hours': MAX_HOURS}, {'minutes': MAX_HOURS * 60}):
            b = a.ok('booking.create', dict(p, vm_id='bl-1', user='bk-lim'))
            dur = p.get('minutes', 0) * MIN + p.get('hours', 0) * HOUR
            assert b['expires_at'] - b['started_at'] == dur, (p, b)
            a.ok('booking.cancel', {'vm_id': 'bl-1'})


def test_create_errors_and_precedence(d, people):
    with admin(d) as a:
        create_vms(a, ['be-1', 'be-2'])
        g_empty = a.ok('group.create', {'name': 'be-empty'})['id']
    with people.conn('bk-alice') as c, people.conn('bk-bob') as b:
        c.err('booking.create', {'vm_id': 'be-none', 'minutes': 5}, 'not_found')
        c.err('booking.create', {'group': 999999, 'minutes': 5}, 'not_found')
        c.err('booking.create', {'group': g_empty, 'minutes': 5}, 'conflict')
        c.ok('booking.create', {'vm_id': 'be-1', 'minutes': 5})
        # conflict: booked by anyone, the holder too
        b.err('booking.create', {'vm_id': 'be-1', 'minutes': 5}, 'conflict')
        c.err('booking.create', {'vm_id': 'be-1', 'minutes': 5}, 'conflict')
        # a user books for itself only: forbidden, before not_found and conflict
        b.err('booking.create', {'vm_id': 'be-2', 'minutes': 5, 'user': 'bk-alice'},
              'forbidden')
        b.err('booking.create', {'vm_id': 'be-none', 'minutes': 5, 'user': 'bk-alice'},
              'forbidden')
        b.err('booking.create', {'vm_id': 'be-1', 'minutes': 5, 'user': 'bk-alice'},
              'forbidden')
        # a viewer may not book at all: forbidden before not_found
        with people.conn('bk-viewer') as v:
            v.err('booking.create', {'vm_id': 'be-2', 'minutes': 5}, 'forbidden')
            v.err('booking.create', {'vm_id': 'be-none', 'minutes': 5}, 'forbidden')
        # not_found before conflict cannot both apply to one VM; a failed call
        # changed nothing
        assert c.ok('booking.get', {'vm_id': 'be-2'}) == {'booking': None}
        c.ok('booking.cancel', {'vm_id': 'be-1'})
    # an admin books on someone's behalf: a user record or just a login name
    # (daemon: a system login with no user record), not a name that is neither
    with people.conn('bk-admin') as t:
        bb = t.ok('booking.create', {'vm_id': 'be-1', 'minutes': 5, 'user': 'bk-bob'})
        assert bb['user'] == 'bk-bob', bb
        t.err('booking.create', {'vm_id': 'be-2', 'minutes': 5, 'user': 'no-such-person'},
              'not_found')
        bb = t.ok('booking.create', {'vm_id': 'be-2', 'minutes': 5, 'user': 'daemon'})
        assert bb['user'] == 'daemon', bb
        t.ok('booking.cancel', {'vm_id': 'be-1'})
        t.ok('booking.cancel', {'vm_id': 'be-2'})
        # without user: the admin books for itself
        assert t.ok('booking.create', {'vm_id': 'be-1', 'minutes': 5})['user'] == 'bk-admin'
        t.ok('booking.cancel', {'vm_id': 'be-1'})
    with admin(d) as a:
        assert a.ok('booking.create', {'vm_id': 'be-1', 'minutes': 5})['user'] == 'root'
        a.ok('booking.cancel', {'vm_id': 'be-1'})


def test_pending_and_suspended_vms_cannot_be_booked(d, people):
    with tcp(d) as c:
        assert c.register('bs-pending', password=p2util.PW)['access'] == 'pending'
    with admin(d) as a:
        create_vms(a, ['bs-susp'])
        a.ok('vm.suspend', {'vm_id': 'bs-susp'})
        for v in ('bs-pending', 'bs-susp'):
            a.err('booking.create', {'vm_id': v, 'minutes': 5}, 'conflict')


def test_renew(d, people):
    with admin(d) as a:
        create_vms(a, ['br-1', 'br-2'])
    with people.conn('bk-alice') as c, people.conn('bk-bob') as b:
        b0 = c.ok('booking.create', {'vm_id': 'br-1', 'minutes': 10})
        r = check_booking(c.ok('booking.renew', {'vm_id': 'br-1', 'minutes': 5}), 'br-1',
                          'bk-alice')
        # max(now, expires_at) + duration; started_at stays
        assert r['expires_at'] == b0['expires_at'] + 5 * MIN, (b0, r)
        assert r['started_at'] == b0['started_at'], (b0, r)
        r = c.ok('booking.renew', {'vm_id': 'br-1', 'hours': 1})
        assert r['expires_at'] == b0['expires_at'] + 5 * MIN + HOUR, r
        assert c.ok('booking.get', {'vm_id': 'br-1'})['booking'] == r
        # not the holder
        b.err('booking.renew', {'vm_id': 'br-1', 'minutes': 5}, 'forbidden')
        with people.conn('bk-viewer') as v:
            v.err('booking.renew', {'vm_id': 'br-1', 'minutes': 5}, 'forbidden')
        # not booked, no such VM
        c.err('booking.renew', {'vm_id': 'br-2', 'minutes': 5}, 'not_found')
        c.err('booking.renew', {'vm_id': 'br-none', 'minutes': 5}, 'not_found')
        # bad_request first
        for p in ({'vm_id': 'br-1'}, {'vm_id': 'br-1', 'minutes': 0},
                  {'vm_id': 'br-1', 'minutes': 1, 'hours': 1}, {'minutes': 5},
                  {'vm_id': 'br-none', 'minutes': 0}, {'vm_id': 'br-1', 'group': 1,
                                                       'minutes': 1}):
            c.err('booking.renew', p, 'bad_request')
            b.err('booking.renew', p, 'bad_request')
        # forbidden before not_found for a viewer
        with people.conn('bk-viewer') as v:
            v.err('booking.renew', {'vm_id': 'br-none', 'minutes': 5}, 'forbidden')
        # an admin renews anyone's
        with people.conn('bk-admin') as t:
            r2 = t.ok('booking.renew', {'vm_id': 'br-1', 'minutes': 1})
            assert r2['expires_at'] == r['expires_at'] + MIN and r2['user'] == 'bk-alice', r2
        c.ok('booking.cancel', {'vm_id': 'br-1'})


def test_renew_cap(d, people):
    """expires_at stays within booking_max_hours from now after each renewal;
    further is bad_request and changes nothing."""
    with admin(d) as a:
        create_vms(a, ['rc-1'])
    with people.conn('bk-alice') as c:
        b = c.ok('booking.create', {'vm_id': 'rc-1', 'hours': 1})
        r = c.ok('booking.renew', {'vm_id': 'rc-1', 'minutes': 55})
        assert r['expires_at'] == b['expires_at'] + 55 * MIN
        # now + 2 h is the cap: 1 h 55 + 10 min is past it, whatever the unit
        c.err('booking.renew', {'vm_id': 'rc-1', 'minutes': 10}, 'bad_request')
        c.err('booking.renew', {'vm_id': 'rc-1', 'hours': 1}, 'bad_request')
        c.err('booking.renew', {'vm_id': 'rc-1', 'hours': MAX_HOURS}, 'bad_request')
        assert c.ok('booking.get', {'vm_id': 'rc-1'})['booking'] == r
        # up to the cap is fine
        left = r['expires_at'] - now_ms()
        assert left > 0
        room_min = (MAX_HOURS * HOUR - left) // MIN - 1
        assert room_min >= 1, left
        r2 = c.ok('booking.renew', {'vm_id': 'rc-1', 'minutes': room_min})
        assert r2['expires_at'] == r['expires_at'] + room_min * MIN
        assert r2['expires_at'] <= now_ms() + MAX_HOURS * HOUR
        with people.conn('bk-admin') as t:
            # an admin is bound by the cap too
            t.err('booking.renew', {'vm_id': 'rc-1', 'minutes': 2}, 'bad_request')
        with people.conn('bk-bob') as b:
            # not the holder, and past the cap: bad_request comes first
            b.err('booking.renew', {'vm_id': 'rc-1', 'minutes': 2}, 'bad_request')
            b.err('booking.renew', {'vm_id': 'rc-1', 'minutes': 1}, 'forbidden')
        c.ok('booking.cancel', {'vm_id': 'rc-1'})


def test_cancel_by_holder_and_by_admin(d, people):
    with admin(d) as a:
        create_vms(a, ['cn-1', 'cn-2'])
        w = admin(d)
        watch(w, types=['booking.'])
    with people.conn('bk-alice') as c, people.conn('bk-bob') as b:
        c.ok('booking.create', {'vm_id': 'cn-1', 'minutes': 30})
        c.ok('booking.create', {'vm_id': 'cn-2', 'minutes': 30})
        b.err('booking.cancel', {'vm_id': 'cn-1'}, 'forbidden')
        with people.conn('bk-viewer') as v:
            v.err('booking.cancel', {'vm_id': 'cn-1'}, 'forbidden')
            v.err('booking.cancel', {'vm_id': 'cn-none'}, 'forbidden')
        b.err('booking.cancel', {'vm_id': 'cn-none'}, 'not_found')
        b.err('booking.cancel', {}, 'bad_request')
        b.err('booking.cancel', {'vm_id': 'cn-1', 'minutes': 1}, 'bad_request')
        assert c.ok('booking.cancel', {'vm_id': 'cn-1'}) == {}
        c.err('booking.cancel', {'vm_id': 'cn-1'}, 'not_found')       # not booked
        with people.conn('bk-admin') as t:
            assert t.ok('booking.cancel', {'vm_id': 'cn-2'}) == {}
        evs = p2util.read_events(w, lambda e: sum(x['type'] == 'booking.ended'
                                                  for x in e) >= 2)
        w.close()
        ended = [(e['vm_id'], e['user'], e['reason']) for e in evs
                 if e['type'] == 'booking.ended']
        assert ended == [('cn-1', 'bk-alice', 'cancel'), ('cn-2', 'bk-alice', 'admin')], evs
        ents = c.ok('booking.history', {})['entries']
        mine = [(e['vm_id'], e['action'], e['by']) for e in ents if e['vm_id'] in ('cn-1',
                                                                                   'cn-2')]
        assert mine[:2] == [('cn-2', 'end', 'bk-admin'), ('cn-1', 'cancel', None)] or \
            mine[:2] == [('cn-2', 'end', 'bk-admin'), ('cn-1', 'cancel', 'bk-alice')], mine


def test_bookings_per_user(make_daemon):
    dd = make_daemon(args=['--bookings-per-user', str(PER_USER)])
    with admin(dd) as a:
        vms = [f'pu-{i}' for i in range(PER_USER + 1)]
        create_vms(a, vms)
        p2util.make_user(a, 'pu-bob', 'user')
    with p2util.user_login(dd, 'pu-bob') as b:
        for v in vms[:PER_USER]:
            b.ok('booking.create', {'vm_id': v, 'minutes': 5})
        msg = b.err('booking.create', {'vm_id': vms[PER_USER], 'minutes': 5}, 'forbidden')
        assert msg
        # forbidden wins over not_found and conflict
        b.err('booking.create', {'vm_id': 'pu-none', 'minutes': 5}, 'forbidden')
        b.err('booking.create', {'vm_id': vms[0], 'minutes': 5}, 'forbidden')
        b.err('booking.create', {'group': 999999, 'minutes': 5}, 'forbidden')
        # bad_request still first
        b.err('booking.create', {'vm_id': vms[PER_USER], 'minutes': 0}, 'bad_request')
        # renewing is not a new booking
        b.ok('booking.renew', {'vm_id': vms[0], 'minutes': 1})
        with admin(dd) as a:
            # an admin cannot book past the limit on the user's behalf either
            a.err('booking.create', {'vm_id': vms[PER_USER], 'minutes': 5, 'user': 'pu-bob'},
                  'forbidden')
            # others are not affected
            p2util.person(a, 'pu-other')
            a.ok('booking.create', {'vm_id': vms[PER_USER], 'minutes': 5, 'user': 'pu-other'})
            a.ok('booking.cancel', {'vm_id': vms[PER_USER]})
        # one ends, one more fits
        b.ok('booking.cancel', {'vm_id': vms[0]})
        b.ok('booking.create', {'vm_id': vms[PER_USER], 'minutes': 5})
        assert len(b.ok('booking.list', {'user': 'pu-bob'})['bookings']) == PER_USER


def test_race_for_one_vm(d, people):
    """Two users book the same VM at the same moment: exactly one wins,
    the other gets conflict; 100 rounds."""
    with admin(d) as a:
        create_vms(a, ['race-1'])
    c = people.conn('bk-alice')
    b = people.conn('bk-bob')
    wins = {'bk-alice': 0, 'bk-bob': 0}
    deadline = time.monotonic() + 60
    try:
        for rnd in range(100):
            assert time.monotonic() < deadline, f'100 rounds took over 60 s (at {rnd})'
            first, second = (c, b) if rnd % 2 == 0 else (b, c)
            i1 = first.send('booking.create', {'vm_id': 'race-1', 'minutes': 5})
            i2 = second.send('booking.create', {'vm_id': 'race-1', 'minutes': 5})
            out = []
            for conn, i in ((first, i1), (second, i2)):
                msg = conn.read_response()
                assert msg[1] == i, msg
                out.append((conn, conn.split(msg)))
            won = [(conn, res) for conn, (err, res) in out if err is None]
            lost = [err for conn, (err, res) in out if err is not None]
            assert len(won) == 1, f'round {rnd}: {len(won)} winners: {out}'
            assert lost[0][0] == 'conflict', f'round {rnd}: {lost}'
            winner, res = won[0]
            assert res['user'] == winner.name, res
            wins[winner.name] += 1
            assert winner.ok('booking.cancel', {'vm_id': 'race-1'}) == {}
    finally:
        c.close()
        b.close()
    print('race wins', wins)
    assert sum(wins.values()) == 100
    with admin(d) as a:
        ents, _ = history_all(a, {'vm_id': 'race-1'})
        acts = [e['action'] for e in ents]
        assert acts.count('book') == 100 and acts.count('cancel') == 100, acts


def history_all(conn, params, limit=None):
    out = []
    after = None
    pages = 0
    while True:
        p = dict(params)
        if limit:
            p['limit'] = limit
        if after is not None:
            p['after'] = after
        res = conn.ok('booking.history', p)
        pages += 1
        out += res['entries']
        if res['next'] is None:
            return out, pages
        assert res['entries'], res
        after = res['next']
        assert pages < 10000


def test_group_booking_picks_free_active_longest_free(d, people):
    with tcp(d) as c:
        c.register('gb-pending', password=p2util.PW)            # pending: approval mode
    with admin(d) as a:
        order = ['gb-old', 'gb-mid', 'gb-new', 'gb-susp', 'gb-booked']
        made = []
        for v in order:
            create_vms(a, [v])
            made.append(a.ok('vm.get', {'vm_id': v})['registered_at'])
            time.sleep(0.005)           # distinct creation times (ms clock)
        assert made == sorted(made) and len(set(made)) == len(made), made
        g = a.ok('group.create', {'name': 'gb', 'vm_ids': order + ['gb-pending']})['id']
        a.ok('vm.suspend', {'vm_id': 'gb-susp'})
        p2util.person(a, 'gb-someone')
        a.ok('booking.create', {'vm_id': 'gb-booked', 'minutes': 30, 'user': 'gb-someone'})
        # gb-old was booked and freed last: free since now, so it comes last
        a.ok('booking.create', {'vm_id': 'gb-old', 'minutes': 5, 'user': 'gb-someone'})
        a.ok('booking.cancel', {'vm_id': 'gb-old'})
    picked = []
    with people.conn('bk-alice') as c, people.conn('bk-bob') as b:
        for conn in (c, c, b):
            res = conn.ok('booking.create', {'group': g, 'minutes': 5})
            assert res['user'] == conn.name, res
            assert res['expires_at'] == res['started_at'] + 5 * MIN, res
            picked.append(res['vm_id'])
        assert picked == ['gb-mid', 'gb-new', 'gb-old'], picked
        # nothing free: conflict (suspended, pending and booked ones never count)
        b.err('booking.create', {'group': g, 'minutes': 5}, 'conflict')
        # freed again: the one freed first is free longest
        c.ok('booking.cancel', {'vm_id': 'gb-new'})
        time.sleep(0.005)
        c.ok('booking.cancel', {'vm_id': 'gb-mid'})
        assert b.ok('booking.create', {'group': g, 'minutes': 5})['vm_id'] == 'gb-new'
        assert b.ok('booking.create', {'group': g, 'minutes': 5})['vm_id'] == 'gb-mid'
        with admin(d) as a:
            for v in ('gb-mid', 'gb-new', 'gb-old', 'gb-booked'):
                a.ok('booking.cancel', {'vm_id': v})


def test_booking_list_filters_and_paging(d, people):
    with admin(d) as a:
        vms = [f'bls-{i}' for i in range(5)]
        create_vms(a, vms)
        g = a.ok('group.create', {'name': 'bls', 'vm_ids': vms[:2]})['id']
        p2util.person(a, 'bls-u1')
        p2util.person(a, 'bls-u2')
        for i, v in enumerate(vms):
            a.ok('booking.create', {'vm_id': v, 'minutes': 20,
                                    'user': 'bls-u1' if i % 2 == 0 else 'bls-u2'})
    with people.conn('bk-viewer') as v:
        def listing(**p):
            out, after = [], None
            for _ in range(100):
                q = dict(p)
                if after is not None:
                    q['after'] = after
                res = v.ok('booking.list', q)
                out += res['bookings']
                if res['next'] is None:
                    return out
                assert res['next'] == res['bookings'][-1]['vm_id'], res
                after = res['next']
            raise AssertionError('booking.list does not end')
        every = listing()
        mine = [b for b in every if b['vm_id'].startswith('bls-')]
        assert [b['vm_id'] for b in mine] == vms, mine
        assert [b['vm_id'] for b in every] == sorted(b['vm_id'] for b in every)
        assert listing(limit=2) == every
        assert [b['vm_id'] for b in listing(user='bls-u1')] == vms[0::2]
        assert [b['vm_id'] for b in listing(group=g)] == vms[:2]
        assert [b['vm_id'] for b in listing(group=g, user='bls-u2')] == [vms[1]]
        for bad in ({'limit': 0}, {'limit': 10001}, {'user': 'a b'}, {'group': 'x'},
                    {'vm_id': 'bls-1'}):
            v.err('booking.list', bad, 'bad_request')
    with admin(d) as a:
        for x in vms:
            a.ok('booking.cancel', {'vm_id': x})
        assert [b for b in a.ok('booking.list', {'group': g})['bookings']] == []


def test_history(d, people):
    with admin(d) as a:
        create_vms(a, ['hi-1', 'hi-2'])
    with people.conn('bk-alice') as c, people.conn('bk-bob') as b:
        c.ok('booking.create', {'vm_id': 'hi-1', 'minutes': 10})
        r = c.ok('booking.renew', {'vm_id': 'hi-1', 'minutes': 10})
        c.ok('booking.cancel', {'vm_id': 'hi-1'})
        b.ok('booking.create', {'vm_id': 'hi-2', 'minutes': 10})
        with admin(d) as a:
            a.ok('booking.cancel', {'vm_id': 'hi-2'})
        ents, _ = history_all(c, {'vm_id': 'hi-1'})
        for e in ents:
            assert set(e) >= {'feed', 'time', 'vm_id', 'user', 'action', 'expires_at', 'by'}, e
        assert [e['action'] for e in ents] == ['cancel', 'renew', 'book'], ents
        assert ents[1]['expires_at'] == r['expires_at'], ents
        feeds = [e['feed'] for e in ents]
        assert feeds == sorted(feeds, reverse=True), 'not newest first'
        times = [e['time'] for e in ents]
        assert times == sorted(times, reverse=True), times
        # a user sees only its own
        mine, _ = history_all(c, {})
        assert mine and all(e['user'] == 'bk-alice' for e in mine), mine
        theirs, _ = history_all(b, {'vm_id': 'hi-2'})
        assert [(e['action'], e['by']) for e in theirs] == [('end', 'root'), ('book', None)] \
            or [(e['action'], e['by']) for e in theirs] == [('end', 'root'),
                                                            ('book', 'bk-bob')], theirs
        err, res = c.call('booking.history', {'user': 'bk-bob'})
        assert (err and err[0] == 'forbidden') or \
            all(e['user'] == 'bk-alice' for e in res['entries']), (err, res)
        err, res = c.call('booking.history', {'vm_id': 'hi-2'})
        assert (err and err[0] == 'forbidden') or res['entries'] == [], (err, res)
        # viewers do not read history
        with people.conn('bk-viewer') as v:
            v.err('booking.history', {}, 'forbidden')
    with admin(d) as a:
        every, _ = history_all(a, {})
        paged, pages = history_all(a, {}, limit=2)
        assert paged == every and pages >= 3, pages
        assert {'bk-alice', 'bk-bob'} <= {e['user'] for e in every}
        by_user, _ = history_all(a, {'user': 'bk-bob', 'vm_id': 'hi-2'})
        assert [e['action'] for e in by_user] == ['end', 'book'], by_user
        for bad in ({'limit': 0}, {'user': 'a b'}, {'vm_id': 'bad id!'}, {'x': 1}):
            a.err('booking.history', bad, 'bad_request')


def test_deleting_a_vm_or_a_user_ends_bookings(d, people):
    with admin(d) as a:
        create_vms(a, ['del-1', 'del-2', 'del-3'])
        p2util.make_user(a, 'del-user', 'user', password=None)
        w = admin(d)
        watch(w, types=['booking.'])
        a.ok('booking.create', {'vm_id': 'del-1', 'minutes': 10, 'user': 'bk-alice'})
        a.ok('booking.create', {'vm_id': 'del-2', 'minutes': 10, 'user': 'del-user'})
        a.ok('booking.create', {'vm_id': 'del-3', 'minutes': 10, 'user': 'del-user'})
        a.ok('vm.delete', {'vm_id': 'del-1'})
        a.ok('user.delete', {'name': 'del-user'})
        evs = p2util.read_events(w, lambda e: sum(x['type'] == 'booking.ended'
                                                  for x in e) >= 3)
        w.close()
        ended = sorted((e['vm_id'], e['user'], e['reason']) for e in evs
                       if e['type'] == 'booking.ended')
        assert ended == [('del-1', 'bk-alice', 'deleted'), ('del-2', 'del-user', 'deleted'),
                         ('del-3', 'del-user', 'deleted')], evs
        assert a.ok('booking.get', {'vm_id': 'del-2'}) == {'booking': None}
        assert a.ok('booking.get', {'vm_id': 'del-3'}) == {'booking': None}
        assert not [b for b in a.ok('booking.list', {})['bookings']
                    if b['vm_id'].startswith('del-')]
        # `end`, and by says who ended it
        ents, _ = history_all(a, {'vm_id': 'del-2'})
        assert [(e['action'], e['by']) for e in ents][:1] == [('end', 'root')], ents
        assert [e['action'] for e in ents] == ['end', 'book'], ents
        ents, _ = history_all(a, {'vm_id': 'del-1'})
        assert [(e['action'], e['by']) for e in ents][:1] == [('end', 'root')], ents
        assert [e['action'] for e in ents] == ['end', 'book'], ents
        # the VMs of the deleted user are free again
        a.ok('booking.create', {'vm_id': 'del-2', 'minutes': 5, 'user': 'bk-bob'})
        a.ok('booking.cancel', {'vm_id': 'del-2'})


def test_expiring_is_sent_once_also_across_a_restart(make_daemon):
    dd = make_daemon()
    with admin(dd) as a:
        create_vms(a, ['eo-1'])
        w = admin(dd)
        watch(w, types=['booking.expiring'])
        p2util.person(a, 'eo-u')
        # 5 minutes, within the 15-minute warning: at once
        b = a.ok('booking.create', {'vm_id': 'eo-1', 'minutes': 5, 'user': 'eo-u'})
        evs = p2util.read_events(w, lambda e: e, 10)
        assert evs[0]['expires_at'] == b['expires_at'], evs
        assert p2util.quiet_events(w, 1.5) == [], 'booking.expiring sent twice'
        w.close()
    dd.restart()
    with admin(dd) as w:
        res = watch(w, since=0, types=['booking.'])
        evs = p2util.read_events(w, p2util.until_feed(res['feed']))
        evs += p2util.quiet_events(w, 1.5)
        assert [e['type'] for e in evs] == ['booking.created', 'booking.expiring'], evs
