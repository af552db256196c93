"""The SQLite backend queues one process's write transactions on a lock (vantage.backends.sqlite3).

These tests open their own database file: the suite's test database is in memory,
where there is nothing to queue for.
"""

import sqlite3
import threading

import pytest
from django.db import OperationalError, connections, transaction

from vantage.backends.sqlite3.base import _queue_for
from vantage.env import database_from_url, sqlite_database

pytestmark = pytest.mark.database_independent  # a database of their own, whatever the suite runs on

ALIAS = "queued_sqlite"


@pytest.fixture
def db_file(tmp_path, django_db_blocker):
    path = tmp_path / "queued.sqlite3"
    settings = sqlite_database(path)
    settings["OPTIONS"]["timeout"] = 2
    configured = connections.configure_settings({"default": connections.settings["default"], ALIAS: settings})
    connections.settings[ALIAS] = configured[ALIAS]
    with django_db_blocker.unblock():
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("CREATE TABLE counter (id integer PRIMARY KEY, n integer NOT NULL)")
            cursor.execute("INSERT INTO counter VALUES (1, 0)")
        yield path
        connections[ALIAS].close()
    del connections.settings[ALIAS]
    delattr(connections._connections, ALIAS)


def _count() -> int:
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT n FROM counter WHERE id = 1")
        return cursor.fetchone()[0]


def _increment():
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("UPDATE counter SET n = n + 1 WHERE id = 1")


def test_sqlite_databases_use_the_queued_backend():
    assert sqlite_database("db.sqlite3")["ENGINE"] == "vantage.backends.sqlite3"
    assert database_from_url("sqlite:////srv/v/db.sqlite3")["ENGINE"] == "vantage.backends.sqlite3"
    assert connections["default"].vendor in ("sqlite", "postgresql")


def test_the_lock_is_held_for_the_transaction_and_released_at_commit(db_file):
    queue = _queue_for(str(db_file))
    with transaction.atomic(using=ALIAS):
        _increment()
        assert queue.locked()
    assert not queue.locked()
    assert _count() == 1


def test_a_rolled_back_transaction_releases_the_lock(db_file):
    queue = _queue_for(str(db_file))
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic(using=ALIAS):
            _increment()
            1 / 0
    assert not queue.locked()
    assert _count() == 0


def test_closing_the_connection_mid_transaction_releases_the_lock(db_file):
    queue = _queue_for(str(db_file))
    connection = connections[ALIAS]
    with transaction.atomic(using=ALIAS):
        _increment()
        connection.close()  # as Django does when a connection turns unusable
        assert not queue.locked()
    assert _count() == 0


def test_concurrent_writers_all_commit(db_file):
    """Eight threads, 40 transactions each: every increment lands, none hits 'database is locked'."""
    errors = []

    def writer():
        try:
            for _ in range(40):
                with transaction.atomic(using=ALIAS):
                    _increment()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections[ALIAS].close()

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert _count() == 320
    assert not _queue_for(str(db_file)).locked()


def test_a_writer_outside_the_process_is_waited_for_through_sqlite(db_file):
    """Another connection (as another process would be) holds the write lock for a while."""
    other = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE counter SET n = 10 WHERE id = 1")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        with transaction.atomic(using=ALIAS):  # waits in SQLite's busy handler, then goes on
            _increment()
    finally:
        release.join()
        other.close()
    assert _count() == 11
    assert not _queue_for(str(db_file)).locked()


def test_a_transaction_that_cannot_begin_releases_the_lock(db_file):
    """Past SQLite's busy timeout the error is SQLite's, and the next transaction is not stuck behind it."""
    connections[ALIAS].settings_dict["OPTIONS"]["timeout"] = 0.2
    connections[ALIAS].close()  # reconnect with the short timeout
    other = sqlite3.connect(db_file, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="locked"):
            with transaction.atomic(using=ALIAS):
                _increment()
        assert not _queue_for(str(db_file)).locked()
    finally:
        other.execute("ROLLBACK")
        other.close()
    with transaction.atomic(using=ALIAS):
        _increment()
    assert _count() == 1
