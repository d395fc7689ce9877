"""OAuth and stdio sources through the registry and the gateway, against baselines measured in
the same run. Prints numbers; asserts nothing.

    .venv/bin/python bench/reach_registry.py [--calls 200] [--rounds 5]

    gateway call   ``echo`` through `LocalBackend.call_tool` (catalog, allowlist, rate cap,
                   pooled session) on an OAuth source whose tokens live in the vault, against
                   the same server registered as a bearer source with the same access token
    sign-in        `source user-mcp add --auth oauth` in-process: register, discovery and dynamic
                   registration, the link followed by an HTTP client, the code exchange and the
                   health check (wall time, median)
    stdio call     ``get_current_time`` through the gateway on a stdio source (``mcp-server-time``,
                   one pooled program), against the same call on an HTTP source
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

os.environ.setdefault("CONCIERGE_MASTER_KEY", "0123456789abcdef" * 4)

from concierge.backend import LocalBackend  # noqa: E402
from concierge.registry import Registry  # noqa: E402
from tests.cli_fixtures import run_cli  # noqa: E402
from tests.mcp_servers import serve_in_thread, time_server_app  # noqa: E402
from tests.oauth_servers import follow, oauth_servers  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def sign_in_with_cli(home: Path, url: str, name: str) -> tuple[str, float]:
    err = io.StringIO()
    box: dict[str, object] = {}
    started = time.perf_counter()
    runner = threading.Thread(target=lambda: box.setdefault("r", run_cli(
        "source", "user-mcp", "add", name, "--url", url, "--auth", "oauth", "--namespace", name.lower(), "--rate-cap", "600",
        home=home, stderr=err)))
    runner.start()
    while not (m := re.search(r"Open this URL to authorize: (\S+)", err.getvalue())):
        time.sleep(0.005)
    anyio.run(follow, m.group(1))
    runner.join()
    elapsed = time.perf_counter() - started
    result = box["r"]
    assert result.returncode == 0, result  # type: ignore[attr-defined]
    return result.stdout.split()[0], elapsed  # type: ignore[attr-defined]


async def gateway_calls(home: Path, names: dict[str, str], args: argparse.Namespace, tool: str,
                        arguments: dict[str, str]) -> dict[str, list[float]]:
    backend = LocalBackend(Registry.open(home))
    results: dict[str, list[float]] = {label: [] for label in names}
    try:
        if not any(a.slug == "bench" for a in await backend.list_agents()):
            await backend.create_agent({"slug": "bench"})
        for label, ns in names.items():  # warm: catalog, session, program
            await backend.call_tool(f"{ns}_{tool}", arguments, agent="bench")
        for _ in range(args.rounds):
            for label, ns in names.items():
                for _ in range(args.calls // args.rounds):
                    start = time.perf_counter()
                    outcome = await backend.call_tool(f"{ns}_{tool}", arguments, agent="bench")
                    results[label].append(time.perf_counter() - start)
                    assert not outcome.is_error, outcome.text
    finally:
        await backend.aclose()
    return results


def report(title: str, results: dict[str, list[float]], base: str) -> None:
    reference = statistics.median(results[base])
    print(f"{title} (median of {len(results[base])}):")
    for label, values in results.items():
        med = statistics.median(values)
        print(f"  {label:22} {ms(med)}   ratio {med / reference:5.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="per variant (the rate cap is 600 a minute)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        with oauth_servers(access_ttl=3600) as srv:
            sign_ins = [sign_in_with_cli(home, srv.mcp_url, f"Oa{i}") for i in range(5)]
            source_id = sign_ins[0][0]
            print(f"sign-in through the CLI, wall time (median of {len(sign_ins)}): "
                  f"{ms(statistics.median(t for _, t in sign_ins))}")
            registry = Registry.open(home)
            tokens = anyio.run(registry.oauth(source_id).storage.get_tokens)
            registry.close()
            assert tokens is not None
            bearer = run_cli("source", "user-mcp", "add", "Static", "--url", srv.mcp_url, "--auth", "bearer",
                             "--token-stdin", "--namespace", "static", "--rate-cap", "600", home=home,
                             stdin=tokens.access_token + "\n")
            assert bearer.returncode == 0, bearer.stdout + bearer.stderr
            results = anyio.run(gateway_calls, home, {"bearer (same token)": "static", "oauth (vault)": "oa0"},
                                args, "echo", {"text": "x"})
            report("gateway echo call", results, "bearer (same token)")

        with serve_in_thread(time_server_app()) as http_time:
            added = run_cli("source", "user-mcp", "add", "HttpTime", "--url", http_time.url(), "--auth", "none",
                            "--namespace", "httptime", "--rate-cap", "600", home=home)
            assert added.returncode == 0, added.stdout
            added = run_cli("source", "user-mcp", "add", "StdioTime", "--transport", "stdio", "--command",
                            sys.executable, "--arg=-m", "--arg", "mcp_server_time", "--namespace", "stdiotime",
                            "--rate-cap", "600", home=home)
            assert added.returncode == 0, added.stdout
            results = anyio.run(gateway_calls, home, {"streamable HTTP": "httptime", "stdio (pooled)": "stdiotime"},
                                args, "get_current_time", {"timezone": "UTC"})
            report("gateway get_current_time call", results, "streamable HTTP")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
