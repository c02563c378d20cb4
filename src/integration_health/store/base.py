"""The store protocol: what the runner, CLI, scheduler and API need from a database.

Three implementations keep the same contract (one test suite runs against all of them):
:class:`~integration_health.store.memory.MemoryStore`,
:class:`~integration_health.store.sqlite.SQLiteStore` (the embedded default) and
:class:`~integration_health.store.postgres.PostgresStore` (production, RLS per organisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from ..checks import IntegrationRecord
from ..model import ErrorCode, HealthResult, HealthStatus

__all__ = [
    "HISTORY_LIMIT",
    "HistoryRecord",
    "ImportSummary",
    "Member",
    "Organization",
    "ResultWrite",
    "StatusRecord",
    "Store",
]

HISTORY_LIMIT = 96
"""History rows kept per integration (24 hours at one check per 15 minutes)."""


@dataclass(frozen=True)
class Organization:
    """A customer organisation."""

    id: UUID
    name: str


@dataclass(frozen=True)
class Member:
    """A user who may see an organisation's integrations."""

    org_id: UUID
    user_id: UUID
    role: str = "member"


@dataclass(frozen=True)
class ResultWrite:
    """One result to write: upsert the status row, append a history row."""

    org_id: UUID
    integration_id: UUID
    integration_type: str
    result: HealthResult
    next_check_at: datetime | None = None
    source: str = "active"
    """``active`` (a probe) or ``passive`` (a sync outcome)."""


@dataclass(frozen=True)
class StatusRecord:
    """The current status of one integration (``integration_health_status``)."""

    org_id: UUID
    integration_id: UUID
    integration_type: str
    status: HealthStatus
    latency_ms: int
    checked_at: datetime
    error: str | None
    error_code: ErrorCode | None
    consecutive_failures: int
    last_healthy_at: datetime | None
    next_check_at: datetime | None
    details: dict[str, Any] = field(default_factory=dict)
    source: str = "active"


@dataclass(frozen=True)
class HistoryRecord:
    """One past result (``integration_health_history``)."""

    id: int
    org_id: UUID
    integration_id: UUID
    status: HealthStatus
    latency_ms: int
    checked_at: datetime
    error: str | None
    error_code: ErrorCode | None


@dataclass(frozen=True)
class ImportSummary:
    """What an import changed."""

    organizations: int = 0
    members: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@runtime_checkable
class Store(Protocol):
    """Persistent state of the monitor. Every method is safe to call concurrently."""

    url: str
    """Where the store lives, with any password masked."""

    async def upgrade(self) -> list[str]:
        """Create or upgrade the schema; return the migrations applied (none if current)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...

    async def ping(self) -> None:
        """Raise :class:`~integration_health.errors.StoreUnavailable` if unreachable."""
        ...

    # -- definitions ------------------------------------------------------------------------

    async def import_definitions(
        self,
        organizations: Sequence[Organization],
        members: Sequence[Member],
        integrations: Sequence[IntegrationRecord],
    ) -> ImportSummary:
        """Create or update everything given, in one transaction (all or nothing)."""
        ...

    async def list_organizations(self) -> list[Organization]:
        """Every organisation, by name."""
        ...

    async def get_organization(self, org_id: UUID) -> Organization | None:
        """One organisation, or ``None``."""
        ...

    async def list_members(self, org_id: UUID) -> list[Member]:
        """The members of an organisation."""
        ...

    async def list_integrations(self, org_id: UUID | None = None) -> list[IntegrationRecord]:
        """The integrations of one organisation (or all), by name."""
        ...

    async def get_integration(self, integration_id: UUID) -> IntegrationRecord | None:
        """One integration, or ``None``."""
        ...

    # -- results ----------------------------------------------------------------------------

    async def record_results(self, writes: Sequence[ResultWrite]) -> int:
        """Upsert the status rows and append history rows, batched, in one transaction.

        A result older than the stored status does not overwrite it (it still enters the
        history). ``consecutive_failures`` and ``last_healthy_at`` are derived atomically
        from the stored row. Returns the number of results written.
        """
        ...

    async def list_statuses(self, org_id: UUID | None = None) -> list[StatusRecord]:
        """Current status rows of one organisation (or all)."""
        ...

    async def list_history(
        self, integration_id: UUID, *, limit: int = HISTORY_LIMIT
    ) -> list[HistoryRecord]:
        """The newest ``limit`` history rows of one integration, newest first."""
        ...


def result_from_status(record: StatusRecord) -> HealthResult:
    """The last result as a :class:`HealthResult`."""
    return HealthResult(
        status=record.status,
        latency_ms=record.latency_ms,
        checked_at=record.checked_at,
        error=record.error,
        error_code=record.error_code,
        details=record.details,
    )
