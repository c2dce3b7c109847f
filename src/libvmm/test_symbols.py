#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""libvmm exports exactly the symbols vmm.sym names, and vmm.sym names
exactly the functions the public headers declare.

    test_symbols.py LIBVMM.so vmm.sym client.h protocol.h"""

import re
import subprocess
import sys


def main():
    lib, symfile, *headers = sys.argv[1:]
    text = re.sub(r'/\*.*?\*/', '', open(symfile).read(), flags=re.S)
    assert '*' not in text.split('local:')[0], 'vmm.sym: a pattern in the global list'
    listed = set(re.findall(r'^\s+(vmm_\w+);', text, re.M))
    out = subprocess.run(['nm', '-D', '--defined-only', lib], capture_output=True, text=True,
                         check=True).stdout
    exported = {line.split()[2].split('@')[0] for line in out.splitlines()
                if len(line.split()) == 3 and line.split()[1] in 'TDBRVW'}
    exported.discard('VMM_0.1')
    declared = set()
    for h in headers:
        declared |= set(re.findall(r'\b(vmm_\w+)\s*\(', open(h).read()))
    failed = False
    for what, got, want in (('exported but not in vmm.sym', exported - listed, None),
                            ('in vmm.sym but not exported', listed - exported, None),
                            ('declared in a header but not in vmm.sym', declared - listed, None),
                            ('in vmm.sym but declared in no header', listed - declared, None)):
        if got:
            print(f'FAIL {what}: {sorted(got)}')
            failed = True
    if len(listed) < 30:
        print(f'FAIL only {len(listed)} symbols listed')
        failed = True
    if failed:
        return 1
    print(f'ok   {len(listed)} symbols, each listed, exported and declared')
    return 0


if __name__ == '__main__':
    sys.exit(main())
