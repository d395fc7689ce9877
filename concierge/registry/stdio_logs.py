"""The stderr log of a stdio source's program, kept in a file beside the registry so that
another process (``source show`` while ``serve`` runs the program) can tail it.

`FileProcessLog` is the transport's bounded `ProcessLog` (secrets already redacted) that also
writes its tail to ``<home>/logs/stdio/<source id>.log`` (0600, at most ``max_lines`` lines):
when a program starts or ends, and at most once a second while it writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from concierge import config
from concierge.mcp_client.stdio import ProcessLog

__all__ = ["FileProcessLog", "read_tail"]

_SAVE_EVERY_S = 1.0


class FileProcessLog(ProcessLog):
    def __init__(self, path: Path, **options: int) -> None:
        super().__init__(**options)
        self.path = path
        self._saved_at = 0.0

    def started(self, pid: int, secrets: Iterable[str] = ()) -> None:
        super().started(pid, secrets)
        self.save()

    def exited(self, status: int | None) -> None:
        super().exited(status)
        self.save()

    def feed(self, data: str) -> None:
        super().feed(data)
        if time.monotonic() - self._saved_at >= _SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        """Write the tail (best effort: a full disk must not stop the program)."""
        self._saved_at = time.monotonic()
        head = f"# pid={self.pid} starts={self.starts} last_exit={self.last_exit}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_suffix(".tmp")
            config.private_file(tmp)
            tmp.write_text("\n".join([head, *self.tail(self.max_lines)]) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass


def read_tail(path: Path, lines: int) -> list[str] | None:
    """The last ``lines`` lines saved at ``path`` (None if nothing was saved)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    kept = [line for line in text.splitlines() if not line.startswith("# pid=")]
    return kept[-lines:] if lines > 0 else []
