"""The demo's algorithms in the server's catalogue, submitted and approved as in real use.

A researcher picks a catalogue algorithm (in the portal or with the client) rather than
typing an image reference; the catalogue pins each to the digest that was reviewed. The
entry's functions and their arguments are read from the algorithm module itself, so
they cannot drift from what the image answers.
"""

import inspect
import sys
import types
import typing

from demo.network import REPO_DIR, DemoError
from vantage_client import Client, VantageError

TITLES = {
    "summary": "Summary statistics",
    "crosstab": "Crosstab",
    "kaplan_meier": "Kaplan–Meier and log-rank",
    "cox": "Cox proportional hazards",
    "logistic": "Logistic regression",
}
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _json_type(annotation) -> dict:
    """A JSON schema fragment for a parameter's annotation (as far as it says)."""
    if annotation is inspect.Parameter.empty:
        return {}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        found = sorted({JSON_TYPES.get(typing.get_origin(m) or m) for m in members} - {None})
        return {"type": found[0] if len(found) == 1 else found} if found else {}
    found = JSON_TYPES.get(origin or annotation)
    return {"type": found} if found else {}


def _hints(fn) -> dict:
    """The parameters' annotations, evaluated where they can be: the reference modules name
    pandas in annotations only (imported under TYPE_CHECKING, so that a central run's
    container never imports it), and the data parameter is not described anyway."""
    try:
        return typing.get_type_hints(fn)
    except NameError:
        hints = {}
        for name, annotation in fn.__annotations__.items():
            try:
                hints[name] = eval(annotation, fn.__globals__) if isinstance(annotation, str) else annotation
            except NameError:
                continue
        return hints


def describe(module_name: str) -> tuple[str, list[dict]]:
    """(description, functions) of one reference algorithm module."""
    algorithms_dir = str(REPO_DIR / "algorithms")
    if algorithms_dir not in sys.path:
        sys.path.insert(0, algorithms_dir)
    module = __import__(module_name, fromlist=["_"])
    description = inspect.cleandoc(module.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    functions = []
    for name, fn in sorted(vars(module).items()):
        kind = getattr(fn, "vantage_kind", None)
        if kind not in ("central", "partial") or getattr(fn, "__module__", None) != module.__name__:
            continue
        hints = _hints(fn)
        properties, required = {}, []
        for parameter in list(inspect.signature(fn).parameters.values())[2:]:  # after (data|client, policy)
            schema = _json_type(hints.get(parameter.name, inspect.Parameter.empty))
            if parameter.default is inspect.Parameter.empty:
                required.append(parameter.name)
            elif parameter.default is None or isinstance(parameter.default, (str, int, float, bool)):
                schema["default"] = parameter.default
            properties[parameter.name] = schema
        doc = inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        functions.append({
            "name": name, "kind": kind, "description": doc,
            "arguments": {"type": "object", "properties": properties, "required": required},
        })
    return description, functions


def register(author: Client, reviewer: Client, images: dict[str, str], signed: dict) -> dict[str, int]:
    """Catalogue entries approved for the built images; name -> algorithm id.

    The author submits, the reviewer (who signed each digest: `signed`, name -> signing.Signed)
    approves: no one approves their own submission. An entry for the same image and
    digest is reused; entries of an earlier build of the same algorithm are retired, so
    the catalogue offers the current one only (and nodes refuse the retired ones).
    """
    ids = {}
    try:
        known = author.list("algorithms/")
        for name, reference in images.items():
            image, _, digest = reference.partition("@")
            title = TITLES.get(name, name)
            same = [a for a in known if a["image"] == image and a["digest"] == digest and a["status"] != "retired"]
            if same:
                entry = same[0]
            else:
                description, functions = describe(f"reference.{name}")
                entry = author.post("algorithms/", {
                    "name": title, "image": image, "digest": digest,
                    "description": description, "functions": functions,
                })
            if entry["status"] != "approved":
                entry = reviewer.post(f"algorithms/{entry['id']}/review/", {
                    "status": "approved", "note": "reference algorithm of the demo network",
                    "signature_digest": signed[name].payload_digest, "key_fingerprint": signed[name].fingerprint,
                })
            for older in known:
                if older["name"] == title and older["id"] != entry["id"] and older["status"] == "approved":
                    reviewer.post(f"algorithms/{older['id']}/review/",
                                  {"status": "retired", "note": "replaced by a newer build"})
            ids[name] = entry["id"]
    except VantageError as exc:
        raise DemoError(f"registering the algorithms in the catalogue failed: {exc}")
    return ids
