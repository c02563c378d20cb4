"""resolve(): the shortcut for configs without references equals the long way, for every type.

``IntegrationConfigBase.resolve`` returns a config with no ``${`` in any string field as it is,
instead of dumping, substituting and re-validating it (``_resolve_by_validation``). That is
only right if re-validating such a config gives an equal config, i.e. if every validator is
idempotent on its own output. These tests check it for every registered integration type, on
typical values and on values that validators normalise (blanks, trailing slashes, API suffixes,
letter case).
"""

from __future__ import annotations

import enum
import uuid
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import SecretStr

from integration_health.checks import CheckRegistry, default_registry
from integration_health.config import (
    IntegrationConfigBase,
    _annotation_may_hold_string,
    _may_hold_reference,
    _resolve_plan,
)
from integration_health.testing import FakeConfig

ORG = "7d3f0000-0000-4000-8000-000000000001"
FINGERPRINT = "SHA256:" + "A" * 43
MD5 = "MD5:" + ":".join(["AB"] * 16)

COMMON: dict[str, Any] = {
    "name": "  padded name  ",
    "enabled": False,
    "monitoring_mode": "passive",
    "check_interval_s": 3_600,
    "degraded_latency_ms": 1_500,
}

# Reference-free field sets per integration type (literal secrets: allowed in code, refused
# only when stored). Each list holds a typical config and ones the validators normalise.
SAMPLES: dict[str, list[dict[str, Any]]] = {
    "http": [
        {"url": "https://example.com/health"},
        {
            "url": "  https://example.com/h?x=1  ",
            "method": "GET",
            "expected_status": 204,
            "headers": {"X-Probe": "yes", "Accept": "*/*"},
            "bearer_token": "zq01-bearer-token-x7",
            "follow_redirects": False,
        },
        {"url": "HTTP://EXAMPLE.COM", "expected_status": [200, 301]},
    ],
    "xledger": [
        {"api_token": "zq02-api-token-x7"},
        {"api_token": "zq03-api-token-x7", "base_url": " https://demo.xledger.net/graphql/ "},
        {"probe": "network", "base_url": "https://www.xledger.net/"},
    ],
    "business_central": [
        {
            "tenant_id": " contoso.onmicrosoft.com ",
            "environment": " Production ",
            "client_id": " client ",
            "client_secret": "zq04-client-secret-x7",
            "company_id": str(uuid.uuid4()),
            "base_url": "https://api.businesscentral.dynamics.com/ ",
            "authority_url": " https://login.microsoftonline.com//",
        },
        {
            "tenant_id": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "environment": "Sandbox_2",
            "client_id": "c",
            "client_secret": "zq05-client-secret-x7",
        },
    ],
    "dataverse": [
        {
            "environment_url": "https://contoso.crm4.dynamics.com/api/data/v9.2/",
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": " app ",
            "client_secret": "zq06-client-secret-x7",
        },
        {
            "environment_url": " https://contoso.crm4.dynamics.com/API/DATA ",
            "tenant_id": "t",
            "client_id": "app",
            "client_secret": "zq07-client-secret-x7",
            "authority_url": "https://login.example.com/",
        },
    ],
    "fiken": [
        {"api_token": "zq08-api-token-x7", "company_slug": "fiken-as"},
        {
            "api_token": "zq09-api-token-x7",
            "company_slug": "a.b_c",
            "base_url": " https://api.fiken.no/api/v2/ ",
        },
    ],
    "poweroffice_go": [
        {
            "application_key": "zq10-application-key-x7",
            "client_key": "zq11-client-key-x7",
            "subscription_key": "zq12-subscription-key-x7",
        },
        {
            "application_key": "zq13-application-key-x7",
            "client_key": "zq14-client-key-x7",
            "subscription_key": "zq15-subscription-key-x7",
            "base_url": "https://goapi.poweroffice.net/Demo/v2/",
            "check_interval_s": 1_800,
        },
    ],
    "sftp": [
        {
            "host": " sftp.example.com ",
            "username": "u",
            "password": "zq16-password-x7",
            "host_key_fingerprint": f" {FINGERPRINT}= ",
        },
        {
            "host": "[::1]",
            "port": 2222,
            "username": "u",
            "private_key": "zq17-private-key-x7",
            "private_key_passphrase": "zq18-private-key-passphrase-x7",
            "host_key_fingerprint": MD5,
            "host_key_algorithms": ["ssh-rsa"],
            "path": "outgoing/",
        },
        {
            "host": "10.0.0.1",
            "username": "u",
            "password": "zq19-password-x7",
            "host_key_fingerprint": "sha256:" + "b" * 43,
        },
    ],
    "tcp_tls": [
        {"host": " Example.COM ", "port": 636, "server_name": "LDAP.example.com"},
        {"host": "[2001:db8::1]", "tls": False, "expiry_warning_days": 0},
        {"host": "10.1.2.3", "ca_bundle": "/etc/ssl/private-ca.pem"},
    ],
    "tripletex": [
        {"consumer_token": "zq20-consumer-token-x7", "employee_token": "zq21-employee-token-x7"},
        {
            "consumer_token": "zq22-consumer-token-x7",
            "employee_token": "zq23-employee-token-x7",
            "company_id": 42,
            "base_url": " https://api-test.tripletex.tech/v2/ ",
        },
    ],
    "visma_eaccounting": [
        {
            "client_id": "c",
            "client_secret": "zq24-client-secret-x7",
            "refresh_token": "zq25-refresh-token-x7",
        },
        {
            "client_id": "c",
            "client_secret": "zq26-client-secret-x7",
            "refresh_token": "zq27-refresh-token-x7",
            "refresh_token_file": " /var/lib/monitor/token ",
            "base_url": "https://eaccountingapi-sandbox.test.vismaonline.com/v2/",
            "token_url": "https://identity-sandbox.test.vismaonline.com/connect/token/",
        },
    ],
    "visma_net": [
        {"client_id": "c", "client_secret": "zq28-client-secret-x7", "tenant_id": "abc-123"},
        {
            "client_id": "c",
            "client_secret": "zq29-client-secret-x7",
            "tenant_id": "abc-123",
            "company_id": "1",
            "probe_path": " /v1/branch?pageSize=1 ",
            "base_url": "https://api.finance.visma.net/ ",
        },
    ],
    "fake": [
        {},
        {"outcome": "raise", "delay_s": 0.5, "message": "boom: a=b", "secret": "zq30-secret-x7"},
    ],
    "fake_blocking": [{"outcome": "unreachable", "latency_ms": 5}],
}

# Odd base URLs that once made validators non-idempotent (a suffix stripped only once):
# re-validating changed them again, so the no-reference shortcut would have probed another URL.
NOT_IDEMPOTENT: list[tuple[str, dict[str, Any]]] = [
    (
        "tripletex",
        {
            "consumer_token": "zq31-consumer-token-x7",
            "employee_token": "zq32-employee-token-x7",
            "base_url": "https://x//v2",
        },
    ),
    (
        "tripletex",
        {
            "consumer_token": "zq33-consumer-token-x7",
            "employee_token": "zq34-employee-token-x7",
            "base_url": "https://x/v2/v2",
        },
    ),
    ("xledger", {"api_token": "zq35-api-token-x7", "base_url": "https://x/graphql/graphql"}),
    (
        "fiken",
        {"api_token": "zq36-api-token-x7", "company_slug": "s", "base_url": "https://x//api/v2"},
    ),
    (
        "dataverse",
        {
            "environment_url": "https://x/api/data/v9.2/api/data",
            "tenant_id": "t",
            "client_id": "c",
            "client_secret": "zq37-client-secret-x7",
        },
    ),
    (
        "visma_eaccounting",
        {
            "client_id": "c",
            "client_secret": "zq38-client-secret-x7",
            "refresh_token": "zq39-refresh-token-x7",
            "base_url": "https://x//v2",
        },
    ),
    (
        "poweroffice_go",
        {
            "application_key": "zq40-application-key-x7",
            "client_key": "zq41-client-key-x7",
            "subscription_key": "zq42-subscription-key-x7",
            "base_url": "https://x/v2/v2",
        },
    ),
]


@pytest.fixture(scope="module")
def models() -> dict[str, type[IntegrationConfigBase]]:
    """The config model of every registered type (built-ins, plug-ins and the fakes)."""
    from integration_health.testing import fake_registry

    registry: CheckRegistry = fake_registry()[0]
    return {kind: registry.adapter(kind).config_model for kind in registry.types}


def build(
    models: dict[str, type[IntegrationConfigBase]], kind: str, fields: dict[str, Any]
) -> IntegrationConfigBase:
    data = {"id": str(uuid.uuid4()), "org_id": ORG, "integration_type": kind, **COMMON, **fields}
    return models[kind].model_validate(data)


def test_every_registered_type_has_samples(models: dict[str, type[IntegrationConfigBase]]) -> None:
    """A new integration type must add its samples here, so the shortcut is proven for it."""
    assert set(default_registry().types) <= set(models)
    assert sorted(set(models) - set(SAMPLES)) == []


CASES = [(kind, fields) for kind, samples in SAMPLES.items() for fields in samples]


@pytest.mark.parametrize(
    ("kind", "fields"), CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)]
)
def test_config_without_references_resolves_to_itself(
    models: dict[str, type[IntegrationConfigBase]], kind: str, fields: dict[str, Any]
) -> None:
    """No ${ anywhere: resolve() returns the config itself, equal to the re-validated copy,
    with the same secret values."""
    config = build(models, kind, fields)
    resolved, secrets = config.resolve(environ={})
    assert resolved is config
    slow, slow_secrets = config._resolve_by_validation(environ={})
    assert resolved == slow
    assert resolved.model_dump(mode="json") == slow.model_dump(mode="json")
    assert secrets == slow_secrets
    for name in config.secret_field_names():
        value = getattr(config, name)
        if isinstance(value, SecretStr):
            assert value.get_secret_value() in secrets


@pytest.mark.parametrize(("kind", "fields"), NOT_IDEMPOTENT)
def test_url_validators_are_idempotent_on_odd_urls(
    models: dict[str, type[IntegrationConfigBase]], kind: str, fields: dict[str, Any]
) -> None:
    """Repeated or doubled API suffixes: validating twice gives what validating once gave,
    so the no-reference shortcut probes exactly the URL re-validation would."""
    config = build(models, kind, fields)
    assert config._resolve_by_validation(environ={})[0] == config


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_config_with_references_resolves_as_before(
    models: dict[str, type[IntegrationConfigBase]], kind: str, tmp_path: Path
) -> None:
    """With references in every secret field (and in the name), resolve() takes the long way:
    a new, re-validated config with the values substituted and remembered."""
    fields = dict(SAMPLES[kind][-1])
    config_plain = build(models, kind, fields)
    environ = {}
    secret_file = tmp_path / "secret"
    secret_file.write_text("zq-file-secret-x7\n", encoding="utf-8")
    for index, name in enumerate(config_plain.secret_field_names()):
        if fields.get(name) is None:
            continue
        if index == 0:
            fields[name] = f"${{file:{secret_file}}}"
        else:
            environ[f"VAR_{index}"] = f"zq-value-{index}-{kind}-x7"
            fields[name] = f"${{VAR_{index}}}"
    environ["NAME_PART"] = "resolved-name"
    fields["name"] = "n ${NAME_PART} $${literal}"
    config = build(models, kind, fields)
    resolved, secrets = config.resolve(environ)
    assert resolved is not config
    assert (resolved, secrets) == config._resolve_by_validation(environ)
    assert resolved.name == "n resolved-name ${literal}"
    assert "resolved-name" in secrets
    assert set(environ.values()) <= secrets
    if config_plain.secret_field_names() and any(
        fields.get(n) is not None for n in config_plain.secret_field_names()
    ):
        assert "zq-file-secret-x7" in secrets


def test_escape_alone_takes_the_long_way() -> None:
    """'$${' is not a reference but is still substituted (to '${'), so it is not skipped."""
    config = FakeConfig(integration_id=uuid.uuid4(), org_id=uuid.uuid4(), name="cost $${x}")
    resolved, secrets = config.resolve(environ={})
    assert resolved.name == "cost ${x}"
    assert secrets == set()


def test_reference_inside_a_list_or_dict_is_found(
    models: dict[str, type[IntegrationConfigBase]],
) -> None:
    """References nested in a dict field (http headers) are resolved, not skipped."""
    config = build(
        models, "http", {"url": "https://example.com", "headers": {"X-Key": "${HEADER_KEY}"}}
    )
    resolved, secrets = config.resolve({"HEADER_KEY": "header-value"})
    assert resolved.headers == {"X-Key": "header-value"}  # type: ignore[attr-defined]
    assert "header-value" in secrets


@pytest.mark.parametrize(
    ("value", "may"),
    [
        ("plain", False),
        ("a ${B}", True),
        ("$${", True),
        (SecretStr("x"), False),
        (SecretStr("${X}"), True),
        (None, False),
        (3, False),
        (2.5, False),
        (True, False),
        (uuid.uuid4(), False),
        (["a", ("b", "${C}")], True),
        ({"k": ["a", 1]}, False),
        ({"${K}": "key only"}, False),  # keys are never substituted
        (b"${bytes}", True),  # unknown type: assume it may
        (Path("/x"), True),
    ],
)
def test_may_hold_reference(value: object, may: bool) -> None:
    """The shortcut's test: False only when no string inside can be substituted."""
    assert _may_hold_reference(value) is may


def test_secret_field_names_are_computed_once_per_class() -> None:
    """The names are cached per class: a subclass with another secret field has its own."""

    class WithKey(FakeConfig):
        integration_type: Literal["with_key"] = "with_key"  # type: ignore[assignment]
        api_key: SecretStr | None = None
        note: ClassVar[str] = "not a field"

    assert FakeConfig.secret_field_names() == ("secret",)
    assert WithKey.secret_field_names() == ("secret", "api_key")
    assert FakeConfig.secret_field_names() is FakeConfig.secret_field_names()
    assert FakeConfig.secret_field_names() == ("secret",)


class _Mode(enum.Enum):
    A = "a"
    B = 2


class _Template(enum.StrEnum):
    REF = "${NOT_A_FIELD_VALUE}"


@pytest.mark.parametrize(
    ("annotation", "may"),
    [
        (int, False),
        (bool | None, False),
        (uuid.UUID, False),
        (list[int] | None, False),
        (tuple[int, ...], False),
        (_Mode, False),
        (Literal["http", "https"], False),
        (Literal["${X}"], True),  # a literal could only hold what it says
        (_Template, True),
        (str, True),
        (str | None, True),
        (SecretStr | None, True),
        (dict[str, int], True),  # keys are strings; resolve() decides, not the plan
        (list[str], True),
        (Any, True),
        (Path, True),
    ],
)
def test_annotation_may_hold_string(annotation: Any, may: bool) -> None:
    """The per-class plan skips only fields whose validated values can hold no string."""
    assert _annotation_may_hold_string(annotation) is may


def test_resolve_plan_is_per_class_and_finds_new_string_fields() -> None:
    """A subclass gets a plan of its own: a string field it adds is looked at (a reference in
    it is resolved), an int field is not."""

    class WithExtra(FakeConfig):
        integration_type: Literal["with_extra"] = "with_extra"  # type: ignore[assignment]
        region: str = "eu"
        retries: int = 3

    base_fields, _ = _resolve_plan(FakeConfig)
    fields, secrets = _resolve_plan(WithExtra)
    assert "region" in fields and "region" not in base_fields
    assert "retries" not in fields and "org_id" not in fields and "enabled" not in fields
    assert secrets == ("secret",)
    config = WithExtra(
        integration_id=uuid.uuid4(), org_id=uuid.uuid4(), name="n", region="${REGION}"
    )
    resolved, _ = config.resolve({"REGION": "us"})
    assert resolved.region == "us"
    assert _resolve_plan(WithExtra) is _resolve_plan(WithExtra)
