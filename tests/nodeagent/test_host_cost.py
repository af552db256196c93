"""What a hostile container can cost the host, with real agents, containers and server:
the node survives each attempt with its memory and disk bounded."""

import shutil
from pathlib import Path

import pytest

from nodeagent import job

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]

MIB = 1024 * 1024


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def _final(site, task):
    run = site.wait_status(task["runs"][0]["id"], {"completed", "failed", "crashed", "rejected", "timed_out"},
                           timeout=120)
    return run


def test_hog_container_cannot_grow_the_agent_fill_the_disk_or_run_another_image(site, hog_image):
    node = site.node(0, limits='scratch = "32m"\nmax_output = "8m"\nmax_concurrent_runs = 1')
    node.wait_connected()
    disk_before = shutil.disk_usage(node.task_folder).used
    flood = _final(site, site.task(hog_image, "proxy_flood", kwargs={"mib": 400}))
    assert flood["status"] == "completed", f"{flood['log']}\n{site.agent_logs()}"
    seen = site.researcher.result(flood["id"])
    assert seen["negative"]["status"] == "400" and seen["huge"]["status"] == "413", seen
    assert seen["missing"]["status"] == "411", seen
    assert seen["refused_connections"] == 16 - 4, seen  # the proxy serves 4 connections at once
    # 800 MiB were offered; the proxy read none of it.
    peak = _peak_rss_mib(node.process.pid)
    assert peak < 250, f"the agent peaked at {peak:.0f} MiB"

    scratch = _final(site, site.task(hog_image, "fill_scratch"))
    assert scratch["status"] == "completed", f"{scratch['log']}\n{site.agent_logs()}"
    seen = site.researcher.result(scratch["id"])
    assert seen["error"] == "No space left on device" and seen["written_mib"] <= 32, seen
    assert seen["exec"] == "Permission denied", seen  # the scratch folder is noexec

    huge = _final(site, site.task(hog_image, "huge_output", kwargs={"mib": 64}))
    assert (huge["status"], huge["error_kind"]) == ("crashed", "algorithm"), huge
    assert "tried to write a file larger than 8388608 bytes (limits.max_output)" in huge["log"], huge["log"]
    # What the runs left on the host's disk while they ran is gone, and was never more than the output bound.
    assert shutil.disk_usage(node.task_folder).used - disk_before < 64 * MIB

    other = _final(site, site.task(hog_image, "other_image", kwargs={"organization": site.organizations[0]}))
    assert other["status"] == "completed", f"{other['log']}\n{site.agent_logs()}"
    seen = site.researcher.result(other["id"])
    assert seen["image"]["status"] == 400 and "its own image only" in seen["image"]["body"], seen
    assert seen["collaboration"]["status"] == 400 and "its own collaboration only" in seen["collaboration"]["body"]
    assert site.researcher.api("GET", f"tasks/?parent={other['task']}").json()["count"] == 0
    print(f"agent peak RSS after the proxy flood: {peak:.0f} MiB")


def test_checking_an_output_built_to_blow_up_the_parser_stays_in_the_memory_bound(tmp_path, monkeypatch):
    """[[],[],...] takes ~27 times its size in json.load: the checker child is capped (RLIMIT_AS)."""
    monkeypatch.setattr(job, "JSON_CHECK_MEMORY", 256 * MIB)
    bomb = tmp_path / "output"
    bomb.write_bytes(b"[" + b"[]," * (16 * MIB // 3) + b"[]]")
    assert "takes more than 256 MiB to parse" in job.json_problem(bomb, bomb.stat().st_size)
    plain = tmp_path / "plain"
    plain.write_bytes(b"[" + b"1.5," * (16 * MIB // 4) + b"1]")
    assert job.json_problem(plain, plain.stat().st_size) is None
