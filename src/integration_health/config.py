"""Integration configuration: the fields every adapter config shares, and secret references.

Every adapter defines one config model, a subclass of :class:`IntegrationConfigBase` with
``integration_type: Literal["<its type>"]``; :data:`integration_health.IntegrationConfig` is the
pydantic discriminated union of all of them, keyed on ``integration_type``.

Secrets are never stored in clear text. A secret field (``pydantic.SecretStr``) holds a
*reference* that is resolved at check time:

- ``${NAME}`` or ``${env:NAME}`` — the environment variable ``NAME``;
- ``${file:/run/secrets/name}`` — the contents of a file (trailing newline stripped), as
  mounted by Docker/Kubernetes secrets;
- ``$${`` writes a literal ``${``.

References may appear in any string field (e.g. a URL whose host comes from the environment);
values that came from a reference are treated as secrets when errors are redacted.
"""

from __future__ import annotations

import enum
import os
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Self, Union, get_args, get_origin
from uuid import UUID

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails, to_jsonable_python

from .errors import ConfigError, SecretReferenceError

__all__ = [
    "MIN_CHECK_INTERVAL_S",
    "IntegrationConfigBase",
    "MonitoringMode",
    "ResolvedSecrets",
    "describe_error",
    "describe_validation_error",
    "find_references",
    "validation_errors",
]

MIN_CHECK_INTERVAL_S = 900
"""The floor for authenticated probes: once per 15 minutes per integration."""

DEFAULT_DEGRADED_LATENCY_MS = 2_000
"""A successful probe slower than this is reported ``degraded``."""

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MonitoringMode(enum.StrEnum):
    """How the status of an integration is found."""

    ACTIVE = "active"
    """Probed on a schedule (and updated by sync outcomes too)."""
    PASSIVE = "passive"
    """Never probed; the status comes from the sync system's outcomes only."""
    DISABLED = "disabled"
    """Neither probed nor updated."""


def _parse_reference(body: str) -> tuple[str, str]:
    """Split a reference body into ``("env", NAME)`` or ``("file", PATH)``."""
    if body.startswith("file:"):
        path = body.removeprefix("file:")
        if not path:
            raise SecretReferenceError("empty file path in secret reference ${file:}")
        return "file", path
    name = body.removeprefix("env:")
    if not _ENV_NAME.fullmatch(name):
        raise SecretReferenceError(
            f"invalid secret reference ${{{_printable(body, 40)}}}: use ${{NAME}} for an "
            "environment variable or ${file:/path} for a file"
        )
    return "env", name


def find_references(value: str) -> list[tuple[str, str]]:
    """The references (``("env", NAME)`` / ``("file", PATH)``) that occur in ``value``."""
    found = []
    for match in _REFERENCE.finditer(value):
        if match.group(0) != "$${":
            found.append(_parse_reference(match.group(1)))
    return found


class ResolvedSecrets:
    """Resolves references from an environment mapping and files, remembering the values.

    The remembered values are what the redactor scrubs from error texts.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self.values: set[str] = set()

    def lookup(self, kind: str, target: str) -> str:
        """The value a reference points to, or :class:`SecretReferenceError`."""
        if kind == "env":
            value = self._environ.get(target)
            if value is None:
                raise SecretReferenceError(f"environment variable {target} is not set")
        else:
            try:
                value = Path(target).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise SecretReferenceError(
                    f"secret file {target} cannot be read ({exc.strerror or type(exc).__name__})"
                ) from None
        if value == "":
            raise SecretReferenceError(
                f"{'environment variable' if kind == 'env' else 'secret file'} {target} is empty"
            )
        self.values.add(value)
        return value

    def substitute(self, value: str) -> str:
        """``value`` with every reference replaced by what it points to."""

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            return self.lookup(*_parse_reference(match.group(1)))

        return _REFERENCE.sub(replace, value)


def _walk_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply ``fn`` to every string inside nested dicts/lists."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {key: _walk_strings(item, fn) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk_strings(item, fn) for item in value]
    return value


def _iter_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _iter_strings(item)


def _reveal(value: Any) -> Any:
    """Replace ``SecretStr`` objects by their values inside nested containers."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(item) for item in value]
    return value


_NO_STRINGS = (int, float, UUID, enum.Enum, type(None))
"""Field value types that hold no string :meth:`IntegrationConfigBase.resolve` substitutes
(``bool`` is an ``int``; a ``str`` enum is checked as a string first)."""


def _may_hold_reference(value: Any) -> bool:
    """False only when no string inside ``value`` contains ``${`` (so no reference, and no
    ``$${`` escape, can be substituted); True for any type it does not know."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, SecretStr):
        return "${" in value.get_secret_value()
    if isinstance(value, _NO_STRINGS):
        return False
    if isinstance(value, list | tuple):
        return any(_may_hold_reference(item) for item in value)
    if isinstance(value, dict):
        return any(_may_hold_reference(item) for item in value.values())
    return True


_PLAIN_TYPES = frozenset({bool, int, float, UUID, type(None)})
"""Exact types of field values that never hold a string (a fast path of the check above)."""

_SECRET_FIELD_NAMES: weakref.WeakKeyDictionary[type[Any], tuple[str, ...]] = (
    weakref.WeakKeyDictionary()
)
""":meth:`IntegrationConfigBase.secret_field_names`, computed once per class."""


def _annotation_has_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_annotation_has_secret(arg) for arg in getattr(annotation, "__args__", ()))


_STRINGLESS_ANNOTATIONS = (bool, int, float, UUID, type(None))


def _annotation_may_hold_string(annotation: Any) -> bool:
    """False when no value a field of this (validated) type can hold contains a string:
    numbers, UUIDs, ``None``, enums and literals whose values hold no ``${``, and unions,
    lists and tuples of those. True for anything else (``str``, ``SecretStr``, dicts, ``Any``,
    models, types it does not know)."""
    if annotation in _STRINGLESS_ANNOTATIONS:
        return False
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return any("${" in str(member.value) for member in annotation)
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return any(isinstance(arg, str) and "${" in arg for arg in args)
    if origin in (Union, UnionType, list, tuple) and args:
        return any(_annotation_may_hold_string(arg) for arg in args if arg is not Ellipsis)
    return True


_PLAN = "__integration_health_resolve_plan__"
"""The class attribute holding :func:`_resolve_plan`'s answer (in the class's own
``__dict__``: a subclass has its own fields, so its own plan)."""


def _resolve_plan(cls: type[IntegrationConfigBase]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The fields :meth:`IntegrationConfigBase.resolve` must look at for references (those
    that may hold a string) and the secret fields, computed once per class."""
    plan: tuple[tuple[str, ...], tuple[str, ...]] | None = cls.__dict__.get(_PLAN)
    if plan is None:
        plan = (
            tuple(
                name
                for name, field in cls.model_fields.items()
                if _annotation_may_hold_string(field.annotation)
            ),
            cls.secret_field_names(),
        )
        type.__setattr__(cls, _PLAN, plan)
    return plan


class IntegrationConfigBase(BaseModel):
    """Fields every integration has, whatever its type.

    Subclasses add ``integration_type: Literal["…"]`` and their vendor fields; secret fields
    are ``SecretStr`` and hold references (see the module docstring).
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
    )

    default_degraded_latency_ms: ClassVar[int] = DEFAULT_DEGRADED_LATENCY_MS
    """The type's default threshold above which a successful probe counts as degraded."""
    min_check_interval_s: ClassVar[int] = MIN_CHECK_INTERVAL_S
    """The type's floor for ``check_interval_s`` (vendors whose calls cost money raise it)."""

    integration_id: UUID = Field(validation_alias=AliasChoices("integration_id", "id"))
    """Stable identifier of the integration (``id`` in the integrations file)."""
    org_id: UUID
    """The organisation that owns the integration."""
    integration_type: str
    """Which adapter checks it; the discriminator of :data:`IntegrationConfig`."""
    name: str = Field(min_length=1, max_length=200)
    """Human name shown in the dashboard, CLI and alerts."""
    enabled: bool = True
    """A disabled integration is neither checked nor shown as failing."""
    monitoring_mode: MonitoringMode = MonitoringMode.ACTIVE
    """``active`` (probed on a schedule), ``passive`` (sync outcomes only) or ``disabled``."""
    check_interval_s: int = MIN_CHECK_INTERVAL_S
    """Seconds between two probes; at least 900 (15 minutes) to protect the vendor's limits."""
    degraded_latency_ms: int | None = Field(default=None, gt=0, le=600_000)
    """A successful probe slower than this is ``degraded`` (default: the type's, 2 000 ms)."""

    @field_validator("name")
    @classmethod
    def _strip_name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("name must not be blank")
        return value

    @field_validator("check_interval_s")
    @classmethod
    def _interval_floor(cls, value: int) -> int:
        floor = cls.min_check_interval_s
        if value < floor:
            raise ValueError(
                f"must be at least {floor} seconds ({floor // 60} minutes) "
                "so that probes never eat into the vendor's rate limits"
            )
        if value > 7 * 24 * 3600:
            raise ValueError("must be at most 604800 seconds (7 days)")
        return value

    # -- effective values -------------------------------------------------------------------

    @property
    def effective_degraded_latency_ms(self) -> int:
        """``degraded_latency_ms``, or the type's default when unset."""
        if self.degraded_latency_ms is not None:
            return self.degraded_latency_ms
        return self.default_degraded_latency_ms

    @property
    def is_checked_actively(self) -> bool:
        """True when the scheduler and ``check`` should probe this integration."""
        return self.enabled and self.monitoring_mode is MonitoringMode.ACTIVE

    # -- secrets ----------------------------------------------------------------------------

    @classmethod
    def secret_field_names(cls) -> tuple[str, ...]:
        """Names of the fields that hold secrets (``SecretStr``, possibly optional).

        A pure function of the class, computed once per class (the runner asks for every
        check).
        """
        names = _SECRET_FIELD_NAMES.get(cls)
        if names is None:
            names = _SECRET_FIELD_NAMES[cls] = tuple(
                name
                for name, field in cls.model_fields.items()
                if _annotation_has_secret(field.annotation)
            )
        return names

    def to_storage(self) -> dict[str, Any]:
        """A JSON-able dict of every field, secrets as their (unresolved) references.

        Raises :class:`ConfigError` if a secret field holds a literal value rather than a
        reference: literal secrets are never written to the store.
        """
        self.ensure_secrets_are_references()
        stored: dict[str, Any] = to_jsonable_python(_reveal(self.model_dump(mode="python")))
        return stored

    def ensure_secrets_are_references(self) -> None:
        """Refuse secret fields holding literal values instead of ``${…}`` references."""
        for name in self.secret_field_names():
            raw = _reveal(getattr(self, name))
            for text in _iter_strings(raw):
                try:
                    found = find_references(text)
                except SecretReferenceError as exc:
                    raise SecretReferenceError(f"field '{name}': {exc}") from None
                if not found:
                    raise ConfigError(
                        f"field '{name}' holds a literal secret; write a reference instead, "
                        f"e.g. ${{{name.upper()}}} (environment variable) or "
                        "${file:/run/secrets/…}, so the secret is never stored"
                    )

    def references(self) -> list[tuple[str, str]]:
        """Every reference used in any string field."""
        raw = _reveal(self.model_dump(mode="python"))
        return [ref for text in _iter_strings(raw) for ref in find_references(text)]

    def reference_problems(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """Why references cannot be resolved now, one ``field 'x': …`` line per problem."""
        resolver = ResolvedSecrets(environ)
        problems = []
        for name in type(self).model_fields:
            raw = _reveal(getattr(self, name))
            raw = raw.value if isinstance(raw, enum.Enum) else raw
            if not isinstance(raw, str | dict | list):
                continue
            for text in _iter_strings(raw):
                try:
                    for kind, target in find_references(text):
                        resolver.lookup(kind, target)
                except SecretReferenceError as exc:
                    problems.append(f"field '{name}': {exc}")
        return problems

    def resolve(self, environ: Mapping[str, str] | None = None) -> tuple[Self, set[str]]:
        """A copy with every reference replaced by its value, and the set of those values.

        Raises :class:`SecretReferenceError` (naming the variable or file, never a value).
        A config with no ``${`` in any string field has nothing to substitute: it is returned
        itself (it is frozen) with the values of its secret fields, without re-validating it
        (``tests/unit/test_config_resolve.py`` proves that this equals the re-validated copy
        for every registered integration type).
        """
        fields = self.__dict__  # the field values (pydantic keeps nothing else there)
        cls = type(self)
        may_hold_strings, secret_names = cls.__dict__.get(_PLAN) or _resolve_plan(cls)
        for name in may_hold_strings:
            value = fields[name]
            kind = value.__class__
            if kind is str:  # the common cases, inlined
                if "${" in value:
                    return self._resolve_by_validation(environ)
            elif kind in _PLAIN_TYPES or ((kind is dict or kind is list) and not value):
                continue
            elif _may_hold_reference(value):
                return self._resolve_by_validation(environ)
        secret_values: set[str] = set()
        for name in secret_names:
            secret = fields[name]
            if secret is None:
                continue
            if secret.__class__ is SecretStr:
                value = secret.get_secret_value()
                if value:
                    secret_values.add(value)
            else:
                secret_values.update(s for s in _iter_strings(_reveal(secret)) if s)
        return self, secret_values

    def _resolve_by_validation(
        self, environ: Mapping[str, str] | None = None
    ) -> tuple[Self, set[str]]:
        """:meth:`resolve` the long way: dump, substitute every reference, validate again."""
        resolver = ResolvedSecrets(environ)
        raw = _reveal(self.model_dump(mode="python"))
        substituted = _walk_strings(raw, resolver.substitute)
        secret_values = set(resolver.values)
        for name in self.secret_field_names():
            secret_values.update(s for s in _iter_strings(substituted.get(name)) if s)
        try:
            resolved = type(self).model_validate(substituted)
        except ValidationError as exc:
            raise ConfigError(
                "configuration is invalid once references are resolved: "
                + "; ".join(describe_validation_error(exc))
            ) from None
        return resolved, secret_values


_MAX_NAME = 60
"""Longer field names (keys written by the user) are shortened in messages."""

_GENERIC_MESSAGES = {
    "uuid_parsing": "Input should be a valid UUID",
    "url_parsing": "Input should be a valid URL",
    "url_syntax_violation": "Input should be a valid URL",
    "json_invalid": "Input should be valid JSON",
    "date_parsing": "Input should be a valid date in the format YYYY-MM-DD",
    "datetime_parsing": "Input should be a valid datetime",
    "date_from_datetime_parsing": "Input should be a valid date or datetime",
    "datetime_from_date_parsing": "Input should be a valid datetime or date",
    "time_parsing": "Input should be in a valid time format",
    "time_delta_parsing": "Input should be a valid timedelta",
    "mapping_type": "Input should be a valid mapping",
    "iteration_error": "Input should be iterable",
    "bytes_invalid_encoding": "Input should be valid text",
}
"""Pydantic messages that quote part of the input (``…, found `x` at 1``), without the quote."""


def _printable(text: str, limit: int = _MAX_NAME) -> str:
    """``text`` on one line (control characters escaped), at most ``limit`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + _printable(str(item)))
    return "".join(parts)


def validation_errors(exc: ValidationError) -> list[ErrorDetails]:
    """The errors of ``exc`` without their input values (which may be secrets)."""
    return exc.errors(include_url=False, include_input=False, include_context=True)


def describe_error(error: ErrorDetails) -> str:
    """One problem as ``field 'a.b': message`` — never the offending input value."""
    if error["type"] == "union_tag_invalid":
        ctx = error.get("ctx", {})
        # only reached for a tag that is not text (a list, a number…): not worth quoting
        return f"field 'integration_type': unknown type; known types: {ctx.get('expected_tags')}"
    if error["type"] == "union_tag_not_found":
        return "field 'integration_type': missing (it says which adapter checks this)"
    msg = _GENERIC_MESSAGES.get(error["type"]) or error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        msg = "unknown field (check its spelling, or the integration_type)"
    msg = _printable(msg, limit=400)
    where = _location(tuple(error["loc"]))
    return f"field '{where}': {msg}" if where else msg


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem (see :func:`describe_error`)."""
    return [describe_error(error) for error in validation_errors(exc)]
