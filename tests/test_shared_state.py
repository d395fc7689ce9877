"""State that must be shared by every process on one database (issue #10): rate caps that
hold across ``concierge`` processes, and the evictions that reset them — real subprocesses,
on both engines (SQLite: the default file in the home; PostgreSQL: CONCIERGE_DATABASE_URL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from concierge.registry import Registry
from tests.catalog_fixtures import Upstream, register, serve_upstream

pytestmark = pytest.mark.usefixtures("engine")


def _concierge(*args: str, timeout: float = 60) -> dict[str, Any]:
    """``concierge ARGS --json`` as a process of its own; its exit code and JSON answer."""
    proc = subprocess.run([sys.executable, "-m", "concierge", *args, "--json"], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))
    try:
        answer = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        answer = {"raw": proc.stdout}
    return {"code": proc.returncode, "answer": answer, "stderr": proc.stderr}


def _call(tool: str) -> dict[str, Any]:
    return _concierge("tool", "call", tool, "--agent", "bot", "--args", '{"text": "x"}')


def _setup(url: str, cap: int) -> str:
    reg = Registry.open()
    try:
        sid = anyio.run(lambda: register(reg, url, "acme", rate_cap_per_minute=cap))
        reg.create_agent({"slug": "bot"})
        return sid
    finally:
        reg.close()


def test_three_tool_call_processes_share_one_cap_of_two(engine: str) -> None:
    up = Upstream()
    with serve_upstream(up) as u:
        _setup(u.url(), cap=2)
        results = [_call("acme_echo") for _ in range(3)]
    assert [r["code"] for r in results] == [0, 0, 1], results
    assert results[2]["answer"]["error"] == "rate_limited", results[2]
    assert "2 calls per minute" in results[2]["answer"]["detail"]
    assert len(up.calls) == 2  # the refused call never reached the server


def test_pause_in_another_process_evicts_the_bucket_everywhere(engine: str) -> None:
    up = Upstream()
    with serve_upstream(up) as u:
        sid = _setup(u.url(), cap=1)
        assert _call("acme_echo")["code"] == 0
        reg = Registry.open()  # this process, beside the CLI processes
        try:
            assert reg.store.query("SELECT subject FROM rate_buckets") == [{"subject": sid}]
            reg.pause(sid)  # drops the buckets, in the pausing transaction
            assert reg.store.query("SELECT subject FROM rate_buckets") == []
            anyio.run(lambda: reg.resume(sid))
            assert _call("acme_echo")["code"] == 0  # a fresh bucket for the next process
            assert _call("acme_echo")["answer"]["error"] == "rate_limited"
            reg.revoke(sid)  # revoke drops them too
            assert reg.store.query("SELECT subject FROM rate_buckets") == []
        finally:
            reg.close()


@pytest.mark.anyio
async def test_a_change_on_one_instance_reaches_the_others_catalog_on_its_next_resolve(engine: str) -> None:
    from concierge.backend import LocalBackend

    up = Upstream()
    with serve_upstream(up) as u:
        a, b = LocalBackend(Registry.open()), LocalBackend(Registry.open())  # two instances, one database
        try:
            sid = await register(a.registry, u.url(), "acme")
            a.registry.create_agent({"slug": "bot"})
            heard: list[tuple[str, str]] = []
            a.catalog.on_change(lambda source_id, what: heard.append((source_id, what)))
            assert [t.name for t in (await a.agent_tools("bot")).tools] == ["acme_echo"]
            await a.call_tool("acme_echo", {"text": "x"}, agent="bot")
            assert a.gateway.pooled(sid) is not None and a.catalog.cached(sid)

            b.registry.pause(sid)  # on instance B: A is not told in-process
            assert heard == [] and a.catalog.cached(sid)
            result = await a.agent_tools("bot")  # A's next resolve follows the change feed
            assert result.tools == [] and heard == [(sid, "pause")]
            assert not a.catalog.cached(sid) and a.gateway.pooled(sid) is None  # listing and session dropped

            await b.registry.resume(sid)
            b.registry.revoke(sid)
            await a.agent_tools("bot")
            assert (sid, "revoke") in heard and (sid, "pause") in heard
            assert not any(action == "register" for _, action in heard)  # A's own change is not replayed
        finally:
            for backend in (a, b):
                await backend.aclose()


def test_database_url_flag_selects_the_database_and_a_bad_one_is_named(tmp_path: Path, engine: str) -> None:
    from tests.cli_fixtures import run_cli

    other = tmp_path / "elsewhere.db"
    made = run_cli("--database-url", f"sqlite://{other}", "sandbox", "create", "flagged", "--json")
    assert made.returncode == 0, made.stderr
    assert other.exists()
    listed = run_cli("sandbox", "list", "--json", "--database-url", f"sqlite://{other}")  # after the command too
    assert "flagged" in listed.stdout
    assert "flagged" not in run_cli("sandbox", "list", "--json").stdout  # the default database is another one
    bad = run_cli("--database-url", "mysql://u@h/db", "source", "list", "--json")
    assert bad.returncode == 1
    error = json.loads(bad.stdout)
    assert "--database-url" in error["detail"] and "unsupported scheme" in error["detail"]
