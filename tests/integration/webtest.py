# SPDX-License-Identifier: MIT
"""Harness for vmm-web's tests: vmm-web started against a real vmmd, both on
loopback with free ports, and small HTTP helpers (Python's http.client, raw
sockets for hostile input). VMM_WEB_BIN and VMM_WEB_WWW come from meson.

The part-2 fixtures (users, sessions, bookings) need a vmmd that has
user.auth, tcp_admin and trusted_proxies (issue 11): with an older vmmd they
fail at setup, saying so."""

import base64
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time

import msgpack
import pytest

import vmmtest

VMM_WEB_BIN = os.environ.get('VMM_WEB_BIN')
VMM_WEB_WWW = os.environ.get('VMM_WEB_WWW')
ADMIN_PW = 'admin-pw-1'
ALICE_PW = 'alice-pw-1'
BOB_PW = 'bob-pw-12'
HTML_NAME = '<img src=x onerror=alert(1)>'


def web_bin():
    assert VMM_WEB_BIN, 'VMM_WEB_BIN is not set (meson sets it)'
    assert os.access(VMM_WEB_BIN, os.X_OK), f'{VMM_WEB_BIN} is not executable'
    return VMM_WEB_BIN


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # list of (name, value)
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def json(self):
        assert (self.header('Content-Type') or '').startswith('application/json'), \
            f'not JSON ({self.status} {self.header("Content-Type")}): {self.body[:300]!r}'
        return json.loads(self.body)

    def error(self):
        j = self.json
        assert set(j) == {'error'} and set(j['error']) == {'code', 'message'}, j
        assert isinstance(j['error']['message'], str) and j['error']['message'], j
        return j['error']['code']

    def __repr__(self):
        return f'<{self.status} {self.body[:400]!r}>'


class Web:
    """vmm-web on a free loopback port in front of a Daemon."""

    def __init__(self, tmp, daemon=None, vmmd=None, args=(), tls=None):
        self.tmp = str(tmp)
        self.host = '127.0.0.1'
        self.port = vmmtest.free_port()
        self.vmmd = vmmd or f'{daemon.host}:{daemon.port}'
        self.tls = tls
        self.args = list(args)
        self.log_path = os.path.join(self.tmp, f'vmm-web.{self.port}.log')
        self.proc = None
        for attempt in range(3):
            try:
                self.start()
                break
            except AssertionError as e:
                # the port drawn was taken before vmm-web bound it (a test
                # running beside this one): draw again, as Daemon does
                if 'Address already in use' not in str(e) or attempt == 2:
                    raise
                self.port = vmmtest.free_port()
                self.log_path = os.path.join(self.tmp, f'vmm-web.{self.port}.log')

    def argv(self):
        a = [web_bin(), '--listen', f'{self.host}:{self.port}', '--vmmd', self.vmmd,
             '--www-dir', VMM_WEB_WWW, '--log-level', 'debug']
        if self.tls:
            a += ['--tls-cert', self.tls[0], '--tls-key', self.tls[1]]
        return a + self.args

    def start(self):
        self.logf = open(self.log_path, 'ab')
        seen = self.logf.tell()             # a restart appends: its own lines only
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                self.logf.close()
                raise AssertionError(f'vmm-web exited at start:\n{self.log_text()}')
            # its own word, not a connection: on a port taken by another
            # server, a connection would succeed and prove nothing
            with open(self.log_path, 'rb') as f:
                f.seek(seen)
                ready = b' ready: vmmd at ' in f.read()
            if ready:
                return
            time.sleep(0.02)
        raise AssertionError(f'vmm-web does not listen:\n{self.log_text()}')

    def log_text(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def stop(self):
        if not self.proc:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError(f'vmm-web did not stop within 15 s:\n{self.log_text()}')
        self.logf.close()
        text = self.log_text()
        for m in vmmtest.CRASH_MARKERS:
            assert m not in text, f'sanitizer report in the vmm-web log:\n{text}'
        assert rc == 0, f'vmm-web exited with {rc}:\n{text}'

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # HTTP

    def conn(self, timeout=10):
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls[0])
            ctx.check_hostname = False
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, auth=None, token=None, cookie=None,
                json_body=None, conn=None, timeout=10):
        h = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h.setdefault('Content-Type', 'application/json')
        if auth:
            h['Authorization'] = 'Basic ' + base64.b64encode(f'{auth[0]}:{auth[1]}'.encode()).decode()
        if token:
            h['Authorization'] = f'Bearer {token}'
        if cookie:
            h['Cookie'] = f'vmm_session={cookie}'
        c = conn or self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, r.getheaders(), data)
        finally:
            if conn is None:
                c.close()

    def get(self, path, **kw):
        return self.request('GET', path, **kw)

    def post(self, path, body=None, **kw):
        return self.request('POST', path, json_body=body if body is not None else {}, **kw)

    def raw(self, data, timeout=5, read=True, source=None):
        """Send raw bytes on a new connection; returns what comes back until
        the server closes or timeout."""
        s = socket.socket()
        if source:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.connect((self.host, self.port))
        try:
            s.sendall(data)
            out = b''
            if not read:
                return s
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            if read:
                s.close()

    def login(self, name, password, source=None):
        """POST /api/v1/login -> (Response, token or None)."""
        r = self.post('/api/v1/login', {'name': name, 'password': password})
        return r, (r.json.get('token') if r.status == 200 else None)


def status_line(raw):
    line = raw.split(b'\r\n', 1)[0]
    parts = line.split(b' ')
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class Admin:
    """vmmd's admin socket (the test runs as root: role admin)."""

    def __init__(self, daemon):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # user.create hashes a password: slow on a loaded machine
        self.sock.settimeout(60)
        self.sock.connect(daemon.admin_socket)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.next = 1

    def call(self, method, params=None):
        i = self.next
        self.next += 1
        self.sock.sendall(vmmtest.request_bytes(i, method, params))
        while True:
            for m in self.unpacker:
                if m[0] == 1 and m[1] in (i, 0):
                    return m[2], m[3]
            data = self.sock.recv(65536)
            assert data, 'vmmd closed the admin socket'
            self.unpacker.feed(data)

    def ok(self, method, params=None):
        err, res = self.call(method, params)
        assert err is None, f'{method} {params}: {err}'
        return res

    def close(self):
        self.sock.close()


def part2_config(tmp, extra=''):
    path = os.path.join(str(tmp), 'vmmd-web.conf')
    with open(path, 'w') as f:
        f.write('tcp_admin = yes\ntrusted_proxies = 127.0.0.1\n' + extra)
    return path


def vmmd_has_part2():
    out = subprocess.run([vmmtest.vmmd_bin(), '--help'], capture_output=True, text=True).stdout
    return 'trusted_proxies' in out or 'trusted-proxies' in out


def require_part2():
    assert vmmd_has_part2(), ('this vmmd has no part 2 (user.auth, tcp_admin, trusted_proxies: '
                              'issue 11); this test waits for it')


def method_calls(daemon, method):
    a = Admin(daemon)
    try:
        st = a.ok('status')
    finally:
        a.close()
    return st['methods'].get(method, {}).get('calls', 0)


def make_cert(tmp):
    key = os.path.join(str(tmp), 'key.pem')
    cert = os.path.join(str(tmp), 'cert.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key,
                    '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1',
                    '-addext', 'subjectAltName=IP:127.0.0.1'],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def make_web(tmp_path, request):
    webs = []

    def make(daemon=None, **kw):
        w = Web(tmp_path, daemon=daemon, **kw)
        webs.append(w)
        return w

    yield make
    errors = []
    for w in webs:
        try:
            w.stop()
        except AssertionError as e:
            errors.append(str(e))
    rep = getattr(request.node, 'rep_call', None)
    if rep is None or rep.failed or errors:
        for w in webs:
            print(f'--- vmm-web log {w.log_path} ---\n{w.log_text()}')
    if errors:
        pytest.fail('\n'.join(errors))


@pytest.fixture
def web(make_daemon, make_web):
    """vmm-web in front of a default vmmd (part 1 is enough)."""
    d = make_daemon()
    w = make_web(d)
    w.daemon = d
    return w


@pytest.fixture
def site(make_daemon, make_web, tmp_path):
    """Part 2: vmmd with tcp_admin and vmm-web trusted, users admin (admin),
    alice and bob (user), VMs web-01..web-04 and a group."""
    require_part2()
    d = make_daemon(args=['--config', part2_config(tmp_path)])
    a = Admin(d)
    a.ok('user.create', {'name': 'admin', 'role': 'admin', 'password': ADMIN_PW})
    a.ok('user.create', {'name': 'alice', 'role': 'user', 'password': ALICE_PW})
    a.ok('user.create', {'name': 'bob', 'role': 'user', 'password': BOB_PW})
    for i in range(1, 5):
        a.ok('vm.create', {'vm_id': f'web-0{i}', 'ram': 1024, 'cpu': 1})
    a.close()
    w = make_web(d)
    w.daemon = d
    return w
