"""Rendering results readably: JSON values as tables where their shape allows.

A result is whatever JSON the algorithm wrote. Shapes that read well as a table get one:
an object of scalars (name | value), a list of objects with the same keys (records), an
object of equal-length lists (columns, as regression outputs list coefficients and their
errors), a list of equal-length lists (a matrix). A typed output names its kind in
"type", shown as the table's caption. Anything else nests, down to MAX_DEPTH, then shows
as indented JSON. Every string passes through format_html, so a result cannot inject markup.
"""

import json
import math

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

register = template.Library()

MAX_DEPTH = 4
MAX_ROWS = 500


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _scalar(value) -> SafeString:
    if value is None:
        return format_html('<span class="null">–</span>')
    if isinstance(value, bool):
        return format_html("{}", "true" if value else "false")
    if isinstance(value, float) and math.isfinite(value):
        # Six significant digits to read; the exact value on hover and in the download.
        return format_html('<span class="num" title="{}">{}</span>', repr(value), f"{value:.6g}")
    if isinstance(value, (int, float)):
        return format_html('<span class="num">{}</span>', value)
    return format_html("{}", value)


def _cells(values, depth: int, tag: str = "td") -> SafeString:
    return format_html_join("", "<{}>{}</{}>", ((tag, _render(v, depth + 1), tag) for v in values))


def _table(header, rows, depth: int, caption: str = "") -> SafeString:
    rows = list(rows)
    shown = rows[:MAX_ROWS]
    body = format_html_join("", "<tr>{}</tr>", ((_cells(row, depth),) for row in shown))
    more = ""
    if len(rows) > len(shown):
        more = format_html('<p class="note">{} more rows: download the result to see them all.</p>',
                           len(rows) - len(shown))
    return format_html(
        '<table class="result">{}{}<tbody>{}</tbody></table>{}',
        format_html("<caption>{}</caption>", caption) if caption else "",
        format_html("<thead><tr>{}</tr></thead>", _cells(header, MAX_DEPTH, "th")) if header else "",
        body, more,
    )


def _records_columns(value: list) -> list | None:
    """The shared keys when `value` is a non-empty list of objects with the same scalar-valued keys."""
    if not value or not all(isinstance(item, dict) for item in value):
        return None
    keys = list(value[0])
    if not keys or any(list(item) != keys for item in value):
        return None
    if not all(_is_scalar(v) for item in value for v in item.values()):
        return None
    return keys


def _is_columns(value: dict) -> bool:
    lists = list(value.values())
    if len(lists) < 2 or not all(isinstance(v, list) and v for v in lists):
        return False
    return len({len(v) for v in lists}) == 1 and all(_is_scalar(x) for v in lists for x in v)


def _is_matrix(value: list) -> bool:
    if not value or not all(isinstance(row, list) and row for row in value):
        return False
    return len({len(row) for row in value}) == 1 and all(_is_scalar(x) for row in value for x in row)


def _render(value, depth: int) -> SafeString:
    if _is_scalar(value):
        return _scalar(value)
    if depth >= MAX_DEPTH:
        return format_html("<pre>{}</pre>", json.dumps(value, indent=2))
    if isinstance(value, dict):
        caption = value["type"] if isinstance(value.get("type"), str) else ""
        fields = {k: v for k, v in value.items() if not (caption and k == "type")}
        if _is_columns(fields):
            return _table(list(fields), zip(*fields.values()), depth, caption)
        return _table(None, ((format_html("<b>{}</b>", k), v) for k, v in fields.items()), depth, caption)
    keys = _records_columns(value)
    if keys is not None:
        return _table(keys, ([item[k] for k in keys] for item in value), depth)
    if _is_matrix(value):
        return _table(None, value, depth)
    if all(_is_scalar(item) for item in value):
        return format_html('<span class="list">{}</span>', format_html_join(", ", "{}", ((_scalar(v),) for v in value)))
    return _table(None, ([format_html("<b>{}</b>", i), item] for i, item in enumerate(value)), depth)


@register.simple_tag
def render_result(value) -> SafeString:
    return _render(value, 0)


@register.filter
def pretty_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=False)



@register.filter
def get_item(mapping: dict, key):
    return mapping.get(key)
