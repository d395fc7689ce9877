"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.pg_fixtures",
    "tests.engine_fixtures",
    "tests.registry_fixtures",
    "tests.server_fixtures",
    "tests.settings_fixtures",
]
"""Fixture modules, registered for every test (no test imports a fixture by name)."""

TEST_MASTER_KEY = "0123456789abcdef" * 4
"""A fixed 64-hex master key for tests (never used outside them)."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_concierge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point CONCIERGE_HOME at a temp dir and fix the master key, so tests never touch real data."""
    home = tmp_path / "concierge-home"
    home.mkdir()
    monkeypatch.setenv("CONCIERGE_HOME", str(home))
    monkeypatch.setenv("CONCIERGE_MASTER_KEY", TEST_MASTER_KEY)
    return home
