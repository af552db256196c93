"""The output gate's checks and decisions (nodeagent/gate.py), on files as a container
writes them; the reference algorithms' own outputs must pass it untouched."""

import json
import random
import tracemalloc

import pytest

from nodeagent import gate
from demo import network, study
from nodeagent.config import OutputPolicy
from tests.algorithms import pooled
from vantage_algorithms import harness
from vantage_algorithms.outputs import Aggregate, CountTable, Intermediate, Model
from vantage_algorithms.policy import SETTINGS

POLICY = OutputPolicy()
T = gate.Thresholds()


def examine(tmp_path, value, policy=POLICY, thresholds=T):
    path = tmp_path / "output"
    path.write_text(json.dumps(value) if not isinstance(value, str) else value)
    return gate.examine(path, policy, thresholds)


def decide(tmp_path, value, *, status="completed", log="", policy=POLICY):
    path = tmp_path / "output"
    path.write_text(json.dumps(value) if not isinstance(value, str) else value)
    return gate.decide(status=status, output=path, container_log=log, policy=policy, thresholds=T)


def test_the_gate_reads_the_toolkits_settings_with_the_same_defaults():
    toolkit = {name: default for name, _, default in SETTINGS}
    for name, field_name, default in gate.THRESHOLD_SETTINGS:
        assert toolkit[name] == default
        assert getattr(gate.Thresholds(), field_name) == default


def test_thresholds_come_from_the_nodes_algorithm_env():
    assert gate.Thresholds.from_env({"VANTAGE_MIN_CELL": "11", "VANTAGE_MIN_ROWS": "x"}) == \
        gate.Thresholds(min_rows=10, min_cell=11)


def test_a_count_table_cell_the_container_forgot_to_suppress_is_flagged(tmp_path):
    table = CountTable(["sex"], [["f", "m"]], [[2, 40]][0], 42, 5).to_json()  # built raw, not .suppressed
    kind, _, flags = examine(tmp_path, table)
    assert kind == "count_table" and any("below this node's min_cell 5" in f for f in flags)


def test_a_count_table_checked_against_the_nodes_own_min_cell_not_the_containers(tmp_path):
    table = CountTable.suppressed(["sex"], [["f", "m"]], [7, 40], min_cell=5).to_json()
    assert examine(tmp_path, table)[2] == []
    _, _, flags = examine(tmp_path, table, thresholds=gate.Thresholds(min_cell=10))
    assert any("counts 7 below this node's min_cell 10" in f for f in flags)


def test_a_line_hiding_exactly_one_cell_is_flagged(tmp_path):
    table = {"type": "count_table", "dimensions": ["a", "b"], "levels": [["1", "2"], ["x", "y"]],
             "counts": [[None, 20], [30, 40]], "total": None, "min_cell": 5}
    assert any("hides exactly one cell" in f for f in examine(tmp_path, table)[2])


def test_counts_that_do_not_match_the_levels_are_flagged(tmp_path):
    table = {"type": "count_table", "levels": [["1", "2"]], "counts": [1, 2, 3]}
    assert any("shape of its levels" in f for f in examine(tmp_path, table)[2])


def test_an_aggregate_over_three_rows_is_flagged(tmp_path):
    _, _, flags = examine(tmp_path, Aggregate({"mean_age": 61.3}, 3).to_json())
    assert flags == ["aggregate: an aggregate over 3 units, fewer than this node's min_rows 10"]


def test_a_list_as_long_as_the_units_inside_an_aggregate_is_flagged(tmp_path):
    ages = [random.randint(30, 90) for _ in range(40)]
    _, _, flags = examine(tmp_path, Aggregate({"ages": ages}, 40).to_json())
    assert any("one per person" in f for f in flags)


def test_long_text_inside_a_typed_output_is_flagged(tmp_path):
    rows = "id,age,diagnosis\n" + "\n".join(f"{i},{50 + i},C50" for i in range(20))
    _, _, flags = examine(tmp_path, Aggregate({"note": rows}, 100).to_json())
    assert any("more than this node's max_string" in f for f in flags)


def test_a_nested_typed_output_is_checked_too(tmp_path):
    inner = Aggregate({"mean": 1.0}, 2).to_json()
    _, _, flags = examine(tmp_path, Aggregate({"columns": {"age": inner}}, 100).to_json())
    assert any("over 2 units" in f for f in flags)


def test_a_model_with_too_few_residual_degrees_of_freedom_is_flagged(tmp_path):
    model = Model("logistic", 20, 3, {"coefficients": [0.1, 0.2]}).to_json()
    assert any("3 residual degrees of freedom" in f for f in examine(tmp_path, model)[2])


def test_an_intermediate_with_one_value_per_person_is_flagged(tmp_path):
    per_person = Intermediate(12, arrays={"residuals": [0.1] * 12}).to_json()
    assert any("one value per person" in f for f in examine(tmp_path, per_person)[2])
    fine = Intermediate(500, arrays={"gradient": [0.1] * 4, "information": [[1.0] * 4] * 4}).to_json()
    assert examine(tmp_path, fine) == ("intermediate", (tmp_path / "output").stat().st_size, [])


def test_an_intermediate_may_stack_matrices_but_not_go_deeper(tmp_path):
    per_interval = Intermediate(500, arrays={"information": [[[1.0] * 3] * 3] * 4}).to_json()
    assert examine(tmp_path, per_interval)[2] == []
    deeper = Intermediate(500, arrays={"cube": [[[[1.0] * 2] * 2] * 2] * 2}).to_json()
    assert any("4 axes" in f for f in examine(tmp_path, deeper)[2])


def test_an_intermediate_whose_values_do_not_have_its_declared_shape_is_flagged(tmp_path):
    value = Intermediate(500, arrays={"gradient": [0.1] * 4}).to_json()
    value["shapes"]["gradient"] = [2]
    assert any("declared shape" in f for f in examine(tmp_path, value)[2])


def test_a_typed_output_over_its_size_cap_is_flagged(tmp_path):
    policy = OutputPolicy(max_sizes={**POLICY.max_sizes, "aggregate": 1024})
    big = Aggregate({f"k{i}": i for i in range(300)}, 1000).to_json()
    assert any("more than this node's cap for a aggregate" in f for f in examine(tmp_path, big, policy)[2])


def test_untyped_and_non_json_outputs_are_opaque(tmp_path):
    assert examine(tmp_path, {"rows": 3})[0] == "opaque"
    assert examine(tmp_path, [1, 2])[0] == "opaque"
    assert examine(tmp_path, "id,age\n1,50\n")[0] == "opaque"


def test_a_large_output_is_opaque_and_never_parsed_in_the_agent(tmp_path):
    path = tmp_path / "output"
    with open(path, "w") as fh:
        fh.write('{"type": "aggregate", "n": 100, "values": {"x": [')
        fh.write(",".join(["1.5"] * 4_000_000))
        fh.write("]}}")
    tracemalloc.start()
    kind, size, flags = gate.examine(path, POLICY, T)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert kind == "opaque" and size > max(POLICY.max_sizes.values())
    assert peak < 1024**2, f"examining a {size}-byte output took {peak} bytes"
    assert "more than any typed output may be" in flags[0]


@pytest.mark.parametrize("opaque, action", [("hold", "hold"), ("refuse", "refuse"), ("release", "release")])
def test_opaque_outputs_follow_the_nodes_opaque_policy(tmp_path, opaque, action):
    verdict = decide(tmp_path, {"rows": [[1, "C50"]]}, policy=OutputPolicy(opaque=opaque))
    assert (verdict.action, verdict.output_type) == (action, "opaque")


def test_a_new_nodes_default_holds_opaque_outputs_and_failed_checks(tmp_path):
    assert decide(tmp_path, {"rows": 1}).action == "hold"
    assert decide(tmp_path, Aggregate({"m": 1.0}, 3).to_json()).action == "hold"


def test_failed_checks_are_never_released_unseen_even_where_opaque_outputs_are(tmp_path):
    verdict = decide(tmp_path, Aggregate({"m": 1.0}, 3).to_json(), policy=OutputPolicy(opaque="release"))
    assert verdict.action == "hold"
    refused = decide(tmp_path, Aggregate({"m": 1.0}, 3).to_json(), policy=OutputPolicy(failed_checks="refuse"))
    assert refused.action == "refuse"


def test_intermediates_that_pass_are_released_unless_the_node_holds_them(tmp_path):
    value = Intermediate(500, arrays={"gradient": [0.1] * 4}).to_json()
    assert decide(tmp_path, value).action == "release"
    assert decide(tmp_path, value, policy=OutputPolicy(intermediates="hold")).action == "hold"


@pytest.mark.parametrize("logs, status, action", [
    ("gate", "completed", "hold"), ("release", "completed", "release"), ("never", "crashed", "withhold"),
    ("on_failure", "completed", "withhold"), ("on_failure", "crashed", "release"),
])
def test_the_log_follows_the_log_policy(tmp_path, logs, status, action):
    verdict = decide(tmp_path, Aggregate({"m": 1.0}, 100).to_json(), status=status, log="1,Jane,1961-02-03\n",
                     policy=OutputPolicy(logs=logs))
    assert verdict.log_action == action
    assert verdict.holds == (action == "hold")


def test_a_typed_output_that_passes_with_an_empty_log_is_released(tmp_path):
    verdict = decide(tmp_path, Aggregate({"m": 1.0}, 100).to_json(), log="")
    assert (verdict.action, verdict.log_action, verdict.flags) == ("release", "release", [])


def test_a_bounded_log_keeps_the_last_lines_and_says_how_many_stayed():
    text = "".join(f"line {i}\n" for i in range(10))
    bounded = gate.bounded_log(text, 3)
    assert bounded.splitlines() == [
        "[node] 7 earlier line(s) of the algorithm's log stay at this node ([output] log_max_lines = 3)",
        "line 7", "line 8", "line 9"]
    assert gate.bounded_log("a\n", 0).startswith("[node] 1 earlier")


@pytest.mark.parametrize("seed", range(25))
def test_suppression_leaves_no_small_cell_and_no_line_hiding_one_cell(seed):
    rng = random.Random(seed)
    rows, columns = rng.randint(1, 5), rng.randint(1, 5)
    counts = [[rng.choice([0, 1, 2, 3, 4, 6, 9, 30]) for _ in range(columns)] for _ in range(rows)]
    raw = {"type": "count_table", "dimensions": ["a", "b"], "levels": [list("pqrst"[:rows]), list("vwxyz"[:columns])],
           "counts": counts, "total": sum(map(sum, counts)), "min_cell": 1}
    suppressed, _ = gate.suppress({"type": "aggregate", "n": 99, "values": {"table": raw}}, 5)
    table = suppressed["values"]["table"]
    cells = gate._cells(table["counts"], (rows, columns))
    assert all(c is None or c == 0 or c >= 5 for c in cells.values())
    assert not gate._lone_hidden_lines(cells, (rows, columns))
    hidden = [k for k, c in cells.items() if c is None]
    assert table["suppressed_cells"] == len(hidden)
    if len(hidden) == 1 or (hidden and 1 in (rows, columns)):
        assert table["total"] is None
    # What the toolkit would have released hides at least as much where it hides at all.
    toolkit = CountTable.suppressed(["a", "b"], raw["levels"], counts, min_cell=5).to_json()
    small = {k for k, c in gate._cells(counts, (rows, columns)).items() if 0 < c < 5}
    assert small <= set(hidden)
    assert sum(1 for row in toolkit["counts"] for c in row if c is None) >= len(small)


# ---------------------------------------------------------------- the reference algorithms


def _outputs_of(monkeypatch, module, method, kwargs, sites, env=None):
    """Every partial output and the central output of a local run, as each node's gate sees them."""
    seen = []
    original = harness.LocalClient.fan_out

    def recording(self, request, organizations):  # observes the real harness, changes nothing
        results = original(self, request, organizations)
        seen.extend(results)
        return results

    monkeypatch.setattr(harness.LocalClient, "fan_out", recording)
    seen.append(harness.run_local(module, method, kwargs=kwargs, sites=sites, env=env or {}))
    return seen


REFERENCE_RUNS = {
    "summary": ("reference.summary", "summary", {"columns": ["age", "tsize", "horTh", "tgrade"],
                                                 "categorical": ["horTh", "tgrade"]}, "gbsg2", {}),
    "crosstab": ("reference.crosstab", "crosstab", {"row": "horTh", "column": "tgrade"}, "gbsg2", {}),
    "logistic": ("reference.logistic", "logistic", pooled.GBSG2_LOGISTIC, "gbsg2", {}),
    "cox": ("reference.cox", "cox", {"duration": "time", "event": "cens", "covariates": ["age", "tsize", "horTh"],
                                     "categories": {"horTh": pooled.GBSG2_LEVELS["horTh"]}}, "gbsg2", {}),
    "kaplan_meier": ("reference.kaplan_meier", "kaplan_meier", {"duration": "time", "event": "cens",
                                                                "group": "horTh"}, "gbsg2", {}),
}
# The demo study's own analyses (demo/study.py), which its nodes release without a steward.
REFERENCE_RUNS.update({
    f"demo_{analysis.name}": (f"reference.{analysis.name}", analysis.method, analysis.kwargs, "demo", {})
    for analysis in study.analyses()
})


@pytest.mark.parametrize("name", sorted(REFERENCE_RUNS))
def test_the_reference_algorithms_outputs_pass_the_gate_under_the_same_defaults(tmp_path, monkeypatch, name):
    module, method, kwargs, label, env = REFERENCE_RUNS[name]
    if label == "demo":  # the demo hospitals' own files
        sites = dict(zip((11, 12, 13), sorted(network.DATA_DIR.glob("*.csv")), strict=True))
    else:
        sites = dict(zip((11, 12, 13), pooled.split(pooled.datasets()[label])))
    outputs = _outputs_of(monkeypatch, module, method, kwargs, sites, env)
    assert len(outputs) > 1
    for number, output in enumerate(outputs):
        kind, _, flags = examine(tmp_path, output)
        assert kind in gate.TYPED, f"output {number} of {name} is not typed: {str(output)[:200]}"
        assert flags == [], f"output {number} ({kind}) of {name}: {flags}"


def test_check_warns_when_untyped_outputs_leave_unchecked_or_nobody_can_review_held_ones(tmp_path):
    from nodeagent import checks
    from nodeagent.config import parse

    def findings(output, steward=None):
        raw = {"task_folder": str(tmp_path), "server": {"url": "http://127.0.0.1:1", "api_key": "k"},
               "output": output}
        if steward:
            raw["steward"] = steward
        return [(f.level, f.topic) for f in checks.check_output(parse(raw, source="n", base_dir=tmp_path))]

    assert findings({"opaque": "release", "logs": "release", "failed_checks": "refuse"}) == [
        ("warn", "output"), ("warn", "output")]
    assert ("warn", "steward") in findings({})
    assert findings({}, {"password_hash": "scrypt$16384$8$1$c2FsdA==$aGFzaA=="}) == [("ok", "output")]


def test_malformed_typed_outputs_are_flagged_not_fatal(tmp_path):
    table = {"type": "count_table", "levels": [["a", "b"]], "counts": ["x", 10]}
    assert any("not a whole number" in f for f in examine(tmp_path, table)[2])
    deep = {"type": "aggregate", "n": 100, "values": {}}
    inner = deep["values"]
    for _ in range(900):  # as deep as json.dumps goes: checked, not a crash of the agent
        inner["k"] = {}
        inner = inner["k"]
    assert examine(tmp_path, deep) == ("aggregate", (tmp_path / "output").stat().st_size, [])
    assert examine(tmp_path, {"type": "aggregate"})[2] == ["aggregate: n is missing or not a whole number"]
