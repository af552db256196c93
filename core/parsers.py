"""The API's JSON parser: DRF's, with two inputs it let through answered as 400.

- Nesting deep enough to exhaust Python's recursion limit (about 950 levels of `[`):
  the decoder's RecursionError became a 500.
- NUL characters (`\\u0000`) in strings or keys: PostgreSQL's jsonb and text columns refuse
  them (SQLite stores them), so the same request answered 500 on one database and 201
  on the other. They are refused here for every JSON body, naming where they are.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

NUL_MESSAGE = "Null characters are not allowed."


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        path = _nul_path(data)
        if path is not None:
            field = ".".join(str(part) for part in path) or "non_field_errors"
            raise ValidationError({field: [NUL_MESSAGE]})
        return data


def _nul_path(data) -> list | None:
    """Where a NUL is (keys and indexes from the top), or None.

    A loop with its own stack, not recursion: the parser accepts nesting close to
    Python's recursion limit, which a recursive walk would then exceed.
    """
    stack = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return list(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return [*path, key.replace("\x00", "\\u0000")]
                stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in enumerate(value))
    return None
