# SPDX-License-Identifier: MIT
"""A small stand-in for vmmd's TCP side with the part 2 methods a VM agent
uses (PROTOCOL.md: vm.report, booking.get, events.watch with since/types, the
VM record's hostname/ip/os), written from the contract so that the agent's
booking hooks and reports can be tested before vmmd has part 2. It is not
vmmd: no hashing, no persistence, no limits; every request is recorded.

    srv = FakeVmmd(vms={'vm1': 'secret-pw-1'})
    srv.port ...
    srv.push_event({'type': 'booking.created', 'vm_id': 'vm1', ...})
    srv.calls('auth')
    srv.close()
"""

import secrets
import socket
import threading
import time

import msgpack


def now_ms():
    return int(time.time() * 1000)


class FakeVmmd:
    def __init__(self, vms=None, part2=True, report_errors=None):
        self.lock = threading.Lock()
        self.part2 = part2
        self.passwords = dict(vms or {})
        self.records = {}           # vm_id -> record (described VMs)
        self.tokens = {}            # token -> vm_id
        self.feed = []              # events with 'feed'
        self.log = []               # (time, conn id, method, params)
        self.watchers = []          # (conn, vm_id, types)
        self.booking = {}           # vm_id -> booking or None
        self.report_errors = list(report_errors or [])   # codes for the next vm.report calls
        self.conns = []
        self.next_conn = 1
        self.no_filter = False      # send every event to every watcher (the agent filters)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    # --- test side

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.close()

    def drop_connections(self):
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.close()

    def calls(self, method=None):
        with self.lock:
            return [(cid, m, p) for (_, cid, m, p) in self.log if method is None or m == method]

    def wait_calls(self, method, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.calls(method)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        return self.calls(method)

    def push_event(self, event):
        """Appends a feed event (a copy with 'feed', 'seq' left to the
        sender, 'time') and sends it to the watchers it concerns."""
        with self.lock:
            ev = dict(event)
            ev['feed'] = len(self.feed) + 1
            ev.setdefault('time', now_ms())
            self.feed.append(ev)
            if ev['type'] in ('booking.created', 'booking.renewed'):
                self.booking[ev['vm_id']] = {'user': ev['user'], 'started_at': ev['time'],
                                             'expires_at': ev['expires_at']}
            elif ev['type'] == 'booking.ended':
                self.booking[ev['vm_id']] = None
            watchers = list(self.watchers)
        for conn, vm_id, types in watchers:
            if self._visible(ev, vm_id, types):
                conn.notify(ev)
        return ev['feed']

    def add_feed_only(self, event):
        """A feed event nobody is told about live (made while the agent was away)."""
        with self.lock:
            ev = dict(event)
            ev['feed'] = len(self.feed) + 1
            ev.setdefault('time', now_ms())
            self.feed.append(ev)
            return ev['feed']

    # --- server side

    def resend(self, feed):
        """Sends feed event number feed to the watchers again (a duplicate)."""
        with self.lock:
            ev = self.feed[feed - 1]
            watchers = list(self.watchers)
        for conn, vm_id, types in watchers:
            if self._visible(ev, vm_id, types):
                conn.notify(ev)

    def send_raw_event(self, ev):
        """Sends ev to every watcher as is (no feed position, no filter)."""
        with self.lock:
            watchers = list(self.watchers)
        for conn, _, _ in watchers:
            conn.notify(ev)

    def _visible(self, ev, vm_id, types):
        if self.no_filter:
            return True
        if ev.get('vm_id') != vm_id:
            return False
        return not types or any(ev['type'].startswith(t) for t in types)

    def _accept(self):
        while not self.closed:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                c = _Conn(self, s, self.next_conn)
                self.next_conn += 1
                self.conns.append(c)
            threading.Thread(target=c.run, daemon=True).start()

    def handle(self, conn, method, params):
        with self.lock:
            self.log.append((time.monotonic(), conn.id, method, params))
        p = params[0] if params else {}
        if method == 'ping':
            return None, {'pong': True, 'version': 'fake', 'protocol': 1, 'time': now_ms()}
        if method == 'auth':
            vm = p.get('vm_id')
            if self.passwords.get(vm) != p.get('password'):
                return ('unauthenticated', 'wrong password or unknown VM'), None
            tok = secrets.token_urlsafe(32)[:43]
            with self.lock:
                self.tokens[tok] = vm
            conn.vm_id = vm
            return None, {'vm_id': vm, 'token': tok, 'expires_at': now_ms() + 86400000}
        if method == 'register':
            vm = p['vm_id']
            if vm in self.passwords:
                return ('exists', f'VM {vm!r} exists'), None
            self.passwords[vm] = p['password']
            self.records[vm] = self._record(vm, p)
            return None, self.records[vm]
        if method == 'resume':
            vm = self.tokens.get(p.get('token'))
            if vm is None:
                return ('unauthenticated', 'no such session'), None
            conn.vm_id = vm
            return None, {'vm_id': vm, 'expires_at': now_ms() + 86400000}
        if conn.vm_id is None:
            return ('unauthenticated', 'log in first'), None
        vm = conn.vm_id
        if method == 'vm.get':
            rec = self.records.get(vm) or self._record(vm, {})
            return None, rec
        if method == 'vm.add':
            if vm in self.records:
                return ('exists', 'described'), None
            self.records[vm] = self._record(vm, p)
            return None, self.records[vm]
        if method == 'vm.update':
            if vm not in self.records:
                return ('not_found', 'not described'), None
            rec = self.records[vm]
            for k in ('ram', 'cpu', 'disks', 'hostname', 'ip', 'os'):
                if k in p:
                    rec[k] = p[k]
            return None, rec
        if not self.part2:
            return ('unknown_method', f'no method "{method}" on this socket'), None
        if method == 'vm.report':
            with self.lock:
                code = self.report_errors.pop(0) if self.report_errors else None
            if code:
                return (code, 'at most one report a second'), None
            return None, {'booking': self.booking.get(vm)}
        if method == 'booking.get':
            return None, {'booking': self.booking.get(vm)}
        if method == 'events.watch':
            since = p.get('since')
            types = p.get('types')
            with self.lock:
                replay = [e for e in self.feed
                          if since is not None and e['feed'] > since and
                          self._visible(e, vm, types)]
                self.watchers.append((conn, vm, types))
                last = len(self.feed)
            conn.after_reply = replay
            return None, {'feed': last, 'oldest': 1 if self.feed else None}
        return ('unknown_method', f'no method "{method}" on this socket'), None

    def _record(self, vm, p):
        rec = {'vm_id': vm, 'ram': p.get('ram'), 'cpu': p.get('cpu'),
               'disks': p.get('disks', []), 'registered_at': now_ms(), 'updated_at': now_ms(),
               'last_seen_at': now_ms(), 'connected': True, 'authorized': True}
        if self.part2:
            rec.update({'hostname': p.get('hostname'), 'ip': p.get('ip', []),
                        'os': p.get('os'), 'owner': None, 'group': None, 'access': 'active',
                        'status': 'on', 'booking': self.booking.get(vm)})
        return rec

    def remove_conn(self, conn):
        with self.lock:
            if conn in self.conns:
                self.conns.remove(conn)
            self.watchers = [w for w in self.watchers if w[0] is not conn]


class _Conn:
    def __init__(self, srv, sock, cid):
        self.srv = srv
        self.sock = sock
        self.id = cid
        self.vm_id = None
        self.after_reply = None
        self.seq = 0
        self.wlock = threading.Lock()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, obj):
        data = msgpack.packb(obj, use_bin_type=True)
        with self.wlock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass

    def notify(self, ev):
        with self.wlock:
            self.seq += 1
            seq = self.seq
        self.send([2, 'event', [dict(ev, seq=seq)]])

    def run(self):
        unpacker = msgpack.Unpacker(raw=False)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                unpacker.feed(data)
                for msg in unpacker:
                    if not (isinstance(msg, list) and len(msg) == 4 and msg[0] == 0):
                        continue
                    _, msgid, method, params = msg
                    err, res = self.srv.handle(self, method, params)
                    if err:
                        self.send([1, msgid, {'code': err[0], 'message': err[1]}, None])
                    else:
                        self.send([1, msgid, None, res])
                    if self.after_reply is not None:
                        for ev in self.after_reply:
                            self.notify(ev)
                        self.after_reply = None
        except OSError:
            pass
        finally:
            self.srv.remove_conn(self)
            self.close()
