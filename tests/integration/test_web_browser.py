# SPDX-License-Identifier: MIT
"""The page in a real browser: headless Chromium driven by Selenium against
vmm-web and a real vmmd. A user logs in, books a VM and sees its countdown,
gets a toast when an administrator's session cancels the booking, switches
the theme and files a request; names with markup show as text; no console
errors; axe-core (npm, installed by this test into the build directory)
finds no serious or critical accessibility violation. Screenshots are saved
as artefacts (VMM_WEB_ARTIFACTS, else the test's temporary directory)."""

import os
import re
import shutil
import subprocess
import time

import pytest

from webtest import ADMIN_PW, ALICE_PW, HTML_NAME, make_web, site  # noqa: F401

from selenium import webdriver  # noqa: E402  (python3-selenium, tools/install-deps)
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROME_FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--window-size=1280,800',
                '--disable-quic', '--no-first-run', '--disable-background-networking',
                '--disable-component-update', '--disable-sync', '--disable-extensions',
                '--disable-default-apps', '--mute-audio']
AXE_VERSION = '4'


def axe_source():
    """axe.min.js from npm, installed once into the build directory (test-only)."""
    base = os.environ.get('VMM_WEB_AXE_DIR') or os.path.join(os.path.dirname(__file__), '.axe')
    path = os.path.join(base, 'node_modules', 'axe-core', 'axe.min.js')
    if not os.path.exists(path):
        os.makedirs(base, exist_ok=True)
        r = subprocess.run(['npm', 'install', '--no-audit', '--no-fund', '--no-save', '--prefix', base,
                            f'axe-core@{AXE_VERSION}'], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and os.path.exists(path), f'npm install axe-core failed:\n{r.stderr}'
    with open(path) as f:
        return f.read()


@pytest.fixture
def browser(tmp_path):
    assert shutil.which('chromedriver') or os.path.exists('/usr/bin/chromedriver'), \
        'chromium-driver is missing (tools/install-deps)'
    opts = webdriver.ChromeOptions()
    for f in CHROME_FLAGS + [f'--user-data-dir={tmp_path}/chrome']:
        opts.add_argument(f)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(service=Service('/usr/bin/chromedriver'), options=opts)
    d.set_script_timeout(60)
    yield d
    d.quit()


class Shots:
    def __init__(self, driver, tmp_path):
        self.d = driver
        self.dir = os.environ.get('VMM_WEB_ARTIFACTS') or str(tmp_path / 'screenshots')
        os.makedirs(self.dir, exist_ok=True)
        self.n = 0

    def __call__(self, name):
        self.n += 1
        path = os.path.join(self.dir, f'{self.n:02d}-{name}.png')
        assert self.d.save_screenshot(path), path
        return path


def console_errors(d):
    return [e for e in d.get_log('browser') if e['level'] == 'SEVERE']


def wait(d, cond, timeout=10):
    # the page re-renders the pool when events arrive: elements may go stale
    return WebDriverWait(d, timeout, ignored_exceptions=[StaleElementReferenceException]).until(cond)


def click(d, css):
    # find and click again when a re-render replaced the element in between
    for _ in range(20):
        try:
            wait(d, EC.element_to_be_clickable((By.CSS_SELECTOR, css))).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    raise AssertionError(f'{css} kept going stale')


def text_of(d, css):
    return d.execute_script('const e = document.querySelector(arguments[0]);'
                            'return e ? e.textContent : null;', css)


def run_axe(d, source):
    d.execute_script(source)
    res = d.execute_async_script(
        'const done = arguments[arguments.length - 1];'
        'axe.run(document, {resultTypes: ["violations"]}).then(r => done(r.violations))'
        '.catch(e => done([{id: "axe-error", impact: "critical", description: String(e), nodes: []}]));')
    return [v for v in res if v.get('impact') in ('serious', 'critical')]


def test_page_in_chromium(site, browser, tmp_path):
    d = browser
    shot = Shots(d, tmp_path)
    axe = axe_source()
    admin = site.login('admin', ADMIN_PW)[1]
    g = site.post('/api/v1/groups', {'name': HTML_NAME, 'vm_ids': ['web-01', 'web-02']}, token=admin)
    assert g.status == 201, g

    # logged out: the login form, no console error
    d.get(f'http://{site.host}:{site.port}/')
    wait(d, EC.visibility_of_element_located((By.ID, 'login-form')))
    shot('login')
    violations = run_axe(d, axe)
    assert not violations, [(v['id'], v['impact'], v['description']) for v in violations]

    d.find_element(By.ID, 'login-name').send_keys('alice')
    d.find_element(By.ID, 'login-password').send_keys(ALICE_PW)
    d.find_element(By.CSS_SELECTOR, '#login-form button[type=submit]').click()
    wait(d, EC.visibility_of_element_located((By.ID, 'pool')))
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, 'button[aria-label="Book web-01"]')))
    assert text_of(d, '#whoami') == 'alice (user)'
    # the group's name is shown as text, never as markup
    heads = d.execute_script('return [...document.querySelectorAll("#pool-body h3")].map(h => h.textContent)')
    assert f'Group: {HTML_NAME}' in heads, heads
    assert d.execute_script('return document.querySelectorAll("img[src=x]").length') == 0
    shot('pool')

    # book web-01 for 2 hours and watch the countdown
    click(d, 'button[aria-label="Book web-01"]')
    wait(d, EC.visibility_of_element_located((By.ID, 'dlg-amount')))
    amount = d.find_element(By.ID, 'dlg-amount')
    amount.clear()
    amount.send_keys('2')
    d.find_element(By.ID, 'dialog-ok').click()
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, 'button[aria-label="Cancel booking of web-01"]')))
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, 'time.countdown')))
    first = text_of(d, 'time.countdown')
    assert re.match(r'^1 h 59 min \d\d s$', first) or first.startswith('2 h 00 min'), first
    time.sleep(2.2)
    second = text_of(d, 'time.countdown')
    assert second != first, (first, second)
    shot('booked-countdown')

    # another session (an administrator) cancels it: a toast says so
    r = site.request('DELETE', '/api/v1/vms/web-01/booking', token=admin)
    assert r.status == 200, r
    toast = wait(d, lambda drv: [t for t in drv.execute_script(
        'return [...document.querySelectorAll("#toasts .toast")].map(t => t.textContent)')
        if 'web-01' in t and 'booking' in t and 'booked' not in t], timeout=10)
    assert toast
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, 'button[aria-label="Book web-01"]')))
    shot('toast')

    # theme toggle
    before = d.execute_script('return getComputedStyle(document.body).backgroundColor')
    d.find_element(By.ID, 'theme-toggle').click()
    after = d.execute_script('return getComputedStyle(document.body).backgroundColor')
    theme = d.execute_script('return document.documentElement.dataset.theme')
    assert before != after and theme in ('dark', 'light'), (before, after, theme)
    assert d.find_element(By.ID, 'theme-toggle').get_attribute('aria-pressed') == \
        ('true' if theme == 'dark' else 'false')
    shot(f'theme-{theme}')
    violations = run_axe(d, axe)
    assert not violations, [(v['id'], v['impact'], v['description'], v['nodes'][:2]) for v in violations]
    d.find_element(By.ID, 'theme-toggle').click()

    # file a VM request (markup in the description stays text)
    d.get(f'http://{site.host}:{site.port}/#requests-section')
    wait(d, EC.visibility_of_element_located((By.ID, 'rq-description')))
    d.find_element(By.ID, 'rq-description').send_keys(HTML_NAME)
    d.find_element(By.CSS_SELECTOR, '#request-form button[type=submit]').click()
    cell = wait(d, lambda drv: [c for c in drv.execute_script(
        'return [...document.querySelectorAll("#requests-body td")].map(c => c.textContent)')
        if c == HTML_NAME])
    assert cell
    assert d.execute_script('return document.querySelectorAll("img[src=x]").length') == 0
    shot('request-filed')

    # a VM's detail with its chart
    click(d, 'button[aria-label="Details of web-02"]')
    wait(d, EC.visibility_of_element_located((By.CSS_SELECTOR, '#dialog svg.chart')))
    facts = d.find_element(By.CSS_SELECTOR, '#dialog dl.facts').text
    assert 'Status' in facts and 'Hostname' in facts and 'OS' in facts
    shot('vm-detail')
    violations = run_axe(d, axe)
    assert not violations, [(v['id'], v['impact'], v['description']) for v in violations]
    d.find_element(By.ID, 'dialog-cancel').click()

    # a phone's width
    d.set_window_size(390, 844)
    time.sleep(0.3)
    shot('phone')
    width = d.execute_script('return document.documentElement.scrollWidth')
    assert width <= 400, width

    errors = console_errors(d)
    assert not errors, errors
