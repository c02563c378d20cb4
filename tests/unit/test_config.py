"""Integration configs: the discriminated union, common fields, secret references."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

import integration_health
from integration_health import ConfigError, SecretReferenceError, UnknownIntegrationType
from integration_health.adapters.http import HttpConfig
from integration_health.checks import CheckRegistry, IntegrationRecord
from integration_health.config import describe_validation_error, find_references
from integration_health.testing import FakeConfig

ORG = "7d3f0000-0000-4000-8000-000000000001"
ID = "0b1c0000-0000-4000-8000-000000000002"


def http(**fields: Any) -> dict[str, Any]:
    return {"id": ID, "org_id": ORG, "integration_type": "http", "name": "hook", **fields}


def test_public_union_dispatches_on_integration_type() -> None:
    """IntegrationConfig parses a dict into its adapter's model by integration_type."""
    config = TypeAdapter(integration_health.IntegrationConfig).validate_python(
        http(url="https://example.com/health")
    )
    assert isinstance(config, HttpConfig)
    assert config.integration_id == uuid.UUID(ID)
    assert config.method == "HEAD"


def test_registry_refuses_unknown_type(registry: CheckRegistry) -> None:
    """An unknown integration_type names the known ones."""
    with pytest.raises(UnknownIntegrationType, match=r"'nope'.*known types: .*http"):
        registry.parse(http(integration_type="nope", url="https://x"))


def test_unknown_type_is_shortened_in_the_error(registry: CheckRegistry) -> None:
    """A huge unknown type name is not echoed whole (it may be pasted junk)."""
    with pytest.raises(UnknownIntegrationType) as info:
        registry.adapter("x" * 5_000)
    assert len(str(info.value)) < 400
    assert "xxx…" in str(info.value)


def test_missing_type_is_reported(registry: CheckRegistry) -> None:
    """A config without integration_type says it is missing."""
    data = http(url="https://x")
    del data["integration_type"]
    with pytest.raises(ValidationError) as info:
        registry.parse(data)
    assert "integration_type" in describe_validation_error(info.value)[0]


def test_interval_floor_is_enforced(registry: CheckRegistry) -> None:
    """check_interval_s below 900 s is refused with the reason."""
    with pytest.raises(ValidationError) as info:
        registry.parse(http(url="https://x", check_interval_s=60))
    (line,) = describe_validation_error(info.value)
    assert line.startswith("field 'check_interval_s': must be at least 900 seconds")


def test_errors_never_echo_input_values(registry: CheckRegistry) -> None:
    """Validation messages name the field, never the value (it may be a secret)."""
    with pytest.raises(ValidationError) as info:
        registry.parse(http(url="https://x", bearer_token=12345678912345, method="s3cr3t-v4lue"))
    text = " ".join(describe_validation_error(info.value))
    assert "s3cr3t-v4lue" not in text
    assert "field 'method'" in text


def test_extra_fields_are_refused(registry: CheckRegistry) -> None:
    """A misspelt field is an error, not silently ignored."""
    with pytest.raises(ValidationError) as info:
        registry.parse(http(url="https://x", metod="GET"))
    assert describe_validation_error(info.value) == [
        "field 'metod': unknown field (check its spelling, or the integration_type)"
    ]


def test_blank_name_is_refused(registry: CheckRegistry) -> None:
    with pytest.raises(ValidationError, match="name must not be blank"):
        registry.parse(http(url="https://x", name="   "))


def test_effective_threshold_and_active_flag() -> None:
    """Unset degraded_latency_ms falls back to the type default; disabled is not active."""
    config = HttpConfig.model_validate(http(url="https://x"))
    assert config.effective_degraded_latency_ms == 2000
    assert config.is_checked_actively
    custom = HttpConfig.model_validate(http(url="https://x", degraded_latency_ms=500))
    assert custom.effective_degraded_latency_ms == 500
    assert not HttpConfig.model_validate(http(url="https://x", enabled=False)).is_checked_actively
    passive = HttpConfig.model_validate(http(url="https://x", monitoring_mode="passive"))
    assert not passive.is_checked_actively


def test_find_references() -> None:
    """${NAME}, ${env:NAME} and ${file:PATH} are references; $${ escapes."""
    assert find_references("${A}-${env:B}/${file:/run/x}") == [
        ("env", "A"),
        ("env", "B"),
        ("file", "/run/x"),
    ]
    assert find_references("$${NOT}") == []
    with pytest.raises(SecretReferenceError, match="invalid secret reference"):
        find_references("${not a name}")
    with pytest.raises(SecretReferenceError, match="empty file path"):
        find_references("${file:}")


def test_secret_references_resolve_from_env_and_file(tmp_path: Path) -> None:
    """References are replaced by their values at resolve time; the values are remembered."""
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file-123\n")
    config = HttpConfig.model_validate(
        http(
            url="https://${HOST}/health",
            bearer_token=f"${{file:{secret_file}}}",
            headers={"X-Key": "${KEY}", "X-Lit": "$${KEEP}"},
        )
    )
    resolved, secrets = config.resolve({"HOST": "example.com", "KEY": "key-value-9"})
    assert resolved.url == "https://example.com/health"
    assert resolved.bearer_token is not None
    assert resolved.bearer_token.get_secret_value() == "from-file-123"
    assert resolved.headers == {"X-Key": "key-value-9", "X-Lit": "${KEEP}"}
    assert {"from-file-123", "key-value-9", "example.com"} <= secrets
    # the stored form keeps the references, not the values
    assert config.to_storage()["bearer_token"] == f"${{file:{secret_file}}}"


def test_missing_reference_names_variable_not_value() -> None:
    """An unset variable or unreadable file is named; resolve raises SecretReferenceError."""
    config = HttpConfig.model_validate(http(url="https://x", bearer_token="${NOPE_TOKEN}"))
    with pytest.raises(SecretReferenceError, match="NOPE_TOKEN is not set"):
        config.resolve({})
    assert config.reference_problems({}) == [
        "field 'bearer_token': environment variable NOPE_TOKEN is not set"
    ]
    assert config.reference_problems({"NOPE_TOKEN": "x"}) == []
    missing_file = HttpConfig.model_validate(
        http(url="https://x", bearer_token="${file:/nonexistent/secret}")
    )
    with pytest.raises(SecretReferenceError, match="cannot be read"):
        missing_file.resolve({})
    with pytest.raises(SecretReferenceError, match="is empty"):
        config.resolve({"NOPE_TOKEN": ""})


def test_invalid_after_resolution_is_a_config_error() -> None:
    """A reference that resolves to an invalid value is reported without the value."""
    config = HttpConfig.model_validate(http(url="${URL}"))
    with pytest.raises(ConfigError) as info:
        config.resolve({"URL": "ftp://secret-host-name"})
    assert "secret-host-name" not in str(info.value)
    assert "field 'url'" in str(info.value)


def test_literal_secrets_are_never_stored() -> None:
    """to_storage refuses a literal secret and tells how to write a reference."""
    config = HttpConfig.model_validate(http(url="https://x", bearer_token="literal-token"))
    with pytest.raises(ConfigError, match=r"literal secret; write a reference") as info:
        config.to_storage()
    assert "literal-token" not in str(info.value)
    assert HttpConfig.secret_field_names() == ("bearer_token",)


def test_stored_record_that_no_longer_validates_is_broken(registry: CheckRegistry) -> None:
    """A stored config that fails validation becomes a BrokenIntegration, not an exception."""
    record = IntegrationRecord(
        integration_id=uuid.UUID(ID),
        org_id=uuid.UUID(ORG),
        integration_type="http",
        name="old",
        config={"url": "https://x", "removed_field": 1},
    )
    broken = registry.from_record(record)
    assert not isinstance(broken, HttpConfig)
    assert "removed_field" in broken.problem
    gone = registry.from_record(
        IntegrationRecord(uuid.uuid4(), uuid.UUID(ORG), "vanished", "x", {})
    )
    assert "unknown integration_type 'vanished'" in gone.problem
    ok = registry.from_record(
        IntegrationRecord(uuid.UUID(ID), uuid.UUID(ORG), "http", "ok", {"url": "https://x"})
    )
    assert isinstance(ok, HttpConfig)


def test_registry_refuses_duplicates_and_mismatched_literals(registry: CheckRegistry) -> None:
    """A type registers once; an adapter's Literal must match its integration_type."""
    from integration_health import Adapter

    with pytest.raises(ValueError, match="already registered"):
        registry.register(Adapter("fake", FakeConfig, lambda _c: None))  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match='Literal\\["other"\\]'):
        Adapter("other", FakeConfig, lambda _c: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigError, match="no adapters"):
        _ = CheckRegistry().config_union
