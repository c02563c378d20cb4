"""The Dataverse adapter against its fake (Entra token endpoint + WhoAmI, real sockets)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from integration_health import ErrorCode, HealthStatus, run_health_checks
from integration_health.checks import CheckRegistry
from integration_health.testing import LocalServer
from integration_health.testing.vendors.dataverse import DataverseFake

from .conformance import CANARY, AdapterConformance, RunningVendor

TENANT = "contoso.onmicrosoft.com"
CLIENT = "51f81489-12ee-4a9e-aaae-a2591f45987d"
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"
WHO_AM_I = "/api/data/v9.2/WhoAmI"


def fake_of(vendor: RunningVendor) -> DataverseFake:
    assert isinstance(vendor.fake, DataverseFake)
    return vendor.fake


class TestDataverse(AdapterConformance):
    """Conformance plus Dataverse's application-user, throttling and environment cases."""

    integration_type = "dataverse"
    server_error_retry_after_s = 30.0
    warms_up_tokens = True

    @pytest.fixture
    async def vendor(self) -> AsyncIterator[RunningVendor]:
        fake = DataverseFake(tenant_id=TENANT, client_id=CLIENT, client_secret=CANARY)
        async with LocalServer(fake.app) as server:
            yield RunningVendor(fake, server.url)

    def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
        return {
            "environment_url": vendor.url,
            "tenant_id": TENANT,
            "client_id": CLIENT,
            "client_secret": "${CANARY_SECRET}",
            "authority_url": vendor.url,
            **overrides,
        }

    async def test_probe_asks_for_the_environment_scope_and_calls_who_am_i(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """The token is asked for {environment_url}/.default; WhoAmI carries OData headers."""
        fake = fake_of(vendor)
        result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        [form] = fake.token_forms
        assert form["scope"] == f"{vendor.url}/.default"
        assert form["grant_type"] == "client_credentials"
        [call] = [r for r in fake.requests if r.path == WHO_AM_I]
        assert call.headers["OData-MaxVersion"] == "4.0"
        assert call.headers["Accept"] == "application/json"
        assert result.details["user_id"] == fake.application_users[CLIENT]
        assert result.details["organization_id"] == fake.organization_id
        assert result.details["request_id"]

    async def test_api_suffix_of_environment_url_is_dropped(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """An environment_url pasted with /api/data/v9.2/ still probes and scopes correctly."""
        fake = fake_of(vendor)
        result = await self.probe(vendor, registry, environment_url=f"{vendor.url}/api/data/v9.2/")
        assert result.status is HealthStatus.HEALTHY, result.error
        assert fake.token_forms[0]["scope"] == f"{vendor.url}/.default"

    async def test_throttled_keeps_retry_after(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Dataverse's 429 is degraded/rate_limited, Retry-After kept as retry_after_s."""
        fake_of(vendor).set_scenario("rate_limited")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        )
        assert result.details["retry_after_s"] == 37.0
        assert result.details["vendor_code"] == "0x80072322"
        assert result.error is not None and "6000" in result.error

    async def test_missing_application_user_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """An app without an application user (403) is auth, saying to create one."""
        fake_of(vendor).application_users.clear()
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.error is not None and "application user" in result.error
        assert result.details["vendor_code"] == "0x80072560"

    async def test_unknown_environment_resource_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Entra's AADSTS500011 for the environment's scope is not_found; no Web API call."""
        fake = fake_of(vendor)
        fake.set_scenario("not_found")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert result.details["aadsts"] == 500011
        assert fake.count(WHO_AM_I) == 0

    async def test_environment_without_web_api_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A 404 from the environment is not_found pointing at environment_url."""
        fake_of(vendor).set_scenario("org_not_found")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert result.error is not None and "environment_url" in result.error

    async def test_wrong_tenant_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A tenant Entra does not know (AADSTS90002) is not_found."""
        result = await self.probe(vendor, registry, tenant_id="fabrikam.onmicrosoft.com")
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert result.details["aadsts"] == 90002

    async def test_wrong_secret_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A wrong secret is auth with Entra's AADSTS7000215 sentence."""
        result = await self.probe(vendor, registry, client_secret="${CANARY_SECRET_2}")
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.error is not None and "AADSTS7000215" in result.error

    async def test_fifty_concurrent_checks_fetch_one_token(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Fifty integrations with one credential, checked at once, cause one token request."""
        fake = fake_of(vendor)
        org = uuid.uuid4()
        configs = [
            registry.parse(
                {
                    "integration_id": str(uuid.uuid4()),
                    "org_id": str(org),
                    "integration_type": "dataverse",
                    "name": f"dv {i}",
                    **self.config(vendor),
                }
            )
            for i in range(50)
        ]
        outcomes = await run_health_checks(
            org, integrations=configs, store=None, registry=registry, timeout_s=5
        )
        assert {o.result.status for o in outcomes} == {HealthStatus.HEALTHY}
        assert fake.count(TOKEN_PATH) == 1
        assert fake.count(WHO_AM_I) == 50

    async def test_short_lived_tokens_are_refreshed(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Tokens that expire within the refresh margin are fetched again on the next check."""
        fake = fake_of(vendor)
        fake.token_lifetime_s = 30  # below the cache's 60 s refresh margin
        async with registry:
            for _ in range(2):
                assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
        assert fake.token_requests == 2

    async def test_revoked_token_then_revoked_app_user_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Cached token refused (401), the fresh one too: auth after exactly one refresh."""
        fake = fake_of(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.revoke_tokens()
            fake.tenant_id = "someone-else"  # every token is now for the wrong tenant
            result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["token_renewed"] is True
        assert fake.count(TOKEN_PATH) == 2
        assert fake.count(WHO_AM_I) == 3
