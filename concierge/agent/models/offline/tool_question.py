"""Whether an agent has a tool: "can helpdesk-bot use the echo tool?", "can it create tickets?".

Answered from the agent's live catalog (the `list_agent_tools` result the question led to):
yes with the tools whose own names hold the words asked about, "not yet" for a held one, and
no (with its tools, and how to add one) otherwise. A question that names no tool is left to the
ordinary catalog answer.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from concierge.agent.models.offline.forms import tool_named
from concierge.agent.models.offline.text import Text, Token
from concierge.agent.toolkit.results import Catalog

__all__ = ["has_tool"]

_ASKS_WHETHER = re.compile(r"(?i)^\W*(?:can|could|does|do|is|has|will|may)\b")
_USING_VERBS = frozenset({"use", "see", "call", "access", "run", "have", "get"})
_AROUND_A_TOOL = frozenset({"the", "a", "an", "its", "their", "any", "this", "that", "tool", "tools"})
"""Words between the verb and a tool's name, or before "tool", that are not part of the name."""
_ENDS_A_NAME = frozenset({"now", "yet", "too", "also", "right"})


def _words_from(tokens: list[Token], start: int, count: int, *, also_skip: frozenset[str] = frozenset()) -> list[str]:
    """The name words among ``count`` tokens from ``start`` (up to a non-word or "now", "too", …)."""
    words = []
    for later in tokens[start:start + count]:
        if later.kind != "word" or later.low in _ENDS_A_NAME:
            break
        if later.low not in _AROUND_A_TOOL and later.low not in also_skip:
            words.append(later.low)
    return words


def _asked_tool(text: Text, agent: str) -> list[str]:
    """The words that name the tool asked about: before "tool" ("the echo tool"), else after
    the verb ("use search docs")."""
    tokens = text.tokens
    for i, token in enumerate(tokens):
        if token.low in ("tool", "tools"):
            words: list[str] = []
            j = i - 1
            while j >= 0 and tokens[j].kind == "word" and tokens[j].low not in _AROUND_A_TOOL \
                    and tokens[j].low not in _USING_VERBS - {"get", "run"} and tokens[j].low != agent.lower():
                words.insert(0, tokens[j].low)
                j -= 1
            if words:
                return words
    verb = next((i for i, t in enumerate(tokens) if t.low in _USING_VERBS), None)
    return _words_from(tokens, verb + 1, 4) if verb is not None else []


def _words_after(text: Text, agent: str) -> list[str]:
    """Up to three words after the agent's name ("can helpdesk-bot *create tickets*?")."""
    at = next((i for i, t in enumerate(text.tokens) if t.low == agent.lower()), None)
    return _words_from(text.tokens, at + 1, 3, also_skip=frozenset({"be", "able", "to"})) if at is not None else []


def _described(tools: list[Any]) -> str:
    return "; ".join(f"{t.name} ({t.description.rstrip('.')})" if t.description else t.name for t in tools[:5])


def _barred(result: Catalog, words: list[str]) -> list[str]:
    """The tools the agent's own allowlist keeps from it whose names hold ``words``."""
    names = result.trace.allowlist_filtered_out.get("agent") or []
    return [n for n in names if words and tool_named(SimpleNamespace(name=n, app=""), words)]


def _not_allowed(result: Catalog, agent: str, barred: list[str]) -> str:
    them, it = ", ".join(barred[:5]), "it" if len(barred) == 1 else "them"
    mine = ", ".join(t.name for t in result.tools[:10]) or "none"
    return (f"No — {agent}'s allowlist keeps {them} from it (its tools: {mine}). To allow {it}, say "
            f'"let {agent} also use {barred[0]}".')


def has_tool(text: Text, result: Catalog) -> str | None:
    """The answer to "can X use the echo tool?" from X's catalog, or None if not such a question."""
    agent = result.agent
    if not agent or not _ASKS_WHETHER.match(text.raw):
        return None
    asked = _asked_tool(text, agent)
    if not asked:  # "can helpdesk-bot create tickets?": only if those words name one of its tools
        after = _words_after(text, agent)
        found = [t for t in result.tools if after and tool_named(t, after)]
        if found:
            return f"Yes — {agent} has {_described(found)}."
        barred = _barred(result, after)
        return _not_allowed(result, agent, barred) if barred else None
    named = " ".join(asked)
    found = [t for t in result.tools if tool_named(t, asked)]
    if found:
        return f"Yes — {agent} has {_described(found)}."
    barred = _barred(result, asked)
    if barred:
        return _not_allowed(result, agent, barred)
    held = [h["name"] for h in result.trace.tools_held if all(w in h["name"].lower() for w in asked)]
    if held:
        return (f"Not yet — {', '.join(held)} is held until approved (new, or changed since it was approved); "
                'say "show" and its source to see what changed.')
    mine = ", ".join(t.name for t in result.tools[:10]) or "none"
    return (f"No — {agent} has no {named} tool right now (its tools: {mine}). If a source offers one, say "
            f'"let {agent} also use {named}".')
