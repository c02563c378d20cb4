"""Keeping secrets out of error texts, details, logs and exceptions.

Two layers: the exact values of the integration's secrets (and of anything that came from a
``${…}`` reference) are replaced wherever they occur, and well-known secret-bearing shapes
(``Authorization:`` headers, ``Bearer …``, ``token=…`` query parameters, passwords in URLs)
are masked even when the value is not known to us.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"

MIN_SECRET_LENGTH = 4
"""Shorter values are not scrubbed by value: replacing every "ab" would mangle messages."""

_KEYS = (
    r"(?:access_token|refresh_token|id_token|client_secret|api[_-]?key|apikey|api_token|"
    r"password|passwd|secret|token|subscription[_-]?key|signature|sig|private_key)"
)

_PATTERNS = [
    # Authorization: Bearer xyz / Authorization: token xyz / Basic …
    re.compile(
        r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;]+"
    ),
    re.compile(r"\b([Bb]earer\s+)[A-Za-z0-9\-._~+/]{8,}=*"),
    # key=value pairs in query strings and form bodies
    re.compile(rf"(?i)\b({_KEYS}=)[^\s&\"',;]+"),
    # "key": "value" in JSON
    re.compile(rf"(?i)(\"{_KEYS}\"\s*:\s*\")[^\"]*"),
    # scheme://user:password@host
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(@)"),
]


_SCALARS = frozenset({int, float, bool, type(None)})
"""Value types :meth:`Redactor.obj` returns as they are."""

_NEEDLES = (":", "=", "earer")
"""Every pattern above needs one of these in the text: ``[:=]`` (Authorization), ``earer``
(case-sensitive, in ``[Bb]earer``), ``=`` (key=value), ``":`` (JSON) and ``://`` (URL). A
string with none of them cannot match, so :meth:`Redactor.text` skips the regexes for it
(dictionary keys, ``"HEAD"``, numbers as text: most of a result's strings)."""


class Redactor:
    """Masks known secret values and secret-shaped substrings."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(values, key=len, reverse=True)

    def text(self, value: str) -> str:
        """``value`` with every secret masked."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if ":" not in value and "=" not in value and "earer" not in value:  # see _NEEDLES
            return value
        for pattern in _PATTERNS:
            value = pattern.sub(_mask, value)
        return value

    def obj(self, value: Any) -> Any:
        """A JSON-like value with every string (keys included) masked.

        Copy on change: a value with nothing to mask is returned itself (no allocation, the
        common case for a result's details); otherwise a masked copy, with tuples as lists.
        """
        kind = value.__class__
        if kind is str:
            return self.text(value)
        if kind is dict:
            return value if self._untouched(value) else self._dict(value)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return self._dict(value)
        if isinstance(value, list | tuple):
            items = [self.obj(item) for item in value]
            if kind is list and all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return items
        return value

    def _holds_secret(self, text: str) -> bool:
        return any(secret in text for secret in self._secrets)

    def _untouched(self, value: dict[Any, Any]) -> bool:
        """True when :meth:`obj` would return ``value`` itself: a quick walk without copies
        (string keys, plain strings, numbers, nested dicts and lists of them).

        A string is plain when :meth:`text` cannot change it: none of the needles (see
        ``_NEEDLES``) and none of the secrets in it. The checks are written out inline: this
        walk runs over every result's details.
        """
        secrets = self._secrets
        for key, item in value.items():
            if (
                key.__class__ is not str
                or ":" in key
                or "=" in key
                or "earer" in key
                or (secrets and self._holds_secret(key))
            ):
                return False
            kind = item.__class__
            if kind is str:
                if (
                    ":" in item
                    or "=" in item
                    or "earer" in item
                    or (secrets and self._holds_secret(item))
                ):
                    return False
            elif kind in _SCALARS:
                continue
            elif kind is dict:
                if not self._untouched(item):
                    return False
            elif kind is list:
                for element in item:  # lists of plain values; anything deeper: the long way
                    if element.__class__ is str:
                        if (
                            ":" in element
                            or "=" in element
                            or "earer" in element
                            or (secrets and self._holds_secret(element))
                        ):
                            return False
                    elif element.__class__ not in _SCALARS:
                        return False
            else:
                return False  # tuples become lists, other types: the long way decides
        return True

    def _dict(self, value: dict[Any, Any]) -> dict[Any, Any]:
        copy: dict[Any, Any] | None = None
        for index, (key, item) in enumerate(value.items()):
            new_key = self.text(key if key.__class__ is str else str(key))
            new_item = self.obj(item)
            if copy is None:
                if new_key is key and new_item is item:
                    continue
                copy = dict(list(value.items())[:index])  # the unchanged entries before
            copy[new_key] = new_item
        return value if copy is None else copy


def _mask(match: re.Match[str]) -> str:
    groups = [g for g in match.groups() if g is not None]
    if len(groups) == 2:  # URL userinfo: keep "scheme://user:" and "@"
        return f"{groups[0]}{REDACTED}{groups[1]}"
    return f"{groups[0]}{REDACTED}" if groups else REDACTED
