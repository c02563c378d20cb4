"""Exceptions raised by Integration Health Monitor.

A failing *check* is never an exception: it is a :class:`~integration_health.HealthResult`.
Exceptions are for the operator's mistakes and for the monitor's own infrastructure::

    IntegrationHealthError
    ├── ConfigError                 bad configuration; the CLI exits with code 2
    │   ├── IntegrationFileError    an integrations file entry is invalid (position + field)
    │   ├── SecretReferenceError    a ${VAR} / ${file:…} reference cannot be resolved
    │   ├── UnknownIntegrationType  no adapter is registered for an integration_type
    │   └── UnsafeTargetError       a target resolves to a private address (SSRF guard)
    ├── NotFoundError
    │   ├── UnknownOrganization
    │   └── UnknownIntegration
    └── StoreError
        ├── StoreUnavailable        the database cannot be reached (retriable)
        └── SchemaError             the schema is missing or newer than this version

Each exception's docstring is its default message, so ``raise UnknownOrganization()`` reads
well; pass a message to be more precise. Messages never contain secret values.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "IntegrationFileError",
    "IntegrationHealthError",
    "NotFoundError",
    "SchemaError",
    "SecretReferenceError",
    "StoreError",
    "StoreUnavailable",
    "UnknownIntegration",
    "UnknownIntegrationType",
    "UnknownOrganization",
    "UnsafeTargetError",
]


class IntegrationHealthError(Exception):
    """Integration Health Monitor failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self)


class ConfigError(IntegrationHealthError):
    """The configuration is invalid."""


class IntegrationFileError(ConfigError):
    """The integrations file is invalid."""


class SecretReferenceError(ConfigError):
    """A secret reference could not be resolved."""


class UnknownIntegrationType(ConfigError):
    """No adapter is registered for this integration_type."""


class UnsafeTargetError(ConfigError):
    """The target resolves to a loopback, private, link-local or metadata address.

    Such targets are refused unless INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS=true.
    """


class NotFoundError(IntegrationHealthError):
    """Not found."""


class UnknownOrganization(NotFoundError):
    """Unknown organization."""


class UnknownIntegration(NotFoundError):
    """Unknown integration."""


class StoreError(IntegrationHealthError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The database cannot be reached."""


class SchemaError(StoreError):
    """The database schema is missing: run `integration-health db upgrade`."""
