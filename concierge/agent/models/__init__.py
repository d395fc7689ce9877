"""Chat models behind one `ChatModel` protocol.

- `OpenAIChatModel` (and `from_env`): any OpenAI-compatible chat completions endpoint.
- `OfflinePlanner`: the deterministic, rule-based default with no model.
- `ScriptedModel` / `FunctionModel`: deterministic models for tests, yours included.

Names are loaded on first use (`concierge._lazy`): the openai SDK only with `OpenAIChatModel`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.agent.models.base import ChatModel, ModelResponse, TextSink, ToolCall, Usage
    from concierge.agent.models.offline import OfflinePlanner
    from concierge.agent.models.openai_model import OpenAIChatModel, from_env
    from concierge.agent.models.scripted import FunctionModel, ScriptedModel, ScriptExhausted, text, tool_call

__all__ = [
    "ChatModel",
    "FunctionModel",
    "ModelResponse",
    "OfflinePlanner",
    "OpenAIChatModel",
    "ScriptExhausted",
    "ScriptedModel",
    "TextSink",
    "ToolCall",
    "Usage",
    "from_env",
    "text",
    "tool_call",
]

_EXPORTS = {
    "ChatModel": "base", "ModelResponse": "base", "TextSink": "base", "ToolCall": "base", "Usage": "base",
    "OfflinePlanner": "offline", "OpenAIChatModel": "openai_model", "from_env": "openai_model",
    "FunctionModel": "scripted", "ScriptExhausted": "scripted", "ScriptedModel": "scripted",
    "text": "scripted", "tool_call": "scripted",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
