"""Conversational commands: ``chat`` (the REPL; bare ``concierge`` runs it) and ``ask``.

``concierge ask "TEXT"`` runs one natural-language request. Reads are answered; a change
runs only with ``--yes``. Its exit status says what came of it (`concierge.agent.run_result`):

    0  done: answered, or the change ran
    1  error: the run failed, a change or a health check failed, or the concierge declined
       (it gives the CLI command for what it does not do from chat, or did not understand)
    2  usage error: no TEXT (or only spaces), TEXT too long, bad options
    3  stopped before a change: it needs --yes (what it would do is printed) or a credential
       (--token-env VAR, or type it when stdin is a terminal)
    4  needs more information: it asked a question back ("Which one do you mean?")

``--json`` prints `RunResult.to_dict`: ``{outcome, exit_code, answer, tool_calls: [{call_id,
name, arguments, result, error?}], writes (the changes that ran, same shape), stop_reason,
questions, pending?, error?, errors?}``.

``--yes`` approves only changes of the kind the request asked for, and never one the model chose
after reading text an MCP server wrote (`concierge.agent.auto_approve`): such a change stops
with "needs confirmation" (exit 3) and ``pending.held_because`` says why.

The model is chosen in one place, `select_model`: ``--offline`` → the offline planner;
else ``OPENAI_API_KEY`` set → the OpenAI-compatible model (``--model`` or
``CONCIERGE_MODEL``, at ``OPENAI_BASE_URL``); else the offline planner.

The engine is imported by the handlers, not here: building the parser (every command,
``--help`` included) must not load it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from concierge import config
from concierge.agent.events import (
    MAX_MESSAGE_CHARS,
    AgentFinish,
    AgentTextDelta,
    ConfirmationRequired,
    Event,
    SecretRequired,
)
from concierge.agent.run_result import EXIT_CODES, Outcome, RunResult

if TYPE_CHECKING:
    from concierge.agent.models.base import ChatModel
    from concierge.agent.session import ConciergeSession
    from concierge.backend import Backend

__all__ = ["EXIT_ERROR", "EXIT_NEEDS_INFO", "EXIT_NEEDS_YOU", "EXIT_OK", "EXIT_USAGE", "add_commands", "ask",
           "chat", "model_label", "select_model"]

EXIT_OK = EXIT_CODES[Outcome.DONE]
"""``ask`` answered, or the change ran."""
EXIT_ERROR = EXIT_CODES[Outcome.ERROR]
"""``ask`` failed: an error, a failed change or health check, or the concierge declined."""
EXIT_USAGE = 2
"""``ask`` was called wrongly (argparse's code): no text, text too long."""
EXIT_NEEDS_YOU = EXIT_CODES[Outcome.NEEDS_CONFIRMATION]
"""``ask`` stopped before a change: it needs ``--yes`` or a credential."""
EXIT_NEEDS_INFO = EXIT_CODES[Outcome.NEEDS_INFO]
"""``ask`` needs more information: the concierge asked a question back."""


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
                       epilog="exit status: 0 done (answered, or the change ran); 1 an error (a failed "
                              "change or health check, or the concierge declined); 2 usage error; 3 "
                              "stopped before a change (it needs --yes, or a credential via "
                              "--token-env); 4 needs more information (it asked a question back)")
    p.add_argument("text", type=_request_text, metavar="TEXT", help='e.g. "test my custom MCP source"')
    p.add_argument("--yes", action="store_true",
                   help="carry out the change the request asks for without asking (never one chosen after "
                        "reading text an MCP server wrote)")
    p.add_argument("--token-env", metavar="VAR",
                   help="if a credential is needed, read it from this environment variable")
    p.set_defaults(handler=ask)


def _request_text(value: str) -> str:
    """TEXT as argparse checks it: not empty, not over the length every surface accepts."""
    if not value.strip():
        raise argparse.ArgumentTypeError('is empty: say what you want, e.g. concierge ask "list my sources"')
    if len(value) > MAX_MESSAGE_CHARS:
        raise argparse.ArgumentTypeError(f"is {len(value):,} characters long; the limit is "
                                         f"{MAX_MESSAGE_CHARS:,}")
    return value


def select_model(name: str | None = None, *, offline: bool = False,
                 settings: config.Settings | None = None) -> tuple[ChatModel, str]:
    """The model and a short label saying which one (see the module docstring for the order)."""
    from concierge.agent.models.offline import OfflinePlanner

    if not offline:
        from concierge.agent.models.openai_model import from_env

        model = from_env(name, settings=settings)
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
    from concierge.agent.session import ConciergeSession

    transcript = None
    if args.transcript:
        from concierge.agent.transcript import Transcript

        transcript = Transcript(args.transcript, meta={"surface": args.command})
    session = ConciergeSession(backend, model, sandbox=args.sandbox, transcript=transcript,
                               auto_approve=auto_approve)
    return session, transcript


async def chat(args: argparse.Namespace, backend: Backend) -> int:
    from concierge.repl import Repl, TerminalIO, history_path

    model, label = select_model(args.model, offline=args.offline, settings=args.settings)
    if args.sandbox:
        await backend.get_sandbox(args.sandbox)  # a clear error now, not mid-conversation
    session, transcript = _session(args, backend, model)
    try:
        terminal = TerminalIO(history_file=history_path(args.settings), color=None if not
                              args.settings.no_color else False)
        return await Repl(session, terminal, model_label=label).run()
    finally:
        await _close(model, transcript)


async def ask(args: argparse.Namespace, backend: Backend) -> int:
    from concierge.agent.session import PendingConfirmation

    model, _ = select_model(args.model, offline=args.offline, settings=args.settings)
    session, transcript = _session(args, backend, model, auto_approve=args.yes)
    out = _AskOutput(as_json=args.json)
    try:
        stream = session.send(args.text)
        while True:
            async for event in stream:
                out.add(event)
            pending = out.result.pending
            if isinstance(pending, SecretRequired) and out.result.agent_error is None:
                value = _credential(args, pending)
                if value is not None:
                    session.provide_secret(pending.id, value)
                    stream = session.resume()
                    continue
            parked = session.pending
            if isinstance(parked, PendingConfirmation) and parked.held_because:
                out.result.held_because = parked.held_because
            return out.done()
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
        value = config.env_value(args.token_env)
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
        self.result = RunResult()

    def add(self, event: Event) -> None:
        self.result.add(event)
        if self.as_json:
            return
        if isinstance(event, AgentTextDelta):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, ConfirmationRequired) and event.auto_approved:
            print(f"(--yes) {event.summary}", file=sys.stderr)
        elif isinstance(event, AgentFinish):
            if self.result.text and not self.result.text.endswith("\n"):
                print()

    def done(self) -> int:
        result = self.result
        if self.as_json:
            print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
            return result.exit_code
        if result.agent_error is not None:
            print(f"error: {result.agent_error.message}", file=sys.stderr)
        pending = result.pending
        if isinstance(pending, ConfirmationRequired) and result.held_because:
            print(f"Would: {pending.summary}\nThis needs confirmation: --yes does not cover it, because "
                  f"{result.held_because}. Nothing was changed. Confirm it in `concierge chat`, or make "
                  "the change with the CLI (`concierge source …`, `concierge agent …`).")
        elif isinstance(pending, ConfirmationRequired):
            print(f"Would: {pending.summary}\nNothing was changed. Run again with --yes to do it.")
        elif isinstance(pending, SecretRequired):
            print(f"Needs {pending.purpose}. Nothing was changed. Run again with --token-env VAR "
                  "(an environment variable holding it), or from a terminal to type it.")
        return result.exit_code
