"""Vendor-wide incidents: one incident instead of an alert per organisation."""

from __future__ import annotations

from integration_health import HealthStatus
from integration_health.alerting import AlertState

from .conftest import Backend, Receiver, Timeline, config_for, record, seed

H, U = HealthStatus.HEALTHY, HealthStatus.UNREACHABLE


async def test_ten_orgs_failing_at_once_make_one_incident(
    backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """10 organisations' xledger integrations failing together open one incident — not 10
    alerts — and their recovery resolves it."""
    fake, url = receiver
    items = await seed(backend.main, orgs=10, integration_type="xledger")
    bystander = await seed(backend.main, orgs=1, integration_type="http")
    service = await backend.service(config_for(url))
    timeline = Timeline()
    for _ in range(4):
        await record(backend.main, items, U, timeline.next())
        await record(backend.main, bystander, H, timeline.now)
        await service.run_once(timeline.now)
    [incident] = await service.store.list_incidents()
    assert incident.integration_type == "xledger"
    assert incident.state is AlertState.OPEN
    assert (incident.failing_orgs, incident.failing_integrations) == (10, 10)
    assert incident.total_integrations == 10
    alerts = await service.store.list_alerts()
    assert len(alerts) == 10  # recorded, per organisation, for the dashboard…
    assert all(a.incident_id == incident.id and a.suppressed for a in alerts)
    assert fake.events() == ["incident.opened"]  # …but notified once
    body = fake.requests[0].json
    assert body["incident"]["failing_organizations"] == 10
    assert body["severity"] == "critical"

    for _ in range(2):
        await record(backend.main, items, H, timeline.next())
        await service.run_once(timeline.now)
    [incident] = await service.store.list_incidents()
    assert incident.state is AlertState.RESOLVED
    assert incident.resolved_at == timeline.now
    assert all(a.state is AlertState.RESOLVED for a in await service.store.list_alerts())
    assert fake.events() == ["incident.opened", "incident.resolved"]


async def test_an_alert_that_outlives_the_incident_is_notified_on_its_own(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """When the vendor recovers but one organisation keeps failing, its alert is released."""
    fake, url = receiver
    items = await seed(sqlite_backend.main, orgs=10, integration_type="xledger")
    service = await sqlite_backend.service(config_for(url))
    timeline = Timeline()
    for _ in range(3):
        await record(sqlite_backend.main, items, U, timeline.next())
        await service.run_once(timeline.now)
    for _ in range(2):
        await record(sqlite_backend.main, items[1:], H, timeline.next())
        await record(sqlite_backend.main, items[:1], U, timeline.now)
        await service.run_once(timeline.now)
    [incident] = await service.store.list_incidents()
    assert incident.state is AlertState.RESOLVED
    assert incident.peak_failing_orgs == 10
    assert fake.events()[0] == "incident.opened"
    assert sorted(fake.events()[1:]) == ["alert.opened", "incident.resolved"]  # sent together
    [released] = [r.json for r in fake.requests if r.event == "alert.opened"]
    assert released["alert"]["integration_id"] == str(items[0].integration_id)
    assert released["alert"]["incident_id"] == str(incident.id)
    assert "not explained by the vendor outage" in released["note"]
    [still_open] = await service.store.list_alerts(open_only=True)
    assert not still_open.suppressed


async def test_an_alert_sent_before_the_incident_is_grouped_but_keeps_its_lifecycle(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """An alert already notified when the incident opens is attached to it, and its
    resolution is still notified."""
    fake, url = receiver
    first, *others = await seed(sqlite_backend.main, orgs=6, integration_type="xledger")
    config = config_for(url, vendor_incidents={"window_s": 3600})
    service = await sqlite_backend.service(config)
    timeline = Timeline()
    for _ in range(3):
        await record(sqlite_backend.main, [first], U, timeline.next())
        await service.run_once(timeline.now)
    assert fake.events() == ["alert.opened"]
    for _ in range(2):
        await record(sqlite_backend.main, [first, *others], U, timeline.next())
        await service.run_once(timeline.now)
    [incident] = await service.store.list_incidents()
    [early] = [
        a for a in await service.store.list_alerts() if a.integration_id == first.integration_id
    ]
    assert early.incident_id == incident.id
    assert not early.suppressed
    for _ in range(2):
        await record(sqlite_backend.main, [first, *others], H, timeline.next())
        await service.run_once(timeline.now)
    assert sorted(fake.events()) == sorted(
        ["alert.opened", "incident.opened", "alert.resolved", "incident.resolved"]
    )


async def test_a_share_of_a_small_vendor_opens_an_incident(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """3 of 4 organisations of a type failing (75 % ≥ 50 %) is vendor-wide, below K = 5."""
    fake, url = receiver
    items = await seed(sqlite_backend.main, orgs=4, integration_type="fiken")
    service = await sqlite_backend.service(config_for(url))
    timeline = Timeline()
    for _ in range(2):
        await record(sqlite_backend.main, items[:3], U, timeline.next())
        await record(sqlite_backend.main, items[3:], H, timeline.now)
        await service.run_once(timeline.now)
    [incident] = await service.store.list_incidents()
    assert (incident.failing_orgs, incident.total_integrations) == (3, 4)
    assert fake.events() == ["incident.opened"]


async def test_failures_that_began_apart_do_not_make_an_incident(
    backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """Organisations that started failing hours apart get their own alerts, no incident."""
    fake, url = receiver
    items = await seed(backend.main, orgs=6, integration_type="xledger")
    service = await backend.service(config_for(url))
    timeline = Timeline()
    failing: list = []
    for item in items:
        failing.append(item)
        for _ in range(3):  # 45 minutes per organisation: beyond the 30-minute window
            await record(backend.main, failing, U, timeline.next())
            await service.run_once(timeline.now)
    assert await service.store.list_incidents() == []
    assert len(await service.store.list_alerts()) == 6
    assert fake.events() == ["alert.opened"] * 6


async def test_incidents_can_be_turned_off(
    sqlite_backend: Backend, receiver: tuple[Receiver, str], secret_env: str
) -> None:
    """With vendor incidents disabled every organisation gets its own alert."""
    fake, url = receiver
    items = await seed(sqlite_backend.main, orgs=10, integration_type="xledger")
    service = await sqlite_backend.service(config_for(url, vendor_incidents={"enabled": False}))
    timeline = Timeline()
    for _ in range(3):
        await record(sqlite_backend.main, items, U, timeline.next())
        await service.run_once(timeline.now)
    assert await service.store.list_incidents() == []
    assert fake.events() == ["alert.opened"] * 10
