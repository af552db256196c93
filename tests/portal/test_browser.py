"""The portal in a real browser: Debian's chromium, driven through its chromedriver by
selenium, against a live server (tests/live/conftest.py's harness and seed).

A researcher logs in, creates a task, and watches its runs change state without
reloading the page while nodes claim, start and finish them over the API (through the
services, in the server process, whose events reach the page's websocket); then kills a
second task with the button and logs out. Outside CI a missing browser skips these
tests; under CI=true it fails them.
"""

import json
import os
import shutil
import time

import pytest
import requests

from tests import factories
from tests.live.conftest import LiveDatabase

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the `browser` fixture skips, or fails under CI
    webdriver = None

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_SECONDS = 20


def _missing(what: str):
    message = f"{what}: apt-get install -y chromium chromium-driver, and pip install -r requirements-dev.txt"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def portal_server(tmp_path_factory):
    """A server of its own with the live seed (org A with nodes a1, a2; org B with
    node b; `live-owner` a researcher of org A). Plain HTTP on loopback, so the session
    and CSRF cookies may not be marked Secure."""
    database = LiveDatabase(tmp_path_factory.mktemp("portal-live"))
    database.create()
    out = database.manage("shell", "-c", "from tests.live.seed import main; main()")
    seed = json.loads(next(line for line in out.splitlines() if line.startswith("SEED "))[len("SEED "):])
    server = database.start_server(41, SESSION_COOKIE_SECURE="false", CSRF_COOKIE_SECURE="false")
    try:
        yield server, seed
    finally:
        server.stop()
        database.drop()


@pytest.fixture
def browser(tmp_path):
    if webdriver is None:
        _missing("selenium is not installed")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        _missing(f"{CHROMIUM} or {CHROMEDRIVER} is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Loopback only: no proxy, and none of the browser's own calls home.
        "--no-proxy-server", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-default-apps", "--no-first-run", "--disable-extensions",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


class Node:
    """A node agent's HTTP calls, made by hand so the test decides when each happens."""

    def __init__(self, server, token: str):
        self.url = server.url
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {token}"

    def step(self, run_id: int, step: str) -> None:
        response = self.session.post(f"{self.url}/api/runs/{run_id}/{step}/", timeout=30)
        assert response.status_code == 200, response.text

    def finish(self, run_id: int, result: dict) -> None:
        response = self.session.post(
            f"{self.url}/api/runs/{run_id}/finish/", data={"status": "completed", "exit_code": "0"},
            files={"result": ("output", json.dumps(result).encode())}, timeout=30,
        )
        assert response.status_code == 200, response.text


def _wait(driver, condition, message: str):
    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(condition, message)


def _text(driver, css: str) -> str:
    # Read in one script call: a live refresh may replace the element between two calls.
    return driver.execute_script(
        "const found = document.querySelector(arguments[0]); return found ? found.innerText.trim() : '';", css
    )


def _run_status(driver, run_id: int) -> str:
    return _text(driver, f"#run-{run_id} .status")


def _log_in(driver, server, seed) -> None:
    driver.get(server.url + "/")
    _wait(driver, lambda d: "/portal/login/" in d.current_url, "the bare address leads to the login page")
    driver.find_element(By.NAME, "username").send_keys("live-owner")
    driver.find_element(By.NAME, "password").send_keys(factories.PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, lambda d: d.current_url == f"{server.url}/portal/", "login leads to the dashboard")


def _create_task(driver, seed, kwargs: str) -> None:
    for org in (seed["org_a"], seed["org_b"]):
        box = driver.find_element(By.CSS_SELECTOR, f"input[name=organizations][value='{org}']")
        if not box.is_selected():
            box.click()
    image = driver.find_element(By.NAME, "image")
    image.clear()
    image.send_keys("127.0.0.1:5000/live:1")
    method = driver.find_element(By.NAME, "method")
    method.clear()
    method.send_keys("partial")
    arguments = driver.find_element(By.NAME, "kwargs")
    arguments.clear()
    arguments.send_keys(kwargs)
    driver.find_element(By.CSS_SELECTOR, "#task-form button[type=submit]").click()


def _run_ids(driver) -> dict[str, int]:
    """{organisation name: run id} from the runs table."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    return {row.find_element(By.CSS_SELECTOR, "td").text: int(row.get_attribute("id").split("-")[1]) for row in rows}


def test_researcher_follows_a_task_live_kills_another_and_logs_out(browser, portal_server):
    server, seed = portal_server
    driver = browser
    nodes = {"Live Hospital A": Node(server, seed["nodes"]["a1"]["token"]),
             "Live Hospital B": Node(server, seed["nodes"]["b"]["token"])}
    _log_in(driver, server, seed)
    assert "Live collaboration" in _text(driver, "main")

    # New task, from the collaboration's own link; a bad argument first: an error on its field.
    driver.find_element(By.CSS_SELECTOR, f"a[href='/portal/tasks/new/?collaboration={seed['collaboration']}']").click()
    _wait(driver, lambda d: "/portal/tasks/new/" in d.current_url, "the new task form opens")
    _create_task(driver, seed, '{"x": 1')
    _wait(driver, lambda d: "Not valid JSON" in _text(d, "#field-kwargs .errors"), "a field error, not a traceback")
    _create_task(driver, seed, '{"x": 1}')
    _wait(driver, lambda d: "/portal/tasks/" in d.current_url and "/new/" not in d.current_url,
          "the task page opens")
    runs = _run_ids(driver)
    assert set(runs) == set(nodes) and {_run_status(driver, r) for r in runs.values()} == {"pending"}

    # From here on the page must not reload: a marker on window would be lost.
    driver.execute_script("window.portalMarker = 'same page';")
    _wait(driver, lambda d: _text(d, "#live-status") == "live", "the page's websocket is connected")

    node_b, run_b = nodes["Live Hospital B"], runs["Live Hospital B"]
    node_b.step(run_b, "claim")
    _wait(driver, lambda d: _run_status(d, run_b) == "claimed", "the claim shows without a reload")
    assert _text(driver, "header.page h1 .status") == "active"
    node_b.step(run_b, "start")
    _wait(driver, lambda d: _run_status(d, run_b) == "running", "the start shows without a reload")
    # The node's output gate holds the result for its steward: the page says so, live.
    held = node_b.session.post(f"{node_b.url}/api/runs/{run_b}/hold/", timeout=30, json={
        "output_type": "count_table", "size": 321, "flags": ["1 cell(s) with counts 2 below this node's min_cell 5"]})
    assert held.status_code == 200, held.text
    _wait(driver, lambda d: _run_status(d, run_b) == "awaiting_release", "the hold shows without a reload")
    assert "min_cell 5" in _text(driver, f"#run-{run_b} .hold")
    node_b.finish(run_b, {"type": "aggregate", "n": 12, "mean": 53.25})
    _wait(driver, lambda d: _run_status(d, run_b) == "completed", "the finish shows without a reload")
    _wait(driver, lambda d: "53.25" in _text(d, f"#result-{run_b}"), "the result shows as a table")
    assert "aggregate" in _text(driver, f"#result-{run_b} caption")

    node_a, run_a = nodes["Live Hospital A"], runs["Live Hospital A"]
    for step in ("claim", "start"):
        node_a.step(run_a, step)
    node_a.finish(run_a, {"type": "aggregate", "n": 30, "mean": 49.5})
    _wait(driver, lambda d: _text(d, "header.page h1 .status") == "completed", "the task completes live")
    assert driver.execute_script("return window.portalMarker;") == "same page"
    download = driver.find_element(By.CSS_SELECTOR, f"#run-{run_a} a[download]")
    assert download.get_attribute("href") == f"{server.url}/api/runs/{run_a}/result/"

    # A second task, killed with the button (after the browser's confirmation).
    driver.get(f"{server.url}/portal/tasks/new/?collaboration={seed['collaboration']}")
    _create_task(driver, seed, "{}")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "button.danger"), "an open task offers the kill button")
    driver.find_element(By.CSS_SELECTOR, "button.danger").click()
    _wait(driver, lambda d: _confirm(d), "the kill button asks first")
    _wait(driver, lambda d: "Kill requested: 2 open run(s)" in _text(d, ".messages"), "the kill is confirmed")
    assert _text(driver, "header.page h1 .status") == "killed"

    driver.find_element(By.CSS_SELECTOR, "header.top form button").click()
    _wait(driver, lambda d: "/portal/login/" in d.current_url, "logout leads to the login page")
    assert "You are logged out." in _text(driver, ".messages")
    driver.get(f"{server.url}/portal/")
    assert "/portal/login/?next=/portal/" in driver.current_url


def test_a_researcher_sets_up_a_second_factor_and_logs_in_with_it(browser, portal_server):
    import pyotp

    server, _seed = portal_server
    driver = browser
    driver.get(server.url + "/portal/login/")
    driver.find_element(By.NAME, "username").send_keys("live-guarded")
    driver.find_element(By.NAME, "password").send_keys(factories.PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, lambda d: d.current_url == f"{server.url}/portal/", "login leads to the dashboard")

    driver.find_element(By.LINK_TEXT, "Security").click()
    driver.find_element(By.ID, "second-factor-begin").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#second-factor-qr svg"), "the QR code shows")
    qr = driver.find_element(By.CSS_SELECTOR, "#second-factor-qr svg")
    assert qr.size["width"] > 100 and qr.size["height"] > 100  # drawn, not blocked by the page's CSP
    secret = _text(driver, "#second-factor-secret")
    driver.find_element(By.NAME, "code").send_keys(pyotp.TOTP(secret).now())
    driver.find_element(By.ID, "second-factor-confirm").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#recovery-codes li"), "the recovery codes show")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#recovery-codes li")) == 10

    driver.find_element(By.CSS_SELECTOR, "header.top form button").click()
    _wait(driver, lambda d: "/portal/login/" in d.current_url, "logout leads to the login page")
    # The set-up used up the current code; the next one is accepted (one step of clock drift).
    next_code = pyotp.TOTP(secret).at(time.time() + 30)
    for code, outcome in (("", "code from its authenticator"), (next_code, None)):
        for name, value in (("username", "live-guarded"), ("password", factories.PASSWORD), ("otp", code)):
            field = driver.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        if outcome:
            _wait(driver, lambda d: outcome in _text(d, "main"), "the login asks for the code")
        else:
            _wait(driver, lambda d: d.current_url == f"{server.url}/portal/", "login with the code succeeds")

    driver.find_element(By.LINK_TEXT, "Security").click()
    driver.find_element(By.ID, "logout-everywhere").click()
    _wait(driver, lambda d: "/portal/login/" in d.current_url, "log out everywhere leads to the login page")
    assert "logged out everywhere" in _text(driver, ".messages")


def _confirm(driver) -> bool:
    try:
        driver.switch_to.alert.accept()
    except NoAlertPresentException:
        return False
    return True
