"""The terminal REPL: ``concierge`` / ``concierge chat``.

All terminal I/O goes through `TerminalIO` (prompt_toolkit for input; plain writes for
output), so tests drive the real prompt_toolkit path with ``create_pipe_input()`` and
``DummyOutput()``. `Repl` is a plain loop around one `ConciergeSession`: it renders the
session's events and answers its confirmation and credential requests; it has no loop of
its own.

Keys: Enter sends; Ctrl-R searches the history (kept in ``$CONCIERGE_HOME/chat_history``);
Ctrl-C cancels the current turn (or clears the line); Ctrl-D exits. Credentials are read
on a separate prompt with in-memory history and hidden input, so they never reach the
history file. ``NO_COLOR`` turns colour off; a dumb terminal (``TERM=dumb``) or a
non-terminal stdin gets plain line input.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import anyio

from concierge.agent.events import (
    STOP_AWAITING_CONFIRMATION,
    STOP_AWAITING_SECRET,
    AgentError,
    AgentFinish,
    AgentTextDelta,
    AgentToolCall,
    AgentToolResult,
    ConfirmationRequired,
    Event,
    SecretRequired,
)
from concierge.agent.secrets import find_secrets
from concierge.agent.session import ConciergeSession
from concierge.errors import ConciergeError

__all__ = ["Repl", "TerminalIO", "history_path"]

_STYLES = {"dim": "\x1b[2m", "bold": "\x1b[1m", "red": "\x1b[31m", "green": "\x1b[32m",
           "yellow": "\x1b[33m", "reset": "\x1b[0m"}


def _redacting_file_history(base: type) -> type:
    """A FileHistory that never writes a pasted credential: each is replaced by ``[secret]``.

    The session redacts messages before the model sees them, but prompt_toolkit stores the
    line as typed; without this, "the new token is abc..." would sit in the history file.
    """

    class RedactingFileHistory(base):  # type: ignore[misc, valid-type]
        def append_string(self, string: str) -> None:
            super().append_string(mask_secrets(string))

    return RedactingFileHistory


def mask_secrets(text: str) -> str:
    spans = find_secrets(text)
    for start, end in reversed(spans):
        text = text[:start] + "[secret]" + text[end:]
    return text


def history_path() -> Path:
    from concierge import config

    return config.private_file(config.data_dir() / "chat_history")  # 0600, never under the umask


def _dumb_terminal() -> bool:
    return os.environ.get("TERM", "") == "dumb" or not sys.stdin.isatty()


class TerminalIO:
    """Input through prompt_toolkit (or plain lines on a dumb terminal); output as text.

    ``input``/``output`` go to prompt_toolkit (``None`` = the real terminal); ``stdout`` is
    where answers are written. ``plain`` forces line input; ``color`` forces colour on/off
    (default: on for a terminal unless ``NO_COLOR`` is set).
    """

    def __init__(self, *, input: Any = None, output: Any = None, stdout: IO[str] | None = None,
                 history_file: str | Path | None = None, plain: bool | None = None,
                 color: bool | None = None) -> None:
        self.stdout = stdout or sys.stdout
        self.plain = plain if plain is not None else (input is None and _dumb_terminal())
        if color is None:
            color = (not os.environ.get("NO_COLOR") and not self.plain
                     and hasattr(self.stdout, "isatty") and self.stdout.isatty())
        self.color = bool(color)
        self._input = input
        self._progress = False
        if not self.plain:
            from prompt_toolkit import PromptSession
            from prompt_toolkit.history import FileHistory, InMemoryHistory

            history = (_redacting_file_history(FileHistory)(str(history_file)) if history_file
                       else InMemoryHistory())
            self.session: Any = PromptSession(history=history, input=input, output=output)
            # Answers to confirmations and credentials never go to the history file.
            self.answers: Any = PromptSession(history=InMemoryHistory(), input=input, output=output)

    # -- output --------------------------------------------------------------------------------

    def style(self, text: str, name: str) -> str:
        return f"{_STYLES[name]}{text}{_STYLES['reset']}" if self.color else text

    def write(self, text: str) -> None:
        self.clear_progress()
        self.stdout.write(text)
        self.stdout.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def progress(self, text: str) -> None:
        """A transient status line (replaced by the next output on a terminal)."""
        self.clear_progress()
        if self.color:
            self.stdout.write(self.style(f"… {text}", "dim"))
            self._progress = True
        else:
            self.stdout.write(f"… {text}\n")
        self.stdout.flush()

    def clear_progress(self) -> None:
        if self._progress:
            self.stdout.write("\r\x1b[2K")
            self._progress = False

    # -- input ---------------------------------------------------------------------------------

    async def prompt(self, message: str = "> ") -> str:
        """One line. Raises EOFError on Ctrl-D, KeyboardInterrupt on Ctrl-C."""
        if self.plain:
            return await self._plain_line(message)
        return await self.session.prompt_async(_ansi(message))

    async def confirm(self, question: str) -> bool:
        """Yes/no; anything but an explicit yes (including Ctrl-C/Ctrl-D) is no."""
        try:
            if self.plain:
                answer = await self._plain_line(question)
            else:
                # PromptSession keeps the last call's options: say is_password=False explicitly.
                answer = await self.answers.prompt_async(_ansi(question), is_password=False)
        except (EOFError, KeyboardInterrupt):
            self.line()
            return False
        return answer.strip().lower() in ("y", "yes")

    async def secret(self, question: str) -> str | None:
        """Hidden input on a prompt without a history file; None when cancelled."""
        try:
            if self.plain:
                if sys.stdin.isatty():
                    import getpass

                    return await anyio.to_thread.run_sync(getpass.getpass, question)
                return await self._plain_line(question)
            return await self.answers.prompt_async(_ansi(question), is_password=True)
        except (EOFError, KeyboardInterrupt):
            self.line()
            return None

    async def _plain_line(self, message: str) -> str:
        self.write(message)
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        if not line:
            raise EOFError
        return line.rstrip("\n")

    @contextlib.contextmanager
    def interrupts(self, cancel: Callable[[], None]) -> Iterator[None]:
        """While a turn runs, Ctrl-C calls ``cancel``; other keys typed ahead are kept."""
        if self.plain:
            with _sigint(cancel):
                yield
            return
        from prompt_toolkit.application.current import get_app_session
        from prompt_toolkit.input.typeahead import store_typeahead
        from prompt_toolkit.keys import Keys

        inp = self._input or get_app_session().input

        def on_keys() -> None:
            keys = inp.read_keys()
            if any(k.key == Keys.ControlC for k in keys):
                cancel()
                keys = [k for k in keys if k.key != Keys.ControlC]
            if keys:
                store_typeahead(inp, keys)

        try:
            raw, attach = inp.raw_mode(), inp.attach(on_keys)
        except Exception:  # not attachable (closed input): no interrupt key this turn
            yield
            return
        with raw, attach:
            yield


def _ansi(text: str) -> Any:
    """Prompt text with our colour codes, as prompt_toolkit formatted text."""
    from prompt_toolkit.formatted_text import ANSI

    return ANSI(text)


@contextlib.contextmanager
def _sigint(cancel: Callable[[], None]) -> Iterator[None]:
    import asyncio
    import signal

    try:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, cancel)
    except (RuntimeError, NotImplementedError, ValueError):  # not the main thread, or Windows
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


class Repl:
    """The conversation loop of the terminal. ``model_label`` is shown at startup and by /model."""

    def __init__(self, session: ConciergeSession, io: TerminalIO, *, model_label: str) -> None:
        self.session = session
        self.io = io
        self.model_label = model_label
        self._progress_for = {t.name: t.progress for t in session.toolkit if t.progress}

    async def run(self) -> int:
        self.io.line(f"Concierge · {self.model_label} · /help for help, Ctrl-D to quit")
        while True:
            try:
                text = (await self.io.prompt("> ")).strip()
            except EOFError:
                self.io.line()
                return 0
            except KeyboardInterrupt:
                continue
            if not text:
                continue
            if text.startswith("/"):
                if not await self.command(text):
                    return 0
                continue
            await self.turn(self.session.send(text))

    # -- one turn ------------------------------------------------------------------------------

    async def turn(self, stream: AsyncIterator[Event], *, progress: str | None = None) -> None:
        """Render a run, then answer what it waits for (confirmation, credential) and go on."""
        while True:
            last = await self._render(stream, progress=progress)
            if last is None or not isinstance(last, AgentFinish):
                return
            pending = self.session.pending_event()
            if last.stop_reason == STOP_AWAITING_CONFIRMATION and isinstance(pending, ConfirmationRequired):
                approved = await self.io.confirm(self.io.style("Go ahead? [y/N] ", "bold"))
                self.session.confirm(pending.id, approved)
                progress = self._progress_for.get(pending.tool) if approved else None
                if not approved:
                    self.io.line(self.io.style("Not done.", "dim"))
            elif last.stop_reason == STOP_AWAITING_SECRET and isinstance(pending, SecretRequired):
                value = await self.io.secret("Token (hidden): ")
                if not value or not value.strip():
                    self.io.line("No token given; nothing was changed. Ask again when you have it.")
                    # Leave it pending: a new message drops it, and the model is told.
                    return
                self.session.provide_secret(pending.id, value)
                progress = None
            else:
                return
            stream = self.session.resume()

    async def _render(self, stream: AsyncIterator[Event], *, progress: str | None) -> Event | None:
        last: Event | None = None
        at_line_start = True
        with anyio.CancelScope() as scope:
            with self.io.interrupts(scope.cancel):
                if progress:
                    self.io.progress(progress)
                async for event in stream:
                    last = event
                    if isinstance(event, AgentTextDelta):
                        self.io.write(event.text)
                        at_line_start = event.text.endswith("\n")
                    elif isinstance(event, AgentToolCall):
                        note = self._progress_for.get(event.name)
                        if note and self.session.toolkit.get(event.name) and \
                                not self.session.toolkit.get(event.name).is_write:  # type: ignore[union-attr]
                            self.io.progress(note)
                    elif isinstance(event, AgentToolResult):
                        self.io.clear_progress()
                    elif isinstance(event, ConfirmationRequired):
                        self._newline(at_line_start)
                        at_line_start = True
                        self.io.line(self.io.style("Confirm: ", "bold") + event.summary)
                    elif isinstance(event, SecretRequired):
                        self._newline(at_line_start)
                        at_line_start = True
                        self.io.line(f"I need {event.purpose}. Type it below: it is hidden, stored "
                                     "encrypted, and never shown to the model.")
                    elif isinstance(event, AgentError):
                        self._newline(at_line_start)
                        at_line_start = True
                        self.io.line(self.io.style(f"error: {event.message}", "red"))
                    elif isinstance(event, AgentFinish):
                        self._newline(at_line_start)
                        at_line_start = True
        if scope.cancelled_caught:
            self.io.clear_progress()
            self._newline(at_line_start)
            self.io.line(self.io.style("(cancelled)", "dim"))
            return None
        return last

    def _newline(self, at_line_start: bool) -> None:
        if not at_line_start:
            self.io.line()

    # -- slash commands -------------------------------------------------------------------------

    async def command(self, text: str) -> bool:
        """Run ``/name args``; False means quit."""
        name, _, arg = text[1:].partition(" ")
        name = name.strip().lower()
        name = {"exit": "quit", "q": "quit", "?": "help"}.get(name, name)
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            self.io.line(f"Unknown command /{name}. Type /help for the list.")
            return True
        try:
            return await handler(arg.strip()) is not False
        except ConciergeError as exc:
            self.io.line(self.io.style(f"error: {exc.detail}", "red"))
            return True

    def _commands(self) -> list[tuple[str, str]]:
        out = []
        for attr in sorted(dir(self)):
            if attr.startswith("cmd_"):
                doc = (getattr(self, attr).__doc__ or "").strip().splitlines()[0]
                out.append((attr[4:], doc))
        return out

    async def cmd_help(self, arg: str) -> None:
        """/help — what you can say and the commands."""
        self.io.line('Talk in plain words, e.g. "Add my MCP server at https://mcp.example.com/mcp '
                     'with a bearer token", "Test my custom MCP source", "What tools does my '
                     'support agent have right now?". Changes always ask you first.')
        for _, doc in self._commands():
            self.io.line("  " + doc)
        self.io.line("  Ctrl-C cancels the current turn · Ctrl-R searches history · Ctrl-D quits")

    async def cmd_sources(self, arg: str) -> None:
        """/sources — list the sources in the current sandbox."""
        rows = await self.session.backend.list_sources(sandbox=self.session.sandbox or "default")
        if not rows:
            self.io.line("No sources yet.")
        for s in rows:
            state = s.status.value + (f": {s.health_error}" if s.status.value == "error" else "")
            self.io.line(f"  {s.name} ({s.id}) — {state}; {s.base_url}; namespace {s.app_namespace}")

    async def cmd_tools(self, arg: str) -> None:
        """/tools [agent] — the live tool catalog (of an agent, or of the sandbox)."""
        self.io.progress("resolving the tool catalog")
        result = await self.session.backend.agent_tools(arg or None, sandbox=self.session.sandbox or "default")
        self.io.clear_progress()
        who = arg or "this sandbox"
        self.io.line(f"{who}: {result.count} tool{'s' if result.count != 1 else ''}")
        for tool in result.tools:
            self.io.line(f"  {tool.name}  {self.io.style(tool.description[:70], 'dim')}")
        for skipped in result.trace.sources_skipped:
            self.io.line(self.io.style(f"  skipped {skipped.name}: {skipped.reason}", "yellow"))

    async def cmd_sandbox(self, arg: str) -> None:
        """/sandbox [name] — show or switch the current sandbox."""
        if arg:
            sb = await self.session.backend.get_sandbox(arg)
            self.session.sandbox = sb.name
            self.io.line(f"Now working in sandbox {sb.name}.")
            return
        names = [s.name for s in await self.session.backend.list_sandboxes()]
        current = self.session.sandbox or "default"
        self.io.line("Sandboxes: " + ", ".join(f"{n} (current)" if n == current else n for n in names))

    async def cmd_model(self, arg: str) -> None:
        """/model — which model answers, and how to change it."""
        self.io.line(f"Model: {self.model_label}. To change it, restart with --model NAME (and "
                     "OPENAI_API_KEY / OPENAI_BASE_URL set), or --offline for the offline planner.")

    async def cmd_reset(self, arg: str) -> None:
        """/reset — forget this conversation and start over."""
        self.session.reset()
        self.io.line("Starting over.")

    async def cmd_quit(self, arg: str) -> bool:
        """/quit — leave (or Ctrl-D)."""
        return False
