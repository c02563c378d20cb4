"""Wiring: open alerting for a database URL, hook it into the scheduler, or run it alone.

- :func:`open_alert_store` picks the store from the same URL as the monitor's store
  (``sqlite:///…`` → its own connection to that file; ``postgresql://…`` → its own pool;
  ``memory://`` → next to the given :class:`~integration_health.store.MemoryStore`).
- :class:`AlertingService` holds the engine, the deliverer and their HTTP client.
  :meth:`AlertingService.after_pass` is the scheduler hook: it evaluates after every pass and
  starts sending in the background, so a slow webhook never delays health checks.
- :func:`build_after_pass_hook` returns that hook for ``Scheduler(after_pass=[…])``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from ..adapters._http import HttpClient
from ..errors import ConfigError
from ..model import utcnow
from ..settings import Settings
from ..store import Store, mask_url
from .base import AlertStore
from .config import AlertingConfig
from .delivery import DeliveryReport, WebhookDeliverer
from .engine import AlertEngine, EvaluationReport
from .memory import MemoryAlertStore
from .sqlite import SQLiteAlertStore

if TYPE_CHECKING:
    from ..scheduling.scheduler import PassReport

__all__ = ["AlertingService", "build_after_pass_hook", "open_alert_store"]

log = logging.getLogger(__name__)


async def open_alert_store(url: str, *, main_store: Store | None = None) -> AlertStore:
    """Alerting's store for the database at ``url`` (the monitor's own URL)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return await SQLiteAlertStore.open(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresAlertStore  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise ConfigError(
                "PostgreSQL support is not installed: pip install 'integration-health[postgres]'"
                f" ({exc})"
            ) from None
        return await PostgresAlertStore.open(url)
    if scheme == "memory":
        if main_store is None:
            raise ConfigError("alerting on memory:// needs the MemoryStore it reads results from")
        return MemoryAlertStore(main_store)
    raise ConfigError(
        f"unsupported database URL {mask_url(url)!r}: use sqlite:///path.db, "
        "postgresql://user@host/db or memory://"
    )


class AlertingService:
    """Engine + deliverer on one store; close it with :meth:`aclose` (or ``async with``)."""

    def __init__(
        self,
        store: AlertStore,
        config: AlertingConfig,
        *,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        owns_store: bool = True,
    ) -> None:
        self.store = store
        self.config = config
        self.http = HttpClient(settings or Settings())
        self.engine = AlertEngine(store, config, clock=clock)
        self.deliverer = WebhookDeliverer(
            store, config, http=self.http, environ=environ, clock=clock
        )
        self._owns_store = owns_store
        self._sending: asyncio.Task[DeliveryReport] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        database_url: str,
        config: AlertingConfig,
        *,
        settings: Settings | None = None,
        main_store: Store | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> AlertingService:
        """Open alerting on the database at ``database_url``."""
        store = await open_alert_store(database_url, main_store=main_store)
        return cls(store, config, settings=settings, environ=environ, clock=clock)

    async def __aenter__(self) -> AlertingService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def run_once(
        self, at: datetime | None = None, *, deliver: bool = True
    ) -> tuple[EvaluationReport, DeliveryReport | None]:
        """Evaluate, then (by default) send what is due; both at ``at`` (default: now)."""
        evaluation = await self.engine.evaluate(at)
        sent = await self.deliverer.deliver_pending(at) if deliver else None
        return evaluation, sent

    async def after_pass(self, report: PassReport) -> None:
        """The scheduler hook: evaluate now; send in the background (one batch at a time)."""
        await self.engine.evaluate()
        if self._closed:
            return
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(
                self._send_in_background(), name="integration-health-alert-delivery"
            )

    async def drain(self) -> DeliveryReport | None:
        """Wait for the background delivery started by :meth:`after_pass`, if any."""
        if self._sending is None:
            return None
        return await self._sending

    async def _send_in_background(self) -> DeliveryReport:
        try:
            return await self.deliverer.deliver_pending()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged; the next pass tries again
            log.error("alert delivery failed: %s: %s", type(exc).__name__, exc)
            return DeliveryReport(at=utcnow())

    async def run(self, stop: asyncio.Event, *, tick_s: float = 15.0) -> None:
        """Evaluate and deliver every ``tick_s`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must survive a bad round
                log.error("alerting round failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick_s)

    async def aclose(self) -> None:
        """Wait for a background delivery (bounded by its lease), then release everything."""
        if self._closed:
            return
        self._closed = True
        if self._sending is not None and not self._sending.done():
            try:
                await asyncio.wait_for(self._sending, timeout=self.deliverer.lease_s)
            except (TimeoutError, asyncio.CancelledError):
                self._sending.cancel()
        await self.http.aclose()
        if self._owns_store:
            await self.store.aclose()


def build_after_pass_hook(service: AlertingService) -> Callable[[PassReport], Awaitable[None]]:
    """The hook to pass as ``Scheduler(after_pass=[build_after_pass_hook(service)])``.

    After each pass it evaluates the results just written (idempotent, safe with any number
    of schedulers) and sends due deliveries in the background. Close the service when the
    scheduler stops.
    """
    return service.after_pass
