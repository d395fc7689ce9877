"""Resolving what a message names against the live sources, agents, tools and sandboxes.

A thing is named by its whole name, namespace, slug or id — case, spacing, ``_`` and ``-``
do not matter and small typos are forgiven — or by a URL it lives at. Never by a piece of a
word and never by anything inside a URL: "HT" is not in "http", "ds" is not in "ds_…". A
name that is only generic words ("Server", "Tools") counts only when the message marks it as
a name (capitalised, quoted, "called …", or followed by "source"/"server"). Distinctive
words of a name ("staging" for "Acme staging"), or their start ("scratch" for "Scratchpad"),
find it when only one thing has them. When
two things could be meant, the result says so, and the planner asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from concierge.agent.models.offline.text import Text, typo_of
from concierge.agent.models.offline.vocabulary import (
    FILLER,
    GENERIC,
    HEAD_NOUNS,
    NOT_NAMES,
    ORDINALS,
    PRONOUNS,
    STOPWORDS,
)
from concierge.mcp_client.endpoint import same_url

__all__ = ["Entity", "Resolution", "leftover_words", "pick", "resolve", "same_url"]


@dataclass(frozen=True)
class Entity:
    """Something a message may name. ``names`` are its whole names (label, namespace, slug)."""

    key: str
    label: str
    names: tuple[str, ...]
    url: str | None = None
    data: Any = None


@dataclass
class Resolution:
    matches: list[Entity] = field(default_factory=list)
    how: str = "unnamed"
    """``id``, ``url``, ``name`` (whole name), ``word`` (distinctive words), ``pronoun``,
    ``unknown`` (words that look like a name but match nothing) or ``unnamed``."""
    used: frozenset[int] = frozenset()
    leftovers: list[str] = field(default_factory=list)
    each_named: bool = False
    """Several matches, each named by words of its own ("revoke ghost and ghost2"), not one
    mention that fits several ("the demo one")."""

    @property
    def one(self) -> Entity | None:
        return self.matches[0] if len(self.matches) == 1 else None


def _split(name: str) -> list[str]:
    return [w for w in re.split(r"[\s_\-.:/]+", name.lower()) if w]


@dataclass(frozen=True)
class _Word:
    low: str
    index: int
    """Index of the message token this word came from."""


def _word_stream(text: Text, skip: frozenset[int]) -> list[_Word | None]:
    """The message's words split on ``_ - .`` (``None`` where skipped words, URLs, refs break it)."""
    stream: list[_Word | None] = []
    for i, token in enumerate(text.tokens):
        if i in skip or token.kind in ("url", "ref"):
            stream.append(None)
            continue
        for part in _split(token.low) or [token.low]:
            stream.append(_Word(part, i))
    return stream


def _strongly_named(text: Text, index: int) -> bool:
    """The word at ``index`` is marked as a name: capitalised, quoted, "called X", "the X source"."""
    if text.is_capitalized(index):
        return True
    token = text.tokens[index]
    if any(qs <= token.start and token.end <= qe for _, qs, qe in text.quoted):
        return True
    before = text.tokens[index - 1].low if index else ""
    after = text.tokens[index + 1].low if index + 1 < len(text.tokens) else ""
    return before in ("called", "named") or after in HEAD_NOUNS


def _find_sequence(stream: list[_Word | None], words: list[str], *, fuzzy: bool) -> list[tuple[int, int]]:
    """(start, exact word count) of each place ``words`` occur in a row in ``stream``."""
    hits = []
    n = len(words)
    for start in range(len(stream) - n + 1):
        exact = 0
        for k, word in enumerate(words):
            item = stream[start + k]
            if item is None:
                break
            if item.low == word:
                exact += 1
            elif item.low in STOPWORDS or item.low in FILLER or not (
                    fuzzy and typo_of(item.low, word, name=True)):
                break
        else:
            hits.append((start, exact))
    return hits


def resolve(text: Text, entities: Iterable[Entity], *, skip: frozenset[int] = frozenset(),
            focus: str | None = None, ignore: frozenset[str] = frozenset()) -> Resolution:
    """Which of ``entities`` the message names (see the module docstring). ``skip``: token
    indices already read as something else (intent words, values); ``focus``: the key of the
    thing last talked about, for "it"; ``ignore``: words that never count as an attempted name
    (the request's own vocabulary: "health" in "test the health of my source")."""
    pool = list(entities)
    tokens = text.tokens
    # 1. ids, then URLs.
    ids = {t.text for i, t in enumerate(tokens) if i not in skip}
    by_id = [e for e in pool if e.key in ids]
    if by_id:
        used = frozenset(i for i, t in enumerate(tokens) if t.text in {e.key for e in by_id})
        return Resolution(by_id, "id", used, each_named=len(by_id) > 1)
    addresses = [(i, t.text) for i, t in enumerate(tokens) if t.kind == "url" and i not in skip]
    by_url = [e for e in pool if e.url and any(same_url(u, e.url) for _, u in addresses)]
    if by_url:
        return Resolution(by_url, "url", frozenset(i for i, _ in addresses))
    stream = _word_stream(text, skip)
    # 2. Whole names: the longest, most exact match wins.
    scored: list[tuple[int, int, Entity, frozenset[int]]] = []
    for entity in pool:
        best: tuple[int, int, frozenset[int]] | None = None
        for name in entity.names:
            words = _split(name)
            if not words:
                continue
            for start, exact in _find_sequence(stream, words, fuzzy=True):
                covered = frozenset(w.index for w in stream[start:start + len(words)] if w is not None)
                if all(w in GENERIC or w in STOPWORDS for w in words) and not any(
                        _strongly_named(text, i) for i in covered):
                    continue
                if len(words) == 1 and words[0] in NOT_NAMES | FILLER and exact == 0:
                    continue
                candidate = (len(words), exact, covered)
                if best is None or candidate[:2] > best[:2]:
                    best = candidate
        if best is not None:
            scored.append((best[0], best[1], entity, best[2]))
    if scored:
        top = max((s[0], s[1]) for s in scored)
        winners = [s for s in scored if (s[0], s[1]) == top]
        # A name inside a longer matched name ("Acme" in "Acme staging") loses to it.
        used = frozenset().union(*(s[3] for s in winners))
        apart = len(winners) > 1 and sum(len(s[3]) for s in winners) == len(used)
        return Resolution([s[2] for s in winners], "name", used, each_named=apart)
    # 3. Distinctive words of names.
    partial: list[tuple[Entity, frozenset[int]]] = []
    for entity in pool:
        name_words = {w for name in entity.names[:1] for w in _split(name)}
        distinctive = {w for w in name_words if len(w) >= 3 and w not in GENERIC and w not in STOPWORDS
                       and w not in NOT_NAMES}
        def fits(low: str) -> bool:
            return any(low == w or typo_of(low, w, name=True) or _abbreviates(low, w) for w in distinctive)

        covered = frozenset(item.index for item in stream if item is not None and fits(item.low)
                            and item.low not in STOPWORDS and item.low not in FILLER)
        # A compound word is one name: "ghost-bot" is not "billing-bot" for their common "bot".
        covered = frozenset(i for i in covered if fits("".join(_split(tokens[i].low))) or all(
            fits(item.low) or item.low in name_words or item.low in GENERIC or item.low in STOPWORDS
            for item in stream if item is not None and item.index == i))
        if covered:
            partial.append((entity, covered))
    leftovers = [w for w in leftover_words(text, skip) if w.lower() not in ignore]
    if partial:
        best_cover = max(len(c) for _, c in partial)
        chosen = [(e, c) for e, c in partial if len(c) == best_cover]
        return Resolution([e for e, _ in chosen], "word", frozenset().union(*(c for _, c in chosen)),
                          leftovers)
    # 4. "it", "that one": the thing last talked about.
    if focus is not None and any(t.low in PRONOUNS for i, t in enumerate(tokens) if i not in skip):
        focused = [e for e in pool if e.key == focus]
        if focused:
            return Resolution(focused, "pronoun")
    if leftovers:
        return Resolution([], "unknown", leftovers=leftovers)
    return Resolution([], "unnamed")


def _abbreviates(typed: str, word: str) -> bool:
    """ "scratch" for "scratchpad": the start of a name's word, four letters or more. (Never the
    other way round: the name "HT" is not found in the word "http".)"""
    return len(typed) >= 4 and len(word) > len(typed) and word.startswith(typed) and \
        typed not in GENERIC and typed not in NOT_NAMES


_NOT_ATTEMPTED_NAMES = frozenset("""
put give set try make get take store save keep back ugh oops whoops sorry hmm argh meh damn dang
total altogether overall combined currently count counting
""".split())
"""Verbs, interjections and tallies around a request ("put the right token back", "ugh, wrong one",
"how many tools in total"): never read as a name that was not found."""


def leftover_words(text: Text, skip: frozenset[int]) -> list[str]:
    """Words that are neither skipped nor filler: what may have been meant as a name."""
    out = []
    for i, token in enumerate(text.tokens):
        if i in skip or token.kind != "word":
            continue
        low = token.low
        if low in STOPWORDS or low in FILLER or low in GENERIC or low in NOT_NAMES or low in PRONOUNS:
            continue
        if low in ("now", "for", "while", "bit", "again", "please", "thanks", "anymore", "instead",
                   "sandbox", "workspace", "here", "there", "available") or low in _NOT_ATTEMPTED_NAMES:
            continue
        out.append(token.text)
    return out


def pick(text: Text, candidates: list[Entity]) -> Entity | None:
    """The candidate an answer to "which one?" means: a number, an ordinal, a name, a word."""
    words = [t.low for t in text.tokens if t.kind in ("word", "num")]
    content = [w for w in words if w not in ("the", "one", "number", "no", "#", "option", "please",
                                             "that", "this", "i", "mean", "meant", "it", "is")]
    if len(content) == 1 and content[0].isdigit():
        index = int(content[0])
        return candidates[index - 1] if 1 <= index <= len(candidates) else None
    resolution = resolve(text, candidates)
    if resolution.one is not None and resolution.how in ("id", "url", "name", "word"):
        return resolution.one
    if resolution.matches:
        return None
    if len(content) <= 2:
        for word in content or words:
            if word in ORDINALS:
                index = ORDINALS[word]
                if index == -1:
                    return candidates[-1]
                return candidates[index - 1] if index <= len(candidates) else None
    return None
