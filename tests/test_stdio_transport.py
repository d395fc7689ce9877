"""stdio MCP servers: a real third-party one (mcp-server-time), our own, and hostile programs.

Every test that starts a program checks by pid that nothing it started is left running.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
import time
from pathlib import Path

import anyio
import pytest

from concierge.errors import ConnectorError
from concierge.mcp_client import Endpoint, ErrorKind, McpSession, SessionPool, call_tool, list_tools, probe
from concierge.mcp_client.stdio import ProcessLog, StdioCommand
from tests.stdio_servers import alive, command, time_server_command, wait_gone

pytestmark = pytest.mark.anyio

CANARY = "canary-ENV-SECRET-7d41c"


def stdio(mode: str, *extra: str, plog: ProcessLog | None = None, **options: object) -> Endpoint:
    program, args = command(mode, *extra)
    return Endpoint.stdio(program, args, process_log=plog, **options)  # type: ignore[arg-type]


def group_members(pgid: int) -> list[int]:
    """Running processes in process group ``pgid`` (what a program started, even orphaned)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(name))
    return out


# -- the third-party server ----------------------------------------------------------------------

async def test_mcp_server_time_probe_list_and_call_over_stdio() -> None:
    program, args = time_server_command()
    plog = ProcessLog()
    endpoint = Endpoint.stdio(program, args, process_log=plog)
    result = await probe(endpoint)
    assert result.ok, result.error
    assert {t.name for t in result.tools} == {"get_current_time", "convert_time"}
    assert result.server_name == "mcp-time"
    assert plog.starts == 1 and plog.pid is None and plog.last_exit == 0  # stopped after the probe

    tools = await list_tools(endpoint)
    assert {t.name for t in tools} == {"get_current_time", "convert_time"}
    answer = await call_tool(endpoint, "convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                        "target_timezone": "Asia/Tokyo"})
    assert not answer.is_error and "21:00" in answer.text
    assert plog.starts == 3 and plog.pid is None


async def test_session_runs_one_process_and_close_stops_it() -> None:
    program, args = time_server_command()
    async with McpSession(Endpoint.stdio(program, args)) as session:
        pid = session.pid
        assert pid is not None and alive(pid)
        for _ in range(3):
            result = await session.call_tool("get_current_time", {"timezone": "Europe/Paris"})
            assert "Europe/Paris" in result.text
        assert session.pid == pid  # the same process answered every call
        assert repr(session).startswith("McpSession('the program `")
    assert wait_gone([pid]) == []
    assert session.pid is None


# -- secrets -------------------------------------------------------------------------------------

async def test_secret_env_reaches_the_program_and_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    plog = ProcessLog()
    endpoint = stdio("serve", plog=plog, env={"LOG_LEVEL": "debug"}, secret_env={"API_KEY": CANARY})
    assert CANARY not in repr(endpoint) and CANARY not in str(endpoint.command)
    assert "LOG_LEVEL" in repr(endpoint) and "'API_KEY': '***'" in repr(endpoint)
    async with McpSession(endpoint) as session:
        digest = await session.call_tool("env_digest", {"name": "API_KEY"})
        assert digest.text == hashlib.sha256(CANARY.encode()).hexdigest()
        plain = await session.call_tool("env_digest", {"name": "LOG_LEVEL"})
        assert plain.text == hashlib.sha256(b"debug").hexdigest()
        # Concierge's own secrets are not inherited (conftest sets CONCIERGE_MASTER_KEY)
        assert os.environ.get("CONCIERGE_MASTER_KEY")
        assert (await session.call_tool("env_has", {"name": "CONCIERGE_MASTER_KEY"})).text == "false"
        assert (await session.call_tool("env_has", {"name": "PATH"})).text == "true"
        await session.call_tool("say_on_stderr", {"text": f"my key is {CANARY} ok"})
        with pytest.raises(ConnectorError, match="status 9"):
            await session.call_tool("crash", {"status": 9})  # (it dies mid-call)
    await anyio.sleep(0)
    assert any("my key is *** ok" in line for line in plog.tail())
    assert CANARY not in "\n".join(plog.tail(1000))
    assert CANARY not in caplog.text


async def test_secret_in_the_last_stderr_lines_is_redacted_from_the_error() -> None:
    script = f"import sys; print('token={CANARY} was rejected', file=sys.stderr); sys.exit(2)"
    endpoint = Endpoint.stdio(sys.executable, ["-c", script], secret_env={"TOKEN": CANARY})
    result = await probe(endpoint)
    assert result.error_kind is ErrorKind.PROCESS_EXITED
    assert "token=*** was rejected" in (result.error or "") and CANARY not in (result.error or "")


# -- hostile programs ------------------------------------------------------------------------------

async def test_a_program_that_never_answers_times_out_and_is_stopped() -> None:
    plog = ProcessLog()
    endpoint = stdio("silent", plog=plog, connect_timeout=1.0)
    start = time.monotonic()
    result = await probe(endpoint)
    assert result.error_kind is ErrorKind.TIMEOUT, result.error
    assert result.error == f"timeout: no answer from the program `{endpoint.command.display}` within 1 s"  # type: ignore[union-attr]
    assert time.monotonic() - start < 8  # the deadline, plus a bounded shutdown
    assert plog.pid is None and plog.starts == 1

    session = McpSession(endpoint)
    with pytest.raises(ConnectorError) as err:
        await session.open()
    assert err.value.kind is ErrorKind.TIMEOUT and not err.value.delivered
    assert session.pid is None and plog.pid is None and plog.starts == 2


async def test_a_program_that_exits_at_once_says_why() -> None:
    result = await probe(stdio("exit_at_once"))
    assert result.error_kind is ErrorKind.PROCESS_EXITED
    assert result.error is not None and "exited with status 3 at once (before it answered)" in result.error
    assert "error: the config file /etc/demo.toml is missing ⏎ giving up" in result.error
    session = McpSession(stdio("exit_at_once"))
    with pytest.raises(ConnectorError) as err:
        await session.open()
    assert err.value.kind is ErrorKind.PROCESS_EXITED and "giving up" in str(err.value)


async def test_a_program_that_floods_stderr_is_bounded_and_still_served() -> None:
    plog = ProcessLog(max_lines=50, max_bytes=20_000)
    async with McpSession(stdio("flood", plog=plog)) as session:
        pid = session.pid
        with anyio.fail_after(20):
            while plog.stderr_chars < 2_000_000:  # ~100x what the log may keep
                await anyio.sleep(0.05)
        for i in range(5):
            assert (await session.call_tool("echo", {"text": f"still here {i}"})).text == f"still here {i}"
        kept = plog.tail(10_000)
        assert len(kept) <= 50 and sum(map(len, kept)) <= 20_000 + 50
        assert plog.dropped_chars > 1_000_000
    assert wait_gone([pid]) == []  # type: ignore[list-item]


async def test_a_program_printing_garbage_on_stdout_is_not_mcp() -> None:
    plog = ProcessLog()
    result = await probe(stdio("garbage", plog=plog, connect_timeout=1.5))
    assert result.error_kind is ErrorKind.NOT_MCP, result.error
    assert "printed text that is not JSON-RPC on stdout" in (result.error or "")
    assert "[stdout] hello, I am not an MCP server" in plog.tail()
    assert plog.junk_lines == 2 and plog.pid is None


async def test_a_message_over_the_cap_is_refused_while_it_is_read() -> None:
    plog = ProcessLog()
    result = await probe(stdio("huge_line", plog=plog, max_message_bytes=1_000_000, connect_timeout=5))
    assert result.error_kind is ErrorKind.TOO_LARGE, result.error
    assert "over the 1,000,000 byte limit" in (result.error or "")
    assert plog.pid is None  # and the program was stopped


async def test_spawn_failures_are_clear(tmp_path: Path) -> None:
    missing = await probe(Endpoint.stdio("no-such-mcp-server-xyz"))
    assert missing.error == ("spawn_failed: no program named 'no-such-mcp-server-xyz' was found — check the "
                             "command (and that it is on the PATH)")
    nowhere = await probe(Endpoint.stdio(sys.executable, ["-V"], cwd=str(tmp_path / "gone")))
    assert nowhere.error_kind is ErrorKind.SPAWN_FAILED and "gone' of `" in (nowhere.error or "")
    script = tmp_path / "server.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    denied = await probe(Endpoint.stdio(str(script)))
    assert denied.error_kind is ErrorKind.SPAWN_FAILED and "permission denied" in (denied.error or "")
    with pytest.raises(ConnectorError) as err:
        await McpSession(Endpoint.stdio("no-such-mcp-server-xyz")).open()
    assert err.value.kind is ErrorKind.SPAWN_FAILED and not err.value.delivered


# -- no orphans ------------------------------------------------------------------------------------

async def test_children_of_the_program_are_stopped_with_it() -> None:
    async with McpSession(stdio("serve")) as session:
        pid = session.pid
        assert pid is not None
        grandchild = int((await session.call_tool("spawn_child", {})).text)
        assert alive(grandchild) and grandchild in group_members(pid)
    assert wait_gone([pid, grandchild]) == []


async def test_a_leader_that_exits_leaving_a_child_is_cleaned_up() -> None:
    plog = ProcessLog()
    session = McpSession(stdio("hold_stdout", plog=plog, connect_timeout=5))
    with pytest.raises(ConnectorError) as err:
        await session.open()
    assert err.value.kind is ErrorKind.PROCESS_EXITED, err.value
    assert "exited with status 0 at once (before it answered)" in str(err.value)
    line = next(line for line in plog.tail() if line.startswith("leaving child "))
    child = int(line.split()[2])
    assert plog.pid is None and plog.last_exit == 0 and plog.starts == 1
    assert wait_gone([child]) == []  # the child it left holding stdout was stopped too


# -- the pool ---------------------------------------------------------------------------------------

async def test_pool_keeps_one_process_per_source_and_restarts_it_when_it_dies() -> None:
    pool = SessionPool()
    plog = ProcessLog()
    endpoint = stdio("serve", plog=plog)
    session, opened = await pool.session("ds_a", lambda: endpoint)
    assert opened
    first = session.pid
    assert first is not None

    async def echo(i: int) -> str:
        s, _ = await pool.session("ds_a", lambda: endpoint)
        return (await s.call_tool("echo", {"text": str(i)})).text

    results: list[str] = []
    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(lambda i=i: _collect(results, echo(i)))
    assert sorted(results) == sorted(str(i) for i in range(8))
    assert pool.sessions_opened["ds_a"] == 1 and plog.starts == 1

    with pytest.raises(ConnectorError) as err:
        await session.call_tool("crash", {"status": 7})
    assert err.value.kind is ErrorKind.PROCESS_EXITED and "status 7" in str(err.value)
    assert "crashing with status 7" in str(err.value)
    assert pool.pooled("ds_a") is None  # noticed at once: the next request does not fail
    assert wait_gone([first]) == []

    again, opened = await pool.session("ds_a", lambda: endpoint)
    assert opened and again.pid not in (None, first)
    assert (await again.call_tool("echo", {"text": "back"})).text == "back"
    assert plog.starts == 2 and plog.last_exit == 7
    second = again.pid
    await pool.aclose()
    assert wait_gone([second]) == []  # type: ignore[list-item]
    assert plog.pid is None


async def test_a_program_killed_from_outside_is_noticed_and_replaced() -> None:
    pool = SessionPool()
    endpoint = stdio("serve")
    session, _ = await pool.session("ds_k", lambda: endpoint)
    pid = session.pid
    assert pid is not None
    os.kill(pid, 9)
    with anyio.fail_after(5):
        while pool.pooled("ds_k") is not None:
            await anyio.sleep(0.02)
    again, opened = await pool.session("ds_k", lambda: endpoint)
    assert opened and (await again.call_tool("pid", {})).text == str(again.pid)
    await pool.aclose()
    assert wait_gone([again.pid]) == []  # type: ignore[list-item]


async def test_a_program_that_cannot_start_is_not_restarted_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from concierge.mcp_client import pool as pool_module

    monkeypatch.setattr(pool_module, "RESTART_BACKOFF", (0.5, 1.0))
    pool = SessionPool()
    plog = ProcessLog()
    endpoint = stdio("exit_at_once", plog=plog)
    with pytest.raises(ConnectorError) as first:
        await pool.session("ds_c", lambda: endpoint)
    assert first.value.kind is ErrorKind.PROCESS_EXITED
    for _ in range(5):  # a burst of calls meanwhile: no new process, the same reason
        with pytest.raises(ConnectorError) as held:
            await pool.session("ds_c", lambda: endpoint)
        assert held.value.kind is ErrorKind.PROCESS_EXITED and "giving up" in str(held.value)
        assert "(not started again for another" in str(held.value) and not held.value.delivered
    assert plog.starts == 1
    await anyio.sleep(0.6)
    with pytest.raises(ConnectorError):
        await pool.session("ds_c", lambda: endpoint)
    assert plog.starts == 2  # tried again after the wait (which now doubles)
    pool.evict("ds_c")  # a change to the source: try at once
    with pytest.raises(ConnectorError):
        await pool.session("ds_c", lambda: endpoint)
    assert plog.starts == 3
    await pool.aclose()


async def _collect(into: list[str], value: object) -> None:
    into.append(await value)  # type: ignore[misc]


# -- the pieces ----------------------------------------------------------------------------------

def test_process_log_is_bounded_and_redacts_across_chunks() -> None:
    plog = ProcessLog(max_lines=3, max_bytes=1000, max_line_chars=20)
    plog.started(1, [CANARY])
    plog.feed("one\ntwo\nthr")
    plog.feed("ee\n")
    assert plog.tail() == ["one", "two", "three"]
    plog.feed("four\n")
    assert plog.tail() == ["two", "three", "four"]
    plog.feed("key=" + CANARY[:7])
    plog.feed(CANARY[7:] + " end\n")
    assert plog.tail(1) == ["key=*** end"]
    plog.feed("y" * 10_000)
    plog.feed("y" * 10_000 + "\nafter\n")
    assert plog.tail(2) == ["y" * 20 + "…", "after"]
    assert plog.dropped_chars > 19_000
    plog.feed("\x1b[31mred\x1b[0m\x07 text")
    plog.exited(0)
    assert plog.tail(1) == ["red text"] and plog.last_exit == 0 and plog.pid is None


def test_stdio_endpoint_rules_and_repr() -> None:
    with pytest.raises(ValueError, match="needs a command"):
        Endpoint(transport="stdio")
    with pytest.raises(ValueError, match="only a stdio endpoint"):
        Endpoint(url="http://127.0.0.1:1/mcp", command=StdioCommand("x"))
    with pytest.raises(ValueError, match="no url, headers or auth"):
        Endpoint(url="http://x", transport="stdio", command=StdioCommand("x"))
    with pytest.raises(ValueError, match="command is required"):
        StdioCommand(" ")
    with pytest.raises(ValueError, match="env name '1X'"):
        StdioCommand("x", env={"1X": "a"})
    with pytest.raises(ValueError, match="both as a plain and as a secret"):
        StdioCommand("x", env={"K": "a"}, secret_env={"K": "b"})
    endpoint = Endpoint.stdio("uvx", ["mcp-server-git", "--repository", "/srv/my repo"],
                              secret_env={"GITHUB_TOKEN": CANARY})
    assert endpoint.where == "the program `uvx mcp-server-git --repository '/srv/my repo'`"
    assert endpoint.transports == ("stdio",)
    assert CANARY not in repr(endpoint) and "GITHUB_TOKEN" in repr(endpoint)
    assert CANARY in endpoint.secrets.values()
