"""Test helpers: real stdio MCP servers (and hostile programs) to run as subprocesses.

Not a test module. ``command(mode)`` is the ``(program, args)`` that runs this file as a
server in that mode (``python tests/stdio_servers.py MODE``):

    serve        an MCP server (built with the SDK's ``MCPServer``) with tools: ``echo(text)``,
                 ``pid()``, ``env_has(name)`` (whether a variable is set, never its value),
                 ``env_digest(name)`` (a sha256 of a value), ``say_on_stderr(text)``,
                 ``spawn_child()`` (starts a grandchild that sleeps; returns its pid),
                 ``crash(status)`` (exits at once, mid-call)
    flood        ``serve``, with a thread writing stderr as fast as it can the whole time
    silent       reads stdin and never answers
    exit_at_once writes three lines to stderr and exits with status 3
    garbage      prints lines that are not JSON-RPC, then goes quiet
    huge_line    answers the first request with 3 MB and no line end
    hold_stdout  starts a child that keeps stdout open, then exits itself

Process helpers for tests: ``alive(pid)`` (a zombie counts as dead), ``wait_gone(pids)``,
``children(pid)``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable

__all__ = ["alive", "children", "command", "time_server_command", "wait_gone"]

HERE = os.path.abspath(__file__)


def command(mode: str, *extra: str) -> tuple[str, list[str]]:
    """The program and arguments that run this file in ``mode``."""
    return sys.executable, [HERE, mode, *extra]


def time_server_command() -> tuple[str, list[str]]:
    """The third-party ``mcp-server-time`` server, as people run it."""
    return sys.executable, ["-m", "mcp_server_time", "--local-timezone", "UTC"]


# -- processes ---------------------------------------------------------------------------------

def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, is not running)."""
    state = _state(pid)
    return state is not None and state not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


def wait_gone(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """Wait (bounded) until none of ``pids`` runs; returns the ones still running."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if alive(pid)]
        if pending:
            time.sleep(0.02)
    return [pid for pid in pending if alive(pid)]


# -- the servers ---------------------------------------------------------------------------------

def _serve(*, flood: bool = False) -> None:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("stdio-test", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.tool()
    def pid() -> int:
        """This server's process id."""
        return os.getpid()

    @server.tool()
    def env_has(name: str) -> bool:
        """Whether the environment variable is set (never its value)."""
        return name in os.environ

    @server.tool()
    def env_digest(name: str) -> str:
        """sha256 of an environment variable's value."""
        return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()

    @server.tool()
    def say_on_stderr(text: str) -> str:
        """Write the text to stderr."""
        print(text, file=sys.stderr, flush=True)
        return "said"

    @server.tool()
    def spawn_child() -> int:
        """Start a child process that sleeps for a minute; its pid."""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        return child.pid

    @server.tool()
    def crash(status: int = 1) -> str:
        """Exit the process at once."""
        print(f"crashing with status {status}", file=sys.stderr, flush=True)
        os._exit(status)

    if flood:
        def pour() -> None:
            line = ("x" * 199 + "\n").encode()
            while True:
                os.write(2, line * 50)

        threading.Thread(target=pour, daemon=True).start()
    server.run("stdio")


def _silent() -> None:
    for _ in sys.stdin:  # read everything, answer nothing
        pass
    time.sleep(3600)


def _exit_at_once() -> None:
    print("starting up", file=sys.stderr)
    print("error: the config file /etc/demo.toml is missing", file=sys.stderr)
    print("giving up", file=sys.stderr, flush=True)
    sys.exit(3)


def _garbage() -> None:
    print("hello, I am not an MCP server", flush=True)
    print("{\"not\": \"json-rpc\"}", flush=True)
    time.sleep(3600)


def _huge_line() -> None:
    sys.stdin.readline()  # the first request
    sys.stdout.write("{" + "x" * 3_000_000)  # one message of 3 MB, and no end
    sys.stdout.flush()
    time.sleep(3600)


def _hold_stdout() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL)
    print(f"leaving child {child.pid} behind", file=sys.stderr, flush=True)
    os._exit(0)


if __name__ == "__main__":
    modes = {"serve": _serve, "flood": lambda: _serve(flood=True), "silent": _silent,
             "exit_at_once": _exit_at_once, "garbage": _garbage, "hold_stdout": _hold_stdout,
             "huge_line": _huge_line}
    modes[sys.argv[1]]()
