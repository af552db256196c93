"""Domain errors raised by services; core.exceptions maps them to HTTP answers."""


class DomainError(Exception):
    """Bad input to a service: 400, with the message under `field` when one is named."""

    status_code = 400
    default_code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code or self.default_code

    def as_dict(self) -> dict:
        if self.field:
            return {self.field: [self.message]}
        return {"detail": self.message, "code": self.code}


class Conflict(DomainError):
    """The object is not in a state that allows this (a run claimed twice)."""

    status_code = 409
    default_code = "conflict"


class NotAllowed(DomainError):
    """The caller may see the object but its roles do not allow this action."""

    status_code = 403
    default_code = "permission_denied"


class TooLarge(DomainError):
    status_code = 413
    default_code = "too_large"


class NotFound(DomainError):
    """The object does not exist for this caller (outside its scope answers the same)."""

    status_code = 404
    default_code = "not_found"
