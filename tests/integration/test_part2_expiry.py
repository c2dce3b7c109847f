# SPDX-License-Identifier: MIT
"""Bookings in time (PROTOCOL.md part 2, "Time"): a booking ends within 1 s of
expires_at, also across a restart and across a kill -9 (at start, expired
bookings end first; the history says `expire` with the original time);
booking.expiring is sent once per end time, when the time left first drops to
booking_warn_minutes (at once for a shorter booking), and a renewal re-arms it.

The shortest booking is one minute, so the module starts every clock at once
(three daemons, one fixture) and the tests then wait on the same minute:
the whole file takes a little over 60 s, mostly idle."""

import time

import pytest

import p2util
from p2util import admin, create_vms, watch
from vmmtest import now_ms

MIN = 60 * 1000


class World:
    pass


@pytest.fixture(scope='module')
def w(tmp_path_factory):
    """Three daemons with bookings made at about the same moment:
    live (warn 1 min): ex-a 1 min, ex-b 2 min, ex-c 1 min renewed by 1 min;
    restart: rs-1 1 min, stopped with SIGTERM; crash: cr-1 1 min, kill -9;
    order (warn 1 min): od-long 3 min, then od-short 2 min."""
    world = World()
    daemons = []
    try:
        live = p2util.vmmtest.Daemon(tmp_path_factory.mktemp('live'),
                                     args=['--booking-warn-minutes', '1'])
        daemons.append(live)
        rs = p2util.vmmtest.Daemon(tmp_path_factory.mktemp('restart'))
        daemons.append(rs)
        cr = p2util.vmmtest.Daemon(tmp_path_factory.mktemp('crash'))
        daemons.append(cr)
        od = p2util.vmmtest.Daemon(tmp_path_factory.mktemp('order'),
                                   args=['--booking-warn-minutes', '1'])
        daemons.append(od)
        with admin(live) as a:
            create_vms(a, ['ex-a', 'ex-b', 'ex-c'])
        with admin(rs) as a:
            create_vms(a, ['rs-1'])
        with admin(cr) as a:
            create_vms(a, ['cr-1'])
        with admin(od) as a:
            create_vms(a, ['od-long', 'od-short'])
            p2util.person(a, 'ex-u')
        world.od_watcher = admin(od)
        watch(world.od_watcher, types=['booking.'])
        world.watcher = admin(live)
        watch(world.watcher, types=['booking.'])
        world.events = []
        world.arrived = {}                      # id(event) -> local ms it arrived
        with admin(live) as a:
            p2util.person(a, 'ex-u')
            p2util.person(a, 'ex-v')
            world.a = a.ok('booking.create', {'vm_id': 'ex-a', 'minutes': 1, 'user': 'ex-u'})
            world.b = a.ok('booking.create', {'vm_id': 'ex-b', 'minutes': 2, 'user': 'ex-u'})
            world.c0 = a.ok('booking.create', {'vm_id': 'ex-c', 'minutes': 1, 'user': 'ex-u'})
            # the first expiring of ex-c (at once: 1 min <= warn 1 min) comes
            # before the renewal that re-arms it
            read_until(world, lambda: any(e['type'] == 'booking.expiring' and
                                          e['vm_id'] == 'ex-c' for e in world.events), 20)
            world.c = a.ok('booking.renew', {'vm_id': 'ex-c', 'minutes': 1})
        with admin(rs) as a:
            p2util.person(a, 'ex-u')
            world.rs = a.ok('booking.create', {'vm_id': 'rs-1', 'minutes': 1, 'user': 'ex-u'})
        rs.stop()
        with admin(cr) as a:
            p2util.person(a, 'ex-u')
            world.cr = a.ok('booking.create', {'vm_id': 'cr-1', 'minutes': 1, 'user': 'ex-u'})
        cr.kill()
        with admin(od) as a:
            # nothing is due before od-long's warning, two minutes on; then
            # od-short's comes first, one minute on
            world.od_long = a.ok('booking.create', {'vm_id': 'od-long', 'minutes': 3,
                                                    'user': 'ex-u'})
            world.od_short = a.ok('booking.create', {'vm_id': 'od-short', 'minutes': 2,
                                                     'user': 'ex-u'})
        world.live, world.rs_d, world.cr_d = live, rs, cr
        yield world
        world.watcher.close()
        world.od_watcher.close()
        for dd in daemons:
            dd.stop()
    except BaseException:
        for dd in daemons:
            print(dd.log_text())
        raise
    finally:
        for dd in daemons:
            dd.cleanup()


def read_until(world, pred, timeout):
    deadline = time.monotonic() + timeout
    while not pred():
        left = deadline - time.monotonic()
        assert left > 0, f'not seen in time; events: {world.events}'
        try:
            ev = p2util.next_event(world.watcher, left)
        except TimeoutError:
            continue
        world.arrived[len(world.events)] = now_ms()
        world.events.append(ev)


def of(world, vm_id, type_):
    return [(i, e) for i, e in enumerate(world.events) if e['vm_id'] == vm_id and
            e['type'] == type_]


def test_expiry_within_a_second_after_expiring(w):
    a = w.a
    # not early: still booked shortly before its end
    left = a['expires_at'] - now_ms()
    assert left > 1500, f'the fixture took too long ({left} ms left)'
    time.sleep((left - 1500) / 1000)            # the booking's own clock, not a poll
    with admin(w.live) as c:
        assert c.ok('booking.get', {'vm_id': 'ex-a'})['booking'] == a
    read_until(w, lambda: of(w, 'ex-a', 'booking.ended'), 20)
    (i_end, end), = of(w, 'ex-a', 'booking.ended')
    assert end['reason'] == 'expire' and end['user'] == 'ex-u', end
    assert end['expires_at'] == a['expires_at'], end
    assert a['expires_at'] <= end['time'] <= a['expires_at'] + 1000, \
        f'ended {end["time"] - a["expires_at"]} ms after expires_at'
    # within 1 s, plus a little for the event to reach us on a busy machine
    assert w.arrived[i_end] <= a['expires_at'] + 1500, \
        f'the event arrived {w.arrived[i_end] - a["expires_at"]} ms after expires_at'
    # booking.expiring first, once for this end time
    exp = of(w, 'ex-a', 'booking.expiring')
    assert len(exp) == 1 and exp[0][0] < i_end, w.events
    assert exp[0][1]['expires_at'] == a['expires_at'], exp
    # sent at once (a 1-minute booking is within the 1-minute warning)
    assert exp[0][1]['time'] - a['started_at'] <= 2000, exp
    with admin(w.live) as c:
        assert c.ok('booking.get', {'vm_id': 'ex-a'}) == {'booking': None}
        assert c.ok('vm.get', {'vm_id': 'ex-a'})['booking'] is None
        ents = c.ok('booking.history', {'vm_id': 'ex-a'})['entries']
        assert [e['action'] for e in ents] == ['expire', 'book'], ents
        assert a['expires_at'] <= ents[0]['time'] <= a['expires_at'] + 1000, ents
        # free again
        c.ok('booking.create', {'vm_id': 'ex-a', 'minutes': 5, 'user': 'ex-v'})


def test_expiring_when_time_left_drops_to_warn_minutes(w):
    """ex-b: 2 minutes with a 1-minute warning: booking.expiring at
    expires_at - 60 s, not before."""
    b = w.b
    due = b['expires_at'] - MIN
    read_until(w, lambda: of(w, 'ex-b', 'booking.expiring'), (due - now_ms()) / 1000 + 20)
    (i, exp), = of(w, 'ex-b', 'booking.expiring')
    assert due <= exp['time'] <= due + 1000, f'expiring {exp["time"] - due} ms after due'
    assert exp['expires_at'] == b['expires_at'], exp
    assert not of(w, 'ex-b', 'booking.ended')


def test_renewal_rearms_the_warning(w):
    """ex-c: warned at once, then renewed by a minute (2 min left > warn):
    warned again when 1 minute is left, carrying the new end."""
    c0, c = w.c0, w.c
    assert c['expires_at'] == c0['expires_at'] + MIN, (c0, c)
    due = c['expires_at'] - MIN
    read_until(w, lambda: len(of(w, 'ex-c', 'booking.expiring')) >= 2,
               (due - now_ms()) / 1000 + 20)
    exps = [e for _, e in of(w, 'ex-c', 'booking.expiring')]
    assert len(exps) == 2, exps
    assert exps[0]['expires_at'] == c0['expires_at'], exps
    assert exps[1]['expires_at'] == c['expires_at'], exps
    assert due <= exps[1]['time'] <= due + 1000, exps
    (_, ren), = of(w, 'ex-c', 'booking.renewed')
    assert ren['expires_at'] == c['expires_at'], ren
    assert not of(w, 'ex-c', 'booking.ended')


def expired_at_start(d, booking, vm_id):
    left = booking['expires_at'] + 200 - now_ms()
    if left > 0:
        time.sleep(left / 1000)             # wait for the end time to pass while down
    d.start()
    t_ready = now_ms()
    with admin(d) as a:
        # at start, expired bookings end first: within a second of being up
        assert p2util.wait_until(
            lambda: a.ok('booking.get', {'vm_id': vm_id})['booking'] is None, 1.0), \
            f'{vm_id} still booked 1 s after start'
        ents = a.ok('booking.history', {'vm_id': vm_id})['entries']
        assert [e['action'] for e in ents] == ['expire', 'book'], ents
        # the history keeps the original time, not the restart's
        assert ents[0]['time'] == booking['expires_at'], (ents, booking, t_ready)
        assert ents[0]['expires_at'] == booking['expires_at'], ents
        # and the feed holds it as booking.ended, reason expire
        res, evs = p2util.replay(d, since=0)
        ended = [e for e in evs if e['type'] == 'booking.ended']
        assert len(ended) == 1 and ended[0]['reason'] == 'expire', evs
        assert ended[0]['vm_id'] == vm_id and ended[0]['expires_at'] == booking['expires_at']
        assert [e['type'] for e in evs if e['type'].startswith('booking.')][0] == \
            'booking.created', evs
        # the VM is free again
        p2util.person(a, 'ex-v')
        a.ok('booking.create', {'vm_id': vm_id, 'minutes': 5, 'user': 'ex-v'})


def test_expiry_across_a_restart(w):
    expired_at_start(w.rs_d, w.rs, 'rs-1')


def test_expiry_across_kill_9(w):
    expired_at_start(w.cr_d, w.cr, 'cr-1')


def test_a_sooner_booking_brings_the_timer_forward(w):
    """od-short, made after od-long, is due sooner: it is warned when one
    minute is left, not when od-long is."""
    s = w.od_short
    due = s['expires_at'] - MIN

    def warned(evs, vm_id):
        return [e for e in evs if e['type'] == 'booking.expiring' and e['vm_id'] == vm_id]
    # up to 20 s after its time
    evs = p2util.read_events(w.od_watcher, lambda evs: warned(evs, 'od-short'),
                             (due + 20000 - now_ms()) / 1000)
    exp, = warned(evs, 'od-short')
    assert exp['expires_at'] == s['expires_at'], exp
    assert due <= exp['time'] <= due + 1000, f'expiring {exp["time"] - due} ms after due'
    assert not warned(evs, 'od-long'), evs
