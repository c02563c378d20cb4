"""The health answer's lean read (``list_health_rows``): every store, the same rows."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from integration_health import ErrorCode, HealthResult, HealthStatus
from integration_health.checks import IntegrationRecord
from integration_health.store import Organization, ResultWrite, Store
from integration_health.store.base import HealthRow, TypeMode
from integration_health.web import payloads

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
"""A whole second: ``isoformat()`` leaves the fraction out."""
T1 = datetime(2026, 11, 28, 12, 15, 0, 123_456, tzinfo=UTC)
"""With microseconds: ``isoformat()`` writes all six digits."""


def _record(org: uuid.UUID, name: str, **overrides: object) -> IntegrationRecord:
    fields: dict[str, object] = {
        "integration_id": uuid.uuid4(),
        "org_id": org,
        "integration_type": "http",
        "name": name,
        "config": {"url": "https://example.com"},
    }
    fields.update(overrides)
    return IntegrationRecord(**fields)  # type: ignore[arg-type]


def _write(item: IntegrationRecord, result: HealthResult, at: datetime) -> ResultWrite:
    return ResultWrite(
        org_id=item.org_id,
        integration_id=item.integration_id,
        integration_type=item.integration_type,
        result=result.model_copy(update={"checked_at": at}),
        next_check_at=at + timedelta(minutes=15),
    )


async def test_health_rows_match_integrations_and_statuses(store: Store) -> None:
    """The lean read gives, by name, every integration of the org (never-checked ones with
    null status fields) with its status exactly as the full records say: ids as ``str(uuid)``,
    times as ``isoformat()`` text in UTC (fraction of a second only when there is one)."""
    org, other = uuid.uuid4(), uuid.uuid4()
    ok = _record(org, "b-ok")
    slow = _record(org, "a-slow", integration_type="xledger", check_interval_s=1800)
    down = _record(org, "c-down", enabled=False, monitoring_mode="passive")
    never = _record(org, "d-never-checked")
    foreign = _record(other, "a-foreign")
    await store.import_definitions(
        [Organization(org, "Org"), Organization(other, "Other")],
        [],
        [ok, slow, down, never, foreign],
    )
    await store.record_results(
        [
            _write(ok, HealthResult.healthy(12), T0),
            _write(
                slow,
                HealthResult.degraded(ErrorCode.RATE_LIMITED, "Slow: 3 s", 3_000),
                T1,
            ),
            _write(down, HealthResult.unreachable(ErrorCode.AUTH, "HTTP 401 ÆØÅ", 40), T0),
            _write(down, HealthResult.unreachable(ErrorCode.AUTH, "HTTP 401 ÆØÅ", 41), T1),
            _write(foreign, HealthResult.healthy(1), T0),
        ]
    )

    rows = await store.list_health_rows(org)

    records = await store.list_integrations(org)
    statuses = {s.integration_id: s for s in await store.list_statuses(org)}
    assert [r.name for r in rows] == ["a-slow", "b-ok", "c-down", "d-never-checked"]
    for row, record in zip(rows, records, strict=True):
        status = statuses.get(record.integration_id)
        expected = HealthRow(
            str(record.integration_id),
            record.name,
            record.integration_type,
            record.enabled,
            record.monitoring_mode,
            record.check_interval_s,
            status.status.value if status else None,
            status.latency_ms if status else None,
            status.checked_at.isoformat() if status else None,
            status.next_check_at.isoformat() if status and status.next_check_at else None,
            status.error if status else None,
            status.error_code.value if status and status.error_code else None,
            status.consecutive_failures if status else None,
            status.last_healthy_at.isoformat() if status and status.last_healthy_at else None,
            status.source if status else None,
        )
        assert row == expected
    by_name = {r.name: r for r in rows}
    assert by_name["b-ok"].checked_at == "2026-11-28T12:00:00+00:00"
    assert by_name["a-slow"].checked_at == "2026-11-28T12:15:00.123456+00:00"
    assert by_name["a-slow"].status == HealthStatus.DEGRADED.value
    assert by_name["a-slow"].error_code == "rate_limited"
    assert by_name["c-down"].consecutive_failures == 2
    assert by_name["c-down"].enabled is False
    assert by_name["c-down"].error == "HTTP 401 ÆØÅ"
    assert by_name["d-never-checked"].status is None
    assert await store.list_health_rows(uuid.uuid4()) == []


async def test_lean_read_renders_the_same_health_document(store: Store) -> None:
    """The health answer built from the lean read is the document built from full records
    and statuses, key for key (the ◆ JSON contract of ``GET /api/orgs/{org}/health``)."""
    org = uuid.uuid4()
    items = [
        _record(org, "Ærlig webhook"),
        _record(org, "Ledger", integration_type="xledger"),
        _record(org, "Paused", enabled=False),
        _record(org, "New"),
    ]
    await store.import_definitions([Organization(org, "Org")], [], items)
    await store.record_results(
        [
            _write(items[0], HealthResult.healthy(5), T1),
            _write(items[1], HealthResult.unreachable(ErrorCode.TIMEOUT, "No answer", 10_000), T0),
            _write(items[2], HealthResult.degraded(None, None, 2_500), T1),
        ]
    )
    organization = await store.get_organization(org)
    modes = [TypeMode("xledger", T1 + timedelta(hours=1), "rate limited", T0)]

    lean = payloads.org_health_from_rows(
        org, await store.list_health_rows(org), organization=organization, type_modes=modes, now=T1
    )
    full = payloads.org_health_document(
        org,
        await store.list_integrations(org),
        await store.list_statuses(org),
        organization=organization,
        type_modes=modes,
        now=T1,
    )

    assert lean == full
    assert (
        payloads.dumps(lean) == json.dumps(full, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert lean["status"] == "unreachable" and lean["summary"]["not_checked"] == 1
    advised = {e["name"] for e in lean["integrations"] if e["advice"]}
    assert advised == {"Ledger", "Paused"}
