# SPDX-License-Identifier: MIT
"""`vmclient describe`: discovery of RAM, CPUs, disks, hostname, addresses and
OS against fake /proc, /sys and /etc trees (VMCLIENT_ROOT) of several
layouts, and against this machine; and the agent's configuration
(--check-config)."""

import json
import os
import re
import subprocess


from agenttest import (GIB_SECTORS, DEBIAN_OS, describe, disk, fake_root, vmclient_bin,
                       write)


def desc(root, *args):
    return json.loads(describe(root, '--json', *args).stdout)


def test_virtio_disk_without_serial(tmp_path):
    root = fake_root(tmp_path, disks=[disk('vda', gib=20, dev='254:0', files={'serial': ''})])
    d = desc(root, '--vm-id', 'vm1')
    assert d['disks'] == [{'id': 'vm1-vda', 'size': 20}]
    assert d['vm_id'] == 'vm1'
    assert d['ram'] == 4096 and d['cpu'] == 2


def test_virtio_disk_with_serial(tmp_path):
    root = fake_root(tmp_path, disks=[disk('vda', gib=8, files={'serial': 'BHYVE-1234\n'})])
    assert desc(root, '--vm-id', 'vm1')['disks'] == [{'id': 'BHYVE-1234', 'size': 8}]


def test_scsi_with_wwn(tmp_path):
    root = fake_root(tmp_path, disks=[
        disk('sda', gib=100, files={'device/wwid': 'naa.600508b1001c4d6d\n'}),
        # t10 WWNs carry blanks: each becomes '_'
        disk('sdb', gib=50, dev='8:16',
             files={'device/wwid': 't10.ATA     QEMU HARDDISK                           QM00002\n'}),
    ])
    d = desc(root, '--vm-id', 'vm1')
    assert d['disks'][0] == {'id': 'naa.600508b1001c4d6d', 'size': 100}
    want = 't10.ATA_____QEMU_HARDDISK___________________________QM00002'[:64]
    assert d['disks'][1] == {'id': want, 'size': 50}
    assert len(d['disks'][1]['id']) <= 64


def test_scsi_vpd_page_80_serial_before_wwn(tmp_path):
    serial = b'  SN-778899  '
    vpd = bytes([0, 0x80, 0, len(serial)]) + serial
    root = fake_root(tmp_path, disks=[
        disk('sda', gib=10, files={'device/vpd_pg80': vpd, 'device/wwid': 'naa.1234\n'})])
    assert desc(root, '--vm-id', 'vm1')['disks'] == [{'id': 'SN-778899', 'size': 10}]


def test_serial_with_odd_characters(tmp_path):
    long = 'A' * 70
    root = fake_root(tmp_path, disks=[
        disk('vda', gib=1, dev='254:0', files={'serial': '  QM 0/1#x\u00e4y  \n'}),
        disk('vdb', gib=1, dev='254:16', files={'serial': '--_.abc\n'}),
        disk('vdc', gib=1, dev='254:32', files={'serial': long + '\n'}),
        disk('vdd', gib=1, dev='254:48', files={'serial': '###\n'}),
    ])
    ids = [x['id'] for x in desc(root, '--vm-id', 'vm1')['disks']]
    # U+00E4 is two bytes of UTF-8: two '_'
    assert ids[0] == 'QM_0_1_x__y'
    # an id starts with a letter or digit
    assert ids[1] == 'abc'
    assert ids[2] == 'A' * 64
    # nothing usable left: <vm_id>-<name>
    assert ids[3] == 'vm1-vdd'


def test_loop_ram_zram_dm_skipped_unless_asked(tmp_path):
    root = fake_root(tmp_path, disks=[
        disk('loop0', gib=1, dev='7:0'), disk('ram0', gib=1, dev='1:0'),
        disk('zram0', gib=4, dev='251:0'), disk('dm-0', gib=30, dev='253:0', slaves=['vda2']),
        disk('vda', gib=40, dev='254:0', parts=[('vda1', '254:1'), ('vda2', '254:2')]),
        disk('sr0', sectors=0, dev='11:0'),          # an empty CD drive: no size
    ])
    assert [x['id'] for x in desc(root, '--vm-id', 'vm1')['disks']] == ['vm1-vda']
    ids = [x['id'] for x in desc(root, '--vm-id', 'vm1', '--all-disks')['disks']]
    # the kernel's order: shorter names first (sdz < sdaa), numbers as numbers
    assert ids == ['vm1-dm-0', 'vm1-ram0', 'vm1-vda', 'vm1-loop0', 'vm1-zram0']


def test_sizes_rounded_to_gib_at_least_one(tmp_path):
    root = fake_root(tmp_path, disks=[
        disk('vda', sectors=int(1.4 * GIB_SECTORS), dev='254:0'),
        disk('vdb', sectors=int(1.6 * GIB_SECTORS), dev='254:16'),
        disk('vdc', sectors=2048 * 100, dev='254:32'),      # 100 MiB
    ])
    assert [x['size'] for x in desc(root, '--vm-id', 'v')['disks']] == [1, 2, 1]


def test_disks_in_version_order(tmp_path):
    root = fake_root(tmp_path, disks=[disk(n, gib=1, dev=f'8:{i}')
                                      for i, n in enumerate(['sdaa', 'sdb', 'sda'])])
    assert [x['id'] for x in desc(root, '--vm-id', 'v')['disks']] == ['v-sda', 'v-sdb', 'v-sdaa']


def test_nvme_namespaces_sharing_a_serial_use_their_wwid(tmp_path):
    root = fake_root(tmp_path, disks=[
        disk('nvme0n1', gib=10, dev='259:0',
             files={'device/serial': 'CTRL1\n', 'wwid': 'eui.0001\n'}),
        disk('nvme0n2', gib=10, dev='259:1',
             files={'device/serial': 'CTRL1\n', 'wwid': 'eui.0002\n'}),
        disk('vda', gib=1, dev='254:0', files={'serial': 'CTRL1\n'}),
        disk('vdb', gib=1, dev='254:16', files={'serial': 'CTRL1\n'}),
    ])
    d = desc(root, '--vm-id', 'v')['disks']
    # vda, vdb, nvme0n1, nvme0n2: a serial taken by an earlier disk is passed
    # over for the WWN, else the device name
    assert [x['id'] for x in d] == ['CTRL1', 'v-vdb', 'eui.0001', 'eui.0002']


def test_os_release_variants(tmp_path):
    cases = [
        (DEBIAN_OS, {'name': 'Debian GNU/Linux', 'version': '12'}),
        ('NAME="Debian GNU/Linux"\nVERSION_CODENAME=trixie\n',
         {'name': 'Debian GNU/Linux', 'version': 'trixie'}),
        ("NAME='Fedora Linux'\nVERSION_ID=40\n", {'name': 'Fedora Linux', 'version': '40'}),
        ('# comment\nNAME="A \\"quoted\\" OS"\nVERSION_ID="1.0"\n',
         {'name': 'A "quoted" OS', 'version': '1.0'}),
        ('VERSION_ID=3.19\n', {'name': 'Linux', 'version': '3.19'}),     # NAME defaults
        ('NAME="Arch Linux"\nBUILD_ID=rolling\n', None),                  # no version: no os
    ]
    for i, (text, want) in enumerate(cases):
        root = fake_root(tmp_path / str(i), os_release=text)
        d = desc(root, '--vm-id', 'v')
        if want is None:
            assert 'os' not in d, text
        else:
            assert d['os'] == want, text


def test_os_release_fallback_and_missing(tmp_path):
    root = fake_root(tmp_path / 'a', os_release='NAME=Alpine\nVERSION_ID=3.20\n',
                     os_release_path='/usr/lib/os-release')
    assert desc(root, '--vm-id', 'v')['os'] == {'name': 'Alpine', 'version': '3.20'}
    root = fake_root(tmp_path / 'b', os_release=None)
    assert 'os' not in desc(root, '--vm-id', 'v')


def test_hostname_rules(tmp_path):
    good = {'web-01': 'web-01', 'web-01.example.com': 'web-01', 'a': 'a', '1host': '1host'}
    for i, (name, vm) in enumerate(good.items()):
        root = fake_root(tmp_path / f'g{i}', hostname=name)
        d = desc(root)
        assert d['hostname'] == name
        assert d['vm_id'] == vm           # the short hostname is the default vm_id
    bad = ['bad_host', '-lead', 'trail-', '(none)', 'a..b', 'x' * 64, 'ok.' + 'y' * 250,
           'caf\u00e9', '']
    for i, name in enumerate(bad):
        root = fake_root(tmp_path / f'b{i}', hostname=name)
        d = desc(root, '--vm-id', 'vm9')
        assert 'hostname' not in d, name
        assert d['vm_id'] == 'vm9'
    # no valid hostname and no vm_id: no vm_id, disks named by device
    root = fake_root(tmp_path / 'none', hostname='bad_host', disks=[disk('vda', gib=1)])
    d = desc(root)
    assert 'vm_id' not in d and d['disks'] == [{'id': 'vda', 'size': 1}]


def test_addresses_filtered_sorted_capped(tmp_path):
    addrs = ['127.0.0.1', '169.254.7.7', 'fe80::1', '::1', '0.0.0.0', 'fd00::5', '10.0.0.5',
             '10.0.0.5', 'not-an-address', '192.168.1.9', '::']
    root = fake_root(tmp_path / 'a', addresses=addrs)
    assert desc(root, '--vm-id', 'v')['ip'] == ['10.0.0.5', '192.168.1.9', 'fd00::5']
    many = [f'10.1.0.{i}' for i in range(1, 30)]
    root = fake_root(tmp_path / 'b', addresses=many)
    assert desc(root, '--vm-id', 'v')['ip'] == [f'10.1.0.{i}' for i in range(1, 17)]


def test_ram_and_cpus(tmp_path):
    root = fake_root(tmp_path / 'a', ram_kib=2097152 + 1023, cpus='0-3,6,8-9')
    d = desc(root, '--vm-id', 'v')
    assert d['ram'] == 2048 and d['cpu'] == 7
    root = fake_root(tmp_path / 'b', ram_kib=100, cpus='0')
    d = desc(root, '--vm-id', 'v')
    assert d['ram'] == 1 and d['cpu'] == 1


def test_keys_sent(tmp_path):
    root = fake_root(tmp_path, hostname='web-01', addresses=['10.0.0.5'],
                     disks=[disk('vda', gib=20, files={'serial': 'S1'})])
    d = desc(root)
    assert list(d) == ['vm_id', 'ram', 'cpu', 'hostname', 'disks', 'ip', 'os']
    assert d == {'vm_id': 'web-01', 'ram': 4096, 'cpu': 2, 'hostname': 'web-01',
                 'disks': [{'id': 'S1', 'size': 20}], 'ip': ['10.0.0.5'],
                 'os': {'name': 'Debian GNU/Linux', 'version': '12'}}
    # the global --json works too
    e = dict(os.environ, VMCLIENT_ROOT=root)
    p = subprocess.run([vmclient_bin(), '--json', 'describe'], capture_output=True, text=True,
                       env=e, timeout=30)
    assert p.returncode == 0 and json.loads(p.stdout) == d


def test_table(tmp_path):
    root = fake_root(tmp_path, hostname='bad_host', addresses=['10.0.0.5', 'fd00::5'],
                     disks=[disk('vda', gib=20, files={'serial': 'S1'}),
                            disk('vdb', gib=3, dev='254:16')])
    out = describe(root, '--vm-id', 'vm1').stdout
    lines = out.splitlines()
    assert 'vm_id:     vm1' in lines
    assert 'ram:       4096 MiB' in lines
    assert 'cpu:       2' in lines
    assert any(l.startswith('hostname:  -') and 'left out' in l for l in lines)
    assert 'os:        Debian GNU/Linux 12' in lines
    assert 'ip:        10.0.0.5 fd00::5' in lines
    rows = [l.split() for l in lines if l.startswith('vd')]
    assert rows == [['vda', 'S1', '20', 'serial'], ['vdb', 'vm1-vdb', '3', 'name']]


def test_report_figures(tmp_path):
    root = str(tmp_path / 'root')
    os.makedirs(root)
    fake_root(root, disks=[
        disk('sda', gib=100, dev='8:0', parts=[('sda1', '8:1'), ('sda2', '8:2')],
             files={'device/wwid': 'naa.1\n'}),
        disk('sdb', gib=50, dev='8:16', parts=[('sdb1', '8:17')], files={'device/wwid': 'naa.2\n'}),
        disk('sdc', gib=10, dev='8:32', files={'device/wwid': 'naa.3\n'}),
        disk('sdd', gib=10, dev='8:48', files={'device/wwid': 'naa.4\n'}),
        disk('dm-0', gib=40, dev='253:0', slaves=['sdb1']),          # LVM on one disk
        disk('dm-1', gib=20, dev='253:1', slaves=['sdc', 'sdd']),    # spans two disks
    ], mounts=[('8:1', '/'), ('8:2', '/boot'), ('8:2', '/boot-again'), ('253:0', '/data'),
               ('253:1', '/spread'), ('8:1', '/with space')],
        loadavg='1.50 0.75 0.25 2/300 999\n', uptime='98765.43 1.0\n',
        ram_kib=8388608, mem_available_kib=6291456)
    d = desc(root, '--vm-id', 'v', '--report')
    r = d['report']
    assert r['load'] == [1.5, 0.75, 0.25]
    assert r['mem_total'] == 8192 and r['mem_used'] == 2048
    assert r['uptime'] == 98765
    st = os.statvfs(root)
    used = round((st.f_blocks - st.f_bfree) * st.f_frsize / (1 << 30))
    # every mount of the fake root is on the same file system here, so each
    # disk counts it once: sda (/, /boot: two devices), sdb through dm-0;
    # nothing for sdc/sdd (dm-1 spans both)
    got = {u['id']: u['used'] for u in r['disks_used']}
    assert set(got) == {'naa.1', 'naa.2'}
    raw = (st.f_blocks - st.f_bfree) * st.f_frsize
    assert got['naa.1'] == round(2 * raw / (1 << 30))
    assert got['naa.2'] == used
    # the table shows the figures too
    out = describe(root, '--vm-id', 'v', '--report').stdout
    assert 'load:      1.50 0.75 0.25' in out
    assert 'memory:    2048 of 8192 MiB used' in out
    assert 'uptime:    98765 s' in out


def test_report_memory_without_memavailable(tmp_path):
    root = fake_root(tmp_path, ram_kib=1048576, mem_available_kib=None)
    write(f'{root}/proc/meminfo', 'MemTotal: 1048576 kB\nMemFree: 262144 kB\n'
          'Buffers: 0 kB\nCached: 262144 kB\n')
    r = desc(root, '--vm-id', 'v', '--report')['report']
    assert r['mem_total'] == 1024 and r['mem_used'] == 512


def test_unreadable_root_is_an_error(tmp_path):
    p = describe(str(tmp_path), '--json', check=False)
    assert p.returncode == 1
    assert 'cannot describe this system' in p.stderr and 'meminfo' in p.stderr
    assert p.stdout == ''


def test_usage_errors(tmp_path):
    root = fake_root(tmp_path)
    for args, words in [(['--bogus'], 'unknown option'), (['--vm-id', 'bad id'], 'vm_id'),
                        (['extra'], 'unexpected argument'), (['--vm-id'], 'needs a value')]:
        p = describe(root, *args, check=False)
        assert p.returncode == 2, args
        assert words in p.stderr, (args, p.stderr)


def test_real_machine():
    e = dict(os.environ)
    e.pop('VMCLIENT_ROOT', None)
    p = subprocess.run([vmclient_bin(), 'describe', '--json', '--vm-id', 'real', '--report'],
                       capture_output=True, text=True, env=e, timeout=30)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d['ram'] > 0 and d['cpu'] >= 1
    assert d['cpu'] == len(os.sched_getaffinity(0)) or d['cpu'] >= 1
    with open('/proc/meminfo') as f:
        total_kib = int(f.readline().split()[1])
    assert d['ram'] == total_kib // 1024
    assert d['cpu'] == os.cpu_count()
    for x in d['disks']:
        assert 1 <= len(x['id']) <= 64 and x['size'] >= 1
    for a in d['ip']:
        assert not a.startswith('127.') and a != '::1' and not a.startswith('fe80')
    assert d['report']['uptime'] > 0 and len(d['report']['load']) == 3


# ---- the agent's configuration ----

def check_config(tmp_path, conf, *args, env=None):
    path = tmp_path / 'agent.conf'
    if conf is not None:
        path.write_text(conf)
    e = dict(os.environ, HOME=str(tmp_path))
    e.pop('STATE_DIRECTORY', None)
    if env:
        e.update(env)
    a = (['--config', str(path)] if conf is not None else []) + list(args)
    return subprocess.run([vmclient_bin(), 'agent', '--check-config'] + a, capture_output=True,
                          text=True, env=e, timeout=30)


def settings(out):
    res = {}
    for line in out.splitlines():
        k, v = line.split(' = ', 1)
        res.setdefault(k, []).append(v)
    return res


def test_config_file_and_flags(tmp_path):
    conf = ('# the agent\n[agent]\nserver = 10.0.0.1:7707\nserver = "[fd00::1]:7707"\n'
            'vm_id = vm7\npassword_file = /etc/pw\nstate_dir = /var/tmp/s\ninterval = 5\n'
            'hooks = /h\nhook_timeout = 3\nregister = yes\nall_disks = no\nlog_level = debug\n')
    p = check_config(tmp_path, conf)
    assert p.returncode == 0, p.stderr
    s = settings(p.stdout)
    assert s['server'] == ['10.0.0.1:7707', '[fd00::1]:7707']
    assert s['vm_id'] == ['vm7'] and s['password_file'] == ['/etc/pw']
    assert s['state_dir'] == ['/var/tmp/s'] and s['interval'] == ['5']
    assert s['hooks'] == ['/h'] and s['hook_timeout'] == ['3']
    assert s['register'] == ['yes'] and s['log_level'] == ['debug']
    # flags win; --server replaces the file's list
    p = check_config(tmp_path, conf, '--server', 'h:1', '--interval', '60', '--vm-id', 'vm8',
                     '--all-disks')
    s = settings(p.stdout)
    assert s['server'] == ['h:1'] and s['interval'] == ['60'] and s['vm_id'] == ['vm8']
    assert s['all_disks'] == ['yes'] and s['register'] == ['yes']


def test_config_defaults(tmp_path):
    p = check_config(tmp_path, None, env={'XDG_STATE_HOME': '', 'STATE_DIRECTORY': '/sd/x:/sd/y'})
    assert p.returncode == 0, p.stderr
    s = settings(p.stdout)
    assert s['server'] == ['127.0.0.1:7707'] and s['interval'] == ['10']
    assert s['hook_timeout'] == ['30'] and s['hooks'] == ['/etc/vmclient/booking.d']
    assert s['password_file'] == ['/etc/vmclient/password'] and s['state_dir'] == ['/sd/x']
    assert s['register'] == ['no']


def test_config_errors(tmp_path):
    cases = [
        ('bogus = 1\n', 'agent.conf:1: unknown key \'bogus\''),
        ('\ninterval = 0\n', 'agent.conf:2: interval: expected an integer in 1..3600'),
        ('register = maybe\n', 'agent.conf:1: register: expected yes or no'),
        ('vm_id = -x\n', 'agent.conf:1: vm_id'),
        ('[other]\n', 'agent.conf:1: only an [agent] section'),
        ('no equals\n', 'agent.conf:1: expected key = value'),
        ('server = a/b\n', 'agent.conf:1: server: expected HOST:PORT'),
        ('log_level = loud\n', 'agent.conf:1: log_level: unknown level'),
    ]
    for conf, words in cases:
        p = check_config(tmp_path, conf)
        assert p.returncode == 2, conf
        assert words in p.stderr, (conf, p.stderr)
        assert p.stdout == ''
    p = check_config(tmp_path, None, '--config', str(tmp_path / 'missing.conf'))
    assert p.returncode == 2 and 'cannot open' in p.stderr
    p = check_config(tmp_path, None, '--interval', 'x')
    assert p.returncode == 2 and '--interval' in p.stderr


def test_help():
    for cmd in ('agent', 'describe'):
        p = subprocess.run([vmclient_bin(), cmd, '--help'], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0 and f'Usage: vmclient {cmd}' in p.stdout
    p = subprocess.run([vmclient_bin(), '--help'], capture_output=True, text=True, timeout=30)
    assert 'agent' in p.stdout and 'describe' in p.stdout


# ---- the pages ----

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
PAGE_CONF = os.path.join(TOP, 'tools', 'vmclient', 'agent.conf.5')
PAGE_VMCLIENT = os.path.join(TOP, 'tools', 'vmclient', 'vmclient.1')


def test_agent_pages_render_without_warnings():
    import shutil
    if not shutil.which('groff'):
        import pytest
        pytest.skip('groff is not installed (Debian: groff-base)')
    for page in (PAGE_CONF, PAGE_VMCLIENT):
        r = subprocess.run(['groff', '-man', '-Tutf8', '-ww', '-z', page],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == '', (page, r.stderr)


def test_agent_pages_match_the_options(tmp_path):
    p = check_config(tmp_path, None)
    keys = [k for k in settings(p.stdout) if k != 'config']
    assert len(keys) == 10
    with open(PAGE_CONF) as f:
        conf = f.read()
    keys_section = conf.split('.SH KEYS', 1)[1].split('.SH EXAMPLE', 1)[0]
    documented = re.findall(r'^\.B[IR] (\w+)', keys_section, re.M)
    assert documented == keys, f'agent.conf.5 KEYS: {documented}, the agent: {keys}'
    with open(PAGE_VMCLIENT) as f:
        page = f.read()
    agent = page.split('.SH AGENT', 1)[1].split('.SH SEE ALSO', 1)[0]
    synopsis = agent.split('.SS What', 1)[0].replace('\\-', '-')
    h = subprocess.run([vmclient_bin(), 'agent', '--help'], capture_output=True, text=True,
                       timeout=30).stdout
    flags = sorted(set(re.findall(r'^  (--[a-z-]+)', h, re.M)) - {'--help'})
    for flag in flags:
        assert flag in synopsis, f'{flag} of vmclient agent --help is not in vmclient.1 AGENT'
    h = subprocess.run([vmclient_bin(), 'describe', '--help'], capture_output=True, text=True,
                       timeout=30).stdout
    for flag in sorted(set(re.findall(r'--[a-z-]+', h)) - {'--help'}):
        assert flag in synopsis, f'{flag} of vmclient describe --help is not in vmclient.1 AGENT'
