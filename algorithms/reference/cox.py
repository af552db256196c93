"""Cox proportional hazards regression over sites, with Breslow's or Efron's ties.

Two models:

``model="stratified"`` (default): each site keeps its own baseline hazard and its own risk
sets, the usual model of multi-centre studies. Per Newton–Raphson iteration a site
releases only its log partial likelihood, gradient (p numbers) and information matrix
(p x p), and refuses below its policy's ``min_events`` events or ``min_rows`` rows. Its
baseline cumulative hazard is released only summed over the intervals of a grid its
policy accepts (see ``_survival_protocol``).

``model="common"``: one baseline hazard for all sites (WebDISCO-style). Per iteration each
site releases, per interval of a time grid, its event count and its risk-set sums
(sum of exp(b'x), of exp(b'x) x and of exp(b'x) x x'), plus the sum of its events'
covariates over all intervals; with Efron's ties also the same sums over each interval's
events. Consecutive risk-set sums differ by the sum over the subjects who left between
them, so the grid is guarded: every interval at every site holds no leaver or at least
``min_leavers`` (with Efron's ties, events and censored subjects each). The exact per-event-time grid is used when every
site's policy sets VANTAGE_ALLOW_EXACT_EVENT_TIMES (the default ``grid="auto"`` asks them),
or with ``grid="exact"``, which a site without that setting refuses. On a grid the model is the Cox model on the grouped
times (each subject's time replaced by its interval), which on the exact grid is the
ordinary Cox model.

Residual risk, stated rather than hidden: sums over at least ``min_leavers`` patients,
evaluated at several coefficient vectors, are not proven to be safe against every
algebraic attack when there are few leavers and many covariates; the policy's numbers
should grow with the number of covariates.

The baseline cumulative hazard (at covariates zero) is Breslow's estimator for either ties
method, as lifelines and statsmodels report it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from reference import _survival as sv
from reference._survival_protocol import (check_release, find_grid, interval_bounds, site_rows,
                                          survival_event_times, survival_grid_check, survival_time_bound)
from vantage_algorithms import Policy, central, outputs, partial

if TYPE_CHECKING:  # pandas only where a site's data is read: a central run never imports it
    import pandas as pd

# The grid protocol's site methods answer in this image too.
__all__ = ["cox", "cox_interval_sums", "cox_site_baseline", "cox_site_terms", "survival_event_times",
           "survival_grid_check", "survival_time_bound"]

MODELS = ("stratified", "common")


def _ties(ties: str) -> str:
    if ties not in sv.TIES:
        raise sv.SurvivalInputError(f"ties must be one of {', '.join(sv.TIES)}, not {ties!r}")
    return ties


def _beta(beta, p: int) -> np.ndarray:
    array = np.asarray(beta, dtype=float).reshape(-1)
    if array.shape != (p,) or not np.all(np.isfinite(array)):
        raise sv.SurvivalInputError(f"beta must be {p} finite numbers, one per covariate column")
    return array


def _covariate_rows(data, policy, duration, event, covariates, categories) -> sv.SurvivalData:
    if not isinstance(covariates, list) or not covariates or not all(isinstance(c, str) for c in covariates):
        raise sv.SurvivalInputError("covariates must be a non-empty list of column names")
    if categories is not None and not isinstance(categories, dict):
        raise sv.SurvivalInputError("categories must map a column to its list of levels, reference first")
    rows, _ = site_rows(data, policy, duration=duration, event=event, covariates=covariates,
                        categories=categories)
    return rows


@partial
def cox_site_terms(data: pd.DataFrame, policy: Policy, *, duration: str, event: str, covariates: list,
                   beta: list, ties: str = "efron", categories: dict | None = None) -> outputs.Intermediate:
    """Log partial likelihood, gradient and information of this site's stratum at beta."""
    rows = _covariate_rows(data, policy, duration, event, covariates, categories)
    policy.require_events(int(rows.event.sum()))
    b = _beta(beta, rows.X.shape[1])
    times, slot = np.unique(rows.time, return_inverse=True)
    # Within one stratum the partial likelihood does not change when every x moves by the
    # same vector; centring keeps exp(b'x) and the information's differences well scaled.
    centred = rows.X - rows.X.mean(axis=0)
    sums = sv.cox_sums(slot, rows.event, centred, b, len(times), efron=_ties(ties) == "efron")
    loglik, gradient, information = sv.cox_likelihood(sums, b, ties)
    return outputs.Intermediate(len(rows.time), arrays={"gradient": gradient, "information": information},
                                scalars={"loglik": loglik, "events": int(rows.event.sum()),
                                         "columns": rows.names})


@partial
def cox_site_baseline(data: pd.DataFrame, policy: Policy, *, duration: str, event: str, covariates: list,
                      beta: list, cut_points: list, categories: dict | None = None) -> outputs.Aggregate:
    """Breslow's baseline hazard of this site's stratum, summed per interval of the grid."""
    rows = _covariate_rows(data, policy, duration, event, covariates, categories)
    policy.require_events(int(rows.event.sum()))
    check_release(policy, rows, cut_points)
    b = _beta(beta, rows.X.shape[1])
    times, slot = np.unique(rows.time, return_inverse=True)
    sums = sv.cox_sums(slot, rows.event, rows.X, b, len(times), efron=False)
    increments = sv.baseline_increments(sums)
    per_interval = np.bincount(sv.interval_of(times, sv.check_cuts(cut_points)), weights=increments,
                               minlength=len(cut_points) + 1)
    return outputs.Aggregate({"increments": per_interval}, len(rows.time))


@partial
def cox_interval_sums(data: pd.DataFrame, policy: Policy, *, duration: str, event: str, covariates: list,
                      beta: list, cut_points: list, ties: str = "efron",
                      categories: dict | None = None) -> outputs.Intermediate:
    """This site's per-interval event counts and risk-set sums (and, for Efron, event-set
    sums) at beta, on a grid its policy accepts."""
    rows = _covariate_rows(data, policy, duration, event, covariates, categories)
    policy.require_events(int(rows.event.sum()))
    efron = _ties(ties) == "efron"
    check_release(policy, rows, cut_points, event_sums=efron)
    cuts = sv.check_cuts(cut_points)
    b = _beta(beta, rows.X.shape[1])
    sums = sv.cox_sums(sv.interval_of(rows.time, cuts), rows.event, rows.X, b, len(cuts) + 1, efron=efron)
    arrays = {"events": sums.events, "risk0": sums.risk0, "risk1": sums.risk1, "risk2": sums.risk2,
              "event_x": sums.event_x}
    if efron:
        arrays.update(event0=sums.event0, event1=sums.event1, event2=sums.event2)
    return outputs.Intermediate(len(rows.time), arrays=arrays, scalars={"columns": rows.names})


def _sums_from(answer: dict) -> sv.CoxSums:
    a = {name: np.asarray(value, dtype=float) for name, value in answer["arrays"].items()}
    p = len(a["event_x"])
    size = len(a["events"])
    return sv.CoxSums(a["events"], a["risk0"], a["risk1"].reshape(size, p), a["risk2"].reshape(size, p, p),
                      a["event_x"], a.get("event0"),
                      None if "event1" not in a else a["event1"].reshape(size, p),
                      None if "event2" not in a else a["event2"].reshape(size, p, p))


@central
def cox(client, policy: Policy, *, duration: str, event: str, covariates: list, ties: str = "efron",
        model: str = "stratified", categories: dict | None = None, grid: str = "auto",
        cut_points: list | None = None, candidate_cuts: int = 30, cut_every: float | None = None,
        baseline: bool = True,
        alpha: float = 0.05, max_iterations: int = 50) -> outputs.Model:
    """Fit the Cox model over all sites by Newton–Raphson with step-halving.

    Returns coefficients with standard errors, Wald p-values, hazard ratios with their
    confidence intervals, the log partial likelihood (and its value at zero), and the
    baseline cumulative hazard per grid interval: one curve for the common model, one per
    organisation for the stratified model (``baseline=False`` skips it and the grid).
    """
    ties = _ties(ties)
    if model not in MODELS:
        raise sv.SurvivalInputError(f"model must be one of {', '.join(MODELS)}, not {model!r}")
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise sv.SurvivalInputError("alpha must be a number between 0 and 1")
    if not isinstance(max_iterations, int) or not 1 <= max_iterations <= 500:
        raise sv.SurvivalInputError("max_iterations must be a whole number from 1 to 500")
    columns = {"duration": duration, "event": event, "covariates": covariates, "categories": categories}
    organizations = client.organizations()
    seen: dict[str, list[dict]] = {}
    # "variant", not "model": the output's own "model" field names the model (cox_ph).
    info: dict = {"variant": model, "ties": ties}

    if model == "stratified":
        def evaluate(beta: np.ndarray):
            answers = client.run("cox_site_terms", {**columns, "beta": beta.tolist(), "ties": ties})
            seen["last"] = answers
            return (sum(a["scalars"]["loglik"] for a in answers),
                    sum(np.asarray(a["arrays"]["gradient"], dtype=float) for a in answers),
                    sum(np.asarray(a["arrays"]["information"], dtype=float) for a in answers))
    else:
        cuts, how = find_grid(client, columns, grid=grid, cut_points=cut_points, candidate_cuts=candidate_cuts,
                              event_sums=ties == "efron", cut_every=cut_every)
        info["grid"] = {**how, "cut_points": cuts}

        def evaluate(beta: np.ndarray):
            answers = client.run("cox_interval_sums",
                                 {**columns, "beta": beta.tolist(), "ties": ties, "cut_points": cuts})
            seen["last"] = answers
            sums = _sums_from(answers[0])
            for answer in answers[1:]:
                sums = sums + _sums_from(answer)
            seen["sums"] = sums
            return sv.cox_likelihood(sums, beta, ties)

    p = _column_count(columns)
    fit = sv.newton_raphson(evaluate, p, max_iterations=max_iterations)
    answers = seen["last"]
    # Every site codes the design from the same covariates and categories.
    names = answers[0]["scalars"]["columns"]
    rows = sum(a["n"] for a in answers)
    if model == "stratified":
        events = sum(a["scalars"]["events"] for a in answers)
    else:
        events = int(seen["sums"].events.sum())

    values = {
        **info,
        "coefficients": sv.coefficient_table(names, fit.beta, fit.information, alpha),
        "covariance": np.linalg.inv(fit.information),
        "loglik": fit.loglik,
        "loglik_null": fit.loglik_null,
        "iterations": fit.iterations,
        "events": events,
        "alpha": alpha,
    }
    if baseline and model == "common":
        starts, ends = interval_bounds(info["grid"]["cut_points"])
        values["baseline_cumulative_hazard"] = {
            "start": starts, "end": ends, "cumulative_hazard": np.cumsum(sv.baseline_increments(seen["sums"]))}
    elif baseline:
        cuts, how = find_grid(client, columns, grid=grid, cut_points=cut_points, candidate_cuts=candidate_cuts,
                              cut_every=cut_every)
        values["grid"] = {**how, "cut_points": cuts}
        parts = client.run("cox_site_baseline", {**columns, "beta": fit.beta.tolist(), "cut_points": cuts})
        starts, ends = interval_bounds(cuts)
        values["baseline_cumulative_hazard"] = {
            "start": starts, "end": ends,
            "by_organization": {str(org): np.cumsum(part["values"]["increments"])
                                for org, part in zip(organizations, parts, strict=True)}}
    return outputs.Model("cox_ph", rows, events - p, values)


def _column_count(columns: dict) -> int:
    """Number of design columns, from the covariates and their categories' levels."""
    categories = columns["categories"] or {}
    if not isinstance(columns["covariates"], list):
        raise sv.SurvivalInputError("covariates must be a non-empty list of column names")
    count = 0
    for name in columns["covariates"]:
        levels = categories.get(name) if isinstance(categories, dict) else None
        count += len(levels) - 1 if isinstance(levels, list) and len(levels) > 1 else 1
    return count
