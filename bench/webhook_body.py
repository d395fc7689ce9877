"""Peak memory of `concierge serve` under one unsigned 1 GiB webhook POST.

Starts ``concierge serve`` in a subprocess (a fresh CONCIERGE_HOME, anonymous loopback), a
demo MCP server, registers one source, then POSTs an unsigned body of ``--mib`` MiB to the
source's webhook receiver (streamed from a generator: the client never holds it) and prints
the server's peak RSS (VmHWM) before and after, and the answer.

    .venv/bin/python bench/webhook_body.py                      # this tree
    .venv/bin/python bench/webhook_body.py --tree /tmp/old-tree # another checkout (PYTHONPATH)

Compare two trees in one run by calling it twice; the numbers are the server's, not the
client's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, not bench/concierge.py


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


@contextlib.contextmanager
def _demo_server() -> Iterator[str]:
    from concierge.demo_server import build_demo_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(build_demo_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="run the server from this source tree (PYTHONPATH)")
    parser.add_argument("--mib", type=int, default=1024, help="body size in MiB (default 1024 = 1 GiB)")
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as home, _demo_server() as mcp_url:
        env = os.environ | {"CONCIERGE_HOME": home}
        if args.tree:
            env["PYTHONPATH"] = str(args.tree)
        proc = subprocess.Popen([sys.executable, "-m", "concierge", "serve", "--port", str(port),
                                 "--allow-anonymous-loopback"], env=env, cwd=args.tree or None,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx2.Client(base_url=base, timeout=120) as c:
                for _ in range(200):
                    try:
                        if c.get("/healthz").status_code == 200:
                            break
                    except httpx2.HTTPError:
                        time.sleep(0.05)
                made = c.post("/api/v1/storage/sandboxes/default/sources/user-mcp", json={
                    "name": "bench", "base_url": mcp_url, "auth_kind": "none", "app_namespace": "bench"}).json()
                sid = made["data_source_id"]
                before = _hwm_kib(proc.pid)
                piece = b"x" * (1024 * 1024)

                def body() -> Iterator[bytes]:
                    for _ in range(args.mib):
                        yield piece

                started = time.perf_counter()
                try:
                    r = c.post(f"/api/v1/webhooks/user-mcp/{sid}", content=body(),
                               headers={"Content-Type": "application/json",
                                        "Content-Length": str(args.mib * 1024 * 1024)})
                    answer = f"{r.status_code} {r.text[:120]}"
                except httpx2.HTTPError as exc:  # the server answered and closed mid-upload
                    answer = f"connection closed by the server ({type(exc).__name__})"
                took = time.perf_counter() - started
                time.sleep(0.5)
                after = _hwm_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"tree: {args.tree or 'this checkout'}  body: {args.mib} MiB unsigned")
    print(f"server peak RSS before: {before / 1024:.0f} MiB, after: {after / 1024:.0f} MiB "
          f"(+{(after - before) / 1024:.0f} MiB); answer in {took:.2f} s: {answer}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
