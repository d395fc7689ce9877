"""Fixtures for registry tests: a real Registry on a tmp SQLite file and real demo MCP servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from concierge.registry import Registry
from tests.mcp_servers import RunningServer, demo_app, serve_in_thread

CANARY = "canary-TOKEN-7c1e9a44b2"
HEADER_CANARY = "canary-HDR-5f3a9d0e61"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(tmp_path / "home")
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def open_server() -> Iterator[RunningServer]:
    with serve_in_thread(demo_app()) as srv:
        yield srv


@pytest.fixture(scope="module")
def bearer_server() -> Iterator[RunningServer]:
    with serve_in_thread(demo_app(token=CANARY)) as srv:
        yield srv


@pytest.fixture(scope="module")
def header_server() -> Iterator[RunningServer]:
    with serve_in_thread(demo_app(token=HEADER_CANARY, header="X-Api-Key")) as srv:
        yield srv
