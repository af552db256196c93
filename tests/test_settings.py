"""Settings come from the environment; bad values stop start-up with one readable line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from vantage.env import database_from_url, env_bool, env_int

ROOT = Path(__file__).resolve().parent.parent


def _start(env_overrides: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL")}
    env.update({"VANTAGE_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "vantage.settings"}, **env_overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_refuses_to_start_without_debug_and_with_the_development_key(tmp_path):
    proc = _start({"DEBUG": "false"}, tmp_path)
    assert proc.returncode != 0
    assert "SECRET_KEY" in proc.stderr.strip().splitlines()[-1]


def test_starts_without_debug_given_a_secret_key_file(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("x" * 50 + "\n")
    proc = _start({"DEBUG": "false", "SECRET_KEY_FILE": str(key_file)}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "started" in proc.stdout


def test_bad_boolean_names_the_variable(tmp_path):
    proc = _start({"DEBUG": "maybe"}, tmp_path)
    assert proc.returncode != 0
    assert "DEBUG: expected true/false, got 'maybe'" in proc.stderr


def test_postgres_url_is_parsed():
    db = database_from_url("postgres://vantage:s%40cret@db.example:6543/vantage?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "vantage", "vantage", "s@cret", "db.example", "6543")
    assert db["OPTIONS"] == {"sslmode": "require"}


def test_sqlite_url_takes_absolute_and_relative_paths():
    assert database_from_url("sqlite:////srv/v/db.sqlite3")["NAME"] == "/srv/v/db.sqlite3"
    assert database_from_url("sqlite:///var/db.sqlite3")["NAME"] == "var/db.sqlite3"


@pytest.mark.parametrize("url", ["mysql://x@y/z", "postgres://host:5432/", "sqlite://"])
def test_unsupported_or_incomplete_database_urls_are_refused(url):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        database_from_url(url)


def test_numbers_are_checked(monkeypatch):
    monkeypatch.setenv("VANTAGE_X", "ten")
    with pytest.raises(ImproperlyConfigured, match="VANTAGE_X: expected a whole number"):
        env_int("VANTAGE_X", 1)
    monkeypatch.setenv("VANTAGE_X", "-1")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env_int("VANTAGE_X", 1)


def test_unreadable_secret_file_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("DEBUG_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="DEBUG_FILE: cannot read"):
        env_bool("DEBUG", True)
