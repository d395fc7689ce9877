"""Local MCP servers that run as programs: the command line, and what the program left behind.

    StdioFailure   SpawnFailed (could not start) and ProcessExited (died), each with its sentence
    StdioCommand   what to run: ``command``, ``args``, ``env`` (plain values), ``secret_env``
                   (masked in every repr, redacted from stderr and errors), ``cwd``
    ProcessLog     one source's program over its restarts: the pid running now, how often it
                   was started, how the last one ended, and the last lines of its stderr in a
                   bounded ring buffer (``tail()``), secrets already redacted

The transport that runs the program is `concierge.mcp_client._stdio`.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from concierge.mcp_client._sanitize import one_line

__all__ = ["ProcessExited", "ProcessLog", "SpawnFailed", "StdioCommand", "StdioFailure", "kill_group"]

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_DISPLAY = 160


@dataclass(frozen=True)
class StdioCommand:
    """A program that speaks MCP on its stdin and stdout.

    The program's environment is a safe subset of Concierge's own (``HOME``, ``PATH``,
    ``USER``, …: never Concierge's keys), then ``env``, then ``secret_env``.
    """

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables shown as they are (``LOG_LEVEL=debug``)."""
    secret_env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables whose values are secrets (API keys): masked in ``repr()``,
    redacted from the stderr log and from error messages."""
    cwd: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(str(a) for a in self.args))
        object.__setattr__(self, "env", {str(k): str(v) for k, v in self.env.items()})
        object.__setattr__(self, "secret_env", {str(k): str(v) for k, v in self.secret_env.items()})
        if not self.command or not self.command.strip():
            raise ValueError("command is required for a stdio server")
        for text in (self.command, *self.args, self.cwd or ""):
            if "\x00" in text:
                raise ValueError("command, args and cwd must not contain NUL characters")
        for name in (*self.env, *self.secret_env):
            if not _ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"env name {name!r} must be letters, digits and _ (not starting with a digit)")
        for name, value in (*self.env.items(), *self.secret_env.items()):
            if "\x00" in value:
                raise ValueError(f"the value of env {name} must not contain NUL characters")
        both = set(self.env) & set(self.secret_env)
        if both:
            raise ValueError(f"env {sorted(both)[0]} is given both as a plain and as a secret value")

    def __repr__(self) -> str:
        secret = {name: "***" for name in self.secret_env}
        return (f"StdioCommand(command={self.command!r}, args={self.args!r}, env={dict(self.env)!r}, "
                f"secret_env={secret!r}, cwd={self.cwd!r})")

    __str__ = __repr__

    @property
    def display(self) -> str:
        """The command line in plain words (``python -m mcp_server_time``), shortened if long."""
        text = shlex.join([self.command, *self.args])
        return text if len(text) <= _MAX_DISPLAY else text[: _MAX_DISPLAY - 1] + "…"

    @property
    def secrets(self) -> Mapping[str, str]:
        return dict(self.secret_env)


class StdioFailure(Exception):
    """A stdio failure with its sentence ready (the kind is chosen by the subclass)."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


class SpawnFailed(StdioFailure):
    """The program could not be started (nothing was sent to it)."""


class ProcessExited(StdioFailure):
    """The program exited, or closed its stdout."""

    def __init__(self, sentence: str, status: int | None) -> None:
        super().__init__(sentence)
        self.status = status


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (Linux ``/proc``), or None if unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def redact_values(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret value (3 characters or more) replaced by ``***``."""
    for secret in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class ProcessLog:
    """What one source's program did, over its restarts (see the module docstring).

    The stderr buffer keeps at most ``max_lines`` lines and ``max_bytes`` characters; a line
    longer than ``max_line_chars`` is cut (the rest of it is counted in ``dropped_chars``).
    A program that floods stderr costs reading time, never unbounded memory.
    """

    def __init__(self, *, max_lines: int = 200, max_bytes: int = 64_000, max_line_chars: int = 2_000) -> None:
        self.max_lines, self.max_bytes, self.max_line_chars = max_lines, max_bytes, max_line_chars
        self._lines: deque[str] = deque()
        self._size = 0
        self._partial = ""
        self._partial_cut = False
        self._secrets: tuple[str, ...] = ()
        self.pid: int | None = None
        """The pid of the program running now (None when none runs)."""
        self.starts = 0
        self.last_exit: int | None = None
        """The exit status of the last program that ended (negative: killed by that signal)."""
        self.started_at: float | None = None
        self.stderr_chars = 0
        """Characters the programs wrote to stderr, in all."""
        self.dropped_chars = 0
        """Characters not kept: cut from over-long lines, or pushed out of the ring buffer."""
        self.junk_lines = 0
        """Lines the programs printed on stdout that were not JSON-RPC (logged as ``[stdout] …``)."""

    def __repr__(self) -> str:
        return (f"ProcessLog(pid={self.pid}, starts={self.starts}, last_exit={self.last_exit}, "
                f"lines={len(self._lines)})")

    # -- what the transport reports ------------------------------------------------------------

    def started(self, pid: int, secrets: Iterable[str] = ()) -> None:
        self.flush()
        self.pid, self.started_at = pid, time.time()
        self.starts += 1
        self._secrets = tuple(secrets)

    def exited(self, status: int | None) -> None:
        self.flush()
        self.pid = None
        self.last_exit = status

    def feed(self, data: str) -> None:
        """Some text the program wrote to stderr (any chunk; lines are assembled here)."""
        self.stderr_chars += len(data)
        text = self._partial + data
        *lines, rest = text.split("\n")
        for line in lines:
            self._keep(line)
            self._partial_cut = False
        limit = self.max_line_chars + max((len(s) for s in self._secrets), default=0)
        if len(rest) > limit:  # a line without end: keep its start, count the rest as dropped
            if not self._partial_cut:
                self._keep(rest)
                self._partial_cut = True
            else:
                self.dropped_chars += len(rest)
            rest = ""
        self._partial = rest

    def stdout_junk(self, line: str) -> None:
        """A line the program printed on stdout that is not JSON-RPC (kept, marked, in the log)."""
        self.junk_lines += 1
        self.flush()
        self._keep("[stdout] " + line[: self.max_line_chars])

    def flush(self) -> None:
        """Keep an unfinished last line (the program ended without a newline)."""
        if self._partial and not self._partial_cut:
            self._keep(self._partial)
        self._partial, self._partial_cut = "", False

    def _keep(self, line: str) -> None:
        line = redact_values(line.rstrip("\r"), self._secrets)
        if len(line) > self.max_line_chars:
            self.dropped_chars += len(line) - self.max_line_chars
            line = line[: self.max_line_chars] + "…"
        self._lines.append(line)
        self._size += len(line)
        while self._lines and (len(self._lines) > self.max_lines or self._size > self.max_bytes):
            gone = self._lines.popleft()
            self._size -= len(gone)
            self.dropped_chars += len(gone)

    # -- what callers read ---------------------------------------------------------------------

    def tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of stderr, cleaned of control characters and escapes."""
        lines = min(lines, self.max_lines)
        kept = list(self._lines)[-lines:] if lines > 0 else []
        if self._partial and not self._partial_cut and lines > 0:  # the line being written now
            kept = (kept + [redact_values(self._partial, self._secrets)])[-lines:]
        return [one_line(line, self.max_line_chars + 1) for line in kept]

    def last_words(self, lines: int = 3, chars: int = 240) -> str:
        """The last non-blank stderr lines joined in one short line, for an error message."""
        words = [line for line in self.tail(50) if line.strip()][-lines:]
        text = " ⏎ ".join(words)
        return text if len(text) <= chars else "…" + text[-(chars - 1):]

    def kill(self) -> bool:
        """Kill what is left of the running program's process group (a safety net after a
        shutdown that did not finish). True if there was one to signal."""
        return self.pid is not None and kill_group(self.pid)


def kill_group(pid: int) -> bool:
    """SIGKILL the process group that the program ``pid`` (started by us in its own session)
    leads. True if there was one to signal."""
    if _parent_of(pid) not in (None, os.getpid()):
        return False  # the pid was reused by a process that is not ours
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True
