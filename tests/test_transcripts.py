"""Golden conversations: every transcript in transcripts/ is replayed and must match exactly.

Each file is replayed twice against real loopback MCP servers and a real LocalBackend:
with the offline planner (the planner's behaviour is pinned) and with a ScriptedModel fed
the recorded model replies (the engine's behaviour — gate, secrets, tools, events — is pinned
independently of the planner). Ids, times, latencies and server ports are normalized; all
else must be identical. Re-record with ``python -m tests.transcript_fixtures`` after an
intended change, and read the diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from concierge.agent.events import to_record
from concierge.agent.models import OfflinePlanner, ScriptedModel
from concierge.agent.session import ConciergeSession
from concierge.agent.transcript import canonical, model_steps, read_transcript, replay
from tests.transcript_fixtures import SCENARIOS, TOKENS, TRANSCRIPTS, normalizer_for, servers_for, setup_backend

FILES = sorted(TRANSCRIPTS.glob("*.jsonl"))
REQUIRED = {"register_bearer", "register_header", "register_no_auth", "declined_confirmation",
            "http_non_local", "failed_health_check", "test_health", "revoke_disambiguation",
            "rotate_token", "rename_rate_cap", "agent_tools", "list_sources"}


async def run_replay(lines: list[dict[str, Any]], mode: str) -> tuple[list[Any], list[Any], Any]:
    """(expected, actual, model) for one recording replayed in ``mode``."""
    meta = lines[0]["meta"]
    recorded = normalizer_for(meta["servers"])
    expected = canonical([line for line in lines if line["kind"] == "event"], recorded)
    with servers_for(tuple(meta["servers"])) as urls:
        live = normalizer_for(urls)
        backend = await setup_backend(meta["scenario"], urls)

        def translate(obj: Any) -> Any:
            return recorded.translate_to(live, obj)

        model = OfflinePlanner() if mode == "offline" else ScriptedModel(model_steps(lines, translate))
        records: list[dict[str, Any]] = []

        def on_event(event: Any) -> None:
            record = to_record(event)
            records.append(record)
            live(record)  # learn the live ids as they appear, for translating later replies

        session = ConciergeSession(backend, model)
        try:
            await replay(lines, session, secret_value=lambda i, line: TOKENS[meta["secrets"][i]],
                         translate=translate, on_event=on_event)
        finally:
            await backend.aclose()
    return expected, canonical(records, normalizer_for(urls)), model


def test_every_required_flow_has_a_golden_transcript() -> None:
    names = {p.stem for p in FILES}
    assert REQUIRED <= names, f"missing golden transcripts: {sorted(REQUIRED - names)}"
    assert names == set(SCENARIOS), "transcripts/ and tests/transcript_fixtures.py SCENARIOS differ"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_transcript_holds_no_secret_values(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for value in TOKENS.values():
        assert value not in text
    lines = read_transcript(path)
    for line in lines:
        if line["kind"] == "input" and line["input"] == "secret":
            assert set(line) == {"kind", "input", "id", "ref"}  # a reference, never a value


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["offline", "scripted"])
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
async def test_golden_transcript_replays_exactly(path: Path, mode: str) -> None:
    expected, actual, model = await run_replay(read_transcript(path), mode)
    if actual != expected:
        for i, (want, got) in enumerate(zip(expected, actual)):
            if want != got:
                pytest.fail(f"{path.name} ({mode}): event {i} differs\n"
                            f"recorded: {json.dumps(want)}\nreplayed: {json.dumps(got)}")
        pytest.fail(f"{path.name} ({mode}): {len(expected)} events recorded, {len(actual)} replayed")
    if mode == "scripted":
        model.assert_complete()


@pytest.mark.anyio
async def test_replay_fails_when_behaviour_changes() -> None:
    lines = read_transcript(TRANSCRIPTS / "revoke_disambiguation.jsonl")
    # Pretend the person picked the other source: the planner now revokes a different one.
    tampered = [dict(line, text="the prod one") if line.get("text") == "the staging one" else line
                for line in lines]
    expected, actual, _ = await run_replay(tampered, "offline")
    assert actual != expected
