"""The planner's state and its steps (plain dataclasses; `fold` builds them, `decide` reads them).

The planner keeps nothing between turns. Each turn the conversation so far is folded,
message by message, into a `State`: the current `Flow` (the request being worked on, its
filled slots, what was last asked) and the `World` it has looked at (sources, agents, the
catalog, as the tools returned them). `decide(state)` then returns one `Step`: `Say`
something (an answer or a question) or `Call` a tool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from concierge.agent.models.offline.entities import Entity
from concierge.agent.models.offline.text import Text
from concierge.agent.toolkit.results import AgentRow, Catalog, SourceRow

__all__ = ["Call", "Flow", "Say", "State", "Step", "World"]


@dataclass(frozen=True)
class Say:
    """A reply: an answer (``ends``) or a question (``asks`` names what it asks for)."""

    text: str
    kind: str
    """``answer`` (about ``tool``'s result), ``ask``, ``not_found``, ``not_eligible``, ``help``,
    ``greet``, ``thanks``, ``unknown``, ``unsupported``, ``nothing`` (cancelled or declined),
    ``error``."""
    asks: str | None = None
    """The slot the question asks for (``url``, ``auth_kind``, ``source`` for "which one?", …)."""
    choices: tuple[Entity, ...] = ()
    tool: str | None = None
    ends: bool = True
    """True when the request is over (an answer); False while a question is open."""


@dataclass(frozen=True)
class Call:
    """A tool call: ``fetch`` looks at the world for the request, ``final`` is the request itself."""

    tool: str
    arguments: dict[str, Any]
    purpose: str = "final"


Step = Say | Call


@dataclass
class World:
    """What the tools returned during this request."""

    sources: list[SourceRow] | None = None
    sources_sandbox: str | None = None
    agents: list[AgentRow] | None = None
    catalog: Catalog | None = None
    catalog_key: tuple[str | None, str | None] | None = None
    """(agent, app) the catalog was resolved for."""


@dataclass
class Flow:
    """One request being worked on."""

    form: str
    intent: str
    text: Text
    """The message that started it (its words may name the target)."""
    skip: frozenset[int] = frozenset()
    """Token indices of ``text`` already read as something else (intent words, values)."""
    aspects: set[str] = field(default_factory=set)
    slots: dict[str, Any] = field(default_factory=dict)
    world: World = field(default_factory=World)
    target: Entity | None = None
    asked: str | None = None
    choices: tuple[Entity, ...] = ()
    refused: set[str] = field(default_factory=set)
    """Slots whose value a rule refused: asked again (even optional ones)."""
    notice: str = ""
    """Said before the next question (a rule the last answer broke, a correction taken)."""
    proposed: tuple[str, dict[str, Any]] | None = None
    """The write last proposed (tool, arguments)."""
    not_confirmed: bool = False
    """The person typed something instead of answering the confirmation."""
    expect: str | None = None
    """The purpose of the tool call in flight (``fetch`` or ``final``)."""
    url_only: bool = False
    """The request was only a URL (no verb): a registration unless the URL is already known."""
    guess: bool = False
    """No request was recognised: shown only if the words name a source; else "not understood"."""


@dataclass
class State:
    sandbox: str = "default"
    sandboxes: tuple[str, ...] = ()
    flow: Flow | None = None
    reply: Say | None = None
    """An answer owed now (the latest tool result, a cancellation, a fixed reply)."""
    focus: str | None = None
    """The id of the source last talked about ("it")."""
    last: tuple[str, str] | None = None
    """(form, intent) of the request last answered, for a follow-up like "and ops-bot?"."""
    calls_seen: int = 0
    parked: Flow | None = None
    """A change the person did not confirm because they asked a question instead: kept while
    the question is answered (the answer reminds them); a "yes" next proposes it again."""
    declined: Flow | None = None
    """A change the person just said no to: a correction next ("call it Support instead")
    proposes it again, changed; anything else forgets it."""
