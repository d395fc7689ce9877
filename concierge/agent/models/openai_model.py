"""`OpenAIChatModel`: chat completions with tools over any OpenAI-compatible endpoint.

Talks to api.openai.com or a local server (vLLM, Ollama, llama.cpp, ...) through the official
``openai`` SDK. The SDK's own retries are off (``max_retries=0``): this adapter retries 429 /
5xx / timeouts / connection errors itself with exponential backoff and jitter, so the policy is
visible and testable, and translates every failure into a `ModelError` that says how to fix it.
The API key never appears in an error message, a log line or ``repr``.

Streaming is tolerant of weaker servers: tool calls arriving whole in one delta, without ids
(ids ``call_0``, ``call_1``, ... by position are generated), without an index, with empty or
invalid JSON arguments (``arguments={}``, the raw text kept in ``raw_arguments``), and servers
that reject ``stream_options`` (the request is repeated once without it, and remembered).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import openai

from concierge.agent.models.base import ModelResponse, TextSink, ToolCall, Usage
from concierge.config import Settings
from concierge.config import load as load_settings
from concierge.errors import (
    ModelAuthFailed,
    ModelBadRequest,
    ModelBadResponse,
    ModelConfigError,
    ModelError,
    ModelForbidden,
    ModelNotFound,
    ModelQuotaExceeded,
    ModelRateLimited,
    ModelServerError,
    ModelTimeout,
    ModelUnreachable,
)

__all__ = ["DEFAULT_MODEL", "OpenAIChatModel", "from_env"]

DEFAULT_MODEL = "gpt-4o-mini"
_MAX_BACKOFF_S = 20.0
_MAX_RETRY_AFTER_S = 30.0
_RETRY_STATUSES = frozenset({408, 409, 429})  # plus every 5xx
_SERVER_MESSAGE_LIMIT = 300


class OpenAIChatModel:
    """A `ChatModel` backed by ``client.chat.completions.create``.

    ``api_key``/``base_url`` default to the SDK's own environment lookup (``OPENAI_API_KEY``,
    ``OPENAI_BASE_URL``). ``max_retries`` counts retries after the first attempt. Pass
    ``client`` to reuse an ``openai.AsyncOpenAI`` you own (it is not closed by `aclose`; its
    own retry setting is then yours to choose).
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        stream: bool = True,
        client: openai.AsyncOpenAI | None = None,
        backoff_base: float = 0.5,
    ) -> None:
        if not model:
            raise ModelConfigError("no model name given — set CONCIERGE_MODEL or pass --model")
        self.model = model
        self.name = model
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.stream = stream
        self.backoff_base = backoff_base
        self._owns_client = client is None
        if client is None:
            try:
                client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
            except openai.OpenAIError:
                # Raised when no key is given and OPENAI_API_KEY is unset.
                raise ModelConfigError(
                    "no API key configured — set OPENAI_API_KEY (for a local server that needs no "
                    "key, any value works)") from None
        self._client = client
        self._secret = client.api_key or ""
        self._stream_options_ok = True

    def __repr__(self) -> str:
        return f"OpenAIChatModel(model={self.model!r}, base_url={self.base_url!r}, stream={self.stream})"

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    async def aclose(self) -> None:
        """Close the HTTP client if this model created it."""
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> OpenAIChatModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def respond(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        *,
        on_text: TextSink | None = None,
    ) -> ModelResponse:
        """One chat completion, retried on transient failures. Raises `ModelError`.

        Text goes to ``on_text`` as it streams (in one piece when ``stream=False``). An attempt
        that already passed text to ``on_text`` is not retried (the person would see the text
        twice); its failure is raised instead.
        """
        attempt = 0
        while True:
            progress = _Progress()
            try:
                return await self._attempt(messages, tools, on_text, progress)
            except openai.APIError as exc:
                if progress.emitted or not _retryable(exc) or attempt >= self.max_retries:
                    raise self._translate(exc, attempts=attempt + 1, mid_answer=progress.emitted) from None
                await anyio.sleep(self._delay(attempt, exc))
                attempt += 1

    # -- one request -----------------------------------------------------------------------

    async def _attempt(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]],
        on_text: TextSink | None,
        progress: _Progress,
    ) -> ModelResponse:
        params: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if tools:  # some servers reject an empty tools list
            params["tools"] = list(tools)
        if not self.stream:
            completion = await self._client.chat.completions.create(**params)
            response = self._from_completion(completion)
            if response.text and on_text is not None:  # surfaces see text the same way either way
                progress.emitted = True
                await on_text(response.text)
            return response
        params["stream"] = True
        if self._stream_options_ok:
            try:
                stream = await self._client.chat.completions.create(
                    **params, stream_options={"include_usage": True}
                )
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if not _mentions_stream_options(exc):
                    raise
                self._stream_options_ok = False
                stream = await self._client.chat.completions.create(**params)
        else:
            stream = await self._client.chat.completions.create(**params)
        return await self._consume(stream, on_text, progress)

    async def _consume(self, stream: Any, on_text: TextSink | None, progress: _Progress) -> ModelResponse:
        acc = _ToolCallAccumulator()
        text_parts: list[str] = []
        finish_reason: str | None = None
        usage = Usage()
        try:
            while True:
                # Only reading the stream is translated; errors raised by on_text propagate as-is.
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except (httpx2.HTTPError, ValueError) as exc:  # ValueError: bad JSON / schema
                    raise ModelBadResponse(
                        f"the model server at {self.base_url} sent a broken stream: {self._clean(str(exc))}") from None
                if getattr(chunk, "usage", None) is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices or ():
                    delta = choice.delta
                    if delta is not None:
                        for tc in delta.tool_calls or ():
                            acc.add(tc)
                        if delta.content:
                            text_parts.append(delta.content)
                            if on_text is not None:
                                progress.emitted = True
                                await on_text(delta.content)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        finally:
            await stream.close()
        calls = acc.tool_calls()
        return ModelResponse(
            text="".join(text_parts),
            tool_calls=calls,
            usage=usage,
            finish_reason=finish_reason or ("tool_calls" if calls else "stop"),
        )

    def _from_completion(self, completion: Any) -> ModelResponse:
        choices = getattr(completion, "choices", None) or []
        if not choices:
            raise ModelBadResponse(
                f"the model server at {self.base_url} answered without any choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise ModelBadResponse(
                f"the model server at {self.base_url} answered without a message")
        calls: list[ToolCall] = []
        for position, tc in enumerate(message.tool_calls or ()):
            function = getattr(tc, "function", None)
            name = (getattr(function, "name", None) or "") if function else ""
            raw = (getattr(function, "arguments", None) or "") if function else ""
            if not isinstance(raw, str):  # a few servers send an object instead of a JSON string
                raw = json.dumps(raw)
            calls.append(ToolCall(id=tc.id or f"call_{position}", name=name, arguments=_parse_arguments(raw),
                                  raw_arguments=raw))
        return ModelResponse(
            text=message.content or "",
            tool_calls=tuple(calls),
            usage=_usage(getattr(completion, "usage", None)),
            finish_reason=choice.finish_reason or ("tool_calls" if calls else "stop"),
        )

    # -- retries and errors ----------------------------------------------------------------

    def _delay(self, attempt: int, exc: openai.APIError) -> float:
        """Exponential backoff with full jitter in [50 %, 100 %]; a short Retry-After wins."""
        delay = min(_MAX_BACKOFF_S, self.backoff_base * (2**attempt)) * (0.5 + random.random() / 2)
        response = getattr(exc, "response", None)
        if response is not None:
            try:
                retry_after = float(response.headers.get("retry-after", ""))
            except ValueError:
                retry_after = None
            if retry_after is not None and 0 <= retry_after <= _MAX_RETRY_AFTER_S:
                delay = max(delay, retry_after)
        return delay

    def _clean(self, text: str) -> str:
        """A server-provided message made safe to show: the key removed, length capped."""
        if self._secret:
            text = text.replace(self._secret, "***")
        text = " ".join(text.split())
        if len(text) > _SERVER_MESSAGE_LIMIT:
            text = text[: _SERVER_MESSAGE_LIMIT - 1] + "…"
        return text

    def _translate(self, exc: openai.APIError, *, attempts: int, mid_answer: bool = False) -> ModelError:
        where = f"the model server at {self.base_url}"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        if isinstance(exc, openai.APITimeoutError):
            return ModelTimeout(
                f"{where} did not answer within {self.timeout:g} s{tries} — check that it is up and not "
                "overloaded, or raise the timeout"
            )
        if isinstance(exc, openai.APIConnectionError) and mid_answer:
            return ModelUnreachable(
                f"the connection to {where} broke off in the middle of the answer — try again"
            )
        if isinstance(exc, openai.APIConnectionError):
            return ModelUnreachable(
                f"could not connect to {where}{tries} — is it running? Check OPENAI_BASE_URL"
            )
        status = getattr(exc, "status_code", None)
        code = exc.code or ""
        server_says = self._clean(_server_message(exc))
        detail = f": {server_says}" if server_says else ""
        if status == 401:
            return ModelAuthFailed(
                f"the model server rejected the API key (HTTP 401) — check OPENAI_API_KEY (server: {self.base_url})"
            )
        if status == 404 or code == "model_not_found":
            if code == "model_not_found" or "model" in server_says.lower():
                return ModelNotFound(
                    f"{where} does not know the model '{self.model}' — set CONCIERGE_MODEL or pass "
                    "--model with a model it serves"
            )
            return ModelNotFound(
                f"{where} has no chat completions endpoint (HTTP 404) — check OPENAI_BASE_URL (it usually "
                f"ends in /v1) and the model name '{self.model}' (CONCIERGE_MODEL / --model)"
            )
        if status == 403:
            return ModelForbidden(
                f"{where} refused access to the model '{self.model}' (HTTP 403){detail} — check the key's "
                "permissions or choose another model with CONCIERGE_MODEL / --model"
            )
        if status == 429:
            if code == "insufficient_quota":
                return ModelQuotaExceeded(
                    f"the API key has no quota left at {self.base_url} (HTTP 429) — check the account's "
                    "plan and billing"
            )
            return ModelRateLimited(
                f"{where} is rate limiting requests (HTTP 429){tries} — wait a moment and try again, or "
                "raise the account's rate limit"
            )
        if status is not None and status >= 500:
            return ModelServerError(
                f"{where} failed (HTTP {status}){tries}{detail} — try again later")
        if status in (400, 422):
            hint = ""
            if code == "context_length_exceeded" or "context" in server_says.lower():
                hint = " — the conversation is too long for this model; lower the context budget or /reset"
            return ModelBadRequest(
                f"{where} refused the request (HTTP {status}){detail}{hint}")
        if status is not None:
            return ModelError(f"{where} answered HTTP {status}{detail}")
        return ModelBadResponse(f"{where} sent an unusable reply{detail}")


@dataclass
class _Progress:
    emitted: bool = False


class _ToolCallAccumulator:
    """Assembles streamed tool-call deltas into whole calls, in order of first appearance."""

    def __init__(self) -> None:
        self._calls: list[dict[str, str]] = []
        self._by_index: dict[int, int] = {}

    def add(self, delta: Any) -> None:
        index = getattr(delta, "index", None)
        call_id = getattr(delta, "id", None) or ""
        function = getattr(delta, "function", None)
        name = (getattr(function, "name", None) or "") if function is not None else ""
        args = (getattr(function, "arguments", None) or "") if function is not None else ""
        slot = self._slot(index, call_id, name)
        call = self._calls[slot]
        if call_id:
            call["id"] = call_id
        if name and call["name"] != name:  # some servers repeat the whole name in every delta
            call["name"] += name
        call["arguments"] += args

    def _slot(self, index: int | None, call_id: str, name: str) -> int:
        if index is not None and index in self._by_index:
            slot = self._by_index[index]
            existing = self._calls[slot]
            # A new id at a used index: a server that numbers every whole call 0.
            if not (call_id and existing["id"] and call_id != existing["id"]):
                return slot
        elif index is None and self._calls:
            last = self._calls[-1]
            # Without an index, a new id or a new name starts a call; so does the same name
            # once the previous call's arguments are complete JSON.
            starts_new = (call_id and last["id"] and call_id != last["id"]) or (
                name and last["name"] and (name != last["name"] or _is_json(last["arguments"]))
            )
            if not starts_new:
                return len(self._calls) - 1
        self._calls.append({"id": "", "name": "", "arguments": ""})
        if index is not None:
            self._by_index[index] = len(self._calls) - 1
        return len(self._calls) - 1

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(
                id=call["id"] or f"call_{position}",
                name=call["name"],
                arguments=_parse_arguments(call["arguments"]),
                raw_arguments=call["arguments"],
            )
            for position, call in enumerate(self._calls)
        )


def _parse_arguments(raw: str) -> dict[str, Any]:
    """JSON object arguments, or ``{}`` when they are empty, invalid or not an object."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _is_json(raw: str) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    return Usage(
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )


def _retryable(exc: openai.APIError) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    status = getattr(exc, "status_code", None)
    if status is None:
        return False
    if status == 429 and exc.code == "insufficient_quota":  # waiting does not refill a quota
        return False
    return status in _RETRY_STATUSES or status >= 500


def _server_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(body.get("detail"), str | list):
            return json.dumps(body["detail"]) if isinstance(body["detail"], list) else body["detail"]
    if isinstance(body, str):
        return body
    return ""


def _mentions_stream_options(exc: openai.APIError) -> bool:
    text = f"{exc.message} {json.dumps(exc.body, default=str)}".lower()
    return "stream_options" in text or "include_usage" in text


def from_env(model: str | None = None, *, settings: Settings | None = None) -> OpenAIChatModel | None:
    """The model the settings configure (`concierge.config`), or ``None`` when no key is set.

    Uses ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` (optional; defaults to api.openai.com) and
    ``CONCIERGE_MODEL`` (default ``gpt-4o-mini``); an explicit ``model`` (the ``--model`` flag)
    wins over ``CONCIERGE_MODEL``. A local server that needs no key (Ollama, llama.cpp, vLLM)
    is used by setting ``OPENAI_BASE_URL`` to it and ``OPENAI_API_KEY`` to any value.
    ``settings`` default: `concierge.config.load`.
    """
    settings = settings or load_settings()
    if not settings.openai_api_key:
        return None
    name = model or settings.model or DEFAULT_MODEL
    return OpenAIChatModel(name, api_key=settings.openai_api_key, base_url=settings.openai_base_url)
