"""Rate limits of the write endpoints: 429 with Retry-After, per organisation and per key.

"Check now" is limited per organisation (one run per ``run_now_interval_s``); sync outcomes
per organisation and per service key (token buckets, :mod:`integration_health.web.ratelimit`).
Everything runs against the app on a real 127.0.0.1 socket with small limits; the limiter's
arithmetic is tested with an injected clock, so nothing waits on wall time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from integration_health.settings import Settings
from integration_health.web import create_app
from integration_health.web.ratelimit import (
    Rate,
    RunNowLimiter,
    SyncOutcomeLimiter,
    WriteRateLimit,
)
from tests.web.live import HS_SECRET, SERVICE_KEY, LiveServer, World, bearer, claims_for, hs_token

PER_ORG = Rate(per_s=0.01, burst=3)  # 3 at once, then one per 100 s
PER_KEY = Rate(per_s=0.01, burst=5)


def _settings(sqlite_url: str, **extra: Any) -> Settings:
    return Settings(
        database_url=sqlite_url,
        jwt_secret=HS_SECRET,
        service_key=SERVICE_KEY,
        allow_private_networks=True,
        **extra,
    )


def _limited(app: FastAPI, settings: Settings) -> Any:
    """The app behind a write limiter with the tests' small limits.

    (Where ``create_app`` installs its own with the default limits, this outer one, being
    stricter, is the one that answers 429.)
    """
    return WriteRateLimit(app, settings, limiter=SyncOutcomeLimiter(PER_ORG, PER_KEY))


@pytest.fixture
def server(sqlite_url: str) -> Iterator[LiveServer]:
    """A fresh app per test (fresh limits), sync outcomes limited to PER_ORG / PER_KEY."""
    settings = _settings(sqlite_url, run_now_interval_s=600)
    app = create_app(settings)
    with LiveServer(_limited(app, settings)) as live:
        yield live


def _outcome(
    server: LiveServer, org: uuid.UUID, integration: uuid.UUID, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/orgs/{org}/integrations/{integration}/sync-outcomes",
        json={"ok": True, "duration_ms": 5},
        headers=headers or {"X-Service-Key": SERVICE_KEY},
        timeout=10,
    )


def _assert_429(response: httpx.Response, max_wait_s: int) -> None:
    assert response.status_code == 429, response.text
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= max_wait_s
    body = response.json()
    assert body["error"]["code"] == "rate_limited"
    assert SERVICE_KEY not in response.text


# -- check now ----------------------------------------------------------------------------------


def test_run_now_twice_is_429_with_retry_after_and_other_orgs_are_unaffected(
    server: LiveServer, world: World
) -> None:
    """A second "check now" of the same organisation is 429; another organisation still runs."""
    a = bearer(hs_token(claims_for(world.user_a)))
    b = bearer(hs_token(claims_for(world.user_b)))
    first = httpx.post(f"{server.url}/api/orgs/{world.org_a}/health/checks", headers=a, timeout=30)
    assert first.status_code == 200, first.text
    second = httpx.post(f"{server.url}/api/orgs/{world.org_a}/health/checks", headers=a, timeout=30)
    _assert_429(second, 600)
    other = httpx.post(f"{server.url}/api/orgs/{world.org_b}/health/checks", headers=b, timeout=30)
    assert other.status_code == 200, other.text


def test_run_now_of_a_foreign_org_is_404_and_spends_nothing(
    server: LiveServer, world: World
) -> None:
    """A user cannot use up another organisation's "check now" budget: 404, not 429 later."""
    a = bearer(hs_token(claims_for(world.user_a)))
    b = bearer(hs_token(claims_for(world.user_b)))
    for _ in range(3):
        foreign = httpx.post(
            f"{server.url}/api/orgs/{world.org_b}/health/checks", headers=a, timeout=30
        )
        assert foreign.status_code == 404
    own = httpx.post(f"{server.url}/api/orgs/{world.org_b}/health/checks", headers=b, timeout=30)
    assert own.status_code == 200, own.text


# -- sync outcomes --------------------------------------------------------------------------------


def test_sync_outcomes_past_the_org_burst_are_429(server: LiveServer, world: World) -> None:
    """An organisation's burst of sync outcomes is accepted, the next one is 429 + Retry-After."""
    for _ in range(PER_ORG.burst):
        assert _outcome(server, world.org_a, world.a_ok).status_code == 200
    _assert_429(_outcome(server, world.org_a, world.a_ok), 100)
    # Another organisation has its own budget.
    assert _outcome(server, world.org_b, world.b_secret).status_code == 200


def test_sync_outcomes_past_the_key_burst_are_429_across_orgs(
    server: LiveServer, world: World
) -> None:
    """One service key cannot exceed its own budget by spreading outcomes over organisations."""
    accepted = 0
    for org, integration in [(world.org_a, world.a_ok)] * 3 + [(world.org_b, world.b_secret)] * 3:
        response = _outcome(server, org, integration)
        if response.status_code == 200:
            accepted += 1
        else:
            _assert_429(response, 100)
    assert accepted == PER_KEY.burst


def test_wrong_keys_get_401_and_spend_no_budget(server: LiveServer, world: World) -> None:
    """Requests with a wrong key are 401 (never 429) and leave the real key's budget intact."""
    for _ in range(10):
        wrong = _outcome(server, world.org_a, world.a_ok, **{"X-Service-Key": "canary-wrong-key-1"})
        assert wrong.status_code == 401
    for _ in range(PER_ORG.burst):
        assert _outcome(server, world.org_a, world.a_ok).status_code == 200


def test_the_bearer_form_of_the_key_is_limited_alike(server: LiveServer, world: World) -> None:
    """The key sent as 'Authorization: Bearer' shares the budget of the X-Service-Key form."""
    for _ in range(PER_ORG.burst):
        assert _outcome(server, world.org_a, world.a_ok).status_code == 200
    _assert_429(
        _outcome(server, world.org_a, world.a_ok, Authorization=f"Bearer {SERVICE_KEY}"), 100
    )


def test_an_outcome_under_another_orgs_path_is_404(server: LiveServer, world: World) -> None:
    """An integration of org B posted under org A's path is not found (and B is unchanged)."""
    response = _outcome(server, world.org_a, world.b_secret)
    assert response.status_code == 404, response.text
    assert world.B_INTEGRATION not in response.text


def test_create_app_limits_sync_outcomes_itself(sqlite_url: str, world: World) -> None:
    """The app built by create_app, unwrapped, answers a flood of sync outcomes with 429 and
    Retry-After once the per-organisation burst (100) is spent."""
    settings = _settings(sqlite_url, run_now_interval_s=600)
    with LiveServer(create_app(settings)) as live, httpx.Client() as client:
        url = f"{live.url}/api/orgs/{world.org_a}/integrations/{world.a_ok}/sync-outcomes"
        statuses = []
        for _ in range(400):
            response = client.post(
                url, json={"ok": True, "duration_ms": 5}, headers={"X-Service-Key": SERVICE_KEY}
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                break
    assert statuses[-1] == 429, statuses[-5:]
    assert statuses.count(202) + statuses.count(200) >= 100


# -- the limiter's arithmetic (injected clock) ---------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_buckets_refill_at_their_rate_and_refusals_cost_nothing() -> None:
    """After the burst, one outcome per 1/rate seconds; a refused request takes no token."""
    clock = Clock()
    limiter = SyncOutcomeLimiter(Rate(per_s=0.5, burst=2), Rate(per_s=100, burst=100), clock=clock)
    org = uuid.uuid4()
    assert limiter.acquire(org, "k") is None
    assert limiter.acquire(org, "k") is None
    assert limiter.acquire(org, "k") == 2  # 1 token at 0.5/s
    clock.now += 1.0
    assert limiter.acquire(org, "k") == 1  # refusals did not dig the hole deeper
    clock.now += 1.0
    assert limiter.acquire(org, "k") is None
    assert limiter.acquire(org, "k") == 2


def test_run_now_limiter_counts_down_and_forgets() -> None:
    """Retry-After counts down to the end of the interval; then the org may run again."""
    clock = Clock()
    limiter = RunNowLimiter(60, clock=clock)
    org = uuid.uuid4()
    assert limiter.acquire(org) is None
    clock.now += 15.5
    assert limiter.acquire(org) == 45
    clock.now += 44.5
    assert limiter.acquire(org) is None


def test_rates_must_be_positive() -> None:
    """A zero rate or burst is a clear error, not a limiter that refuses or divides by zero."""
    with pytest.raises(ValueError, match="per_s > 0"):
        Rate(per_s=0, burst=1)
    with pytest.raises(ValueError, match="burst >= 1"):
        Rate(per_s=1, burst=0)
