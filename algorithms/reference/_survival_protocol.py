"""The time-grid protocol shared by Kaplan–Meier and Cox: site methods and the central side.

How a grid is found without any site revealing an individual time:

0. ``grid="auto"`` (default): exact when every site's policy allows exact event times
   (each says so with its rounded follow-up, below), guarded otherwise; a researcher who
   proposes cut points (``cut_points`` or ``cut_every``) gets the guarded grid on them.
1. ``grid="exact"``: each site sends its distinct event times, which it does only when its
   policy sets VANTAGE_ALLOW_EXACT_EVENT_TIMES; the grid is their union. Otherwise the
   run fails with the refusing site's reason.
2. ``grid="guarded"``: the candidate cut points are the researcher's (``cut_points``, or
   every ``cut_every`` time units, e.g. 365 days), or else round multiples of 1, 2, 2.5 or
   5 times a power of ten (at most ``candidate_cuts`` of them) up to the largest site's
   follow-up, which each site states only rounded up to 1, 2 or 5 times a power of ten. The central method
   builds the grid from the left: from the last cut fixed, it asks every site, for each
   candidate end, "may you release [start, end)?" (see ``_survival.intervals_allowed``)
   and "is it empty here?", and fixes the first end every site accepts (moving an earlier
   cut on when the remainder cannot be one interval). The sites only ever judge unions of
   lattice intervals, and answer with yes/no, never counts; what the answers reveal is
   where, at the lattice's resolution, a site's subjects leave in groups of min_leavers.

Whatever grid the central method asks for later, each site checks it again before
releasing anything: the protocol finds a grid, the site's own check guards it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from reference import _survival as sv
from vantage_algorithms import DisclosureError, Policy, outputs, partial

if TYPE_CHECKING:  # pandas only where a site's data is read: a central run never imports it
    import pandas as pd

GRIDS = ("auto", "guarded", "exact")
MAX_CANDIDATES = 1000


def site_rows(data: pd.DataFrame, policy: Policy, *, duration: str, event: str, covariates=(),
              categories=None, group: str | None = None) -> tuple[sv.SurvivalData, pd.DataFrame]:
    """This site's complete cases, refused below the policy's minimum number of rows."""
    if group is not None and not isinstance(group, str):
        raise sv.SurvivalInputError("group must be a column name")
    rows, frame = sv.survival_data(data, duration=duration, event=event, covariates=covariates or (),
                                   categories=categories, extra=(group,) if group else ())
    policy.require_rows(len(rows.time), "complete rows")
    return rows, frame


def group_labels(frame: pd.DataFrame, group: str | None) -> pd.Series | None:
    return None if group is None else frame[group].astype(str)


def check_release(policy: Policy, rows: sv.SurvivalData, cuts, labels: pd.Series | None = None,
                  *, event_sums: bool = False) -> None:
    """Refuse a grid on which this site's release would break its policy."""
    if policy.allow_exact_event_times:
        return
    allowed = allowed_intervals(policy, rows, cuts, labels, event_sums=event_sums)
    if not allowed.all():
        raise DisclosureError(
            f"{int((~allowed).sum())} interval(s) of the requested time grid hold fewer subjects leaving this "
            f"site's risk set than its policy allows (VANTAGE_MIN_RISKSET_LEAVERS={policy.min_leavers}), "
            f"and exact event times are not allowed here")


def allowed_intervals(policy: Policy, rows: sv.SurvivalData, cuts, labels: pd.Series | None,
                      *, event_sums: bool):
    cuts = sv.check_cuts(cuts)
    selections = [slice(None)] if labels is None else [(labels == v).to_numpy() for v in labels.unique()]
    allowed = None
    for chosen in selections:
        events, censored = sv.interval_counts(rows.time[chosen], rows.event[chosen], cuts)
        ok = sv.intervals_allowed(events, censored, min_leavers=policy.min_leavers,
                                  event_sums=event_sums)
        allowed = ok if allowed is None else allowed & ok
    return allowed


@partial
def survival_time_bound(data: pd.DataFrame, policy: Policy, *, duration: str, event: str, covariates=None,
                        categories=None, group: str | None = None) -> dict:
    """The longest follow-up here, rounded up to 1, 2 or 5 times a power of ten, and
    whether this site's policy allows exact event times (so grid="auto" can use them)."""
    rows, _ = site_rows(data, policy, duration=duration, event=event, covariates=covariates,
                        categories=categories, group=group)
    # Typed, so that the node's output gate releases it without a person (nodeagent/gate.py).
    return outputs.Aggregate({"bound": sv.round_up_coarsely(float(rows.time.max())),
                              "exact": bool(policy.allow_exact_event_times)}, len(rows.time))


@partial
def survival_grid_check(data: pd.DataFrame, policy: Policy, *, duration: str, event: str, start: float,
                        ends: list, covariates=None, categories=None, group: str | None = None,
                        event_sums: bool = False) -> dict:
    """For each interval [start, end), and [start, inf) last: may this site release it, and
    does it hold none of this site's subjects? Yes/no answers only, never counts."""
    rows, frame = site_rows(data, policy, duration=duration, event=event, covariates=covariates,
                            categories=categories, group=group)
    ends = sv.check_cuts(ends)
    if not isinstance(start, (int, float)) or isinstance(start, bool) or (len(ends) and start >= ends[0]):
        raise sv.SurvivalInputError("start must be a number below every end")
    labels = group_labels(frame, group)
    # Each group's rows once, as arrays: comparing the labels again for every candidate
    # interval made this check the slowest step of a guarded grid search.
    groups = None if labels is None else [(labels == v).to_numpy() for v in labels.unique()]
    after = rows.time >= start
    allowed, empty = [], []
    for end in [*ends.tolist(), float("inf")]:
        inside = after & (rows.time < end)
        allowed.append(policy.allow_exact_event_times or _interval_allowed(policy, rows, inside, groups, event_sums))
        empty.append(not inside.any())
    return outputs.Aggregate({"allowed": allowed, "empty": empty}, len(rows.time))


def _interval_allowed(policy: Policy, rows: sv.SurvivalData, inside, groups: list | None, event_sums: bool) -> bool:
    selections = [inside] if groups is None else [inside & chosen for chosen in groups]
    for chosen in selections:
        events = np.array([rows.event[chosen].sum()])
        censored = np.array([chosen.sum()]) - events
        if not sv.intervals_allowed(events, censored, min_leavers=policy.min_leavers,
                                    event_sums=event_sums)[0]:
            return False
    return True


@partial
def survival_event_times(data: pd.DataFrame, policy: Policy, *, duration: str, event: str, covariates=None,
                         categories=None, group: str | None = None) -> dict:
    """This site's distinct event times, only where its policy allows exact event times."""
    if not policy.allow_exact_event_times:
        raise DisclosureError("exact event times are not released by this site "
                              "(its policy does not set VANTAGE_ALLOW_EXACT_EVENT_TIMES)")
    rows, _ = site_rows(data, policy, duration=duration, event=event, covariates=covariates,
                        categories=categories, group=group)
    return {"times": sorted(set(rows.time[rows.event].tolist()))}


def find_grid(client, columns: dict, *, grid: str, cut_points=None, candidate_cuts: int = 30,
              event_sums: bool = False, cut_every=None) -> tuple[list[float], dict]:
    """The cut points every site accepts, and how they were found.

    ``columns`` are the kwargs naming the data (duration, event, covariates, categories,
    group) that every site method takes.
    """
    if grid not in GRIDS:
        raise sv.SurvivalInputError(f"grid must be one of {', '.join(GRIDS)}, not {grid!r}")
    if cut_points is not None and cut_every is not None:
        raise sv.SurvivalInputError("give cut_points or cut_every, not both")
    if grid == "exact":
        if cut_points is not None or cut_every is not None:
            raise sv.SurvivalInputError("cut_points and cut_every apply to the guarded grid, not to grid='exact'")
        return _exact_grid(client, columns, rounds=1)
    if cut_points is not None:
        candidates = sv.check_cuts(cut_points).tolist()
        rounds = 0
    else:
        if cut_every is None and (not isinstance(candidate_cuts, int) or isinstance(candidate_cuts, bool)
                                  or not 1 <= candidate_cuts <= MAX_CANDIDATES):
            raise sv.SurvivalInputError("candidate_cuts must be a whole number from 1 to 1000")
        if cut_every is not None and (isinstance(cut_every, bool) or not isinstance(cut_every, (int, float))
                                      or not cut_every > 0):
            raise sv.SurvivalInputError("cut_every must be a positive number of time units")
        answers = client.run("survival_time_bound", columns)
        if grid == "auto" and cut_every is None and all(a["values"].get("exact") is True for a in answers):
            cuts, how = _exact_grid(client, columns, rounds=2)
            return cuts, {**how, "chosen": "auto: every site allows exact event times"}
        bound = max(a["values"]["bound"] for a in answers)
        if cut_every is not None:
            if bound / cut_every > MAX_CANDIDATES:
                raise sv.SurvivalInputError(f"cut_every={cut_every:g} makes more than {MAX_CANDIDATES} candidate "
                                            "cut points: choose a longer interval")
            candidates = sv.cuts_every(cut_every, bound)
        else:
            candidates = sv.candidate_cuts(bound, candidate_cuts)
        rounds = 1

    def ask(start: float, ends: list[float]) -> list[tuple[list[bool], list[bool]]]:
        answers = client.run("survival_grid_check",
                             {**columns, "start": start, "ends": ends, "event_sums": event_sums})
        return [(a["values"]["allowed"], a["values"]["empty"]) for a in answers]

    cuts, checks = sv.greedy_grid(candidates, ask)
    return cuts, {"grid": "guarded", "rounds": rounds + checks, "candidates": len(candidates)}


def _exact_grid(client, columns: dict, *, rounds: int) -> tuple[list[float], dict]:
    answers = client.run("survival_event_times", columns)
    cuts = sorted(set().union(*(a["times"] for a in answers)))
    return cuts, {"grid": "exact", "rounds": rounds}


def interval_bounds(cuts: list[float]) -> tuple[list[float], list[float | None]]:
    """Start and end of each grid interval (the last has no end)."""
    return [0.0, *cuts], [*cuts, None]
