"""OAuth and stdio sources, against baselines measured in the same run. Prints numbers; asserts nothing.

    .venv/bin/python bench/reach.py [--calls 200] [--rounds 5] [--concurrent 20] [--spawns 10]

OAuth (the SDK-built authorization server and protected MCP server of tests/oauth_servers.py,
on loopback, one pooled session each):

    per call     an ``echo`` call signed by `OAuth` (token valid) against the same call with the
                 same token sent as a static ``Authorization`` header: what OAuth costs per call
    concurrent   ``--concurrent`` ``slow(50 ms)`` calls at once to a server that answers with JSON
                 (headers only when the tool is done): `OAuth` (fast path), the SDK's OAuth client
                 used directly as the httpx2 auth, and a static header
    refresh      a call whose token must first be refreshed, against a call that needs none

stdio (the third-party ``mcp-server-time``):

    spawn+probe  start the program, negotiate, list its tools, stop it (``probe``)
    per call     ``get_current_time`` on a pooled stdio session, against the same server hosted
                 over streamable HTTP on loopback

Rounds alternate the variants so drift on a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from concierge.mcp_client import Endpoint, McpSession, probe  # noqa: E402
from concierge.mcp_client.oauth import OAuth  # noqa: E402
from concierge.mcp_client.oauth_store import MemoryOAuthStore  # noqa: E402
from concierge.mcp_client.signin import begin_sign_in  # noqa: E402
from tests.mcp_servers import serve_in_thread, time_server_app  # noqa: E402
from tests.oauth_servers import follow, oauth_servers  # noqa: E402
from tests.stdio_servers import time_server_command  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def signed_in(url: str) -> Endpoint:
    endpoint = Endpoint(url, auth=OAuth(url, MemoryOAuthStore(), source="bench"))
    started = await begin_sign_in(endpoint)
    assert started.authorize_url is not None
    await follow(started.authorize_url)
    await started.wait()
    return endpoint


async def static_twin(endpoint: Endpoint) -> Endpoint:
    """The same server, with the OAuth access token sent as a plain header."""
    oauth = endpoint.auth
    assert isinstance(oauth, OAuth)
    tokens = await oauth.storage.get_tokens()
    assert tokens is not None
    return Endpoint(endpoint.url, headers={"Authorization": f"Bearer {tokens.access_token}"})


async def sdk_twin(endpoint: Endpoint) -> Endpoint:
    """The same server, with the SDK's OAuth client (tokens loaded) as the httpx2 auth."""
    oauth = endpoint.auth
    assert isinstance(oauth, OAuth)
    provider = oauth.build_provider()
    return Endpoint(endpoint.url, auth=provider)


async def per_call(args: argparse.Namespace) -> None:
    with oauth_servers() as srv:
        oauth_ep = await signed_in(srv.mcp_url)
        static_ep = await static_twin(oauth_ep)
        results: dict[str, list[float]] = {"static header": [], "OAuth": []}
        async with McpSession(oauth_ep) as signed, McpSession(static_ep) as plain:
            for _ in range(args.rounds):
                for name, session in (("static header", plain), ("OAuth", signed)):
                    for _ in range(args.calls // args.rounds):
                        results[name].append(await timed(lambda s=session: s.call_tool("echo", {"text": "x"})))
        base = statistics.median(results["static header"])
        print("OAuth, per echo call on a pooled session (median of "
              f"{len(results['OAuth'])}):")
        for name, values in results.items():
            med = statistics.median(values)
            print(f"  {name:14} {ms(med)}   ratio {med / base:5.2f}")

        refreshed, plain_calls = [], []
        async with McpSession(oauth_ep) as session:
            provider = await oauth_ep.auth._shared()  # type: ignore[union-attr]
            for _ in range(args.rounds * 4):
                plain_calls.append(await timed(lambda: session.call_tool("echo", {"text": "x"})))
                provider.context.token_expiry_time = 1.0  # due: the next call refreshes first
                refreshed.append(await timed(lambda: session.call_tool("echo", {"text": "x"})))
        base = statistics.median(plain_calls)
        print(f"OAuth refresh (median of {len(refreshed)}; refreshes sent: "
              f"{oauth_ep.auth.refreshes}):")  # type: ignore[union-attr]
        print(f"  {'no refresh':14} {ms(base)}")
        med = statistics.median(refreshed)
        print(f"  {'refresh first':14} {ms(med)}   ratio {med / base:5.2f}")


async def concurrent(args: argparse.Namespace) -> None:
    with oauth_servers(json_response=True) as srv:
        oauth_ep = await signed_in(srv.mcp_url)
        variants = {"static header": await static_twin(oauth_ep), "OAuth": oauth_ep,
                    "SDK client": await sdk_twin(oauth_ep)}
        sessions = {name: McpSession(ep) for name, ep in variants.items()}
        for session in sessions.values():
            await session.open()
        times: dict[str, list[float]] = {name: [] for name in variants}
        try:
            for _ in range(args.rounds):
                for name, session in sessions.items():
                    async def burst(s: McpSession = session) -> None:
                        async with anyio.create_task_group() as tg:
                            for _ in range(args.concurrent):
                                tg.start_soon(lambda: s.call_tool("slow", {"ms": 50}))

                    times[name].append(await timed(burst))
        finally:
            for session in sessions.values():
                await session.aclose()
        base = statistics.median(times["static header"])
        print(f"{args.concurrent} concurrent slow(50 ms) calls, JSON answers (median of {args.rounds} bursts):")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"  {name:14} {ms(med)}   ratio {med / base:5.2f}")


async def stdio(args: argparse.Namespace) -> None:
    program, argv = time_server_command()
    stdio_ep = Endpoint.stdio(program, argv, connect_timeout=30)
    spawns = []
    for _ in range(args.spawns):
        spawns.append(await timed(lambda: probe(stdio_ep)))
    print(f"stdio mcp-server-time, spawn + negotiate + list + stop (median of {len(spawns)}): "
          f"{ms(statistics.median(spawns))}  (min {ms(min(spawns))})")
    with serve_in_thread(time_server_app()) as srv:
        http_ep = Endpoint(srv.url())
        results: dict[str, list[float]] = {"streamable HTTP": [], "stdio": []}
        async with McpSession(stdio_ep) as piped, McpSession(http_ep) as web:
            for _ in range(args.rounds):
                for name, session in (("streamable HTTP", web), ("stdio", piped)):
                    for _ in range(args.calls // args.rounds):
                        results[name].append(await timed(lambda s=session: s.call_tool(
                            "get_current_time", {"timezone": "UTC"})))
    base = statistics.median(results["streamable HTTP"])
    print(f"mcp-server-time, per get_current_time call on a pooled session (median of {len(results['stdio'])}):")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"  {name:15} {ms(med)}   ratio {med / base:5.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--spawns", type=int, default=10)
    args = parser.parse_args()
    await per_call(args)
    await concurrent(args)
    await stdio(args)


if __name__ == "__main__":
    anyio.run(main)
