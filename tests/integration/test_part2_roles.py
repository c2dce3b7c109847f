# SPDX-License-Identifier: MIT
"""Who may call what: a role x method matrix over both sockets, generated from
the contract (PROTOCOL.md), never from vmmd's code.

The method names, the sockets they are served on and their minimum roles are
parsed from PROTOCOL.md's three method tables ("Client methods (TCP)",
"Admin methods (Unix socket)" and part 2's "Methods (both sockets unless
marked; minimum role in brackets)"). The rules that the contract states in
prose ("Principals and roles", "What each kind of session may call on TCP")
are transcribed below as data, each with the sentence it comes from; a test
checks that the transcription names only methods the tables define.

Callers: on TCP an anonymous connection, a VM session, and user sessions of
roles viewer, user and admin, with tcp_admin no and then yes (the same state
directory, restarted); on the admin socket an admin peer (root) and a `user`
peer (a Unix user made for the test, a member of --users-group). Every
caller calls every method with parameters that are valid, so a refusal is the
only error the call may give where the caller is below the method; where it
is allowed, the call must reach the method (its own answer: a result,
not_found, exists or conflict, fixed per probe)."""

import os
import re
import tempfile

import pytest

import p2util
from p2util import LONG, PW, REFUSALS, admin, connect_as, make_user, tcp

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='needs root (useradd, setpriv)')

# ---------------------------------------------------------------------------
# the contract's tables, parsed


def table_after(text, heading):
    """The first-column cells of the Markdown table that follows heading."""
    lines = text.split('\n')
    try:
        i = next(n for n, l in enumerate(lines) if l.strip() == heading)
    except StopIteration:
        raise AssertionError(f'PROTOCOL.md has no heading {heading!r}')
    cells = []
    started = False
    for l in lines[i + 1:]:
        if l.startswith('|'):
            started = True
            cells.append(l.split('|')[1].strip())
        elif started:
            break
        elif l.startswith('#'):
            break
    assert len(cells) > 2, f'no table after {heading!r}'
    assert re.fullmatch(r'-+', cells[1]), cells[:2]
    return cells[2:]


def parse_contract(path=p2util.PROTOCOL_MD):
    assert os.path.isfile(path), \
        f'the contract is not at {path} (the checkout needs ../shared, as CI has it)'
    with open(path, encoding='utf-8') as f:
        text = f.read()
    client = set()
    for cell in table_after(text, '## Client methods (TCP)'):
        client.update(re.findall(r'`([a-z._]+)`', cell))
    admin_ = set()
    for cell in table_after(text, '## Admin methods (Unix socket)'):
        admin_.update(re.findall(r'`([a-z._]+)`', cell))
    part2 = {}
    for cell in table_after(text, '### Methods (both sockets unless marked; minimum role in '
                                  'brackets)'):
        pending = []
        for name, role, marks in re.findall(r'`([a-z._]+)`|\[(\w+)\]|\(([^)]*)\)', cell):
            if name:
                pending.append(name)
                part2[name] = {'role': None, 'marks': set()}
            elif role:
                for n in pending:
                    part2[n]['role'] = role
                pending = []
            else:
                for n in pending:
                    part2[n]['marks'] = {m.strip() for m in marks.split(',')}
        # a name with neither bracket nor mark keeps role None, marks {}
    return client, admin_, part2


CLIENT, ADMIN_TABLE, PART2 = parse_contract()

# ---------------------------------------------------------------------------
# the contract's prose, transcribed

ROLES = ('viewer', 'user', 'admin')
# "Before `auth` or `resume`, a connection may call only `ping`, `register`,
# `auth` and `resume`." (Client methods); `user.auth` "attaches like `auth`"
# (part 2 table). These serve a connection in any state.
LOGIN = {'ping', 'register', 'auth', 'resume', 'user.auth'}
# "A **VM session**: part 1's client methods, and of part 2 only `whoami`,
# `vm.get` (itself), `vm.report`, `booking.get` (itself) and `events.watch`"
VM_PART2 = {'whoami', 'vm.get', 'vm.report', 'booking.get', 'events.watch'}
# "A **user session**: `whoami`, `passwd`, `logout`, `resume`, and the part 2
# methods its role allows; part 1's VM-only methods (`vm.add`, `vm.update`)
# are `forbidden` to it."
USER_ALWAYS = {'whoami', 'passwd', 'logout', 'resume'}
VM_ONLY = {'vm.add', 'vm.update'}
# "Part 1's admin methods stay off TCP (`unknown_method`, as in part 1) unless
# `tcp_admin = yes` ...: then `vm.create`, `vm.delete`, `vm.passwd`,
# `session.list` and `session.revoke` are served on TCP to `admin` users and
# `forbidden` to other sessions; `status`, `conn.list`, `conn.kill`,
# `backup` and `shutdown` never leave the admin socket."
TCP_ADMIN = {'vm.create', 'vm.delete', 'vm.passwd', 'session.list', 'session.revoke'}
NEVER_TCP = {'status', 'conn.list', 'conn.kill', 'backup', 'shutdown'}
# Roles table: "viewer | read: VMs, disks, ..." -- part 1's reads; part 1's
# other admin methods are "everything" (admin).
PART1_READS = {'vm.list', 'vm.get', 'disk.list'}
# "An admin method called by a `user` peer is `forbidden`."  "On the admin
# socket, admin peers (part 1) have role `admin` ...; members of the users
# group ... with role `user`."


def rank(role):
    return ROLES.index(role)


def min_role(m):
    """The least role of a person that may call m (None: no person may)."""
    if m in PART2:
        if 'VM session' in PART2[m]['marks']:
            return None
        return PART2[m]['role'] or 'viewer'
    if m in PART1_READS or m in USER_ALWAYS or m in LOGIN:
        return 'viewer'
    if m in VM_ONLY:
        return None
    if m in ADMIN_TABLE:
        return 'admin'
    raise AssertionError(f'{m}: no role in the contract')


def on_admin_socket(m):
    if m in ADMIN_TABLE:
        return True
    return m in PART2 and 'TCP' not in PART2[m]['marks']


def on_tcp(m, tcp_admin):
    if m in NEVER_TCP:
        return False
    if m in TCP_ADMIN:
        return tcp_admin
    if m in CLIENT:
        return True
    return m in PART2        # "both sockets unless marked"; marked (TCP) are TCP


def expected(caller, m, tcp_admin):
    """'allowed' or the refusal code, from the contract."""
    if caller in ('peer_admin', 'peer_user'):
        if not on_admin_socket(m):
            return 'unknown_method'
        role = 'admin' if caller == 'peer_admin' else 'user'
        need = min_role(m)
        return 'allowed' if need is not None and rank(role) >= rank(need) else 'forbidden'
    if not on_tcp(m, tcp_admin):
        return 'unknown_method'
    if m in LOGIN:
        return 'allowed'
    if caller == 'anon':
        return 'unauthenticated'
    if caller == 'vm':
        return 'allowed' if m in CLIENT or m in VM_PART2 else 'forbidden'
    if m in USER_ALWAYS:
        return 'allowed'
    need = min_role(m)
    return 'allowed' if need is not None and rank(caller) >= rank(need) else 'forbidden'


ALL_METHODS = sorted(CLIENT | ADMIN_TABLE | set(PART2))


def test_contract_tables_parse():
    # the parse found the tables it must (a broken parse must not make an
    # empty matrix that passes)
    assert {'ping', 'register', 'auth', 'resume', 'vm.add', 'vm.get', 'vm.update', 'vm.list',
            'disk.list', 'passwd', 'logout'} <= CLIENT, CLIENT
    assert {'status', 'vm.create', 'shutdown', 'backup', 'events.watch'} <= ADMIN_TABLE
    assert PART2['user.create']['role'] == 'admin'
    assert PART2['user.get']['role'] == 'admin' and PART2['user.list']['role'] == 'admin'
    assert PART2['os.list']['role'] == 'viewer' and PART2['os.delete']['role'] == 'admin'
    assert PART2['booking.create']['role'] == 'user'
    assert PART2['vm.report']['marks'] == {'TCP', 'VM session'}
    assert PART2['user.auth']['marks'] == {'TCP'}
    assert PART2['whoami'] == {'role': None, 'marks': set()}
    assert len(PART2) >= 38, sorted(PART2)
    # the transcribed prose names only methods of the tables
    for s in (LOGIN, VM_PART2, USER_ALWAYS, VM_ONLY, TCP_ADMIN, NEVER_TCP, PART1_READS):
        assert s <= set(ALL_METHODS), s - set(ALL_METHODS)
    # every part-1 admin method is placed by the tcp_admin sentence, or is a
    # read that part 2 opens to everyone
    assert ADMIN_TABLE - PART1_READS - {'events.watch'} == TCP_ADMIN | NEVER_TCP
    # every method has a role or is VM-only
    for m in ALL_METHODS:
        assert m in VM_ONLY or 'VM session' in PART2.get(m, {}).get('marks', ()) or \
            min_role(m) in ROLES, m


# ---------------------------------------------------------------------------
# probes: valid parameters per method, and what an allowed caller gets

BIG = 999999


def probes(ctx, caller):
    """method -> (params, allowed outcome: 'ok' or an error code, or a set)."""
    own_pw = ctx['pw'].get(caller, PW)
    vm_get = ({}, 'ok') if caller == 'vm' else ({'vm_id': 'mx-vm'}, 'ok')
    return {
        'ping': ({}, 'ok'),
        'register': ({'vm_id': 'mx-vm', 'password': PW, 'ram': 1, 'cpu': 1}, 'exists'),
        'vm.add': ({'vm_id': 'mx-vm', 'ram': 1, 'cpu': 1, 'disks': []}, 'exists'),
        'vm.get': vm_get,
        'vm.update': ({'cpu': 1}, 'ok'),
        'vm.list': ({'filter': 'all'}, 'ok'),
        'disk.list': ({}, 'ok'),
        'passwd': ({'password': own_pw, 'new_password': own_pw}, 'ok'),
        'status': ({}, 'ok'),
        'vm.create': ({'vm_id': 'mx-vm'}, 'exists'),
        'vm.delete': ({'vm_id': 'mx-nope'}, 'not_found'),
        'vm.passwd': ({'vm_id': 'mx-nope'}, 'not_found'),
        'session.list': ({}, 'ok'),
        'session.revoke': ({'vm_id': 'mx-nope'}, {'ok', 'not_found'}),
        'conn.list': ({}, 'ok'),
        'conn.kill': ({'id': 4000000000}, 'not_found'),
        'whoami': ({}, 'ok'),
        'user.create': ({'name': 'mx-admin'}, 'exists'),
        'user.get': ({'name': 'mx-admin'}, 'ok'),
        'user.list': ({}, 'ok'),
        'user.set': ({'name': 'mx-nobody', 'role': 'viewer'}, 'not_found'),
        'user.delete': ({'name': 'mx-nobody'}, 'not_found'),
        'vm.set': ({'vm_id': 'mx-nope', 'hostname': 'h1'}, 'not_found'),
        'vm.approve': ({'vm_id': 'mx-nope'}, 'not_found'),
        'vm.suspend': ({'vm_id': 'mx-nope'}, 'not_found'),
        'vm.report': ({'hostname': 'mx-host'}, 'ok'),
        'vm.monitor': ({'vm_id': 'mx-vm'}, 'ok'),
        'group.create': ({'name': 'mx-group'}, 'exists'),
        'group.get': ({'id': ctx['gid']}, 'ok'),
        'group.list': ({}, 'ok'),
        'group.rename': ({'id': BIG, 'name': 'zz'}, 'not_found'),
        'group.add': ({'id': BIG, 'vm_ids': ['mx-free']}, 'not_found'),
        'group.remove': ({'vm_id': 'mx-free'}, 'not_found'),
        'group.delete': ({'id': BIG}, 'not_found'),
        'booking.create': ({'vm_id': 'mx-nope', 'minutes': 5}, 'not_found'),
        'booking.renew': ({'vm_id': 'mx-nope', 'minutes': 5}, 'not_found'),
        'booking.cancel': ({'vm_id': 'mx-nope'}, 'not_found'),
        'booking.get': ({'vm_id': 'mx-vm'}, 'ok'),
        'booking.list': ({}, 'ok'),
        'booking.history': ({}, 'ok'),
        'os.create': ({'name': 'mx-os', 'version': '1'}, 'ok'),
        'os.list': ({}, 'ok'),
        'os.delete': ({'id': BIG}, 'not_found'),
        'request.create': ({'description': 'mx', 'ram': 1, 'cpu': 1}, 'ok'),
        'request.list': ({}, 'ok'),
        'request.approve': ({'id': ctx['rid'], 'vm_ids': ['mx-new']}, 'conflict'),
        'request.reject': ({'id': ctx['rid'], 'reason': 'x'}, 'conflict'),
        'request.cancel': ({'id': BIG}, 'not_found'),
    }


# Probes that need a connection of their own (they change the connection's
# state or end the caller's session) or a descriptor: run apart.
SPECIAL = {'auth', 'user.auth', 'resume', 'logout', 'events.watch', 'backup', 'shutdown'}
# Probes that hash a password when allowed (slow): not repeated through a token.
HASHING = {'passwd', 'vm.create', 'user.create', 'vm.passwd'}


def outcome(err):
    return 'ok' if err is None else err[0]


class Matrix:
    def __init__(self):
        self.rows = []          # (phase, caller, method, expected, got, message)

    def check(self, phase, caller, m, allowed_outcome, err, res=None):
        exp = expected(caller.split(':')[0], m, phase == 'tcp_admin=yes')
        got = outcome(err)
        if exp == 'allowed':
            want = allowed_outcome if isinstance(allowed_outcome, set) else {allowed_outcome}
            good = got in want
        else:
            want = {exp}
            good = got == exp
        self.rows.append((phase, caller, m, '|'.join(sorted(want)), got,
                          err[1] if err else '', good))

    def failures(self):
        return [r for r in self.rows if not r[-1]]

    def report(self):
        bad = self.failures()
        lines = [f'{len(bad)} of {len(self.rows)} cells differ from the contract:']
        for phase, caller, m, want, got, msg, _ in bad:
            lines.append(f'  [{phase}] {caller:>12} {m:<16} want {want:<24} got {got} ({msg})')
        return '\n'.join(lines)


def run_tcp_caller(d, mx, phase, ctx, caller):
    """Every method as one TCP caller (anon, vm, viewer, user, admin)."""
    token = ctx['tokens'].get(caller)

    def conn():
        c = tcp(d)
        if token:
            c.ok('resume', {'token': token})
        return c

    pr = probes(ctx, caller)
    with conn() as c:
        for m in ALL_METHODS:
            if m in SPECIAL:
                continue
            params, allowed = pr[m]
            err, res = c.call(m, params, timeout=LONG)
            mx.check(phase, caller, m, allowed, err, res)
        # the same through a stateless token on an anonymous connection
        if token:
            with tcp(d) as s:
                for m in ALL_METHODS:
                    if m in SPECIAL or m in LOGIN or m in HASHING or m == 'vm.report':
                        continue
                    params, allowed = pr[m]
                    err, res = s.call(m, dict(params, token=token), timeout=LONG)
                    mx.check(phase, caller + ':token', m, allowed, err, res)
    # events.watch: its connection then carries notifications
    with conn() as c:
        err, res = c.call('events.watch', {'types': ['zz.']})
        mx.check(phase, caller, 'events.watch', 'ok', err, res)
    # backup and shutdown never reach TCP: unknown_method, whatever the state
    with conn() as c:
        for m in ('backup', 'shutdown'):
            err, res = c.call(m, {})
            mx.check(phase, caller, m, 'ok', err, res)
    # resume: attaches this connection to a session
    with conn() as c:
        err, res = c.call('resume', {'token': ctx['tokens']['vm']})
        mx.check(phase, caller, 'resume', 'ok', err, res)
    # auth switches the connection to another VM's session
    with conn() as c:
        err, res = c.call('auth', {'vm_id': 'mx-auth', 'password': PW}, timeout=LONG)
        mx.check(phase, caller, 'auth', 'ok', err, res)
    # logout, then user.auth (or auth for the VM) logging in as itself again
    # and logout of that new session: allowed for every session kind
    with conn() as c:
        if caller == 'anon':
            err, res = c.call('logout', {})
            mx.check(phase, caller, 'logout', 'ok', err, res)
            err, res = c.call('user.auth', {'name': 'mx-viewer', 'password': PW}, timeout=LONG)
            mx.check(phase, caller, 'user.auth', 'ok', err, res)
        else:
            if caller == 'vm':
                err, res = c.call('user.auth', {'name': 'mx-viewer', 'password': PW},
                                  timeout=LONG)
                mx.check(phase, caller, 'user.auth', 'ok', err, res)
                with tcp(d) as c2:
                    c2.ok('resume', {'token': token})
                    c2.ok('auth', {'vm_id': 'mx-vm', 'password': PW}, timeout=LONG)
                    err, res = c2.call('logout', {})
                    mx.check(phase, caller, 'logout', 'ok', err, res)
            else:
                err, res = c.call('user.auth', {'name': f'mx-{caller}', 'password': PW},
                                  timeout=LONG)
                mx.check(phase, caller, 'user.auth', 'ok', err, res)
                err, res = c.call('logout', {})
                mx.check(phase, caller, 'logout', 'ok', err, res)
    # the caller's own session survived all of it
    if token:
        with conn() as c:
            assert c.ok('whoami')['kind'] in ('vm', 'user'), caller


def run_admin_caller(d, mx, phase, ctx, caller, connect, backup_path):
    """Every method as an admin-socket peer; shutdown is left to the caller
    for an admin (it stops the daemon)."""
    pr = probes(ctx, caller)
    with connect() as a:
        for m in ALL_METHODS:
            if m in SPECIAL:
                continue
            params, allowed = pr[m]
            err, res = a.call(m, params, timeout=LONG)
            mx.check(phase, caller, m, allowed, err, res)
        for m, params in (('auth', {'vm_id': 'mx-auth', 'password': PW}),
                          ('user.auth', {'name': 'mx-viewer', 'password': PW}),
                          ('resume', {'token': ctx['tokens']['vm']}), ('logout', {})):
            err, res = a.call(m, params, timeout=LONG)
            mx.check(phase, caller, m, 'ok', err, res)
        # backup: the descriptor travels with the request
        fd = os.open(backup_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            err, res = a.call_with_fds('backup', {}, [fd], timeout=LONG)
        finally:
            os.close(fd)
        mx.check(phase, caller, 'backup', 'ok', err, res)
        if caller == 'peer_user':
            err, res = a.call('shutdown', {})
            mx.check(phase, caller, 'shutdown', 'ok', err, res)
    with connect() as a:
        err, res = a.call('events.watch', {'types': ['zz.']})
        mx.check(phase, caller, 'events.watch', 'ok', err, res)


def setup_world(d):
    """The objects the probes name; -> ctx (tokens of every TCP caller)."""
    ctx = {'tokens': {}, 'pw': {}}
    with admin(d) as a:
        for role in ROLES:
            make_user(a, f'mx-{role}', role)
        p2util.create_vms(a, ['mx-free'])
        a.ok('vm.create', {'vm_id': 'mx-auth', 'password': PW}, timeout=LONG)
        ctx['gid'] = a.ok('group.create', {'name': 'mx-group'})['id']
        with tcp(d) as c:
            c.register('mx-vm', password=PW)
            ctx['tokens']['vm'] = c.ok('auth', {'vm_id': 'mx-vm', 'password': PW},
                                       timeout=LONG)['token']
        for role in ROLES:
            with tcp(d) as c:
                ctx['tokens'][role] = c.ok('user.auth', {'name': f'mx-{role}', 'password': PW},
                                           timeout=LONG)['token']
        with tcp(d) as c:
            c.ok('resume', {'token': ctx['tokens']['user']})
            rid = c.ok('request.create', {'description': 'to reject', 'ram': 1,
                                          'cpu': 1})['id']
        a.ok('request.reject', {'id': rid, 'reason': 'no'})
        ctx['rid'] = rid
    return ctx


@needs_root
def test_role_method_matrix(make_daemon):
    users = p2util.UnixUsers()
    try:
        peer = users.add()
        d = make_daemon(args=['--users-group', users.group, '--tcp-admin', 'no',
                              '--sessions-per-vm', '64', '--auth-failures-per-minute', '1000'])
        p2util.open_admin_socket(d)
        ctx = setup_world(d)
        mx = Matrix()
        backup = os.path.join(tempfile.mkdtemp(prefix='vmm', dir='/tmp'), 'b.mdb')
        for phase in ('tcp_admin=no', 'tcp_admin=yes'):
            if phase == 'tcp_admin=yes':
                d.args = [x if x != 'no' else 'yes' for x in d.args]
                d.restart()
                p2util.open_admin_socket(d)
            for caller in ('anon', 'vm') + ROLES:
                run_tcp_caller(d, mx, phase, ctx, caller)
            if phase == 'tcp_admin=no':
                run_admin_caller(d, mx, phase, ctx, 'peer_user',
                                 lambda: connect_as(d.admin_socket, peer), backup)
                run_admin_caller(d, mx, phase, ctx, 'peer_admin', lambda: admin(d), backup)
        # shutdown, allowed to an admin peer, stops the daemon
        with admin(d) as a:
            err, res = a.call('shutdown', {})
            mx.check('tcp_admin=yes', 'peer_admin', 'shutdown', 'ok', err, res)
        proc = d.proc
        assert proc.wait(15) == 0, 'vmmd did not stop with 0 after shutdown'
        assert not mx.failures(), mx.report()
        # nothing was left untried: every (caller, method) cell of both phases
        cells = {(r[0], r[1], r[2]) for r in mx.rows}
        for phase in ('tcp_admin=no', 'tcp_admin=yes'):
            for caller in ('anon', 'vm') + ROLES:
                for m in ALL_METHODS:
                    assert (phase, caller, m) in cells, (phase, caller, m)
        for caller in ('peer_user', 'peer_admin'):
            for m in ALL_METHODS:
                assert ('tcp_admin=no', caller, m) in cells or \
                    (m == 'shutdown' and caller == 'peer_admin'), (caller, m)
    finally:
        users.remove()


@needs_root
def test_user_peer_outside_the_users_group_is_refused(make_daemon):
    users = p2util.UnixUsers()
    try:
        member = users.add()
        stranger = users.add(member=False)
        d = make_daemon(args=['--users-group', users.group])
        p2util.open_admin_socket(d)
        with connect_as(d.admin_socket, member) as a:
            assert a.ok('whoami') == {'kind': 'user', 'name': member, 'role': 'user'}
        with connect_as(d.admin_socket, stranger) as a:
            closed, msgs = a.wait_closed(10)
            assert closed and len(msgs) == 1, msgs
            assert msgs[0][1] == 0 and msgs[0][2]['code'] == 'forbidden', msgs
        # a users group that does not exist means nobody
        d2 = make_daemon(args=['--users-group', users.group + '-none'])
        p2util.open_admin_socket(d2)
        with connect_as(d2.admin_socket, member) as a:
            closed, msgs = a.wait_closed(10)
            assert closed and len(msgs) == 1 and msgs[0][2]['code'] == 'forbidden', msgs
    finally:
        users.remove()


# bad_request is first in the errors table: it wins over unauthenticated and
# forbidden whoever calls ("checked ... after the params are validated")
BAD_PARAMS = {
    'user.create': {'name': 'bad name!'},
    'user.list': {'limit': 0},
    'vm.set': {'vm_id': 'mx-free', 'ram': 0},
    'group.create': {'name': ''},
    'booking.create': {'vm_id': 'mx-free', 'minutes': 0},
    'booking.list': {'limit': 10001},
    'os.create': {'name': 'x'},
    'request.create': {'description': 'x', 'ram': 1, 'cpu': 1, 'count': 17},
    'request.approve': {'id': 1, 'vm_ids': ['bad id!']},
    'vm.monitor': {'vm_id': 'bad id!'},
    'events.watch': {'since': -1},
    'whoami': {'bogus': 1},
}


def test_bad_request_wins_over_refusals(make_daemon):
    d = make_daemon(args=['--auth-failures-per-minute', '1000'])
    with admin(d) as a:
        make_user(a, 'br-viewer', 'viewer')
        a.ok('vm.create', {'vm_id': 'br-vm', 'password': PW}, timeout=LONG)
    callers = {'anon': tcp(d), 'viewer': p2util.user_login(d, 'br-viewer'),
               'vm': p2util.vm_login(d, 'br-vm')}
    try:
        for who, c in callers.items():
            for m, params in BAD_PARAMS.items():
                exp = expected(who, m, False)
                err, res = c.call(m, params, timeout=LONG)
                assert err and err[0] == 'bad_request', \
                    f'{who} {m} {params}: {err or res} (a good call would be {exp})'
    finally:
        for c in callers.values():
            c.close()
