"""Real ``concierge serve`` processes on one database, for the multi-instance tests and
``bench/scale.py``: each is a process of its own on a loopback port, sharing the database
(``CONCIERGE_DATABASE_URL``) and the master key (``CONCIERGE_MASTER_KEY``), with a home of
its own (nothing else is shared)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

from tests.mcp_servers import free_port

__all__ = ["Instance", "concierge_cli", "serve_instances", "start_instance"]

MASTER_KEY = "0123456789abcdef" * 4  # tests/conftest.py's TEST_MASTER_KEY (a test-only key)


def _env(home: Path, database_url: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCIERGE_", "OPENAI_"))}
    env |= {"CONCIERGE_HOME": str(home), "CONCIERGE_MASTER_KEY": MASTER_KEY}
    if database_url:
        env["CONCIERGE_DATABASE_URL"] = database_url
    return env | dict(extra or {})


def concierge_cli(*args: str, home: Path, database_url: str | None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``concierge ARGS`` as a process of its own on that database."""
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "concierge", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(home, database_url), check=False)


@dataclass
class Instance:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str, timeout: float = 60) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, no goodbye."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_instance(name: str, home: Path, database_url: str | None, *extra: str) -> Instance:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "concierge", "serve", "--port", str(port), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=_env(home, database_url))
    return Instance(name, port, proc, log)


def wait_ready(instance: Instance, deadline: float) -> None:
    while time.monotonic() < deadline:
        if instance.proc.poll() is not None:
            raise RuntimeError(f"{instance.name} exited: {instance.log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx2.get(instance.url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{instance.name} did not start: {instance.log.read_text(errors='replace')[-2000:]}")


@contextmanager
def serve_instances(root: Path, database_url: str | None, names: tuple[str, ...] = ("A", "B", "C"),
                    *extra: str) -> Iterator[list[Instance]]:
    """Start one ``concierge serve`` per name (together), wait until each answers, stop them all."""
    instances = [start_instance(n, root / f"home-{n}", database_url, *extra) for n in names]
    try:
        deadline = time.monotonic() + 60
        for instance in instances:
            wait_ready(instance, deadline)
        yield instances
    finally:
        for instance in instances:
            instance.stop()
