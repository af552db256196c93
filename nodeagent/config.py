"""node.toml, validated into frozen dataclasses.

Every problem becomes a ConfigError naming the file, the dotted key and what is wrong,
so an operator reads one line such as
`node.toml: limits.memory: expected a size like "2g", got "lots"` and knows what to fix.
Unknown keys are errors too: a typo must not silently drop a policy.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, datetime, time, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nodeagent.crypto import KeyFormatError, envelope
from nodeagent.images import BadReference, ImageRef
from vantage_client import signing

DEFAULT_FORWARDER_IMAGE = "vantage/algorithm-base:bookworm-1"
DATABASE_TYPES = ("csv", "parquet", "sql", "excel")
FILE_DATABASE_TYPES = ("csv", "parquet", "excel")
# The server accepts the same labels (tasks.services.LABEL_RE); they become env var names.
LABEL_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
FINGERPRINT_RE = re.compile(r"^[0-9a-fA-F]{64}$")
USER_RE = re.compile(r"^\d+(:\d+)?$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
# Names the node sets itself; algorithm_env must not shadow the container contract.
RESERVED_ENV = {
    "INPUT_FILE", "OUTPUT_FILE", "TOKEN_FILE", "TEMPORARY_FOLDER", "HOST", "PORT", "API_PATH",
    "USER_REQUESTED_DATABASE_LABELS", "DB_LABELS",
    "VANTAGE_ROUND_WORKER",  # nodeagent/rounds.py: set for a job's round worker only
}


class ConfigError(Exception):
    """One readable line: `<file>: <key>: <problem>`."""

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass(frozen=True)
class Database:
    label: str
    type: str
    path: Path | None = None  # file databases (csv, parquet, excel)
    uri: str | None = None  # sql: an SQLAlchemy URL

    @property
    def sqlite_path(self) -> Path | None:
        """The file behind a `sqlite:///` URL, which the node can mount read-only."""
        if self.type != "sql" or not self.uri or not self.uri.startswith("sqlite"):
            return None
        rest = self.uri.split(":///", 1)
        if len(rest) != 2 or not rest[1] or rest[1].startswith(":memory:"):
            return None
        return Path("/" + rest[1].lstrip("/")) if rest[1].startswith("/") else Path(rest[1])


@dataclass(frozen=True)
class RegistryCredentials:
    host: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class TrustedKey:
    """A public key whose cosign signatures this node accepts ([policy] trusted_keys)."""

    name: str  # the file's name, or the entry's own name
    path: Path
    key: Any = field(repr=False)  # an ECDSA P-256 public key
    fingerprint: str = ""  # SHA-256 of its DER SubjectPublicKeyInfo, hex
    not_after: datetime | None = None  # signatures by it are refused after this moment


@dataclass(frozen=True)
class Policy:
    allowed_images: tuple[str, ...] | None = None  # None: any image
    allowed_organizations: tuple[int, ...] | None = None
    allowed_users: tuple[int | str, ...] | None = None
    require_digest: bool = False
    # Secure by default: an image runs only when a key the hospital trusts signed its digest.
    require_signature: bool = True
    require_catalogue: bool = False
    trusted_keys: tuple[TrustedKey, ...] = ()
    revoked_keys: frozenset[str] = frozenset()  # fingerprints
    # False when node.toml does not say require_signature: `--check` explains the new default.
    require_signature_set: bool = True


@dataclass(frozen=True)
class Limits:
    cpus: float = 1.0
    memory: int = 1024**3
    pids: int = 256
    deadline: int = 3600
    max_concurrent_runs: int = 2
    tmpfs: int = 64 * 1024**2
    scratch: int = 256 * 1024**2  # TEMPORARY_FOLDER, a tmpfs: counted within `memory`
    max_output: int = 256 * 1024**2
    user: str = "65534:65534"
    # Seconds a job's round worker (nodeagent/rounds.py) may wait for its next round; 0: no
    # round workers, every run gets a container of its own.
    round_worker_idle: int = 60
    # Seconds a standby worker (one per node, for the image and databases of the last job
    # that used a round worker here) waits for the next job; 0: no standby.
    round_worker_standby: int = 600


OUTPUT_TYPES = ("count_table", "aggregate", "model", "intermediate")
DEFAULT_MAX_SIZES = {"count_table": 1024**2, "aggregate": 256 * 1024, "model": 256 * 1024,
                     "intermediate": 8 * 1024**2}
DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class OutputPolicy:
    """[output]: what the node's gate lets leave (nodeagent/gate.py, docs/node.md)."""

    opaque: str = "hold"  # untyped outputs (vantage6 images): release | hold | refuse
    failed_checks: str = "hold"  # typed outputs that fail a check: hold | refuse (never released unseen)
    intermediates: str = "release"  # typed intermediates that pass: release | hold
    logs: str = "gate"  # gate | release | on_failure | never
    log_max_lines: int = 200
    min_residual_df: int = 10
    max_table_cells: int = 10_000
    max_intermediate_elements: int = 100_000
    max_string: int = 200
    max_sizes: dict = field(default_factory=lambda: dict(DEFAULT_MAX_SIZES))
    hold_timeout: int = 7 * 86400


MAX_STANDBY_IMAGES = 8


@dataclass(frozen=True)
class StandbyImage:
    """[[standby]]: an image this node keeps a round worker ready for from the agent's start
    (nodeagent/rounds.py, "Standby workers"), for jobs that ask for these databases."""

    image: ImageRef
    databases: tuple[str, ...]  # sorted, as a job's round asks for its worker


@dataclass(frozen=True)
class StewardSettings:
    """[steward]: the loopback review page (nodeagent/steward.py)."""

    password_hash: str | None = field(default=None, repr=False)
    port: int = 7602


@dataclass(frozen=True)
class ServerSettings:
    url: str
    api_key: str = field(repr=False)
    poll_interval: float = 10.0
    kill_poll_interval: float = 5.0
    websocket: bool = True


@dataclass(frozen=True)
class NodeConfig:
    source: str
    server: ServerSettings
    task_folder: Path
    databases: dict[str, Database]
    registries: dict[str, RegistryCredentials]
    policy: Policy
    limits: Limits
    algorithm_env: dict[str, str]
    proxy_port: int = 7601
    # Runs the relay between an algorithm's loopback and the node proxy (nodeagent/forwarders.py).
    forwarder_image: str = DEFAULT_FORWARDER_IMAGE
    # The organisation's RSA private key for encrypted collaborations ([encryption]); None: none set.
    private_key: Any = field(default=None, repr=False)
    output: OutputPolicy = field(default_factory=OutputPolicy)
    steward: StewardSettings = field(default_factory=StewardSettings)
    standbys: tuple[StandbyImage, ...] = ()

    @property
    def state_dir(self) -> Path:
        """The node's own secrets and records beside its runs: airlock, decision log, keys."""
        return self.task_folder / "state"

    def summary(self) -> dict:
        """What the node reports to the server: labels and policy, never secrets or paths."""
        return {
            "databases": [{"label": d.label, "type": d.type} for d in self.databases.values()],
            "policy": {
                "allowed_images": list(self.policy.allowed_images) if self.policy.allowed_images is not None else None,
                "allowed_organizations": (
                    list(self.policy.allowed_organizations)
                    if self.policy.allowed_organizations is not None else None
                ),
                "allowed_users": list(self.policy.allowed_users) if self.policy.allowed_users is not None else None,
                "require_digest": self.policy.require_digest,
                "require_signature": self.policy.require_signature,
                "require_catalogue": self.policy.require_catalogue,
                "trusted_keys": [key.fingerprint for key in self.policy.trusted_keys],
            },
            "limits": {
                "cpus": self.limits.cpus, "memory": self.limits.memory, "pids": self.limits.pids,
                "deadline": self.limits.deadline, "max_concurrent_runs": self.limits.max_concurrent_runs,
            },
            "algorithm_env": sorted(self.algorithm_env),
            "output": {"opaque": self.output.opaque, "failed_checks": self.output.failed_checks,
                       "intermediates": self.output.intermediates, "logs": self.output.logs},
            # Public: lets an administrator see whether the node holds the key its organisation publishes.
            "encryption": ({"public_key_fingerprint": envelope.fingerprint(self.private_key).hex()}
                           if self.private_key is not None else None),
        }


def parse_size(text: str) -> int | None:
    """'2g' → 2147483648 (Docker's binary units); None when it is not a size."""
    match = SIZE_RE.match(text)
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class _Reader:
    """Walks one TOML table, checking types and remembering which keys were used."""

    def __init__(self, source: str, table: dict, prefix: str):
        self.source, self.table, self.prefix = source, table, prefix
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def get(self, name: str, kinds: tuple[type, ...], what: str, default: Any = None, required: bool = False):
        self.used.add(name)
        if name not in self.table:
            if required:
                raise self.error(name, "is required")
            return default
        value = self.table[name]
        # bool is an int in Python: never accept true where a number is meant.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(name, f"expected {what}, got {_show(value)}")
        return value

    def table_of(self, name: str) -> _Reader:
        value = self.get(name, (dict,), "a table", default={})
        return _Reader(self.source, value, f"{self.key(name)}.")

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def load(path: str | os.PathLike, environ: dict | None = None) -> NodeConfig:
    """Read and validate node.toml; raise ConfigError on the first problem."""
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}")
    return parse(raw, source=source, base_dir=path.resolve().parent, environ=environ)


def parse(raw: dict, *, source: str, base_dir: Path, environ: dict | None = None) -> NodeConfig:
    environ = os.environ if environ is None else environ
    root = _Reader(source, raw, "")
    server = _server(root.table_of("server"), base_dir, environ)
    task_folder = _path(root, "task_folder", base_dir, required=True)
    databases = _databases(root.table_of("databases"), base_dir)
    registries = _registries(root.table_of("registries"), base_dir)
    policy = _policy(root.table_of("policy"), base_dir)
    limits = _limits(root.table_of("limits"))
    algorithm_env = _algorithm_env(root.table_of("algorithm_env"))
    private_key = _private_key(root.table_of("encryption"), base_dir, environ)
    output = _output(root.table_of("output"))
    steward = _steward(root.table_of("steward"), base_dir)
    standbys = _standbys(root, databases, limits)
    proxy_port = root.get("proxy_port", (int,), "a port number", default=7601)
    if not 1 <= proxy_port <= 65535:
        raise root.error("proxy_port", f"expected a port number 1-65535, got {proxy_port}")
    forwarder_image = root.get("forwarder_image", (str,), "an image name", default=DEFAULT_FORWARDER_IMAGE)
    try:
        ImageRef.parse(forwarder_image)
    except BadReference:
        raise root.error("forwarder_image", f'expected an image name like "{DEFAULT_FORWARDER_IMAGE}", '
                                            f"got {_show(forwarder_image)}")
    root.finish()
    return NodeConfig(
        source=source, server=server, task_folder=task_folder, databases=databases, registries=registries,
        policy=policy, limits=limits, algorithm_env=algorithm_env, proxy_port=proxy_port,
        forwarder_image=forwarder_image, private_key=private_key, output=output, steward=steward,
        standbys=standbys,
    )


def _path(reader: _Reader, name: str, base_dir: Path, required: bool = False) -> Path | None:
    value = reader.get(name, (str,), "a path", required=required)
    if value is None:
        return None
    if not value.strip():
        raise reader.error(name, "is empty")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def _server(reader: _Reader, base_dir: Path, environ) -> ServerSettings:
    if not reader.table:
        raise ConfigError(reader.source, "server", "is required (a [server] table with url and api_key)")
    url = reader.get("url", (str,), "a URL", required=True).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reader.error("url", f'expected an http(s) URL like "https://vantage.example.org", got "{url}"')
    sources = [name for name in ("api_key", "api_key_file", "api_key_env") if name in reader.table]
    if len(sources) != 1:
        problem = "set exactly one of api_key, api_key_file, api_key_env"
        if sources:
            problem += f" (found {', '.join(sources)})"
        raise ConfigError(reader.source, "server.api_key", problem)
    name = sources[0]
    if name == "api_key":
        key = reader.get(name, (str,), "a string")
    elif name == "api_key_file":
        key_path = _path(reader, name, base_dir)
        try:
            key = key_path.read_text().strip()
        except OSError as exc:
            raise reader.error(name, f"cannot read {key_path}: {exc.strerror}")
    else:
        var = reader.get(name, (str,), "an environment variable name")
        key = (environ.get(var) or "").strip()
        if not key:
            raise reader.error(name, f"environment variable {var} is not set")
    if not key.strip():
        raise reader.error(name, "the API key is empty")
    poll = reader.get("poll_interval", (int, float), "a number of seconds", default=ServerSettings.poll_interval)
    kill_poll = reader.get("kill_poll_interval", (int, float), "a number of seconds",
                           default=ServerSettings.kill_poll_interval)
    for label, value in (("poll_interval", poll), ("kill_poll_interval", kill_poll)):
        if not 0.1 <= value <= 600:
            raise reader.error(label, f"expected 0.1 to 600 seconds, got {value}")
    websocket = reader.get("websocket", (bool,), "true or false", default=True)
    reader.finish()
    return ServerSettings(url=url, api_key=key.strip(), poll_interval=float(poll),
                          kill_poll_interval=float(kill_poll), websocket=websocket)


def _private_key(reader: _Reader, base_dir: Path, environ):
    """[encryption] private_key (inline PEM), private_key_file or private_key_env, as for the API key."""
    sources = [name for name in ("private_key", "private_key_file", "private_key_env") if name in reader.table]
    if not sources:
        reader.finish()
        return None
    if len(sources) > 1:
        raise ConfigError(reader.source, "encryption.private_key",
                          f"set exactly one of private_key, private_key_file, private_key_env (found {', '.join(sources)})")
    name = sources[0]
    if name == "private_key":
        pem = reader.get(name, (str,), "a PEM private key")
    elif name == "private_key_file":
        key_path = _path(reader, name, base_dir)
        try:
            pem = key_path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise reader.error(name, f"cannot read {key_path}: {getattr(exc, 'strerror', None) or exc}")
    else:
        var = reader.get(name, (str,), "an environment variable name")
        pem = environ.get(var) or ""
        if not pem.strip():
            raise reader.error(name, f"environment variable {var} is not set")
    reader.finish()
    try:
        return envelope.load_private_key(pem)
    except KeyFormatError as exc:
        raise reader.error(name, str(exc))


def _databases(reader: _Reader, base_dir: Path) -> dict[str, Database]:
    databases = {}
    for label in list(reader.table):
        if not LABEL_RE.match(label):
            raise reader.error(label, "a database label is lowercase letters, digits and _, starting with a letter")
        entry = reader.table_of(label)
        db_type = entry.get("type", (str,), "a database type", required=True)
        if db_type not in DATABASE_TYPES:
            raise entry.error("type", f"expected one of {', '.join(DATABASE_TYPES)}, got \"{db_type}\"")
        if db_type == "sql":
            uri = entry.get("uri", (str,), "an SQLAlchemy URL", required=True)
            if "://" not in uri:
                raise entry.error("uri", f'expected an SQLAlchemy URL like "postgresql://host/db", got "{uri}"')
            database = Database(label=label, type=db_type, uri=uri)
            if database.sqlite_path is not None and not database.sqlite_path.is_absolute():
                database = Database(label=label, type=db_type, uri=f"sqlite:///{base_dir / database.sqlite_path}")
        else:
            if "uri" in entry.table:
                entry.used.add("uri")
                raise entry.error("uri", f"a {db_type} database is a file: use path")
            database = Database(label=label, type=db_type, path=_path(entry, "path", base_dir, required=True))
        entry.finish()
        databases[label] = database
    return databases


def _registries(reader: _Reader, base_dir: Path) -> dict[str, RegistryCredentials]:
    registries = {}
    for host in list(reader.table):
        entry = reader.table_of(host)
        username = entry.get("username", (str,), "a string", required=True)
        has_password, has_file = "password" in entry.table, "password_file" in entry.table
        if has_password == has_file:
            raise entry.error("password", "set exactly one of password, password_file")
        if has_password:
            password = entry.get("password", (str,), "a string")
        else:
            password_path = _path(entry, "password_file", base_dir)
            try:
                password = password_path.read_text().strip()
            except OSError as exc:
                raise entry.error("password_file", f"cannot read {password_path}: {exc.strerror}")
        entry.finish()
        registries[host] = RegistryCredentials(host=host, username=username, password=password)
    return registries


def _string_list(reader: _Reader, name: str) -> tuple[str, ...] | None:
    values = reader.get(name, (list,), "a list of strings")
    if values is None:
        return None
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise reader.error(name, f"expected a list of non-empty strings, found {_show(value)}")
    return tuple(values)


def _policy(reader: _Reader, base_dir: Path) -> Policy:
    images = _string_list(reader, "allowed_images")
    organizations = reader.get("allowed_organizations", (list,), "a list of organisation ids")
    if organizations is not None:
        for value in organizations:
            if not isinstance(value, int) or isinstance(value, bool):
                raise reader.error("allowed_organizations",
                                   f"expected organisation ids (numbers), found {_show(value)}")
        organizations = tuple(organizations)
    users = reader.get("allowed_users", (list,), "a list of user ids or usernames")
    if users is not None:
        for value in users:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise reader.error("allowed_users", f"expected user ids or usernames, found {_show(value)}")
        users = tuple(users)
    require_digest = reader.get("require_digest", (bool,), "true or false", default=False)
    require_signature_set = "require_signature" in reader.table
    require_signature = reader.get("require_signature", (bool,), "true or false", default=True)
    require_catalogue = reader.get("require_catalogue", (bool,), "true or false", default=False)
    trusted = _trusted_keys(reader, base_dir)
    revoked = _string_list(reader, "revoked_keys") or ()
    for value in revoked:
        if not FINGERPRINT_RE.match(value):
            raise reader.error("revoked_keys", f"expected key fingerprints (64 hex digits), found {_show(value)}")
    reader.finish()
    return Policy(
        allowed_images=images, allowed_organizations=organizations, allowed_users=users,
        require_digest=require_digest, require_signature=require_signature, require_catalogue=require_catalogue,
        trusted_keys=trusted, revoked_keys=frozenset(v.lower() for v in revoked),
        require_signature_set=require_signature_set,
    )


def _trusted_keys(reader: _Reader, base_dir: Path) -> tuple[TrustedKey, ...]:
    """`trusted_keys = ["keys/reviewers.pub", {path = "keys/old.pub", not_after = 2027-06-30}]`:
    each a PKIX PEM ECDSA P-256 public key (cosign.pub); an unreadable one stops the node."""
    entries = reader.get("trusted_keys", (list,), "a list of public key files", default=[])
    keys = []
    for index, entry in enumerate(entries):
        label = f"trusted_keys[{index}]"
        not_after = None
        if isinstance(entry, dict):
            unknown = set(entry) - {"path", "not_after", "name"}
            if unknown:
                raise reader.error(label, f"unknown key {sorted(unknown)[0]} (expected path, not_after, name)")
            path_text, not_after, name = entry.get("path"), entry.get("not_after"), entry.get("name")
            if not_after is not None:
                not_after = _moment(reader, label, not_after)
        else:
            path_text, name = entry, None
        if not isinstance(path_text, str) or not path_text.strip():
            raise reader.error(label, f"expected a public key file or {{path = ..., not_after = ...}}, "
                                      f"found {_show(entry)}")
        path = Path(path_text).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise reader.error(label, f"cannot read {path}: {exc.strerror}")
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise reader.error(label, f"{path} is not a PEM public key (cosign.pub format)")
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
            raise reader.error(label, f"{path} is not an ECDSA P-256 public key (cosign's key type)")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise reader.error(label, "name must be a non-empty string")
        keys.append(TrustedKey(name=name or path.name, path=path, key=public,
                               fingerprint=signing.fingerprint(public), not_after=not_after))
    return tuple(keys)


def _moment(reader: _Reader, label: str, value) -> datetime:
    """A TOML date (the whole day counts) or an offset date-time."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise reader.error(label, "not_after needs a time zone (e.g. 2027-06-30T00:00:00Z) or a plain date")
        return value
    if isinstance(value, date):
        return datetime.combine(value, time.max, tzinfo=timezone.utc)
    raise reader.error(label, f"not_after must be a TOML date like 2027-06-30, got {_show(value)}")


def _size(reader: _Reader, name: str, default: int, minimum: int) -> int:
    value = reader.get(name, (str, int), 'a size like "2g"', default=None)
    if value is None:
        return default
    size = value if isinstance(value, int) else parse_size(value)
    if size is None:
        raise reader.error(name, f'expected a size like "2g", got {_show(value)}')
    if size < minimum:
        raise reader.error(name, f"must be at least {minimum // 1024**2}m, got {_show(value)}")
    return size


def _limits(reader: _Reader) -> Limits:
    defaults = Limits()
    cpus = reader.get("cpus", (int, float), "a number of CPUs", default=defaults.cpus)
    available = os.cpu_count() or 1
    if not 0.01 <= cpus <= available:
        raise reader.error("cpus", f"expected 0.01 to {available} (the CPUs of this machine), got {cpus}")
    memory = _size(reader, "memory", defaults.memory, minimum=6 * 1024**2)
    tmpfs = _size(reader, "tmpfs", defaults.tmpfs, minimum=1024**2)
    scratch = _size(reader, "scratch", defaults.scratch, minimum=1024**2)
    max_output = _size(reader, "max_output", defaults.max_output, minimum=1024**2)
    pids = reader.get("pids", (int,), "a whole number", default=defaults.pids)
    if pids < 8:
        raise reader.error("pids", f"must be at least 8, got {pids}")
    deadline = reader.get("deadline", (int,), "a whole number of seconds", default=defaults.deadline)
    if deadline < 1:
        raise reader.error("deadline", f"must be at least 1 second, got {deadline}")
    concurrent = reader.get("max_concurrent_runs", (int,), "a whole number", default=defaults.max_concurrent_runs)
    if concurrent < 1:
        raise reader.error("max_concurrent_runs", f"must be at least 1, got {concurrent}")
    idle = reader.get("round_worker_idle", (int,), "a whole number of seconds", default=defaults.round_worker_idle)
    if idle < 0:
        raise reader.error("round_worker_idle", f"must be 0 (no round workers) or more, got {idle}")
    standby = reader.get("round_worker_standby", (int,), "a whole number of seconds",
                         default=defaults.round_worker_standby)
    if standby < 0:
        raise reader.error("round_worker_standby", f"must be 0 (no standby worker) or more, got {standby}")
    user = reader.get("user", (str,), 'a "uid:gid"', default=defaults.user)
    if not USER_RE.match(user):
        raise reader.error("user", f'expected a numeric "uid:gid" like "65534:65534", got {_show(user)}')
    if user.split(":")[0] == "0":
        raise reader.error("user", "algorithms must not run as root (uid 0)")
    reader.finish()
    return Limits(
        cpus=float(cpus), memory=memory, pids=pids, deadline=deadline, max_concurrent_runs=concurrent,
        tmpfs=tmpfs, scratch=scratch, max_output=max_output, user=user, round_worker_idle=idle,
        round_worker_standby=standby,
    )


def _standbys(root: _Reader, databases: dict[str, Database], limits: Limits) -> tuple[StandbyImage, ...]:
    entries = root.get("standby", (list,), "a list of [[standby]] tables", default=[])
    if entries and limits.round_worker_idle == 0:
        raise root.error("standby", "standby workers are round workers, and limits.round_worker_idle = 0 turns "
                                    "those off")
    if len(entries) > MAX_STANDBY_IMAGES:
        raise root.error("standby", f"at most {MAX_STANDBY_IMAGES} entries (each is an idle container), "
                                    f"got {len(entries)}")
    standbys = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise root.error("standby", f"expected [[standby]] tables, found {_show(entry)}")
        reader = _Reader(root.source, entry, f"standby[{number}].")
        text = reader.get("image", (str,), "an image name", required=True)
        try:
            image = ImageRef.parse(text)
        except BadReference as exc:
            raise reader.error("image", str(exc))
        labels = reader.get("databases", (list,), "a list of database labels")
        if labels is None:
            if len(databases) != 1:
                raise reader.error("databases", "is required when the node has more than one database "
                                                "(the labels its jobs ask for)")
            labels = list(databases)
        if not labels:
            raise reader.error("databases", "must name at least one database")
        for label in labels:
            if not isinstance(label, str) or label not in databases:
                have = ", ".join(databases) or "none"
                raise reader.error("databases", f"{_show(label)} is not a database of this node (it has: {have})")
        reader.finish()
        standby = StandbyImage(image=image, databases=tuple(sorted(set(labels))))
        if standby in standbys:
            raise reader.error("image", "the same image and databases are named twice")
        standbys.append(standby)
    return tuple(standbys)


def _algorithm_env(reader: _Reader) -> dict[str, str]:
    env = {}
    for name in list(reader.table):
        if not ENV_NAME_RE.match(name):
            raise reader.error(name, "not a valid environment variable name")
        if name in RESERVED_ENV or name.endswith(("_DATABASE_URI", "_DATABASE_TYPE")):
            raise reader.error(name, "is set by the node itself (container contract)")
        env[name] = reader.get(name, (str,), "a string")
    reader.finish()
    return env


def _choice(reader: _Reader, name: str, choices: tuple[str, ...], default: str) -> str:
    value = reader.get(name, (str,), "a string", default=default)
    if value not in choices:
        raise reader.error(name, f"expected one of {', '.join(choices)}, got {_show(value)}")
    return value


def _whole(reader: _Reader, name: str, default: int, minimum: int) -> int:
    value = reader.get(name, (int,), "a whole number", default=default)
    if value < minimum:
        raise reader.error(name, f"must be at least {minimum}, got {value}")
    return value


def _duration(reader: _Reader, name: str, default: int) -> int:
    value = reader.get(name, (str, int), 'a duration like "7d" or "12h"', default=None)
    if value is None:
        return default
    match = DURATION_RE.match(value) if isinstance(value, str) else None
    seconds = value if isinstance(value, int) else (int(match.group(1)) * _SECONDS[match.group(2)] if match else None)
    if seconds is None or seconds < 60:
        raise reader.error(name, f'expected a duration of at least a minute like "7d" or "12h", got {_show(value)}')
    return seconds


def _output(reader: _Reader) -> OutputPolicy:
    defaults = OutputPolicy()
    opaque = _choice(reader, "opaque", ("release", "hold", "refuse"), defaults.opaque)
    failed = _choice(reader, "failed_checks", ("hold", "refuse"), defaults.failed_checks)
    intermediates = _choice(reader, "intermediates", ("release", "hold"), defaults.intermediates)
    logs = _choice(reader, "logs", ("gate", "release", "on_failure", "never"), defaults.logs)
    sizes_reader = reader.table_of("max_size")
    sizes = dict(DEFAULT_MAX_SIZES)
    for kind in list(sizes_reader.table):
        if kind not in OUTPUT_TYPES:
            sizes_reader.used.add(kind)
            raise sizes_reader.error(kind, f"not an output type (known: {', '.join(OUTPUT_TYPES)})")
        sizes[kind] = _size(sizes_reader, kind, sizes[kind], minimum=1024)
    sizes_reader.finish()
    policy = OutputPolicy(
        opaque=opaque, failed_checks=failed, intermediates=intermediates, logs=logs,
        log_max_lines=_whole(reader, "log_max_lines", defaults.log_max_lines, 0),
        min_residual_df=_whole(reader, "min_residual_df", defaults.min_residual_df, 1),
        max_table_cells=_whole(reader, "max_table_cells", defaults.max_table_cells, 1),
        max_intermediate_elements=_whole(reader, "max_intermediate_elements", defaults.max_intermediate_elements, 1),
        max_string=_whole(reader, "max_string", defaults.max_string, 8),
        max_sizes=sizes, hold_timeout=_duration(reader, "hold_timeout", defaults.hold_timeout),
    )
    reader.finish()
    return policy


def _steward(reader: _Reader, base_dir: Path) -> StewardSettings:
    if "password_hash" in reader.table and "password_hash_file" in reader.table:
        raise ConfigError(reader.source, "steward.password_hash", "set one of password_hash, password_hash_file")
    password_hash = reader.get("password_hash", (str,), "a hash from `manage.py steward --hash-password`")
    hash_path = _path(reader, "password_hash_file", base_dir)
    if hash_path is not None:
        try:
            password_hash = hash_path.read_text().strip()
        except OSError as exc:
            raise reader.error("password_hash_file", f"cannot read {hash_path}: {exc.strerror}")
    if password_hash is not None and not password_hash.startswith("scrypt$"):
        raise reader.error("password_hash", "expected a hash from `manage.py steward --hash-password` (scrypt$...)")
    port = reader.get("port", (int,), "a port number", default=StewardSettings.port)
    if not 1 <= port <= 65535:
        raise reader.error("port", f"expected a port number 1-65535, got {port}")
    reader.finish()
    return StewardSettings(password_hash=password_hash, port=port)
