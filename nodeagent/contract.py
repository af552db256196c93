"""The vantage6 4.x algorithm container contract: paths and environment.

Existing vantage6 images read their settings through
`vantage6.algorithm.tools.util.get_env_var`, which base32-decodes each value after
turning '!' back into '='. We encode exactly that way so those images run unmodified.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from nodeagent.config import Database, NodeConfig

# Where a run's own files appear inside its container: RUN_DIR is the run's own volume
# (nodeagent/volumes.py), holding these three files and nothing else; each database
# requested is a read-only volume of its own under DATA_DIR.
RUN_DIR = "/mnt/run"
INPUT_PATH = f"{RUN_DIR}/input"
OUTPUT_PATH = f"{RUN_DIR}/output"
TOKEN_PATH = f"{RUN_DIR}/token"
TEMP_PATH = "/mnt/tmp"
DATA_DIR = "/mnt/data"
PROXY_HOST = "http://127.0.0.1"
FILE_SUFFIX = {"csv": ".csv", "parquet": ".parquet", "excel": ".xlsx"}


def encode_value(value: str) -> str:
    return base64.b32encode(value.encode("utf-8")).decode("ascii").replace("=", "!")


def decode_value(value: str) -> str:
    return base64.b32decode(value.replace("!", "=")).decode("utf-8")


@dataclass(frozen=True)
class DataMount:
    """A database file the container may read: host path → container path. The file is
    `file_name` in a read-only volume mounted at `container_dir`."""

    label: str
    host_path: str
    container_path: str

    @property
    def container_dir(self) -> str:
        return self.container_path.rsplit("/", 1)[0]

    @property
    def file_name(self) -> str:
        return self.container_path.rsplit("/", 1)[1]


def database_mount(database: Database) -> DataMount | None:
    if database.path is not None:
        suffix = database.path.suffix or FILE_SUFFIX[database.type]
        return DataMount(database.label, str(database.path), f"{DATA_DIR}/{database.label}/{database.label}{suffix}")
    sqlite = database.sqlite_path
    if sqlite is not None:
        return DataMount(database.label, str(sqlite),
                         f"{DATA_DIR}/{database.label}/{database.label}{sqlite.suffix or '.sqlite'}")
    return None


def database_uri(database: Database, mount: DataMount | None) -> str:
    if mount is None:
        return database.uri or ""
    if database.type == "sql":
        return f"sqlite:///{mount.container_path}"
    return mount.container_path


def container_environment(
    config: NodeConfig, requested_labels: list[str], mounts: dict[str, DataMount | None]
) -> dict[str, str]:
    """Every env var of one run's container, values encoded as vantage6 expects.

    Only the databases the task asked for get a URI (and a mount): an algorithm sees
    no data it was not sent for. DB_LABELS still lists every label, as in vantage6.
    """
    plain = {
        "INPUT_FILE": INPUT_PATH,
        "OUTPUT_FILE": OUTPUT_PATH,
        "TOKEN_FILE": TOKEN_PATH,
        "TEMPORARY_FOLDER": TEMP_PATH,
        "HOST": PROXY_HOST,
        "PORT": str(config.proxy_port),
        "API_PATH": "",
        "USER_REQUESTED_DATABASE_LABELS": ",".join(requested_labels),
        "DB_LABELS": ",".join(config.databases),
    }
    for label in requested_labels:
        database = config.databases[label]
        plain[f"{label.upper()}_DATABASE_URI"] = database_uri(database, mounts.get(label))
        plain[f"{label.upper()}_DATABASE_TYPE"] = database.type
    plain.update(config.algorithm_env)
    return {name: encode_value(value) for name, value in plain.items()}
