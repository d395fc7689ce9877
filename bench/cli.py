"""CLI start-up benchmark. Prints numbers; asserts nothing.

    .venv/bin/python bench/cli.py [--runs 15]

Median wall time of whole ``concierge`` processes, beside ``python -c pass`` measured in the
same run (the interpreter's own start-up on this machine, right now):

1. ``concierge --help``;
2. ``concierge source list`` with 100 sources (in their own sandbox) plus one more;
3. ``concierge agent tools support``: the local catalog, listed live from a demo MCP server
   (``concierge demo-server`` in a child process);
4. ``concierge --api-url URL agent tools support``: the same through a ``concierge serve``
   whose catalog cache is warm (the "cached" case: one HTTP call, no MCP in the CLI).

Commands are run round-robin, so a burst of load on the machine hits all of them alike.
Goal: the first two within 0.4 s.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MASTER_KEY = "00" * 32
BIN = Path(sys.executable).parent
CONCIERGE = str(BIN / "concierge")
GOAL_S = 0.4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            httpx2.get(url, timeout=1.0)
            return
        except httpx2.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _setup(env: dict[str, str], mcp_url: str) -> None:
    """100 sources in sandbox ``bench`` (registered without a probe), one live demo source and
    an agent in ``default``."""
    import anyio

    from concierge.mcp_client import Endpoint, ProbeResult
    from concierge.registry import Registry

    async def no_probe(endpoint: Endpoint) -> ProbeResult:
        return ProbeResult(ok=True, tools=(), tool_count=4, server_name="bench", server_version=None,
                           protocol_version=None, latency_ms=0.0, error_kind=None, error=None,
                           http_status=None)

    async def fill() -> None:
        registry = Registry.open(env["CONCIERGE_HOME"], prober=no_probe)
        try:
            registry.create_sandbox("bench")
            for i in range(100):
                await registry.register({"name": f"Source {i:03d}", "base_url": f"https://mcp{i}.example.com/mcp",
                                         "auth_kind": "bearer", "token": f"test-token-{i:06d}",
                                         "app_namespace": f"src{i:03d}"}, sandbox="bench")
        finally:
            registry.close()
        live = Registry.open(env["CONCIERGE_HOME"])
        try:
            await live.register({"name": "Demo", "base_url": mcp_url, "auth_kind": "bearer",
                                 "token": "demo-token-123", "app_namespace": "demo"})
            live.create_agent({"slug": "support", "tool_sources": ["user_mcp"], "tool_allowlist": ["*"]})
        finally:
            live.close()

    old = {k: os.environ.get(k) for k in ("CONCIERGE_HOME", "CONCIERGE_MASTER_KEY")}
    os.environ.update({k: env[k] for k in old})
    try:
        anyio.run(fill)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="concierge-bench-cli-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCIERGE_", "OPENAI_"))}
        env |= {"CONCIERGE_HOME": str(Path(tmp) / "home"), "CONCIERGE_MASTER_KEY": MASTER_KEY}
        mcp_port, api_port = _free_port(), _free_port()
        children = [subprocess.Popen([CONCIERGE, "demo-server", "--port", str(mcp_port), "--token",
                                      "demo-token-123"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)]
        try:
            mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
            _wait_http(mcp_url)
            _setup(env, mcp_url)
            children.append(subprocess.Popen(
                [CONCIERGE, "serve", "--port", str(api_port), "--allow-anonymous-loopback"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            api_url = f"http://127.0.0.1:{api_port}"
            _wait_http(api_url + "/api/v1/health")
            cases = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "concierge --help": [CONCIERGE, "--help"],
                "concierge source list (101 sources)": [CONCIERGE, "source", "list"],
                "concierge agent tools (local, live listing)": [CONCIERGE, "agent", "tools", "support"],
                "concierge agent tools (--api-url, cached)": [CONCIERGE, "--api-url", api_url, "agent",
                                                              "tools", "support"],
            }
            for argv in cases.values():  # warm the OS cache and the server's catalog cache
                _time(argv, env)
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.runs):
                for name, argv in cases.items():
                    times[name].append(_time(argv, env))
        finally:
            for child in children:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:  # still serving an open connection
                    child.kill()
                    child.wait(timeout=10)

    base = statistics.median(times["python -c pass"])
    print(f"CLI start-up, median of {args.runs} runs each (round-robin), {os.cpu_count()} cores")
    print(f"{'command':48} {'median':>8} {'min':>8} {'÷ python':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:48} {median:7.3f}s {min(values):7.3f}s {median / base:8.1f}x")
    for name in ("concierge --help", "concierge source list (101 sources)"):
        median = statistics.median(times[name])
        print(f"goal ≤ {GOAL_S} s for {name}: {'met' if median <= GOAL_S else 'NOT met'} ({median:.3f} s)")


if __name__ == "__main__":
    main()
