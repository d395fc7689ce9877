"""The ``concierge`` command.

With no sub-command it starts the conversational REPL. Each group of sub-commands lives in
its own module with an ``add_commands(subparsers, common)`` function; a command's handler is
``async def handler(args, backend) -> int`` (or ``run(args) -> int`` for commands that need no
backend). Exit codes: 0 success, 1 a validation or operation error (``{"error", "detail"}``
with ``--json``), 2 usage errors (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import anyio

from concierge.cli import output
from concierge.errors import ConciergeError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from concierge.cli import registry_cmds

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    common.add_argument("--api-url", default=os.environ.get("CONCIERGE_API_URL"),
                        help="manage a remote `concierge serve` (key from CONCIERGE_API_KEY)")

    parser = argparse.ArgumentParser(
        prog="concierge",
        description="Register, check and revoke the MCP servers your agents use. "
                    "Run with no command for the conversational concierge.",
        parents=[common])
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registry_cmds.add_commands(sub, common)
    for module in _optional_command_modules():
        module.add_commands(sub, common)
    return parser


def _optional_command_modules() -> list[object]:
    """Command groups from later layers (catalog, chat, server), present when installed."""
    import importlib

    modules = []
    for name in ("catalog_cmds", "chat_cmds", "server_cmds"):
        try:
            modules.append(importlib.import_module(f"concierge.cli.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"concierge.cli.{name}":
                raise
    return modules


def open_backend(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """LocalBackend on CONCIERGE_HOME, or RemoteBackend when --api-url is given."""
    if getattr(args, "api_url", None):
        from concierge.remote import RemoteBackend

        return RemoteBackend(args.api_url, api_key=os.environ.get("CONCIERGE_API_KEY"))
    from concierge.backend import LocalBackend

    return LocalBackend.open()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # The mcp SDK logs tracebacks for server faults we already classify and explain.
        logging.getLogger("mcp").setLevel(logging.CRITICAL)
    if args.command is None:  # bare `concierge` starts the conversational REPL
        if "chat" not in _commands(parser):
            parser.print_help()
            return 0
        args = parser.parse_args([*(sys.argv[1:] if argv is None else argv), "chat"])
    try:
        if hasattr(args, "run"):
            return int(args.run(args) or 0)
        return anyio.run(_run_with_backend, args)
    except ConciergeError as exc:
        output.error(exc, as_json=getattr(args, "json", False))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:  # argparse keeps sub-parsers here
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


async def _run_with_backend(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    try:
        return int(await args.handler(args, backend) or 0)
    finally:
        await backend.aclose()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
