"""Run a test module on both engines: ``pytestmark = pytest.mark.usefixtures("engine")``.

Each test of such a module runs twice: on the SQLite file in its home (as today) and on a
fresh PostgreSQL database of its own (``CONCIERGE_DATABASE_URL`` set for the test, so every
`Registry.open` in it, and every ``concierge`` subprocess it starts, uses that database). A
test about the SQLite file itself (its mode, its WAL) is marked ``@pytest.mark.sqlite_only``
and runs once, on SQLite. Registered for every test by ``pytest_plugins`` in conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.pg_fixtures import ENGINES

__all__ = ["DATABASE_URL_ENV", "engine"]

DATABASE_URL_ENV = "CONCIERGE_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: a test about the SQLite file itself (runs on SQLite only)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("engine", ["sqlite"] if only_sqlite else list(ENGINES), indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The engine this test runs on ("sqlite" or "postgresql")."""
    name = getattr(request, "param", "sqlite")
    if name == "postgresql":
        monkeypatch.setenv(DATABASE_URL_ENV, request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    return name
