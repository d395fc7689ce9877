"""Chat models behind one `ChatModel` protocol.

- `OpenAIChatModel` (and `from_env`): any OpenAI-compatible chat completions endpoint.
- `ScriptedModel` / `FunctionModel`: deterministic models for tests, yours included.
"""

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
