"""What the bench scripts share for the processes they start on loopback: a free port, and
waiting until a child listens on it."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

__all__ = ["free_port", "wait_for_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[Any], what: str, timeout: float = 30.0) -> None:
    """Return once ``proc`` accepts connections on ``port``; RuntimeError if it exits or the time
    runs out first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)
