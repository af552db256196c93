"""Between a run's end and its upload: the output gate's verdict applied to one run.

RunJob calls `output_gate` when its container has ended, before the outcome is fixed on
disk, and `report_held` instead of the finish request for a run the gate held.
"""

from __future__ import annotations

import logging
import os

from nodeagent import gate
from nodeagent.airlock import Airlock
from nodeagent.workspace import Outcome

log = logging.getLogger(__name__)


def _node_lines(outcome: Outcome) -> str:
    if not outcome.log:
        return ""
    text = outcome.log if outcome.log.startswith("[node]") else f"[node] {outcome.log}"
    return text if text.endswith("\n") else text + "\n"


def output_gate(job, outcome: Outcome, container_log: str) -> Outcome:
    """The outcome that may leave: released as it is, refused (no result, and the log as
    the policy says), or held in the airlock with everything the steward needs."""
    config = job.ctx.config
    policy = config.output
    verdict = gate.decide(status=outcome.status, output=job.folder.output if outcome.has_result else None,
                          container_log=container_log, policy=policy,
                          thresholds=gate.Thresholds.from_env(config.algorithm_env))
    node_log = _node_lines(outcome)
    airlock = Airlock(config.state_dir)
    task = job._task()
    if verdict.holds or verdict.action != gate.RELEASE or verdict.flags:
        airlock.decisions.append(
            run_id=job.run_id, server=config.server.url, decision=f"gate: {verdict.action}", actor="gate",
            requester=_username(task), output_type=verdict.output_type, size=verdict.size, flags=verdict.flags,
            log=verdict.log_action, image=task.get("image"),
        )
    if verdict.holds:
        log_file = job.folder.path / "log.held"
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(container_log)
        airlock.put(name=Airlock.name(job.ctx.server_key, job.run_id), meta={
            "run_id": job.run_id, "server_url": config.server.url,
            "outcome": {"status": outcome.status, "exit_code": outcome.exit_code, "error_kind": outcome.error_kind,
                        "has_result": outcome.has_result},
            "verdict": {"action": verdict.action, "log_action": verdict.log_action,
                        "output_type": verdict.output_type, "size": verdict.size, "flags": verdict.flags},
            "node_log": node_log,
            # Released with the result unless the policy keeps logs in ("never", "on_failure").
            "log_release": verdict.log_action in (gate.RELEASE, gate.HOLD),
            "logs_policy": policy.logs, "log_max_lines": policy.log_max_lines,
            "task": {
                "id": _id(job.state.run.get("task")), "image": task.get("image"),
                "digest": job.state.run.get("executed_digest") or task.get("digest"),
                "signer": job.state.run.get("signer") or "",
                "method": task.get("method"), "created_by": _id(task.get("created_by")),
                "created_by_username": _username(task), "init_organization": _id(task.get("init_organization")),
                "collaboration": _id(task.get("collaboration")),
                "result_public_key": job.state.run.get("result_public_key") or "",
            },
        }, files={"output": job.folder.output if outcome.has_result else None, "log": log_file,
                  "input": job.folder.input})
        log_file.unlink(missing_ok=True)
        outcome.held = {"output_type": verdict.output_type, "size": verdict.size, "flags": verdict.flags}
        outcome.log = node_log
        return outcome
    if verdict.action == gate.REFUSE:
        for path in (job.folder.output, job.folder.path / "output.sealed"):
            path.unlink(missing_ok=True)
        outcome = Outcome("failed", outcome.exit_code, "withheld", node_log, has_result=False)
        node_log += f"[node] this node's output gate refused the result: {verdict.summary()}\n"
    shown = (gate.bounded_log(container_log, policy.log_max_lines) if verdict.log_action == gate.RELEASE
             else gate.withheld_log_note(container_log, policy.logs))
    outcome.log = shown + node_log
    return outcome


def report_held(job, outcome: Outcome) -> None:
    """Tell the server the run awaits release; raises as ServerClient does."""
    job.ctx.client.hold(job.run_id, **outcome.held, **job.ran())
    log.info("run %s: held for the steward (%s)", job.run_id, "; ".join(outcome.held["flags"]) or "no flags")


def _id(value) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _username(task: dict) -> str | None:
    created_by = task.get("created_by")
    if isinstance(created_by, dict) and isinstance(created_by.get("username"), str):
        return created_by["username"]
    name = task.get("created_by_username")
    return name if isinstance(name, str) else None
