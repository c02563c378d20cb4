"""The FastAPI application: API, dashboard, ``/healthz`` and ``/metrics`` in one app.

:func:`create_app` builds it; its lifespan opens what it owns (the store, unless one is
given; the check registry's pools; the in-process scheduler, if asked for) and closes it on
shutdown, after the scheduler's pass in progress has finished and been written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._version import __version__
from ..checks import CheckRegistry, default_registry
from ..scheduling import PassReport, Scheduler, SchedulerOptions
from ..settings import Settings
from ..store import open_store
from ..store.base import Store
from . import api, dashboard, ops
from .auth import Authenticator
from .cache import ResponseCache
from .errors import ApiError, error_response, install_error_handlers
from .ratelimit import RunNowLimiter, WriteRateLimit
from .schemas import ErrorBody
from .state import AppState

__all__ = ["SchedulerFactory", "create_app"]

SchedulerFactory = Callable[[Store, CheckRegistry], Scheduler]
"""Builds the app's scheduler once its store is open."""

log = logging.getLogger(__name__)

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


MAX_HEADER_BYTES = 65_536
"""Larger request header blocks are refused with 431 (a bearer token is at most 8 kB).

uvicorn's httptools parser has no limit of its own; this keeps the answer consistent, and
deployments behind a proxy should cap headers there too (nginx: ``large_client_header_buffers``).
"""


class _BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, declared or streamed, and header
    blocks over :data:`MAX_HEADER_BYTES` with 431."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or ()
        if sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEADER_BYTES:
            await error_response(
                431,
                "headers_too_large",
                f"The request headers are larger than {MAX_HEADER_BYTES:,} bytes.",
            )(scope, receive, send)
            return
        declared = dict(headers).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "bad_request", "Invalid Content-Length.")(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(413, "payload_too_large", self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"The request body is larger than {self.max_bytes:,} bytes."

    def _too_large(self) -> Any:
        return error_response(413, "payload_too_large", self._message())


class _SecurityHeaders:
    """Headers every answer carries; a content security policy for the dashboard's pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", _CSP.encode()),
                ]
                headers.extend((k, v) for k, v in extra if k not in names)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    registry: CheckRegistry | None = None,
    scheduler: Scheduler | SchedulerOptions | SchedulerFactory | None = None,
) -> FastAPI:
    """The monitor's web application.

    ``store``: use this open store (the caller closes it); by default the app opens
    ``settings.database_url`` in its lifespan and closes it on shutdown. ``registry``: the
    adapters used by "check now" (default: every built-in adapter). ``scheduler``: a
    :class:`~integration_health.scheduling.Scheduler` to run in the app's lifespan (on the
    same store), :class:`~integration_health.scheduling.SchedulerOptions` to build one on
    the app's store, or a factory ``(store, registry) -> Scheduler`` called once the store is
    open (to add after-pass hooks, e.g. alerting); ``None`` runs no scheduler (``/healthz``
    then checks the store only).
    """
    settings = settings or Settings()
    state = AppState(
        settings=settings,
        registry=registry or default_registry(settings),
        auth=Authenticator(settings),
        cache=ResponseCache(settings.api_cache_ttl_s),
        limiter=RunNowLimiter(settings.run_now_interval_s),
        scheduler=scheduler if isinstance(scheduler, Scheduler) else None,
    )
    factory: SchedulerFactory | None = None
    if isinstance(scheduler, SchedulerOptions):
        options = scheduler
        factory = lambda store, registry: Scheduler(store, registry, options=options)  # noqa: E731
    elif scheduler is not None and not isinstance(scheduler, Scheduler):
        factory = scheduler

    async def forget_checked(report: PassReport) -> None:
        for org_id in {outcome.integration.org_id for outcome in report.outcomes}:
            state.cache.invalidate(org_id)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.store = store if store is not None else await open_store(settings.database_url)
        stop = asyncio.Event()
        try:
            async with state.registry:
                if factory is not None:
                    state.scheduler = factory(state.store, state.registry)
                if state.scheduler is not None:
                    state.scheduler.after_pass.append(forget_checked)
                    state.scheduler_task = asyncio.create_task(
                        state.scheduler.run(stop), name="integration-health-scheduler"
                    )
                try:
                    yield
                finally:
                    await _stop_scheduler(state, stop)
        finally:
            if store is None:
                await state.store.aclose()
            state.store = None

    app = FastAPI(
        title="Integration Health Monitor",
        version=__version__,
        summary="Health of every organisation's external integrations.",
        description=(
            "Current status, history and status changes of each integration; run checks "
            "now; report sync outcomes. Authenticate with `Authorization: Bearer <Supabase "
            "JWT>` (sync outcomes: the service key). Errors are "
            '`{"error": {"code", "message"}}`.'
        ),
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads from a CDN: the dashboard must work offline
        redoc_url=None,
    )
    app.state.integration_health = state
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(ops.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    app.add_middleware(WriteRateLimit, settings=settings)
    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(_SecurityHeaders)
    _document_common_answers(app)
    return app


_EVERY_OPERATION: dict[str, str] = {
    "400": "Malformed request: invalid `Content-Length`, or a body that is not UTF-8 JSON.",
    "413": "The request body is larger than `INTEGRATION_HEALTH_MAX_BODY_BYTES`.",
    "431": "The request headers are larger than 64 KiB.",
}
"""Answers the middleware (body limit) or the request parser may give on any path."""
_EVERY_API_OPERATION: dict[str, str] = {
    "401": "No token, or an invalid one.",
    "403": "Not allowed (e.g. a server without authentication asked by a non-loopback client).",
    "503": "The monitor is starting, or its database or the JWKS keys are unavailable.",
}
"""Answers of the authentication and store dependencies every ``/api`` operation uses."""


def _document_common_answers(app: FastAPI) -> None:
    """Add the error answers every operation may give to ``/openapi.json``.

    They come from the middleware and the shared dependencies rather than from one route, so
    the routes' own ``responses=`` do not list them; without them a client generated from the
    schema (or schemathesis) would meet undocumented status codes.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        _, definitions = models_json_schema(
            [(ErrorBody, "serialization")], ref_template="#/components/schemas/{model}"
        )
        for name, schema in definitions.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        error_ref = {"$ref": "#/components/schemas/ErrorBody"}
        document["components"].setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A Supabase user JWT; for sync outcomes, the service key.",
        }
        for path, methods in document.get("paths", {}).items():
            for operation in methods.values():
                answers = dict(_EVERY_OPERATION)
                if path.startswith("/api/"):
                    answers.update(_EVERY_API_OPERATION)
                    operation.setdefault("security", [{"bearer": []}])
                responses = operation.setdefault("responses", {})
                for status, description in answers.items():
                    responses.setdefault(
                        status,
                        {
                            "description": description,
                            "content": {"application/json": {"schema": error_ref}},
                        },
                    )
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


async def _stop_scheduler(state: AppState, stop: asyncio.Event) -> None:
    """Let the pass in progress finish (bounded by the check deadline), then stop."""
    task = state.scheduler_task
    if task is None:
        return
    stop.set()
    grace = state.settings.timeout_s + 15
    try:
        await asyncio.wait_for(asyncio.shield(task), grace)
    except TimeoutError:
        log.warning("the scheduler did not stop within %.0f s: cancelling it", grace)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except Exception as exc:  # noqa: BLE001 - shutting down: report, do not mask the exit
        log.error("the scheduler ended with an error: %s: %s", type(exc).__name__, exc)
    state.scheduler_task = None
