"""Rendering results readably: JSON values as tables where their shape allows.

A result is whatever JSON the algorithm wrote. Shapes that read well as a table get one:

- a typed output (algorithms/vantage_algorithms/outputs.py) names its kind in "type",
  shown as the caption; a `count_table` of one or two dimensions is drawn as a crosstab,
  its suppressed cells marked;
- within an object, lists of scalars of one length (a model's terms, coefficients and
  standard errors; a survival table's times and counts) are drawn side by side as
  columns, the object's other fields as name | value rows;
- a list of objects with the same keys, or objects of scalars side by side in an object
  (summary statistics per column), are one row each;
- a list of equal-length lists of scalars is a matrix.

Anything else nests, down to MAX_DEPTH, then shows as indented JSON. Every string passes
through format_html, so nothing in a result can add markup to the page.
"""

import json
import math
import os
from collections import Counter

from django import template
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from portal import selectors
from portal.views import ASSETS_DIR

register = template.Library()

MAX_DEPTH = 4
MAX_ROWS = 500


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_scalar_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_scalar(v) for v in value)


def _scalar(value) -> SafeString:
    if value is None:
        return mark_safe('<span class="null">–</span>')
    if isinstance(value, bool):
        return format_html("{}", "true" if value else "false")
    if isinstance(value, float) and math.isfinite(value):
        # Six significant digits to read; the exact value on hover and in the download.
        return format_html('<span class="num" title="{}">{}</span>', repr(value), f"{value:.6g}")
    if isinstance(value, (int, float)):
        return format_html('<span class="num">{}</span>', value)
    return format_html("{}", value)


def _row(values, depth: int) -> SafeString:
    return format_html_join("", "<td>{}</td>", ((_render(v, depth + 1),) for v in values))


def _table(header, rows, depth: int, caption: str = "") -> SafeString:
    rows = list(rows)
    shown = rows[:MAX_ROWS]
    more = ""
    if len(rows) > len(shown):
        more = format_html('<p class="note">{} more rows: download the result to see them all.</p>',
                           len(rows) - len(shown))
    return format_html(
        '<table class="result">{}{}<tbody>{}</tbody></table>{}',
        format_html("<caption>{}</caption>", caption) if caption else "",
        format_html("<thead><tr>{}</tr></thead>", format_html_join("", "<th>{}</th>", ((h,) for h in header)))
        if header else "",
        format_html_join("", "<tr>{}</tr>", ((_row(row, depth),) for row in shown)),
        more,
    )


def _name(key) -> SafeString:
    return format_html("<b>{}</b>", key)


def _count_table(value: dict) -> SafeString | None:
    """A count_table of one or two dimensions as a crosstab; None for other shapes."""
    dimensions, levels, counts = value.get("dimensions"), value.get("levels"), value.get("counts")
    # Results are whatever an algorithm wrote: anything but the documented shape is drawn generically.
    if not (isinstance(dimensions, list) and isinstance(levels, list) and isinstance(counts, list)):
        return None
    if len(dimensions) != len(levels) or len(dimensions) not in (1, 2):
        return None
    if not all(_is_scalar_list(lv) for lv in levels) or len(counts) != len(levels[0]):
        return None
    min_cell = value.get("min_cell")
    hidden = format_html('<span class="null" title="suppressed: fewer than {} units">&lt;{}</span>',
                         min_cell, min_cell)

    def cell(count):
        return hidden if count is None else count

    if len(dimensions) == 1:
        if not all(_is_scalar(c) for c in counts):
            return None
        header, rows = [dimensions[0], "count"], [[_name(level), cell(c)] for level, c in zip(levels[0], counts)]
    else:
        if not all(isinstance(row, list) and len(row) == len(levels[1]) and all(_is_scalar(c) for c in row)
                   for row in counts):
            return None
        header = [f"{dimensions[0]} \\ {dimensions[1]}", *levels[1]]
        rows = [[_name(level), *(cell(c) for c in row)] for level, row in zip(levels[0], counts)]
    notes = format_html(
        '<p class="note">total {}{}</p>', value.get("total") if value.get("total") is not None else "withheld",
        format_html("; cells under {} suppressed", min_cell) if min_cell else "",
    )
    return format_html("{}{}", _table(header, rows, 0, "count_table"), notes)


def _object(value: dict, depth: int) -> SafeString:
    caption = value["type"] if isinstance(value.get("type"), str) else ""
    if caption == "count_table":
        crosstab = _count_table(value)
        if crosstab is not None:
            return crosstab
    fields = {k: v for k, v in value.items() if not (caption and k == "type")}
    inner = fields.get("values")
    if caption and isinstance(inner, dict) and not set(inner) & set(fields):
        # A typed output's "values" read as its own fields, beside n and the like.
        fields = {**{k: v for k, v in fields.items() if k != "values"}, **inner}
    # The most numerous equal-length scalar lists become one table of columns.
    lengths = Counter(len(v) for v in fields.values() if _is_scalar_list(v))
    length = max(lengths, key=lambda n: (lengths[n], n)) if lengths else None
    columns = [k for k, v in fields.items() if _is_scalar_list(v) and len(v) == length]
    if len(columns) < 2:
        columns = []
    # Objects of scalars side by side (summary statistics per column) become one row each.
    records = [k for k, v in fields.items() if k not in columns and _is_scalar_object(v)]
    if len(records) < 2:
        records = []
    rest = {k: v for k, v in fields.items() if k not in columns and k not in records}
    parts = []
    if rest:
        parts.append(_table(None, ([_name(k), v] for k, v in rest.items()), depth, caption))
    if records:
        keys = list(dict.fromkeys(key for k in records for key in fields[k]))
        parts.append(_table(["", *keys], ([_name(k), *(fields[k].get(c) for c in keys)] for k in records),
                            depth, "" if parts else caption))
    if columns:
        parts.append(_table(columns, zip(*(fields[k] for k in columns)), depth, "" if parts else caption))
    return format_html_join("", "{}", ((part,) for part in parts))


def _is_scalar_object(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(_is_scalar(v) for v in value.values())


def _records_columns(value: list) -> list | None:
    """The shared keys when `value` is a list of objects with the same scalar-valued keys."""
    if not value or not all(isinstance(item, dict) and item for item in value):
        return None
    keys = list(value[0])
    if any(list(item) != keys for item in value) or not all(_is_scalar(v) for item in value for v in item.values()):
        return None
    return keys


def _is_matrix(value: list) -> bool:
    return all(_is_scalar_list(row) for row in value) and len({len(row) for row in value}) == 1


def _render(value, depth: int) -> SafeString:
    if _is_scalar(value):
        return _scalar(value)
    if not value:
        return format_html('<span class="null">{}</span>', json.dumps(value))
    if depth >= MAX_DEPTH:
        return format_html("<pre>{}</pre>", json.dumps(value, indent=2))
    if isinstance(value, dict):
        return _object(value, depth)
    keys = _records_columns(value)
    if keys is not None:
        return _table(keys, ([item[k] for k in keys] for item in value), depth)
    if _is_scalar_list(value):
        return format_html('<span class="list">{}</span>', format_html_join(", ", "{}", ((_scalar(v),) for v in value)))
    if _is_matrix(value):
        return _table(None, value, depth)
    return _table(None, ([_name(i), item] for i, item in enumerate(value)), depth)


@register.simple_tag
def render_result(value) -> SafeString:
    return _render(value, 0)


@register.filter
def pretty_json(value) -> str:
    return json.dumps(value, indent=2)


@register.filter
def get_item(mapping: dict, key):
    return mapping.get(key)


@register.simple_tag
def may_create_tasks(user) -> bool:
    return selectors.may_create_tasks(user=user)


@register.simple_tag
def asset_url(name: str) -> str:
    """A portal asset's address, versioned by its modification time: after an upgrade no
    browser keeps running the old script against new pages."""
    # os.path: pathlib refuses the SafeString a template literal arrives as.
    return f"{reverse('portal:asset', args=[name])}?v={int(os.stat(os.path.join(ASSETS_DIR, name)).st_mtime)}"


@register.filter
def chart_svg(chart, run_id) -> SafeString:
    """A chart's inline SVG, its ids unique on the page (one set per run)."""
    return chart.svg(id_prefix=f"run-{run_id}")
