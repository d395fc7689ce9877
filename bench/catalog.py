"""Catalog and gateway benchmarks. Prints numbers; asserts nothing.

    .venv/bin/python bench/catalog.py [--sources 50] [--delay 0.1] [--calls 200]

1. Resolution time for an agent over N sources whose ``tools/list`` each answers after
   ``--delay`` seconds: cold (empty cache), warm (from the per-source cache), and cold again
   with the sources listed one after another (``max_concurrency=1``) for comparison.
2. The median latency a gateway tool call adds over a direct ``tools/call`` on an already
   open session to the same server (routing, allowlists, rate bucket, pooled session).

The sources are real MCP servers on loopback: one uvicorn server in its own process serving
N paths, so its work does not share this process's event loop or GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _procs import free_port, wait_for_port  # noqa: E402  (bench/, the script's own directory)

from concierge.mcp_client import McpSession  # noqa: E402
from concierge.registry import Registry  # noqa: E402
from concierge.registry.catalog import Catalog  # noqa: E402
from concierge.registry.gateway import Gateway  # noqa: E402
from tests.catalog_fixtures import PathRouter, Upstream, upstream_app  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def serve(port: int, delay: float) -> None:
    """The upstream: one MCP server process answering tools/list after ``delay`` s at /s<i>/mcp."""
    import uvicorn

    state = Upstream(tools=[("echo", "Echo the text."), ("lookup", "Look something up.")], list_delay=delay)
    uvicorn.run(PathRouter(upstream_app(state)), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


@contextlib.contextmanager
def upstream_process(delay: float) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--delay", str(delay)])
    try:
        wait_for_port(port, proc, "the upstream server", timeout=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def run(n_sources: int, delay: float, n_calls: int) -> None:
    # Two upstream processes: N slow-listing sources, and one plain server for the call latency
    # (an MCP server may run its tools/list handler to validate a call, so a slow listing
    # would also slow every call).
    with upstream_process(delay) as base, upstream_process(0.0) as plain, \
            tempfile.TemporaryDirectory() as home:
        reg = Registry.open(home)

        async def register(i: int) -> None:
            out = await reg.register({"name": f"Source {i}", "base_url": f"{base}/s{i}/mcp",
                                      "auth_kind": "none", "app_namespace": f"s{i:02d}",
                                      "rate_cap_per_minute": 600})
            assert out.status == "active", out.health_error

        async with anyio.create_task_group() as tg:
            for i in range(n_sources):
                tg.start_soon(register, i)
        reg.create_agent({"slug": "bench"})

        print(f"Catalog resolution: agent over {n_sources} sources, tools/list answers after "
              f"{delay * 1000:.0f} ms each ({2 * n_sources} tools)")
        catalog = Catalog(reg)
        cold = []
        for _ in range(3):
            catalog.invalidate()
            t = time.perf_counter()
            result = await catalog.resolve("bench")
            cold.append(time.perf_counter() - t)
            assert result.count == 2 * n_sources and not result.trace.sources_skipped
        warm = []
        for _ in range(20):
            t = time.perf_counter()
            result = await catalog.resolve("bench")
            warm.append(time.perf_counter() - t)
            assert len(result.trace.cached_sources) == n_sources
        sequential = Catalog(reg, max_concurrency=1)
        t = time.perf_counter()
        result = await sequential.resolve("bench")
        one_by_one = time.perf_counter() - t
        assert result.count == 2 * n_sources
        low = ms(min(cold)).strip()
        print(f"  cold, concurrent      {ms(statistics.median(cold))}   (median of 3; min {low})")
        print(f"  warm, from cache      {ms(statistics.median(warm))}   (median of 20)")
        print(f"  cold, one after other {ms(one_by_one)}   ({one_by_one / statistics.median(cold):.1f}x the "
              "concurrent time)")

        source_id = (await reg.register({"name": "Plain", "base_url": f"{plain}/s0/mcp", "auth_kind": "none",
                                         "app_namespace": "plain", "rate_cap_per_minute": 600})).data_source_id
        assert source_id is not None
        namespace = "plain"
        gateway = Gateway(reg, Catalog(reg))
        direct_times, gateway_times = [], []
        async with McpSession(reg.endpoint(source_id)) as direct:
            await direct.call_tool("echo", {"text": "warm"})
            await gateway.call(f"{namespace}_echo", {"text": "warm"}, agent="bench")
            for i in range(n_calls):
                t = time.perf_counter()
                r1 = await direct.call_tool("echo", {"text": str(i)})
                direct_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                r2 = await gateway.call(f"{namespace}_echo", {"text": str(i)}, agent="bench")
                gateway_times.append(time.perf_counter() - t)
                assert r1.text == r2.text == str(i)
        await gateway.aclose()
        reg.close()
        d, g = statistics.median(direct_times), statistics.median(gateway_times)
        print(f"\nGateway call vs a direct call on an open session ({n_calls} calls each, interleaved)")
        print(f"  direct  median {ms(d)}")
        print(f"  gateway median {ms(g)}")
        p90 = ms(statistics.quantiles(gateway_times, n=10)[-1]).strip()
        print(f"  added   median {ms(g - d)}   (p90 gateway {p90})")
        print(f"  sessions opened by the gateway: {gateway.sessions_opened[source_id]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.delay)
        return
    started = time.perf_counter()
    anyio.run(run, args.sources, args.delay, args.calls)
    print(f"\n(total bench time {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
