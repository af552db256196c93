"""Kaplan–Meier, log-rank and Cox through the local harness, against pooled fits of
lifelines and statsmodels on bundled public data split unevenly over three sites.

Counts must be equal; every other number within 1e-8 absolute + 1e-8 relative
(``pooled.close``). Guarded grids are compared with the pooled fit on the same grid:
each patient's time replaced by the index of its grid interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test
from statsmodels.duration.hazard_regression import PHReg

from reference import _survival as sv
from tests.algorithms import pooled
from vantage_algorithms import AlgorithmError
from vantage_algorithms.harness import run_local

DATA = pooled.datasets()
ORGS = (11, 12, 13)
EXACT = {"VANTAGE_ALLOW_EXACT_EVENT_TIMES": "true"}

# label -> (duration, event, group for KM, Cox covariates, categorical levels)
SURVIVAL = {
    "gbsg2": ("time", "cens", "horTh",
              ["age", "tsize", "pnodes", "progrec", "estrec", "horTh", "menostat", "tgrade"], pooled.GBSG2_LEVELS),
    "rossi": ("week", "arrest", "fin", ["fin", "age", "race", "wexp", "mar", "paro", "prio"], {}),
    "lung": ("time", "status", "sex", ["age", "sex", "ph.ecog", "ph.karno", "wt.loss"], {}),
}


def sites_of(label: str) -> dict[int, pd.DataFrame]:
    return dict(zip(ORGS, pooled.split(DATA[label]), strict=True))


def exact_everywhere() -> dict[int, dict]:
    return {org: EXACT for org in ORGS}


# ---------------------------------------------------------------- pooled references

def design(frame: pd.DataFrame, covariates: list[str], levels: dict) -> pd.DataFrame:
    """The pooled design matrix, coded as the sites code it."""
    columns = {}
    for name in covariates:
        if name in levels:
            for level in levels[name][1:]:
                columns[f"{name}[{level}]"] = (frame[name].astype(str) == level).astype(float)
        else:
            columns[name] = frame[name].astype(float)
    return pd.DataFrame(columns, index=frame.index)


def pooled_frame(label: str, covariates=(), group=None, cuts=None) -> pd.DataFrame:
    """All sites' complete cases with a site column, times mapped to grid intervals if cuts."""
    duration, event = SURVIVAL[label][:2]
    used = [duration, event, *covariates, *([group] if group else [])]
    parts = [part[list(dict.fromkeys(used))].dropna().assign(site=i)
             for i, part in enumerate(pooled.split(DATA[label]))]
    frame = pd.concat(parts, ignore_index=True)
    frame["T"] = frame[duration].astype(float)
    if cuts is not None:
        frame["T"] = sv.interval_of(frame["T"].to_numpy(), np.asarray(cuts, dtype=float)).astype(float)
    frame["E"] = frame[event].astype(int)
    return frame


def lifelines_cox(frame: pd.DataFrame, X: pd.DataFrame, strata: bool) -> CoxPHFitter:
    data = pd.concat([X, frame[["T", "E", "site"]]], axis=1)
    if not strata:
        data = data.drop(columns="site")
    # lifelines stops at a Newton decrement below `precision` without taking that last
    # step, and at a relative log-likelihood change below r_precision: both far below 1e-12.
    return CoxPHFitter().fit(data, "T", "E", strata=["site"] if strata else None,
                             fit_options={"precision": 1e-20, "r_precision": 1e-20})


def statsmodels_cox(frame: pd.DataFrame, X: pd.DataFrame, strata: bool):
    return PHReg(frame["T"], X, status=frame["E"], strata=frame["site"] if strata else None,
                 ties="breslow").fit(tol=1e-14)


def assert_close(actual, expected, what):
    assert pooled.close(actual, expected), (what, np.asarray(actual), np.asarray(expected))


def assert_cox_matches(result: dict, fit, X: pd.DataFrame, library: str) -> None:
    table = result["coefficients"]
    assert [row["covariate"] for row in table] == list(X.columns)
    if library == "statsmodels":
        coef, se, p, loglik = (np.asarray(fit.params), np.asarray(fit.bse), np.asarray(fit.pvalues), fit.llf)
        ci = np.exp(fit.conf_int(alpha=0.05))
    else:
        coef, se, p, loglik = (fit.params_.to_numpy(), fit.standard_errors_.to_numpy(),
                               fit.summary["p"].to_numpy(), fit.log_likelihood_)
        ci = fit.summary[["exp(coef) lower 95%", "exp(coef) upper 95%"]].to_numpy()
        ratio = fit.log_likelihood_ratio_test().test_statistic
        assert_close(result["loglik_null"], fit.log_likelihood_ - ratio / 2, "loglik_null")
    assert_close([r["coef"] for r in table], coef, "coef")
    assert_close([r["se"] for r in table], se, "se")
    assert_close([r["p"] for r in table], p, "p")
    assert_close([r["hazard_ratio"] for r in table], np.exp(coef), "hazard ratio")
    assert_close([[r["hr_lower"], r["hr_upper"]] for r in table], ci, "hazard ratio CI")
    assert_close(result["loglik"], loglik, "loglik")
    assert result["type"] == "model" and result["n"] == len(X)
    assert result["residual_df"] == result["events"] - X.shape[1]


# ---------------------------------------------------------------- Kaplan–Meier and log-rank

def assert_curve_matches(curve: dict, T: pd.Series, E: pd.Series, times_of_intervals) -> None:
    """Our interval table against lifelines' estimate at each interval's time."""
    kmf = KaplanMeierFitter().fit(T, E)
    table = kmf.event_table
    ci = kmf.confidence_interval_
    checked = 0
    for j, t in enumerate(times_of_intervals):
        if t not in table.index or table.loc[t, "observed"] == 0:
            assert curve["events"][j] == 0
            continue
        assert curve["at_risk"][j] == table.loc[t, "at_risk"]
        assert curve["events"][j] == table.loc[t, "observed"]
        assert_close(curve["survival"][j], kmf.survival_function_.iloc[:, 0].loc[t], f"S({t})")
        assert_close([curve["ci_lower"][j], curve["ci_upper"][j]], ci.loc[t].to_numpy(), f"CI({t})")
        checked += 1
    assert checked == int((table["observed"] > 0).sum())


@pytest.mark.parametrize("grid", ["exact", None])
@pytest.mark.parametrize("label", SURVIVAL)
def test_kaplan_meier_on_the_exact_grid_matches_lifelines(label, grid):
    # grid=None: the default ("auto") takes exact times when every site allows them.
    duration, event, group = SURVIVAL[label][:3]
    result = run_local("reference.kaplan_meier", "kaplan_meier",
                       kwargs={"duration": duration, "event": event, "group": group,
                               **({"grid": grid} if grid else {})},
                       sites=sites_of(label), env=exact_everywhere())
    values = result["values"]
    assert values["grid"]["grid"] == "exact"
    assert ("chosen" in values["grid"]) == (grid is None)
    frame = pooled_frame(label, group=group)
    event_times = sorted(frame.loc[frame["E"] == 1, "T"].unique())
    assert values["grid"]["cut_points"] == event_times
    interval_times = [None, *event_times]
    assert_curve_matches(values["overall"], frame["T"], frame["E"], interval_times)
    labels = sorted(frame[group].astype(str).unique())
    assert sorted(values["groups"]) == labels
    for name in labels:
        part = frame[frame[group].astype(str) == name]
        assert_curve_matches(values["groups"][name], part["T"], part["E"], interval_times)
    reference = logrank_test(*[frame.loc[frame[group].astype(str) == g, "T"] for g in labels],
                             *[frame.loc[frame[group].astype(str) == g, "E"] for g in labels])
    assert_close(values["logrank"]["test_statistic"], reference.test_statistic, "log-rank statistic")
    assert_close(values["logrank"]["p_value"], reference.p_value, "log-rank p")
    assert result["n"] == len(frame)


# rossi's follow-up ends at week 52 for 322 of its 432 people: on the default lattice
# (every 5 weeks) the guarded grid is one interval, so the test asks for a finer one.
GUARDED_LATTICE = {"rossi": {"candidate_cuts": 60}}


@pytest.mark.parametrize("label", SURVIVAL)
def test_kaplan_meier_on_the_guarded_grid_matches_lifelines_on_grid_mapped_times(label):
    duration, event, group = SURVIVAL[label][:3]
    result = run_local("reference.kaplan_meier", "kaplan_meier",
                       kwargs={"duration": duration, "event": event, "group": group,
                               **GUARDED_LATTICE.get(label, {})}, sites=sites_of(label))
    values = result["values"]
    cuts = values["grid"]["cut_points"]
    assert values["grid"]["grid"] == "guarded" and len(cuts) >= 2
    frame = pooled_frame(label, group=group, cuts=cuts)
    interval_times = [float(j) for j in range(len(cuts) + 1)]
    assert_curve_matches(values["overall"], frame["T"], frame["E"], interval_times)
    for name in values["groups"]:
        part = frame[frame[group].astype(str) == name]
        assert_curve_matches(values["groups"][name], part["T"], part["E"], interval_times)
    reference = multivariate_logrank_test(frame["T"], frame[group].astype(str), frame["E"])
    assert_close(values["logrank"]["test_statistic"], reference.test_statistic, "log-rank statistic")
    assert_close(values["logrank"]["p_value"], reference.p_value, "log-rank p")


def test_log_rank_of_three_groups_matches_lifelines():
    # lung's ph.ecog has four levels; the one patient with 3 and the one missing go, as
    # a site could not release a group of one anyway.
    lung = DATA["lung"][DATA["lung"]["ph.ecog"].isin([0, 1, 2])]
    sites = dict(zip(ORGS, pooled.split(lung), strict=True))
    result = run_local("reference.kaplan_meier", "kaplan_meier",
                       kwargs={"duration": "time", "event": "status", "group": "ph.ecog", "grid": "exact"},
                       sites=sites, env=exact_everywhere())
    test = result["values"]["logrank"]
    reference = multivariate_logrank_test(lung["time"], lung["ph.ecog"].astype(str), lung["status"])
    assert test["degrees_of_freedom"] == 2 and test["groups"] == ["0.0", "1.0", "2.0"]
    assert_close(test["test_statistic"], reference.test_statistic, "statistic")
    assert_close(test["p_value"], reference.p_value, "p")


def test_kaplan_meier_site_counts_meet_the_leaver_minimum_in_every_interval():
    sites = sites_of("gbsg2")
    result = run_local("reference.kaplan_meier", "kaplan_meier",
                       kwargs={"duration": "time", "event": "cens", "group": "horTh"}, sites=sites)
    cuts = result["values"]["grid"]["cut_points"]
    released = run_local("reference.kaplan_meier", "kaplan_meier_counts",
                         kwargs={"duration": "time", "event": "cens", "group": "horTh", "cut_points": cuts},
                         sites=sites)
    for site in released:
        for counts in site["values"]["groups"].values():
            leavers = np.add(counts["events"], counts["censored"])
            assert np.all((leavers == 0) | (leavers >= 5)), leavers


# ---------------------------------------------------------------- Cox, stratified by site

@pytest.mark.parametrize("label", SURVIVAL)
@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_stratified_cox_matches_the_pooled_fit_stratified_by_site(label, ties):
    duration, event, _, covariates, levels = SURVIVAL[label]
    result = run_local("reference.cox", "cox",
                       kwargs={"duration": duration, "event": event, "covariates": covariates,
                               "categories": levels, "ties": ties, "grid": "exact"},
                       sites=sites_of(label), env=exact_everywhere())
    frame = pooled_frame(label, covariates)
    X = design(frame, covariates, levels)
    if ties == "breslow":
        fit = statsmodels_cox(frame, X, strata=True)
        assert_cox_matches(result, fit, X, "statsmodels")
        # statsmodels reports H(t-) at each of a stratum's event times.
        cuts = result["grid"]["cut_points"]
        for stratum, org in enumerate(ORGS):
            times, left_limits, _ = fit.baseline_cumulative_hazard[stratum]
            ours = np.asarray(result["baseline_cumulative_hazard"]["by_organization"][str(org)])
            before = np.array([cuts.index(t) for t in times])  # interval cuts.index(t)+1 starts at t
            assert_close(ours[before], left_limits, f"baseline of organisation {org}")
    else:
        fit = lifelines_cox(frame, X, strata=True)
        assert_cox_matches(result, fit, X, "lifelines")
    assert (result["model"], result["variant"]) == ("cox_ph", "stratified") and result["events"] == int(frame["E"].sum())


def test_stratified_cox_baseline_on_the_guarded_grid_sums_the_sites_own_baselines():
    duration, event, _, covariates, levels = SURVIVAL["rossi"]
    result = run_local("reference.cox", "cox",
                       kwargs={"duration": duration, "event": event, "covariates": covariates, "ties": "breslow"},
                       sites=sites_of("rossi"))
    frame = pooled_frame("rossi", covariates)
    X = design(frame, covariates, levels)
    fit = statsmodels_cox(frame, X, strata=True)
    assert_cox_matches(result, fit, X, "statsmodels")
    ends = result["baseline_cumulative_hazard"]["end"]
    assert result["grid"]["grid"] == "guarded"
    for stratum, org in enumerate(ORGS):
        times, left_limits, _ = fit.baseline_cumulative_hazard[stratum]
        ours = result["baseline_cumulative_hazard"]["by_organization"][str(org)]
        compared = 0
        for j, end in enumerate(ends[:-1]):
            later = np.flatnonzero(times >= end)
            if len(later):  # H just before the first event time at or after the interval's end
                assert_close(ours[j], left_limits[later[0]], f"organisation {org}, interval {j}")
                compared += 1
        assert compared >= 2


# ---------------------------------------------------------------- Cox, common baseline

@pytest.mark.parametrize("label, ties", [
    ("gbsg2", "breslow"), ("gbsg2", "efron"), ("rossi", "breslow"), ("rossi", "efron"), ("lung", "breslow")])
def test_common_baseline_cox_on_the_guarded_grid_matches_the_pooled_fit_on_that_grid(label, ties):
    duration, event, _, covariates, levels = SURVIVAL[label]
    result = run_local("reference.cox", "cox",
                       kwargs={"duration": duration, "event": event, "covariates": covariates,
                               "categories": levels, "ties": ties, "model": "common"},
                       sites=sites_of(label))
    cuts = result["grid"]["cut_points"]
    assert result["grid"]["grid"] == "guarded" and len(cuts) >= 2
    frame = pooled_frame(label, covariates, cuts=cuts)
    X = design(frame, covariates, levels)
    hazard = np.asarray(result["baseline_cumulative_hazard"]["cumulative_hazard"])
    if ties == "breslow":
        fit = statsmodels_cox(frame, X, strata=False)
        assert_cox_matches(result, fit, X, "statsmodels")
        times, left_limits, _ = fit.baseline_cumulative_hazard[0]
        assert_close(np.concatenate([[0.0], hazard])[times.astype(int)], left_limits, "baseline")
    else:
        fit = lifelines_cox(frame, X, strata=False)
        assert_cox_matches(result, fit, X, "lifelines")
        # lifelines' baseline is at the covariates' means, ours at zero.
        at_mean = hazard * np.exp(fit._norm_mean.to_numpy() @ fit.params_.to_numpy())
        lifelines_hazard = fit.baseline_cumulative_hazard_.iloc[:, 0]
        assert_close(at_mean[lifelines_hazard.index.astype(int)], lifelines_hazard.to_numpy(), "baseline")
    assert (result["model"], result["variant"]) == ("cox_ph", "common") and result["events"] == int(frame["E"].sum())


def test_common_baseline_cox_with_efron_ties_is_refused_where_a_site_has_too_few_censored_patients():
    # lung's first site has 3 censored patients among its complete cases: its risk-set sums
    # less its event-set sums would be the sums over those 3, in any grid.
    duration, event, _, covariates, _ = SURVIVAL["lung"]
    with pytest.raises(AlgorithmError, match="no time grid meets every site's policy"):
        run_local("reference.cox", "cox", kwargs={"duration": duration, "event": event, "covariates": covariates,
                                                  "ties": "efron", "model": "common"}, sites=sites_of("lung"))


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_common_baseline_cox_on_the_exact_grid_is_the_ordinary_pooled_cox_model(ties):
    duration, event, _, covariates, levels = SURVIVAL["gbsg2"]
    result = run_local("reference.cox", "cox",
                       kwargs={"duration": duration, "event": event, "covariates": covariates,
                               "categories": levels, "ties": ties, "model": "common", "grid": "exact"},
                       sites=sites_of("gbsg2"), env=exact_everywhere())
    frame = pooled_frame("gbsg2", covariates)
    X = design(frame, covariates, levels)
    if ties == "breslow":
        assert_cox_matches(result, statsmodels_cox(frame, X, strata=False), X, "statsmodels")
    else:
        assert_cox_matches(result, lifelines_cox(frame, X, strata=False), X, "lifelines")


def test_researchers_cut_points_are_coarsened_until_every_site_accepts_them():
    result = run_local("reference.cox", "cox",
                       kwargs={"duration": "week", "event": "arrest", "covariates": ["fin", "age", "prio"],
                               "ties": "breslow", "model": "common", "cut_points": list(range(2, 53, 2))},
                       sites=sites_of("rossi"))
    cuts = result["grid"]["cut_points"]
    assert set(cuts) < set(range(2, 53, 2)) and len(cuts) >= 3
    frame = pooled_frame("rossi", ["fin", "age", "prio"], cuts=cuts)
    X = design(frame, ["fin", "age", "prio"], {})
    assert_cox_matches(result, statsmodels_cox(frame, X, strata=False), X, "statsmodels")


def test_the_default_grid_stays_guarded_when_one_site_does_not_allow_exact_times():
    result = run_local("reference.kaplan_meier", "kaplan_meier", kwargs={"duration": "time", "event": "cens"},
                       sites=sites_of("gbsg2"), env={11: EXACT, 12: EXACT})
    assert result["values"]["grid"]["grid"] == "guarded"


def test_guarded_cut_points_are_round_values():
    result = run_local("reference.kaplan_meier", "kaplan_meier", kwargs={"duration": "time", "event": "cens"},
                       sites=sites_of("gbsg2"))
    grid = result["values"]["grid"]
    # gbsg2's follow-up (2659 days) is stated as 5000: 30 candidates at most means every 200 days.
    assert grid["candidates"] == 24 and grid["cut_points"]
    assert all(cut % 200 == 0 for cut in grid["cut_points"]), grid["cut_points"]


def test_the_researcher_may_propose_cut_points_every_so_many_days():
    result = run_local("reference.cox", "cox", kwargs={"duration": "time", "event": "cens", "covariates": ["age"],
                                                       "model": "common", "cut_every": 365},
                       sites=sites_of("gbsg2"))
    cuts = result["grid"]["cut_points"]
    assert cuts and all(cut % 365 == 0 for cut in cuts), cuts
    assert result["grid"]["candidates"] == 13  # 365, 730, ... below the stated follow-up of 5000


@pytest.mark.parametrize("value", [0, -5, True, "365"])
def test_cut_every_must_be_a_positive_number(value):
    with pytest.raises(AlgorithmError, match="cut_every must be a positive number"):
        run_local("reference.kaplan_meier", "kaplan_meier",
                  kwargs={"duration": "time", "event": "cens", "cut_every": value}, sites=sites_of("gbsg2"))


def test_candidate_cuts_are_round_multiples():
    assert sv.candidate_cuts(5000, 30) == [200.0 * i for i in range(1, 25)]
    assert sv.candidate_cuts(100, 30) == [5.0 * i for i in range(1, 20)]
    assert sv.candidate_cuts(1, 3) == [0.25, 0.5, 0.75]
