"""The adapter conformance suite: what every vendor adapter must do against its fake.

Use it by subclassing :class:`AdapterConformance` in ``tests/adapters/test_<vendor>.py``::

    class TestXledger(AdapterConformance):
        integration_type = "xledger"

        @pytest.fixture
        async def vendor(self) -> AsyncIterator[RunningVendor]:
            fake = XledgerFake(token=CANARY)
            async with LocalServer(fake.app) as server:
                yield RunningVendor(fake, server.url)

        def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
            return {"base_url": vendor.url, "api_token": "${CANARY_SECRET}", **overrides}

Secrets in configs are ``${CANARY_SECRET}`` (and ``${CANARY_SECRET_2}``) references; the
suite sets those variables to :data:`CANARY` values and asserts they never appear in any
result, stored row or log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from integration_health import ErrorCode, HealthResult, HealthStatus, Settings, run_health_checks
from integration_health.checks import CheckRegistry, default_registry
from integration_health.testing.vendors import VendorFake

CANARY = "canary-Secret-7f3a9c"
CANARY_2 = "canary-Secret2-51b0e4"

# What each common scenario must produce (DESIGN §4).
EXPECTED: dict[str, tuple[HealthStatus, ErrorCode | None]] = {
    "ok": (HealthStatus.HEALTHY, None),
    "bad_credentials": (HealthStatus.UNREACHABLE, ErrorCode.AUTH),
    "not_found": (HealthStatus.UNREACHABLE, ErrorCode.NOT_FOUND),
    "rate_limited": (HealthStatus.DEGRADED, ErrorCode.RATE_LIMITED),
    "server_error": (HealthStatus.UNREACHABLE, ErrorCode.SERVER_ERROR),
    "garbage": (HealthStatus.UNREACHABLE, ErrorCode.BAD_RESPONSE),
    "reset": (HealthStatus.UNREACHABLE, ErrorCode.CONNECTION),
}


@dataclass
class RunningVendor:
    """A fake vendor and the base URL it listens on."""

    fake: VendorFake
    url: str


class AdapterConformance:
    """Subclass, set ``integration_type``, and provide ``vendor`` and ``config``."""

    integration_type: ClassVar[str]
    expected: ClassVar[dict[str, tuple[HealthStatus, ErrorCode | None]]] = EXPECTED
    """Override entries where a vendor cannot express a scenario (document why)."""
    server_error_retry_after_s: ClassVar[float | None] = None
    """Set when the fake's ``server_error`` answer carries ``Retry-After`` (its value)."""
    warms_up_tokens: ClassVar[bool] = False
    """Set when the check's ``warm_up`` fetches the token a probe would otherwise fetch."""

    def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
        """The adapter-specific fields of a config pointing at ``vendor``."""
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _canaries(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CANARY_SECRET", CANARY)
        monkeypatch.setenv("CANARY_SECRET_2", CANARY_2)

    @pytest.fixture
    def registry(self) -> CheckRegistry:
        return default_registry(Settings(allow_private_networks=True))

    async def probe(
        self,
        vendor: RunningVendor,
        registry: CheckRegistry,
        *,
        timeout_s: float = 5.0,
        **overrides: Any,
    ) -> HealthResult:
        org = uuid.uuid4()
        data = {
            "integration_id": str(uuid.uuid4()),
            "org_id": str(org),
            "integration_type": self.integration_type,
            "name": f"{self.integration_type} conformance",
            **self.config(vendor, **overrides),
        }
        config = registry.parse(data)
        [(_, result)] = await run_health_checks(
            org, integrations=[config], store=None, registry=registry, timeout_s=timeout_s
        )
        return result

    @pytest.mark.parametrize("scenario", sorted(EXPECTED))
    async def test_scenario(
        self,
        vendor: RunningVendor,
        registry: CheckRegistry,
        scenario: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Each common scenario maps to its DESIGN §4 status and error code; no secret leaks."""
        expected = self.expected.get(scenario)
        if expected is None:
            pytest.skip(f"{self.integration_type} cannot express {scenario}")
        caplog.set_level(logging.DEBUG)
        vendor.fake.set_scenario(scenario)
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == expected, result.error
        if result.status is not HealthStatus.HEALTHY:
            assert result.error, "a failing result says what happened"
        dumped = result.model_dump_json()
        for canary in (CANARY, CANARY_2):
            assert canary not in dumped
            assert canary not in caplog.text

    @pytest.mark.parametrize("scenario", ["ok", "server_error", "reset"])
    async def test_check_leaves_no_context_variable_set(
        self, vendor: RunningVendor, registry: CheckRegistry, scenario: str
    ) -> None:
        """Checks run one after another in a runner lane's task: a check must reset every
        context variable it sets, or the next check of that lane would inherit it."""
        vendor.fake.set_scenario(scenario)
        org = uuid.uuid4()
        config = registry.parse(
            {
                "integration_id": str(uuid.uuid4()),
                "org_id": str(org),
                "integration_type": self.integration_type,
                "name": f"{self.integration_type} context",
                **self.config(vendor),
            }
        )
        resolved, _secrets = config.resolve()
        check = registry.check_for(self.integration_type)
        async with registry:
            before = dict(contextvars.copy_context())
            with contextlib.suppress(Exception):  # an adapter may raise; the runner maps it
                await check.check(org, resolved)
            after = dict(contextvars.copy_context())
        assert after == before

    async def test_hang_is_a_timeout_at_the_deadline(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A vendor that never answers gives unreachable/timeout, on time."""
        vendor.fake.set_scenario("hang")
        started = time.monotonic()
        result = await self.probe(vendor, registry, timeout_s=0.5)
        assert time.monotonic() - started < 1.0
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.TIMEOUT)

    async def test_slow_is_degraded(self, vendor: RunningVendor, registry: CheckRegistry) -> None:
        """A correct but slow answer is degraded by latency."""
        vendor.fake.set_scenario("slow")
        vendor.fake.slow_ms = 300
        result = await self.probe(vendor, registry, degraded_latency_ms=100)
        assert result.status is HealthStatus.DEGRADED
        assert result.error_code is None

    async def test_tokens_are_not_fetched_per_probe(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Three probes with one credential fetch at most one token."""
        async with registry:
            for _ in range(3):
                result = await self.probe(vendor, registry)
                assert result.status is HealthStatus.HEALTHY, result.error
        assert vendor.fake.token_requests <= 1

    # -- generic checks added with the Tripletex/Fiken/Visma adapters (skip when not expressible)

    async def test_oversized_body_is_bad_response(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """An answer above the response-size cap is unreachable/bad_response, not read whole."""
        if "oversized" not in vendor.fake.SCENARIOS:
            pytest.skip(f"the {self.integration_type} fake has no 'oversized' scenario")
        vendor.fake.set_scenario("oversized")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.BAD_RESPONSE,
        ), result.error

    async def test_server_error_keeps_retry_after(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A 5xx answer's Retry-After is kept as details.retry_after_s for the scheduler."""
        if self.server_error_retry_after_s is None:
            pytest.skip(f"the {self.integration_type} fake sends no Retry-After with its 5xx")
        vendor.fake.set_scenario("server_error")
        result = await self.probe(vendor, registry)
        assert result.error_code is ErrorCode.SERVER_ERROR
        assert result.details.get("retry_after_s") == self.server_error_retry_after_s

    async def test_private_targets_are_refused_by_default(self, vendor: RunningVendor) -> None:
        """With default settings the SSRF guard refuses 127.0.0.1: config_invalid, no request."""
        registry = default_registry(Settings(allow_private_networks=False))
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.CONFIG_INVALID,
        ), result.error
        assert vendor.fake.requests == []

    async def test_warm_up_fetches_the_token_ahead_of_the_probe(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """After warm-up the probe finds its token cached and fetches none itself."""
        if not self.warms_up_tokens:
            pytest.skip(f"{self.integration_type} declares no token warm-up")
        config = registry.parse(
            {
                "integration_id": str(uuid.uuid4()),
                "org_id": str(uuid.uuid4()),
                "integration_type": self.integration_type,
                "name": "warm-up",
                **self.config(vendor),
            }
        )
        async with registry:
            assert await registry.warm_up([config]) == 1
            fetched = vendor.fake.token_requests
            assert fetched == 1
            result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert vendor.fake.token_requests == fetched
