# SPDX-License-Identifier: MIT
"""pytest fixtures for the vmmd integration tests (see vmmtest.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vmmtest  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, 'rep_' + rep.when, rep)


def _system_state():
    """What a vmmd run as root with its defaults would write: /var/lib/vmmd
    and its files, each with its change time (None: not there)."""
    base = '/var/lib/vmmd'
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return None
    out = {}
    for n in [''] + names:
        try:
            out[n] = os.lstat(os.path.join(base, n)).st_ctime_ns
        except OSError:
            out[n] = None
    return out


@pytest.fixture(autouse=True)
def _leaves_system_state_alone(request):
    """No test may touch the machine's /var/lib/vmmd: every daemon of a test
    has a state directory of its own. One left there by a vmmd started as
    root without --state-dir fails this test here, and would fail the
    package tests later (the package's vmmd, as user vmmd, cannot open it)."""
    before = _system_state()
    yield
    after = _system_state()
    if after != before:
        pytest.fail(f'this test changed /var/lib/vmmd: before {before}, after {after}')


def _failed(request):
    rep = getattr(request.node, 'rep_call', None)
    return rep is None or rep.failed


@pytest.fixture
def make_daemon(tmp_path, request):
    """Factory: make_daemon(args=[...], ...) -> a started vmmd. Every daemon is
    stopped at the end with SIGTERM and must exit 0 without a sanitizer report;
    its log is printed when the test failed."""
    daemons = []

    def make(**kw):
        sub = tmp_path / f'd{len(daemons)}'
        sub.mkdir()
        d = vmmtest.Daemon(sub, **kw)
        daemons.append(d)
        return d

    yield make
    errors = []
    for d in daemons:
        try:
            d.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            d.cleanup()
    if _failed(request) or errors:
        for d in daemons:
            print(d.log_text())
    if errors:
        pytest.fail('\n'.join(errors))


@pytest.fixture
def daemon(make_daemon):
    """vmmd with default settings on a free loopback port."""
    return make_daemon()
