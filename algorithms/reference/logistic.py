"""Logistic regression by Newton–Raphson over sites.

Per iteration each site sends, at the current coefficients, its gradient of the
log-likelihood (p numbers), its information matrix X'WX (p×p) and its log-likelihood.
The central method adds them and takes the Newton step; the sums are exactly the pooled
data's, so the fit is the pooled maximum-likelihood fit.

Categorical covariates are dummy-coded with the levels the researcher names (the first
is the reference), so every site builds the same design matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from vantage_algorithms import AlgorithmError, DisclosureError, Policy, central, outputs, partial
from vantage_algorithms.distributions import normal_quantile, normal_sf
from vantage_algorithms.tables import level_names

if TYPE_CHECKING:  # pandas only where a site's data is read: a central run never imports it
    import pandas as pd

TOLERANCE = 1e-8  # on the Newton step; the error left after it is of its square
MAX_ITERATIONS = 25


def _check_spec(outcome, covariates, levels) -> dict[str, list[str]]:
    if not isinstance(outcome, str) or not outcome:
        raise AlgorithmError("outcome must be a column name")
    if not isinstance(covariates, list) or not covariates or not all(isinstance(c, str) for c in covariates):
        raise AlgorithmError("covariates must be a non-empty list of column names")
    if len(set(covariates)) != len(covariates) or outcome in covariates:
        raise AlgorithmError("covariates must be distinct and must not include the outcome")
    levels = levels or {}
    if not isinstance(levels, dict) or any(
            name not in covariates or not isinstance(lv, list) or len(lv) < 2 or len(set(map(str, lv))) != len(lv)
            for name, lv in levels.items()):
        raise AlgorithmError("levels must map covariates to lists of at least two distinct levels "
                             "(the first is the reference)")
    return {name: [str(v) for v in lv] for name, lv in levels.items()}


def term_names(covariates: list[str], levels: dict[str, list[str]], intercept: bool) -> list[str]:
    names = ["intercept"] if intercept else []
    for name in covariates:
        names += [f"{name}[{lv}]" for lv in levels[name][1:]] if name in levels else [name]
    return names


def design(data: pd.DataFrame, outcome: str, covariates: list[str], levels: dict[str, list[str]],
           intercept: bool) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) over the complete rows; bad columns are errors naming the column."""
    import pandas as pd  # here, not at the top: a central run never reads data

    for name in [outcome, *covariates]:
        if name not in data.columns:
            raise AlgorithmError(f"no column {name!r} in this site's data")
    complete = data[[outcome, *covariates]].dropna()
    y = complete[outcome]
    if not pd.api.types.is_numeric_dtype(y) or not y.isin([0, 1]).all():
        raise AlgorithmError(f"the outcome {outcome!r} must be coded 0/1")
    columns = [np.ones(len(complete))] if intercept else []
    for name in covariates:
        series = complete[name]
        if name in levels:
            names = level_names(series)
            unknown = sorted(set(names) - set(levels[name]))
            if unknown:
                raise AlgorithmError(f"covariate {name!r} has levels not named in levels: {', '.join(unknown)}")
            columns += [(names == lv).to_numpy(dtype=float) for lv in levels[name][1:]]
        elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            columns.append(series.to_numpy(dtype=float))
        else:
            raise AlgorithmError(f"covariate {name!r} is not numeric: name its levels in levels to dummy-code it")
    return np.column_stack(columns), y.to_numpy(dtype=float)


def _log_expit(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


@partial
def logistic_site(data: pd.DataFrame, policy: Policy, *, outcome: str, covariates: list[str], beta: list[float],
                  levels: dict | None = None, intercept: bool = True) -> outputs.Intermediate:
    """Gradient, information matrix and log-likelihood of this site's rows at `beta`."""
    levels = _check_spec(outcome, covariates, levels)
    x, y = design(data, outcome, covariates, levels, intercept)
    policy.require_rows(len(y), "complete rows")
    events = int(y.sum())
    policy.require_cell(events, f"rows with {outcome} = 1")
    policy.require_cell(len(y) - events, f"rows with {outcome} = 0")
    beta = np.asarray(beta, dtype=float)
    if beta.shape != (x.shape[1],):
        raise AlgorithmError(f"beta must have {x.shape[1]} numbers, one per term")
    eta = x @ beta
    p = np.exp(_log_expit(eta))
    weights = p * (1 - p)
    # Coefficients can be chosen (by a task calling this method directly) so that every
    # weight but one vanishes, and the information matrix becomes one patient's x x'.
    effective_rows = weights.sum() ** 2 / np.sum(weights ** 2) if weights.any() else 0.0
    if effective_rows < policy.min_rows:
        raise DisclosureError(f"at these coefficients the information matrix would rest on about "
                              f"{effective_rows:.1f} rows, fewer than its policy's minimum of {policy.min_rows} "
                              f"(VANTAGE_MIN_ROWS)")
    loglik = float(np.sum(y * _log_expit(eta) + (1 - y) * _log_expit(-eta)))
    return outputs.Intermediate(n=len(y), arrays={"gradient": x.T @ (y - p),
                                                  "information": (x * weights[:, None]).T @ x},
                                scalars={"loglik": loglik})


@central
def logistic(client, policy: Policy, *, outcome: str, covariates: list[str], levels: dict | None = None,
             intercept: bool = True, max_iterations: int = MAX_ITERATIONS, tolerance: float = TOLERANCE,
             confidence: float = 0.95) -> outputs.Model:
    """The pooled maximum-likelihood fit, with Wald standard errors, z, p-values and CIs."""
    levels = _check_spec(outcome, covariates, levels)
    if not isinstance(max_iterations, int) or not 1 <= max_iterations <= 100:
        raise AlgorithmError("max_iterations must be a whole number from 1 to 100")
    if not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise AlgorithmError("tolerance must be a number between 0 and 1")
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise AlgorithmError("confidence must be a number between 0 and 1")
    names = term_names(covariates, levels, intercept)
    organizations = client.organizations()
    spec = {"outcome": outcome, "covariates": covariates, "levels": levels, "intercept": intercept}

    def evaluate(beta: np.ndarray):
        results = client.run("logistic_site", {**spec, "beta": beta.tolist()}, organizations)
        gradient = sum(np.asarray(r["arrays"]["gradient"]) for r in results)
        information = sum(np.asarray(r["arrays"]["information"]) for r in results)
        return gradient, information, sum(r["scalars"]["loglik"] for r in results), sum(r["n"] for r in results)

    beta = np.zeros(len(names))
    gradient, information, loglik, n = evaluate(beta)
    converged, iterations = False, 0
    while iterations < max_iterations:
        try:
            step = np.linalg.solve(information, gradient)
        except np.linalg.LinAlgError:
            raise AlgorithmError("the information matrix is singular: a covariate is constant or collinear "
                                 "with others") from None
        beta = beta + step
        iterations += 1
        gradient, information, loglik, n = evaluate(beta)
        if np.max(np.abs(step)) < tolerance * (1 + np.max(np.abs(beta))):
            converged = True
            break
    covariance = np.linalg.inv(information)
    se = np.sqrt(np.diag(covariance))
    z = beta / se
    quantile = normal_quantile(0.5 + confidence / 2)
    return outputs.Model("logistic", n=n, residual_df=n - len(names), values={
        "terms": names, "coefficients": beta, "standard_errors": se, "z": z,
        "p_values": np.array([2 * normal_sf(abs(value)) for value in z]), "confidence": confidence,
        "ci_lower": beta - quantile * se, "ci_upper": beta + quantile * se,
        "odds_ratios": np.exp(beta), "loglik": loglik, "iterations": iterations, "converged": converged,
        "covariance": covariance, "organizations": organizations,
    })
