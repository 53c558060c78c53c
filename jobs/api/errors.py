"""One error shape: {"detail": ..., "errors": {field: [messages]}} with the right status."""

import logging

from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler

from ..services import Conflict, TooLarge
from ..validation import RequestInvalid

log = logging.getLogger(__name__)


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class ConflictError(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object's state does not allow this."
    default_code = "conflict"


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is unavailable; try again shortly."
    default_code = "unavailable"


def exception_handler(exc, context):
    if isinstance(exc, RequestInvalid):
        exc = ValidationError(exc.errors)
    elif isinstance(exc, TooLarge):
        exc = PayloadTooLarge(str(exc))
    elif isinstance(exc, Conflict):
        exc = ConflictError(str(exc))
    elif isinstance(exc, (InterfaceError, OperationalError)):
        log.exception("database error while serving %s", context.get("request"))
        exc = ServiceUnavailable()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        errors = response.data if isinstance(response.data, dict) else {"request": response.data}
        fields = ", ".join(sorted(errors))
        response.data = {"detail": f"Invalid request: {fields}", "errors": errors}
    return response
