"""Helpers for categorical data: level names that agree across sites, and pooling count tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def level_name(value) -> str:
    """One spelling per level at every site: a column read as float at one site (because
    it has missing values there) and as int at another still gives "1", not "1.0"."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def level_names(series: pd.Series) -> pd.Series:
    return series.map(level_name)


def is_numeric(series: pd.Series) -> bool:
    import pandas as pd  # here: a central method's container never imports pandas

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def pool_tables(tables: Sequence[dict]) -> tuple[list[list[str]], list, int | None]:
    """Sum sites' count tables (their to_json form) cell by cell over the union of levels.

    A cell suppressed at any site is suppressed in the sum: adding a site's hidden small
    count would need it, and leaving it out would understate the cell without saying so.
    Returns (levels, nested counts with None where suppressed, total or None).
    """
    ndim = len(tables[0]["dimensions"])
    levels = [sort_levels({lv for t in tables for lv in t["levels"][axis]}) for axis in range(ndim)]
    shape = tuple(len(lv) for lv in levels)
    pooled = np.zeros(shape, dtype=np.int64)
    hidden = np.zeros(shape, dtype=bool)
    for table in tables:
        counts = np.array(table["counts"], dtype=object).reshape([len(lv) for lv in table["levels"]])
        index = [np.array([levels[axis].index(lv) for lv in table["levels"][axis]]) for axis in range(ndim)]
        for position, value in np.ndenumerate(counts):
            target = tuple(index[axis][position[axis]] for axis in range(ndim))
            if value is None:
                hidden[target] = True
            else:
                pooled[target] += int(value)
    totals = [t["total"] for t in tables]
    total = None if any(t is None for t in totals) else int(sum(totals))
    return levels, np.where(hidden, None, pooled.astype(object)).tolist(), total


def sort_levels(levels) -> list[str]:
    """Numeric levels by value, then the others alphabetically."""
    return sorted(levels, key=_level_sort_key)


def _level_sort_key(level: str):
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)
