# SPDX-License-Identifier: MIT
"""vmm-web's documents in step with its code: the route table (vmm-web
--list-routes, printed from the one handler table) against the OpenAPI
document that ships with it and against vmm-web(8); every option of --help
in the man page; every $ref of the document resolvable."""

import json
import os
import re
import subprocess

from webtest import VMM_WEB_WWW, web_bin

MAN = os.environ.get('VMM_WEB_MAN') or os.path.join(os.path.dirname(__file__), '..', '..',
                                                       'tools', 'vmm-web', 'vmm-web.8')


def route_table():
    out = subprocess.run([web_bin(), '--list-routes'], capture_output=True, text=True, check=True)
    rows = []
    for line in out.stdout.splitlines():
        method, path, rpc, flags = line.split()
        rows.append((method, path, rpc, set(flags.split(','))))
    assert len(rows) > 40, out.stdout
    return rows


def openapi():
    with open(os.path.join(VMM_WEB_WWW, 'openapi.json')) as f:
        return json.load(f)


def man_text():
    with open(MAN) as f:
        return f.read().replace('\\-', '-')


def test_openapi_matches_route_table():
    doc = openapi()
    assert doc['openapi'].startswith('3.')
    documented = {(m.upper(), p) for p, ops in doc['paths'].items() for m in ops}
    table = {(m, re.sub(r'\{(\w+):u\}', r'{\1}', p)) for m, p, _, flags in route_table()
             if 'api' in flags}
    assert documented == table, (f'in the document only: {sorted(documented - table)}; '
                                 f'in the code only: {sorted(table - documented)}')


def test_openapi_names_the_vmmd_methods():
    doc = openapi()
    for method, path, rpc, flags in route_table():
        if 'api' not in flags or rpc == '-':
            continue
        op = doc['paths'][re.sub(r'\{(\w+):u\}', r'{\1}', path)][method.lower()]
        assert f'`{rpc}`' in op.get('description', ''), (method, path, rpc)
        assert ('tcp_admin' in op['description']) == ('tcp_admin' in flags), (method, path)
        ok = '201' if '201' in flags else '200'
        assert ok in op['responses'], (method, path, list(op['responses']))
        for code in ('400', '401', '404', '405', '413', '431', '501', '502'):
            assert code in op['responses'], (method, path, code)
        params = {p['name'] for p in op.get('parameters', []) if p['in'] == 'path'}
        assert params == set(re.findall(r'\{(\w+)(?::u)?\}', path)), (method, path, params)


def test_openapi_refs_resolve():
    doc = openapi()
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node = doc
        for part in ref.split('/'):
            assert part in node, f'unresolved $ref #/{ref}'
            node = node[part]


def test_man_page_lists_every_route():
    text = man_text()
    for method, path, rpc, flags in route_table():
        line = re.compile(rf'^{method}\s+{re.escape(path)}\s+{re.escape(rpc)}', re.M)
        assert line.search(text), f'{method} {path} ({rpc}) is not in vmm-web(8)'
    # nothing in the man page's table that the code lacks
    table = {(m, p) for m, p, _, _ in route_table()}
    for m, p in re.findall(r'^(GET|POST|PUT|PATCH|DELETE)\s+(/\S*)\s+\S+', text, re.M):
        assert (m, p) in table, f'vmm-web(8) lists {m} {p}, which the code does not serve'


def test_man_page_documents_every_option():
    out = subprocess.run([web_bin(), '--help'], capture_output=True, text=True, check=True).stdout
    text = man_text()
    opts = set(re.findall(r'(--[a-z][a-z-]+)', out))
    assert len(opts) >= 12, opts
    for o in opts:
        assert o in text, f'{o} is not in vmm-web(8)'


def test_list_routes_and_version_exit_zero():
    r = subprocess.run([web_bin(), '--version'], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith('vmm-web ')
    r = subprocess.run([web_bin(), '--bogus'], capture_output=True, text=True)
    assert r.returncode == 2
    r = subprocess.run([web_bin(), '--tls-cert', '/x'], capture_output=True, text=True)
    assert r.returncode == 2 and 'together' in r.stderr


def unit_copies(tmp_path):
    """The units with @sbindir@ pointing at the built binaries (verify needs
    ExecStart= to exist)."""
    src = os.path.join(os.path.dirname(MAN), '..', '..', 'systemd')
    vmmd = os.environ.get('VMMD_BIN') or '/usr/sbin/vmmd'
    out = str(tmp_path)
    for name in ('vmm-web.socket', 'vmm-web.service', 'vmmd-web.socket', 'vmmd.service',
                 'vmmd.socket', 'vmmd-admin.socket'):
        with open(os.path.join(src, name)) as f:
            text = f.read()
        text = text.replace('@sbindir@/vmm-web', web_bin()).replace('@sbindir@/vmmd\n', vmmd + '\n')
        # vmmd.service's ExecReload= is vmadm
        text = text.replace('@sbindir@/vmadm ', (os.environ.get('VMADM_BIN') or
                                                  '/usr/sbin/vmadm') + ' ')
        with open(os.path.join(out, name), 'w') as f:
            f.write(text)
    return out


def test_units_verify_and_exposure(tmp_path):
    d = unit_copies(tmp_path)
    units = [os.path.join(d, n) for n in ('vmm-web.socket', 'vmm-web.service', 'vmmd-web.socket')]
    r = subprocess.run(['systemd-analyze', 'verify', '--man=no'] + units, capture_output=True,
                       text=True, cwd=d)
    # verify exits 0 even on unknown keys: any output is a finding
    noise = [line for line in (r.stdout + r.stderr).splitlines()
             if line.strip() and 'Cannot add dependency job' not in line]
    assert r.returncode == 0 and not noise, r.stdout + r.stderr
    r = subprocess.run(['systemd-analyze', 'security', '--offline=yes',
                        os.path.join(d, 'vmm-web.service')], capture_output=True, text=True, cwd=d)
    m = re.search(r'Overall exposure level for vmm-web.service: ([\d.]+)', r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 0.5, r.stdout
    text = open(os.path.join(d, 'vmm-web.service')).read()
    for line in ('Type=notify', 'DynamicUser=yes', 'PrivateNetwork=yes', 'JoinsNamespaceOf=vmmd.service'):
        assert line in text, line
    for bad in ('StateDirectory', 'CacheDirectory', 'LogsDirectory'):
        assert bad not in text
    sock = open(os.path.join(d, 'vmm-web.socket')).read()
    assert 'ListenStream=127.0.0.1:8080' in sock and 'FileDescriptorName=http' in sock


def test_socket_activation(tmp_path):
    """vmm-web takes its socket by the name http and refuses others."""
    import socket as so
    import time
    from vmmtest import free_port
    port = free_port()
    notify = os.path.join(str(tmp_path), 'notify.sock')
    ns = so.socket(so.AF_UNIX, so.SOCK_DGRAM)
    ns.bind(notify)
    ns.settimeout(10)
    argv = ['systemd-socket-activate', '-l', f'127.0.0.1:{port}', '--fdname=http',
            '-E', f'NOTIFY_SOCKET={notify}', web_bin(), '--www-dir', VMM_WEB_WWW,
            '--vmmd', f'127.0.0.1:{free_port()}']
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.3)
        c = so.create_connection(('127.0.0.1', port), timeout=10)
        c.sendall(b'GET /icon.svg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        data = b''
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        c.close()
        assert data.startswith(b'HTTP/1.1 200'), data[:200]
        msg = ns.recv(4096).decode()
        assert 'READY=1' in msg, msg
    finally:
        p.terminate()
        out = p.communicate(timeout=15)[0].decode()
        ns.close()
    assert p.returncode == 0, out
    # a socket by another name is refused
    port = free_port()
    p = subprocess.Popen(['systemd-socket-activate', '-l', f'127.0.0.1:{port}', '--fdname=client',
                          web_bin(), '--www-dir', VMM_WEB_WWW],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.3)
    try:
        so.create_connection(('127.0.0.1', port), timeout=5).close()
    except OSError:
        pass
    out = p.communicate(timeout=15)[0].decode()
    assert p.returncode != 0 and "named 'client'" in out, out
