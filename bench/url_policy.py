"""What the URL policy costs per connection. Prints numbers; asserts nothing.

    .venv/bin/python bench/url_policy.py [--probes 60]

Probe latency (connect + negotiate + tools/list, a fresh connection each time) against a demo
MCP server on loopback, median of N, interleaved in one run:

1. httpx2's stock transport (what the connector used before the policy);
2. the guarded transport, local policy, an IP literal (no lookup);
3. the guarded transport, a name resolved by an injected resolver that answers at once;
4. the guarded transport, ``localhost`` through the system resolver.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from concierge.mcp_client import Endpoint, probe  # noqa: E402
from concierge.mcp_client import _transport  # noqa: E402
from concierge.mcp_client.url_policy import UrlPolicy  # noqa: E402
from tests.mcp_servers import demo_app, serve_in_thread  # noqa: E402

_guarded = _transport.guarded_transport


def _stock(verify: Any, policy: Any) -> httpx2.AsyncHTTPTransport:
    return httpx2.AsyncHTTPTransport(verify=verify)


async def _answer(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


async def _run(url_ip: str, url_name: str, url_localhost: str, n: int) -> dict[str, list[float]]:
    cases = {
        "stock httpx2 transport": (url_ip, None, _stock),
        "guarded, IP literal": (url_ip, UrlPolicy(), _guarded),
        "guarded, name (injected resolver)": (url_name, UrlPolicy(resolver=_answer), _guarded),
        "guarded, localhost (system resolver)": (url_localhost, UrlPolicy(), _guarded),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(n):
        for label, (url, policy, transport) in cases.items():
            _transport.guarded_transport = transport  # type: ignore[assignment]
            start = time.perf_counter()
            result = await probe(Endpoint(url, url_policy=policy))
            times[label].append((time.perf_counter() - start) * 1000)
            assert result.ok, result.error
    _transport.guarded_transport = _guarded
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=60)
    args = parser.parse_args()
    with serve_in_thread(demo_app()) as srv:
        # (the demo server accepts the Host names localhost and 127.0.0.1 only)
        times = anyio.run(_run, srv.url(), f"http://localhost:{srv.port}/mcp", f"http://localhost:{srv.port}/mcp",
                          args.probes)
    base = statistics.median(times["stock httpx2 transport"])
    print(f"probe latency, median of {args.probes} (fresh connection each):")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"  {label:40s} {median:7.2f} ms   x{median / base:.3f}")


if __name__ == "__main__":
    main()
