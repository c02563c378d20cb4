"""Errors at the HTTP edge, and the one JSON shape every error answer has.

``{"error": {"code": "...", "message": "...", "fields": [...]}}`` — ``fields`` only for
validation errors (422), each naming the invalid field (``query.limit``, ``body.ok``). Input
values are never echoed; unexpected failures answer 500 ``internal`` without details (the
traceback goes to the log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import NotFoundError, SchemaError, StoreError, StoreUnavailable
from .auth import AuthError

__all__ = ["ApiError", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An error answer with a stable ``code`` (raise it anywhere below a route)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, detail=message, headers=dict(headers or {}))
        self.code = code


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    fields: Sequence[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON error answer."""
    error: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        error["fields"] = list(fields)
    return JSONResponse({"error": error}, status_code=status, headers=dict(headers or {}))


def _field_name(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc) or "request"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or _DEFAULT_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else "The request failed."
    if exc.status_code == 404 and not isinstance(exc, ApiError):
        message = "Not found."
    elif exc.status_code == 400 and not isinstance(exc, ApiError):
        # FastAPI's "There was an error parsing the body": say what is expected instead.
        message = "The request body could not be parsed: send UTF-8 encoded JSON."
    elif exc.status_code == 405 and not isinstance(exc, ApiError):
        message = f"{request.method} is not allowed here."
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {"field": _field_name(error.get("loc", ())), "message": str(error.get("msg", "invalid"))}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return error_response(422, "validation_error", f"Invalid request — {summary}", fields=fields)


async def _auth_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = f'Bearer realm="integration-health", error="{exc.code}"'
    return error_response(exc.status, exc.code, exc.message, headers=headers)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "not_found", str(exc))


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, StoreUnavailable | SchemaError):
        log.error("store unavailable: %s", exc)
        return error_response(
            503, "store_unavailable", "The monitor's database is unavailable; try again later."
        )
    log.error("store error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(500, "internal", "The monitor failed to answer (a store error).")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "The monitor failed to answer (an internal error).")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error answer the same JSON shape."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(AuthError, _auth_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(Exception, _unexpected)
