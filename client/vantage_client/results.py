"""Results as objects: each carries its organisation, run, status, log and typed result.

    for result in client.task_results(task_id):
        print(result.organization_name, result.status)
        result.to_frame()      # pandas, when installed
        result.plot()          # matplotlib, when installed (pip install 'vantage-client[plot]')

In Jupyter a result renders as an HTML table (`_repr_html_`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from . import present
from .errors import VantageError


@dataclass
class Result:
    run: int
    organization: int
    organization_name: str | None
    status: str
    value: Any = None
    log: str = ""
    run_fields: dict = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str | None:
        """The typed output's kind (model, aggregate, count_table, ...), or None."""
        return self.value.get("type") if isinstance(self.value, dict) else None

    def tables(self) -> list[tuple[str, list[str], list[list], str]]:
        return present.result_tables(self.value) if self.value is not None else []

    def to_frame(self, index: int = 0):
        """The result's first table (or the `index`-th) as a pandas DataFrame."""
        try:
            import pandas as pd
        except ImportError:
            raise VantageError("to_frame needs pandas: pip install pandas") from None
        tables = self.tables()
        if not tables:
            raise VantageError(f"run {self.run} has no result ({self.status})")
        _title, header, rows, _note = tables[index]
        return pd.DataFrame(rows, columns=header)

    def plot(self, ax=None):
        if self.value is None:
            raise VantageError(f"run {self.run} has no result to plot ({self.status})")
        return present.plot(self.value, ax=ax)

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(str(self.organization_name or self.organization))} "
                 f"(run {self.run}): {html.escape(self.status)}</h4>"]
        for title, header, rows, note in self.tables():
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                           for row in rows)
            parts.append(f"<table><caption>{html.escape(title)}</caption><thead><tr>{head}</tr></thead>"
                         f"<tbody>{body}</tbody></table>" + (f"<p>{html.escape(note)}</p>" if note else ""))
        return "".join(parts)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def task_results(client, task, *, logs: bool = True) -> list[Result]:
    names = {o["id"]: o["name"] for o in client.organizations.list()}
    results = []
    for run in client.task_runs(task):
        log = client.runs.log(run["id"]) if logs else ""
        results.append(Result(run=run["id"], organization=run["organization"],
                              organization_name=names.get(run["organization"]), status=run["status"],
                              value=run.get("result"), log=log, run_fields=run))
    return results
