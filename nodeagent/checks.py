"""`run_node --check`: is this node ready? One line per thing checked."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import docker.errors

from nodeagent.client import ServerClient, ServerRefused, ServerUnavailable
from nodeagent.config import Database, NodeConfig
from nodeagent.crypto import envelope
from nodeagent.executor import Executor, ImageError
from nodeagent.policy import image_refusal

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Finding:
    level: str
    topic: str
    message: str


def run_checks(config: NodeConfig, *, client: ServerClient | None = None,
               executor_factory=Executor) -> list[Finding]:
    findings = [Finding(OK, "config", f"{config.source} is valid")]
    server_findings, node = _check_server(config, client or ServerClient(config.server.url, config.server.api_key))
    findings += server_findings
    findings += _check_docker(config, executor_factory)
    findings += _check_task_folder(config)
    for database in config.databases.values():
        findings.append(_check_database(database))
    if not config.databases:
        findings.append(Finding(WARN, "databases", "no databases configured: algorithms get no data"))
    findings += _check_policy(config)
    findings += _check_standbys(config)
    findings += check_disclosure_settings(config.algorithm_env)
    findings += check_output(config)
    findings.append(_check_encryption(config, None if node is None else node.get("organization_public_key")))
    return findings


def _check_encryption(config: NodeConfig, published_pem: str | None) -> Finding:
    """The private key against the organisation's published public key (None: not known,
    the server was not reached). A node holding another key than the one researchers seal
    inputs for could open none of them; one whose organisation published none gets none."""
    if config.private_key is None:
        if published_pem:
            return Finding(WARN, "encryption", "the organisation publishes a public key but this node has no "
                                               "private key ([encryption]): it cannot open encrypted inputs")
        return Finding(OK, "encryption", "no private key: this node can serve unencrypted collaborations only")
    own = envelope.fingerprint(config.private_key).hex()
    described = f"RSA {config.private_key.key_size}-bit private key, public key fingerprint {own}"
    if published_pem is None:
        return Finding(OK, "encryption", f"{described} (not compared: the server was not reached)")
    if not published_pem.strip():
        return Finding(WARN, "encryption", f"{described}, but the organisation has published no public key "
                                           "(vantage-client publish-key)")
    try:
        published = envelope.fingerprint(envelope.load_public_key(published_pem)).hex()
    except ValueError as exc:  # the envelope module's KeyFormatError
        return Finding(FAIL, "encryption", f"the organisation's published public key cannot be read: {exc}")
    if published != own:
        return Finding(FAIL, "encryption", f"the private key (fingerprint {own}) does not match the organisation's "
                                           f"published public key (fingerprint {published})")
    return Finding(OK, "encryption", f"{described}, the organisation's published key")


def _check_server(config: NodeConfig, client: ServerClient) -> tuple[list[Finding], dict | None]:
    try:
        client.authenticate()
        node = client.me()
    except ServerUnavailable as exc:
        return [Finding(FAIL, "server", f"{config.server.url} cannot be reached: {exc}")], None
    except ServerRefused as exc:
        return [Finding(FAIL, "server", f"{config.server.url} refused the API key: {exc}")], None
    return [Finding(OK, "server", (
        f"{config.server.url} accepted the API key: node {node.get('id')} \"{node.get('name', '')}\", "
        f"organisation {_show_id(node.get('organization'))}, collaboration {_show_id(node.get('collaboration'))}"
    ))], node


def _show_id(value) -> str:
    if isinstance(value, dict):
        return f"{value.get('id')} \"{value.get('name', '')}\""
    return str(value)


def _check_docker(config: NodeConfig, executor_factory) -> list[Finding]:
    try:
        executor = executor_factory(limits=config.limits, registries=config.registries)
        version = executor.ping()
    except docker.errors.DockerException as exc:
        findings = [Finding(FAIL, "docker", f"no Docker engine answers: {exc}")]
        findings += [Finding(FAIL, "registry", f"{host}: not checked without a Docker engine")
                     for host in config.registries]
        findings.append(Finding(FAIL, "forwarder", f"{config.forwarder_image}: not checked without a Docker engine"))
        return findings
    findings = [Finding(OK, "docker", f"Docker engine {version} answers")]
    for creds in config.registries.values():
        try:
            executor.login(creds)
            findings.append(Finding(OK, "registry", f"{creds.host} accepted the credentials of {creds.username}"))
        except ImageError as exc:
            findings.append(Finding(FAIL, "registry", str(exc)))
    problem = executor.forwarder_image_problem(config.forwarder_image)
    if problem:
        findings.append(Finding(FAIL, "forwarder", f"forwarder_image: {problem}"))
    else:
        findings.append(Finding(OK, "forwarder", f"forwarder_image {config.forwarder_image} is present or pullable"))
    return findings


def _check_task_folder(config: NodeConfig) -> list[Finding]:
    folder = config.task_folder
    probe = folder if folder.exists() else next((p for p in folder.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK | os.X_OK):
        return [Finding(FAIL, "task_folder", f"{folder}: not writable by this user")]
    # No container sees this folder (its files reach a run through volumes: nodeagent/volumes.py),
    # so its path may name anyone.
    return [Finding(OK, "task_folder", f"{folder} is usable")]


def _check_database(database: Database) -> Finding:
    """The agent reads the file (it copies it into a read-only volume for the runs, readable
    there by the algorithm's user whatever the file's own mode)."""
    topic = f"database {database.label}"
    path = database.path or database.sqlite_path
    if path is not None:
        if not path.exists():
            return Finding(FAIL, topic, f"{database.type} file {path} does not exist")
        if not path.is_file():
            return Finding(FAIL, topic, f"{path} is not a file")
        if not os.access(path, os.R_OK):
            return Finding(FAIL, topic, f"{path} is not readable by the node agent")
        if database.type != "sql":
            return Finding(OK, topic, f"{database.type} file {path} ({path.stat().st_size} bytes) is readable")
        return _check_sqlite(path, topic)
    return _check_sql(database, topic)


def _check_sqlite(path: Path, topic: str) -> Finding:
    """SQLite files need no driver: the standard library opens them, read-only."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            tables = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    except sqlite3.Error as exc:
        return Finding(FAIL, topic, f"{path} is not a readable SQLite database: {exc}")
    return Finding(OK, topic, f"SQLite file {path} opens ({tables} tables)")


def _check_sql(database: Database, topic: str) -> Finding:
    try:
        import sqlalchemy
    except ImportError:
        return Finding(FAIL, topic, "SQL databases other than SQLite files need SQLAlchemy: pip install SQLAlchemy")
    try:
        engine = sqlalchemy.create_engine(database.uri)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # SQLAlchemy and its drivers raise many kinds; all mean "cannot connect"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"cannot connect to {_safe_uri(database.uri)}: {type(exc).__name__}: {first_line}"
        return Finding(FAIL, topic, message[:400])
    return Finding(OK, topic, f"connected to {_safe_uri(database.uri)}")


def _safe_uri(uri: str) -> str:
    """The URI without its password."""
    scheme, sep, rest = uri.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@{rest.split('@', 1)[1]}"
    return f"{scheme}{sep}{rest}"


def _check_policy(config: NodeConfig) -> list[Finding]:
    policy = config.policy
    findings = []
    if policy.allowed_images is None:
        findings.append(Finding(WARN, "policy", "allowed_images is not set: this node runs any image"))
    else:
        findings.append(Finding(OK, "policy", f"{len(policy.allowed_images)} allowed image pattern(s)"))
    if not policy.require_digest:
        findings.append(Finding(WARN, "policy", "require_digest is off: tasks may name images by tag"))
    findings += _check_signatures(policy)
    return findings


def _check_standbys(config: NodeConfig) -> list[Finding]:
    """What node.toml's [[standby]] entries will get: the policy's own refusals show now, the
    signature and catalogue are checked when the agent starts (nodeagent/agent.py)."""
    findings = []
    for standby in config.standbys:
        why = image_refusal(config.policy, standby.image)
        if why:
            findings.append(Finding(WARN, "standby", f"image {standby.image} will get no standby worker: {why}"))
        else:
            findings.append(Finding(OK, "standby", f"image {standby.image} for database(s) "
                                                   f"{', '.join(standby.databases)}: a standby worker from the "
                                                   "agent's start, once its signature and catalogue entry pass"))
    return findings


def _check_signatures(policy) -> list[Finding]:
    # Unreadable key files never get here: the config refuses to load (nodeagent/config.py).
    findings = []
    for key in policy.trusted_keys:
        state = ""
        if key.fingerprint in policy.revoked_keys:
            state = " (revoked)"
        elif key.not_after is not None:
            state = f" (valid until {key.not_after.isoformat()})"
        findings.append(Finding(OK, "trusted key", f"{key.name}: ECDSA P-256, fingerprint {key.fingerprint}{state}"))
    if not policy.require_signature:
        findings.append(Finding(WARN, "signatures", "require_signature = false: this node runs unsigned images"))
    elif not policy.trusted_keys:
        default = "" if policy.require_signature_set else " (the default since signed images came in)"
        findings.append(Finding(FAIL, "signatures", (
            f"require_signature is on{default} but no trusted_keys are set: every run will be rejected; "
            "add the reviewers' public keys to [policy] trusted_keys (or set require_signature = false)")))
    else:
        findings.append(Finding(OK, "signatures", f"images must be signed by one of {len(policy.trusted_keys)} "
                                                  "trusted key(s)"))
    if policy.require_catalogue:
        findings.append(Finding(OK, "catalogue", "only images the catalogue lists as approved run here"))
    return findings


# The disclosure settings the algorithm toolkit reads (algorithms/vantage_algorithms/policy.py
# SETTINGS; tests/nodeagent/test_disclosure_check.py fails when the two lists part), by kind.
# The node does not import the toolkit: it runs images, it does not load their code.
DISCLOSURE_SETTINGS = {
    "VANTAGE_MIN_ROWS": int, "VANTAGE_MIN_CELL": int, "VANTAGE_MIN_RISKSET_LEAVERS": int,
    "VANTAGE_MIN_EVENTS": int, "VANTAGE_ALLOW_EXACT_EVENT_TIMES": bool, "VANTAGE_ALLOW_MIN_MAX": bool,
    "VANTAGE_ALLOW_SQL_QUERY": bool,
}
DISCLOSURE_PREFIXES = ("VANTAGE_MIN_", "VANTAGE_ALLOW_")
BOOLEAN_WORDS = {"1", "true", "yes", "on", "0", "false", "no", "off", ""}


def check_disclosure_settings(env: dict[str, str]) -> list[Finding]:
    """The [algorithm_env] disclosure settings as the toolkit will read them. A misspelt
    name would make every run of a reference algorithm fail at the site (the toolkit
    refuses unknown settings rather than keep a default silently), so --check says so first."""
    findings = []
    for name in sorted(env):
        if not name.startswith(DISCLOSURE_PREFIXES):
            continue
        kind, value = DISCLOSURE_SETTINGS.get(name), str(env[name]).strip()
        if kind is None:
            findings.append(Finding(FAIL, "disclosure", f"{name} is not a disclosure setting the algorithm toolkit "
                                                        f"knows (known: {', '.join(sorted(DISCLOSURE_SETTINGS))})"))
        elif kind is bool and value.lower() not in BOOLEAN_WORDS:
            findings.append(Finding(FAIL, "disclosure", f"{name} must be true or false, not {value!r}"))
        elif kind is int and not (value.isdigit() and int(value) >= 1):
            findings.append(Finding(FAIL, "disclosure", f"{name} must be a whole number of 1 or more, not {value!r}"))
    if not findings:
        chosen = [f"{n}={env[n]}" for n in sorted(env) if n in DISCLOSURE_SETTINGS]
        findings.append(Finding(OK, "disclosure", ", ".join(chosen) if chosen else "the toolkit's defaults"))
    return findings


def render(findings: list[Finding]) -> str:
    width = max(len(f.topic) for f in findings)
    lines = [f"  {f.level:<4}  {f.topic:<{width}}  {f.message}" for f in findings]
    failed = sum(1 for f in findings if f.level == FAIL)
    warned = sum(1 for f in findings if f.level == WARN)
    lines.append(f"{failed} problem(s), {warned} warning(s)" if failed or warned else "all checks passed")
    return "\n".join(lines)


def check_output(config: NodeConfig) -> list[Finding]:
    """What the output gate lets leave, and whether a steward can decide what it holds."""
    output = config.output
    line = (f"opaque outputs: {output.opaque}; failed checks: {output.failed_checks}; "
            f"intermediates: {output.intermediates}; logs: {output.logs}")
    findings = [Finding(WARN if output.opaque == "release" else OK, "output",
                        line + (" (untyped outputs leave unchecked)" if output.opaque == "release" else ""))]
    if output.logs == "release":
        findings.append(Finding(WARN, "output", "logs = \"release\": algorithms' logs leave unchecked"))
    holds = "hold" in (output.opaque, output.failed_checks, output.intermediates) or output.logs == "gate"
    if holds and not config.steward.password_hash:
        findings.append(Finding(WARN, "steward", (
            "results may be held but [steward] password_hash is not set: nobody can review them, and "
            f"they are rejected as not reviewed after {output.hold_timeout // 3600} h")))
    return findings
