"""One error shape: {"detail": ..., "errors": {field: [messages]}} with the right status."""

import logging
import traceback

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import DataError, InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, Throttled, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler

from ..limits import OverLimit
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


def _raised_by_parser(exc: BaseException) -> bool:
    return any(
        frame.f_globals.get("__name__") == "rest_framework.parsers"
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def exception_handler(exc, context):
    # Django's own refusals of a body (SuspiciousOperation) would otherwise become its HTML 400.
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge("the request body is larger than the limit for non-file data")
    elif isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        exc = ParseError(str(exc))
    elif isinstance(exc, RecursionError) and _raised_by_parser(exc):
        # JSON nested a few thousand levels deep: the stdlib decoder recurses, DRF catches only
        # ValueError. A RecursionError anywhere else stays a server error.
        exc = ParseError("JSON parse error - nested too deeply")
    elif isinstance(exc, DataError) and "NUL" in str(exc):
        # psycopg refuses a NUL character in a query parameter (an output path, a token) before
        # sending it: the client's string, so a 400 rather than a 500.
        exc = ParseError("the request holds a NUL character")
    elif isinstance(exc, RequestInvalid):
        exc = ValidationError(exc.errors)
    elif isinstance(exc, TooLarge):
        exc = PayloadTooLarge(str(exc))
    elif isinstance(exc, Conflict):
        exc = ConflictError(str(exc))
    elif isinstance(exc, OverLimit):
        over = exc
        exc = Throttled(wait=over.retry_after, detail=str(over))
        response = drf_exception_handler(exc, context)
        # Throttled's detail would add "Expected available in N seconds"; say which limit.
        response.data = {"detail": str(over), "limit": over.limit, "maximum": over.maximum}
        return response
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


def _lines(errors, prefix: str, rename) -> list[str]:
    if isinstance(errors, dict):
        lines = []
        for key, value in errors.items():
            lines += _lines(value, f"{prefix}.{key}" if prefix else str(key), rename)
        return lines
    if isinstance(errors, list):
        return [line for item in errors for line in _lines(item, prefix, rename)]
    return [f"{rename(prefix)}: {errors}" if prefix else str(errors)]


def one_message(data, rename=lambda field: field) -> str:
    """This handler's body (`{"detail", "errors"}`, or DRF's own) as one line for the standards'
    error documents (WES's `msg`, OGC's `detail`), each field named by `rename`: the native
    API's field as the standard's request names it."""
    if isinstance(data, dict) and "errors" in data:
        return "Invalid request: " + "; ".join(_lines(data["errors"], "", rename))
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return "; ".join(_lines(data, "", rename))
