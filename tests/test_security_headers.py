"""Pages rendered by Django and drf-spectacular: local assets under a CSP; HSTS in production;
static files served by the server itself (WhiteNoise); the user schema matches its data."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from drf_spectacular.generators import SchemaGenerator

ROOT = Path(__file__).resolve().parent.parent


def _csp(response) -> dict[str, str]:
    return {part.split()[0]: part.strip() for part in response["Content-Security-Policy"].split(";") if part.strip()}


def test_api_docs_load_swagger_ui_from_this_server_under_a_csp(client, db):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "cdn" not in page.lower() and "https://" not in page
    assert '<script src="/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js">' in page
    # No inline script: the start-up script is a file of its own.
    assert "<script>" not in page
    policy = _csp(response)
    assert policy["script-src"] == "script-src 'self'"
    assert policy["default-src"] == "default-src 'none'"
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")


@pytest.mark.parametrize("path", [
    "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
    "/static/admin/css/base.css",
    "/static/admin/js/vendor/select2/select2.full.min.js",
])
def test_static_files_are_served_by_the_application(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert b"".join(response.streaming_content if response.streaming else [response.content])


@pytest.mark.parametrize("path", ["/admin/login/", "/admin/"])
def test_admin_pages_carry_a_csp(client, root, path):
    if path != "/admin/login/":
        client.force_login(root)
    response = client.get(path)
    assert response.status_code == 200
    assert _csp(response)["script-src"] == "script-src 'self'"
    assert _csp(response)["frame-ancestors"] == "frame-ancestors 'none'"


def test_the_portal_keeps_its_own_stricter_csp(client, owner):
    client.force_login(owner)
    assert "'unsafe-inline'" not in client.get("/portal/")["Content-Security-Policy"]


def _production_settings(**extra) -> dict:
    return {
        "DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50), "VANTAGE_AUDIT_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "vantage.example.org", "CSRF_TRUSTED_ORIGINS": "https://vantage.example.org",
        "SECURE_SSL_REDIRECT": "true", **extra,
    }


def _run(code: str, env_overrides: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL")}
    env.update({"VANTAGE_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "vantage.settings"}, **env_overrides)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_hsts_is_sent_over_https_with_debug_off(tmp_path):
    code = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "r = Client().get('/api/health/', secure=True, headers={'host': 'vantage.example.org'})\n"
        "print(r.status_code, r['Strict-Transport-Security'])\n"
    )
    proc = _run(code, _production_settings(), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(None, 1) == ["200", "max-age=31536000; includeSubDomains; preload\n"]


def test_check_deploy_is_clean_with_the_readmes_production_settings(tmp_path):
    # The variables of README.md's "Production settings" example (secrets as values here).
    proc = _run("import django, sys; from django.core.management import call_command; django.setup(); "
                "call_command('check', deploy=True, fail_level='WARNING')",
                _production_settings(DATABASE_URL="postgres://postgres@127.0.0.1:5432/vantage_deploycheck"), tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_the_user_schema_allows_the_empty_email_users_without_one_get(db):
    schema = SchemaGenerator().get_schema(request=None, public=True)
    email = schema["components"]["schemas"]["User"]["properties"]["email"]
    assert {"type": "string", "maxLength": 0} in email["oneOf"]
    assert {"type": "string", "format": "email"} in email["oneOf"]


def test_check_deploy_warns_when_the_audit_key_is_not_set(tmp_path):
    settings = _production_settings(DATABASE_URL="postgres://postgres@127.0.0.1:5432/vantage_deploycheck")
    del settings["VANTAGE_AUDIT_KEY"]
    proc = _run("import django; from django.core.management import call_command; django.setup(); "
                "call_command('check', deploy=True, fail_level='WARNING')", settings, tmp_path)
    assert proc.returncode != 0
    assert "accounts.W001" in proc.stderr and "VANTAGE_AUDIT_KEY is not set" in proc.stderr
