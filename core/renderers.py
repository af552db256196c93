"""Values as the API renders them, for views that build plain dicts instead of serializers."""

from datetime import datetime

from django.utils import timezone


def iso_datetime(value: datetime | None) -> str | None:
    """A datetime as DRF's DateTimeField renders it: ISO 8601 in the current time zone, UTC as Z."""
    if value is None:
        return None
    text = value.astimezone(timezone.get_current_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
