"""`OfflinePlanner`: a deterministic, rule-based `ChatModel` — the default with no model configured.

It understands the concierge's requests in ordinary phrasing (see the intent table in
`intents.py` and the forms in `forms.py`) and works through the very same tools, gate and
events as a real model: it only ever answers with text or one tool call, and the engine runs
(or gates) that call.

It keeps no state of its own. Each reply is computed from the messages it is given: the
conversation is folded, message by message, into a `State` (`fold.py`), and the next step
is the pure ``decide(state)`` (`decide.py`). A session restored from its saved state
therefore continues exactly where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from concierge.agent.models.base import ModelResponse, TextSink, ToolCall, Usage
from concierge.agent.models.offline.decide import decide
from concierge.agent.models.offline.fold import fold
from concierge.agent.models.offline.state import Call, Say, Step

__all__ = ["OFFLINE_MODEL_NAME", "OfflinePlanner"]

OFFLINE_MODEL_NAME = "offline-planner"


class OfflinePlanner:
    """Rule-based planner; see the module docstring. Implements `ChatModel`."""

    name = OFFLINE_MODEL_NAME
    reads_whole_history = True
    """No context window: the engine sends the whole history, huge tool results included."""
    follows_read_text = False
    """Its writes come from the person's words, matched against tables; no text a server wrote
    can instruct it (`concierge.agent.auto_approve`), so --yes need not hold writes for that."""

    def plan(self, messages: Sequence[dict[str, Any]]) -> Step:
        """The step these messages lead to (pure: the same messages give the same step)."""
        return decide(fold(messages))

    async def respond(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], *,
                      on_text: TextSink | None = None) -> ModelResponse:
        state = fold(messages)
        step = decide(state)
        available = {t.get("function", {}).get("name") for t in tools}
        if isinstance(step, Call):
            if step.tool in available:
                call = ToolCall(id=f"call_{state.calls_seen + 1}", name=step.tool, arguments=step.arguments,
                                raw_arguments=json.dumps(step.arguments))
                return ModelResponse(tool_calls=(call,), finish_reason="tool_calls", usage=Usage())
            step = Say(f"I can't do that here: the {step.tool} tool is not available.", "error")
        if on_text is not None:
            await on_text(step.text)
        return ModelResponse(text=step.text, finish_reason="stop", usage=Usage())
