"""Alerting's tables in the embedded SQLite file, through a connection of their own.

The monitor's :class:`~integration_health.store.sqlite.SQLiteStore` applies the schema
(``store/sql/sqlite/0003_alerting.sql``) when it opens the file; this class opens a second
connection to the same file (WAL mode lets both work) and runs every statement on one
dedicated thread. A transaction is ``BEGIN IMMEDIATE``: it takes SQLite's write lock at
once, so two engines — in two processes, or two connections of one — evaluate one after the
other and the second finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from ..errors import ConfigError, SchemaError, StoreError, StoreUnavailable
from ..model import HealthStatus, utcnow
from ..store.sqlite import SQLiteStore, parse_sqlite_url, parse_ts, ts
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

__all__ = ["SQLiteAlertStore"]

T = TypeVar("T")


_PENDING = f"""
SELECT {", ".join("a." + c.strip() for c in STATE_COLUMNS.split(","))},
       s.checked_at AS status_checked_at, s.integration_type AS status_type,
       i.name AS integration_name
FROM alert_integration_state a
JOIN integration_health_status s ON s.integration_id = a.integration_id
JOIN integrations i ON i.id = a.integration_id
WHERE a.evaluated_through IS NULL OR s.checked_at > a.evaluated_through
ORDER BY a.integration_id
LIMIT ?
"""

_NEW_STATES = """
INSERT INTO alert_integration_state (integration_id, org_id, integration_type, updated_at)
SELECT s.integration_id, s.org_id, s.integration_type, ?
FROM integration_health_status s
WHERE NOT EXISTS (
    SELECT 1 FROM alert_integration_state a WHERE a.integration_id = s.integration_id
)
"""

_SAVE_STATE = """
UPDATE alert_integration_state SET
    org_id = :org_id, integration_type = :integration_type, version = version + 1,
    evaluated_through = :evaluated_through, evaluated_id = :evaluated_id,
    bad_streak = :bad_streak, unreachable_streak = :unreachable_streak,
    good_streak = :good_streak, bad_since = :bad_since, failing_since = :failing_since,
    vendor_failing = :vendor_failing, last_status = :last_status,
    last_checked_at = :last_checked_at, last_error_code = :last_error_code,
    last_error = :last_error, open_alert_id = :open_alert_id, open_severity = :open_severity,
    updated_at = :updated_at
WHERE integration_id = :integration_id AND version = :expected_version
"""

_VENDOR_STATS = """
WITH monitored AS (
    SELECT id, integration_type FROM integrations
    WHERE enabled = 1 AND monitoring_mode <> 'disabled'
),
totals AS (
    SELECT integration_type, count(*) AS total FROM monitored GROUP BY integration_type
),
failing AS (
    SELECT a.integration_type,
           count(DISTINCT CASE WHEN a.failing_since >= :since THEN a.org_id END) AS recent_orgs,
           sum(CASE WHEN a.failing_since >= :since THEN 1 ELSE 0 END) AS recent_integrations,
           count(DISTINCT a.org_id) AS failing_orgs,
           count(*) AS failing_integrations
    FROM alert_integration_state a
    JOIN monitored m ON m.id = a.integration_id
    WHERE a.vendor_failing = 1
    GROUP BY a.integration_type
)
SELECT t.integration_type, t.total,
       coalesce(f.recent_orgs, 0) AS recent_orgs,
       coalesce(f.recent_integrations, 0) AS recent_integrations,
       coalesce(f.failing_orgs, 0) AS failing_orgs,
       coalesce(f.failing_integrations, 0) AS failing_integrations
FROM totals t LEFT JOIN failing f ON f.integration_type = t.integration_type
WHERE :kind IS NULL OR t.integration_type = :kind
ORDER BY t.integration_type
"""

_CLAIM = f"""
UPDATE alert_deliveries
SET state = 'delivering', lease_owner = :worker, lease_until = :until, updated_at = :now
WHERE id IN (
    SELECT d.id FROM alert_deliveries d
    WHERE ((d.state = 'pending' AND d.next_attempt_at <= :at)
           OR (d.state = 'delivering' AND d.lease_until < :at))
      AND NOT EXISTS (
          SELECT 1 FROM alert_deliveries e
          WHERE e.target = d.target
            AND e.state IN ('pending', 'delivering')
            AND (e.created_at, e.id) < (d.created_at, d.id)
            AND ((d.alert_id IS NOT NULL AND e.alert_id = d.alert_id)
                 OR (d.alert_id IS NULL AND e.alert_id IS NULL
                     AND e.incident_id = d.incident_id))
      )
    ORDER BY d.next_attempt_at, d.created_at, d.id
    LIMIT :limit
)
RETURNING {DELIVERY_COLUMNS}
"""

_ENQUEUE = """
INSERT INTO alert_deliveries (
    id, dedupe_key, org_id, alert_id, incident_id, event, target, payload, state, attempts,
    next_attempt_at, created_at, updated_at
) VALUES (
    :id, :dedupe_key, :org_id, :alert_id, :incident_id, :event, :target, :payload, 'pending',
    0, :created_at, :created_at, :created_at
)
ON CONFLICT (dedupe_key) DO UPDATE SET
    state = 'pending', payload = excluded.payload, next_attempt_at = excluded.next_attempt_at,
    updated_at = excluded.updated_at
WHERE alert_deliveries.state = 'cancelled'
"""


def _uuid(value: str | None) -> UUID | None:
    return UUID(value) if value else None


def _req_ts(value: str) -> datetime:
    parsed = parse_ts(value)
    assert parsed is not None
    return parsed


def _str(value: UUID | None) -> str | None:
    return str(value) if value is not None else None


def _state(row: sqlite3.Row) -> IntegrationAlertState:
    return IntegrationAlertState(
        integration_id=UUID(row["integration_id"]),
        org_id=UUID(row["org_id"]),
        integration_type=row["integration_type"],
        version=row["version"],
        evaluated_through=parse_ts(row["evaluated_through"]),
        evaluated_id=row["evaluated_id"],
        bad_streak=row["bad_streak"],
        unreachable_streak=row["unreachable_streak"],
        good_streak=row["good_streak"],
        bad_since=parse_ts(row["bad_since"]),
        failing_since=parse_ts(row["failing_since"]),
        vendor_failing=bool(row["vendor_failing"]),
        last_status=HealthStatus(row["last_status"]) if row["last_status"] else None,
        last_checked_at=parse_ts(row["last_checked_at"]),
        last_error_code=row["last_error_code"],
        last_error=row["last_error"],
        open_alert_id=_uuid(row["open_alert_id"]),
        open_severity=Severity(row["open_severity"]) if row["open_severity"] else None,
    )


def _alert(row: sqlite3.Row) -> Alert:
    return Alert(
        id=UUID(row["id"]),
        org_id=UUID(row["org_id"]),
        integration_id=UUID(row["integration_id"]),
        integration_type=row["integration_type"],
        integration_name=row["integration_name"],
        severity=Severity(row["severity"]),
        state=AlertState(row["state"]),
        opened_at=_req_ts(row["opened_at"]),
        resolved_at=parse_ts(row["resolved_at"]),
        first_failure_at=_req_ts(row["first_failure_at"]),
        consecutive_failures=row["consecutive_failures"],
        error_code=row["error_code"],
        error=row["error"],
        incident_id=_uuid(row["incident_id"]),
        suppressed=bool(row["suppressed"]),
    )


def _incident(row: sqlite3.Row) -> Incident:
    return Incident(
        id=UUID(row["id"]),
        integration_type=row["integration_type"],
        state=AlertState(row["state"]),
        opened_at=_req_ts(row["opened_at"]),
        resolved_at=parse_ts(row["resolved_at"]),
        failing_orgs=row["failing_orgs"],
        failing_integrations=row["failing_integrations"],
        total_integrations=row["total_integrations"],
        peak_failing_orgs=row["peak_failing_orgs"],
    )


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=UUID(row["id"]),
        dedupe_key=row["dedupe_key"],
        org_id=_uuid(row["org_id"]),
        alert_id=_uuid(row["alert_id"]),
        incident_id=_uuid(row["incident_id"]),
        event=row["event"],
        target=row["target"],
        payload=json.loads(row["payload"]),
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=parse_ts(row["next_attempt_at"]),
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        created_at=_req_ts(row["created_at"]),
        delivered_at=parse_ts(row["delivered_at"]),
    )


def _attempt(row: sqlite3.Row) -> DeliveryAttempt:
    return DeliveryAttempt(
        id=row["id"],
        delivery_id=UUID(row["delivery_id"]),
        org_id=_uuid(row["org_id"]),
        attempt=row["attempt"],
        at=_req_ts(row["at"]),
        outcome=DeliveryOutcome(row["outcome"]),
        status_code=row["status_code"],
        error=row["error"],
        duration_ms=row["duration_ms"],
        next_attempt_at=parse_ts(row["next_attempt_at"]),
        worker=row["worker"],
    )


class SQLiteAlertStore:
    """Alerting's tables in a SQLite file (a connection of its own; see the module doc)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = parse_sqlite_url(url)
        if self.path == ":memory:":
            raise ConfigError(
                "alerting needs a SQLite file (sqlite:///path.db), not an in-memory database: "
                "its connection is separate from the monitor's"
            )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-alerts")
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, url: str) -> SQLiteAlertStore:
        """Open the file, applying any pending migration (alerting's included) first."""
        main = await SQLiteStore.open(url)
        await main.aclose()
        store = cls(url)
        try:
            await store._call(lambda conn: conn.execute("SELECT 1 FROM alerts LIMIT 1"))
        except BaseException:
            await store.aclose()
            raise
        return store

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreUnavailable(f"cannot open {self.url}: folder {parent} does not exist")
            try:
                conn = sqlite3.connect(
                    self.path, timeout=15.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.url}: {exc}") from None
            conn.row_factory = sqlite3.Row
            self._conn = conn
        return self._conn

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection's thread; translate SQLite's errors at this boundary."""
        if self._closed:
            raise StoreError("the alert store is closed")

        def run() -> T:
            conn = self._connect()
            try:
                return fn(conn)
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    raise SchemaError() from None
                raise StoreUnavailable(f"SQLite error on {self.url}: {exc}") from None
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"SQLite refused the write: {exc}") from None

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, run)

    async def _atomic(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in a transaction of its own."""
        async with self._lock:

            def run(conn: sqlite3.Connection) -> T:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result

            return await self._call(run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            return await self._call(fn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SQLiteTransaction]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` if the block raises)."""
        async with self._lock:
            await self._call(lambda conn: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield _SQLiteTransaction(self)
            except BaseException:

                def rollback(conn: sqlite3.Connection) -> None:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")

                await asyncio.shield(self._call(rollback))
                raise
            await self._call(lambda conn: conn.execute("COMMIT"))

    async def aclose(self) -> None:
        """Close the connection and its thread."""
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)

    # -- deliveries -------------------------------------------------------------------------

    async def claim_deliveries(
        self, *, worker: str, at: datetime, lease_s: float, limit: int
    ) -> list[Delivery]:
        params = {
            "worker": worker,
            "until": ts(at + timedelta(seconds=lease_s)),
            "now": ts(utcnow()),
            "at": ts(at),
            "limit": max(0, limit),
        }
        rows = await self._atomic(lambda conn: conn.execute(_CLAIM, params).fetchall())
        return sorted((_delivery(r) for r in rows), key=lambda d: (d.created_at, str(d.id)))

    async def finish_attempt(
        self, attempt: DeliveryAttempt, *, state: DeliveryState, next_attempt_at: datetime | None
    ) -> bool:
        now = ts(utcnow())

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE alert_deliveries SET state = ?, attempts = ?, next_attempt_at = ?, "
                "last_status_code = ?, last_error = ?, "
                "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END, "
                "lease_owner = NULL, lease_until = NULL, updated_at = ? "
                "WHERE id = ? AND state = 'delivering' AND lease_owner = ?",
                (
                    state.value,
                    attempt.attempt,
                    ts(next_attempt_at),
                    attempt.status_code,
                    attempt.error,
                    state.value,
                    ts(attempt.at),
                    now,
                    str(attempt.delivery_id),
                    attempt.worker,
                ),
            )
            if cursor.rowcount != 1:
                return False
            conn.execute(
                "INSERT INTO alert_delivery_attempts (delivery_id, org_id, attempt, at, outcome, "
                "status_code, error, duration_ms, next_attempt_at, worker) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(attempt.delivery_id),
                    _str(attempt.org_id),
                    attempt.attempt,
                    ts(attempt.at),
                    attempt.outcome.value,
                    attempt.status_code,
                    attempt.error,
                    attempt.duration_ms,
                    ts(attempt.next_attempt_at),
                    attempt.worker,
                ),
            )
            return True

        return await self._atomic(write)

    # -- reads ------------------------------------------------------------------------------

    async def list_alerts(
        self, org_id: UUID | None = None, *, open_only: bool = False, limit: int = 100
    ) -> list[Alert]:
        query = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1"
        params: list[Any] = []
        if org_id is not None:
            query += " AND org_id = ?"
            params.append(str(org_id))
        if open_only:
            query += " AND state = 'open'"
        query += " ORDER BY state = 'open' DESC, opened_at DESC, id LIMIT ?"
        params.append(max(0, limit))
        rows = await self._read(lambda conn: conn.execute(query, params).fetchall())
        return [_alert(r) for r in rows]

    async def list_incidents(self, *, open_only: bool = False, limit: int = 100) -> list[Incident]:
        query = f"SELECT {INCIDENT_COLUMNS} FROM alert_incidents"
        if open_only:
            query += " WHERE state = 'open'"
        query += " ORDER BY opened_at DESC, id LIMIT ?"
        rows = await self._read(lambda conn: conn.execute(query, (max(0, limit),)).fetchall())
        return [_incident(r) for r in rows]

    async def list_deliveries(
        self,
        *,
        org_id: UUID | None = None,
        alert_id: UUID | None = None,
        incident_id: UUID | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        query = f"SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE 1 = 1"
        params: list[Any] = []
        for column, value in (
            ("org_id", org_id),
            ("alert_id", alert_id),
            ("incident_id", incident_id),
        ):
            if value is not None:
                query += f" AND {column} = ?"
                params.append(str(value))
        query += " ORDER BY created_at DESC, id LIMIT ?"
        params.append(max(0, limit))
        rows = await self._read(lambda conn: conn.execute(query, params).fetchall())
        return [_delivery(r) for r in rows]

    async def list_attempts(self, delivery_id: UUID) -> list[DeliveryAttempt]:
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM alert_delivery_attempts WHERE delivery_id = ? "
                "ORDER BY attempt, id",
                (str(delivery_id),),
            ).fetchall()
        )
        return [_attempt(r) for r in rows]


class _SQLiteTransaction:
    """The engine's view of one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, store: SQLiteAlertStore) -> None:
        self._store = store

    async def _q(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._store._call(fn)

    async def pending_integrations(self, limit: int) -> list[PendingIntegration]:
        now = ts(utcnow())

        def read(conn: sqlite3.Connection) -> list[PendingIntegration]:
            conn.execute(_NEW_STATES, (now,))
            pending = []
            for row in conn.execute(_PENDING, (max(0, limit),)).fetchall():
                state = _state(row)
                through = ts(state.evaluated_through)
                history = conn.execute(
                    "SELECT id, status, checked_at, error_code, error "
                    "FROM integration_health_history WHERE integration_id = ? "
                    "AND (? IS NULL OR (checked_at, id) > (?, ?)) ORDER BY checked_at, id",
                    (row["integration_id"], through, through, state.evaluated_id),
                ).fetchall()
                observations = [
                    Observation(
                        id=h["id"],
                        status=HealthStatus(h["status"]),
                        checked_at=_req_ts(h["checked_at"]),
                        error_code=h["error_code"],
                        error=h["error"],
                    )
                    for h in history
                ]
                if row["status_type"] != state.integration_type:
                    state = replace(state, integration_type=row["status_type"])
                pending.append(
                    PendingIntegration(
                        state=state,
                        integration_name=row["integration_name"],
                        status_checked_at=_req_ts(row["status_checked_at"]),
                        observations=observations,
                    )
                )
            return pending

        return await self._q(read)

    async def save_state(self, state: IntegrationAlertState, *, expected_version: int) -> bool:
        params = {
            "integration_id": str(state.integration_id),
            "org_id": str(state.org_id),
            "integration_type": state.integration_type,
            "evaluated_through": ts(state.evaluated_through),
            "evaluated_id": min(state.evaluated_id, NO_MORE_ROWS),
            "bad_streak": state.bad_streak,
            "unreachable_streak": state.unreachable_streak,
            "good_streak": state.good_streak,
            "bad_since": ts(state.bad_since),
            "failing_since": ts(state.failing_since),
            "vendor_failing": int(state.vendor_failing),
            "last_status": state.last_status.value if state.last_status else None,
            "last_checked_at": ts(state.last_checked_at),
            "last_error_code": state.last_error_code,
            "last_error": state.last_error,
            "open_alert_id": _str(state.open_alert_id),
            "open_severity": state.open_severity.value if state.open_severity else None,
            "updated_at": ts(utcnow()),
            "expected_version": expected_version,
        }
        rowcount = await self._q(lambda conn: conn.execute(_SAVE_STATE, params).rowcount)
        return rowcount == 1

    async def lock_type(self, integration_type: str) -> None:
        return None  # BEGIN IMMEDIATE already serialises every writer

    async def open_incident(self, integration_type: str) -> Incident | None:
        row = await self._q(
            lambda conn: conn.execute(
                f"SELECT {INCIDENT_COLUMNS} FROM alert_incidents "
                "WHERE integration_type = ? AND state = 'open'",
                (integration_type,),
            ).fetchone()
        )
        return _incident(row) if row else None

    async def open_incidents(self) -> list[Incident]:
        rows = await self._q(
            lambda conn: conn.execute(
                f"SELECT {INCIDENT_COLUMNS} FROM alert_incidents WHERE state = 'open' "
                "ORDER BY integration_type"
            ).fetchall()
        )
        return [_incident(r) for r in rows]

    async def insert_alert(self, alert: Alert) -> None:
        now = ts(utcnow())
        await self._q(
            lambda conn: conn.execute(
                f"INSERT INTO alerts ({ALERT_COLUMNS}, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(alert.id),
                    str(alert.org_id),
                    str(alert.integration_id),
                    alert.integration_type,
                    alert.integration_name,
                    alert.severity.value,
                    alert.state.value,
                    ts(alert.opened_at),
                    ts(alert.resolved_at),
                    ts(alert.first_failure_at),
                    alert.consecutive_failures,
                    alert.error_code,
                    alert.error,
                    _str(alert.incident_id),
                    int(alert.suppressed),
                    now,
                ),
            )
        )

    async def _update_alerts(self, sql: str, params: Sequence[Any]) -> list[Alert]:
        rows = await self._q(
            lambda conn: conn.execute(f"{sql} RETURNING {ALERT_COLUMNS}", params).fetchall()
        )
        return [_alert(r) for r in rows]

    async def resolve_alert(self, alert_id: UUID, *, at: datetime) -> Alert | None:
        found = await self._update_alerts(
            "UPDATE alerts SET state = 'resolved', resolved_at = ?, updated_at = ? "
            "WHERE id = ? AND state = 'open'",
            (ts(at), ts(utcnow()), str(alert_id)),
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
            "UPDATE alerts SET severity = ?, consecutive_failures = ?, error_code = ?, "
            "error = ?, updated_at = ? WHERE id = ? AND state = 'open'",
            (
                severity.value,
                consecutive_failures,
                error_code,
                error,
                ts(utcnow()),
                str(alert_id),
            ),
        )
        return found[0] if found else None

    async def attach_alerts(
        self, integration_type: str, incident_id: UUID, *, failing_since: datetime
    ) -> list[Alert]:
        return await self._update_alerts(
            "UPDATE alerts SET incident_id = ?, updated_at = ? WHERE integration_type = ? "
            "AND state = 'open' AND incident_id IS NULL AND first_failure_at >= ?",
            (str(incident_id), ts(utcnow()), integration_type, ts(failing_since)),
        )

    async def set_suppressed(self, alert_id: UUID, suppressed: bool) -> None:
        await self._q(
            lambda conn: conn.execute(
                "UPDATE alerts SET suppressed = ?, updated_at = ? WHERE id = ?",
                (int(suppressed), ts(utcnow()), str(alert_id)),
            )
        )

    async def release_alerts(self, incident_id: UUID) -> list[Alert]:
        return await self._update_alerts(
            "UPDATE alerts SET suppressed = 0, updated_at = ? "
            "WHERE incident_id = ? AND state = 'open' AND suppressed = 1",
            (ts(utcnow()), str(incident_id)),
        )

    async def cancel_pending(self, subject: Subject) -> set[str]:
        if subject.alert_id is not None:
            where, key = "alert_id = ?", str(subject.alert_id)
        else:
            where, key = "alert_id IS NULL AND incident_id = ?", str(subject.incident_id)
        now = ts(utcnow())

        def run(conn: sqlite3.Connection) -> set[str]:
            conn.execute(
                f"UPDATE alert_deliveries SET state = 'cancelled', updated_at = ? "
                f"WHERE {where} AND state = 'pending'",
                (now, key),
            )
            rows = conn.execute(
                f"SELECT DISTINCT target FROM alert_deliveries "
                f"WHERE {where} AND state IN ('delivering', 'delivered')",
                (key,),
            ).fetchall()
            return {r[0] for r in rows}

        return await self._q(run)

    async def vendor_stats(
        self, since: datetime, integration_type: str | None = None
    ) -> list[VendorStats]:
        rows = await self._q(
            lambda conn: conn.execute(
                _VENDOR_STATS, {"since": ts(since), "kind": integration_type}
            ).fetchall()
        )
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
        rowcount = await self._q(
            lambda conn: (
                conn.execute(
                    f"INSERT INTO alert_incidents ({INCIDENT_COLUMNS}, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (
                        str(incident.id),
                        incident.integration_type,
                        incident.state.value,
                        ts(incident.opened_at),
                        ts(incident.resolved_at),
                        incident.failing_orgs,
                        incident.failing_integrations,
                        incident.total_integrations,
                        incident.peak_failing_orgs,
                        ts(utcnow()),
                    ),
                ).rowcount
            )
        )
        return rowcount == 1

    async def update_incident_counts(self, incident: Incident) -> None:
        await self._q(
            lambda conn: conn.execute(
                "UPDATE alert_incidents SET failing_orgs = ?, failing_integrations = ?, "
                "total_integrations = ?, peak_failing_orgs = ?, updated_at = ? "
                "WHERE id = ? AND state = 'open'",
                (
                    incident.failing_orgs,
                    incident.failing_integrations,
                    incident.total_integrations,
                    incident.peak_failing_orgs,
                    ts(utcnow()),
                    str(incident.id),
                ),
            )
        )

    async def resolve_incident(self, incident_id: UUID, *, at: datetime) -> Incident | None:
        row = await self._q(
            lambda conn: conn.execute(
                "UPDATE alert_incidents SET state = 'resolved', resolved_at = ?, updated_at = ? "
                f"WHERE id = ? AND state = 'open' RETURNING {INCIDENT_COLUMNS}",
                (ts(at), ts(utcnow()), str(incident_id)),
            ).fetchone()
        )
        return _incident(row) if row else None

    async def enqueue(self, deliveries: Sequence[NewDelivery]) -> int:
        if not deliveries:
            return 0
        rows = [
            {
                "id": str(d.id),
                "dedupe_key": d.dedupe_key,
                "org_id": _str(d.org_id),
                "alert_id": _str(d.alert_id),
                "incident_id": _str(d.incident_id),
                "event": d.event,
                "target": d.target,
                "payload": json.dumps(d.payload, sort_keys=True),
                "created_at": ts(d.created_at),
            }
            for d in deliveries
        ]

        def run(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(_ENQUEUE, row).rowcount for row in rows)

        return await self._q(run)
