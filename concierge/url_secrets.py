"""Credentials in a source's URL: kept in the vault, shown as ``••••``.

Some servers take their key in the query string (``https://mcp.tavily.com/mcp/?tavilyApiKey=…``,
``…/mcp?api_key=…``). A URL is stored, listed, logged and shown in clear, so the registry
splits such a URL when it is given (register, update):

- the row's ``base_url`` keeps every parameter in its place, the value of each credential
  parameter replaced by `MASK` (``…/mcp?api_key=••••&region=eu``): it says what the server
  gets, never the key;
- the values go to the vault, in order (`url_key`), and are put back only in the URL a
  connection dials (`unmask`).

A credential parameter is one whose name holds a credential word (`CREDENTIAL_NAME`: ``key``,
``token``, ``secret``, ``password``, ``sig``, ``auth``, ``credential``, in any case and
compound: ``apiKey``, ``access-token``, ``X-Amz-Signature``). A URL given back with ``••••``
(as shown, e.g. to change its path) means the stored value of that parameter; a URL without
the parameter drops it.
"""

from __future__ import annotations

import json
import re
from typing import Final
from urllib.parse import unquote

__all__ = ["CREDENTIAL_NAME", "CREDENTIAL_WORD", "MASK", "MissingValue", "dumps", "has_masked", "loads", "scrub",
           "shown", "split", "unmask", "url_key"]

MASK: Final = "••••"
"""How a credential is shown to people (never any of its characters)."""

CREDENTIAL_WORD: Final = r"(?:key|token|secret|passw(?:or)?d|pwd|sig(?:nature)?|auth|credential)"
"""What a query parameter that holds a credential has in its name (a regular expression)."""
CREDENTIAL_NAME: Final = re.compile(r"(?i)^[\w.~-]*?" + CREDENTIAL_WORD + r"[\w.~-]*$")
"""A query parameter name that holds a credential."""

_PAIR = re.compile(r"(?P<sep>^|[&;])(?P<name>[^=&;]*)=(?P<value>[^&;]*)")


class MissingValue(ValueError):
    """``name=••••`` in a URL for a parameter that has no stored value."""

    def __init__(self, name: str) -> None:
        super().__init__(f"base_url has {name}={MASK}, which stands for a stored value, but none is stored "
                         f"for {name}: give the value itself")
        self.name = name


def url_key(source_id: str) -> str:
    """Where a source's URL credentials are kept in the vault (a JSON list of [name, value])."""
    return f"user_mcp/{source_id}/url"


def _is_mask(value: str) -> bool:
    return unquote(value) == MASK


def _query_bounds(url: str) -> tuple[int, int] | None:
    start = url.find("?")
    if start < 0:
        return None
    end = url.find("#", start)
    return start + 1, len(url) if end < 0 else end


def split(url: str, stored: list[tuple[str, str]] | None = None) -> tuple[str, list[tuple[str, str]]]:
    """``url`` with each credential value masked, and the values in order ([name, value], as
    written in the URL). A masked value takes the next one ``stored`` under that name
    (`MissingValue` when there is none)."""
    bounds = _query_bounds(url)
    if bounds is None:
        return url, []
    start, end = bounds
    left = list(stored or [])
    values: list[tuple[str, str]] = []

    def mask(match: re.Match[str]) -> str:
        name, value = match["name"], match["value"]
        if not value or not CREDENTIAL_NAME.match(unquote(name)):
            return match[0]
        if _is_mask(value):
            held = next((i for i, (n, _) in enumerate(left) if n == name), None)
            if held is None:
                raise MissingValue(unquote(name))
            value = left.pop(held)[1]
        values.append((name, value))
        return f"{match['sep']}{name}={MASK}"

    query = _PAIR.sub(mask, url[start:end])
    return url[:start] + query + url[end:], values


def has_masked(url: str) -> bool:
    """Whether ``url`` (as stored) has a value kept in the vault."""
    return MASK in url


def unmask(url: str, values: list[tuple[str, str]]) -> str:
    """The URL to dial: each masked value of ``url`` (as stored) replaced by its value, in order."""
    bounds = _query_bounds(url)
    if bounds is None or not values:
        return url
    start, end = bounds
    left = list(values)

    def fill(match: re.Match[str]) -> str:
        if match["value"] != MASK:
            return match[0]
        held = next((i for i, (n, _) in enumerate(left) if n == match["name"]), None)
        if held is None:
            return match[0]
        return f"{match['sep']}{match['name']}={left.pop(held)[1]}"

    return url[:start] + _PAIR.sub(fill, url[start:end]) + url[end:]


def dumps(values: list[tuple[str, str]]) -> str:
    """The vault's form of ``values``."""
    return json.dumps([list(pair) for pair in values], separators=(",", ":"))


def loads(text: str | None) -> list[tuple[str, str]]:
    """``values`` from the vault's form (none for no text)."""
    if not text:
        return []
    return [(str(name), str(value)) for name, value in json.loads(text)]


_IN_TEXT = re.compile(r"(?i)([?&;][\w.~-]*?" + CREDENTIAL_WORD + r"[\w.~-]*=)(?!" + MASK + r")[^&;\s#\"'<>]+")


def scrub(text: str) -> str:
    """``text`` with the value of every credential parameter of a URL in it shown as `MASK`
    (for log lines: httpx2 logs each request's URL)."""
    return _IN_TEXT.sub(lambda m: m.group(1) + MASK, text) if "=" in text else text


def shown(url: str) -> str:
    """``url`` as people may see it: each credential value (or a reference to one) as `MASK`."""
    try:
        return split(url)[0]
    except MissingValue:  # "api_key=••••" given back: already shown so
        return url
