"""The alerting configuration: thresholds, webhook targets, retries, vendor incidents.

It is one small pydantic model, read from a YAML file (``--alerting-config FILE`` or
``INTEGRATION_HEALTH_ALERTING_FILE``); every field has a default, so an empty file (or no
file) gives working hysteresis with no webhook. Example::

    failure_threshold: 3          # open an alert after 3 consecutive failed checks
    success_threshold: 2          # resolve it after 2 consecutive healthy checks
    degraded_alerts: true         # also alert on N consecutive non-healthy (degraded) checks
    webhooks:
      - name: pager
        url: https://events.example.com/integration-health
        secret: ${ALERT_WEBHOOK_SECRET}       # a reference, never the value
        severities: [unreachable]             # paging: unreachable only
      - name: chat
        url: ${CHAT_WEBHOOK_URL}               # URLs may be references too
        secret: ${file:/run/secrets/chat_hook}
        severities: [unreachable, degraded]
    retry: {max_attempts: 10, initial_delay_s: 30, max_delay_s: 3600}
    vendor_incidents: {min_orgs: 5, min_percent: 50, window_s: 1800}

Secrets (``secret``, and ``url`` when it holds a reference) are resolved when a webhook is
sent, exactly like integration secrets; a literal secret is refused so it never sits in a
config file that is checked in.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..config import describe_validation_error, find_references
from ..errors import ConfigError, SecretReferenceError

__all__ = [
    "AlertingConfig",
    "RetryPolicy",
    "Severity",
    "VendorIncidentRules",
    "WebhookTarget",
    "load_alerting_config",
]


class Severity(enum.StrEnum):
    """How bad an alert is: the health status that opened it."""

    UNREACHABLE = "unreachable"
    """The integration cannot be used (pages: payload ``severity`` is ``critical``)."""
    DEGRADED = "degraded"
    """Usable but slow, rate limited or partly unusable (payload ``severity``: ``warning``)."""

    @property
    def level(self) -> str:
        """``critical`` or ``warning``, the word most paging tools route on."""
        return "critical" if self is Severity.UNREACHABLE else "warning"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


def _check_reference(value: str, field: str) -> None:
    try:
        refs = find_references(value)
    except SecretReferenceError as exc:
        raise ValueError(str(exc)) from None
    if not refs:
        raise ValueError(
            f"{field} must be a reference such as ${{ALERT_WEBHOOK_SECRET}} or "
            "${file:/run/secrets/name}, never the secret itself"
        )


class WebhookTarget(_Model):
    """One receiver of alert notifications (an HTTPS endpoint)."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    """Stable name, stored with each delivery (renaming a target orphans pending ones)."""
    url: str = Field(min_length=1)
    """``https://…`` (or ``http://``), or a ``${VAR}`` reference to one. Loopback and private
    addresses are refused unless ``INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS=true``."""
    secret: SecretStr
    """HMAC-SHA256 key as a reference: ``${VAR}`` or ``${file:/path}``."""
    severities: frozenset[Severity] = frozenset({Severity.UNREACHABLE, Severity.DEGRADED})
    """Which alerts this target receives; vendor incidents count as ``unreachable``."""
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    """Deadline of one delivery attempt."""

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        value = value.strip()
        try:
            refs = find_references(value)
        except SecretReferenceError as exc:
            raise ValueError(str(exc)) from None
        if not refs and not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// or http:// (or be a ${VAR} reference)")
        return value

    @field_validator("secret")
    @classmethod
    def _secret_is_reference(cls, value: SecretStr) -> SecretStr:
        _check_reference(value.get_secret_value(), "secret")
        return value

    @field_validator("severities", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, list | tuple | set | frozenset) and not value:
            raise ValueError("list at least one of: unreachable, degraded")
        return value

    @property
    def url_is_secret(self) -> bool:
        """True when the URL comes from a reference (it is then never logged or stored)."""
        return bool(find_references(self.url))

    def accepts(self, severity: Severity) -> bool:
        """Whether alerts of ``severity`` are routed to this target."""
        return severity in self.severities


class RetryPolicy(_Model):
    """Exponential backoff between delivery attempts (persisted: a restart continues it).

    Attempt ``n`` (1-based) that fails is retried after
    ``min(max_delay_s, initial_delay_s * multiplier ** (n - 1))``, stretched by up to
    ``jitter`` (a fraction) and never earlier than a ``Retry-After`` the receiver sent.
    """

    max_attempts: int = Field(default=10, ge=1, le=100)
    """Attempts before a delivery is given up (``failed``)."""
    initial_delay_s: float = Field(default=30.0, gt=0)
    """Wait after the first failed attempt."""
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    """Growth of the wait per attempt."""
    max_delay_s: float = Field(default=3600.0, gt=0)
    """Longest wait between two attempts."""
    jitter: float = Field(default=0.1, ge=0.0, le=1.0)
    """Random stretch of each wait (0.1 = up to 10 % longer), so receivers are not stampeded."""

    def delay_s(self, attempt: int, *, random_fraction: float = 0.0) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        base = self.initial_delay_s * self.multiplier ** max(0, attempt - 1)
        base = min(self.max_delay_s, base)
        return min(self.max_delay_s, base * (1.0 + self.jitter * random_fraction))


class VendorIncidentRules(_Model):
    """When many organisations' integrations of one type fail at once, open one incident.

    An integration *counts as failing* once it has ``failures_per_integration`` consecutive
    unreachable results, and stops counting after ``success_threshold`` healthy ones. The
    incident opens when, among integrations whose failure began within ``window_s``:
    at least ``min_orgs`` organisations fail, or at least ``min_percent`` % of the type's
    enabled integrations fail in at least ``min_orgs_for_percent`` organisations. It resolves
    when at most ``recovery_percent`` % of its peak number of organisations still fail.
    """

    enabled: bool = True
    """Group vendor-wide outages into incidents (off: one alert per integration, always)."""
    min_orgs: int = Field(default=5, ge=2)
    """Organisations failing at once that make an outage vendor-wide (K)."""
    min_percent: float | None = Field(default=50.0, gt=0, le=100)
    """Share of the type's integrations failing at once that makes it vendor-wide (P)."""
    min_orgs_for_percent: int = Field(default=3, ge=2)
    """The percentage rule needs at least this many organisations (a small customer base
    with one failing integration is not a vendor outage)."""
    window_s: float = Field(default=1800.0, gt=0)
    """Failures that began within this many seconds count as "at once"."""
    failures_per_integration: int = Field(default=2, ge=1)
    """Consecutive unreachable results before an integration counts toward an incident.
    Keep it below ``failure_threshold`` so the incident opens before per-org alerts fire."""
    recovery_percent: float = Field(default=20.0, ge=0, lt=100)
    """The vendor has recovered when failing organisations ≤ this % of the incident's peak."""


class AlertingConfig(_Model):
    """Everything alerting needs; defaults are documented in docs/alerting.md."""

    failure_threshold: int = Field(default=3, ge=1, le=50)
    """Consecutive failed results (N) that open an alert."""
    success_threshold: int = Field(default=2, ge=1, le=50)
    """Consecutive healthy results (M) that resolve it."""
    degraded_alerts: bool = True
    """Open ``degraded`` alerts after N consecutive non-healthy results (off: only
    ``unreachable`` alerts exist). Route them with each target's ``severities``."""
    webhooks: tuple[WebhookTarget, ...] = ()
    """Receivers; with none, alerts are still recorded (``integration-health alerts list``)."""
    retry: RetryPolicy = RetryPolicy()
    vendor_incidents: VendorIncidentRules = VendorIncidentRules()
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    """Integrations evaluated per database transaction."""
    delivery_concurrency: Annotated[int, Field(ge=1, le=100)] = 8
    """Webhook requests in flight at once."""

    @model_validator(mode="after")
    def _unique_names(self) -> AlertingConfig:
        names = [w.name for w in self.webhooks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"webhook names must be unique: {', '.join(duplicates)}")
        return self

    def target(self, name: str) -> WebhookTarget | None:
        """The webhook called ``name``, if configured."""
        return next((w for w in self.webhooks if w.name == name), None)

    def routes(self, severity: Severity) -> list[WebhookTarget]:
        """The targets that receive notifications of ``severity``."""
        return [w for w in self.webhooks if w.accepts(severity)]


def load_alerting_config(path: str | Path | None) -> AlertingConfig:
    """Read the YAML file at ``path`` (``None``: the defaults, no webhook).

    Raises :class:`ConfigError` with one line per problem (never echoing values).
    """
    if path is None:
        return AlertingConfig()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the alerting config {file}: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"the alerting config {file} is not valid YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the alerting config {file} must be a mapping of settings")
    try:
        return AlertingConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(describe_validation_error(exc))
        raise ConfigError(f"invalid alerting config {file}: {problems}") from None
