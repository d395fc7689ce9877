"""A credential pasted at the REPL prompt is never echoed (shown as ``*`` while typed and after
Enter), never written to the history file, and everything the REPL writes under the data
directory is owner-only (0600) even under umask 022 (found by hand: "with bearer token
demo-token-123" stayed on screen and went to a 0644 history file in clear)."""

from __future__ import annotations

import io
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from prompt_toolkit.output.vt100 import Vt100_Output

from concierge import config
from concierge.agent.models import OfflinePlanner
from concierge.agent.session import ConciergeSession
from concierge.agent.transcript import Transcript
from concierge.backend import LocalBackend
from concierge.cli import main
from concierge.registry import Registry
from concierge.repl import Repl, TerminalIO, mask_secrets
from tests.agent_fixtures import BEARER
from tests.mcp_servers import RunningServer

CANARY = BEARER  # the demo server's token: a canary that must never be shown or stored in clear
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0-2]|\x1b[=>]|\r")


@pytest.fixture
def pipe() -> Iterator[Any]:
    with create_pipe_input() as inp:
        yield inp


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def screen(raw: io.StringIO) -> str:
    return ANSI.sub("", raw.getvalue())


@pytest.mark.anyio
async def test_a_pasted_token_is_masked_on_screen_and_in_the_history(
        backend: LocalBackend, bearer_server: RunningServer, pipe: Any, tmp_path: Path) -> None:
    raw = io.StringIO()  # what a real terminal would receive, escape codes and all
    terminal_out = Vt100_Output(raw, lambda: Size(rows=40, columns=200), term="xterm")
    answers = io.StringIO()
    terminal = TerminalIO(input=pipe, output=terminal_out, stdout=answers, history_file=tmp_path / "history")
    repl = Repl(ConciergeSession(backend, OfflinePlanner()), terminal, model_label="offline planner")
    pipe.send_text(f"add {bearer_server.url()} called Demo with bearer token {CANARY}\r")
    pipe.send_text("yes\r/quit\r")
    with anyio.fail_after(20):
        assert await repl.run() == 0
    shown = screen(raw)
    assert "add " in shown and "called Demo with bearer token " in shown  # the line was drawn
    assert "*" * len(CANARY) in shown
    assert CANARY not in shown + answers.getvalue()
    assert "registered" in answers.getvalue()
    history = (tmp_path / "history").read_text()
    assert "with bearer token [secret]" in history and CANARY not in history
    (source,) = await backend.list_sources()
    assert source.status.value == "active"


@pytest.mark.anyio
async def test_the_mask_follows_a_secret_typed_key_by_key(backend: LocalBackend, pipe: Any,
                                                          tmp_path: Path) -> None:
    """While typing "password: hunter2", each character after the cue is masked at once."""
    raw = io.StringIO()
    terminal = TerminalIO(input=pipe, output=Vt100_Output(raw, lambda: Size(rows=20, columns=120), term="xterm"),
                          stdout=io.StringIO(), history_file=tmp_path / "history")
    for ch in "my password: hunter2":
        pipe.send_text(ch)
    pipe.send_text("\r")
    with anyio.fail_after(10):
        line = await terminal.prompt("> ")
    assert line == "my password: hunter2"  # the REPL gets what was typed; only the screen is masked
    shown = screen(raw)
    assert "hunter" not in shown and "my password: " in shown


def test_mask_secrets_for_the_history() -> None:
    assert mask_secrets("my key is abc, rotate the token for Demo") == "my key is [secret], rotate the token for Demo"


@pytest.mark.anyio
async def test_the_history_file_is_created_owner_only(umask_022: None, pipe: Any, tmp_path: Path) -> None:
    fresh, old = tmp_path / "fresh_history", tmp_path / "old_history"
    old.write_text("")
    os.chmod(old, 0o644)
    for path in (fresh, old):
        terminal = TerminalIO(input=pipe, output=DummyOutput(), stdout=io.StringIO(), history_file=path)
        pipe.send_text("hello\r")
        with anyio.fail_after(10):
            await terminal.prompt("> ")
        assert mode(path) == 0o600, path
        assert "hello" in path.read_text()


def test_a_transcript_file_is_owner_only(umask_022: None, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with Transcript(path):
        pass
    assert mode(path) == 0o600
    os.chmod(path, 0o644)
    with Transcript(path):
        pass
    assert mode(path) == 0o600


def test_secure_home_tightens_files_left_loose_by_an_older_version(umask_022: None, tmp_path: Path) -> None:
    home = tmp_path / "home"
    Registry.open(home).close()
    for p in home.iterdir():  # as an older version (or another library) left them
        os.chmod(p, 0o644)
    os.chmod(home, 0o755)
    again = Registry.open(home)  # opening goes through config.data_dir -> secure_home
    try:
        again.create_sandbox("again")
        files = {p.name: mode(p) for p in home.iterdir()}
        assert {"concierge.db", "concierge.db-wal"} <= set(files)
        assert set(files.values()) == {0o600}, files
        assert mode(home) == 0o700
    finally:
        again.close()


def test_secure_home_touches_only_concierges_own_files(umask_022: None, tmp_path: Path) -> None:
    """CONCIERGE_HOME may hold other files: someone else's script keeps its mode."""
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "run.sh", 0o755)
    (tmp_path / "chat_history").write_text("")
    os.chmod(tmp_path, 0o755)
    config.secure_home(tmp_path)
    assert mode(tmp_path / "run.sh") == 0o755 and mode(tmp_path / "chat_history") == 0o600
    assert mode(tmp_path) == 0o700  # the data directory is private (issue #13)


def test_concierge_chat_keeps_every_file_under_the_data_directory_owner_only(
        umask_022: None, bearer_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `concierge chat` on a (pipe) terminal, umask 022: history, database, key: 0600."""
    monkeypatch.setattr("concierge.repl._dumb_terminal", lambda: False)
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # never read: prompt_toolkit has the pipe
    home = config.data_dir()
    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        inp.send_text(f"add {bearer_server.url()} called Demo with bearer token {CANARY}\ryes\r/quit\r")
        assert main(["chat", "--offline"]) == 0
    files = {p.name: mode(p) for p in home.iterdir() if p.is_file()}
    assert "chat_history" in files and "concierge.db" in files
    assert set(files.values()) == {0o600}, files
    assert CANARY not in (home / "chat_history").read_text()
