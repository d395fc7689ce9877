"""Golden conversations: their setups, how to record them, and how to replay them.

Not a test module. A scenario names the loopback MCP servers it needs, what the registry
holds before the conversation starts, and the person's side of the conversation (messages,
yes/no answers, credentials by fixture name). Recording runs it with the offline planner and
writes ``transcripts/<name>.jsonl`` with the session's own `Transcript` recorder::

    .venv/bin/python -m tests.transcript_fixtures            # re-record every scenario
    .venv/bin/python -m tests.transcript_fixtures revoke_disambiguation

Replaying (``tests/test_transcripts.py``) takes the person's inputs from the *file*, rebuilds
the setup named in its header, runs a fresh session and compares every event, normalized.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from concierge.agent.models.offline import OfflinePlanner
from concierge.agent.session import ConciergeSession
from concierge.agent.transcript import Normalizer, Transcript
from concierge.backend import LocalBackend
from tests.mcp_servers import closed_port_url, demo_app, serve_in_thread

__all__ = [
    "SCENARIOS",
    "Scenario",
    "TOKENS",
    "TRANSCRIPTS",
    "normalizer_for",
    "record",
    "servers_for",
    "setup_backend",
]

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "transcripts"

TOKENS = {
    "bearer": "canary-BEARER-3f9c2d7a41e8",
    "header": "canary-HEADER-8b1e5c0d92f4",
    "wrong": "canary-WRONG-5a7d3e1f06b2",
}
"""Fixture credentials, referred to by name in scenarios and transcript headers (never by value)."""

Say = tuple[str, str]  # ("say", text with {server} placeholders) | ("confirm", "yes"|"no") | ("secret", name)
Setup = Callable[[LocalBackend, dict[str, str]], Awaitable[None]]


async def _nothing(backend: LocalBackend, urls: dict[str, str]) -> None:
    return None


@dataclass(frozen=True)
class Scenario:
    name: str
    servers: tuple[str, ...]
    steps: tuple[Say, ...]
    setup: Setup = _nothing
    about: str = ""


# Servers a scenario may ask for, by name.
_SERVERS: dict[str, Callable[[], Any] | None] = {
    "open": lambda: demo_app(),
    "bearer": lambda: demo_app(token=TOKENS["bearer"]),
    "header": lambda: demo_app(token=TOKENS["header"], header="X-Api-Key"),
    "closed": None,  # an address where nothing listens
}


@contextlib.contextmanager
def servers_for(names: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Start the named servers; yields name -> MCP URL."""
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        for name in names:
            factory = _SERVERS[name]
            if factory is None:
                urls[name] = closed_port_url()
            else:
                urls[name] = stack.enter_context(serve_in_thread(factory())).url()
        yield urls


async def _register(backend: LocalBackend, name: str, url: str, *, namespace: str,
                    token: str | None = None, sandbox: str | None = None) -> None:
    body: dict[str, Any] = {"name": name, "base_url": url, "app_namespace": namespace,
                            "auth_kind": "bearer" if token else "none"}
    if token:
        body["token"] = token
    await backend.register_source(body, sandbox=sandbox)


async def _one_source(backend: LocalBackend, urls: dict[str, str]) -> None:
    await _register(backend, "Acme docs", urls["open"], namespace="acme")


async def _two_acme(backend: LocalBackend, urls: dict[str, str]) -> None:
    await _register(backend, "Acme prod", urls["open"], namespace="acme_prod")
    await _register(backend, "Acme staging", urls["open"], namespace="acme_staging")


async def _wrong_token(backend: LocalBackend, urls: dict[str, str]) -> None:
    await _register(backend, "Acme docs", urls["bearer"], namespace="acme", token=TOKENS["wrong"])


async def _plain_acme(backend: LocalBackend, urls: dict[str, str]) -> None:
    await _register(backend, "acme", urls["open"], namespace="acme")


async def _two_sandboxes(backend: LocalBackend, urls: dict[str, str]) -> None:
    await backend.create_sandbox("staging")


async def _agent(backend: LocalBackend, urls: dict[str, str]) -> None:
    await _register(backend, "Acme docs", urls["open"], namespace="acme")
    await _register(backend, "Legacy", urls["closed"], namespace="legacy")
    await backend.create_agent({"slug": "support-bot", "name": "Support bot",
                                "tool_allowlist": ["acme_*", "legacy_*", "billing_lookup"]})
    await backend.create_agent({"slug": "sales-bot", "name": "Sales bot"})


async def _mixed(backend: LocalBackend, urls: dict[str, str]) -> None:
    await _register(backend, "Acme docs", urls["open"], namespace="acme")
    await _register(backend, "Legacy", urls["closed"], namespace="legacy")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("register_bearer", ("bearer",), (
        ("say", "Add my MCP server at {bearer} — it's authenticated with a bearer token."),
        ("say", "Acme docs"),
        ("secret", "bearer"),
        ("confirm", "yes"),
    ), about="bearer token asked out of band, after one question (the label)"),
    Scenario("register_header", ("header",), (
        ("say", "I want to connect a new MCP server"),
        ("say", "{header}"),
        ("say", "a custom header"),
        ("say", "X-Api-Key"),
        ("say", "ok"),
        ("say", "default"),
        ("secret", "header"),
        ("confirm", "yes"),
    ), setup=_two_sandboxes, about="every slot asked one at a time, two sandboxes offered"),
    Scenario("register_no_auth", ("open",), (
        ("say", "Register {open} with no auth and call it Demo"),
        ("confirm", "yes"),
    ), about="everything in the first message: one confirmation, done"),
    Scenario("declined_confirmation", ("open",), (
        ("say", "Add {open} with no auth, call it Scratch"),
        ("confirm", "no"),
        ("say", "list my sources"),
    ), about="the person says no: nothing is registered"),
    Scenario("http_non_local", (), (
        ("say", "Add my MCP server at http://mcp.acme.example/mcp"),
        ("say", "never mind"),
    ), about="plain http to a non-local host is explained before anything runs"),
    Scenario("failed_health_check", ("closed",), (
        ("say", "Add {closed} with no auth, call it Broken"),
        ("confirm", "yes"),
    ), about="the server is down: what failed and what to try"),
    Scenario("test_health", ("open",), (
        ("say", "Test the health of my custom MCP source"),
    ), setup=_one_source, about="one source, so no question"),
    Scenario("revoke_disambiguation", ("open",), (
        ("say", "Revoke my custom MCP source"),
        ("say", "the staging one"),
        ("confirm", "yes"),
    ), setup=_two_acme, about="two candidates: the concierge asks which"),
    Scenario("rotate_token", ("bearer",), (
        ("say", "Rotate the token for Acme docs"),
        ("secret", "bearer"),
        ("confirm", "yes"),
    ), setup=_wrong_token, about="a 401 source gets a new token (out of band) and is healthy again"),
    Scenario("rename_rate_cap", ("open",), (
        ("say", "Rename acme to Acme prod and set its rate cap to 30"),
        ("confirm", "yes"),
    ), setup=_plain_acme, about="two fields in one update"),
    Scenario("agent_tools", ("open", "closed"), (
        ("say", "What tools does my support agent have right now?"),
    ), setup=_agent, about="always answered from the live catalog, with its trace"),
    Scenario("list_sources", ("open", "closed"), (
        ("say", "List my sources"),
    ), setup=_mixed, about="a healthy and a failing source"),
    Scenario("namespace_taken", ("open",), (
        ("say", "Add {open} with no auth, call it acme, namespace acme"),
        ("say", "acme2"),
        ("confirm", "yes"),
    ), setup=_plain_acme, about="a taken namespace is explained and asked for again, before any confirmation"),
    Scenario("help_and_unknown", (), (
        ("say", "help"),
        ("say", "make me a sandwich"),
    ), about="help, and a plain answer to what it cannot understand"),
)}


async def setup_backend(name: str, urls: dict[str, str]) -> LocalBackend:
    """A LocalBackend on ``CONCIERGE_HOME`` prepared for scenario ``name``."""
    backend = LocalBackend.open()
    await SCENARIOS[name].setup(backend, urls)
    return backend


async def _record(scenario: Scenario, directory: Path) -> Path:
    path = directory / f"{scenario.name}.jsonl"
    with servers_for(scenario.servers) as urls:
        backend = await setup_backend(scenario.name, urls)
        secrets = [value for kind, value in scenario.steps if kind == "secret"]
        meta = {"scenario": scenario.name, "about": scenario.about, "servers": urls, "secrets": secrets}
        with Transcript(path, meta=meta) as transcript:
            session = ConciergeSession(backend, OfflinePlanner(), transcript=transcript)
            try:
                for kind, value in scenario.steps:
                    if kind == "say":
                        stream = session.send(value.format(**urls))
                    elif kind == "confirm":
                        session.confirm(session.pending.id, value == "yes")
                        stream = session.resume()
                    else:
                        session.provide_secret(session.pending.id, TOKENS[value])
                        stream = session.resume()
                    async for _ in stream:
                        pass
            finally:
                await backend.aclose()
    return path


def record(names: list[str] | None = None, directory: Path = TRANSCRIPTS) -> list[Path]:
    """Record the named scenarios (all by default) into ``directory``, each in a fresh home."""
    import os
    import tempfile

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or list(SCENARIOS):
        with tempfile.TemporaryDirectory() as home:
            old = os.environ.get("CONCIERGE_HOME")
            os.environ["CONCIERGE_HOME"] = home
            os.environ.setdefault("CONCIERGE_MASTER_KEY", "0123456789abcdef" * 4)
            try:
                paths.append(anyio.run(_record, SCENARIOS[name], directory))
            finally:
                if old is None:
                    os.environ.pop("CONCIERGE_HOME", None)
                else:
                    os.environ["CONCIERGE_HOME"] = old
    return paths


def normalizer_for(urls: dict[str, str]) -> Normalizer:
    """A normalizer that names this run's server URLs (and their bare host:port)."""
    replacements: dict[str, str] = {}
    for name, url in urls.items():
        replacements[url] = f"<server:{name}>"
        base = url.rsplit("/", 1)[0]
        replacements[base] = f"<server-base:{name}>"
    return Normalizer(replacements)


if __name__ == "__main__":  # pragma: no cover - a developer tool
    for written in record(sys.argv[1:] or None):
        print(written)
