"""Conversational commands: ``chat`` (the REPL; bare ``concierge`` runs it) and ``ask``.

``concierge ask "TEXT"`` runs one natural-language request. Reads are answered; a change
runs only with ``--yes``. Exit codes: 0 answered (or done), 1 an error, 3 stopped before a
change — it needs ``--yes`` (what it would do is printed) or a credential (``--token-env
VAR``, or type it when stdin is a terminal). ``--json`` prints ``{answer, tool_calls: [{call_id,
name, arguments, result, error?}], stop_reason, pending?, error?}``.

The model is chosen in one place, `select_model`: ``--offline`` → the offline planner;
else ``OPENAI_API_KEY`` set → the OpenAI-compatible model (``--model`` or
``CONCIERGE_MODEL``, at ``OPENAI_BASE_URL``); else the offline planner.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from concierge.agent.events import (
    STOP_AWAITING_CONFIRMATION,
    STOP_AWAITING_SECRET,
    AgentError,
    AgentFinish,
    AgentTextDelta,
    AgentToolCall,
    AgentToolResult,
    ConfirmationRequired,
    SecretRequired,
)
from concierge.agent.models.base import ChatModel
from concierge.agent.session import ConciergeSession
from concierge.backend import Backend

__all__ = ["EXIT_NEEDS_YOU", "add_commands", "ask", "chat", "model_label", "select_model"]

EXIT_NEEDS_YOU = 3
"""``ask`` stopped before a change: it needs ``--yes`` or a credential."""


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    models = argparse.ArgumentParser(add_help=False)
    models.add_argument("--model", help="model name (needs OPENAI_API_KEY; default CONCIERGE_MODEL)")
    models.add_argument("--offline", action="store_true", help="use the offline planner, no model")
    models.add_argument("--sandbox", help="the sandbox to work in (default: 'default')")
    models.add_argument("--transcript", metavar="FILE", help="record the conversation (redacted JSONL)")

    p = sub.add_parser("chat", parents=[common, models],
                       help="talk to the concierge (what bare `concierge` runs)")
    p.set_defaults(handler=chat)

    p = sub.add_parser("ask", parents=[common, models], help="one natural-language request; "
                       "changes need --yes (exit 3 without it)",
                       epilog="exit status: 0 answered or done; 1 an error; 3 stopped before a change "
                              "(it needs --yes, or a credential via --token-env)")
    p.add_argument("text", help='e.g. "test my custom MCP source"')
    p.add_argument("--yes", action="store_true", help="carry out changes without asking")
    p.add_argument("--token-env", metavar="VAR",
                   help="if a credential is needed, read it from this environment variable")
    p.set_defaults(handler=ask)


def select_model(name: str | None = None, *, offline: bool = False) -> tuple[ChatModel, str]:
    """The model and a short label saying which one (see the module docstring for the order)."""
    from concierge.agent.models.offline import OfflinePlanner

    if not offline:
        from concierge.agent.models.openai_model import from_env

        model = from_env(name)
        if model is not None:
            return model, model_label(model)
        if name:
            print(f"note: --model {name} needs OPENAI_API_KEY (and OPENAI_BASE_URL for a server "
                  "other than OpenAI); using the offline planner", file=sys.stderr)
    return OfflinePlanner(), "offline planner (set OPENAI_API_KEY to use a model)"


def model_label(model: Any) -> str:
    base = getattr(model, "base_url", None)
    return f"model {model.name}" + (f" at {base}" if base else "")


def _session(args: argparse.Namespace, backend: Backend, model: ChatModel, *,
             auto_approve: bool = False) -> tuple[ConciergeSession, Any]:
    transcript = None
    if args.transcript:
        from concierge.agent.transcript import Transcript

        transcript = Transcript(args.transcript, meta={"surface": args.command})
    session = ConciergeSession(backend, model, sandbox=args.sandbox, transcript=transcript,
                               auto_approve=auto_approve)
    return session, transcript


async def chat(args: argparse.Namespace, backend: Backend) -> int:
    from concierge import config
    from concierge.repl import Repl, TerminalIO, history_path, secure_data_dir

    secure_data_dir(config.data_dir())  # the history file, database and key: owner-only
    model, label = select_model(args.model, offline=args.offline)
    if args.sandbox:
        await backend.get_sandbox(args.sandbox)  # a clear error now, not mid-conversation
    session, transcript = _session(args, backend, model)
    try:
        return await Repl(session, TerminalIO(history_file=history_path()), model_label=label).run()
    finally:
        await _close(model, transcript)


async def ask(args: argparse.Namespace, backend: Backend) -> int:
    model, _ = select_model(args.model, offline=args.offline)
    session, transcript = _session(args, backend, model, auto_approve=args.yes)
    out = _AskOutput(as_json=args.json)
    try:
        stream = session.send(args.text)
        while True:
            last = None
            async for event in stream:
                out.add(event)
                last = event
            if isinstance(last, AgentError) or not isinstance(last, AgentFinish):
                return out.done(1)
            pending = session.pending_event()
            if last.stop_reason == STOP_AWAITING_SECRET and isinstance(pending, SecretRequired):
                value = _credential(args, pending)
                if value is None:
                    return out.done(EXIT_NEEDS_YOU, pending=pending)
                session.provide_secret(pending.id, value)
            elif last.stop_reason == STOP_AWAITING_CONFIRMATION and isinstance(pending, ConfirmationRequired):
                return out.done(EXIT_NEEDS_YOU, pending=pending)
            else:
                return out.done(0)
            stream = session.resume()
    finally:
        await _close(model, transcript)


async def _close(model: Any, transcript: Any) -> None:
    if transcript is not None:
        transcript.close()
    aclose = getattr(model, "aclose", None)
    if aclose is not None:
        await aclose()


def _credential(args: argparse.Namespace, ask: SecretRequired) -> str | None:
    if args.token_env:
        value = os.environ.get(args.token_env, "").strip()
        if value:
            return value
        print(f"error: the environment variable {args.token_env} is not set", file=sys.stderr)
        return None
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"I need {ask.purpose} (hidden): ").strip() or None
    return None


class _AskOutput:
    """Prints ``ask``'s answer as it streams (human) or once at the end (``--json``)."""

    def __init__(self, *, as_json: bool) -> None:
        self.as_json = as_json
        self.answer: list[str] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self.stop_reason: str | None = None
        self.error: dict[str, str] | None = None
        self.done_writes: list[str] = []

    def add(self, event: Any) -> None:
        if isinstance(event, AgentTextDelta):
            self.answer.append(event.text)
            if not self.as_json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
        elif isinstance(event, AgentToolCall):
            self.calls[event.call_id] = {"call_id": event.call_id, "name": event.name,
                                         "arguments": event.arguments}
        elif isinstance(event, AgentToolResult):
            call = self.calls.setdefault(event.call_id, {"call_id": event.call_id, "name": event.name})
            call["result"] = event.result
            if event.error:
                call["error"] = event.error
        elif isinstance(event, ConfirmationRequired) and event.auto_approved:
            self.done_writes.append(event.summary)
            if not self.as_json:
                print(f"(--yes) {event.summary}", file=sys.stderr)
        elif isinstance(event, AgentFinish):
            self.stop_reason = event.stop_reason
            if self.answer and not self.as_json and not "".join(self.answer).endswith("\n"):
                print()
        elif isinstance(event, AgentError):
            self.error = {"type": event.error_type, "message": event.message}

    def done(self, code: int, *, pending: ConfirmationRequired | SecretRequired | None = None) -> int:
        if self.as_json:
            data: dict[str, Any] = {"answer": "".join(self.answer), "tool_calls": list(self.calls.values()),
                                    "stop_reason": self.stop_reason}
            if pending is not None:
                data["pending"] = {"event": pending.type, **pending.to_dict()}
            if self.error:
                data["error"] = self.error
            print(json.dumps(data, indent=2, ensure_ascii=False))
            return code
        if self.error:
            print(f"error: {self.error['message']}", file=sys.stderr)
        if isinstance(pending, ConfirmationRequired):
            print(f"Would: {pending.summary}\nNothing was changed. Run again with --yes to do it.")
        elif isinstance(pending, SecretRequired):
            print(f"Needs {pending.purpose}. Nothing was changed. Run again with --token-env VAR "
                  "(an environment variable holding it), or from a terminal to type it.")
        return code
