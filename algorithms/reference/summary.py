"""Summary statistics per column, pooled over sites.

Numeric columns: count, missing, mean and sample variance. Each site sends its count,
mean and sum of squared deviations from its own mean (computed in two passes); the
central method merges them pairwise with Chan et al.'s parallel formula, which stays
accurate where a one-pass sum of squares cancels catastrophically. Minimum and maximum
(single patients' values) only where every site's policy allows them.

Categorical columns: counts per level, with each site's small cells suppressed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vantage_algorithms import AlgorithmError, Policy, central, outputs, partial
from vantage_algorithms.tables import is_numeric, level_names, pool_tables, sort_levels

if TYPE_CHECKING:  # pandas only where a site's data is read: a central run never imports it
    import pandas as pd


def _columns(data: pd.DataFrame, columns: list[str] | None) -> list[str]:
    if columns is None:
        return list(data.columns)
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise AlgorithmError("columns must be a non-empty list of column names")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise AlgorithmError(f"no column {missing[0]!r} in this site's data")
    return columns


def _categorical_list(categorical) -> set[str]:
    if categorical is None:
        return set()
    if not isinstance(categorical, list) or not all(isinstance(c, str) for c in categorical):
        raise AlgorithmError("categorical must be a list of column names")
    return set(categorical)


@partial
def summary_site(data: pd.DataFrame, policy: Policy, *, columns: list[str] | None = None,
                 categorical: list[str] | None = None) -> outputs.Aggregate:
    """This site's per-column statistics, under its policy."""
    policy.require_rows(len(data))
    as_categories = _categorical_list(categorical)
    found = {}
    for name in _columns(data, columns):
        series = data[name]
        present = series.dropna()
        missing = int(len(series) - len(present))
        if is_numeric(series) and name not in as_categories:
            n = len(present)
            if n < policy.min_rows:
                found[name] = {"kind": "numeric", "missing": missing,
                               "withheld": f"{n} non-missing values, fewer than the policy's minimum of "
                                           f"{policy.min_rows}"}
                continue
            values = present.to_numpy(dtype=float)
            mean = float(values.mean())
            stats = {"mean": mean, "m2": float(np.sum((values - mean) ** 2))}
            if policy.allow_min_max:
                stats.update(min=float(values.min()), max=float(values.max()))
            found[name] = {"kind": "numeric", "missing": missing, "stats": outputs.Aggregate(stats, n)}
        else:
            counts = level_names(present).value_counts()
            counts = counts[sort_levels(counts.index)]
            found[name] = {"kind": "categorical", "missing": missing,
                           "counts": outputs.CountTable.suppressed([name], [list(counts.index)], counts.to_numpy(),
                                                                  min_cell=policy.min_cell)}
    return outputs.Aggregate({"columns": found}, len(data))


def merge_moments(parts: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    """(n, mean, M2) of the union of groups, merged pairwise (Chan, Golub & LeVeque 1979)."""
    n, mean, m2 = 0, 0.0, 0.0
    for n_b, mean_b, m2_b in parts:
        if n_b == 0:
            continue
        total = n + n_b
        delta = mean_b - mean
        mean += delta * n_b / total
        m2 += m2_b + delta * delta * n * n_b / total
        n = total
    return n, mean, m2


def _pool_numeric(name: str, organizations: list[int], entries: list[dict]) -> dict:
    missing = sum(e["missing"] for e in entries)
    withheld = {org: e["withheld"] for org, e in zip(organizations, entries) if "withheld" in e}
    if withheld:
        return {"kind": "numeric", "missing": missing,
                "withheld": {str(org): reason for org, reason in withheld.items()}}
    stats = [e["stats"] for e in entries]
    n, mean, m2 = merge_moments([(s["n"], s["values"]["mean"], s["values"]["m2"]) for s in stats])
    variance = m2 / (n - 1) if n > 1 else None
    pooled = {"kind": "numeric", "n": n, "missing": missing, "mean": mean, "variance": variance,
              "std": float(np.sqrt(variance)) if variance is not None else None}
    if all("min" in s["values"] for s in stats):
        pooled.update(min=min(s["values"]["min"] for s in stats), max=max(s["values"]["max"] for s in stats))
    return pooled


def _pool_categorical(name: str, entries: list[dict]) -> dict:
    levels, counts, total = pool_tables([e["counts"] for e in entries])
    return {"kind": "categorical", "missing": sum(e["missing"] for e in entries), "n": total,
            "levels": levels[0], "counts": counts,
            "suppressed_levels": [lv for lv, c in zip(levels[0], counts) if c is None]}


@central
def summary(client, policy: Policy, *, columns: list[str] | None = None,
            categorical: list[str] | None = None) -> outputs.Aggregate:
    """Pooled per-column statistics over the task's organisations."""
    organizations = client.organizations()
    results = client.run("summary_site", {"columns": columns, "categorical": categorical}, organizations)
    per_site = [r["values"]["columns"] for r in results]
    names = list(per_site[0])
    pooled = {}
    for name in names:
        entries = [site.get(name) for site in per_site]
        kinds = {e["kind"] for e in entries if e is not None}
        if None in entries or len(kinds) != 1:
            raise AlgorithmError(f"column {name!r} is not of one kind at every site; "
                                 f"name it in categorical to count its levels everywhere")
        pooled[name] = (_pool_numeric(name, organizations, entries) if kinds == {"numeric"}
                        else _pool_categorical(name, entries))
    return outputs.Aggregate({"organizations": organizations, "columns": pooled},
                             sum(r["n"] for r in results))
