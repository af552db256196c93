"""The node's own record of what its gate and its steward decided: append-only,
hash-chained and keyed.

    <state_dir>/decisions.log   one JSON object a line
    <state_dir>/decisions.key   32 random bytes, 0600: the HMAC key, only this node has it

Each line holds `prev` (the previous line's `mac`, or 64 zeros for the first) and
`mac` = HMAC-SHA256(key, the line's other fields as canonical JSON). Changing, dropping,
reordering or inserting a line breaks the chain; without the key nobody (the server
included) can write a line that verifies. `run_node --verify-log` checks it.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

GENESIS = "0" * 64
KEY_BYTES = 32


class LogError(Exception):
    """The log, or its key, cannot be used: one readable line."""


def read_key(path: Path) -> bytes:
    """The key in `path`, made (0600) on first use; an existing key must be private."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise LogError(f"{path} is readable by others (mode {mode:o}); it must be 0600")
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise LogError(f"{path} is not a {KEY_BYTES}-byte key")
        return key
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _canonical(entry: dict) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(key: bytes, entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "mac"}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Verification:
    entries: int
    problem: str | None  # None when the whole chain verifies

    @property
    def ok(self) -> bool:
        return self.problem is None


class DecisionLog:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "decisions.log"
        self.key_path = state_dir / "decisions.key"
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = read_key(self.key_path)
        return self._key

    def append(self, *, run_id: int, server: str, decision: str, actor: str, reason: str = "", **details) -> dict:
        """Add one decision. A lock on the file keeps the agent and the steward page, two
        processes, from both chaining onto the same line."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            last = _last_line(fh)
            previous = json.loads(last)["mac"] if last else GENESIS
            entry = {"at": time.time(), "run_id": run_id, "server": server, "decision": decision, "actor": actor,
                     "reason": reason, **details, "prev": previous}
            entry["mac"] = _mac(self.key, entry)
            fh.write(_canonical(entry) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def verify(self) -> Verification:
        if not self.path.exists():
            return Verification(0, None)
        if not self.key_path.exists():
            return Verification(0, f"{self.key_path} is missing: the log cannot be verified without its key")
        previous, count = GENESIS, 0
        with open(self.path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    entry = json.loads(line)
                    mac = entry["mac"]
                except (ValueError, KeyError, TypeError):
                    return Verification(count, f"line {number} is not a log entry")
                if entry.get("prev") != previous:
                    return Verification(count, f"line {number} does not follow line {number - 1} "
                                               "(a line was removed, inserted or reordered)")
                if not hmac.compare_digest(mac, _mac(self.key, entry)):
                    return Verification(count, f"line {number} was changed after it was written")
                previous, count = mac, count + 1
        return Verification(count, None)


def _last_line(fh) -> bytes | None:
    """The file's last line, read backwards in blocks: the log grows for years."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    if end == 0:
        return None
    block, data = 4096, b""
    position = end
    while position > 0:
        step = min(block, position)
        position -= step
        fh.seek(position)
        data = fh.read(step) + data
        stripped = data.rstrip(b"\n")
        if b"\n" in stripped:
            return stripped.rsplit(b"\n", 1)[1]
    return data.rstrip(b"\n") or None
