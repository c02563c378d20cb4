"""The Xledger adapter against its fake GraphQL endpoint (real sockets on 127.0.0.1)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from integration_health import ErrorCode, HealthStatus
from integration_health.adapters.xledger import XledgerConfig
from integration_health.checks import CheckRegistry
from integration_health.testing import LocalServer
from integration_health.testing.vendors.xledger import BAD_FORMAT_MESSAGE, XledgerFake

from .conformance import CANARY, AdapterConformance, RunningVendor


def fake_of(vendor: RunningVendor) -> XledgerFake:
    assert isinstance(vendor.fake, XledgerFake)
    return vendor.fake


def parse(registry: CheckRegistry, **fields: Any) -> Any:
    return registry.parse(
        {
            "integration_id": str(uuid.uuid4()),
            "org_id": str(uuid.uuid4()),
            "integration_type": "xledger",
            "name": "Xledger",
            **fields,
        }
    )


class TestXledger(AdapterConformance):
    """Conformance plus Xledger's in-body rate limits, credits and cost rules."""

    integration_type = "xledger"
    server_error_retry_after_s = 30.0

    @pytest.fixture
    async def vendor(self) -> AsyncIterator[RunningVendor]:
        fake = XledgerFake(token=CANARY)
        async with LocalServer(fake.app) as server:
            yield RunningVendor(fake, server.url)

    def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
        return {"base_url": vendor.url, "api_token": "${CANARY_SECRET}", **overrides}

    async def test_probe_is_typename_query_with_token_header(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """The probe POSTs query { __typename } as JSON with 'Authorization: token <t>'."""
        fake = fake_of(vendor)
        result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        [request] = fake.requests
        assert (request.method, request.path) == ("POST", "/graphql")
        assert request.headers["Authorization"] == f"token {CANARY}"
        assert request.headers["Content-Type"].startswith("application/json")
        assert fake.queries == ["query { __typename }"]
        assert fake.billable_requests == 1
        assert result.details["probe"] == "auth"

    @pytest.mark.parametrize(
        ("scenario", "code"),
        [
            ("rate_limited", "BAD_REQUEST.BURST_RATE_LIMIT_REACHED"),
            ("concurrency_limited", "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED"),
            ("out_of_credits", "BAD_REQUEST.INSUFFICIENT_CREDITS"),
        ],
    )
    async def test_each_rate_limit_code_is_degraded(
        self, vendor: RunningVendor, registry: CheckRegistry, scenario: str, code: str
    ) -> None:
        """Every Xledger limit code inside an HTTP 200 is degraded/rate_limited, code kept."""
        fake_of(vendor).set_scenario(scenario)
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        )
        assert result.details["http_status"] == 200
        assert result.details["vendor_code"] == code
        assert result.error is not None and code in result.error

    async def test_insufficient_credits_reset_at_becomes_retry_after(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """INSUFFICIENT_CREDITS with resetAt 20 minutes ahead gives retry_after_s ≈ 1200."""
        fake = fake_of(vendor)
        fake.set_scenario("out_of_credits")
        result = await self.probe(vendor, registry)
        assert 1_190 <= result.details["retry_after_s"] <= 1_200
        assert result.details["reset_at"] == fake.credits_reset_at
        assert result.error is not None and fake.credits_reset_at in result.error

    @pytest.mark.parametrize(
        ("reset_at", "expected"),
        [
            ("epoch_ms", 600.0),
            ("far_future", 31 * 24 * 3600.0),
            ("past", 0.0),
            ("not a date", None),
        ],
    )
    async def test_credit_reset_forms(
        self,
        vendor: RunningVendor,
        registry: CheckRegistry,
        reset_at: str,
        expected: float | None,
    ) -> None:
        """Epoch-millisecond resets are read, far resets capped at 31 days, garbage ignored."""
        fake = fake_of(vendor)
        now = datetime.now(UTC)
        fake.credits_reset_at = {
            "epoch_ms": int((now + timedelta(seconds=600)).timestamp() * 1000),
            "far_future": "2999-01-01T00:00:00Z",
            "past": "2001-01-01T00:00:00+00:00",
            "not a date": "soon",
        }[reset_at]
        fake.set_scenario("out_of_credits")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        )
        got = result.details.get("retry_after_s")
        if expected is None:
            assert got is None
        else:
            assert got == pytest.approx(expected, abs=10)

    async def test_unknown_token_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A token Xledger does not know is unreachable/auth with a sentence on what to do."""
        fake_of(vendor).token = "some-other-token"
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.error is not None and "create a new token" in result.error

    async def test_token_refused_with_http_401_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Should Xledger answer token errors with HTTP 401, the result is still auth."""
        fake = fake_of(vendor)
        fake.auth_error_status = 401
        fake.set_scenario("bad_credentials")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["http_status"] == 401

    async def test_forbidden_code_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A FORBIDDEN GraphQL error (token without access) is unreachable/auth."""
        fake_of(vendor).set_scenario("forbidden")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["vendor_code"] == "FORBIDDEN"

    async def test_base_url_with_graphql_suffix_is_normalised(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A base_url pasted with /graphql/ still posts to {host}/graphql."""
        result = await self.probe(vendor, registry, base_url=f"{vendor.url}/graphql/")
        assert result.status is HealthStatus.HEALTHY, result.error
        assert fake_of(vendor).count("/graphql", "POST") == 1

    async def test_fake_refuses_a_bearer_header_and_non_json_bodies(
        self, vendor: RunningVendor
    ) -> None:
        """The fake answers 'Authorization: Bearer' with Xledger's bad-format error; JSON only."""
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{vendor.url}/graphql",
                json={"query": "query { __typename }"},
                headers={"Authorization": f"Bearer {CANARY}"},
            ) as response:
                body = await response.json()
            assert body == {"errors": [{"message": BAD_FORMAT_MESSAGE}]}
            async with session.post(
                f"{vendor.url}/graphql",
                data="query { __typename }",
                headers={"Authorization": f"token {CANARY}"},
            ) as response:
                assert response.status == 400
        assert fake_of(vendor).billable_requests == 0

    # -- cost ----------------------------------------------------------------------------------

    def test_interval_floor_is_thirty_minutes(self, registry: CheckRegistry) -> None:
        """Probes are billable: the floor is 1 800 s and the default interval 3 600 s."""
        assert XledgerConfig.min_check_interval_s == 1_800
        config = parse(registry, api_token="${CANARY_SECRET}")
        assert config.check_interval_s == 3_600
        assert parse(registry, api_token="${X}", check_interval_s=1_800).check_interval_s == 1_800
        with pytest.raises(ValueError, match="at least 1800 seconds"):
            parse(registry, api_token="${CANARY_SECRET}", check_interval_s=900)

    def test_token_is_required_for_the_auth_probe(self, registry: CheckRegistry) -> None:
        """Without api_token only the network probe is accepted."""
        with pytest.raises(ValueError, match="api_token is required"):
            parse(registry)
        assert parse(registry, probe="network").api_token is None

    async def test_network_probe_sends_no_token_and_no_billable_request(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """probe: network HEADs /graphql without credentials; any answer below 500 is healthy."""
        fake = fake_of(vendor)
        result = await self.probe(vendor, registry, probe="network", api_token=None)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert result.details["credentials_checked"] is False
        assert result.details["http_status"] == 405
        [request] = fake.requests
        assert request.method == "HEAD"
        assert "Authorization" not in request.headers
        assert fake.billable_requests == 0

    async def test_network_probe_reports_server_errors(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """probe: network still reports a 5xx as unreachable/server_error with Retry-After."""
        fake_of(vendor).set_scenario("server_error")
        result = await self.probe(vendor, registry, probe="network")
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.SERVER_ERROR,
        )
        assert result.details["retry_after_s"] == 30.0
