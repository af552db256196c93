"""Method decorators and dispatch: the task input's method → the function that answers it."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from vantage_algorithms.errors import AlgorithmError
from vantage_algorithms.outputs import to_jsonable
from vantage_algorithms.policy import Policy

PARTIAL, CENTRAL = "partial", "central"
# Task arguments the toolkit takes for itself before calling the method: which rows an
# SQL database gives (passed on to subtasks), and which organisations a central method asks.
DATA_SELECTION = ("table", "query")
ORGANIZATIONS = "organizations"


def partial(fn: Callable) -> Callable:
    """A method run at each site: called as fn(data, policy, *args, **kwargs)."""
    fn.vantage_kind = PARTIAL
    return fn


def central(fn: Callable) -> Callable:
    """A method that combines sites' answers: called as fn(client, policy, *args, **kwargs)."""
    fn.vantage_kind = CENTRAL
    return fn


def load_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise AlgorithmError(f"no algorithm module {name!r}") from None
        raise


def find_method(module: ModuleType, method: str) -> Callable:
    fn = getattr(module, method, None) if isinstance(method, str) and not method.startswith("_") else None
    if fn is None or getattr(fn, "vantage_kind", None) not in (PARTIAL, CENTRAL):
        offered = sorted(n for n, f in vars(module).items() if getattr(f, "vantage_kind", None) in (PARTIAL, CENTRAL))
        raise AlgorithmError(f"{module.__name__} has no method {method!r} (it offers {', '.join(offered)})")
    return fn


def parse_request(request: Any) -> tuple[str, list, dict]:
    """The task input {"method", "args", "kwargs"}, checked."""
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        raise AlgorithmError("the task input must be a JSON object with a method name")
    args = request["args"] if request.get("args") is not None else []
    kwargs = request["kwargs"] if request.get("kwargs") is not None else {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise AlgorithmError("the task input's args must be a list and kwargs an object")
    forbidden = sorted(set(kwargs) & Policy.names())
    if forbidden:
        raise AlgorithmError(f"{', '.join(forbidden)}: disclosure settings come from each node's policy, "
                             f"never from the task input")
    return request["method"], args, kwargs


def split_kwargs(fn: Callable, kwargs: dict) -> tuple[dict, dict, list[int] | None]:
    """(method kwargs, data selection, organisations) from the task's kwargs."""
    kwargs = dict(kwargs)
    selection = {name: kwargs.pop(name) for name in DATA_SELECTION if name in kwargs}
    for name, value in selection.items():
        if not isinstance(value, str) or not value.strip():
            raise AlgorithmError(f"{name} must be a non-empty string")
    organizations = None
    if fn.vantage_kind == CENTRAL and ORGANIZATIONS in kwargs:
        organizations = kwargs.pop(ORGANIZATIONS)
        if (not isinstance(organizations, list) or not organizations
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in organizations)):
            raise AlgorithmError("organizations must be a non-empty list of organisation ids")
    return kwargs, selection, organizations


def check_arguments(fn: Callable, args: list, kwargs: dict) -> None:
    """Wrong argument names or counts as one readable sentence, before any work."""
    try:
        inspect.signature(fn).bind(None, None, *args, **kwargs)
    except TypeError as exc:
        raise AlgorithmError(f"method {fn.__name__}: {exc}") from None


def call(fn: Callable, first: Any, policy: Policy, args: list, kwargs: dict) -> Any:
    """Run one method and return its JSON-able output."""
    return to_jsonable(fn(first, policy, *args, **kwargs))
