"""``concierge ask`` and ``concierge chat`` through the real CLI entry point."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from concierge.cli import main
from concierge.cli.chat_cmds import EXIT_NEEDS_YOU, select_model
from concierge.registry import Registry
from tests.agent_fixtures import BEARER
from tests.fake_openai import serve_fake_openai, text_reply, tool_reply
from tests.mcp_servers import RunningServer


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CONCIERGE_MODEL"):
        monkeypatch.delenv(var, raising=False)


def sources() -> list[Any]:
    registry = Registry.open()
    try:
        return registry.list_sources()
    finally:
        registry.close()


def test_reads_are_answered(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "list my sources"]) == 0
    assert 'no MCP sources in sandbox "default"' in capsys.readouterr().out


def test_a_write_without_yes_says_what_it_would_do(open_server: RunningServer,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ask", f"Add {open_server.url()} with no auth, call it Demo"])
    out = capsys.readouterr().out
    assert code == EXIT_NEEDS_YOU == 3
    assert out.startswith('Would: Register the MCP server "Demo"') and "--yes" in out
    assert sources() == []


def test_a_write_with_yes_runs(open_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", f"Add {open_server.url()} with no auth, call it Demo", "--yes"]) == 0
    captured = capsys.readouterr()
    assert 'Done — "Demo" is registered' in captured.out
    assert '(--yes) Register the MCP server "Demo"' in captured.err
    assert [s.name for s in sources()] == ["Demo"]


def test_json_has_answer_tool_calls_and_results(open_server: RunningServer,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", f"Add {open_server.url()} with no auth, call it Demo", "--yes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stop_reason"] == "end_turn" and data["answer"].startswith('Done — "Demo"')
    assert [c["name"] for c in data["tool_calls"]] == ["list_sources", "register_source"]
    call = data["tool_calls"][-1]
    assert call["name"] == "register_source" and call["arguments"]["name"] == "Demo"
    assert call["result"]["status"] == "active"
    assert main(["ask", "test Demo", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in data["tool_calls"]] == ["list_sources", "test_source"]


def test_credentials_come_from_an_environment_variable(
        bearer_server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: no typing
    text = f"Add {bearer_server.url()} with a bearer token, call it Demo"
    assert main(["ask", text, "--yes"]) == EXIT_NEEDS_YOU
    assert 'Needs the bearer token for "Demo"' in capsys.readouterr().out
    assert sources() == []

    monkeypatch.setenv("DEMO_TOKEN", BEARER)
    transcript = tmp_path / "ask.jsonl"
    assert main(["ask", text, "--yes", "--token-env", "DEMO_TOKEN", "--transcript", str(transcript)]) == 0
    captured = capsys.readouterr()
    assert "registered" in captured.out
    assert BEARER not in captured.out + captured.err + transcript.read_text()
    (view,) = sources()
    assert view.has_token and view.status.value == "active"


def test_model_errors_exit_1(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with serve_fake_openai(api_key="sk-right") as fake:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        assert main(["ask", "list my sources"]) == 1
    assert "API key" in capsys.readouterr().err


def test_ask_with_an_openai_compatible_model(open_server: RunningServer, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with serve_fake_openai(api_key="sk-test") as fake:
        fake.enqueue(tool_reply(("list_sources", {})), text_reply("You have no sources."))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        assert main(["ask", "what do I have?", "--model", "gpt-test", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["answer"] == "You have no sources."
        assert data["tool_calls"][0]["result"]["count"] == 0
        assert fake.bodies[0]["model"] == "gpt-test"


def test_model_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_model()[0].name == "offline-planner"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("CONCIERGE_MODEL", "m-env")
    model, label = select_model()
    assert model.name == "m-env" and "m-env" in label
    assert select_model("m-flag")[0].name == "m-flag"
    assert select_model("m-flag", offline=True)[0].name == "offline-planner"


def test_bare_concierge_starts_the_chat(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr(sys, "stdin", io.StringIO("help\n"))
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Concierge · offline planner (set OPENAI_API_KEY to use a model)")
    assert "Rotate the token" in out
