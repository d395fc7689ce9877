"""Lists at scale (issue 13, "Scale"). Prints numbers; asserts only that answers are complete.

    .venv/bin/python bench/lists.py [--sources 10000] [--active 100] [--slow 10] [--wide 2000] [--rounds 5]

1. Registry: a page of sources (limit 100) at ``--sources`` rows — first page, a page in the
   middle, by sandbox, by status — against the unpaged list of the same rows (the old path);
   the chat's same-URL check: the whole sandbox read (old) vs `catalog_rows.sources_at_url`.
2. HTTP: the service in a child process over the same database. Page latency (limit 100),
   and ``/healthz`` latency idle vs while 4 clients (threads of another child process, so
   that they do not hold this one's GIL) fetch pages of 1,000 rows non-stop.
3. Catalog: an agent over ``--active`` active sources (real MCP servers on loopback, two
   upstream processes), ``--slow`` of which answer tools/list after 5 s while their deadline
   (connect_timeout) is 2 s; the other 9,900 rows are active sources of another sandbox, then
   (a harder case) paused rows of the agent's own sandbox, which the trace counts. Cold (a new
   catalog) and warm, median of ``--rounds``, against the slow sources' 2 s deadline; RSS.
4. Catalog memory: ``--wide`` active sources on one fast upstream, resolved with the
   catalog's default bounds vs unbounded (every listing at once, every session kept):
   RSS growth and sessions left open.

The rows are written straight through the registry's store (no probe), as a registry that
grew to that size would hold them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _procs import free_port, wait_for_port  # noqa: E402  (bench/, the script's own directory)

from concierge.ids import new_id  # noqa: E402
from concierge.registry import Registry  # noqa: E402
from concierge.registry.store import Store, now_iso  # noqa: E402

MASTER_KEY = "00" * 32
SB = "/api/v1/storage/sandboxes"


def rss_mb() -> float:
    """This process's resident set now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timings_ms(fn: Callable[[], Any], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times


def median_ms(fn: Callable[[], Any], n: int) -> float:
    return statistics.median(timings_ms(fn, n))


def p90(times: list[float]) -> float:
    return statistics.quantiles(times, n=10)[-1]


def insert_sources(reg: Registry, n: int, *, sandbox: str | None = None, status: str = "paused",
                   url: Callable[[int], str] = lambda i: "http://127.0.0.1:9/mcp",
                   connect_timeout: float = 5.0, prefix: str = "row") -> list[str]:
    sb = reg.get_sandbox(sandbox)
    ids = []
    with reg.store.transaction() as cx:
        for i in range(n):
            sid, now = new_id("ds"), now_iso()
            Store.insert(cx, "sources", {
                "id": sid, "sandbox_id": sb.id, "kind": "user_mcp", "name": f"{prefix} {i}",
                "base_url": url(i), "transport": "streamable-http", "auth_kind": "none",
                "app_namespace": f"{prefix}{i}", "ingest_tool_calls": [], "rate_cap_per_minute": 600,
                "webhook_rate_cap_per_minute": 60, "connect_timeout": connect_timeout,
                "call_timeout": 30.0, "status": status, "tool_count": 2, "created_at": now,
                "updated_at": now})
            ids.append(sid)
    return ids


# -- child processes -----------------------------------------------------------------------------

def serve_upstream(port: int, delay: float) -> None:
    import uvicorn

    from tests.catalog_fixtures import PathRouter, Upstream, upstream_app

    state = Upstream(tools=[("echo", "Echo the text."), ("lookup", "Look something up.")], list_delay=delay)
    uvicorn.run(PathRouter(upstream_app(state)), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def hammer(url: str, clients: int) -> None:
    """``clients`` threads fetching 1,000-row pages until SIGTERM; then prints pages/s."""
    import signal

    import httpx2

    stop = threading.Event()
    served = [0]
    started = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def fetch() -> None:
        with httpx2.Client(base_url=url, timeout=60) as h:
            while not stop.is_set():
                h.get(f"{SB}/default/sources", params={"limit": 1000}).raise_for_status()
                served[0] += 1

    workers = [threading.Thread(target=fetch) for _ in range(clients)]
    for w in workers:
        w.start()
    while not stop.is_set():
        stop.wait(0.1)
    for w in workers:
        w.join()
    print(served[0] / (time.perf_counter() - started), flush=True)


def serve_api(home: str, port: int) -> None:
    import uvicorn

    from concierge.backend import LocalBackend
    from concierge.server import build_app

    registry = Registry.open(home)
    app = build_app(backend_factory=lambda: LocalBackend(registry), allow_anonymous_loopback=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def child(*args: str) -> Iterator[int]:
    port = free_port()
    env = os.environ | {"CONCIERGE_MASTER_KEY": MASTER_KEY}
    proc = subprocess.Popen([sys.executable, __file__, *args, str(port)], env=env)
    try:
        wait_for_port(port, proc, args[0])
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


# -- 1. registry --------------------------------------------------------------------------------

def bench_registry(reg: Registry, n: int) -> None:
    print(f"1. Registry pages at {n:,} sources (limit 100; median of 30)")
    middle = None
    for _ in range(n // 2 // 1000):
        middle = reg.page_sources(limit=1000, cursor=middle).next_cursor
    first = median_ms(lambda: reg.page_sources(limit=100), 30)
    rows = {
        "first page": first,
        "middle page": median_ms(lambda: reg.page_sources(limit=100, cursor=middle), 30),
        "by sandbox, middle": median_ms(lambda: reg.page_sources(sandbox="default", limit=100, cursor=middle), 30),
        "by status": median_ms(lambda: reg.page_sources(status="paused", limit=100), 30),
    }
    unpaged = median_ms(lambda: reg.list_sources(), 5)
    for label, value in rows.items():
        print(f"   {label:<22} {value:8.2f} ms")
    print(f"   unpaged list (baseline){unpaged:8.1f} ms (median of 5) = {unpaged / first:.0f}x a page")
    bench_same_url(reg, n)


def bench_same_url(reg: Registry, n: int) -> None:
    """The chat's "another source already points at this URL" note before a register."""
    from concierge.mcp_client.endpoint import same_url
    from concierge.registry.catalog_rows import sources_at_url

    sb = reg.get_sandbox(None).id
    print(f"   same-URL check at {n:,} sources (the chat's note before a register):")
    for label, url in (("a URL no source uses", "http://127.0.0.1:8/mcp"),
                       (f"the URL all {n:,} use", "http://127.0.0.1:9/mcp")):
        whole = median_ms(lambda: [s for s in reg.list_sources(sandbox=sb) if same_url(s.base_url, url)], 3)
        indexed = median_ms(lambda: sources_at_url(reg.store, sb, url), 10)
        print(f"     {label:<24} whole sandbox (old) {whole:7.1f} ms   indexed {indexed:7.2f} ms")


# -- 2. HTTP ------------------------------------------------------------------------------------

def bench_http(home: str) -> None:
    import httpx2

    with child("--serve-api", home) as port:
        url = f"http://127.0.0.1:{port}"
        with httpx2.Client(base_url=url, timeout=60) as c:
            first = c.get(f"{SB}/default/sources", params={"limit": 100}).json()
            assert len(first["items"]) == 100, first
            page = median_ms(lambda: c.get(f"{SB}/default/sources", params={"limit": 100}).raise_for_status(), 50)
            big = median_ms(lambda: c.get(f"{SB}/default/sources", params={"limit": 1000}).raise_for_status(), 10)
            idle_times = timings_ms(lambda: c.get("/healthz").raise_for_status(), 300)
            idle = statistics.median(idle_times)
            # The 4 clients run in a process of their own: threads of this one reading 1 MB
            # bodies would hold this process's GIL and slow the /healthz client measured here.
            hammer = subprocess.Popen([sys.executable, __file__, "--hammer", url, "4"], stdout=subprocess.PIPE,
                                      text=True)
            time.sleep(1.0)
            started = time.perf_counter()
            busy_times = timings_ms(lambda: c.get("/healthz").raise_for_status(), 300)
            busy = statistics.median(busy_times)
            elapsed = time.perf_counter() - started
            hammer.terminate()
            out, _ = hammer.communicate(timeout=30)
            rate = float(out.split()[0]) if out.strip() else 0.0
    print("2. HTTP (service in a child process, loopback)")
    print(f"   page of 100            {page:8.2f} ms (median of 50)")
    print(f"   page of 1,000          {big:8.2f} ms (median of 10)")
    print(f"   /healthz idle          {idle:8.2f} ms (median of 300; p90 {p90(idle_times):.2f})")
    print(f"   /healthz under load    {busy:8.2f} ms (median of 300; p90 {p90(busy_times):.2f}, mean {statistics.mean(busy_times):.2f}; 4 clients fetching 1,000-row "
          f"pages at {rate:.0f} pages/s, {elapsed:.1f} s) = {busy / idle:.1f}x idle")


# -- 3./4. catalog ------------------------------------------------------------------------------

def skipped_by_reason(trace: Any) -> dict[str, int]:
    """Skipped sources per reason (counted by the trace; an older trace itemized them all)."""
    counted = getattr(trace, "sources_skipped_by_reason", None)
    if counted:
        return dict(counted)
    out: dict[str, int] = {}
    for s in trace.sources_skipped:
        out[s.reason] = out.get(s.reason, 0) + 1
    return out


async def bench_catalog(home: str, active: int, slow: int, idle_where: str, rounds: int) -> None:
    from concierge.registry.catalog import Catalog

    with child("--serve-upstream", "0") as fast_port, child("--serve-upstream", "5") as slow_port:
        reg = Registry.open(home)
        reg.create_sandbox("agents")
        insert_sources(reg, active - slow, sandbox="agents", status="active", prefix="fast",
                       url=lambda i: f"http://127.0.0.1:{fast_port}/s{i}/mcp")
        insert_sources(reg, slow, sandbox="agents", status="active", prefix="slow", connect_timeout=2.0,
                       url=lambda i: f"http://127.0.0.1:{slow_port}/s{i}/mcp")
        if idle_where == "agents":
            paused = insert_sources(reg, 10_000 - active, sandbox="agents", prefix="idle")
        else:
            reg.create_sandbox(idle_where)
            paused = insert_sources(reg, 10_000 - active, sandbox=idle_where, prefix="idle", status="active")
        reg.create_agent({"slug": "bench"}, sandbox="agents")
        colds, warms, grew = [], [], []
        for _ in range(rounds):  # a new catalog each round: nothing cached, no session pooled
            catalog = Catalog(reg)
            before = rss_mb()
            t = time.perf_counter()
            result = await catalog.resolve("bench", sandbox="agents")
            colds.append(time.perf_counter() - t)
            grew.append(rss_mb() - before)
            trace = result.trace
            skipped = skipped_by_reason(trace)
            assert result.count == 2 * (active - slow), (result.count, skipped)
            assert sum(skipped.values()) == (len(paused) if idle_where == "agents" else 0) + slow, skipped
            t = time.perf_counter()
            await catalog.resolve("bench", sandbox="agents")
            warms.append(time.perf_counter() - t)
            sessions = catalog.pool.size
            await catalog.aclose()
        where = ("paused, in the same sandbox" if idle_where == "agents"
                 else "active, in another sandbox")
        cold = statistics.median(colds)
        print(f"3. Catalog: agent over {active} active sources ({slow} slow: tools/list after 5 s, deadline "
              f"2 s); {len(paused):,} more rows {where}")
        print(f"   cold                   {cold * 1000:8.0f} ms (median of {rounds}: "
              f"{', '.join(f'{c * 1000:.0f}' for c in colds)}) = {cold / 2.0:.2f}x the slow deadline")
        print(f"                                      {result.count} tools; skipped "
              f"{skipped} ({len(trace.sources_skipped)} itemized)")
        print(f"   warm (cached)          {statistics.median(warms) * 1000:8.0f} ms (median of {rounds})")
        print(f"   RSS growth             {statistics.median(grew):+8.0f} MB per cold resolve (median); "
              f"{sessions} pooled sessions")
        reg.close()


async def bench_wide(home: str, wide: int) -> None:
    from concierge.registry.catalog import Catalog

    with child("--serve-upstream", "0") as port:
        reg = Registry.open(home)
        reg.create_sandbox("wide")
        insert_sources(reg, wide, sandbox="wide", status="active", prefix="w", connect_timeout=15.0,
                       url=lambda i: f"http://127.0.0.1:{port}/s{i}/mcp")
        print(f"4. Catalog memory: {wide:,} active sources on one upstream")
        for label, kwargs in (("default bounds", {}), ("unbounded (old)", {"max_concurrency": None,
                                                                          "max_sessions": None})):
            try:
                catalog = Catalog(reg, **kwargs)
            except TypeError:  # a catalog without these options
                catalog = Catalog(reg)
            before = rss_mb()
            t = time.perf_counter()
            result = await catalog.resolve(None, sandbox="wide")
            took = time.perf_counter() - t
            after = rss_mb()
            print(f"   {label:<22} {took * 1000:8.0f} ms   {result.count} tools, "
                  f"{len(result.trace.sources_skipped)} skipped; RSS {before:.0f} -> {after:.0f} MB "
                  f"(+{after - before:.0f}); {catalog.pool.size} sessions left open")
            await catalog.aclose()
        reg.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument("--active", type=int, default=100)
    parser.add_argument("--slow", type=int, default=10)
    parser.add_argument("--wide", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="cold catalog resolutions (median printed)")
    parser.add_argument("--skip", action="append", default=[], choices=["registry", "http", "catalog", "wide"])
    parser.add_argument("--serve-api", nargs=2, metavar=("HOME", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-upstream", nargs=2, metavar=("DELAY", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--hammer", nargs=2, metavar=("URL", "CLIENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_api:
        return serve_api(args.serve_api[0], int(args.serve_api[1]))
    if args.hammer:
        return hammer(args.hammer[0], int(args.hammer[1]))
    if args.serve_upstream:
        return serve_upstream(int(args.serve_upstream[1]), float(args.serve_upstream[0]))
    os.environ["CONCIERGE_MASTER_KEY"] = MASTER_KEY
    with tempfile.TemporaryDirectory() as home:
        reg = Registry.open(home)
        insert_sources(reg, args.sources)
        if "registry" not in args.skip:
            bench_registry(reg, args.sources)
        reg.close()
        if "http" not in args.skip:
            bench_http(home)
    if "catalog" not in args.skip:
        for idle_where in ("elsewhere", "agents"):
            with tempfile.TemporaryDirectory() as home:
                anyio.run(bench_catalog, home, args.active, args.slow, idle_where, args.rounds)
    if "wide" not in args.skip:
        with tempfile.TemporaryDirectory() as home:
            anyio.run(bench_wide, home, args.wide)


if __name__ == "__main__":
    main()
