"""Disclosure policy: thresholds the node operator sets in the node's `algorithm_env`.

Every run reads its own node's policy from its environment. Nothing in the task input
can change it: the runner refuses task arguments named like a policy setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from vantage_algorithms.errors import AlgorithmError, DisclosureError

# Settings the toolkit knows: (environment variable, Policy field, default).
SETTINGS = (
    ("VANTAGE_MIN_ROWS", "min_rows", 10),
    ("VANTAGE_MIN_CELL", "min_cell", 5),
    ("VANTAGE_MIN_RISKSET_LEAVERS", "min_leavers", 5),
    ("VANTAGE_MIN_EVENTS", "min_events", 10),
    ("VANTAGE_ALLOW_EXACT_EVENT_TIMES", "allow_exact_event_times", False),
    ("VANTAGE_ALLOW_MIN_MAX", "allow_min_max", False),
    ("VANTAGE_ALLOW_SQL_QUERY", "allow_sql_query", False),
)
# A misspelt setting would otherwise leave its default silently in force.
SETTING_PREFIXES = ("VANTAGE_MIN_", "VANTAGE_ALLOW_")
TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


class PolicyError(AlgorithmError):
    """The node's disclosure settings are malformed."""


@dataclass(frozen=True)
class Policy:
    min_rows: int = 10
    min_cell: int = 5
    min_leavers: int = 5
    min_events: int = 10
    allow_exact_event_times: bool = False
    allow_min_max: bool = False
    # A query from the task picks the rows (say, everyone but one patient), and two
    # answers differ by one person; a table name cannot.
    allow_sql_query: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Policy:
        """The policy in decoded environment values; unset settings keep their safe defaults."""
        known = {name for name, _, _ in SETTINGS}
        unknown = sorted(n for n in env if n.startswith(SETTING_PREFIXES) and n not in known)
        if unknown:
            raise PolicyError(f"unknown disclosure setting {', '.join(unknown)} in the node's algorithm_env "
                              f"(known: {', '.join(sorted(known))})")
        values = {}
        for name, field_name, default in SETTINGS:
            if name not in env:
                continue
            raw = str(env[name]).strip()
            if isinstance(default, bool):
                if raw.lower() not in TRUE_WORDS | FALSE_WORDS:
                    raise PolicyError(f"{name} must be true or false, not {raw!r}")
                values[field_name] = raw.lower() in TRUE_WORDS
            else:
                if not raw.isdigit() or int(raw) < 1:
                    raise PolicyError(f"{name} must be a whole number of at least 1, not {raw!r}")
                values[field_name] = int(raw)
        return cls(**values)

    @classmethod
    def names(cls) -> set[str]:
        """Field names and environment names, which task input may not use."""
        return {f.name for f in fields(cls)} | {name for name, _, _ in SETTINGS}

    def require_rows(self, n: int, what: str = "rows") -> None:
        if n < self.min_rows:
            raise DisclosureError(f"this site has {n} {what}, fewer than its policy's minimum of {self.min_rows} "
                                  f"(VANTAGE_MIN_ROWS)")

    def require_events(self, n: int, what: str = "events") -> None:
        if n < self.min_events:
            raise DisclosureError(f"this site has {n} {what}, fewer than its policy's minimum of "
                                  f"{self.min_events} (VANTAGE_MIN_EVENTS)")

    def require_cell(self, n: int, what: str) -> None:
        """A count that the answer would reveal, which must be 0 or at least min_cell."""
        if 0 < n < self.min_cell:
            raise DisclosureError(f"this site has {n} {what}, fewer than its policy's minimum cell count of "
                                  f"{self.min_cell} (VANTAGE_MIN_CELL)")

    def require_leavers(self, n: int, what: str = "subjects leaving the risk set in an interval") -> None:
        if n < self.min_leavers:
            raise DisclosureError(f"this site has {n} {what}, fewer than its policy's minimum of "
                                  f"{self.min_leavers} (VANTAGE_MIN_RISKSET_LEAVERS)")

    def check_selection(self, selection: dict) -> None:
        """The task's choice of rows of an SQL database: a table always, a query only if allowed."""
        if "query" in selection and not self.allow_sql_query:
            raise DisclosureError("this node does not take SQL queries from tasks (VANTAGE_ALLOW_SQL_QUERY); "
                                  "name a table instead")

    def suppress(self, count: int) -> int | None:
        """The count itself, or None when it is a small cell (1 .. min_cell-1)."""
        return None if 0 < count < self.min_cell else int(count)
