"""Survival arithmetic shared by the Kaplan–Meier and Cox reference algorithms.

Plain numpy functions, no toolkit: what a site computes on its own rows, what the
central function computes from what the sites released, and the protocol that finds a
time grid every site's policy accepts.

Time grids. A grid is a sorted list of cut points c_1 < ... < c_m. It splits time into
the intervals [0, c_1), [c_1, c_2), ..., [c_m, inf); a subject belongs to the interval
holding its time. Intervals are closed on the left so that a subject censored inside an
interval is still at risk at the interval's start, exactly as at an event time: on the
grid of all distinct event times the grouped model therefore *is* the exact model.

Leavers. A subject leaves its site's risk set in the interval holding its time (by an
event or by censoring). Risk-set sums of consecutive intervals differ by the sum over
the leavers, so a site releases interval aggregates only when every interval holds no
leaver or at least ``min_leavers`` of them (and, where event-set sums are released too,
the same for events and for censored subjects separately).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from vantage_algorithms import AlgorithmError
from vantage_algorithms.distributions import chi2_sf, normal_quantile, normal_sf

if TYPE_CHECKING:  # pandas only where a site's data is read: a central run never imports it
    import pandas as pd

TIES = ("breslow", "efron")


class SurvivalInputError(AlgorithmError):
    """The task's arguments do not fit the data (a readable one-line reason)."""


class NotConverged(AlgorithmError):
    """Newton–Raphson stopped without a converged, finite estimate."""


# ---------------------------------------------------------------- site-side data

@dataclass(frozen=True)
class SurvivalData:
    """Complete cases of one site: durations, event indicators, design matrix."""

    time: np.ndarray          # float, >= 0
    event: np.ndarray         # bool
    X: np.ndarray             # float, n x p
    names: list[str]          # column names of X


def survival_data(
    data: pd.DataFrame,
    *,
    duration: str,
    event: str,
    covariates: Sequence[str] = (),
    categories: dict[str, Sequence] | None = None,
    extra: Sequence[str] = (),
) -> tuple[SurvivalData, pd.DataFrame]:
    """Select the complete cases of the columns used and check their values.

    ``categories`` maps a categorical covariate to its levels, the first being the
    reference: the column becomes one 0/1 column per other level, named
    ``"<column>[<level>]"``, so every site codes it the same way whatever levels it
    happens to hold. ``extra`` are further columns that must be present (e.g. a group),
    returned with the complete cases.
    """
    import pandas as pd  # here: a central method's container never reads data

    categories = dict(categories or {})
    for name in categories:
        if name not in covariates:
            raise SurvivalInputError(f"categories names {name!r}, which is not among the covariates")
    used = [duration, event, *covariates, *extra]
    missing = [c for c in dict.fromkeys(used) if c not in data.columns]
    if missing:
        raise SurvivalInputError(f"column {missing[0]!r} is not in the data")
    rows = data[list(dict.fromkeys(used))].dropna()

    time = pd.to_numeric(rows[duration], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(time)) or np.any(time < 0):
        raise SurvivalInputError(f"duration column {duration!r} must hold finite numbers >= 0")
    ev = pd.to_numeric(rows[event], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isin(ev, (0.0, 1.0))):
        raise SurvivalInputError(f"event column {event!r} must hold 0 (censored) or 1 (event)")

    blocks, names = [], []
    for name in covariates:
        column = rows[name]
        if name in categories:
            levels = list(categories[name])
            if len(levels) < 2:
                raise SurvivalInputError(f"categories for {name!r} need a reference level and at least one other")
            as_text = column.astype(str)
            unknown = sorted(set(as_text) - {str(v) for v in levels})
            if unknown:
                raise SurvivalInputError(f"column {name!r} holds a value not listed in categories: {unknown[0]!r}")
            for level in levels[1:]:
                blocks.append((as_text == str(level)).to_numpy(dtype=float))
                names.append(f"{name}[{level}]")
        else:
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
            if not np.all(np.isfinite(values)):
                raise SurvivalInputError(
                    f"covariate {name!r} is not numeric; list its levels in categories to use it")
            blocks.append(values)
            names.append(name)
    X = np.column_stack(blocks) if blocks else np.zeros((len(rows), 0))
    return SurvivalData(time=time, event=ev.astype(bool), X=X, names=names), rows


def check_cuts(cuts: Sequence[float]) -> np.ndarray:
    """Cut points as a strictly increasing float array, or a readable error."""
    try:
        array = np.asarray(cuts, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise SurvivalInputError("cut points must be a list of numbers") from None
    if not np.all(np.isfinite(array)) or np.any(np.diff(array) <= 0):
        raise SurvivalInputError("cut points must be finite and strictly increasing")
    return array


def interval_of(time: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Index of the grid interval holding each time (0 = before the first cut)."""
    return np.searchsorted(cuts, time, side="right")


def interval_counts(time: np.ndarray, event: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Events and censored subjects per grid interval (len(cuts) + 1 intervals)."""
    slot = interval_of(time, cuts)
    size = len(cuts) + 1
    events = np.bincount(slot[event], minlength=size)
    censored = np.bincount(slot[~event], minlength=size)
    return events, censored


def none_or_at_least(counts: np.ndarray, k: int) -> np.ndarray:
    """Per interval: True where the count is 0 or at least k."""
    return (counts == 0) | (counts >= k)


def intervals_allowed(events: np.ndarray, censored: np.ndarray, *, min_leavers: int,
                      event_sums: bool) -> np.ndarray:
    """Which intervals a site may release: leavers none or at least ``min_leavers``.

    Where sums over the interval's events are released too (Efron's ties), events and
    censored subjects are each none or at least ``min_leavers``, so that sums over either
    set alone are sums over that many patients. Event counts themselves may be small: a
    count of events among at least ``min_leavers`` subjects leaving in the same interval
    ties no event to a person.
    """
    ok = none_or_at_least(events + censored, min_leavers)
    if event_sums:
        ok &= none_or_at_least(events, min_leavers) & none_or_at_least(censored, min_leavers)
    return ok


def round_up_coarsely(value: float) -> float:
    """Round up to one significant digit of 1, 2 or 5 (2659 -> 5000, 52 -> 100, 0.3 -> 0.5),
    so a site's longest follow-up is known only to within a factor of about two."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for mantissa in (1, 2, 5, 10):
        bound = mantissa * 10.0 ** exponent
        if bound >= value:
            return float(bound)
    return 10.0 ** (exponent + 1)


# ---------------------------------------------------------------- grid protocol (central side)

def candidate_cuts(bound: float, count: int) -> list[float]:
    """Candidate cut points on (0, bound) at round values: multiples of the smallest step
    of 1, 2, 2.5 or 5 times a power of ten that gives at most `count` of them (a bound of
    5000 and 30 candidates: every 200). An agreed lattice that depends on no site's
    individual times, and that a reader expects (not 322.581, 645.161, ...)."""
    if count < 1:
        raise SurvivalInputError("candidate_cuts must be at least 1")
    raw = bound / (count + 1)
    exponent = math.floor(math.log10(raw))
    step = next(m * 10.0 ** e for e in (exponent, exponent + 1) for m in (1, 2, 2.5, 5) if m * 10.0 ** e >= raw)
    return cuts_every(step, bound)


def cuts_every(step: float, bound: float) -> list[float]:
    """Multiples of `step` below `bound` (the researcher's "every 365 days")."""
    count = math.ceil(bound / step) - 1
    cuts = [round(step * i, 10) for i in range(1, count + 1)]
    return [c for c in cuts if c < bound]


def greedy_grid(
    candidates: Sequence[float],
    ask: Callable[[float, list[float]], list[tuple[list[bool], list[bool]]]],
    *,
    max_rounds: int = 200,
) -> tuple[list[float], int]:
    """The grid, built from the left, of candidate cut points every site accepts.

    ``ask(start, ends)`` returns, per site, two lists of booleans, one entry per interval
    [start, end) for each end and a last one for [start, inf): whether the site may release
    that interval, and whether it holds none of the site's subjects. Each round fixes the
    next cut at the first end that every site accepts and that is not empty everywhere;
    when what remains cannot be one interval, the last cut moves to the next accepted end
    (backtracking). Returns the cut points and the number of rounds.
    """
    candidates = list(candidates)
    # One frame per fixed interval start: (start, index of its first end, pooled answers).
    stack: list[tuple[float, int, np.ndarray, np.ndarray]] = []
    cuts: list[float] = []
    rounds = 0
    start, first = 0.0, 0
    while True:
        if rounds >= max_rounds:
            raise SurvivalInputError(f"no time grid found in {max_rounds} rounds")
        ends = candidates[first:]
        answers = ask(start, ends)
        rounds += 1
        allowed = np.logical_and.reduce([np.asarray(a, dtype=bool) for a, _ in answers])
        empty = np.logical_and.reduce([np.asarray(e, dtype=bool) for _, e in answers])
        stack.append((start, first, allowed, empty))
        chosen = _next_end(allowed, empty, 0)
        while chosen is None:
            start, first, allowed, empty = stack[-1]
            if allowed[-1]:
                return cuts, rounds
            # What remains from this start cannot stand alone: move the previous cut on.
            stack.pop()
            if not stack:
                raise SurvivalInputError(
                    "no time grid meets every site's policy: a site has too few subjects for its minimum per interval")
            previous = cuts.pop()
            start, first, allowed, empty = stack[-1]
            chosen = _next_end(allowed, empty, candidates.index(previous) - first + 1)
        cut = candidates[first + chosen]
        cuts.append(cut)
        start, first = cut, first + chosen + 1


def _next_end(allowed: np.ndarray, empty: np.ndarray, after: int) -> int | None:
    """Index of the first finite end from ``after`` on that all sites accept and that holds someone."""
    for i in range(after, len(allowed) - 1):
        if allowed[i] and not empty[i]:
            return i
    return None


# ---------------------------------------------------------------- Kaplan–Meier and log-rank

def kaplan_meier(at_risk: np.ndarray, events: np.ndarray, alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Product-limit estimate with Greenwood's variance and log(-log) confidence bands."""
    at_risk = np.asarray(at_risk, dtype=float)
    events = np.asarray(events, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.cumsum(np.where(at_risk > 0, np.log(at_risk - events) - np.log(at_risk), 0.0))
        term = np.where((at_risk > events) & (at_risk > 0), events / (at_risk * (at_risk - events)), 0.0)
        greenwood = np.cumsum(term)
        survival = np.exp(log_s)
        z = normal_quantile(1 - alpha / 2)
        spread = z * np.sqrt(greenwood) / log_s
        lower = np.exp(-np.exp(np.log(-log_s) - spread))
        upper = np.exp(-np.exp(np.log(-log_s) + spread))
    # Where S is 1 no event has happened yet and the band is the point itself.
    lower = np.where(np.isnan(lower), 1.0, lower)
    upper = np.where(np.isnan(upper), 1.0, upper)
    return {"survival": survival, "variance_sum": greenwood, "ci_lower": lower, "ci_upper": upper}


def logrank(at_risk: np.ndarray, events: np.ndarray) -> dict[str, float]:
    """Log-rank test of G groups from at-risk and event counts (intervals x groups)."""
    n_g = np.asarray(at_risk, dtype=float)
    d_g = np.asarray(events, dtype=float)
    groups = n_g.shape[1]
    if groups < 2:
        raise SurvivalInputError("the log-rank test needs at least two groups")
    n = n_g.sum(axis=1)
    d = d_g.sum(axis=1)
    live = n > 0
    n_g, d_g, n, d = n_g[live], d_g[live], n[live], d[live]
    observed = d_g.sum(axis=0)
    expected = (n_g * (d / n)[:, None]).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tie = np.where(n > 1, (n - d) / (n - 1), 1.0)
    factor = tie * d / n**2
    V = np.diag(((factor * n)[:, None] * n_g).sum(axis=0)) - (n_g * factor[:, None]).T @ n_g
    z = (observed - expected)[:-1]
    statistic = float(z @ np.linalg.pinv(V[:-1, :-1]) @ z)
    dof = groups - 1
    return {
        "test_statistic": statistic,
        "degrees_of_freedom": dof,
        "p_value": chi2_sf(statistic, dof),
        "observed": observed,
        "expected": expected,
    }


# ---------------------------------------------------------------- Cox partial likelihood

@dataclass
class CoxSums:
    """Per-interval sums a Cox likelihood needs, at one coefficient vector.

    Risk-set sums run over subjects still at risk at an interval's start; event-set sums
    over the interval's events (Efron's ties only). ``event_x`` is the sum of the events'
    covariates over all intervals, which is all the likelihood needs of them.
    """

    events: np.ndarray               # (m,)
    risk0: np.ndarray                # (m,)      sum exp(eta)
    risk1: np.ndarray                # (m, p)    sum exp(eta) x
    risk2: np.ndarray                # (m, p, p) sum exp(eta) x x'
    event_x: np.ndarray              # (p,)
    event0: np.ndarray | None = None  # (m,)   Efron: sums over the interval's events
    event1: np.ndarray | None = None
    event2: np.ndarray | None = None

    def __add__(self, other: "CoxSums") -> "CoxSums":
        def add(a, b):
            return None if a is None or b is None else a + b
        return CoxSums(
            self.events + other.events, self.risk0 + other.risk0, self.risk1 + other.risk1,
            self.risk2 + other.risk2, self.event_x + other.event_x,
            add(self.event0, other.event0), add(self.event1, other.event1), add(self.event2, other.event2))


def cox_sums(slot: np.ndarray, event: np.ndarray, X: np.ndarray, beta: np.ndarray, size: int,
             *, efron: bool) -> CoxSums:
    """Sums over risk sets and event sets of the intervals 0..size-1 (``slot`` = each
    subject's interval; a subject is at risk in every interval up to its own)."""
    p = X.shape[1]
    w = np.exp(X @ beta)
    wx = w[:, None] * X
    wxx = wx[:, :, None] * X[:, None, :]

    def per_slot(mask):
        s0 = np.bincount(slot[mask], weights=w[mask], minlength=size)
        s1 = np.zeros((size, p))
        np.add.at(s1, slot[mask], wx[mask])
        s2 = np.zeros((size, p, p))
        np.add.at(s2, slot[mask], wxx[mask])
        return s0, s1, s2

    every = np.ones(len(slot), dtype=bool)
    left0, left1, left2 = per_slot(every)
    sums = CoxSums(
        events=np.bincount(slot[event], minlength=size).astype(float),
        risk0=np.cumsum(left0[::-1])[::-1],
        risk1=np.cumsum(left1[::-1], axis=0)[::-1],
        risk2=np.cumsum(left2[::-1], axis=0)[::-1],
        event_x=X[event].sum(axis=0),
    )
    if efron:
        sums.event0, sums.event1, sums.event2 = per_slot(event)
    return sums


def cox_likelihood(sums: CoxSums, beta: np.ndarray, ties: str) -> tuple[float, np.ndarray, np.ndarray]:
    """Log partial likelihood, its gradient and the observed information."""
    has = sums.events > 0
    d = sums.events[has]
    r0, r1, r2 = sums.risk0[has], sums.risk1[has], sums.risk2[has]
    if ties == "breslow":
        mean = r1 / r0[:, None]
        loglik = float(sums.event_x @ beta - (d * np.log(r0)).sum())
        gradient = sums.event_x - (d[:, None] * mean).sum(axis=0)
        second = r2 / r0[:, None, None] - mean[:, :, None] * mean[:, None, :]
        information = (d[:, None, None] * second).sum(axis=0)
        return loglik, gradient, information
    # Efron: the l-th of d tied events sees the risk set less l/d of the tied events.
    counts = d.astype(int)
    which = np.repeat(np.arange(len(d)), counts)
    share = np.concatenate([np.arange(c) / c for c in counts]) if len(counts) else np.zeros(0)
    e0, e1, e2 = sums.event0[has], sums.event1[has], sums.event2[has]
    s0 = r0[which] - share * e0[which]
    s1 = r1[which] - share[:, None] * e1[which]
    s2 = r2[which] - share[:, None, None] * e2[which]
    mean = s1 / s0[:, None]
    loglik = float(sums.event_x @ beta - np.log(s0).sum())
    gradient = sums.event_x - mean.sum(axis=0)
    information = (s2 / s0[:, None, None] - mean[:, :, None] * mean[:, None, :]).sum(axis=0)
    return loglik, gradient, information


def baseline_increments(sums: CoxSums) -> np.ndarray:
    """Breslow's estimate of the baseline hazard (covariates at zero) per interval:
    events / risk-set sum, the estimator lifelines and statsmodels report for either ties."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sums.events > 0, sums.events / sums.risk0, 0.0)


@dataclass
class NewtonResult:
    beta: np.ndarray
    loglik: float
    gradient: np.ndarray
    information: np.ndarray
    loglik_null: float
    iterations: int


def newton_raphson(
    evaluate: Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]],
    p: int,
    *,
    max_iterations: int = 50,
    tolerance: float = 1e-10,
    max_halvings: int = 30,
) -> NewtonResult:
    """Maximise a concave log-likelihood by Newton–Raphson with step-halving.

    Converged when the next Newton step would move no coefficient by more than
    ``tolerance`` (relative to its size): the step is Newton's estimate of the distance to
    the maximum, so the coefficients are that close to it. The test comes before the step
    is evaluated, because every evaluation is a round at the sites; testing the step just
    taken instead would ask them for one more log-likelihood that changes nothing the
    researcher sees.
    """
    beta = np.zeros(p)
    loglik, gradient, information = evaluate(beta)
    loglik_null = loglik
    for iteration in range(max_iterations + 1):  # iteration: steps taken so far
        step = _solve(information, gradient)  # also: the information here is invertible, for the errors
        if np.all(np.abs(step) <= tolerance * (1 + np.abs(beta))):
            return NewtonResult(beta, loglik, gradient, information, loglik_null, iteration)
        if iteration == max_iterations:
            break
        for _ in range(max_halvings + 1):
            trial = beta + step
            trial_loglik, trial_gradient, trial_information = evaluate(trial)
            if np.isfinite(trial_loglik) and trial_loglik >= loglik - 1e-12 * (1 + abs(loglik)):
                break
            step = step / 2
        else:
            raise NotConverged(
                f"the log-likelihood kept decreasing after {max_halvings} step-halvings at iteration {iteration + 1}")
        beta, loglik, gradient, information = trial, trial_loglik, trial_gradient, trial_information
    raise NotConverged(f"Newton–Raphson did not converge in {max_iterations} iterations")


def _solve(information: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(information)) or not np.all(np.isfinite(gradient)):
        raise NotConverged("the information matrix is not finite (covariates too large or perfectly separating)")
    if information.size == 0:
        return np.zeros(0)
    scale = np.sqrt(np.abs(np.diag(information)))
    if np.any(scale == 0) or np.linalg.cond(information / np.outer(scale, scale)) > 1e12:
        raise NotConverged(
            "the information matrix is singular: a covariate is constant or a linear combination of others")
    return np.linalg.solve(information, gradient)


def coefficient_table(names: Sequence[str], beta: np.ndarray, information: np.ndarray,
                      alpha: float = 0.05) -> list[dict]:
    """Coefficients with standard errors, Wald z and p, hazard ratios and their intervals."""
    covariance = np.linalg.inv(information)
    se = np.sqrt(np.diag(covariance))
    z = beta / se
    q = normal_quantile(1 - alpha / 2)
    rows = []
    for i, name in enumerate(names):
        rows.append({
            "covariate": name,
            "coef": float(beta[i]),
            "se": float(se[i]),
            "z": float(z[i]),
            "p": 2 * normal_sf(abs(float(z[i]))),
            "hazard_ratio": float(np.exp(beta[i])),
            "hr_lower": float(np.exp(beta[i] - q * se[i])),
            "hr_upper": float(np.exp(beta[i] + q * se[i])),
        })
    return rows
