"""The `ChatModel` protocol every model adapter implements.

Messages and tool definitions use the OpenAI Chat Completions shapes, the common
denominator of OpenAI-compatible servers:

- a message is ``{"role": "system"|"user"|"assistant"|"tool", "content": str, ...}``; an
  assistant message may carry ``tool_calls`` (``[{"id", "type": "function", "function":
  {"name", "arguments": "<json>"}}]``) and a tool message carries ``tool_call_id``;
- a tool definition is ``{"type": "function", "function": {"name", "description", "parameters"}}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["ChatModel", "ModelResponse", "TextSink", "ToolCall", "Usage"]

TextSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class ModelResponse:
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"


@runtime_checkable
class ChatModel(Protocol):
    """One step of a conversation: given the history and the tools, answer or call tools."""

    name: str

    async def respond(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], *,
                      on_text: TextSink | None = None) -> ModelResponse:
        """Return the model's next message. Text may be streamed to ``on_text`` as it arrives
        (the full text is still in the result). Raises `concierge.errors.ModelError`."""
        ...
