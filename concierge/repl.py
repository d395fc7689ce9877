"""The terminal REPL: ``concierge`` / ``concierge chat``.

All terminal I/O goes through `TerminalIO` (prompt_toolkit for input; plain writes for
output), so tests drive the real prompt_toolkit path with ``create_pipe_input()`` and
``DummyOutput()``. `Repl` is a plain loop around one `ConciergeSession`: it renders the
session's events and answers its confirmation and credential requests; it has no loop of
its own.

Keys: Enter sends; Ctrl-R searches the history (kept in ``$CONCIERGE_HOME/chat_history``);
Ctrl-C cancels the current turn (or clears the line); Ctrl-D exits. ``NO_COLOR`` turns
colour off; a dumb terminal (``TERM=dumb``) or a non-terminal stdin gets plain line input.

Credentials: asked for on a separate prompt with in-memory history and hidden input; one
pasted into a message is shown as ``*`` while typed (`credential_mask`) and written to the
history file as ``[secret]``. The history file and the data directory's files are owner-only
(0600; the data directory 0700: `concierge.config`).

Answers: a confirmation takes typed answers ("yes please", "sure", "nah", `read_yes_no`) and
asks again when it cannot tell. Ctrl-C at the token prompt abandons that request (the next
message starts afresh); Ctrl-C while an approved change runs says what state it left.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio

from concierge import config
from concierge.agent.events import (
    MAX_MESSAGE_CHARS,
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
from concierge.agent.answers import read_yes_no
from concierge.agent.secrets import find_secrets
from concierge.agent.session import ConciergeSession
from concierge.errors import ConciergeError
from concierge.registry import SourceView

__all__ = ["MAX_MESSAGE_CHARS", "Repl", "TerminalIO", "credential_mask", "history_path", "mask_secrets",
           "read_yes_no"]

_STYLES = {"dim": "\x1b[2m", "bold": "\x1b[1m", "red": "\x1b[31m", "green": "\x1b[32m",
           "yellow": "\x1b[33m", "reset": "\x1b[0m"}


def _redacting_file_history(base: type) -> type:
    """A FileHistory that never writes a pasted credential (each becomes ``[secret]``) and
    whose file is owner-only (0600) from the moment it exists.

    The session redacts messages before the model sees them, but prompt_toolkit stores the
    line as typed; without this, "the new token is abc..." would sit in the history file.
    """

    class RedactingFileHistory(base):  # type: ignore[misc, valid-type]
        def __init__(self, filename: str) -> None:
            config.private_file(Path(filename))
            super().__init__(filename)

        def append_string(self, string: str) -> None:
            super().append_string(mask_secrets(string))

    return RedactingFileHistory


def mask_secrets(text: str) -> str:
    """``text`` with every credential `find_secrets` sees replaced by ``[secret]``."""
    spans = find_secrets(text)
    for start, end in reversed(spans):
        text = text[:start] + "[secret]" + text[end:]
    return text


def credential_mask() -> Any:
    """A prompt_toolkit input processor: a credential typed or pasted is never echoed.

    Built on call, so prompt_toolkit is imported only when a prompt is (not on a dumb terminal).
    """
    from prompt_toolkit.formatted_text.utils import fragment_list_len
    from prompt_toolkit.layout.processors import Processor, Transformation, TransformationInput
    from prompt_toolkit.layout.utils import explode_text_fragments

    class _Mask(Processor):
        """Shows each credential in the input as ``*`` (same length: the cursor stays put)."""

        def __init__(self) -> None:
            self._seen: tuple[str, list[tuple[int, int]]] = ("", [])

        def spans(self, text: str) -> list[tuple[int, int]]:
            if self._seen[0] != text:  # once per edit, not once per line and redraw
                self._seen = (text, find_secrets(text))
            return self._seen[1]

        def apply_transformation(self, ti: TransformationInput) -> Transformation:
            spans = self.spans(ti.document.text)
            if not spans:
                return Transformation(ti.fragments)
            line_start = ti.document.translate_row_col_to_index(ti.lineno, 0)
            line_end = line_start + len(ti.document.lines[ti.lineno])
            fragments = explode_text_fragments(ti.fragments)
            size = fragment_list_len(fragments)
            for start, end in spans:
                for index in range(max(start, line_start), min(end, line_end)):
                    at = ti.source_to_display(index - line_start)
                    if 0 <= at < size and fragments[at][1] not in ("\n", ""):
                        style, _, *rest = fragments[at]
                        fragments[at] = (style, "*", *rest)  # type: ignore[assignment]
            return Transformation(fragments)

    return _Mask()


def history_path(settings: config.Settings | None = None) -> Path:
    home = settings.home if settings is not None else None
    return config.private_file(config.data_dir(home) / "chat_history")  # 0600, never under the umask


def _dumb_terminal() -> bool:
    return config.terminal_is_dumb() or not sys.stdin.isatty()


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
            color = (not config.load().no_color and not self.plain
                     and hasattr(self.stdout, "isatty") and self.stdout.isatty())
        self.color = bool(color)
        self._input = input
        self._progress = False
        if not self.plain:
            from prompt_toolkit import PromptSession
            from prompt_toolkit.history import FileHistory, InMemoryHistory

            history = (_redacting_file_history(FileHistory)(str(history_file)) if history_file
                       else InMemoryHistory())
            self.session: Any = PromptSession(history=history, input=input, output=output,
                                              input_processors=[credential_mask()])
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

    async def confirm(self, question: str) -> bool | str:
        """Yes or no, typed in words (`read_yes_no`), or the words typed instead.

        Ctrl-C or Ctrl-D means no; an empty line asks again. Anything else that is not a clear
        yes or no ("yes but call it Prod", "what would it change?") is returned as text: the
        caller sends it as the next message, as the web chat does. It is never taken as no.
        """
        while True:
            try:
                if self.plain:
                    answer = await self._plain_line(question)
                else:
                    # PromptSession keeps the last call's options: say is_password=False explicitly.
                    answer = await self.answers.prompt_async(_ansi(question), is_password=False)
            except (EOFError, KeyboardInterrupt):
                self.line()
                return False
            verdict = read_yes_no(answer)
            if verdict is not None:
                return verdict
            if answer.strip():
                return answer.strip()
            self.line('Please answer "yes" or "no" (Ctrl-C also means no).')

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


@dataclass
class _Rendered:
    """How a rendered run ended."""

    last: Event | None
    cancelled: bool
    said: bool
    """The run produced answer text."""


_PENDING_CHECK = "health check did not complete"
"""The registry's health_error while a source's first check has not finished."""


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
            if len(text) > MAX_MESSAGE_CHARS:
                self.io.line(f"That message is {len(text):,} characters long; the limit is "
                             f"{MAX_MESSAGE_CHARS:,}. Nothing was sent: shorten it and try again.")
                continue
            await self.turn(self.session.send(text))

    # -- one turn ------------------------------------------------------------------------------

    async def turn(self, stream: AsyncIterator[Event], *, progress: str | None = None) -> None:
        """Render a run, then answer what it waits for (confirmation, credential) and go on."""
        rendered = await self._render(stream, progress=progress)
        while not rendered.cancelled and self._waiting(rendered.last):
            pending = self.session.pending_event()
            if isinstance(pending, ConfirmationRequired):
                approved = await self.io.confirm(self.io.style("Go ahead? [yes/no] ", "bold"))
                if isinstance(approved, str):  # words instead of a yes or no: the next message
                    if len(approved) > MAX_MESSAGE_CHARS:
                        self.io.line('Please answer "yes" or "no" (Ctrl-C also means no).')
                        continue
                    rendered = await self._render(self.session.send(approved), progress=None)
                    continue
                self.session.confirm(pending.id, approved)
                if approved:
                    before = await self._sources_near(pending)
                    rendered = await self._render(self.session.resume(), quiet_cancel=True,
                                                  progress=self._progress_for.get(pending.tool))
                    if rendered.cancelled:
                        self.io.line(await self._interrupted(pending, before))
                else:
                    rendered = await self._render(self.session.resume(), progress=None)
                    if not rendered.said and not rendered.cancelled:
                        self.io.line(self.io.style("Not done; nothing was changed.", "dim"))
            elif isinstance(pending, SecretRequired):
                value = await self.io.secret("Token (hidden): ")
                if not value or not value.strip():
                    # Walked away: drop the request, so the next message starts afresh (a token
                    # in it must not answer this one).
                    self.session.abandon()
                    self.io.line("Stopped; nothing was changed. Ask again when you have the token.")
                    return
                self.session.provide_secret(pending.id, value)
                rendered = await self._render(self.session.resume(), progress=None)
            else:
                return

    @staticmethod
    def _waiting(last: Event | None) -> bool:
        return isinstance(last, AgentFinish) and last.stop_reason in (STOP_AWAITING_CONFIRMATION,
                                                                      STOP_AWAITING_SECRET)

    async def _sources_near(self, pending: ConfirmationRequired) -> dict[str, SourceView] | None:
        """The sources of the sandbox the change acts in (None if they cannot be listed)."""
        sandbox = pending.arguments.get("sandbox") or self.session.sandbox
        try:
            return {s.id: s for s in await self.session.backend.list_sources(sandbox=sandbox)}
        except ConciergeError:
            return None

    async def _interrupted(self, pending: ConfirmationRequired,
                           before: dict[str, SourceView] | None) -> str:
        """A sentence on where an interrupted change left things, looked up afresh."""
        head = "Interrupted."
        after = await self._sources_near(pending)
        if before is None or after is None:
            return (f"{head} I could not check what it changed: run /sources to see where "
                    "things stand before trying again.")
        if pending.tool == "register_source":
            name = str(pending.arguments.get("name") or "the server")
            new = [s for sid, s in after.items() if sid not in before]
            if not new:
                return f'{head} "{name}" was not registered; nothing was changed.'
            source = new[0]
            if source.health_error == _PENDING_CHECK:
                state = ("but its health check was interrupted (status error until it is checked). "
                         f'Say "test {source.name}" to check it now.')
            elif source.status.value == "active":
                state = f"and its health check passed ({source.tool_count or 0} tools)."
            else:
                state = f"but its health check failed: {source.health_error}"
            return f'{head} "{source.name}" is registered ({source.id}), {state}'
        changed = [s for sid, s in after.items() if sid in before and s != before[sid]]
        gone = [s for sid, s in before.items() if sid not in after]
        if gone:
            return f'{head} "{gone[0].name}" ({gone[0].id}) was revoked.'
        if changed:
            s = changed[0]
            note = ("; its health check was interrupted" if s.health_error == _PENDING_CHECK
                    else f": {s.health_error}" if s.health_error else "")
            return f'{head} "{s.name}" ({s.id}) was changed and is now {s.status.value}{note}.'
        return f"{head} Nothing was changed."

    async def _render(self, stream: AsyncIterator[Event], *, progress: str | None,
                      quiet_cancel: bool = False) -> _Rendered:
        last: Event | None = None
        said = False
        at_line_start = True
        with anyio.CancelScope() as scope:
            with self.io.interrupts(scope.cancel):
                if progress:
                    self.io.progress(progress)
                async for event in stream:
                    last = event
                    if isinstance(event, AgentTextDelta):
                        self.io.write(event.text)
                        said = said or bool(event.text.strip())
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
            if not quiet_cancel:
                self.io.line(self.io.style("(cancelled)", "dim"))
            return _Rendered(last, True, said)
        return _Rendered(last, False, said)

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
        if result.trace.sources_skipped_omitted:
            counts = ", ".join(f"{n:,} {r}" for r, n in result.trace.sources_skipped_by_reason.items())
            self.io.line(self.io.style(f"  …and {result.trace.sources_skipped_omitted:,} more skipped "
                                       f"({counts} in all)", "yellow"))

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
