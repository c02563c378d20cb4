"""The engine over real stores (memory, SQLite, PostgreSQL), delivering to a real receiver."""

from __future__ import annotations

from datetime import timedelta

from integration_health import HealthStatus
from integration_health.alerting import (
    AlertState,
    DeliveryState,
    Severity,
    WebhookTarget,
    verify_signature,
)

from .conftest import SECRET_ENV, Backend, Receiver, Timeline, config_for, record, seed

H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNREACHABLE


async def test_hysteresis_end_to_end(
    backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """3 failures open one alert and one delivery; 2 successes resolve it; all signed."""
    fake, url = receiver
    [item] = await seed(backend.main)
    service = await backend.service(config_for(url))
    timeline = Timeline()
    for n in range(3):
        await record(backend.main, [item], U, timeline.next())
        evaluation, _ = await service.run_once(timeline.now)
        assert evaluation.opened == (1 if n == 2 else 0)
    [alert] = await service.store.list_alerts(item.org_id)
    assert alert.state is AlertState.OPEN
    assert alert.severity is Severity.UNREACHABLE
    assert alert.consecutive_failures == 3
    assert alert.opened_at == timeline.now
    assert alert.first_failure_at == timeline.now - timedelta(minutes=30)
    assert alert.error == "The vendor answered HTTP 503."
    assert fake.events() == ["alert.opened"]

    await record(backend.main, [item], H, timeline.next())
    await service.run_once(timeline.now)
    assert fake.events() == ["alert.opened"]
    await record(backend.main, [item], H, timeline.next())
    evaluation, _ = await service.run_once(timeline.now)
    assert evaluation.resolved == 1
    [alert] = await service.store.list_alerts(item.org_id)
    assert alert.state is AlertState.RESOLVED
    assert alert.resolved_at == timeline.now
    assert fake.events() == ["alert.opened", "alert.resolved"]
    for request in fake.requests:
        header = request.headers["X-Integration-Health-Signature"]
        assert verify_signature(secret_env, header, request.body)
    opened = fake.requests[0].json
    assert opened["alert"]["integration_id"] == str(item.integration_id)
    assert opened["alert"]["severity"] == "critical"


async def test_evaluating_again_changes_nothing(
    backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """Evaluate is idempotent: repeating it writes no second alert and no second delivery."""
    fake, url = receiver
    items = await seed(backend.main, orgs=2, per_org=2)
    service = await backend.service(config_for(url))
    timeline = Timeline()
    for _ in range(3):
        await record(backend.main, items, U, timeline.next())
    for _ in range(3):
        await service.run_once(timeline.now)
    assert len(await service.store.list_alerts()) == 4
    assert len(await service.store.list_deliveries()) == 4
    assert len(fake.requests) == 4


async def test_flapping_does_not_spam(
    backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """Flapping results produce at most one alert and two notifications in total."""
    fake, url = receiver
    [item] = await seed(backend.main)
    service = await backend.service(config_for(url))
    timeline = Timeline()
    for status in [U, U, H] * 4 + [U, U, U] + [H, U] * 5 + [H, H] + [U, H] * 3:
        await record(backend.main, [item], status, timeline.next())
        await service.run_once(timeline.now)
    assert len(await service.store.list_alerts()) == 1
    assert fake.events() == ["alert.opened", "alert.resolved"]


async def test_degraded_routes_separately_from_unreachable(
    backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """A paging webhook for unreachable only hears of a degraded alert when it escalates."""
    fake, url = receiver
    pager = WebhookTarget(
        name="pager", url=url, secret=f"${{{SECRET_ENV}}}", severities=["unreachable"]
    )
    chat = WebhookTarget(name="chat", url=url, secret=f"${{{SECRET_ENV}}}")
    config = config_for().model_copy(update={"webhooks": (pager, chat)})
    [item] = await seed(backend.main)
    service = await backend.service(config)
    timeline = Timeline()
    for status in (D, D, D):
        await record(backend.main, [item], status, timeline.next())
        await service.run_once(timeline.now)
    [alert] = await service.store.list_alerts()
    assert alert.severity is Severity.DEGRADED
    assert [(d.target, d.event) for d in await service.store.list_deliveries()] == [
        ("chat", "alert.opened")
    ]
    assert fake.requests[0].json["alert"]["severity"] == "warning"
    for status in (U, U, U):
        await record(backend.main, [item], status, timeline.next())
        await service.run_once(timeline.now)
    delivered = sorted((d.target, d.event) for d in await service.store.list_deliveries())
    assert delivered == [
        ("chat", "alert.escalated"),
        ("chat", "alert.opened"),
        ("pager", "alert.escalated"),
    ]
    for status in (H, H):
        await record(backend.main, [item], status, timeline.next())
        await service.run_once(timeline.now)
    resolved = sorted(
        d.target for d in await service.store.list_deliveries() if d.event == "alert.resolved"
    )
    assert resolved == ["chat", "pager"]


async def test_alert_resolved_before_it_was_sent_is_never_sent(
    backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """An alert that resolves while its notification waits for a retry is dropped whole."""
    fake, url = receiver
    fake.statuses = [503] * 5
    [item] = await seed(backend.main)
    service = await backend.service(config_for(url))
    timeline = Timeline()
    for status in (U, U, U):
        await record(backend.main, [item], status, timeline.next())
        await service.run_once(timeline.now)
    [opened] = await service.store.list_deliveries()
    assert opened.state is DeliveryState.PENDING  # waiting for its retry
    for status in (H, H):
        await record(backend.main, [item], status, timeline.next())
        await service.run_once(timeline.now)
    [cancelled] = await service.store.list_deliveries()
    assert cancelled.state is DeliveryState.CANCELLED
    await service.deliverer.deliver_pending(timeline.now + timedelta(days=1))
    assert set(fake.events()) == {"alert.opened"}  # attempts that got a 503, no resolve


async def test_results_of_other_integrations_are_independent(
    backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """Each integration has its own streaks: failures spread across two do not add up."""
    fake, url = receiver
    a, b = await seed(backend.main, per_org=2)
    service = await backend.service(config_for(url))
    timeline = Timeline()
    for first, second in [(U, H), (U, U), (U, U), (H, H)]:
        at = timeline.next()
        await record(backend.main, [a], first, at)
        await record(backend.main, [b], second, at)
        await service.run_once(at)
    [alert] = await service.store.list_alerts()
    assert alert.integration_id == a.integration_id
    assert len(fake.requests) == 1
