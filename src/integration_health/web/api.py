"""The JSON API under ``/api`` (◆ contract paths; see ``docs/api.md``).

Reads go through the caller's :class:`~integration_health.web.access.OrgView` (on PostgreSQL:
row-level security as the signed-in user). An organisation the caller cannot see answers 404,
exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from .. import metrics
from ..checks import IntegrationRecord
from ..errors import UnknownIntegration
from ..model import HealthStatus, utcnow
from ..passive import record_sync_outcome
from ..runner import run_health_checks
from ..scheduling.holds import find_vendor_holds
from . import payloads
from .auth import check_service_key
from .cache import CachedAnswer
from .deps import AccessDep, StateDep, StoreDep, client_host
from .errors import ApiError
from .schemas import (
    ErrorBody,
    EventList,
    HistoryList,
    OrgHealthOut,
    OrgList,
    RunNowOut,
    SyncOutcomeIn,
    SyncOutcomeOut,
)

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["health"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No token, or an invalid one."},
    404: {"model": ErrorBody, "description": "No such organisation or integration (for you)."},
    422: {"model": ErrorBody, "description": "Invalid parameters; `fields` names each one."},
}

HistoryLimit = Annotated[
    int, Query(ge=1, le=96, description="How many results, newest first (at most 96).")
]
_CACHED: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    304: {"description": "Not modified: the answer has the ETag sent in If-None-Match."},
}

EventLimit = Annotated[int, Query(ge=1, le=1_000, description="How many transitions.")]


_dumps = payloads.dumps

_THREAD_ROWS = 200
"""Health answers of more integrations than this are rendered in a worker thread."""


def _answer(request: Request, answer: CachedAnswer) -> Response:
    headers = {
        "ETag": answer.etag,
        "Cache-Control": "private, no-cache",
        "Vary": "Accept-Encoding, Authorization",
    }
    if request.headers.get("if-none-match") == answer.etag:
        return Response(status_code=304, headers=headers)
    if answer.compressible and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(answer.gzipped(), media_type="application/json", headers=headers)
    return Response(answer.body, media_type="application/json", headers=headers)


def _json(document: Any, status_code: int = 200) -> Response:
    return Response(
        _dumps(document),
        status_code=status_code,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _unknown_org(org_id: UUID) -> ApiError:
    return ApiError(404, "not_found", f"No organization {org_id}.")


def _unknown_integration(integration_id: UUID) -> ApiError:
    return ApiError(404, "not_found", f"No integration {integration_id} in this organization.")


@router.get("/orgs", response_model=OrgList, responses=_ERRORS, summary="Your organisations")
async def list_organizations(access: AccessDep) -> Response:
    """The organisations you may see, each with its overall status and counts."""
    async with access.view() as view:
        organizations = await view.organizations()
        records = await view.integrations(None)
        statuses = {s.integration_id: s for s in await view.statuses(None)}
    by_org: dict[UUID, list[IntegrationRecord]] = {}
    for record in records:
        by_org.setdefault(record.org_id, []).append(record)
    result = []
    for org in organizations:
        own = by_org.get(org.id, [])
        overall, counts = payloads.org_summary(own, statuses)
        result.append(
            {
                "org_id": str(org.id),
                "name": org.name,
                "status": overall.value if overall else None,
                "summary": {**counts, "total": len(own)},
            }
        )
    return _json({"organizations": result})


@router.get(
    "/orgs/{org_id}/health",
    response_model=OrgHealthOut,
    responses=_CACHED,
    summary="Current health of an organisation",
)
async def org_health(
    org_id: UUID, request: Request, access: AccessDep, state: StateDep, store: StoreDep
) -> Response:
    """Every integration of the organisation with its current status (``null`` until first
    checked), latency, last and next check, error and advice; a count per status; the
    overall status (the worst); integration types whose active checks are paused."""

    async def compute() -> CachedAnswer:
        type_modes = await store.list_type_modes()
        async with access.view() as view:
            organization = await view.organization(org_id)
            if organization is None:
                raise _unknown_org(org_id)
            rows = await view.health_rows(org_id)  # one lean query: ids and times already text

        def render() -> CachedAnswer:
            document = payloads.org_health_from_rows(
                org_id, rows, organization=organization, type_modes=type_modes, now=utcnow()
            )
            return CachedAnswer.prepared(_dumps(document))

        # Thousands of integrations take milliseconds to render and compress: do it in a
        # worker thread so the event loop keeps answering other requests meanwhile.
        return await asyncio.to_thread(render) if len(rows) > _THREAD_ROWS else render()

    caller = access.principal.cache_key
    return _answer(request, await state.cache.get_or_compute(org_id, caller, "health", compute))


@router.get(
    "/orgs/{org_id}/integrations/{integration_id}/health/history",
    response_model=HistoryList,
    responses=_CACHED,
    summary="Recent results of one integration",
)
async def integration_history(
    org_id: UUID,
    integration_id: UUID,
    request: Request,
    access: AccessDep,
    state: StateDep,
    store: StoreDep,
    limit: HistoryLimit = 96,
) -> Response:
    """The newest ``limit`` results (status, latency, time, error), newest first."""

    async def compute() -> bytes:
        record = await store.get_integration(integration_id)
        async with access.view() as view:
            if await view.organization(org_id) is None:
                raise _unknown_org(org_id)
            if record is None or record.org_id != org_id:
                raise _unknown_integration(integration_id)
            rows = await view.history(integration_id, limit)
        return _dumps(
            {
                "org_id": str(org_id),
                "integration_id": str(integration_id),
                "name": record.name,
                "integration_type": record.integration_type,
                "limit": limit,
                "history": [payloads.history_entry(row) for row in rows],
            }
        )

    caller = access.principal.cache_key
    what = f"history:{integration_id}:{limit}"
    return _answer(request, await state.cache.get_or_compute(org_id, caller, what, compute))


@router.get(
    "/orgs/{org_id}/events",
    response_model=EventList,
    responses=_ERRORS,
    summary="Status transitions of an organisation",
)
async def org_events(
    org_id: UUID,
    access: AccessDep,
    limit: EventLimit = 100,
    integration_id: Annotated[
        UUID | None, Query(description="Only this integration's transitions.")
    ] = None,
) -> Response:
    """Every status change (from → to, when, why), newest first."""
    async with access.view() as view:
        if await view.organization(org_id) is None:
            raise _unknown_org(org_id)
        # On PostgreSQL the events are read as the user too: RLS decides, as for the rest.
        events = await view.events(org_id, integration_id=integration_id, limit=limit)
    return _json({"org_id": str(org_id), "events": [payloads.event_entry(e) for e in events]})


@router.post(
    "/orgs/{org_id}/health/checks",
    response_model=RunNowOut,
    responses={
        **_ERRORS,
        429: {
            "model": ErrorBody,
            "description": "Asked again too soon; `Retry-After` says when to try again.",
        },
    },
    summary="Check an organisation now",
)
async def run_checks_now(
    org_id: UUID, access: AccessDep, state: StateDep, store: StoreDep
) -> Response:
    """Run every active check of the organisation now, store and return the results.

    At most once per organisation every ``INTEGRATION_HEALTH_RUN_NOW_INTERVAL_S`` seconds
    (default 60): asking sooner answers 429 with ``Retry-After``. Integrations whose vendor
    asked us to wait — their type paused for rate limiting, or a ``Retry-After`` from their
    last answer that has not passed — are not probed: ``held`` lists them with the time they
    may be probed again.
    """
    async with access.view() as view:
        if await view.organization(org_id) is None:
            raise _unknown_org(org_id)
    wait_s = state.limiter.acquire(org_id)
    if wait_s is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"Checks of this organization ran less than {state.settings.run_now_interval_s:g} s "
            f"ago; try again in {wait_s} s.",
            headers={"Retry-After": str(wait_s)},
        )
    registry = state.registry
    integrations = [registry.from_record(r) for r in await store.list_integrations(org_id)]
    holds = await find_vendor_holds(store, org_id, integrations, at=utcnow())
    try:
        outcomes = await run_health_checks(
            org_id,
            integrations=[i for i in integrations if i.integration_id not in holds],
            store=store,
            registry=registry,
        )
    finally:
        state.cache.invalidate(org_id)
    for integration, result in outcomes:
        metrics.CHECKS.labels(
            integration.integration_type,
            result.status.value,
            result.error_code.value if result.error_code else "",
        ).inc()
        metrics.CHECK_LATENCY.labels(integration.integration_type).observe(result.latency_ms / 1000)
    summary = {s.value: sum(1 for o in outcomes if o.result.status is s) for s in HealthStatus}
    return _json(
        {
            "org_id": str(org_id),
            "checked": len(outcomes),
            "summary": summary,
            "results": [payloads.outcome_entry(o) for o in outcomes],
            "held": [
                payloads.held_entry(i, holds[i.integration_id])
                for i in integrations
                if i.integration_id in holds
            ],
        }
    )


async def require_service_key(
    request: Request,
    state: StateDep,
    x_service_key: Annotated[
        str | None, Header(description="The service key (or send it as a Bearer token).")
    ] = None,
) -> None:
    """The sync system's requests must present the service key."""
    check_service_key(
        state.settings,
        authorization=request.headers.get("authorization"),
        service_key_header=x_service_key,
        client_host=client_host(request),
        auth_enabled=state.auth.enabled,
    )


@router.post(
    "/orgs/{org_id}/integrations/{integration_id}/sync-outcomes",
    response_model=SyncOutcomeOut,
    responses={
        **_ERRORS,
        401: {"model": ErrorBody, "description": "Missing or wrong service key."},
        413: {"model": ErrorBody, "description": "The body is too large."},
    },
    summary="Record a sync outcome (passive health)",
    dependencies=[Depends(require_service_key)],
)
async def post_sync_outcome(
    org_id: UUID,
    integration_id: UUID,
    outcome: SyncOutcomeIn,
    state: StateDep,
    store: StoreDep,
) -> Response:
    """The sync system reports one real outcome; it becomes the integration's status.

    Authenticated with the service key (``Authorization: Bearer <key>`` or
    ``X-Service-Key``). A success is ``healthy``; a failure is ``unreachable`` (``degraded``
    when rate limited), with ``error_code`` given or inferred from ``error``. For an active
    integration the outcome also counts as a check: the next probe comes no sooner than the
    type's minimum interval after it.
    """
    try:
        result = await record_sync_outcome(
            org_id,
            integration_id,
            outcome.ok,
            outcome.error,
            outcome.duration_ms,
            store=store,
            registry=state.registry,
            error_code=outcome.error_code,
        )
    except UnknownIntegration:
        raise _unknown_integration(integration_id) from None
    state.cache.invalidate(org_id)
    return _json(
        {
            "integration_id": str(integration_id),
            "status": result.status.value,
            "latency_ms": result.latency_ms,
            "checked_at": payloads.iso(result.checked_at),
            "error": result.error,
            "error_code": result.error_code.value if result.error_code else None,
        }
    )
