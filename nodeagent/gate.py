"""The output gate: what a run may send to the server, decided by this node alone.

It runs in the agent process after the container exits and before anything of the run
(result or log) is uploaded. The container's word counts for nothing: a typed output
(the toolkit's `count_table`, `aggregate`, `model`, `intermediate`, see
algorithms/vantage_algorithms/outputs.py) is re-checked against this node's own
thresholds (its `algorithm_env` disclosure settings, with the toolkit's safe defaults)
and the `[output]` caps of node.toml; anything else is opaque.

    typed, passes every check        → release (an intermediate: as [output] intermediates says)
    typed, fails a check             → [output] failed_checks: hold | refuse
    opaque (untyped, or too large    → [output] opaque: release | hold | refuse
            to parse within bounds)
    the container's log              → [output] logs: gate (opaque) | release | on_failure | never

A held result goes to the airlock (nodeagent/airlock.py) for the steward.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

from nodeagent.config import OutputPolicy

RELEASE, HOLD, REFUSE, WITHHOLD = "release", "hold", "refuse", "withhold"
OPAQUE = "opaque"
TYPED = ("count_table", "aggregate", "model", "intermediate")
FLAG_LIMIT = 20  # flags kept per verdict: enough to see what is wrong, bounded for the server
# A gradient is a vector, an information matrix a matrix; a model with a baseline over time
# intervals (the common-baseline Cox) sends one matrix per interval. Each axis must still
# be shorter than the units behind it (checked beside this), so no axis runs over people.
MAX_INTERMEDIATE_AXES = 3

# The toolkit's settings and safe defaults (vantage_algorithms.policy.SETTINGS, which the
# node cannot import: algorithms/ is not installed with the agent). A test keeps them equal.
THRESHOLD_SETTINGS = (
    ("VANTAGE_MIN_ROWS", "min_rows", 10),
    ("VANTAGE_MIN_CELL", "min_cell", 5),
    ("VANTAGE_MIN_EVENTS", "min_events", 10),
)


@dataclass(frozen=True)
class Thresholds:
    min_rows: int = 10
    min_cell: int = 5
    min_events: int = 10

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Thresholds:
        """The node's algorithm_env values; a value that is not a whole number ≥ 1 keeps the
        safe default (the container refuses to run with it anyway)."""
        values = {}
        for name, field_name, _default in THRESHOLD_SETTINGS:
            raw = str(env.get(name, "")).strip()
            if raw.isdigit() and int(raw) >= 1:
                values[field_name] = int(raw)
        return cls(**values)


@dataclass
class Verdict:
    """What the gate decided for one run."""

    action: str  # release | hold | refuse (the result; release also when there is none)
    log_action: str  # release | hold | withhold (the container's log)
    output_type: str  # one of TYPED, "opaque", or "none"
    size: int
    flags: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return self.action == HOLD or self.log_action == HOLD

    def summary(self) -> str:
        what = f"{self.output_type} output of {self.size} bytes"
        return f"{what}: {'; '.join(self.flags)}" if self.flags else what


# ---------------------------------------------------------------- reading, bounded


def read_typed(path: Path, max_bytes: int) -> tuple[object | None, str | None]:
    """The parsed output if it is at most `max_bytes` (the largest typed size cap, a few MiB:
    parsing takes several times that in memory, and the agent must stay small whatever its
    runs write), else (None, why). A larger output is never parsed here: it is opaque."""
    size = path.stat().st_size
    if size > max_bytes:
        return None, f"{size} bytes, more than any typed output may be ({max_bytes})"
    try:
        with open(path, "rb") as fh:
            return json.load(fh), None
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON: {exc}"


# ---------------------------------------------------------------- checks


class _Checker:
    def __init__(self, policy: OutputPolicy, thresholds: Thresholds):
        self.policy, self.t = policy, thresholds
        self.flags: list[str] = []

    def flag(self, where: str, problem: str) -> None:
        if len(self.flags) < FLAG_LIMIT:
            self.flags.append(f"{where}: {problem}" if where else problem)

    def typed(self, value: dict, where: str) -> None:
        kind = value.get("type")
        check = {"count_table": self.count_table, "aggregate": self.aggregate, "model": self.model,
                 "intermediate": self.intermediate}.get(kind)
        if check is None:
            self.flag(where, f"unknown output type {str(kind)[:40]!r}")
            return
        check(value, where or kind)

    def units(self, value: dict, where: str, what: str = "n") -> int | None:
        n = value.get(what)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            self.flag(where, f"{what} is missing or not a whole number")
            return None
        return n

    def count_table(self, value: dict, where: str) -> None:
        levels = value.get("levels")
        if not isinstance(levels, list) or not all(isinstance(lv, list) for lv in levels) or not levels:
            self.flag(where, "a count table needs its levels")
            return
        shape = tuple(len(lv) for lv in levels)
        cells = math.prod(shape)
        if cells > self.policy.max_table_cells:
            self.flag(where, f"{cells} cells, more than this node's max_table_cells {self.policy.max_table_cells}")
            return
        counts = _cells(value.get("counts"), shape)
        if counts is None:
            self.flag(where, f"its counts do not have the shape of its levels {list(shape)}")
            return
        if any(c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 0) for c in counts.values()):
            self.flag(where, "a count is not a whole number ≥ 0")
            return
        small = sorted({c for c in counts.values() if c is not None and 0 < c < self.t.min_cell})
        if small:
            self.flag(where, f"{sum(1 for c in counts.values() if c in small)} cell(s) with counts "
                             f"{', '.join(map(str, small[:5]))} below this node's min_cell {self.t.min_cell}")
        if _lone_hidden_lines(counts, shape):
            self.flag(where, "a row or column hides exactly one cell: its margin gives it back")
        for i, lv in enumerate(levels):
            for label in lv:
                self.scalar(label, f"{where}.levels[{i}]")

    def aggregate(self, value: dict, where: str) -> None:
        n = self.units(value, where)
        if n is not None and n < self.t.min_rows:
            self.flag(where, f"an aggregate over {n} units, fewer than this node's min_rows {self.t.min_rows}")
        self.walk(value.get("values"), f"{where}.values", n)

    def model(self, value: dict, where: str) -> None:
        n = self.units(value, where)
        df = self.units(value, where, "residual_df")
        if n is not None and n < self.t.min_rows:
            self.flag(where, f"a model fitted on {n} units, fewer than this node's min_rows {self.t.min_rows}")
        if df is not None and df < self.policy.min_residual_df:
            self.flag(where, f"{df} residual degrees of freedom, fewer than this node's min_residual_df "
                             f"{self.policy.min_residual_df}")
        for key, item in value.items():
            if key not in ("type", "n", "residual_df"):
                self.walk(item, f"{where}.{key}", n)

    def intermediate(self, value: dict, where: str) -> None:
        n = self.units(value, where)
        if n is not None and n < self.t.min_rows:
            self.flag(where, f"an intermediate over {n} units, fewer than this node's min_rows {self.t.min_rows}")
        arrays, shapes = value.get("arrays"), value.get("shapes")
        if not isinstance(arrays, dict) or not isinstance(shapes, dict) or set(arrays) != set(shapes):
            self.flag(where, "an intermediate names the shape of each of its arrays")
            return
        elements = 0
        for name, array in arrays.items():
            shape = _shape(array)
            declared = shapes[name]
            if shape is None or shape != tuple(declared if isinstance(declared, list) else ()):
                self.flag(f"{where}.{name}", f"its values do not have its declared shape {declared!r}"[:200])
                continue
            if len(shape) > MAX_INTERMEDIATE_AXES:
                self.flag(f"{where}.{name}", f"{len(shape)} axes: an intermediate is a vector, a matrix "
                                             "or a stack of matrices")
            if n is not None and any(axis >= n for axis in shape):
                self.flag(f"{where}.{name}", f"shape {list(shape)} has an axis as long as its {n} units: "
                                             "that could be one value per person")
            elements += math.prod(shape)
        if elements > self.policy.max_intermediate_elements:
            self.flag(where, f"{elements} numbers, more than this node's max_intermediate_elements "
                             f"{self.policy.max_intermediate_elements}")
        self.walk(value.get("scalars"), f"{where}.scalars", n)

    def walk(self, value, where: str, n: int | None) -> None:
        """The free-form part of a typed output: nested typed outputs are checked as such,
        strings are short, and no list holds as many values as there are units."""
        if isinstance(value, dict):
            if "type" in value:
                self.typed(value, where)
                return
            for key, item in value.items():
                self.scalar(key, where)
                self.walk(item, f"{where}.{key}", n)
        elif isinstance(value, list):
            if n is not None and n > 0 and len(value) >= n:
                self.flag(where, f"a list of {len(value)} values over {n} units: that could be one per person")
            for i, item in enumerate(value[:10_000]):
                self.walk(item, f"{where}[{i}]", n)
        else:
            self.scalar(value, where)

    def scalar(self, value, where: str) -> None:
        if isinstance(value, str) and len(value) > self.policy.max_string:
            self.flag(where, f"a text of {len(value)} characters, more than this node's max_string "
                             f"{self.policy.max_string}")


def _shape(array) -> tuple[int, ...] | None:
    """The shape of a rectangular nested list of numbers (or None); () for a number."""
    if isinstance(array, bool):
        return None
    if isinstance(array, (int, float)) or array is None:
        return ()
    if not isinstance(array, list):
        return None
    inner = [_shape(item) for item in array]
    if any(s is None for s in inner) or len(set(inner)) > 1:
        return None
    return (len(array), *(inner[0] if inner else ()))


def _cells(counts, shape: tuple[int, ...]) -> dict[tuple, object] | None:
    """{index: count} of a nested list of the given shape, or None when it has another."""
    found = {}

    def walk(value, index: tuple):
        depth = len(index)
        if depth == len(shape):
            if isinstance(value, list):
                return False
            found[index] = value
            return True
        if not isinstance(value, list) or len(value) != shape[depth]:
            return False
        return all(walk(item, index + (i,)) for i, item in enumerate(value))

    return found if walk(counts, ()) else None


def _lines(shape: tuple[int, ...]):
    """Every line of the table: the cells that differ in one index only."""
    for axis, length in enumerate(shape):
        if length < 2:
            continue
        others = [range(s) for i, s in enumerate(shape) if i != axis]
        for rest in product(*others):
            yield [rest[:axis] + (k,) + rest[axis:] for k in range(length)]


def _lone_hidden_lines(counts: dict[tuple, object], shape: tuple[int, ...]) -> bool:
    return any(sum(1 for cell in line if counts[cell] is None) == 1 for line in _lines(shape))


def suppress(output: dict, min_cell: int) -> tuple[dict, int]:
    """The output with every count table's small cells hidden (null) and, line by line,
    as many more as it takes for no row or column to hide exactly one cell (its margin
    would give it back); totals that would give a hidden cell back go too. Returns the
    new output and the number of cells hidden. For the steward's "release with
    suppression"; the toolkit's CountTable.suppressed does the same in the container."""
    hidden_total = 0

    def table(value: dict) -> dict:
        nonlocal hidden_total
        shape = tuple(len(lv) for lv in value["levels"])
        counts = _cells(value["counts"], shape)
        hidden = {cell for cell, c in counts.items() if c is None or 0 < c < min_cell}
        changed = True
        while changed:
            changed = False
            for line in _lines(shape):
                if sum(1 for cell in line if cell in hidden) != 1:
                    continue
                visible = [cell for cell in line if cell not in hidden]
                pool = [cell for cell in visible if counts[cell]] or visible
                hidden.add(min(pool, key=lambda cell: counts[cell] or 0))
                changed = True
        hidden_total += sum(1 for cell in hidden if counts[cell] is not None)

        def build(index: tuple):
            if len(index) == len(shape):
                return None if index in hidden else counts[index]
            return [build(index + (i,)) for i in range(shape[len(index)])]

        result = {**value, "counts": build(()), "min_cell": max(min_cell, int(value.get("min_cell") or 0)),
                  "suppressed_cells": len(hidden)}
        if hidden and (len(hidden) < 2 or 1 in shape):
            # The total minus the visible cells is the sum of the hidden ones: with one
            # hidden cell, or a dimension of one level (no line to hide a second in),
            # that gives a hidden cell back.
            result["total"] = None
        return result

    def walk(value):
        if isinstance(value, dict):
            if value.get("type") == "count_table" and _cells(value.get("counts"),
                                                              tuple(len(lv) for lv in value.get("levels") or [])):
                return table(value)
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(output), hidden_total


# ---------------------------------------------------------------- the decision


def examine(path: Path | None, policy: OutputPolicy, thresholds: Thresholds) -> tuple[str, int, list[str]]:
    """(output type, size, flags) of a run's output file; ("none", 0, []) without one."""
    if path is None or not path.exists():
        return "none", 0, []
    size = path.stat().st_size
    value, why = read_typed(path, max(policy.max_sizes.values()))
    if value is None:
        return OPAQUE, size, [f"opaque: {why}"] if why and not why.startswith("not JSON") else []
    if not isinstance(value, dict) or value.get("type") not in TYPED:
        return OPAQUE, size, []
    kind = value["type"]
    checker = _Checker(policy, thresholds)
    if size > policy.max_sizes[kind]:
        checker.flag("", f"{size} bytes, more than this node's cap for a {kind} ({policy.max_sizes[kind]})")
    try:
        checker.typed(value, "")
    except RecursionError:
        checker.flag("", "nested too deeply to check")
    return kind, size, checker.flags


def decide(*, status: str, output: Path | None, container_log: str, policy: OutputPolicy,
           thresholds: Thresholds) -> Verdict:
    """The gate's verdict for a run that ended with `status` (its output only if completed)."""
    kind, size, flags = examine(output if status == "completed" else None, policy, thresholds)
    if kind == "none":
        action = RELEASE
    elif kind == OPAQUE:
        action = {"release": RELEASE, "hold": HOLD, "refuse": REFUSE}[policy.opaque]
        if action != RELEASE:
            flags = [*flags, f"an opaque (untyped) output: this node's [output] opaque = \"{policy.opaque}\""]
    elif flags:
        action = HOLD if policy.failed_checks == "hold" else REFUSE
    elif kind == "intermediate" and policy.intermediates == "hold":
        action = HOLD
        flags = ["an intermediate: this node's [output] intermediates = \"hold\""]
    else:
        action = RELEASE
    log_action = _log_action(status, container_log, policy)
    if log_action == HOLD:
        lines = container_log.count("\n") + (0 if container_log.endswith("\n") else 1)
        flags = [*flags, f"the algorithm's log ({lines} lines): this node's [output] logs = \"gate\" and "
                         f"opaque = \"{policy.opaque}\""]
    return Verdict(action, log_action, kind, size, flags[:FLAG_LIMIT])


def _log_action(status: str, container_log: str, policy: OutputPolicy) -> str:
    if not container_log.strip():
        return RELEASE  # nothing of the algorithm's to send
    if policy.logs == "release":
        return RELEASE
    if policy.logs == "never":
        return WITHHOLD
    if policy.logs == "on_failure":
        return WITHHOLD if status == "completed" else RELEASE
    return {"release": RELEASE, "hold": HOLD, "refuse": WITHHOLD}[policy.opaque]


def bounded_log(text: str, max_lines: int) -> str:
    """The last `max_lines` lines of a log, with a note of how many were left at the node."""
    if not text:
        return ""
    lines = text.rstrip("\n").split("\n")
    if len(lines) <= max_lines:
        return text if text.endswith("\n") else text + "\n"
    kept = lines[len(lines) - max_lines:] if max_lines else []
    note = f"[node] {len(lines) - max_lines} earlier line(s) of the algorithm's log stay at this node " \
           f"([output] log_max_lines = {max_lines})"
    return "\n".join([note, *kept]) + "\n"


def withheld_log_note(text: str, logs_policy: str) -> str:
    if not text.strip():
        return ""
    lines = text.rstrip("\n").count("\n") + 1
    return f"[node] the algorithm's log ({lines} lines) stays at this node ([output] logs = \"{logs_policy}\")\n"
