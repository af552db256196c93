"""Checking a task's arguments against its catalogue entry, before any node sees them.

A catalogue entry lists its functions, each with a JSON schema of its keyword arguments
(tasks.services.algorithm_submit checks the list's shape). The checks here are the part
of JSON Schema those entries use: required names, closed property lists
(`additionalProperties: false`) and the basic types. Anything else in a schema is left
to the algorithm, which checks its own input again.
"""

from __future__ import annotations

import json

TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def function_names(functions) -> list[str]:
    return [f["name"] for f in functions if isinstance(f, dict) and isinstance(f.get("name"), str)] \
        if isinstance(functions, list) else []


def method_error(functions, method: str) -> str | None:
    """Why `method` is not one of the entry's functions; None when it is (or none are listed)."""
    names = function_names(functions)
    if names and method not in names:
        return f"The algorithm has no method {method!r}; it has: {', '.join(names)}."
    return None


def argument_errors(functions, method: str, kwargs: dict) -> list[str]:
    """What is wrong with `kwargs` for `method` by its schema, one sentence each."""
    schema = next((f.get("arguments") for f in functions or [] if isinstance(f, dict) and f.get("name") == method),
                  None) if isinstance(functions, list) else None
    if not isinstance(schema, dict):
        return []
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    errors = []
    required = [name for name in schema.get("required") or [] if isinstance(name, str)]
    missing = [name for name in required if name not in kwargs]
    if missing:
        errors.append(f"Missing required argument{'s' if len(missing) > 1 else ''}: {', '.join(missing)}.")
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(kwargs) - set(properties))
        if unknown:
            errors.append(f"Unknown argument{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(properties))}).")
    for name, value in kwargs.items():
        spec = properties.get(name)
        kinds = spec.get("type") if isinstance(spec, dict) else None
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if isinstance(kinds, list) and kinds and not any(TYPE_CHECKS.get(k, lambda v: True)(value) for k in kinds):
            errors.append(f"{name} must be {' or '.join(kinds)}, not {json.dumps(value)}.")
    return errors
