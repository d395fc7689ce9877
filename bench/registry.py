"""Registry benchmarks. Prints numbers; asserts nothing.

    .venv/bin/python bench/registry.py [--sources 10000] [--probes 40]

1. registrations per second with the health check replaced by a no-op (store + vault + audit);
2. probe latency against a demo MCP server on loopback (median), next to a bare mcp SDK
   probe (connect + tools/list) of the same server in the same run;
3. `source list` time with N sources in one sandbox.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from concierge.mcp_client import Endpoint, ProbeResult, probe  # noqa: E402
from concierge.registry import Registry  # noqa: E402
from tests.mcp_servers import demo_app, serve_in_thread  # noqa: E402


async def _ok_probe(endpoint: Endpoint) -> ProbeResult:
    return ProbeResult(ok=True, tools=(), tool_count=0, server_name="bench", server_version=None,
                       protocol_version=None, latency_ms=0.0, error_kind=None, error=None, http_status=None)


def bench_register(n: int) -> float:
    with tempfile.TemporaryDirectory() as home:
        reg = Registry.open(home, prober=_ok_probe)

        async def go() -> None:
            for i in range(n):
                await reg.register({"name": f"s{i}", "base_url": "https://mcp.example.com/mcp",
                                    "auth_kind": "bearer", "token": f"token-{i:08d}-abcdef"})

        start = time.perf_counter()
        anyio.run(go)
        elapsed = time.perf_counter() - start
        reg.close()
    return n / elapsed


async def bare_probe(url: str) -> None:
    async with httpx2.AsyncClient(timeout=10) as http, Client(
            streamable_http_client(url, http_client=http)) as client:
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            if not (cursor := page.next_cursor):
                break


def bench_probe(runs: int) -> tuple[float, float]:
    with serve_in_thread(demo_app()) as srv:
        url = srv.url()
        ours, bare = [], []

        async def go() -> None:
            await probe(Endpoint(url=url))  # warm up both paths
            await bare_probe(url)
            for _ in range(runs):
                t = time.perf_counter()
                result = await probe(Endpoint(url=url))
                ours.append((time.perf_counter() - t) * 1000)
                assert result.ok, result.error
                t = time.perf_counter()
                await bare_probe(url)
                bare.append((time.perf_counter() - t) * 1000)

        anyio.run(go)
    return statistics.median(ours), statistics.median(bare)


def bench_list(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as home:
        reg = Registry.open(home, prober=_ok_probe)
        sb = reg.default_sandbox()
        rows = [(f"ds_bench{i:06d}", sb.id, f"source {i}", "https://mcp.example.com/mcp", f"ns{i}")
                for i in range(n)]
        with reg.store.transaction() as cx:
            cx.executemany(
                "INSERT INTO sources (id, sandbox_id, name, base_url, auth_kind, app_namespace,"
                " rate_cap_per_minute, webhook_rate_cap_per_minute, connect_timeout, call_timeout,"
                " status, created_at, updated_at) VALUES (?,?,?,?,'none',?,60,600,10,60,'active',"
                " '2026-01-01T00:00:00Z','2026-01-01T00:00:00Z')", rows)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            listed = reg.list_sources(sandbox="default")
            times.append((time.perf_counter() - t) * 1000)
        assert len(listed) == n
        reg.close()
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--registrations", type=int, default=500)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--sources", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("CONCIERGE_MASTER_KEY", "00" * 32)

    rps = bench_register(args.registrations)
    print(f"register (no probe):  {rps:8.0f} registrations/s   ({args.registrations} registrations)")
    ours, bare = bench_probe(args.probes)
    print(f"probe on loopback:    {ours:8.2f} ms median (concierge probe, {args.probes} runs)")
    print(f"                      {bare:8.2f} ms median (bare mcp SDK connect + tools/list)"
          f"   ratio {ours / bare:.2f}x")
    med, best = bench_list(args.sources)
    print(f"source list:          {med:8.1f} ms median, {best:.1f} ms best ({args.sources} sources)")


if __name__ == "__main__":
    main()
