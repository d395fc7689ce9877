"""Fixtures for registry tests: a real Registry on a tmp SQLite file and real demo MCP servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from concierge.registry import Registry
from tests.mcp_servers import demo_server_fixture

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
