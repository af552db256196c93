import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodeagent import config
from nodeagent.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]

GOOD = """
task_folder = "tasks"

[server]
url = "https://vantage.example.org/"
api_key = "vnk_abc_def"

[databases.default]
type = "csv"
path = "data/patients.csv"

[databases.registry]
type = "sql"
uri = "sqlite:///registry.sqlite3"

[registries."127.0.0.1:5000"]
username = "vantage"
password_file = "registry-password"

[policy]
allowed_images = ["127.0.0.1:5000/vantage/*", "sha256:%s"]
allowed_organizations = [1, 2]
allowed_users = [7, "alice"]
require_digest = true

[limits]
cpus = 1
memory = "2g"
pids = 128
deadline = 600
max_concurrent_runs = 3

[algorithm_env]
ALGO_MIN_ROWS = "10"
""" % ("a" * 64)


def write(tmp_path, text, name="node.toml"):
    path = tmp_path / name
    path.write_text(text)
    (tmp_path / "registry-password").write_text("s3cret\n")
    return path


def error_of(tmp_path, text, environ=None) -> str:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, text), environ=environ or {})
    return str(caught.value)


def test_a_complete_config_loads_into_typed_values(tmp_path):
    loaded = config.load(write(tmp_path, GOOD), environ={})
    assert loaded.server.url == "https://vantage.example.org"
    assert loaded.server.api_key == "vnk_abc_def"
    assert loaded.task_folder == tmp_path / "tasks"
    assert loaded.databases["default"].path == tmp_path / "data" / "patients.csv"
    assert loaded.databases["registry"].uri == f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    assert loaded.registries["127.0.0.1:5000"].password == "s3cret"
    assert loaded.policy.allowed_organizations == (1, 2)
    assert loaded.policy.allowed_users == (7, "alice")
    assert loaded.policy.require_digest is True
    assert loaded.limits.memory == 2 * 1024**3
    assert loaded.limits.max_concurrent_runs == 3
    assert loaded.limits.round_worker_idle == 60  # the default: images that opt in get round workers
    assert loaded.algorithm_env == {"ALGO_MIN_ROWS": "10"}
    assert loaded.forwarder_image == "vantage/algorithm-base:bookworm-1"  # the default


STANDBY = '[[standby]]\nimage = "127.0.0.1:5000/vantage/alg-cox:1"\n'


def test_standby_images_load_with_their_databases_sorted(tmp_path):
    text = GOOD + STANDBY + 'databases = ["registry", "default"]\n' + STANDBY.replace("cox:1", "km@sha256:" + "b" * 64)
    text += 'databases = ["default"]\n'
    loaded = config.load(write(tmp_path, text), environ={})
    assert [(str(s.image), s.databases) for s in loaded.standbys] == [
        ("127.0.0.1:5000/vantage/alg-cox:1", ("default", "registry")),
        ("127.0.0.1:5000/vantage/alg-km@sha256:" + "b" * 64, ("default",)),
    ]
    assert config.load(write(tmp_path, GOOD), environ={}).standbys == ()  # none unless named


def test_a_standby_on_a_node_with_one_database_is_for_that_database(tmp_path):
    one = GOOD.replace('[databases.registry]\ntype = "sql"\nuri = "sqlite:///registry.sqlite3"\n', "")
    (standby,) = config.load(write(tmp_path, one + STANDBY), environ={}).standbys
    assert standby.databases == ("default",)


@pytest.mark.parametrize("entry, expected", [
    (STANDBY, "standby[1].databases: is required when the node has more than one database"),
    (STANDBY + 'databases = ["trial"]\n',
     'standby[1].databases: "trial" is not a database of this node (it has: default, registry)'),
    (STANDBY + "databases = []\n", "standby[1].databases: must name at least one database"),
    (STANDBY.replace("alg-cox:1", "alg cox") + 'databases = ["default"]\n',
     "standby[1].image: '127.0.0.1:5000/vantage/alg cox' is not an image reference"),
    ('[[standby]]\ndatabases = ["default"]\n', "standby[1].image: is required"),
    (STANDBY + 'databases = ["default"]\nmemory = "1g"\n', "standby[1].memory: unknown key"),
    ((STANDBY + 'databases = ["default"]\n') * 2, "standby[2].image: the same image and databases are named twice"),
    ((STANDBY + 'databases = ["default"]\n') + "".join(
        STANDBY.replace("cox:1", f"cox:{n}") + 'databases = ["default"]\n' for n in range(2, 10)),
     "standby: at most 8 entries (each is an idle container), got 9"),
    ('standby = "127.0.0.1:5000/vantage/alg-cox:1"\n', "standby: expected a list of [[standby]] tables"),
])
def test_a_bad_standby_entry_names_the_key_and_the_problem(tmp_path, entry, expected):
    assert expected in error_of(tmp_path, GOOD + entry if entry.startswith("[[") else entry + GOOD)


def test_standby_workers_need_round_workers(tmp_path):
    text = GOOD.replace("max_concurrent_runs = 3", "max_concurrent_runs = 3\nround_worker_idle = 0")
    message = error_of(tmp_path, text + STANDBY + 'databases = ["default"]\n')
    assert "standby: standby workers are round workers, and limits.round_worker_idle = 0 turns those off" in message


def test_summary_reported_to_the_server_holds_no_secrets_or_paths(tmp_path):
    summary = config.load(write(tmp_path, GOOD), environ={}).summary()
    text = repr(summary)
    assert "vnk_abc_def" not in text and "s3cret" not in text and str(tmp_path) not in text
    assert summary["databases"] == [{"label": "default", "type": "csv"}, {"label": "registry", "type": "sql"}]


def test_api_key_from_a_file_or_an_environment_variable(tmp_path):
    (tmp_path / "key").write_text("vnk_from_file\n")
    from_file = GOOD.replace('api_key = "vnk_abc_def"', 'api_key_file = "key"')
    assert config.load(write(tmp_path, from_file), environ={}).server.api_key == "vnk_from_file"
    from_env = GOOD.replace('api_key = "vnk_abc_def"', 'api_key_env = "NODE_KEY"')
    assert config.load(write(tmp_path, from_env), environ={"NODE_KEY": "vnk_env"}).server.api_key == "vnk_env"


@pytest.mark.parametrize("change, expected", [
    (('memory = "2g"', 'memory = "lots"'), 'limits.memory: expected a size like "2g", got "lots"'),
    (("cpus = 1", "cpus = 512"), "limits.cpus: expected 0.01 to"),
    (("pids = 128", "pids = true"), "limits.pids: expected a whole number, got true"),
    (("deadline = 600", "deadline = 0"), "limits.deadline: must be at least 1 second, got 0"),
    (("max_concurrent_runs = 3", "max_concurrent_runs = 0"), "limits.max_concurrent_runs: must be at least 1"),
    (("deadline = 600", "deadline = 600\nround_worker_idle = -1"),
     "limits.round_worker_idle: must be 0 (no round workers) or more, got -1"),
    (('ALGO_MIN_ROWS = "10"', 'VANTAGE_ROUND_WORKER = "/tmp/x"'),
     "algorithm_env.VANTAGE_ROUND_WORKER: is set by the node itself"),
    (('type = "csv"', 'type = "xml"'), 'databases.default.type: expected one of csv, parquet, sql, excel, got "xml"'),
    (('uri = "sqlite:///registry.sqlite3"', 'uri = "registry"'), "databases.registry.uri: expected an SQLAlchemy URL"),
    (('url = "https://vantage.example.org/"', 'url = "vantage.example.org"'), "server.url: expected an http(s) URL"),
    (("allowed_organizations = [1, 2]", 'allowed_organizations = ["one"]'),
     'policy.allowed_organizations: expected organisation ids (numbers), found "one"'),
    (("require_digest = true", 'require_digest = "yes"'), 'policy.require_digest: expected true or false, got "yes"'),
    (('ALGO_MIN_ROWS = "10"', 'INPUT_FILE = "/etc/passwd"'), "algorithm_env.INPUT_FILE: is set by the node itself"),
    (('ALGO_MIN_ROWS = "10"', "ALGO_MIN_ROWS = 10"), "algorithm_env.ALGO_MIN_ROWS: expected a string, got 10"),
    (("[policy]", "[policy]\nallowed_image = []"), "policy.allowed_image: unknown key"),
    (("[databases.default]", "[databases.Default]"), "databases.Default: a database label is lowercase"),
    (('task_folder = "tasks"', 'task_folder = "tasks"\nforwarder_image = "relay image"'),
     'forwarder_image: expected an image name like "vantage/algorithm-base:bookworm-1", got "relay image"'),
    (('task_folder = "tasks"', 'task_folder = "tasks"\nforwarder_image = 3'),
     "forwarder_image: expected an image name"),
    (("[policy]", '[output]\nopaque = "maybe"\n[policy]'),
     'output.opaque: expected one of release, hold, refuse, got "maybe"'),
    (("[policy]", '[output]\nfailed_checks = "release"\n[policy]'),
     'output.failed_checks: expected one of hold, refuse, got "release"'),
    (("[policy]", '[output]\nhold_timeout = "soon"\n[policy]'), "output.hold_timeout: expected a duration"),
    (("[policy]", '[output]\nlog_max_lines = -1\n[policy]'), "output.log_max_lines: must be at least 0"),
    (("[policy]", '[output.max_size]\ntable = "1m"\n[policy]'), "output.max_size.table: not an output type"),
    (("[policy]", '[steward]\npassword_hash = "hunter2"\n[policy]'), "steward.password_hash: expected a hash"),
    (("[policy]", '[steward]\nport = 0\n[policy]'), "steward.port: expected a port number"),
])
def test_a_bad_value_names_the_key_and_the_problem(tmp_path, change, expected):
    old, new = change
    assert old in GOOD
    message = error_of(tmp_path, GOOD.replace(old, new))
    assert message.startswith(f"{tmp_path / 'node.toml'}: ")
    assert expected in message


def test_registry_password_file_that_cannot_be_read_is_named(tmp_path):
    message = error_of(tmp_path, GOOD.replace('password_file = "registry-password"', 'password_file = "missing"'))
    assert "password_file: cannot read" in message and "missing" in message


def test_api_key_must_come_from_exactly_one_place(tmp_path):
    both = GOOD.replace('api_key = "vnk_abc_def"', 'api_key = "x"\napi_key_env = "Y"')
    assert "server.api_key: set exactly one of api_key, api_key_file, api_key_env (found api_key, api_key_env)" in \
        error_of(tmp_path, both)
    unset = GOOD.replace('api_key = "vnk_abc_def"', 'api_key_env = "NODE_KEY"')
    assert "server.api_key_env: environment variable NODE_KEY is not set" in error_of(tmp_path, unset)


def test_invalid_toml_and_a_missing_file_are_one_line_each(tmp_path):
    assert "not valid TOML" in error_of(tmp_path, "task_folder = ")
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "absent.toml")


def test_run_node_with_a_bad_config_prints_one_line_and_exits_2(tmp_path):
    path = write(tmp_path, GOOD.replace('memory = "2g"', 'memory = "lots"'))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["DATABASE_URL"] = "postgres://nobody@127.0.0.1:1/no_database"
    done = subprocess.run([sys.executable, "manage.py", "run_node", "--config", str(path)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f'{path}: limits.memory: expected a size like "2g", got "lots"'


# --- What runs: trusted keys -------------------------------------------------------------


def _signing_key(tmp_path, name="reviewer"):
    from vantage_client import signing
    key = signing.generate_key()
    return signing.write_key_pair(tmp_path / f"{name}.key", key, None), signing.fingerprint(key.public_key())


def test_signatures_are_required_by_default_and_trusted_keys_load_with_expiry(tmp_path):
    (tmp_path / "keys").mkdir()
    first, first_print = _signing_key(tmp_path / "keys", "first")
    second, second_print = _signing_key(tmp_path / "keys", "second")
    text = GOOD.replace("require_digest = true", (
        'require_digest = true\nrequire_catalogue = true\n'
        f'trusted_keys = ["keys/first.pub", {{path = "keys/second.pub", not_after = 2027-06-30, name = "old"}}]\n'
        f'revoked_keys = ["{"0" * 64}"]'))
    policy = config.load(write(tmp_path, text)).policy
    assert policy.require_signature is True and policy.require_signature_set is False
    assert policy.require_catalogue is True
    assert [(k.name, k.fingerprint) for k in policy.trusted_keys] == [("first.pub", first_print),
                                                                      ("old", second_print)]
    assert policy.trusted_keys[0].not_after is None
    assert policy.trusted_keys[1].not_after.isoformat().startswith("2027-06-30T23:59:59")
    assert policy.revoked_keys == frozenset({"0" * 64})
    # An old config without any of these still loads: it requires signatures and says so at --check.
    assert config.load(write(tmp_path, GOOD)).policy.trusted_keys == ()


@pytest.mark.parametrize("entry, expected", [
    ('"keys/missing.pub"', "policy.trusted_keys[0]: cannot read"),
    ('"keys/rsa.pub"', "is not an ECDSA P-256 public key"),
    ('"keys/garbage.pub"', "is not a PEM public key"),
    ('{path = "keys/first.pub", not_after = 2027-06-30T00:00:00}', "not_after needs a time zone"),
    ('{path = "keys/first.pub", until = 2027-06-30}', "unknown key until"),
    ("3", "expected a public key file"),
])
def test_an_unusable_trusted_key_stops_the_node_with_one_line(tmp_path, entry, expected):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    (tmp_path / "keys").mkdir()
    _signing_key(tmp_path / "keys", "first")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (tmp_path / "keys" / "rsa.pub").write_bytes(rsa_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "keys" / "garbage.pub").write_text("not a key\n")
    message = error_of(tmp_path, GOOD.replace("require_digest = true", f"trusted_keys = [{entry}]"))
    assert expected in message and "\n" not in message


def test_a_revoked_key_is_a_fingerprint(tmp_path):
    message = error_of(tmp_path, GOOD.replace("require_digest = true", 'revoked_keys = ["keys/old.pub"]'))
    assert "policy.revoked_keys: expected key fingerprints (64 hex digits)" in message


def test_check_prints_the_trusted_keys_and_fails_without_any(tmp_path):
    from nodeagent.checks import FAIL, OK, _check_signatures
    public, fingerprint = _signing_key(tmp_path)
    text = GOOD.replace("require_digest = true", f'trusted_keys = ["{public}"]\nrevoked_keys = ["{fingerprint}"]')
    findings = _check_signatures(config.load(write(tmp_path, text)).policy)
    assert (OK, "trusted key", f"reviewer.pub: ECDSA P-256, fingerprint {fingerprint} (revoked)") in [
        (f.level, f.topic, f.message) for f in findings]
    (missing,) = [f for f in _check_signatures(config.load(write(tmp_path, GOOD)).policy) if f.level == FAIL]
    assert "the default since signed images came in" in missing.message and "trusted_keys" in missing.message


def test_check_no_longer_warns_about_a_task_folder_under_the_operators_home(tmp_path, monkeypatch):
    # Containers see no path of it (their files come through volumes: nodeagent/volumes.py).
    from nodeagent.checks import _check_task_folder
    monkeypatch.setenv("HOME", str(tmp_path))
    loaded = config.load(write(tmp_path, GOOD))  # task_folder = "tasks", next to node.toml: under HOME here
    assert [f.level for f in _check_task_folder(loaded)] == ["ok"]
