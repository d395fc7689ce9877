"""Helpers for the concierge engine tests: run a session and look at its events. The fixtures
they use (``backend``, ``open_server``, ``bearer_server``, ``header_server``) are in
`tests.registry_fixtures`, registered for every test by conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from concierge.agent.events import AgentFinish, Event
from tests.registry_fixtures import CANARY, HEADER_CANARY

__all__ = ["BEARER", "HEADER", "collect", "dump", "events_of", "finish", "text_of"]

BEARER = CANARY
"""The token ``bearer_server`` requires."""
HEADER = HEADER_CANARY
"""The token ``header_server`` requires in ``X-Api-Key``."""




async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


def events_of(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.type == kind]


def finish(events: list[Event]) -> AgentFinish:
    last = events[-1]
    assert isinstance(last, AgentFinish), f"run did not finish: {last}"
    return last


def text_of(events: list[Event]) -> str:
    return "".join(getattr(e, "text", "") for e in events if e.type == "agent_text_delta")


def dump(events: list[Event]) -> list[dict[str, Any]]:
    return [{"event": e.type, **e.to_dict()} for e in events]
