"""The check protocol every adapter implements, and the registry that finds them.

An adapter is one module in :mod:`integration_health.adapters` (or a third-party package
exposing an ``integration_health.adapters`` entry point) with a module-level ``ADAPTER``::

    class AcmeConfig(IntegrationConfigBase):
        integration_type: Literal["acme"] = "acme"
        api_key: SecretStr

    class AcmeCheck:
        integration_type = "acme"

        def __init__(self, context: CheckContext) -> None:
            self._http = context.http

        async def check(self, org_id: UUID, config: AcmeConfig) -> HealthResult:
            ...

    ADAPTER = Adapter("acme", AcmeConfig, AcmeCheck)

Dropping that module into the package is all it takes: the discriminated union
:data:`integration_health.IntegrationConfig`, the integrations file and the CLI pick it up.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import logging
import pkgutil
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeVar, Union, cast
from uuid import UUID

from pydantic import Field, TypeAdapter, ValidationError

from . import adapters
from .adapters._http import HttpClient
from .adapters._limits import CredentialLimits
from .adapters._tokens import TokenCache
from .config import IntegrationConfigBase, describe_validation_error
from .errors import ConfigError, UnknownIntegrationType
from .model import HealthResult
from .settings import Settings

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "Adapter",
    "BrokenIntegration",
    "CheckContext",
    "CheckRegistry",
    "HealthCheck",
    "IntegrationRecord",
    "builtin_adapters",
    "default_registry",
]

log = logging.getLogger(__name__)

C_contra = TypeVar("C_contra", bound=IntegrationConfigBase, contravariant=True)
C = TypeVar("C", bound=IntegrationConfigBase)

ENTRY_POINT_GROUP = "integration_health.adapters"


class HealthCheck(Protocol[C_contra]):
    """What an adapter implements: one method, which returns a result for expected failures.

    ``check`` receives the integration's config with every secret reference already resolved.
    It should not enforce its own overall timeout or retry: the runner owns the deadline and
    cancels the check when it passes. Anything it raises is still turned into an
    ``unreachable`` result by the runner.
    """

    integration_type: str

    async def check(self, org_id: UUID, config: C_contra) -> HealthResult:
        """Probe the integration once and say how healthy it is."""
        ...


@dataclass(frozen=True)
class Adapter(Generic[C]):
    """One integration type: its config model and how to build its check."""

    integration_type: str
    """The ``integration_type`` value (the discriminator)."""
    config_model: type[C]
    """The pydantic model of its config (a subclass of :class:`IntegrationConfigBase`)."""
    factory: Callable[[CheckContext], HealthCheck[C]]
    """Builds the check once per registry, given the shared resources."""
    description: str = ""
    """One line for ``--help`` texts and docs."""

    def __post_init__(self) -> None:
        field_info = self.config_model.model_fields.get("integration_type")
        literal = getattr(field_info, "annotation", None)
        if getattr(literal, "__args__", None) != (self.integration_type,):
            raise TypeError(
                f"{self.config_model.__name__}.integration_type must be "
                f'Literal["{self.integration_type}"]'
            )


@dataclass
class CheckContext:
    """Resources shared by every check of one registry (opened and closed with it)."""

    settings: Settings
    """Process settings (private-network policy, user agent, response-size cap…)."""
    tokens: TokenCache = field(default_factory=TokenCache)
    """Access tokens cached per credential (see ``adapters/_tokens.py``)."""
    limits: CredentialLimits = field(default_factory=CredentialLimits)
    """Per-credential concurrency and rate limits (see ``adapters/_limits.py``)."""
    _http: HttpClient | None = field(default=None, repr=False)

    @property
    def http(self) -> HttpClient:
        """The shared, SSRF-guarded HTTP client (created on first use)."""
        if self._http is None:
            self._http = HttpClient(self.settings)
        return self._http

    async def aclose(self) -> None:
        """Close what was opened."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None


@dataclass(frozen=True)
class IntegrationRecord:
    """An integration as stored: the columns and the raw config (references unresolved)."""

    integration_id: UUID
    org_id: UUID
    integration_type: str
    name: str
    config: Mapping[str, Any]
    enabled: bool = True
    monitoring_mode: str = "active"
    check_interval_s: int = 900


@dataclass(frozen=True)
class BrokenIntegration:
    """A stored integration whose config no longer validates (or whose adapter is gone).

    The runner reports it ``unreachable`` / ``config_invalid`` instead of failing the run.
    """

    integration_id: UUID
    org_id: UUID
    integration_type: str
    name: str
    problem: str
    enabled: bool = True
    monitoring_mode: str = "active"
    check_interval_s: int = 900

    @property
    def is_checked_actively(self) -> bool:
        """Broken integrations are reported when they would have been checked."""
        return self.enabled and self.monitoring_mode == "active"


class Slots(asyncio.Semaphore):
    """The registry's limit on checks in flight: a semaphore that can also be taken without
    awaiting when a slot is free (the rule), which saves the runner a coroutine per check."""

    def take(self) -> bool:
        """Take a free slot now and return True; False (nothing taken) when none is free or
        someone is waiting for one (``acquire()`` then decides, so waiters keep their turn)."""
        if self._value <= 0 or self._waiters:
            return False
        self._value -= 1
        return True

    def release(self) -> None:
        """Give a slot back (and wake the first waiter, if any)."""
        if self._waiters:
            super().release()
        else:
            self._value += 1


class CheckRegistry:
    """Maps ``integration_type`` to its adapter, and owns the checks' shared resources.

    Use it as an async context manager (re-entrant) to open and close those resources;
    :func:`~integration_health.run_health_checks` does this itself.
    """

    def __init__(
        self,
        adapters: Iterable[Adapter[Any]] = (),
        *,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._adapters: dict[str, Adapter[Any]] = {}
        self._checks: dict[str, HealthCheck[Any]] = {}
        self._context = CheckContext(self.settings)
        self._depth = 0
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Slots] = (
            weakref.WeakKeyDictionary()
        )
        for adapter in adapters:
            self.register(adapter)

    # -- registration -----------------------------------------------------------------------

    def register(self, adapter: Adapter[Any]) -> None:
        """Add an adapter; an ``integration_type`` can be registered once."""
        if adapter.integration_type in self._adapters:
            raise ValueError(f"integration_type {adapter.integration_type!r} is already registered")
        self._adapters[adapter.integration_type] = adapter
        self.__dict__.pop("_type_adapter", None)

    def register_check(self, config_model: type[C], check: HealthCheck[C]) -> None:
        """Register a ready-made check instance (handy in tests and small scripts)."""
        self.register(Adapter(check.integration_type, config_model, lambda _context: check))

    @property
    def types(self) -> list[str]:
        """Registered integration types, sorted."""
        return sorted(self._adapters)

    def adapter(self, integration_type: str) -> Adapter[Any]:
        """The adapter of a type, or :class:`UnknownIntegrationType`."""
        try:
            return self._adapters[integration_type]
        except KeyError:
            shown = integration_type if len(integration_type) <= 60 else integration_type[:57] + "…"
            raise UnknownIntegrationType(
                f"unknown integration_type {shown!r}; known types: " + ", ".join(self.types)
            ) from None

    def check_for(self, integration_type: str) -> HealthCheck[Any]:
        """The (single, lazily built) check instance of a type."""
        check = self._checks.get(integration_type)
        if check is None:
            check = self.adapter(integration_type).factory(self._context)
            self._checks[integration_type] = check
        return check

    # -- configs ----------------------------------------------------------------------------

    @property
    def config_union(self) -> Any:
        """The discriminated union of the registered config models."""
        models = tuple(a.config_model for a in self._adapters.values())
        if not models:
            raise ConfigError("no adapters are registered")
        if len(models) == 1:
            return models[0]
        return Annotated[Union[models], Field(discriminator="integration_type")]  # noqa: UP007 - a runtime tuple needs Union[…]

    @cached_property
    def _type_adapter(self) -> TypeAdapter[IntegrationConfigBase]:
        return TypeAdapter(self.config_union)

    def parse(self, data: Mapping[str, Any]) -> IntegrationConfigBase:
        """Validate one config dict into its adapter's model (raises ``ValidationError``)."""
        kind = data.get("integration_type") if isinstance(data, Mapping) else None
        if isinstance(kind, str):
            # Validate with the model itself: error locations then name the field alone
            # ("url"), not the union tag first ("http.url").
            model: type[IntegrationConfigBase] = self.adapter(kind).config_model
            return model.model_validate(data)
        return self._type_adapter.validate_python(data)

    def from_record(self, record: IntegrationRecord) -> IntegrationConfigBase | BrokenIntegration:
        """Turn a stored record into its config model, or a :class:`BrokenIntegration`."""
        data = dict(record.config)
        data.update(  # UUIDs as they are: validating one costs half of parsing its text
            integration_id=record.integration_id,
            org_id=record.org_id,
            integration_type=record.integration_type,
            name=record.name,
            enabled=record.enabled,
            monitoring_mode=record.monitoring_mode,
            check_interval_s=record.check_interval_s,
        )
        data.pop("id", None)
        try:
            return self.parse(data)
        except (ValidationError, ConfigError) as exc:
            problem = (
                "; ".join(describe_validation_error(exc))
                if isinstance(exc, ValidationError)
                else str(exc)
            )
            return BrokenIntegration(
                integration_id=record.integration_id,
                org_id=record.org_id,
                integration_type=record.integration_type,
                name=record.name,
                problem=f"stored configuration is invalid: {problem}",
                enabled=record.enabled,
                monitoring_mode=record.monitoring_mode,
                check_interval_s=record.check_interval_s,
            )

    # -- warm-up ----------------------------------------------------------------------------

    async def warm_up(
        self,
        configs: Iterable[IntegrationConfigBase],
        *,
        environ: Mapping[str, str] | None = None,
        timeout_s: float = 5.0,
    ) -> int:
        """Prepare checks that are due soon, so the first probe after idle is not a cold one.

        Opens the shared HTTP pool and loads its TLS trust store, then calls each check's optional
        ``async warm_up(org_id, config)`` (e.g. refreshing a token about to expire), each
        bounded by ``timeout_s``; failures are logged, never raised (the check itself will
        report them). Returns how many warm-ups ran.
        """
        self._context.http.session()
        _ = self._context.http.ssl_context
        done = 0
        for config in configs:
            try:
                check = self.check_for(config.integration_type)
            except UnknownIntegrationType:
                continue
            warm = getattr(check, "warm_up", None)
            if warm is None:
                continue
            try:
                resolved, _ = config.resolve(environ)
                await asyncio.wait_for(warm(resolved.org_id, resolved), timeout_s)
                done += 1
            except Exception as exc:  # noqa: BLE001 - warm-up is best effort
                log.debug("warm-up of %s failed: %s", config.integration_id, type(exc).__name__)
        return done

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def slots(self) -> Slots:
        """The process-wide limit on checks in flight (``settings.concurrency``), per loop."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = Slots(self.settings.concurrency)
        return slots

    @property
    def context(self) -> CheckContext:
        """The shared resources handed to every check factory."""
        return self._context

    async def __aenter__(self) -> CheckRegistry:
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth == 0:
            await self.aclose()

    async def aclose(self) -> None:
        """Close every check that holds resources, then the shared ones."""
        for check in self._checks.values():
            closer = cast("Callable[[], Awaitable[None]] | None", getattr(check, "aclose", None))
            if closer is not None:
                await closer()
        await self._context.aclose()


def builtin_adapters() -> list[Adapter[Any]]:
    """Adapters shipped in :mod:`integration_health.adapters`, plus installed plug-ins.

    Every public module of the package that defines ``ADAPTER`` is one adapter; plug-ins
    expose an ``ADAPTER`` through the ``integration_health.adapters`` entry-point group.
    """
    found: dict[str, Adapter[Any]] = {}
    for info in sorted(pkgutil.iter_modules(adapters.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{adapters.__name__}.{info.name}")
        adapter = getattr(module, "ADAPTER", None)
        if isinstance(adapter, Adapter):
            found[adapter.integration_type] = adapter
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            adapter = entry_point.load()
        except Exception:  # a broken plug-in must not take the monitor down
            log.exception("could not load adapter plug-in %s", entry_point.name)
            continue
        if isinstance(adapter, Adapter) and adapter.integration_type not in found:
            found[adapter.integration_type] = adapter
    return list(found.values())


def default_registry(settings: Settings | None = None) -> CheckRegistry:
    """A new registry with every built-in and plug-in adapter."""
    return CheckRegistry(builtin_adapters(), settings=settings)
