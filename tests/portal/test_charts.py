"""Charts and CSV tables of results (portal/charts.py), drawn from the reference
algorithms' real outputs: each is computed once per module by the local harness on the
bundled gbsg2 data split over three sites, exactly as the nodes would compute it."""

import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest

from portal.charts import csv_rows, picture
from tests.algorithms import pooled
from vantage_algorithms.harness import run_local

SVG = "{http://www.w3.org/2000/svg}"
EXACT = {"VANTAGE_ALLOW_EXACT_EVENT_TIMES": "true"}


@pytest.fixture(scope="module")
def results():
    sites = dict(enumerate(pooled.split(pooled.datasets()["gbsg2"]), start=1))
    survival = {"duration": "time", "event": "cens"}
    return {
        "km_guarded": run_local("reference.kaplan_meier", "kaplan_meier", kwargs={**survival, "group": "horTh"},
                                sites=sites),
        "km_exact": run_local("reference.kaplan_meier", "kaplan_meier",
                              kwargs={**survival, "group": "tgrade", "grid": "exact"}, sites=sites,
                              env={site: EXACT for site in sites}),
        "cox": run_local("reference.cox", "cox", kwargs={**survival, "covariates": ["age", "tsize", "pnodes"],
                                                         "baseline": False}, sites=sites),
        "logistic": run_local("reference.logistic", "logistic", kwargs=pooled.GBSG2_LOGISTIC, sites=sites),
        "crosstab": run_local("reference.crosstab", "crosstab", kwargs={"row": "tgrade", "column": "horTh"},
                              sites=sites),
    }


def _svg(chart) -> ET.Element:
    return ET.fromstring(str(chart.svg(id_prefix="t")))


def test_kaplan_meier_on_the_guarded_grid_draws_one_curve_per_group_and_says_times_were_grouped(results):
    drawn = picture(results["km_guarded"])
    [chart] = drawn.charts
    root = _svg(chart)
    assert root.get("role") == "img" and root.find(f"{SVG}title").text == chart.title
    assert len(root.findall(f".//{SVG}polyline[@class='km-curve']")) == 2
    assert len(root.findall(f".//{SVG}polygon[@class='km-band']")) == 2
    intervals = len(results["km_guarded"]["values"]["grid"]["cut_points"]) + 1
    assert drawn.notice.startswith(f"Times grouped into {intervals} intervals by the sites' disclosure rules")
    assert drawn.notice in root.find(f"{SVG}desc").text
    # Grouped times: no censor marks (their times were not released).
    assert root.findall(f".//{SVG}path[@class='censor']") == []
    # Numbers at risk: exactly the released counts at each interval's start.
    at_risk = [t.text for t in root.findall(f".//{SVG}text[@class='at-risk']")]
    released = [str(int(n)) for g in ("no", "yes") for n in results["km_guarded"]["values"]["groups"][g]["at_risk"]]
    assert at_risk and set(at_risk) <= set(released)
    assert at_risk[0] == released[0]


def test_kaplan_meier_on_exact_times_marks_censoring_and_has_no_grouping_notice(results):
    drawn = picture(results["km_exact"])
    [chart] = drawn.charts
    root = _svg(chart)
    assert drawn.notice == ""
    assert len(root.findall(f".//{SVG}polyline[@class='km-curve']")) == 3
    assert len(root.findall(f".//{SVG}path[@class='censor']")) > 10


def test_the_survival_csv_is_every_curve_row_at_full_precision(results):
    values = results["km_guarded"]["values"]
    table = picture(results["km_guarded"]).table("survival")
    rows = list(csv.reader(io.StringIO(_csv(table))))
    assert rows[0] == ["group", "start", "end", "at_risk", "events", "censored", "survival", "ci_lower", "ci_upper"]
    yes = [row for row in rows[1:] if row[0] == "yes"]
    assert [float(r[6]) for r in yes] == values["groups"]["yes"]["survival"]
    assert yes[-1][2] == ""  # the open last interval has no end


def test_cox_forest_plot_has_one_row_per_covariate_a_reference_line_and_a_labelled_covariance(results):
    drawn = picture(results["cox"])
    [chart] = drawn.charts
    root = _svg(chart)
    rows = root.findall(f".//{SVG}g[@class='forest-row']")
    assert [r.get("data-term") for r in rows] == ["age", "tsize", "pnodes"]
    assert len(root.findall(f".//{SVG}line[@class='reference-line']")) == 1
    assert "log" in root.find(f"{SVG}desc").text
    covariance = drawn.table("covariance")
    assert covariance.header == ["", "age", "tsize", "pnodes"]
    assert [row[0] for row in covariance.rows] == ["age", "tsize", "pnodes"]
    assert covariance.rows[1][2] == results["cox"]["covariance"][1][1]


def test_logistic_forest_plot_shows_odds_ratios_without_the_intercept(results):
    drawn = picture(results["logistic"])
    root = _svg(drawn.chart("forest"))
    terms = [r.get("data-term") for r in root.findall(f".//{SVG}g[@class='forest-row']")]
    assert terms == [t for t in results["logistic"]["terms"] if t != "intercept"]
    assert "odds ratio" in root.find(f"{SVG}title").text


def test_count_bars_show_suppressed_cells_as_suppressed_not_as_zero():
    table = {"type": "count_table", "dimensions": ["grade"], "levels": [["1", "2", "3"]],
             "counts": [30, None, 0], "total": None, "min_cell": 5}
    drawn = picture(table)
    root = _svg(drawn.charts[0])
    assert len(root.findall(f".//{SVG}rect[@class='bar']")) == 2  # 30 and a true zero
    assert len(root.findall(f".//{SVG}rect[@class='bar suppressed']")) == 1
    assert any("suppressed (< 5)" == (t.text or "") for t in root.iter(f"{SVG}text"))
    assert list(csv.reader(io.StringIO(_csv(drawn.table("counts"))))) == [
        ["grade", "count", "suppressed"], ["1", "30", "false"], ["2", "", "true"], ["3", "0", "false"]]


def test_a_two_way_crosstab_is_drawn_one_bar_per_cell(results):
    drawn = picture(results["crosstab"])
    root = _svg(drawn.charts[0])
    cells = len(root.findall(f".//{SVG}rect[@class='bar']")) + len(root.findall(f".//{SVG}rect[@class='bar suppressed']"))
    assert cells == 3 * 2


def test_labels_from_the_data_cannot_add_markup_or_formulas():
    table = {"type": "count_table", "dimensions": ["<script>x</script>"], "levels": [["=cmd()", "</svg><b>"]],
             "counts": [10, 12], "total": 22, "min_cell": 5}
    drawn = picture(table)
    svg = str(drawn.charts[0].svg())
    assert "<script>" not in svg and "</svg><b>" not in svg
    ET.fromstring(svg)  # still well-formed
    assert "'=cmd()" in _csv(drawn.table("counts"))


@pytest.mark.parametrize("value", [
    {"type": "aggregate", "values": {"overall": {"start": [0], "survival": "x"}}},
    {"type": "model", "coefficients": [{"covariate": "a", "hazard_ratio": "nan"}]},
    {"type": "count_table", "dimensions": ["a"], "levels": [["x"]], "counts": [[1]]},
    [1, 2], {"n": 3},
])
def test_other_shapes_are_not_drawn_and_never_fail(value):
    drawn = picture(value)
    assert drawn is None or all(ET.fromstring(str(c.svg())) is not None for c in drawn.charts)


def _csv(table) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(csv_rows(table))
    return out.getvalue()


# ------------------------------------------------------------------ on the task page


def test_task_page_draws_the_chart_and_offers_svg_and_csv_for_the_user_only(
        browser_for, owner, outsider, task, org_a, node_a, finish_run, results):
    run = finish_run(task, org_a, node_a, json.dumps(results["cox"]).encode())
    page = browser_for(owner).get(f"/portal/tasks/{task.pk}/")
    body = page.content.decode()
    assert f'id="chart-{run.pk}-forest"' in body and f'aria-labelledby="run-{run.pk}-forest-title' in body
    assert f'id="covariance-{run.pk}"' in body and '<th scope="row">tsize</th>' in body

    svg = browser_for(owner).get(f"/portal/runs/{run.pk}/charts/forest.svg")
    assert svg.status_code == 200 and svg["Content-Type"].startswith("image/svg+xml")
    assert svg["Content-Disposition"] == f'attachment; filename="run-{run.pk}-forest.svg"'
    assert len(ET.fromstring(svg.content).findall(f".//{SVG}g[@class='forest-row']")) == 3

    table = browser_for(owner).get(f"/portal/runs/{run.pk}/tables/coefficients.csv")
    assert table.status_code == 200 and table["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.content.decode())))
    assert [float(r["hazard_ratio"]) for r in rows] == [c["hazard_ratio"] for c in results["cox"]["coefficients"]]

    for path in ("charts/forest.svg", "tables/coefficients.csv"):
        assert browser_for(outsider).get(f"/portal/runs/{run.pk}/{path}").status_code == 404
    assert browser_for(owner).get(f"/portal/runs/{run.pk}/tables/nothing.csv").status_code == 404
    assert browser_for(owner).get(f"/portal/runs/{run.pk}/charts/survival.svg").status_code == 404


def test_a_result_not_drawn_has_no_chart_downloads(browser_for, owner, task, org_a, node_a, finish_run):
    run = finish_run(task, org_a, node_a, b'{"n": 7}')
    assert browser_for(owner).get(f"/portal/runs/{run.pk}/tables/counts.csv").status_code == 404
    assert b'class="picture"' not in browser_for(owner).get(f"/portal/tasks/{task.pk}/").content
