"""Typed outputs: each says what it is, so a node can check it before release.

Every class serialises (`to_json()`) to a JSON object with a `"type"` field:

- `count_table`: counts over the levels of one or more categorical variables, with
  small cells already suppressed (null) under the site's `min_cell`;
- `aggregate`: a statistic together with the number of units (rows, patients) behind it;
- `model`: fitted parameters with the residual degrees of freedom of the fit;
- `intermediate`: numbers a central method combines (gradients, information matrices),
  with their shape and the number of units behind them.

`to_jsonable` turns any mix of these, dicts, lists and numpy values into plain JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for typed outputs, numpy scalars and arrays; NaN and ±inf become null."""
    if hasattr(value, "to_json") and callable(value.to_json):
        return to_jsonable(value.to_json())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"the output contains a {type(value).__name__}, which is not JSON")


@dataclass
class CountTable:
    """Counts over the levels of `dimensions`; cells below min_cell are null.

    Build it with `CountTable.suppressed(...)`, which applies the policy, rather than
    from raw counts.
    """

    dimensions: list[str]
    levels: list[list[str]]
    counts: list  # nested lists, one level per dimension; None where suppressed
    total: int | None  # None when releasing it would give a hidden cell back
    min_cell: int

    @classmethod
    def suppressed(cls, dimensions: Sequence[str], levels: Sequence[Sequence], counts, *, min_cell: int,
                   total: int | None = None) -> CountTable:
        """Primary suppression of cells 1..min_cell-1, then secondary suppression: no row,
        column or other line of the table keeps exactly one hidden cell, since that line's
        sum (the total here, or a margin another query gives) would give the cell back."""
        array = np.asarray(counts, dtype=np.int64)
        if array.ndim != len(dimensions) or any(array.shape[i] != len(levels[i]) for i in range(array.ndim)):
            raise ValueError("counts must have one axis per dimension, as long as its levels")
        total = int(array.sum()) if total is None else int(total)
        hidden = (array > 0) & (array < min_cell)
        exposed = _protect_lines(array, hidden)
        released = np.where(hidden, None, array.astype(object))
        # A line that cannot be protected (one level only): its sum is the hidden cell.
        return cls(list(dimensions), [[str(v) for v in lv] for lv in levels], released.tolist(),
                   None if exposed else total, min_cell)

    @property
    def suppressed_cells(self) -> int:
        return sum(1 for v in _flatten(self.counts) if v is None)

    def to_json(self) -> dict:
        return {"type": "count_table", "dimensions": self.dimensions, "levels": self.levels,
                "counts": self.counts, "total": self.total, "min_cell": self.min_cell,
                "suppressed_cells": self.suppressed_cells}


@dataclass
class Aggregate:
    """Statistics computed over `n` units (rows or patients) of one site or of all sites."""

    values: dict
    n: int

    def to_json(self) -> dict:
        return {"type": "aggregate", "n": int(self.n), "values": to_jsonable(self.values)}


@dataclass
class Model:
    """A fitted model: its parameters and statistics, with residual degrees of freedom."""

    name: str
    n: int
    residual_df: int
    values: dict

    RESERVED = ("type", "model", "n", "residual_df")

    def to_json(self) -> dict:
        clash = [key for key in self.RESERVED if key in self.values]
        if clash:
            # A value named like a header field would silently replace it (the model's name, its n).
            raise ValueError(f"model values may not be named {', '.join(clash)}: those are the model's own fields")
        return {"type": "model", "model": self.name, "n": int(self.n), "residual_df": int(self.residual_df),
                **to_jsonable(self.values)}


@dataclass
class Intermediate:
    """Numbers a central method combines: named arrays with their shapes, over `n` units."""

    n: int
    arrays: dict = field(default_factory=dict)
    scalars: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        arrays = {name: np.asarray(value, dtype=float) for name, value in self.arrays.items()}
        return {"type": "intermediate", "n": int(self.n),
                "shapes": {name: list(a.shape) for name, a in arrays.items()},
                "arrays": {name: to_jsonable(a) for name, a in arrays.items()},
                "scalars": to_jsonable(self.scalars)}


def _protect_lines(array: np.ndarray, hidden: np.ndarray) -> bool:
    """Hide more cells (in place) until no line has exactly one hidden cell, taking the
    smallest visible non-zero cell of such a line (a zero if none is left). True if some
    line still has one hidden cell because nothing else in it can be hidden."""
    exposed = False
    changed = True
    while changed:
        changed, exposed = False, False
        for axis in range(array.ndim):
            values, mask = np.moveaxis(array, axis, -1), np.moveaxis(hidden, axis, -1)
            for line in np.ndindex(values.shape[:-1]):
                if mask[line].sum() != 1:
                    continue
                visible = np.flatnonzero(~mask[line])
                if visible.size == 0:
                    exposed = True
                    continue
                nonzero = visible[values[line][visible] > 0]
                pool = nonzero if nonzero.size else visible
                mask[line + (pool[np.argmin(values[line][pool])],)] = True
                changed = True
    return exposed


def _flatten(nested):
    for item in nested:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item
