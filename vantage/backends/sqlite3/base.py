"""Django's SQLite backend, with one process's write transactions queued on a lock.

With `transaction_mode` IMMEDIATE every transaction takes the database's single write
lock as it begins. A thread that finds it taken is put to sleep by SQLite's busy
handler for 1, 2, 5, 10... ms and retried, however soon the lock comes free: under four
concurrent API requests that was about two sleeps per request, with the CPU idle while
work waited (bench/README.md). The threads of one process now wait on a Python lock,
handed to the next the moment a transaction ends. SQLite's own lock still decides:
another process (a Celery worker, a management command) meets the busy timeout as
before, and a thread still waiting for the Python lock after that timeout goes on to
SQLite's.
"""

import threading

from django.db.backends.sqlite3 import base

_queues: dict[str, threading.Lock] = {}
_queues_guard = threading.Lock()


def _queue_for(path: str) -> threading.Lock:
    """One lock per database file, shared by every connection of this process to it."""
    queue = _queues.get(path)  # every transaction asks: no guard, no new Lock, once it exists
    if queue is None:
        with _queues_guard:
            queue = _queues.setdefault(path, threading.Lock())
    return queue


class DatabaseWrapper(base.DatabaseWrapper):
    _holding = None  # the queue's lock, held from BEGIN IMMEDIATE until the transaction ends

    def _start_transaction_under_autocommit(self):
        if self.transaction_mode != "IMMEDIATE" or self.is_in_memory_db():
            # A deferred BEGIN takes no lock yet; an in-memory database is this connection's own.
            return super()._start_transaction_under_autocommit()
        queue = _queue_for(self.settings_dict["NAME"])
        acquired = queue.acquire(timeout=self.settings_dict["OPTIONS"].get("timeout", 5))
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            if acquired:
                queue.release()
            raise
        if acquired:
            self._holding = queue

    def _release_queue(self):
        queue, self._holding = self._holding, None
        if queue is not None:
            queue.release()

    # A transaction ends in one of these; each lets the next thread in even when it fails.
    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_queue()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_queue()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release_queue()
