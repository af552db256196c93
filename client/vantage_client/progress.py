"""A progress bar for `client.tasks.wait(task, bar=True)`: finished runs out of all,
with each organisation's state, in a terminal or a notebook (tqdm.auto picks the widget).
tqdm is optional: `pip install 'vantage-client[progress]'`."""

from __future__ import annotations

from collections.abc import Callable

from .errors import VantageError

FINAL_RUN = {"completed", "failed", "crashed", "killed", "rejected", "timed_out"}


class RunBar:
    def __init__(self, total: int, names: dict[int, str], then: Callable[[dict], None] | None = None, **options):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise VantageError("a progress bar needs tqdm: pip install 'vantage-client[progress]'") from None
        self.bar = tqdm(total=total, unit="run", **options)
        self.names, self.then = names, then
        self.states: dict[int, tuple[int | None, str]] = {}

    def __call__(self, event: dict) -> None:
        run = event.get("run") if event.get("type") == "run.updated" else None
        if isinstance(run, dict) and run.get("id") is not None:
            before = self.states.get(run["id"], (None, ""))[1]
            self.states[run["id"]] = (run.get("organization"), run.get("status", ""))
            if run.get("status") in FINAL_RUN and before not in FINAL_RUN:
                self.bar.update(1)
            self.bar.set_postfix_str(", ".join(
                f"{self.names.get(org, org)}: {status}" for org, status in self.states.values()), refresh=True)
        if self.then is not None:
            self.then(event)

    def close(self) -> None:
        self.bar.close()
