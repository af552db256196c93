"""The pooled reference: what the study would find if the three sites pooled their data.

Only the demo may do this (it holds all three sites' files); the point of printing it is
to show that the federated answers equal it. Computed with pandas and lifelines, the
established implementations the algorithms are validated against.
"""

from functools import cached_property

import numpy as np
import pandas as pd

from demo.network import DATA_DIR


class PooledReference:
    def __init__(self, site_names: list[str]):
        self.site_names = site_names

    @cached_property
    def data(self) -> pd.DataFrame:
        frames = [pd.read_csv(DATA_DIR / f"{name}.csv").assign(site=name) for name in self.site_names]
        return pd.concat(frames, ignore_index=True)

    def summary(self, column: str) -> dict:
        values = self.data[column]
        present = values.dropna()
        return {
            "count": int(present.size), "missing": int(values.isna().sum()),
            "mean": float(present.mean()), "variance": float(present.var(ddof=1)),
            "min": float(present.min()), "max": float(present.max()),
        }

    def kaplan_meier(self, duration: str, event: str, group: str, cut_points: list[float],
                     grouped: bool = True) -> dict:
        """Kaplan–Meier per group and the log-rank test, on the federated run's time grid.

        The federated curve counts each interval's events against those at risk at its
        start; that is the ordinary estimator on times moved to the end of their interval,
        which is what the pooled fit gets here. `curves[level]["at"](t)` is the survival
        after the last interval ending by day t.
        """
        from lifelines import KaplanMeierFitter
        from lifelines.statistics import logrank_test

        ends = np.asarray(sorted(cut_points), dtype=float)
        frame = self.data.copy()
        if grouped:
            index = np.searchsorted(ends, frame[duration].to_numpy(dtype=float), side="right")
            beyond = ends[-1] * 2 + 1  # the open last interval: after every cut point
            frame[duration] = np.append(ends, beyond)[index]
        curves = {}
        for level, part in frame.groupby(group):
            fitter = KaplanMeierFitter().fit(part[duration], part[event])
            curves[str(level)] = {"at": self._step_at(fitter, ends)}
        levels = sorted(frame[group].unique())
        first, second = (frame[frame[group] == level] for level in levels[:2])
        test = logrank_test(first[duration], second[duration], first[event], second[event])
        return {"curves": curves, "logrank": {"statistic": float(test.test_statistic), "p": float(test.p_value)}}

    @staticmethod
    def _step_at(fitter, ends: np.ndarray):
        def at(time: float) -> float:
            passed = ends[ends <= time]
            if passed.size == 0:
                return 1.0
            return float(fitter.survival_function_at_times([passed[-1]]).iloc[0])
        return at

    def cox_stratified(self, duration: str, event: str, covariates: list[str],
                       categories: dict[str, list[str]]) -> dict:
        """Cox model stratified by site, Efron ties: each site keeps its own baseline hazard.

        A categorical covariate becomes one 0/1 column per level after the first (the
        reference), named `column[level]` as the federated model names them.
        """
        from lifelines import CoxPHFitter

        frame, names = self.design(covariates, categories)
        fitter = CoxPHFitter()
        fitter.fit(frame[[*names, duration, event, "site"]], duration_col=duration, event_col=event,
                   strata=["site"], fit_options={"precision": 1e-12})
        summary = fitter.summary
        return {
            name: {"coef": float(summary.loc[name, "coef"]), "se": float(summary.loc[name, "se(coef)"]),
                   "p": float(summary.loc[name, "p"])}
            for name in names
        }

    def design(self, covariates: list[str], categories: dict[str, list[str]]) -> tuple[pd.DataFrame, list[str]]:
        frame, names = self.data.copy(), []
        for name in covariates:
            if name in categories:
                for level in categories[name][1:]:
                    column = f"{name}[{level}]"
                    frame[column] = (frame[name].astype(str) == level).astype(float)
                    names.append(column)
            else:
                names.append(name)
        return frame, names
