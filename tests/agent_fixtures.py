"""Fixtures for the concierge engine tests: a real LocalBackend, real loopback MCP servers,
and small helpers to run a session and look at its events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from concierge.agent.events import AgentFinish, Event
from concierge.backend import LocalBackend
from tests.mcp_servers import demo_server_fixture

__all__ = ["BEARER", "HEADER", "backend", "bearer_server", "collect", "events_of", "finish",
           "header_server", "open_server", "text_of"]

BEARER = "canary-AGENT-BEARER-6d2f8a1c9e"
HEADER = "canary-AGENT-HEADER-0b7e4d3a5f"


@pytest.fixture
async def backend() -> AsyncIterator[LocalBackend]:
    b = LocalBackend.open()  # CONCIERGE_HOME is a tmp dir (tests/conftest.py)
    yield b
    await b.aclose()


open_server = demo_server_fixture()
bearer_server = demo_server_fixture(token=BEARER)
header_server = demo_server_fixture(token=HEADER, header="X-Api-Key")


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
