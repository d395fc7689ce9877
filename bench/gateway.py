"""The gateway against direct calls, under one client and under twenty. Prints numbers and
whether each goal is met; asserts nothing.

    .venv/bin/python bench/gateway.py [--rounds 3] [--seq-calls 200] [--block 20] [--clients 20] [--calls 50]

Three kinds of process on loopback, as in production:

    upstream   one MCP server built with the mcp SDK (low-level Server, streamable HTTP),
               with an ``echo`` tool; it counts the sessions opened (``server/discover`` or
               ``initialize``) and serves the counts at ``/stats``
    gateway    ``concierge gateway --agent bench``, the real command, over a registry in a
               temporary home whose sources all point at that upstream, twice: as shipped
               ("gateway (lane)": stateless-era tools/call take `concierge.gateway_lane`) and
               with ``--no-fast-lane`` ("gateway (SDK path)": the mcp SDK's server
               and client carry every call)
    relay      a TCP relay that copies bytes both ways (uvloop, no parsing): the floor, what any
               process in the path costs on this machine at the moment
    forwarder  the least a Python proxy of MCP does (uvloop, httptools, every JSON body parsed
               and written again, a kept-alive upstream connection; no policy, no ASGI): the
               floor for any proxy written in Python, the gateway's language
    bare       a naive forwarder built with the same SDK and its defaults (one Client, no routing
               or policy): a reference for what one more SDK hop costs
    client     a process running the mcp SDK's ``Client``: for latency, one client per mode,
               making calls one after another, the modes taking turns every ``--block`` calls;
               for throughput, N clients making M calls each at once

Direct, relay, forwarder, bare and both gateway runs alternate (``--rounds`` of each, interleaved; the sequential
calls in blocks within each round) so drift on a shared machine hits them alike. Rate caps: every source has the maximum cap (600 calls a minute, a
burst of 600), so a concurrent round of 20 x 50 = 1000 calls is spread over two sources of
that round (clients alternate), each source used by one round of one gateway mode only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _procs import free_port, wait_for_port  # noqa: E402  (bench/, the script's own directory)

RATE_CAP = 600  # the maximum rate_cap_per_minute
LABELS = {"direct": "direct", "relay": "byte relay", "floor": "Python forwarder", "bare": "bare", "sdk": "gateway (SDK path)", "gateway": "gateway (lane)"}
METHOD_RE = re.compile(rb'"method"\s*:\s*"([^"]+)"')


# -- the upstream process ---------------------------------------------------------------------

def serve_upstream(port: int) -> None:
    import mcp_types as types
    import uvicorn
    from mcp.server.lowlevel import Server
    from starlette.responses import JSONResponse

    counts = {"server/discover": 0, "initialize": 0, "tools/call": 0, "tools/list": 0}
    echo = types.Tool(name="echo", description="Echo the text back.",
                      input_schema={"type": "object", "properties": {"text": {"type": "string"}}})

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[echo])

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        text = str((params.arguments or {}).get("text", ""))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    server = Server("bench-upstream", version="1.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    mcp_app = server.streamable_http_app(streamable_http_path="/mcp")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/stats":
            await JSONResponse(counts)(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await mcp_app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        found = METHOD_RE.search(body[:400])  # one JSON-RPC message per POST
        if found:
            method = found.group(1).decode()
            counts[method] = counts.get(method, 0) + 1
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await mcp_app(scope, replay, send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_on_uvloop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, as the gateway does (asyncio's loop if not)."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


# -- the byte relay: the floor of any proxy process ----------------------------------------------

def serve_relay(port: int, upstream_port: int) -> None:
    """Every connection is copied, byte for byte, to a connection of its own to the upstream."""
    import asyncio

    class Back(asyncio.Protocol):
        def __init__(self, front: asyncio.Transport) -> None:
            self.front = front

        def data_received(self, data: bytes) -> None:
            self.front.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self.front.close()

    class Front(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport: asyncio.Transport = transport
            self.back: asyncio.Transport | None = None
            self.held: list[bytes] = []
            asyncio.get_running_loop().create_task(self.dial())

        async def dial(self) -> None:
            back, _ = await asyncio.get_running_loop().create_connection(
                lambda: Back(self.transport), "127.0.0.1", upstream_port)
            self.back = back
            for data in self.held:
                back.write(data)

        def data_received(self, data: bytes) -> None:
            if self.back is None:
                self.held.append(data)
            else:
                self.back.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.back is not None:
                self.back.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Front, "127.0.0.1", port)
        await server.serve_forever()

    run_on_uvloop(main())


# -- the Python forwarder: the floor of a proxy written in Python ---------------------------------

def serve_python_forwarder(port: int, upstream_port: int) -> None:
    """The least a Python proxy of MCP must do, on the gateway's own stack (uvloop, httptools,
    json): read each request, parse its JSON body and write it again, send it to the upstream on
    a kept-alive connection of its own, parse the JSON answer and write it again with a stamp.
    No policy, no routing, no ASGI; an SSE or other answer is relayed as it comes."""
    import asyncio

    import httptools

    hop = {b"host", b"content-length", b"connection", b"transfer-encoding", b"keep-alive"}
    stamp = {"io.modelcontextprotocol/serverInfo": {"name": "python-forwarder", "version": "1.0"}}

    def rewritten(body: bytes) -> bytes:
        message = json.loads(body)
        result = message.get("result") if isinstance(message, dict) else None
        if isinstance(result, dict):
            result["_meta"] = {**result.get("_meta", {}), **stamp}
        return json.dumps(message, separators=(",", ":")).encode()

    class Back(asyncio.Protocol):
        """The upstream connection of one client connection: one request at a time."""

        def __init__(self, front: Front) -> None:
            self.front, self.transport = front, None
            self.parser = httptools.HttpResponseParser(self)
            self.got = False

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.got = True
            self.parser.feed_data(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

        def on_headers_complete(self) -> None:
            self.status = self.parser.get_status_code()
            lengths = [v for k, v in self.headers if k == b"content-length"]
            self.buffered = bool(lengths)
            self.json = any(k == b"content-type" and v.startswith(b"application/json") for k, v in self.headers)
            if not self.buffered:
                self.front.write_head(self.status, self.headers, None)

        def on_body(self, body: bytes) -> None:
            if self.buffered:
                self.body.append(body)
            else:
                self.front.transport.write(b"%x\r\n%s\r\n" % (len(body), body))

        def on_message_complete(self) -> None:
            if self.buffered:
                body = b"".join(self.body)
                if self.json and body:
                    body = rewritten(body)
                self.front.write_head(self.status, self.headers, body)
            else:
                self.front.transport.write(b"0\r\n\r\n")
            self.front.done()

        def start(self) -> None:
            self.headers: list[tuple[bytes, bytes]] = []
            self.body: list[bytes] = []
            self.got = False

        def connection_lost(self, exc: Exception | None) -> None:
            self.front.back_lost(self)

    class Front(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.back: Back | None = None
            self.sent: bytes | None = None

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_begin(self) -> None:
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []
            self.body: list[bytes] = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            body = b"".join(self.body)
            if body and any(k == b"content-type" and v.startswith(b"application/json") for k, v in self.headers):
                body = json.dumps(json.loads(body), separators=(",", ":")).encode()
            head = b"%s %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % (self.parser.get_method(), self.url, upstream_port)
            head += b"".join(b"%s: %s\r\n" % (k, v) for k, v in self.headers if k not in hop)
            self.sent = head + b"content-length: %d\r\n\r\n" % len(body) + body
            asyncio.get_running_loop().create_task(self.forward())

        async def forward(self) -> None:
            if self.back is None or self.back.transport is None or self.back.transport.is_closing():
                _, self.back = await asyncio.get_running_loop().create_connection(
                    lambda: Back(self), "127.0.0.1", upstream_port)
            assert self.sent is not None and self.back.transport is not None
            self.back.start()
            self.back.transport.write(self.sent)

        def back_lost(self, back: Back) -> None:
            if back is self.back:
                self.back = None
                if self.sent is not None and not back.got:  # closed while idle, before any answer: again
                    asyncio.get_running_loop().create_task(self.forward())

        def write_head(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes | None) -> None:
            out = [b"HTTP/1.1 %d OK\r\n" % status]
            out += [b"%s: %s\r\n" % (k, v) for k, v in headers if k not in hop]
            out.append(b"content-length: %d\r\n\r\n" % len(body) if body is not None
                       else b"transfer-encoding: chunked\r\n\r\n")
            self.transport.write(b"".join(out) + (body or b""))

        def done(self) -> None:
            self.sent = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self.back is not None and self.back.transport is not None:
                self.back.transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Front, "127.0.0.1", port)
        await server.serve_forever()

    run_on_uvloop(main())


# -- the bare SDK forwarder: what one more SDK hop costs, for reference ---------------------------

def serve_bare_proxy(port: int, upstream: str) -> None:
    """A low-level Server whose only tool handler forwards to one open SDK Client (defaults): no
    routing, no policy, no registry."""
    import mcp_types as types
    import uvicorn
    from mcp import Client
    from mcp.server.lowlevel import Server

    state: dict[str, Any] = {}

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return await state["client"].list_tools()

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await state["client"].call_tool(params.name, dict(params.arguments or {}))

    @contextlib.asynccontextmanager
    async def lifespan(server: Any) -> Any:
        async with Client(upstream) as client:
            state["client"] = client
            yield {}

    server = Server("bare-proxy", on_list_tools=on_list_tools, on_call_tool=on_call_tool, lifespan=lifespan)
    server.middleware = []
    uvicorn.run(server.streamable_http_app(streamable_http_path="/mcp"), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


# -- the client process -----------------------------------------------------------------------

def first_text(result: Any) -> str:
    """The text of a call result's first content block ("empty" when it has none)."""
    first = result.content[0] if result.content else None
    return str(getattr(first, "text", "empty"))


async def run_clients(url: str, tools: list[str], clients: int, calls: int,
                      watch: tuple[int, ...] = ()) -> dict[str, Any]:
    """``clients`` SDK clients, each making ``calls`` calls; client i uses ``tools[i % len]``.
    ``watch``: pids whose CPU time is taken over the calls alone (``server_cpu``: after every
    client connected and made its first call, until the last call ended)."""
    from mcp import Client

    latencies: list[float] = []
    errors: list[str] = []
    opened = anyio.Event()
    ready = 0
    start_gate = anyio.Event()

    async def one(i: int) -> None:
        nonlocal ready
        tool = tools[i % len(tools)]
        async with Client(url) as client:
            await client.call_tool(tool, {"text": "warm"})  # negotiated, and the route warm
            ready += 1
            if ready == clients:
                opened.set()
            await start_gate.wait()
            for n in range(calls):
                t = time.perf_counter()
                try:
                    result = await client.call_tool(tool, {"text": f"{i}-{n}"})
                    if result.is_error or first_text(result) != f"{i}-{n}":
                        errors.append(first_text(result)[:200])
                except Exception as exc:  # counted, not raised: the bench reports errors
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                latencies.append(time.perf_counter() - t)

    wall = 0.0
    with anyio.fail_after(300):
        async with anyio.create_task_group() as tg:
            for i in range(clients):
                tg.start_soon(one, i)
            await opened.wait()
            servers_began = [cpu_seconds(pid) for pid in watch]
            began, cpu_began = time.perf_counter(), time.process_time()
            start_gate.set()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        server_cpu = [cpu_seconds(pid) - spent for pid, spent in zip(watch, servers_began)]
    return {"latencies": latencies, "errors": errors, "wall": wall, "cpu": cpu, "server_cpu": server_cpu}


async def run_sequential(routes: dict[str, tuple[str, str]], calls: int, block: int) -> dict[str, list[float]]:
    """One SDK client per mode (``routes``: mode -> (url, tool)), all open at once, each warm;
    then ``calls`` calls per mode, one after another, in blocks of ``block`` that take turns
    (direct, bare, SDK path, lane, direct, ...): a drift of the machine's speed within the run
    hits every mode alike, and each block but its first call finds its process warm."""
    from mcp import Client

    latencies: dict[str, list[float]] = {mode: [] for mode in routes}
    async with contextlib.AsyncExitStack() as stack:
        clients = {mode: await stack.enter_async_context(Client(url)) for mode, (url, _) in routes.items()}
        for mode, client in clients.items():
            await client.call_tool(routes[mode][1], {"text": "warm"})
        for start in range(0, calls, block):
            for mode, client in clients.items():
                tool = routes[mode][1]
                for n in range(start, min(calls, start + block)):
                    t = time.perf_counter()
                    result = await client.call_tool(tool, {"text": f"s-{n}"})
                    latencies[mode].append(time.perf_counter() - t)
                    if result.is_error or first_text(result) != f"s-{n}":
                        raise RuntimeError(f"{mode}: {first_text(result)[:200]}")
    return latencies


def sequential_process(routes: dict[str, tuple[str, str]], calls: int, block: int) -> dict[str, list[float]]:
    out = subprocess.run(
        [sys.executable, __file__, "--sequential", json.dumps(routes), "--calls", str(calls), "--block", str(block)],
        capture_output=True, text=True, timeout=400, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def client_process(url: str, tools: list[str], clients: int, calls: int, watch: list[int]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", url, "--tools", ",".join(tools), "--clients", str(clients),
         "--calls", str(calls), "--watch", ",".join(map(str, watch))],
        capture_output=True, text=True, timeout=400, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- orchestration ----------------------------------------------------------------------------

@contextlib.contextmanager
def process(args: list[str], port: int, what: str,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc, f"the {what}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (Linux /proc): a measure that load from
    other processes on a shared machine does not distort the way wall time is distorted."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(base: str) -> dict[str, int]:
    import httpx2

    return httpx2.get(f"{base}/stats", timeout=5).json()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def register_sources(home: str, url: str, names: list[str]) -> None:
    os.environ["CONCIERGE_HOME"] = home
    from concierge.registry import Registry

    async def go() -> None:
        reg = Registry.open(home)
        try:
            for name in names:
                out = await reg.register({"name": name, "base_url": url, "auth_kind": "none",
                                          "app_namespace": name, "rate_cap_per_minute": RATE_CAP})
                assert out.status == "active", out.health_error
            reg.create_agent({"slug": "bench"})
        finally:
            reg.close()

    anyio.run(go)


def main_bench(args: argparse.Namespace) -> None:
    up_port, gw_port, bare_port, sdk_port, relay_port, floor_port = (free_port() for _ in range(6))
    upstream = f"http://127.0.0.1:{up_port}"
    urls = {"direct": f"{upstream}/mcp", "relay": f"http://127.0.0.1:{relay_port}/mcp",
            "floor": f"http://127.0.0.1:{floor_port}/mcp", "bare": f"http://127.0.0.1:{bare_port}/mcp",
            "sdk": f"http://127.0.0.1:{sdk_port}/mcp", "gateway": f"http://127.0.0.1:{gw_port}/mcp"}
    gateways = ("sdk", "gateway")
    rounds = args.rounds
    # each gateway mode has sources of its own (rate caps), each round too
    seq_sources = {g: [f"{g}seq{r}" for r in range(rounds)] for g in gateways}
    conc_sources = {g: [[f"{g}c{r}a", f"{g}c{r}b"] for r in range(rounds)] for g in gateways}
    all_sources = [s for g in gateways for s in seq_sources[g] + [s for pair in conc_sources[g] for s in pair]]
    seq: dict[str, list[float]] = {mode: [] for mode in urls}
    conc: dict[str, list[dict[str, Any]]] = {mode: [] for mode in urls}
    cpu: dict[str, float] = {"upstream (direct runs)": 0.0, "byte relay": 0.0, "upstream (relay runs)": 0.0,
                             "Python forwarder": 0.0, "upstream (Python forwarder runs)": 0.0,
                             "bare forwarder": 0.0, "gateway (SDK path)": 0.0,
                             "gateway (lane)": 0.0, "upstream (lane runs)": 0.0}
    with tempfile.TemporaryDirectory() as home, \
            process([sys.executable, __file__, "--upstream", str(up_port)], up_port, "upstream") as up_proc:
        env = dict(os.environ, CONCIERGE_HOME=home,
                   CONCIERGE_MASTER_KEY=os.environ.get("CONCIERGE_MASTER_KEY", "ab" * 32))
        os.environ["CONCIERGE_MASTER_KEY"] = env["CONCIERGE_MASTER_KEY"]
        register_sources(home, urls["direct"], all_sources)
        before = stats(upstream)
        gateway_cmd = [sys.executable, "-m", "concierge", "gateway", "--agent", "bench", "--port"]
        with process(gateway_cmd + [str(gw_port)], gw_port, "gateway", env=env) as gw_proc:
            started = stats(upstream)
            gateway_sessions = _sessions(started) - _sessions(before)  # the gateway's start-up listing
            with process([sys.executable, __file__, "--bare-proxy", str(bare_port), "--to", urls["direct"]],
                         bare_port, "bare proxy") as bare_proc, \
                    process([sys.executable, __file__, "--relay", str(relay_port), "--to", str(up_port)],
                            relay_port, "byte relay") as relay_proc, \
                    process([sys.executable, __file__, "--python-forwarder", str(floor_port), "--to", str(up_port)],
                            floor_port, "Python forwarder") as floor_proc, \
                    process(gateway_cmd + [str(sdk_port), "--no-fast-lane"], sdk_port, "gateway (SDK path)", env=env) as sdk_proc:
                owner = {"direct": [(up_proc, "upstream (direct runs)")],
                         "relay": [(relay_proc, "byte relay"), (up_proc, "upstream (relay runs)")],
                         "floor": [(floor_proc, "Python forwarder"), (up_proc, "upstream (Python forwarder runs)")],
                         "bare": [(bare_proc, "bare forwarder")],
                         "sdk": [(sdk_proc, "gateway (SDK path)")],
                         "gateway": [(gw_proc, "gateway (lane)"), (up_proc, "upstream (lane runs)")]}
                for r in range(rounds):
                    routes = {mode: (urls[mode], f"{seq_sources[mode][r]}_echo" if mode in gateways else "echo")
                              for mode in urls}
                    s0 = stats(upstream)
                    for mode, latencies in sequential_process(routes, args.seq_calls, args.block).items():
                        seq[mode] += latencies
                    # less the direct, relayed and forwarded clients' own; what the SDK path opens is counted too (an upper bound)
                    gateway_sessions += _sessions(stats(upstream)) - _sessions(s0) - 3
                    for mode in urls:
                        tools = [f"{s}_echo" for s in conc_sources[mode][r]] if mode in gateways else ["echo"]
                        s0 = stats(upstream)
                        run = client_process(urls[mode], tools, args.clients, args.calls,
                                             [p.pid for p, _ in owner[mode]])
                        conc[mode].append(run)
                        for (_, name), spent in zip(owner[mode], run["server_cpu"]):
                            cpu[name] += spent
                        if mode == "gateway":
                            gateway_sessions += _sessions(stats(upstream)) - _sessions(s0)
    report(args, seq, conc, gateway_sessions, len(all_sources), cpu)


def _sessions(counts: dict[str, int]) -> int:
    return counts.get("server/discover", 0) + counts.get("initialize", 0)


def report(args: argparse.Namespace, seq: dict[str, list[float]], conc: dict[str, list[dict[str, Any]]],
           gateway_sessions: int, n_sources: int, cpu: dict[str, float]) -> None:
    print(f"Gateway bench: upstream, `concierge gateway` and clients in separate processes on loopback; "
          f"{args.rounds} interleaved rounds of each mode; {os.cpu_count()} cores")
    print("(byte relay = a TCP relay copying bytes both ways, no parsing: what any process in the path "
          "costs on this machine now, the floor for a proxy)")
    print("(Python forwarder = the least a Python proxy of MCP does, on the gateway's own stack: "
          "uvloop, httptools, each JSON body parsed and written again; no policy, no ASGI: the floor for Python)")
    print("(bare = a naive forwarder written with the same SDK and its defaults: one Client, no routing, "
          "no policy; a reference for what one SDK hop costs)\n")
    print("(gateway (SDK path) = `concierge gateway --no-fast-lane`: the mcp SDK's server and client "
          "carry every call; gateway (lane) = the default: stateless-era tools/call forwarded by "
          "concierge.gateway_lane; the goals are the default's)\n")
    med = {m: statistics.median(v) for m, v in seq.items()}
    p99 = {m: pct(v, 0.99) for m, v in seq.items()}
    print(f"Sequential: 1 client, {args.seq_calls} calls per round ({len(seq['direct'])} calls per mode)")
    for mode in seq:
        print(f"  {LABELS[mode]:18s} median {ms(med[mode]):>9}   p99 {ms(p99[mode]):>9}")
    added = med["gateway"] - med["direct"]
    print(f"  added by the SDK path   median {ms(med['sdk'] - med['direct']):>9}   "
          f"p99 {ms(p99['sdk'] - p99['direct']):>9}")
    print(f"  added by the lane       median {ms(added):>9}   p99 {ms(p99['gateway'] - p99['direct']):>9}   "
          f"(ratios to direct: median {med['gateway'] / med['direct']:.2f}x, p99 {p99['gateway'] / p99['direct']:.2f}x)")
    floor = med["relay"] - med["direct"]
    print(f"  added by the byte relay median {ms(floor):>9}   p99 {ms(p99['relay'] - p99['direct']):>9}   "
          f"(the floor; the lane beyond it: median {ms(added - floor)})")
    pyfloor = med["floor"] - med["direct"]
    print(f"  added by the Python forwarder median {ms(pyfloor):>9}   p99 {ms(p99['floor'] - p99['direct']):>9}   "
          f"(the floor for Python; the lane beyond it: median {ms(added - pyfloor)})")
    print(f"  added by the bare SDK forwarder   median {ms(med['bare'] - med['direct']):>9}   "
          f"(the gateway's own share: {ms(med['gateway'] - med['bare'])})")

    def summary(runs: list[dict[str, Any]]) -> tuple[float, float, float, int]:
        calls = sum(len(r["latencies"]) for r in runs)
        wall = sum(r["wall"] for r in runs)
        lat = [x for r in runs for x in r["latencies"]]
        return calls / wall, statistics.median(lat), pct(lat, 0.99), sum(len(r["errors"]) for r in runs)

    sums = {m: summary(runs) for m, runs in conc.items()}
    print(f"\nConcurrent: {args.clients} clients x {args.calls} calls per round")
    for mode, (tp, m, p, e) in sums.items():
        rounds = ", ".join(f"{len(r['latencies']) / r['wall']:.0f}" for r in conc[mode])
        print(f"  {LABELS[mode]:18s} {tp:7.1f} calls/s   median {ms(m):>9}   p99 {ms(p):>9}   errors {e}   (rounds: {rounds})")
    dt, dm, dp, _ = sums["direct"]
    gt, gm, gp, ge = sums["gateway"]
    bt, _, bp, _ = sums["bare"]
    rt, _, rp, _ = sums["relay"]
    ft, _, fp, _ = sums["floor"]
    st, _, sp, _ = sums["sdk"]
    print(f"  ratios   lane/direct: throughput {gt / dt:.2f}x, p99 {gp / dp:.2f}x, median {gm / dm:.2f}x;  "
          f"SDK path/direct: throughput {st / dt:.2f}x, p99 {sp / dp:.2f}x;  "
          f"bare/direct: throughput {bt / dt:.2f}x, p99 {bp / dp:.2f}x;  "
          f"byte relay/direct (the floor): throughput {rt / dt:.2f}x, p99 {rp / dp:.2f}x;  "
          f"Python forwarder/direct: throughput {ft / dt:.2f}x, p99 {fp / dp:.2f}x")
    for e in [e for mode in ("gateway", "sdk") for r in conc[mode] for e in r["errors"]][:3]:
        print(f"  e.g. error: {e}")
    calls = args.rounds * args.clients * args.calls
    per_call = {name: spent / calls * 1000 for name, spent in cpu.items()}
    print("  CPU per call in the concurrent runs (over the calls alone, not the clients' connecting; "
          "wall-clock independent): " + ", ".join(
        f"{name} {value:.2f} ms" for name, value in per_call.items()))
    cores = os.cpu_count() or 1
    lane = per_call["gateway (lane)"]
    ceiling = min(1000 / lane, cores * 1000 / (lane + per_call["upstream (lane runs)"]))
    direct_ceiling = min(1000 / per_call["upstream (direct runs)"], cores * 1000 / per_call["upstream (direct runs)"])
    print(f"  what bounds it: the gateway is one Python process; at {lane:.2f} ms of CPU per call it "
          f"serves at most ~{ceiling:.0f} calls/s on this machine, while the upstream alone allows "
          f"~{direct_ceiling:.0f} (ceiling ratio {ceiling / direct_ceiling:.2f}x, before the clients' own CPU)")
    client_cpu = {m: sum(r.get("cpu", 0.0) for r in runs) / max(1, sum(len(r["latencies"]) for r in runs)) * 1000
                  for m, runs in conc.items()}
    direct_total = client_cpu["direct"] + per_call["upstream (direct runs)"]
    lane_total = client_cpu["gateway"] + lane + per_call["upstream (lane runs)"]
    relay_total = client_cpu["relay"] + per_call["byte relay"] + per_call["upstream (relay runs)"]
    floor_total = client_cpu["floor"] + per_call["Python forwarder"] + per_call["upstream (Python forwarder runs)"]
    print(f"  the whole machine's CPU per call: direct {direct_total:.2f} ms (clients {client_cpu['direct']:.2f} + "
          f"upstream), through the lane {lane_total:.2f} ms (clients {client_cpu['gateway']:.2f} + gateway + upstream); "
          f"when {cores} cores are the limit, the lane can reach ~{direct_total / lane_total:.2f}x direct "
          f"(through the byte relay {relay_total:.2f} ms: ~{direct_total / relay_total:.2f}x; "
          f"through the Python forwarder {floor_total:.2f} ms: ~{direct_total / floor_total:.2f}x)")
    limit = n_sources + args.clients
    print(f"\nUpstream sessions opened by the gateway (start-up and its runs): {gateway_sessions} "
          f"(sources {n_sources} + clients {args.clients} = {limit})")

    goals = [
        ("added median latency <= 1 ms", added <= 0.001, f"{added * 1000:.2f} ms"),
        ("concurrent throughput >= 0.8x direct", gt / dt >= 0.8, f"{gt / dt:.2f}x"),
        ("0 errors", ge == 0, f"{ge} errors"),
        ("concurrent p99 <= 2x direct", gp / dp <= 2.0, f"{gp / dp:.2f}x"),
        ("sessions opened <= sources + clients", gateway_sessions <= limit, f"{gateway_sessions} <= {limit}"),
    ]
    print("\nGoals")
    for name, met, value in goals:
        print(f"  {'met    ' if met else 'NOT met'}  {name:40s} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq-calls", type=int, default=200)
    parser.add_argument("--block", type=int, default=20, help="sequential calls per mode before the next mode's turn")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--bare-proxy", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--relay", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--python-forwarder", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--to", help=argparse.SUPPRESS)
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--tools", help=argparse.SUPPRESS)
    parser.add_argument("--watch", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sequential", metavar="ROUTES", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        serve_upstream(args.upstream)
        return
    if args.relay:
        serve_relay(args.relay, int(args.to))
        return
    if args.python_forwarder:
        serve_python_forwarder(args.python_forwarder, int(args.to))
        return
    if args.bare_proxy:
        serve_bare_proxy(args.bare_proxy, args.to)
        return
    if args.sequential:
        routes = {mode: (url, tool) for mode, (url, tool) in json.loads(args.sequential).items()}
        print(json.dumps(anyio.run(run_sequential, routes, args.calls, args.block)))
        return
    if args.client:
        watch = tuple(int(pid) for pid in args.watch.split(",") if pid)
        result = anyio.run(run_clients, args.client, args.tools.split(","), args.clients, args.calls, watch)
        print(json.dumps(result))
        return
    started = time.perf_counter()
    main_bench(args)
    print(f"\n(total bench time {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
