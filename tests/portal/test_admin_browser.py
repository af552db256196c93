"""The admin in a real browser under the production server (`python -m vantage.server`,
DEBUG off): its CSS and JavaScript come from the server itself (WhiteNoise), so the
organisation pickers work, and an administrator creates a collaboration with members
and a node (issue 13.12: every /static/ file answered 404 and the pickers were empty).
"""

import json

import pyotp
import pytest
import requests

from tests import factories
from tests.live.conftest import LiveDatabase
from tests.portal.test_browser import browser, _wait  # noqa: F401 (browser is a fixture)

try:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
except ImportError:  # the `browser` fixture skips, or fails under CI
    By = None

pytestmark = pytest.mark.slow

SEED_ADMIN = (
    "from tests.live.seed import main; main()\n"
    "from collaborations.models import Organization\n"
    "from tests import factories\n"
    "admin = factories.make_user(Organization.objects.get(name='Live Hospital A'), roles=('root',),"
    " username='live-admin')\n"
    "admin.is_staff = admin.is_superuser = True\n"
    "admin.save(update_fields=['is_staff', 'is_superuser'])\n"
    # Staff need a second factor to reach the admin (accounts.services.login_authenticate).
    "print('TOTP-SECRET', factories.enrol_second_factor(admin))\n"
)


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory):
    database = LiveDatabase(tmp_path_factory.mktemp("admin-live"))
    database.create()
    seeded = database.manage("shell", "-c", SEED_ADMIN)
    secret = next(line.split()[1] for line in seeded.splitlines() if line.startswith("TOTP-SECRET "))
    server = database.start_server(42, SESSION_COOKIE_SECURE="false", CSRF_COOKIE_SECURE="false")
    try:
        yield server, database, secret
    finally:
        server.stop()
        database.drop()


def _pick(driver, field: str, text: str) -> None:
    """Choose `text` in the admin's autocomplete (select2) widget of `field`."""
    driver.find_element(By.CSS_SELECTOR, f"#id_{field} + .select2 .select2-selection").click()
    search = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".select2-container--open .select2-search__field"),
                   f"the {field} picker opens")
    search[0].send_keys(text)

    def chosen(d) -> bool:
        # The results list is redrawn as the autocomplete answers: find and click the option
        # afresh on each try, until the widget shows it as chosen.
        try:
            for option in d.find_elements(By.CSS_SELECTOR, ".select2-container--open .select2-results__option"):
                if option.text == text:
                    option.click()
                    break
            return text in d.find_element(By.CSS_SELECTOR, f"#id_{field} + .select2").text
        except StaleElementReferenceException:
            return False

    _wait(driver, chosen, f"{text} is offered by the autocomplete and chosen")


def _body_text(driver) -> str:
    # In one script call: the page may be replaced between finding the body and reading it.
    return driver.execute_script("return document.body ? document.body.innerText : '';")


def test_administrator_creates_a_collaboration_with_members_and_a_node(browser, admin_server):  # noqa: F811
    server, database, secret = admin_server
    driver = browser
    for asset in ("/static/admin/css/base.css", "/static/admin/js/vendor/select2/select2.full.min.js",
                  "/static/admin/js/autocomplete.js"):
        assert requests.get(server.url + asset, timeout=10).status_code == 200, asset

    driver.get(server.url + "/admin/login/")
    driver.find_element(By.NAME, "username").send_keys("live-admin")
    driver.find_element(By.NAME, "password").send_keys(factories.PASSWORD)
    driver.find_element(By.NAME, "otp").send_keys(pyotp.TOTP(secret).now())
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    _wait(driver, lambda d: d.current_url == f"{server.url}/admin/", "login leads to the admin index")
    # The stylesheet applied: the header is styled, not the browser's default.
    assert driver.execute_script("return getComputedStyle(document.getElementById('header')).display") == "flex"

    driver.get(server.url + "/admin/collaborations/collaboration/add/")
    driver.find_element(By.NAME, "name").send_keys("Browser study")
    _pick(driver, "organizations", "Live Hospital A")
    _pick(driver, "organizations", "Live Hospital B")
    driver.find_element(By.NAME, "_save").click()
    _wait(driver, lambda d: d.current_url.endswith("/admin/collaborations/collaboration/"), "saved, back at the list")
    members = database.query(
        "SELECT o.name FROM collaborations_collaboration_organizations m "
        "JOIN collaborations_collaboration c ON c.id = m.collaboration_id "
        "JOIN collaborations_organization o ON o.id = m.organization_id WHERE c.name = %s ORDER BY o.name",
        "Browser study")
    assert [name for (name,) in members] == ["Live Hospital A", "Live Hospital B"]

    driver.get(server.url + "/admin/collaborations/node/add/")
    driver.find_element(By.NAME, "name").send_keys("browser-node")
    _pick(driver, "organization", "Live Hospital B")
    _pick(driver, "collaboration", "Browser study")
    driver.find_element(By.NAME, "_save").click()
    _wait(driver, lambda d: "Node created: copy its API key now" in _body_text(d), "the new node's key is shown once")
    assert "vnk_" in driver.page_source
    rows = database.query(
        "SELECT o.name, c.name FROM collaborations_node n JOIN collaborations_organization o ON o.id = n.organization_id "
        "JOIN collaborations_collaboration c ON c.id = n.collaboration_id WHERE n.name = %s", "browser-node")
    assert rows == [("Live Hospital B", "Browser study")]
    audit = database.query("SELECT verb, details FROM accounts_auditevent WHERE verb IN "
                           "('collaboration.created', 'node.created') ORDER BY id")
    assert [verb for verb, _ in audit][-2:] == ["collaboration.created", "node.created"]
    details = audit[-1][1]
    details = json.loads(details) if isinstance(details, str) else details
    assert set(details) == {"organization", "collaboration"}


def test_api_docs_render_from_this_server_alone(browser, admin_server):  # noqa: F811
    # This machine reaches no CDN: Swagger UI draws the schema only if the server serves
    # every script and stylesheet itself (drf-spectacular-sidecar), under its CSP.
    server, _database, _secret = admin_server
    driver = browser
    driver.get(server.url + "/api/docs/")
    _wait(driver, lambda d: "Vantage API" in d.execute_script(
        "const t = document.querySelector('.swagger-ui .info .title'); return t ? t.innerText : '';"),
        "Swagger UI shows the API's title")
    operations = driver.execute_script("return document.querySelectorAll('.swagger-ui .opblock').length")
    assert operations > 20, operations
