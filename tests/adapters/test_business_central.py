"""The Business Central adapter against its fake (Entra token endpoint + API, real sockets)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from integration_health import ErrorCode, HealthStatus, run_health_checks
from integration_health.adapters._tokens import TokenCache
from integration_health.checks import CheckRegistry
from integration_health.testing import LocalServer
from integration_health.testing.vendors.business_central import BusinessCentralFake

from .conformance import CANARY, AdapterConformance, RunningVendor

TENANT = "3f5e1a2b-1111-4c3d-9e8f-0a1b2c3d4e5f"
CLIENT = "9b2c7d4e-2222-4f00-8a1b-123456789abc"
COMPANY = "824820a2-508c-ed11-aada-000d3a298ab3"
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"
COMPANIES = f"/v2.0/{TENANT}/Production/api/v2.0/companies"


def fake_of(vendor: RunningVendor) -> BusinessCentralFake:
    assert isinstance(vendor.fake, BusinessCentralFake)
    return vendor.fake


class TestBusinessCentral(AdapterConformance):
    """Conformance plus the Entra, environment and company cases of Business Central."""

    integration_type = "business_central"
    server_error_retry_after_s = 30.0
    warms_up_tokens = True

    @pytest.fixture
    async def vendor(self) -> AsyncIterator[RunningVendor]:
        fake = BusinessCentralFake(tenant_id=TENANT, client_id=CLIENT, client_secret=CANARY)
        async with LocalServer(fake.app) as server:
            yield RunningVendor(fake, server.url)

    def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
        return {
            "tenant_id": TENANT,
            "environment": "Production",
            "client_id": CLIENT,
            "client_secret": "${CANARY_SECRET}",
            "base_url": vendor.url,
            "authority_url": vendor.url,
            **overrides,
        }

    # -- what is sent --------------------------------------------------------------------------

    async def test_probe_sends_client_credentials_and_reads_one_company(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """The token form is Entra's client-credentials form; the probe reads $top=1 company."""
        fake = fake_of(vendor)
        result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        [form] = fake.token_forms
        assert form == {
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": "<secret>",
            "scope": "https://api.businesscentral.dynamics.com/.default",
        }
        assert fake.api_queries == [{"$top": "1", "$select": "id,name"}]
        [api] = [r for r in fake.requests if r.path == COMPANIES]
        assert api.headers["Authorization"].startswith("Bearer ")
        assert api.headers["Data-Access-Intent"] == "ReadOnly"
        assert result.details["company_id"] == COMPANY
        assert result.details["company_name"] == "CRONUS AS"
        assert result.details["environment"] == "Production"

    async def test_configured_company_is_read_by_id(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """With company_id set the probe reads companies({id}) and reports that company."""
        fake = fake_of(vendor)
        result = await self.probe(vendor, registry, company_id=COMPANY)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert fake.count(f"{COMPANIES}({COMPANY})") == 1
        assert fake.api_queries == [{"$select": "id,name"}]
        assert result.details["company_id"] == COMPANY

    @pytest.mark.parametrize(
        "code", ["BadRequest_NotFound", "Internal_CompanyNotFound", "BadRequest_ResourceNotFound"]
    )
    async def test_missing_company_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry, code: str
    ) -> None:
        """A configured company BC does not know is unreachable/not_found naming company_id."""
        fake = fake_of(vendor)
        fake.company_not_found_code = code
        missing = str(uuid.uuid4())
        result = await self.probe(vendor, registry, company_id=missing)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert result.error is not None
        assert missing in result.error and "company_id" in result.error
        assert result.details["vendor_code"] == code
        assert result.details["correlation_id"]

    async def test_environment_without_companies_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """An environment listing no company is unreachable/not_found."""
        fake_of(vendor).companies.clear()
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )

    # -- tenant and environment ----------------------------------------------------------------

    async def test_unknown_environment_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """An environment name BC does not know is unreachable/not_found naming it."""
        result = await self.probe(vendor, registry, environment="Sandbox2")
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert result.error is not None and "'Sandbox2'" in result.error

    async def test_unknown_environment_with_company_names_the_environment(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """With company_id set, an unknown environment is still reported as the environment."""
        result = await self.probe(vendor, registry, environment="Sandbox2", company_id=COMPANY)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert result.error is not None
        assert result.error.startswith("Environment 'Sandbox2' was not found")
        assert result.details["vendor_code"] == "EnvironmentNotFound"

    async def test_unknown_tenant_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Entra's AADSTS90002 (tenant not found) is unreachable/not_found pointing at tenant_id."""
        result = await self.probe(vendor, registry, tenant_id="nobody.onmicrosoft.com")
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert result.error is not None and "tenant_id" in result.error
        assert result.details["aadsts"] == 90002
        assert result.details["stage"] == "token"

    async def test_tenant_unavailable_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """BC's Internal_TenantUnavailable is unreachable/not_found, not a server error."""
        fake_of(vendor).set_scenario("tenant_unavailable")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert result.details["vendor_code"] == "Internal_TenantUnavailable"

    # -- Entra errors --------------------------------------------------------------------------

    async def test_wrong_secret_is_aadsts7000215(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A wrong secret is auth with a sentence telling to renew it in the app registration."""
        result = await self.probe(vendor, registry, client_secret="${CANARY_SECRET_2}")
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.error is not None
        assert result.error.startswith(
            "Client secret rejected by Entra ID (AADSTS7000215): renew it in the app registration"
        )
        assert result.details["aadsts"] == 7000215
        assert result.details["oauth_error"] == "invalid_client"

    @pytest.mark.parametrize(
        ("scenario", "aadsts", "phrase"),
        [
            ("expired_secret", 7000222, "Client secret expired (AADSTS7000222): create a new one"),
            ("unknown_app", 700016, f"Application {CLIENT} was not found in the tenant"),
        ],
    )
    async def test_entra_refusals_are_auth_with_a_sentence(
        self,
        vendor: RunningVendor,
        registry: CheckRegistry,
        scenario: str,
        aadsts: int,
        phrase: str,
    ) -> None:
        """Expired secrets and unknown apps are auth, each with a sentence saying what to do."""
        fake_of(vendor).set_scenario(scenario)
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.error is not None and result.error.startswith(phrase)
        assert result.details["aadsts"] == aadsts

    async def test_app_not_registered_in_bc_is_auth_without_retry(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A fresh token BC refuses (app not registered) is auth at once: one token, one call."""
        fake = fake_of(vendor)
        fake.set_scenario("app_not_registered")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.error is not None and "Microsoft Entra Applications" in result.error
        assert result.details["vendor_code"] == "Authentication_InvalidCredentials"
        assert fake.count(TOKEN_PATH) == 1
        assert fake.count(COMPANIES) == 1

    @pytest.mark.parametrize(
        ("token_scenario", "expected"),
        [
            ("rate_limited", (HealthStatus.DEGRADED, ErrorCode.RATE_LIMITED)),
            ("server_error", (HealthStatus.UNREACHABLE, ErrorCode.SERVER_ERROR)),
            ("garbage", (HealthStatus.UNREACHABLE, ErrorCode.BAD_RESPONSE)),
            ("reset", (HealthStatus.UNREACHABLE, ErrorCode.CONNECTION)),
        ],
    )
    async def test_token_endpoint_failures(
        self,
        vendor: RunningVendor,
        registry: CheckRegistry,
        token_scenario: str,
        expected: tuple[HealthStatus, ErrorCode],
    ) -> None:
        """Failures of Entra itself map like the API's; its Retry-After is kept; no API call."""
        fake = fake_of(vendor)
        fake.set_token_scenario(token_scenario)
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == expected, result.error
        if token_scenario in ("rate_limited", "server_error"):
            assert result.details["retry_after_s"] == 30.0
        assert fake.count(COMPANIES) == 0

    # -- rate limits ---------------------------------------------------------------------------

    @pytest.mark.parametrize("retry_after", [None, 120])
    async def test_rate_limited_keeps_retry_after_when_sent(
        self, vendor: RunningVendor, registry: CheckRegistry, retry_after: int | None
    ) -> None:
        """HTTP 429 is degraded/rate_limited; Retry-After becomes retry_after_s only if sent."""
        fake = fake_of(vendor)
        fake.rate_limit_retry_after_s = retry_after
        fake.set_scenario("rate_limited")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        )
        assert result.details.get("retry_after_s") == (
            None if retry_after is None else float(retry_after)
        )
        assert result.details["vendor_code"] == "Application_TooManyRequests"

    # -- the token cache -----------------------------------------------------------------------

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
                    "integration_type": "business_central",
                    "name": f"bc {i}",
                    **self.config(vendor),
                }
            )
            for i in range(50)
        ]
        outcomes = await run_health_checks(
            org, integrations=configs, store=None, registry=registry, timeout_s=5
        )
        assert [o.result.status for o in outcomes] == [HealthStatus.HEALTHY] * 50
        assert fake.token_requests == 1
        assert fake.count(TOKEN_PATH) == 1
        assert fake.count(COMPANIES) == 50

    async def test_expired_token_is_refreshed(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Once the cached token nears its expiry (fake clock) the next check fetches a new one."""
        fake = fake_of(vendor)
        skew = [0.0]  # tokens expire on time.monotonic(); the cache's clock runs ahead by skew
        registry.context.tokens = TokenCache(clock=lambda: time.monotonic() + skew[0])
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            skew[0] = 3_000  # still fresh: 3 599 s tokens, refreshed 60 s before expiry
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            assert fake.token_requests == 1
            skew[0] = 3_560  # within the refresh margin now
            result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert fake.token_requests == 2
        assert "token_renewed" not in result.details

    async def test_revoked_token_is_renewed_once_and_stays_healthy(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A cached token BC suddenly refuses (401) is replaced once within the same check."""
        fake = fake_of(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.revoke_tokens()
            result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert result.details["token_renewed"] is True
        assert fake.token_requests == 2
        assert fake.count(COMPANIES) == 3

    async def test_revoked_credentials_are_auth_after_one_refresh(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Cached token refused and the secret revoked: one refresh attempt, then auth."""
        fake = fake_of(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.set_scenario("bad_credentials")
            result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["aadsts"] == 7000215
        assert fake.count(TOKEN_PATH) == 2
        assert fake.count(COMPANIES) == 2

    async def test_token_refused_again_after_refresh_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A cached token refused, then the fresh one too: auth after exactly one refresh."""
        fake = fake_of(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.set_scenario("app_not_registered")
            result = await self.probe(vendor, registry)
            assert (result.status, result.error_code) == (
                HealthStatus.UNREACHABLE,
                ErrorCode.AUTH,
            )
            assert result.details["token_renewed"] is True
            assert fake.count(TOKEN_PATH) == 2
            assert fake.count(COMPANIES) == 3
            # The next check starts from the (refused but fresh) token: still one refresh each.
            await self.probe(vendor, registry)
        assert fake.count(TOKEN_PATH) == 3
        assert fake.count(COMPANIES) == 5

    async def test_concurrent_refusals_refresh_the_token_once(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Ten checks whose shared cached token is revoked renew it with one token request."""
        fake = fake_of(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.revoke_tokens()
            results = await asyncio.gather(*(self.probe(vendor, registry) for _ in range(10)))
        assert all(r.status is HealthStatus.HEALTHY for r in results), [r.error for r in results]
        assert fake.token_requests == 2

    # -- config --------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("tenant_id", "a/b"),
            ("environment", "../x"),
            ("base_url", "ftp://x"),
            ("client_id", " "),
        ],
    )
    def test_invalid_config_is_refused(
        self, vendor: RunningVendor, registry: CheckRegistry, field: str, value: str
    ) -> None:
        """Malformed tenant, environment, URL or client id are refused at parse time."""
        data = {
            "integration_id": str(uuid.uuid4()),
            "org_id": str(uuid.uuid4()),
            "integration_type": "business_central",
            "name": "bc",
            **self.config(vendor, **{field: value}),
        }
        with pytest.raises(ValueError, match=field):
            registry.parse(data)
