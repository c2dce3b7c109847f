# SPDX-License-Identifier: MIT
"""vmmbench -t http-get, the keep-alive HTTP workload web-compare measures the
gateway with: against a small HTTP server here (on loopback, answering 200 and
then 404, or closing, or with bodies vmmbench must refuse) whose own counts
the report must match exactly, and for one second against a real vmm-web in
front of a real vmmd, whose vm.get count must match the requests vmmbench
says it made. VMMBENCH_BIN comes from meson."""

import json
import os
import socket
import socketserver
import subprocess
import threading

import pytest

from webtest import ALICE_PW, Admin, make_web, method_calls, site  # noqa: F401

VMMBENCH_BIN = os.environ.get('VMMBENCH_BIN')
TOKEN = 'bench-token-123'


def vmmbench(*args, timeout=60):
    assert VMMBENCH_BIN, 'VMMBENCH_BIN is not set (meson sets it)'
    assert os.access(VMMBENCH_BIN, os.X_OK), f'{VMMBENCH_BIN} is not executable'
    return subprocess.run([VMMBENCH_BIN, *args], capture_output=True, text=True, timeout=timeout)


def one_result(p):
    assert p.stdout.strip(), f'no output (exit {p.returncode}): {p.stderr}'
    out = json.loads(p.stdout)
    assert len(out) == 1, out
    return out[0]


class Handler(socketserver.StreamRequestHandler):
    """Reads request heads one after another on a kept connection and answers
    each with what the server's respond(n) says for its n-th request."""

    def handle(self):
        srv = self.server
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with srv.lock:
            srv.connections += 1
        while True:
            head = b''
            while not head.endswith(b'\r\n\r\n'):
                line = self.rfile.readline(65537)
                if not line:
                    return
                head += line
            with srv.lock:
                srv.count += 1
                n = srv.count
                srv.heads.append(head.decode('latin-1').split('\r\n')[:-2])
            data, close = srv.respond(n)
            self.wfile.write(data)      # one write: no Nagle wait between head and body
            if close:
                return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, respond):
        super().__init__(('127.0.0.1', 0), Handler)
        self.respond = respond
        self.lock = threading.Lock()
        self.count = 0
        self.connections = 0
        self.heads = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server_address[1]

    def stop(self):
        self.shutdown()
        self.server_close()
        self.thread.join(10)


@pytest.fixture
def serve():
    servers = []

    def make(respond):
        s = Server(respond)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def response(status, body=b'{"ok":true}', extra=''):
    reason = {200: 'OK', 404: 'Not Found'}.get(status, 'Other')
    return (f'HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n'
            f'Content-Length: {len(body)}\r\n{extra}\r\n').encode() + body


def test_counts_requests_and_non_200_as_errors(serve):
    ok_first = 100
    srv = serve(lambda n: (response(200 if n <= ok_first else 404), False))
    url = f'http://127.0.0.1:{srv.port}/api/v1/vms/web-01?x=1#fragment'
    p = vmmbench('-t', 'http-get', '--url', url, '--header', f'Authorization: Bearer {TOKEN}',
                 '-c', '2', '-n', '300', '--seconds', '30', '--json')
    assert p.returncode == 0, p.stderr
    r = one_result(p)
    assert r['server'] == 'http' and r['test'] == 'http-get'
    assert r['request'] == 'GET /api/v1/vms/web-01?x=1' and r['url'] == url
    # every request the server answered is counted, and each 404 is an error
    assert srv.count == 300 and r['requests'] == 300, (srv.count, r)
    assert r['errors'] == 200 and r['error_responses'] == 200, r
    assert r['lost'] == 0 and r['reconnects'] == 0, r
    assert r['first_error'] == 'HTTP 404', r
    assert srv.connections == 2, srv.connections
    assert 0 < r['p50_ms'] <= r['p99_ms'] <= r['max_ms'], r
    # what reached the server: the request line, Host and the given header
    for head in srv.heads:
        assert head[0] == 'GET /api/v1/vms/web-01?x=1 HTTP/1.1', head
        fields = {k.lower(): v for k, v in (x.split(': ', 1) for x in head[1:])}
        assert fields['host'] == f'127.0.0.1:{srv.port}', head
        assert fields['authorization'] == f'Bearer {TOKEN}', head


def test_text_report_says_errors(serve):
    srv = serve(lambda n: (response(404), False))
    p = vmmbench('-t', 'http-get', '--url', f'http://127.0.0.1:{srv.port}/nope', '-c', '1',
                 '-n', '20', '--seconds', '30')
    assert p.returncode == 0, p.stderr
    assert 'http http-get (GET /nope): 1 clients' in p.stdout, p.stdout
    assert '20 requests in' in p.stdout, p.stdout
    assert 'errors: 20 (first: HTTP 404)' in p.stdout, p.stdout
    assert srv.count == 20


def test_connection_close_reconnects(serve):
    # every 10th response closes its connection, as nginx does after keepalive_requests
    srv = serve(lambda n: (response(200, extra='Connection: close\r\n' if n % 10 == 0 else ''),
                           n % 10 == 0))
    p = vmmbench('-t', 'http-get', '--url', f'http://127.0.0.1:{srv.port}/', '-c', '1',
                 '-n', '100', '--seconds', '30', '--json')
    assert p.returncode == 0, p.stderr
    r = one_result(p)
    assert r['requests'] == 100 and r['errors'] == 0, r
    assert r['reconnects'] == 9, r      # none after the last response
    assert srv.connections == 10, srv.connections


@pytest.mark.parametrize('answer,words', [
    (b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
     'a chunked response (Transfer-Encoding: chunked)'),
    (b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok',
     'a response without Content-Length'),
    (b'SSH-2.0-OpenSSH_9.2\r\n\r\n', 'not an HTTP/1.x response'),
])
def test_responses_it_cannot_frame_are_refused(serve, answer, words):
    srv = serve(lambda n: (answer, False))
    p = vmmbench('-t', 'http-get', '--url', f'http://127.0.0.1:{srv.port}/', '-c', '1',
                 '-n', '10', '--seconds', '5', '--json')
    assert p.returncode != 0, p.stdout
    r = one_result(p)
    assert r['requests'] == 0 and r['errors'] == 1 and r['lost'] == 1, r
    assert r['first_error'].startswith(words), r
    assert srv.count == 1


@pytest.mark.parametrize('args,words', [
    (['--url', 'http://192.0.2.1:80/'], 'not a loopback address'),
    (['--url', 'https://127.0.0.1:1/'], 'https is not supported'),
    (['--url', 'ftp://127.0.0.1/'], 'give http://HOST:PORT/PATH'),
    (['--url', 'http://user:pw@127.0.0.1:1/'], "give --header 'Authorization: ...'"),
    (['--url', 'http://127.0.0.1:1/a b'], 'needs %-encoding'),
    (['--url', 'http://127.0.0.1:1/', '--header', 'no colon'], "give 'Name: value'"),
    (['--url', 'http://127.0.0.1:1/', '--header', 'Connection: close'], 'sets this one itself'),
    ([], 'http-get needs --url'),
    (['--url', 'http://127.0.0.1:1/', '--server', '127.0.0.1:1'], 'not\n--server'),
])
def test_bad_arguments_refused(args, words):
    p = vmmbench('-t', 'http-get', *args)
    assert p.returncode != 0, p.stdout
    assert words.replace('\n', ' ') in p.stderr, p.stderr
    assert p.stdout == ''


def test_http_get_runs_alone():
    p = vmmbench('-t', 'get,http-get', '--url', 'http://127.0.0.1:1/')
    assert p.returncode != 0 and 'http-get runs alone' in p.stderr, p.stderr
    p = vmmbench('-t', 'get', '--url', 'http://127.0.0.1:1/')
    assert p.returncode != 0 and '--url and --header are for -t http-get' in p.stderr, p.stderr


def test_against_vmm_web_every_request_reaches_vmmd(site):
    r, token = site.login('alice', ALICE_PW)
    assert r.status == 200, r
    base = f'http://{site.host}:{site.port}'
    before = method_calls(site.daemon, 'vm.get')
    p = vmmbench('-t', 'http-get', '--url', f'{base}/api/v1/vms/web-01', '--header',
                 f'Authorization: Bearer {token}', '-c', '2', '-n', '100000000', '--seconds', '1',
                 '--json')
    assert p.returncode == 0, p.stderr
    ok = one_result(p)
    after = method_calls(site.daemon, 'vm.get')
    assert ok['errors'] == 0 and ok['requests'] > 0, ok
    # one vm.get in vmmd per GET through the gateway
    assert after - before == ok['requests'], (before, after, ok)
    assert 0.9 <= ok['seconds'] <= 5, ok

    # a VM that does not exist, and no credentials: every answer an error
    p = vmmbench('-t', 'http-get', '--url', f'{base}/api/v1/vms/nope', '--header',
                 f'Authorization: Bearer {token}', '-c', '1', '-n', '50', '--seconds', '30',
                 '--json')
    assert p.returncode == 0, p.stderr
    r = one_result(p)
    assert r['requests'] == 50 and r['errors'] == 50 and r['first_error'] == 'HTTP 404', r
    p = vmmbench('-t', 'http-get', '--url', f'{base}/api/v1/vms/web-01', '-c', '1', '-n', '50',
                 '--seconds', '30', '--json')
    assert p.returncode == 0, p.stderr
    r = one_result(p)
    assert r['requests'] == 50 and r['errors'] == 50 and r['first_error'] == 'HTTP 401', r
