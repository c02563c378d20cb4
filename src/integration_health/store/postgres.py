"""The production store: PostgreSQL or Supabase, with row-level security per organisation.

The schema comes from ``supabase/migrations/`` (shipped in the package as
``store/sql/postgres/migrations/``); :meth:`PostgresStore.upgrade` applies what is pending,
after ``store/sql/postgres/bootstrap.sql`` where the database is plain PostgreSQL (no ``auth``
schema). The store connects as the tables' owner (or ``service_role``), so it sees every
organisation; :meth:`PostgresStore.as_user` runs reads as role ``authenticated`` with a
user's JWT claims, exactly as PostgREST does, so RLS decides what that user sees.

Writes of one :meth:`~PostgresStore.record_results` call are one SQL statement (arrays →
``unnest``): the status upsert and the history insert travel in one round trip. Connection
failures are retried a few times (``stamina``); anything else is translated to a
:class:`~integration_health.errors.StoreError` at one boundary, :func:`_translate`.

Restarts of the server: the first connection failure makes the pool test its idle connections
(:meth:`AsyncConnectionPool.check`) and drop the dead ones, so the retry gets a new connection
instead of the next stale one; the pool's reconnection attempts give up after ``timeout``
seconds (instead of psycopg_pool's 5 minutes, whose backoff would let a recovered server wait
minutes), and the next request starts a fresh attempt at once. Nothing is checked on the
happy path (no ``check=`` round trip per checkout).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

import orjson
import psycopg
import pydantic_core
import stamina
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..checks import IntegrationRecord
from ..errors import SchemaError, StoreError, StoreUnavailable
from ..model import ErrorCode, HealthStatus
from . import mask_url
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

__all__ = ["PostgresStore", "UserReader", "migrations"]

T = TypeVar("T")

_log = logging.getLogger(__name__)


class _OutageNoise(logging.Filter):
    """Drops the per-attempt warnings psycopg_pool and stamina log while the server is down
    (a dozen lines per outage, each reconnect attempt and retry): the store raises
    :class:`StoreUnavailable` and its users report the outage once. Kept at debug level
    (``INTEGRATION_HEALTH_LOG_LEVEL=debug``)."""

    _NOISE: Final = (
        "error connecting in",
        "discarding closed connection",
        "discarding broken connection",
        "reconnection attempt in pool",
        "stamina.retry_scheduled",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("integration_health").isEnabledFor(logging.DEBUG):
            return True
        message = record.msg if isinstance(record.msg, str) else ""
        return not message.startswith(self._NOISE)


_OUTAGE_NOISE: Final = _OutageNoise()


def _quiet_outage_noise() -> None:
    for name in ("psycopg.pool", "stamina"):
        logger = logging.getLogger(name)
        if _OUTAGE_NOISE not in logger.filters:
            logger.addFilter(_OUTAGE_NOISE)


Row = dict[str, Any]

_MIGRATION_LOCK: Final = 7_242_503_919_014_615_041
"""``pg_advisory_xact_lock`` key held while upgrading (one upgrade at a time per database)."""

_SUPAVISOR_TRANSACTION_PORT: Final = 6543

_PING_WAIT_S: Final = 1.5
"""How long :meth:`PostgresStore.ping` waits for a pooled connection before asking the server
directly why there is none (``/healthz`` gives the ping 3 s)."""

_VALUE: Final[dict[Any, str | None]] = {
    None: None,
    **{member: member.value for member in HealthStatus},
    **{member: member.value for member in ErrorCode},
}
"""Enum member → its text (a dict lookup is several times cheaper than ``.value``)."""

_JSON: Final = json.JSONEncoder(default=str, separators=(",", ":"))
"""One encoder for every ``details`` dict (``json.dumps(default=…)`` builds one per call)."""

_ORJSON_AS_JSON: Final = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
"""What :data:`_JSON` writes with ``str()``, orjson hands to ``default=str`` too."""


def _json_loads(data: bytes | str) -> Any:
    """``json`` and ``jsonb`` columns as Python values: pydantic-core's parser, ~5× faster than
    ``json.loads`` on a stored config (a planning pass reads one per due check) and giving
    the same values — integers of any size, unlike orjson's, which turns those beyond 64 bits
    into floats; ``json.loads`` for what it refuses (nothing PostgreSQL stores in ``jsonb``:
    it rejects lone surrogates, the one known difference)."""
    try:
        return pydantic_core.from_json(data, cache_strings="keys")
    except ValueError:
        return json.loads(data)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Set up each pooled connection: JSON read with :func:`_json_loads`."""
    set_json_loads(_json_loads, conn)


def _details_json(details: Mapping[str, Any]) -> str:
    """``details`` as compact JSON text: orjson (~8× faster than :data:`_JSON` on a check's
    few keys), and :data:`_JSON` for what orjson refuses (keys other than strings, integers
    beyond 64 bits, lone surrogates). Values that are not JSON become ``str(value)`` either
    way; NaN and infinities become null (PostgreSQL refuses them in ``jsonb``)."""
    try:
        return orjson.dumps(details, default=str, option=_ORJSON_AS_JSON).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return _JSON.encode(details)


def migrations() -> list[tuple[str, str]]:
    """The packaged migrations as ``(name, sql)``, oldest first (name = file name sans .sql)."""
    folder = (
        resources.files("integration_health.store.sql").joinpath("postgres").joinpath("migrations")
    )
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return [(name.removesuffix(".sql"), text) for name, text in files]


def _bootstrap_sql() -> str:
    folder = resources.files("integration_health.store.sql").joinpath("postgres")
    return folder.joinpath("bootstrap.sql").read_text(encoding="utf-8")


# -- errors ----------------------------------------------------------------------------------


def _is_transient(exc: BaseException) -> bool:
    """Retry only connection failures: the server went away or refused to start a session.

    A pool that cannot hand out a connection in time has already waited; errors the server
    reports about the statement itself (constraints, permissions, cancellations) never go
    away by retrying.
    """
    if isinstance(exc, PoolTimeout) or not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in {"57P01", "57P02", "57P03"}


def _message(exc: BaseException, password: str | None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        text = exc.diag.message_primary
    if password:
        text = text.replace(password, "***")
    return text


def _translate(exc: psycopg.Error, url: str, password: str | None) -> StoreError:
    """The one place where psycopg's exceptions become the store's."""
    message = _message(exc, password)
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.InvalidSchemaName):
        return SchemaError(
            f"the database schema at {url} is missing or older than this version ({message}): "
            "run `integration-health db upgrade`"
        )
    if isinstance(exc, pg_errors.UndefinedColumn | pg_errors.UndefinedFunction):
        return SchemaError(
            f"the database schema at {url} is older than this version ({message}): "
            "run `integration-health db upgrade`"
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return StoreError(f"PostgreSQL refused: {message}")
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailable(f"PostgreSQL at {url} is unavailable: {message}")
    return StoreError(f"PostgreSQL refused the operation: {message}")


# -- URL -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    conninfo: str
    password: str | None
    prepare_threshold: int | None


def _parse_url(url: str, *, application_name: str = "integration-health") -> _Target:
    """Split our own option (``prepare_threshold``) off a libpq URL.

    Prepared statements are disabled behind a transaction-mode pooler (Supavisor listens on
    port 6543), or when the URL says ``?prepare_threshold=none``. ``application_name`` is
    added unless the URL names one (alerting's pool uses its own).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise StoreError(f"invalid PostgreSQL URL {mask_url(url)!r}: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(f"not a PostgreSQL URL: {mask_url(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    threshold: int | None = 5  # psycopg's default
    if port == _SUPAVISOR_TRANSACTION_PORT:
        threshold = None
    kept = []
    for key, value in query:
        if key != "prepare_threshold":
            kept.append((key, value))
        elif value.lower() in ("", "none", "off", "false"):
            threshold = None
        elif value.isdigit():
            threshold = int(value)
        else:
            raise StoreError(f"invalid prepare_threshold {value!r}: use a number or 'none'")
    if not any(key == "application_name" for key, _ in kept):
        kept.append(("application_name", application_name))
    conninfo = urlunsplit(parts._replace(query=urlencode(kept)))
    return _Target(conninfo, parts.password or None, threshold)


# -- SQL -------------------------------------------------------------------------------------

_STATUS_COLUMNS = (
    "org_id, integration_id, integration_type, status, latency_ms, checked_at, error, "
    "error_code, consecutive_failures, last_healthy_at, next_check_at, details, source"
)
_STATUS_COLUMN_NAMES = [c.strip() for c in _STATUS_COLUMNS.split(",")]
_HISTORY_COLUMNS = "id, org_id, integration_id, status, latency_ms, checked_at, error, error_code"
_INTEGRATION_COLUMNS = (
    "id, org_id, integration_type, name, config, enabled, monitoring_mode, check_interval_s"
)

# Mark done the slots (``{ids}``: the integrations' array, with c_slot_at, c_worker,
# c_drift_ms) whose claim the writer still holds; returns their integration_id{returning}.
_COMPLETE = """
update public.integration_check_runs as run
set state = 'done', finished_at = now(), drift_ms = c.drift_ms
from unnest(
    %({ids})b::uuid[], %(c_slot_at)b::timestamptz[], %(c_worker)b::text[],
    %(c_drift_ms)b::int[]
) as c(integration_id, slot_at, worker, drift_ms)
where run.integration_id = c.integration_id
  and run.slot_at = c.slot_at
  and run.state = 'claimed'
  and run.worker = c.worker
returning run.integration_id{returning}
"""

# The status columns of a batch, one array each (see _batch_params).
_STATUS_UNNEST = """unnest(
        %(s_integration_id)b::uuid[], %(s_org_id)b::uuid[], %(s_integration_type)b::text[],
        %(s_status)b::text[], %(s_latency_ms)b::int[], %(s_checked_at)b::timestamptz[],
        %(s_error)b::text[], %(s_error_code)b::text[], %(s_failures)b::int[],
        %(s_healthy_at)b::timestamptz[], %(s_next_check_at)b::timestamptz[],
        %(s_details)b::jsonb[], %(s_source)b::text[]
    )"""

# The status upsert of one result per integration, from ``{rows}`` (the status columns in
# order), as a CTE.
_UPSERT_STATUS = """upserted as (
    insert into public.integration_health_status as current (
        integration_id, org_id, integration_type, status, latency_ms, checked_at, error,
        error_code, consecutive_failures, last_healthy_at, next_check_at, details, source,
        updated_at
    )
    select s.*, now()
    from {rows}
    on conflict (integration_id) do update set
        integration_type = excluded.integration_type,
        status = excluded.status,
        latency_ms = excluded.latency_ms,
        checked_at = excluded.checked_at,
        error = excluded.error,
        error_code = excluded.error_code,
        consecutive_failures = case
            when excluded.status <> 'unreachable' then 0
            when excluded.integration_id = any (%(broken)b::uuid[])
                then excluded.consecutive_failures
            else current.consecutive_failures + excluded.consecutive_failures
        end,
        last_healthy_at = coalesce(excluded.last_healthy_at, current.last_healthy_at),
        next_check_at = case
            when excluded.source = 'passive'
                then greatest(excluded.next_check_at, current.next_check_at)
            else coalesce(excluded.next_check_at, current.next_check_at)
        end,
        details = excluded.details,
        source = excluded.source,
        updated_at = excluded.updated_at
    where current.checked_at <= excluded.checked_at
    returning 1
)"""

_INSERT_HISTORY = """insert into public.integration_health_history (
    org_id, integration_id, status, latency_ms, checked_at, error, error_code
)"""

# One statement, one round trip: upsert the newest result per integration, then append every
# result to the history. The history insert waits for the upsert (its WHERE reads the CTE), so
# each writer locks the status rows first, in integration_id order: writers of the same
# integration queue on that row lock, and two batches cannot deadlock.
#
# consecutive_failures: the batch's trailing run of unreachable results (computed in Python
# from the batch), plus the stored count when the whole batch was unreachable — added under
# the row lock, so concurrent writers never lose a failure. Integrations whose run inside the
# batch was interrupted by a success are listed in `broken` (empty in the usual batch of one
# result per integration).
_RECORD_RESULTS = f"""
with {_UPSERT_STATUS.format(rows=_STATUS_UNNEST + " as s")}
{_INSERT_HISTORY}
select h.*
from unnest(
    %(h_org_id)b::uuid[], %(h_integration_id)b::uuid[], %(h_status)b::text[],
    %(h_latency_ms)b::int[], %(h_checked_at)b::timestamptz[], %(h_error)b::text[],
    %(h_error_code)b::text[]
) as h
where (select count(*) from upserted) >= 0
"""

# The usual batch holds one result per integration: then its history rows are its status rows,
# and the history insert reads the status arrays (a placeholder used twice is sent once) —
# 7 arrays fewer to build and send per batch.
_RECORD_RESULTS_ONE_EACH = _RECORD_RESULTS.replace("%(h_", "%(s_")

# The usual batch of the scheduler and the workers: one result per integration, each for a
# slot. One statement (one round trip, in autocommit) completes the slots whose claim the
# writer still holds and writes only their results — what a transaction of _COMPLETE_SLOTS and
# _RECORD_RESULTS_ONE_EACH does in four round trips (BEGIN, two statements, COMMIT). As there,
# the slot rows are locked first, then the status rows. The history rows inserted are the
# results written.
_RECORD_SLOTTED = f"""
with done as ({_COMPLETE.format(ids="s_integration_id", returning="")}),
accepted as materialized (
    select s.*
    from {_STATUS_UNNEST} as s(
        integration_id, org_id, integration_type, status, latency_ms, checked_at, error,
        error_code, consecutive_failures, last_healthy_at, next_check_at, details, source
    )
    where s.integration_id in (select integration_id from done)
),
{_UPSERT_STATUS.format(rows="accepted as s")}
{_INSERT_HISTORY}
select s.org_id, s.integration_id, s.status, s.latency_ms, s.checked_at, s.error, s.error_code
from accepted as s
where (select count(*) from upserted) >= 0
"""


# A slot is claimed when free, renewed by its holder, or taken over when its claim is older
# than the lease (its worker died); a slot already done is never claimed again. RETURNING
# lists what we got.
_CLAIM_SLOTS = """
insert into public.integration_check_runs as run (
    integration_id, slot_at, org_id, state, worker, claimed_at, integration_type
)
select c.integration_id, c.slot_at, c.org_id, 'claimed', %(worker)b, %(at)b, c.integration_type
from unnest(%(integration_id)b::uuid[], %(slot_at)b::timestamptz[], %(org_id)b::uuid[],
            %(integration_type)b::text[])
    as c(integration_id, slot_at, org_id, integration_type)
on conflict (integration_id, slot_at) do update set
    worker = excluded.worker,
    claimed_at = excluded.claimed_at,
    integration_type = coalesce(excluded.integration_type, run.integration_type)
where run.state = 'claimed'
  and (run.claimed_at < %(cutoff)b or run.worker = excluded.worker)
returning run.integration_id, run.slot_at
"""

# Serialise the budget's count-and-claim per integration type across every connection: a
# transaction-scoped advisory lock per type (key: our namespace, the type's hash; a collision
# only serialises two types more than needed), taken in name order so two callers never wait
# on each other crosswise.
_LOCK_BUDGETS = """
select pg_advisory_xact_lock(1229472840, hashtext(t))
from unnest(%(types)s::text[]) as t
order by t
"""

# Complete the slots whose worker still holds the claim (row-locked: one completion wins).
_COMPLETE_SLOTS = _COMPLETE.format(ids="c_integration_id", returning=", run.slot_at, run.worker")


_STATUS_PARAMS = (
    "s_integration_id",
    "s_org_id",
    "s_integration_type",
    "s_status",
    "s_latency_ms",
    "s_checked_at",
    "s_error",
    "s_error_code",
    "s_failures",
    "s_healthy_at",
    "s_next_check_at",
    "s_details",
    "s_source",
)
_HISTORY_PARAMS = (
    "h_org_id",
    "h_integration_id",
    "h_status",
    "h_latency_ms",
    "h_checked_at",
    "h_error",
    "h_error_code",
)


def _batch_params(
    writes: Sequence[ResultWrite], *, slotted: bool = False
) -> tuple[str, dict[str, Any]]:
    """The statement and its column arrays: :data:`_RECORD_RESULTS` with every result for
    the history, the newest per integration for the status (ties: the later in the batch
    wins, as if applied in order), both sorted by integration_id so lock order is the same for
    every writer; :data:`_RECORD_RESULTS_ONE_EACH` when no integration has two results, or,
    when every write has a slot (``slotted``), :data:`_RECORD_SLOTTED`."""
    if len({w.integration_id.int for w in writes}) == len(writes):
        return _one_each_params(writes, slotted=slotted)
    # uuid.bytes order is PostgreSQL's uuid order, and compares in C.
    ordered = [
        w
        for _, _, _, w in sorted(
            (w.integration_id.bytes, w.result.checked_at, i, w) for i, w in enumerate(writes)
        )
    ]
    history: list[tuple[Any, ...]] = []
    status: list[tuple[Any, ...]] = []
    broken: list[UUID] = []
    unreachable, healthy = HealthStatus.UNREACHABLE, HealthStatus.HEALTHY
    start, count = 0, len(ordered)
    while start < count:
        key = ordered[start].integration_id
        end = start + 1
        while end < count and ordered[end].integration_id == key:
            end += 1
        group = ordered[start:end]
        for w in group:
            r = w.result
            history.append(
                (
                    w.org_id,
                    key,
                    _VALUE[r.status],
                    r.latency_ms,
                    r.checked_at,
                    r.error,
                    _VALUE[r.error_code],
                )
            )
        newest = group[-1]
        r = newest.result
        run = 0  # the trailing run of unreachable results
        for w in reversed(group):
            if w.result.status is not unreachable:
                break
            run += 1
        if 0 < run < len(group):
            broken.append(key)
        healthy_at = (
            max((w.result.checked_at for w in group if w.result.status is healthy), default=None)
            if len(group) > 1
            else (r.checked_at if r.status is healthy else None)
        )
        status.append(
            (
                key,
                newest.org_id,
                newest.integration_type,
                _VALUE[r.status],
                r.latency_ms,
                r.checked_at,
                r.error,
                _VALUE[r.error_code],
                run,
                healthy_at,
                newest.next_check_at,
                _details_json(r.details),
                newest.source,
            )
        )
        start = end
    params: dict[str, Any] = dict(
        zip(_STATUS_PARAMS, map(list, zip(*status, strict=True)), strict=True)
    )
    params["broken"] = broken
    if len(history) == len(status):
        if slotted:  # one write per integration: the status rows' order is the writes'
            params["c_slot_at"] = [w.slot_at for w in ordered]
            params["c_worker"] = [w.worker for w in ordered]
            params["c_drift_ms"] = [w.drift_ms for w in ordered]
            return _RECORD_SLOTTED, params
        return _RECORD_RESULTS_ONE_EACH, params
    params.update(zip(_HISTORY_PARAMS, map(list, zip(*history, strict=True)), strict=True))
    return _RECORD_RESULTS, params


def _by_id(write: ResultWrite) -> int:
    return write.integration_id.int  # uuid.int order is PostgreSQL's uuid order (bytewise)


def _one_each_params(writes: Sequence[ResultWrite], *, slotted: bool) -> tuple[str, dict[str, Any]]:
    """:func:`_batch_params` for the usual batch, one result per integration: each result is
    its integration's status row and its history row, so no grouping, no history arrays."""
    ordered = sorted(writes, key=_by_id)
    unreachable, healthy = HealthStatus.UNREACHABLE, HealthStatus.HEALTHY
    status = [
        (
            w.integration_id,
            w.org_id,
            w.integration_type,
            _VALUE[(r := w.result).status],
            r.latency_ms,
            r.checked_at,
            r.error,
            _VALUE[r.error_code],
            1 if r.status is unreachable else 0,
            r.checked_at if r.status is healthy else None,
            w.next_check_at,
            _details_json(r.details),
            w.source,
        )
        for w in ordered
    ]
    params: dict[str, Any] = dict(
        zip(_STATUS_PARAMS, map(list, zip(*status, strict=True)), strict=True)
    )
    params["broken"] = []
    if not slotted:
        return _RECORD_RESULTS_ONE_EACH, params
    params["c_slot_at"] = [w.slot_at for w in ordered]
    params["c_worker"] = [w.worker for w in ordered]
    params["c_drift_ms"] = [w.drift_ms for w in ordered]
    return _RECORD_SLOTTED, params


# -- rows → records --------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _integration(row: Row) -> IntegrationRecord:
    return IntegrationRecord(
        integration_id=row["id"],
        org_id=row["org_id"],
        integration_type=row["integration_type"],
        name=row["name"],
        config=row["config"],
        enabled=row["enabled"],
        monitoring_mode=row["monitoring_mode"],
        check_interval_s=row["check_interval_s"],
    )


def _status(row: Row) -> StatusRecord:
    return StatusRecord(
        org_id=row["org_id"],
        integration_id=row["integration_id"],
        integration_type=row["integration_type"],
        status=HealthStatus(row["status"]),
        latency_ms=row["latency_ms"],
        checked_at=_utc(row["checked_at"]),
        error=row["error"],
        error_code=ErrorCode(row["error_code"]) if row["error_code"] else None,
        consecutive_failures=row["consecutive_failures"],
        last_healthy_at=_utc_or_none(row["last_healthy_at"]),
        next_check_at=_utc_or_none(row["next_check_at"]),
        details=row["details"],
        source=row["source"],
    )


def _due_check(row: tuple[Any, ...]) -> DueCheck:
    """A row of :meth:`PostgresStore.list_due`: the integration's columns, then the status
    columns (``_STATUS_COLUMNS``' order; all null when it was never checked)."""
    (
        integration_id,
        org_id,
        integration_type,
        name,
        config,
        enabled,
        monitoring_mode,
        check_interval_s,
        s_org_id,
        s_integration_id,
        s_integration_type,
        status,
        latency_ms,
        checked_at,
        error,
        error_code,
        consecutive_failures,
        last_healthy_at,
        next_check_at,
        details,
        source,
    ) = row
    record = IntegrationRecord(
        integration_id=integration_id,
        org_id=org_id,
        integration_type=integration_type,
        name=name,
        config=config,
        enabled=enabled,
        monitoring_mode=monitoring_mode,
        check_interval_s=check_interval_s,
    )
    if s_integration_id is None:
        return DueCheck(record, None)
    return DueCheck(
        record,
        StatusRecord(
            org_id=s_org_id,
            integration_id=s_integration_id,
            integration_type=s_integration_type,
            status=HealthStatus(status),
            latency_ms=latency_ms,
            checked_at=_utc(checked_at),
            error=error,
            error_code=ErrorCode(error_code) if error_code else None,
            consecutive_failures=consecutive_failures,
            last_healthy_at=_utc_or_none(last_healthy_at),
            next_check_at=_utc_or_none(next_check_at),
            details=details,
            source=source,
        ),
    )


def _history(row: Row) -> HistoryRecord:
    return HistoryRecord(
        id=row["id"],
        org_id=row["org_id"],
        integration_id=row["integration_id"],
        status=HealthStatus(row["status"]),
        latency_ms=row["latency_ms"],
        checked_at=_utc(row["checked_at"]),
        error=row["error"],
        error_code=ErrorCode(row["error_code"]) if row["error_code"] else None,
    )


# Reads shared by the store (owner: sees everything) and UserReader (RLS decides).
_LIST_ORGANIZATIONS = "select id, name from public.organizations order by name, id"
_LIST_INTEGRATIONS = f"select {_INTEGRATION_COLUMNS} from public.integrations"
_LIST_STATUSES = f"select {_STATUS_COLUMNS} from public.integration_health_status"
# org_id first: the history index leads with it (it also serves RLS and the pruning).
_LIST_HISTORY = f"""
select {_HISTORY_COLUMNS}
from public.integration_health_history
where org_id = (select i.org_id from public.integrations i where i.id = %(id)s)
  and integration_id = %(id)s
order by checked_at desc, id desc
limit %(limit)s
"""


def _iso_sql(column: str) -> str:
    """SQL for ``column`` (timestamptz) as the text ``datetime.isoformat()`` gives in UTC:
    microseconds only when there are any."""
    utc = f"{column} at time zone 'UTC'"
    return (
        f"case when date_trunc('second', {column}) = {column} "
        f"""then to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"') """
        f"""else to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') end"""
    )


# The health answer's read: one query, only the columns it shows, ids and times as text (no
# UUID or datetime objects, no config or details), ordered like list_integrations. The join
# is on the primary key alone (the (org_id, integration_id) foreign key already ties a status
# to its integration's organisation): with an org_id term too, fresh tables without statistics
# get a nested loop over both organisations' rows (30 ms instead of 4 for 1,000).
_LIST_HEALTH_ROWS = f"""
select i.id::text, i.name, i.integration_type, i.enabled, i.monitoring_mode,
       i.check_interval_s, s.status, s.latency_ms, {_iso_sql("s.checked_at")},
       {_iso_sql("s.next_check_at")}, s.error, s.error_code, s.consecutive_failures,
       {_iso_sql("s.last_healthy_at")}, s.source
from public.integrations i
left join public.integration_health_status s on s.integration_id = i.id
where i.org_id = %s
order by i.name, i.id
"""

_LIST_EVENTS = (
    "select id, org_id, integration_id, integration_type, from_status, to_status, at, "
    "error_code, error, source from public.integration_health_events where org_id = %s"
)


async def _fetch_tuples(
    conn: psycopg.AsyncConnection[Any], query: str, params: Any = None
) -> list[tuple[Any, ...]]:
    """The rows as plain tuples, for reads hot enough that a dict per row shows."""
    cursor = await conn.execute(query, params)
    return await cursor.fetchall()


async def _fetch(conn: psycopg.AsyncConnection[Any], query: str, params: Any = None) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def _list_integrations(
    conn: psycopg.AsyncConnection[Any], org_id: UUID | None
) -> list[IntegrationRecord]:
    if org_id is None:
        rows = await _fetch(conn, _LIST_INTEGRATIONS + " order by name, id")
    else:
        rows = await _fetch(
            conn, _LIST_INTEGRATIONS + " where org_id = %s order by name, id", (org_id,)
        )
    return [_integration(r) for r in rows]


async def _list_statuses(
    conn: psycopg.AsyncConnection[Any], org_id: UUID | None
) -> list[StatusRecord]:
    if org_id is None:
        rows = await _fetch(conn, _LIST_STATUSES + " order by integration_id")
    else:
        rows = await _fetch(
            conn, _LIST_STATUSES + " where org_id = %s order by integration_id", (org_id,)
        )
    return [_status(r) for r in rows]


async def _list_health_rows(conn: psycopg.AsyncConnection[Any], org_id: UUID) -> list[HealthRow]:
    async with conn.cursor() as cur:
        await cur.execute(_LIST_HEALTH_ROWS, (org_id,))
        rows = await cur.fetchall()
    make = HealthRow._make
    return [make(row) for row in rows]


async def _list_events(
    conn: psycopg.AsyncConnection[Any], org_id: UUID, integration_id: UUID | None, limit: int
) -> list[HealthEvent]:
    query = _LIST_EVENTS
    params: list[Any] = [org_id]
    if integration_id is not None:
        query += " and integration_id = %s"
        params.append(integration_id)
    query += " order by at desc, id desc limit %s"
    params.append(max(0, limit))
    rows = await _fetch(conn, query, params)
    return [
        HealthEvent(
            id=r["id"],
            org_id=r["org_id"],
            integration_id=r["integration_id"],
            integration_type=r["integration_type"],
            from_status=HealthStatus(r["from_status"]) if r["from_status"] else None,
            to_status=HealthStatus(r["to_status"]),
            at=_utc(r["at"]),
            error_code=ErrorCode(r["error_code"]) if r["error_code"] else None,
            error=r["error"],
            source=r["source"],
        )
        for r in rows
    ]


async def _list_history(
    conn: psycopg.AsyncConnection[Any], integration_id: UUID, limit: int
) -> list[HistoryRecord]:
    if limit < 1:
        return []
    rows = await _fetch(conn, _LIST_HISTORY, {"id": integration_id, "limit": limit})
    return [_history(r) for r in rows]


# -- reads as a user -------------------------------------------------------------------------


class UserReader:
    """Reads inside one transaction running as role ``authenticated`` with a user's claims.

    Nothing here filters by user: row-level security does, so a query for another
    organisation's rows simply returns nothing. Obtain one from :meth:`PostgresStore.as_user`.
    """

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def list_organizations(self) -> list[Organization]:
        """The organisations the user belongs to, by name."""
        rows = await _fetch(self._conn, _LIST_ORGANIZATIONS)
        return [Organization(r["id"], r["name"]) for r in rows]

    async def list_integrations(self, org_id: UUID | None = None) -> list[IntegrationRecord]:
        """Integrations of ``org_id`` (or of every visible organisation), by name."""
        return await _list_integrations(self._conn, org_id)

    async def list_statuses(self, org_id: UUID | None = None) -> list[StatusRecord]:
        """Current statuses of ``org_id`` (or of every visible organisation)."""
        return await _list_statuses(self._conn, org_id)

    async def list_history(
        self, integration_id: UUID, limit: int = HISTORY_LIMIT
    ) -> list[HistoryRecord]:
        """The newest ``limit`` history rows of one integration, if visible; newest first."""
        return await _list_history(self._conn, integration_id, limit)

    async def list_health_rows(self, org_id: UUID) -> list[HealthRow]:
        """Integrations of ``org_id`` with their current status, if visible (the health
        answer's lean read; see :class:`~integration_health.store.base.HealthRow`)."""
        return await _list_health_rows(self._conn, org_id)

    async def list_events(
        self,
        org_id: UUID,
        *,
        integration_id: UUID | None = None,
        limit: int = 100,
    ) -> list[HealthEvent]:
        """Status transitions of ``org_id`` (or of one integration), if visible; newest first."""
        return await _list_events(self._conn, org_id, integration_id, limit)


# -- the store -------------------------------------------------------------------------------


class PostgresStore:
    """Store in PostgreSQL (plain, ≥ 15, or Supabase), through a psycopg connection pool.

    Connect as the owner of the tables (the role that ran ``db upgrade``; ``postgres`` on
    Supabase) or as ``service_role``; both bypass RLS, as a writer for every organisation
    must.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 10.0,
        connect_timeout: int = 5,
        attempts: int = 3,
        reconnect_timeout: float | None = None,
    ) -> None:
        _quiet_outage_noise()
        target = _parse_url(url)
        self.url = mask_url(url)
        self._password = target.password
        self._conninfo = target.conninfo
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": target.prepare_threshold,
            "connect_timeout": connect_timeout,
        }
        self._attempts = attempts
        self._timeout = timeout
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self._conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs=self._connect_kwargs,
            configure=_configure,
            open=False,
            name="integration-health",
            # Give up a backed-off reconnection after `timeout` s: the next request then
            # starts a new attempt at once, so a restarted server is used within seconds.
            reconnect_timeout=timeout if reconnect_timeout is None else reconnect_timeout,
        )
        self._opened = False
        self._checking = False

    @classmethod
    async def open(cls, url: str, **options: Any) -> PostgresStore:
        """Connect (raising :class:`StoreUnavailable` with the server's reason if that fails).

        Unlike the embedded SQLite store, opening never changes the schema: run
        ``integration-health db upgrade`` (or :meth:`upgrade`) for that.
        """
        store = cls(url, **options)
        try:
            probe = await psycopg.AsyncConnection.connect(store._conninfo, **store._connect_kwargs)
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {store.url}: {_message(exc, store._password)}"
            ) from None
        await probe.close()
        try:
            await store._pool.open(wait=True, timeout=store._timeout)
        except PoolTimeout as exc:
            await store._pool.close()
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {store.url}: {_message(exc, store._password)}"
            ) from None
        store._opened = True
        return store

    async def aclose(self) -> None:
        await self._pool.close()

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(
        self,
        fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
        *,
        missing_reference: str | None = None,
        wait: float | None = None,
    ) -> T:
        """Run ``fn`` on a pooled connection; retry connection failures, translate errors.

        ``missing_reference`` is the message for a foreign-key violation; ``wait`` how long to
        wait for a pooled connection (default: the store's ``timeout``).
        """
        if not self._opened:
            raise StoreError("the store is not open: use `await PostgresStore.open(url)`")
        try:
            async for attempt in stamina.retry_context(
                on=_is_transient,
                attempts=self._attempts,
                timeout=self._timeout * self._attempts,
                wait_initial=0.05,
                wait_max=1.0,
            ):
                with attempt:
                    try:
                        async with self._pool.connection(timeout=wait) as conn:
                            return await fn(conn)
                    except psycopg.OperationalError as exc:
                        if _is_transient(exc):
                            await self._drop_dead_connections()
                        raise
        except pg_errors.ForeignKeyViolation as exc:
            if missing_reference is None:
                raise _translate(exc, self.url, self._password) from None
            raise StoreError(missing_reference) from None
        except psycopg.Error as exc:
            raise _translate(exc, self.url, self._password) from None
        raise AssertionError("unreachable: stamina re-raises after the last attempt")

    async def _drop_dead_connections(self) -> None:
        """After a connection failure (server restarted?), test the idle pooled connections
        and drop the dead ones (the pool replaces them), one check at a time."""
        if self._checking:
            return
        self._checking = True
        try:
            await self._pool.check()
        except Exception as exc:  # noqa: BLE001 - best effort: the caller reports its failure
            _log.debug("checking the pooled connections failed: %s", type(exc).__name__)
        finally:
            self._checking = False

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` with the server's reason if it does not answer.

        Waits briefly for a pooled connection; when none comes, connects directly: if that
        fails too the error says why (refused, unknown host, shutting down…); if it works the
        server is reachable and the pool only busy, which is not an outage.
        """
        try:
            await self._run(lambda conn: conn.execute("select 1"), wait=_PING_WAIT_S)
        except StoreUnavailable:
            try:
                probe = await psycopg.AsyncConnection.connect(
                    self._conninfo, **self._connect_kwargs
                )
            except psycopg.Error as exc:
                raise StoreUnavailable(
                    f"PostgreSQL at {self.url} is unavailable: {_message(exc, self._password)}"
                ) from None
            try:
                await probe.execute("select 1")
            except psycopg.Error as exc:
                raise _translate(exc, self.url, self._password) from None
            finally:
                await probe.close()

    async def upgrade(self) -> list[str]:
        """Apply the bootstrap (plain PostgreSQL only) and the pending migrations.

        Everything runs in one transaction holding an advisory lock, so concurrent upgrades
        queue and the second one finds nothing to do. Migrations recorded by the Supabase CLI
        (``supabase_migrations.schema_migrations``) count as applied, and ours are recorded
        there too when that table exists, so both tools can be used on one database.
        """
        pending = migrations()

        async def apply(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            applied: list[str] = []
            async with conn.transaction():
                await conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                if await _scalar(conn, "select to_regnamespace('auth') is null"):
                    await conn.execute(_bootstrap_sql(), prepare=False)
                await conn.execute(
                    "create schema if not exists integration_health;"
                    "revoke all on schema integration_health from public;"
                    "create table if not exists integration_health.schema_migrations ("
                    " version text primary key,"
                    " applied_at timestamptz not null default now())",
                    prepare=False,
                )
                done, unknown, supabase_cli = await _applied(conn, [n for n, _ in pending])
                if unknown:
                    raise SchemaError(
                        f"the database at {self.url} has migrations this version does not know "
                        f"({', '.join(unknown)}): upgrade integration-health"
                    )
                for name, sql in pending:
                    if name in done:
                        continue
                    await conn.execute(sql, prepare=False)
                    await conn.execute(
                        "insert into integration_health.schema_migrations (version) values (%s)",
                        (name,),
                    )
                    if supabase_cli:
                        version, _, label = name.partition("_")
                        await conn.execute(
                            "insert into supabase_migrations.schema_migrations (version, name) "
                            "values (%s, %s) on conflict do nothing",
                            (version, label),
                        )
                    applied.append(name)
            return applied

        return await self._run(apply)

    async def pending_migrations(self) -> list[str]:
        """The packaged migrations this database has not applied yet, oldest first (all of
        them where the schema was never created)."""
        return await self._pending([name for name, _ in migrations()])

    async def _pending(self, names: list[str]) -> list[str]:
        async def read(conn: psycopg.AsyncConnection[Any]) -> set[str]:
            done, _unknown, _supabase_cli = await _applied(conn, names)
            return done

        done = await self._run(read)
        return [name for name in names if name not in done]

    async def require_current_schema(self) -> None:
        """Raise :class:`SchemaError` unless every migration of this version is applied: a
        newer version's statements against an older schema would fail one by one, mid-run
        (``integration-health`` commands check this first; ``db upgrade`` fixes it)."""
        names = [name for name, _ in migrations()]
        pending = await self._pending(names)
        if not pending:
            return
        if len(pending) == len(names):
            raise SchemaError(
                f"the database at {self.url} has no integration-health schema: run "
                "`integration-health db upgrade` first"
            )
        raise SchemaError(
            f"the database schema at {self.url} lacks {len(pending)} migration(s) of this "
            f"version ({', '.join(pending)}): run `integration-health db upgrade` first"
        )

    # -- reads as a user --------------------------------------------------------------------

    @asynccontextmanager
    async def as_user(self, claims: Mapping[str, Any]) -> AsyncIterator[UserReader]:
        """Read as a user under row-level security, the way PostgREST serves a request.

        Opens a transaction, then ``set_config('role', 'authenticated', true)`` and
        ``set_config('request.jwt.claims', <claims>, true)``; both end with the transaction.
        ``claims`` are the verified JWT's claims (``sub`` is the user id).
        """
        if not self._opened:
            raise StoreError("the store is not open: use `await PostgresStore.open(url)`")
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "select set_config('role', 'authenticated', true), "
                    "set_config('request.jwt.claims', %s, true)",
                    (json.dumps(dict(claims), default=str),),
                )
                yield UserReader(conn)
        except psycopg.Error as exc:
            raise _translate(exc, self.url, self._password) from None

    # -- definitions ------------------------------------------------------------------------

    async def import_definitions(
        self,
        organizations: Sequence[Organization],
        members: Sequence[Member],
        integrations: Sequence[IntegrationRecord],
    ) -> ImportSummary:
        async def write(conn: psycopg.AsyncConnection[Any]) -> ImportSummary:
            created = updated = unchanged = 0
            async with conn.transaction(), conn.cursor() as cur:
                if organizations:
                    await cur.executemany(
                        "insert into public.organizations (id, name) values (%s, %s) "
                        "on conflict (id) do update set name = excluded.name, updated_at = now() "
                        "where organizations.name is distinct from excluded.name",
                        [(o.id, o.name) for o in organizations],
                    )
                if members:
                    await cur.executemany(
                        "insert into public.organization_members (org_id, user_id, role) "
                        "values (%s, %s, %s) on conflict (org_id, user_id) do update set "
                        "role = excluded.role",
                        [(m.org_id, m.user_id, m.role) for m in members],
                    )
                ids = [r.integration_id for r in integrations]
                existing = {
                    row["id"]: row
                    for row in await _fetch(
                        conn,
                        f"select {_INTEGRATION_COLUMNS} from public.integrations "
                        "where id = any(%s) order by id for update",
                        (ids,),
                    )
                }
                inserts: list[tuple[Any, ...]] = []
                changes: list[tuple[Any, ...]] = []
                for record in integrations:
                    values = (
                        record.org_id,
                        record.integration_type,
                        record.name,
                        Jsonb(dict(record.config)),
                        record.enabled,
                        record.monitoring_mode,
                        record.check_interval_s,
                    )
                    row = existing.get(record.integration_id)
                    if row is None:
                        inserts.append((record.integration_id, *values))
                        created += 1
                    elif _integration(row) == record:
                        unchanged += 1
                    else:
                        if row["org_id"] != record.org_id:
                            raise StoreError(
                                f"integration {record.integration_id} already belongs to "
                                f"organization {row['org_id']}; it cannot move to "
                                f"{record.org_id}"
                            )
                        changes.append((*values, record.integration_id))
                        updated += 1
                if inserts:
                    await cur.executemany(
                        "insert into public.integrations (id, org_id, integration_type, name, "
                        "config, enabled, monitoring_mode, check_interval_s) "
                        "values (%s, %s, %s, %s, %s, %s, %s, %s)",
                        inserts,
                    )
                if changes:
                    await cur.executemany(
                        "update public.integrations set org_id = %s, integration_type = %s, "
                        "name = %s, config = %s, enabled = %s, monitoring_mode = %s, "
                        "check_interval_s = %s, updated_at = now() where id = %s",
                        changes,
                    )
            return ImportSummary(
                organizations=len(organizations),
                members=len(members),
                created=created,
                updated=updated,
                unchanged=unchanged,
            )

        return await self._run(
            write,
            missing_reference="an integration or member refers to an organization that does "
            "not exist (list it under `organizations`); nothing was imported",
        )

    async def list_organizations(self) -> list[Organization]:
        rows = await self._run(lambda conn: _fetch(conn, _LIST_ORGANIZATIONS))
        return [Organization(r["id"], r["name"]) for r in rows]

    async def get_organization(self, org_id: UUID) -> Organization | None:
        rows = await self._run(
            lambda conn: _fetch(
                conn, "select id, name from public.organizations where id = %s", (org_id,)
            )
        )
        return Organization(rows[0]["id"], rows[0]["name"]) if rows else None

    async def list_members(self, org_id: UUID) -> list[Member]:
        rows = await self._run(
            lambda conn: _fetch(
                conn,
                "select org_id, user_id, role from public.organization_members "
                "where org_id = %s order by user_id::text",
                (org_id,),
            )
        )
        return [Member(r["org_id"], r["user_id"], r["role"]) for r in rows]

    async def list_integrations(self, org_id: UUID | None = None) -> list[IntegrationRecord]:
        return await self._run(lambda conn: _list_integrations(conn, org_id))

    async def get_integration(self, integration_id: UUID) -> IntegrationRecord | None:
        rows = await self._run(
            lambda conn: _fetch(conn, _LIST_INTEGRATIONS + " where id = %s", (integration_id,))
        )
        return _integration(rows[0]) if rows else None

    async def get_integrations(self, ids: Collection[UUID]) -> dict[UUID, IntegrationRecord]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = await self._run(
            lambda conn: _fetch(conn, _LIST_INTEGRATIONS + " where id = any(%b)", (wanted,))
        )
        return {record.integration_id: record for record in map(_integration, rows)}

    # -- results ----------------------------------------------------------------------------

    async def record_results(self, writes: Sequence[ResultWrite]) -> int:
        if not writes:
            return 0
        slotted = [w for w in writes if w.slot_at is not None]

        async def write(conn: psycopg.AsyncConnection[Any]) -> int:
            if not slotted:  # results without slots: one statement, one round trip
                await conn.execute(*_batch_params(writes))
                return len(writes)
            if len(slotted) == len(writes):  # the scheduler's and the workers' batches
                query, params = _batch_params(writes, slotted=True)
                if query is _RECORD_SLOTTED:  # one result per integration: one round trip
                    cursor = await conn.execute(query, params)
                    return cursor.rowcount
            async with conn.transaction():
                accepted = await _complete_slots(conn, writes, slotted)
                if accepted:
                    await conn.execute(*_batch_params(accepted))
                return len(accepted)

        try:
            return await self._run(
                write,
                missing_reference="a result belongs to an integration that is not stored (or "
                "not in the organization it names); import the integration before recording "
                "its results. Nothing of this batch was written",
            )
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"{len(writes)} result(s) could not be written: {exc}") from None

    async def list_statuses(self, org_id: UUID | None = None) -> list[StatusRecord]:
        return await self._run(lambda conn: _list_statuses(conn, org_id))

    async def list_health_rows(self, org_id: UUID) -> list[HealthRow]:
        return await self._run(lambda conn: _list_health_rows(conn, org_id))

    async def list_history(
        self, integration_id: UUID, *, limit: int = HISTORY_LIMIT
    ) -> list[HistoryRecord]:
        return await self._run(lambda conn: _list_history(conn, integration_id, limit))

    async def list_events(
        self,
        org_id: UUID,
        *,
        integration_id: UUID | None = None,
        limit: int = 100,
    ) -> list[HealthEvent]:
        return await self._run(lambda conn: _list_events(conn, org_id, integration_id, limit))

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
        """The due checks at ``at``: never checked first, then oldest ``next_check_at`` first.

        Cost grows with what is due, not with the number of integrations: the never-checked
        ones are read from their own table (``integration_health_unchecked``, kept by triggers,
        migration 20261207010000), the others along the status rows' (next_check_at,
        integration_id) index (migration 20261129050000). Figures in docs/benchmarks.md
        ("Planning cost").
        """
        status_columns = ", ".join(f"s.{c} as s_{c}" for c in _STATUS_COLUMN_NAMES)

        def unclaimed(integration_id: str, slot_at: str) -> str:
            """Leave out a slot with a live claim: a primary-key probe per candidate (``offset
            0`` keeps it one; as an anti join the planner would read and sort every run
            claimed within the lease — done ones included — on every pass)."""
            if claimed_since is None:
                return ""
            return (
                "and not exists (select 1 from public.integration_check_runs r "
                f"where r.integration_id = {integration_id} and r.slot_at = {slot_at} "
                "and r.state = 'claimed' and r.claimed_at >= %(claimed_since)s "
                "and r.worker is distinct from %(claimed_by_me)s::text offset 0)"
            )

        # Each branch reads at most ``limit`` rows along an index; the lateral subqueries
        # (``offset 0`` keeps them lateral) look each candidate's integration up by key, and
        # the ``not exists`` ones (``offset 0`` again: not an anti join, which could read a
        # whole table) probe its status or claim by key.
        query = f"""
            with due as (
                (select u.integration_id as id, null::timestamptz as due_at
                 from public.integration_health_unchecked u
                 cross join lateral (select 1 from public.integrations a
                                     where a.id = u.integration_id and a.enabled
                                       and a.monitoring_mode = 'active'
                                       and a.integration_type <> all(%(exclude)s::text[])
                                     offset 0) a
                 where not exists (select 1 from public.integration_health_status n
                                   where n.integration_id = u.integration_id offset 0)
                   {unclaimed("u.integration_id", "%(initial)s")}
                 order by u.integration_id
                 limit %(limit)s)
                union all
                (select n.integration_id, null::timestamptz
                 from public.integration_health_status n
                 cross join lateral (select 1 from public.integrations a
                                     where a.id = n.integration_id and a.enabled
                                       and a.monitoring_mode = 'active'
                                       and a.integration_type <> all(%(exclude)s::text[])
                                     offset 0) a
                 where n.next_check_at is null
                   and n.checked_at <= %(unscheduled_before)s
                   {unclaimed("n.integration_id", "%(initial)s")}
                 order by n.integration_id
                 limit %(limit)s)
                union all
                (select n.integration_id, n.next_check_at
                 from public.integration_health_status n
                 cross join lateral (select 1 from public.integrations a
                                     where a.id = n.integration_id and a.enabled
                                       and a.monitoring_mode = 'active'
                                       and a.integration_type <> all(%(exclude)s::text[])
                                     offset 0) a
                 where n.next_check_at <= %(at)s
                   {unclaimed("n.integration_id", "n.next_check_at")}
                 order by n.next_check_at, n.integration_id
                 limit %(limit)s)
            ), picked as (
                select id, due_at from due order by due_at asc nulls first, id limit %(limit)s
            )
            select i.id, i.org_id, i.integration_type, i.name, i.config, i.enabled,
                   i.monitoring_mode, i.check_interval_s, {status_columns}
            from picked p
            cross join lateral (select * from public.integrations i
                                where i.id = p.id offset 0) i
            left join lateral (select * from public.integration_health_status s
                               where s.integration_id = p.id offset 0) s on true
            order by p.due_at asc nulls first, p.id
        """
        params = {
            "at": at,
            "limit": max(0, limit),
            "exclude": sorted(set(exclude_types)),
            "initial": INITIAL_SLOT,
            "unscheduled_before": at - UNSCHEDULED_FLOOR,
            "claimed_since": claimed_since,
            "claimed_by_me": claimed_by_me,
        }

        # Plain tuples, read by position: a pass reads a batch of these and more, and a dict
        # per row (plus one per status) cost more than the rest of the decoding.
        rows = await self._run(lambda conn: _fetch_tuples(conn, query, params))
        return [_due_check(row) for row in rows]

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
        limits = budgets or {}
        budgeted = sorted(
            {kind for c in claims if (kind := c.integration_type) is not None and kind in limits}
        )

        async def insert(
            conn: psycopg.AsyncConnection[Any], wanted: Sequence[SlotClaim]
        ) -> set[tuple[UUID, datetime]]:
            unique = sorted(  # uuid.bytes order is PostgreSQL's uuid order, and compares in C
                {(c.integration_id, c.slot_at): c for c in wanted}.values(),
                key=lambda c: (c.integration_id.bytes, c.slot_at),
            )
            params = {
                "integration_id": [c.integration_id for c in unique],
                "slot_at": [c.slot_at for c in unique],
                "org_id": [c.org_id for c in unique],
                "integration_type": [c.integration_type for c in unique],
                "worker": worker,
                "at": at,
                "cutoff": at - timedelta(seconds=lease_s),
            }
            rows = await _fetch_tuples(conn, _CLAIM_SLOTS, params)
            return {(integration_id, _utc(slot_at)) for integration_id, slot_at in rows}

        async def claim(conn: psycopg.AsyncConnection[Any]) -> set[tuple[UUID, datetime]]:
            if not budgeted:
                return await insert(conn, claims)
            async with conn.transaction():
                # One lock per budgeted type (taken in name order, held to the commit): the
                # count below sees every claim of the type committed before, and no other
                # caller counts until these claims are committed too.
                await conn.execute(_LOCK_BUDGETS, {"types": budgeted})
                spent = await _count_claims(conn, budgeted, since=at - BUDGET_WINDOW)
                return await insert(conn, within_budgets(claims, limits, spent))

        got = await self._run(
            claim, missing_reference="a slot belongs to an integration that is not stored"
        )
        return [c for c in claims if (c.integration_id, c.slot_at.astimezone(UTC)) in got]

    async def count_claims(
        self, integration_types: Collection[str], *, since: datetime
    ) -> dict[str, int]:
        if not integration_types:
            return {}
        return await self._run(lambda conn: _count_claims(conn, integration_types, since=since))

    async def prune_runs(self, before: datetime, *, limit: int = 10_000) -> int:
        query = (
            "delete from public.integration_check_runs where ctid = any(array("
            "select ctid from public.integration_check_runs where claimed_at < %s limit %s))"
        )

        async def prune(conn: psycopg.AsyncConnection[Any]) -> int:
            cursor = await conn.execute(query, (before, limit))
            return cursor.rowcount

        return await self._run(prune)

    async def set_type_mode(self, mode: TypeMode | None, *, integration_type: str) -> None:
        if mode is None:
            query = "delete from public.integration_type_modes where integration_type = %s"
            params: tuple[Any, ...] = (integration_type,)
        else:
            query = (
                "insert into public.integration_type_modes (integration_type, passive_until, "
                "reason, switched_at) values (%s, %s, %s, %s) on conflict (integration_type) "
                "do update set passive_until = excluded.passive_until, "
                "reason = excluded.reason, switched_at = excluded.switched_at"
            )
            params = (integration_type, mode.passive_until, mode.reason, mode.switched_at)
        await self._run(lambda conn: conn.execute(query, params))

    async def list_type_modes(self) -> list[TypeMode]:
        rows = await self._run(
            lambda conn: _fetch(
                conn,
                "select integration_type, passive_until, reason, switched_at "
                "from public.integration_type_modes order by integration_type",
            )
        )
        return [
            TypeMode(
                integration_type=r["integration_type"],
                passive_until=_utc(r["passive_until"]),
                reason=r["reason"],
                switched_at=_utc(r["switched_at"]),
            )
            for r in rows
        ]

    async def count_results(
        self, integration_type: str, error_code: ErrorCode, *, since: datetime
    ) -> int:
        rows = await self._run(
            lambda conn: _fetch(
                conn,
                "select count(*) as n from public.integration_health_history h "
                "join public.integrations i on i.id = h.integration_id "
                "where i.integration_type = %s and h.error_code = %s and h.checked_at >= %s",
                (integration_type, error_code.value, since),
            )
        )
        return int(rows[0]["n"])


async def _applied(
    conn: psycopg.AsyncConnection[Any], names: Sequence[str]
) -> tuple[set[str], list[str], bool]:
    """Of the migrations ``names``, those the database has applied — recorded by us, or by
    the Supabase CLI (``supabase_migrations.schema_migrations``, by version) — then the
    versions recorded by us that ``names`` lacks (a newer integration-health applied them),
    and whether the Supabase CLI's table exists."""
    done: set[str] = set()
    if await _scalar(
        conn, "select to_regclass('integration_health.schema_migrations') is not null"
    ):
        rows = await _fetch(conn, "select version from integration_health.schema_migrations")
        done = {r["version"] for r in rows}
    unknown = sorted(done - set(names))
    supabase_cli = bool(
        await _scalar(
            conn, "select to_regclass('supabase_migrations.schema_migrations') is not null"
        )
    )
    if supabase_cli:  # versions applied with `supabase db push` / `migration up`
        rows = await _fetch(conn, "select version from supabase_migrations.schema_migrations")
        versions = {r["version"] for r in rows}
        done |= {name for name in names if name.split("_", 1)[0] in versions}
    return done, unknown, supabase_cli


async def _count_claims(
    conn: psycopg.AsyncConnection[Any], integration_types: Collection[str], *, since: datetime
) -> dict[str, int]:
    """:meth:`PostgresStore.count_claims` on ``conn``."""
    query = (
        "select integration_type, count(*) from public.integration_check_runs "
        "where integration_type = any(%s::text[]) and claimed_at > %s "
        "group by integration_type"
    )
    rows = await _fetch_tuples(conn, query, (sorted(set(integration_types)), since))
    return {kind: int(count) for kind, count in rows}


async def _scalar(conn: psycopg.AsyncConnection[Any], query: str) -> Any:
    cur = await conn.execute(query)
    row = await cur.fetchone()
    return row[0] if row else None


async def _complete_slots(
    conn: psycopg.AsyncConnection[Any],
    writes: Sequence[ResultWrite],
    slotted: Sequence[ResultWrite],
) -> list[ResultWrite]:
    """Mark done the slots whose worker holds the claim; the writes that may be recorded."""
    rows = await _fetch(
        conn,
        _COMPLETE_SLOTS,
        {
            "c_integration_id": [w.integration_id for w in slotted],
            "c_slot_at": [w.slot_at for w in slotted],
            "c_worker": [w.worker for w in slotted],
            "c_drift_ms": [w.drift_ms for w in slotted],
        },
    )
    done = {(r["integration_id"], _utc(r["slot_at"]), r["worker"]) for r in rows}
    return [
        w
        for w in writes
        if w.slot_at is None or (w.integration_id, w.slot_at.astimezone(UTC), w.worker) in done
    ]
