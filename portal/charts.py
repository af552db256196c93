"""Pictures and tables of typed results: Kaplan–Meier curves, forest plots, count bars.

A result is whatever JSON an algorithm wrote. The reference algorithms' outputs have
documented shapes (algorithms/reference/*.py); a shape recognised here becomes

- a `Chart`: an SVG drawn on the server (no script, no external font or stylesheet, so
  it passes the portal's CSP: colours and fonts are presentation attributes, not inline
  styles), with a <title> and <desc> for screen readers, downloadable as a file;
- one or more `Table`s, downloadable as CSV, whose numbers are the result's own.

Anything else yields nothing and the page shows its generic tables only. Every string
from a result goes through format_html, so a result cannot add markup to the page.

Survival curves draw what the sites released and no more: on the guarded grid the
times are known only to their interval, so the curve steps down at the end of each
interval (after its events), no censor marks are drawn, and the chart says how many
intervals the sites' disclosure rules grouped the times into; on the exact grid it steps
at each event time and marks intervals with censored subjects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
FONT = 'font-family="system-ui, sans-serif"'
MAX_GROUPS = len(PALETTE)
MAX_BARS = 60
MAX_FOREST_ROWS = 80
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Table:
    slug: str
    title: str
    header: list[str]
    rows: list[list]


@dataclass
class Chart:
    slug: str
    title: str
    description: str
    body: SafeString  # the SVG's drawing, without the <svg> element
    width: int
    height: int
    notice: str = ""
    tables: list[str] = field(default_factory=list)  # slugs of the tables behind it

    def svg(self, *, id_prefix: str = "chart") -> SafeString:
        ident = f"{id_prefix}-{self.slug}"
        return format_html(
            '<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
            'class="chart" data-chart="{slug}" aria-labelledby="{i}-title {i}-desc" {font} font-size="12">'
            '<title id="{i}-title">{title}</title><desc id="{i}-desc">{desc}</desc>{body}</svg>',
            w=self.width, h=self.height, slug=self.slug, i=ident, font=mark_safe(FONT), title=self.title,
            desc=self.description, body=self.body,
        )


@dataclass
class Picture:
    """What a result shows beside its generic tables."""

    charts: list[Chart]
    tables: list[Table]
    notice: str = ""

    def table(self, slug: str) -> Table | None:
        return next((t for t in self.tables if t.slug == slug), None)

    def chart(self, slug: str) -> Chart | None:
        return next((c for c in self.charts if c.slug == slug), None)


def picture(value) -> Picture | None:
    """The charts and tables of a result, or None when its shape is not one drawn here."""
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    try:
        if kind == "aggregate" and isinstance(value.get("values"), dict):
            inner = value["values"]
            if _is_curve(inner.get("overall")):
                return _survival(inner)
            if isinstance(inner.get("columns"), dict):
                return _summary(inner["columns"])
        if kind == "model":
            return _model(value)
        if kind == "count_table":
            return _count_table(value)
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError):
        # A result that looks like a known shape but is not quite one: tables only.
        return None
    return None


# ---------------------------------------------------------------------------- numbers


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value, digits: int = 3) -> str:
    number = _num(value)
    if number is None:
        return "–"
    if number == int(number) and abs(number) < 1e9:
        return str(int(number))
    return f"{number:.{digits}g}"


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for step in (1, 2, 2.5, 5, 10):
        if raw <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _ticks(high: float, target: int = 6) -> list[float]:
    if high <= 0:
        return [0.0]
    step = _nice_step(high, target)
    return [i * step for i in range(int(high / step + 1e-9) + 1)]


# ---------------------------------------------------------------------------- survival


CURVE_FIELDS = ("start", "end", "at_risk", "events", "censored", "survival", "ci_lower", "ci_upper")


def _is_curve(curve) -> bool:
    if not isinstance(curve, dict) or not all(isinstance(curve.get(k), list) for k in CURVE_FIELDS):
        return False
    return len({len(curve[k]) for k in CURVE_FIELDS}) == 1 and len(curve["start"]) > 0


def grid_notice(grid, what: str = "each step shows the survival after an interval's events, "
                                    "not at exact event times") -> str:
    """What a survival result says about its time grid, in a reader's words ("" for exact times)."""
    if not isinstance(grid, dict) or grid.get("grid") != "guarded":
        return ""
    cuts = grid.get("cut_points") if isinstance(grid.get("cut_points"), list) else []
    return (f"Times grouped into {len(cuts) + 1} intervals by the sites' disclosure rules: "
            f"{what}.")


def _survival(values: dict) -> Picture:
    groups = values.get("groups") if isinstance(values.get("groups"), dict) else {}
    curves = {str(k): v for k, v in groups.items() if _is_curve(v)} or {"all": values["overall"]}
    if len(curves) > MAX_GROUPS:
        curves = dict(list(curves.items())[:MAX_GROUPS])
    grouped = isinstance(values.get("grid"), dict) and values["grid"].get("grid") == "guarded"
    notice = grid_notice(values.get("grid"))
    alpha = _num(values.get("alpha")) or 0.05

    rows = []
    for label, curve in curves.items():
        for i in range(len(curve["start"])):
            rows.append([label, *(curve[k][i] for k in CURVE_FIELDS)])
    table = Table("survival", "Kaplan–Meier estimates", ["group", *CURVE_FIELDS], rows)
    tables = [table]
    logrank = values.get("logrank")
    if isinstance(logrank, dict):
        scalars = [[k, v] for k, v in logrank.items() if _num(v) is not None]
        if scalars:
            tables.append(Table("logrank", "Log-rank test", ["statistic", "value"], scalars))

    chart = _survival_chart(curves, grouped=grouped, alpha=alpha, notice=notice)
    return Picture([chart], tables, notice)


def _survival_chart(curves: dict, *, grouped: bool, alpha: float, notice: str) -> Chart:
    left, right, top, plot_h = 64, 24, 16, 300
    width = 760
    plot_w = width - left - right
    starts = [s for c in curves.values() for s in c["start"] if _num(s) is not None]
    ends = [e for c in curves.values() for e in c["end"] if _num(e) is not None]
    last = max(ends + starts) if (ends or starts) else 1.0
    # The open last interval gets a tenth more room, drawn dashed: its end is not known.
    x_max = last * 1.1 if grouped else last * 1.02 or 1.0
    ticks = _ticks(last)

    def x(t: float) -> float:
        return round(left + plot_w * (t / x_max), 1)

    def y(s: float) -> float:
        return round(top + plot_h * (1 - s), 1)

    parts = []
    # Axes and grid lines.
    for s in (0, 0.25, 0.5, 0.75, 1):
        parts.append(format_html('<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#e3e7ee"/>'
                                 '<text x="{}" y="{}" text-anchor="end">{}</text>',
                                 left, left + plot_w, y(s), y(s), left - 6, y(s) + 4, f"{s:.2f}"))
    axis_y = top + plot_h
    parts.append(format_html('<line x1="{l}" x2="{r}" y1="{y}" y2="{y}" stroke="#333"/>'
                             '<line x1="{l}" x2="{l}" y1="{t}" y2="{y}" stroke="#333"/>',
                             l=left, r=left + plot_w, y=axis_y, t=top))
    for t in ticks:
        parts.append(format_html('<line x1="{x}" x2="{x}" y1="{a}" y2="{b}" stroke="#333"/>'
                                 '<text x="{x}" y="{c}" text-anchor="middle">{label}</text>',
                                 x=x(t), a=axis_y, b=axis_y + 4, c=axis_y + 16, label=_fmt(t)))
    parts.append(format_html('<text x="{}" y="{}" text-anchor="middle">time</text>', left + plot_w / 2, axis_y + 32))
    parts.append(format_html('<text transform="translate(14 {}) rotate(-90)" text-anchor="middle">'
                             'survival probability</text>', top + plot_h / 2))

    # Numbers at risk, one row per group, under the axis: on the guarded grid at each
    # interval's start (exactly what was released), on the exact grid at the ticks.
    risk_top = axis_y + 56
    parts.append(format_html('<text x="{}" y="{}" font-weight="bold">Number at risk</text>', 4, risk_top - 14))
    description = []
    for n, (label, curve) in enumerate(curves.items()):
        colour = PALETTE[n % len(PALETTE)]
        parts.append(_curve_band(curve, x, y, colour, grouped, x_max))
        parts.append(_curve_steps(curve, x, y, colour, grouped, x_max))
        if not grouped:
            parts.append(_censor_marks(curve, x, y, colour))
        row_y = risk_top + 16 * n
        parts.append(format_html('<text x="{}" y="{}" fill="{}" class="risk-label">{}</text>',
                                 4, row_y, colour, _short(label, 9)))
        placed = []
        for t, n_risk in _risk_points(curve, ticks, grouped):
            # Numbers closer than a label's width would overlap: the CSV has them all.
            if not placed or x(t) - placed[-1][0] >= 34:
                placed.append((round(x(t), 1), row_y, _fmt(n_risk)))
        parts.append(format_html_join("", '<text x="{}" y="{}" text-anchor="middle" class="at-risk">{}</text>',
                                      placed))
        final = next((s for s in reversed(curve["survival"]) if _num(s) is not None), None)
        description.append(f"{label}: {_fmt(curve['at_risk'][0])} at risk at the start, "
                           f"survival {_fmt(final)} at the end of follow-up")
    # Legend, top right.
    for n, label in enumerate(curves):
        colour = PALETTE[n % len(PALETTE)]
        ly = top + 14 + 16 * n
        parts.append(format_html('<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="2.5"/>'
                                 '<text x="{}" y="{}" class="legend">{}</text>',
                                 left + plot_w - 150, left + plot_w - 128, ly - 4, ly - 4, colour,
                                 left + plot_w - 122, ly, _short(label, 20)))
    height = risk_top + 16 * len(curves) + 4
    band = f"{(1 - alpha) * 100:g}% confidence band"
    title = f"Kaplan–Meier survival{' by group' if len(curves) > 1 else ''} ({len(curves)} curve" \
            f"{'s' if len(curves) > 1 else ''})"
    desc = f"Step curves with a {band}. " + "; ".join(description) + "." + (f" {notice}" if notice else "")
    return Chart("survival", title, desc, format_html_join("", "{}", ((p,) for p in parts)), width, height,
                 notice=notice, tables=["survival"])


def _short(label: str, length: int) -> str:
    return label if len(label) <= length else label[: length - 1] + "…"


def _step_points(curve: dict, key: str, grouped: bool, x_max: float) -> list[tuple[float, float]]:
    """(time, level) corners of a step curve. Exact grid: the level of interval i holds from
    its start (its events happen at its start). Guarded grid: the level before interval i
    holds until the interval's end, where it drops to interval i's estimate."""
    points = []
    level = 1.0
    for i, start in enumerate(curve["start"]):
        value = _num(curve[key][i])
        end = _num(curve["end"][i])
        if grouped:
            stop = end if end is not None else x_max
            points.append((float(start), level))
            points.append((stop, level))
            if value is not None and end is not None:
                level = value
        else:
            if value is not None:
                points.append((float(start), level))
                level = value
            points.append((float(start), level))
            points.append((end if end is not None else x_max, level))
    return points


def _polyline(points, x, y) -> str:
    return " ".join(f"{x(t):.1f},{y(s):.1f}" for t, s in points)


def _curve_steps(curve, x, y, colour, grouped, x_max) -> SafeString:
    points = _step_points(curve, "survival", grouped, x_max)
    # The open last interval (no end) is dashed on the guarded grid.
    if grouped and _num(curve["end"][-1]) is None and len(points) >= 2:
        solid, tail = points[:-1], points[-2:]
        return format_html('<polyline points="{}" fill="none" stroke="{c}" stroke-width="2" class="km-curve"/>'
                           '<polyline points="{}" fill="none" stroke="{c}" stroke-width="2" '
                           'stroke-dasharray="4 3"/>', _polyline(solid, x, y), _polyline(tail, x, y), c=colour)
    return format_html('<polyline points="{}" fill="none" stroke="{}" stroke-width="2" class="km-curve"/>',
                       _polyline(points, x, y), colour)


def _curve_band(curve, x, y, colour, grouped, x_max) -> SafeString:
    upper = _step_points(curve, "ci_upper", grouped, x_max)
    lower = _step_points(curve, "ci_lower", grouped, x_max)
    if not upper or not lower:
        return mark_safe("")
    outline = upper + list(reversed(lower))
    return format_html('<polygon points="{}" fill="{}" fill-opacity="0.15" stroke="none" class="km-band"/>',
                       _polyline(outline, x, y), colour)


def _censor_marks(curve, x, y, colour) -> SafeString:
    """A + on the curve in each interval with censored subjects (exact grid only)."""
    marks = []
    for i, count in enumerate(curve["censored"]):
        level, start, end = _num(curve["survival"][i]), _num(curve["start"][i]), _num(curve["end"][i])
        if not count or level is None or start is None:
            continue
        middle = (start + end) / 2 if end is not None else start
        cx, cy = x(middle), y(level)
        path = f"M{cx - 4:.1f} {cy:.1f} L{cx + 4:.1f} {cy:.1f} M{cx:.1f} {cy - 4:.1f} L{cx:.1f} {cy + 4:.1f}"
        marks.append((path, colour))
    return format_html_join("", '<path d="{}" stroke="{}" stroke-width="1.5" class="censor"/>', marks)


def _risk_points(curve: dict, ticks: list[float], grouped: bool) -> list[tuple[float, float]]:
    starts = [_num(s) for s in curve["start"]]
    if grouped:
        return [(s, curve["at_risk"][i]) for i, s in enumerate(starts) if s is not None]
    points = []
    for t in ticks:
        # The interval containing t: its at-risk count is the number at risk at its start.
        index = max((i for i, s in enumerate(starts) if s is not None and s <= t), default=0)
        points.append((t, curve["at_risk"][index]))
    return points


# ---------------------------------------------------------------------------- models


def _model(value: dict) -> Picture | None:
    coefficients = value.get("coefficients")
    if isinstance(coefficients, list) and coefficients and all(isinstance(c, dict) for c in coefficients):
        # Cox: one object per covariate with its hazard ratio and interval.
        names = [str(c.get("covariate", i)) for i, c in enumerate(coefficients)]
        keys = list(dict.fromkeys(k for c in coefficients for k in c))
        table = Table("coefficients", "Coefficients", keys, [[c.get(k) for k in keys] for c in coefficients])
        estimates = [(n, c.get("hazard_ratio"), c.get("hr_lower"), c.get("hr_upper")) for n, c in zip(names, coefficients)]
        ratio = "hazard ratio"
        level = 1 - (_num(value.get("alpha")) or 0.05)
    elif isinstance(value.get("terms"), list) and isinstance(coefficients, list):
        # Logistic: parallel lists; the interval is on the log-odds scale.
        names = [str(t) for t in value["terms"]]
        columns = [k for k in ("coefficients", "standard_errors", "z", "p_values", "ci_lower", "ci_upper",
                               "odds_ratios") if isinstance(value.get(k), list) and len(value[k]) == len(names)]
        table = Table("coefficients", "Coefficients", ["term", *columns],
                      [[n, *(value[k][i] for k in columns)] for i, n in enumerate(names)])
        lower, upper = value.get("ci_lower") or [None] * len(names), value.get("ci_upper") or [None] * len(names)
        estimates = [(n, _exp(b), _exp(lo), _exp(hi)) for n, b, lo, hi in zip(names, coefficients, lower, upper)
                     if n != "intercept"]
        ratio = "odds ratio"
        level = _num(value.get("confidence")) or 0.95
    else:
        return None
    tables = [table]
    covariance = value.get("covariance")
    if (isinstance(covariance, list) and len(covariance) == len(names)
            and all(isinstance(r, list) and len(r) == len(names) for r in covariance)):
        tables.append(Table("covariance", "Covariance of the coefficients", ["", *names],
                            [[n, *row] for n, row in zip(names, covariance)]))
    notice = grid_notice(value.get("grid"), "the baseline cumulative hazard is given per interval") \
        if value.get("baseline_cumulative_hazard") else ""
    charts = []
    drawable = [e for e in estimates if all(_num(v) is not None and v > 0 for v in e[1:])][:MAX_FOREST_ROWS]
    if drawable:
        charts.append(_forest(drawable, ratio=ratio, level=level))
    return Picture(charts, tables, notice)


def _exp(value):
    number = _num(value)
    return math.exp(number) if number is not None and number < 700 else None


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis from 10**lo to 10**hi: 1-2-5 steps over a wide range; over a
    narrow one (ratios near 1), evenly spaced round values, so the axis is never bare."""
    wide = [m * 10 ** e for e in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in (1, 2, 5)
            if lo <= math.log10(m * 10 ** e) <= hi]
    if len(wide) >= 3:
        return wide
    low, high = 10 ** lo, 10 ** hi
    step = _nice_step(high - low, 5)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def _ratio(value) -> str:
    number = _num(value)
    return "–" if number is None else (f"{number:.3f}" if 0.01 <= abs(number) < 100 else f"{number:.3g}")


def _forest(estimates: list[tuple], *, ratio: str, level: float) -> Chart:
    label_w, text_w, top, row_h = 170, 190, 24, 26
    width = 760
    plot_w = width - label_w - text_w - 20
    low = min(min(e[2] for e in estimates), 1.0)
    high = max(max(e[3] for e in estimates), 1.0)
    lo, hi = math.log10(low), math.log10(high)
    pad = max((hi - lo) * 0.08, 0.02)
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return round(label_w + plot_w * (math.log10(v) - lo) / (hi - lo), 1)

    height = top + row_h * len(estimates) + 44
    axis_y = top + row_h * len(estimates) + 6
    parts = [format_html('<text x="{}" y="{}" font-weight="bold">{}</text>', label_w + plot_w + 16, 14,
                         f"{ratio} ({level * 100:g}% CI)")]
    for tick in _log_ticks(lo, hi):
        parts.append(format_html('<line x1="{x}" x2="{x}" y1="{t}" y2="{b}" stroke="#e3e7ee"/>'
                                 '<text x="{x}" y="{ty}" text-anchor="middle">{label}</text>',
                                 x=x(tick), t=top - 6, b=axis_y, ty=axis_y + 16, label=_fmt(tick, 3)))
    parts.append(format_html('<line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="#333"/>', label_w, label_w + plot_w,
                             y=axis_y))
    parts.append(format_html('<line x1="{x}" x2="{x}" y1="{t}" y2="{b}" stroke="#333" stroke-dasharray="4 3" '
                             'class="reference-line"/>', x=x(1.0), t=top - 10, b=axis_y))
    parts.append(format_html('<text x="{}" y="{}" text-anchor="middle">{} (log scale)</text>',
                             label_w + plot_w / 2, axis_y + 32, ratio))
    description = []
    for i, (name, estimate, lower, upper) in enumerate(estimates):
        cy = top + row_h * i + row_h / 2
        text = f"{_ratio(estimate)} ({_ratio(lower)}–{_ratio(upper)})"
        parts.append(format_html(
            '<g class="forest-row" data-term="{name}"><text x="{lx}" y="{ty}" text-anchor="end">{short}</text>'
            '<line x1="{x1}" x2="{x2}" y1="{cy}" y2="{cy}" stroke="{c}" stroke-width="2"/>'
            '<rect x="{rx}" y="{ry}" width="8" height="8" fill="{c}"/>'
            '<text x="{tx}" y="{ty}">{text}</text></g>',
            name=name, lx=label_w - 8, ty=cy + 4, short=_short(name, 24), x1=x(lower), x2=x(upper), cy=cy,
            c=PALETTE[0], rx=x(estimate) - 4, ry=cy - 4, tx=label_w + plot_w + 16, text=text,
        ))
        description.append(f"{name} {text}")
    title = f"Forest plot: {ratio}s of {len(estimates)} term{'s' if len(estimates) != 1 else ''}"
    desc = (f"{ratio.capitalize()}s with {level * 100:g}% confidence intervals on a log axis, reference line at 1: "
            + "; ".join(description) + ".")
    return Chart("forest", title, desc, format_html_join("", "{}", ((p,) for p in parts)), width, height,
                 tables=["coefficients"])


# ---------------------------------------------------------------------------- counts


def _count_table(value: dict) -> Picture | None:
    dimensions, levels, counts = value.get("dimensions"), value.get("levels"), value.get("counts")
    if not (isinstance(dimensions, list) and isinstance(levels, list) and isinstance(counts, list)):
        return None
    min_cell = value.get("min_cell")
    if len(dimensions) == 1 and len(levels) == 1 and len(counts) == len(levels[0]):
        bars = [(str(level), count) for level, count in zip(levels[0], counts)]
        table = Table("counts", "Counts", [str(dimensions[0]), "count", "suppressed"],
                      [[level, count, count is None] for level, count in bars])
        return Picture([_bars(str(dimensions[0]), bars, min_cell)], [table])
    if len(dimensions) == 2 and len(levels) == 2 and len(counts) == len(levels[0]):
        rows = [[str(a), str(b), c, c is None] for a, row in zip(levels[0], counts) for b, c in zip(levels[1], row)]
        table = Table("counts", "Counts", [str(dimensions[0]), str(dimensions[1]), "count", "suppressed"], rows)
        bars = [(f"{a} · {b}", c) for a, b, c, _ in rows]
        return Picture([_bars(f"{dimensions[0]} × {dimensions[1]}", bars, min_cell)], [table])
    return None


def _summary(columns: dict) -> Picture | None:
    categorical = {name: spec for name, spec in columns.items()
                   if isinstance(spec, dict) and isinstance(spec.get("levels"), list)
                   and isinstance(spec.get("counts"), list) and len(spec["levels"]) == len(spec["counts"])}
    numeric = {name: spec for name, spec in columns.items() if isinstance(spec, dict) and name not in categorical}
    tables, charts = [], []
    if numeric:
        keys = list(dict.fromkeys(k for spec in numeric.values() for k in spec if _num(spec[k]) is not None))
        tables.append(Table("numeric", "Numeric columns", ["column", *keys],
                            [[name, *(spec.get(k) for k in keys)] for name, spec in numeric.items()]))
    if categorical:
        tables.append(Table("categories", "Categorical columns", ["column", "level", "count", "suppressed"],
                            [[name, str(level), count, count is None] for name, spec in categorical.items()
                             for level, count in zip(spec["levels"], spec["counts"])]))
        for i, (name, spec) in enumerate(categorical.items()):
            chart = _bars(str(name), list(zip(map(str, spec["levels"]), spec["counts"])), spec.get("min_cell"),
                          slug=f"bars-{i + 1}")
            chart.tables = ["categories"]
            charts.append(chart)
    return Picture(charts, tables) if tables else None


def _bars(name: str, bars: list[tuple[str, object]], min_cell, *, slug: str = "bars") -> Chart:
    bars = bars[:MAX_BARS]
    label_w, top, row_h, width = 170, 10, 24, 760
    plot_w = width - label_w - 120
    shown = [c for _, c in bars if _num(c) is not None]
    high = max(shown + [_num(min_cell) or 0, 1])
    threshold = _num(min_cell)
    parts, description = [], []
    for i, (label, count) in enumerate(bars):
        cy = top + row_h * i
        parts.append(format_html('<text x="{}" y="{}" text-anchor="end">{}</text>', label_w - 8, cy + 16,
                                 _short(label, 24)))
        if _num(count) is None:
            # Suppressed: an outlined box up to the threshold, never a bar of zero.
            box = plot_w * ((threshold or 0) / high) if threshold else 8
            parts.append(format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#777" stroke-dasharray="3 2" '
                'class="bar suppressed"/><text x="{}" y="{}" fill="#555">suppressed{}</text>',
                label_w, cy + 4, round(max(box, 2), 1), row_h - 8, round(label_w + max(box, 2) + 6, 1), cy + 16,
                f" (< {_fmt(threshold)})" if threshold else ""))
            description.append(f"{label} suppressed")
        else:
            parts.append(format_html('<rect x="{}" y="{}" width="{}" height="{}" fill="{}" class="bar"/>'
                                     '<text x="{}" y="{}">{}</text>',
                                     label_w, cy + 4, round(plot_w * count / high, 1), row_h - 8, PALETTE[0],
                                     round(label_w + plot_w * count / high + 6, 1), cy + 16, _fmt(count)))
            description.append(f"{label} {_fmt(count)}")
    height = top + row_h * len(bars) + 8
    title = f"Counts of {name} ({len(bars)} categor{'ies' if len(bars) != 1 else 'y'})"
    desc = "Bars of category counts; suppressed cells are marked as suppressed, not drawn as zero: " \
           + "; ".join(description) + "."
    return Chart(slug, title, desc, format_html_join("", "{}", ((p,) for p in parts)), width, height,
                 tables=["counts"])


def csv_rows(table: Table) -> list[list]:
    """A table's rows as CSV cells: numbers at full precision, empty for missing values."""
    def cell(value):
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return repr(value)
        if isinstance(value, str) and value[:1] in FORMULA_STARTS:
            # A spreadsheet would run a label from the data as a formula (CSV injection).
            return "'" + value
        return value

    return [table.header, *([cell(v) for v in row] for row in table.rows)]
