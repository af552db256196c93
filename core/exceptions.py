"""The one DRF exception handler: domain and model errors become clean HTTP answers."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import DomainError


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            body = {field: [str(m) for e in errors for m in e.messages] for field, errors in exc.error_dict.items()}
            body = {("non_field_errors" if k == "__all__" else k): v for k, v in body.items()}
        else:
            body = {"non_field_errors": exc.messages}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        # Django refuses a JSON or form body above DATA_UPLOAD_MAX_MEMORY_SIZE before reading
        # it; as a SuspiciousOperation it would answer a bare 400.
        return Response(
            {"detail": f"The request body exceeds the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes "
                       "(VANTAGE_MAX_REQUEST_BYTES).", "code": "too_large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, IntegrityError):
        # A race lost against a uniqueness constraint: the other request's row stands.
        return Response(
            {"detail": "This conflicts with an existing object.", "code": "conflict"},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)
