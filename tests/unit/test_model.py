"""The result model and the status order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from integration_health import ErrorCode, HealthResult, HealthStatus, overall_status


def test_worst_status_is_the_minimum() -> None:
    """min() over statuses gives the worst one, so an org's status is the min of its parts."""
    assert min(HealthStatus) is HealthStatus.UNREACHABLE
    assert max(HealthStatus) is HealthStatus.HEALTHY
    assert HealthStatus.UNREACHABLE < HealthStatus.DEGRADED < HealthStatus.HEALTHY
    assert HealthStatus.HEALTHY >= HealthStatus.DEGRADED
    assert HealthStatus.DEGRADED <= HealthStatus.DEGRADED
    assert HealthStatus.DEGRADED > HealthStatus.UNREACHABLE
    assert overall_status([HealthStatus.HEALTHY, HealthStatus.DEGRADED]) is HealthStatus.DEGRADED
    assert overall_status([]) is None


def test_status_does_not_compare_with_plain_strings_by_rank() -> None:
    """Ordering is only defined between statuses: comparing with text is an error."""
    with pytest.raises(TypeError):
        _ = HealthStatus.HEALTHY < 3  # type: ignore[operator]
    assert HealthStatus.HEALTHY == "healthy"


def test_result_values_are_the_contract_strings() -> None:
    """Stored and serialised values are the documented strings."""
    assert [s.value for s in HealthStatus] == ["unreachable", "degraded", "healthy"]
    assert {c.value for c in ErrorCode} == {
        "timeout",
        "connection",
        "dns",
        "tls",
        "auth",
        "not_found",
        "rate_limited",
        "server_error",
        "bad_response",
        "config_invalid",
        "internal",
    }


def test_latency_is_a_non_negative_int() -> None:
    """A float latency is rounded; a negative one is refused."""
    assert HealthResult.healthy(12.6).latency_ms == 13
    with pytest.raises(ValidationError):
        HealthResult(status=HealthStatus.HEALTHY, latency_ms=-1)


def test_checked_at_is_utc_and_aware() -> None:
    """Timestamps are converted to UTC; naive ones are refused."""
    oslo = timezone(timedelta(hours=1))
    result = HealthResult.healthy(1).model_copy()
    aware = HealthResult(
        status=HealthStatus.HEALTHY, latency_ms=1, checked_at=datetime(2026, 1, 1, 12, tzinfo=oslo)
    )
    assert aware.checked_at == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert aware.checked_at.tzinfo == UTC
    assert result.checked_at.tzinfo is not None
    with pytest.raises(ValidationError, match="timezone-aware"):
        HealthResult(
            status=HealthStatus.HEALTHY,
            latency_ms=1,
            checked_at=datetime(2026, 1, 1),  # noqa: DTZ001 - deliberately naive
        )


def test_healthy_result_cannot_carry_an_error_code() -> None:
    """An error code on a healthy result is a contradiction and is refused."""
    with pytest.raises(ValidationError, match="no error_code"):
        HealthResult(status=HealthStatus.HEALTHY, latency_ms=1, error_code=ErrorCode.AUTH)


def test_constructors_set_status_and_ok() -> None:
    """The helper constructors produce the matching status and ``ok`` flag."""
    bad = HealthResult.unreachable(ErrorCode.AUTH, "nope", 5)
    slow = HealthResult.degraded(ErrorCode.RATE_LIMITED, "wait", 5, details={"retry_after_s": 3})
    assert (bad.status, bad.ok, bad.error_code) == (HealthStatus.UNREACHABLE, False, ErrorCode.AUTH)
    assert (slow.status, slow.ok) == (HealthStatus.DEGRADED, True)
    assert slow.details == {"retry_after_s": 3}
    assert HealthResult.healthy(1).ok


@settings(max_examples=300, deadline=None)
@given(
    latency=st.one_of(
        st.floats(allow_nan=True, allow_infinity=False, width=64), st.integers(-5, 10**6)
    ),
    details=st.one_of(
        st.none(),
        st.dictionaries(
            st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.none())
        ),
    ),
)
def test_healthy_shortcut_builds_what_validation_builds(
    latency: float, details: dict[str, object] | None
) -> None:
    """``healthy()`` skips validation for a float latency: the result is the one the
    validating constructor makes (fields, types, ``model_fields_set``, a copied ``details``),
    and what validation refuses is still refused."""
    try:
        validated = HealthResult(
            status=HealthStatus.HEALTHY, latency_ms=latency, details=details or {}
        )
    except (ValidationError, OverflowError) as exc:
        with pytest.raises(type(exc)):
            HealthResult.healthy(latency, details=details)
        return
    quick = HealthResult.healthy(latency, details=details)
    assert quick.model_dump(exclude={"checked_at"}) == validated.model_dump(exclude={"checked_at"})
    assert quick == validated.model_copy(update={"checked_at": quick.checked_at})
    assert type(quick.latency_ms) is int and quick.status is HealthStatus.HEALTHY
    assert quick.checked_at.tzinfo is UTC
    assert abs(quick.checked_at - validated.checked_at) < timedelta(seconds=5)
    assert quick.model_fields_set == validated.model_fields_set
    assert (
        quick.model_dump(exclude_unset=True).keys()
        == validated.model_dump(exclude_unset=True).keys()
    )
    if details is not None:
        assert quick.details is not details  # a copy, as validation makes
    with pytest.raises(ValidationError):
        quick.latency_ms = 3  # type: ignore[misc] - frozen like any other result
