"""Run a method locally: the central function and each site's partials in one process.

    from vantage_algorithms.harness import run_local
    result = run_local("reference.summary", "summary", kwargs={"columns": ["age"]},
                       sites={1: "site1.csv", 2: frame2}, env={2: {"VANTAGE_MIN_ROWS": "20"}})

No server, no Docker. Every input and output goes through a JSON round trip, so what
passes here is what would pass through the server, and each site runs under its own
policy (its `env`, plain values, as a node operator writes them in algorithm_env).
A site that refuses or fails raises `SubtaskFailed` with the reason, as on a real network.

Command line:
    python -m vantage_algorithms.harness reference.summary summary \\
        --site 1=a.csv --site 2=b.csv --kwargs '{"columns": ["age"]}' [--env 2:VANTAGE_MIN_ROWS=20]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from vantage_algorithms import data, methods
from vantage_algorithms.client import Client, Pending
from vantage_algorithms.errors import AlgorithmError, DisclosureError, SubtaskFailed
from vantage_algorithms.policy import Policy

SUFFIX_TYPES = {".csv": "csv", ".parquet": "parquet", ".xlsx": "excel", ".xls": "excel",
                ".sqlite": "sql", ".sqlite3": "sql", ".db": "sql"}


def _round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


def _site_frame(source: Any, selection: dict, policy: Policy) -> pd.DataFrame:
    policy.check_selection(selection)
    if isinstance(source, pd.DataFrame):
        if selection:
            raise AlgorithmError("table and query apply to SQL databases, not to a DataFrame site")
        return source.copy()
    if isinstance(source, str) and source.startswith("sqlite:"):
        return data.load(data.Database("local", source, "sql"), **selection)
    path = Path(source)
    kind = SUFFIX_TYPES.get(path.suffix.lower())
    if kind is None:
        raise AlgorithmError(f"{path}: give a .csv, .parquet, .xlsx or .sqlite file")
    uri = f"sqlite:///{path.resolve()}" if kind == "sql" else str(path)
    return data.load(data.Database(path.stem, uri, kind), **selection)


class LocalPending(Pending):
    def __init__(self, results: list[Any]):
        self._results = results

    def wait(self) -> list[Any]:
        return self._results


class LocalClient(Client):
    """Runs each subtask's partials in-process, at each site under its own policy."""

    def __init__(self, module, sites: Mapping[int, Any], policies: Mapping[int, Policy],
                 data_selection: dict, organizations: list[int] | None):
        self.module, self.sites, self.policies = module, sites, policies
        self.data_selection = data_selection
        self._organizations = organizations or sorted(sites)
        self.subtasks = 0

    def organizations(self) -> list[int]:
        return list(self._organizations)

    def start(self, method: str, kwargs: dict | None = None, organizations: list[int] | None = None) -> Pending:
        organizations = list(organizations) if organizations is not None else self.organizations()
        if not organizations:
            raise AlgorithmError("a subtask needs at least one organisation")
        unknown = [org for org in organizations if org not in self.sites]
        if unknown:
            raise AlgorithmError(f"organisation {unknown[0]} holds no data in this harness")
        self.subtasks += 1
        request = {"method": method, "args": [], "kwargs": {**self.data_selection, **(kwargs or {})}}
        return LocalPending(self.fan_out(request, organizations))

    def fan_out(self, request: dict, organizations: list[int]) -> list[Any]:
        """One request's partial at each organisation, in order, as if through the server."""
        request = _round_trip(request)
        results = []
        for org in organizations:
            try:
                results.append(_round_trip(self._run_partial(org, request)))
            except DisclosureError as exc:
                raise SubtaskFailed(org, f"refused by its disclosure policy: {exc}") from exc
            except AlgorithmError as exc:
                raise SubtaskFailed(org, str(exc)) from exc
        return results

    def _run_partial(self, org: int, request: dict) -> Any:
        name, args, kwargs = methods.parse_request(request)
        fn = methods.find_method(self.module, name)
        if fn.vantage_kind != methods.PARTIAL:
            raise AlgorithmError(f"{name} is a central method; subtasks run partial methods")
        kwargs, selection, _ = methods.split_kwargs(fn, kwargs)
        methods.check_arguments(fn, args, kwargs)
        policy = self.policies[org]
        return methods.call(fn, _site_frame(self.sites[org], selection, policy), policy, args, kwargs)


def run_local(module_name: str, method: str, *, kwargs: dict | None = None, args: list | None = None,
              sites: Mapping[int, Any], env: Mapping[int, Mapping[str, str]] | None = None,
              central_org: int | None = None) -> Any:
    """The method's output as the researcher would download it.

    sites: organisation id → CSV/Parquet/Excel/SQLite path or DataFrame; env: organisation
    id → that node's algorithm_env (plain values). A central method runs under
    `central_org`'s policy (default: the first site); a partial method runs at every
    site and the result is the list of their outputs.
    """
    if not sites:
        raise AlgorithmError("give at least one site")
    env = env or {}
    policies = {org: Policy.from_env(env.get(org, {})) for org in sites}
    module = methods.load_module(module_name)
    request = _round_trip({"method": method, "args": args or [], "kwargs": kwargs or {}})
    name, call_args, call_kwargs = methods.parse_request(request)
    fn = methods.find_method(module, name)
    call_kwargs, selection, organizations = methods.split_kwargs(fn, call_kwargs)
    methods.check_arguments(fn, call_args, call_kwargs)
    client = LocalClient(module, sites, policies, selection, organizations)
    if fn.vantage_kind == methods.PARTIAL:
        return client.fan_out(request, sorted(sites))
    central_org = sorted(sites)[0] if central_org is None else central_org
    if central_org not in policies:
        policies = {**policies, central_org: Policy.from_env(env.get(central_org, {}))}
    return _round_trip(methods.call(fn, client, policies[central_org], call_args, call_kwargs))


def _parse_pairs(values: list[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise AlgorithmError(f"{what} {value!r}: expected KEY=VALUE")
        pairs.append((key, rest))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vantage_algorithms.harness",
                                     description="Run a federated method locally against a few data files.")
    parser.add_argument("module", help="algorithm module, e.g. reference.summary")
    parser.add_argument("method", help="method to run, usually the central one")
    parser.add_argument("--site", action="append", default=[], metavar="ORG=FILE",
                        help="an organisation id and its data file (repeat per site)")
    parser.add_argument("--kwargs", default="{}", help="the method's keyword arguments as JSON")
    parser.add_argument("--env", action="append", default=[], metavar="ORG:NAME=VALUE",
                        help="a node policy setting of one site, e.g. 2:VANTAGE_MIN_ROWS=20")
    parser.add_argument("--central-org", type=int, help="organisation that runs the central method")
    options = parser.parse_args(argv)
    try:
        sites = {}
        for org, path in _parse_pairs(options.site, "--site"):
            if not org.isdigit():
                raise AlgorithmError(f"--site {org}={path}: the organisation must be a number")
            sites[int(org)] = path
        env: dict[int, dict[str, str]] = {}
        for key, value in _parse_pairs(options.env, "--env"):
            org, sep, name = key.partition(":")
            if not sep or not org.isdigit() or not name:
                raise AlgorithmError(f"--env {key}={value}: expected ORG:NAME=VALUE")
            env.setdefault(int(org), {})[name] = value
        try:
            kwargs = json.loads(options.kwargs)
        except ValueError:
            raise AlgorithmError("--kwargs must be a JSON object") from None
        if not isinstance(kwargs, dict):
            raise AlgorithmError("--kwargs must be a JSON object")
        result = run_local(options.module, options.method, kwargs=kwargs, sites=sites, env=env,
                           central_org=options.central_org)
    except AlgorithmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
