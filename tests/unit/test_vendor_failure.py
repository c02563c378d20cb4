"""`vendor_failure`: the shared tail of every vendor adapter's status mapping."""

from __future__ import annotations

import pytest

from integration_health.adapters._http import HttpResponse
from integration_health.adapters._results import vendor_failure
from integration_health.model import ErrorCode, HealthStatus


def response(status: int, **headers: str) -> HttpResponse:
    return HttpResponse(
        status=status, headers=headers, body=b"", url="https://vendor.test/api", elapsed_ms=12.0
    )


@pytest.mark.parametrize(
    ("status", "expected_status", "code"),
    [
        (200, HealthStatus.UNREACHABLE, ErrorCode.BAD_RESPONSE),
        (302, HealthStatus.UNREACHABLE, ErrorCode.BAD_RESPONSE),
        (401, HealthStatus.UNREACHABLE, ErrorCode.AUTH),
        (404, HealthStatus.UNREACHABLE, ErrorCode.NOT_FOUND),
        (429, HealthStatus.DEGRADED, ErrorCode.RATE_LIMITED),
        (503, HealthStatus.UNREACHABLE, ErrorCode.SERVER_ERROR),
    ],
)
def test_maps_each_status_and_appends_what_the_vendor_said(
    status: int, expected_status: HealthStatus, code: ErrorCode
) -> None:
    result = vendor_failure(
        response(status), 12.0, details={}, what="Acme ERP", said=" Acme said: nope."
    )
    assert result.status is expected_status
    assert result.error_code is code
    assert result.error is not None and result.error.endswith(" Acme said: nope.")
    assert "Acme ERP" in result.error or "acme erp" in result.error


def test_unexpected_success_names_the_stage() -> None:
    result = vendor_failure(response(204), 5.0, details={}, what="Acme ERP", stage="session")
    assert result.error == "Unexpected HTTP 204 from Acme ERP (session)."


def test_server_error_keeps_retry_after_but_a_client_error_does_not() -> None:
    details: dict[str, object] = {}
    vendor_failure(response(503, **{"retry-after": "120"}), 5.0, details=details, what="Acme")
    assert details["retry_after_s"] == 120.0
    other: dict[str, object] = {}
    vendor_failure(response(400, **{"retry-after": "120"}), 5.0, details=other, what="Acme")
    assert "retry_after_s" not in other
