"""A store in process memory: for tests, scripts and trying the library out.

Same contract as the SQL stores (the shared contract suite runs against it), including the
96-row history limit and "an older result never overwrites a newer one".
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from uuid import UUID

from ..checks import IntegrationRecord
from ..errors import StoreError
from ..model import ErrorCode, HealthStatus
from .base import (
    BUDGET_WINDOW,
    HISTORY_LIMIT,
    UNSCHEDULED_FLOOR,
    DueCheck,
    HealthEvent,
    HealthRow,
    HistoryRecord,
    ImportSummary,
    Member,
    Organization,
    ResultWrite,
    SlotClaim,
    StatusRecord,
    TypeMode,
    within_budgets,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """Everything in dicts; lost when the process ends."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._orgs: dict[UUID, Organization] = {}
        self._members: dict[tuple[UUID, UUID], Member] = {}
        self._integrations: dict[UUID, IntegrationRecord] = {}
        self._statuses: dict[UUID, StatusRecord] = {}
        self._history: dict[UUID, list[HistoryRecord]] = defaultdict(list)
        self._ids = itertools.count(1)
        self._events: list[HealthEvent] = []
        self._event_ids = itertools.count(1)
        self._runs: dict[tuple[UUID, datetime], _Run] = {}
        self._type_modes: dict[str, TypeMode] = {}
        self._lock = asyncio.Lock()

    async def upgrade(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def import_definitions(
        self,
        organizations: Sequence[Organization],
        members: Sequence[Member],
        integrations: Sequence[IntegrationRecord],
    ) -> ImportSummary:
        async with self._lock:
            known_orgs = set(self._orgs) | {o.id for o in organizations}
            for member in members:
                if member.org_id not in known_orgs:
                    raise StoreError(f"organization {member.org_id} does not exist")
            created = updated = unchanged = 0
            for record in integrations:
                if record.org_id not in known_orgs:
                    raise StoreError(f"organization {record.org_id} does not exist")
                existing = self._integrations.get(record.integration_id)
                if existing is not None and existing.org_id != record.org_id:
                    raise StoreError(
                        f"integration {record.integration_id} already belongs to organization "
                        f"{existing.org_id}; it cannot move to {record.org_id}"
                    )
            for org in organizations:
                self._orgs[org.id] = org
            for member in members:
                self._members[(member.org_id, member.user_id)] = member
            for record in integrations:
                existing = self._integrations.get(record.integration_id)
                if existing is None:
                    created += 1
                elif existing == record:
                    unchanged += 1
                else:
                    updated += 1
                self._integrations[record.integration_id] = record
            return ImportSummary(len(organizations), len(members), created, updated, unchanged)

    async def list_organizations(self) -> list[Organization]:
        return sorted(self._orgs.values(), key=lambda o: (o.name, str(o.id)))

    async def get_organization(self, org_id: UUID) -> Organization | None:
        return self._orgs.get(org_id)

    async def list_members(self, org_id: UUID) -> list[Member]:
        return sorted(
            (m for m in self._members.values() if m.org_id == org_id), key=lambda m: str(m.user_id)
        )

    async def list_integrations(self, org_id: UUID | None = None) -> list[IntegrationRecord]:
        return sorted(
            (i for i in self._integrations.values() if org_id is None or i.org_id == org_id),
            key=lambda i: (i.name, str(i.integration_id)),
        )

    async def get_integration(self, integration_id: UUID) -> IntegrationRecord | None:
        return self._integrations.get(integration_id)

    async def get_integrations(self, ids: Collection[UUID]) -> dict[UUID, IntegrationRecord]:
        return {i: self._integrations[i] for i in ids if i in self._integrations}

    async def record_results(self, writes: Sequence[ResultWrite]) -> int:
        async with self._lock:
            for write in writes:
                if write.integration_id not in self._integrations:
                    raise StoreError(
                        "a result belongs to an integration that is not stored; import the "
                        "integration before recording its results"
                    )
            written = 0
            for write in sorted(writes, key=lambda w: w.result.checked_at):
                if self._complete_slot(write):
                    self._apply(write)
                    written += 1
            return written

    def _complete_slot(self, write: ResultWrite) -> bool:
        if write.slot_at is None:
            return True
        run = self._runs.get((write.integration_id, write.slot_at))
        if run is None or run.state != "claimed" or run.worker != write.worker:
            return False
        run.state = "done"
        run.drift_ms = write.drift_ms
        return True

    def _apply(self, write: ResultWrite) -> None:
        result = write.result
        current = self._statuses.get(write.integration_id)
        if current is None or result.checked_at >= current.checked_at:
            if current is None or current.status is not result.status:
                self._events.append(
                    HealthEvent(
                        id=next(self._event_ids),
                        org_id=write.org_id,
                        integration_id=write.integration_id,
                        integration_type=write.integration_type,
                        from_status=current.status if current else None,
                        to_status=result.status,
                        at=result.checked_at,
                        error_code=result.error_code,
                        error=result.error,
                        source=write.source,
                    )
                )
            next_check_at = write.next_check_at
            stored = current.next_check_at if current is not None else None
            if stored is not None and (
                next_check_at is None or (write.source == "passive" and next_check_at < stored)
            ):
                next_check_at = stored  # kept: none given, or a sync outcome's earlier bound
            failures = 0
            if result.status is HealthStatus.UNREACHABLE:
                failures = (current.consecutive_failures if current else 0) + 1
            last_healthy = current.last_healthy_at if current else None
            if result.status is HealthStatus.HEALTHY:
                last_healthy = result.checked_at
            self._statuses[write.integration_id] = StatusRecord(
                org_id=write.org_id,
                integration_id=write.integration_id,
                integration_type=write.integration_type,
                status=result.status,
                latency_ms=result.latency_ms,
                checked_at=result.checked_at,
                error=result.error,
                error_code=result.error_code,
                consecutive_failures=failures,
                last_healthy_at=last_healthy,
                next_check_at=next_check_at,
                details=dict(result.details),
                source=write.source,
            )
        rows = self._history[write.integration_id]
        rows.append(
            HistoryRecord(
                id=next(self._ids),
                org_id=write.org_id,
                integration_id=write.integration_id,
                status=result.status,
                latency_ms=result.latency_ms,
                checked_at=result.checked_at,
                error=result.error,
                error_code=result.error_code,
            )
        )
        rows.sort(key=lambda h: (h.checked_at, h.id), reverse=True)
        del rows[HISTORY_LIMIT:]

    async def list_statuses(self, org_id: UUID | None = None) -> list[StatusRecord]:
        return sorted(
            (replace(s) for s in self._statuses.values() if org_id is None or s.org_id == org_id),
            key=lambda s: str(s.integration_id),
        )

    async def list_health_rows(self, org_id: UUID) -> list[HealthRow]:
        rows = []
        for record in await self.list_integrations(org_id):
            status = self._statuses.get(record.integration_id)
            head = (
                str(record.integration_id),
                record.name,
                record.integration_type,
                record.enabled,
                record.monitoring_mode,
                record.check_interval_s,
            )
            if status is None:
                rows.append(HealthRow(*head, *(None,) * 9))
                continue
            rows.append(
                HealthRow(
                    *head,
                    status.status.value,
                    status.latency_ms,
                    _iso(status.checked_at),
                    _iso(status.next_check_at),
                    status.error,
                    status.error_code.value if status.error_code else None,
                    status.consecutive_failures,
                    _iso(status.last_healthy_at),
                    status.source,
                )
            )
        return rows

    async def list_history(
        self, integration_id: UUID, *, limit: int = HISTORY_LIMIT
    ) -> list[HistoryRecord]:
        if limit < 1:
            return []
        return list(self._history.get(integration_id, [])[:limit])

    async def list_events(
        self,
        org_id: UUID,
        *,
        integration_id: UUID | None = None,
        limit: int = 100,
    ) -> list[HealthEvent]:
        events = [
            e
            for e in self._events
            if e.org_id == org_id and (integration_id is None or e.integration_id == integration_id)
        ]
        events.sort(key=lambda e: (e.at, e.id), reverse=True)
        return events[: max(0, limit)]

    async def list_due(
        self,
        at: datetime,
        *,
        limit: int = 10_000,
        exclude_types: Collection[str] = (),
        claimed_since: datetime | None = None,
        claimed_by_me: str | None = None,
    ) -> list[DueCheck]:
        due = []
        unscheduled_before = at - UNSCHEDULED_FLOOR
        for record in self._integrations.values():
            if not record.enabled or record.monitoring_mode != "active":
                continue
            if record.integration_type in exclude_types:
                continue
            status = self._statuses.get(record.integration_id)
            if (
                status is None
                or (status.next_check_at is not None and status.next_check_at <= at)
                or (status.next_check_at is None and status.checked_at <= unscheduled_before)
            ):
                check = DueCheck(record, replace(status) if status else None)
                if claimed_since is not None:
                    run = self._runs.get((record.integration_id, check.slot_at))
                    if (
                        run is not None
                        and run.state == "claimed"
                        and run.claimed_at >= claimed_since
                        and run.worker != claimed_by_me
                    ):
                        continue  # a live batch holds the slot
                due.append(check)
        oldest = datetime.min.replace(tzinfo=UTC)
        due.sort(
            key=lambda d: (
                (d.status.next_check_at if d.status else None) or oldest,
                str(d.integration.integration_id),
            )
        )
        return due[:limit]

    async def claim_slots(
        self,
        claims: Sequence[SlotClaim],
        *,
        worker: str,
        at: datetime,
        lease_s: float,
        budgets: Mapping[str, int] | None = None,
    ) -> list[SlotClaim]:
        async with self._lock:
            for claim in claims:
                if claim.integration_id not in self._integrations:
                    raise StoreError("a slot belongs to an integration that is not stored")
            if budgets:  # counted and trimmed under the lock: atomic for every caller
                spent = self._count_claims(budgets, since=at - BUDGET_WINDOW)
                claims = within_budgets(claims, budgets, spent)
            got = []
            for claim in claims:
                key = (claim.integration_id, claim.slot_at)
                run = self._runs.get(key)
                expired = run is not None and (at - run.claimed_at).total_seconds() > lease_s
                renew = run is not None and run.worker == worker
                if run is None or (run.state == "claimed" and (expired or renew)):
                    kind = claim.integration_type or (run.integration_type if run else None)
                    self._runs[key] = _Run(worker=worker, claimed_at=at, integration_type=kind)
                    got.append(claim)
            return got

    async def count_claims(
        self, integration_types: Collection[str], *, since: datetime
    ) -> dict[str, int]:
        return self._count_claims(integration_types, since=since)

    def _count_claims(
        self, integration_types: Collection[str], *, since: datetime
    ) -> dict[str, int]:
        wanted = set(integration_types)
        counts: dict[str, int] = {}
        for run in self._runs.values():
            kind = run.integration_type
            if kind is not None and kind in wanted and run.claimed_at > since:
                counts[kind] = counts.get(kind, 0) + 1
        return counts

    async def prune_runs(self, before: datetime, *, limit: int = 10_000) -> int:
        async with self._lock:
            old = [key for key, run in self._runs.items() if run.claimed_at < before][:limit]
            for key in old:
                del self._runs[key]
            return len(old)

    async def set_type_mode(self, mode: TypeMode | None, *, integration_type: str) -> None:
        if mode is None:
            self._type_modes.pop(integration_type, None)
        else:
            self._type_modes[integration_type] = mode

    async def list_type_modes(self) -> list[TypeMode]:
        return [self._type_modes[k] for k in sorted(self._type_modes)]

    async def count_results(
        self, integration_type: str, error_code: ErrorCode, *, since: datetime
    ) -> int:
        count = 0
        for integration_id, rows in self._history.items():
            record = self._integrations.get(integration_id)
            if record is None or record.integration_type != integration_type:
                continue
            count += sum(1 for h in rows if h.error_code is error_code and h.checked_at >= since)
        return count


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


@dataclass
class _Run:
    worker: str
    claimed_at: datetime
    integration_type: str | None = None
    state: str = "claimed"
    drift_ms: int | None = None
