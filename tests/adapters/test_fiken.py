"""The Fiken adapter against its fake (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from integration_health import ErrorCode, HealthStatus, run_health_checks
from integration_health.adapters.fiken import FikenConfig
from integration_health.checks import CheckRegistry
from integration_health.testing import LocalServer
from integration_health.testing.vendors.fiken import FikenFake

from .conformance import CANARY, AdapterConformance, RunningVendor

SLUG = "fiken-as"
COMPANY = f"/api/v2/companies/{SLUG}"


def fiken(vendor: RunningVendor) -> FikenFake:
    assert isinstance(vendor.fake, FikenFake)
    return vendor.fake


class TestFiken(AdapterConformance):
    """Conformance plus Fiken's one-request-at-a-time rule and hasApiAccess."""

    integration_type = "fiken"
    server_error_retry_after_s = 30.0

    @pytest.fixture
    async def vendor(self) -> AsyncIterator[RunningVendor]:
        fake = FikenFake(token=CANARY, company_slug=SLUG)
        async with LocalServer(fake.app) as server:
            yield RunningVendor(fake, server.url)

    def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
        return {
            "base_url": vendor.url,
            "api_token": "${CANARY_SECRET}",
            "company_slug": SLUG,
            **overrides,
        }

    # -- one request at a time per token ----------------------------------------------------

    async def test_the_fake_detects_overlapping_requests(self, vendor: RunningVendor) -> None:
        """Two simultaneous requests with one token: the fake sees both and refuses one (429)."""
        fake = fiken(vendor)
        fake.delay_ms = 100
        headers = {"Authorization": f"Bearer {CANARY}"}
        async with aiohttp.ClientSession() as session:

            async def get() -> int:
                async with session.get(f"{vendor.url}{COMPANY}", headers=headers) as response:
                    return response.status

            statuses = sorted(await asyncio.gather(get(), get()))
        assert statuses == [200, 429]
        assert fake.max_concurrency == 2
        assert fake.overlaps == 1

    async def test_twenty_checks_on_one_token_never_overlap(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """20 integrations sharing a token, checked at once: all healthy, one request at a time."""
        fake = fiken(vendor)
        fake.delay_ms = 20
        org = uuid.uuid4()
        configs = [
            registry.parse(
                {
                    "integration_id": str(uuid.uuid4()),
                    "org_id": str(org),
                    "integration_type": "fiken",
                    "name": f"Fiken {n}",
                    **self.config(vendor),
                }
            )
            for n in range(20)
        ]
        started = time.monotonic()
        outcomes = await run_health_checks(
            org, integrations=configs, store=None, registry=registry, timeout_s=10
        )
        elapsed = time.monotonic() - started
        assert [r.status for _, r in outcomes] == [HealthStatus.HEALTHY] * 20, [
            r.error for _, r in outcomes
        ]
        assert fake.max_concurrency == 1
        assert fake.overlaps == 0
        assert fake.count(COMPANY) == 20
        assert elapsed < 5
        # Waiting for the token's turn is reported apart from the probe's own latency.
        queued = [r.details["queued_ms"] for _, r in outcomes]
        assert max(queued) >= 10 * fake.delay_ms
        assert all(r.latency_ms < max(queued) for _, r in outcomes)

    # -- answers ----------------------------------------------------------------------------

    async def test_healthy_check_costs_one_request(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A healthy check reads only the company, with a fresh X-Request-ID kept in details."""
        fake = fiken(vendor)
        result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert [r.path for r in fake.requests] == [COMPANY]
        assert fake.request_ids == [result.details["request_id"]]
        assert result.details["company_name"] == "Fiken AS"
        assert result.details["test_company"] is False

    async def test_no_api_access_is_degraded(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """hasApiAccess=false: reachable and authenticated but unusable, so degraded."""
        vendor.fake.set_scenario("no_api_access")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.DEGRADED, ErrorCode.AUTH)
        assert "API module" in (result.error or "")

    async def test_unknown_slug_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """An unknown slug (404) with a valid token (/user 200) is unreachable/not_found."""
        fake = fiken(vendor)
        result = await self.probe(vendor, registry, company_slug="no-such-company")
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert "no-such-company" in (result.error or "")
        assert [r.path for r in fake.requests] == [
            "/api/v2/companies/no-such-company",
            "/api/v2/user",
        ]

    async def test_someone_elses_company_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A company the token's user may not see (403) is not_found, not a token problem."""
        result = await self.probe(vendor, registry, company_slug="someone-elses-company")
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert result.details["http_status"] == 403
        assert result.details["user_http_status"] == 200

    async def test_revoked_token_is_auth_in_one_request(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A revoked token (401) is unreachable/auth without a second request."""
        fake = fiken(vendor)
        fake.token = "a-new-token"
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert len(fake.requests) == 1

    async def test_rate_limit_names_the_shared_token(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Fiken's 429 (no Retry-After) is degraded/rate_limited and says why it happens."""
        vendor.fake.set_scenario("rate_limited")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        )
        assert "one request at a time" in (result.error or "")
        assert "retry_after_s" not in result.details


def test_config_refuses_a_slug_with_a_path() -> None:
    """company_slug cannot smuggle a path into the URL."""
    common = {
        "integration_id": str(uuid.uuid4()),
        "org_id": str(uuid.uuid4()),
        "name": "f",
        "api_token": "${A}",
    }
    with pytest.raises(ValidationError):
        FikenConfig.model_validate({**common, "company_slug": "../user"})
    config = FikenConfig.model_validate({**common, "company_slug": SLUG})
    assert config.base_url == "https://api.fiken.no"
