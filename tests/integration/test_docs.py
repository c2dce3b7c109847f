# SPDX-License-Identifier: MIT
"""The man pages stay in step with the code: method names and error codes
(include/vmm/protocol.h, src/shared/protocol.c) against vmmd-protocol(7), the
options of `vmmd --help` against vmmd(8) and vmmd.conf(5), the pages render
without warnings, and their examples work against the real daemon."""

import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..', '..'))
PROTOCOL_H = os.path.join(TOP, 'include', 'vmm', 'protocol.h')
PROTOCOL_C = os.path.join(TOP, 'src', 'shared', 'protocol.c')
PAGE_PROTOCOL = os.path.join(TOP, 'src', 'daemon', 'vmmd-protocol.7')
PAGE_DAEMON = os.path.join(TOP, 'src', 'daemon', 'vmmd.8')
PAGE_CONF = os.path.join(TOP, 'src', 'daemon', 'vmmd.conf.5')
PAGES = (PAGE_PROTOCOL, PAGE_DAEMON, PAGE_CONF)
# every page the project installs: rendered and linted
ALL_PAGES = PAGES + tuple(os.path.join(TOP, p) for p in (
    'src/libvmm/libvmm.3', 'tools/vmadm/vmadm.8', 'tools/vmclient/vmclient.1',
    'tools/vmclient/agent.conf.5', 'tools/vmm-web/vmm-web.8', 'tools/vmmd-check/vmmd-check.8'))


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


# --- a little roff reading -------------------------------------------------

def roff_args(s):
    """Split macro arguments the way roff does: blanks separate, "..." groups,
    "" inside quotes is a quote."""
    args, i, n = [], 0, len(s)
    while i < n:
        while i < n and s[i] == ' ':
            i += 1
        if i >= n:
            break
        if s[i] == '"':
            i += 1
            buf = []
            while i < n:
                if s[i] == '"':
                    if i + 1 < n and s[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(s[i])
                i += 1
            args.append(''.join(buf))
        else:
            j = i
            while j < n and s[j] != ' ':
                j += 1
            args.append(s[i:j])
            i = j
    return args


def unescape(s):
    s = re.sub(r'\\f(\[[^]]*\]|.)', '', s)
    s = s.replace('\\%', '').replace('\\&', '').replace('\\-', '-')
    s = s.replace('\\(aq', "'").replace('\\(ti', '~').replace('\\e', '\\')
    return s


def line_text(line):
    """The text a line shows: a font macro's arguments joined, or the line."""
    m = re.match(r'^\.(B|I|BR|RB|BI|IB|IR|RI|SM|SB)(?:\s+(.*))?$', line)
    if m:
        return unescape(''.join(roff_args(m.group(2) or '')))
    if line.startswith('.'):
        return ''
    return unescape(line)


def sections(path):
    """{'SECTION NAME': [lines]} of a man page source."""
    out, name = {}, None
    for line in read(path).split('\n'):
        if line.startswith('.SH'):
            name = unescape(' '.join(roff_args(line[3:].strip())))
            out[name] = []
        elif name is not None:
            out[name].append(line)
    return out


def tags(lines):
    """The tag of every .TP paragraph (the line after .TP), as text."""
    return [line_text(lines[i + 1]) for i, l in enumerate(lines[:-1]) if l.startswith('.TP')]


def tag_paragraphs(lines):
    """{tag: body text} for the .TP paragraphs of a section."""
    out, cur = {}, None
    for i, l in enumerate(lines):
        if l.startswith('.TP') and i + 1 < len(lines):
            cur = line_text(lines[i + 1])
            out[cur] = []
        elif cur is not None and (l.startswith('.SS') or l.startswith('.PP')):
            cur = None
        elif cur is not None and i > 0 and not lines[i - 1].startswith('.TP'):
            out[cur].append(line_text(l))
    return {k: ' '.join(v) for k, v in out.items()}


def section(path, prefix):
    secs = sections(path)
    found = [k for k in secs if k.startswith(prefix)]
    assert len(found) == 1, f'{os.path.basename(path)}: expected one section "{prefix}...", ' \
                            f'have {list(secs)}'
    return secs[found[0]]


# --- what the code says --------------------------------------------------

def methods_from_header():
    """(client methods, admin methods, part 2 methods) from the #define
    VMM_M_... lines, split by the header's 'Client methods' / 'Admin methods'
    / 'Part 2' comments."""
    client, admin, part2, cur = [], [], [], None
    for line in read(PROTOCOL_H).split('\n'):
        if 'Client methods' in line:
            cur = client
        elif 'Admin methods' in line:
            cur = admin
        elif line.startswith('/* Part 2'):
            cur = part2
        m = re.match(r'^#define\s+VMM_M_\w+\s+"([^"]+)"', line)
        if m:
            assert cur is not None, f'method "{m.group(1)}" before the section comments'
            cur.append(m.group(1))
    return client, admin, part2


def error_codes_in_order():
    """Error code names in precedence order: enum order from protocol.h,
    names from the table in protocol.c."""
    enum = re.search(r'typedef enum VmmError \{(.*?)\} VmmError;', read(PROTOCOL_H), re.S)
    assert enum, 'enum VmmError not found in protocol.h'
    order = re.findall(r'^\s*(VMM_E_[A-Z_]+)\s*,', enum.group(1), re.M)
    names = dict(re.findall(r'\[(VMM_E_[A-Z_]+)\]\s*=\s*"([a-z_]+)"', read(PROTOCOL_C)))
    assert names, 'no error names found in protocol.c'
    assert set(order) == set(names), 'protocol.h enum and protocol.c table disagree'
    return [names[e] for e in order]


@pytest.fixture(scope='module')
def help_text():
    binary = os.environ.get('VMMD_BIN')
    assert binary, 'VMMD_BIN is not set (meson sets it)'
    r = subprocess.run([binary, '--help'], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def help_entries(text):
    """{long option: its whole entry} from --help; an entry goes on over the
    following lines that do not start a new option."""
    entries, cur = {}, None
    for line in text.split('\n'):
        m = re.match(r'^\s+(?:-[a-zA-Z], )?--([a-z][a-z0-9-]*)', line)
        if m:
            cur = m.group(1)
            entries[cur] = line.strip()
        elif cur is not None and line.startswith('  ') and line.strip():
            entries[cur] += ' ' + line.strip()
        else:
            cur = None
    return entries


def help_options(text):
    """Long options of --help, in order."""
    return list(help_entries(text))


# --- methods and errors --------------------------------------------------

def test_header_parses():
    client, admin, part2 = methods_from_header()
    assert 'ping' in client and 'auth' in client and len(client) >= 10
    assert 'status' in admin and 'backup' in admin and len(admin) >= 10
    assert 'user.auth' in part2 and 'booking.create' in part2 and len(part2) >= 30
    assert len(error_codes_in_order()) >= 12


def test_client_methods_documented():
    client, _, _ = methods_from_header()
    documented = tags(section(PAGE_PROTOCOL, 'CLIENT METHODS'))
    missing = [m for m in client if m not in documented]
    assert not missing, f'client methods missing from vmmd-protocol.7: {missing}'
    stale = [t for t in documented if t not in client]
    assert not stale, f'vmmd-protocol.7 documents client methods the code lacks: {stale}'


def test_admin_methods_documented():
    client, admin, _ = methods_from_header()
    documented = tags(section(PAGE_PROTOCOL, 'ADMIN METHODS'))
    missing = [m for m in admin if m not in documented]
    assert not missing, f'admin methods missing from vmmd-protocol.7: {missing}'
    # The admin socket also serves some client method names (vm.list, ...).
    stale = [t for t in documented if t not in admin and t not in client]
    assert not stale, f'vmmd-protocol.7 documents admin methods the code lacks: {stale}'


def test_part2_methods_documented():
    client, admin, part2 = methods_from_header()
    documented = tags(section(PAGE_PROTOCOL, 'PART 2 METHODS'))
    missing = [m for m in part2 if m not in documented]
    assert not missing, f'part 2 methods missing from vmmd-protocol.7: {missing}'
    stale = [t for t in documented if t not in client + admin + part2]
    assert not stale, f'vmmd-protocol.7 documents part 2 methods the code lacks: {stale}'


def test_error_codes_documented_in_precedence_order():
    codes = error_codes_in_order()
    documented = tags(section(PAGE_PROTOCOL, 'ERRORS'))
    assert documented == codes, \
        f'ERRORS in vmmd-protocol.7 must list exactly the codes, in precedence order:\n' \
        f'  code: {codes}\n  page: {documented}'


def test_event_types_documented():
    # Event types have no C constant list: take them from where events are
    # made (`.type = "..."` in src/daemon), so a new type cannot go undocumented.
    sources = ''.join(read(os.path.join(TOP, 'src', 'daemon', f))
                      for f in os.listdir(os.path.join(TOP, 'src', 'daemon'))
                      if f.endswith('.c'))
    produced = set()
    for expr in re.findall(r'\.type\s*=\s*([^,}]*)', sources):  # also `c ? "a" : "b"`
        produced.update(re.findall(r'"([a-z_]+\.[a-z_]+)"', expr))
    documented = set()
    for t in tags(section(PAGE_PROTOCOL, 'EVENTS')):
        documented.update(x.strip() for x in t.split(','))
    assert len(produced) >= 10, f'event types not found in src/daemon: {produced}'
    missing = sorted(produced - documented)
    assert not missing, f'event types missing from EVENTS in vmmd-protocol.7: {missing}'


# --- options ---------------------------------------------------------------

def test_help_parses(help_text):
    opts = help_options(help_text)
    for o in ('state-dir', 'listen', 'config', 'help', 'version'):
        assert o in opts, f'--{o} not found in vmmd --help'


def daemon_page_options():
    opts = []
    for t in tags(section(PAGE_DAEMON, 'OPTIONS')):
        opts += re.findall(r'--([a-z][a-z0-9-]*)', t)
    return opts


def test_every_help_option_in_vmmd_8(help_text):
    page = daemon_page_options()
    missing = [o for o in help_options(help_text) if o not in page]
    assert not missing, f'options of vmmd --help missing from OPTIONS in vmmd.8: {missing}'


def test_every_vmmd_8_option_in_help(help_text):
    helped = help_options(help_text)
    stale = [o for o in daemon_page_options() if o not in helped]
    assert not stale, f'vmmd.8 documents options vmmd --help lacks: {stale}'


def conf_page_keys():
    return [t.split()[0] for t in tags(section(PAGE_CONF, 'KEYS')) if t.split()]


def test_every_option_is_a_conf_key(help_text):
    keys = conf_page_keys()
    want = [o.replace('-', '_') for o in help_options(help_text)
            if o not in ('config', 'help', 'version')]
    missing = [k for k in want if k not in keys]
    assert not missing, f'keys missing from KEYS in vmmd.conf.5: {missing}'
    stale = [k for k in keys if k not in want]
    assert not stale, f'vmmd.conf.5 documents keys vmmd lacks: {stale}'


def test_numeric_defaults_match_help(help_text):
    """A default that --help states as a number is the one vmmd.8 gives."""
    paragraphs = {}
    for tag, body in tag_paragraphs(section(PAGE_DAEMON, 'OPTIONS')).items():
        for o in re.findall(r'--([a-z][a-z0-9-]*)', tag):
            paragraphs[o] = body
    checked = 0
    for opt, entry in help_entries(help_text).items():
        m = re.search(r'\(default (\d+)\)', entry)
        if not m:
            continue
        value = m.group(1)
        assert opt in paragraphs, f'--{opt} has no paragraph in vmmd.8'
        assert re.search(r'default:? ' + value + r'\b', paragraphs[opt]), \
            f'vmmd.8 --{opt}: --help says default {value}, the page says: {paragraphs[opt]}'
        checked += 1
    assert checked >= 8, f'only {checked} numeric defaults found in --help'


# --- rendering -------------------------------------------------------------

@pytest.mark.parametrize('page', ALL_PAGES, ids=os.path.basename)
def test_page_renders_without_warnings(page):
    if not shutil.which('groff'):
        pytest.skip('groff is not installed (Debian: groff-base)')
    r = subprocess.run(['groff', '-man', '-Tutf8', '-ww', '-z', page],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == '', r.stderr


@pytest.mark.parametrize('page', ALL_PAGES, ids=os.path.basename)
def test_page_lints_clean(page):
    if not shutil.which('mandoc'):
        pytest.skip('mandoc is not installed (optional linter)')
    r = subprocess.run(['mandoc', '-Tlint', '-W', 'warning', page],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == '' and r.stderr == '', r.stdout + r.stderr


def test_page_names_match_files():
    for page in ALL_PAGES:
        base = os.path.basename(page)
        name, sect = base.rsplit('.', 1)
        th = re.search(r'^\.TH\s+(\S+)\s+(\S+)', read(page), re.M)
        assert th, f'{base}: no .TH'
        assert th.group(1) == name.upper() and th.group(2) == sect, \
            f'{base}: .TH {th.group(1)} {th.group(2)}'


# --- the examples work -----------------------------------------------------

def examples(page):
    return [unescape(b) for b in re.findall(r'^\.EX\n(.*?)^\.EE\n', read(page), re.S | re.M)]


def run_python(code, timeout=60):
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f'example failed:\n{code}\n--- stderr ---\n{r.stderr}'
    return r.stdout


def test_protocol_client_example_runs(make_daemon):
    d = make_daemon()
    found = [e for e in examples(PAGE_PROTOCOL) if 'create_connection' in e]
    assert len(found) == 1, 'the Python client example was not found in vmmd-protocol.7'
    code = found[0]
    assert '("127.0.0.1", 7707)' in code
    out = run_python(code.replace('("127.0.0.1", 7707)', f'("{d.host}", {d.port})'))
    assert "'pong': True" in out and "'protocol': 1" in out, out
    assert "'ram': 4096" in out, out


def test_protocol_person_example_runs(make_daemon):
    """The part 2 example goes on from the client example: a user made on
    the admin socket logs in, books the VM and reads the history."""
    d = make_daemon()
    first = [e for e in examples(PAGE_PROTOCOL) if 'create_connection' in e]
    person = [e for e in examples(PAGE_PROTOCOL) if '"user.auth"' in e]
    assert len(first) == 1 and len(person) == 1, 'the examples were not found in vmmd-protocol.7'
    m = re.search(r'password="([^"]+)"', person[0])
    assert m, person[0]
    admin = (f'admin = socket.socket(socket.AF_UNIX)\n'
             f'admin.connect({d.admin_socket!r})\n'
             f'admin.sendall(msgpack.packb([0, 1, "user.create", '
             f'[{{"name": "alice", "password": {m.group(1)!r}}}]]))\n'
             f'assert msgpack.unpackb(admin.recv(4096))[2] is None\n')
    code = first[0].replace('("127.0.0.1", 7707)', f'("{d.host}", {d.port})')
    out = run_python(code + admin + person[0])
    assert "'role': 'user'" in out and "'action': 'book'" in out, out
    assert "'booking': {'user': 'alice'" in out, out


def test_protocol_backup_example_runs(make_daemon, tmp_path):
    d = make_daemon()
    found = [e for e in examples(PAGE_PROTOCOL) if 'send_fds' in e]
    assert len(found) == 1, 'the backup example was not found in vmmd-protocol.7'
    target = tmp_path / 'backup.mdb'
    code = found[0]
    assert '"/run/vmmd/admin.sock"' in code and '"vmmd-backup.mdb"' in code
    code = code.replace('"/run/vmmd/admin.sock"', repr(d.admin_socket))
    code = code.replace('"vmmd-backup.mdb"', repr(str(target)))
    out = run_python(code)
    assert "'bytes'" in out and 'None' in out, out
    assert target.stat().st_size > 0


def test_conf_example_is_accepted(make_daemon, tmp_path):
    found = [e for e in examples(PAGE_CONF) if '[vmmd]' in e]
    assert len(found) == 1, 'the example file was not found in vmmd.conf.5'
    conf = tmp_path / 'vmmd.conf'
    conf.write_text(found[0])
    # --listen from the harness replaces the example's addresses.
    d = make_daemon(args=['--config', str(conf)])
    assert d.proc.poll() is None


def test_conf_example_error_is_real(tmp_path):
    """The error shown in vmmd.conf.5 is what vmmd prints for that mistake."""
    found = [e for e in examples(PAGE_CONF) if '[vmmd]' in e]
    shown = [e for e in examples(PAGE_CONF) if 'unknown level' in e]
    assert len(found) == 1 and len(shown) == 1
    m = re.search(r"^(vmmd: )/etc/vmmd/vmmd\.conf(:\d+: .*unknown level '(\w+)')$", shown[0],
                  re.M)
    assert m, shown[0]
    conf = tmp_path / 'vmmd.conf'
    conf.write_text(found[0].replace('log_level = notice', f'log_level = {m.group(3)}'))
    r = subprocess.run([os.environ['VMMD_BIN'], '--config', str(conf),
                        '--state-dir', str(tmp_path / 'state')],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 6, r.returncode    # vmmd(8): 6, a configuration error
    assert r.stderr.strip() == m.group(1) + str(conf) + m.group(2), r.stderr
    status = re.search(r'echo \$\?\n(\d+)$', shown[0], re.M)
    assert status and int(status.group(1)) == r.returncode, \
        f'the example shows exit status {status and status.group(1)}, vmmd exits {r.returncode}'

