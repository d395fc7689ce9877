"""``concierge ask`` exit codes through the real CLI, against real servers on loopback (found by
hand: a question back, a refusal and a failing health check all exited 0).

    0 done · 1 error · 2 usage · 3 stopped before a change · 4 needs more information
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import anyio
import pytest

from concierge.cli import main
from concierge.cli.chat_cmds import EXIT_ERROR, EXIT_NEEDS_INFO, EXIT_NEEDS_YOU, EXIT_OK, EXIT_USAGE
from concierge.registry import Registry
from tests.mcp_servers import RunningServer, closed_port_url


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CONCIERGE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: nothing is typed


def ask(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["ask", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def register(url: str, name: str, namespace: str) -> None:
    registry = Registry.open()
    try:
        anyio.run(lambda: registry.register({"name": name, "base_url": url, "auth_kind": "none",
                                             "app_namespace": namespace}))
    finally:
        registry.close()


def test_the_codes_are_distinct() -> None:
    assert (EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NEEDS_YOU, EXIT_NEEDS_INFO) == (0, 1, 2, 3, 4)


def test_an_answer_is_done(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = ask(capsys, "list my sources")
    assert (code, data["outcome"], data["exit_code"]) == (EXIT_OK, "done", 0)


def test_a_change_that_ran_is_done(open_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = ask(capsys, f"Add {open_server.url()} with no auth, call it Demo", "--yes")
    assert (code, data["outcome"]) == (EXIT_OK, "done")
    assert data["tool_calls"][-1]["result"]["status"] == "active"


def test_a_question_back_needs_more_information(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = ask(capsys, "add https://mcp.example.com/mcp")
    assert (code, data["outcome"]) == (EXIT_NEEDS_INFO, "needs_info")
    assert len(data["questions"]) == 1 and "authenticate" in data["questions"][0]


def test_which_one_do_you_mean_needs_more_information(open_server: RunningServer,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    register(open_server.url(), "Acme docs", "acme_docs")
    register(open_server.url(), "Acme tools", "acme_tools")
    code = main(["ask", "test acme"])
    out = capsys.readouterr().out
    assert code == EXIT_NEEDS_INFO and out.startswith("Which one do you mean?")


def test_a_failing_health_check_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = ask(capsys, f"Add {closed_port_url()} with no auth, call it Dead", "--yes")
    assert (code, data["outcome"]) == (EXIT_ERROR, "error")
    assert data["errors"][0]["kind"] == "health"
    code, data = ask(capsys, "test Dead")  # a read whose health check fails
    assert (code, data["outcome"]) == (EXIT_ERROR, "error")


def test_a_refusal_is_an_error(open_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    register(open_server.url(), "Demo", "demo")
    code = main(["ask", "delete Demo"])
    out = capsys.readouterr().out
    assert code == EXIT_ERROR and "concierge source delete ds_" in out
    registry = Registry.open()
    try:
        assert len(registry.list_sources()) == 1  # nothing was deleted
    finally:
        registry.close()


def test_not_understood_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, data = ask(capsys, "blah blah")
    assert (code, data["outcome"]) == (EXIT_ERROR, "error")
    assert data["errors"][0]["kind"] == "refusal"


def test_stopped_before_a_change(open_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = ask(capsys, f"Add {open_server.url()} with no auth, call it Demo")
    assert (code, data["outcome"]) == (EXIT_NEEDS_YOU, "needs_confirmation")
    assert data["pending"]["event"] == "confirmation_required"
    code, data = ask(capsys, f"Add {open_server.url()} with a bearer token, call it Demo", "--yes")
    assert (code, data["outcome"]) == (EXIT_NEEDS_YOU, "needs_secret")


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "x" * 4001])
def test_empty_or_oversized_text_is_a_usage_error(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ask", text])
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "argument TEXT:" in err and ("is empty" in err or "the limit is 4,000" in err)
