"""Alerting's tables in PostgreSQL, through a small psycopg pool of its own.

The schema is the migration ``supabase/migrations/*_alerting.sql``, applied with the rest by
``integration-health db upgrade``. The engine's transaction locks the state rows it
evaluates with ``FOR UPDATE SKIP LOCKED`` — a second engine skips them rather than waiting
or doing the same work twice — and takes a transaction-scoped advisory lock per
integration type before deciding about alerts and incidents of that type (in type order, so
two engines cannot deadlock). Deliveries are claimed the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import SchemaError, StoreError, StoreUnavailable
from ..model import HealthStatus
from ..store import mask_url
from ..store.postgres import _fetch, _parse_url, _utc, _utc_or_none
from .base import (
    ALERT_COLUMNS,
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    INCIDENT_COLUMNS,
    NO_MORE_ROWS,
    STATE_COLUMNS,
    Alert,
    AlertState,
    Delivery,
    DeliveryAttempt,
    DeliveryOutcome,
    DeliveryState,
    Incident,
    NewDelivery,
    PendingIntegration,
    Subject,
)
from .config import Severity
from .hysteresis import IntegrationAlertState, Observation, VendorStats

__all__ = ["PostgresAlertStore"]

T = TypeVar("T")
Row = dict[str, Any]
Conn = psycopg.AsyncConnection[Any]


# Autocommit, before the transaction: one statement, so concurrent engines inserting the
# same rows wait at most for each other's statement, never for a whole transaction.
_NEW_STATES = """
insert into public.alert_integration_state (integration_id, org_id, integration_type)
select s.integration_id, s.org_id, s.integration_type
from public.integration_health_status s
where not exists (
    select 1 from public.alert_integration_state a where a.integration_id = s.integration_id
)
order by s.integration_id
on conflict (integration_id) do nothing
"""

_PENDING = f"""
select {", ".join("a." + c.strip() for c in STATE_COLUMNS.split(","))},
       s.checked_at as status_checked_at, s.integration_type as status_type,
       i.name as integration_name
from public.alert_integration_state a
join public.integration_health_status s on s.integration_id = a.integration_id
join public.integrations i on i.id = a.integration_id
where a.evaluated_through is null or s.checked_at > a.evaluated_through
order by a.integration_id
limit %s
for update of a skip locked
"""

_HISTORY = """
select c.integration_id, h.id, h.status, h.checked_at, h.error_code, h.error
from unnest(%(ids)s::uuid[], %(orgs)s::uuid[], %(through)s::timestamptz[], %(through_id)s::bigint[])
    as c(integration_id, org_id, through, through_id)
cross join lateral (
    select h.id, h.status, h.checked_at, h.error_code, h.error
    from public.integration_health_history h
    where h.org_id = c.org_id and h.integration_id = c.integration_id
      and (c.through is null or (h.checked_at, h.id) > (c.through, c.through_id))
) h
order by c.integration_id, h.checked_at, h.id
"""

_SAVE_STATE = """
update public.alert_integration_state set
    org_id = %(org_id)s, integration_type = %(integration_type)s, version = version + 1,
    evaluated_through = %(evaluated_through)s, evaluated_id = %(evaluated_id)s,
    bad_streak = %(bad_streak)s, unreachable_streak = %(unreachable_streak)s,
    good_streak = %(good_streak)s, bad_since = %(bad_since)s, failing_since = %(failing_since)s,
    vendor_failing = %(vendor_failing)s, last_status = %(last_status)s,
    last_checked_at = %(last_checked_at)s, last_error_code = %(last_error_code)s,
    last_error = %(last_error)s, open_alert_id = %(open_alert_id)s,
    open_severity = %(open_severity)s, updated_at = now()
where integration_id = %(integration_id)s and version = %(expected_version)s
"""

_VENDOR_STATS = """
with monitored as (
    select id, integration_type from public.integrations
    where enabled and monitoring_mode <> 'disabled'
      and (%(kind)s::text is null or integration_type = %(kind)s::text)
),
totals as (
    select integration_type, count(*) as total from monitored group by integration_type
),
failing as (
    select a.integration_type,
           count(distinct a.org_id) filter (where a.failing_since >= %(since)s) as recent_orgs,
           count(*) filter (where a.failing_since >= %(since)s) as recent_integrations,
           count(distinct a.org_id) as failing_orgs,
           count(*) as failing_integrations
    from public.alert_integration_state a
    join monitored m on m.id = a.integration_id
    where a.vendor_failing
    group by a.integration_type
)
select t.integration_type, t.total,
       coalesce(f.recent_orgs, 0) as recent_orgs,
       coalesce(f.recent_integrations, 0) as recent_integrations,
       coalesce(f.failing_orgs, 0) as failing_orgs,
       coalesce(f.failing_integrations, 0) as failing_integrations
from totals t left join failing f on f.integration_type = t.integration_type
order by t.integration_type
"""

_CLAIM = f"""
update public.alert_deliveries as u
set state = 'delivering', lease_owner = %(worker)s, lease_until = %(until)s, updated_at = now()
where u.id in (
    select d.id from public.alert_deliveries d
    where ((d.state = 'pending' and d.next_attempt_at <= %(at)s)
           or (d.state = 'delivering' and d.lease_until < %(at)s))
      and not exists (
          select 1 from public.alert_deliveries e
          where e.target = d.target
            and e.state in ('pending', 'delivering')
            and (e.created_at, e.id) < (d.created_at, d.id)
            and ((d.alert_id is not null and e.alert_id = d.alert_id)
                 or (d.alert_id is null and e.alert_id is null
                     and e.incident_id = d.incident_id))
      )
    order by d.next_attempt_at, d.created_at, d.id
    limit %(limit)s
    for update skip locked
)
returning {", ".join("u." + c.strip() for c in DELIVERY_COLUMNS.split(","))}
"""

_ENQUEUE = """
insert into public.alert_deliveries as d (
    id, dedupe_key, org_id, alert_id, incident_id, event, target, payload, state, attempts,
    next_attempt_at, created_at, updated_at
) values (
    %(id)s, %(dedupe_key)s, %(org_id)s, %(alert_id)s, %(incident_id)s, %(event)s, %(target)s,
    %(payload)s, 'pending', 0, %(created_at)s, %(created_at)s, now()
)
on conflict (dedupe_key) do update set
    state = 'pending', payload = excluded.payload, next_attempt_at = excluded.next_attempt_at,
    updated_at = now()
where d.state = 'cancelled'
"""

_TYPE_LOCK_NAMESPACE = "integration_health.alerting.type:"


def _state(row: Row) -> IntegrationAlertState:
    return IntegrationAlertState(
        integration_id=row["integration_id"],
        org_id=row["org_id"],
        integration_type=row["status_type"],
        version=row["version"],
        evaluated_through=_utc_or_none(row["evaluated_through"]),
        evaluated_id=row["evaluated_id"],
        bad_streak=row["bad_streak"],
        unreachable_streak=row["unreachable_streak"],
        good_streak=row["good_streak"],
        bad_since=_utc_or_none(row["bad_since"]),
        failing_since=_utc_or_none(row["failing_since"]),
        vendor_failing=row["vendor_failing"],
        last_status=HealthStatus(row["last_status"]) if row["last_status"] else None,
        last_checked_at=_utc_or_none(row["last_checked_at"]),
        last_error_code=row["last_error_code"],
        last_error=row["last_error"],
        open_alert_id=row["open_alert_id"],
        open_severity=Severity(row["open_severity"]) if row["open_severity"] else None,
    )


def _alert(row: Row) -> Alert:
    return Alert(
        id=row["id"],
        org_id=row["org_id"],
        integration_id=row["integration_id"],
        integration_type=row["integration_type"],
        integration_name=row["integration_name"],
        severity=Severity(row["severity"]),
        state=AlertState(row["state"]),
        opened_at=_utc(row["opened_at"]),
        resolved_at=_utc_or_none(row["resolved_at"]),
        first_failure_at=_utc(row["first_failure_at"]),
        consecutive_failures=row["consecutive_failures"],
        error_code=row["error_code"],
        error=row["error"],
        incident_id=row["incident_id"],
        suppressed=row["suppressed"],
    )


def _incident(row: Row) -> Incident:
    return Incident(
        id=row["id"],
        integration_type=row["integration_type"],
        state=AlertState(row["state"]),
        opened_at=_utc(row["opened_at"]),
        resolved_at=_utc_or_none(row["resolved_at"]),
        failing_orgs=row["failing_orgs"],
        failing_integrations=row["failing_integrations"],
        total_integrations=row["total_integrations"],
        peak_failing_orgs=row["peak_failing_orgs"],
    )


def _delivery(row: Row) -> Delivery:
    return Delivery(
        id=row["id"],
        dedupe_key=row["dedupe_key"],
        org_id=row["org_id"],
        alert_id=row["alert_id"],
        incident_id=row["incident_id"],
        event=row["event"],
        target=row["target"],
        payload=row["payload"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=_utc_or_none(row["next_attempt_at"]),
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        created_at=_utc(row["created_at"]),
        delivered_at=_utc_or_none(row["delivered_at"]),
    )


def _attempt(row: Row) -> DeliveryAttempt:
    return DeliveryAttempt(
        id=row["id"],
        delivery_id=row["delivery_id"],
        org_id=row["org_id"],
        attempt=row["attempt"],
        at=_utc(row["at"]),
        outcome=DeliveryOutcome(row["outcome"]),
        status_code=row["status_code"],
        error=row["error"],
        duration_ms=row["duration_ms"],
        next_attempt_at=_utc_or_none(row["next_attempt_at"]),
        worker=row["worker"],
    )


async def _rowcount(conn: Conn, query: str, params: Any = None) -> int:
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        return cur.rowcount


class PostgresAlertStore:
    """Alerting's tables in PostgreSQL (connect as the owner or ``service_role``)."""

    def __init__(self, url: str, *, max_size: int = 4, timeout: float = 10.0) -> None:
        target = _parse_url(url, application_name="integration-health-alerting")
        self.url = mask_url(url)
        self._password = target.password
        self._pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            target.conninfo,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            kwargs={
                "autocommit": True,
                "prepare_threshold": target.prepare_threshold,
                "connect_timeout": 5,
            },
            open=False,
            name="integration-health-alerting",
        )
        self._timeout = timeout

    @classmethod
    async def open(cls, url: str, **options: Any) -> PostgresAlertStore:
        """Connect; raises :class:`SchemaError` if ``db upgrade`` has not created the tables."""
        store = cls(url, **options)
        try:
            await store._pool.open(wait=True, timeout=store._timeout)
        except PoolTimeout as exc:
            await store._pool.close()
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {store.url}: {store._message(exc)}"
            ) from None
        try:
            await store._run(lambda conn: conn.execute("select 1 from public.alerts limit 1"))
        except BaseException:
            await store.aclose()
            raise
        return store

    async def aclose(self) -> None:
        """Close the pool."""
        await self._pool.close()

    def _message(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
            text = exc.diag.message_primary
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _translate(self, exc: psycopg.Error) -> StoreError:
        """The one place where psycopg's exceptions become the store's."""
        message = self._message(exc)
        if isinstance(exc, pg_errors.UndefinedTable | pg_errors.InvalidSchemaName):
            return SchemaError(
                f"the alerting tables at {self.url} are missing ({message}): "
                "run `integration-health db upgrade`"
            )
        if isinstance(exc, psycopg.OperationalError | PoolTimeout):
            return StoreUnavailable(f"PostgreSQL at {self.url} is unavailable: {message}")
        return StoreError(f"PostgreSQL refused the operation: {message}")

    async def _run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            async with self._pool.connection() as conn:
                return await fn(conn)
        except PoolTimeout as exc:
            raise StoreUnavailable(
                f"PostgreSQL at {self.url} is unavailable: {self._message(exc)}"
            ) from None
        except psycopg.Error as exc:
            raise self._translate(exc) from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PostgresTransaction]:
        """One transaction on one pooled connection (rolled back if the block raises)."""
        try:
            async with self._pool.connection() as conn:
                await conn.execute(_NEW_STATES)
                async with conn.transaction():
                    yield _PostgresTransaction(conn)
        except PoolTimeout as exc:
            raise StoreUnavailable(
                f"PostgreSQL at {self.url} is unavailable: {self._message(exc)}"
            ) from None
        except psycopg.Error as exc:
            raise self._translate(exc) from None

    async def claim_deliveries(
        self, *, worker: str, at: datetime, lease_s: float, limit: int
    ) -> list[Delivery]:
        params = {
            "worker": worker,
            "until": at + timedelta(seconds=lease_s),
            "at": at,
            "limit": max(0, limit),
        }
        rows = await self._run(lambda conn: _fetch(conn, _CLAIM, params))
        return sorted((_delivery(r) for r in rows), key=lambda d: (d.created_at, str(d.id)))

    async def finish_attempt(
        self, attempt: DeliveryAttempt, *, state: DeliveryState, next_attempt_at: datetime | None
    ) -> bool:
        async def write(conn: Conn) -> bool:
            async with conn.transaction():
                updated = await _rowcount(
                    conn,
                    "update public.alert_deliveries set state = %(state)s, "
                    "attempts = %(attempt)s, next_attempt_at = %(next)s, "
                    "last_status_code = %(code)s, last_error = %(error)s, "
                    "delivered_at = case when %(state)s = 'delivered' then %(at)s "
                    "else delivered_at end, lease_owner = null, lease_until = null, "
                    "updated_at = now() "
                    "where id = %(id)s and state = 'delivering' and lease_owner = %(worker)s",
                    {
                        "state": state.value,
                        "attempt": attempt.attempt,
                        "next": next_attempt_at,
                        "code": attempt.status_code,
                        "error": attempt.error,
                        "at": attempt.at,
                        "id": attempt.delivery_id,
                        "worker": attempt.worker,
                    },
                )
                if updated != 1:
                    return False
                await conn.execute(
                    "insert into public.alert_delivery_attempts (delivery_id, org_id, attempt, "
                    "at, outcome, status_code, error, duration_ms, next_attempt_at, worker) "
                    "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        attempt.delivery_id,
                        attempt.org_id,
                        attempt.attempt,
                        attempt.at,
                        attempt.outcome.value,
                        attempt.status_code,
                        attempt.error,
                        attempt.duration_ms,
                        attempt.next_attempt_at,
                        attempt.worker,
                    ),
                )
                return True

        return await self._run(write)

    async def list_alerts(
        self, org_id: UUID | None = None, *, open_only: bool = False, limit: int = 100
    ) -> list[Alert]:
        query = f"select {ALERT_COLUMNS} from public.alerts where true"
        params: list[Any] = []
        if org_id is not None:
            query += " and org_id = %s"
            params.append(org_id)
        if open_only:
            query += " and state = 'open'"
        query += " order by state = 'open' desc, opened_at desc, id limit %s"
        params.append(max(0, limit))
        rows = await self._run(lambda conn: _fetch(conn, query, params))
        return [_alert(r) for r in rows]

    async def list_incidents(self, *, open_only: bool = False, limit: int = 100) -> list[Incident]:
        query = f"select {INCIDENT_COLUMNS} from public.alert_incidents"
        if open_only:
            query += " where state = 'open'"
        query += " order by opened_at desc, id limit %s"
        rows = await self._run(lambda conn: _fetch(conn, query, (max(0, limit),)))
        return [_incident(r) for r in rows]

    async def list_deliveries(
        self,
        *,
        org_id: UUID | None = None,
        alert_id: UUID | None = None,
        incident_id: UUID | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        query = f"select {DELIVERY_COLUMNS} from public.alert_deliveries where true"
        params: list[Any] = []
        for column, value in (
            ("org_id", org_id),
            ("alert_id", alert_id),
            ("incident_id", incident_id),
        ):
            if value is not None:
                query += f" and {column} = %s"
                params.append(value)
        query += " order by created_at desc, id limit %s"
        params.append(max(0, limit))
        rows = await self._run(lambda conn: _fetch(conn, query, params))
        return [_delivery(r) for r in rows]

    async def list_attempts(self, delivery_id: UUID) -> list[DeliveryAttempt]:
        rows = await self._run(
            lambda conn: _fetch(
                conn,
                f"select {ATTEMPT_COLUMNS} from public.alert_delivery_attempts "
                "where delivery_id = %s order by attempt, id",
                (delivery_id,),
            )
        )
        return [_attempt(r) for r in rows]


class _PostgresTransaction:
    """The engine's view of one PostgreSQL transaction."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def pending_integrations(self, limit: int) -> list[PendingIntegration]:
        rows = await _fetch(self._conn, _PENDING, (max(0, limit),))
        if not rows:
            return []
        states = [_state(r) for r in rows]
        history = await _fetch(
            self._conn,
            _HISTORY,
            {
                "ids": [s.integration_id for s in states],
                "orgs": [s.org_id for s in states],
                "through": [s.evaluated_through for s in states],
                "through_id": [min(s.evaluated_id, NO_MORE_ROWS) for s in states],
            },
        )
        observed: dict[UUID, list[Observation]] = {s.integration_id: [] for s in states}
        for h in history:
            observed[h["integration_id"]].append(
                Observation(
                    id=h["id"],
                    status=HealthStatus(h["status"]),
                    checked_at=_utc(h["checked_at"]),
                    error_code=h["error_code"],
                    error=h["error"],
                )
            )
        return [
            PendingIntegration(
                state=state,
                integration_name=row["integration_name"],
                status_checked_at=_utc(row["status_checked_at"]),
                observations=observed[state.integration_id],
            )
            for state, row in zip(states, rows, strict=True)
        ]

    async def save_state(self, state: IntegrationAlertState, *, expected_version: int) -> bool:
        params = {
            "integration_id": state.integration_id,
            "org_id": state.org_id,
            "integration_type": state.integration_type,
            "evaluated_through": state.evaluated_through,
            "evaluated_id": min(state.evaluated_id, NO_MORE_ROWS),
            "bad_streak": state.bad_streak,
            "unreachable_streak": state.unreachable_streak,
            "good_streak": state.good_streak,
            "bad_since": state.bad_since,
            "failing_since": state.failing_since,
            "vendor_failing": state.vendor_failing,
            "last_status": state.last_status.value if state.last_status else None,
            "last_checked_at": state.last_checked_at,
            "last_error_code": state.last_error_code,
            "last_error": state.last_error,
            "open_alert_id": state.open_alert_id,
            "open_severity": state.open_severity.value if state.open_severity else None,
            "expected_version": expected_version,
        }
        return await _rowcount(self._conn, _SAVE_STATE, params) == 1

    async def lock_type(self, integration_type: str) -> None:
        await self._conn.execute(
            "select pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (_TYPE_LOCK_NAMESPACE + integration_type,),
        )

    async def open_incident(self, integration_type: str) -> Incident | None:
        rows = await _fetch(
            self._conn,
            f"select {INCIDENT_COLUMNS} from public.alert_incidents "
            "where integration_type = %s and state = 'open'",
            (integration_type,),
        )
        return _incident(rows[0]) if rows else None

    async def open_incidents(self) -> list[Incident]:
        rows = await _fetch(
            self._conn,
            f"select {INCIDENT_COLUMNS} from public.alert_incidents where state = 'open' "
            "order by integration_type",
        )
        return [_incident(r) for r in rows]

    async def insert_alert(self, alert: Alert) -> None:
        await self._conn.execute(
            f"insert into public.alerts ({ALERT_COLUMNS}) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                alert.id,
                alert.org_id,
                alert.integration_id,
                alert.integration_type,
                alert.integration_name,
                alert.severity.value,
                alert.state.value,
                alert.opened_at,
                alert.resolved_at,
                alert.first_failure_at,
                alert.consecutive_failures,
                alert.error_code,
                alert.error,
                alert.incident_id,
                alert.suppressed,
            ),
        )

    async def _update_alerts(self, sql: str, params: Sequence[Any]) -> list[Alert]:
        rows = await _fetch(self._conn, f"{sql} returning {ALERT_COLUMNS}", params)
        return [_alert(r) for r in rows]

    async def resolve_alert(self, alert_id: UUID, *, at: datetime) -> Alert | None:
        found = await self._update_alerts(
            "update public.alerts set state = 'resolved', resolved_at = %s, updated_at = now() "
            "where id = %s and state = 'open'",
            (at, alert_id),
        )
        return found[0] if found else None

    async def escalate_alert(
        self,
        alert_id: UUID,
        *,
        severity: Severity,
        consecutive_failures: int,
        error_code: str | None,
        error: str | None,
    ) -> Alert | None:
        found = await self._update_alerts(
            "update public.alerts set severity = %s, consecutive_failures = %s, "
            "error_code = %s, error = %s, updated_at = now() where id = %s and state = 'open'",
            (severity.value, consecutive_failures, error_code, error, alert_id),
        )
        return found[0] if found else None

    async def attach_alerts(
        self, integration_type: str, incident_id: UUID, *, failing_since: datetime
    ) -> list[Alert]:
        return await self._update_alerts(
            "update public.alerts set incident_id = %s, updated_at = now() "
            "where integration_type = %s and state = 'open' and incident_id is null "
            "and first_failure_at >= %s",
            (incident_id, integration_type, failing_since),
        )

    async def set_suppressed(self, alert_id: UUID, suppressed: bool) -> None:
        await self._conn.execute(
            "update public.alerts set suppressed = %s, updated_at = now() where id = %s",
            (suppressed, alert_id),
        )

    async def release_alerts(self, incident_id: UUID) -> list[Alert]:
        return await self._update_alerts(
            "update public.alerts set suppressed = false, updated_at = now() "
            "where incident_id = %s and state = 'open' and suppressed",
            (incident_id,),
        )

    async def cancel_pending(self, subject: Subject) -> set[str]:
        key: UUID | None
        if subject.alert_id is not None:
            where, key = "alert_id = %s", subject.alert_id
        else:
            where, key = "alert_id is null and incident_id = %s", subject.incident_id
        await self._conn.execute(
            f"update public.alert_deliveries set state = 'cancelled', updated_at = now() "
            f"where {where} and state = 'pending'",
            (key,),
        )
        rows = await _fetch(
            self._conn,
            f"select distinct target from public.alert_deliveries "
            f"where {where} and state in ('delivering', 'delivered')",
            (key,),
        )
        return {r["target"] for r in rows}

    async def vendor_stats(
        self, since: datetime, integration_type: str | None = None
    ) -> list[VendorStats]:
        rows = await _fetch(self._conn, _VENDOR_STATS, {"since": since, "kind": integration_type})
        return [
            VendorStats(
                integration_type=r["integration_type"],
                total_integrations=r["total"],
                recent_orgs=r["recent_orgs"],
                recent_integrations=r["recent_integrations"],
                failing_orgs=r["failing_orgs"],
                failing_integrations=r["failing_integrations"],
            )
            for r in rows
        ]

    async def insert_incident(self, incident: Incident) -> bool:
        inserted = await _rowcount(
            self._conn,
            f"insert into public.alert_incidents ({INCIDENT_COLUMNS}) "
            "values (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "on conflict (integration_type) where state = 'open' do nothing",
            (
                incident.id,
                incident.integration_type,
                incident.state.value,
                incident.opened_at,
                incident.resolved_at,
                incident.failing_orgs,
                incident.failing_integrations,
                incident.total_integrations,
                incident.peak_failing_orgs,
            ),
        )
        return inserted == 1

    async def update_incident_counts(self, incident: Incident) -> None:
        await self._conn.execute(
            "update public.alert_incidents set failing_orgs = %s, failing_integrations = %s, "
            "total_integrations = %s, peak_failing_orgs = %s, updated_at = now() "
            "where id = %s and state = 'open'",
            (
                incident.failing_orgs,
                incident.failing_integrations,
                incident.total_integrations,
                incident.peak_failing_orgs,
                incident.id,
            ),
        )

    async def resolve_incident(self, incident_id: UUID, *, at: datetime) -> Incident | None:
        rows = await _fetch(
            self._conn,
            "update public.alert_incidents set state = 'resolved', resolved_at = %s, "
            f"updated_at = now() where id = %s and state = 'open' returning {INCIDENT_COLUMNS}",
            (at, incident_id),
        )
        return _incident(rows[0]) if rows else None

    async def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        added = 0
        for d in deliveries:
            added += await _rowcount(
                self._conn,
                _ENQUEUE,
                {
                    "id": d.id,
                    "dedupe_key": d.dedupe_key,
                    "org_id": d.org_id,
                    "alert_id": d.alert_id,
                    "incident_id": d.incident_id,
                    "event": d.event,
                    "target": d.target,
                    "payload": Jsonb(d.payload, dumps=lambda v: json.dumps(v, sort_keys=True)),
                    "created_at": d.created_at,
                },
            )
        return added
