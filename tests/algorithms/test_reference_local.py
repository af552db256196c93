"""Summary, crosstab and logistic regression through the local harness, against pooled
computations on bundled public data split unevenly over three sites; and their guards."""

import numpy as np
import pandas as pd
import pytest

from reference.summary import merge_moments
from tests.algorithms import pooled
from vantage_algorithms import AlgorithmError, SubtaskFailed
from vantage_algorithms.harness import run_local

DATA = pooled.datasets()
ALLOW_MIN_MAX = {"VANTAGE_ALLOW_MIN_MAX": "true"}


def sites_of(label: str) -> dict[int, pd.DataFrame]:
    return dict(zip((11, 12, 13), pooled.split(DATA[label])))


@pytest.mark.parametrize("label, columns", [
    ("gbsg2", ["age", "tsize", "pnodes", "progrec", "estrec", "time", "horTh", "menostat", "tgrade"]),
    ("lung", ["age", "ph.ecog", "ph.karno", "pat.karno", "meal.cal", "wt.loss", "sex"]),
])
def test_summary_matches_pandas_on_the_pooled_data(label, columns):
    sites = sites_of(label)
    result = run_local("reference.summary", "summary", kwargs={"columns": columns, "categorical": ["sex"]},
                       sites=sites, env={org: ALLOW_MIN_MAX for org in sites})
    pooled.assert_matches_summary(result, DATA[label], columns, min_max=True)


def test_min_and_max_are_released_only_where_every_sites_policy_allows_them():
    sites = sites_of("gbsg2")
    result = run_local("reference.summary", "summary", kwargs={"columns": ["age"]}, sites=sites,
                       env={11: ALLOW_MIN_MAX, 12: ALLOW_MIN_MAX})
    assert "min" not in result["values"]["columns"]["age"]
    pooled.assert_matches_summary(result, DATA["gbsg2"], ["age"], min_max=False)


def test_chan_merge_keeps_the_variance_where_a_sum_of_squares_would_cancel():
    rng = np.random.default_rng(5)
    parts = [1e9 + rng.normal(0, 1, n) for n in (30, 70, 150)]
    n, mean, m2 = merge_moments([(len(p), p.mean(), np.sum((p - p.mean()) ** 2)) for p in parts])
    everything = np.concatenate(parts)
    assert n == 250 and pooled.close(m2 / (n - 1), everything.var(ddof=1))
    naive = (np.sum(everything ** 2) - everything.sum() ** 2 / n) / (n - 1)
    assert not pooled.close(naive, everything.var(ddof=1))  # what the one-pass formula would have said


def test_summary_suppresses_small_categorical_cells_at_each_site():
    frames = {1: pd.DataFrame({"stage": ["I"] * 3 + ["II"] * 20 + ["III"] * 9}),
              2: pd.DataFrame({"stage": ["I"] * 8 + ["II"] * 12 + ["III"] * 6})}
    result = run_local("reference.summary", "summary", sites=frames)
    stage = result["values"]["columns"]["stage"]
    # Site 1 hides I (3) and, so that its total does not give it back, III (9).
    assert stage["levels"] == ["I", "II", "III"] and stage["counts"] == [None, 32, None]
    assert stage["suppressed_levels"] == ["I", "III"] and stage["n"] == 58
    site1 = run_local("reference.summary", "summary_site", sites={1: frames[1]})[0]
    assert site1["values"]["columns"]["stage"]["counts"]["counts"] == [None, 20, None]


def test_a_numeric_column_with_too_few_values_at_a_site_is_withheld_with_the_reason():
    frames = {1: pd.DataFrame({"x": [1.0] * 5 + [None] * 10}), 2: pd.DataFrame({"x": np.arange(20.0)})}
    result = run_local("reference.summary", "summary", sites=frames)
    assert result["values"]["columns"]["x"] == {
        "kind": "numeric", "missing": 10,
        "withheld": {"1": "5 non-missing values, fewer than the policy's minimum of 10"}}


def test_summary_refuses_at_a_site_below_min_rows_and_names_it():
    sites = sites_of("gbsg2")
    with pytest.raises(SubtaskFailed, match="organisation 12: refused by its disclosure policy: this site has 206 "
                                            "rows, fewer than its policy's minimum of 300"):
        run_local("reference.summary", "summary", sites=sites, env={12: {"VANTAGE_MIN_ROWS": "300"}})


def test_crosstab_matches_pandas_where_no_cell_is_small():
    sites = sites_of("gbsg2")
    relaxed = {org: {"VANTAGE_MIN_CELL": "1"} for org in sites}
    result = run_local("reference.crosstab", "crosstab", kwargs={"row": "horTh", "column": "tgrade"}, sites=sites,
                       env=relaxed)
    expected = pd.crosstab(DATA["gbsg2"]["horTh"], DATA["gbsg2"]["tgrade"])
    assert result["levels"] == [["no", "yes"], ["I", "II", "III"]]
    assert result["counts"] == expected.to_numpy().tolist() and result["total"] == 686
    assert result["suppressed_cells"] == 0


@pytest.mark.parametrize("min_cell", [5, 20])
def test_crosstab_hides_every_cell_small_at_some_site_and_the_rest_is_exact(min_cell):
    sites = sites_of("gbsg2")
    env = {org: {"VANTAGE_MIN_CELL": str(min_cell)} for org in sites}
    result = run_local("reference.crosstab", "crosstab", kwargs={"row": "horTh", "column": "tgrade"}, sites=sites,
                       env=env)
    expected = pd.crosstab(DATA["gbsg2"]["horTh"], DATA["gbsg2"]["tgrade"]).to_numpy()
    hidden = np.array([[c is None for c in row] for row in result["counts"]])
    for frame in sites.values():
        site = pd.crosstab(frame["horTh"], frame["tgrade"]).reindex(index=["no", "yes"],
                                                                    columns=["I", "II", "III"], fill_value=0)
        small = (site.to_numpy() > 0) & (site.to_numpy() < min_cell)
        assert hidden[small].all()
    assert hidden.sum() >= 2 and result["suppressed_cells"] == hidden.sum() and result["min_cell"] == min_cell
    assert all(result["counts"][i][j] == expected[i, j] for i, j in zip(*np.nonzero(~hidden)))


def test_crosstab_levels_agree_across_sites_when_a_column_is_float_at_one_site():
    frames = {1: pd.DataFrame({"a": [1, 2] * 10, "b": ["x"] * 20}),
              2: pd.DataFrame({"a": [1.0, 2.0, None] * 10, "b": ["x", "y", "x"] * 10})}
    result = run_local("reference.crosstab", "crosstab", kwargs={"row": "a", "column": "b"}, sites=frames,
                       env={1: {"VANTAGE_MIN_CELL": "1"}, 2: {"VANTAGE_MIN_CELL": "1"}})
    assert result["levels"] == [["1", "2"], ["x", "y"]]
    assert result["counts"] == [[20, 0], [10, 10]] and result["missing"] == 10


@pytest.mark.parametrize("label, spec", [("breast_cancer", pooled.BREAST_CANCER_LOGISTIC),
                                         ("gbsg2", pooled.GBSG2_LOGISTIC)])
def test_logistic_regression_matches_statsmodels_on_the_pooled_data(label, spec):
    result = run_local("reference.logistic", "logistic", kwargs=spec, sites=sites_of(label))
    pooled.assert_matches_logit(result, pooled.pooled_logit(DATA[label], **spec))


def test_logistic_regression_refuses_where_the_outcome_is_a_small_cell():
    frames = sites_of("breast_cancer")
    frames[13] = pd.concat([frames[13][frames[13].target == 0], frames[13][frames[13].target == 1].head(3)])
    with pytest.raises(SubtaskFailed, match=r"organisation 13: refused by its disclosure policy: this site has 3 "
                                            r"rows with target = 1, fewer than its policy's minimum cell count of 5"):
        run_local("reference.logistic", "logistic", kwargs=pooled.BREAST_CANCER_LOGISTIC, sites=frames)


def test_logistic_site_refuses_coefficients_that_single_out_a_patient():
    site = sites_of("breast_cancer")[12]
    radius = site["mean_radius"].iloc[7]
    # eta = 1000 (radius_i - radius_7): every weight p(1-p) vanishes but patient 7's.
    beta = [-1000 * radius, 1000, 0, 0, 0]
    with pytest.raises(SubtaskFailed, match=r"organisation 12: refused by its disclosure policy: at these "
                                            r"coefficients the information matrix would rest on about 1\.\d rows"):
        run_local("reference.logistic", "logistic_site", kwargs={**pooled.BREAST_CANCER_LOGISTIC, "beta": beta},
                  sites={12: site})


@pytest.mark.parametrize("kwargs, message", [
    ({"outcome": "target", "covariates": []}, "covariates must be a non-empty list of column names"),
    ({"outcome": "target", "covariates": ["target"]}, "must not include the outcome"),
    ({"outcome": "mean_radius", "covariates": ["mean_texture"]}, "the outcome 'mean_radius' must be coded 0/1"),
    ({"outcome": "target", "covariates": ["weight"]}, "no column 'weight' in this site's data"),
    ({"outcome": "target", "covariates": ["mean_texture"], "levels": {"mean_texture": ["a"]}},
     "levels must map covariates to lists of at least two distinct levels"),
    ({"outcome": "target", "covariates": ["mean_texture"], "max_iterations": 0},
     "max_iterations must be a whole number from 1 to 100"),
])
def test_logistic_regression_bad_input_is_one_sentence(kwargs, message):
    with pytest.raises((AlgorithmError, SubtaskFailed), match=message):
        run_local("reference.logistic", "logistic", kwargs=kwargs, sites=sites_of("breast_cancer"))


def test_a_categorical_covariate_without_levels_is_named():
    with pytest.raises(SubtaskFailed, match="covariate 'horTh' is not numeric: name its levels in levels"):
        run_local("reference.logistic", "logistic", kwargs={"outcome": "cens", "covariates": ["horTh"]},
                  sites=sites_of("gbsg2"))
