"""Kaplan–Meier survival curves (overall and by group) and the log-rank test, pooled over sites.

What leaves a site: per grid interval and per group, the number of events and of
censored subjects, nothing else. Per-time counts would reveal individual event times, so
the grid is the guarded one of ``_survival_protocol`` unless every site allows exact
event times (then, with the default ``grid="auto"``, the exact one): in each interval each group at each site has no leaver or at least the
policy's ``min_leavers``, so each subject's time is known only as one of that many. Event
counts within such an interval are released as they are (not suppressed under
``min_cell``): they tie no event to a person, and suppressing them would bias the curve.
A site with fewer complete rows than ``min_rows`` refuses. The pooled curve equals the Kaplan–Meier
estimate of all sites' patients with their times grouped into the grid's intervals; on
the exact grid it is the ordinary estimate.

Confidence bands: Greenwood's variance on the log(-log) scale, as lifelines and R's
``survfit(conf.type="log-log")`` compute them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from reference import _survival as sv
from reference._survival_protocol import (check_release, find_grid, group_labels, interval_bounds, site_rows,
                                          survival_event_times, survival_grid_check, survival_time_bound)
from vantage_algorithms import Policy, central, outputs, partial

if TYPE_CHECKING:  # pandas only where a site's data is read: a central run never imports it
    import pandas as pd

# The grid protocol's site methods answer in this image too.
__all__ = ["kaplan_meier", "kaplan_meier_counts", "survival_event_times", "survival_grid_check",
           "survival_time_bound"]

OVERALL = "all"


@partial
def kaplan_meier_counts(data: pd.DataFrame, policy: Policy, *, duration: str, event: str, cut_points: list,
                        group: str | None = None) -> outputs.Aggregate:
    """Events and censored subjects per interval of the grid, per group, at this site."""
    rows, frame = site_rows(data, policy, duration=duration, event=event, group=group)
    labels = group_labels(frame, group)
    check_release(policy, rows, cut_points, labels)
    cuts = sv.check_cuts(cut_points)
    counts = {}
    for label in ([OVERALL] if labels is None else sorted(labels.unique())):
        chosen = slice(None) if labels is None else (labels == label).to_numpy()
        events, censored = sv.interval_counts(rows.time[chosen], rows.event[chosen], cuts)
        counts[label] = {"events": events, "censored": censored}
    return outputs.Aggregate({"groups": counts}, len(rows.time))


@central
def kaplan_meier(client, policy: Policy, *, duration: str, event: str, group: str | None = None,
                 grid: str = "auto", cut_points: list | None = None, candidate_cuts: int = 30,
                 cut_every: float | None = None,
                 alpha: float = 0.05) -> outputs.Aggregate:
    """Pooled Kaplan–Meier curves on a grid every site accepts, and the log-rank test
    between the groups when a group column is given.

    Each curve is a table over the grid's intervals [start, end): subjects at risk at the
    start, events and censored subjects in the interval, and the survival estimate with
    its confidence band just after the interval's events.
    """
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise sv.SurvivalInputError("alpha must be a number between 0 and 1")
    columns = {"duration": duration, "event": event, "group": group}
    cuts, how = find_grid(client, columns, grid=grid, cut_points=cut_points, candidate_cuts=candidate_cuts,
                          cut_every=cut_every)
    answers = client.run("kaplan_meier_counts", {**columns, "cut_points": cuts})

    size = len(cuts) + 1
    pooled: dict[str, dict[str, np.ndarray]] = {}
    for answer in answers:
        for label, counts in answer["values"]["groups"].items():
            into = pooled.setdefault(label, {"events": np.zeros(size), "censored": np.zeros(size)})
            into["events"] += np.asarray(counts["events"], dtype=float)
            into["censored"] += np.asarray(counts["censored"], dtype=float)

    labels = sorted(pooled)
    events = np.column_stack([pooled[g]["events"] for g in labels])
    censored = np.column_stack([pooled[g]["censored"] for g in labels])
    at_risk = at_risk_from(events + censored)
    starts, ends = interval_bounds(cuts)

    def curve(n, d, c):
        estimate = sv.kaplan_meier(n, d, alpha)
        return {"start": starts, "end": ends, "at_risk": n, "events": d, "censored": c,
                "survival": estimate["survival"], "ci_lower": estimate["ci_lower"],
                "ci_upper": estimate["ci_upper"]}

    values = {"grid": {**how, "cut_points": cuts}, "alpha": alpha,
              "overall": curve(at_risk.sum(axis=1), events.sum(axis=1), censored.sum(axis=1))}
    if group is not None:
        values["groups"] = {g: curve(at_risk[:, i], events[:, i], censored[:, i]) for i, g in enumerate(labels)}
        if len(labels) > 1:
            test = sv.logrank(at_risk, events)
            values["logrank"] = {**test, "groups": labels}
    return outputs.Aggregate(values, int(at_risk[0].sum()))


def at_risk_from(leavers: np.ndarray) -> np.ndarray:
    """Subjects at risk at each interval's start: all who leave in it or later."""
    return np.cumsum(leavers[::-1], axis=0)[::-1]
