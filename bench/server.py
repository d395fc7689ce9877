"""HTTP service benchmarks. Prints numbers; asserts nothing.

    .venv/bin/python bench/server.py [--requests 300] [--concurrency 8] [--sources 50]

The server (``build_app`` under uvicorn, API keys on, the registry's health check replaced by
a no-op prober) runs in a child process; this process drives it over loopback with httpx2,
first one request at a time (latency), then ``--concurrency`` clients at once (throughput).

1. register a user_mcp source (no probe: store + vault + webhook secret + audit);
2. list a sandbox's sources (``--sources`` rows);
3. an agent's resolved catalog, warm (listings cached; the demo MCP server is on loopback too).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MASTER_KEY = "00" * 32
SB = "/api/v1/storage/sandboxes/default"


# -- the server process -------------------------------------------------------------------------

def serve(home: str, port: int) -> None:
    """Child process: the service on 127.0.0.1:port, plus a demo MCP server for the catalog."""
    import uvicorn

    from concierge.backend import LocalBackend
    from concierge.mcp_client import Endpoint, ProbeResult
    from concierge.registry import Registry
    from concierge.server import build_app
    from tests.mcp_servers import demo_app, serve_in_thread

    async def no_probe(endpoint: Endpoint) -> ProbeResult:
        return ProbeResult(ok=True, tools=(), tool_count=0, server_name="bench", server_version=None,
                           protocol_version=None, latency_ms=0.0, error_kind=None, error=None,
                           http_status=None)

    with serve_in_thread(demo_app()) as mcp:
        registry = Registry.open(home, prober=no_probe)
        app = build_app(backend_factory=lambda: LocalBackend(registry))
        print(mcp.url(), flush=True)  # tells the driver where the MCP server is
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the driver ---------------------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx2.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def sequential(client: httpx2.Client, n: int, request: Callable[[int], httpx2.Response]) -> list[float]:
    times = []
    for i in range(n):
        t = time.perf_counter()
        r = request(i)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code < 300, r.text
    return times


async def concurrent(url: str, headers: dict[str, str], n: int, workers: int,
                     make: Callable[[int], tuple[str, str, Any]]) -> float:
    """Requests per second with ``workers`` clients sharing ``n`` requests."""
    counter = iter(range(n))

    async def worker(client: httpx2.AsyncClient) -> None:
        for i in counter:
            method, path, body = make(i)
            r = await client.request(method, path, json=body)
            assert r.status_code < 300, r.text

    async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=60,
                                  limits=httpx2.Limits(max_connections=workers)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(workers)))
        return n / (time.perf_counter() - start)


def report(name: str, times: list[float], rps_parallel: float, workers: int) -> None:
    median = statistics.median(times)
    p90 = statistics.quantiles(times, n=10)[-1]
    print(f"{name:<22} {1000 / statistics.mean(times):8.0f} req/s sequential   median {median:6.2f} ms"
          f"   p90 {p90:6.2f} ms   | {rps_parallel:8.0f} req/s with {workers} clients")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sources", type=int, default=50, help="sources in the listed sandbox")
    parser.add_argument("--serve", nargs=2, metavar=("HOME", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("CONCIERGE_MASTER_KEY", MASTER_KEY)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return

    from concierge.registry import Registry
    from concierge.server.auth import KeyStore

    with tempfile.TemporaryDirectory() as home:
        registry = Registry.open(home)
        key = KeyStore(registry.store).create(role="owner").key
        registry.close()
        port = _free_port()
        env = {**os.environ, "CONCIERGE_MASTER_KEY": os.environ["CONCIERGE_MASTER_KEY"]}
        proc = subprocess.Popen([sys.executable, __file__, "--serve", home, str(port)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            mcp_url = proc.stdout.readline().strip()
            url = f"http://127.0.0.1:{port}"
            _wait(url, proc)
            headers = {"Authorization": f"Bearer {key}"}
            n, workers = args.requests, args.concurrency
            print(f"server in a child process on {url}; {n} requests per measurement\n")
            with httpx2.Client(base_url=url, headers=headers, timeout=60) as c:
                def register_body(i: int, tag: str) -> dict[str, Any]:
                    return {"name": f"bench {tag}{i}", "base_url": "https://mcp.example.com/mcp",
                            "auth_kind": "bearer", "token": f"bench-token-{tag}{i:06d}",
                            "app_namespace": f"b{tag}{i}"}

                times = sequential(c, n, lambda i: c.post(f"{SB}/sources/user-mcp", json=register_body(i, "s")))
                rps = asyncio.run(concurrent(url, headers, n, workers, lambda i: (
                    "POST", f"{SB}/sources/user-mcp", register_body(i, "c"))))
                report("register (no probe)", times, rps, workers)

                c.post("/api/v1/storage/sandboxes", json={"name": "listing"})
                for i in range(args.sources):
                    c.post("/api/v1/storage/sandboxes/listing/sources/user-mcp",
                           json={"name": f"l{i}", "base_url": "https://mcp.example.com/mcp",
                                 "auth_kind": "none", "app_namespace": f"l{i}"})
                path = "/api/v1/storage/sandboxes/listing/sources"
                times = sequential(c, n, lambda i: c.get(path))
                rps = asyncio.run(concurrent(url, headers, n, workers, lambda i: ("GET", path, None)))
                report(f"list ({args.sources} sources)", times, rps, workers)

                c.post("/api/v1/storage/sandboxes", json={"name": "catalog"})
                c.post("/api/v1/storage/sandboxes/catalog/sources/user-mcp",
                       json={"name": "demo", "base_url": mcp_url, "auth_kind": "none", "app_namespace": "demo"})
                c.post("/api/v1/storage/sandboxes/catalog/agents", json={"slug": "support"})
                path = "/api/v1/storage/sandboxes/catalog/agents/support/tools"
                cold = time.perf_counter()
                assert c.get(path).json()["count"] == 4
                cold_ms = (time.perf_counter() - cold) * 1000
                times = sequential(c, n, lambda i: c.get(path))
                rps = asyncio.run(concurrent(url, headers, n, workers, lambda i: ("GET", path, None)))
                report("catalog (warm)", times, rps, workers)
                print(f"{'':<22} first (cold) resolution incl. MCP listing: {cold_ms:.1f} ms")
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
