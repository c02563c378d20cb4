"""Every registered config model, fed hypothesis-generated dicts (schema-based and mutated).

A dict is either a valid config or a pydantic ``ValidationError`` whose problems
``describe_error`` turns into one clear line each — naming the field, never echoing a value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from integration_health.config import describe_error, validation_errors
from integration_health.errors import ConfigError

from .strategies import CANARY, MODELS, REGISTRY, SCALE, TYPES, any_config, junk, strings_in

EXAMPLES = 60 * SCALE
"""Examples per integration type and property."""

FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_clear(message: str) -> None:
    """One line, bounded, and without any secret-looking value of the input."""
    assert message.strip(), "empty message"
    assert "\n" not in message and "\r" not in message, message
    assert len(message) <= 600, message
    assert not CANARY.search(message), f"the message echoes a secret-looking value: {message!r}"
    assert "Traceback" not in message


def _replaced(value: Any, text: str) -> Any:
    """``value`` with every string value equal to ``text`` replaced by another of its length."""
    if isinstance(value, str):
        return ("z" if text.startswith("q") else "q") * len(text) if value == text else value
    if isinstance(value, dict):
        return {k: _replaced(v, text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replaced(item, text) for item in value]
    return value


def _own_text(validate: Callable[[Any], object], data: Any, text: str) -> bool:
    """Whether ``text`` is the messages' own text: it is still in them when the input's values
    equal to it are replaced (an input value 'starting' is not echoed by "a path starting
    with '/'")."""
    try:
        validate(_replaced(data, text))
    except ValidationError as exc:
        return any(text in describe_error(error) for error in validation_errors(exc))
    except ConfigError as exc:
        return text in str(exc)
    return False


def check_validation_error(
    exc: ValidationError, data: Any, validate: Callable[[Any], object]
) -> list[str]:
    """Every problem of ``exc`` (from ``validate(data)``) described clearly; returns the
    lines."""
    errors = validation_errors(exc)
    assert errors
    lines = []
    for error in errors:
        assert "input" not in error, "validation_errors must drop the input values"
        line = describe_error(error)
        assert_clear(line)
        loc = [str(part) for part in error["loc"]]
        if loc:
            # the line names the field (its first location part, e.g. 'url' or 'headers')
            assert f"field '{loc[0]}" in line or "integration_type" in line, line
        lines.append(line)
    # values of the input (strings of 8+ characters that are not field names) are not echoed
    names = {name for model in MODELS.values() for name in model.model_fields} | {"id"}
    for text in strings_in(data):
        if len(text) >= 8 and text not in names and not text.isspace():
            for line in lines:
                # the known types a message lists are ours, not echoes ('triplete' is in
                # 'tripletex')
                own = line
                for kind in MODELS:
                    own = own.replace(f"'{kind}'", "")
                if text in own:
                    # a key of the input naming an unknown field is fine; a value is not
                    locations = [str(part) for error in errors for part in error["loc"]]
                    assert any(text in part for part in locations) or _own_text(
                        validate, data, text
                    ), f"{line!r} echoes the input value {text!r}"
    return lines


@pytest.mark.parametrize("kind", TYPES)
def test_config_model_gives_a_config_or_clear_problems(kind: str) -> None:
    """A generated dict validates, or every problem is one clear line naming its field."""
    model = MODELS[kind]

    @FUZZ
    @given(data=any_config(kind))
    def run(data: dict[str, Any]) -> None:
        try:
            config = model.model_validate(data)
        except ValidationError as exc:
            check_validation_error(exc, data, model.model_validate)
            return
        assert config.integration_type == kind
        assert config.check_interval_s >= config.min_check_interval_s
        # a valid config survives the store round trip unchanged (when its secrets are refs)
        try:
            stored = config.to_storage()
        except ConfigError as exc:  # a literal secret, or a malformed reference
            message = str(exc)
            assert_clear(message)
            assert message.startswith("field '"), message
            return
        stored["integration_type"] = kind
        stored["integration_id"] = str(config.integration_id)
        assert model.model_validate(stored) == config
        for problem in config.reference_problems({}):
            assert_clear(problem)

    run()


@pytest.mark.parametrize("kind", TYPES)
def test_registry_parse_raises_only_project_errors(kind: str) -> None:
    """Through the registry (the discriminated union), bad input is a ValidationError or a
    ConfigError with a clear message — never another exception."""

    @FUZZ
    @given(
        data=any_config(kind),
        integration_type=st.one_of(st.just(kind), st.sampled_from(TYPES), junk),
        swap=st.booleans(),
    )
    def run(data: dict[str, Any], integration_type: Any, swap: bool) -> None:
        if swap:
            data = {**data, "integration_type": integration_type}
        try:
            REGISTRY.parse(data)
        except ValidationError as exc:
            check_validation_error(exc, data, REGISTRY.parse)
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith("unknown integration_type"), message
            assert "\n" not in message

    run()


@given(value=junk)
@settings(max_examples=300 * SCALE, deadline=None)
def test_any_value_as_a_whole_config(value: Any) -> None:
    """Whatever the value (a list, a number, text, nested junk), parsing fails cleanly."""
    assume(not isinstance(value, dict) or "integration_type" not in value)
    try:
        REGISTRY.parse(value)
    except ValidationError as exc:
        check_validation_error(exc, value, REGISTRY.parse)
    except ConfigError as exc:
        assert_clear(str(exc))
