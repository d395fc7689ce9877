"""The concierge over HTTP: one-shot, streamed chat, and out-of-band answers.

    POST …/concierge/test                       {message, session_id?} -> one JSON result
    POST …/concierge/chat                       {message, session_id?} -> Server-Sent Events
    GET  …/concierge/sessions/{id}              the conversation so far (for reloads) + what waits
    POST …/concierge/sessions/{id}/confirm      {id, approved}  -> the resumed run (SSE or JSON)
    POST …/concierge/sessions/{id}/secret       {id, value}     -> the resumed run (SSE or JSON)
    DELETE …/concierge/sessions/{id}            forget it (and the credentials it holds)

A run that needs the person ends with ``agent_finish`` whose ``stop_reason`` is
``awaiting_confirmation`` (after ``confirmation_required``) or ``awaiting_secret`` (after
``secret_required``). The client answers on the confirm / secret endpoint (or, in the
streamed chat, types a clear yes or no: "yes please", "nah") and that same
response streams the resumed run — so the credential travels in its own request, straight
to the server's vault, and never through the chat text or the model. A yes needs an editor
key; anyone may decline. The confirm and secret endpoints answer JSON in the `/test` shape
instead of SSE when the request says ``Accept: application/json``.

In the one-shot `/test`, writes are never run: the result is ``status: succeeded`` with
``stop_reason: awaiting_confirmation``, the summary of the change in ``output_text`` and a
``pending_confirmation`` object (or ``pending_secret``) telling which endpoint to answer.

Runs execute in the server's own task group, not the request's: a client that disconnects
(or reloads the widget) does not cut a registration in half; the run finishes and its
events land in the stored history. Conversations (engine state + event history) live in
the database and credentials in the vault (`VaultSecretStore`), so they survive a restart
and any instance on the same database serves any conversation: a conversation started on
one ``serve`` is confirmed on another. Each stored conversation has a version; an instance
holding an older copy in memory reloads it when it is next opened, and a run claims the
conversation with a lease (compare-and-set on the version), so only one run at a time goes
on across instances (another gets 409 busy) and a run's end is saved over the version it
started from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from starlette.responses import JSONResponse, Response, StreamingResponse

from concierge.agent import secrets as sec
from concierge.agent.answers import read_yes_no
from concierge.agent.events import MAX_MESSAGE_CHARS, Event, from_record, to_record, with_label
from concierge.agent.run_result import RunResult
from concierge.agent.session import ConciergeSession
from concierge.errors import NotFound, SessionBusy
from concierge.registry import Sandbox, acting_as
from concierge.registry import validation as rules
from concierge.registry.store import Store, now_iso
from concierge.server.api import ApiRoute, Ctx
from concierge.server.auth import Principal, Role
from concierge.server.conversation_rows import ConversationRows
from concierge.server.scoped import ScopedBackend
from concierge.server.secret_store import VaultSecretStore, secret_key

if TYPE_CHECKING:
    from concierge.backend import LocalBackend

__all__ = [
    "ChatRequest",
    "ChatService",
    "ConfirmRequest",
    "MAX_MESSAGE_CHARS",
    "ROUTES",
    "SecretRequest",
    "SessionHistory",
    "TestResult",
]

log = logging.getLogger("concierge.server.chat")

MAX_LIVE_SESSIONS = 256
RETENTION_SECONDS = 30 * 86400.0
"""A conversation idle this long is forgotten (with its events and credentials)."""
MAX_CONVERSATIONS_PER_KEY = 200
"""At most this many stored conversations per API key: a new one forgets the key's oldest."""
KEEPALIVE_S = 15.0
BASE = "/api/v1/storage/sandboxes/{sandbox_id}/concierge"
OutcomeName = Literal["done", "error", "needs_confirmation", "needs_secret", "needs_info"]
SESSION = BASE + "/sessions/{session_id}"


# -- wire models ----------------------------------------------------------------------------

class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS,
                         description="What the person says (at most 4,000 characters; not blank).")
    session_id: str | None = Field(default=None, description="Continue this conversation.")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the message is empty: say what you want")
        return value


class ConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The confirmation_required event's id.")
    approved: bool = Field(description="true runs the change (editor key); false runs nothing.")


class SecretRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The secret_required event's id.")
    value: SecretStr = Field(description="The credential. Stored in the vault; never echoed.")


class PendingConfirmation(BaseModel):
    id: str
    tool: str
    summary: str
    arguments: dict[str, Any]
    session_id: str
    answer_url: str = Field(description='POST {"id", "approved"} here to answer.')


class PendingSecret(BaseModel):
    id: str
    tool: str
    purpose: str
    session_id: str
    answer_url: str = Field(description='POST {"id", "value"} here to hand the credential over.')


class ToolCallRecord(BaseModel):
    call_id: str
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None


class TestResult(BaseModel):
    """The one-shot answer (reference fields first)."""

    run_id: str
    status: Literal["succeeded", "failed", "timeout", "cancelled"]
    output_text: str
    tokens_in: int
    tokens_out: int
    duration_ms: float
    error_message: str | None
    session_id: str
    stop_reason: str | None = Field(description="end_turn | awaiting_confirmation | awaiting_secret")
    outcome: OutcomeName = Field(
        description="What came of it (the same fold as `concierge ask`'s exit status): done — answered "
                    "or the change ran; error — the run, a change or a health check failed, or the "
                    "concierge declined; needs_confirmation / needs_secret — stopped before a change; "
                    "needs_info — it asked a question back (see `questions`).")
    questions: list[str] = Field(default_factory=list,
                                 description="The questions the concierge's last words ask, if any.")
    pending_confirmation: PendingConfirmation | None = None
    pending_secret: PendingSecret | None = None
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)


class EventRecord(BaseModel):
    event: str = Field(description="An engine event name, or user_message / user_confirm / user_secret.")
    data: dict[str, Any]
    run_id: str | None = None
    at: str


class SessionHistory(BaseModel):
    session_id: str
    sandbox_id: str
    created_at: str
    updated_at: str
    running: bool
    events: list[EventRecord]
    pending: dict[str, Any] | None = Field(
        description="The confirmation_required / secret_required still waiting ({event, data}), if any.")


class Deleted(BaseModel):
    session_id: str
    deleted: bool


SSE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": "Server-Sent Events. `event:` is run_started, agent_text_delta, agent_tool_call "
                   "(with `label`, the step in plain words), agent_tool_result, confirmation_required, "
                   "secret_required, agent_finish or agent_error; right after run_started, user_message / "
                   "user_confirm / user_secret say what the person sent (credentials as references). "
                   "`data:` is the JSON payload.",
}


# -- sessions and runs ----------------------------------------------------------------------

@dataclass
class _Live:
    session: ConciergeSession
    sandbox_id: str
    key_id: str | None
    version: int = 0
    """The stored version this copy was loaded at or last saved as."""
    busy: bool = False
    """A run is going (set and cleared on the event loop: no lock needed)."""
    scope: anyio.CancelScope | None = None


class _Run:
    """One run's events, handed from the background task to whoever listens (maybe no one)."""

    def __init__(self) -> None:
        self.send: MemoryObjectSendStream[dict[str, Any]]
        self.receive: MemoryObjectReceiveStream[dict[str, Any]]
        self.send, self.receive = anyio.create_memory_object_stream[dict[str, Any]](max_buffer_size=10_000)
        self.done = anyio.Event()
        self.cancelled = False

    async def publish(self, record: dict[str, Any]) -> None:
        try:
            self.send.send_nowait(record)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.WouldBlock):
            pass  # the listener left; the run goes on and its history is stored


class ChatService:
    """Conversations over HTTP: start, persist, restore and stream them."""

    def __init__(self, backend: LocalBackend, *, model_factory: Callable[[], Any] | None = None,
                 run_timeout: float = 120.0, retention_seconds: float = RETENTION_SECONDS,
                 max_per_key: int = MAX_CONVERSATIONS_PER_KEY) -> None:
        self.backend = backend
        self.retention_seconds = retention_seconds
        self.max_per_key = max(1, max_per_key)
        self._model_factory = model_factory
        self._model: Any = None
        self.run_timeout = run_timeout
        self.secrets = VaultSecretStore(backend.registry.store, backend.registry.vault)
        from concierge.store.schema import HTTP

        backend.registry.store.migrate(HTTP)  # the HTTP layer's tables are made by the HTTP layer
        self._rows = ConversationRows(backend.registry.store)
        self._live: OrderedDict[str, _Live] = OrderedDict()
        self._tg: TaskGroup | None = None

    @property
    def store(self) -> Store:
        return self.backend.registry.store

    async def run(self, tg: TaskGroup) -> None:
        """Called from the app's lifespan: runs execute in ``tg``."""
        self._tg = tg

    def stop(self) -> None:
        for live in self._live.values():
            if live.scope is not None:
                live.scope.cancel()

    async def aclose(self) -> None:
        self._live.clear()

    def model(self) -> Any:
        if self._model is None:
            if self._model_factory is not None:
                self._model = self._model_factory()
            else:
                from concierge.agent.models import OfflinePlanner, from_env

                self._model = from_env() or OfflinePlanner()
        return self._model

    # -- sessions ---------------------------------------------------------------------------

    def create(self, sb: Sandbox, principal: Principal) -> _Live:
        self.prune(principal.key_id, keep=self.max_per_key - 1)
        session = ConciergeSession(ScopedBackend(self.backend, principal), self.model(),
                                   sandbox=sb.name, secret_store=self.secrets)
        self._rows.create(session.session_id, sandbox_id=sb.id, key_id=principal.key_id,
                          state=json.dumps(session.to_state()), at=now_iso())
        return self._remember(_Live(session, sb.id, principal.key_id))

    def open(self, session_id: str, sb: Sandbox, principal: Principal) -> _Live:
        """A conversation of this sandbox and this key (404 for anyone else's); reloaded when
        another instance saved a newer version of it."""
        live = self._live.get(session_id)
        if live is not None and not live.busy:
            stored = self._rows.version(session_id)
            if stored is None or stored != live.version:
                del self._live[session_id]  # deleted or changed elsewhere: the store decides
                live = None
        if live is None:
            row = self._rows.get(session_id)
            if row is None or row["sandbox_id"] != sb.id or row["key_id"] != principal.key_id:
                raise NotFound(f"no conversation {session_id!r} in this sandbox for this key")
            session = ConciergeSession.from_state(
                json.loads(row["state"]), ScopedBackend(self.backend, principal), self.model(),
                secret_store=self.secrets, sandbox=sb.name)
            live = self._remember(_Live(session, row["sandbox_id"], row["key_id"], version=int(row["version"])))
        elif live.sandbox_id != sb.id or live.key_id != principal.key_id:
            raise NotFound(f"no conversation {session_id!r} in this sandbox for this key")
        self._live.move_to_end(session_id)
        return live

    def prune(self, key_id: str | None, *, keep: int | None = None) -> int:
        """Forget conversations idle longer than the retention period (anyone's), and the
        key's oldest beyond ``keep`` (default: the per-key cap); with them go their events
        and the credentials they hold. A conversation with a run going is left alone. How
        many were forgotten."""
        keep = self.max_per_key if keep is None else max(0, keep)
        cutoff = (datetime.now(UTC) - timedelta(seconds=self.retention_seconds)).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        rows = self._rows.idle(updated_before=cutoff, key_id=key_id, keep=keep, now=time.time())
        forgotten = 0
        for row in {r["id"]: r for r in rows}.values():
            refs = list((json.loads(row["state"]) or {}).get("secret_refs") or [])
            with self.store.transaction() as cx:
                gone = self._rows.forget_if_idle(cx, row["id"], now=time.time())
                if gone:  # (a run that claimed it meanwhile keeps it)
                    for ref in refs:
                        self.backend.registry.vault.delete(cx, secret_key(ref))
            if gone:
                forgotten += 1
                self._live.pop(row["id"], None)
        if forgotten:
            log.info("forgot %d conversation(s) (retention %g s, %d per key)", forgotten,
                     self.retention_seconds, self.max_per_key)
        return forgotten

    def _remember(self, live: _Live) -> _Live:
        self._live[live.session.session_id] = live
        while len(self._live) > MAX_LIVE_SESSIONS:
            oldest = next((k for k, v in self._live.items() if not v.busy), None)
            if oldest is None:
                break
            del self._live[oldest]  # its state is in SQLite; it is reloaded on next use
        return live

    def _claim(self, live: _Live) -> None:
        """Take the conversation's run lease (compare-and-set on its version), or 409."""
        claimed = self._rows.claim(live.session.session_id, version=live.version,
                                   until=time.time() + self.run_timeout + 60.0, now=time.time())
        if not claimed:
            self._live.pop(live.session.session_id, None)  # reloaded on the next open
            raise SessionBusy("the conversation is busy with a run, or was just changed, on another "
                              "instance; reload it and try again")
        live.version += 1

    def _save(self, live: _Live) -> None:
        """The run's end, saved over the version its claim made; the lease ends."""
        saved = self._rows.save(live.session.session_id, json.dumps(live.session.to_state()), at=now_iso(),
                                version=live.version)
        if saved:
            live.version += 1
        else:  # deleted meanwhile (the lease kept every other run out)
            log.warning("session %s was not saved: it changed in the store during the run",
                        live.session.session_id)
            self._live.pop(live.session.session_id, None)

    def _release(self, live: _Live) -> None:
        self._rows.release(live.session.session_id, version=live.version)

    def record(self, live: _Live, records: list[dict[str, Any]], run_id: str | None) -> None:
        if not records:
            return
        self._rows.append_events(live.session.session_id, run_id,
                                 [(r["event"], json.dumps(r["data"])) for r in records], at=now_iso())

    def history(self, live: _Live) -> SessionHistory:
        row = self._rows.get(live.session.session_id)
        assert row is not None
        events = [EventRecord(event=r["type"], data=json.loads(r["data"]), run_id=r["run_id"], at=r["at"])
                  for r in self._rows.events(live.session.session_id)]
        pending = None
        if not live.busy:
            waiting = live.session.pending_event()
            parked = live.session.pending
            if waiting is not None and (parked is None or parked.answer is None):
                pending = self.scrub(live, to_record(waiting))
        return SessionHistory(session_id=row["id"], sandbox_id=row["sandbox_id"],
                              created_at=row["created_at"], updated_at=row["updated_at"],
                              running=live.busy, events=events, pending=pending)

    def delete(self, live: _Live) -> None:
        if live.busy:
            raise SessionBusy("the conversation is busy with a run; wait for it to finish")
        session_id = live.session.session_id
        for ref in live.session.secret_refs:
            self.secrets.delete(ref)
        self._rows.delete(session_id)
        self._live.pop(session_id, None)

    @staticmethod
    def scrub(live: _Live, record: dict[str, Any],
              known: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        """The last line of defence: no value the session knows may leave in an event."""
        text = json.dumps(record, ensure_ascii=False, default=str)
        return json.loads(sec.scrub(text, live.session.known_secrets() if known is None else known))

    # -- runs -------------------------------------------------------------------------------

    async def start(self, live: _Live, events: Callable[[], AsyncIterator[Event]], *,
                    actor: str, before: list[dict[str, Any]] | None = None) -> _Run:
        """Start a run in the background; 409 when the conversation is busy."""
        if self._tg is None:
            raise RuntimeError("the chat service needs the app's lifespan to run")
        if live.busy:
            raise SessionBusy("the conversation is busy with another run; wait for it to finish")
        live.busy = True
        try:
            self._claim(live)
        except BaseException:
            live.busy = False
            raise
        run = _Run()
        try:
            await self._tg.start(self._drive, live, events, run, actor, before or [])
        except BaseException:
            live.busy = False
            self._release(live)
            raise
        return run

    async def _drive(self, live: _Live, events: Callable[[], AsyncIterator[Event]], run: _Run,
                     actor: str, before: list[dict[str, Any]], *, task_status: TaskStatus[None]) -> None:
        with acting_as(actor):  # the run's writes are audited under the caller who started it
            await self._run_events(live, events, run, before, task_status=task_status)

    async def _run_events(self, live: _Live, events: Callable[[], AsyncIterator[Event]], run: _Run,
                          before: list[dict[str, Any]], *, task_status: TaskStatus[None]) -> None:
        pending_text: list[str] = []
        run_id: str | None = None
        stored: list[dict[str, Any]] = []

        def flush_text() -> None:
            if pending_text:
                stored.append({"event": "agent_text_delta", "data": {"text": "".join(pending_text)}})
                pending_text.clear()

        try:
            with anyio.CancelScope() as scope:
                live.scope = scope
                task_status.started()
                agen = events()
                known: list[tuple[str, str]] | None = None
                async with contextlib.aclosing(agen):  # type: ignore[type-var]
                    async for event in agen:
                        if known is None:
                            # Credentials enter a session before its run starts (a pasted one is
                            # redacted first, a handed-over one precedes resume), so one look
                            # at the store per run is enough.
                            known = live.session.known_secrets()
                        record = self.scrub(live, to_record(with_label(event)), known)
                        if event.type == "run_started":
                            run_id = record["data"].get("run_id")
                            # The person's words, with any pasted credential already a reference,
                            # stored and streamed: the widget shows these, never what was typed.
                            said = [_redacted(self.scrub(live, r, known)) for r in before]
                            stored.extend([*said, record])
                            for item in (record, *said):
                                await run.publish(item)
                            continue
                        if event.type == "agent_text_delta":
                            pending_text.append(record["data"].get("text", ""))
                        else:
                            flush_text()
                            stored.append(record)
                        await run.publish(record)
            if scope.cancelled_caught:
                run.cancelled = True
                error = {"event": "agent_error", "data": {"message": "the run was cancelled",
                                                          "type": "cancelled", "run_id": run_id or ""}}
                flush_text()
                stored.append(error)
                await run.publish(error)
        except Exception as exc:  # never let one conversation take the server down
            log.exception("chat run failed in session %s", live.session.session_id)
            error = {"event": "agent_error", "data": {"message": f"internal error: {type(exc).__name__}",
                                                      "type": "internal_error", "run_id": run_id or ""}}
            flush_text()
            stored.append(error)
            await run.publish(error)
        finally:
            live.scope = None
            flush_text()
            with anyio.CancelScope(shield=True):
                try:
                    self.record(live, stored, run_id)
                    self._save(live)
                except Exception:
                    log.exception("could not store session %s", live.session.session_id)
                live.busy = False
                run.send.close()
                run.done.set()


# -- helpers for handlers -------------------------------------------------------------------

_PERSON_RECORDS = frozenset({"user_message", "user_confirm", "user_secret"})


def _redacted(record: dict[str, Any]) -> dict[str, Any]:
    """A ``user_message`` with every credential a reference: known values are already scrubbed;
    short ones ("my key is abc") are redacted again here (throwaway references: the session
    holds the real ones), so no value the person pasted is stored or echoed."""
    if record.get("event") != "user_message":
        return record
    text = str(record.get("data", {}).get("text", ""))
    return {**record, "data": {**record["data"], "text": sec.redact(text).text}}


def _parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise rules.from_pydantic(exc) from None


def _actor(principal: Principal) -> str:
    return f"{principal.actor} via concierge"


def _sse(record: dict[str, Any]) -> str:
    return f"event: {record['event']}\ndata: {json.dumps(record['data'], ensure_ascii=False)}\n\n"


def _stream(run: _Run) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        async with run.receive:
            while True:
                with anyio.move_on_after(KEEPALIVE_S) as idle:
                    try:
                        record = await run.receive.receive()
                    except anyio.EndOfStream:
                        return
                if idle.cancelled_caught:
                    yield ": keep-alive\n\n"
                    continue
                yield _sse(record)

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _collect(ctx: Ctx, live: _Live, run: _Run, started: float, timeout: float) -> TestResult:
    """Wait for the run (at most ``timeout`` s) and fold its events into a `TestResult`
    (the same `RunResult` fold as ``concierge ask``)."""
    fold = RunResult()
    timed_out = False
    base = (ctx.request.url.path.rsplit("/concierge/", 1)[0]
            + f"/concierge/sessions/{live.session.session_id}")
    async with run.receive:
        with anyio.move_on_after(timeout) as limit:
            async for record in run.receive:
                if record["event"] in _PERSON_RECORDS:
                    continue  # what the person said or did, not the engine's events
                fold.add(from_record(record))
        if limit.cancelled_caught:
            timed_out = True
            if live.scope is not None:
                live.scope.cancel()
    await run.done.wait()
    sid = live.session.session_id
    output = fold.text
    stop = fold.stop_reason
    pending_c = pending_s = None
    if stop == "awaiting_confirmation" and fold.pending_confirmation is not None:
        c = fold.pending_confirmation
        pending_c = PendingConfirmation(id=c.id, tool=c.tool, summary=c.summary, arguments=c.arguments,
                                        session_id=sid, answer_url=base + "/confirm")
        output += ("\n\n" if output else "") + (
            f"Not done yet — this change waits for your confirmation: {c.summary}")
    elif stop == "awaiting_secret" and fold.pending_secret is not None:
        p = fold.pending_secret
        pending_s = PendingSecret(id=p.id, tool=p.tool, purpose=p.purpose, session_id=sid,
                                  answer_url=base + "/secret")
        output += ("\n\n" if output else "") + (
            f"Not done yet — this change needs {p.purpose}, handed over privately.")
    error = fold.agent_error
    status: Literal["succeeded", "failed", "timeout", "cancelled"]
    if timed_out:
        status = "timeout"
    elif stop is not None:
        status = "succeeded"
    elif error is not None and error.error_type == "cancelled":
        status = "cancelled"
    else:
        status = "failed"
    message = None
    if timed_out:
        message = f"the run did not finish within {timeout:g} s"
    elif error is not None:
        message = error.message
    outcome: OutcomeName = fold.outcome.value if not timed_out else "error"
    return TestResult(
        run_id=fold.run_ids[-1] if fold.run_ids else "", status=status, output_text=output,
        tokens_in=fold.usage["input_tokens"], tokens_out=fold.usage["output_tokens"],
        duration_ms=round((time.perf_counter() - started) * 1000, 1), error_message=message,
        session_id=sid, stop_reason=stop, outcome=outcome, questions=fold.questions,
        pending_confirmation=pending_c, pending_secret=pending_s,
        tool_calls=[ToolCallRecord(call_id=c.call_id, name=c.name, arguments=c.arguments,
                                   result=c.result, error=c.error) for c in fold.tool_calls])


def _wants_json(ctx: Ctx) -> bool:
    accept = ctx.request.headers.get("accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


def _chat(ctx: Ctx) -> ChatService:
    return ctx.services.chat


async def _begin(ctx: Ctx, *, typed_answers: bool = False) -> tuple[_Live, _Run, float]:
    """Start the run a message asks for. With ``typed_answers`` (the streamed chat), a clear
    yes or no typed while a confirmation is open answers it ("yes please" → confirm), as the
    REPL's prompt does; anything else is a new message, which drops the open request."""
    sb = ctx.sandbox()
    req: ChatRequest = _parse(ChatRequest, await ctx.json())
    service = _chat(ctx)
    live = (service.open(req.session_id, sb, ctx.caller) if req.session_id
            else service.create(sb, ctx.caller))
    started = time.perf_counter()
    message = req.message
    said = {"event": "user_message", "data": {"text": message}}
    waiting = live.session.pending if not live.busy else None
    verdict = (read_yes_no(message) if typed_answers and waiting is not None
               and waiting["kind"] == "confirmation" and waiting.get("answer") is None else None)
    if waiting is not None and verdict is not None:
        if verdict:
            ctx.caller.require(Role.EDITOR, "approving a change")
        live.session.confirm(waiting["id"], verdict)
        answered = {"event": "user_confirm", "data": {"id": waiting["id"], "approved": verdict}}
        run = await service.start(live, live.session.resume, actor=_actor(ctx.caller),
                                  before=[said, answered])
        return live, run, started

    run = await service.start(live, lambda: live.session.send(message), actor=_actor(ctx.caller),
                              before=[said])
    return live, run, started


# -- handlers -------------------------------------------------------------------------------

async def concierge_test(ctx: Ctx) -> TestResult:
    live, run, started = await _begin(ctx)
    return await _collect(ctx, live, run, started, _chat(ctx).run_timeout)


async def concierge_chat(ctx: Ctx) -> Response:
    _, run, _ = await _begin(ctx, typed_answers=True)
    return _stream(run)


async def _resumed(ctx: Ctx, live: _Live, run: _Run, started: float) -> Response:
    if _wants_json(ctx):
        result = await _collect(ctx, live, run, started, _chat(ctx).run_timeout)
        return JSONResponse(result.model_dump(mode="json"))
    return _stream(run)


async def chat_session_confirm(ctx: Ctx) -> Response:
    sb = ctx.sandbox()
    req: ConfirmRequest = _parse(ConfirmRequest, await ctx.json())
    if req.approved:
        ctx.caller.require(Role.EDITOR, "approving a change")
    service = _chat(ctx)
    live = service.open(ctx.param("session_id"), sb, ctx.caller)
    if live.busy:
        raise SessionBusy("the conversation is busy with another run; wait for it to finish")
    live.session.confirm(req.id, req.approved)
    started = time.perf_counter()
    run = await service.start(live, live.session.resume, actor=_actor(ctx.caller),
                              before=[{"event": "user_confirm", "data": {"id": req.id,
                                                                         "approved": req.approved}}])
    return await _resumed(ctx, live, run, started)


async def chat_session_secret(ctx: Ctx) -> Response:
    sb = ctx.sandbox()
    req: SecretRequest = _parse(SecretRequest, await ctx.json())
    service = _chat(ctx)
    live = service.open(ctx.param("session_id"), sb, ctx.caller)
    if live.busy:
        raise SessionBusy("the conversation is busy with another run; wait for it to finish")
    live.session.provide_secret(req.id, req.value.get_secret_value())
    started = time.perf_counter()
    run = await service.start(live, live.session.resume, actor=_actor(ctx.caller),
                              before=[{"event": "user_secret", "data": {"id": req.id}}])
    return await _resumed(ctx, live, run, started)


async def chat_session_history(ctx: Ctx) -> SessionHistory:
    service = _chat(ctx)
    return service.history(service.open(ctx.param("session_id"), ctx.sandbox(), ctx.caller))


async def chat_session_delete(ctx: Ctx) -> Deleted:
    service = _chat(ctx)
    live = service.open(ctx.param("session_id"), ctx.sandbox(), ctx.caller)
    service.delete(live)
    return Deleted(session_id=live.session.session_id, deleted=True)


ROUTES = [
    ApiRoute("POST", BASE + "/test", concierge_test,
             "Ask the concierge once; writes are reported as pending, never run", "viewer", "concierge",
             body=ChatRequest, response=TestResult, errors=(409,),
             description="Runs one turn and answers when it ends. A change the concierge wants to make "
                         "is not run: `stop_reason` is `awaiting_confirmation`, `output_text` ends with "
                         "its summary and `pending_confirmation` says where to answer (or "
                         "`pending_secret` when a credential is needed first)."),
    ApiRoute("POST", BASE + "/chat", concierge_chat,
             "Chat with the concierge (Server-Sent Events of the engine's events)", "viewer", "concierge",
             body=ChatRequest, response=SSE_SCHEMA, media="text/event-stream", errors=(409,),
             description="Send `session_id` (from `run_started` or `agent_finish`) to continue a "
                         "conversation. A run that needs the person ends with `agent_finish` "
                         "`awaiting_confirmation` or `awaiting_secret`; answer on the session's "
                         "confirm or secret endpoint, whose response streams the resumed run."),
    ApiRoute("GET", SESSION, chat_session_history,
             "A conversation so far, and the confirmation or credential it waits for", "viewer",
             "concierge", response=SessionHistory),
    ApiRoute("DELETE", SESSION, chat_session_delete,
             "Forget a conversation and the credentials handed over in it", "viewer", "concierge",
             response=Deleted, errors=(409,)),
    ApiRoute("POST", SESSION + "/confirm", chat_session_confirm,
             "Answer a confirmation_required; streams the resumed run", "viewer", "concierge",
             body=ConfirmRequest, response=SSE_SCHEMA, media="text/event-stream", errors=(409,),
             description="`approved: true` needs an editor key. Send `Accept: application/json` for "
                         "the one-shot result shape instead of SSE."),
    ApiRoute("POST", SESSION + "/secret", chat_session_secret,
             "Hand over the credential a secret_required asked for; streams the resumed run",
             "editor", "concierge", body=SecretRequest, response=SSE_SCHEMA, media="text/event-stream",
             errors=(409,),
             description="The value goes to the vault and the tool gets a reference; it never "
                         "enters the chat, the model or any response. `Accept: application/json` "
                         "gives the one-shot result shape."),
]
