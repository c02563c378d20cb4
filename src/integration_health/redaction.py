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
        """A copy of a JSON-like value with every string (keys included) masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.obj(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.obj(item) for item in value]
        return value


def _mask(match: re.Match[str]) -> str:
    groups = [g for g in match.groups() if g is not None]
    if len(groups) == 2:  # URL userinfo: keep "scheme://user:" and "@"
        return f"{groups[0]}{REDACTED}{groups[1]}"
    return f"{groups[0]}{REDACTED}" if groups else REDACTED
