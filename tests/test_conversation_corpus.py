"""The conversation corpus (tests/data/conversations) through real sessions: the issue's goals.

At least 400 conversations; at least 97 % right (overall and on the first held-out set);
no write proposed on a source or agent the person did not mean; no dead end (six messages
without reaching the outcome). `bench/conversation.py` prints the same run in detail. The
held-out sets' first measurements (before their misses were tuned on) are in their headers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from concierge.agent.models.base import ModelResponse, ToolCall
from tests.data import corpus


@pytest.fixture(scope="module")
def report() -> Iterator[corpus.Report]:
    logging.disable(logging.WARNING)  # health checks of the corpus's broken servers log warnings
    try:
        yield anyio.run(corpus.run_corpus)
    finally:
        logging.disable(logging.NOTSET)


def _misses(outcomes: list[corpus.Outcome]) -> str:
    return "\n".join(f"{o.case.id} [{o.case.intent}] {o.why}: {o.case.turns}" for o in outcomes[:15])


def test_the_corpus_is_big_and_has_a_held_out_part(report: corpus.Report) -> None:
    splits = report.splits()
    assert len(report.outcomes) >= 400
    assert splits["heldout"] >= 150 and splits["dev"] >= 250
    assert len(report.by_intent()) >= 25


def test_accuracy_is_at_least_97_percent(report: corpus.Report) -> None:
    assert report.accuracy() >= 0.97, _misses(report.failures)
    assert report.accuracy("heldout") >= 0.97, _misses([o for o in report.failures if o.case.split == "heldout"])


def test_no_write_on_the_wrong_target(report: corpus.Report) -> None:
    assert report.wrong_target == [], _misses(report.wrong_target)


def test_no_dead_ends(report: corpus.Report) -> None:
    assert report.dead_ends == [], _misses(report.dead_ends)


class _Reckless:
    """A planner that pauses whatever source it sees first and keeps asking otherwise."""

    name = "reckless"

    async def respond(self, messages: list[dict[str, Any]], tools: Any, *, on_text: Any = None) -> ModelResponse:
        last = messages[-1]
        if last["role"] == "user":
            return ModelResponse(tool_calls=(ToolCall("c1", "list_sources", {}),), finish_reason="tool_calls")
        if last["role"] == "tool" and '"sources"' in str(last["content"]):
            import json

            rows = json.loads(last["content"])["sources"]
            if rows:
                return ModelResponse(tool_calls=(ToolCall("c2", "pause_source", {"source": rows[0]["id"]}),),
                                     finish_reason="tool_calls")
        if on_text is not None:
            await on_text("Which one?")
        return ModelResponse(text="Which one?")


def test_the_scoring_catches_wrong_targets_and_dead_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus can fail: a reckless planner is caught writing to the wrong source."""
    from concierge.agent.models.offline.state import Say

    class Recorder(corpus._Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.planner = _Reckless()  # type: ignore[assignment]

        async def respond(self, messages: Any, tools: Any, *, on_text: Any = None) -> Any:
            self.steps.append(Say("Which one?", "ask", asks="which", ends=False))
            return await self.planner.respond(messages, tools, on_text=on_text)

    monkeypatch.setattr(corpus, "_Recorder", Recorder)
    cases = [c for c in corpus.load() if c.world == "acme" and c.expect.tool == "revoke_source"][:2]
    cases += [c for c in corpus.load() if c.world == "mixed" and c.intent == "test"][:1]
    logging.disable(logging.WARNING)
    try:
        report = anyio.run(corpus.run_corpus, cases)
    finally:
        logging.disable(logging.NOTSET)
    assert report.accuracy() == 0.0
    assert len(report.wrong_target) >= 2 and len(report.dead_ends) >= 1
