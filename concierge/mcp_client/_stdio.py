"""The stdio transport: run a program, speak newline-delimited JSON-RPC on its stdin/stdout.

Ours rather than the SDK's ``stdio_client`` because Concierge must know the process: its
pid (to prove no orphan is left), its exit status and last stderr lines (to say why it
died), stderr kept in a bounded log instead of Concierge's own stderr, a cap on one message,
and death noticed at once (so a pooled session is replaced before the next call fails).

    spawn     a new session and process group (``start_new_session``), the environment a safe
              subset of ours plus the command's ``env`` and ``secret_env``
    pumps     stdout lines → messages (one over ``max_message_bytes`` ends the session with
              `MessageTooLarge`; a line that is not JSON-RPC, such as a banner, goes to the
              log instead); messages → stdin; stderr → `ProcessLog`
    death     stdout closing (or the process ending) sends `ProcessExited` into the read
              stream, which the session hears as a broken transport
    shutdown  close stdin, wait ``_GRACE``, then SIGTERM and SIGKILL to the process group (the
              SDK's ``terminate_posix_process_tree``), and the same for members of the group
              left behind by a leader that exited; shielded, every wait bounded
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
from mcp.client.stdio import get_default_environment
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from concierge.mcp_client._errors import MessageTooLarge, Observed
from concierge.mcp_client.stdio import ProcessExited, ProcessLog, SpawnFailed, StdioCommand

__all__ = ["stdio_transport"]

log = logging.getLogger("concierge.mcp_client")

_GRACE = 1.0
"""Seconds a program gets to exit by itself once its stdin is closed."""
_TERM_GRACE = 1.0
"""Seconds between SIGTERM and SIGKILL."""
_REAP_WAIT = 2.0
_EXIT_POLL = 0.25
"""How often the exit watcher looks (only matters when a child of the program keeps stdout open)."""
_STDERR_SETTLE = 0.5
"""How long to wait for the last stderr bytes of a program that died, before saying why."""
_CHUNK = 65536


def _status_words(status: int | None) -> str:
    if status is None:
        return "closed its stdout"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


def _exited(command: StdioCommand, plog: ProcessLog, status: int | None, *, at_once: bool) -> ProcessExited:
    words = plog.last_words()
    when = " at once (before it answered)" if at_once else ""
    tail = f" — its last stderr lines: {words}" if words else " — it wrote nothing on stderr"
    return ProcessExited(f"the program `{command.display}` {_status_words(status)}{when}{tail}", status)


async def _spawn(command: StdioCommand, env: Mapping[str, str]) -> anyio.abc.Process:
    if command.cwd is not None and not os.path.isdir(command.cwd):
        raise SpawnFailed(f"the working directory {command.cwd!r} of `{command.display}` does not exist")
    try:
        return await anyio.open_process([command.command, *command.args], env=dict(env), cwd=command.cwd,
                                        start_new_session=True)
    except FileNotFoundError:
        raise SpawnFailed(f"no program named {command.command!r} was found — check the command "
                          "(and that it is on the PATH)") from None
    except PermissionError:
        raise SpawnFailed(f"{command.command!r} cannot be run (permission denied) — is it an executable "
                          "program?") from None
    except OSError as exc:
        raise SpawnFailed(f"`{command.display}` could not be started ({exc.strerror or exc})") from None


def _parse(line: bytes) -> SessionMessage | None:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValidationError:  # (no log line: it would quote what the program printed)
        return None


async def _wait_exit(process: anyio.abc.Process, seconds: float) -> bool:
    """Whether the process ended within ``seconds`` (polled: ``wait()`` also waits for pipes)."""
    with anyio.move_on_after(seconds):
        while process.returncode is None:
            await anyio.sleep(0.01)
        return True
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _stop(process: anyio.abc.Process, plog: ProcessLog) -> None:
    """Close stdin, wait, then end the whole process group; never raises, every wait bounded."""
    with suppress(Exception):
        await process.stdin.aclose()  # type: ignore[union-attr]
    if not await _wait_exit(process, _GRACE):
        await terminate_posix_process_tree(process, _TERM_GRACE)
        if not await _wait_exit(process, _REAP_WAIT):
            log.warning("stdio server process %d is still alive after SIGKILL", process.pid)
            return
    if _group_alive(process.pid):
        # The leader exited but left children in its group (a wrapper such as npx or uvx that
        # spawned the real server): they are ours too. (The group id cannot be reused while
        # any member lives.)
        await terminate_posix_process_tree(process, _TERM_GRACE)
    plog.exited(process.returncode)


@asynccontextmanager
async def stdio_transport(command: StdioCommand, plog: ProcessLog, box: Observed, *,
                          max_message_bytes: int) -> AsyncIterator[Any]:
    """Run ``command`` for the block; yields the SDK's (read stream, write stream) pair."""
    env = get_default_environment() | dict(command.env) | dict(command.secret_env)
    process = await _spawn(command, env)
    plog.started(process.pid, command.secret_env.values())
    box.pid = process.pid
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
    stderr_done = anyio.Event()
    shutting_down = reported = answered = False

    async def deliver(item: SessionMessage | Exception) -> bool:
        try:
            await read_writer.send(item)
            return True
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False

    async def report_death() -> None:
        nonlocal reported
        if shutting_down or reported:
            return
        reported = True
        await _wait_exit(process, _REAP_WAIT)
        with anyio.move_on_after(_STDERR_SETTLE):
            await stderr_done.wait()
        failure = _exited(command, plog, process.returncode, at_once=not answered)
        box.cause = box.cause or failure
        await deliver(failure)

    async def read_stdout() -> None:
        nonlocal answered
        assert process.stdout is not None
        buffer = bytearray()
        listening = True
        try:
            async with read_writer:
                async for chunk in process.stdout:
                    if not listening:
                        continue  # drain, so a program blocked on a full pipe can exit
                    buffer += chunk
                    while listening and (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        if not line.strip():
                            continue
                        message = _parse(line)
                        if message is not None:
                            answered = True
                            listening = await deliver(message)
                        else:  # a banner or a stray print(): kept for the person, not the session
                            text = line.decode("utf-8", errors="replace")
                            plog.stdout_junk(text)
                            box.content_type = box.content_type or "text that is not JSON-RPC on stdout"
                    if listening and len(buffer) > max_message_bytes:
                        box.too_large = max_message_bytes
                        box.cause = box.cause or MessageTooLarge(max_message_bytes)
                        await deliver(MessageTooLarge(max_message_bytes))
                        await read_writer.aclose()  # the framing is lost: end the session now
                        listening = False
                        buffer.clear()
                if listening:
                    await report_death()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass

    async def watch_exit() -> None:
        # stdout normally closes when the program dies; this catches a program whose own
        # child keeps stdout open after it exited.
        while process.returncode is None:
            await anyio.sleep(_EXIT_POLL)
        await anyio.sleep(_STDERR_SETTLE)
        await report_death()
        await read_writer.aclose()

    async def read_stderr() -> None:
        assert process.stderr is not None
        try:
            async for chunk in process.stderr:
                plog.feed(chunk.decode("utf-8", errors="replace"))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass
        finally:
            plog.flush()
            stderr_done.set()

    async def write_stdin() -> None:
        assert process.stdin is not None
        try:
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    await process.stdin.send(data.encode("utf-8"))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            # the program stopped reading (it died or closed stdin): the session must hear it
            await read_writer.aclose()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_stdout)
            tg.start_soon(read_stderr)
            tg.start_soon(write_stdin)
            tg.start_soon(watch_exit)
            try:
                yield read_stream, write_stream
            finally:
                shutting_down = True
                with anyio.CancelScope(shield=True):
                    read_stream.close()
                    write_stream.close()
                    await _stop(process, plog)
                    with anyio.move_on_after(_STDERR_SETTLE):
                        await stderr_done.wait()
                tg.cancel_scope.cancel()
    finally:
        if plog.pid is None:
            box.pid = None
