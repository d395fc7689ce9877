"""A scriptable OpenAI-compatible chat completions server for tests (real HTTP on loopback).

Not a test module; import it from tests (``from tests.fake_openai import ...``).

    with serve_fake_openai(api_key="sk-test") as fake:          # uvicorn thread, free port
        fake.enqueue(text_reply("Hello!"), tool_reply(("add", {"a": 1})))
        model = OpenAIChatModel("gpt-test", api_key="sk-test", base_url=fake.base_url)
        ...
        fake.bodies            # every JSON body received, in order
        fake.requests          # RecordedRequest(method, path, headers, body) for each request
        fake.received_text()   # all bodies as one string: assert a canary is not in it
        fake.reset()           # empty queue and records, e.g. per test with a module-scoped server

Every ``POST /v1/chat/completions`` is answered by the next queued reply, rendered as JSON or
as SSE depending on the request's ``stream`` flag (usage chunk only when
``stream_options.include_usage`` is set). Before the queue is touched, the server checks the
bearer key (401 with OpenAI's error JSON, which echoes the key it got, as a careless server
might) and the model name (404 ``model_not_found``); ``reject_stream_options=True`` makes it
answer 400 to any request carrying ``stream_options``. A queued item may be a function of the
request body returning a `Reply`; ``default=`` answers once the queue is empty (otherwise a
400 that says the script ran out). ``GET /v1/models`` lists the models.

Reply builders: ``text_reply(text)``, ``tool_reply(*calls, text=)`` where a call is a
`FakeToolCall` or ``(name, arguments)``, ``error_reply(status, message, code=)``; every reply
takes ``delay=`` (seconds before answering; for timeouts), ``usage=(prompt, completion)``,
``headers=``, ``text_chunks=``, ``tool_call_style="split"|"whole"`` (arguments in fragments,
or each call whole in one delta), ``ids=False`` (tool calls without ids) and
``drop_after_text=True`` (a streamed answer cut off after its text).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.mcp_servers import serve_in_thread

__all__ = [
    "FakeOpenAI",
    "FakeToolCall",
    "RecordedRequest",
    "Reply",
    "Responder",
    "error_reply",
    "serve_fake_openai",
    "text_reply",
    "tool_reply",
]


@dataclass(frozen=True)
class FakeToolCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    """A dict is sent as JSON; a string is sent as is (empty or invalid JSON on purpose)."""
    id: str | None = None
    """``None``: ``call_fake_<n>``."""


@dataclass(frozen=True)
class Reply:
    text: str = ""
    tool_calls: tuple[FakeToolCall, ...] = ()
    finish_reason: str | None = None
    """Default: ``tool_calls`` when there are calls, else ``stop``."""
    usage: tuple[int, int] | None = (21, 9)
    status: int = 200
    error: dict[str, Any] | None = None
    """The JSON body of an error reply (``status`` >= 400)."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    text_chunks: int = 3
    tool_call_style: Literal["split", "whole"] = "split"
    ids: bool = True
    drop_after_text: bool = False
    """Streaming only: cut the connection after the text chunks (a server dying mid-answer)."""


Responder = Reply | Callable[[dict[str, Any]], Reply]


def text_reply(text: str, **options: Any) -> Reply:
    return Reply(text=text, **options)


def tool_reply(*calls: FakeToolCall | tuple[str, dict[str, Any] | str], text: str = "", **options: Any) -> Reply:
    made = tuple(c if isinstance(c, FakeToolCall) else FakeToolCall(c[0], c[1]) for c in calls)
    return Reply(text=text, tool_calls=made, **options)


def error_reply(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    **options: Any,
) -> Reply:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return Reply(status=status, error=body, **options)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeOpenAI:
    """The server's state: the reply queue and the recorded requests. ``app`` is the ASGI app."""

    def __init__(
        self,
        *,
        api_key: str | None = "sk-fake-test-key",
        models: Sequence[str] | None = ("gpt-test",),
        default: Responder | None = None,
        reject_stream_options: bool = False,
    ) -> None:
        self.api_key = api_key
        self.models = list(models) if models is not None else None
        self.default = default
        self.reject_stream_options = reject_stream_options
        self.requests: list[RecordedRequest] = []
        self.base_url = ""  # set by serve_fake_openai
        self._queue: deque[Responder] = deque()
        self._lock = threading.Lock()
        self._counter = 0
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    # -- scripting and inspection ----------------------------------------------------------

    def enqueue(self, *replies: Responder) -> None:
        self._queue.extend(replies)

    def reset(self, *, default: Responder | None = None, reject_stream_options: bool = False) -> None:
        """Forget the queue and the recorded requests (to share one server across tests)."""
        self._queue.clear()
        with self._lock:
            self.requests.clear()
        self.default = default
        self.reject_stream_options = reject_stream_options

    @property
    def remaining(self) -> int:
        return len(self._queue)

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def received_text(self) -> str:
        """Every request body as JSON text (headers excluded: they carry the key by design)."""
        return "\n".join(json.dumps(b, ensure_ascii=False) for b in self.bodies)

    # -- HTTP ------------------------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        self._record(request, None)
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models or []
        ]})

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self._record(request, body)
        if self.api_key is not None:
            scheme, _, key = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or key != self.api_key:
                return _error(401, f"Incorrect API key provided: {key}.", code="invalid_api_key")
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        if self.models is not None and body.get("model") not in self.models:
            return _error(404, f"The model `{body.get('model')}` does not exist or you do not have access to it.",
                          code="model_not_found")
        if self.reject_stream_options and "stream_options" in body:
            return _error(400, "Unrecognized request argument supplied: stream_options")
        reply = self._next(body)
        if reply.delay and await _wait_or_disconnect(request, reply.delay):
            return Response(status_code=499)
        if reply.status >= 400:
            return JSONResponse(reply.error or {"error": {"message": "error"}}, reply.status, reply.headers)
        self._counter += 1
        ids = [c.id or f"call_fake_{self._counter}_{i}" for i, c in enumerate(reply.tool_calls)]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(self._sse(body, reply, ids, include_usage), media_type="text/event-stream",
                                     headers=reply.headers)
        return JSONResponse(self._completion(body, reply, ids), headers=reply.headers)

    def _record(self, request: Request, body: Any) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(request.method, request.url.path, dict(request.headers), body))

    def _next(self, body: dict[str, Any]) -> Reply:
        try:
            item = self._queue.popleft()
        except IndexError:
            item = self.default
        if item is None:
            return error_reply(400, "fake_openai: no scripted reply left for this request",
                               code="fake_script_exhausted")
        return item(body) if callable(item) else item

    # -- rendering -------------------------------------------------------------------------

    def _completion(self, body: dict[str, Any], reply: Reply, ids: list[str]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                ({"id": call_id} if reply.ids else {})
                | {"type": "function", "function": {"name": c.name, "arguments": _arguments(c)}}
                for c, call_id in zip(reply.tool_calls, ids, strict=True)
            ]
        result: dict[str, Any] = {
            "id": f"chatcmpl-fake-{self._counter}", "object": "chat.completion", "created": 0,
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply), "logprobs": None}],
        }
        if reply.usage is not None:
            result["usage"] = _usage(reply.usage)
        return result

    async def _sse(self, body: dict[str, Any], reply: Reply, ids: list[str], include_usage: bool
                   ) -> AsyncIterator[bytes]:
        base = {"id": f"chatcmpl-fake-{self._counter}", "object": "chat.completion.chunk", "created": 0,
                "model": body.get("model")}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        for piece in _split(reply.text, reply.text_chunks):
            yield chunk({"content": piece})
        if reply.drop_after_text:
            raise ConnectionAbortedError("fake_openai: dropping the stream on purpose")
        for index, (c, call_id) in enumerate(zip(reply.tool_calls, ids, strict=True)):
            head = {"index": index} | ({"id": call_id} if reply.ids else {}) | {"type": "function"}
            arguments = _arguments(c)
            if reply.tool_call_style == "whole":
                yield chunk({"tool_calls": [head | {"function": {"name": c.name, "arguments": arguments}}]})
                continue
            yield chunk({"tool_calls": [head | {"function": {"name": c.name, "arguments": ""}}]})
            for piece in _split(arguments, 3):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, _finish(reply))
        if include_usage and reply.usage is not None:
            yield f"data: {json.dumps(base | {'choices': [], 'usage': _usage(reply.usage)})}\n\n".encode()
        yield b"data: [DONE]\n\n"


def _error(status: int, message: str, *, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": code}}, status)


def _arguments(call: FakeToolCall) -> str:
    return call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)


def _finish(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": usage[0] + usage[1]}


def _split(s: str, n: int) -> list[str]:
    """``s`` in ``n`` roughly equal non-empty pieces (fewer when it is short)."""
    if not s:
        return []
    n = max(1, min(n, len(s)))
    size = -(-len(s) // n)
    return [s[i:i + size] for i in range(0, len(s), size)]


async def _wait_or_disconnect(request: Request, delay: float) -> bool:
    """Sleep ``delay`` s; True if the client went away first (so shutdown is not held up)."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            return True
        await anyio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
    return False


@contextlib.contextmanager
def serve_fake_openai(**options: Any) -> Iterator[FakeOpenAI]:
    """A `FakeOpenAI` (``options`` go to its constructor) served on a free loopback port;
    ``fake.base_url`` is ``http://127.0.0.1:PORT/v1``."""
    fake = FakeOpenAI(**options)
    with serve_in_thread(fake.app) as server:
        fake.base_url = server.url_base + "/v1"
        yield fake
