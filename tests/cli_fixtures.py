"""Running the ``concierge`` command in this process: `run_cli` calls `concierge.cli.main(argv)`
with its own stdin, stdout, stderr and environment, and returns what a subprocess would
(``returncode``, ``stdout``, ``stderr``). A few smoke tests still start real processes.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from concierge.cli import main

__all__ = ["CliResult", "run_cli"]


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_cli(*args: str, home: Path | str | None = None, stdin: str | None = None,
            env: Mapping[str, str | None] | None = None, stderr: io.StringIO | None = None) -> CliResult:
    """``concierge ARGS`` in-process; ``home`` sets CONCIERGE_HOME, ``env`` more variables
    (``None`` unsets one), both only for this call. ``stderr``: a buffer of the caller's, to
    read what the command prints while it runs (in another thread)."""
    changes: dict[str, str | None] = {"CONCIERGE_HOME": str(home)} if home is not None else {}
    changes |= dict(env or {})
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with _environment(changes), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors and --help
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdin = old_stdin
    return CliResult(code, out.getvalue(), err.getvalue())
