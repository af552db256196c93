"""bench/study.py's own parts that need no network: its lung data and its answer check.

The benchmark itself runs a server, four node agents and containers for minutes; it is
run by hand (bench/README.md), not in the suite.
"""

import importlib.util
import sys
from pathlib import Path

import pandas as pd

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_study", BENCH / "study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_lung_sites_are_lifelines_lung_split_by_institution():
    from lifelines.datasets import load_lung

    whole = load_lung().dropna(subset=["inst", "ph.ecog"])
    sites = [pd.read_csv(path) for path in sorted((BENCH / "data" / "lung").glob("site-*.csv"))]
    assert [len(site) for site in sites] == [73, 67, 54, 32]
    together = pd.concat(sites, ignore_index=True)
    assert len(together) == len(whole)
    # Same patients: durations, events and ages agree as multisets with the published data.
    for ours, theirs in (("time", "time"), ("status", "status"), ("age", "age"), ("ph_ecog", "ph.ecog")):
        assert sorted(together[ours].tolist()) == sorted(whole[theirs].astype(int).tolist())
    assert sorted(together["sex"].tolist()) == sorted(whole["sex"].map({1: "male", 2: "female"}).tolist())


def test_the_answer_check_tolerates_rounding_and_nothing_more():
    bench = load_bench()
    local = {"coefficients": [{"covariate": "age", "coef": 0.0123456789}], "n": 226, "iterations": 6}
    assert bench.differences({"coefficients": [{"covariate": "age", "coef": 0.0123456789 * (1 + 1e-12)}],
                              "n": 226, "iterations": 6}, local) == []
    wrong = bench.differences({"coefficients": [{"covariate": "age", "coef": 0.01235}], "n": 226,
                               "iterations": 7}, local)
    assert wrong == [".coefficients[0].coef: 0.01235 vs 0.0123456789", ".iterations: 7 vs 6"]
    assert bench.differences({"n": 226}, local) == ["top: keys ['coefficients', 'iterations']"]
