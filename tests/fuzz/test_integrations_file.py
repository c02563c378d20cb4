"""The integrations file, fed hypothesis-generated YAML: valid configs or clear problems.

The loader either returns valid configs or raises ``IntegrationFileError`` whose message
lists each problem with the file, line and field — never another exception, never a
secret-looking value of the file. Through the CLI, a bad file exits 2 with ``error:`` lines
and no traceback, and what an earlier import stored is kept.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from integration_health.config import IntegrationConfigBase
from integration_health.errors import ConfigError, IntegrationFileError
from integration_health.integrations_file import parse_integrations_file

from .strategies import CANARY, REGISTRY, SCALE, TYPES, any_config, config_dicts, junk, texts

SOURCE = "fuzz.yaml"
ENVIRON = {"API_TOKEN": "tok-from-env", "CLIENT_SECRET": "secret-from-env", "URL": "https://e.x"}
PROBLEM_LINE = re.compile(rf"^{re.escape(SOURCE)}(:\d+)?: \S")
FUZZ = settings(max_examples=200 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))


def _without_canary_names(item: Any) -> Any:
    # An integration's name is shown in every problem about it (it is not a secret).
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return {**item, "name": CANARY.sub("name", item["name"])}
    return item


integration_items = st.sampled_from(TYPES).flatmap(any_config).map(_without_canary_names)
organizations = st.fixed_dictionaries(
    {"id": st.one_of(st.uuids().map(str), texts), "name": texts},
    optional={
        "members": st.lists(
            st.fixed_dictionaries(
                {"user_id": st.one_of(st.uuids().map(str), junk)},
                optional={"role": st.one_of(st.sampled_from(["admin", "member"]), texts)},
            ),
            max_size=3,
        ),
        "extra": junk,
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "organizations": st.one_of(st.lists(organizations, max_size=3), junk),
        "integrations": st.one_of(st.lists(integration_items, max_size=4), junk),
        "other": junk,
    },
)


def _storable(item: dict[str, Any]) -> bool:
    """The item is a valid config whose secrets are references that resolve in ENVIRON."""
    try:
        config = REGISTRY.parse(item)
        config.ensure_secrets_are_references()
    except (ValidationError, ConfigError):
        return False
    return not config.reference_problems(ENVIRON)


valid_items = (
    st.sampled_from(TYPES).flatmap(config_dicts).map(_without_canary_names).filter(_storable)
)
valid_documents = st.fixed_dictionaries(
    {"integrations": st.lists(valid_items, min_size=1, max_size=3)}
)


def _dump(document: Any) -> str:
    """YAML for ``document``, Unicode written as it is where PyYAML round-trips it.

    PyYAML may write a YAML line-break character (NEL U+0085, U+2028, U+2029) raw inside a
    single-quoted scalar, where YAML folds it to a space on reading: a dumper quirk, not a
    parser bug. Such documents are written with every non-ASCII character escaped instead.
    """
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    if yaml.safe_load(text) != document:
        text = yaml.safe_dump(document, allow_unicode=False, sort_keys=False)
    return text


@st.composite
def corrupted(draw: st.DrawFn) -> str:
    """A dumped document with a few characters inserted or deleted."""
    text = _dump(draw(documents))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        if draw(st.booleans()):
            text = (
                text[:at]
                + draw(st.sampled_from([":", "-", " ", "\n", "\t", "{", "'", "&a", "*a"]))
                + text[at:]
            )
        else:
            text = text[:at] + text[at + 1 :]
    return text


@st.composite
def with_duplicate_key(draw: st.DrawFn) -> str:
    """An integration written with one of its keys twice."""
    item = draw(integration_items)
    lines = _dump({"integrations": [item]}).splitlines()
    keyed = [i for i, line in enumerate(lines) if re.match(r"^(- |  )[a-z_]+:", line)]
    if not keyed:
        return "\n".join(lines)
    i = draw(st.sampled_from(keyed))
    key = lines[i][2:].split(":", 1)[0]
    lines.insert(i + 1, f"  {key}: again")
    return "\n".join(lines)


SPECIAL = [
    "",
    "~",
    "- a\n- b",
    "integrations: " + "[" * 1200 + "]" * 1200,
    "integrations:\n- check_interval_s: " + "9" * 5000,
    "integrations: &a [*a]",
    "integrations:\n- &a {name: x, integration_type: http, headers: *a}",
    "integrations: !!python/object/apply:os.system ['true']",
    "a: 1\n---\nb: 2",
    "\ufeffintegrations: []",
    "integrations:\n- {integration_type: http, integration_type: xledger}",
    "integrations:\n- name: x\n  api_token: sk_live_0123456789ab\n  integration_type: xledger",
]

yaml_texts = st.one_of(
    documents.map(_dump),
    corrupted(),
    with_duplicate_key(),
    junk.map(_dump),
    st.text(max_size=200),
    st.sampled_from(SPECIAL),
)


def assert_clear_problems(message: str) -> None:
    """A head line, then one ``file:line: where: what`` line per problem, no secrets."""
    head, *lines = message.splitlines()
    assert re.fullmatch(rf"\d+ problems? in {re.escape(SOURCE)}; nothing was imported", head)
    assert lines, message
    assert int(head.split()[0]) == len(lines), message
    for line in lines:
        assert PROBLEM_LINE.match(line), line
        assert len(line) <= 800, line
    assert not CANARY.search(message), f"a secret-looking value is echoed: {message}"
    assert "Traceback" not in message


@given(text=yaml_texts)
@FUZZ
def test_a_file_gives_configs_or_clear_problems(text: str) -> None:
    """Any text is valid configs, or an IntegrationFileError listing clear problems."""
    try:
        parsed = parse_integrations_file(text, REGISTRY, source=SOURCE, environ=ENVIRON)
    except IntegrationFileError as exc:
        assert_clear_problems(str(exc))
        return
    ids = [config.integration_id for config in parsed.integrations]
    assert len(ids) == len(set(ids))
    for config in parsed.integrations:
        assert isinstance(config, IntegrationConfigBase)
        assert config.integration_type in TYPES
        assert config.to_storage()  # secrets are references: storable


@given(document=valid_documents)
@settings(max_examples=50 * SCALE, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_valid_file_gives_its_configs(document: dict[str, Any]) -> None:
    """A file of valid integrations (any type, any optional fields) loads every one of them."""
    parsed = parse_integrations_file(_dump(document), REGISTRY, source=SOURCE, environ=ENVIRON)
    assert parsed.integrations == [REGISTRY.parse(item) for item in document["integrations"]]


@pytest.mark.parametrize("text", SPECIAL[3:], ids=lambda t: repr(t[:30]))
def test_hostile_yaml_is_refused_cleanly(text: str) -> None:
    """Deep nesting, huge numbers, cycles, python tags, several documents, duplicate keys
    and literal secrets are each refused with a clear message."""
    if text.startswith("\ufeff"):
        assert parse_integrations_file(text, REGISTRY, source=SOURCE).integrations == []
        return
    with pytest.raises(IntegrationFileError) as caught:
        parse_integrations_file(text, REGISTRY, source=SOURCE, environ=ENVIRON)
    assert_clear_problems(str(caught.value))


def test_a_repeated_key_is_reported_on_its_line() -> None:
    """YAML would keep the last of two ``url:`` keys silently; the file is refused instead."""
    text = (
        "integrations:\n"
        f"- org_id: {uuid.uuid4()}\n"
        "  integration_type: http\n"
        "  name: Hook\n"
        "  url: https://a.example/health\n"
        "  url: https://b.example/health\n"
    )
    with pytest.raises(IntegrationFileError) as caught:
        parse_integrations_file(text, REGISTRY, source=SOURCE)
    assert f"{SOURCE}:6: key 'url' is repeated (first on line 5)" in str(caught.value)


# -- through the CLI ---------------------------------------------------------------------------

ORG = "7d3f0000-0000-4000-8000-00000000000a"
GOOD = f"""
organizations:
  - id: {ORG}
    name: Acme AS
integrations:
  - id: 0b1c0000-0000-4000-8000-00000000000b
    org_id: {ORG}
    integration_type: http
    name: Order webhook receiver
    url: https://hooks.acme.example/health
"""
BAD_FILES = {
    "syntax": "integrations:\n  - name: [unclosed\n",
    "wrong type": f"integrations:\n  - org_id: {ORG}\n    integration_type: http\n    name: X\n"
    "    url: https://x.example\n    check_interval_s: often\n",
    "literal secret": f"integrations:\n  - org_id: {ORG}\n    integration_type: xledger\n"
    "    name: Ledger\n    api_token: sk_live_0123456789ab\n",
    "deep": "integrations: " + "[" * 1200 + "]" * 1200,
    "huge number": f"integrations:\n  - org_id: {ORG}\n    check_interval_s: {'9' * 5000}\n",
    "not a mapping": "- just\n- a list\n",
}


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "INTEGRATION_HEALTH_DATABASE_URL": f"sqlite:///{tmp_path / 'health.db'}",
        "COLUMNS": "10000",  # rich wraps long lines at the width (see the report)
    }
    return subprocess.run(
        [sys.executable, "-m", "integration_health", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_refuses_bad_files_and_keeps_what_was_stored(tmp_path: Path) -> None:
    """``integrations import`` of a bad file exits 2 with ``error:`` lines (no traceback),
    and the integrations imported before are still there."""
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, encoding="utf-8")
    assert _cli(tmp_path, "db", "upgrade").returncode == 0
    first = _cli(tmp_path, "integrations", "import", str(good))
    assert first.returncode == 0, first.stderr
    for name, text in BAD_FILES.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text, encoding="utf-8")
        proc = _cli(tmp_path, "integrations", "import", str(bad))
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert lines, name
        assert all(line.startswith("error: ") for line in lines), (name, proc.stderr)
        assert str(bad) in proc.stderr, (name, proc.stderr)
        assert not CANARY.search(proc.stderr + proc.stdout), (name, proc.stderr)
    listed = _cli(tmp_path, "integrations", "list", "--org", ORG, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [item["name"] for item in json.loads(listed.stdout)] == ["Order webhook receiver"]
