"""`run_node --check` against a live server, the Docker engine and the registry."""

import sqlite3
import subprocess

import pytest

from tests.nodeagent.live import PYTHON, REPO_ROOT, NodeProcess

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]


def check(node: NodeProcess) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "manage.py", "run_node", "--config", str(node.config_path), "--check"],
                          cwd=REPO_ROOT, env=node.env, capture_output=True, text=True, timeout=120)


def make_node(tmp_path, server, registry, world, **config) -> NodeProcess:
    data = tmp_path / "patients.csv"
    data.write_text("value\n1\n")
    data.chmod(0o644)
    return NodeProcess(tmp_path, "node", server_url=server.url, api_key=world["nodes"][0]["api_key"],
                       registry=registry, databases={"default": data}, **config)


def test_check_passes_when_key_engine_registry_and_databases_are_right(tmp_path, api_server, registry,
                                                                        docker_client):
    world = api_server.world()
    node = make_node(tmp_path, api_server, registry, world, policy="require_digest = true\nallowed_images = []",
                     top=f'standby = [{{image = "{registry.host}/vantage/alg-cox:1", databases = ["default"]}}]')
    registry_db = tmp_path / "registry.sqlite3"
    with sqlite3.connect(registry_db) as connection:
        connection.execute("CREATE TABLE patients (id integer)")
    registry_db.chmod(0o644)
    with open(node.config_path, "a") as fh:
        fh.write(f'[databases.registry]\ntype = "sql"\nuri = "sqlite:///{registry_db}"\n')
    done = check(node)
    assert done.returncode == 0, done.stdout + done.stderr
    node_id = world["nodes"][0]["id"]
    assert f"accepted the API key: node {node_id}" in done.stdout
    assert "Docker engine" in done.stdout
    assert f"{registry.host} accepted the credentials of {registry.username}" in done.stdout
    assert "database default" in done.stdout
    assert f"SQLite file {registry_db} opens (1 tables)" in done.stdout
    assert "forwarder_image vantage/algorithm-base:bookworm-1 is present or pullable" in done.stdout
    assert "FAIL" not in done.stdout
    # A standby named in node.toml that its own policy refuses is a warning, not a failure.
    assert any(line.split()[:2] == ["warn", "standby"] and f"{registry.host}/vantage/alg-cox:1 will get no standby "
               "worker" in line and "is not pinned to a digest" in line for line in done.stdout.splitlines()), done.stdout


def test_check_names_each_problem_and_exits_1(tmp_path, api_server, registry, docker_client):
    world = api_server.world()
    wrong = registry.__class__(registry.host, registry.username, "wrong", tmp_path / "wrong-password")
    wrong.password_file.write_text("not-the-password\n")
    node = make_node(tmp_path, api_server, wrong, world,
                     top=f'forwarder_image = "{registry.host}/vantage-test/no-such-forwarder:1"')
    node.config_path.write_text(
        node.config_path.read_text().replace(world["nodes"][0]["api_key"], "vnk_000000000000_wrong")
    )
    (tmp_path / "patients.csv").unlink()
    done = check(node)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split()[:2] == ["FAIL", "server"] and "refused the API key" in line for line in lines)
    assert any(line.split()[:2] == ["FAIL", "registry"] and registry.host in line for line in lines)
    assert any(line.split()[:3] == ["FAIL", "database", "default"] and "does not exist" in line for line in lines)
    assert any(line.split()[:2] == ["FAIL", "forwarder"] and "cannot be pulled" in line for line in lines)
    assert lines[-1].startswith("4 problem(s)")
