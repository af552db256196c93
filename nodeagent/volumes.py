"""A run's files and its data in Docker named volumes: the container's mount table names
nothing of the host.

A bind mount shows its host path in the container's /proc/self/mountinfo (the task
folder under an operator's home, the data file's folder). A named volume shows only
`/var/lib/docker/volumes/<name>/_data` (Docker's own data root), so the volumes here have
opaque names (a hash) and are filled through the Docker API (put_archive) by the agent:

- the run's volume, `/mnt/run` in its container: `input` and `token` (0444) and an empty
  `output` (0666), all owned by root, in a root-owned 0755 folder. The container's user
  is never root (limits.user refuses uid 0) and has no capabilities, so it can write the
  output file only (bounded by RLIMIT_FSIZE, as before) and create nothing else there.
  Made with the container, filled once just before it starts, read back (the output,
  streamed and capped) when it exits, removed with the container.
- one volume per database file and version (device, inode, size and modification time
  of the file), mounted read-only at `/mnt/data/<label>/`: filled once, then used by
  every run that asks for that database until the file changes. A large file costs one
  copy in Docker's data root and one copy's time (about 4 s per GB here), not one per
  run; an older version goes once no container uses it.

Volumes are created with `NoCopy`: an image's own files at the mount point never enter
a volume another run could see.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import docker.errors
import requests
from docker.types import Mount

from nodeagent import contract

log = logging.getLogger(__name__)

LABEL_VOLUME = "vantage.volume"  # "run" or "data"
LABEL_DATA_LABEL = "vantage.database"
CHUNK = 1024 * 1024
FILL_DIR = "/fill"


class VolumeError(Exception):
    """A volume could not be made, filled or read; str() says which and why."""


def volume(name: str, target: str, *, read_only: bool) -> Mount:
    """A named volume; never seeded with the image's files at `target`."""
    return Mount(target=target, source=name, type="volume", read_only=read_only, no_copy=True)


def opaque_name(*parts: str) -> str:
    """A volume name that says nothing but that it is the node's."""
    return "vantage-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def run_volume_name(container_name: str) -> str:
    return opaque_name("run", container_name)


@dataclass(frozen=True)
class Entry:
    """One file of a tar stream: its bytes in memory, or a host file read in chunks."""

    name: str
    mode: int
    data: bytes | None = None
    path: Path | None = None

    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size


def tar_stream(entries: Iterable[Entry], *, mtime: float | None = None) -> Iterator[bytes]:
    """A tar archive of the entries, produced as it is sent: a large file is never in
    memory whole. Owned by root; `mtime` (default: now) for every entry."""
    stamp = int(time.time() if mtime is None else mtime)
    for entry in entries:
        size = entry.size()
        info = tarfile.TarInfo(entry.name)
        info.size, info.mode, info.mtime, info.uid, info.gid = size, entry.mode, stamp, 0, 0
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        sent = 0
        if entry.data is not None:
            yield entry.data
            sent = size
        else:
            with open(entry.path, "rb") as fh:
                while sent < size and (chunk := fh.read(min(CHUNK, size - sent))):
                    sent += len(chunk)
                    yield chunk
        if sent != size:
            raise VolumeError(f"{entry.path} changed size while it was copied ({size} -> {sent} bytes)")
        yield b"\0" * (-size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


class _StreamReader(io.RawIOBase):
    """A file object over the chunks Docker streams (get_archive), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def put_files(api, container_id: str, directory: str, entries: list[Entry]) -> None:
    """Write the entries into `directory` of a created container (a volume of it)."""
    try:
        api.put_archive(container_id, directory, tar_stream(entries))
    except (docker.errors.APIError, requests.RequestException) as exc:
        raise VolumeError(f"the run's files could not be written into its container: {explain(exc)}") from None


def fetch_file(api, container_id: str, path: str, target: Path, limit: int) -> int:
    """Copy one file out of a container (running or not) to `target`, at most `limit`
    bytes, streamed; the number of bytes written."""
    try:
        chunks, _stat = api.get_archive(container_id, path, chunk_size=CHUNK)
        written = 0
        with tarfile.open(fileobj=io.BufferedReader(_StreamReader(chunks), CHUNK), mode="r|") as tar:
            member = next(iter(tar), None)
            if member is None or not member.isfile():
                raise VolumeError(f"{path} in the container is not a file")
            source = tar.extractfile(member)
            tmp = target.with_name(f".{target.name}.tmp")
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                while written < limit and (chunk := source.read(min(CHUNK, limit - written))):
                    out.write(chunk)
                    written += len(chunk)
            os.replace(tmp, target)
        return written
    except docker.errors.NotFound:
        raise VolumeError(f"{path} is not in the container") from None
    except (docker.errors.APIError, requests.RequestException, tarfile.TarError) as exc:
        raise VolumeError(f"{path} could not be read from the container: {explain(exc)}") from None


class DataVolumes:
    """The node's database files in read-only volumes, one per file version, filled once.

    A volume counts as filled when the node's record of it (under the node's state
    folder) names the volume's creation time: a fill cut short by a stop leaves no record,
    and a volume removed and made again by someone else does not match the record.
    """

    def __init__(self, api, *, state_dir: Path, labels: dict[str, str]):
        self.api = api
        self.records = state_dir / "data-volumes"
        self.labels = labels  # the node's (server, node id): which volumes are this node's
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._pruned: set[str] = set()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def mounts(self, databases: dict, labels: list[str], image: str) -> tuple[list[Mount], dict]:
        """The read-only volume mounts of the databases `labels` name (the node's copies, never
        the host's files), and each label's DataMount for the container's environment (None
        where the database is not a file). Raises VolumeError when a copy cannot be made."""
        mounts, data_mounts = [], {}
        for label in labels:
            data_mount = data_mounts[label] = contract.database_mount(databases[label])
            if data_mount is not None:
                name = self.ensure(label, Path(data_mount.host_path), data_mount.file_name, image)
                mounts.append(volume(name, data_mount.container_dir, read_only=True))
        return mounts, data_mounts

    def current(self, databases: dict, labels) -> tuple[str, ...] | None:
        """The volumes a container mounting these databases now would get (their files'
        current versions; no Docker call), as `mounts` names them; None when a file cannot
        be read."""
        names = []
        for label in labels:
            data_mount = contract.database_mount(databases[label])
            if data_mount is not None:
                try:
                    stat = Path(data_mount.host_path).stat()
                except OSError:
                    return None
                names.append(self._name(label, stat, data_mount.file_name))
        return tuple(names)

    def _name(self, label: str, stat: os.stat_result, file_name: str) -> str:
        return opaque_name("data", *self.labels.values(), label, str(stat.st_dev), str(stat.st_ino),
                           str(stat.st_size), str(stat.st_mtime_ns), file_name)

    def ensure(self, label: str, host_path: Path, file_name: str, image: str) -> str:
        """The name of a volume holding `host_path` as `file_name`, filled now if needed.
        `image` (any local image: the run's) backs the never-started container that fills it."""
        try:
            stat = host_path.stat()
        except OSError as exc:
            raise VolumeError(f"database {label}: cannot read {host_path}: {exc.strerror}") from None
        name = self._name(label, stat, file_name)
        with self._lock(name):
            created = self._created(name)
            record = self.records / name
            filled = created is None or not record.exists() or record.read_text() != created
            if filled:
                created = self._fill(name, label, host_path, file_name, image, stat)
                self.records.mkdir(parents=True, exist_ok=True, mode=0o700)
                record.write_text(created)
            if filled or label not in self._pruned:
                self._prune(label, keep=name)
                self._pruned.add(label)
        return name

    def _created(self, name: str) -> str | None:
        try:
            return self.api.inspect_volume(name).get("CreatedAt") or ""
        except docker.errors.NotFound:
            return None
        except (docker.errors.APIError, requests.RequestException) as exc:
            raise VolumeError(f"the Docker engine could not look up a data volume: {explain(exc)}") from None

    def _fill(self, name: str, label: str, host_path: Path, file_name: str, image: str, stat: os.stat_result) -> str:
        started = time.monotonic()
        labels = {**self.labels, LABEL_VOLUME: "data", LABEL_DATA_LABEL: label}
        filler = None
        try:
            self.api.create_volume(name=name, labels=labels)
            # A created, never started container is how the Docker API writes into a volume.
            host_config = self.api.create_host_config(mounts=[volume(name, FILL_DIR, read_only=False)],
                                                      network_mode="none", read_only=True, cap_drop=["ALL"])
            filler = self.api.create_container(image, command=["true"], labels=self.labels, detach=True,
                                               host_config=host_config, network_disabled=True)["Id"]
            entry = Entry(file_name, 0o444, path=host_path)
            self.api.put_archive(filler, FILL_DIR, tar_stream([entry], mtime=stat.st_mtime))
            after = host_path.stat()
            if (after.st_size, after.st_mtime_ns, after.st_ino) != (stat.st_size, stat.st_mtime_ns, stat.st_ino):
                raise VolumeError(f"database {label}: {host_path} changed while it was copied; the next run copies "
                                  "it again")
            created = self.api.inspect_volume(name).get("CreatedAt") or ""
        except VolumeError:
            self._drop(name)
            raise
        except (docker.errors.APIError, requests.RequestException, OSError) as exc:
            self._drop(name)
            raise VolumeError(f"database {label}: could not be copied into its volume: {explain(exc)}") from None
        finally:
            if filler is not None:
                try:
                    self.api.remove_container(filler, force=True)
                except docker.errors.APIError as exc:
                    log.warning("could not remove the container that filled a data volume: %s", explain(exc))
        log.info("database %s: %d bytes copied into its volume in %.1f s (once per version of the file)",
                 label, stat.st_size, time.monotonic() - started)
        return created

    def _drop(self, name: str) -> None:
        try:
            self.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            log.warning("could not remove an incomplete data volume: %s", explain(exc))

    def _prune(self, label: str, *, keep: str) -> None:
        """Older versions of this database's volume; one still in use by a container stays
        (Docker refuses) and goes on a later prune."""
        filters = {"label": [f"{k}={v}" for k, v in self.labels.items()] + [f"{LABEL_VOLUME}=data",
                                                                             f"{LABEL_DATA_LABEL}={label}"]}
        try:
            found = self.api.volumes(filters=filters).get("Volumes") or []
        except docker.errors.APIError as exc:
            log.debug("listing data volumes: %s", explain(exc))
            return
        for entry in found:
            if entry.get("Name") == keep:
                continue
            try:
                self.api.remove_volume(entry["Name"])
                (self.records / entry["Name"]).unlink(missing_ok=True)
                log.info("database %s: the volume of an older version of its file was removed", label)
            except docker.errors.APIError as exc:
                log.debug("data volume %s stays for now: %s", entry["Name"], explain(exc))


def explain(exc: Exception) -> str:
    """A Docker engine error in one line: the engine's explanation, else the message.
    (The executor's errors use it too: this module is below it.)"""
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return explanation.decode() if isinstance(explanation, bytes) else str(explanation)
    return str(exc) or type(exc).__name__
