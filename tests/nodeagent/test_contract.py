import base64
import json
from pathlib import Path

from django.http.multipartparser import MultiPartParser
from django.test import RequestFactory

from nodeagent import config, contract
from nodeagent.client import MultipartStream
from nodeagent.logbuffer import LogBuffer


def node_config(tmp_path) -> config.NodeConfig:
    return config.parse({
        "task_folder": "tasks",
        "server": {"url": "http://127.0.0.1:8000", "api_key": "k"},
        "databases": {
            "default": {"type": "csv", "path": "patients.csv"},
            "registry": {"type": "sql", "uri": "postgresql://reader@db/registry"},
            "local": {"type": "sql", "uri": "sqlite:////srv/local.db"},
        },
        "algorithm_env": {"ALGO_MIN_ROWS": "10"},
    }, source="node.toml", base_dir=tmp_path)


def test_values_are_base32_with_bang_for_padding_as_vantage6_decodes_them():
    encoded = contract.encode_value("/mnt/run/input")
    assert "=" not in encoded and encoded.endswith("!")
    # vantage6.algorithm.tools.util._decode_env_var does exactly this:
    assert base64.b32decode(encoded.replace("!", "=")).decode("utf-8") == "/mnt/run/input"
    assert contract.decode_value(contract.encode_value("ünïcode, commas")) == "ünïcode, commas"


def test_environment_exposes_only_the_requested_databases(tmp_path):
    cfg = node_config(tmp_path)
    mounts = {label: contract.database_mount(cfg.databases[label]) for label in ("default", "local")}
    encoded = contract.container_environment(cfg, ["default", "local"], mounts)
    env = {name: contract.decode_value(value) for name, value in encoded.items()}
    assert env["INPUT_FILE"] == "/mnt/run/input" and env["OUTPUT_FILE"] == "/mnt/run/output"
    assert env["TOKEN_FILE"] == "/mnt/run/token" and env["TEMPORARY_FOLDER"] == "/mnt/tmp"
    assert env["USER_REQUESTED_DATABASE_LABELS"] == "default,local"
    assert env["DB_LABELS"] == "default,registry,local"
    assert env["DEFAULT_DATABASE_URI"] == "/mnt/data/default/default.csv" and env["DEFAULT_DATABASE_TYPE"] == "csv"
    assert env["LOCAL_DATABASE_URI"] == "sqlite:////mnt/data/local/local.db"
    assert "REGISTRY_DATABASE_URI" not in env
    assert env["ALGO_MIN_ROWS"] == "10"
    assert mounts["default"].host_path == str(tmp_path / "patients.csv")
    assert mounts["local"].host_path == "/srv/local.db"


def test_multipart_body_streams_the_file_and_django_parses_it(tmp_path):
    result = tmp_path / "output"
    payload = json.dumps({"values": list(range(100_000))}).encode()
    result.write_bytes(payload)
    body = MultipartStream({"status": "completed", "log": "line one\nline two ü\n"}, "result", result)
    chunks = list(body)
    assert max(len(c) for c in chunks) <= 256 * 1024
    raw = b"".join(chunks)
    assert len(raw) == len(body)
    request = RequestFactory().post("/", data=raw, content_type=body.content_type)
    fields, files = MultiPartParser(request.META, request, request.upload_handlers).parse()
    assert fields["status"] == "completed" and fields["log"] == "line one\nline two ü\n"
    assert files["result"].read() == payload


def test_log_buffer_keeps_the_newest_text_and_says_what_it_dropped():
    buffer = LogBuffer(limit=10)
    buffer.feed("héllo ".encode()[:2])  # a multi-byte character split across chunks
    buffer.feed("héllo ".encode()[2:] + b"world, and more")
    assert len(buffer) == 10
    text = buffer.take(100)
    assert text.startswith("[node: 11 characters of log were dropped here]\n")
    assert text.endswith("d, and more"[-10:])


def test_log_text_that_could_not_be_sent_goes_back_in_front():
    buffer = LogBuffer(limit=100)
    buffer.feed(b"first\n")
    buffer.write("[node] killed")
    sent = buffer.take(4)
    buffer.give_back(sent)
    assert buffer.take(100) == "first\n[node] killed\n"


def test_database_mount_keeps_the_file_suffix(tmp_path):
    db = config.Database(label="x", type="parquet", path=Path("/srv/data/visits"))
    assert contract.database_mount(db).container_path == "/mnt/data/x/x.parquet"

