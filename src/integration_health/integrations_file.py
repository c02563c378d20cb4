"""The integrations file (YAML): organisations, their members and their integrations.

.. code-block:: yaml

    organizations:                 # optional; created if missing
      - id: 7d3f…-uuid
        name: Acme AS
        members:                   # optional; who may see this org in the API/dashboard
          - {user_id: 2a9e…-uuid, role: admin}   # role: admin | member
    integrations:                  # each item is one IntegrationConfig
      - id: 0b1c…-uuid             # = integration_id (derived from org_id + name if left out)
        org_id: 7d3f…-uuid
        integration_type: http
        name: Order webhook receiver
        url: https://hooks.acme.example/health

Everything is validated before anything is written; every problem is reported with the file,
line, item and field, and the import is all or nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import yaml
from pydantic import ValidationError

from .checks import CheckRegistry, IntegrationRecord
from .config import IntegrationConfigBase, describe_error, validation_errors
from .errors import ConfigError, IntegrationFileError, UnknownIntegrationType
from .store.base import ImportSummary, Member, Organization, Store

__all__ = ["IntegrationsFile", "import_integrations", "parse_integrations_file"]

MAX_FILE_BYTES = 20 * 1024 * 1024
_NAMESPACE = uuid.UUID("6f1d0c5e-8a57-4c1b-9a3e-3f9d5f0b7a21")
_ROLES = ("admin", "member")


@dataclass
class IntegrationsFile:
    """A validated integrations file."""

    organizations: list[Organization] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    integrations: list[IntegrationConfigBase] = field(default_factory=list)


def derived_integration_id(org_id: UUID | str, name: str) -> UUID:
    """The id given to an integration written without one: stable for (org, name)."""
    return uuid.uuid5(_NAMESPACE, f"{org_id}/{name}")


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, line: int | None, where: str, message: str) -> None:
        position = f"{self.source}:{line}" if line else self.source
        self.lines.append(f"{position}: {where}: {message}" if where else f"{position}: {message}")

    def raise_if_any(self) -> None:
        if self.lines:
            count = len(self.lines)
            head = (
                f"{count} problem{'s' if count > 1 else ''} in {self.source}; nothing was imported"
            )
            raise IntegrationFileError("\n".join([head, *self.lines]))


def _short(text: str, limit: int = 60) -> str:
    """``text`` on one line (control characters escaped), at most ``limit`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _keys(keys: Sequence[str]) -> str:
    """Some of ``keys``, for a message: each shortened, at most five."""
    shown = ", ".join(_short(key, 40) for key in keys[:5])
    return shown if len(keys) <= 5 else f"{shown} and {len(keys) - 5} more"


def _duplicate_keys(root: yaml.Node | None) -> list[tuple[int, str, int]]:
    """``(line, key, first line)`` of every key written twice in one mapping.

    YAML loaders silently keep the last value of a repeated key; in a config that hides a
    typo'd copy-paste (two ``url:`` lines), so the file is refused instead. Merge keys
    (``<<``) may repeat.
    """
    found: list[tuple[int, str, int]] = []
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases share nodes (and may even form cycles)
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                    line = key_node.start_mark.line + 1
                    if key_node.value in lines:
                        found.append((line, key_node.value, lines[key_node.value]))
                    else:
                        lines[key_node.value] = line
                stack.extend((key_node, value_node))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return sorted(found)


def _line_of(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return cast("yaml.Node", value_node)
    return None


def _item(node: yaml.Node | None, index: int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return cast("yaml.Node", node.value[index])
    return None


def _field_line(item_node: yaml.Node | None, loc: str) -> int | None:
    """The line of the field a validation error points at (else the item's line)."""
    head = loc.split(".", 1)[0].split("[", 1)[0]
    return _line_of(_child(item_node, head)) or _line_of(item_node)


def parse_integrations_file(
    text: str,
    registry: CheckRegistry,
    *,
    source: str = "<integrations>",
    environ: Mapping[str, str] | None = None,
) -> IntegrationsFile:
    """Validate an integrations file; raise :class:`IntegrationFileError` listing every problem."""
    problems = _Problems(source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        problems.add(line, "", f"not valid YAML: {_short(exc.problem or str(exc), 200)}")
    except yaml.YAMLError as exc:
        problems.add(None, "", f"not valid YAML: {_short(str(exc), 200)}")
    except RecursionError:
        problems.add(None, "", "not valid here: lists or mappings are nested too deeply")
    except ValueError:
        # int("9" * 5000) refuses numbers of more than 4 300 digits
        problems.add(None, "", "not valid here: a number has far too many digits")
    problems.raise_if_any()
    for line, key, first in _duplicate_keys(root):
        problems.add(line, "", f"key '{_short(key)}' is repeated (first on line {first})")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(1, "", "the file must be a mapping with 'organizations' and 'integrations'")
        problems.raise_if_any()
    unknown = sorted(set(map(str, data)) - {"organizations", "integrations"})
    if unknown:
        problems.add(
            _line_of(_child(root, unknown[0])),
            "",
            f"unknown top-level key(s) {_keys(unknown)}; expected organizations, integrations",
        )
    result = IntegrationsFile()
    _parse_organizations(data.get("organizations"), _child(root, "organizations"), result, problems)
    _parse_integrations(
        data.get("integrations"), _child(root, "integrations"), registry, result, problems, environ
    )
    problems.raise_if_any()
    return result


def _parse_organizations(
    items: Any, node: yaml.Node | None, result: IntegrationsFile, problems: _Problems
) -> None:
    if items is None:
        return
    if not isinstance(items, list):
        problems.add(_line_of(node), "organizations", "must be a list")
        return
    seen: set[UUID] = set()
    for index, item in enumerate(items):
        where = f"organizations[{index}]"
        item_node = _item(node, index)
        line = _line_of(item_node)
        if not isinstance(item, dict):
            problems.add(line, where, "must be a mapping with id and name")
            continue
        extra = sorted(set(map(str, item)) - {"id", "name", "members"})
        if extra:
            problems.add(line, where, f"unknown field(s) {_keys(extra)}")
        org_id = _uuid(item.get("id"))
        name = item.get("name")
        if org_id is None:
            problems.add(_field_line(item_node, "id"), where, "field 'id': must be a UUID")
        if not isinstance(name, str) or not name.strip():
            problems.add(_field_line(item_node, "name"), where, "field 'name': required text")
        if org_id is None or not isinstance(name, str) or not name.strip():
            continue
        if org_id in seen:
            problems.add(line, where, f"organization {org_id} is listed twice")
            continue
        seen.add(org_id)
        result.organizations.append(Organization(org_id, name.strip()))
        members = item.get("members") or []
        members_node = _child(item_node, "members")
        if not isinstance(members, list):
            problems.add(_line_of(members_node), f"{where}.members", "must be a list")
            continue
        for m_index, member in enumerate(members):
            m_where = f"{where}.members[{m_index}]"
            m_line = _line_of(_item(members_node, m_index))
            if not isinstance(member, dict):
                problems.add(m_line, m_where, "must be a mapping with user_id and role")
                continue
            user_id = _uuid(member.get("user_id"))
            role = member.get("role", "member")
            if user_id is None:
                problems.add(m_line, m_where, "field 'user_id': must be a UUID")
            elif not isinstance(role, str) or role not in _ROLES:
                problems.add(m_line, m_where, "field 'role': must be admin or member")
            else:
                result.members.append(Member(org_id, user_id, role))


def _parse_integrations(
    items: Any,
    node: yaml.Node | None,
    registry: CheckRegistry,
    result: IntegrationsFile,
    problems: _Problems,
    environ: Mapping[str, str] | None,
) -> None:
    if items is None:
        return
    if not isinstance(items, list):
        problems.add(_line_of(node), "integrations", "must be a list")
        return
    seen: dict[UUID, int] = {}
    for index, item in enumerate(items):
        item_node = _item(node, index)
        line = _line_of(item_node)
        where = f"integrations[{index}]"
        if not isinstance(item, dict):
            problems.add(line, where, "must be a mapping (one integration)")
            continue
        if isinstance(item.get("name"), str):
            where += f" ({_short(item['name'])!r})"
        data = dict(item)
        if "id" not in data and "integration_id" not in data:
            org, name = data.get("org_id"), data.get("name")
            if _uuid(org) is not None and isinstance(name, str) and name.strip():
                data["id"] = str(derived_integration_id(str(org), name.strip()))
        try:
            config = registry.parse(data)
        except ValidationError as exc:
            for error in validation_errors(exc):
                loc = [str(part) for part in error["loc"]]
                # a tagged union puts the tag first: ("http", "url"); the field is what follows
                name = loc[-1] if loc else "integration_type"
                problems.add(_field_line(item_node, name), where, describe_error(error))
            continue
        except UnknownIntegrationType:
            problems.add(
                _field_line(item_node, "integration_type"),
                where,
                f"unknown integration_type '{_short(str(data['integration_type']))}'; "
                f"known types: {', '.join(registry.types)}",
            )
            continue
        except ConfigError as exc:
            problems.add(_field_line(item_node, "integration_type"), where, str(exc))
            continue
        try:
            config.ensure_secrets_are_references()
        except ConfigError as exc:  # "field 'api_token': holds a literal secret; …"
            message = str(exc)
            field_name = message.split("'", 2)[1] if message.startswith("field '") else ""
            problems.add(_field_line(item_node, field_name) if field_name else line, where, message)
            continue
        for problem in config.reference_problems(environ):
            field_name = problem.split("'", 2)[1]
            problems.add(_field_line(item_node, field_name), where, problem)
        if config.integration_id in seen:
            problems.add(
                line,
                where,
                f"id {config.integration_id} is used twice "
                f"(also by integrations[{seen[config.integration_id]}])",
            )
            continue
        seen[config.integration_id] = index
        result.integrations.append(config)


def _uuid(value: Any) -> UUID | None:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def read_integrations_file(
    path: str | Path, registry: CheckRegistry, *, environ: Mapping[str, str] | None = None
) -> IntegrationsFile:
    """Read and validate a file (``-`` is not supported: pass text to the parser instead)."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise IntegrationFileError(
                f"{path}: the file is {size:,} bytes; at most {MAX_FILE_BYTES:,} are accepted"
            )
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IntegrationFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IntegrationFileError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise IntegrationFileError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise IntegrationFileError(f"{path}: cannot be read ({exc.strerror})") from None
    return parse_integrations_file(text, registry, source=str(path), environ=environ)


def to_records(integrations: Sequence[IntegrationConfigBase]) -> list[IntegrationRecord]:
    """Configs as store records (secret references kept as they are)."""
    records = []
    for config in integrations:
        stored = config.to_storage()
        for column in (
            "integration_id",
            "org_id",
            "integration_type",
            "name",
            "enabled",
            "monitoring_mode",
            "check_interval_s",
        ):
            stored.pop(column, None)
        records.append(
            IntegrationRecord(
                integration_id=config.integration_id,
                org_id=config.org_id,
                integration_type=config.integration_type,
                name=config.name,
                config=stored,
                enabled=config.enabled,
                monitoring_mode=config.monitoring_mode.value,
                check_interval_s=config.check_interval_s,
            )
        )
    return records


async def import_integrations(parsed: IntegrationsFile, store: Store) -> ImportSummary:
    """Write a validated file to the store, all or nothing.

    Organisations referenced by integrations but neither listed nor stored are created with
    their id as name (rename them by listing them under ``organizations``).
    """
    listed = {org.id for org in parsed.organizations}
    organizations = list(parsed.organizations)
    for org_id in dict.fromkeys(
        [c.org_id for c in parsed.integrations] + [m.org_id for m in parsed.members]
    ):
        if org_id not in listed and await store.get_organization(org_id) is None:
            organizations.append(Organization(org_id, str(org_id)))
            listed.add(org_id)
    return await store.import_definitions(
        organizations, parsed.members, to_records(parsed.integrations)
    )
