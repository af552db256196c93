"""One run inside an algorithm container, by the vantage6 4.x contract.

`python -m vantage_algorithms reference.summary` reads the encoded environment, the
input file and (for a partial method) the first requested database, calls the method,
and writes its JSON output. Errors end the run with one readable line on stderr and a
non-zero exit code: 3 when the site's policy refused, 2 for a task that cannot be done
as asked, 1 for anything unexpected (with the frames it passed before that line).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Mapping
from types import ModuleType

from vantage_algorithms import data, methods
from vantage_algorithms.client import EXIT_ERROR, EXIT_REFUSED, ProxyClient
from vantage_algorithms.encoding import decode_environment
from vantage_algorithms.errors import AlgorithmError, DisclosureError
from vantage_algorithms.policy import Policy


def _required(env: Mapping[str, str], name: str) -> str:
    if not env.get(name):
        raise AlgorithmError(f"the container has no {name}: is it run by a node?")
    return env[name]


def requested_databases(env: Mapping[str, str]) -> list[data.Database]:
    labels = [label for label in env.get("USER_REQUESTED_DATABASE_LABELS", "").split(",") if label]
    found = []
    for label in labels:
        uri, kind = env.get(f"{label.upper()}_DATABASE_URI"), env.get(f"{label.upper()}_DATABASE_TYPE")
        if not uri or not kind:
            raise AlgorithmError(f"database {label!r} was requested but this node gives no URI or type for it")
        found.append(data.Database(label, uri, kind))
    return found


def run(module_name: str, env: Mapping[str, str]) -> None:
    with open(_required(env, "INPUT_FILE"), "rb") as fh:
        request = fh.read()
    output = answer(methods.load_module(module_name), request, env)
    with open(_required(env, "OUTPUT_FILE"), "w", encoding="utf-8") as fh:
        json.dump(output, fh, allow_nan=False)


def parse_input(request: bytes) -> tuple[str, list, dict]:
    """The input file's method, args and kwargs."""
    try:
        parsed = json.loads(request)
    except ValueError:
        raise AlgorithmError("the input file is not JSON") from None
    return methods.parse_request(parsed)


def answer(module: ModuleType, request: bytes, env: Mapping[str, str]):
    """One run's JSON-able output: the method the input names, called with the site's
    data (a partial method) or a client of the node proxy (a central method)."""
    policy = Policy.from_env(env)
    method_name, args, kwargs = parse_input(request)
    fn = methods.find_method(module, method_name)
    kwargs, selection, organizations = methods.split_kwargs(fn, kwargs)
    methods.check_arguments(fn, args, kwargs)
    databases = requested_databases(env)
    if fn.vantage_kind == methods.PARTIAL:
        if not databases:
            raise AlgorithmError(f"method {method_name} reads data: the task must name a database")
        policy.check_selection(selection)
        first = data.load(databases[0], **selection)
    else:
        with open(_required(env, "TOKEN_FILE"), encoding="utf-8") as fh:
            token = fh.read().strip()
        first = ProxyClient(base_url=f"{_required(env, 'HOST')}:{_required(env, 'PORT')}{env.get('API_PATH', '')}",
                            token=token, databases=[db.label for db in databases], data_selection=selection,
                            organizations=organizations)
    return methods.call(fn, first, policy, args, kwargs)


def exit_code(exc: BaseException) -> int:
    """Say why the run ended in one line on stderr; the exit code that says how."""
    if isinstance(exc, DisclosureError):
        print(f"refused by this site's disclosure policy: {exc}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    if isinstance(exc, AlgorithmError):
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    # The log goes to the researcher: show where it failed, not the message, which
    # may quote a value from the data (pandas and numpy errors often do).
    for frame in traceback.extract_tb(exc.__traceback__):
        print(f"  at {frame.filename}:{frame.lineno} in {frame.name}", file=sys.stderr)
    print(f"error: the algorithm failed with {type(exc).__name__} (message withheld: it may quote data)",
          file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m vantage_algorithms <module>, e.g. reference.summary", file=sys.stderr)
        return EXIT_ERROR
    env = decode_environment(os.environ)
    if env.get("VANTAGE_ROUND_WORKER"):
        # The node started this container as its job's round worker (the image opted in).
        from vantage_algorithms import worker

        return worker.serve(argv[0], env)
    try:
        run(argv[0], env)
    except Exception as exc:
        return exit_code(exc)
    return 0
