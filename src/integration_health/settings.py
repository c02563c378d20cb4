"""Process-wide settings, read from ``INTEGRATION_HEALTH_*`` environment variables.

Every setting can also be passed to the CLI as a flag; flags win over the environment.
"""

from __future__ import annotations

import resource
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ._version import __version__

__all__ = ["DEFAULT_DATABASE_URL", "MAX_DEFAULT_TIMEOUT_S", "Settings", "default_concurrency"]

DEFAULT_DATABASE_URL = "sqlite:///integration-health.db"
MAX_DEFAULT_TIMEOUT_S = 10.0
"""The hard deadline of one check, unless explicitly configured otherwise."""


def default_concurrency() -> int:
    """Checks in flight at once: 1 000, or fewer when the file-descriptor limit is low.

    Each check holds at most a couple of sockets; a quarter of the descriptors stay free for
    the database, the API and logs.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        # Raise the soft limit as far as the hard one allows: it is ours to take.
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    limit = soft if soft != resource.RLIM_INFINITY else 65_536
    return max(8, min(1_000, (limit * 3 // 4) // 2))


class Settings(BaseSettings):
    """Settings of the monitor process."""

    model_config = SettingsConfigDict(
        env_prefix="INTEGRATION_HEALTH_",
        extra="ignore",
        frozen=True,
    )

    database_url: str = DEFAULT_DATABASE_URL
    """Where integrations, statuses and history live: ``sqlite:///path.db`` or
    ``postgresql://user@host/db``."""
    allow_private_networks: bool = False
    """Let checks reach loopback, private, link-local and metadata addresses (SSRF guard off)."""
    timeout_s: float = Field(default=MAX_DEFAULT_TIMEOUT_S, gt=0, le=120)
    """Hard deadline of one check, in seconds."""
    concurrency: int = Field(default_factory=default_concurrency, ge=1, le=100_000)
    """Checks in flight at once across the whole process."""
    max_response_bytes: int = Field(default=1_048_576, ge=1_024)
    """Bodies larger than this are not read (the check reports ``bad_response``)."""
    user_agent: str = f"integration-health/{__version__} (+https://github.com/integration-health)"
    """Sent with every HTTP probe so vendors can recognise the monitor."""
    jwt_secret: SecretStr | None = None
    """HS256 secret of the Supabase JWTs accepted by the API."""
    jwks_url: str | None = None
    """JWKS URL for RS256/ES256 JWTs accepted by the API."""
    jwt_audience: str = "authenticated"
    """The ``aud`` claim the API requires of JWTs (Supabase user tokens carry ``authenticated``)."""
    jwt_issuer: str | None = None
    """The ``iss`` claim the API requires of JWTs (not checked when unset), e.g.
    ``https://<project>.supabase.co/auth/v1``."""
    jwks_cache_s: int = Field(default=300, ge=0, le=86_400)
    """How long keys fetched from ``jwks_url`` are reused before asking again."""
    service_key: SecretStr | None = None
    """Key of the sync system posting sync outcomes (``Authorization: Bearer <key>`` or
    ``X-Service-Key``)."""
    run_now_interval_s: float = Field(default=60.0, ge=0, le=86_400)
    """Least time between two "check now" runs of one organisation through the API."""
    max_body_bytes: int = Field(default=65_536, ge=1_024, le=16_777_216)
    """Larger request bodies are refused with 413."""
    api_cache_ttl_s: float = Field(default=1.0, ge=0, le=60)
    """How long an API answer for one user and organisation may be reused (0: never)."""
    dashboard_poll_s: float = Field(default=5.0, ge=0.5, le=3_600)
    """How often the dashboard refreshes its data, in seconds."""
    degraded_latency_ms: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    """Per-type default latency thresholds, e.g. ``xledger=3000,http=1500``."""
    budgets_per_minute: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    """Most checks started per minute per integration type, across every scheduler and
    worker on the database, e.g. ``xledger=30,visma_net=60`` (types not listed: unlimited).
    ``--budget TYPE=N`` flags of ``scheduler``, ``worker`` and ``serve`` add to it and win."""
    rate_limit_threshold: int = Field(default=5, ge=1, le=100_000)
    """Rate-limited results of one integration type within ``rate_limit_window_s`` that pause
    the type's active checks (the vendor keeps saying "too many requests")."""
    rate_limit_window_s: float = Field(default=900.0, gt=0, le=86_400)
    """The window in which ``rate_limit_threshold`` rate-limited results are counted."""
    rate_limit_cooldown_s: float = Field(default=3_600.0, gt=0, le=7 * 86_400)
    """How long active checks of a rate-limited type stay paused (sync outcomes continue)."""
    alerting_file: str | None = None
    """YAML file with the alerting configuration (thresholds, webhooks; docs/alerting.md).
    Unset: default thresholds and no webhook (alerts are still recorded)."""

    @field_validator("degraded_latency_ms", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: object) -> object:
        return _type_numbers(value, "MILLISECONDS")

    @field_validator("budgets_per_minute", mode="before")
    @classmethod
    def _parse_budgets(cls, value: object) -> object:
        parsed = _type_numbers(value, "CHECKS_PER_MINUTE")
        if isinstance(parsed, dict):
            for kind, number in parsed.items():
                if isinstance(number, int) and number < 1:
                    raise ValueError(
                        f"the budget of {kind!r} must be at least 1 check per minute, not "
                        f"{number} (to stop probing a type, make its integrations passive)"
                    )
        return parsed


def _type_numbers(value: object, unit: str) -> object:
    """``TYPE=N,TYPE=N`` (an environment variable's text) as a dict; other values as given."""
    if not isinstance(value, str):
        return value
    parsed: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        kind, sep, number = part.partition("=")
        if not sep or not kind.strip() or not number.strip().isdigit():
            raise ValueError(f"expected TYPE={unit} pairs separated by commas, got {part!r}")
        parsed[kind.strip()] = int(number)
    return parsed
