"""Reading a message: tokens (URLs and secret references set apart), typo-tolerant word
comparison, and phrase matching with gaps.

A `Text` is the message as the planner sees it: ``tokens`` are its words, lower-cased with
contractions spelled out ("what's" → what is, "demo's" → demo), with one placeholder token
per URL (``<url>``) and per secret reference (``<ref>``), so no word inside an address or a
credential can ever be read as a command or a name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from concierge.agent.models.offline.vocabulary import CONTRACTIONS, NEVER_TYPOS

__all__ = ["Phrase", "Text", "Token", "phrase", "typo_of"]

URL_RE = re.compile(
    r"(?:\b[a-z][a-z0-9+.\-]{1,15}://[^\s<>\"'`]+|\b(?:localhost|127\.0\.0\.1|\[::1\]):\d+(?:/[^\s<>\"'`]*)?)", re.I)
REF_RE = re.compile(r"\[secret:(sec_[0-9a-f]{8,32})\]")
_WORD_RE = re.compile(r"[A-Za-z0-9_*][A-Za-z0-9_*.'’\-]*")
_QUOTED_RE = re.compile(r"\"([^\"]{1,200})\"|“([^”]{1,200})”|(?:(?<=\s)|^)'([^']{1,200})'(?=[\s.,;:!?]|$)")


@dataclass(frozen=True)
class Token:
    text: str
    """As typed (case kept), trailing punctuation removed; the spelled-out word for contractions."""
    low: str
    start: int
    end: int
    kind: str = "word"
    """``word``, ``num``, ``url`` (its text is the URL) or ``ref`` (its text is ``sec_…``)."""


@dataclass
class Text:
    """A message, read once."""

    raw: str
    tokens: list[Token] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    quoted: list[tuple[str, int, int]] = field(default_factory=list)

    @classmethod
    def read(cls, raw: str) -> Text:
        """The message read (memoized: a conversation is re-read on every turn)."""
        return _read(raw)

    @classmethod
    def _read(cls, raw: str) -> Text:
        text = cls(raw)
        spans: list[tuple[int, int, Token]] = []
        for match in URL_RE.finditer(raw):
            url = match.group(0).rstrip(".,;:!?)]}'\"—")
            end = match.start() + len(url)
            spans.append((match.start(), end, Token(url, "<url>", match.start(), end, "url")))
            text.urls.append(url)
        for match in REF_RE.finditer(raw):
            spans.append((match.start(), match.end(),
                          Token(match.group(1), "<ref>", match.start(), match.end(), "ref")))
            text.refs.append(match.group(1))
        spans.sort(key=lambda s: s[0])
        cursor = 0
        for start, end, token in [*spans, (len(raw), len(raw), None)]:
            if start < cursor:
                continue
            text.tokens.extend(_words(raw, cursor, start))
            if token is not None:
                text.tokens.append(token)
            cursor = end
        for match in _QUOTED_RE.finditer(raw):
            group = next(g for g in (1, 2, 3) if match.group(g) is not None)
            value = match.group(group).strip()
            if value and not REF_RE.fullmatch(value):
                text.quoted.append((value, match.start(group), match.end(group)))
        return text

    @property
    def words(self) -> list[str]:
        return [t.low for t in self.tokens]

    def span_text(self, first: int, last: int) -> str:
        """The original characters covered by tokens ``first..last`` (inclusive)."""
        return self.raw[self.tokens[first].start:self.tokens[last].end]

    def is_capitalized(self, index: int) -> bool:
        """Typed with a capital inside the sentence (a sign of a name)."""
        token = self.tokens[index]
        if not token.text[:1].isupper():
            return False
        before = self.raw[:token.start].rstrip()
        return bool(before) and before[-1] not in ".!?:"


@lru_cache(maxsize=4096)
def _read(raw: str) -> Text:
    return Text._read(raw)


def _words(raw: str, start: int, end: int) -> list[Token]:
    out: list[Token] = []
    for match in _WORD_RE.finditer(raw, start, end):
        word = match.group(0).replace("’", "'")
        stripped = word.rstrip(".-'")
        if not stripped:
            continue
        begin, finish = match.start(), match.start() + len(stripped)
        low = stripped.lower()
        if low in CONTRACTIONS:
            out.extend(Token(w, w, begin, finish) for w in CONTRACTIONS[low])
            continue
        if low.endswith("'s") and len(low) > 2:  # possessive: "demo's" is demo
            stripped, low, finish = stripped[:-2], low[:-2], finish - 2
        if "'" in low:
            low = low.replace("'", "")
        if low.isdigit():
            out.append(Token(stripped, low, begin, finish, "num"))
            continue
        # "90/min", "30/minute": the tokenizer already split on "/".
        out.append(Token(stripped, low, begin, finish))
    return out


# --------------------------------------------------------------------------------------------
# Typos


@lru_cache(maxsize=65536)
def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[i - 1][j] + 1, row[j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[i - 2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


@lru_cache(maxsize=65536)
def typo_of(typed: str, known: str, *, name: bool = False) -> bool:
    """Whether ``typed`` is ``known`` or a small typo of it.

    Same first letter; one edit for words of 5–7 letters, two from 8, only a swap of two
    neighbours for 4 letters (names: one edit from 4). Never for real words one letter from
    a command ("remote" is not "remove"), for inflections ("paused" is not "pause"), or for
    words with digits.
    """
    if typed == known:
        return True
    if (typed in NEVER_TYPOS or len(known) < 4 or not typed or typed[0] != known[0]
            or any(c.isdigit() for c in typed + known)):
        return False
    if not name and (typed.startswith(known) or known.startswith(typed)):
        # An inflection ("paused", "connected", "sources") is another word, not a typo; only a
        # dropped last letter that is not a plural or past ending is ("revok").
        if not (len(known) - len(typed) == 1 and known[-1] not in "sd"):
            return False
    if len(known) == 4 and not name:
        return len(typed) == 4 and _distance(typed, known) == 1 and sorted(typed) == sorted(known)
    limit = 1 if len(known) < 8 else 2
    return abs(len(typed) - len(known)) <= limit and _distance(typed, known) <= limit


# --------------------------------------------------------------------------------------------
# Phrases


_SPECIAL = {"NUM": "num", "URL": "url", "REF": "ref", "TOOL": "tool"}


@dataclass(frozen=True)
class Phrase:
    """Words in order; ``*`` allows up to four other words in between; ``a|b`` either word;
    ``NUM``, ``URL``, ``REF``, ``TOOL`` a number, an address, a credential reference, a tool-like
    name (``search_docs``, ``demo_*``)."""

    source: str
    elements: tuple[frozenset[str] | str | None, ...]

    @property
    def score(self) -> int:
        return sum(1 for e in self.elements if e is not None)

    def find(self, text: Text, skip: frozenset[int] = frozenset()) -> tuple[int, ...] | None:
        """Indices of the tokens the phrase's words matched, leftmost first; None if absent."""
        tokens = text.tokens
        literal = [e for e in self.elements if e is not None]
        gaps = [self.elements[i - 1] is None for i, e in enumerate(self.elements) if e is not None]

        def at(i: int, k: int) -> tuple[int, ...] | None:
            if k == len(literal):
                return ()
            limit = len(tokens) if k == 0 else min(len(tokens), i + (5 if gaps[k] else 1))
            for j in range(i, limit):
                if j in skip:
                    continue
                if _element_matches(literal[k], tokens[j]):
                    rest = at(j + 1, k + 1)
                    if rest is not None:
                        return (j, *rest)
                if k > 0 and not gaps[k]:
                    break
            return None

        return at(0, 0) if literal else None


def _element_matches(element: frozenset[str] | str, token: Token) -> bool:
    if isinstance(element, str):
        if element == "tool":
            return token.kind == "word" and ("_" in token.low or "*" in token.low)
        return token.kind == element
    if token.kind != "word":
        return False
    return token.low in element or _typo_in(token.low, element)


@lru_cache(maxsize=65536)
def _typo_in(word: str, element: frozenset[str]) -> bool:
    """Whether ``word`` is a typo of one of ``element``'s words (same first letter only)."""
    if word in NEVER_TYPOS or len(word) < 3:
        return False
    return any(typo_of(word, known) for known in element if len(known) >= 4 and known[0] == word[0])


@lru_cache(maxsize=4096)
def phrase(source: str) -> Phrase:
    """Compile a phrase written as in the intent table ("turn|switch * back on")."""
    elements: list[frozenset[str] | str | None] = []
    for part in source.split():
        if part == "*":
            if elements and elements[-1] is not None:
                elements.append(None)
        elif part in _SPECIAL:
            elements.append(_SPECIAL[part])
        else:  # written spelled out ("what is", "do not"), as `Text` reads messages
            elements.append(frozenset(part.split("|")))
    while elements and elements[-1] is None:
        elements.pop()
    return Phrase(source, tuple(elements))
