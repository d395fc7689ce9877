"""The offline planner: a deterministic, rule-based `ChatModel`, the default with no model.

See `concierge.agent.models.offline.planner` for how it works. Modules, each with one job:

- ``vocabulary`` — word lists (politeness, generic nouns, yes/no, auth phrases): data;
- ``intents`` — the intent table: phrases, vetoes, and the read tool or form each one means;
- ``text`` — reading a message: tokens, typos, phrases;
- ``extract`` — slot extractors (URL, auth scheme, header, label, rate cap, tool names, …);
- ``entities`` — resolving names against the live sources, agents, tools and sandboxes;
- ``forms`` — one slot-filling form per request (slots with extractor, question, validation
  by the registry's own rules, and when each is required);
- ``state`` — the conversation folded into a `State`, message by message (no hidden memory);
- ``decide`` — the pure ``decide(state) -> Step``;
- ``replies`` — what is said, keyed by tool and by answer kind;
- ``planner`` — `OfflinePlanner`, the `ChatModel` that ties them together.

Names are loaded on first use (`concierge._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.agent.models.offline.planner import OFFLINE_MODEL_NAME, OfflinePlanner

__all__ = ["OFFLINE_MODEL_NAME", "OfflinePlanner"]

_EXPORTS = {"OFFLINE_MODEL_NAME": "planner", "OfflinePlanner": "planner"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
