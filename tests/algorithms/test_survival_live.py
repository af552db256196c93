"""Kaplan–Meier and Cox through the real network: server, three node agents, containers.

The nodes run with the default disclosure policy (exact event times not allowed), so
every fit here is on a guarded grid, compared with the pooled fit on the same grid.
Each grid round and each Newton–Raphson iteration is one subtask at three nodes, so the
researcher's cut points here are few, keeping the live time small.
"""

import time

import numpy as np
import pytest

from tests.algorithms.test_survival import (SURVIVAL, assert_close, assert_cox_matches, assert_curve_matches,
                                            design, lifelines_cox, pooled_frame, statsmodels_cox)

pytestmark = [pytest.mark.slow, pytest.mark.database_independent]

# Rossi follows everyone up to week 52. One cut before it gives two intervals every site
# accepts for both values of fin; of these three, the Cox model's sums keep one.
KM_CUTS = [51]
COX_CUTS = [13, 26, 39]


def run(network, image: str, kwargs: dict, database: str):
    """The central method's result; a Newton–Raphson fit is several rounds of subtasks,
    which on a loaded machine may take longer than the fixture's default wait."""
    detail = network.submit(image, image, kwargs, database, timeout=900)
    assert detail["status"] == "completed", network.logs(detail["task"])
    return network.researcher.result(detail["id"])


def test_kaplan_meier_by_group_equals_lifelines_on_the_grid(algorithm_network):
    started = time.monotonic()
    result = run(algorithm_network, "kaplan_meier",
                 {"duration": "week", "event": "arrest", "group": "fin", "cut_points": KM_CUTS}, "rossi")
    print(f"kaplan_meier through three nodes: {time.monotonic() - started:.1f} s")
    values = result["values"]
    cuts = values["grid"]["cut_points"]
    assert values["grid"]["grid"] == "guarded" and cuts == KM_CUTS
    frame = pooled_frame("rossi", group="fin", cuts=cuts)
    times = [float(j) for j in range(len(cuts) + 1)]
    assert_curve_matches(values["overall"], frame["T"], frame["E"], times)
    for name, curve in values["groups"].items():
        part = frame[frame["fin"].astype(str) == name]
        assert_curve_matches(curve, part["T"], part["E"], times)
    assert values["logrank"]["groups"] == ["0", "1"] and 0 < values["logrank"]["p_value"] < 1


def test_stratified_cox_with_efron_ties_equals_lifelines(algorithm_network):
    duration, event, _, covariates, levels = SURVIVAL["rossi"]
    started = time.monotonic()
    result = run(algorithm_network, "cox", {"duration": duration, "event": event, "covariates": covariates,
                                            "ties": "efron", "baseline": False}, "rossi")
    print(f"stratified cox through three nodes ({result['iterations']} iterations): "
          f"{time.monotonic() - started:.1f} s")
    frame = pooled_frame("rossi", covariates)
    X = design(frame, covariates, levels)
    assert_cox_matches(result, lifelines_cox(frame, X, strata=True), X, "lifelines")


def test_common_baseline_cox_with_breslow_ties_equals_statsmodels_on_the_grid(algorithm_network):
    covariates = ["fin", "age", "prio"]
    result = run(algorithm_network, "cox", {"duration": "week", "event": "arrest", "covariates": covariates,
                                            "ties": "breslow", "model": "common", "cut_points": COX_CUTS}, "rossi")
    cuts = result["grid"]["cut_points"]
    assert set(cuts) <= set(COX_CUTS) and cuts
    frame = pooled_frame("rossi", covariates, cuts=cuts)
    X = design(frame, covariates, {})
    fit = statsmodels_cox(frame, X, strata=False)
    assert_cox_matches(result, fit, X, "statsmodels")
    times, left_limits, _ = fit.baseline_cumulative_hazard[0]
    hazard = np.concatenate([[0.0], result["baseline_cumulative_hazard"]["cumulative_hazard"]])
    assert_close(hazard[times.astype(int)], left_limits, "baseline")


def test_the_exact_grid_is_refused_by_default_policy_nodes(algorithm_network):
    detail = algorithm_network.submit("kaplan_meier", "kaplan_meier",
                                      {"duration": "week", "event": "arrest", "grid": "exact"}, "rossi")
    assert detail["status"] == "crashed"
    logs = algorithm_network.logs(detail["task"])
    assert "refused by its disclosure policy" in detail["log"]
    assert "VANTAGE_ALLOW_EXACT_EVENT_TIMES" in logs
