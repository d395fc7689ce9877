"""Pull: a source's ingest_tool_calls through the gateway path, stored when they change."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import anyio
import pytest

from concierge.cli import main
from concierge.errors import Conflict
from concierge.registry import Registry
from concierge.store.schema import REGISTRY
from tests.catalog_fixtures import Upstream, register, serve_upstream

CANARY = "canary-INGEST-TOKEN-21b7d9"
CALLS = [{"name": "list_docs", "arguments": {"limit": 2}}, {"name": "status", "arguments": {}}]


def stored_rows(reg: Registry, source_id: str) -> list[dict]:
    return reg.store.query("SELECT * FROM ingested_results WHERE source_id = ? ORDER BY id", (source_id,))


@pytest.mark.anyio
async def test_pull_stores_changed_results_with_time_and_hash(backend) -> None:
    reg = backend.registry
    up = Upstream(tools=[("list_docs", "L."), ("status", "S.")],
                  replies={"list_docs": "doc-1, doc-2", "status": "green"}, token=CANARY)
    with serve_upstream(up) as u:
        sid = await register(reg, u.url(), "kb", auth_kind="bearer", token=CANARY, ingest_tool_calls=CALLS)
        assert reg.get_source(sid).ingestion_mode == "pull"

        first = await backend.pull_source(sid)
        assert (first.calls, first.stored, first.unchanged, first.skipped, first.errors) == (2, 2, 0, 0, [])
        assert up.calls == [("list_docs", {"limit": 2}), ("status", {})]
        rows = stored_rows(reg, sid)
        assert [(r["tool_name"], r["arguments"], r["content"]["text"]) for r in rows] == [
            ("list_docs", {"limit": 2}, "doc-1, doc-2"), ("status", {}, "green")]
        for row in rows:
            datetime.fromisoformat(row["fetched_at"].replace("Z", "+00:00"))  # a real timestamp
            expected = hashlib.sha256(json.dumps(
                [row["content"]["content"], row["content"]["structured_content"]],
                sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
            assert row["content_hash"] == expected

        second = await backend.pull_source(sid)  # nothing changed upstream: nothing new stored
        assert (second.calls, second.stored, second.unchanged) == (2, 0, 2)
        assert len(stored_rows(reg, sid)) == 2

        up.replies["status"] = "amber"  # one result changes
        third = await backend.pull_source(sid)
        assert (third.stored, third.unchanged) == (1, 1)
        newest = backend.ingestor.results(sid, limit=1)[0]
        assert newest.tool_name == "status" and newest.content["text"] == "amber"
        assert len(backend.ingestor.results(sid)) == 3

        up.replies["status"] = "green"  # back to an older value: still a change from the last one
        assert (await backend.pull_source(sid)).stored == 1
        assert CANARY not in json.dumps(stored_rows(reg, sid))


@pytest.mark.anyio
async def test_pull_goes_through_the_gateway_caps_and_pool(backend) -> None:
    reg = backend.registry
    up = Upstream(tools=[("a", "A."), ("b", "B."), ("c", "C.")])
    calls = [{"name": n, "arguments": {"text": n}} for n in ("a", "b", "c")]
    with serve_upstream(up) as u:
        sid = await register(reg, u.url(), "kb", ingest_tool_calls=calls, rate_cap_per_minute=2)
        result = await backend.pull_source(sid)
        assert (result.calls, result.stored, result.skipped) == (3, 2, 0)
        assert len(result.errors) == 1 and "rate cap reached" in result.errors[0]
        assert [c[0] for c in up.calls] == ["a", "b"]  # the capped call never reached the server
        assert backend.gateway.sessions_opened == {sid: 1}  # one pooled session for the whole pull

        again = await backend.pull_source(sid)  # the bucket is still empty: stops at once
        assert (again.calls, again.stored, again.skipped) == (1, 0, 2)
        assert "not run" in again.errors[0]


@pytest.mark.anyio
async def test_tool_errors_are_reported_not_stored(backend) -> None:
    reg = backend.registry
    up = Upstream(tools=[("ok", "OK."), ("broken", "B.")], errors={"broken"})
    calls = [{"name": "broken", "arguments": {}}, {"name": "ok", "arguments": {}}]
    with serve_upstream(up) as u:
        sid = await register(reg, u.url(), "kb", ingest_tool_calls=calls)
        result = await backend.pull_source(sid)
        assert (result.calls, result.stored) == (2, 1)
        assert result.errors == ["broken: the tool returned an error: broken failed"]
        assert [r["tool_name"] for r in stored_rows(reg, sid)] == ["ok"]


@pytest.mark.anyio
async def test_pull_needs_an_active_source_with_ingest_calls(backend) -> None:
    reg = backend.registry
    up = Upstream()
    with serve_upstream(up) as u:
        live = await register(reg, u.url(), "live")
        assert reg.get_source(live).ingestion_mode == "live_tools_only"
        with pytest.raises(Conflict, match="no ingest_tool_calls") as info:
            await backend.pull_source(live)
        assert info.value.error == "nothing_to_pull"

        sid = await register(reg, u.url(), "kb", ingest_tool_calls=[{"name": "echo", "arguments": {}}])
        reg.pause(sid)
        with pytest.raises(Conflict, match="paused"):
            await backend.pull_source(sid)
        await reg.resume(sid)
        assert (await backend.pull_source(sid)).stored == 1

        await reg.update(sid, {"ingest_tool_calls": None})
        assert reg.get_source(sid).ingestion_mode == "live_tools_only"


@pytest.mark.anyio
async def test_permanent_delete_removes_ingested_results(backend) -> None:
    reg = backend.registry
    assert reg.store.schema_version["registry"] == REGISTRY.latest >= 2
    up = Upstream()
    with serve_upstream(up) as u:
        sid = await register(reg, u.url(), "kb", ingest_tool_calls=[{"name": "echo", "arguments": {"text": "x"}}])
        keep = await register(reg, u.url(), "keep", ingest_tool_calls=[{"name": "echo", "arguments": {}}])
        await backend.pull_source(sid)
        await backend.pull_source(keep)
        reg.revoke(sid)
        assert len(stored_rows(reg, sid)) == 1  # revoke keeps history; delete removes it
        reg.delete_source(sid)
        assert stored_rows(reg, sid) == [] and len(stored_rows(reg, keep)) == 1


def test_cli_source_pull(capsys: pytest.CaptureFixture[str]) -> None:
    up = Upstream(tools=[("status", "S.")], replies={"status": "green"})
    with serve_upstream(up) as u:
        reg = Registry.open()
        try:
            sid = anyio.run(lambda: register(reg, u.url(), "kb",
                                             ingest_tool_calls=[{"name": "status", "arguments": {}}]))
        finally:
            reg.close()
        assert main(["source", "pull", sid, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert (data["source_id"], data["calls"], data["stored"], data["unchanged"]) == (sid, 1, 1, 0)
        assert main(["source", "pull", sid]) == 0
        assert capsys.readouterr().out.strip() == f"{sid}: 1 calls, 0 new results stored, 1 unchanged"
