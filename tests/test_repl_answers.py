"""Typed answers to "Go ahead?" through prompt_toolkit's pipe input: clear ones are taken (found by
hand: "sure" and "yes please" were silently taken as no), other words are the next message, never
a no, and a decline gets one message, not two."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from concierge.agent.models import OfflinePlanner
from concierge.agent.session import ConciergeSession
from concierge.backend import LocalBackend
from concierge.repl import Repl, TerminalIO, read_yes_no
from tests.mcp_servers import RunningServer

pytestmark = pytest.mark.anyio

ASK_AGAIN = 'Please answer "yes" or "no"'


@pytest.fixture
def pipe() -> Iterator[Any]:
    with create_pipe_input() as inp:
        yield inp


async def talk(backend: LocalBackend, pipe: Any, tmp_path: Path, keys: str) -> str:
    out = io.StringIO()
    terminal = TerminalIO(input=pipe, output=DummyOutput(), stdout=out, history_file=tmp_path / "history")
    repl = Repl(ConciergeSession(backend, OfflinePlanner()), terminal, model_label="offline planner")
    pipe.send_text(keys)
    with anyio.fail_after(20):
        assert await repl.run() == 0
    return out.getvalue()


@pytest.mark.parametrize("answer", ["sure", "yes please", "ok do it", "Yes!", "go for it", "yeah, go ahead"])
async def test_a_clear_yes_in_words_registers(backend: LocalBackend, open_server: RunningServer, pipe: Any,
                                              tmp_path: Path, answer: str) -> None:
    text = await talk(backend, pipe, tmp_path, f"Add {open_server.url()} with no auth, call it Demo\r{answer}\r\x04")
    assert 'Done — "Demo" is registered' in text and ASK_AGAIN not in text
    assert [s.name for s in await backend.list_sources()] == ["Demo"]


@pytest.mark.parametrize("answer", ["nah", "no thanks", "nope", "not now", "don't"])
async def test_a_clear_no_in_words_declines_with_one_message(
        backend: LocalBackend, open_server: RunningServer, pipe: Any, tmp_path: Path, answer: str) -> None:
    text = await talk(backend, pipe, tmp_path, f"Add {open_server.url()} with no auth, call it Demo\r{answer}\r\x04")
    assert text.count("othing was changed") == 1 and "Not done" not in text
    assert await backend.list_sources() == []


async def test_an_unclear_answer_is_never_taken_as_no(
        backend: LocalBackend, open_server: RunningServer, pipe: Any, tmp_path: Path) -> None:
    """An empty line is asked again; words that are not a clear yes or no go to the conversation
    as the next message, as in the web chat (found by hand: "yes but call it Prod" was asked
    again and the next yes registered "Demo"; "hmm, actually leave it" could not be said)."""
    keys = (f"Add {open_server.url()} with no auth, call it Demo\r"
            "\ryes but call it Prod\rmaybe\ryes\ryes please\r\x04")
    text = await talk(backend, pipe, tmp_path, keys)
    assert text.count(ASK_AGAIN) == 1  # the empty line
    assert 'Register the MCP server "Prod"' in text  # the correction was taken
    assert 'Nothing was changed. Say "yes" if you still want me to register it' in text  # "maybe"
    assert 'Done — "Prod" is registered' in text
    assert [s.name for s in await backend.list_sources()] == ["Prod"]


async def test_a_new_request_at_the_question_drops_the_change_and_is_answered(
        backend: LocalBackend, open_server: RunningServer, pipe: Any, tmp_path: Path) -> None:
    keys = f"Add {open_server.url()} with no auth, call it Demo\rlist my sources\r\x04"
    text = await talk(backend, pipe, tmp_path, keys)
    assert "You have no MCP sources" in text and await backend.list_sources() == []


async def test_ctrl_d_at_the_question_means_no(backend: LocalBackend, open_server: RunningServer, pipe: Any,
                                               tmp_path: Path) -> None:
    text = await talk(backend, pipe, tmp_path, f"Add {open_server.url()} with no auth, call it Demo\r\x04\x04")
    assert text.count("othing was changed") == 1
    assert await backend.list_sources() == []


@pytest.mark.parametrize(("text", "verdict"), [
    ("y", True), ("YES", True), ("sure", True), ("yes please", True), ("ok do it", True), ("okay.", True),
    ("go ahead", True), ("do it", True), ("confirm", True), ("yep, thanks", True), ("lgtm", True),
    ("n", False), ("no", False), ("nah", False), ("nope", False), ("no thanks", False), ("not now", False),
    ("cancel", False), ("don't", False), ("no, not yet", False), ("never mind", False),
    ("", None), ("maybe", None), ("yes but rename it", None), ("no wait, yes", None), ("what would it do?", None),
    ("not sure", None), ("hmm", None), ("rename it to Prod", None),
    # a no that goes on to correct something is a correction, not a plain no
    ("no wait, call it Bar", None), ("no, it should be called Bar", None), ("no, use port 9000", None),
    ("no, stop", False), ("nope, cancel that", False),
])
def test_read_yes_no(text: str, verdict: bool | None) -> None:
    assert read_yes_no(text) is verdict
