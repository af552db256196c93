"""The client's one exception class."""

from __future__ import annotations


class VantageError(Exception):
    """Anything the server refused, or the client could not do.

    `status` is the HTTP status (None when no answer came), `fields` the server's
    field messages (`{"organizations": ["..."]}`), and str() reads as one line.
    """

    def __init__(self, message: str, *, status: int | None = None, fields: dict | None = None,
                 code: str | None = None):
        self.message, self.status, self.fields, self.code = message, status, fields or {}, code
        super().__init__(message)

    @classmethod
    def from_response(cls, response) -> VantageError:
        try:
            body = response.json()
        except ValueError:
            body = None
        fields, code = {}, None
        if isinstance(body, dict):
            code = body.get("code") if isinstance(body.get("code"), str) else None
            fields = {key: value for key, value in body.items() if key != "code"}
            message = "; ".join(f"{key}: {_flatten(value)}" if key not in ("detail", "non_field_errors")
                                else _flatten(value) for key, value in fields.items())
        else:
            text = (response.text or "").strip().splitlines()
            message = text[0][:300] if text else ""
        reason = message or response.reason or "no details"
        return cls(f"HTTP {response.status_code}: {reason}", status=response.status_code, fields=fields, code=code)


def _flatten(value) -> str:
    if isinstance(value, list):
        return " ".join(_flatten(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_flatten(item)}" for key, item in value.items())
    return str(value)
