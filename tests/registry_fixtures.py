"""Fixtures for registry tests: a real Registry on a tmp SQLite file, real demo MCP servers, and
`HoldGate` (a server that holds requests until the test releases them)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from concierge.registry import Registry
from tests.mcp_servers import demo_server_fixture, status_app

CANARY = "canary-TOKEN-7c1e9a44b2"
HEADER_CANARY = "canary-HDR-5f3a9d0e61"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(tmp_path / "home")
    yield reg
    reg.close()


open_server = demo_server_fixture()
bearer_server = demo_server_fixture(token=CANARY)
header_server = demo_server_fixture(token=HEADER_CANARY, header="X-Api-Key")


class HoldGate:
    """Wraps an ASGI app; while ``held``, HTTP requests wait (the first arrival sets
    ``arrived``) until `release()`, then fail with 503; later requests go to the wrapped app. ``only_first=True`` holds
    just the first request (one MCP client's ``initialize``) and lets later ones through. A
    check "in flight" against a hanging server, that the test decides when to finish."""

    def __init__(self, app: Any, *, held: bool = True, only_first: bool = False) -> None:
        self.app = app
        self.held = held
        self.only_first = only_first
        self.arrived = threading.Event()

    def hold(self) -> None:
        self.arrived.clear()
        self.held = True

    def release(self) -> None:
        self.held = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.held and not (self.only_first and self.arrived.is_set()):
            self.arrived.set()
            while self.held:
                await anyio.sleep(0.01)
            # A held request fails once released (its client may be long gone, killed).
            await status_app(503)(scope, receive, send)
            return
        await self.app(scope, receive, send)
