"""The store contract: every store keeps these promises (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from integration_health import ErrorCode, HealthResult, HealthStatus, StoreError
from integration_health.checks import IntegrationRecord
from integration_health.store import HISTORY_LIMIT, Member, Organization, ResultWrite, Store
from integration_health.store.base import INITIAL_SLOT, UNSCHEDULED_FLOOR, SlotClaim

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def record(org_id: uuid.UUID, name: str = "hook", **overrides: object) -> IntegrationRecord:
    fields: dict[str, object] = {
        "integration_id": uuid.uuid4(),
        "org_id": org_id,
        "integration_type": "http",
        "name": name,
        "config": {"url": "https://example.com", "bearer_token": "${TOKEN}"},
    }
    fields.update(overrides)
    return IntegrationRecord(**fields)  # type: ignore[arg-type]


def write(
    item: IntegrationRecord,
    status: HealthStatus = HealthStatus.HEALTHY,
    *,
    at: datetime = T0,
    latency: int = 100,
    error_code: ErrorCode | None = None,
) -> ResultWrite:
    result = HealthResult(
        status=status,
        latency_ms=latency,
        checked_at=at,
        error=None if status is HealthStatus.HEALTHY else "broken",
        error_code=error_code
        if error_code or status is HealthStatus.HEALTHY
        else ErrorCode.SERVER_ERROR,
        details={"http_status": 200},
    )
    return ResultWrite(
        org_id=item.org_id,
        integration_id=item.integration_id,
        integration_type=item.integration_type,
        result=result,
        next_check_at=at + timedelta(minutes=15),
    )


async def seeded(store: Store, *names: str) -> tuple[uuid.UUID, list[IntegrationRecord]]:
    org = uuid.uuid4()
    items = [record(org, name) for name in names or ("hook",)]
    await store.import_definitions([Organization(org, "Acme")], [], items)
    return org, items


async def test_upgrade_is_idempotent(store: Store) -> None:
    """A second upgrade applies nothing."""
    assert await store.upgrade() == []
    await store.ping()


async def test_import_creates_then_updates_without_duplicates(store: Store) -> None:
    """Importing the same definitions twice updates rather than duplicates."""
    org = uuid.uuid4()
    user = uuid.uuid4()
    item = record(org)
    first = await store.import_definitions(
        [Organization(org, "Acme")], [Member(org, user, "admin")], [item]
    )
    assert (first.created, first.updated, first.unchanged) == (1, 0, 0)
    again = await store.import_definitions([Organization(org, "Acme AS")], [], [item])
    assert (again.created, again.updated, again.unchanged) == (0, 0, 1)
    changed = IntegrationRecord(**{**item.__dict__, "name": "renamed", "enabled": False})
    third = await store.import_definitions([], [], [changed])
    assert (third.created, third.updated) == (0, 1)
    [stored] = await store.list_integrations(org)
    assert stored == changed
    assert await store.get_integration(item.integration_id) == changed
    assert await store.get_organization(org) == Organization(org, "Acme AS")
    assert await store.list_members(org) == [Member(org, user, "admin")]
    assert [o.id for o in await store.list_organizations()] == [org]


async def test_import_is_all_or_nothing(store: Store) -> None:
    """An import that fails half-way leaves nothing behind."""
    org = uuid.uuid4()
    good = record(org, "good")
    orphan = record(uuid.uuid4(), "orphan")  # its organization exists nowhere
    with pytest.raises(StoreError):
        await store.import_definitions([Organization(org, "Acme")], [], [good, orphan])
    assert await store.list_integrations() == []
    assert await store.get_organization(org) is None


async def test_integration_cannot_move_between_organizations(store: Store) -> None:
    """Re-importing an id under another organisation is refused."""
    org, [item] = await seeded(store)
    other = uuid.uuid4()
    moved = IntegrationRecord(**{**item.__dict__, "org_id": other})
    with pytest.raises(StoreError, match="cannot move"):
        await store.import_definitions([Organization(other, "Other")], [], [moved])
    assert (await store.get_integration(item.integration_id)).org_id == org  # type: ignore[union-attr]


async def test_lists_are_scoped_to_the_organization(store: Store) -> None:
    """Integrations and statuses of one org never show up in another's lists."""
    org_a, [a] = await seeded(store, "a")
    org_b, [b] = await seeded(store, "b")
    await store.record_results([write(a), write(b)])
    assert [i.integration_id for i in await store.list_integrations(org_a)] == [a.integration_id]
    assert [s.integration_id for s in await store.list_statuses(org_b)] == [b.integration_id]
    assert len(await store.list_statuses()) == 2
    assert await store.get_organization(uuid.uuid4()) is None
    assert await store.get_integration(uuid.uuid4()) is None


async def test_get_integrations_reads_many_at_once(store: Store) -> None:
    """get_integrations returns the stored ones among the ids asked for, by id, equal to
    get_integration's answers; unknown ids and an empty request give nothing."""
    _org_a, [a1, a2] = await seeded(store, "a1", "a2")
    _org_b, [b] = await seeded(store, "b")
    unknown = uuid.uuid4()
    got = await store.get_integrations([a1.integration_id, b.integration_id, unknown])
    assert set(got) == {a1.integration_id, b.integration_id}
    for key, value in got.items():
        assert value == await store.get_integration(key)
    assert await store.get_integrations([]) == {}
    assert await store.get_integrations([unknown]) == {}
    assert set(await store.get_integrations({a2.integration_id, a2.integration_id})) == {
        a2.integration_id
    }


async def test_json_values_come_back_exactly(store: Store) -> None:
    """A config and a result's details read back equal to what was stored, types included:
    integers beyond 64 bits stay integers (not floats), floats keep every digit, text keeps
    every character (PostgreSQL reads them with pydantic-core's parser, not json.loads)."""
    values = {
        "big": 123456789012345678901234567890,
        "negative": -(2**70),
        "float": 0.1 + 0.2,
        "small": 1.5e-7,
        "text": 'æøå "quoted" \\ back\nslash \u2603 \U0001f600',
        "nested": {"list": [1, 2.5, None, True, False, "x", [], {}]},
    }
    org = uuid.uuid4()
    item = record(org, config={"url": "https://example.com", "extra": values})
    await store.import_definitions([Organization(org, "Acme")], [], [item])
    read = await store.get_integrations([item.integration_id])
    assert read[item.integration_id].config == item.config
    big = read[item.integration_id].config["extra"]["big"]
    assert type(big) is int
    [due] = [
        d for d in await store.list_due(T0) if d.integration.integration_id == item.integration_id
    ]
    assert due.integration.config == item.config
    result = HealthResult.healthy(5).model_copy(update={"checked_at": T0, "details": values})
    await store.record_results(
        [
            ResultWrite(
                org_id=org,
                integration_id=item.integration_id,
                integration_type="http",
                result=result,
                next_check_at=T0 + timedelta(minutes=15),
            )
        ]
    )
    [status] = await store.list_statuses(org)
    assert status.details == values
    assert type(status.details["negative"]) is int


async def test_upsert_updates_latency_even_when_status_is_unchanged(store: Store) -> None:
    """A second healthy result refreshes latency_ms and checked_at of the same row."""
    org, [item] = await seeded(store)
    await store.record_results([write(item, latency=100, at=T0)])
    await store.record_results([write(item, latency=250, at=T0 + timedelta(minutes=15))])
    [status] = await store.list_statuses(org)
    assert status.status is HealthStatus.HEALTHY
    assert status.latency_ms == 250
    assert status.checked_at == T0 + timedelta(minutes=15)
    assert status.next_check_at == T0 + timedelta(minutes=30)
    assert status.details == {"http_status": 200}


async def test_older_result_never_overwrites_newer(store: Store) -> None:
    """A late result for an earlier time enters history but leaves the status alone."""
    org, [item] = await seeded(store)
    await store.record_results([write(item, latency=300, at=T0 + timedelta(minutes=15))])
    await store.record_results([write(item, HealthStatus.UNREACHABLE, latency=9, at=T0)])
    [status] = await store.list_statuses(org)
    assert (status.status, status.latency_ms) == (HealthStatus.HEALTHY, 300)
    history = await store.list_history(item.integration_id)
    assert [h.checked_at for h in history] == [T0 + timedelta(minutes=15), T0]


async def test_each_upsert_adds_a_history_row(store: Store) -> None:
    """Every recorded result adds exactly one history row, newest first."""
    _, [item] = await seeded(store)
    for i in range(3):
        await store.record_results([write(item, latency=i, at=T0 + timedelta(minutes=i))])
    history = await store.list_history(item.integration_id)
    assert [h.latency_ms for h in history] == [2, 1, 0]
    assert history[0].org_id == item.org_id
    assert await store.list_history(item.integration_id, limit=2) == history[:2]
    assert await store.list_history(item.integration_id, limit=0) == []


async def test_history_keeps_newest_96(store: Store) -> None:
    """100 results for one integration leave exactly the newest 96; others are untouched."""
    _, [item, other] = await seeded(store, "a", "b")
    await store.record_results([write(other, at=T0)])
    for i in range(100):  # one write per result, as a long-running scheduler does
        await store.record_results([write(item, latency=i, at=T0 + timedelta(minutes=15 * i))])
    history = await store.list_history(item.integration_id, limit=500)
    assert len(history) == HISTORY_LIMIT
    assert [h.latency_ms for h in history] == list(range(99, 3, -1))
    assert len(await store.list_history(other.integration_id)) == 1


async def test_history_pruning_holds_for_one_big_batch(store: Store) -> None:
    """A single batch of 150 results for one integration also leaves 96."""
    _, [item] = await seeded(store)
    await store.record_results(
        [write(item, latency=i, at=T0 + timedelta(seconds=i)) for i in range(150)]
    )
    history = await store.list_history(item.integration_id, limit=500)
    assert len(history) == HISTORY_LIMIT
    assert history[0].latency_ms == 149


async def test_consecutive_failures_and_last_healthy(store: Store) -> None:
    """Failures count up atomically and reset on success; last_healthy_at follows healthy."""
    org, [item] = await seeded(store)
    await store.record_results([write(item, at=T0)])
    for i in range(1, 4):
        await store.record_results(
            [write(item, HealthStatus.UNREACHABLE, at=T0 + timedelta(minutes=i))]
        )
    [status] = await store.list_statuses(org)
    assert status.consecutive_failures == 3
    assert status.last_healthy_at == T0
    assert status.error_code is ErrorCode.SERVER_ERROR
    await store.record_results(
        [
            write(
                item,
                HealthStatus.DEGRADED,
                at=T0 + timedelta(minutes=5),
                error_code=ErrorCode.RATE_LIMITED,
            )
        ]
    )
    [status] = await store.list_statuses(org)
    assert status.consecutive_failures == 0
    assert status.last_healthy_at == T0


async def test_batch_with_duplicates_and_many_integrations(store: Store) -> None:
    """One batch may hold several results per integration; the newest wins the status."""
    org, items = await seeded(store, *(f"i{n}" for n in range(20)))
    writes = [write(i, HealthStatus.UNREACHABLE, at=T0) for i in items]
    writes += [write(i, at=T0 + timedelta(seconds=1)) for i in items]
    assert await store.record_results(writes[::-1]) == 40
    statuses = await store.list_statuses(org)
    assert len(statuses) == 20
    assert all(s.status is HealthStatus.HEALTHY for s in statuses)
    assert all(s.consecutive_failures == 0 for s in statuses)
    assert len(await store.list_history(items[0].integration_id)) == 2
    assert await store.record_results([]) == 0


async def test_results_for_unknown_integrations_are_refused(store: Store) -> None:
    """A result for an integration that is not stored is an error, and nothing is written."""
    org, [item] = await seeded(store)
    ghost = record(org, "ghost")
    with pytest.raises(StoreError, match="not stored"):
        await store.record_results([write(item), write(ghost)])
    assert await store.list_statuses(org) == []


async def test_concurrent_writers_keep_exactly_96(store: Store) -> None:
    """Two writers adding results for one integration at once still leave 96 rows."""
    _, [item] = await seeded(store)

    async def writer(offset: int) -> None:
        for i in range(60):
            at = T0 + timedelta(seconds=2 * i + offset)
            await store.record_results([write(item, at=at)])

    await asyncio.gather(writer(0), writer(1))
    assert len(await store.list_history(item.integration_id, limit=500)) == HISTORY_LIMIT


# -- events ------------------------------------------------------------------------------------


async def test_status_changes_are_logged_as_events(store: Store) -> None:
    """First result and every change of status add an event; repeats and stale results don't."""
    org, [item] = await seeded(store)
    await store.record_results([write(item, at=T0)])
    await store.record_results([write(item, at=T0 + timedelta(minutes=1))])  # same status
    await store.record_results(
        [write(item, HealthStatus.UNREACHABLE, at=T0 + timedelta(minutes=2))]
    )
    await store.record_results([write(item, HealthStatus.DEGRADED, at=T0 - timedelta(minutes=5))])
    await store.record_results([write(item, at=T0 + timedelta(minutes=3))])
    events = await store.list_events(org)
    assert [(e.from_status, e.to_status) for e in events] == [
        (HealthStatus.UNREACHABLE, HealthStatus.HEALTHY),
        (HealthStatus.HEALTHY, HealthStatus.UNREACHABLE),
        (None, HealthStatus.HEALTHY),
    ]
    assert events[1].error_code is ErrorCode.SERVER_ERROR
    assert events[1].at == T0 + timedelta(minutes=2)
    assert await store.list_events(org, integration_id=uuid.uuid4()) == []
    assert len(await store.list_events(org, integration_id=item.integration_id, limit=1)) == 1
    assert await store.list_events(uuid.uuid4()) == []


# -- scheduling --------------------------------------------------------------------------------


async def test_list_due(store: Store) -> None:
    """Never-checked and overdue active integrations are due; the rest are not."""
    org = uuid.uuid4()
    fresh = record(org, "fresh")
    overdue = record(org, "overdue")
    later = record(org, "later")
    off = record(org, "off", enabled=False)
    passive = record(org, "passive", monitoring_mode="passive")
    await store.import_definitions(
        [Organization(org, "Acme")], [], [fresh, overdue, later, off, passive]
    )
    await store.record_results(
        [
            write(overdue, at=T0),  # next_check_at = T0 + 15 min
            ResultWrite(
                org_id=org,
                integration_id=later.integration_id,
                integration_type="http",
                result=HealthResult.healthy(1, details={}).model_copy(update={"checked_at": T0}),
                next_check_at=T0 + timedelta(hours=2),
            ),
        ]
    )
    due = await store.list_due(T0 + timedelta(minutes=20))
    assert [d.integration.integration_id for d in due] == [
        fresh.integration_id,
        overdue.integration_id,
    ]
    assert due[0].status is None
    assert due[1].status is not None and due[1].status.consecutive_failures == 0
    assert due[1].slot_at == T0 + timedelta(minutes=15)
    assert len(await store.list_due(T0 + timedelta(minutes=20), limit=1)) == 1
    assert {d.integration.name for d in await store.list_due(T0 + timedelta(hours=3))} == {
        "fresh",
        "overdue",
        "later",
    }
    # exclude_types leaves a type out, never-checked and overdue alike
    vendor = record(org, "vendor", integration_type="xledger", config={})
    await store.import_definitions([Organization(org, "Acme")], [], [vendor])
    everything = await store.list_due(T0 + timedelta(minutes=20))
    assert {d.integration.name for d in everything} == {"fresh", "overdue", "vendor"}
    kept = await store.list_due(T0 + timedelta(minutes=20), exclude_types={"http"})
    assert [d.integration.integration_id for d in kept] == [vendor.integration_id]
    assert await store.list_due(T0 + timedelta(minutes=20), exclude_types=["http", "xledger"]) == []


async def test_list_due_lists_a_status_without_next_check_at_after_the_floor(
    store: Store,
) -> None:
    """A status row without next_check_at (sync outcomes of an integration that was passive
    and is active now) is due once its last result is the general floor old, not before: the
    planner would only hold it back, and many such rows would fill the scheduler's window."""
    org = uuid.uuid4()
    synced, overdue = record(org, "synced"), record(org, "overdue")
    await store.import_definitions([Organization(org, "Acme")], [], [synced, overdue])
    await store.record_results(
        [
            write(overdue, at=T0 - timedelta(hours=1)),  # due since T0 − 45 min
            ResultWrite(
                org_id=org,
                integration_id=synced.integration_id,
                integration_type="http",
                result=HealthResult.healthy(1, details={}).model_copy(update={"checked_at": T0}),
                source="passive",
            ),
        ]
    )
    assert [d.integration.name for d in await store.list_due(T0)] == ["overdue"]
    floor = T0 + UNSCHEDULED_FLOOR
    assert [d.integration.name for d in await store.list_due(floor - timedelta(seconds=1))] == [
        "overdue"
    ]
    due = await store.list_due(floor)
    assert [d.integration.name for d in due] == ["synced", "overdue"]  # no next_check_at: first
    assert due[0].slot_at == INITIAL_SLOT


async def test_list_due_leaves_out_live_claims(store: Store) -> None:
    """With ``claimed_since``, a due check whose current slot holds a live claim is left out
    (never checked, no next_check_at, overdue alike); an expired claim, a claim on another
    slot, a claim of ``claimed_by_me``, or no ``claimed_since`` lists it."""
    org = uuid.uuid4()
    fresh, synced, overdue, other = (record(org, n) for n in ("fresh", "synced", "overdue", "o"))
    await store.import_definitions([Organization(org, "Acme")], [], [fresh, synced, overdue, other])
    await store.record_results(
        [
            write(overdue, at=T0),  # slot T0 + 15 min
            write(other, at=T0),
            ResultWrite(  # a sync outcome: a status row without next_check_at
                org_id=org,
                integration_id=synced.integration_id,
                integration_type="http",
                result=HealthResult.healthy(1, details={}).model_copy(update={"checked_at": T0}),
                source="passive",
            ),
        ]
    )
    at = T0 + timedelta(minutes=20)
    slot = T0 + timedelta(minutes=15)
    everything = {d.integration.name for d in await store.list_due(at)}
    assert everything == {"fresh", "synced", "overdue", "o"}
    claimed = [
        SlotClaim(org, fresh.integration_id, INITIAL_SLOT),
        SlotClaim(org, synced.integration_id, INITIAL_SLOT),
        SlotClaim(org, overdue.integration_id, slot),
        SlotClaim(org, other.integration_id, T0),  # an older slot: not the current one
    ]
    assert len(await store.claim_slots(claimed, worker="w", at=at, lease_s=60)) == 4
    assert {d.integration.name for d in await store.list_due(at)} == everything
    live = await store.list_due(at, claimed_since=at - timedelta(seconds=60))
    assert [d.integration.name for d in live] == ["o"]
    # the claimer's own claims are listed for it (it renews them), not for anyone else
    mine = await store.list_due(at, claimed_since=at - timedelta(seconds=60), claimed_by_me="w")
    assert {d.integration.name for d in mine} == everything
    theirs = await store.list_due(at, claimed_since=at - timedelta(seconds=60), claimed_by_me="x")
    assert [d.integration.name for d in theirs] == ["o"]
    # the claims made at ``at`` count as expired for a ``claimed_since`` after it
    later = at + timedelta(seconds=61)
    expired = await store.list_due(later, claimed_since=later - timedelta(seconds=60))
    assert {d.integration.name for d in expired} == everything
    # a done slot moved next_check_at on: the check is due again only at its next slot
    done = ResultWrite(**{**write(overdue, at=at).__dict__, "slot_at": slot, "worker": "w"})
    assert await store.record_results([done]) == 1
    after = await store.list_due(at, claimed_since=at - timedelta(seconds=60))
    assert [d.integration.name for d in after] == ["o"]


async def test_sync_outcome_keeps_next_check_at(store: Store) -> None:
    """A write without next_check_at (a sync outcome) keeps the stored schedule."""
    org, [item] = await seeded(store)
    await store.record_results([write(item, at=T0)])
    await store.record_results(
        [
            ResultWrite(
                org_id=org,
                integration_id=item.integration_id,
                integration_type="http",
                result=HealthResult.unreachable(
                    ErrorCode.SERVER_ERROR, "sync failed", 5
                ).model_copy(update={"checked_at": T0 + timedelta(minutes=1)}),
                source="passive",
            )
        ]
    )
    [status] = await store.list_statuses(org)
    assert status.next_check_at == T0 + timedelta(minutes=15)
    assert (status.status, status.source) == (HealthStatus.UNREACHABLE, "passive")


async def test_sync_outcome_moves_next_check_at_later_never_earlier(store: Store) -> None:
    """A sync outcome's next_check_at is a bound: a later one moves the stored schedule on,
    an earlier one leaves it; a probe's result sets it either way; an outcome for an
    integration never checked sets it."""
    org, [item, fresh] = await seeded(store, "hook", "fresh")

    def sync(target: IntegrationRecord, minute: int, next_at: datetime) -> ResultWrite:
        result = HealthResult.healthy(5).model_copy(
            update={"checked_at": T0 + timedelta(minutes=minute)}
        )
        return ResultWrite(
            org_id=org,
            integration_id=target.integration_id,
            integration_type="http",
            result=result,
            next_check_at=next_at,
            source="passive",
        )

    async def next_of(target: IntegrationRecord) -> datetime | None:
        statuses = {s.integration_id: s for s in await store.list_statuses(org)}
        return statuses[target.integration_id].next_check_at

    await store.record_results([write(item, at=T0)])  # next check T0 + 15 min
    await store.record_results([sync(item, 1, T0 + timedelta(minutes=5))])
    assert await next_of(item) == T0 + timedelta(minutes=15)
    await store.record_results([sync(item, 10, T0 + timedelta(minutes=25))])
    assert await next_of(item) == T0 + timedelta(minutes=25)
    await store.record_results([write(item, at=T0 + timedelta(minutes=30))])  # a probe: 45 min
    assert await next_of(item) == T0 + timedelta(minutes=45)
    await store.record_results([sync(fresh, 2, T0 + timedelta(minutes=17))])
    assert await next_of(fresh) == T0 + timedelta(minutes=17)


async def test_slots_run_once(store: Store) -> None:
    """A slot is claimed once; its result is written once; late or duplicate runs write nothing."""
    org, [item] = await seeded(store)
    slot = SlotClaim(org, item.integration_id, T0)
    assert await store.claim_slots([slot], worker="a", at=T0, lease_s=60) == [slot]
    assert await store.claim_slots([slot], worker="b", at=T0, lease_s=60) == []
    done = ResultWrite(
        **{**write(item, at=T0 + timedelta(seconds=1)).__dict__, "slot_at": T0, "worker": "a"}
    )
    stranger = ResultWrite(**{**done.__dict__, "worker": "b"})
    assert await store.record_results([stranger]) == 0  # b never held the claim
    assert await store.record_results([done]) == 1
    assert await store.record_results([done]) == 0  # duplicate
    assert len(await store.list_history(item.integration_id)) == 1
    # a done slot is never claimed again, even after its lease
    assert await store.claim_slots([slot], worker="c", at=T0 + timedelta(hours=1), lease_s=60) == []


async def test_a_batch_writes_only_the_results_whose_slots_its_writer_holds(
    store: Store,
) -> None:
    """In one batch: slots the writer holds are completed and their results written; a slot
    another worker holds, and one already done, write nothing — neither status nor history —
    and the answer counts what was written. Also with two results of one integration in the
    batch (each for its own slot)."""
    org, items = await seeded(store, "held", "other", "done", "twice")
    held, other, done, twice = items
    later = T0 + timedelta(minutes=15)
    claims = [SlotClaim(org, i.integration_id, T0) for i in items]
    assert await store.claim_slots(claims[:1] + claims[2:], worker="a", at=T0, lease_s=60)
    assert await store.claim_slots([claims[1]], worker="b", at=T0, lease_s=60)
    assert await store.claim_slots(
        [SlotClaim(org, twice.integration_id, later)], worker="a", at=T0, lease_s=60
    )

    def slotted(item: IntegrationRecord, slot_at: datetime, seconds: int) -> ResultWrite:
        base = write(item, HealthStatus.DEGRADED, at=slot_at + timedelta(seconds=seconds))
        return ResultWrite(**{**base.__dict__, "slot_at": slot_at, "worker": "a"})

    assert await store.record_results([slotted(done, T0, 1)]) == 1
    batch = [slotted(i, T0, 2) for i in (held, other, done)]
    assert await store.record_results(batch) == 1  # held only
    statuses = {s.integration_id: s for s in await store.list_statuses(org)}
    assert set(statuses) == {held.integration_id, done.integration_id}
    assert statuses[done.integration_id].checked_at == T0 + timedelta(seconds=1)
    assert [len(await store.list_history(i.integration_id)) for i in items] == [1, 0, 1, 0]
    # two results of one integration in one batch, each completing its own slot
    pair = [slotted(twice, T0, 3), slotted(twice, later, 3)]
    assert await store.record_results(pair) == 2
    assert await store.record_results(pair) == 0  # both slots done now
    assert len(await store.list_history(twice.integration_id)) == 2
    (status,) = [
        s for s in await store.list_statuses(org) if s.integration_id == twice.integration_id
    ]
    assert status.checked_at == later + timedelta(seconds=3)
    assert status.consecutive_failures == 0  # degraded, not unreachable


async def test_expired_claims_are_taken_over(store: Store) -> None:
    """A claim older than the lease (its worker died) can be taken over; then only the new
    holder's result counts."""
    org, [item] = await seeded(store)
    slot = SlotClaim(org, item.integration_id, T0)
    assert await store.claim_slots([slot], worker="dead", at=T0, lease_s=60) == [slot]
    assert (
        await store.claim_slots([slot], worker="b", at=T0 + timedelta(seconds=30), lease_s=60) == []
    )
    assert await store.claim_slots(
        [slot], worker="b", at=T0 + timedelta(seconds=61), lease_s=60
    ) == [slot]
    late = ResultWrite(**{**write(item, at=T0).__dict__, "slot_at": T0, "worker": "dead"})
    assert await store.record_results([late]) == 0
    ok = ResultWrite(**{**late.__dict__, "worker": "b"})
    assert await store.record_results([ok]) == 1
    with pytest.raises(StoreError):
        await store.claim_slots([SlotClaim(org, uuid.uuid4(), T0)], worker="x", at=T0, lease_s=1)


async def test_type_modes_and_result_counts(store: Store) -> None:
    """Paused types are stored, listed and cleared; rate-limited results are counted by type."""
    from integration_health.store import TypeMode

    _org, [item] = await seeded(store)
    mode = TypeMode("http", T0 + timedelta(hours=1), "rate limited 5 times", T0)
    await store.set_type_mode(mode, integration_type="http")
    assert await store.list_type_modes() == [mode]
    later = TypeMode("http", T0 + timedelta(hours=2), "again", T0 + timedelta(hours=1))
    await store.set_type_mode(later, integration_type="http")
    assert await store.list_type_modes() == [later]
    await store.set_type_mode(None, integration_type="http")
    assert await store.list_type_modes() == []
    limited = [
        write(
            item,
            HealthStatus.DEGRADED,
            at=T0 + timedelta(minutes=i),
            error_code=ErrorCode.RATE_LIMITED,
        )
        for i in range(3)
    ]
    await store.record_results(limited)
    assert (
        await store.count_results("http", ErrorCode.RATE_LIMITED, since=T0 + timedelta(minutes=1))
        == 2
    )
    assert await store.count_results("xledger", ErrorCode.RATE_LIMITED, since=T0) == 0


async def test_renewing_a_claim_you_hold(store: Store) -> None:
    """A holder renews its own claim; after another worker took it over, renewal fails."""
    org, [item] = await seeded(store)
    slot = SlotClaim(org, item.integration_id, T0)
    assert await store.claim_slots([slot], worker="a", at=T0, lease_s=60) == [slot]
    assert await store.claim_slots(
        [slot], worker="a", at=T0 + timedelta(seconds=50), lease_s=60
    ) == [slot]
    # renewed at +50 s, so at +100 s the lease has not run out for others
    assert (
        await store.claim_slots([slot], worker="b", at=T0 + timedelta(seconds=100), lease_s=60)
        == []
    )
    assert await store.claim_slots(
        [slot], worker="b", at=T0 + timedelta(seconds=111), lease_s=60
    ) == [slot]
    assert (
        await store.claim_slots([slot], worker="a", at=T0 + timedelta(seconds=112), lease_s=60)
        == []
    )


async def test_claims_of_budgeted_types_are_counted_across_workers(store: Store) -> None:
    """count_claims counts the claims made with a type after ``since``, whichever worker made
    them, done or not; claims without a type, older claims and other types are not counted;
    a claim renewed or taken over without a type keeps the one it had."""
    org, items = await seeded(store, "a", "b", "c", "d", "e")
    a, b, c, d, e = (i.integration_id for i in items)
    first = [SlotClaim(org, a, T0, "xledger"), SlotClaim(org, b, T0, "xledger")]
    assert await store.claim_slots(first, worker="w1", at=T0, lease_s=60) == first
    later = T0 + timedelta(seconds=30)
    second = [SlotClaim(org, c, T0, "xledger"), SlotClaim(org, d, T0, "fiken")]
    assert await store.claim_slots(second, worker="w2", at=later, lease_s=60) == second
    untyped = [SlotClaim(org, e, T0)]
    assert await store.claim_slots(untyped, worker="w2", at=later, lease_s=60) == untyped
    done = ResultWrite(**{**write(items[0], at=T0).__dict__, "slot_at": T0, "worker": "w1"})
    assert await store.record_results([done]) == 1  # done still counts as started

    since = T0 - timedelta(seconds=1)
    assert await store.count_claims({"xledger", "fiken", "tripletex"}, since=since) == {
        "xledger": 3,
        "fiken": 1,
    }
    # only claims after ``since``: the first two were made at T0
    assert await store.count_claims(["xledger"], since=T0) == {"xledger": 1}
    assert await store.count_claims([], since=since) == {}
    # taken over after the lease by a worker that does not name the type: still counted, at
    # the new claim time
    takeover = T0 + timedelta(seconds=100)
    moved = [SlotClaim(org, b, T0)]
    assert await store.claim_slots(moved, worker="w3", at=takeover, lease_s=60) == moved
    assert await store.count_claims(["xledger"], since=takeover - timedelta(minutes=1)) == {
        "xledger": 1
    }


async def test_claims_within_budgets_stop_at_what_is_left_of_each_types_budget(
    store: Store,
) -> None:
    """With ``budgets``, a budgeted type's claims are made only up to its budget less the
    type's claims of the minute before (any worker's), the earlier in the list first; claims
    without a type, and types without a budget, are made as usual. A minute later the budget
    is whole again."""
    org, items = await seeded(store, *"abcdefghij")
    ids = [i.integration_id for i in items]
    budgets = {"xledger": 3, "tripletex": 5}
    earlier = [SlotClaim(org, ids[0], T0, "xledger")]  # made without budgets: still counted
    assert await store.claim_slots(earlier, worker="w0", at=T0, lease_s=60) == earlier
    first = [
        SlotClaim(org, ids[1], T0, "xledger"),
        SlotClaim(org, ids[2], T0),
        SlotClaim(org, ids[3], T0, "xledger"),
        SlotClaim(org, ids[4], T0, "fiken"),
        SlotClaim(org, ids[5], T0, "xledger"),  # the budget's 4th: not made
    ]
    later = T0 + timedelta(seconds=20)
    got = await store.claim_slots(first, worker="w1", at=later, lease_s=60, budgets=budgets)
    assert got == first[:4]
    second = [SlotClaim(org, ids[5], T0, "xledger"), SlotClaim(org, ids[6], T0, "xledger")]
    assert await store.claim_slots(second, worker="w2", at=later, lease_s=60, budgets=budgets) == []
    assert await store.count_claims(["xledger"], since=later - timedelta(minutes=1)) == {
        "xledger": 3
    }
    # The minute after the first claims (T0 and T0 + 20 s) the budget is whole again.
    fresh = T0 + timedelta(seconds=81)
    assert (
        await store.claim_slots(second, worker="w2", at=fresh, lease_s=60, budgets=budgets)
        == second
    )
    # A budget of nothing left in the whole list makes none of that type, the rest as usual.
    rest = [SlotClaim(org, ids[7], T0, "xledger"), SlotClaim(org, ids[8], T0)]
    got = await store.claim_slots(rest, worker="w3", at=fresh, lease_s=60, budgets={"xledger": 2})
    assert got == rest[1:]


async def test_old_slot_runs_are_pruned_in_batches(store: Store) -> None:
    """prune_runs deletes runs claimed before the cutoff (done or abandoned), at most
    ``limit`` at a time, and keeps the recent ones guarding their slots."""
    org, items = await seeded(store, "a", "b", "c")
    old = [SlotClaim(org, i.integration_id, T0) for i in items]
    assert await store.claim_slots(old, worker="a", at=T0, lease_s=60) == old
    done = ResultWrite(**{**write(items[0], at=T0).__dict__, "slot_at": T0, "worker": "a"})
    assert await store.record_results([done]) == 1
    recent = SlotClaim(org, items[0].integration_id, T0 + timedelta(days=2))
    later = T0 + timedelta(days=2)
    assert await store.claim_slots([recent], worker="a", at=later, lease_s=60) == [recent]

    cutoff = later - timedelta(days=1)
    assert await store.prune_runs(cutoff, limit=2) == 2
    assert await store.prune_runs(cutoff, limit=2) == 1
    assert await store.prune_runs(cutoff, limit=2) == 0
    # The recent run still guards its slot: another worker cannot take it within the lease.
    assert await store.claim_slots([recent], worker="b", at=later, lease_s=60) == []
