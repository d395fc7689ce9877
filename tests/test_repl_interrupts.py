"""Ctrl-C in the REPL, through prompt_toolkit's real input path (pipe input, DummyOutput).

- At the token prompt it abandons that request: the next message starts afresh, and a token
  in it does not answer the old request (found by hand: it confirmed the *old* name and URL
  with the new token).
- After "yes", while the change runs, it says what state things are in, looked up afresh:
  registered with its health check interrupted, or not registered — never "(cancelled)"
  when the source was in fact registered.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from concierge.agent.models import OfflinePlanner
from concierge.agent.session import ConciergeSession
from concierge.backend import LocalBackend
from concierge.repl import Repl, TerminalIO
from tests.agent_fixtures import BEARER
from tests.mcp_servers import RunningServer, hang_app, serve_in_thread

pytestmark = pytest.mark.anyio


@pytest.fixture
def pipe() -> Iterator[Any]:
    with create_pipe_input() as inp:
        yield inp


@pytest.fixture
def hanging_server() -> Iterator[RunningServer]:
    """Accepts the health check's requests and never answers them."""
    with serve_in_thread(hang_app()) as server:
        yield server


def make_repl(backend: Any, pipe: Any, tmp_path: Path) -> tuple[Repl, io.StringIO]:
    out = io.StringIO()
    terminal = TerminalIO(input=pipe, output=DummyOutput(), stdout=out, history_file=tmp_path / "history")
    return Repl(ConciergeSession(backend, OfflinePlanner()), terminal, model_label="offline planner"), out


async def until(condition: Callable[[], Any], what: str) -> None:
    with anyio.fail_after(15):
        while not await _check(condition):
            await anyio.sleep(0.02)


async def _check(condition: Callable[[], Any]) -> bool:
    value = condition()
    if hasattr(value, "__await__"):
        value = await value
    return bool(value)


def idle_at(repl: Repl, kind: str) -> Callable[[], bool]:
    """The run has ended and the session waits for ``kind`` (the REPL is at that prompt)."""
    return lambda: (not repl.session.running and repl.session.pending is not None
                    and repl.session.pending["kind"] == kind)


async def drive(repl: Repl, steps: Callable[[], Any]) -> int:
    """Run the REPL while ``steps`` types into it; returns the REPL's exit code."""
    result: list[int] = []
    async with anyio.create_task_group() as tg:
        async def go() -> None:
            result.append(await repl.run())

        tg.start_soon(go)
        with anyio.fail_after(30):
            await steps()
    return result[0]


async def test_ctrl_c_at_the_token_prompt_abandons_that_request(
        backend: LocalBackend, bearer_server: RunningServer, pipe: Any, tmp_path: Path) -> None:
    repl, out = make_repl(backend, pipe, tmp_path)

    async def steps() -> None:
        pipe.send_text(f"add {bearer_server.url()} called Demo with a bearer token\r")
        await until(idle_at(repl, "secret"), "the token prompt")
        pipe.send_text("\x03")  # Ctrl-C at "Token (hidden):"
        await until(lambda: repl.session.pending is None and "Stopped" in out.getvalue(), "abandoned")
        pipe.send_text(f"add {bearer_server.url()} called Gamma with bearer token {BEARER}\r")
        await until(idle_at(repl, "confirmation"), "the confirmation")
        pipe.send_text("yes\r")
        await until(lambda: "registered" in out.getvalue(), "registered")
        pipe.send_text("/quit\r")

    assert await drive(repl, steps) == 0
    text = out.getvalue()
    assert "Stopped; nothing was changed." in text
    confirm = text[text.index("Confirm:"):]
    assert '"Gamma"' in confirm and '"Demo"' not in confirm  # a new flow, not the old one resumed
    (source,) = await backend.list_sources()
    assert (source.name, source.status.value, source.has_token) == ("Gamma", "active", True)
    # The model was told the old request was abandoned, not merely unanswered.
    results = [m["content"] for m in repl.session.history if m["role"] == "tool"]
    assert any('"abandoned"' in r for r in results)
    assert BEARER not in text


async def test_an_empty_token_also_abandons_the_request(
        backend: LocalBackend, bearer_server: RunningServer, pipe: Any, tmp_path: Path) -> None:
    repl, out = make_repl(backend, pipe, tmp_path)

    async def steps() -> None:
        pipe.send_text(f"add {bearer_server.url()} called Demo with a bearer token\r")
        await until(idle_at(repl, "secret"), "the token prompt")
        pipe.send_text("\r")
        await until(lambda: "Stopped" in out.getvalue(), "abandoned")
        pipe.send_text("/quit\r")

    await drive(repl, steps)
    assert repl.session.pending is None and await backend.list_sources() == []


async def test_ctrl_c_during_the_health_check_says_the_source_is_registered(
        backend: LocalBackend, hanging_server: RunningServer, pipe: Any, tmp_path: Path) -> None:
    repl, out = make_repl(backend, pipe, tmp_path)

    async def registered() -> bool:
        return bool(await backend.list_sources())

    async def steps() -> None:
        pipe.send_text(f"Add {hanging_server.url()} with no auth, call it Slow\r")
        await until(idle_at(repl, "confirmation"), "the confirmation")
        pipe.send_text("yes\r")
        await until(registered, "the row is written; the health check hangs")
        pipe.send_text("\x03")
        await until(lambda: "Interrupted" in out.getvalue(), "the interruption is reported")
        pipe.send_text("/quit\r")

    assert await drive(repl, steps) == 0
    text = out.getvalue()
    (source,) = await backend.list_sources()
    assert f'Interrupted. "Slow" is registered ({source.id}), but its health check was interrupted' in text
    assert 'Say "test Slow" to check it now.' in text
    assert "(cancelled)" not in text


class SlowToRegister:
    """The real LocalBackend, except that registering waits (so Ctrl-C lands before the row)."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.entered = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def register_source(self, body: dict[str, Any], *, sandbox: str | None = None) -> Any:
        self.entered = True
        await anyio.sleep(60)
        return await self.inner.register_source(body, sandbox=sandbox)


async def test_ctrl_c_before_the_row_is_written_says_it_was_not_registered(
        backend: LocalBackend, open_server: RunningServer, pipe: Any, tmp_path: Path) -> None:
    slow = SlowToRegister(backend)
    repl, out = make_repl(slow, pipe, tmp_path)

    async def steps() -> None:
        pipe.send_text(f"Add {open_server.url()} with no auth, call it Demo\r")
        await until(idle_at(repl, "confirmation"), "the confirmation")
        pipe.send_text("sure\r")
        await until(lambda: slow.entered, "registering")
        pipe.send_text("\x03")
        await until(lambda: "Interrupted" in out.getvalue(), "the interruption is reported")
        pipe.send_text("/quit\r")

    await drive(repl, steps)
    text = out.getvalue()
    assert 'Interrupted. "Demo" was not registered; nothing was changed.' in text
    assert "(cancelled)" not in text and await backend.list_sources() == []


async def test_an_abandoned_request_is_recorded_and_replays(backend: LocalBackend, bearer_server: RunningServer,
                                                            tmp_path: Path) -> None:
    from concierge.agent.transcript import Transcript, read_transcript, replay

    path = tmp_path / "t.jsonl"
    with Transcript(path) as transcript:
        session = ConciergeSession(backend, OfflinePlanner(), transcript=transcript)
        [e async for e in session.send(f"add {bearer_server.url()} called Demo with a bearer token")]
        closed = session.abandon()
    assert [e.type for e in closed] == ["agent_tool_result"] and closed[0].result["status"] == "abandoned"
    lines = read_transcript(path)
    assert {"kind": "input", "input": "abandon"}.items() <= lines[-2].items()
    fresh = ConciergeSession(backend, OfflinePlanner())
    events = await replay(lines, fresh, secret_value=lambda n, line: BEARER)
    assert fresh.pending is None
    assert any(e.type == "agent_tool_result" and e.result.get("status") == "abandoned" for e in events)
    assert session.abandon() == []  # nothing waits any more
