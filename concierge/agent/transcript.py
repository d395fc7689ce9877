"""Recording a session as redacted JSON lines, and replaying a recording.

One JSON object per line, ``kind`` first:

    {"kind": "header", "version": 1, "session_id", "model", "sandbox", "meta": {...}}
    {"kind": "input", "input": "message", "text": "<redacted text>"}
    {"kind": "input", "input": "confirm", "id": "confirm_…", "approved": true}
    {"kind": "input", "input": "secret", "id": "secret_…", "ref": "sec_…"}   (never the value)
    {"kind": "input", "input": "abandon", "id": "secret_…"}   (the person walked away from it)
    {"kind": "model", "text": "…", "tool_calls": [{"id", "name", "arguments"}], "usage": {…}}
    {"kind": "event", "event": "agent_tool_call", "data": {…}}

Every line is scrubbed of the values of the session's known secrets before it is written,
so a transcript holds references only, whatever went wrong upstream.

`Normalizer` replaces what differs between two runs of the same conversation (ids, times,
latencies, token counts, server addresses) with stable placeholders; `replay` feeds a
recording's inputs to a fresh session and returns the live lines so a test can compare
both, normalized (`canonical`). `model_steps` turns a recording's model lines into
``ScriptedModel`` steps (ids translated to the live run's): scripted model responses.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from concierge.agent.events import (
    STOP_AWAITING_CONFIRMATION,
    STOP_AWAITING_SECRET,
    AgentFinish,
    Event,
    to_record,
)
from concierge.agent.models.base import ModelResponse, ToolCall, Usage
from concierge.agent.secrets import scrub

__all__ = [
    "Normalizer",
    "TRANSCRIPT_VERSION",
    "Transcript",
    "canonical",
    "model_steps",
    "read_transcript",
    "replay",
    "response_from_line",
]

TRANSCRIPT_VERSION = 1

_ID_RE = re.compile(r"\b(ds|sb|ag|sec|run|cs|confirm|secret|call)_([0-9A-Za-z]{6,32})\b")
_TIME_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_MS_RE = re.compile(r"\b\d+(?:\.\d+)? ?ms\b")
_VOLATILE_KEYS = {"latency_ms", "last_latency_ms", "duration_ms", "last_checked_at", "created_at",
                  "updated_at", "usage", "at"}


class Transcript:
    """Writes one session's transcript. Pass it as ``ConciergeSession(transcript=...)``."""

    def __init__(self, target: str | Path | IO[str], *, meta: dict[str, Any] | None = None) -> None:
        if isinstance(target, (str, Path)):
            # Redacted, but still a record of someone's conversation: owner-only (0600).
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.chmod(target, 0o600)  # an existing file keeps its mode through O_CREAT
            self._file: IO[str] = open(fd, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._owned = True
        else:
            self._file, self._owned = target, False
        self.meta = dict(meta or {})
        self._session: Any = None

    def bind(self, session: Any) -> None:
        """Called by the session; writes the header."""
        self._session = session
        self._write({"kind": "header", "version": TRANSCRIPT_VERSION, "session_id": session.session_id,
                     "model": getattr(session.model, "name", type(session.model).__name__),
                     "sandbox": session.sandbox, "meta": self.meta})

    def input(self, kind: str, **data: Any) -> None:
        self._write({"kind": "input", "input": kind, **data})

    def model(self, response: ModelResponse, calls: Sequence[dict[str, Any]]) -> None:
        self._write({"kind": "model", "text": response.text, "tool_calls": list(calls),
                     "finish_reason": response.finish_reason,
                     "usage": {"input_tokens": response.usage.input_tokens,
                               "output_tokens": response.usage.output_tokens}})

    def event(self, event: Event) -> None:
        self._write({"kind": "event", **to_record(event)})

    def _write(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, ensure_ascii=False, default=str)
        if self._session is not None:
            text = scrub(text, self._session.known_secrets())
        self._file.write(text + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._owned and not self._file.closed:
            self._file.close()

    def __enter__(self) -> Transcript:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_transcript(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a transcript file."""
    lines = []
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if raw.strip():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
    if not lines or lines[0].get("kind") != "header":
        raise ValueError(f"{path}: the first line must be the header")
    return lines


class Normalizer:
    """Stable placeholders for what legitimately differs between runs.

    Ids become ``<ds:1>``, ``<call:2>`` … in order of first appearance; ISO times become
    ``<time>``, durations ``<ms>``; ``replacements`` maps literal strings (server URLs) to
    names. `translate_to` maps a value seen by this normalizer to the other's value.
    """

    def __init__(self, replacements: dict[str, str] | None = None) -> None:
        # Longest first, so http://host:1/mcp wins over http://host:1.
        self.replacements = dict(sorted((replacements or {}).items(), key=lambda kv: -len(kv[0])))
        self.forward: dict[str, str] = {}
        self.reverse: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def _placeholder(self, match: re.Match[str], *, learn: bool) -> str:
        value = match.group(0)
        if value in self.forward:
            return self.forward[value]
        if not learn:
            return value
        prefix = match.group(1)
        self._counts[prefix] = self._counts.get(prefix, 0) + 1
        placeholder = f"<{prefix}:{self._counts[prefix]}>"
        self.forward[value] = placeholder
        self.reverse[placeholder] = value
        return placeholder

    def text(self, value: str, *, learn: bool = True) -> str:
        for literal, name in self.replacements.items():
            value = value.replace(literal, name)
        value = _ID_RE.sub(lambda m: self._placeholder(m, learn=learn), value)
        value = _TIME_RE.sub("<time>", value)
        return _MS_RE.sub("<ms>", value)

    def __call__(self, obj: Any, *, learn: bool = True) -> Any:
        if isinstance(obj, str):
            return self.text(obj, learn=learn)
        if isinstance(obj, list):
            return [self(x, learn=learn) for x in obj]
        if isinstance(obj, dict):
            return {k: ("<volatile>" if k in _VOLATILE_KEYS and v is not None else self(v, learn=learn))
                    for k, v in obj.items()}
        return obj

    def translate_to(self, other: Normalizer, obj: Any) -> Any:
        """``obj`` as seen by this normalizer, rewritten with ``other``'s ids and addresses."""
        if isinstance(obj, str):
            for literal, name in self.replacements.items():
                obj = obj.replace(literal, name)
            obj = _ID_RE.sub(lambda m: other.reverse.get(self.forward.get(m.group(0), ""), m.group(0)), obj)
            for literal, name in other.replacements.items():
                obj = obj.replace(name, literal)
            return obj
        if isinstance(obj, list):
            return [self.translate_to(other, x) for x in obj]
        if isinstance(obj, dict):
            return {k: self.translate_to(other, v) for k, v in obj.items()}
        return obj


def response_from_line(line: dict[str, Any]) -> ModelResponse:
    """The `ModelResponse` a recorded ``model`` line holds."""
    usage = line.get("usage") or {}
    return ModelResponse(
        text=line.get("text") or "",
        tool_calls=tuple(ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"],
                                  raw_arguments=json.dumps(c["arguments"]))
                         for c in line.get("tool_calls") or []),
        usage=Usage(input_tokens=usage.get("input_tokens", 0), output_tokens=usage.get("output_tokens", 0)),
        finish_reason=line.get("finish_reason", "stop"))


def model_steps(lines: Iterable[dict[str, Any]],
                translate: Callable[[Any], Any] | None = None) -> list[Callable[..., ModelResponse]]:
    """Steps for ``ScriptedModel``: the recording's model replies, in order, each rewritten by
    ``translate`` (ids, addresses of the live run) at the moment it is replayed."""
    translate = translate or (lambda x: x)

    def step(line: dict[str, Any]) -> Callable[..., ModelResponse]:
        return lambda messages, tools: response_from_line(translate(line))

    return [step(line) for line in lines if line.get("kind") == "model"]


def canonical(records: Iterable[dict[str, Any]], normalizer: Normalizer) -> list[dict[str, Any]]:
    """Event records normalized for comparison; consecutive text deltas joined into one."""
    out: list[dict[str, Any]] = []
    for record in records:
        if record.get("kind", "event") != "event":
            continue
        record = {"event": record["event"], "data": record["data"]}
        if (record["event"] == "agent_text_delta" and out and out[-1]["event"] == "agent_text_delta"):
            out[-1] = {"event": "agent_text_delta",
                       "data": {"text": out[-1]["data"]["text"] + record["data"]["text"]}}
            continue
        out.append(record)
    return [normalizer(r) for r in out]


SecretSource = Callable[[int, dict[str, Any]], str]
"""Gives the value for the n-th secret input of a recording (the recording holds only refs)."""


async def replay(lines: Sequence[dict[str, Any]], session: Any, *, secret_value: SecretSource,
                 translate: Callable[[Any], Any] | None = None,
                 on_event: Callable[[Event], Awaitable[None] | None] | None = None) -> list[Event]:
    """Feed a recording's inputs to ``session``; return the live events.

    Confirmation and secret inputs answer whatever the live session is waiting for (their
    recorded ids belong to the old run); a mismatch in kind raises ``AssertionError``.
    ``translate`` rewrites recorded message texts for the live run (ids, addresses).
    """
    translate = translate or (lambda x: x)
    events: list[Event] = []
    secrets_seen = 0

    async def consume(stream: Any) -> None:
        async for event in stream:
            events.append(event)
            if on_event is not None:
                maybe = on_event(event)
                if maybe is not None:
                    await maybe

    for line in lines:
        if line.get("kind") != "input":
            continue
        kind = line["input"]
        if kind == "message":
            await consume(session.send(translate(line["text"])))
            continue
        if kind == "abandon":
            events.extend(session.abandon())
            continue
        last = next((e for e in reversed(events) if isinstance(e, AgentFinish)), None)
        if kind == "confirm":
            if last is None or last.stop_reason != STOP_AWAITING_CONFIRMATION or session.pending is None:
                raise AssertionError("the recording confirms here, but the live run is not awaiting "
                                     "a confirmation: behaviour changed")
            session.confirm(session.pending["id"], bool(line["approved"]))
        elif kind == "secret":
            if last is None or last.stop_reason != STOP_AWAITING_SECRET or session.pending is None:
                raise AssertionError("the recording gives a credential here, but the live run is "
                                     "not asking for one: behaviour changed")
            session.provide_secret(session.pending["id"], secret_value(secrets_seen, line))
            secrets_seen += 1
        else:
            raise ValueError(f"unknown input kind {kind!r}")
        await consume(session.resume())
    return events
