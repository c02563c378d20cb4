"""Redactor: secrets by value, secret-shaped substrings, and the regex-free fast path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration_health.redaction import _NEEDLES, _PATTERNS, REDACTED, Redactor, _mask


def regexes_only(text: str) -> str:
    """What the masking patterns make of ``text`` (no fast path, no known secrets)."""
    for pattern in _PATTERNS:
        text = pattern.sub(_mask, text)
    return text


# Strings a result's error or details may hold: near misses of every pattern, strings with
# exactly one of the needles, case and Unicode tricks, and plain ones the fast path skips.
TRICKY = [
    "",
    "HEAD",
    "GET",
    "200",
    "0.42",
    "dns_ms",
    "phases",
    "head_fallback",
    "no secrets here",
    "über café ünïcode ✓",
    "Bearer abcdefgh12345678",  # only "earer": pattern 2 alone
    "bearer abcdefgh12345678",
    "a bearer\tabcdefgh12345678~+/==",
    "BEARER abcdefgh12345678",  # pattern 2 is case-sensitive: not masked either way
    "Bearer short",  # under 8 characters: not masked
    "xBearer abcdefgh12345678",  # no word boundary
    "token abcdefgh12345678",  # looks secret, but no pattern matches without : or =
    "password hunter2",
    "Authorization Bearer abcdefgh12345678",
    "Authorization: Bearer abc.def-ghi",
    "authorization=abc",
    "AUTHORIZATION:xyz",
    "\"Authorization\": 'Basic dXNlcjpwYXNz'",
    "token=abc123",
    "?access_token=abc&x=1",
    "api-key=xyz;next",
    "ApiKey=xyz",
    "mytoken=abc",  # no word boundary before "token"
    "sig=deadbeef",
    '{"password": "hunter2"}',
    '{"client_secret":"x", "other": "y"}',
    '{"token" : "spaced"}',
    "https://user:pa55@host/path",
    "postgres://u:p@db:5432/x",
    "sftp://user@host:22/path",  # no password: nothing to mask
    "user@host",
    "a:b",
    "x=y",
    "time: 12:30",
    "ｔｏｋｅｎ＝abc",  # full-width letters and equals sign: not the ASCII shapes
    "token＝abc",
    "Ke\u212ay=abc",  # KELVIN SIGN folds to "k" under (?i)
    "\u0130token=abc",
    "line one\ntoken=abc\nline three",
    "x" * 5_000 + " Bearer abcdefgh12345678",
    "x" * 5_000,
]


@pytest.mark.parametrize("text", TRICKY)
def test_fast_path_gives_what_the_regexes_give(text: str) -> None:
    """Skipping the regexes for strings without ':', '=' or 'earer' never changes a result."""
    assert Redactor().text(text) == regexes_only(text)
    assert Redactor(["unrelated-secret"]).text(text) == regexes_only(text)


@pytest.mark.parametrize("text", [t for t in TRICKY if not any(n in t for n in _NEEDLES)])
def test_strings_without_needles_match_no_pattern(text: str) -> None:
    """A string with none of the needles matches none of the patterns (the fast path's premise)."""
    assert not any(pattern.search(text) for pattern in _PATTERNS)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Bearer abcdefgh12345678", f"Bearer {REDACTED}"),
        ("Authorization: Bearer abc.def", f"Authorization: {REDACTED}"),
        ("call?token=abc123&page=2", f"call?token={REDACTED}&page=2"),
        ('{"password": "hunter2"}', f'{{"password": "{REDACTED}"}}'),
        ("https://user:pa55@host/p", f"https://user:{REDACTED}@host/p"),
    ],
)
def test_each_needle_still_reaches_its_pattern(text: str, masked: str) -> None:
    """Each needle ('earer', ':', '=') lets its pattern mask what it must."""
    assert Redactor().text(text) == masked


def test_known_secrets_are_masked_longest_first_and_short_ones_ignored() -> None:
    """Known values are replaced wherever they occur, even without any needle."""
    redactor = Redactor(["abc", "s3cret-value", "s3cret-value-long"])
    assert redactor.text("got s3cret-value-long and s3cret-value") == (
        f"got {REDACTED} and {REDACTED}"
    )
    assert redactor.text("abc stays") == "abc stays"  # shorter than MIN_SECRET_LENGTH


def test_obj_masks_keys_values_and_nested_containers() -> None:
    """Every string of a JSON-like value is masked, dictionary keys included."""
    redactor = Redactor(["s3cret-value"])
    value = {
        "s3cret-value": 1,
        "nested": [{"url": "https://u:pw@h/"}, ("Bearer abcdefgh12345678",)],
        "n": 2.5,
        "plain": "HEAD",
    }
    assert redactor.obj(value) == {
        REDACTED: 1,
        "nested": [{"url": f"https://u:{REDACTED}@h/"}, [f"Bearer {REDACTED}"]],
        "n": 2.5,
        "plain": "HEAD",
    }


def test_obj_returns_a_value_with_nothing_to_mask_itself() -> None:
    """Copy on change: the common case (a result's phases) allocates nothing."""
    redactor = Redactor(["s3cret-value"])
    details = {"method": "HEAD", "http_status": 200, "phases": {"connect_ms": 1.5}, "l": [1]}
    assert redactor.obj(details) is details


def test_obj_copies_only_what_changes_and_leaves_the_input_untouched() -> None:
    """A secret late in a dict: the entries before it are kept, the input is not modified."""
    redactor = Redactor(["s3cret-value"])
    phases = {"connect_ms": 1.5}
    details = {"a": 1, "phases": phases, "b": ["x", "s3cret-value"], 7: "seven"}
    masked = redactor.obj(details)
    assert masked == {"a": 1, "phases": phases, "b": ["x", REDACTED], "7": "seven"}
    assert list(masked) == ["a", "phases", "b", "7"]  # order kept
    assert masked["phases"] is phases  # unchanged parts are shared, not copied
    assert details == {"a": 1, "phases": phases, "b": ["x", "s3cret-value"], 7: "seven"}


def test_obj_turns_non_string_keys_and_tuples_into_json_shapes() -> None:
    """Like json.dumps would: keys become strings, tuples lists (even with nothing masked)."""
    redactor = Redactor()
    assert redactor.obj({1: ("a", "b")}) == {"1": ["a", "b"]}
    assert isinstance(redactor.obj(("a",)), list)


def copying_obj(redactor: Redactor, value: object) -> object:
    """The reference: a full copy with every string (keys included) masked."""
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, dict):
        return {redactor.text(str(k)): copying_obj(redactor, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [copying_obj(redactor, item) for item in value]
    return value


_SCALAR_VALUES = st.one_of(
    st.sampled_from([*TRICKY, "s3cret-value", "x s3cret-value y"]),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
_JSONISH = st.recursive(
    _SCALAR_VALUES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(
            st.one_of(st.sampled_from([*TRICKY[:30], "s3cret-value"]), st.integers()),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSONISH, with_secret=st.booleans())
def test_obj_equals_a_full_masked_copy_and_shares_only_unchanged_values(
    value: object, with_secret: bool
) -> None:
    """The fast walk and copy on change give what copying everything gives, for any value."""
    redactor = Redactor(["s3cret-value"] if with_secret else [])
    masked = redactor.obj(value)
    assert masked == copying_obj(redactor, value)
    if masked is value:  # returned itself: then nothing in it needed masking
        assert copying_obj(redactor, value) == value
