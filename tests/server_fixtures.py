"""Fixtures for the HTTP service: a real `concierge serve` app under uvicorn on loopback, over a
real registry (``api_server``: on SQLite and on PostgreSQL in turn), with API keys made through
the real `KeyStore`.

Import explicitly: ``from tests.server_fixtures import ApiServer, api_server, ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from concierge import config
from concierge.backend import LocalBackend
from concierge.registry import Registry
from concierge.server import build_app
from concierge.server.auth import CreatedKey, KeyStore
from tests.conftest import TEST_MASTER_KEY
from tests.mcp_servers import RunningServer, demo_server_fixture
from tests.pg_fixtures import ENGINES, PgServer

__all__ = [
    "BEARER_CANARY",
    "ApiServer",
    "OpenApiChecker",
    "api_server",
    "demo_mcp",
    "open_mcp",
    "start_api_server",
]

BEARER_CANARY = "canary-SRV-TOKEN-4d2f8b19e7"
"""The demo MCP server's bearer token: it must never appear in an API response."""


@dataclass
class ApiServer:
    """A running service: ``url``, the registry ``home``, the key store, and clients."""

    server: RunningServer
    home: Path
    keys: KeyStore
    registry: Registry
    engine: str = "sqlite"
    clients: list[httpx2.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url_base

    @property
    def services(self) -> Any:
        """The running app's `Services` (its webhooks, chat service, keys)."""
        assert self.server._server is not None, "server is not running"
        return self.server._server.config.app.state.services

    def key(self, role: str = "owner", sandbox: str | None = None, label: str | None = None) -> CreatedKey:
        sandbox_id = self.registry.get_sandbox(sandbox).id if sandbox else None
        return self.keys.create(role=role, sandbox_id=sandbox_id, label=label)

    def client(self, key: CreatedKey | str | None = None, **kwargs: Any) -> httpx2.Client:
        headers = dict(kwargs.pop("headers", {}) or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key.key if isinstance(key, CreatedKey) else key}"
        client = httpx2.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30),
                               **kwargs)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()


def start_api_server(home: Path, *, allow_anonymous_loopback: bool = False,
                     model_factory: Callable[[], Any] | None = None, database_url: str | None = None,
                     **kwargs: Any) -> tuple[RunningServer, Registry]:
    """Serve ``build_app`` over a registry in ``home`` (on ``database_url`` when given, else as
    the environment says); every (re)start opens the database afresh, as a new process would.
    Returns the server and a registry for the test's own use."""
    settings = config.load({"database_url": database_url}) if database_url else None

    def factory():  # type: ignore[no-untyped-def]
        return build_app(backend_factory=lambda: LocalBackend.open(str(home), settings=settings),
                         allow_anonymous_loopback=allow_anonymous_loopback,
                         model_factory=model_factory, **kwargs)

    home.mkdir(parents=True, exist_ok=True)
    # The env var may or may not be set when a module-scoped server (re)starts; the key file
    # holds the same key, so every connection to this database decrypts the same vault.
    (home / "master.key").write_text(TEST_MASTER_KEY + "\n")
    registry = Registry.open(home, settings=settings)  # the test's own connection to the same database
    server = RunningServer(None, factory=factory, host="127.0.0.1", port=None)
    server.start()
    return server, registry


@pytest.fixture(scope="module", params=ENGINES)
def api_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A service that requires keys (no anonymous access), shared by a module's tests; once
    on a SQLite file, once on a PostgreSQL database of its own."""
    home = tmp_path_factory.mktemp("api-home")
    pg: PgServer | None = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    url = pg.create_database("api") if pg is not None else None
    server, registry = start_api_server(home, database_url=url)
    api = ApiServer(server=server, home=home, keys=KeyStore(registry.store), registry=registry, engine=request.param)
    try:
        yield api
    finally:
        api.close()
        server.stop()
        registry.close()
        if pg is not None and url is not None:
            pg.drop_database(url)


demo_mcp = demo_server_fixture(token=BEARER_CANARY)  # the demo MCP server, gated by BEARER_CANARY
open_mcp = demo_server_fixture()


class OpenApiChecker:
    """Checks live answers against the OpenAPI document the server publishes, and records
    which documented operations a test exercised."""

    def __init__(self, doc: dict[str, Any]) -> None:
        import re

        self.doc = doc
        self.hit: set[tuple[str, str]] = set()
        self._paths = [(re.compile("^" + re.sub(r"{[^/}]+}", "[^/]+", path) + "$"), path)
                       for path in sorted(doc["paths"], key=lambda p: (p.count("{"), p))]

    def template(self, path: str) -> str | None:
        for regex, template in self._paths:
            if regex.match(path):
                return template
        return None

    def operations(self) -> set[tuple[str, str]]:
        return {(m.upper(), p) for p, item in self.doc["paths"].items() for m in item}

    def check(self, response: httpx2.Response) -> None:
        """The answer's status is documented for its operation and its JSON body fits the schema."""
        from jsonschema import Draft202012Validator

        method, path = response.request.method, response.request.url.path
        template = self.template(path)
        assert template is not None, f"{method} {path} is not documented"
        self.hit.add((method, template))
        op = self.doc["paths"][template].get(method.lower())
        assert op is not None, f"{method} {template} is not documented"
        answer = op["responses"].get(str(response.status_code))
        assert answer is not None, (f"{method} {template} answered {response.status_code}, which is not "
                                    f"documented ({sorted(op['responses'])}): {response.text[:300]}")
        content = answer.get("content", {})
        if "application/json" in content and response.headers.get("content-type", "").startswith(
                "application/json"):
            schema = {**content["application/json"]["schema"], "components": self.doc["components"]}
            Draft202012Validator(schema).validate(response.json())
