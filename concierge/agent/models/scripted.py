"""Models for tests: `ScriptedModel` replays a script, `FunctionModel` asks a function.

Shipped in the library so users can test their own flows without a model server::

    model = ScriptedModel([tool_call("list_sources"), "You have two sources."])
    ...  # run a session with it
    model.assert_complete()
    messages, tools = model.calls[0]

Both record every call (deep copies of the messages and tools they were given), fill in
missing tool-call ids deterministically (``call_<call number>_<position>``), and stream their
text to ``on_text`` in a few chunks so the engine's streaming path runs too.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple, TypeAlias

from concierge.agent.models.base import ModelResponse, TextSink, ToolCall
from concierge.errors import ScriptExhausted

__all__ = [
    "FunctionModel",
    "ModelCall",
    "ReplyFunction",
    "ScriptExhausted",
    "ScriptedModel",
    "Step",
    "text",
    "tool_call",
]

Messages: TypeAlias = list[dict[str, Any]]
Tools: TypeAlias = list[dict[str, Any]]
ReplyFunction: TypeAlias = Callable[[Messages, Tools], "ModelResponse | str | Awaitable[ModelResponse | str]"]
Step: TypeAlias = "ModelResponse | str | ReplyFunction"

_CHUNKS = 3


class ModelCall(NamedTuple):
    """One recorded ``respond`` call (unpacks as ``messages, tools``)."""

    messages: Messages
    tools: Tools


def text(s: str) -> ModelResponse:
    """A plain text reply."""
    return ModelResponse(text=s, finish_reason="stop")


def tool_call(name: str, /, **arguments: Any) -> ModelResponse:
    """A reply that calls one tool (``name`` is positional-only, so a tool may take ``name=``).

    For parallel calls build ``ModelResponse(tool_calls=(ToolCall(...), ...))`` directly; an
    empty ``id`` is filled in by the model that replays it.
    """
    call = ToolCall(id="", name=name, arguments=dict(arguments), raw_arguments=json.dumps(arguments))
    return ModelResponse(tool_calls=(call,), finish_reason="tool_calls")


class _RecordingModel:
    """Recording, id filling and chunked streaming shared by the two test models."""

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[ModelCall] = []

    def _record(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> ModelCall:
        call = ModelCall(copy.deepcopy(list(messages)), copy.deepcopy(list(tools)))
        self.calls.append(call)
        return call

    async def _reply(self, response: ModelResponse | str, on_text: TextSink | None) -> ModelResponse:
        if isinstance(response, str):
            response = text(response)
        if not isinstance(response, ModelResponse):
            raise TypeError(f"{self.name}: a step must give a ModelResponse or str, not {type(response).__name__}")
        n = len(self.calls)
        if any(not c.id for c in response.tool_calls):
            calls = tuple(c if c.id else replace(c, id=f"call_{n}_{i}") for i, c in enumerate(response.tool_calls))
            response = replace(response, tool_calls=calls)
        if on_text is not None:
            for chunk in _chunks(response.text, _CHUNKS):
                await on_text(chunk)
        return response


class ScriptedModel(_RecordingModel):
    """Replays ``steps`` in order, one per ``respond`` call.

    A step is a `ModelResponse`, a ``str`` (a text reply) or a callable ``(messages, tools)``
    returning either (sync or async) — use one to assert on what the model was sent. Running
    out raises `ScriptExhausted`.
    """

    def __init__(self, steps: Iterable[Step] = (), *, name: str = "scripted") -> None:
        super().__init__(name)
        self._steps: deque[Step] = deque(steps)

    def __repr__(self) -> str:
        return f"ScriptedModel(name={self.name!r}, calls={len(self.calls)}, remaining={self.remaining})"

    @property
    def remaining(self) -> int:
        """Steps not yet replayed."""
        return len(self._steps)

    def enqueue(self, *steps: Step) -> None:
        """Append steps to the script."""
        self._steps.extend(steps)

    def assert_complete(self) -> None:
        """Raise ``AssertionError`` unless every step was replayed."""
        if self._steps:
            raise AssertionError(
                f"{self.name}: {len(self._steps)} scripted step(s) were never used "
                f"(after {len(self.calls)} call(s)); next: {_describe(self._steps[0])}"
            )

    async def respond(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        *,
        on_text: TextSink | None = None,
    ) -> ModelResponse:
        call = self._record(messages, tools)
        if not self._steps:
            raise ScriptExhausted(
                f"{self.name} ran out of scripted responses at call {len(self.calls)}; the last message "
                f"was {_last_message(call.messages)} — enqueue() more steps"
            )
        step = self._steps.popleft()
        response = await _resolve(step(copy.deepcopy(call.messages), copy.deepcopy(call.tools))) if callable(
            step
        ) else step
        return await self._reply(response, on_text)


class FunctionModel(_RecordingModel):
    """Replies with ``fn(messages, tools)`` (sync or async; a `ModelResponse` or ``str``),
    so a test can decide each answer from the history."""

    def __init__(self, fn: ReplyFunction, *, name: str = "function") -> None:
        super().__init__(name)
        self.fn = fn

    def __repr__(self) -> str:
        return f"FunctionModel(name={self.name!r}, calls={len(self.calls)})"

    async def respond(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        *,
        on_text: TextSink | None = None,
    ) -> ModelResponse:
        call = self._record(messages, tools)
        # The function gets its own copies: it cannot edit the engine's history by accident.
        response = await _resolve(self.fn(copy.deepcopy(call.messages), copy.deepcopy(call.tools)))
        return await self._reply(response, on_text)


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _chunks(s: str, n: int) -> list[str]:
    """``s`` in up to ``n`` pieces cut at spaces; ``"".join`` gives ``s`` back."""
    if not s:
        return []
    pieces: list[str] = []
    start = 0
    for k in range(1, n):
        cut = s.find(" ", max(start + 1, len(s) * k // n))
        if cut == -1:
            break
        pieces.append(s[start:cut])
        start = cut
    pieces.append(s[start:])
    return [p for p in pieces if p]


def _last_message(messages: Messages) -> str:
    if not messages:
        return "(none)"
    last = messages[-1]
    content = last.get("content")
    summary = content if isinstance(content, str) else json.dumps(content, default=str)
    if last.get("tool_calls"):
        summary = "tool calls " + ", ".join(c.get("function", {}).get("name", "?") for c in last["tool_calls"])
    summary = " ".join((summary or "").split())
    if len(summary) > 120:
        summary = summary[:119] + "…"
    return f"{last.get('role', '?')}: {summary!r}"


def _describe(step: Step) -> str:
    if isinstance(step, str):
        return f"text {step[:60]!r}"
    if isinstance(step, ModelResponse):
        if step.tool_calls:
            return "tool call(s) " + ", ".join(c.name for c in step.tool_calls)
        return f"text {step.text[:60]!r}"
    return f"function {getattr(step, '__name__', repr(step))}"
