"""The monitor's own endpoints: ``/healthz`` (liveness and readiness) and ``/metrics``.

Both answer without authentication (they hold no organisation's data: ``/metrics`` counts by
integration type only) so load balancers and Prometheus can reach them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import metrics
from .._version import __version__
from ..errors import StoreError
from ..model import HealthStatus, utcnow
from ..scheduling import Scheduler
from ..store.base import Store
from .deps import StateDep
from .payloads import NOT_CHECKED, iso
from .schemas import HealthzOut
from .state import AppState

__all__ = ["router", "scheduler_stale_after_s", "status_counts"]

router = APIRouter(tags=["monitor"])

PING_TIMEOUT_S = 3.0


def scheduler_stale_after_s(scheduler: Scheduler, timeout_s: float) -> float:
    """How old the scheduler's last completed pass may be before it counts as stuck."""
    return max(60.0, 3 * scheduler.options.tick_s + 3 * timeout_s)


def _scheduler_check(state: AppState) -> dict[str, Any] | None:
    scheduler = state.scheduler
    if scheduler is None:
        return None
    task = state.scheduler_task
    stale_after = scheduler_stale_after_s(scheduler, state.settings.timeout_s)
    if scheduler.last_pass_at is not None:
        age = (scheduler.clock() - scheduler.last_pass_at).total_seconds()
    else:  # no pass completed yet: count from start-up
        age = time.monotonic() - state.started_at
    running = task is not None and not task.done()
    buffer = scheduler.buffer_state()
    return {
        "ok": running and age <= stale_after,
        "running": running,
        "last_pass_at": iso(scheduler.last_pass_at),
        "age_s": round(age, 1),
        "stale_after_s": stale_after,
        "last_error": scheduler.last_error,
        # Results the store could not take yet (written at the next passes, see
        # docs/reliability.md) and the outage the scheduler saw, if any.
        "buffered_results": buffer.size,
        "buffer_limit": buffer.limit,
        "buffer_oldest_age_s": None
        if buffer.oldest_age_s is None
        else round(buffer.oldest_age_s, 1),
        "dropped_results": buffer.dropped,
        "store_error": buffer.store_error,
        "store_unavailable_since": iso(buffer.store_unavailable_since),
    }


@router.get(
    "/healthz",
    response_model=HealthzOut,
    responses={503: {"model": HealthzOut, "description": "Something the monitor needs fails."}},
    summary="The monitor's own health",
)
async def healthz(state: StateDep) -> Response:
    """200 when the store answers and (if one runs in this process) the scheduler's heartbeat
    is fresh; 503 otherwise, with the details of each check.

    Nothing is cached: once the store answers again (its pool reconnects by itself) the next
    request is 200 without a restart. The scheduler's entry also shows the results it holds
    in memory while the store cannot be written (``buffered_results``) and its view of the
    outage (``store_error``, ``store_unavailable_since``)."""
    checks: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    if state.store is None:
        checks["store"] = {"ok": False, "error": "not open yet"}
    else:
        try:
            await asyncio.wait_for(state.store.ping(), PING_TIMEOUT_S)
            checks["store"] = {
                "ok": True,
                "latency_ms": round((time.monotonic() - started) * 1000, 1),
            }
        except TimeoutError:
            checks["store"] = {
                "ok": False,
                "error": f"the store at {state.store.url} gave no answer within "
                f"{PING_TIMEOUT_S:g} s",
            }
        except StoreError as exc:
            checks["store"] = {"ok": False, "error": str(exc)}
    scheduler = _scheduler_check(state)
    if scheduler is not None:
        checks["scheduler"] = scheduler
    ok = all(check["ok"] for check in checks.values())
    body = HealthzOut(status="ok" if ok else "failing", version=__version__, checks=checks)
    return Response(
        body.model_dump_json(),
        status_code=200 if ok else 503,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class _SnapshotCollector(Collector):
    """Gauges computed at scrape time from the store."""

    def __init__(self, counts: Counter[tuple[str, str]], paused: Iterable[str]) -> None:
        self.counts = counts
        self.paused = list(paused)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        statuses = GaugeMetricFamily(
            "integration_health_integrations",
            "Enabled integrations by type and current status (not_checked: never checked).",
            labels=["integration_type", "status"],
        )
        for (kind, status), count in sorted(self.counts.items()):
            statuses.add_metric([kind, status], count)
        yield statuses
        paused = GaugeMetricFamily(
            "integration_health_type_paused",
            "1 while active checks of a type are paused because the vendor kept rate-limiting.",
            labels=["integration_type"],
        )
        for kind in sorted(self.paused):
            paused.add_metric([kind], 1)
        yield paused


async def status_counts(store: Store) -> Counter[tuple[str, str]]:
    """Enabled integrations per (type, status); every status of a present type appears."""
    records = await store.list_integrations()
    statuses = {s.integration_id: s.status.value for s in await store.list_statuses()}
    counts: Counter[tuple[str, str]] = Counter()
    for kind in {r.integration_type for r in records}:
        for status in [*(s.value for s in HealthStatus), NOT_CHECKED]:
            counts[(kind, status)] = 0
    for record in records:
        if record.enabled:
            counts[(record.integration_type, statuses.get(record.integration_id, NOT_CHECKED))] += 1
    return counts


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
async def prometheus_metrics(state: StateDep) -> Response:
    """The monitor's metrics in Prometheus text format, plus the current count of
    integrations per type and status (read from the store at scrape time)."""
    snapshot = b""
    if state.store is not None:
        try:
            counts = await status_counts(state.store)
            now = utcnow()
            paused = [
                m.integration_type
                for m in await state.store.list_type_modes()
                if m.passive_until > now
            ]
            scrape = CollectorRegistry(auto_describe=False)
            scrape.register(_SnapshotCollector(counts, paused))
            snapshot = generate_latest(scrape)
        except StoreError:
            snapshot = b""  # the store's own failure shows in /healthz; keep the counters
    return Response(
        generate_latest(metrics.REGISTRY) + snapshot,
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )
