"""Node API keys: random, shown once, stored as a lookup prefix plus a keyed hash.

A key reads `vnk_<prefix>_<secret>`. The prefix finds the row without scanning; the
HMAC (keyed with VANTAGE_NODE_KEY_SECRET) means a leaked database alone cannot be used
to check guesses offline.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.conf import settings

KEY_SCHEME = "vnk"


@dataclass(frozen=True)
class NewKey:
    key: str
    prefix: str
    hashed: str


def hash_key(key: str) -> str:
    return hmac.new(settings.VANTAGE_NODE_KEY_SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()


def generate_key() -> NewKey:
    prefix = secrets.token_hex(6)
    key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(key=key, prefix=prefix, hashed=hash_key(key))


def key_prefix(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 12:
        return None
    return parts[1]


def key_matches(key: str, hashed: str) -> bool:
    return hmac.compare_digest(hash_key(key), hashed)
