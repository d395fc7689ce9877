"""Cleaning server-supplied text before people or models see it."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["one_line", "sanitize"]

_ANSI_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI sequences (colours, cursor moves, screen clears)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC sequences (window titles, hyperlinks)
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
)
_BLANK_LINES_RE = re.compile(r"\n{3,}")


def sanitize(text: str, limit: int, *, single_line: bool = False) -> str:
    """Strip escape sequences and control/format characters; keep newlines and tabs; cap length."""
    if len(text) > limit * 4:  # don't scan megabytes: the cap throws the rest away anyway
        text = text[: limit * 4]
    text = _ANSI_RE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    kept = []
    for ch in text:
        if ch in "\n\t":
            kept.append(" " if single_line else ch)
        elif unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"):
            kept.append(ch)
    text = _BLANK_LINES_RE.sub("\n\n", "".join(kept)).strip()
    if single_line:
        text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def one_line(text: str, limit: int = 240) -> str:
    return sanitize(text, limit, single_line=True)
