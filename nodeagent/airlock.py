"""The airlock: results the output gate held, kept at the node until its steward decides.

    <state_dir>/airlock.key                     32 random bytes, 0600: only this node has it
    <state_dir>/airlock/<server>-run<id>/       0700, one held run
        meta.json      what the steward page and the server may know: the task, the flags,
                       the run's status, the decision once taken (never output or log)
        output.enc     the output, AES-256-GCM in 1 MiB chunks (a large opaque output is
        log.enc        never held in memory), each chunk bound to its entry, part, index
        input.enc      and position, so chunks cannot be swapped, cut or reordered

A held entry is `held` until the steward (or `hold_timeout`) decides; `released` or
`rejected` until the server has the outcome (`deliver`), after which the entry goes
and its ciphertext with it. Nothing here is sent anywhere before a decision.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodeagent import crypto as sealing
from nodeagent import gate
from nodeagent.client import Conflict, NotFound, ServerClient, ServerRefused, ServerUnavailable
from nodeagent.decision_log import DecisionLog, read_key

log = logging.getLogger(__name__)

MAGIC = b"VAL1"
CHUNK = 1024 * 1024
PARTS = ("output", "log", "input")
HELD, RELEASED, REJECTED = "held", "released", "rejected"
NOT_REVIEWED = "not reviewed"


class AirlockError(Exception):
    """A held entry cannot be read (wrong key, changed ciphertext): one readable line."""


# ---------------------------------------------------------------- chunked AES-256-GCM


def _aad(entry: str, part: str, index: int, last: bool) -> bytes:
    return f"{entry}|{part}|{index}|{int(last)}".encode()


def encrypt_file(key: bytes, source: Path, target: Path, *, entry: str, part: str) -> None:
    aes, prefix = AESGCM(key), secrets.token_bytes(8)
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(MAGIC + prefix)
        index, chunk = 0, src.read(CHUNK)
        while True:
            following = src.read(CHUNK) if chunk else b""
            last = not following
            sealed = aes.encrypt(prefix + struct.pack(">I", index), chunk, _aad(entry, part, index, last))
            dst.write(struct.pack(">I", len(sealed)) + sealed)
            if last:
                break
            index, chunk = index + 1, following
        dst.flush()
        os.fsync(dst.fileno())


def decrypt_chunks(key: bytes, source: Path, *, entry: str, part: str) -> Iterator[bytes]:
    aes = AESGCM(key)
    with open(source, "rb") as src:
        header = src.read(12)
        if header[:4] != MAGIC:
            raise AirlockError(f"{source} is not an airlock file")
        prefix, index = header[4:], 0
        while True:
            size_bytes = src.read(4)
            if len(size_bytes) != 4:
                raise AirlockError(f"{source} ends before its last chunk: it was cut")
            sealed = src.read(struct.unpack(">I", size_bytes)[0])
            nonce = prefix + struct.pack(">I", index)
            for last in (False, True):
                try:
                    plain = aes.decrypt(nonce, sealed, _aad(entry, part, index, last))
                    break
                except InvalidTag:
                    continue
            else:
                raise AirlockError(f"{source}: chunk {index} does not open with this node's key (changed?)")
            yield plain
            if last:
                return
            index += 1


# ---------------------------------------------------------------- entries


class Airlock:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.root = state_dir / "airlock"
        self.key_path = state_dir / "airlock.key"
        self.decisions = DecisionLog(state_dir)
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = read_key(self.key_path)
        return self._key

    @staticmethod
    def name(server_key: str, run_id: int) -> str:
        return f"{server_key}-run{run_id}"

    def folder(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise AirlockError(f"no such held entry: {name!r}")
        return self.root / name

    def put(self, *, name: str, meta: dict, files: dict[str, Path | None]) -> None:
        """Encrypt the run's files into a new entry; the entry appears whole or not at all
        (written beside, then renamed), so a restart never finds half of one."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = self.folder(name)
        if final.exists():
            return  # held before a restart: the same run, the same files
        temporary = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root))
        try:
            for part in PARTS:
                source = files.get(part)
                if source is not None and source.exists():
                    encrypt_file(self.key, source, temporary / f"{part}.enc", entry=name, part=part)
            meta = {**meta, "name": name, "state": HELD, "held_at": meta.get("held_at") or time.time(),
                    "reported": False}
            _write_json(temporary / "meta.json", meta)
            os.rename(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    def entries(self) -> list[dict]:
        if not self.root.exists():
            return []
        found = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not (folder / "meta.json").exists():
                continue
            try:
                found.append(json.loads((folder / "meta.json").read_text()))
            except (OSError, ValueError) as exc:
                log.error("airlock entry %s: unreadable meta.json (%s); left for inspection", folder.name, exc)
        return found

    def get(self, name: str) -> dict:
        try:
            return json.loads((self.folder(name) / "meta.json").read_text())
        except FileNotFoundError:
            raise AirlockError(f"no such held entry: {name!r}") from None

    @contextmanager
    def locked(self, name: str):
        """One decision or delivery of an entry at a time, across the agent and the steward."""
        folder = self.folder(name)
        try:
            # A file of its own: meta.json is replaced at every update, and a lock on a
            # replaced file would no longer exclude anyone.
            fh = open(folder / "lock", "a+b")
        except FileNotFoundError:
            raise AirlockError(f"no such held entry: {name!r}") from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def update(self, name: str, **changes) -> dict:
        meta = {**self.get(name), **changes}
        _write_json(self.folder(name) / "meta.json", meta)
        return meta

    def read(self, name: str, part: str, limit: int | None = None) -> bytes:
        """A part's plaintext, at most `limit` bytes of it (the page shows a bounded view)."""
        path = self.folder(name) / f"{part}.enc"
        if not path.exists():
            return b""
        data = bytearray()
        for chunk in decrypt_chunks(self.key, path, entry=name, part=part):
            data += chunk
            if limit is not None and len(data) >= limit:
                return bytes(data[:limit])
        return bytes(data)

    def decrypt_to(self, name: str, part: str, target: Path) -> None:
        with open(target, "wb") as fh:
            for chunk in decrypt_chunks(self.key, self.folder(name) / f"{part}.enc", entry=name, part=part):
                fh.write(chunk)

    # ------------------------------------------------------------ decisions

    def decide(self, name: str, *, decision: str, actor: str, reason: str = "", suppress: bool = False) -> dict:
        """Record the steward's (or the timeout's) decision: in the keyed log first, then on
        the entry. Only a held entry can be decided, once."""
        if decision not in (RELEASED, REJECTED):
            raise AirlockError(f"unknown decision {decision!r}")
        with self.locked(name):
            meta = self.get(name)
            if meta["state"] != HELD:
                raise AirlockError(f"run {meta['run_id']} was already {meta['state']}")
            if suppress and meta["verdict"]["output_type"] != "count_table":
                raise AirlockError("release with suppression is for count tables")
            self.decisions.append(
                run_id=meta["run_id"], server=meta["server_url"], decision=decision + (" with suppression" if suppress
                                                                                     else ""),
                actor=actor, reason=reason, requester=meta["task"].get("created_by_username"),
                output_type=meta["verdict"]["output_type"], size=meta["verdict"]["size"],
                flags=meta["verdict"]["flags"], image=meta["task"].get("image"),
            )
            return self.update(name, state=decision, decision={"decision": decision, "actor": actor, "reason": reason,
                                                               "suppress": suppress, "at": time.time()})

    def expire(self, *, timeout: float, now: float | None = None) -> list[str]:
        """Reject, as not reviewed, what waited longer than hold_timeout."""
        now = time.time() if now is None else now
        expired = []
        for meta in self.entries():
            if meta["state"] == HELD and now - meta["held_at"] >= timeout:
                try:
                    self.decide(meta["name"], decision=REJECTED, actor="hold_timeout", reason=NOT_REVIEWED)
                    expired.append(meta["name"])
                except AirlockError:
                    continue  # decided meanwhile by the steward
        return expired

    # ------------------------------------------------------------ delivery

    def deliver(self, name: str, client: ServerClient, *, min_cell: int) -> bool:
        """Send a decided entry's outcome through the normal finish path; True once the server
        has it (or no longer wants it), after which the entry and its ciphertext are gone."""
        with self.locked(name):
            meta = self.get(name)
            if meta["state"] not in (RELEASED, REJECTED):
                return False
            outcome = meta["outcome"]
            workdir = Path(tempfile.mkdtemp(prefix=".deliver-", dir=self.root))
            try:
                if meta["state"] == REJECTED:
                    status, error_kind, result = "rejected", "withheld", None
                    reason = meta["decision"]["reason"] or "no reason given"
                    who = "its hold_timeout passed" if meta["decision"]["actor"] == "hold_timeout" else \
                        "this hospital's data steward"
                    log_text = meta.get("node_log", "") + f"[node] rejected: {reason} ({who})\n"
                else:
                    status, error_kind = outcome["status"], outcome["error_kind"]
                    result = self._released_output(name, meta, workdir, min_cell=min_cell)
                    log_text = self._released_log(name, meta) + meta.get("node_log", "") + \
                        f"[node] released by this hospital's data steward{self._suppressed_note(meta)}\n"
                client.finish(meta["run_id"], status=status, exit_code=outcome["exit_code"], error_kind=error_kind,
                              log=log_text, result=result)
            except ServerUnavailable as exc:
                log.warning("run %s: the decided outcome could not be sent yet: %s", meta["run_id"], exc)
                return False
            except (Conflict, NotFound) as exc:
                log.info("run %s: the server no longer takes its outcome (%s); the held result is discarded",
                         meta["run_id"], exc)
            except ServerRefused as exc:
                log.error("run %s: the server refused the decided outcome: %s; it stays held", meta["run_id"], exc)
                return False
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(self.folder(name), ignore_errors=True)
            return True

    @staticmethod
    def _suppressed_note(meta: dict) -> str:
        return " with suppression of small cells" if meta["decision"].get("suppress") else ""

    def _released_output(self, name: str, meta: dict, workdir: Path, *, min_cell: int) -> Path | None:
        if not meta["outcome"].get("has_result"):
            return None
        plain = workdir / "output"
        self.decrypt_to(name, "output", plain)
        if meta["decision"].get("suppress"):
            value = json.loads(plain.read_bytes())
            value, _hidden = gate.suppress(value, min_cell)
            plain.write_text(json.dumps(value, allow_nan=False))
        if meta["task"].get("result_public_key"):
            sealed = workdir / "output.sealed"
            sealing.seal_output(plain, sealed, meta["task"]["result_public_key"])
            return sealed
        return plain

    def _released_log(self, name: str, meta: dict) -> str:
        if not meta.get("log_release"):
            return gate.withheld_log_note(self.read(name, "log").decode("utf-8", "replace"), meta["logs_policy"])
        text = self.read(name, "log").decode("utf-8", "replace")
        return gate.bounded_log(text, meta.get("log_max_lines", 200)) if text else ""


def _write_json(path: Path, value: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(value, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, path)
