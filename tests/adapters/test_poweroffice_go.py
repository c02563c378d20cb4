"""The PowerOffice Go adapter against its fake (APIM-style gateway, real sockets)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from integration_health import ErrorCode, HealthStatus, run_health_checks
from integration_health.adapters.poweroffice_go import PowerOfficeGoConfig
from integration_health.checks import CheckRegistry
from integration_health.testing import LocalServer
from integration_health.testing.vendors.poweroffice_go import PowerOfficeFake

from .conformance import CANARY, CANARY_2, AdapterConformance, RunningVendor

SUBSCRIPTION = "po-subscription-key-0a1b2c"
OTHER_SUBSCRIPTION = "po-subscription-key-9z8y7x"
TOKEN = "/OAuth/Token"
INFO = "/v2/ClientIntegrationInformation"


def fake_of(vendor: RunningVendor) -> PowerOfficeFake:
    assert isinstance(vendor.fake, PowerOfficeFake)
    return vendor.fake


class TestPowerOfficeGo(AdapterConformance):
    """Conformance plus privileges, key errors and the shared per-subscription-key rate."""

    integration_type = "poweroffice_go"
    server_error_retry_after_s = 30.0
    warms_up_tokens = True

    @pytest.fixture(autouse=True)
    def _keys(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PO_SUBSCRIPTION_KEY", SUBSCRIPTION)
        monkeypatch.setenv("PO_OTHER_SUBSCRIPTION_KEY", OTHER_SUBSCRIPTION)
        monkeypatch.setenv("PO_WRONG_KEY", "not-a-key-we-know")
        for i in range(12):
            monkeypatch.setenv(f"PO_CLIENT_{i}", f"client-key-{i}")

    @pytest.fixture
    async def vendor(self) -> AsyncIterator[RunningVendor]:
        fake = PowerOfficeFake(
            application_key=CANARY_2, client_key=CANARY, subscription_key=SUBSCRIPTION
        )
        async with LocalServer(fake.app) as server:
            yield RunningVendor(fake, server.url)

    def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
        return {
            "application_key": "${CANARY_SECRET_2}",
            "client_key": "${CANARY_SECRET}",
            "subscription_key": "${PO_SUBSCRIPTION_KEY}",
            "base_url": vendor.url,
            **overrides,
        }

    def parsed(
        self, vendor: RunningVendor, registry: CheckRegistry, org: uuid.UUID, **o: Any
    ) -> Any:
        return registry.parse(
            {
                "integration_id": str(uuid.uuid4()),
                "org_id": str(org),
                "integration_type": "poweroffice_go",
                "name": "PowerOffice",
                **self.config(vendor, **o),
            }
        )

    # -- what is sent --------------------------------------------------------------------------

    async def test_token_request_and_probe_shapes(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Basic(app:client) + subscription key + grant_type form; then the info call with both."""
        fake = fake_of(vendor)
        result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert fake.token_forms == [{"grant_type": "client_credentials"}]
        [token_call] = [r for r in fake.requests if r.path == TOKEN]
        expected = base64.b64encode(f"{CANARY_2}:{CANARY}".encode()).decode()
        assert token_call.headers["Authorization"] == f"Basic {expected}"
        assert token_call.headers["Ocp-Apim-Subscription-Key"] == SUBSCRIPTION
        [info] = [r for r in fake.requests if r.path == INFO]
        assert info.headers["Authorization"].startswith("Bearer ")
        assert info.headers["Ocp-Apim-Subscription-Key"] == SUBSCRIPTION
        assert result.details["client_name"] == "Acme AS"
        assert result.details["active_subscriptions"] == ["Accounting", "Invoicing"]

    # -- privileges and keys -------------------------------------------------------------------

    async def test_invalid_privileges_are_degraded_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A non-empty InvalidPrivileges is degraded/auth, naming the missing privileges."""
        fake_of(vendor).set_scenario("invalid_privileges")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.DEGRADED, ErrorCode.AUTH)
        assert result.details["invalid_privileges"] == ["Payroll_Full", "Bank_Full"]
        assert result.error is not None
        assert "Payroll_Full, Bank_Full" in result.error and "Acme AS" in result.error

    async def test_wrong_client_key_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A client key PowerOffice does not know (invalid_client) is auth, naming both keys."""
        result = await self.probe(vendor, registry, client_key="${PO_WRONG_KEY}")
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.error is not None and "application key or client key" in result.error
        assert result.details["oauth_error"] == "invalid_client"
        assert result.details["stage"] == "token"

    async def test_wrong_subscription_key_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """An unknown subscription key, refused by the gateway, is auth naming subscription_key."""
        result = await self.probe(vendor, registry, subscription_key="${PO_WRONG_KEY}")
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.error is not None and "subscription_key" in result.error

    async def test_throttled_keeps_retry_after(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """The gateway's 429 on the API is degraded/rate_limited with retry_after_s."""
        fake = fake_of(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.set_scenario("rate_limited")
            result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        )
        assert result.details["http_status"] == 429
        assert result.details["retry_after_s"] == 1.0

    # -- tokens --------------------------------------------------------------------------------

    async def test_concurrent_checks_share_one_token(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Eight integrations with one credential, checked at once, cause one token request."""
        fake = fake_of(vendor)
        org = uuid.uuid4()
        configs = [self.parsed(vendor, registry, org) for _ in range(8)]
        outcomes = await run_health_checks(
            org, integrations=configs, store=None, registry=registry, timeout_s=10
        )
        assert {o.result.status for o in outcomes} == {HealthStatus.HEALTHY}
        assert fake.token_requests == 1
        assert fake.count(INFO) == 8

    async def test_expired_tokens_are_refreshed(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Tokens expiring within the refresh margin are fetched again on the next check."""
        fake = fake_of(vendor)
        fake.token_lifetime_s = 30
        async with registry:
            for _ in range(2):
                assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
        assert fake.token_requests == 2

    async def test_revoked_token_is_renewed_once(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A cached token the API refuses is renewed once within the check, which stays healthy."""
        fake = fake_of(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.revoke_tokens()
            result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert result.details["token_renewed"] is True
        assert fake.token_requests == 2

    async def test_revoked_client_key_is_auth_after_one_refresh(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Cached token refused and the client key revoked: one token attempt, then auth."""
        fake = fake_of(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.set_scenario("bad_credentials")
            result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert fake.count(TOKEN) == 2
        assert fake.count(INFO) == 2

    # -- the shared rate -----------------------------------------------------------------------

    async def test_rate_is_shared_per_subscription_key(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Twelve clients on two keys stay within 10 req/s per key and never wait on each other."""
        fake = fake_of(vendor)
        fake.subscription_keys.add(OTHER_SUBSCRIPTION)
        org = uuid.uuid4()
        configs = []
        for i in range(12):
            fake.add_client(f"client-key-{i}", f"Client {i}")
            key = "${PO_SUBSCRIPTION_KEY}" if i % 2 else "${PO_OTHER_SUBSCRIPTION_KEY}"
            configs.append(
                self.parsed(
                    vendor, registry, org, client_key=f"${{PO_CLIENT_{i}}}", subscription_key=key
                )
            )
        started = time.monotonic()
        outcomes = await run_health_checks(
            org, integrations=configs, store=None, registry=registry, timeout_s=10
        )
        elapsed = time.monotonic() - started
        assert [o.result.status for o in outcomes] == [HealthStatus.HEALTHY] * 12, [
            o.result.error for o in outcomes
        ]
        assert fake.throttled == 0
        for key in (SUBSCRIPTION, OTHER_SUBSCRIPTION):
            arrivals = fake.arrival_log[key]
            assert len(arrivals) == 12  # 6 tokens + 6 calls
            assert fake.max_in_window(key) <= 10
            # Paced at 5 per second: scheduling jitter on a loaded machine can bring two
            # arrivals closer, but the pace over the whole run cannot be beaten.
            gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
            assert gaps[len(gaps) // 2] > 0.15
            assert arrivals[-1] - arrivals[0] >= 11 * 0.18
        # Each key paces its own 12 requests (~2.2 s); one global queue would take ~4.6 s.
        assert elapsed < 4.0
        # Waiting for a turn is not vendor latency: nobody is degraded for slowness.
        assert max(o.result.details.get("queued_ms", 0) for o in outcomes) > 1_000
        assert all(o.result.latency_ms < 1_000 for o in outcomes)

    async def test_unpaced_burst_would_be_throttled(self, vendor: RunningVendor) -> None:
        """The fake does enforce 10 req/s per key: an unpaced burst of 15 requests gets 429s."""
        fake = fake_of(vendor)
        async with aiohttp.ClientSession() as session:

            async def call() -> int:
                async with session.get(
                    f"{vendor.url}{INFO}", headers={"Ocp-Apim-Subscription-Key": SUBSCRIPTION}
                ) as response:
                    return response.status

            statuses = await asyncio.gather(*(call() for _ in range(15)))
        assert statuses.count(429) == 5
        assert fake.throttled == 5

    # -- config --------------------------------------------------------------------------------

    def test_interval_floor_is_thirty_minutes(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """PowerOffice watches polling: floor and default interval are 1 800 s."""
        assert PowerOfficeGoConfig.min_check_interval_s == 1_800
        assert self.parsed(vendor, registry, uuid.uuid4()).check_interval_s == 1_800
        with pytest.raises(ValueError, match="at least 1800 seconds"):
            self.parsed(vendor, registry, uuid.uuid4(), check_interval_s=900)
