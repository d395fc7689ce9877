"""Hosted-mode scenarios with a real public address, inside a network namespace.

Not a test module. `netns()` creates a namespace of its own (a veth pair inside it carrying
`PUBLIC`, plus loopback; nothing is routed out of it) and `run_scenario(ns, name)` runs one
scenario below in a child process inside it (``ip netns exec``); the scenario prints one JSON
line that the test reads. Servers and clients both live in the namespace, so nothing ever dials
a non-loopback address outside it.

    python -m tests.trust_netns SCENARIO        (inside the namespace)
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PUBLIC = "93.184.216.34"
"""A public address (example.com's), assigned inside the namespace only."""
ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# -- the namespace (run by the test process) ---------------------------------------------------

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@contextlib.contextmanager
def netns() -> Iterator[str]:
    """A fresh network namespace with ``lo`` up and `PUBLIC` on a veth pair inside it."""
    name = f"ctrust-{os.getpid()}-{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        for cmd in (["link", "set", "lo", "up"], ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                    ["addr", "add", f"{PUBLIC}/32", "dev", "v0"], ["link", "set", "v0", "up"],
                    ["link", "set", "v1", "up"]):
            _ip("netns", "exec", name, "ip", *cmd)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


def run_scenario(ns: str, name: str, *, timeout: float = 90) -> dict[str, Any]:
    """Run scenario ``name`` inside ``ns``; its JSON answer (it fails loudly if there is none)."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CONCIERGE_HOME": home,
               "CONCIERGE_MASTER_KEY": "0123456789abcdef" * 4, "NO_PROXY": "*"}
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "OPENAI_API_KEY"):
            env.pop(var, None)
        done = subprocess.run(["ip", "netns", "exec", ns, PYTHON, "-m", "tests.trust_netns", name],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, f"scenario {name} failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    return dict(json.loads(lines[-1]))


# -- helpers used inside the namespace ----------------------------------------------------------

def _tls_files(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a certificate for ``name`` signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "concierge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@contextlib.contextmanager
def _serve(app: Any, host: str, port: int | None = None, **ssl: Any) -> Iterator[int]:
    import uvicorn

    from tests.mcp_servers import free_port

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="on", timeout_graceful_shutdown=1, **ssl))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


class _Recorder:
    """ASGI wrapper counting HTTP requests and recording their Host headers."""

    def __init__(self, app: Any) -> None:
        self.app, self.hosts = app, []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.hosts.append(dict(scope["headers"]).get(b"host", b"").decode())
        await self.app(scope, receive, send)


def _mcp_app(*, slow: float = 0.0) -> Any:
    """A real MCP server that accepts any Host header (as a public server does)."""
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="echo", input_schema={"type": "object"})])

    async def on_call_tool(ctx: Any, params: Any) -> types.CallToolResult:
        await anyio.sleep(slow)
        return types.CallToolResult(content=[types.TextContent(type="text", text="public")])

    return Server("public", on_list_tools=on_list_tools, on_call_tool=on_call_tool).streamable_http_app(
        streamable_http_path="/mcp", host="0.0.0.0")


class _Resolver:
    def __init__(self, *answers: list[str]) -> None:
        self.answers, self.calls = list(answers), 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


# -- scenarios ----------------------------------------------------------------------------------

def scenario_wording() -> dict[str, Any]:
    """Hosted mode: a closed port, an HTML page, an HTTP 500, a server that never answers and
    https to a plain-http port all read the same; a real MCP server and a 401 do not."""
    import anyio

    from concierge.mcp_client import Endpoint, probe
    from concierge.mcp_client.url_policy import UrlPolicy
    from tests.mcp_servers import demo_app, free_port, hang_app, html_app, status_app

    policy = UrlPolicy("hosted")
    out: dict[str, Any] = {}

    async def check(label: str, url: str) -> None:
        result = await probe(Endpoint(url, connect_timeout=1.5, url_policy=policy))
        port = url.split(":")[2].split("/")[0]
        out[label] = {"ok": result.ok, "kind": result.error_kind and result.error_kind.value,
                      "error": (result.error or "").replace(port, "PORT").replace("https", "http"),
                      "status": result.http_status}

    with contextlib.ExitStack() as stack:
        ports = {label: stack.enter_context(_serve(app, PUBLIC)) for label, app in (
            ("html", html_app()), ("server_error", status_app(500)), ("hang", hang_app()),
            ("plain_for_tls", _mcp_app()), ("mcp", _mcp_app()), ("auth", demo_app(token="netns-token-1")))}
        ports["closed"] = free_port(PUBLIC)

        async def run() -> None:
            for label, port in ports.items():
                scheme = "https" if label == "plain_for_tls" else "http"
                await check(label, f"{scheme}://{PUBLIC}:{port}/mcp")

        anyio.run(run)
    return out


def scenario_tls_and_pinning() -> dict[str, Any]:
    """A name resolved by the policy, pinned, dialled by address, with TLS verified for the
    name (SNI) and the name in the Host header; a second, rebinding answer is never used."""
    import anyio

    from concierge.mcp_client import Endpoint, McpSession, probe
    from concierge.mcp_client.url_policy import UrlPolicy

    name = "mcp.example.test"
    directory = Path(tempfile.mkdtemp())
    ca, cert, key = _tls_files(directory, name)
    os.environ["SSL_CERT_FILE"] = str(ca)  # the CA bundle httpx2 verifies against
    public, loopback = _Recorder(_mcp_app(slow=0.3)), _Recorder(_mcp_app())
    out: dict[str, Any] = {}
    with _serve(public, PUBLIC, ssl_certfile=str(cert), ssl_keyfile=str(key)) as port, \
            _serve(loopback, "127.0.0.1", port, ssl_certfile=str(cert), ssl_keyfile=str(key)):
        resolver = _Resolver([PUBLIC], ["127.0.0.1"])
        endpoint = Endpoint(f"https://{name}:{port}/mcp", url_policy=UrlPolicy("hosted", resolver=resolver))

        async def run() -> None:
            result = await probe(endpoint)
            out["probe"] = {"ok": result.ok, "error": result.error, "tools": [t.name for t in result.tools]}
            resolver.calls = 0
            async with McpSession(endpoint) as session:
                texts: list[str] = []

                async def call() -> None:
                    texts.append((await session.call_tool("echo", {})).text)

                async with anyio.create_task_group() as tg:
                    for _ in range(6):
                        tg.start_soon(call)
            out["calls"] = texts
            out["lookups_per_session"] = resolver.calls
            by_address = await probe(Endpoint(f"https://{PUBLIC}:{port}/mcp", url_policy=UrlPolicy("hosted")))
            out["by_address"] = {"ok": by_address.ok, "kind": by_address.error_kind and by_address.error_kind.value}

        anyio.run(run)
        out["public_hosts"] = sorted(set(public.hosts))
        out["loopback_requests"] = len(loopback.hosts)
        out["port"] = port
    return out


def scenario_wildcard_self() -> dict[str, Any]:
    """Concierge bound to 0.0.0.0: its public address is refused after connecting (the two
    ends of the connection share an address), before any request is sent."""
    import anyio

    from concierge.mcp_client import Endpoint, probe
    from concierge.mcp_client.url_policy import UrlPolicy

    recorder = _Recorder(_mcp_app())
    with _serve(recorder, "0.0.0.0") as port:
        policy = UrlPolicy("hosted")
        policy.add_self("0.0.0.0", port)
        result = anyio.run(probe, Endpoint(f"http://{PUBLIC}:{port}/mcp", url_policy=policy))
        requests = len(recorder.hosts)
        other = UrlPolicy("hosted")  # the same server, for a policy that is not it
        reachable = anyio.run(probe, Endpoint(f"http://{PUBLIC}:{port}/mcp", url_policy=other))
    return {"kind": result.error_kind and result.error_kind.value, "error": result.error,
            "requests": requests, "other_ok": reachable.ok}


def _wait_for(url: str, proc: subprocess.Popen[str]) -> None:
    import httpx2

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "concierge", *args], capture_output=True, text=True, input=stdin,
                          timeout=60, env=os.environ)


def _key(role: str, sandbox: str | None = None) -> str:
    """A key made in this process, in the registry the CLI children use (``CONCIERGE_HOME``)."""
    from concierge.registry import Registry
    from concierge.server.auth import KeyStore

    registry = Registry.open()
    try:
        sandbox_id = registry.get_sandbox(sandbox).id if sandbox else None
        return KeyStore(registry.store).create(role=role, sandbox_id=sandbox_id).key
    finally:
        registry.close()


def scenario_serve_hosted() -> dict[str, Any]:
    """The real ``concierge serve --host PUBLIC``: the URL policy is hosted without being
    asked; sources at loopback, private, metadata or mapped addresses and at the server itself
    are refused with a 400 naming base_url."""
    import httpx2

    from tests.mcp_servers import free_port

    key = _key("editor")
    port = free_port(PUBLIC)
    proc = subprocess.Popen([PYTHON, "-m", "concierge", "serve", "--host", PUBLIC, "--port", str(port)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=os.environ)
    out: dict[str, Any] = {}
    try:
        base = f"http://{PUBLIC}:{port}"
        _wait_for(base + "/healthz", proc)
        with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            for url in (f"http://127.0.0.1:{port}/mcp", f"https://{PUBLIC}:{port}/api/v1/storage/sandboxes",
                        "https://169.254.169.254/latest/meta-data/", "https://[::ffff:127.0.0.1]/mcp",
                        "https://10.0.0.8/mcp", "https://0x7f000001/mcp", "https://metadata.google.internal/"):
                r = c.post("/api/v1/storage/sandboxes/default/sources/user-mcp",
                           json={"name": "x", "base_url": url, "auth_kind": "none"})
                out[url] = {"status": r.status_code, "field": r.json().get("field"), "detail": r.json().get("detail")}
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    out["banner"] = err.splitlines()[0] if err else ""
    return out


def scenario_gateway() -> dict[str, Any]:
    """``concierge gateway --host PUBLIC``: refused without keys; with keys, a request needs
    an editor key of the agent's sandbox; ``--insecure-no-auth`` serves anyone."""
    import httpx2

    from tests.mcp_servers import free_port

    from concierge.registry import Registry

    out: dict[str, Any] = {}
    registry = Registry.open()
    registry.create_agent({"slug": "bot"})
    registry.create_sandbox("elsewhere")
    registry.close()
    port = free_port(PUBLIC)
    refused = _cli("gateway", "--agent", "bot", "--host", PUBLIC, "--port", str(port))
    out["no_keys"] = {"code": refused.returncode, "stderr": refused.stderr.strip()}
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}

    def serve(*extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([PYTHON, "-m", "concierge", "gateway", "--agent", "bot", "--host", PUBLIC,
                                 "--port", str(port), *extra], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                text=True, env=os.environ)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
            try:
                httpx2.post(f"http://{PUBLIC}:{port}/mcp", json=body, headers=headers, timeout=1)
                return proc
            except httpx2.HTTPError:
                time.sleep(0.1)
        raise AssertionError("gateway did not come up")

    proc = serve("--insecure-no-auth")
    try:
        r = httpx2.post(f"http://{PUBLIC}:{port}/mcp", json=body, headers=headers, timeout=10)
        out["insecure_anonymous"] = r.status_code
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    editor, viewer, other = _key("editor"), _key("viewer"), _key("editor", "elsewhere")
    proc = serve()
    try:
        url = f"http://{PUBLIC}:{port}/mcp"
        out["anonymous"] = httpx2.post(url, json=body, headers=headers, timeout=10).status_code
        for label, key in (("editor", editor), ("viewer", viewer), ("other_sandbox", other), ("bogus", "ck_nope")):
            r = httpx2.post(url, json=body, headers={**headers, "Authorization": f"Bearer {key}"}, timeout=10)
            out[label] = r.status_code
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    out["banner"] = err
    return out


if __name__ == "__main__":
    print(json.dumps(globals()[f"scenario_{sys.argv[1]}"](), default=str))
