"""A short-lived, per-process cache of authenticated principals (users, nodes).

Every API request authenticates by token; reading the user (or node) and the user's
role rules from the database costs two queries, a large share of a small request. The
rows are cached here for PRINCIPAL_CACHE_SECONDS, and a version number kept in Django's
cache (shared by all processes when REDIS_URL is set) is bumped by any change to users,
roles, rules or nodes, so a deactivated user, a changed role or a rotated node key takes
effect on the next request. Each request gets a fresh model instance built from the
cached values, never a shared object.
"""

import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

PRINCIPAL_CACHE_SECONDS = 30
VERSION_KEY = "vantage:principal-version"

_lock = threading.Lock()
_entries: dict[tuple[str, int], tuple[int, float, tuple, dict | None]] = {}


# Without REDIS_URL the cache is this process's own (LocMemCache), and so is the version:
# it is then kept in this counter, read without the cache's key checks, lock and
# unpickling (2-3 % of a node's request in py-spy). With a shared cache it lives there.
_process_version = 1
_version_in_process: bool | None = None


def _versioned_here() -> bool:
    global _version_in_process
    if _version_in_process is None:
        _version_in_process = settings.CACHES["default"]["BACKEND"].endswith(".locmem.LocMemCache")
    return _version_in_process


def current_version() -> int:
    if _versioned_here():
        return _process_version
    version = cache.get(VERSION_KEY)
    if version is None:
        cache.add(VERSION_KEY, 1, timeout=None)
        version = cache.get(VERSION_KEY, 1)
    return version


def bump_version(**_kwargs) -> None:
    """Invalidate now and again after commit: a request that read the old row between
    the two would otherwise cache it under the new version."""
    _bump()
    transaction.on_commit(_bump)


def _bump() -> None:
    global _process_version
    if _versioned_here():
        with _lock:
            _process_version += 1
        return
    try:
        cache.incr(VERSION_KEY)
    except ValueError:  # not set yet (or evicted): any value differs from what entries hold
        cache.set(VERSION_KEY, int(time.time() * 1000), timeout=None)


def get(kind: str, pk: int, version: int):
    entry = _entries.get((kind, pk))
    if entry is None or entry[0] != version or entry[1] < time.monotonic():
        return None
    return entry[2], entry[3]


def put(kind: str, pk: int, version: int, values: tuple, extra: dict | None) -> None:
    with _lock:
        if len(_entries) > 10_000:
            _entries.clear()
        _entries[(kind, pk)] = (version, time.monotonic() + PRINCIPAL_CACHE_SECONDS, values, extra)


def field_values(instance) -> tuple:
    return tuple(getattr(instance, f.attname) for f in instance._meta.concrete_fields)


def rebuild(model, values: tuple):
    """A fresh, complete instance as if loaded from the database."""
    return model.from_db("default", [f.attname for f in model._meta.concrete_fields], values)


def connect_signals() -> None:
    from accounts.models import Role, User
    from collaborations.models import Node

    for model in (User, Role, Node):
        post_save.connect(bump_version, sender=model, dispatch_uid=f"principal-cache-{model.__name__}-save")
        post_delete.connect(bump_version, sender=model, dispatch_uid=f"principal-cache-{model.__name__}-delete")
    m2m_changed.connect(bump_version, sender=User.roles.through, dispatch_uid="principal-cache-user-roles")
    m2m_changed.connect(bump_version, sender=Role.rules.through, dispatch_uid="principal-cache-role-rules")
