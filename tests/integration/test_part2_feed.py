# SPDX-License-Identifier: MIT
"""The durable event feed (PROTOCOL.md part 2, "Events, part 2"): kill -9
cycles under writers that book, renew, cancel and change groups, after each of
which the feed replayed from since 0 rebuilds exactly the bookings and groups
the tables hold (nothing missing, nothing extra, no gap in `feed`); a watcher
that reconnects with since misses nothing and gets nothing twice;
events.truncated when it asks for what is no longer kept; who sees what
(admins everything; users and viewers vm.*, group.*, booking.*, os.* and
their own request.* and session.*; a VM session only its own VM's events); a
TCP watch ends with its session, after the session.ended that says so; a
failed request and bookkeeping append nothing."""

# (Bookings made for someone else name a user record or a login: the
# system logins daemon and bin serve where any person will do.)

import os
import random
import subprocess
import threading
import time

import pytest

import p2util
from p2util import (LONG, PW, admin, create_vms, make_user, quiet_events, read_events,
                    resumed, tcp, user_login, watch)
from vmmtest import Closed

CYCLES = 5
BUDGET_S = 60
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='needs root (useradd, setpriv)')


def vmmd_check(state_dir, what):
    path = os.environ.get('VMMD_CHECK_BIN')
    assert path and os.access(path, os.X_OK), \
        'VMMD_CHECK_BIN is not set: this test needs vmmd-check (meson sets it)'
    p = subprocess.run([path, state_dir], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f'{what}: vmmd-check failed ({p.returncode}):\n{p.stdout}{p.stderr}'


def list_everything(conn, method, key, params=None):
    out, after = [], None
    for _ in range(100000):
        p = dict(params or {})
        if after is not None:
            p['after'] = after
        res = conn.ok(method, p)
        out += res[key]
        if res['next'] is None:
            return out
        after = res['next']
    raise AssertionError(f'{method} does not end')


def rebuild(events):
    """Bookings {vm_id: (user, expires_at)} and group ids, from feed events."""
    bookings, groups = {}, set()
    for e in events:
        t = e['type']
        if t in ('booking.created', 'booking.renewed'):
            if t == 'booking.created':
                assert e['vm_id'] not in bookings, f'booked twice without an end: {e}'
            else:
                assert e['vm_id'] in bookings, f'renewed while not booked: {e}'
            bookings[e['vm_id']] = (e['user'], e['expires_at'])
        elif t == 'booking.ended':
            assert e['vm_id'] in bookings, f'ended while not booked: {e}'
            del bookings[e['vm_id']]
        elif t == 'group.created':
            assert e['id'] not in groups, e
            groups.add(e['id'])
        elif t == 'group.changed':
            assert e['id'] in groups, f'a change of a group that does not exist: {e}'
        elif t == 'group.deleted':
            assert e['id'] in groups, e
            groups.discard(e['id'])
    return bookings, groups


def check_feed_against_tables(d, what):
    res, evs = p2util.replay(d, since=0, timeout=60)
    feeds = [e['feed'] for e in evs]
    assert feeds == list(range(1, res['feed'] + 1)), \
        f'{what}: the feed has gaps or doubles: {feeds[:20]}... last {res["feed"]}'
    assert res['oldest'] == (1 if res['feed'] else None), res
    p2util.check_feed_seqs(evs)
    bookings, groups = rebuild(evs)
    with admin(d) as a:
        table_b = {b['vm_id']: (b['user'], b['expires_at'])
                   for b in list_everything(a, 'booking.list', 'bookings')}
        table_g = {g['id'] for g in list_everything(a, 'group.list', 'groups')}
    assert bookings == table_b, f'{what}: replayed bookings {bookings} != tables {table_b}'
    assert groups == table_g, f'{what}: replayed groups {groups} != tables {table_g}'
    return res['feed'], table_b, table_g


class BookingWriter(threading.Thread):
    """Books, renews and cancels its own VMs until its connection dies;
    remembers what was acknowledged and what was in flight."""

    def __init__(self, connect, vms, user, rng, on_behalf):
        super().__init__(daemon=True)
        self.connect, self.vms, self.user, self.rng = connect, vms, user, rng
        self.on_behalf = on_behalf
        self.acked = {}             # vm -> None (free) or expires_at
        self.inflight = None        # (vm, op, expires_at before)
        self.count = 0
        self.error = None
        self.ready = threading.Event()

    def run(self):
        c = None
        try:
            c = self.connect()
            for v in self.vms:
                b = c.ok('booking.get', {'vm_id': v})['booking']
                self.acked[v] = b['expires_at'] if b else None
            self.ready.set()
            while True:
                v = self.rng.choice(self.vms)
                cur = self.acked[v]
                extra = {'user': self.user} if self.on_behalf else {}
                if cur is None:
                    self.inflight = (v, 'book', cur)
                    res = c.ok('booking.create', dict(extra, vm_id=v, minutes=30))
                    assert res['user'] == self.user, res
                    self.acked[v] = res['expires_at']
                elif self.rng.random() < 0.5:
                    self.inflight = (v, 'renew', cur)
                    res = c.ok('booking.renew', {'vm_id': v, 'minutes': 1})
                    assert res['expires_at'] == cur + 60000, (cur, res)
                    self.acked[v] = res['expires_at']
                else:
                    self.inflight = (v, 'cancel', cur)
                    assert c.ok('booking.cancel', {'vm_id': v}) == {}
                    self.acked[v] = None
                self.inflight = None
                self.count += 1
        except (Closed, OSError):
            pass
        except Exception as e:
            self.error = repr(e)
        finally:
            self.ready.set()
            if c:
                c.close()

    def check(self, table, what):
        for v in self.vms:
            got = table.get(v)
            acked = self.acked.get(v)
            ok = [('acked', None if acked is None else (self.user, acked))]
            if self.inflight and self.inflight[0] == v:
                op, before = self.inflight[1], self.inflight[2]
                if op == 'book':
                    ok.append(('book', 'any'))
                elif op == 'renew':
                    ok.append(('renew', (self.user, before + 60000)))
                else:
                    ok.append(('cancel', None))
            good = any(want == got or (want == 'any' and got and got[0] == self.user)
                       for _, want in ok)
            assert good, f'{what}: {v} is {got}, expected one of {ok}'


class GroupWriter(threading.Thread):
    def __init__(self, connect, vms, rng, prefix):
        super().__init__(daemon=True)
        self.connect, self.vms, self.rng, self.prefix = connect, vms, rng, prefix
        self.alive = set()          # acknowledged existing
        self.gone = set()           # acknowledged deleted
        self.inflight = None
        self.n = 0
        self.count = 0
        self.error = None
        self.ready = threading.Event()

    def run(self):
        c = None
        try:
            c = self.connect()
            self.alive = {g['id'] for g in list_everything(c, 'group.list', 'groups')}
            self.ready.set()
            while True:
                r = self.rng.random()
                self.n += 1
                if not self.alive or r < 0.3:
                    self.inflight = ('create', None)
                    g = c.ok('group.create', {'name': f'{self.prefix}-{self.n}',
                                              'vm_ids': [self.rng.choice(self.vms)]})
                    self.alive.add(g['id'])
                else:
                    gid = self.rng.choice(sorted(self.alive))
                    if r < 0.5:
                        self.inflight = ('add', gid)
                        c.ok('group.add', {'id': gid, 'vm_ids': self.rng.sample(self.vms, 2)})
                    elif r < 0.65:
                        self.inflight = ('rename', gid)
                        c.ok('group.rename', {'id': gid, 'name': f'{self.prefix}-r{self.n}'})
                    elif r < 0.8:
                        self.inflight = ('remove', gid)
                        err, _ = c.call('group.remove', {'vm_id': self.rng.choice(self.vms)})
                        assert err is None or err[0] == 'not_found', err
                    else:
                        self.inflight = ('delete', gid)
                        assert c.ok('group.delete', {'id': gid}) == {}
                        self.alive.discard(gid)
                        self.gone.add(gid)
                self.inflight = None
                self.count += 1
        except (Closed, OSError):
            pass
        except Exception as e:
            self.error = repr(e)
        finally:
            self.ready.set()
            if c:
                c.close()

    def check(self, groups, what):
        maybe_gone = {self.inflight[1]} if self.inflight and self.inflight[0] == 'delete' \
            else set()
        missing = self.alive - groups - maybe_gone
        assert not missing, f'{what}: acknowledged groups {missing} are gone'
        back = self.gone & groups
        assert not back, f'{what}: deleted groups {back} are back'
        new = groups - self.alive
        may_new = 1 if self.inflight and self.inflight[0] == 'create' else 0
        assert len(new) <= may_new, f'{what}: groups nobody made: {new}'


def test_kill_9_cycles_feed_rebuilds_tables(make_daemon):
    seed = int(os.environ.get('FEED_SEED', str(random.SystemRandom().randrange(1 << 32))))
    print(f'seed {seed} (FEED_SEED={seed} repeats this run)')
    rng = random.Random(seed)
    d = make_daemon()
    vms = [f'fd-{i}' for i in range(6)]
    with admin(d) as a:
        create_vms(a, vms)
        make_user(a, 'fd-alice')
    with user_login(d, 'fd-alice') as c:
        token = c.token
    total = 0
    t0 = time.monotonic()
    last_feed = 0
    cycles = 0
    for cycle in range(1, CYCLES + 1):
        if time.monotonic() - t0 > BUDGET_S and cycle > 3:
            break                       # a slow machine: fewer cycles, at least 3
        writers = [
            BookingWriter(lambda: admin(d, timeout=30), vms[0:2], 'daemon',
                          random.Random(rng.random()), True),
            BookingWriter(lambda: admin(d, timeout=30), vms[2:4], 'bin',
                          random.Random(rng.random()), True),
            BookingWriter(lambda: resumed(d, token), vms[4:6], 'fd-alice',
                          random.Random(rng.random()), False),
        ]
        gw = GroupWriter(lambda: admin(d, timeout=30), vms, random.Random(rng.random()),
                         f'c{cycle}')
        for w in writers + [gw]:
            w.start()
        for w in writers + [gw]:
            assert w.ready.wait(30), f'cycle {cycle}: a writer did not start'
        time.sleep(rng.uniform(0.3, 0.8))         # writing while it is killed
        d.kill()
        for w in writers + [gw]:
            w.join(30)
            assert not w.is_alive(), f'cycle {cycle}: a writer still runs after the kill'
        errors = [w.error for w in writers + [gw] if w.error]
        assert not errors, f'cycle {cycle} (seed {seed}): {errors}'
        vmmd_check(d.state_dir, f'cycle {cycle}')
        d.start()
        what = f'cycle {cycle} (seed {seed})'
        feed, table_b, table_g = check_feed_against_tables(d, what)
        assert feed >= last_feed, (feed, last_feed)
        last_feed = feed
        for w in writers:
            w.check(table_b, what)
        gw.check(table_g, what)
        total += sum(w.count for w in writers) + gw.count
        cycles = cycle
    print(f'{cycles} cycles, {total} acknowledged writes, feed at {last_feed}, '
          f'{time.monotonic() - t0:.1f} s')
    assert total > cycles * 4, f'too few writes acknowledged: {total}'
    assert last_feed >= total, (last_feed, total)


def test_reconnecting_watcher_misses_nothing(make_daemon):
    d = make_daemon()
    with admin(d) as a:
        create_vms(a, ['rw-1', 'rw-2'])
    with admin(d) as w:
        start = watch(w)['feed']
    stop = threading.Event()
    errors = []

    def write():
        try:
            with admin(d) as a:
                n = 0
                while not stop.is_set() and n < 3000:
                    n += 1
                    v = 'rw-1' if n % 2 else 'rw-2'
                    a.ok('booking.create', {'vm_id': v, 'minutes': 10, 'user': 'daemon'})
                    a.ok('booking.cancel', {'vm_id': v})
                    if n % 10 == 0:
                        a.ok('group.create', {'name': f'rw-{n}'})
        except Exception as e:
            errors.append(repr(e))

    t = threading.Thread(target=write, daemon=True)
    t.start()
    seen = []
    since = start
    try:
        for rnd in range(12):
            with admin(d) as w:
                res = watch(w, since=since, types=['booking.', 'group.'])
                assert res['feed'] >= since, (res, since)
                # read a few, live, past the position the reply named
                target = res['feed'] + 5
                evs = read_events(w, lambda e: e and e[-1]['feed'] >= target, 30)
                p2util.check_feed_seqs(evs)
                got = [e['feed'] for e in evs]
                assert got == list(range(since + 1, since + 1 + len(got))), \
                    f'round {rnd}: since {since}, got {got}'
                seen += got
                since = got[-1]
            # the writer goes on while nobody watches
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors
    assert seen == list(range(start + 1, start + len(seen) + 1)), \
        'a position was missed or doubled'
    assert len(seen) > 12 * 5


def test_replay_paced_to_a_slow_reader(make_daemon):
    """A replay of several times a watcher's unsent bound (256 KiB) to one
    that reads slowly: vmmd paces it instead of disconnecting it, and every
    event arrives once, in order."""
    d = make_daemon()
    vms = ['s' * 46 + f'-{i}' for i in range(2)]         # long fields, big events
    user = 'u' * 64
    with admin(d) as a:
        create_vms(a, vms)
        p2util.person(a, user)
        with admin(d) as q:
            start = watch(q)['feed']
        for rnd in range(14):
            reqs = []
            for _ in range(100):
                for v in vms:
                    reqs.append(('booking.create', {'vm_id': v, 'minutes': 60, 'user': user}))
                    reqs.append(('booking.cancel', {'vm_id': v}))
            for err, _ in a.pipeline(reqs, timeout=LONG):
                assert err is None, err
    with admin(d) as q:
        last = watch(q)['feed']
    assert last - start == 5600, (start, last)
    with admin(d) as w:
        res = watch(w, since=start)
        assert res['feed'] == last, res
        time.sleep(1.0)                 # not reading: vmmd's buffers fill
        evs, size = [], 0
        deadline = time.monotonic() + 120
        while not evs or evs[-1]['feed'] < last:
            assert time.monotonic() < deadline, f'{len(evs)} events in 120 s'
            w.sock.settimeout(10)
            try:
                data = w.sock.recv(8192)        # a slow reader: 8 KiB at a time
            except TimeoutError:
                continue
            assert data, f'vmmd closed the watcher after {len(evs)} events'
            size += len(data)
            w.unpacker.feed(data)
            for msg in w.unpacker:
                evs.append(p2util.as_event(msg))
            time.sleep(0.002)
    assert size > 3 * 256 * 1024, size
    p2util.check_feed_seqs(evs)
    assert [e['feed'] for e in evs] == list(range(start + 1, last + 1))
    assert {e['type'] for e in evs} == {'booking.created', 'booking.ended'}, evs[:3]


def test_events_truncated(make_daemon):
    d = make_daemon(args=['--event-history', '5'])
    with admin(d) as a:
        with admin(d) as w:
            res = watch(w)
        assert res == {'feed': 0, 'oldest': None}, res
        for i in range(12):
            a.ok('group.create', {'name': f'tr-{i}'})
        with admin(d) as w:
            res = watch(w, since=0)
            last = res['feed']
            assert last == 12, res
            oldest = res['oldest']
            # the last 5 are kept (at least); the first ones are gone
            assert oldest is not None and 1 < oldest <= last - 4, res
            evs = read_events(w, p2util.until_feed(last))
            assert evs[0]['type'] == 'events.truncated' and evs[0]['oldest'] == oldest, evs
            assert evs[0].get('feed') is None and evs[0]['seq'] == 1, evs
            assert [e['feed'] for e in evs[1:]] == list(range(oldest, last + 1)), evs
            p2util.check_feed_seqs(evs)
        # asking from just before the oldest kept: nothing is missing
        with admin(d) as w:
            watch(w, since=oldest - 1)
            evs = read_events(w, p2util.until_feed(last))
            assert [e['feed'] for e in evs] == list(range(oldest, last + 1)), evs
        # asking from earlier: truncated again
        with admin(d) as w:
            watch(w, since=oldest - 2)
            evs = read_events(w, p2util.until_feed(last))
            assert evs[0]['type'] == 'events.truncated', evs
        # nothing to replay: only live events follow
        with admin(d) as w:
            watch(w, since=last, types=['group.'])
            assert quiet_events(w, 0.3) == []
            a.ok('group.create', {'name': 'tr-live'})
            evs = read_events(w, lambda e: e)
            assert [(e['feed'], e['type']) for e in evs] == [(last + 1, 'group.created')], evs
    # what is kept survives a restart
    d.restart()
    with admin(d) as w:
        res = watch(w, since=0)
        assert res['feed'] == 13 and 1 < res['oldest'] <= 13 - 4, res
        evs = read_events(w, p2util.until_feed(13))
        assert evs[0]['type'] == 'events.truncated', evs
        assert evs[0]['oldest'] == res['oldest'], (evs, res)
        assert [e['feed'] for e in evs[1:]] == list(range(res['oldest'], 14)), evs


def test_watch_params_and_types(make_daemon):
    d = make_daemon()
    with admin(d) as w:
        for bad in ({'since': -1}, {'since': 'x'}, {'types': 'booking.'}, {'types': [1]},
                    {'types': [None]}, {'since': 1.5}, {'bogus': 1}, {'token': 'x' * 43}):
            w.err('events.watch', bad, 'bad_request')
    with admin(d) as a:
        create_vms(a, ['ty-1'])
        with admin(d) as w1, admin(d) as w2:
            watch(w1, types=['booking.'])
            watch(w2, since=0, types=['group.', 'vm.cr'])
            a.ok('group.create', {'name': 'ty-g'})
            a.ok('booking.create', {'vm_id': 'ty-1', 'minutes': 30, 'user': 'daemon'})
            a.ok('vm.set', {'vm_id': 'ty-1', 'hostname': 'x'})
            a.ok('booking.cancel', {'vm_id': 'ty-1'})
            e1 = read_events(w1, lambda e: len(e) >= 2) + quiet_events(w1, 0.3)
            assert [e['type'] for e in e1] == ['booking.created', 'booking.ended'], e1
            e2 = read_events(w2, lambda e: len(e) >= 2) + quiet_events(w2, 0.3)
            assert [e['type'] for e in e2] == ['vm.created', 'group.created'], e2
            p2util.check_feed_seqs(e1)
            p2util.check_feed_seqs(e2)


def test_part1_watch_and_live_only_events(make_daemon):
    d = make_daemon()
    with admin(d) as a:
        a.ok('group.create', {'name': 'p1-before'})
    with admin(d) as w:
        res = w.ok('events.watch')
        assert set(res) <= {'feed', 'oldest'}, res
        with admin(d) as a:
            a.ok('group.create', {'name': 'p1-after'})
        with tcp(d) as c:
            c.ok('ping')
        evs = read_events(w, lambda e: {'group.created', 'conn.opened', 'conn.closed'} <=
                          {x['type'] for x in e})
        p2util.check_feed_seqs(evs)
        kinds = {e['type']: e for e in evs}
        # the group made before the watch is not replayed
        assert [e['id'] for e in evs if e['type'] == 'group.created'] == [2], evs
        assert kinds['group.created']['feed'] == 2
        assert 'feed' in kinds['conn.opened'] and kinds['conn.opened']['feed'] is None, evs
        assert kinds['conn.closed']['feed'] is None, evs


def test_failed_requests_and_bookkeeping_append_nothing(make_daemon):
    d = make_daemon()
    with admin(d) as a:
        create_vms(a, ['bk-1'])
        make_user(a, 'nb-alice')
        a.ok('booking.create', {'vm_id': 'bk-1', 'minutes': 10, 'user': 'daemon'})
    c = user_login(d, 'nb-alice')
    token = c.token
    with admin(d) as w:
        before = watch(w)['feed']
    # reads, failures, resumes and the touching of sessions
    c.err('booking.create', {'vm_id': 'bk-1', 'minutes': 5}, 'conflict')
    c.err('booking.create', {'vm_id': 'nope', 'minutes': 5}, 'not_found')
    c.err('booking.cancel', {'vm_id': 'bk-1'}, 'forbidden')
    c.ok('vm.get', {'vm_id': 'bk-1'})
    c.ok('booking.list', {})
    with resumed(d, token) as c2:
        c2.ok('whoami')
    with tcp(d) as c3:
        c3.ok('vm.list', {'filter': 'all', 'token': token})
    with admin(d) as a:
        a.err('group.create', {'name': 'g', 'vm_ids': ['nope']}, 'not_found')
        a.err('vm.create', {'vm_id': 'bk-1'}, 'exists', timeout=LONG)
        a.err('user.create', {'name': 'nb-alice', 'password': PW}, 'exists', timeout=LONG)
    c.close()
    with admin(d) as w:
        after = watch(w)['feed']
    assert after == before, f'{after - before} feed events from reads and failures'
    # a login is a change (a session starts), its last_login_at is not another
    with user_login(d, 'nb-alice'):
        pass
    with admin(d) as w:
        res = watch(w, since=after)
        evs = read_events(w, p2util.until_feed(res['feed']))
        assert [e['type'] for e in p2util.feed_events(evs)] == ['session.started'], evs


# ---------------------------------------------------------------------------
# who sees what


def visible(watcher, e):
    """From the contract: admins everything; users and viewers vm.*, group.*,
    booking.*, os.* and their own request.* and session.*; a VM session only
    events about its own VM."""
    kind, name = watcher
    t = e['type']
    if kind == 'admin':
        return True
    if kind == 'vm':
        return e.get('vm_id') == name and t.split('.')[0] in ('vm', 'booking', 'session')
    if t.split('.')[0] in ('vm', 'group', 'booking', 'os'):
        return True
    if t.startswith('request.'):
        return e.get('requester') == name
    if t.startswith('session.'):
        return e.get('user') == name
    return False


def run_scenario(d, peer_login=None):
    """Changes of every kind (bookings longer than the warning, so that no
    booking.expiring comes late from the timer); -> the admin's events (what everyone may see a
    part of), ending with a marker booking of wv-vm1."""
    with admin(d) as a:
        make_user(a, 'wv-carol', 'viewer')
        a.ok('vm.create', {'vm_id': 'wv-vm2', 'ram': 1, 'cpu': 1}, timeout=LONG)
        a.ok('vm.set', {'vm_id': 'wv-vm1', 'hostname': 'h1'})
        a.ok('vm.set', {'vm_id': 'wv-vm2', 'hostname': 'h2'})
        g = a.ok('group.create', {'name': 'wv-g', 'vm_ids': ['wv-vm1']})['id']
        a.ok('group.add', {'id': g, 'vm_ids': ['wv-vm2']})
        os_id = a.ok('os.create', {'name': 'Debian', 'version': '12'})['id']
        a.ok('os.delete', {'id': os_id})
    with user_login(d, 'wv-alice') as al:
        al.ok('booking.create', {'vm_id': 'wv-vm2', 'minutes': 30})
        al.ok('booking.renew', {'vm_id': 'wv-vm2', 'minutes': 30})
        rid = al.ok('request.create', {'description': 'alice wants', 'ram': 1, 'cpu': 1})['id']
        al.ok('request.cancel', {'id': rid})
        al.ok('logout')
    with user_login(d, 'wv-bob') as bo:
        bo.ok('booking.create', {'vm_id': 'wv-vm3', 'minutes': 30})
        bo.ok('request.create', {'description': 'bob wants', 'ram': 1, 'cpu': 1})
        bo.ok('booking.cancel', {'vm_id': 'wv-vm3'})
    with tcp(d) as anon:
        anon.err('user.auth', {'name': 'wv-bob', 'password': 'wrong-pw-9'}, 'unauthenticated',
                 timeout=LONG)
    with admin(d) as a:
        a.ok('user.set', {'name': 'wv-carol', 'role': 'user'})
        a.ok('vm.suspend', {'vm_id': 'wv-vm3'})
        a.ok('vm.approve', {'vm_id': 'wv-vm3'})
        a.ok('booking.cancel', {'vm_id': 'wv-vm2'})
        if peer_login:
            a.ok('booking.create', {'vm_id': 'wv-vm3', 'minutes': 30, 'user': peer_login})
            a.ok('booking.cancel', {'vm_id': 'wv-vm3'})
        a.ok('group.delete', {'id': g})
        a.ok('vm.delete', {'vm_id': 'wv-vm4'})
        # the marker: every watcher sees a booking of wv-vm1
        a.ok('booking.create', {'vm_id': 'wv-vm1', 'minutes': 30, 'user': 'daemon'})


def is_marker(e):
    return e['type'] == 'booking.created' and e['vm_id'] == 'wv-vm1'


def who_sees_what(d, peer=None):
    with admin(d) as a:
        create_vms(a, ['wv-vm1', 'wv-vm3', 'wv-vm4'])
        a.ok('vm.passwd', {'vm_id': 'wv-vm1', 'password': PW}, timeout=LONG)
        for n, role in (('wv-alice', 'user'), ('wv-bob', 'user'), ('wv-vic', 'viewer'),
                        ('wv-adm', 'admin')):
            make_user(a, n, role)
    watchers = {}
    watchers[('admin', 'root')] = admin(d)
    for n in ('wv-alice', 'wv-vic', 'wv-adm'):
        watchers[('admin' if n == 'wv-adm' else 'user', n)] = user_login(d, n)
    watchers[('vm', 'wv-vm1')] = p2util.vm_login(d, 'wv-vm1')
    if peer:
        watchers[('user', peer[0])] = peer[1]
    try:
        for w in watchers.values():
            res = watch(w)
            assert set(res) >= {'feed', 'oldest'}, res
        run_scenario(d, peer[0] if peer else None)
        got = {}
        for key, w in watchers.items():
            evs = read_events(w, lambda e: any(is_marker(x) for x in e), 30)
            evs += quiet_events(w, 0.3)
            p2util.check_feed_seqs(evs)
            got[key] = evs
        every = got[('admin', 'root')]
        types = {e['type'] for e in every}
        for t in ('vm.created', 'vm.updated', 'vm.deleted', 'vm.suspended', 'vm.approved',
                  'group.created', 'group.changed', 'group.deleted', 'os.created', 'os.deleted',
                  'booking.created', 'booking.renewed', 'booking.ended', 'request.created',
                  'request.cancelled', 'session.started', 'session.ended', 'user.created',
                  'user.changed', 'auth.failed', 'conn.opened', 'conn.closed'):
            assert t in types, f'the scenario made no {t}: {sorted(types)}'

        def key(e):
            return (e['type'], e.get('feed'), e.get('vm_id'), e.get('id'), e.get('user'),
                    e.get('name'), e.get('requester'))

        for (kind, name), evs in got.items():
            if kind == 'admin':
                # an admin user on TCP sees what root sees (its own watch
                # started a moment later: compare the feed events)
                want = [key(e) for e in every if e.get('feed')]
                have = [key(e) for e in evs if e.get('feed')]
                assert have == want, f'{name} (admin) saw {have}, expected {want}'
                continue
            want = [key(e) for e in every if e.get('feed') and visible((kind, name), e)]
            have = [key(e) for e in evs if e.get('feed')]
            assert have == want, f'{kind} {name}: saw\n{have}\nexpected\n{want}'
            # live-only events: conn.* and auth.failed are for admins only
            live = {e['type'] for e in evs if not e.get('feed')}
            assert not live & {'conn.opened', 'conn.closed', 'auth.failed'}, (name, live)
        vm_seen = [e['type'] for e in got[('vm', 'wv-vm1')]]
        assert 'booking.created' in vm_seen, 'the VM did not learn it was booked'
        assert all(e.get('vm_id') == 'wv-vm1' for e in got[('vm', 'wv-vm1')]), vm_seen
        alice_req = [e for e in got[('user', 'wv-alice')] if e['type'].startswith('request.')]
        assert [e['type'] for e in alice_req] == ['request.created', 'request.cancelled']
        assert all(e['requester'] == 'wv-alice' for e in alice_req), alice_req
    finally:
        for w in watchers.values():
            w.close()
    return got


def test_who_sees_what(make_daemon):
    d = make_daemon(args=['--auth-failures-per-minute', '1000'])
    who_sees_what(d)


@needs_root
def test_who_sees_what_user_peer(make_daemon):
    users = p2util.UnixUsers()
    try:
        login = users.add()
        d = make_daemon(args=['--users-group', users.group, '--auth-failures-per-minute',
                              '1000'])
        p2util.open_admin_socket(d)
        peer = p2util.connect_as(d.admin_socket, login)
        got = who_sees_what(d, (login, peer))
        mine = [e for e in got[('user', login)] if e['type'].startswith('booking.')
                and e['user'] == login]
        assert [e['type'] for e in mine] == ['booking.created', 'booking.ended'], mine
    finally:
        users.remove()


def test_replay_respects_who_sees_what(make_daemon):
    """The same rules hold for events replayed with since."""
    d = make_daemon(args=['--auth-failures-per-minute', '1000'])
    with admin(d) as a:
        create_vms(a, ['wv-vm1', 'wv-vm3', 'wv-vm4'])
        a.ok('vm.passwd', {'vm_id': 'wv-vm1', 'password': PW}, timeout=LONG)
        for n, role in (('wv-alice', 'user'), ('wv-bob', 'user'), ('wv-vic', 'viewer')):
            make_user(a, n, role)
    alice = user_login(d, 'wv-alice')
    vm = p2util.vm_login(d, 'wv-vm1')
    try:
        run_scenario(d)
        alice2 = user_login(d, 'wv-alice')
        res, every = p2util.replay(d, since=0)
        for (kind, name), conn in ((('user', 'wv-alice'), alice2), (('vm', 'wv-vm1'), vm)):
            try:
                r = watch(conn, since=0)
                want = [(e['type'], e['feed']) for e in every
                        if visible((kind, name), e) and e['feed'] <= r['feed']]
                assert want and len(want) < len(every), (name, want)
                evs = read_events(conn, lambda e: any(x.get('feed') == want[-1][1] for x in e),
                                  30)
                evs += quiet_events(conn, 0.3)
                have = [(e['type'], e['feed']) for e in evs if e.get('feed')]
                assert have == want, f'{name}: replayed\n{have}\nexpected\n{want}'
            finally:
                conn.close()
    finally:
        alice.close()
        vm.close()


# ---------------------------------------------------------------------------
# a TCP watch ends with its session


def test_tcp_watch_ends_with_its_session(make_daemon):
    d = make_daemon(args=['--auth-failures-per-minute', '1000'])
    with admin(d) as a:
        create_vms(a, ['we-1'])
        a.ok('vm.passwd', {'vm_id': 'we-1', 'password': PW}, timeout=LONG)
        make_user(a, 'we-alice')
    cases = []
    # revoked by an admin
    u = user_login(d, 'we-alice')
    watch(u, types=['session.', 'booking.'])
    with admin(d) as a:
        sid = a.ok('session.list', {'user': 'we-alice'})['sessions'][0]['id']
        a.ok('session.revoke', {'id': sid})
    cases.append((u, 'revoked', 'user'))
    # logged out through its token on another connection
    u2 = user_login(d, 'we-alice')
    watch(u2, types=['session.', 'booking.'])
    with tcp(d) as other:
        other.ok('logout', {'token': u2.token})
    cases.append((u2, 'logout', 'user'))
    # a VM whose password an admin changed
    v = p2util.vm_login(d, 'we-1')
    watch(v)
    with admin(d) as a:
        a.ok('vm.passwd', {'vm_id': 'we-1'}, timeout=LONG)
    cases.append((v, 'password', 'vm'))
    for conn, reason, kind in cases:
        evs = read_events(conn, lambda e: any(x['type'] == 'session.ended' for x in e), 10)
        ended = [e for e in evs if e['type'] == 'session.ended']
        assert ended[-1]['reason'] == reason, (reason, evs)
    # after it: nothing more, although events the session would have seen happen
    with admin(d) as a:
        a.ok('booking.create', {'vm_id': 'we-1', 'minutes': 5, 'user': 'we-alice'})
        a.ok('vm.set', {'vm_id': 'we-1', 'hostname': 'after'})
    for conn, reason, kind in cases:
        rest = quiet_events(conn, 0.5)
        assert rest == [], f'{reason}: events after the session ended: {rest}'
        # the connection itself is anonymous now (or closed)
        try:
            err, _ = conn.call('whoami', {})
            assert err and err[0] == 'unauthenticated', err
        except (Closed, OSError):
            pass
        conn.close()
    # a watch whose session goes on keeps watching
    with user_login(d, 'we-alice') as u3:
        watch(u3, types=['booking.'])
        with admin(d) as a:
            a.ok('booking.cancel', {'vm_id': 'we-1'})
        evs = read_events(u3, lambda e: e)
        assert evs[0]['type'] == 'booking.ended', evs


def test_watch_follows_a_role_change_at_once(make_daemon):
    """Role changes apply to existing sessions at once: a watching admin who
    is made a viewer no longer sees what only admins see, and a viewer made
    admin starts to."""
    d = make_daemon()
    with admin(d) as a:
        make_user(a, 'rw-adm', 'admin')
        make_user(a, 'rw-vic', 'viewer')
    adm = user_login(d, 'rw-adm')
    vic = user_login(d, 'rw-vic')
    try:
        watch(adm, types=['user.', 'group.'])
        watch(vic, types=['user.', 'group.'])
        with admin(d) as a:
            a.ok('user.set', {'name': 'rw-adm', 'role': 'viewer'})
            a.ok('user.set', {'name': 'rw-vic', 'role': 'admin'})
            a.ok('user.create', {'name': 'rw-new', 'role': 'viewer'}, timeout=LONG)
            a.ok('group.create', {'name': 'rw-marker'})
        got = {}
        for name, c in (('rw-adm', adm), ('rw-vic', vic)):
            evs = []
            deadline = time.monotonic() + 10
            while not any(e.get('type') == 'group.created' for e in evs):
                assert time.monotonic() < deadline, (name, evs)
                msg = c.read(deadline - time.monotonic())
                if msg[0] == 2:
                    evs.append(p2util.as_event(msg))
            got[name] = [(e['type'], e.get('name')) for e in evs]
        # the changes of roles themselves happened while each was what it was
        assert ('user.created', 'rw-new') not in got['rw-adm'], \
            f'a demoted admin still sees user.*: {got["rw-adm"]}'
        assert ('user.created', 'rw-new') in got['rw-vic'], \
            f'a viewer made admin does not see user.*: {got["rw-vic"]}'
    finally:
        adm.close()
        vic.close()


def test_tcp_watch_of_other_types_ends_with_its_session_too(make_daemon):
    """A watch that filters out session.* still ends with its session: it
    does not get the session.ended, and nothing after it."""
    d = make_daemon()
    with admin(d) as a:
        create_vms(a, ['wo-1'])
        make_user(a, 'wo-alice')
    u = user_login(d, 'wo-alice')
    try:
        watch(u, types=['booking.'])
        with admin(d) as a:
            a.ok('booking.create', {'vm_id': 'wo-1', 'minutes': 30, 'user': 'daemon'})
            assert read_events(u, lambda e: e)[0]['type'] == 'booking.created'
            a.ok('session.revoke', {'user': 'wo-alice'})
            a.ok('booking.cancel', {'vm_id': 'wo-1'})
        rest = quiet_events(u, 0.5)
        assert rest == [], f'events after the session ended: {rest}'
    finally:
        u.close()
