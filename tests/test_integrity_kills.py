"""kill -9 in the middle of a health check: the source must not stay ``error`` / "health
check did not complete" forever. Real processes killed with SIGKILL, a real MCP server held
mid-check on loopback, the real `concierge serve` re-checking at start-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from concierge.backend import LocalBackend
from concierge.registry import Registry
from concierge.registry.service import PENDING_CHECK
from tests.mcp_servers import demo_app, free_port, serve_in_thread
from tests.registry_fixtures import HoldGate

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("engine")]

KILLS = int(os.environ.get("CONCIERGE_KILLS", "3"))
_REGISTER = """
import sys, anyio
from concierge.registry import Registry
reg = Registry.open(sys.argv[1])
anyio.run(reg.register, {"name": sys.argv[3], "base_url": sys.argv[2], "auth_kind": "none",
                         "app_namespace": sys.argv[3]})
"""


def _kill_mid_check(home: Path, gate: HoldGate, url: str, names: list[str]) -> None:
    """Register each source in a process of its own and SIGKILL it while its check is held."""
    for name in names:
        gate.hold()
        proc = subprocess.Popen([sys.executable, "-c", _REGISTER, str(home), url, name])
        try:
            assert gate.arrived.wait(30), "the health check never reached the server"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL


def _stuck(reg: Registry) -> list[str]:
    return [s.id for s in reg.list_sources() if s.status == "error" and s.health_error == PENDING_CHECK]


async def test_checks_interrupted_by_kill_are_rechecked_before_the_first_catalog(tmp_path):
    home = tmp_path / "home"
    Registry.open(home).close()
    gate = HoldGate(demo_app())
    names = [f"k{n}" for n in range(KILLS)]
    with serve_in_thread(gate) as srv:
        _kill_mid_check(home, gate, srv.url("/mcp"), names)
        reg = Registry.open(home)
        stuck = _stuck(reg)
        print(f"\nkilled mid-check: {len(stuck)} of {KILLS} sources left pending")
        assert len(stuck) == KILLS  # what the kills leave behind
        gate.release()  # the server answers from now on
        backend = LocalBackend(reg)
        catalog = await backend.agent_tools(None)
        left = _stuck(reg)
        print(f"after the first catalog: {len(left)} of {KILLS} still pending")
        assert left == []
        assert all(reg.get_source(sid).status == "active" for sid in stuck)
        assert {t.name.split("_")[0] for t in catalog.tools} >= set(names)
        # Once per backend: a later catalog does not re-check again.
        assert await backend.recover_interrupted_checks() == []
        await backend.aclose()


def test_serve_rechecks_interrupted_checks_at_start_up(tmp_path):
    home = tmp_path / "home"
    Registry.open(home).close()
    gate = HoldGate(demo_app())
    with serve_in_thread(gate) as srv:
        _kill_mid_check(home, gate, srv.url("/mcp"), ["s0", "s1"])
        gate.release()
        port = free_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "concierge", "serve", "--port", str(port), "--allow-anonymous-loopback"],
            env={**os.environ, "CONCIERGE_HOME": str(home)}, stderr=subprocess.PIPE, text=True)
        try:
            statuses: list[str] = []
            deadline = time.monotonic() + 30
            with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                while time.monotonic() < deadline:
                    try:
                        statuses = [s["status"] for s in client.get("/api/v1/storage/sources").json()["items"]]
                    except httpx2.TransportError:
                        statuses = []
                    if statuses and all(s == "active" for s in statuses):
                        break
                    time.sleep(0.1)
            assert statuses == ["active", "active"]  # without any request touching the catalog
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                _, err = serve.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                serve.kill()
                _, err = serve.communicate()
        assert "re-checked 2 source(s) whose health check was interrupted" in err
