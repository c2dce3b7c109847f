# SPDX-License-Identifier: MIT
"""The daemon's layers (DESIGN.md): tools/layer-check reads the object files
of the build and finds calls from a lower layer to a higher one."""

import os
import subprocess

import pytest

from vmmtest import vmmd_bin

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK = os.path.join(TOP, 'tools', 'layer-check')


def build_dir():
    # VMMD_BIN is BUILD/src/daemon/vmmd
    return os.path.dirname(os.path.dirname(os.path.dirname(vmmd_bin())))


def run(*args):
    return subprocess.run([CHECK, *args], capture_output=True, text=True, timeout=120)


def test_layers_hold():
    p = run(build_dir())
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'the layers hold' in p.stdout


@pytest.mark.parametrize('name,call,callee', [
    ('conn.c', 'manager_begin_shutdown', 'manager.c'),      # L2 -> L5
    ('sessions.c', 'rpc_attach', 'rpc.c'),                  # L1 -> L3
    ('rpc.c', 'session_purge', 'methods-session.c'),        # L3 -> L4
])
def test_a_break_is_caught(tmp_path, name, call, callee):
    """An object of a lower layer that calls a function of a higher one."""
    src = tmp_path / 'break.c'
    src.write_text(f'void {call}(void);\nvoid layer_break(void);\n'
                   f'void layer_break(void) {{ {call}(); }}\n')
    obj = tmp_path / 'break.o'
    subprocess.run(['cc', '-c', str(src), '-o', str(obj)], check=True)
    p = run('--object', f'{name}={obj}', build_dir())
    assert p.returncode == 1, p.stdout + p.stderr
    assert f'src/daemon/{name}' in p.stdout and f'{call}() of src/daemon/{callee}' in p.stdout, \
        p.stdout
