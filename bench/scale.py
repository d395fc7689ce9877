"""More than one instance: requests/s with 1 and 3 ``concierge serve`` processes on one
PostgreSQL, and with 1 on the SQLite default. Prints numbers; asserts nothing.

    .venv/bin/python bench/scale.py [--requests 150] [--concurrency 12] [--rounds 3]

Each instance is a real ``concierge serve`` process (API keys on) on its own loopback port,
all on one database with one master key (tests/instances.py); a throw-away PostgreSQL is
started for the run (tests/pg_fixtures.py). The driver, in this process, spreads
``--concurrency`` clients round-robin over the instances.

1. register: ``POST …/sources/user-mcp`` (auth none) — row + vault + webhook secret + audit +
   change feed in one transaction, then the real health check against a demo MCP server
   (served by this process, on loopback);
   (into a sandbox of their own);
2. warm catalog: ``GET …/agents/bench/tools`` over one active source, listings cached (each
   resolve still reads the source rows and follows the change feed).

Reported: the median of ``--rounds`` rounds, and ratios against one PostgreSQL instance. On a
2-core machine three instances share the same two cores with the database and the driver, so
read the ratio as "what sharing costs", not as a scaling curve.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.instances import Instance, concierge_cli, serve_instances  # noqa: E402
from tests.mcp_servers import demo_app, serve_in_thread  # noqa: E402
from tests.pg_fixtures import start_pg  # noqa: E402

SB = "/api/v1/storage/sandboxes/default"
REG = "/api/v1/storage/sandboxes/registered"  # registrations go here: the catalog's sandbox keeps one source
_names = itertools.count()


async def _rate(instances: list[Instance], key: str, requests: int, concurrency: int, make) -> float:  # type: ignore[no-untyped-def]
    clients = [httpx2.AsyncClient(base_url=i.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
               for i in instances]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)
    failures = 0

    async def worker(w: int) -> None:
        nonlocal failures
        client = clients[w % len(clients)]
        while True:
            try:
                n = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            method, path, body = make(n)
            r = await client.request(method, path, json=body)
            if r.status_code >= 300:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    for c in clients:
        await c.aclose()
    if failures:
        print(f"    ({failures} of {requests} requests failed)")
    return requests / elapsed


def measure(label: str, instances: list[Instance], key: str, mcp_url: str, args: argparse.Namespace) -> dict[str, float]:
    def register(n: int) -> tuple[str, str, dict[str, object]]:
        return "POST", f"{REG}/sources/user-mcp", {"name": f"s{n}", "base_url": mcp_url, "auth_kind": "none",
                                                  "app_namespace": f"b{next(_names)}"}

    def catalog(n: int) -> tuple[str, str, None]:
        return "GET", f"{SB}/agents/bench/tools", None

    with httpx2.Client(base_url=instances[0].url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        c.post(f"{SB}/sources/user-mcp", json={"name": "cat", "base_url": mcp_url, "auth_kind": "none",
                                               "app_namespace": "cat"})
        c.post(f"{SB}/agents", json={"slug": "bench", "tool_allowlist": ["cat_*"]})
        c.post("/api/v1/storage/sandboxes", json={"name": "registered"})
    out: dict[str, float] = {}
    for name, make in (("register", register), ("warm catalog", catalog)):
        asyncio.run(_rate(instances, key, min(30, args.requests), args.concurrency, make))  # warm up
        rounds = [asyncio.run(_rate(instances, key, args.requests, args.concurrency, make)) for _ in range(args.rounds)]
        out[name] = statistics.median(rounds)
        print(f"  {label:<24} {name:<13} {out[name]:8.1f} req/s  (rounds: {', '.join(f'{r:.1f}' for r in rounds)})")
    return out


def run_setup(label: str, root: Path, database_url: str | None, count: int, mcp_url: str,
              args: argparse.Namespace) -> dict[str, float]:
    made = concierge_cli("keys", "create", "--json", home=root / "home-A", database_url=database_url)
    if made.returncode:
        raise SystemExit(made.stderr)
    key = json.loads(made.stdout)["key"]
    names = ("A", "B", "C")[:count]
    with serve_instances(root, database_url, names) as instances:
        return measure(label, instances, key, mcp_url, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    pg = start_pg()
    results: dict[str, dict[str, float]] = {}
    try:
        with serve_in_thread(demo_app()) as mcp, tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            print(f"{args.requests} requests x {args.rounds} rounds, {args.concurrency} clients")
            results["sqlite x1"] = run_setup("SQLite, 1 instance", root / "sqlite", None, 1, mcp.url(), args)
            results["pg x1"] = run_setup("PostgreSQL, 1 instance", root / "pg1", pg.create_database("scale1"), 1,
                                         mcp.url(), args)
            results["pg x3"] = run_setup("PostgreSQL, 3 instances", root / "pg3", pg.create_database("scale3"), 3,
                                         mcp.url(), args)
    finally:
        pg.stop()
    print("\nratios (against PostgreSQL, 1 instance):")
    for what in ("register", "warm catalog"):
        base = results["pg x1"][what]
        print(f"  {what:<13} PostgreSQL x3 / x1 = {results['pg x3'][what] / base:.2f}   "
              f"SQLite x1 / PostgreSQL x1 = {results['sqlite x1'][what] / base:.2f}")


if __name__ == "__main__":
    main()
