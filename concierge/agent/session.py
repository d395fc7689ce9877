"""`ConciergeSession`: one conversation, one bounded loop, one stream of events.

Every surface (REPL, ``concierge ask``, the HTTP chat, the widget) drives this class and
renders its events (`concierge.agent.events`); none has a loop of its own.

A surface's whole job::

    async for event in session.send(text):          # one run
        render(event)
    while session.pending is not None:              # the run ended awaiting the person
        if event is ConfirmationRequired: session.confirm(event.id, approved=ask_yes_no())
        if event is SecretRequired:       session.provide_secret(event.id, ask_hidden())
        async for event in session.resume():        # the next run
            render(event)

The gate lives here, not in the prompt: a write tool's call is parked as ``pending`` and runs
only after `confirm` records the person's yes for that id. Nothing the model sends — no
argument, message or tool — can approve it; there is no approve tool and arguments such as
``confirmed`` are refused. A new message sent while a confirmation is pending does *not*
approve it (even "yes"): the parked call is dropped unrun and the model is told so; surfaces
that want typed yes/no answers map them onto `confirm` themselves (see `parse_yes_no`).

State is typed: the parked write is a `PendingConfirmation` or a `PendingSecret`, and each
model response leads to one `NextStep` — `NextStepFinalOutput` (the model answered),
`NextStepRunAgain` (tools ran; call the model again) or `NextStepInterruption` (a write waits
for the person) — handled exhaustively by the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets as _random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, assert_never

from pydantic import BaseModel

from concierge.agent import secrets as sec
from concierge.agent import untrusted
from concierge.agent.auto_approve import hold_reason
from concierge.agent.events import (
    STOP_AWAITING_CONFIRMATION,
    STOP_AWAITING_SECRET,
    STOP_END_TURN,
    AgentError,
    AgentFinish,
    AgentTextDelta,
    AgentToolCall,
    AgentToolResult,
    ConfirmationRequired,
    Event,
    RunStarted,
    SecretRequired,
)
from concierge.agent.models.base import ChatModel, ModelResponse
from concierge.agent.answers import read_yes_no
from concierge.agent.toolkit import (
    Tool,
    ToolArgumentError,
    ToolContext,
    Toolkit,
    ToolResult,
    default_toolkit,
    mask_arguments,
)
from concierge.backend import Backend
from concierge.errors import ConciergeError, Conflict, MaxTurnsExceeded, NotFound, ValidationFailed

__all__ = [
    "ConciergeSession",
    "ConfirmAnswer",
    "DEFAULT_MAX_TURNS",
    "NextStep",
    "NextStepFinalOutput",
    "NextStepInterruption",
    "NextStepRunAgain",
    "Pending",
    "PendingCall",
    "PendingConfirmation",
    "PendingSecret",
    "STATE_VERSION",
    "SecretAnswer",
    "parse_yes_no",
]

log = logging.getLogger("concierge.agent")

DEFAULT_MAX_TURNS = 12
"""Model calls allowed in one run (one `send` or `resume`) before `MaxTurnsExceeded`."""
STATE_VERSION = 1

DECLINED = {"status": "declined", "detail": "The person declined; nothing was changed."}
NOT_CONFIRMED = {"status": "not_confirmed",
                 "detail": "The person sent a new message instead of answering; this was not run "
                           "and nothing was changed."}
SKIPPED = {"status": "skipped",
           "detail": "Not run: an earlier change in the same step was not carried out."}
ABANDONED = {"status": "abandoned",
             "detail": "The person stopped this request before it could run (e.g. Ctrl-C at a "
                       "prompt); nothing was changed. Do not resume it: start afresh from their "
                       "next message."}
CANCELLED = {"status": "cancelled",
             "detail": "Interrupted by the person; it may not have completed. Check before retrying."}

# Words that may frame a credential typed into the chat when one was asked for ("here it
# is: …", "token: …"). Anything else means the message is a new request, not the answer.
_FRAMING = frozenset(
    "here heres here's it it's its is the my a new token key api bearer secret password "
    "credential value this that use ok okay sure please thanks".split())


def parse_yes_no(text: str) -> bool | None:
    """A typed answer to a confirmation prompt: True, False, or None when it is neither.

    "y", "sure", "yes please", "ok, go ahead" are yes; "n", "no thanks", "not now", "cancel"
    are no; anything else ("maybe", "what does it change?") is None, so the surface asks again.
    """
    return read_yes_no(text)


def _only_a_credential(clean: str, refs: tuple[str, ...]) -> bool:
    """The message is one credential, maybe framed ("here it is: [secret:…]"), and nothing else."""
    if len(refs) != 1:
        return False
    rest = sec.REF_RE.sub(" ", clean).lower()
    return all(word in _FRAMING for word in re.findall(r"[a-z0-9']+", rest))


def _credential_like(text: str) -> bool:
    """One bare word that is not a plain word ("cancel", "Cancel", "NEVERMIND")."""
    word = text.strip()
    if len(word.split()) != 1 or len(word) < 6:
        return False
    return len(word) >= 16 or not word.isalpha() or not (word.islower() or word.isupper() or word.istitle())


def _new_id(prefix: str) -> str:
    return f"{prefix}_{_random.token_hex(6)}"


@dataclass(frozen=True)
class PendingCall:
    """A tool call as the model made it (arguments hold references, never secrets)."""

    id: str
    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingCall:
        return cls(id=data["id"], name=data["name"], arguments=dict(data.get("arguments") or {}))


@dataclass(frozen=True)
class ConfirmAnswer:
    approved: bool


@dataclass(frozen=True)
class SecretAnswer:
    ref: str


@dataclass
class _PendingBase:
    """Shared by both kinds of parked write. Mapping access (``pending["id"]``,
    ``pending.get("answer")``) reads the saved JSON shape, for callers written against it."""

    kind: ClassVar[str] = ""
    stop_reason: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)


@dataclass
class PendingConfirmation(_PendingBase):
    """A write waiting for the person's yes or no (``confirmation_required``)."""

    kind: ClassVar[str] = "confirmation"
    stop_reason: ClassVar[str] = STOP_AWAITING_CONFIRMATION
    id: str
    call: PendingCall
    queue: list[PendingCall]
    """Later calls of the same model step, handled after this one."""
    summary: str
    answer: ConfirmAnswer | None = None
    held_because: str | None = None
    """Set when ``auto_approve`` (``ask --yes``) would not cover this write, and why."""

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, "id": self.id, "call": self.call.to_dict(),
                "queue": [c.to_dict() for c in self.queue], "summary": self.summary,
                "answer": None if self.answer is None else {"approved": self.answer.approved}}
        if self.held_because:
            data["held_because"] = self.held_because
        return data


@dataclass
class PendingSecret(_PendingBase):
    """A write waiting for a credential given out of band (``secret_required``)."""

    kind: ClassVar[str] = "secret"
    stop_reason: ClassVar[str] = STOP_AWAITING_SECRET
    id: str
    call: PendingCall
    queue: list[PendingCall]
    purpose: str
    field: str
    """The argument that will receive the reference (``token_ref``)."""
    answer: SecretAnswer | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "call": self.call.to_dict(),
                "queue": [c.to_dict() for c in self.queue], "purpose": self.purpose,
                "field": self.field, "answer": None if self.answer is None else {"ref": self.answer.ref}}


Pending = PendingConfirmation | PendingSecret


def _pending_from_dict(data: dict[str, Any] | None) -> Pending | None:
    """The inverse of ``to_dict`` (the JSON saved by `ConciergeSession.to_state`)."""
    if not data:
        return None
    call = PendingCall.from_dict(data["call"])
    queue = [PendingCall.from_dict(c) for c in data.get("queue") or []]
    answer = data.get("answer")
    if data["kind"] == "secret":
        return PendingSecret(id=data["id"], call=call, queue=queue, purpose=data["purpose"],
                             field=data["field"], answer=SecretAnswer(answer["ref"]) if answer else None)
    return PendingConfirmation(id=data["id"], call=call, queue=queue, summary=data["summary"],
                               answer=ConfirmAnswer(bool(answer["approved"])) if answer else None,
                               held_because=data.get("held_because"))


@dataclass(frozen=True)
class NextStepFinalOutput:
    """The model answered without tool calls: the run ends (``end_turn``)."""

    text: str


@dataclass(frozen=True)
class NextStepRunAgain:
    """The step's tool calls were handled; their results go back to the model."""


@dataclass(frozen=True)
class NextStepInterruption:
    """A write waits for the person (a yes or a credential): the run ends there."""

    pending: Pending


NextStep = NextStepFinalOutput | NextStepRunAgain | NextStepInterruption
_P = TypeVar("_P", PendingConfirmation, PendingSecret)


@dataclass
class _Run:
    run_id: str
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    context_tokens: list[int] = field(default_factory=list)
    stop: str | None = None

    def usage(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "model_calls": self.turns, "context_tokens": list(self.context_tokens)}


class ConciergeSession:
    """One conversation with the concierge.

    ``backend``: where the tools act. ``model``: any `ChatModel`. ``sandbox``: the default
    sandbox for tools (``None`` = the registry's default). ``max_turns``: model calls per run.
    ``budget``: a ``ContextBudget`` (default one when None). ``secret_store``: where pasted
    and provided credentials live (in memory by default). ``transcript``: a
    `concierge.agent.transcript.Transcript` that records the session. ``auto_approve``: run
    writes without asking (only ``concierge ask --yes`` sets it; chat and HTTP never do) — but
    only writes of the kind the person's message asked for, and never one chosen after the
    model read server-supplied text (`concierge.agent.auto_approve`); those are parked as usual.
    """

    def __init__(self, backend: Backend, model: ChatModel, *, sandbox: str | None = None,
                 max_turns: int = DEFAULT_MAX_TURNS, budget: Any = None,
                 secret_store: sec.SecretStore | None = None, transcript: Any = None,
                 session_id: str | None = None, auto_approve: bool = False,
                 toolkit: Toolkit | None = None, system_prompt: str | None = None) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.backend = backend
        self.model = model
        self.sandbox = sandbox
        self.max_turns = max_turns
        self.budget = budget if budget is not None else _default_budget()
        self.secrets: sec.SecretStore = secret_store if secret_store is not None else sec.InMemorySecretStore()
        self.transcript = transcript
        self.session_id = session_id or _new_id("cs")
        self.auto_approve = auto_approve
        self.toolkit = toolkit or default_toolkit()
        self._system_prompt = system_prompt
        self.history: list[dict[str, Any]] = []
        self.request_text = ""
        """The person's latest message (redacted): what ``auto_approve`` may act on."""
        self.pending: Pending | None = None
        """The parked write, waiting for `confirm` or `provide_secret`."""
        self.secret_refs: list[str] = []
        self.totals = {"input_tokens": 0, "output_tokens": 0, "model_calls": 0, "runs": 0}
        self._running = False
        self._call_seq = 0
        self._marked: dict[tuple[str, str], str] = {}
        if transcript is not None:
            transcript.bind(self)

    # -- public API ------------------------------------------------------------------------

    async def send(self, text: str) -> AsyncIterator[Event]:
        """Take one message from the person and run the loop until it answers or must wait.

        Steps:

        1. ``run_started``. Pasted credentials in ``text`` are replaced by references
           (``[secret:sec_…]``, values into the secret store) before anything stores, logs,
           records or sends it. If a credential is pending and the message is just one
           (maybe framed: "here it is: …"), or a single bare token-like word, it answers that
           request (as `provide_secret` would) and the run goes on as in `resume`. A message
           that says more ("add … called Gamma with bearer token …") is a new request.
        2. A parked confirmation (or credential request) is dropped unrun; the model is told
           nothing was changed. Then the message joins the history.
        3. Loop, at most ``max_turns`` model calls: fit system prompt + history into the
           budget; call the model with the tool definitions, streaming ``agent_text_delta``;
           no tool calls → ``agent_finish(end_turn)``. For each call in order:
           ``agent_tool_call``; a read runs at once → ``agent_tool_result`` (errors are
           results the model can explain); a write is prepared (target resolved, the
           registry's rules asked), then parked: ``secret_required``
           (→ ``agent_finish(awaiting_secret)``) if it needs a credential not yet given, else
           ``confirmation_required`` (→ ``agent_finish(awaiting_confirmation)``). The run ends there.
        4. Too many model calls → ``agent_error(max_turns_exceeded)``; a model failure →
           ``agent_error(model_error)``. The history stays valid either way.
        """
        self._guard()
        waiting_secret = isinstance(self.pending, PendingSecret)
        if (waiting_secret and _credential_like(text) or sec.named_credential(text)) and not sec.find_secrets(text):
            # Asked for a credential, the person typed one bare word in the chat: that is it
            # (and a lone "demo-token-123" is one, whatever was asked).
            redaction = sec.redact_all(text, self.secrets)
        else:
            redaction = sec.redact(text, self.secrets)
        self._remember(redaction.refs)
        clean = redaction.text
        if self.transcript is not None:
            self.transcript.input("message", text=clean)
        if isinstance(self.pending, PendingSecret) and _only_a_credential(clean, redaction.refs):
            self.pending.answer = SecretAnswer(redaction.refs[0])
            async for event in self._run(self._resume_steps):
                yield event
            return

        async def steps(run: _Run) -> AsyncIterator[Event]:
            for event in self._drop_pending(NOT_CONFIRMED):
                yield event
            self._repair_history()
            self.history.append({"role": "user", "content": clean})
            self.request_text = clean
            log.info("session %s: user message (%d chars, %d secrets redacted)",
                     self.session_id, len(clean), len(redaction.refs))
            async for event in self._loop(run):
                yield event

        async for event in self._run(steps):
            yield event

    def confirm(self, confirmation_id: str, approved: bool) -> None:
        """Record the person's answer to ``confirmation_required`` ``confirmation_id``.

        Raises `NotFound` for an unknown or stale id and `Conflict` when nothing waits for
        a confirmation or it was already answered. Nothing runs until `resume`.
        """
        pending = self._pending_for(confirmation_id, PendingConfirmation)
        pending.answer = ConfirmAnswer(bool(approved))
        if self.transcript is not None:
            self.transcript.input("confirm", id=confirmation_id, approved=bool(approved))
        log.info("session %s: confirmation %s %s", self.session_id, confirmation_id,
                 "approved" if approved else "declined")

    def provide_secret(self, secret_id: str, value: str) -> str:
        """Store the credential asked for by ``secret_required`` ``secret_id``; returns its reference.

        The value goes to the secret store only; the call gets the reference. Raises like
        `confirm`, and `ValidationFailed` for an empty value.
        """
        pending = self._pending_for(secret_id, PendingSecret)
        value = value.strip()
        if not value:
            raise ValidationFailed("the credential is empty", field="value")
        ref = sec.new_ref()
        self.secrets.put(ref, value)
        self._remember((ref,))
        pending.answer = SecretAnswer(ref)
        if self.transcript is not None:
            self.transcript.input("secret", id=secret_id, ref=ref)
        return ref

    async def resume(self) -> AsyncIterator[Event]:
        """Continue after `confirm` or `provide_secret`.

        Steps: ``run_started``; an approved call is prepared again (the world may have
        changed) and runs → ``agent_tool_result``; a declined one runs nothing and the model
        gets "the person declined; nothing was changed" (later calls of the same step are
        skipped); a provided credential is attached by reference and the call goes on to
        ``confirmation_required``. The remaining calls of that step are handled as in `send`,
        then the loop of `send` continues. Raises `Conflict` when nothing was answered.
        """
        self._guard()
        if self.pending is None:
            raise Conflict("nothing is waiting for an answer")
        if self.pending.answer is None:
            raise Conflict(f"the {self.pending.kind} request {self.pending.id} has not been answered yet")
        async for event in self._run(self._resume_steps):
            yield event

    @property
    def running(self) -> bool:
        """True while a run (`send`/`resume`) is streaming; state cannot be saved or answered then."""
        return self._running

    def pending_event(self) -> ConfirmationRequired | SecretRequired | None:
        """The event that asked for the pending answer (to show it again, e.g. after a restart)."""
        p = self.pending
        if p is None:
            return None
        call = p.call
        if isinstance(p, PendingConfirmation):
            return ConfirmationRequired(id=p.id, call_id=call.id, tool=call.name,
                                        summary=p.summary, arguments=mask_arguments(call.arguments))
        return SecretRequired(id=p.id, call_id=call.id, tool=call.name, purpose=p.purpose, field=p.field)

    def reset(self) -> None:
        """Forget the conversation (history and any pending request); secrets stay stored."""
        self._guard()
        self.history.clear()
        self._marked.clear()
        self.request_text = ""
        self.pending = None

    def abandon(self) -> list[Event]:
        """Drop the parked call unrun: the person walked away from it (Ctrl-C at the token
        prompt). The model is told nothing was changed and not to resume it, so the next
        message starts afresh; without this, a token in that message would answer the old
        request. Returns the events that closed it (already recorded); none if nothing waits."""
        self._guard()
        if self.pending is not None and self.transcript is not None:
            self.transcript.input("abandon", id=self.pending["id"])
        return self._drop_pending(ABANDONED)

    def forget_secrets(self) -> None:
        """Delete from the store every credential this session holds (when a conversation ends)."""
        for ref in self.secret_refs:
            self.secrets.delete(ref)
        self.secret_refs.clear()

    def known_secrets(self) -> list[tuple[str, str]]:
        """``(ref, value)`` for the credentials this session holds, for scrubbing output."""
        pairs = []
        for ref in self.secret_refs:
            value = self.secrets.get(ref)
            if value:
                pairs.append((ref, value))
        return pairs

    def to_state(self) -> dict[str, Any]:
        """A JSON-serializable snapshot (history holds references only; values stay in the store)."""
        self._guard()
        return {
            "version": STATE_VERSION, "session_id": self.session_id, "sandbox": self.sandbox,
            "history": json.loads(json.dumps(self.history)),
            "pending": self.pending.to_dict() if self.pending else None,
            "secret_refs": list(self.secret_refs), "totals": dict(self.totals),
            "call_seq": self._call_seq, "request_text": self.request_text,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], backend: Backend, model: ChatModel,
                   **kwargs: Any) -> ConciergeSession:
        """Rebuild a session saved with `to_state` (the same secret store must be passed)."""
        if state.get("version") != STATE_VERSION:
            raise ValidationFailed(f"unsupported session state version {state.get('version')!r}")
        kwargs.setdefault("sandbox", state.get("sandbox"))
        session = cls(backend, model, session_id=state["session_id"], **kwargs)
        session.history = list(state.get("history") or [])
        session.pending = _pending_from_dict(state.get("pending"))
        session.secret_refs = list(state.get("secret_refs") or [])
        session.totals.update(state.get("totals") or {})
        session._call_seq = int(state.get("call_seq") or 0)
        session.request_text = str(state.get("request_text") or "")
        return session

    # -- the run ---------------------------------------------------------------------------

    def _guard(self) -> None:
        if self._running:
            raise Conflict("the session is busy with another run; wait for it to finish")

    def _remember(self, refs: tuple[str, ...] | list[str]) -> None:
        for ref in refs:
            if ref not in self.secret_refs:
                self.secret_refs.append(ref)

    def _emit(self, event: Event) -> Event:
        if self.transcript is not None:
            self.transcript.event(event)
        return event

    def _pending_for(self, pending_id: str, kind: type[_P]) -> _P:
        self._guard()
        p = self.pending
        if p is None:
            raise Conflict(f"nothing is waiting for a {'credential' if kind is PendingSecret else 'confirmation'}")
        if p.id != pending_id:
            raise NotFound(f"no pending {kind.kind} {pending_id!r} (it may be stale); the open request is "
                           f"{p.kind} {p.id}")
        if not isinstance(p, kind):
            words = {"secret": "a credential (provide_secret)", "confirmation": "a yes or no (confirm)"}
            raise Conflict(f"{pending_id} asks for {words[p.kind]}, not {words[kind.kind]}")
        if p.answer is not None:
            raise Conflict(f"{pending_id} was already answered; call resume()")
        return p

    async def _run(self, steps: Callable[[_Run], AsyncIterator[Event]]) -> AsyncIterator[Event]:
        run = _Run(_new_id("run"))
        self._running = True
        self.totals["runs"] += 1
        try:
            yield self._emit(RunStarted(run_id=run.run_id, session_id=self.session_id))
            try:
                async for event in steps(run):
                    yield event
            except ConciergeError as exc:
                log.warning("session %s run %s: %s", self.session_id, run.run_id, exc.detail)
                yield self._emit(AgentError(message=exc.detail, error_type=exc.error, run_id=run.run_id))
                return
            except Exception as exc:  # a bug must end the run visibly, not hang the surface
                log.exception("session %s run %s failed", self.session_id, run.run_id)
                yield self._emit(AgentError(message=f"internal error: {type(exc).__name__}",
                                            error_type="internal_error", run_id=run.run_id))
                return
            yield self._emit(AgentFinish(stop_reason=run.stop or STOP_END_TURN,
                                         session_id=self.session_id, usage=run.usage(),
                                         run_id=run.run_id))
        finally:
            self._running = False
            self.totals["input_tokens"] += run.input_tokens
            self.totals["output_tokens"] += run.output_tokens
            self.totals["model_calls"] += run.turns

    async def _resume_steps(self, run: _Run) -> AsyncIterator[Event]:
        p = self.pending
        assert p is not None and p.answer is not None
        call, queue = p.call, list(p.queue)
        self.pending = None
        step: NextStep = NextStepRunAgain()
        if isinstance(p, PendingSecret):
            assert isinstance(p.answer, SecretAnswer)
            call = PendingCall(call.id, call.name, {**call.arguments, p.field: p.answer.ref})
            async for item in self._calls([call, *queue], run, announced=True):
                if isinstance(item, NextStepInterruption):
                    step = item
                else:
                    yield item
        elif isinstance(p.answer, ConfirmAnswer) and p.answer.approved:
            async for item in self._calls([call, *queue], run, announced=True, approved=True):
                if isinstance(item, NextStepInterruption):
                    step = item
                else:
                    yield item
        else:
            yield self._result(call, DECLINED)
            for event in self._skip(queue):
                yield event
        if isinstance(step, NextStepInterruption):
            run.stop = step.pending.stop_reason
            return
        async for event in self._loop(run):
            yield event

    async def _loop(self, run: _Run) -> AsyncIterator[Event]:
        tools = self.toolkit.definitions()
        system, system_for = await self._system(), self.sandbox
        while True:
            if run.turns >= self.max_turns:
                raise MaxTurnsExceeded(
                    f"stopped after {self.max_turns} model calls in one run without a final answer; "
                    "ask again, more specifically")
            if self.sandbox != system_for:  # a tool switched sandboxes: the model must know
                system, system_for = await self._system(), self.sandbox
            run.turns += 1
            messages, context_tokens = self._fit(system, tools)
            run.context_tokens.append(context_tokens)
            response: ModelResponse | None = None
            async for item in self._call_model(messages, tools):
                if isinstance(item, ModelResponse):
                    response = item
                else:
                    yield self._emit(AgentTextDelta(text=item))
            assert response is not None
            run.input_tokens += response.usage.input_tokens
            run.output_tokens += response.usage.output_tokens
            calls = [self._call_record(c) for c in response.tool_calls]
            if self.transcript is not None:
                self.transcript.model(response, [c.to_dict() for c in calls])
            message: dict[str, Any] = {"role": "assistant", "content": response.text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                    for c in calls]
            self.history.append(message)
            step: NextStep = NextStepFinalOutput(response.text) if not calls else NextStepRunAgain()
            if calls:
                async for outcome in self._calls(calls, run):
                    if isinstance(outcome, NextStepInterruption):
                        step = outcome
                    else:
                        yield outcome
            match step:
                case NextStepFinalOutput():
                    return
                case NextStepRunAgain():
                    continue
                case NextStepInterruption(pending=pending):
                    run.stop = pending.stop_reason
                    return
                case _:
                    assert_never(step)

    async def _calls(self, calls: list[PendingCall], run: _Run, *, announced: bool = False,
                     approved: bool = False) -> AsyncIterator[Event | NextStepInterruption]:
        """Handle tool calls in order; park the first write that needs the person.

        Yields the events, and a final `NextStepInterruption` when a write was parked.
        """
        ctx = ToolContext(self.backend, self.secrets, self.sandbox)
        for index, call in enumerate(calls):
            first = index == 0
            if not (announced and first):
                yield self._emit(AgentToolCall(call_id=call.id, name=call.name,
                                               arguments=mask_arguments(call.arguments)))
            tool = self.toolkit.get(call.name)
            if tool is None:
                known = ", ".join(t.name for t in self.toolkit)
                yield self._error(call, "unknown_tool", f"there is no tool {call.name!r}; tools: {known}")
                continue
            try:
                args = tool.parse(call.arguments)
            except ToolArgumentError as exc:
                yield self._error(call, exc.error, exc.detail)
                continue
            if not tool.is_write:
                yield await self._execute(tool, ctx, call, args, None)
                self.sandbox = ctx.sandbox  # a read may switch the conversation's sandbox
                continue
            try:
                prep = await tool.prepare(ctx, args) if tool.prepare else None
            except ConciergeError as exc:
                yield self._error(call, exc.error, exc.detail, field=getattr(exc, "field", None))
                continue
            need = tool.needs_secret(ctx, args, prep) if tool.needs_secret else None
            pending: Pending
            if need is not None:
                pending = PendingSecret(id=_new_id("secret"), call=call, queue=calls[index + 1:],
                                        purpose=need.purpose, field=need.field)
                self.pending = pending
                yield self._emit(self.pending_event())  # type: ignore[arg-type]
                yield NextStepInterruption(pending)
                return
            if approved and first:
                yield await self._execute(tool, ctx, call, args, prep)
                continue
            summary = tool.summary(args, prep) if tool.summary else f"Run {tool.name}."
            held = hold_reason(tool.name, self.request_text, self.history,
                               call.arguments, follows_read_text=getattr(self.model, "follows_read_text", True)
                               ) if self.auto_approve else None
            if self.auto_approve and held is None:
                yield self._emit(ConfirmationRequired(
                    id=_new_id("confirm"), call_id=call.id, tool=tool.name, summary=summary,
                    arguments=mask_arguments(call.arguments), auto_approved=True))
                yield await self._execute(tool, ctx, call, args, prep)
                continue
            if held is not None:
                log.info("session %s: --yes does not cover %s: %s", self.session_id, tool.name, held)
            pending = PendingConfirmation(id=_new_id("confirm"), call=call, queue=calls[index + 1:],
                                          summary=summary, held_because=held)
            self.pending = pending
            yield self._emit(self.pending_event())  # type: ignore[arg-type]
            yield NextStepInterruption(pending)
            return

    async def _execute(self, tool: Tool, ctx: ToolContext, call: PendingCall, args: Any,
                       prep: Any) -> Event:
        log.info("session %s: running %s", self.session_id, tool.name)
        try:
            if tool.is_write and tool.prepare is not None and prep is None:
                prep = await tool.prepare(ctx, args)
            result = await tool.run(ctx, args, prep)
        except ConciergeError as exc:
            return self._error(call, exc.error, exc.detail, field=getattr(exc, "field", None))
        except Exception as exc:  # a tool bug becomes a result the model can report
            log.exception("tool %s failed", tool.name)
            return self._error(call, "internal_error", f"{tool.name} failed unexpectedly ({type(exc).__name__})")
        if isinstance(result, ToolResult):
            result = result.to_wire()
        elif isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        return self._result(call, result)

    def _error(self, call: PendingCall, code: str, detail: str, *, field: str | None = None) -> Event:
        body = {"error": code, "detail": detail} | ({"field": field} if field else {})
        return self._result(call, body, error=code)

    def _result(self, call: PendingCall, result: Any, *, error: str | None = None) -> Event:
        text = json.dumps(result, ensure_ascii=False, default=str)
        text = sec.scrub(text, self.known_secrets())
        # Kept whole: the budget shortens a huge result in the copy a language model is sent,
        # and a model that reads the whole history (the offline planner) needs all of it.
        self.history.append({"role": "tool", "tool_call_id": call.id, "content": text})
        return self._emit(AgentToolResult(call_id=call.id, name=call.name,
                                          result=json.loads(text), error=error))

    def _drop_pending(self, result: dict[str, Any]) -> list[Event]:
        """Close a parked call unrun (the person moved on), keeping the history valid."""
        p, self.pending = self.pending, None
        if p is None:
            return []
        return [self._result(p.call, result), *self._skip(p.queue)]

    def _skip(self, calls: list[PendingCall]) -> list[Event]:
        """Announce and close calls that will not run (their step was not carried out)."""
        events: list[Event] = []
        for call in calls:
            events.append(self._emit(AgentToolCall(call_id=call.id, name=call.name,
                                                   arguments=mask_arguments(call.arguments))))
            events.append(self._result(call, SKIPPED))
        return events

    def _repair_history(self) -> None:
        """Give every tool call of the last assistant message a result (a run may have been
        cancelled between a call and its result; the chat API rejects such a history)."""
        for i in range(len(self.history) - 1, -1, -1):
            message = self.history[i]
            if message["role"] == "assistant":
                answered = {m.get("tool_call_id") for m in self.history[i + 1:] if m["role"] == "tool"}
                for call in message.get("tool_calls") or []:
                    if call["id"] not in answered:
                        self.history.append({"role": "tool", "tool_call_id": call["id"],
                                             "content": json.dumps(CANCELLED)})
                return
            if message["role"] == "user":
                return

    def _call_record(self, call: Any) -> PendingCall:
        self._call_seq += 1
        call_id = call.id or f"call_{self._call_seq}"
        arguments = call.arguments if isinstance(call.arguments, dict) else {}
        # A model may pass a name back as it saw it, inside the untrusted-text markers.
        return PendingCall(id=call_id, name=untrusted.unwrap(call.name),
                           arguments=untrusted.unwrap_arguments(arguments))

    async def _system(self) -> str:
        base = self._system_prompt
        if base is None:
            from concierge.agent.prompts import system_prompt

            base = system_prompt()
        try:
            sandboxes = [s.name for s in await self.backend.list_sandboxes()]
        except ConciergeError:
            sandboxes = []
        current = self.sandbox or "default"
        listed = ", ".join(f"{n} (current)" if n == current else n for n in sandboxes) or current
        return f"{base.rstrip()}\n\n## Context\n\nCurrent sandbox: {current}\nSandboxes: {listed}\n"

    def _fit(self, system: str, tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        fit = getattr(self.budget, "fit", None)
        whole = [{"role": "system", "content": system}, *self.history]
        if getattr(self.model, "reads_whole_history", False):  # the offline planner: our own data
            result = fit(system, tools, self.history) if fit is not None else None
            return whole, int(getattr(result, "total_tokens", 0) or 0)
        # A language model gets server-supplied text marked as such (`untrusted`).
        history = untrusted.mark_history(self.history, cache=self._marked)
        if fit is None:
            return [{"role": "system", "content": system}, *history], 0
        result = fit(system, tools, history)
        messages = list(result.messages)
        if not messages or messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": system})
        return messages, int(getattr(result, "total_tokens", 0) or 0)

    async def _call_model(self, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]]) -> AsyncIterator[str | ModelResponse]:
        """Stream text deltas while the model answers, then yield its `ModelResponse`.

        The model runs in its own asyncio task so deltas can be yielded as they arrive; the
        task is cancelled if the consumer stops (Ctrl-C in the REPL).
        """
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def on_text(text: str) -> None:
            if text:
                queue.put_nowait(text)

        task = asyncio.ensure_future(self.model.respond(messages, tools, on_text=on_text))
        getter: asyncio.Future[str] | None = None
        streamed = False
        try:
            while not task.done():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    streamed = True
                    text, getter = getter.result(), None
                    yield text
            if getter is not None and not getter.done():
                getter.cancel()
            while not queue.empty():
                streamed = True
                yield queue.get_nowait()
            response = task.result()
        finally:
            for future in (task, getter):
                if future is not None and not future.done():
                    future.cancel()
        if not streamed and response.text:
            yield response.text
        yield response


def _default_budget() -> Any:
    try:
        from concierge.agent.budget import ContextBudget
    except ImportError:  # the budget module is optional for the engine
        return None
    return ContextBudget()
