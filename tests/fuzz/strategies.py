"""Hypothesis strategies of the bad-input tests: configs from JSON schemas, junk, mutations.

Every secret-looking value the strategies produce matches :data:`CANARY`, so a test can
assert that no message ever echoes one.
"""

from __future__ import annotations

import os
import re
import string
from typing import Any

from hypothesis import strategies as st

from integration_health.checks import CheckRegistry, default_registry
from integration_health.config import IntegrationConfigBase
from integration_health.settings import Settings

SCALE = max(1, int(os.environ.get("IH_FUZZ_SCALE", "1")))
"""Multiplies every example count (``IH_FUZZ_SCALE=10`` for a deeper run than CI's)."""

CANARY = re.compile(r"sk_live_[A-Za-z0-9]{12}")
"""What every generated secret-looking value looks like."""

REGISTRY: CheckRegistry = default_registry(Settings(allow_private_networks=True))
TYPES: list[str] = REGISTRY.types
MODELS: dict[str, type[IntegrationConfigBase]] = {
    kind: REGISTRY.adapter(kind).config_model for kind in TYPES
}

canaries = st.text(string.ascii_letters + string.digits, min_size=12, max_size=12).map(
    lambda tail: f"sk_live_{tail}"
)
"""A secret-looking literal (an API key)."""

references = st.sampled_from(
    ["${API_TOKEN}", "${env:CLIENT_SECRET}", "${file:/run/secrets/key}", "${", "${}", "${1BAD}"]
)
"""Secret references, good and malformed."""

texts = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=300),
    st.sampled_from(["", " ", "\t\n", "\x00", "null", "~", "0", "1e400", "é✓𝄞", "—\u202e"]),
    canaries,
    canaries.map(lambda secret: f"https://user:{secret}@example.com/"),
    references,
)
"""Text a person (or a bad editor) could put in a field."""

numbers = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 899, 900, 10**100, -(10**100), 2**63, 2**64 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)

scalars = st.one_of(st.none(), st.booleans(), numbers, texts)

junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=12), inner, max_size=4),
    ),
    max_leaves=12,
)
"""Any JSON/YAML-like value."""

_HINTS: dict[str, st.SearchStrategy[Any]] = {
    "url": st.sampled_from(["https://example.com/health", "http://127.0.0.1:9/ok", "${URL}"]),
    "host": st.sampled_from(["example.com", "127.0.0.1", "[::1]", "sftp.example.com"]),
    "tenant_id": st.sampled_from(
        ["contoso.onmicrosoft.com", "5f0c4e1a-0000-4000-8000-000000000000"]
    ),
    "environment": st.sampled_from(["Production", "Sandbox_1"]),
    "host_key_fingerprint": st.sampled_from(
        ["SHA256:" + "A" * 43, "MD5:" + ":".join(["ab"] * 16), "${FINGERPRINT}"]
    ),
}


def _hint(name: str) -> st.SearchStrategy[Any] | None:
    if name in _HINTS:
        return _HINTS[name]
    if name.endswith("_url"):
        return _HINTS["url"]
    return None


def from_schema(
    schema: dict[str, Any], defs: dict[str, Any], name: str = ""
) -> st.SearchStrategy[Any]:
    """Values for a (pydantic-generated) JSON schema, mostly valid, leaning on field-name hints.

    Covers what config models use: ``$ref``, ``anyOf``, ``const``, ``enum``, strings (uuid,
    password), integers with bounds, booleans, null, arrays and string maps.
    """
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[1]], defs, name)
    if "anyOf" in schema:
        return st.one_of([from_schema(option, defs, name) for option in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "uuid":
            return st.uuids().map(str)
        if schema.get("format") == "password":
            return st.one_of(references, canaries)
        low, high = schema.get("minLength", 0), schema.get("maxLength", 60)
        plain = st.text(min_size=low, max_size=min(high, max(low, 60)))
        hint = _hint(name)
        return st.one_of(hint, plain) if hint is not None else plain
    if kind == "integer":
        low = schema.get("minimum")
        if "exclusiveMinimum" in schema:
            low = schema["exclusiveMinimum"] + 1
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if name == "check_interval_s":
            low, high = 900, 604_800
        ints = st.integers(min_value=low, max_value=high)
        return st.one_of(ints, st.just(schema["default"])) if "default" in schema else ints
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(schema.get("items", {}), defs, name)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=4)
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return st.dictionaries(st.text(min_size=1, max_size=20), from_schema(values, defs))
        return st.fixed_dictionaries({})
    return junk


def config_dicts(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Config dicts of one integration type built from its model's JSON schema."""
    schema = MODELS[kind].model_json_schema()
    defs = schema.get("$defs", {})
    properties: dict[str, Any] = schema["properties"]
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {
            key: from_schema(spec, defs, key)
            for key, spec in properties.items()
            if key in required or key == "integration_type"
        },
        optional={
            key: from_schema(spec, defs, key)
            for key, spec in properties.items()
            if key not in required and key != "integration_type"
        },
    )


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A config dict with a few fields dropped, replaced by junk, or added."""
    data = dict(draw(base))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["drop", "junk", "add", "alias"]))
        keys = sorted(data)
        if action == "drop" and keys:
            data.pop(draw(st.sampled_from(keys)))
        elif action == "junk" and keys:
            data[draw(st.sampled_from(keys))] = draw(junk)
        elif action == "add":
            data[draw(st.text(min_size=1, max_size=20))] = draw(junk)
        elif action == "alias" and "integration_id" in data:
            data["id"] = data.pop("integration_id")
    return data


def any_config(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid-looking and mutated config dicts of one type."""
    base = config_dicts(kind)
    return st.one_of(base, mutated(base))


def strings_in(value: Any) -> list[str]:
    """Every string inside a nested value (keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_in(item)]
    return []
