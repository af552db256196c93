"""The demo study: three analyses of GBSG2 across the three hospitals, next to the pooled fit.

Each analysis is one task for the researcher's own organisation: its central method
creates subtasks for the three sites through its node's proxy, combines their
aggregates and returns the answer. Nothing here sees a site's rows; only the pooled
reference (demo/reference.py) reads the bundled files, to show the answers agree.
"""

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from demo.console import Progress, say
from demo.network import DATABASE_LABEL, REPO_DIR, DemoError
from demo.reference import PooledReference
from vantage_client import Client, VantageError

IMAGES = ("summary", "kaplan_meier", "cox")
TASK_SECONDS = 1200
SUMMARY_COLUMNS = ["age", "tsize", "pnodes", "progrec", "estrec", "time"]
CATEGORICAL = ["horTh", "menostat", "tgrade"]
KM_TIMES = [365.0, 1095.0, 1825.0]
COX_COVARIATES = ["horTh", "age", "menostat", "tsize", "tgrade", "pnodes", "progrec", "estrec"]
COX_CATEGORIES = {"horTh": ["no", "yes"], "menostat": ["Pre", "Post"], "tgrade": ["I", "II", "III"]}


class DemoApi:
    """The researcher's client, and the one read the demo needs beyond it."""

    def __init__(self, client: Client):
        self.client = client

    def nodes(self, collaboration_id: int) -> list[dict]:
        return self.client.list("nodes/", collaboration=collaboration_id)


def connect(server: str, username: str, password: str) -> DemoApi:
    client = Client(server)
    try:
        client.login(username, password)
    except VantageError as exc:
        if exc.status is None:
            raise DemoError(f"the server at {server} does not answer; start it with ./vantage.sh up")
        raise DemoError(f"cannot log in to {server} as {username}: {exc}")
    return DemoApi(client)


def build_images(registry_port: int) -> dict[str, str]:
    """Build (or reuse) and push the study's algorithm images; name -> repository@digest.

    The build reads VANTAGE_STATE_DIR from the environment (./vantage.sh sets it) for the
    registry password and its wheel cache, which several demo networks may share.
    """
    env = dict(os.environ, VANTAGE_REGISTRY=f"127.0.0.1:{registry_port}")
    command = [sys.executable, str(REPO_DIR / "algorithms" / "build.py"), "--json", *IMAGES]
    with Progress("algorithm images: building and pushing (the first time takes a few minutes)") as progress:
        process = subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        errors = []
        for line in process.stderr:
            line = line.strip()
            if line:
                errors.append(line)
                # Docker's own build steps are too fine-grained for the demo's progress line.
                if ": Step " not in line:
                    progress.update(line.removeprefix("build: ")[:120])
        output = process.stdout.read()
        if process.wait() != 0:
            reason = errors[-1].removeprefix("build: ") if errors else "no output"
            raise DemoError(f"building the algorithm images failed: {reason}")
    try:
        return json.loads(output)
    except ValueError:
        raise DemoError(f"algorithms/build.py printed no image list: {output[:200]!r}")


@dataclass(frozen=True)
class Analysis:
    name: str       # also the algorithm (image) that answers it
    method: str
    kwargs: dict
    title: str
    show: Callable[[dict, PooledReference], None]


def analyses() -> list[Analysis]:
    return [
        Analysis("summary", "summary", {"columns": SUMMARY_COLUMNS + CATEGORICAL, "categorical": CATEGORICAL},
                 "summary statistics", print_summary),
        Analysis("kaplan_meier", "kaplan_meier", {"duration": "time", "event": "cens", "group": "horTh"},
                 "Kaplan–Meier by hormonal therapy, with the log-rank test", print_kaplan_meier),
        Analysis("cox", "cox", {"duration": "time", "event": "cens", "covariates": COX_COVARIATES,
                                "categories": COX_CATEGORIES, "ties": "efron", "model": "stratified",
                                # The table needs no baseline hazard: skip its extra rounds.
                                "baseline": False},
                 "Cox regression stratified by hospital (Efron ties)", print_cox),
    ]


def fingerprint(analysis: Analysis, algorithm: int, organization: int, data_files: list[Path]) -> str:
    """What a completed task's answer depends on: the same fingerprint, the same answer."""
    digest = hashlib.sha256(json.dumps([analysis.method, analysis.kwargs, algorithm, organization],
                                       sort_keys=True).encode())
    for path in data_files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(api: DemoApi, seed: dict, algorithms: dict[str, int], nodes: list, *, record_file: Path,
        rerun: bool = False) -> None:
    """The study; an analysis whose completed task still answers for the same algorithm,
    input and data is read back from the server instead of being run again."""
    collaboration = seed["collaboration"]["id"]
    home = next(o for o in seed["organizations"] if o["name"] == researcher_organization(seed))
    reference = PooledReference([node.name for node in nodes])
    data_files = [node.data_file for node in nodes]
    try:
        previous = {} if rerun else json.loads(record_file.read_text())
    except (OSError, ValueError):
        previous = {}
    record = {}
    print()
    say(f"study: GBSG2 breast cancer, {len(nodes)} hospitals, run from {home['name']}")
    for analysis in analyses():
        key = fingerprint(analysis, algorithms[analysis.name], home["id"], data_files)
        known = previous.get(analysis.name) or {}
        result = reused(api, known["task"], analysis.title) if known.get("key") == key else None
        if result is not None:
            task_id = known["task"]
        else:
            task_id, result = submit(api, collaboration, home["id"], algorithms[analysis.name], analysis)
        record[analysis.name] = {"key": key, "task": task_id}
        record_file.write_text(json.dumps({**previous, **record}, indent=2))
        analysis.show(result, reference)
    if any(previous.get(name) == entry for name, entry in record.items()):
        print("\n(Answers of earlier tasks were read back from the server: nothing they depend on has "
              "changed. ./vantage.sh up --rerun runs every analysis again.)")


def reused(api: DemoApi, task_id: int, title: str) -> dict | None:
    """The result of an earlier completed task of this analysis, or None to run it again."""
    try:
        task = api.client.tasks.get(task_id)
        if task["status"] != "completed":
            return None
        results = api.client.results(task_id)
    except VantageError:
        return None  # deleted, purged or unreadable: run it again
    if len(results) != 1:
        return None
    say(f"task: {title}: reusing completed task {task_id}")
    return results[0]


def researcher_organization(seed: dict) -> str:
    for user in seed["users"]:
        if user["username"] == "researcher":
            return user["organization"]
    raise DemoError("the demo summary has no researcher")


def submit(api: DemoApi, collaboration: int, organization: int, algorithm: int,
           analysis: Analysis) -> tuple[int, dict]:
    """Run one analysis as a task of the researcher's organisation; (task id, its result)."""
    client = api.client
    method, kwargs, title = analysis.method, analysis.kwargs, analysis.title
    with Progress(f"task: {title}") as progress:
        try:
            task = client.tasks.create(
                collaboration=collaboration, organizations=[organization], algorithm=algorithm, method=method,
                kwargs=kwargs, databases=[DATABASE_LABEL], name=f"demo: {title}",
            )
            progress.update(f"task {task['id']} created")
            seen = set()

            def report(event: dict) -> None:
                run = event.get("run")
                if run and (run.get("id"), run.get("status")) not in seen:
                    seen.add((run.get("id"), run.get("status")))
                    progress.update(f"task {task['id']}: {len(seen)} run updates, latest {run.get('status')}")

            done = client.tasks.wait(task["id"], timeout=TASK_SECONDS, progress=report)
            if done["status"] != "completed":
                runs = [client.get(f"runs/{r['id']}/") for r in client.list("runs/", task=task["id"])]
                logs = "; ".join(f"run {r['id']} {r['status']}: {last_log_line(r)}" for r in runs)
                raise DemoError(f"task {task['id']} ({title}) ended {done['status']}: {logs}")
            results = client.results(task["id"])
        except VantageError as exc:
            raise DemoError(f"{title}: {exc}")
    if len(results) != 1:
        raise DemoError(f"{title}: expected one result, got {len(results)}")
    return task["id"], results[0]


def last_log_line(run: dict) -> str:
    lines = [line for line in (run.get("log") or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no log"


# ------------------------------------------------------------------ printing

def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e6):
        return f"{int(value)}"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [header] + [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths))


def difference(federated: float, pooled: float) -> float:
    return abs(federated - pooled)


def print_summary(result: dict, reference: PooledReference) -> None:
    columns = result["values"]["columns"]
    rows, worst = [], 0.0
    for name in SUMMARY_COLUMNS:
        entry, pooled = columns[name], reference.summary(name)
        if entry.get("withheld") or entry.get("mean") is None:
            rows.append([name, entry.get("n"), "withheld", "", "", "", ""])
            continue
        worst = max(worst, difference(entry["mean"], pooled["mean"]),
                    difference(entry["variance"], pooled["variance"]))
        rows.append([name, entry["n"], entry["missing"], entry["mean"], pooled["mean"],
                     math.sqrt(entry["variance"]), math.sqrt(pooled["variance"])])
    table("Summary statistics (federated vs pooled)",
          ["column", "n", "missing", "mean", "pooled mean", "sd", "pooled sd"], rows)
    for name in CATEGORICAL:
        entry = columns[name]
        counts = ", ".join(f"{level}: {count if count is not None else 'suppressed'}"
                           for level, count in zip(entry["levels"], entry["counts"]))
        pooled = reference.data[name].value_counts().to_dict()
        agree = all(count is None or count == pooled.get(level) for level, count in zip(entry["levels"], entry["counts"]))
        print(f"  {name:<10} {counts}  ({'equal to' if agree else 'DIFFERENT from'} the pooled counts)")
    print(f"  largest difference from the pooled mean/variance: {worst:.1e}")


def survival_at(curve: dict, time: float) -> tuple[float, float, float]:
    """The step curve's value at `time`: the survival after the last interval ending by then."""
    value, lower, upper = 1.0, 1.0, 1.0
    for end, s, lo, hi in zip(curve["end"], curve["survival"], curve["ci_lower"], curve["ci_upper"]):
        if end is None or end > time:
            break
        value, lower, upper = s, lo, hi
    return value, lower, upper


def print_kaplan_meier(result: dict, reference: PooledReference) -> None:
    values = result["values"]
    cuts = values["grid"]["cut_points"]
    pooled = reference.kaplan_meier("time", "cens", "horTh", cuts, grouped=True)
    rows, worst = [], 0.0
    for level, curve in values["groups"].items():
        for time in KM_TIMES:
            s, lo, hi = survival_at(curve, time)
            ref = pooled["curves"][level]["at"](time)
            worst = max(worst, difference(s, ref))
            rows.append([f"horTh={level}", f"{time:.0f}", s, ref, f"{lo:.3f}–{hi:.3f}"])
    print(f"\n(the sites agreed on a time grid of {len(cuts)} cut points, "
          f"each interval with enough patients leaving at every site)")
    table("Kaplan–Meier recurrence-free survival by hormonal therapy (federated vs pooled on the same grid)",
          ["group", "day", "survival", "pooled", "95% CI"], rows)
    test = values.get("logrank")
    if test:
        worst = max(worst, difference(test["test_statistic"], pooled["logrank"]["statistic"]))
        print(f"  log-rank test: chi² = {fmt(test['test_statistic'])} on {test['degrees_of_freedom']} df "
              f"(pooled {fmt(pooled['logrank']['statistic'])}), p = {fmt(test['p_value'])}")
    print(f"  largest difference from the pooled fit: {worst:.1e}")


def print_cox(result: dict, reference: PooledReference) -> None:
    pooled = reference.cox_stratified("time", "cens", COX_COVARIATES, COX_CATEGORIES)
    rows, worst = [], 0.0
    for entry in result["coefficients"]:
        ref = pooled[entry["covariate"]]
        worst = max(worst, difference(entry["coef"], ref["coef"]), difference(entry["se"], ref["se"]))
        rows.append([entry["covariate"], entry["hazard_ratio"], f"{entry['hr_lower']:.3f}–{entry['hr_upper']:.3f}",
                     entry["p"], entry["coef"], ref["coef"]])
    table(f"Cox regression stratified by hospital, Efron ties ({result['n']} patients)",
          ["covariate", "HR", "95% CI", "p", "coef", "pooled coef"], rows)
    print(f"  largest difference from the pooled fit (lifelines, strata = hospital): {worst:.1e}")
