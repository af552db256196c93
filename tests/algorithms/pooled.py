"""Bundled public datasets, their uneven split over three sites, and the pooled references.

Shared by the fast harness tests and the live tests through real nodes, so both compare
with the same pooled computations (pandas/numpy, statsmodels Logit).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.api as sm

# About 20% / 30% / 50% of the rows, in the datasets' own order.
SHARES = (0.2, 0.3, 0.5)
BREAST_CANCER_FEATURES = ["mean_radius", "mean_texture", "mean_smoothness", "mean_concavity"]
GBSG2_LEVELS = {"horTh": ["no", "yes"], "menostat": ["Pre", "Post"], "tgrade": ["I", "II", "III"]}
GBSG2_LOGISTIC = {"outcome": "cens", "covariates": ["age", "tsize", "pnodes", "horTh", "menostat", "tgrade"],
                  "levels": GBSG2_LEVELS}
BREAST_CANCER_LOGISTIC = {"outcome": "target", "covariates": BREAST_CANCER_FEATURES}


def close(actual, expected) -> bool:
    """Within 1e-8 absolute + 1e-8 relative, elementwise."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    return actual.shape == expected.shape and bool(np.all(np.abs(actual - expected) <= 1e-8 + 1e-8 * np.abs(expected)))


def datasets() -> dict[str, pd.DataFrame]:
    """label → the whole dataset, as the sites' files will hold it."""
    from lifelines.datasets import load_gbsg2, load_lung, load_rossi
    from sklearn.datasets import load_breast_cancer

    cancer = load_breast_cancer(as_frame=True).frame
    cancer.columns = [c.replace(" ", "_") for c in cancer.columns]
    features = cancer[BREAST_CANCER_FEATURES]
    # Standardised with the pooled mean and SD: part of preparing the test data, not of the method.
    cancer[BREAST_CANCER_FEATURES] = (features - features.mean()) / features.std()
    return {"gbsg2": load_gbsg2(), "rossi": load_rossi(), "lung": load_lung(), "breast_cancer": cancer}


def split(frame: pd.DataFrame, shares=SHARES) -> list[pd.DataFrame]:
    bounds = np.round(np.cumsum((0,) + tuple(shares)) * len(frame)).astype(int)
    return [frame.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:])]


def pooled_logit(frame: pd.DataFrame, outcome: str, covariates: list[str], levels: dict | None = None):
    levels = levels or {}
    x = frame[[outcome, *covariates]].dropna()
    design = pd.DataFrame({"intercept": 1.0}, index=x.index)
    for name in covariates:
        if name in levels:
            for level in levels[name][1:]:
                design[f"{name}[{level}]"] = (x[name].astype(str) == level).astype(float)
        else:
            design[name] = x[name].astype(float)
    return sm.Logit(x[outcome].astype(float), design).fit(disp=0, method="newton", tol=1e-12, maxiter=100)


def assert_matches_logit(result: dict, fit) -> None:
    assert result["type"] == "model" and result["converged"] is True
    assert result["terms"] == list(fit.params.index)
    assert result["n"] == int(fit.nobs) and result["residual_df"] == int(fit.df_resid)
    ci = fit.conf_int(alpha=0.05).to_numpy()
    for key, expected in (("coefficients", fit.params), ("standard_errors", fit.bse), ("z", fit.tvalues),
                          ("p_values", fit.pvalues), ("ci_lower", ci[:, 0]), ("ci_upper", ci[:, 1]),
                          ("loglik", fit.llf)):
        assert close(result[key], expected), (key, result[key], np.asarray(expected))


def assert_matches_summary(result: dict, frame: pd.DataFrame, columns: list[str], *, min_max: bool) -> None:
    pooled = result["values"]["columns"]
    assert result["n"] == len(frame)
    for name in columns:
        series = frame[name]
        entry = pooled[name]
        assert entry["missing"] == int(series.isna().sum())
        if entry["kind"] == "numeric":
            assert entry["n"] == int(series.notna().sum())
            assert close(entry["mean"], series.mean()), (name, entry["mean"], series.mean())
            assert close(entry["variance"], series.var(ddof=1)), (name, entry["variance"], series.var(ddof=1))
            assert ("min" in entry) is min_max
            if min_max:
                assert (entry["min"], entry["max"]) == (series.min(), series.max())
        else:
            counts = series.dropna().astype(str).value_counts()
            released = {lv: c for lv, c in zip(entry["levels"], entry["counts"]) if c is not None}
            assert released == {lv: int(counts[lv]) for lv in released}
