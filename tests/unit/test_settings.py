"""Settings read from the environment: per-type maps and their refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from integration_health import Settings


def test_per_type_maps_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``TYPE=N`` pairs separated by commas, spaces tolerated, for both per-type settings."""
    monkeypatch.setenv("INTEGRATION_HEALTH_BUDGETS_PER_MINUTE", " xledger=30, visma_net = 60 ,")
    monkeypatch.setenv("INTEGRATION_HEALTH_DEGRADED_LATENCY_MS", "http=1500")
    settings = Settings()
    assert settings.budgets_per_minute == {"xledger": 30, "visma_net": 60}
    assert settings.degraded_latency_ms == {"http": 1500}
    assert Settings(budgets_per_minute={"fiken": 2}).budgets_per_minute == {"fiken": 2}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("xledger", "expected TYPE=CHECKS_PER_MINUTE pairs"),
        ("=30", "expected TYPE=CHECKS_PER_MINUTE pairs"),
        ("xledger=-1", "expected TYPE=CHECKS_PER_MINUTE pairs"),
        ("xledger=0", "at least 1 check per minute, not 0"),
    ],
)
def test_bad_budgets_are_refused(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    monkeypatch.setenv("INTEGRATION_HEALTH_BUDGETS_PER_MINUTE", value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_a_zero_budget_given_in_python_is_refused_too() -> None:
    with pytest.raises(ValidationError, match="at least 1 check per minute"):
        Settings(budgets_per_minute={"xledger": 0})


def test_the_rate_limit_pause_settings_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRATION_HEALTH_RATE_LIMIT_THRESHOLD", "2")
    monkeypatch.setenv("INTEGRATION_HEALTH_RATE_LIMIT_COOLDOWN_S", "600")
    settings = Settings()
    assert (settings.rate_limit_threshold, settings.rate_limit_window_s) == (2, 900.0)
    assert settings.rate_limit_cooldown_s == 600.0
    monkeypatch.setenv("INTEGRATION_HEALTH_RATE_LIMIT_THRESHOLD", "0")
    with pytest.raises(ValidationError, match="rate_limit_threshold"):
        Settings()
