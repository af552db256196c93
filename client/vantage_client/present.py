"""Reading typed results: as tables (the `vantage` command line) and as plots (matplotlib,
optional: `pip install 'vantage-client[plot]'`), and typing catalogue arguments.

The shapes are the reference algorithms' outputs (Kaplan–Meier curves, Cox and logistic
models, count tables, summaries); anything else is shown as JSON. A survival result
fitted on grouped times says so in a note, as the portal does.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import VantageError

CURVE = ("start", "end", "at_risk", "events", "censored", "survival", "ci_lower", "ci_upper")


def grid_note(grid) -> str:
    if not isinstance(grid, dict) or grid.get("grid") != "guarded":
        return ""
    return (f"times grouped into {len(grid.get('cut_points') or []) + 1} intervals by the sites' "
            "disclosure rules")


def _curves(values: dict) -> dict:
    groups = values.get("groups") if isinstance(values.get("groups"), dict) else None
    return groups or {"all": values["overall"]}


def _is_survival(result) -> bool:
    return (isinstance(result, dict) and result.get("type") == "aggregate" and isinstance(result.get("values"), dict)
            and isinstance(result["values"].get("overall"), dict) and "survival" in result["values"]["overall"])


def result_tables(result: Any) -> list[tuple[str, list[str], list[list], str]]:
    """(title, header, rows, note) for each table of a result."""
    if _is_survival(result):
        values = result["values"]
        rows = [[label, *(curve[k][i] for k in CURVE)]
                for label, curve in _curves(values).items() for i in range(len(curve["start"]))]
        tables = [("Kaplan–Meier", ["group", *CURVE], rows, grid_note(values.get("grid")))]
        if isinstance(values.get("logrank"), dict):
            tables.append(("log-rank test", ["statistic", "value"],
                           [[k, v] for k, v in values["logrank"].items() if not isinstance(v, (list, dict))], ""))
        return tables
    if isinstance(result, dict) and result.get("type") == "model":
        coefficients = result.get("coefficients")
        if isinstance(coefficients, list) and coefficients and isinstance(coefficients[0], dict):
            header = list(coefficients[0])
            rows = [[c.get(k) for k in header] for c in coefficients]
            names = [c.get("covariate") for c in coefficients]
        elif isinstance(result.get("terms"), list):
            names = result["terms"]
            header = ["term", *(k for k in ("coefficients", "standard_errors", "p_values", "ci_lower", "ci_upper",
                                            "odds_ratios") if isinstance(result.get(k), list))]
            rows = [[n, *(result[k][i] for k in header[1:])] for i, n in enumerate(names)]
        else:
            return [("", ["field", "value"], [[k, v] for k, v in result.items()], "")]
        facts = ", ".join(f"{k} {result[k]}" for k in ("model", "n", "events", "loglik", "iterations")
                          if k in result and not isinstance(result[k], (list, dict)))
        tables = [(f"model ({facts})", header, rows,
                   grid_note(result.get("grid")) if result.get("baseline_cumulative_hazard") else "")]
        covariance = result.get("covariance")
        if isinstance(covariance, list) and len(covariance) == len(names):
            tables.append(("covariance", ["", *map(str, names)], [[n, *row] for n, row in zip(names, covariance)], ""))
        return tables
    if isinstance(result, dict) and result.get("type") == "count_table":
        dims, levels, counts = result.get("dimensions"), result.get("levels"), result.get("counts")
        suppressed = f"< {result.get('min_cell')}"
        if isinstance(dims, list) and len(dims) == 1:
            return [("counts", [dims[0], "count"],
                     [[lv, suppressed if c is None else c] for lv, c in zip(levels[0], counts)],
                     f"total {result.get('total')}")]
        if isinstance(dims, list) and len(dims) == 2:
            return [("counts", [f"{dims[0]} \\ {dims[1]}", *levels[1]],
                     [[lv, *(suppressed if c is None else c for c in row)] for lv, row in zip(levels[0], counts)],
                     f"total {result.get('total')}")]
    if isinstance(result, dict) and isinstance(result.get("values"), dict) and isinstance(
            result["values"].get("columns"), dict):
        columns = result["values"]["columns"]
        keys = list(dict.fromkeys(k for spec in columns.values() if isinstance(spec, dict) for k in spec))
        return [("summary", ["column", *keys], [[name, *(spec.get(k) for k in keys)] for name, spec in columns.items()
                                                if isinstance(spec, dict)], f"n {result.get('n')}")]
    return [("", ["result"], [[line] for line in json.dumps(result, indent=2).splitlines()], "")]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg") if not _in_notebook() else None
        import matplotlib.pyplot as plt
    except ImportError:
        raise VantageError("plots need matplotlib: pip install 'vantage-client[plot]'") from None
    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # noqa: PLC0415

        return get_ipython() is not None
    except ImportError:
        return False


def plot(result: Any, ax=None):
    """Draw a typed result with matplotlib: Kaplan–Meier steps with their band, a forest
    plot of hazard or odds ratios (log axis, line at 1), or bars of counts. Returns the axes."""
    plt = _pyplot()
    if ax is None:
        _figure, ax = plt.subplots(figsize=(8, 5))
    if _is_survival(result):
        values = result["values"]
        grouped = grid_note(values.get("grid"))
        for label, curve in _curves(values).items():
            times = [t for t in curve["start"]]
            where = "post"
            if grouped:  # the estimate is known at each interval's end
                times = [0.0, *[e for e in curve["end"] if e is not None]]
                levels = [1.0, *curve["survival"][: len(times) - 1]]
                lower = [1.0, *curve["ci_lower"][: len(times) - 1]]
                upper = [1.0, *curve["ci_upper"][: len(times) - 1]]
            else:
                levels, lower, upper = curve["survival"], curve["ci_lower"], curve["ci_upper"]
            line, = ax.step(times, levels, where=where, label=str(label))
            ax.fill_between(times, [v if v is not None else math.nan for v in lower],
                            [v if v is not None else math.nan for v in upper], step=where, alpha=0.15,
                            color=line.get_color())
        ax.set_xlabel("time")
        ax.set_ylabel("survival probability")
        ax.set_ylim(0, 1.02)
        ax.set_title("Kaplan–Meier" + (f" ({grouped})" if grouped else ""))
        ax.legend()
        return ax
    if isinstance(result, dict) and result.get("type") == "model":
        rows = _ratios(result)
        if not rows:
            raise VantageError("this model has no ratios with intervals to draw")
        names = [r[0] for r in rows]
        y = list(range(len(rows)))[::-1]
        estimate = [r[1] for r in rows]
        ax.errorbar(estimate, y, xerr=[[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]], fmt="s")
        ax.axvline(1.0, linestyle="--", color="grey")
        ax.set_xscale("log")
        ax.set_yticks(y, names)
        ax.set_xlabel(("hazard" if isinstance(result.get("coefficients", [None])[0], dict) else "odds") +
                      " ratio (log scale)")
        return ax
    if isinstance(result, dict) and result.get("type") == "count_table" and len(result.get("dimensions", [])) == 1:
        levels, counts = result["levels"][0], result["counts"]
        ax.barh(levels, [c or 0 for c in counts])
        for i, c in enumerate(counts):
            if c is None:
                ax.text(0, i, f" suppressed (< {result.get('min_cell')})", va="center")
        ax.set_xlabel("count")
        return ax
    raise VantageError("this result has no plot: it is not a survival curve, a model or a one-way count table")


def _ratios(result: dict) -> list[tuple[str, float, float, float]]:
    coefficients = result.get("coefficients")
    if isinstance(coefficients, list) and coefficients and isinstance(coefficients[0], dict):
        return [(c["covariate"], c["hazard_ratio"], c["hr_lower"], c["hr_upper"]) for c in coefficients
                if None not in (c.get("hazard_ratio"), c.get("hr_lower"), c.get("hr_upper"))]
    if isinstance(result.get("terms"), list):
        return [(t, math.exp(b), math.exp(lo), math.exp(hi))
                for t, b, lo, hi in zip(result["terms"], coefficients, result.get("ci_lower", []),
                                        result.get("ci_upper", []))
                if t != "intercept" and None not in (b, lo, hi)]
    return []


def save_plot(result: Any, path: str) -> None:
    plt = _pyplot()
    ax = plot(result)
    try:
        ax.figure.savefig(path, format="svg" if str(path).endswith(".svg") else None, bbox_inches="tight")
    except OSError as exc:
        raise VantageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        plt.close(ax.figure)


# ---------------------------------------------------------------- arguments


def schema_value(name: str, text: str, spec: dict | None):
    """The value of `--arg name=text`, typed as the catalogue's JSON schema says."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    try:
        if kind == "array":
            if text.startswith("["):
                return json.loads(text)
            items = (spec.get("items") or {}).get("type")
            return [schema_value(name, part.strip(), {"type": items}) for part in text.split(",") if part.strip()]
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "boolean":
            if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "yes", "1")
        if kind in ("object",):
            return json.loads(text)
        if kind == "string":
            return text
    except ValueError:
        raise VantageError(f"--arg {name}: {text!r} is not a{'n' if kind in ('array', 'integer', 'object') else ''} "
                           f"{kind}") from None
    # No schema: JSON when it parses (numbers, true, lists), a list when it has commas, else text.
    try:
        return json.loads(text)
    except ValueError:
        return [part.strip() for part in text.split(",")] if "," in text else text


def check_arguments(kwargs: dict, schema: dict | None) -> None:
    """Refuse arguments the catalogue's schema rules out, before anything is sent: a
    missing required one, an unknown one (when the schema closes the list), a wrong type."""
    if not isinstance(schema, dict):
        return
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    missing = [name for name in schema.get("required") or [] if name not in kwargs]
    if missing:
        raise VantageError(f"missing required argument{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(kwargs) - set(properties))
        if unknown:
            raise VantageError(f"unknown argument{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(properties))})")
    checks = {"string": lambda v: isinstance(v, str), "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "boolean": lambda v: isinstance(v, bool), "array": lambda v: isinstance(v, list),
              "object": lambda v: isinstance(v, dict), "null": lambda v: v is None}
    for name, value in kwargs.items():
        spec = properties.get(name)
        kinds = spec.get("type") if isinstance(spec, dict) else None
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if isinstance(kinds, list) and not any(checks.get(k, lambda v: True)(value) for k in kinds):
            raise VantageError(f"argument {name}: expected {' or '.join(kinds)}, got {json.dumps(value)}")
