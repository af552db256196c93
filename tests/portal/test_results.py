"""How the task page draws results: the toolkit's typed outputs and plain JSON as tables."""

from html.parser import HTMLParser

from portal.templatetags.portal_tags import MAX_ROWS, render_result
from vantage_algorithms import outputs


class Tables(HTMLParser):
    """The tables of a fragment as [caption, [[cell text, ...], ...]], outermost first.

    A cell's text is its own: the text of a table nested in it belongs to that table."""

    def __init__(self, html: str):
        super().__init__()
        self.tables, self._open = [], []  # _open: [table, text of its current cell or None]
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append(["", []])
            self._open.append([self.tables[-1], None])
        elif tag == "tr":
            self._open[-1][0][1].append([])
        elif tag in ("td", "th", "caption"):
            self._open[-1][1] = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._open.pop()
        elif tag in ("td", "th"):
            table, text = self._open[-1]
            table[1][-1].append(text.strip())
            self._open[-1][1] = None
        elif tag == "caption":
            self._open[-1][0][0], self._open[-1][1] = self._open[-1][1].strip(), None

    def handle_data(self, data):
        if self._open and self._open[-1][1] is not None:
            self._open[-1][1] += data


def _tables(value) -> list:
    return Tables(str(render_result(value))).tables


def test_a_model_shows_its_terms_as_columns_and_its_statistics_as_rows():
    model = outputs.Model("logistic", n=120, residual_df=117, values={
        "terms": ["intercept", "age"], "coefficients": [0.5, -0.0123456789], "standard_errors": [0.1, 0.002],
        "loglik": -70.25, "converged": True, "covariance": [[0.01, 0.0], [0.0, 4e-06]],
    }).to_json()
    [statistics, covariance, terms] = _tables(model)
    assert statistics[0] == "model"
    assert statistics[1][:4] == [["model", "logistic"], ["n", "120"], ["residual_df", "117"], ["loglik", "-70.25"]]
    assert covariance[1] == [["0.01", "0"], ["0", "4e-06"]]
    assert terms[1] == [["terms", "coefficients", "standard_errors"],
                        ["intercept", "0.5", "0.1"], ["age", "-0.0123457", "0.002"]]


def test_a_two_way_count_table_is_a_crosstab_with_its_suppressed_cells_marked():
    # Built as released (cells already suppressed): what is suppressed is the toolkit's policy, not the page's.
    table = outputs.CountTable(["grade", "horTh"], [["1", "2"], ["no", "yes"]], [[30, None], [40, None]],
                               total=85, min_cell=5).to_json()
    html = str(render_result(table))
    [crosstab] = Tables(html).tables
    assert crosstab == ["count_table", [["grade \\ horTh", "no", "yes"], ["1", "30", "<5"], ["2", "40", "<5"]]]
    assert "total 85; cells under 5 suppressed" in html


def test_a_one_way_count_table_lists_levels_and_counts():
    table = outputs.CountTable(["menostat"], [["pre", "post"]], [290, 396], total=686, min_cell=5).to_json()
    assert _tables(table) == [["count_table", [["menostat", "count"], ["pre", "290"], ["post", "396"]]]]


def test_summary_statistics_per_column_are_one_row_each():
    aggregate = outputs.Aggregate({"columns": {
        "age": {"kind": "numeric", "n": 686, "mean": 53.05247813411079, "variance": 101.07},
        "horTh": {"kind": "categorical", "n": 686, "levels": ["no", "yes"], "counts": [440, 246]},
        "tsize": {"kind": "numeric", "n": 686, "mean": 29.3294, "variance": 214.3, "min": 3},
    }}, n=686).to_json()
    tables = _tables(aggregate)
    assert tables[0] == ["aggregate", [["n", "686"], ["columns", ""]]]  # the values beside n, not nested
    numeric = next(rows for _caption, rows in tables if rows[0][0] == "")
    assert numeric == [["", "kind", "n", "mean", "variance", "min"],
                       ["age", "numeric", "686", "53.0525", "101.07", "–"],
                       ["tsize", "numeric", "686", "29.3294", "214.3", "3"]]
    levels = next(rows for _caption, rows in tables if rows[0] == ["levels", "counts"])
    assert levels[1:] == [["no", "440"], ["yes", "246"]]


def test_a_list_of_records_is_one_table():
    rows = [{"time": 1.5, "at_risk": 30, "events": 2}, {"time": 3.0, "at_risk": 28, "events": 1}]
    assert _tables(rows) == [["", [["time", "at_risk", "events"], ["1.5", "30", "2"], ["3", "28", "1"]]]]


def test_long_tables_stop_at_the_row_limit_and_say_so():
    html = str(render_result({"time": list(range(MAX_ROWS + 5)), "survival": [1.0] * (MAX_ROWS + 5)}))
    assert len(Tables(html).tables[0][1]) == MAX_ROWS + 1
    assert "5 more rows: download the result" in html


def test_nothing_in_a_result_becomes_markup():
    html = str(render_result({"<b>x</b>": ["<script>alert(1)</script>", "<i>"],
                              "type": "<img src=x onerror=alert(2)>", "nested": {"a": "<u>"}}))
    assert "<script>" not in html and "<img" not in html and "<u>" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html


def test_deep_values_end_as_indented_json():
    deep = {"a": {"b": {"c": {"d": {"e": [1, {"f": 2}]}}}}}
    assert '<pre>{\n  &quot;e&quot;: [\n    1,' in str(render_result(deep))


def test_odd_shapes_claiming_a_type_are_drawn_generically_and_never_fail():
    odd = [
        {"type": "count_table", "dimensions": ["a"], "levels": "x", "counts": [1]},
        {"type": "count_table", "dimensions": ["a"], "levels": [[1, 2]], "counts": [[1], [2]]},
        {"type": "count_table", "dimensions": ["a", "b"], "levels": [["x"], ["y", "z"]], "counts": [[1]]},
        {"type": "count_table", "dimensions": ["a", "b", "c"], "levels": [[], [], []], "counts": []},
        {"type": "aggregate", "n": 3, "values": {"n": 4}},
        {"type": 7, "values": []},
        [[1, 2], [3]], [{}], {"": None}, [[]],
    ]
    for value in odd:
        assert str(render_result(value)).startswith(("<table", "<span", "<pre"))
    assert _tables(odd[0]) == [["count_table", [["levels", "x"]]], ["", [["dimensions", "counts"], ["a", "1"]]]]
