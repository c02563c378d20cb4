"""The embedded store: one SQLite file, no server needed (the default).

One connection, used from one dedicated thread, so the event loop never blocks on disk I/O
and SQLite's single-writer model is respected inside the process; WAL mode and a busy timeout
let a CLI ``check`` and a running ``scheduler`` share the file. There is no row-level security:
every read filters by organisation in the query itself.

The schema is applied on open (embedded databases upgrade themselves), from the numbered
files in ``store/sql/sqlite/``; ``integration-health db upgrade`` does the same explicitly.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from ..checks import IntegrationRecord
from ..errors import SchemaError, StoreError, StoreUnavailable
from ..model import ErrorCode, HealthStatus, utcnow
from .base import (
    BUDGET_WINDOW,
    HISTORY_LIMIT,
    INITIAL_SLOT,
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

__all__ = ["SQLiteStore", "parse_sqlite_url"]

T = TypeVar("T")

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def ts(value: datetime | None) -> str | None:
    """A datetime as sortable UTC text."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(value: str | None) -> datetime | None:
    """Text written by :func:`ts` back to an aware datetime."""
    if value is None:
        return None
    return datetime.fromisoformat(value)


def parse_sqlite_url(url: str) -> str:
    """``sqlite:///relative.db`` → ``relative.db``; ``sqlite:////abs.db`` → ``/abs.db``.

    ``sqlite://`` and ``sqlite:///:memory:`` give a private in-memory database.
    """
    if not url.startswith("sqlite:"):
        raise StoreError(f"not a SQLite URL: {url}")
    rest = url.removeprefix("sqlite:")
    if rest in ("", "//", "///:memory:", "//:memory:"):
        return ":memory:"
    if not rest.startswith("///"):
        raise StoreError(
            f"invalid SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////abs/path.db"
        )
    return rest.removeprefix("///").split("?", 1)[0]


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("integration_health.store.sql").joinpath("sqlite")
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return [(name.removesuffix(".sql"), text) for name, text in files]


_UPSERT_STATUS = """
INSERT INTO integration_health_status (
    integration_id, org_id, integration_type, status, latency_ms, checked_at, error, error_code,
    consecutive_failures, last_healthy_at, next_check_at, details, source, updated_at
) VALUES (
    :integration_id, :org_id, :integration_type, :status, :latency_ms, :checked_at, :error,
    :error_code,
    CASE WHEN :status = 'unreachable' THEN 1 ELSE 0 END,
    CASE WHEN :status = 'healthy' THEN :checked_at END,
    :next_check_at, :details, :source, :updated_at
)
ON CONFLICT (integration_id) DO UPDATE SET
    org_id = excluded.org_id,
    integration_type = excluded.integration_type,
    status = excluded.status,
    latency_ms = excluded.latency_ms,
    checked_at = excluded.checked_at,
    error = excluded.error,
    error_code = excluded.error_code,
    consecutive_failures = CASE WHEN excluded.status = 'unreachable'
        THEN integration_health_status.consecutive_failures + 1 ELSE 0 END,
    last_healthy_at = CASE WHEN excluded.status = 'healthy'
        THEN excluded.checked_at ELSE integration_health_status.last_healthy_at END,
    next_check_at = CASE
        WHEN excluded.source = 'passive'
            AND excluded.next_check_at < integration_health_status.next_check_at
        THEN integration_health_status.next_check_at
        ELSE COALESCE(excluded.next_check_at, integration_health_status.next_check_at)
    END,
    details = excluded.details,
    source = excluded.source,
    updated_at = excluded.updated_at
WHERE excluded.checked_at >= integration_health_status.checked_at
"""

_INSERT_HISTORY = """
INSERT INTO integration_health_history (
    org_id, integration_id, status, latency_ms, checked_at, error, error_code
) VALUES (
    :org_id, :integration_id, :status, :latency_ms, :checked_at, :error, :error_code
)
"""

_STATUS_COLUMNS = (
    "org_id, integration_id, integration_type, status, latency_ms, checked_at, error, "
    "error_code, consecutive_failures, last_healthy_at, next_check_at, details, source"
)


_STATUS_COLUMN_NAMES = [c.strip() for c in _STATUS_COLUMNS.split(",")]


class SQLiteStore:
    """Store in a SQLite file (or in memory)."""

    def __init__(self, url: str = "sqlite:///integration-health.db") -> None:
        self.url = url
        self.path = parse_sqlite_url(url)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, url: str = "sqlite:///integration-health.db") -> SQLiteStore:
        """Open (creating the file and schema if needed)."""
        store = cls(url)
        try:
            await store.upgrade()
        except BaseException:
            await store.aclose()
            raise
        return store

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                parent = Path(self.path).expanduser().resolve().parent
                if not parent.is_dir():
                    raise StoreUnavailable(
                        f"cannot open {self.url}: folder {parent} does not exist"
                    )
            try:
                conn = sqlite3.connect(
                    self.path, timeout=10.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA foreign_keys = ON")
                if self.path != ":memory:":
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.url}: {exc}") from None
            conn.row_factory = sqlite3.Row
            self._conn = conn
        return self._conn

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("the store is closed")

        def run() -> T:
            conn = self._connect()
            try:
                return fn(conn)
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.rollback()
                if "no such table" in str(exc):
                    raise SchemaError() from None
                raise StoreUnavailable(f"SQLite error on {self.url}: {exc}") from None
            except sqlite3.IntegrityError as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise StoreError(f"SQLite refused the write: {exc}") from None
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, run)

    async def aclose(self) -> None:
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

    async def ping(self) -> None:
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def upgrade(self) -> list[str]:
        migrations = _migrations()

        def apply(conn: sqlite3.Connection) -> list[str]:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            known = {name for name, _ in migrations}
            unknown = sorted(done - known)
            if unknown:
                raise SchemaError(
                    f"the database at {self.url} has migrations this version does not know "
                    f"({', '.join(unknown)}): upgrade integration-health"
                )
            applied = []
            for name, sql in migrations:
                if name in done:
                    continue
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # executescript would commit on its own; run statement by statement.
                    for statement in _split_sql(sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (name, ts(utcnow())),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                applied.append(name)
            return applied

        return await self._call(apply)

    # -- definitions ------------------------------------------------------------------------

    async def import_definitions(
        self,
        organizations: Sequence[Organization],
        members: Sequence[Member],
        integrations: Sequence[IntegrationRecord],
    ) -> ImportSummary:
        now = ts(utcnow())

        def write(conn: sqlite3.Connection) -> ImportSummary:
            created = updated = unchanged = 0
            conn.execute("BEGIN IMMEDIATE")
            try:
                for org in organizations:
                    conn.execute(
                        "INSERT INTO organizations (id, name, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                        "name = excluded.name, updated_at = excluded.updated_at "
                        "WHERE organizations.name IS NOT excluded.name",
                        (str(org.id), org.name, now, now),
                    )
                for member in members:
                    conn.execute(
                        "INSERT INTO organization_members (org_id, user_id, role, created_at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (org_id, user_id) DO UPDATE SET "
                        "role = excluded.role",
                        (str(member.org_id), str(member.user_id), member.role, now),
                    )
                for record in integrations:
                    config = json.dumps(dict(record.config), sort_keys=True)
                    row = conn.execute(
                        "SELECT org_id, integration_type, name, config, enabled, "
                        "monitoring_mode, check_interval_s FROM integrations WHERE id = ?",
                        (str(record.integration_id),),
                    ).fetchone()
                    values = (
                        str(record.org_id),
                        record.integration_type,
                        record.name,
                        config,
                        int(record.enabled),
                        record.monitoring_mode,
                        record.check_interval_s,
                    )
                    if row is None:
                        conn.execute(
                            "INSERT INTO integrations (id, org_id, integration_type, name, "
                            "config, enabled, monitoring_mode, check_interval_s, created_at, "
                            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (str(record.integration_id), *values, now, now),
                        )
                        created += 1
                    elif tuple(row) == values:
                        unchanged += 1
                    else:
                        if row["org_id"] != str(record.org_id):
                            raise StoreError(
                                f"integration {record.integration_id} already belongs to "
                                f"organization {row['org_id']}; it cannot move to "
                                f"{record.org_id}"
                            )
                        conn.execute(
                            "UPDATE integrations SET org_id = ?, integration_type = ?, name = ?, "
                            "config = ?, enabled = ?, monitoring_mode = ?, "
                            "check_interval_s = ?, updated_at = ? WHERE id = ?",
                            (*values, now, str(record.integration_id)),
                        )
                        updated += 1
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return ImportSummary(
                organizations=len(organizations),
                members=len(members),
                created=created,
                updated=updated,
                unchanged=unchanged,
            )

        return await self._call(write)

    async def list_organizations(self) -> list[Organization]:
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT id, name FROM organizations ORDER BY name, id"
            ).fetchall()
        )
        return [Organization(UUID(r["id"]), r["name"]) for r in rows]

    async def get_organization(self, org_id: UUID) -> Organization | None:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT id, name FROM organizations WHERE id = ?", (str(org_id),)
            ).fetchone()
        )
        return Organization(UUID(row["id"]), row["name"]) if row else None

    async def list_members(self, org_id: UUID) -> list[Member]:
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT org_id, user_id, role FROM organization_members WHERE org_id = ? "
                "ORDER BY user_id",
                (str(org_id),),
            ).fetchall()
        )
        return [Member(UUID(r["org_id"]), UUID(r["user_id"]), r["role"]) for r in rows]

    async def list_integrations(self, org_id: UUID | None = None) -> list[IntegrationRecord]:
        query = (
            "SELECT id, org_id, integration_type, name, config, enabled, monitoring_mode, "
            "check_interval_s FROM integrations"
        )
        params: tuple[Any, ...] = ()
        if org_id is not None:
            query += " WHERE org_id = ?"
            params = (str(org_id),)
        query += " ORDER BY name, id"
        rows = await self._call(lambda conn: conn.execute(query, params).fetchall())
        return [_integration(row) for row in rows]

    async def get_integration(self, integration_id: UUID) -> IntegrationRecord | None:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT id, org_id, integration_type, name, config, enabled, monitoring_mode, "
                "check_interval_s FROM integrations WHERE id = ?",
                (str(integration_id),),
            ).fetchone()
        )
        return _integration(row) if row else None

    async def get_integrations(self, ids: Collection[UUID]) -> dict[UUID, IntegrationRecord]:
        wanted = sorted({str(i) for i in ids})
        if not wanted:
            return {}
        query = (
            "SELECT id, org_id, integration_type, name, config, enabled, monitoring_mode, "
            "check_interval_s FROM integrations WHERE id IN (SELECT value FROM json_each(?))"
        )
        rows = await self._call(lambda conn: conn.execute(query, (json.dumps(wanted),)).fetchall())
        return {record.integration_id: record for record in map(_integration, rows)}

    # -- results ----------------------------------------------------------------------------

    async def record_results(self, writes: Sequence[ResultWrite]) -> int:
        if not writes:
            return 0
        now = ts(utcnow())
        rows = [_write_row(w, now) for w in sorted(writes, key=lambda w: w.result.checked_at)]

        def write(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                accepted = [row for row in rows if _complete_slot(conn, row, now)]
                conn.executemany(_UPSERT_STATUS, accepted)
                conn.executemany(_INSERT_HISTORY, accepted)
                conn.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK")
                if "FOREIGN KEY" in str(exc):
                    raise StoreError(
                        "a result belongs to an integration that is not stored; import the "
                        "integration before recording its results"
                    ) from None
                raise
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return len(accepted)

        return await self._call(write)

    async def list_events(
        self,
        org_id: UUID,
        *,
        integration_id: UUID | None = None,
        limit: int = 100,
    ) -> list[HealthEvent]:
        query = (
            "SELECT id, org_id, integration_id, integration_type, from_status, to_status, at, "
            "error_code, error, source FROM integration_health_events WHERE org_id = ?"
        )
        params: list[Any] = [str(org_id)]
        if integration_id is not None:
            query += " AND integration_id = ?"
            params.append(str(integration_id))
        query += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(max(0, limit))
        rows = await self._call(lambda conn: conn.execute(query, params).fetchall())
        return [
            HealthEvent(
                id=row["id"],
                org_id=UUID(row["org_id"]),
                integration_id=UUID(row["integration_id"]),
                integration_type=row["integration_type"],
                from_status=HealthStatus(row["from_status"]) if row["from_status"] else None,
                to_status=HealthStatus(row["to_status"]),
                at=_required_ts(row["at"]),
                error_code=ErrorCode(row["error_code"]) if row["error_code"] else None,
                error=row["error"],
                source=row["source"],
            )
            for row in rows
        ]

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
        status_columns = ", ".join(f"s.{c} AS s_{c}" for c in _STATUS_COLUMN_NAMES)
        excluded = sorted(set(exclude_types))
        not_in = (
            f"AND i.integration_type NOT IN ({', '.join('?' * len(excluded))})" if excluded else ""
        )
        # A check whose current slot holds a live claim (not done, claimed at or after
        # ``claimed_since``) is left out: a primary-key lookup per due row.
        not_claimed = (
            "AND NOT EXISTS (SELECT 1 FROM integration_check_runs r "
            "WHERE r.integration_id = i.id AND r.slot_at = COALESCE(s.next_check_at, ?) "
            "AND r.state = 'claimed' AND r.claimed_at >= ? AND r.worker IS NOT ?)"
            if claimed_since is not None
            else ""
        )
        query = f"""
            SELECT i.id, i.org_id, i.integration_type, i.name, i.config, i.enabled,
                   i.monitoring_mode, i.check_interval_s,
                   s.integration_id AS s_integration_id, {status_columns}
            FROM integrations i
            LEFT JOIN integration_health_status s ON s.integration_id = i.id
            WHERE i.enabled = 1 AND i.monitoring_mode = 'active'
              AND (s.integration_id IS NULL OR s.next_check_at <= ?
                   OR (s.next_check_at IS NULL AND s.checked_at <= ?))
              {not_in}
              {not_claimed}
            ORDER BY COALESCE(s.next_check_at, ''), i.id
            LIMIT ?
        """
        claimed = (
            (ts(INITIAL_SLOT), ts(claimed_since), claimed_by_me)
            if claimed_since is not None
            else ()
        )
        params = (ts(at), ts(at - UNSCHEDULED_FLOOR), *excluded, *claimed, limit)
        rows = await self._call(lambda conn: conn.execute(query, params).fetchall())
        due = []
        for row in rows:
            status = None
            if row["s_integration_id"] is not None:
                status = _status({c: row[f"s_{c}"] for c in _STATUS_COLUMN_NAMES})
            due.append(DueCheck(_integration(row), status))
        return due

    async def claim_slots(
        self,
        claims: Sequence[SlotClaim],
        *,
        worker: str,
        at: datetime,
        lease_s: float,
        budgets: Mapping[str, int] | None = None,
    ) -> list[SlotClaim]:
        if not claims:
            return []
        claimed_at = ts(at)
        cutoff = ts(at - timedelta(seconds=lease_s))

        def claim(conn: sqlite3.Connection) -> list[SlotClaim]:
            got = []
            # The write lock first: the budget's count and the claims are then one step for
            # every process on the database file.
            conn.execute("BEGIN IMMEDIATE")
            try:
                allowed = claims
                if budgets:
                    spent = _count_claims(conn, budgets, since=at - BUDGET_WINDOW)
                    allowed = within_budgets(claims, budgets, spent)
                for item in allowed:
                    row = conn.execute(
                        "INSERT INTO integration_check_runs (integration_id, slot_at, org_id, "
                        "state, worker, claimed_at, integration_type) "
                        "VALUES (?, ?, ?, 'claimed', ?, ?, ?) "
                        "ON CONFLICT (integration_id, slot_at) DO UPDATE SET "
                        "worker = excluded.worker, claimed_at = excluded.claimed_at, "
                        "integration_type = coalesce(excluded.integration_type, "
                        "integration_check_runs.integration_type) "
                        "WHERE integration_check_runs.state = 'claimed' "
                        "AND (integration_check_runs.claimed_at < ? "
                        "OR integration_check_runs.worker = excluded.worker) "
                        "RETURNING worker",
                        (
                            str(item.integration_id),
                            ts(item.slot_at),
                            str(item.org_id),
                            worker,
                            claimed_at,
                            item.integration_type,
                            cutoff,
                        ),
                    ).fetchone()
                    if row is not None and row["worker"] == worker:
                        got.append(item)
                conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                raise StoreError("a slot belongs to an integration that is not stored") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return got

        return await self._call(claim)

    async def count_claims(
        self, integration_types: Collection[str], *, since: datetime
    ) -> dict[str, int]:
        if not integration_types:
            return {}
        return await self._call(lambda conn: _count_claims(conn, integration_types, since=since))

    async def prune_runs(self, before: datetime, *, limit: int = 10_000) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM integration_check_runs WHERE rowid IN (SELECT rowid FROM "
                "integration_check_runs WHERE claimed_at < ? LIMIT ?)",
                (ts(before), limit),
            )
            return cursor.rowcount

        return await self._call(prune)

    async def set_type_mode(self, mode: TypeMode | None, *, integration_type: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if mode is None:
                conn.execute(
                    "DELETE FROM integration_type_modes WHERE integration_type = ?",
                    (integration_type,),
                )
            else:
                conn.execute(
                    "INSERT INTO integration_type_modes (integration_type, passive_until, "
                    "reason, switched_at) VALUES (?, ?, ?, ?) ON CONFLICT (integration_type) "
                    "DO UPDATE SET passive_until = excluded.passive_until, "
                    "reason = excluded.reason, switched_at = excluded.switched_at",
                    (integration_type, ts(mode.passive_until), mode.reason, ts(mode.switched_at)),
                )

        await self._call(write)

    async def list_type_modes(self) -> list[TypeMode]:
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT integration_type, passive_until, reason, switched_at "
                "FROM integration_type_modes ORDER BY integration_type"
            ).fetchall()
        )
        return [
            TypeMode(
                integration_type=row["integration_type"],
                passive_until=_required_ts(row["passive_until"]),
                reason=row["reason"],
                switched_at=_required_ts(row["switched_at"]),
            )
            for row in rows
        ]

    async def count_results(
        self, integration_type: str, error_code: ErrorCode, *, since: datetime
    ) -> int:
        row = await self._call(
            lambda conn: conn.execute(
                "SELECT count(*) FROM integration_health_history h "
                "JOIN integrations i ON i.id = h.integration_id "
                "WHERE i.integration_type = ? AND h.error_code = ? AND h.checked_at >= ?",
                (integration_type, error_code.value, ts(since)),
            ).fetchone()
        )
        return int(row[0])

    async def list_statuses(self, org_id: UUID | None = None) -> list[StatusRecord]:
        query = f"SELECT {_STATUS_COLUMNS} FROM integration_health_status"
        params: tuple[Any, ...] = ()
        if org_id is not None:
            query += " WHERE org_id = ?"
            params = (str(org_id),)
        query += " ORDER BY integration_id"
        rows = await self._call(lambda conn: conn.execute(query, params).fetchall())
        return [_status(row) for row in rows]

    async def list_health_rows(self, org_id: UUID) -> list[HealthRow]:
        def read(conn: sqlite3.Connection) -> list[HealthRow]:
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples: no sqlite3.Row per row
            rows = cursor.execute(_LIST_HEALTH_ROWS, (str(org_id),)).fetchall()
            return [
                HealthRow(
                    i,
                    name,
                    kind,
                    bool(enabled),
                    mode,
                    interval,
                    status,
                    latency,
                    _iso_text(checked),
                    _iso_text(next_at),
                    error,
                    code,
                    failures,
                    _iso_text(healthy_at),
                    source,
                )
                for (
                    i,
                    name,
                    kind,
                    enabled,
                    mode,
                    interval,
                    status,
                    latency,
                    checked,
                    next_at,
                    error,
                    code,
                    failures,
                    healthy_at,
                    source,
                ) in rows
            ]

        return await self._call(read)

    async def list_history(
        self, integration_id: UUID, *, limit: int = HISTORY_LIMIT
    ) -> list[HistoryRecord]:
        if limit < 1:
            return []
        rows = await self._call(
            lambda conn: conn.execute(
                "SELECT id, org_id, integration_id, status, latency_ms, checked_at, error, "
                "error_code FROM integration_health_history WHERE integration_id = ? "
                "ORDER BY checked_at DESC, id DESC LIMIT ?",
                (str(integration_id), limit),
            ).fetchall()
        )
        return [
            HistoryRecord(
                id=row["id"],
                org_id=UUID(row["org_id"]),
                integration_id=UUID(row["integration_id"]),
                status=HealthStatus(row["status"]),
                latency_ms=row["latency_ms"],
                checked_at=_required_ts(row["checked_at"]),
                error=row["error"],
                error_code=ErrorCode(row["error_code"]) if row["error_code"] else None,
            )
            for row in rows
        ]


_LIST_HEALTH_ROWS = """
SELECT i.id, i.name, i.integration_type, i.enabled, i.monitoring_mode, i.check_interval_s,
       s.status, s.latency_ms, s.checked_at, s.next_check_at, s.error, s.error_code,
       s.consecutive_failures, s.last_healthy_at, s.source
FROM integrations i
LEFT JOIN integration_health_status s ON s.integration_id = i.id AND s.org_id = i.org_id
WHERE i.org_id = ?
ORDER BY i.name, i.id
"""

_WHOLE_SECOND = ".000000+00:00"


def _iso_text(value: str | None) -> str | None:
    """Stored timestamp text (:func:`ts`) as ``datetime.isoformat()`` writes it, which leaves
    out a zero fraction of a second."""
    if value is None:
        return None
    if len(value) == 32 and value[19] == ".":  # our own format: no parsing needed
        return value[:19] + "+00:00" if value.endswith(_WHOLE_SECOND) else value
    parsed = parse_ts(value)
    return parsed.astimezone(UTC).isoformat() if parsed is not None else None


def _write_row(w: ResultWrite, now: str | None) -> dict[str, Any]:
    return {
        "integration_id": str(w.integration_id),
        "org_id": str(w.org_id),
        "integration_type": w.integration_type,
        "status": w.result.status.value,
        "latency_ms": w.result.latency_ms,
        "checked_at": ts(w.result.checked_at),
        "error": w.result.error,
        "error_code": w.result.error_code.value if w.result.error_code else None,
        "next_check_at": ts(w.next_check_at),
        "details": json.dumps(w.result.details, default=str),
        "source": w.source,
        "updated_at": now,
        "slot_at": ts(w.slot_at),
        "worker": w.worker,
        "drift_ms": w.drift_ms,
    }


def _complete_slot(conn: sqlite3.Connection, row: dict[str, Any], now: str | None) -> bool:
    """Mark the row's slot done if its worker holds the claim; True if the row may be written."""
    if row["slot_at"] is None:
        return True
    cursor = conn.execute(
        "UPDATE integration_check_runs SET state = 'done', finished_at = ?, drift_ms = ? "
        "WHERE integration_id = ? AND slot_at = ? AND state = 'claimed' AND worker = ?",
        (now, row["drift_ms"], row["integration_id"], row["slot_at"], row["worker"]),
    )
    return cursor.rowcount == 1


def _required_ts(value: str) -> datetime:
    parsed = parse_ts(value)
    assert parsed is not None
    return parsed


def _integration(row: sqlite3.Row) -> IntegrationRecord:
    return IntegrationRecord(
        integration_id=UUID(row["id"]),
        org_id=UUID(row["org_id"]),
        integration_type=row["integration_type"],
        name=row["name"],
        config=json.loads(row["config"]),
        enabled=bool(row["enabled"]),
        monitoring_mode=row["monitoring_mode"],
        check_interval_s=row["check_interval_s"],
    )


def _status(row: sqlite3.Row | dict[str, Any]) -> StatusRecord:
    return StatusRecord(
        org_id=UUID(row["org_id"]),
        integration_id=UUID(row["integration_id"]),
        integration_type=row["integration_type"],
        status=HealthStatus(row["status"]),
        latency_ms=row["latency_ms"],
        checked_at=_required_ts(row["checked_at"]),
        error=row["error"],
        error_code=ErrorCode(row["error_code"]) if row["error_code"] else None,
        consecutive_failures=row["consecutive_failures"],
        last_healthy_at=parse_ts(row["last_healthy_at"]),
        next_check_at=parse_ts(row["next_check_at"]),
        details=json.loads(row["details"]),
        source=row["source"],
    )


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements; ``BEGIN … END;`` trigger bodies stay whole."""
    statements: list[str] = []
    current: list[str] = []
    depth = 0
    for line in script.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("--")):
            continue
        current.append(line)
        upper = stripped.upper()
        if upper == "BEGIN" or upper.endswith(" BEGIN"):
            depth += 1
        if upper.startswith("END;") or upper == "END":
            depth -= 1
        if stripped.endswith(";") and depth == 0:
            text = "\n".join(current).strip()
            if sqlite3.complete_statement(text):
                statements.append(text)
                current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def _count_claims(
    conn: sqlite3.Connection, integration_types: Collection[str], *, since: datetime
) -> dict[str, int]:
    """:meth:`SQLiteStore.count_claims` on ``conn`` (inside a transaction or not)."""
    kinds = sorted(set(integration_types))
    if not kinds:
        return {}
    marks = ", ".join("?" * len(kinds))
    rows = conn.execute(
        "SELECT integration_type, count(*) FROM integration_check_runs "
        f"WHERE integration_type IN ({marks}) AND claimed_at > ? "
        "GROUP BY integration_type",
        (*kinds, ts(since)),
    ).fetchall()
    return {row[0]: int(row[1]) for row in rows}
