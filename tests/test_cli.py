"""The non-conversational CLI, in-process (`tests.cli_fixtures.run_cli`) against a real demo
server process; the quick start also runs as real ``concierge`` processes, as a user would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_fixtures import CliResult, run_cli
from tests.mcp_servers import free_port

CANARY = "canary-CLI-TOKEN-93ab1f7e"


def run(home: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> CliResult:
    return run_cli(*args, home=home, stdin=stdin, env=env)


def run_process(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CONCIERGE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "concierge", *args], input=stdin, capture_output=True,
                          text=True, env=full_env, timeout=60)


@pytest.fixture(scope="module")
def demo_server() -> Iterator[str]:
    """`concierge demo-server --token` as its own process, as the README's quick start runs it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "concierge", "demo-server", "--port", str(port),
                             "--token", CANARY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read())
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert CANARY not in out + err


def test_quick_start_register_test_revoke(tmp_path, demo_server):
    home = tmp_path / "home"
    outputs = []
    add = run_process(home, "source", "user-mcp", "add", "Demo", "--url", demo_server, "--auth", "bearer",
                      "--token-stdin", "--namespace", "demo", "--json", stdin=CANARY + "\n")
    outputs.append(add.stdout + add.stderr)
    assert add.returncode == 0, add.stderr
    outcome = json.loads(add.stdout)
    assert set(outcome) == {"data_source_id", "status", "name", "ingestion_mode", "health_error", "error",
                            "detail", "authorize_url", "webhook_secret"}
    assert outcome["webhook_secret"]  # issued once, at registration
    assert outcome["status"] == "active"
    sid = outcome["data_source_id"]

    for args in (("source", "list"), ("source", "list", "--json"), ("source", "show", sid),
                 ("source", "show", sid, "--json"), ("source", "user-mcp", "test", sid),
                 ("audit", "--json"), ("audit",)):
        res = run_process(home, *args) if args == ("source", "list") else run(home, *args)
        assert res.returncode == 0, (args, res.stderr)
        outputs.append(res.stdout + res.stderr)
    shown = json.loads(run(home, "source", "show", sid, "--json").stdout)
    assert shown["has_token"] is True and shown["tool_count"] == 4 and "token" not in shown

    listed = run(home, "source", "list").stdout
    assert "Demo" in listed and "active" in listed

    revoke = run(home, "source", "user-mcp", "revoke", sid, "--json")
    assert revoke.returncode == 0 and json.loads(revoke.stdout)["status"] == "disconnected"
    outputs.append(revoke.stdout)
    for text in outputs:
        assert CANARY not in text
    db = home / "concierge.db"
    assert CANARY.encode() not in db.read_bytes()


def test_token_from_env_and_header_auth(tmp_path, demo_server):
    res = run(tmp_path, "source", "user-mcp", "add", "Env", "--url", demo_server, "--auth", "bearer",
              "--token-env", "MY_TOKEN", env={"MY_TOKEN": CANARY})
    assert res.returncode == 0 and "status=active" in res.stdout and CANARY not in res.stdout


def test_wrong_token_exits_1_and_explains(tmp_path, demo_server):
    res = run(tmp_path, "source", "user-mcp", "add", "Bad", "--url", demo_server, "--auth", "bearer",
              "--token-stdin", stdin="wrong-token-123\n")
    assert res.returncode == 1
    assert "status=error" in res.stdout and "unauthorized" in res.stdout


def test_validation_error_json_and_exit_1(tmp_path):
    res = run(tmp_path, "source", "user-mcp", "add", "X", "--url", "http://mcp.example.com", "--auth",
              "none", "--json")
    assert res.returncode == 1
    err = json.loads(res.stdout)
    assert err["error"] == "validation_error"
    assert "base_url must use https for mcp.example.com" in err["detail"]


def test_missing_token_env_explained(tmp_path):
    res = run(tmp_path, "source", "user-mcp", "add", "X", "--url", "https://mcp.example.com", "--auth",
              "bearer", "--token-env", "NOT_SET_ANYWHERE")
    assert res.returncode == 1 and "NOT_SET_ANYWHERE is not set" in res.stderr


def test_usage_errors_exit_2_and_token_is_never_an_argument(tmp_path):
    assert run(tmp_path, "source", "frobnicate").returncode == 2
    res = run(tmp_path, "source", "user-mcp", "add", "X", "--url", "https://x.example", "--auth", "bearer",
              "--token", CANARY)
    assert res.returncode == 2 and "a token is never taken as a plain argument" in res.stderr


def test_delete_needs_yes_and_unknown_id_is_404ish(tmp_path):
    res = run(tmp_path, "source", "delete", "ds_nope")
    assert res.returncode == 1 and "--yes" in res.stderr
    res = run(tmp_path, "source", "delete", "ds_nope", "--yes", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["error"] == "not_found"


def test_sandbox_and_agent_commands(tmp_path):
    assert run(tmp_path, "sandbox", "create", "staging").returncode == 0
    names = [s["name"] for s in json.loads(run(tmp_path, "sandbox", "list", "--json").stdout)["items"]]
    assert names == ["default", "staging"]
    res = run(tmp_path, "agent", "create", "support", "--sandbox", "staging", "--allowlist", "demo_*", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["tool_allowlist"] == ["demo_*"]
    shown = run(tmp_path, "agent", "show", "support", "--sandbox", "staging")
    assert "demo_*" in shown.stdout
    bad = run(tmp_path, "agent", "create", "Bad Slug")
    assert bad.returncode == 1 and "slug 'Bad Slug' may only use lowercase" in bad.stderr
    paused = run(tmp_path, "agent", "pause", "support", "--sandbox", "staging")
    assert paused.returncode == 0 and paused.stdout.strip() == (
        "paused agent support: the gateway refuses its tool calls until `concierge agent resume support`")
    assert "status: paused" in run(tmp_path, "agent", "show", "support", "--sandbox", "staging").stdout
    resumed = run(tmp_path, "agent", "resume", "support", "--sandbox", "staging", "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["status"] == "active"
    missing = run(tmp_path, "agent", "pause", "nobody")
    assert missing.returncode == 1 and "no agent 'nobody' in sandbox 'default'" in missing.stderr


@pytest.mark.parametrize("argv", [["--json", "sandbox", "list"], ["sandbox", "list", "--json"],
                                  ["--json", "sandbox", "list", "--json"]])
def test_json_works_before_and_after_the_command(tmp_path, argv):
    res = run(tmp_path, *argv)
    assert res.returncode == 0, res.stderr
    assert [s["name"] for s in json.loads(res.stdout)["items"]] == ["default"]


def test_without_json_a_table_is_printed(tmp_path):
    res = run(tmp_path, "sandbox", "list")
    assert res.returncode == 0 and not res.stdout.lstrip().startswith("[") and "default" in res.stdout


def test_an_error_is_json_whichever_side_json_is_on(tmp_path):
    for argv in (["--json", "source", "show", "ds_nope"], ["source", "show", "ds_nope", "--json"]):
        res = run(tmp_path, *argv)
        assert res.returncode == 1 and json.loads(res.stdout)["error"] == "not_found", argv


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """Found by hand: `concierge audit --json | head -c 100` printed a BrokenPipeError traceback."""
    for i in range(150):
        assert run(tmp_path, "agent", "create", f"agent-{i}").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "concierge", "audit", "--json", "--limit", "1000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "CONCIERGE_HOME": str(tmp_path)})
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100)  # the reader takes a little and goes away, like `head -c 100`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_a_mistyped_flag_names_the_command_and_the_closest_flag(tmp_path: Path) -> None:
    """Found by hand: `--app-namespace` (the API's field) got the top-level usage and no hint."""
    out = run(tmp_path, "source", "user-mcp", "add", "Docs", "--url", "http://127.0.0.1:9/mcp",
              "--auth", "none", "--app-namespace", "docs")
    assert out.returncode == 2
    assert "usage: concierge source user-mcp add" in out.stderr
    assert "concierge source user-mcp add: error: unrecognized argument --app-namespace " \
           "(did you mean --namespace?)" in out.stderr
    out = run(tmp_path, "agent", "list", "extra")
    assert out.returncode == 2 and "concierge agent list: error: unexpected argument extra" in out.stderr
    assert run(tmp_path, "source", "list").returncode == 0  # nothing was registered
    assert "no sources yet" in run(tmp_path, "source", "list").stdout
