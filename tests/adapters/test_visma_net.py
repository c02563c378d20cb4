"""The Visma.net ERP adapter against its fake (Visma Connect + API on 127.0.0.1)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from integration_health import ErrorCode, HealthStatus
from integration_health.adapters.visma_net import VismaNetConfig
from integration_health.checks import CheckRegistry
from integration_health.testing import LocalServer
from integration_health.testing.vendors.visma_net import VismaNetFake

from .conformance import CANARY, AdapterConformance, RunningVendor

TOKEN = "/connect/token"
BRANCH = "/v1/branch"
TENANT = "af1140c1-52e0-46c7-b684-df894d4b8a5a"
COMPANY = "1234567"


def vnet(vendor: RunningVendor) -> VismaNetFake:
    assert isinstance(vendor.fake, VismaNetFake)
    return vendor.fake


class TestVismaNet(AdapterConformance):
    """Conformance plus tenant-bound tokens, ipp-company-id and the X-RateLimit headers."""

    integration_type = "visma_net"
    server_error_retry_after_s = 30.0
    warms_up_tokens = True

    @pytest.fixture
    async def vendor(self) -> AsyncIterator[RunningVendor]:
        fake = VismaNetFake(client_secret=CANARY, tenant_id=TENANT, companies={COMPANY})
        async with LocalServer(fake.app) as server:
            yield RunningVendor(fake, server.url)

    def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
        return {
            "client_id": "monitor-client",
            "client_secret": "${CANARY_SECRET}",
            "tenant_id": TENANT,
            "company_id": COMPANY,
            "base_url": vendor.url,
            "token_url": f"{vendor.url}{TOKEN}",
            **overrides,
        }

    # -- tokens and company -----------------------------------------------------------------

    async def test_token_is_reused_and_company_header_sent(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Three checks: one tenant-bound token, three probes each naming the company."""
        fake = vnet(vendor)
        async with registry:
            for _ in range(3):
                result = await self.probe(vendor, registry)
                assert result.status is HealthStatus.HEALTHY, result.error
        assert fake.token_requests == 1
        assert fake.company_headers == [COMPANY] * 3
        assert [issued.tenant_id for issued in fake.access_tokens.values()] == [TENANT]
        assert result.details["request_id"]

    async def test_rate_limit_headers_are_kept(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """X-RateLimit-* of a healthy answer are kept in details.rate_limit as numbers."""
        result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        budget = result.details["rate_limit"]
        assert budget["limit"] == 1_000
        assert budget["remaining"] == 999
        assert 1 <= budget["reset_s"] <= 3_600
        assert budget["policy"] == "4-fixed-window"

    async def test_expired_token_is_renewed_once(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A cached token the API refuses (401) is renewed and the check stays healthy."""
        fake = vnet(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.expire_access_tokens()
            result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert result.details["token_renewed"] is True
        assert fake.token_requests == 2

    async def test_revoked_integration_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Approval withdrawn: cached token refused, new one refused: auth, naming the approval."""
        fake = vnet(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.revoke()
            result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["oauth_error"] == "invalid_grant"
        assert "approved" in (result.error or "")
        assert fake.count(BRANCH) == 2

    async def test_unapproved_tenant_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A tenant that never approved the integration is auth at the token stage."""
        result = await self.probe(
            vendor, registry, tenant_id="00000000-0000-0000-0000-000000000000"
        )
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["stage"] == "token"
        assert "00000000-0000-0000-0000-000000000000" in (result.error or "")

    async def test_unknown_company_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A company without a licence in the tenant (IPP fault 12027) is not_found."""
        result = await self.probe(vendor, registry, company_id="7654321")
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert "No license for this company" in (result.error or "")
        assert result.details["vendor_code"] == "12027"

    async def test_no_license_as_401_is_still_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """The no-licence fault is recognised by its body whatever the HTTP status."""
        vnet(vendor).no_license_status = 401
        result = await self.probe(vendor, registry, company_id="7654321")
        assert result.error_code is ErrorCode.NOT_FOUND

    async def test_wrong_scope_is_config_invalid(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A scope Visma Connect refuses (invalid_scope) is a configuration problem."""
        result = await self.probe(vendor, registry, scope="vismanet_erp_interactive_api:read")
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.CONFIG_INVALID,
        )

    # -- rate limits ------------------------------------------------------------------------

    async def test_429_uses_retry_after(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A 429 with Retry-After is degraded/rate_limited with that many seconds."""
        vendor.fake.set_scenario("rate_limited")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        )
        assert result.details["retry_after_s"] == 1_800
        assert result.details["rate_limit"]["remaining"] == 0

    async def test_429_without_retry_after_uses_the_window_reset(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """An exhausted hourly budget without Retry-After waits for X-RateLimit-Reset."""
        fake = vnet(vendor)
        fake.send_retry_after = False
        fake.hourly_limit = 1
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            result = await self.probe(vendor, registry)
        assert result.error_code is ErrorCode.RATE_LIMITED
        assert result.details["retry_after_s"] == result.details["rate_limit"]["reset_s"]
        assert 1 <= result.details["retry_after_s"] <= 3_600

    async def test_token_endpoint_outage_keeps_retry_after(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Visma Connect answering 503 is server_error at the token stage, Retry-After kept."""
        vnet(vendor).token_scenario = "server_error"
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.SERVER_ERROR,
        )
        assert result.details["stage"] == "token"
        assert result.details["retry_after_s"] == 30


def test_config_refuses_an_absolute_probe_url() -> None:
    """probe_path is a path under base_url, never another host."""
    common = {
        "integration_id": str(uuid.uuid4()),
        "org_id": str(uuid.uuid4()),
        "name": "v",
        "client_id": "c",
        "client_secret": "${A}",
        "tenant_id": TENANT,
    }
    for bad in ("http://evil.example/x", "//evil.example/x", "/v1/../../admin", "v1/branch"):
        with pytest.raises(ValidationError):
            VismaNetConfig.model_validate({**common, "probe_path": bad})
    assert VismaNetConfig.model_validate(common).probe_path.startswith("/v1/branch")
