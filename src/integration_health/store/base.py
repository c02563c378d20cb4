"""The store protocol: what the runner, CLI, scheduler and API need from a database.

Three implementations keep the same contract (one test suite runs against all of them):
:class:`~integration_health.store.memory.MemoryStore`,
:class:`~integration_health.store.sqlite.SQLiteStore` (the embedded default) and
:class:`~integration_health.store.postgres.PostgresStore` (production, RLS per organisation).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol, runtime_checkable
from uuid import UUID

from ..checks import IntegrationRecord
from ..config import MIN_CHECK_INTERVAL_S
from ..model import ErrorCode, HealthResult, HealthStatus

__all__ = [
    "BUDGET_WINDOW",
    "HISTORY_LIMIT",
    "INITIAL_SLOT",
    "UNSCHEDULED_FLOOR",
    "DueCheck",
    "HealthEvent",
    "HealthRow",
    "HistoryRecord",
    "ImportSummary",
    "Member",
    "Organization",
    "ResultWrite",
    "SlotClaim",
    "StatusRecord",
    "Store",
    "TypeMode",
    "within_budgets",
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


UNSCHEDULED_FLOOR = timedelta(seconds=MIN_CHECK_INTERVAL_S)
"""How old the last result of an integration without ``next_check_at`` must be before
:meth:`Store.list_due` lists it (see there)."""

INITIAL_SLOT = datetime(1970, 1, 1, tzinfo=UTC)
"""The slot of an integration's first check (it has no ``next_check_at`` yet)."""


@dataclass(frozen=True)
class ResultWrite:
    """One result to write: upsert the status row, append a history row."""

    org_id: UUID
    integration_id: UUID
    integration_type: str
    result: HealthResult
    next_check_at: datetime | None = None
    """When to check next; ``None`` keeps the stored value. For a sync outcome (``source``
    ``passive``) it is a bound, not a time: the stored value becomes the later of the two
    (the outcome never brings a probe forward)."""
    source: str = "active"
    """``active`` (a probe) or ``passive`` (a sync outcome)."""
    slot_at: datetime | None = None
    """The scheduled slot this result completes. With a slot, the result is written only if
    ``worker`` holds the slot's claim, and the slot is marked done in the same transaction —
    a late or duplicate run of the slot writes nothing."""
    worker: str | None = None
    """Who claimed the slot (see :meth:`Store.claim_slots`)."""
    drift_ms: int | None = None
    """How late the check started after its slot, for the run log."""


@dataclass(frozen=True)
class SlotClaim:
    """A request to run one integration's check for one scheduled slot."""

    org_id: UUID
    integration_id: UUID
    slot_at: datetime
    integration_type: str | None = None
    """Set for a type with a request budget: the store keeps it with the claim, so that every
    process sharing the database counts the same starts (:meth:`Store.count_claims`)."""


BUDGET_WINDOW = timedelta(minutes=1)
"""Request budgets are per minute: the claims of a type made in the minute before count."""


def within_budgets(
    claims: Sequence[SlotClaim], budgets: Mapping[str, int], spent: Mapping[str, int]
) -> list[SlotClaim]:
    """``claims`` in order, without those of a budgeted type beyond what is left of its
    budget (``budgets`` less ``spent``); claims without a type or of another type all stay."""
    left = {kind: n - spent.get(kind, 0) for kind, n in budgets.items()}
    kept = []
    for claim in claims:
        kind = claim.integration_type
        if kind is not None and kind in left:
            if left[kind] <= 0:
                continue
            left[kind] -= 1
        kept.append(claim)
    return kept


@dataclass(frozen=True)
class DueCheck:
    """An integration whose check is due, with its current state (``None``: never checked)."""

    integration: IntegrationRecord
    status: StatusRecord | None

    @property
    def slot_at(self) -> datetime:
        """The slot this check fills: its ``next_check_at``, or the initial slot."""
        if self.status is None or self.status.next_check_at is None:
            return INITIAL_SLOT
        return self.status.next_check_at


@dataclass(frozen=True)
class HealthEvent:
    """A status transition of one integration (``from_status`` is ``None`` for the first)."""

    id: int
    org_id: UUID
    integration_id: UUID
    integration_type: str
    from_status: HealthStatus | None
    to_status: HealthStatus
    at: datetime
    error_code: ErrorCode | None
    error: str | None
    source: str = "active"


@dataclass(frozen=True)
class TypeMode:
    """Active checks of an integration type paused (the vendor keeps rate-limiting us)."""

    integration_type: str
    passive_until: datetime
    reason: str
    switched_at: datetime


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


class HealthRow(NamedTuple):
    """One integration of an organisation with its current status, as the health answer
    shows it (:meth:`Store.list_health_rows`).

    A lean read for ``GET /api/orgs/{org_id}/health``: identifiers are already text (the
    canonical UUID form, ``str(uuid)``) and timestamps are ISO 8601 text in UTC exactly as
    ``datetime.isoformat()`` writes them; configs and details are not read. The status
    fields are ``None`` for an integration never checked.
    """

    integration_id: str
    name: str
    integration_type: str
    enabled: bool
    monitoring_mode: str
    check_interval_s: int
    status: str | None
    latency_ms: int | None
    checked_at: str | None
    next_check_at: str | None
    error: str | None
    error_code: str | None
    consecutive_failures: int | None
    last_healthy_at: str | None
    source: str | None


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

    async def get_integrations(self, ids: Collection[UUID]) -> dict[UUID, IntegrationRecord]:
        """The integrations among ``ids`` that are stored, by id, in one query (a worker
        loads its batch's integrations with it)."""
        ...

    # -- results ----------------------------------------------------------------------------

    async def record_results(self, writes: Sequence[ResultWrite]) -> int:
        """Upsert the status rows and append history rows, batched, in one transaction.

        A result older than the stored status does not overwrite it (it still enters the
        history). ``consecutive_failures`` and ``last_healthy_at`` are derived atomically
        from the stored row; a status change adds a :class:`HealthEvent`. Writes carrying a
        ``slot_at`` complete their claimed slot in the same transaction and are skipped when
        the slot is not (or no longer) claimed by their ``worker``. Returns the number of
        results written.
        """
        ...

    async def list_statuses(self, org_id: UUID | None = None) -> list[StatusRecord]:
        """Current status rows of one organisation (or all)."""
        ...

    async def list_health_rows(self, org_id: UUID) -> list[HealthRow]:
        """Every integration of an organisation with its current status, by name: one
        query, only what the health answer shows (see :class:`HealthRow`)."""
        ...

    async def list_history(
        self, integration_id: UUID, *, limit: int = HISTORY_LIMIT
    ) -> list[HistoryRecord]:
        """The newest ``limit`` history rows of one integration, newest first."""
        ...

    async def list_events(
        self,
        org_id: UUID,
        *,
        integration_id: UUID | None = None,
        limit: int = 100,
    ) -> list[HealthEvent]:
        """Status transitions of an organisation (or one of its integrations), newest first."""
        ...

    # -- scheduling -------------------------------------------------------------------------

    async def list_due(
        self,
        at: datetime,
        *,
        limit: int = 10_000,
        exclude_types: Collection[str] = (),
        claimed_since: datetime | None = None,
        claimed_by_me: str | None = None,
    ) -> list[DueCheck]:
        """Enabled, active integrations never checked or whose ``next_check_at`` ≤ ``at``.

        An integration with a status but no ``next_check_at`` (its results came from a sync
        system while it was passive; it is active now) is due once its last result is
        :data:`UNSCHEDULED_FLOOR` old — the general floor (the planner holds back types with
        a longer one): listed earlier, the planner would only hold it back, and many of them
        would fill the caller's window and hold up every check due after them.

        Oldest due first (never-checked first of all), at most ``limit``, leaving out the
        integration types in ``exclude_types`` (the scheduler's paused types, when they fill
        the window). With ``claimed_since`` (``at`` minus the lease), checks whose current slot
        (:attr:`DueCheck.slot_at`) is claimed, not done, by a claim made at or after it are
        left out too: a live batch holds them and will write them, so the next plan moves on
        to the checks after them (a claim older than that may be taken over and is listed).
        Claims of worker ``claimed_by_me`` are not left out: that caller renews them (a
        scheduler runs again the slots whose results it had to drop).
        """
        ...

    async def claim_slots(
        self,
        claims: Sequence[SlotClaim],
        *,
        worker: str,
        at: datetime,
        lease_s: float,
        budgets: Mapping[str, int] | None = None,
    ) -> list[SlotClaim]:
        """Claim slots for ``worker``; returns those it got.

        A slot already done is never claimed again; a slot claimed by someone else is taken
        over only once its claim is older than ``lease_s`` (that worker died). Claiming a slot
        you already hold renews the claim (its lease starts again at ``at``); a claim taken
        over by someone else is not returned.

        ``budgets`` (integration type → claims per minute): a claim whose
        :attr:`SlotClaim.integration_type` has a budget is made only while the type's claims
        of the :data:`BUDGET_WINDOW` before ``at`` — by every worker on this store — and
        those made by this call stay within it, the earlier in ``claims`` first; the rest are
        not made. Counting and claiming are one atomic step against every other caller of
        this method on the store, so two workers never both spend the same remainder.
        """
        ...

    async def count_claims(
        self, integration_types: Collection[str], *, since: datetime
    ) -> dict[str, int]:
        """Slots of each of ``integration_types`` claimed after ``since`` (done or not), by
        every worker on this store: the checks started against the type's request budget.

        Only claims made with :attr:`SlotClaim.integration_type` set are counted. A renewed
        or taken-over claim counts from its latest claim time (a budget may then hold back a
        check it need not have). Types with no claim are left out.
        """
        ...

    async def prune_runs(self, before: datetime, *, limit: int = 10_000) -> int:
        """Delete at most ``limit`` slot runs claimed before ``before``; returns how many.

        A run only guards its slot while the slot can still be claimed (within the lease);
        the scheduler prunes runs older than a day so the table does not grow forever.
        """
        ...

    async def set_type_mode(self, mode: TypeMode | None, *, integration_type: str) -> None:
        """Pause active checks of a type until ``mode.passive_until`` (``None`` resumes)."""
        ...

    async def list_type_modes(self) -> list[TypeMode]:
        """Every paused integration type."""
        ...

    async def count_results(
        self, integration_type: str, error_code: ErrorCode, *, since: datetime
    ) -> int:
        """How many results of a type with ``error_code`` were recorded since ``since``."""
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
