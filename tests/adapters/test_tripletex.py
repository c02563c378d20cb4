"""The Tripletex adapter against its fake (real sockets on 127.0.0.1)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from integration_health import ErrorCode, HealthStatus
from integration_health.checks import CheckRegistry
from integration_health.testing import LocalServer
from integration_health.testing.vendors.tripletex import TripletexFake

from .conformance import CANARY, CANARY_2, AdapterConformance, RunningVendor

CLIENT_COMPANY = 1_111_111
WHO_AM_I = "/v2/token/session/>whoAmI"
CREATE = "/v2/token/session/:create"
LOGIN_ACCESS = "/v2/company/>withLoginAccess"


def basic_user(fake: TripletexFake, index: int = -1) -> str:
    """The Basic-auth user name of the ``index``-th request to ``>whoAmI``."""
    requests = [r for r in fake.requests if r.path == WHO_AM_I]
    header = requests[index].headers["Authorization"]
    return base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")[0]


class TestTripletex(AdapterConformance):
    """Conformance, as an accountant checking a client company (so not_found is expressible)."""

    integration_type = "tripletex"
    server_error_retry_after_s = 30.0
    warms_up_tokens = True

    @pytest.fixture
    async def vendor(self) -> AsyncIterator[RunningVendor]:
        fake = TripletexFake(consumer_token=CANARY, employee_token=CANARY_2)
        async with LocalServer(fake.app) as server:
            yield RunningVendor(fake, server.url)

    def config(self, vendor: RunningVendor, **overrides: Any) -> dict[str, Any]:
        return {
            "base_url": vendor.url,
            "consumer_token": "${CANARY_SECRET}",
            "employee_token": "${CANARY_SECRET_2}",
            "company_id": CLIENT_COMPANY,
            **overrides,
        }

    @pytest.fixture(autouse=True)
    def _wrong_token(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("WRONG_TOKEN", "not-the-employee-token")

    # -- sessions ---------------------------------------------------------------------------

    async def test_session_is_created_once_and_reused(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Three checks create one session (expiring after today) and call >whoAmI three times."""
        fake = vendor.fake
        assert isinstance(fake, TripletexFake)
        async with registry:
            for _ in range(3):
                result = await self.probe(vendor, registry)
                assert result.status is HealthStatus.HEALTHY, result.error
        assert fake.count(CREATE, "PUT") == 1
        assert fake.count(WHO_AM_I, "GET") == 3
        [expiration] = fake.sessions.values()
        assert expiration > datetime.now(UTC).date()
        assert basic_user(fake) == str(CLIENT_COMPANY)
        assert result.details["company_id"] == CLIENT_COMPANY
        assert result.details["request_id"]

    async def test_session_is_cached_for_about_a_day(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """The cached session outlives 20 hours but not the two days it was created for."""
        result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        tokens = registry.context.tokens
        assert tokens.expiring(within_s=20 * 3600) == []
        assert len(tokens.expiring(within_s=49 * 3600)) == 1

    async def test_own_company_uses_user_zero(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Without company_id the session is sent as Basic 0:<token> and the own company answers."""
        fake = vendor.fake
        assert isinstance(fake, TripletexFake)
        result = await self.probe(vendor, registry, company_id=None)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert basic_user(fake) == "0"
        assert result.details["company_id"] == fake.company_id
        assert result.details["employee_id"] == fake.employee_id

    async def test_expired_session_is_renewed_within_the_check(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A session Tripletex ended early (401) is renewed once and the check stays healthy."""
        fake = vendor.fake
        assert isinstance(fake, TripletexFake)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.expire_sessions()
            result = await self.probe(vendor, registry)
        assert result.status is HealthStatus.HEALTHY, result.error
        assert result.details["session_renewed"] is True
        assert fake.token_requests == 2
        assert fake.count(WHO_AM_I) == 3

    async def test_revoked_employee_token_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """After revocation the cached session fails, renewal is refused: unreachable/auth."""
        fake = vendor.fake
        assert isinstance(fake, TripletexFake)
        async with registry:
            assert (await self.probe(vendor, registry)).status is HealthStatus.HEALTHY
            fake.revoke_employee_token()
            result = await self.probe(vendor, registry)
            again = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert "employee token" in (result.error or "")
        assert result.details["stage"] == "session"
        assert again.error_code is ErrorCode.AUTH
        # one renewal attempt per check, never a loop
        assert fake.count(CREATE) == 3
        assert fake.count(WHO_AM_I) == 2

    async def test_validation_failure_at_create_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Tripletex's 422 form for a bad token is auth too, with the field it names."""
        fake = vendor.fake
        assert isinstance(fake, TripletexFake)
        fake.bad_token_status = 422
        result = await self.probe(vendor, registry, employee_token="${WRONG_TOKEN}")
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert result.details["invalid_fields"] == ["employeeToken"]
        assert "Validation failed" in (result.error or "")

    # -- accountant client companies --------------------------------------------------------

    async def test_unknown_client_company_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A company_id that is not one of the employee's clients is unreachable/not_found."""
        fake = vendor.fake
        assert isinstance(fake, TripletexFake)
        result = await self.probe(vendor, registry, company_id=2_222_222)
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        ), result.error
        assert "2222222" in (result.error or "")
        assert result.details["http_status"] == 403
        assert fake.count(LOGIN_ACCESS) == 1

    async def test_listed_client_company_without_rights_is_auth(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A listed client company that still refuses the employee is an access-rights problem."""
        fake = vendor.fake
        assert isinstance(fake, TripletexFake)
        fake.companies_without_rights.add(CLIENT_COMPANY)
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (HealthStatus.UNREACHABLE, ErrorCode.AUTH)
        assert "access rights" in (result.error or "")

    # -- other answers ----------------------------------------------------------------------

    async def test_rate_limit_keeps_retry_after(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """Tripletex's 429 is degraded/rate_limited with its Retry-After in the details."""
        vendor.fake.set_scenario("rate_limited")
        result = await self.probe(vendor, registry)
        assert (result.status, result.error_code) == (
            HealthStatus.DEGRADED,
            ErrorCode.RATE_LIMITED,
        )
        assert result.details["retry_after_s"] == 30
        assert "Too many requests" in (result.error or "")

    async def test_wrong_base_url_is_not_found(
        self, vendor: RunningVendor, registry: CheckRegistry
    ) -> None:
        """A base_url that is not the Tripletex API (plain 404) says to check base_url."""
        result = await self.probe(vendor, registry, base_url=f"{vendor.url}/elsewhere")
        assert (result.status, result.error_code) == (
            HealthStatus.UNREACHABLE,
            ErrorCode.NOT_FOUND,
        )
        assert "base_url" in (result.error or "")

    async def test_tokens_never_reach_results_or_logs(
        self, vendor: RunningVendor, registry: CheckRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Failures at the token exchange (tokens travel in its query string) leak no token."""
        vendor.fake.set_scenario("bad_credentials")
        result = await self.probe(vendor, registry)
        dumped = result.model_dump_json()
        assert CANARY not in dumped and CANARY_2 not in dumped
        assert CANARY not in caplog.text and CANARY_2 not in caplog.text


def test_config_refuses_a_non_http_base_url() -> None:
    """base_url must be http(s); a trailing /v2 is accepted and removed."""
    from pydantic import ValidationError

    from integration_health.adapters.tripletex import TripletexConfig

    common = {
        "integration_id": str(uuid.uuid4()),
        "org_id": str(uuid.uuid4()),
        "name": "t",
        "consumer_token": "${A}",
        "employee_token": "${B}",
    }
    with pytest.raises(ValidationError):
        TripletexConfig.model_validate({**common, "base_url": "ftp://tripletex.no"})
    config = TripletexConfig.model_validate({**common, "base_url": "https://tripletex.no/v2/"})
    assert config.base_url == "https://tripletex.no"
