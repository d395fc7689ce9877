"""Fixtures for registry, catalog and engine tests: a real Registry on a tmp SQLite file, a
`LocalBackend` over it, real demo MCP servers, and `HoldGate` (a server that holds requests
until the test releases them). Registered for every test by ``pytest_plugins`` in conftest.py.

    registry   Registry.open(tmp_path / "home")
    reg        Registry.open() on the test's CONCIERGE_HOME (tmp, see conftest.py)
    backend    LocalBackend(reg); its pooled MCP sessions are closed afterwards
    open_server / bearer_server (CANARY) / header_server (HEADER_CANARY in X-Api-Key)
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from concierge.backend import LocalBackend
from concierge.registry import Registry
from tests.mcp_servers import demo_server_fixture, status_app

CANARY = "canary-AGENT-BEARER-6d2f8a1c9e"  # (the planner must read it as a credential)
HEADER_CANARY = "canary-AGENT-HEADER-0b7e4d3a5f"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(tmp_path / "home")
    yield reg
    reg.close()


@pytest.fixture
def reg() -> Iterator[Registry]:
    registry = Registry.open()  # CONCIERGE_HOME is a tmp dir (tests/conftest.py)
    yield registry
    registry.close()


@pytest.fixture
async def backend(reg: Registry) -> AsyncIterator[LocalBackend]:
    be = LocalBackend(reg)
    yield be
    if be._catalog is not None:  # closes every pooled session (the gateway shares them)
        await be._catalog.aclose()


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
