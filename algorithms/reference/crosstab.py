"""Crosstab of two categorical columns, pooled over sites, small cells suppressed.

Each site counts its rows with both values present and suppresses its small cells
(and one more when only one was small, since its total is released). The central
method adds the tables over the union of levels; a cell hidden at any site stays
hidden in the sum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vantage_algorithms import AlgorithmError, Policy, central, outputs, partial
from vantage_algorithms.tables import level_names, pool_tables

if TYPE_CHECKING:  # pandas only where a site's data is read: a central run never imports it
    import pandas as pd


def _check_names(data: pd.DataFrame | None, row, column) -> None:
    for name, value in (("row", row), ("column", column)):
        if not isinstance(value, str) or not value:
            raise AlgorithmError(f"{name} must be a column name")
        if data is not None and value not in data.columns:
            raise AlgorithmError(f"no column {value!r} in this site's data")
    if row == column:
        raise AlgorithmError("row and column must be two different columns")


@partial
def crosstab_site(data: pd.DataFrame, policy: Policy, *, row: str, column: str) -> dict:
    """This site's table of row × column levels, under its policy."""
    import pandas as pd  # here, not at the top: a central run never reads data

    _check_names(data, row, column)
    complete = data[[row, column]].dropna()
    policy.require_rows(len(complete), "rows with both values present")
    table = pd.crosstab(level_names(complete[row]), level_names(complete[column]))
    # Typed, so that the node's output gate releases it without a person (nodeagent/gate.py).
    return outputs.Aggregate({
        "missing": int(len(data) - len(complete)),
        "table": outputs.CountTable.suppressed([row, column], [list(table.index), list(table.columns)],
                                               table.to_numpy(), min_cell=policy.min_cell),
    }, len(complete))


@central
def crosstab(client, policy: Policy, *, row: str, column: str) -> dict:
    """The pooled table over the task's organisations."""
    _check_names(None, row, column)
    organizations = client.organizations()
    results = [r["values"] for r in client.run("crosstab_site", {"row": row, "column": column}, organizations)]
    levels, counts, total = pool_tables([r["table"] for r in results])
    hidden = sum(1 for cells in counts for c in cells if c is None)
    return {"type": "count_table", "dimensions": [row, column], "levels": levels, "counts": counts,
            "total": total, "suppressed_cells": hidden, "missing": sum(r["missing"] for r in results),
            "organizations": organizations,
            "min_cell": max(r["table"]["min_cell"] for r in results)}
