"""The reference algorithms through the real network: server, three node agents, containers.

Each result is compared with the pooled computation on the same rows (pandas for summary
and crosstab, statsmodels Logit for logistic regression): counts exact, everything else
within 1e-8 absolute + 1e-8 relative.
"""

import re
import time

import numpy as np
import pandas as pd
import pytest

from tests.algorithms import pooled

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]

GBSG2_COLUMNS = ["age", "tsize", "pnodes", "progrec", "estrec", "time", "cens", "horTh", "menostat", "tgrade"]


def whole(network, label: str) -> pd.DataFrame:
    return pd.concat(network.sites[label], ignore_index=True)


def algorithm_line(run: dict) -> str:
    """The algorithm's last line in a run's log (the node adds its own after it)."""
    return [line for line in run["log"].splitlines() if line.strip() and not line.startswith("[node]")][-1]


def test_summary_of_gbsg2_equals_the_pooled_statistics(algorithm_network):
    started = time.monotonic()
    result = algorithm_network.run("summary", "summary", {"columns": GBSG2_COLUMNS, "categorical": ["cens"]},
                                   "gbsg2")
    print(f"summary through three nodes: {time.monotonic() - started:.1f} s")
    assert result["values"]["organizations"] == sorted(algorithm_network.organizations)
    pooled.assert_matches_summary(result, whole(algorithm_network, "gbsg2"), GBSG2_COLUMNS, min_max=True)
    assert result["values"]["columns"]["tgrade"]["counts"] == [81, 444, 161]


def test_summary_of_lung_counts_missing_values_exactly(algorithm_network):
    columns = ["age", "ph.ecog", "ph.karno", "pat.karno", "meal.cal", "wt.loss"]
    result = algorithm_network.run("summary", "summary", {"columns": columns}, "lung")
    frame = whole(algorithm_network, "lung")
    pooled.assert_matches_summary(result, frame, columns, min_max=True)
    assert result["values"]["columns"]["meal.cal"]["missing"] == int(frame["meal.cal"].isna().sum()) > 0


def test_crosstab_of_gbsg2_is_exact_where_released_and_hides_small_cells(algorithm_network):
    result = algorithm_network.run("crosstab", "crosstab", {"row": "horTh", "column": "tgrade"}, "gbsg2")
    frame = whole(algorithm_network, "gbsg2")
    expected = pd.crosstab(frame["horTh"], frame["tgrade"]).to_numpy()
    hidden = np.array([[c is None for c in row] for row in result["counts"]])
    for site in algorithm_network.sites["gbsg2"]:
        counts = pd.crosstab(site["horTh"], site["tgrade"]).reindex(
            index=["no", "yes"], columns=["I", "II", "III"], fill_value=0).to_numpy()
        assert hidden[(counts > 0) & (counts < 5)].all()
    assert result["levels"] == [["no", "yes"], ["I", "II", "III"]] and result["total"] == len(frame)
    assert all(result["counts"][i][j] == expected[i, j] for i, j in zip(*np.nonzero(~hidden)))


@pytest.mark.parametrize("label, spec", [("breast_cancer", pooled.BREAST_CANCER_LOGISTIC),
                                         ("gbsg2", pooled.GBSG2_LOGISTIC)])
def test_logistic_regression_equals_statsmodels_on_the_pooled_data(algorithm_network, label, spec):
    started = time.monotonic()
    result = algorithm_network.run("logistic", "logistic", spec, label)
    print(f"logistic on {label}: {result['iterations']} iterations through three nodes in "
          f"{time.monotonic() - started:.1f} s; {algorithm_network.phases()}")
    pooled.assert_matches_logit(result, pooled.pooled_logit(whole(algorithm_network, label), **spec))
    # Every round's typed intermediates passed each node's output gate (a new node's
    # defaults: opaque outputs held) without waiting for a steward.
    rounds = algorithm_network.subtask_runs(algorithm_network.last_task)
    assert len(rounds) >= 3 * result["iterations"]
    assert all(r["status"] == "completed" and r["hold_info"] is None for r in rounds)


def test_a_site_below_the_minimum_of_rows_refuses_and_the_researcher_sees_why(algorithm_network):
    detail = algorithm_network.submit("summary", "summary", {"columns": ["age"]}, "small")
    org_a = algorithm_network.organizations[0]
    assert detail["status"] == "crashed" and detail["exit_code"] == 2, algorithm_network.logs(detail["task"])
    assert algorithm_line(detail) == (
        f"error: organisation {org_a}: refused by its disclosure policy (the reason is in that run's log)")
    refused = [r for r in algorithm_network.subtask_runs(detail["task"]) if r["organization"] == org_a]
    assert refused and refused[0]["exit_code"] == 3
    assert algorithm_line(refused[0]) == (
        "refused by this site's disclosure policy: this site has 6 rows, "
        "fewer than its policy's minimum of 10 (VANTAGE_MIN_ROWS)")
    assert algorithm_network.researcher.api("GET", f"runs/{refused[0]['id']}/result/").status_code != 200


def test_policy_in_the_task_input_is_refused_before_anything_runs(algorithm_network):
    detail = algorithm_network.submit("summary", "summary", {"columns": ["age"], "min_rows": 1}, "small")
    assert detail["status"] == "crashed" and detail["exit_code"] == 2
    assert algorithm_line(detail) == (
        "error: min_rows: disclosure settings come from each node's policy, never from the task input")
    assert algorithm_network.subtask_runs(detail["task"]) == []


def test_organizations_narrow_a_central_method_to_some_sites(algorithm_network):
    org_b, org_c = algorithm_network.organizations[1:]
    result = algorithm_network.run("summary", "summary", {"columns": ["age"]}, "small", organizations=[org_b, org_c])
    frame = pd.concat(algorithm_network.sites["gbsg2"][1:], ignore_index=True)
    assert result["values"]["organizations"] == [org_b, org_c]
    pooled.assert_matches_summary(result, frame, ["age"], min_max=True)


def test_the_central_runs_log_says_what_it_asked_of_the_sites(algorithm_network):
    # Written by the node from what its proxy saw, so it leaves even where the output gate
    # keeps the container's own log at the node (these nodes: logs = "on_failure").
    detail = algorithm_network.submit("summary", "summary", {"columns": ["age"]}, "gbsg2")
    assert detail["status"] == "completed", detail["log"]
    assert re.search(r"^\[node\] central run: 1 round of subtasks \(summary_site ×1\) at up to 3 organisations "
                     r"in \d+\.\d s$", detail["log"], re.M), detail["log"]

