"""The reference images' own libraries (Debian numpy/pandas, the wheels build.py adds)
read every database type the toolkit offers, inside a real container as a node runs it."""

import json
import sqlite3

import pandas as pd
import pytest

from tests.algorithms.conftest import build_image
from tests.nodeagent import images

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]

READ_ALL = """
import json
from vantage_algorithms import data
frames = {kind: data.load(data.Database(kind, uri, kind), **extra) for kind, uri, extra in [
    ("csv", "/mnt/data/d.csv", {}), ("parquet", "/mnt/data/d.parquet", {}), ("excel", "/mnt/data/d.xlsx", {}),
    ("sql", "sqlite:////mnt/data/d.sqlite", {"table": "patients"})]}
print(json.dumps({kind: [len(f), f["age"].sum(), sorted(f["grade"].unique())] for kind, f in frames.items()}))
"""


def test_the_summary_image_reads_csv_parquet_excel_and_sqlite(tmp_path):
    client = images.docker_client()
    reference = build_image("summary")
    frame = pd.DataFrame({"age": [40.5, 51.0, 63.25, 70.0], "grade": ["I", "II", "II", "III"]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    frame.to_excel(tmp_path / "d.xlsx", index=False)
    with sqlite3.connect(tmp_path / "d.sqlite") as conn:
        frame.to_sql("patients", conn, index=False)
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    tmp_path.chmod(0o755)  # the container runs as nobody, as on a node
    output = client.containers.run(reference, ["python3", "-c", READ_ALL], network_mode="none", read_only=True,
                                   user="65534", remove=True, volumes={str(tmp_path): {"bind": "/mnt/data", "mode": "ro"}})
    seen = json.loads(output.decode().strip().splitlines()[-1])
    assert seen == {kind: [4, 224.75, ["I", "II", "III"]] for kind in ("csv", "parquet", "excel", "sql")}
