"""How an allowlist entry matches a tool name: exactly, or as a case-sensitive glob.

Used by the catalog, the gateway and the concierge's tools (which tell a person, before their
yes, that an entry matches nothing); importing it loads nothing else."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

__all__ = ["is_glob", "matches_any", "unmatched"]

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def matches_any(patterns: Iterable[str], name: str) -> bool:
    """Exact match, or a case-sensitive glob (``acme_*``, ``*_read``, ``tool_?``)."""
    return any(p == name or (is_glob(p) and fnmatchcase(name, p)) for p in patterns)


def unmatched(patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    """The entries of ``patterns`` that match none of ``names``."""
    names = list(names)
    return [p for p in patterns if not any(matches_any([p], n) for n in names)]
