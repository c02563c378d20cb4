"""The Visma eAccounting adapter against its fake (identity server + API on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from integration_health import ErrorCode, HealthStatus, Settings
from integration_health.adapters.visma_eaccounting import VismaEAccountingConfig
from integration_health.checks import CheckRegistry, default_registry
from integration_health.testing import LocalServer
from integration_health.testing.vendors.visma_eaccounting import VismaEAccountingFake

from .conformance import CANARY, CANARY_2, EXPECTED, AdapterConformance, RunningVendor

TOKEN = "/connect/token"
SETTINGS = "/v2/companysettings"


def eacc(vendor: RunningVendor) -> VismaEAccountingFake:
    assert isinstance(vendor.fake, VismaEAccountingFake)
    return vendor.fake


class TestVismaEAccounting(AdapterConformance):
    """Conformance plus the single-use, rotating refresh token and eAccounting's 429 body."""

    integration_type = "visma_eaccounting"
    # The company is fixed by the authorisation: there is no company parameter to get wrong.
    expected: ClassVar[dict[str, tuple[HealthStatus, ErrorCode | None]]] = {
        k: v for k, v in EXPECTED.items() if k != "not_found"
    }
    server_error_retry_after_s = 30.0
    warms_up_tokens = True

    @pytest.fixture
    async def vendor(self) -> AsyncIterator[RunningVendor]:
        fake = VismaEAccountingFake(client_secret=CANARY, refresh_token=CANARY_2)
        async with LocalServer(fake.app) as server:
            yield RunningVendor(fake, server.url)

    def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
        return {
            "client_id": "monitor-client",
            "client_secret": "${CANARY_SECRET}",
            "refresh_token": "${CANARY_SECRET_2}",
            "base_url": vendor.url,
            "token_url": f"{vendor.url}{TOKEN}",
            **overrides,
        }

    # -- the rotating refresh token ---------------------------------------------------------

    async def test_rotated_refresh_token_is_used_for_the_next_refresh(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """The configured refresh token is spent once; later refreshes use its successor."""
        fake = eacc(vendor)
        async with registry:
            first = await self.probe(vendor, registry)
            cached = await self.probe(vendor, registry)
            fake.expire_access_tokens()
            renewed = await self.probe(vendor, registry)
        assert [r.status for r in (first, cached, renewed)] == [HealthStatus.HEALTHY] * 3
        assert renewed.details["token_renewed"] is True
        assert first.details["company_name"] == "Test AB"
        assert fake.token_requests == 2
        assert CANARY_2 in fake.spent_refresh_tokens
        assert fake.count(SETTINGS) == 4

    async def test_restart_without_a_token_file_needs_a_new_authorisation(
        self, vendor: RunningVendor
    ) -> None:
        """After a restart the spent configured token is refused: auth, saying what to do."""
        first = default_registry(Settings(allow_private_networks=True))
        assert (await self.probe(vendor, first)).status is HealthStatus.HEALTHY
        restarted = default_registry(Settings(allow_private_networks=True))
        result = await self.probe(vendor, restarted)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["oauth_error"] == "invalid_grant"
        assert "refresh_token_file" in (result.error or "")

    async def test_token_file_carries_the_rotation_across_restarts(
        self, vendor: RunningVendor, tmp_path: Path
    ) -> None:
        """With refresh_token_file the newest token survives a restart; the file is 0600."""
        store = tmp_path / "eacc-refresh.json"
        for _ in range(3):  # three "processes", each refreshing once
            registry = default_registry(Settings(allow_private_networks=True))
            result = await self.probe(vendor, registry, refresh_token_file=str(store))
            assert result.status is HealthStatus.HEALTHY, result.error
        assert eacc(vendor).token_requests == 3
        assert stat.S_IMODE(store.stat().st_mode) == 0o600
        saved = json.loads(store.read_text())
        assert saved["refresh_token"] in eacc(vendor).refresh_tokens
        assert CANARY_2 not in store.read_text()

    async def test_two_processes_sharing_the_token_file_keep_working(
        self, vendor: RunningVendor, tmp_path: Path
    ) -> None:
        """When another process rotated the token, a refused refresh retries with the file's."""
        fake = eacc(vendor)
        store = str(tmp_path / "eacc-refresh.json")
        a = default_registry(Settings(allow_private_networks=True))
        b = default_registry(Settings(allow_private_networks=True))
        async with a, b:
            for registry in (a, b, a, b):
                fake.expire_access_tokens()
                result = await self.probe(vendor, registry, refresh_token_file=store)
                assert result.status is HealthStatus.HEALTHY, result.error
        assert fake.token_requests == 4
        # each stale in-memory token was refused once, then the file's successor worked
        assert fake.count(TOKEN) == 6

    async def test_token_endpoint_outage_is_server_error(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """The identity server answering 503 is server_error at the token stage, nothing spent."""
        eacc(vendor).token_scenario = "server_error"
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.SERVER_ERROR,
        )
        assert result.details["retry_after_s"] == 30
        assert CANARY_2 in eacc(vendor).refresh_tokens

    async def test_token_file_of_an_older_authorisation_is_ignored(
        self, vendor: RunningVendor, registry: CheckRegistry, tmp_path: Path
    ) -> None:
        """A file left from a previous refresh_token does not override a newly configured one."""
        store = tmp_path / "eacc-refresh.json"
        store.write_text(json.dumps({"origin": "an-older-grant", "refresh_token": "stale"}))
        result = await self.probe(vendor, registry, refresh_token_file=str(store))
        assert result.status is HealthStatus.HEALTHY, result.error
        assert json.loads(store.read_text())["refresh_token"] != "stale"

    async def test_unwritable_token_file_is_degraded(
        self, vendor: RunningVendor, registry: CheckRegistry, tmp_path: Path
    ) -> None:
        """A rotation that cannot be saved works now but is reported degraded/config_invalid."""
        store = tmp_path / "missing-dir" / "eacc-refresh.json"
        result = await self.probe(vendor, registry, refresh_token_file=str(store))
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.CONFIG_INVALID,
        ), result.error
        assert "new authorisation" in (result.error or "")

    async def test_rotation_survives_a_check_cancelled_mid_refresh(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A refresh cut off by the deadline still stores the successor; the next check works."""
        fake = eacc(vendor)
        fake.set_scenario("slow")
        fake.slow_ms = 400
        async with registry:
            timed_out = await self.probe(vendor, registry, timeout_s=0.15)
            assert timed_out.error_code is ErrorCode.TIMEOUT
            await asyncio.sleep(0.6)  # Visma finishes the refresh it was sent
            fake.set_scenario("ok")
            result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert fake.token_requests == 2

    async def test_revoked_authorisation_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A revoked grant: the cached token fails, the refresh is refused: unreachable/auth."""
        fake = eacc(vendor)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.revoke()
            result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["stage"] == "token"

    async def test_wrong_client_secret_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """invalid_client at the token endpoint is unreachable/auth naming the client."""
        monkeypatch.setenv("OTHER_SECRET", "not-the-secret")
        result = await self.probe(vendor, registry, client_secret="${OTHER_SECRET}")
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["oauth_error"] == "invalid_client"
        assert CANARY_2 in eacc(vendor).refresh_tokens  # nothing was spent

    # -- rate limits ------------------------------------------------------------------------

    async def test_quota_body_seconds_become_retry_after(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """eAccounting's 429 body "Try again in N seconds" gives retry_after_s = N."""
        fake = eacc(vendor)
        fake.quota_per_minute = 1
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        ), result.error
        said = result.details["vendor_message"]
        assert f"Try again in {int(result.details['retry_after_s'])} seconds" in said
        assert 1 <= result.details["retry_after_s"] <= 60
        assert result.details["vendor_code"] == 4010

    async def test_scenario_rate_limit_is_55_seconds(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """The documented 429 example (55 seconds, no Retry-After header) gives 55."""
        vendor.fake.set_scenario("rate_limited")
        result = await self.probe(vendor, registry)
        assert result.error_code is ErrorCode.RATE_LIMITED
        assert result.details["retry_after_s"] == 55

    async def test_token_endpoint_rate_limit_is_degraded(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A 429 from the identity server is degraded/rate_limited with its Retry-After."""
        eacc(vendor).token_scenario = "rate_limited"
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        )
        assert result.details["retry_after_s"] == 30
        assert CANARY_2 in eacc(vendor).refresh_tokens  # the refresh token was not spent


def test_config_requires_an_absolute_token_file() -> None:
    """refresh_token_file must be an absolute path; URLs must be http(s)."""
    common = {
        "integration_id": str(uuid.uuid4()),
        "org_id": str(uuid.uuid4()),
        "name": "e",
        "client_id": "c",
        "client_secret": "${A}",
        "refresh_token": "${B}",
    }
    with pytest.raises(ValidationError):
        VismaEAccountingConfig.model_validate({**common, "refresh_token_file": "relative.json"})
    with pytest.raises(ValidationError):
        VismaEAccountingConfig.model_validate({**common, "token_url": "file:///etc/passwd"})
    config = VismaEAccountingConfig.model_validate(
        {**common, "base_url": "https://eaccountingapi.vismaonline.com/v2/"}
    )
    assert config.base_url == "https://eaccountingapi.vismaonline.com"
