"""The local harness: central and partial methods in one process, each site under its own policy."""

import importlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vantage_algorithms import AlgorithmError, Policy, SubtaskFailed
from vantage_algorithms.harness import LocalClient, run_local

REPO_ROOT = Path(__file__).resolve().parents[2]


def site(n: int, offset: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    return pd.DataFrame({"age": rng.normal(50 + offset, 10, n), "grade": rng.choice(["I", "II", "III"], n)})


def test_a_central_method_runs_its_partials_at_every_site():
    sites = {4: site(30), 7: site(45, 5), 9: site(60, -3)}
    result = run_local("reference.summary", "summary", kwargs={"columns": ["age"]}, sites=sites)
    pooled = pd.concat(sites.values())["age"]
    assert result["values"]["organizations"] == [4, 7, 9]
    assert result["values"]["columns"]["age"]["n"] == 135
    assert result["values"]["columns"]["age"]["mean"] == pytest.approx(pooled.mean(), abs=1e-12, rel=1e-12)


def test_a_partial_method_gives_every_sites_output():
    result = run_local("reference.summary", "summary_site", kwargs={"columns": ["age"]},
                       sites={1: site(12), 2: site(20)})
    assert [r["n"] for r in result] == [12, 20]


def test_each_site_answers_under_its_own_policy_and_a_refusal_names_the_site():
    sites = {1: site(30), 2: site(15), 3: site(40)}
    with pytest.raises(SubtaskFailed, match=r"organisation 2: refused by its disclosure policy: this site has 15 "
                                            r"rows, fewer than its policy's minimum of 20 \(VANTAGE_MIN_ROWS\)"):
        run_local("reference.summary", "summary", sites=sites, env={2: {"VANTAGE_MIN_ROWS": "20"}})
    assert run_local("reference.summary", "summary", sites=sites)["n"] == 85


def test_the_organizations_argument_narrows_a_central_methods_sites():
    sites = {1: site(30), 2: site(15), 3: site(40)}
    result = run_local("reference.summary", "summary", kwargs={"organizations": [1, 3], "columns": ["age"]},
                       sites=sites, env={2: {"VANTAGE_MIN_ROWS": "20"}})
    assert result["values"]["organizations"] == [1, 3] and result["n"] == 70


def test_every_input_and_output_goes_through_json():
    client = LocalClient(importlib.import_module("reference.summary"), {1: site(12)}, {1: Policy()}, {}, None)
    with pytest.raises(TypeError):
        client.start("summary_site", {"columns": {"age"}})  # a set is not JSON


def test_sites_load_from_csv_parquet_excel_and_sqlite_files(tmp_path):
    frames = [site(12), site(14), site(16), site(18)]
    frames[0].to_csv(tmp_path / "a.csv", index=False)
    frames[1].to_parquet(tmp_path / "b.parquet")
    frames[2].to_excel(tmp_path / "c.xlsx", index=False)
    with sqlite3.connect(tmp_path / "d.sqlite") as conn:
        frames[3].to_sql("patients", conn, index=False)
    sites = {1: str(tmp_path / "a.csv"), 2: str(tmp_path / "b.parquet"), 3: str(tmp_path / "c.xlsx"),
             4: str(tmp_path / "d.sqlite")}
    with pytest.raises(SubtaskFailed, match="organisation 1: table and query apply to SQL databases; 'a' is csv"):
        run_local("reference.summary", "summary", kwargs={"table": "patients"}, sites=sites)
    result = run_local("reference.summary", "summary", kwargs={"columns": ["age", "grade"]},
                       sites={k: v for k, v in sites.items() if k != 4})
    assert result["n"] == 42
    query = {"query": "SELECT age, grade FROM patients WHERE age > 0"}
    with pytest.raises(SubtaskFailed, match=r"organisation 4: refused by its disclosure policy: this node does not "
                                            r"take SQL queries from tasks \(VANTAGE_ALLOW_SQL_QUERY\)"):
        run_local("reference.summary", "summary_site", kwargs=query, sites={4: sites[4]})
    sql = run_local("reference.summary", "summary_site", kwargs=query, sites={4: sites[4]},
                    env={4: {"VANTAGE_ALLOW_SQL_QUERY": "true"}})
    assert sql[0]["n"] == int((frames[3]["age"] > 0).sum())
    with pytest.raises(SubtaskFailed, match="organisation 4: database 'd' has no table 'nothing'"):
        run_local("reference.summary", "summary", kwargs={"table": "nothing"}, sites={4: sites[4]})
    with pytest.raises(SubtaskFailed, match="organisation 4: database 'd' is SQL: give either table or query"):
        run_local("reference.summary", "summary", sites={4: sites[4]})


def test_an_sql_query_cannot_change_the_database(tmp_path):
    path = tmp_path / "d.sqlite"
    with sqlite3.connect(path) as conn:
        site(12).to_sql("patients", conn, index=False)
    with pytest.raises(SubtaskFailed, match="organisation 1: database 'd': OperationalError"):
        run_local("reference.summary", "summary_site", kwargs={"query": "DELETE FROM patients"}, sites={1: str(path)},
                  env={1: {"VANTAGE_ALLOW_SQL_QUERY": "true"}})
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM patients").fetchone() == (12,)


def test_bad_harness_arguments_are_clear():
    with pytest.raises(AlgorithmError, match="give at least one site"):
        run_local("reference.summary", "summary", sites={})
    with pytest.raises(AlgorithmError, match=r"give a \.csv, \.parquet, \.xlsx or \.sqlite file"):
        run_local("reference.summary", "summary_site", sites={1: "data.txt"})


def test_command_line_prints_the_result_as_json_and_errors_as_one_line(tmp_path):
    for org, n in ((1, 12), (2, 20)):
        site(n).to_csv(tmp_path / f"s{org}.csv", index=False)
    command = [sys.executable, "-m", "vantage_algorithms.harness", "reference.summary", "summary",
               "--site", f"1={tmp_path / 's1.csv'}", "--site", f"2={tmp_path / 's2.csv'}",
               "--kwargs", '{"columns": ["grade"]}']
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT / "algorithms")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["values"]["columns"]["grade"]["n"] == 32
    done = subprocess.run([*command, "--env", "2:VANTAGE_MIN_ROWS=50"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == ("error: organisation 2: refused by its disclosure policy: this site has 20 rows, "
                                   "fewer than its policy's minimum of 50 (VANTAGE_MIN_ROWS)")
