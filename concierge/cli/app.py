"""The ``concierge`` command: parser, global options, settings and dispatch.

With no sub-command it starts the conversational REPL. Each group of sub-commands lives in
its own module with an ``add_commands(subparsers, common)`` function; a command's handler is
``async def handler(args, backend) -> int`` (or ``run(args) -> int`` for commands that need no
backend). Exit codes: 0 success, 1 a validation or operation error (``{"error", "detail"}``
with ``--json``), 2 usage errors (argparse), 130 interrupted.

Global options (``--json``, ``--api-url``) are accepted before and after the sub-command:
the top-level parser holds their defaults, and each sub-command's copy is ``SUPPRESS``ed so it
sets them only when given (otherwise a sub-command's default would silently overwrite what
was given before it). The settings (`concierge.config.load`) are loaded once, here, with the
flags first, and reach the handlers as ``args.settings``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from concierge import config, log_scrub
from concierge.cli import output
from concierge.errors import ConciergeError

__all__ = ["GLOBAL_OPTIONS", "build_parser", "main", "open_backend"]

GLOBAL_OPTIONS = ("json", "api_url", "database_url")
"""Options every command takes, before or after its name."""


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    unset: Any = argparse.SUPPRESS
    parser.add_argument("--json", action="store_true", default=False if top else unset,
                        help="print machine-readable JSON on stdout")
    parser.add_argument("--api-url", metavar="URL", default=None if top else unset,
                        help="manage a remote `concierge serve` (default CONCIERGE_API_URL; "
                             "key from CONCIERGE_API_KEY)")
    parser.add_argument("--database-url", metavar="URL", default=None if top else unset,
                        help="the database (default CONCIERGE_DATABASE_URL, else the SQLite file in "
                             "the home; postgresql://user@host:port/db for PostgreSQL)")


def build_parser() -> argparse.ArgumentParser:
    from concierge.cli import registry_cmds

    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, top=False)

    parser = argparse.ArgumentParser(
        prog="concierge",
        description="Register, check and revoke the MCP servers your agents use. "
                    "Run with no command for the conversational concierge.")
    _global_options(parser, top=True)
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registry_cmds.add_commands(sub, common)
    for module in _optional_command_modules():
        module.add_commands(sub, common)
    return parser


def _optional_command_modules() -> list[ModuleType]:
    """Command groups from later layers (catalog, chat, server), present when installed."""
    modules = []
    for name in ("catalog_cmds", "chat_cmds", "server_cmds"):
        try:
            modules.append(importlib.import_module(f"concierge.cli.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"concierge.cli.{name}":
                raise
    return modules


def open_backend(args: argparse.Namespace) -> Any:
    """A RemoteBackend when the settings name an API URL (``--api-url`` / CONCIERGE_API_URL),
    else the LocalBackend on the settings' home."""
    settings: config.Settings = args.settings
    if settings.api_url:
        from concierge.remote import RemoteBackend

        return RemoteBackend(settings.api_url, api_key=settings.api_key)
    from concierge.backend import LocalBackend

    return LocalBackend.open(settings=settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``concierge`` command with ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(given)
    if extra:
        leaf = _leaf_parser(parser, given)
        leaf.error(_unrecognized(extra, leaf))  # exits 2, with that command's usage
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    log_scrub.install()  # a source's ?api_key=… never reaches a log line
    if not args.verbose:
        # The mcp SDK logs tracebacks for server faults we already classify and explain.
        logging.getLogger("mcp").setLevel(logging.CRITICAL)
    if args.command is None:  # bare `concierge` starts the conversational REPL
        if "chat" not in _commands(parser):
            parser.print_help()
            return 0
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "chat"])
    try:
        args.settings = config.load({"api_url": args.api_url, "database_url": args.database_url,
                                     "model": getattr(args, "model", None)})
        args.api_url = args.settings.api_url
        if hasattr(args, "run"):
            return int(args.run(args) or 0)
        import anyio

        return anyio.run(_run_with_backend, args, backend_options={"use_uvloop": _uvloop_for(args.command)})
    except ConciergeError as exc:
        output.error(exc, as_json=getattr(args, "json", False))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`concierge audit | head`): stop quietly, as other tools do.
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit does not raise a second time."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture it)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _leaf_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the deepest sub-command named in ``argv`` (``source user-mcp add``)."""
    for token in argv:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is not None and token in sub.choices:
            parser = sub.choices[token]
    return parser


def _unrecognized(extra: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """"unrecognized argument --app-namespace (did you mean --namespace?)"."""
    import difflib

    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    flags = [x.split("=", 1)[0] for x in extra if x.startswith("-")]
    if not flags:
        return "unexpected argument" + ("s " if len(extra) > 1 else " ") + " ".join(extra)
    parts = []
    for flag in flags:
        close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
        parts.append(flag + (f" (did you mean {close[0]}?)" if close else ""))
    return "unrecognized argument" + ("s " if len(parts) > 1 else " ") + ", ".join(parts)


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:  # argparse keeps sub-parsers here
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


_LOOP_BOUND_COMMANDS = frozenset({"gateway"})
"""Long-running servers whose every request is event-loop work: they run on uvloop when it is
installed (as `concierge serve` does under uvicorn's ``loop="auto"``); a quarter less CPU per
gateway call (bench/gateway.py)."""


def _uvloop_for(command: str | None) -> bool:
    if command not in _LOOP_BOUND_COMMANDS:
        return False
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


async def _run_with_backend(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    try:
        return int(await args.handler(args, backend) or 0)
    finally:
        await backend.aclose()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
