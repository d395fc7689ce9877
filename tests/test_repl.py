"""The REPL through prompt_toolkit's real input path: pipe input, DummyOutput, no patched input()."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from concierge.agent.models import FunctionModel, ModelResponse, OfflinePlanner, ScriptedModel
from concierge.agent.session import ConciergeSession
from concierge.backend import LocalBackend
from concierge.repl import Repl, TerminalIO
from tests.agent_fixtures import BEARER
from tests.mcp_servers import RunningServer

pytestmark = pytest.mark.anyio


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def pipe() -> Iterator[Any]:
    with create_pipe_input() as inp:
        yield inp


def make_repl(backend: LocalBackend, model: Any, pipe: Any, tmp_path: Path, **io_options: Any) -> tuple[Repl, io.StringIO]:
    out = io.StringIO()
    terminal = TerminalIO(input=pipe, output=DummyOutput(), stdout=out,
                          history_file=tmp_path / "history", **io_options)
    return Repl(ConciergeSession(backend, model), terminal, model_label="offline planner"), out


async def run(repl: Repl, pipe: Any, keys: str) -> int:
    pipe.send_text(keys)
    with anyio.fail_after(20):
        return await repl.run()


async def test_confirmation_yes_registers(backend: LocalBackend, open_server: RunningServer, pipe: Any,
                                          tmp_path: Path) -> None:
    repl, out = make_repl(backend, OfflinePlanner(), pipe, tmp_path)
    assert await run(repl, pipe, f"Add {open_server.url()} with no auth, call it Demo\ry\r\x04") == 0
    text = out.getvalue()
    assert text.startswith("Concierge · offline planner · /help for help")
    assert 'Confirm: Register the MCP server "Demo"' in text
    assert 'Done — "Demo" is registered' in text
    assert [s.name for s in await backend.list_sources()] == ["Demo"]
    assert "\x1b[" not in text  # not a terminal: no colour


async def test_confirmation_no_changes_nothing(backend: LocalBackend, open_server: RunningServer, pipe: Any,
                                               tmp_path: Path) -> None:
    repl, out = make_repl(backend, OfflinePlanner(), pipe, tmp_path)
    await run(repl, pipe, f"Add {open_server.url()} with no auth, call it Demo\rn\r\x04")
    text = out.getvalue()
    # One decline message (the concierge's), not the REPL's "Not done." on top of it.
    assert text.count("othing was changed") == 1 and "Not done" not in text
    assert await backend.list_sources() == []


async def test_secret_is_read_hidden_and_never_stored_or_shown(
        backend: LocalBackend, bearer_server: RunningServer, pipe: Any, tmp_path: Path) -> None:
    repl, out = make_repl(backend, OfflinePlanner(), pipe, tmp_path)
    keys = f"Add {bearer_server.url()} with a bearer token, call it Demo\r{BEARER}\ry\r/quit\r"
    assert await run(repl, pipe, keys) == 0
    text = out.getvalue()
    assert 'I need the bearer token for "Demo"' in text and "hidden" in text
    assert "registered" in text and BEARER not in text
    history = (tmp_path / "history").read_text()
    assert "call it Demo" in history and BEARER not in history  # the secret prompt has no history file
    view = (await backend.list_sources())[0]
    assert view.has_token and view.status.value == "active"


async def test_ctrl_c_cancels_the_turn_not_the_repl(backend: LocalBackend, pipe: Any, tmp_path: Path) -> None:
    entered = anyio.Event()

    async def slow(messages: list[dict[str, Any]], tools: Any) -> ModelResponse | str:
        if messages[-1]["content"] == "hello":
            entered.set()
            await anyio.sleep(30)
        return "Still here."

    repl, out = make_repl(backend, FunctionModel(slow), pipe, tmp_path)
    async with anyio.create_task_group() as tg:
        result: list[int] = []

        async def go() -> None:
            result.append(await repl.run())

        tg.start_soon(go)
        pipe.send_text("hello\r")
        with anyio.fail_after(10):
            await entered.wait()
        pipe.send_text("\x03")
        pipe.send_text("are you there?\r/quit\r")
    assert result == [0]
    text = out.getvalue()
    assert "(cancelled)" in text and text.index("(cancelled)") < text.index("Still here.")


async def test_slash_commands(backend: LocalBackend, open_server: RunningServer, pipe: Any,
                              tmp_path: Path) -> None:
    await backend.create_sandbox("staging")
    await backend.register_source({"name": "Acme", "base_url": open_server.url(), "auth_kind": "none",
                                   "app_namespace": "acme"}, sandbox="staging")
    model = ScriptedModel([])
    repl, out = make_repl(backend, model, pipe, tmp_path)
    keys = "/help\r/sources\r/sandbox\r/sandbox staging\r/sources\r/tools\r/model\r/reset\r/nope\r/sandbox nowhere\r/quit\r"
    await run(repl, pipe, keys)
    text = out.getvalue()
    for expected in ("/sources — list", "/tools [agent]", "Ctrl-C cancels", "No sources yet.",
                     "Sandboxes: default (current), staging", "Now working in sandbox staging.",
                     "Acme (ds_", "this sandbox: 4 tools", "acme_search_docs", "Model: offline planner",
                     "Starting over.", "Unknown command /nope", "error: no sandbox 'nowhere'"):
        assert expected in text, expected
    assert model.calls == []  # slash commands never call the model
    assert repl.session.sandbox == "staging"


async def test_no_color_is_honoured(monkeypatch: pytest.MonkeyPatch, pipe: Any) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert TerminalIO(input=pipe, output=DummyOutput(), stdout=TtyBuffer()).color is True
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = TerminalIO(input=pipe, output=DummyOutput(), stdout=TtyBuffer())
    assert terminal.color is False and terminal.style("x", "red") == "x"


async def test_dumb_terminal_gets_plain_input(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr(sys, "stdin", io.StringIO("list my sources\n/quit\n"))
    out = io.StringIO()
    terminal = TerminalIO(stdout=out)
    assert terminal.plain is True and terminal.color is False
    repl = Repl(ConciergeSession(backend, OfflinePlanner()), terminal, model_label="offline planner")
    with anyio.fail_after(20):
        assert await repl.run() == 0
    assert "no MCP sources" in out.getvalue()


async def test_history_persists_and_ctrl_r_searches_it(backend: LocalBackend, pipe: Any,
                                                       tmp_path: Path) -> None:
    repl, out = make_repl(backend, OfflinePlanner(), pipe, tmp_path)
    await run(repl, pipe, "list my sources\rhelp\r\x04")
    with create_pipe_input() as again:
        repl, out = make_repl(backend, OfflinePlanner(), again, tmp_path)  # a new REPL, same history file
        await run(repl, again, "\x12sour\r\r\x04")  # Ctrl-R "sour", Enter ends the search, Enter sends
    assert 'You have no MCP sources in sandbox "default" yet.' in out.getvalue()


async def test_a_pasted_token_never_reaches_the_history_file(
        backend: LocalBackend, bearer_server: RunningServer, pipe: Any, tmp_path: Path) -> None:
    """Found by hand: the history file stored the line as typed, pasted token included."""
    repl, out = make_repl(backend, OfflinePlanner(), pipe, tmp_path)
    keys = f"Add {bearer_server.url()} with bearer token {BEARER}, call it Demo\ry\r/quit\r"
    assert await run(repl, pipe, keys) == 0
    assert "registered" in out.getvalue()
    history = (tmp_path / "history").read_text()
    assert "with bearer token [secret], call it Demo" in history
    assert BEARER not in history and BEARER not in out.getvalue()
    assert (await backend.list_sources())[0].status.value == "active"
