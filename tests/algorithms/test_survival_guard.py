"""The disclosure guards of the survival methods at work, their refusals, and their errors.

The common-baseline Cox model's per-interval risk-set sums are the dangerous release:
where one patient leaves a site's risk set between two intervals, the difference of the
sums is that patient's exp(b'x) and exp(b'x) x, so their ratio is the patient's row.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference import _survival as sv
from tests.algorithms.test_survival import EXACT, ORGS, SURVIVAL, design, sites_of
from vantage_algorithms import AlgorithmError, SubtaskFailed
from vantage_algorithms.harness import run_local

DURATION, EVENT, _, COVARIATES, LEVELS = SURVIVAL["gbsg2"]
COLUMNS = {"duration": DURATION, "event": EVENT, "covariates": COVARIATES, "categories": LEVELS}


def released_sums(site, cuts: list[float], beta: list[float], ties: str, env: dict | None = None) -> dict:
    """What one site answers the central method for one iteration."""
    [answer] = run_local("reference.cox", "cox_interval_sums",
                         kwargs={**COLUMNS, "beta": beta, "ties": ties, "cut_points": cuts},
                         sites={ORGS[0]: site}, env={ORGS[0]: env or {}})
    return {name: np.asarray(value) for name, value in answer["arrays"].items()}


def rows_recovered(released: dict, p: int) -> np.ndarray:
    """Per interval, the ratio of consecutive risk-set sum differences: a patient's row
    wherever a single patient left in between."""
    risk0 = np.append(released["risk0"], 0.0)
    risk1 = np.vstack([released["risk1"].reshape(-1, p), np.zeros(p)])
    left0, left1 = -np.diff(risk0), -np.diff(risk1, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return left1 / left0[:, None]


def matches_a_patient(candidates: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Per candidate row: does it equal some patient's covariates (to 1e-9)?"""
    return np.array([bool(np.any(np.all(np.abs(X - row) <= 1e-9 * (1 + np.abs(row)), axis=1)))
                     for row in candidates])


def site_design(site) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = site[[DURATION, EVENT, *COVARIATES]].dropna()
    X = design(frame, COVARIATES, LEVELS).to_numpy()
    return frame[DURATION].to_numpy(float), frame[EVENT].to_numpy(bool), X


def test_the_exact_grid_would_expose_single_patients_and_a_default_policy_site_refuses_it():
    sites = sites_of("gbsg2")
    site = sites[ORGS[0]]
    time, event, X = site_design(site)
    all_event_times = sorted(set().union(*(
        site_design(s)[0][site_design(s)[1]].tolist() for s in sites.values())))
    beta = [0.0] * X.shape[1]  # the first iteration's coefficients

    # A site whose policy allows exact event times releases the sums; most of its intervals
    # then hold exactly one leaver, and each such difference is that patient's row.
    released = released_sums(site, all_event_times, beta, "breslow", env=EXACT)
    events, censored = sv.interval_counts(time, event, np.asarray(all_event_times))
    leavers = events + censored
    single = leavers == 1
    assert single.sum() >= 0.4 * (leavers > 0).sum(), (single.sum(), (leavers > 0).sum())
    recovered = rows_recovered(released, X.shape[1])
    assert matches_a_patient(recovered[single], X).all()

    # The same request at a site with the default policy is refused, naming its setting.
    with pytest.raises(SubtaskFailed, match="VANTAGE_MIN_RISKSET_LEAVERS=5"):
        released_sums(site, all_event_times, beta, "breslow")
    # And so is the exact grid itself, through the central method.
    with pytest.raises(SubtaskFailed, match=r"organisation 11: .*VANTAGE_ALLOW_EXACT_EVENT_TIMES"):
        run_local("reference.cox", "cox", kwargs={**COLUMNS, "model": "common", "grid": "exact"},
                  sites=sites, env={12: EXACT, 13: EXACT})


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_on_the_guarded_grid_no_released_sum_is_a_single_patients_row(ties):
    sites = sites_of("gbsg2")
    result = run_local("reference.cox", "cox", kwargs={**COLUMNS, "model": "common", "ties": ties}, sites=sites)
    cuts = result["grid"]["cut_points"]
    beta = [row["coef"] for row in result["coefficients"]]
    for org, site in sites.items():
        time, event, X = site_design(site)
        events, censored = sv.interval_counts(time, event, np.asarray(cuts))
        leavers = events + censored
        assert np.all((leavers == 0) | (leavers >= 5)), (org, leavers)
        released = released_sums(site, cuts, beta, ties)
        assert np.array_equal(released["events"], events)
        recovered = rows_recovered(released, X.shape[1])[leavers > 0]
        assert not matches_a_patient(recovered, X).any()
        if ties == "efron":
            # Event-set sums, and the censored subjects' sums they leave, are over 5 or more too.
            assert np.all((events == 0) | (events >= 5)) and np.all((censored == 0) | (censored >= 5))
            p = X.shape[1]
            with np.errstate(divide="ignore", invalid="ignore"):
                of_events = released["event1"].reshape(-1, p) / released["event0"][:, None]
            assert not matches_a_patient(of_events[events > 0], X).any()


def test_a_site_below_its_minimum_of_events_refuses_the_stratified_model():
    with pytest.raises(SubtaskFailed, match=r"organisation 12: .*fewer than its policy's minimum of 1000"):
        run_local("reference.cox", "cox", kwargs={**COLUMNS, "baseline": False}, sites=sites_of("gbsg2"),
                  env={12: {"VANTAGE_MIN_EVENTS": "1000"}})


def test_a_site_below_its_minimum_of_rows_refuses_kaplan_meier():
    with pytest.raises(SubtaskFailed, match=r"organisation 13: .*VANTAGE_MIN_ROWS"):
        run_local("reference.kaplan_meier", "kaplan_meier", kwargs={"duration": "week", "event": "arrest"},
                  sites=sites_of("rossi"), env={13: {"VANTAGE_MIN_ROWS": "5000"}})


def test_a_constant_covariate_at_every_site_is_a_singular_information_matrix():
    sites = {org: frame.assign(unit=1.0) for org, frame in sites_of("rossi").items()}
    for model in ("stratified", "common"):
        with pytest.raises(AlgorithmError, match="information matrix is singular"):
            run_local("reference.cox", "cox", kwargs={"duration": "week", "event": "arrest", "model": model,
                                                      "covariates": ["fin", "unit"]}, sites=sites)


def test_too_few_iterations_is_a_clear_error():
    with pytest.raises(AlgorithmError, match="did not converge in 2 iterations"):
        run_local("reference.cox", "cox", kwargs={**COLUMNS, "max_iterations": 2, "baseline": False},
                  sites=sites_of("gbsg2"))


def test_newton_raphson_halves_steps_that_lower_the_log_likelihood():
    # -log cosh(b - 3) is concave but flat far away: the full Newton step from 0 jumps
    # to about 100, where the log-likelihood is far lower.
    calls = []

    def evaluate(beta):
        calls.append(beta[0])
        b = beta[0] - 3
        return -np.log(np.cosh(b)), np.array([-np.tanh(b)]), np.array([[1 / np.cosh(b) ** 2]])

    fit = sv.newton_raphson(evaluate, 1)
    assert abs(fit.beta[0] - 3) < 1e-12
    assert any(abs(b) > 50 for b in calls)  # the rejected full step was tried, then halved


def test_newton_raphson_asks_for_no_evaluation_after_the_maximum_is_known():
    # Each evaluation is a round of containers at every site. On a quadratic
    # log-likelihood the first Newton step lands on the maximum; the step computed there
    # is zero, so evaluating it again would change nothing: two evaluations, not three.
    calls = []

    def evaluate(beta):
        calls.append(beta.copy())
        b = beta - np.array([1.5, -2.0])
        return -float(b @ b), -2 * b, 2 * np.eye(2)

    fit = sv.newton_raphson(evaluate, 2)
    assert np.allclose(fit.beta, [1.5, -2.0], rtol=0, atol=1e-12)
    assert len(calls) == 2 and fit.iterations == 1


def test_a_log_likelihood_that_is_not_concave_where_newton_starts_is_a_clear_error():
    # cos(b + 2.5) is convex at 0: Newton's step points downhill, and no halving helps.
    def evaluate(beta):
        b = beta[0] + 2.5
        return float(np.cos(b)), np.array([-np.sin(b)]), np.array([[np.cos(b)]])

    with pytest.raises(sv.NotConverged, match="kept decreasing after 30 step-halvings"):
        sv.newton_raphson(evaluate, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"covariates": ["age", "nope"]}, "column 'nope' is not in the data"),
    ({"covariates": ["age", "horTh"]}, "covariate 'horTh' is not numeric; list its levels in categories"),
    ({"covariates": ["tgrade"], "categories": {"tgrade": ["I", "II"]}},
     "column 'tgrade' holds a value not listed in categories: 'III'"),
    ({"covariates": ["age"], "ties": "exact"}, "ties must be one of breslow, efron"),
    ({"covariates": ["age"], "model": "pooled"}, "model must be one of stratified, common"),
    ({"covariates": "age"}, "covariates must be a non-empty list"),
    ({"covariates": ["age"], "event": "horTh"}, "event column 'horTh' must hold 0"),
    ({"covariates": ["age"], "grid": "fine", "model": "common"}, "grid must be one of auto, guarded, exact"),
    ({"covariates": ["age"], "cut_points": [5, 3], "model": "common"}, "strictly increasing"),
])
def test_bad_cox_arguments_are_one_readable_error(kwargs, message):
    with pytest.raises(AlgorithmError, match=message.replace("[", r"\[").replace("(", r"\(")):
        run_local("reference.cox", "cox", kwargs={"duration": "time", "event": "cens", **kwargs},
                  sites=sites_of("gbsg2"))


def test_negative_durations_are_refused_with_the_column_named():
    sites = {org: frame.assign(time=-frame["time"]) for org, frame in sites_of("gbsg2").items()}
    with pytest.raises(AlgorithmError, match="duration column 'time' must hold finite numbers >= 0"):
        run_local("reference.kaplan_meier", "kaplan_meier", kwargs={"duration": "time", "event": "cens"},
                  sites=sites)


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 5}, "alpha must be a number between 0 and 1"),
    ({"group": "nope"}, "column 'nope' is not in the data"),
    ({"grid": "exact", "cut_points": [10, 20]}, "cut_points and cut_every apply to the guarded grid"),
    ({"candidate_cuts": 0}, "candidate_cuts must be a whole number from 1 to 1000"),
])
def test_bad_kaplan_meier_arguments_are_one_readable_error(kwargs, message):
    with pytest.raises(AlgorithmError, match=message):
        run_local("reference.kaplan_meier", "kaplan_meier",
                  kwargs={"duration": "week", "event": "arrest", **kwargs}, sites=sites_of("rossi"))
