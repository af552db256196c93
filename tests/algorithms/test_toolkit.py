"""The algorithm toolkit's own parts: policy, encoding, typed outputs, dispatch, the
container entry point (run as a process with the contract's encoded env and files)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nodeagent import contract as node_contract
from vantage_algorithms import AlgorithmError, DisclosureError, Policy, PolicyError, methods, outputs
from vantage_algorithms.encoding import decode_environment, decode_value, encode_value

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_policy_defaults_are_the_safe_ones():
    policy = Policy.from_env({})
    assert (policy.min_rows, policy.min_cell, policy.min_leavers, policy.min_events) == (10, 5, 5, 10)
    assert policy.allow_exact_event_times is False and policy.allow_min_max is False
    assert policy.allow_sql_query is False


def test_policy_reads_every_setting_from_the_env():
    policy = Policy.from_env({"VANTAGE_MIN_ROWS": "20", "VANTAGE_MIN_CELL": "3", "VANTAGE_MIN_RISKSET_LEAVERS": "7",
                              "VANTAGE_MIN_EVENTS": "15", "VANTAGE_ALLOW_EXACT_EVENT_TIMES": "true",
                              "VANTAGE_ALLOW_MIN_MAX": "yes", "VANTAGE_ALLOW_SQL_QUERY": "1", "OTHER": "ignored"})
    assert policy == Policy(min_rows=20, min_cell=3, min_leavers=7, min_events=15, allow_exact_event_times=True,
                            allow_min_max=True, allow_sql_query=True)


@pytest.mark.parametrize("env, message", [
    ({"VANTAGE_MIN_ROWS": "ten"}, "VANTAGE_MIN_ROWS must be a whole number of at least 1, not 'ten'"),
    ({"VANTAGE_MIN_CELL": "0"}, "VANTAGE_MIN_CELL must be a whole number of at least 1, not '0'"),
    ({"VANTAGE_ALLOW_MIN_MAX": "maybe"}, "VANTAGE_ALLOW_MIN_MAX must be true or false, not 'maybe'"),
    ({"VANTAGE_MIN_CELLS": "10"}, "unknown disclosure setting VANTAGE_MIN_CELLS in the node's algorithm_env"),
])
def test_a_malformed_or_misspelt_policy_setting_is_an_error_not_a_silent_default(env, message):
    with pytest.raises(PolicyError, match=message):
        Policy.from_env(env)


def test_policy_guards_say_what_and_which_setting():
    policy = Policy(min_rows=10, min_cell=5, min_events=10)
    policy.require_rows(10)
    with pytest.raises(DisclosureError, match=r"this site has 9 rows, fewer than its policy's minimum of 10 "
                                              r"\(VANTAGE_MIN_ROWS\)"):
        policy.require_rows(9)
    policy.require_cell(0, "events")
    with pytest.raises(DisclosureError, match="4 events.*minimum cell count of 5"):
        policy.require_cell(4, "events")
    with pytest.raises(DisclosureError, match="VANTAGE_MIN_EVENTS"):
        policy.require_events(3)
    assert [policy.suppress(n) for n in (0, 1, 4, 5, 9)] == [0, None, None, 5, 9]


def test_encoding_is_the_nodes_and_skips_plain_variables():
    for value in ("a=", "/mnt/data/x.csv", "é ü 5"):
        assert encode_value(value) == node_contract.encode_value(value)
        assert decode_value(node_contract.encode_value(value)) == value
    env = {"INPUT_FILE": encode_value("/mnt/run/input"), "PATH": "/usr/bin:/bin"}
    assert decode_environment(env) == {"INPUT_FILE": "/mnt/run/input"}


def test_to_jsonable_converts_numpy_and_typed_outputs_and_drops_non_finite_numbers():
    value = {"a": np.float64(1.5), "b": np.arange(3), "c": [np.int32(2), np.bool_(True)], "d": float("nan"),
             "e": outputs.Aggregate({"mean": np.float32(0.5)}, n=np.int64(12))}
    assert outputs.to_jsonable(value) == {"a": 1.5, "b": [0, 1, 2], "c": [2, True], "d": None,
                                          "e": {"type": "aggregate", "n": 12, "values": {"mean": 0.5}}}
    with pytest.raises(TypeError, match="contains a object"):
        outputs.to_jsonable({"x": object()})


def test_count_table_suppresses_small_cells_and_one_more_when_only_one_was_small():
    table = outputs.CountTable.suppressed(["grade"], [["I", "II", "III", "IV"]], [3, 40, 12, 0], min_cell=5)
    # 3 alone would follow from the total minus the others; the next smallest (12) goes too.
    assert table.to_json() == {"type": "count_table", "dimensions": ["grade"], "levels": [["I", "II", "III", "IV"]],
                               "counts": [None, 40, None, 0], "total": 55, "min_cell": 5, "suppressed_cells": 2}
    zero = outputs.CountTable.suppressed(["a"], [["x", "y"]], [3, 0], min_cell=5)
    assert zero.counts == [None, None] and zero.total == 3  # 3 rows in x or y: which, unknown
    alone = outputs.CountTable.suppressed(["a"], [["x"]], [3], min_cell=5)
    assert alone.counts == [None] and alone.total is None


def test_count_table_leaves_no_row_or_column_with_one_hidden_cell():
    # (yes, I) = 3 is small; a margin from another query (all "yes", all "I") would give it
    # back unless its row and its column each hide one more cell, and then those lines too.
    table = outputs.CountTable.suppressed(["horTh", "tgrade"], [["no", "yes"], ["I", "II", "III"]],
                                          [[20, 150, 60], [3, 80, 30]], min_cell=5)
    hidden = np.array([[c is None for c in row] for row in table.counts])
    assert hidden[1, 0]
    for line in [*hidden, *hidden.T]:
        assert line.sum() != 1
    assert table.counts == [[None, 150, None], [None, 80, None]] and table.total == 343
    none = outputs.CountTable.suppressed(["a", "b"], [["x", "y"], ["u", "v"]], [[10, 20], [30, 40]], min_cell=5)
    assert none.suppressed_cells == 0 and none.total == 100


def test_intermediate_and_model_say_their_shape_and_units():
    out = outputs.Intermediate(n=50, arrays={"gradient": np.zeros(3), "information": np.eye(3)},
                               scalars={"loglik": -3.5}).to_json()
    assert out["type"] == "intermediate" and out["shapes"] == {"gradient": [3], "information": [3, 3]}
    assert out["n"] == 50 and out["scalars"] == {"loglik": -3.5}
    model = outputs.Model("logistic", n=100, residual_df=97, values={"coef": np.ones(3)}).to_json()
    assert model == {"type": "model", "model": "logistic", "n": 100, "residual_df": 97, "coef": [1.0, 1.0, 1.0]}


def test_a_model_value_cannot_replace_the_models_name_or_units():
    with pytest.raises(ValueError, match="may not be named model"):
        outputs.Model("cox_ph", n=10, residual_df=8, values={"model": "stratified"}).to_json()


def test_task_input_may_not_carry_policy_settings():
    with pytest.raises(AlgorithmError, match="min_cell: disclosure settings come from each node's policy"):
        methods.parse_request({"method": "summary", "kwargs": {"min_cell": 1}})
    with pytest.raises(AlgorithmError, match="VANTAGE_MIN_ROWS"):
        methods.parse_request({"method": "summary", "kwargs": {"VANTAGE_MIN_ROWS": "1"}})


@pytest.mark.parametrize("request_, message", [
    ([], "must be a JSON object with a method name"),
    ({"method": 3}, "must be a JSON object with a method name"),
    ({"method": "x", "args": {}}, "args must be a list and kwargs an object"),
])
def test_malformed_task_input_is_one_sentence(request_, message):
    with pytest.raises(AlgorithmError, match=message):
        methods.parse_request(request_)


def test_unknown_method_and_wrong_arguments_are_named():
    module = methods.load_module("reference.summary")
    with pytest.raises(AlgorithmError, match=r"reference.summary has no method 'merge_moments' \(it offers summary, "
                                             r"summary_site\)"):
        methods.find_method(module, "merge_moments")
    fn = methods.find_method(module, "summary_site")
    with pytest.raises(AlgorithmError, match="method summary_site: got an unexpected keyword argument 'colums'"):
        methods.check_arguments(fn, [], {"colums": ["age"]})
    with pytest.raises(AlgorithmError, match="no algorithm module 'reference.nothing'"):
        methods.load_module("reference.nothing")


def test_split_kwargs_takes_the_data_selection_and_a_central_methods_organisations():
    module = methods.load_module("reference.summary")
    kwargs, selection, orgs = methods.split_kwargs(methods.find_method(module, "summary"),
                                                   {"columns": ["a"], "table": "patients", "organizations": [2, 3]})
    assert (kwargs, selection, orgs) == ({"columns": ["a"]}, {"table": "patients"}, [2, 3])
    with pytest.raises(AlgorithmError, match="organizations must be a non-empty list of organisation ids"):
        methods.split_kwargs(methods.find_method(module, "summary"), {"organizations": ["A"]})


class Run:
    """The files and encoded environment a node gives one container, in a folder."""

    def __init__(self, folder: Path, request: dict, data: pd.DataFrame | None = None, env: dict | None = None):
        self.folder = folder
        (folder / "input").write_text(json.dumps(request))
        (folder / "output").write_text("")
        plain = {"INPUT_FILE": str(folder / "input"), "OUTPUT_FILE": str(folder / "output"),
                 "TOKEN_FILE": str(folder / "token"), "TEMPORARY_FOLDER": str(folder),
                 "HOST": "http://127.0.0.1", "PORT": "1", "API_PATH": "",
                 "USER_REQUESTED_DATABASE_LABELS": "", "DB_LABELS": "default"}
        if data is not None:
            data.to_csv(folder / "data.csv", index=False)
            plain.update(USER_REQUESTED_DATABASE_LABELS="default", DEFAULT_DATABASE_URI=str(folder / "data.csv"),
                         DEFAULT_DATABASE_TYPE="csv")
        plain.update(env or {})
        self.env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT / "algorithms"),
                    **{name: encode_value(value) for name, value in plain.items()}}

    def __call__(self, module: str = "reference.summary") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vantage_algorithms", module], env=self.env,
                              capture_output=True, text=True, timeout=60)

    def output(self):
        return json.loads((self.folder / "output").read_text())


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"age": np.arange(n, dtype=float) + 40, "grade": ["I", "II"] * (n // 2) + ["I"] * (n % 2)})


def test_container_entry_runs_a_partial_on_the_requested_database_and_writes_json(tmp_path):
    run = Run(tmp_path, {"method": "summary_site", "kwargs": {"columns": ["age"]}}, frame(12))
    done = run()
    assert done.returncode == 0, done.stderr
    stats = run.output()["values"]["columns"]["age"]["stats"]
    assert stats == {"type": "aggregate", "n": 12, "values": {"mean": 45.5, "m2": 143.0}}


def test_container_entry_refuses_by_the_nodes_policy_with_exit_3_and_one_line(tmp_path):
    run = Run(tmp_path, {"method": "summary_site", "kwargs": {}}, frame(12), env={"VANTAGE_MIN_ROWS": "20"})
    done = run()
    assert done.returncode == 3
    assert done.stderr.strip() == ("refused by this site's disclosure policy: this site has 12 rows, fewer than "
                                   "its policy's minimum of 20 (VANTAGE_MIN_ROWS)")
    assert (tmp_path / "output").read_text() == ""


def test_container_entry_rejects_policy_in_the_task_input_even_when_it_would_loosen_nothing(tmp_path):
    run = Run(tmp_path, {"method": "summary_site", "kwargs": {"min_rows": 1}}, frame(5))
    done = run()
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: min_rows: disclosure settings come from each node's policy, never from "
                                   "the task input")


@pytest.mark.parametrize("request_, data, message", [
    ({"method": "summary_site", "kwargs": {"columns": ["weight"]}}, True, "error: no column 'weight' in this site's data"),
    ({"method": "summary_site"}, False, "error: method summary_site reads data: the task must name a database"),
    ({"method": "nope"}, True, "error: reference.summary has no method 'nope' (it offers summary, summary_site)"),
])
def test_container_entry_ends_bad_requests_with_exit_2_and_one_line(tmp_path, request_, data, message):
    done = Run(tmp_path, request_, frame(12) if data else None)()
    assert done.returncode == 2 and done.stderr.strip() == message


def test_an_unexpected_failure_exits_1_and_keeps_the_message_out_of_the_log(tmp_path):
    secret = pd.DataFrame({"age": ["Jane Doe"] * 12})
    run = Run(tmp_path, {"method": "summary_site", "kwargs": {"columns": ["age"], "table": "x"}}, secret)
    done = run()
    assert done.returncode == 2 and "table and query apply to SQL databases" in done.stderr
    (tmp_path / "input").write_text(json.dumps({"method": "summary_site", "kwargs": {}}))
    (tmp_path / "data.csv").write_bytes(b"\xff\xfe\x00broken")
    done = run()
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: the algorithm failed with UnicodeDecodeError")
    assert "broken" not in done.stderr


def _polls(answer_at: float, *, first: bool, expected: float | None) -> tuple[int, float]:
    """(polls, seconds past the answer) of a subtask that answers `answer_at` seconds after
    its creation, polled on client.next_poll's schedule (each poll taken as instant)."""
    from vantage_algorithms.client import next_poll

    elapsed, delay, polls = 0.0, 0.0, 0
    while True:
        delay = next_poll(elapsed, first=first, expected=expected, delay=delay)
        elapsed += delay
        polls += 1
        if elapsed >= answer_at:
            return polls, elapsed - answer_at


def test_a_warm_round_is_polled_around_when_it_is_due_and_seen_within_one_quick_poll():
    from vantage_algorithms.client import QUICK_POLL

    for took in (0.1, 0.15, 0.3):
        polls, late = _polls(took, first=False, expected=took)
        assert late <= QUICK_POLL + 1e-9
        assert polls <= 2 + (0.3 * took) / QUICK_POLL + 1  # one sleep to 70 %, quick polls after
    # A round slower than the quickest so far is still seen within one quick poll while it is
    # within QUICK_FOR of that, and the client never sleeps more than MAX_POLL after that.
    polls, late = _polls(0.8, first=False, expected=0.1)
    assert late <= QUICK_POLL + 1e-9


def test_a_first_round_is_polled_less_often_than_warm_rounds_and_seen_within_one_first_poll():
    from vantage_algorithms.client import FIRST_POLL, MAX_POLL, QUICK_POLL

    polls, late = _polls(2.0, first=True, expected=None)
    assert late <= FIRST_POLL + 1e-9
    assert polls <= 2.0 / FIRST_POLL + 1 < 2.0 / QUICK_POLL
    _, late = _polls(30.0, first=True, expected=None)  # a round of containers, not workers
    assert late <= MAX_POLL + 1e-9
