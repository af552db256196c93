"""The airlock (held results encrypted at rest), the keyed decision log, and the steward
page over real HTTP on loopback (its browser flow: tests/nodeagent/test_output_gate_live.py)."""

import json
import os
import re
import threading

import pytest
import requests
from django.core.management import call_command

from nodeagent import steward
from nodeagent.airlock import HELD, NOT_REVIEWED, RELEASED, REJECTED, Airlock, AirlockError
from nodeagent.config import parse
from nodeagent.decision_log import DecisionLog, LogError

PATIENT_ROWS = b"patient_id,birth_date,diagnosis\n4711,1961-02-03,C50.9\n4712,1958-11-30,C50.1\n"


def _entry(airlock: Airlock, tmp_path, name="srv-run7", output=PATIENT_ROWS, output_type="opaque",
           requester="alice"):
    out = tmp_path / f"{name}-output"
    out.write_bytes(output)
    log_file = tmp_path / f"{name}-log"
    log_file.write_text("4711 Jane Doe\n")
    airlock.put(name=name, meta={
        "run_id": int(name.rsplit("run", 1)[1]), "server_url": "http://127.0.0.1:1",
        "outcome": {"status": "completed", "exit_code": 0, "error_kind": "", "has_result": True},
        "verdict": {"action": "hold", "log_action": "hold", "output_type": output_type, "size": len(output),
                    "flags": ["an opaque (untyped) output"]},
        "node_log": "", "log_release": True, "logs_policy": "gate", "log_max_lines": 200,
        "task": {"id": 3, "image": "img", "digest": "sha256:" + "a" * 64, "signer": "reviewers.pub (0123456789abcdef...)",
                 "method": "m", "created_by": 5,
                 "created_by_username": requester, "init_organization": 1, "collaboration": 1,
                 "result_public_key": ""},
    }, files={"output": out, "log": log_file, "input": None})
    return name


# ---------------------------------------------------------------- decision log


def test_the_decision_log_chains_and_verifies(tmp_path):
    decisions = DecisionLog(tmp_path)
    for i in range(3):
        decisions.append(run_id=i, server="s", decision="released", actor="steward")
    assert decisions.verify().ok and decisions.verify().entries == 3
    assert oct(decisions.key_path.stat().st_mode & 0o777) == "0o600"
    entries = decisions.entries()
    assert entries[0]["prev"] == "0" * 64 and entries[1]["prev"] == entries[0]["mac"]


@pytest.mark.parametrize("tamper, problem", [
    (lambda lines: [lines[0], lines[1].replace('"released"', '"rejected"'), lines[2]], "line 2 was changed"),
    (lambda lines: [lines[0], lines[2]], "line 2 does not follow"),
    (lambda lines: [lines[1], lines[0], lines[2]], "line 1 does not follow"),
])
def test_a_changed_dropped_or_reordered_line_breaks_the_chain(tmp_path, tamper, problem):
    decisions = DecisionLog(tmp_path)
    for i in range(3):
        decisions.append(run_id=i, server="s", decision="released", actor="steward")
    lines = decisions.path.read_text().splitlines()
    decisions.path.write_text("\n".join(tamper(lines)) + "\n")
    assert problem in decisions.verify().problem


def test_a_rewritten_log_without_the_key_does_not_verify(tmp_path):
    decisions = DecisionLog(tmp_path)
    decisions.append(run_id=1, server="s", decision="released", actor="steward")
    forged = DecisionLog(tmp_path / "elsewhere")
    forged.append(run_id=1, server="s", decision="rejected", actor="steward")
    decisions.path.write_bytes(forged.path.read_bytes())
    assert "changed" in decisions.verify().problem


def test_a_key_readable_by_others_is_refused(tmp_path):
    decisions = DecisionLog(tmp_path)
    decisions.append(run_id=1, server="s", decision="released", actor="steward")
    os.chmod(decisions.key_path, 0o644)
    with pytest.raises(LogError, match="must be 0600"):
        DecisionLog(tmp_path).verify()


def _config(tmp_path, extra=""):
    path = tmp_path / "node.toml"
    path.write_text(f'task_folder = "{tmp_path / "tasks"}"\n[server]\nurl = "http://127.0.0.1:1"\napi_key = "k"\n'
                    + extra)
    return path


def test_run_node_verify_log_exits_zero_on_an_intact_log_and_one_on_a_changed_one(tmp_path, capsys):
    config_path = _config(tmp_path)
    decisions = DecisionLog(tmp_path / "tasks" / "state")
    decisions.append(run_id=1, server="s", decision="released", actor="steward")
    call_command("run_node", "--config", str(config_path), "--verify-log")
    assert "1 entries, chain and keys verify" in capsys.readouterr().out
    decisions.path.write_text(decisions.path.read_text().replace("released", "rejected"))
    with pytest.raises(SystemExit) as exit_info:
        call_command("run_node", "--config", str(config_path), "--verify-log")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 1 was changed" in err


# ---------------------------------------------------------------- airlock


def test_a_held_result_is_encrypted_at_rest_with_a_private_key(tmp_path):
    airlock = Airlock(tmp_path / "state")
    name = _entry(airlock, tmp_path)
    folder = airlock.folder(name)
    for path in folder.iterdir():
        assert b"4711" not in path.read_bytes(), path.name
    assert oct(airlock.key_path.stat().st_mode & 0o777) == "0o600"
    assert airlock.read(name, "output") == PATIENT_ROWS
    assert airlock.read(name, "log") == b"4711 Jane Doe\n"


def test_a_large_held_output_round_trips_in_chunks(tmp_path):
    airlock = Airlock(tmp_path / "state")
    data = os.urandom(3 * 1024 * 1024 + 17)
    name = _entry(airlock, tmp_path, output=data)
    target = tmp_path / "back"
    airlock.decrypt_to(name, "output", target)
    assert target.read_bytes() == data
    assert airlock.read(name, "output", 1000) == data[:1000]


@pytest.mark.parametrize("damage", ["flip", "cut", "swap"])
def test_changed_cut_or_swapped_ciphertext_does_not_open(tmp_path, damage):
    airlock = Airlock(tmp_path / "state")
    name = _entry(airlock, tmp_path, output=os.urandom(2 * 1024 * 1024 + 5))
    path = airlock.folder(name) / "output.enc"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[100] ^= 1
    elif damage == "cut":
        data = data[:12 + 4 + 1024 * 1024 + 16]  # the first chunk only: the last is missing
    else:
        other = _entry(airlock, tmp_path, name="srv-run8", output=os.urandom(2 * 1024 * 1024 + 5))
        data = bytearray((airlock.folder(other) / "output.enc").read_bytes())
    path.write_bytes(bytes(data))
    with pytest.raises(AirlockError):
        airlock.read(name, "output")


def test_a_decision_is_taken_once_and_logged(tmp_path):
    airlock = Airlock(tmp_path / "state")
    name = _entry(airlock, tmp_path)
    airlock.decide(name, decision=REJECTED, actor="steward", reason="patient rows")
    with pytest.raises(AirlockError, match="already rejected"):
        airlock.decide(name, decision=RELEASED, actor="steward")
    entry = airlock.decisions.entries()[-1]
    assert (entry["decision"], entry["reason"], entry["requester"]) == ("rejected", "patient rows", "alice")
    assert airlock.decisions.verify().ok


def test_suppression_is_only_for_count_tables(tmp_path):
    airlock = Airlock(tmp_path / "state")
    name = _entry(airlock, tmp_path)
    with pytest.raises(AirlockError, match="count tables"):
        airlock.decide(name, decision=RELEASED, actor="steward", suppress=True)
    assert airlock.get(name)["state"] == HELD


def test_hold_timeout_rejects_what_was_not_reviewed(tmp_path):
    airlock = Airlock(tmp_path / "state")
    old, fresh = _entry(airlock, tmp_path, name="srv-run1"), _entry(airlock, tmp_path, name="srv-run2")
    airlock.update(old, held_at=airlock.get(old)["held_at"] - 8 * 86400)
    assert airlock.expire(timeout=7 * 86400) == [old]
    assert airlock.get(old)["decision"] == {**airlock.get(old)["decision"], "actor": "hold_timeout",
                                            "reason": NOT_REVIEWED}
    assert airlock.get(fresh)["state"] == HELD


# ---------------------------------------------------------------- the steward page over HTTP

PASSWORD = "correct horse battery staple"


@pytest.fixture
def page(tmp_path):
    hashed = steward.hash_password(PASSWORD)
    config = parse({"task_folder": str(tmp_path / "tasks"), "server": {"url": "http://127.0.0.1:1", "api_key": "k"},
                    "steward": {"password_hash": hashed, "port": 1}}, source="node.toml", base_dir=tmp_path)
    airlock = Airlock(config.state_dir)
    name = _entry(airlock, tmp_path)
    server = steward.serve(config, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", airlock, name
    finally:
        server.shutdown()
        server.server_close()


def _login(url) -> tuple[requests.Session, str]:
    session = requests.Session()
    response = session.post(f"{url}/login", data={"password": PASSWORD})
    assert response.status_code == 200 and "Held results" in response.text
    return session, response.text


def _csrf(text: str) -> str:
    return re.search(r"name='csrf' value='([^']+)'", text).group(1)


def test_the_page_listens_on_loopback_only(page):
    url, _, _ = page
    assert url.startswith("http://127.0.0.1:")


def test_the_page_needs_a_login(page):
    url, _, name = page
    response = requests.get(f"{url}/runs/{name}", allow_redirects=False)
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert requests.post(f"{url}/login", data={"password": "wrong"}).status_code == 401


def test_repeated_wrong_passwords_lock_the_login_for_a_while(page):
    url, _, _ = page
    for _ in range(steward.LOCKOUT_FAILURES):
        requests.post(f"{url}/login", data={"password": "wrong"})
    assert requests.post(f"{url}/login", data={"password": PASSWORD}).status_code == 401


def test_a_request_for_another_host_name_is_refused(page):
    url, _, _ = page
    assert requests.get(f"{url}/login", headers={"Host": "evil.example:80"}).status_code == 403
    session, _ = _login(url)
    response = session.post(f"{url}/logout", headers={"Origin": "http://evil.example"})
    assert response.status_code == 403


def test_a_decision_without_the_csrf_token_is_refused(page):
    url, airlock, name = page
    session, _ = _login(url)
    response = session.post(f"{url}/runs/{name}/decide", data={"decision": "release"})
    assert response.status_code == 403
    assert airlock.get(name)["state"] == HELD


def test_a_rejection_needs_a_reason(page):
    url, airlock, name = page
    session, text = _login(url)
    response = session.post(f"{url}/runs/{name}/decide", data={"decision": "reject", "reason": " ",
                                                                 "csrf": _csrf(text)})
    assert response.status_code == 400 and "needs a reason" in response.text
    assert airlock.get(name)["state"] == HELD


def test_the_page_shows_a_held_result_escaped_with_its_flags_and_requester(page, tmp_path):
    url, airlock, _ = page
    script = _entry(airlock, tmp_path, name="srv-run9", output=b"<script>alert(1)</script>")
    session, _ = _login(url)
    text = session.get(f"{url}/runs/{script}").text
    assert "<script>alert" not in text and "&lt;script&gt;" in text
    assert "an opaque (untyped) output" in text and "alice" in text
    assert "reviewers.pub (0123456789abcdef...)" in text  # who signed the image that made it


def test_a_missing_entry_is_not_found(page):
    url, _, _ = page
    session, _ = _login(url)
    assert session.get(f"{url}/runs/srv-run404").status_code == 404
    assert session.get(f"{url}/runs/..%2F..%2Fetc").status_code == 404


def test_a_release_is_sealed_for_the_tasks_organisation_and_suppressed_when_asked(tmp_path):
    from vantage_client import crypto as envelope

    key = envelope.generate_private_key(2048)
    airlock = Airlock(tmp_path / "state")
    table = {"type": "count_table", "dimensions": ["sex"], "levels": [["f", "m", "x"]], "counts": [2, 40, 30],
             "total": 72, "min_cell": 1}
    name = _entry(airlock, tmp_path, output=json.dumps(table).encode(), output_type="count_table")
    airlock.update(name, task={**airlock.get(name)["task"], "result_public_key": envelope.public_key_pem(key)})
    meta = airlock.decide(name, decision=RELEASED, actor="steward", suppress=True)
    workdir = tmp_path / "work"
    workdir.mkdir()
    sealed = airlock._released_output(name, meta, workdir, min_cell=5)
    assert sealed.name == "output.sealed"
    released = json.loads(envelope.decrypt(sealed.read_bytes(), key))
    # Two hidden cells: the total gives only their sum (32), not either of them.
    assert released["counts"] == [None, 40, None] and released["total"] == 72
    assert released["suppressed_cells"] == 2
