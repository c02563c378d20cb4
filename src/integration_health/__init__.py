"""Integration Health Monitor: health checks for every integration of every organisation.

The public API is what ``__all__`` lists (pinned by ``tests/unit/test_public_api.py``)::

    from integration_health import run_health_checks, HealthStatus

    outcomes = await run_health_checks(org_id)          # store from INTEGRATION_HEALTH_*
    worst = min(result.status for _, result in outcomes)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .checks import (
    Adapter,
    BrokenIntegration,
    CheckContext,
    CheckRegistry,
    HealthCheck,
    IntegrationRecord,
    default_registry,
)
from .config import IntegrationConfigBase, MonitoringMode
from .errors import (
    ConfigError,
    IntegrationHealthError,
    SecretReferenceError,
    StoreError,
    UnknownIntegrationType,
    UnsafeTargetError,
)
from .model import ErrorCode, HealthResult, HealthStatus
from .policy import StatusRules, overall_status
from .runner import CheckOutcome, run_blocking, run_health_checks
from .settings import Settings

if TYPE_CHECKING:
    from typing import TypeAlias

    IntegrationConfig: TypeAlias = IntegrationConfigBase
    """Statically: any adapter config. At run time: the discriminated union of them all."""

__all__ = [
    "Adapter",
    "BrokenIntegration",
    "CheckContext",
    "CheckOutcome",
    "CheckRegistry",
    "ConfigError",
    "ErrorCode",
    "HealthCheck",
    "HealthResult",
    "HealthStatus",
    "IntegrationConfig",
    "IntegrationConfigBase",
    "IntegrationHealthError",
    "IntegrationRecord",
    "MonitoringMode",
    "SecretReferenceError",
    "Settings",
    "StatusRules",
    "StoreError",
    "UnknownIntegrationType",
    "UnsafeTargetError",
    "__version__",
    "default_registry",
    "overall_status",
    "run_blocking",
    "run_health_checks",
]


def __getattr__(name: str) -> Any:
    # IntegrationConfig is built from the adapters found at run time (plug-ins included),
    # so it is computed on first access rather than at import.
    if name == "IntegrationConfig":
        union = default_registry().config_union
        globals()["IntegrationConfig"] = union
        return union
    raise AttributeError(f"module 'integration_health' has no attribute {name!r}")
