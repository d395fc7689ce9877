"""OpenAIChatModel end to end: the real `openai` client against a loopback OpenAI-compatible server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from concierge.agent.models import ChatModel, OpenAIChatModel, from_env
from concierge.errors import ModelError
from tests.fake_openai import (
    FakeOpenAI,
    FakeToolCall,
    error_reply,
    serve_fake_openai,
    text_reply,
    tool_reply,
)
from tests.mcp_servers import free_port

KEY = "sk-canary-7f3a9c2e5b1d4e6f8a0b"
MODEL = "gpt-test"
MESSAGES = [{"role": "system", "content": "You help."}, {"role": "user", "content": "What is 20 + 22?"}]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]},
    },
}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with serve_fake_openai(api_key=KEY, models=[MODEL]) as running:
        yield running


@pytest.fixture
def fake(server: FakeOpenAI) -> FakeOpenAI:
    server.reset()
    return server


def make(fake: FakeOpenAI, **options: Any) -> OpenAIChatModel:
    settings: dict[str, Any] = {"api_key": KEY, "base_url": fake.base_url, "timeout": 5.0, "backoff_base": 0.001}
    settings.update(options)
    return OpenAIChatModel(settings.pop("model", MODEL), **settings)


class Sink:
    def __init__(self) -> None:
        self.chunks: list[str] = []

    async def __call__(self, chunk: str) -> None:
        self.chunks.append(chunk)


def assert_no_key(error: ModelError) -> None:
    for text in (str(error), repr(error), error.detail, str(error.to_dict())):
        assert KEY not in text
    assert error.__cause__ is None


# -- text --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_streamed_text_arrives_in_chunks_with_usage(fake: FakeOpenAI) -> None:
    fake.enqueue(text_reply("The answer is forty-two, as computed.", text_chunks=4, usage=(31, 8)))
    sink = Sink()
    async with make(fake) as model:
        assert isinstance(model, ChatModel)
        result = await model.respond(MESSAGES, TOOLS, on_text=sink)
    assert result.text == "The answer is forty-two, as computed."
    assert len(sink.chunks) == 4 and "".join(sink.chunks) == result.text
    assert result.tool_calls == ()
    assert result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (31, 8)
    (body,) = fake.bodies
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == MODEL and body["messages"] == MESSAGES and body["tools"] == TOOLS
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.anyio
async def test_non_streamed_text(fake: FakeOpenAI) -> None:
    fake.enqueue(text_reply("Hello there.", usage=(12, 3)))
    sink = Sink()
    async with make(fake, stream=False) as model:
        result = await model.respond(MESSAGES, [], on_text=sink)
    assert result.text == "Hello there." and result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 3)
    assert sink.chunks == ["Hello there."]  # the whole text, once, when streaming is off
    (body,) = fake.bodies
    assert "stream" not in body and "tools" not in body  # an empty tool list is not sent


# -- tool calls --------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False])
async def test_tool_call(fake: FakeOpenAI, stream: bool) -> None:
    fake.enqueue(tool_reply(FakeToolCall("add", {"a": 20, "b": 22}, id="call_abc")))
    async with make(fake, stream=stream) as model:
        result = await model.respond(MESSAGES, TOOLS)
    (call,) = result.tool_calls
    assert (call.id, call.name, call.arguments) == ("call_abc", "add", {"a": 20, "b": 22})
    assert call.raw_arguments == '{"a": 20, "b": 22}'
    assert result.finish_reason == "tool_calls" and result.text == ""


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False])
async def test_parallel_tool_calls_with_text(fake: FakeOpenAI, stream: bool) -> None:
    fake.enqueue(tool_reply(("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4}), ("list_sources", {}),
                            text="Let me check."))
    sink = Sink()
    async with make(fake, stream=stream) as model:
        result = await model.respond(MESSAGES, TOOLS, on_text=sink)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        ("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4}), ("list_sources", {})]
    assert len({c.id for c in result.tool_calls}) == 3
    assert all(c.id.startswith("call_fake_") for c in result.tool_calls)  # the server's ids are kept
    assert result.text == "Let me check."
    assert "".join(sink.chunks) == "Let me check."


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False])
async def test_tool_calls_whole_in_one_delta_without_ids(fake: FakeOpenAI, stream: bool) -> None:
    fake.enqueue(tool_reply(("add", {"a": 5, "b": 6}), ("add", {"a": 7, "b": 8}), tool_call_style="whole",
                            ids=False))
    async with make(fake, stream=stream) as model:
        result = await model.respond(MESSAGES, TOOLS)
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_0", "add", {"a": 5, "b": 6}), ("call_1", "add", {"a": 7, "b": 8})]


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False])
async def test_empty_and_invalid_arguments_become_empty_dicts(fake: FakeOpenAI, stream: bool) -> None:
    fake.enqueue(tool_reply(("list_sources", ""), ("add", '{"a": 1, "b":'), ("add", "[1, 2]")))
    async with make(fake, stream=stream) as model:
        result = await model.respond(MESSAGES, TOOLS)
    assert [c.arguments for c in result.tool_calls] == [{}, {}, {}]
    assert [c.raw_arguments for c in result.tool_calls] == ["", '{"a": 1, "b":', "[1, 2]"]


@pytest.mark.anyio
async def test_server_rejecting_stream_options_gets_a_plain_stream(fake: FakeOpenAI) -> None:
    fake.reject_stream_options = True
    fake.enqueue(text_reply("first"), text_reply("second"))
    async with make(fake) as model:
        first = await model.respond(MESSAGES, TOOLS)
        second = await model.respond(MESSAGES, TOOLS)
    assert (first.text, second.text) == ("first", "second")
    assert first.usage.input_tokens == 0  # no usage chunk without stream_options
    # One rejected request, then the retry without it; the second turn never sends it again.
    assert ["stream_options" in b for b in fake.bodies] == [True, False, False]


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("failures", [
    [error_reply(429, "Rate limit reached", type="requests", code="rate_limit_exceeded")],
    [error_reply(500, "boom", type="server_error"), error_reply(503, "overloaded", type="server_error")],
])
async def test_retries_transient_errors_then_succeeds(fake: FakeOpenAI, failures: list[Any]) -> None:
    fake.enqueue(*failures, text_reply("made it"))
    async with make(fake) as model:
        result = await model.respond(MESSAGES, TOOLS)
    assert result.text == "made it"
    assert fake.request_count == len(failures) + 1


@pytest.mark.anyio
async def test_backoff_grows_and_gives_up_with_a_clear_message(fake: FakeOpenAI) -> None:
    fake.default = error_reply(429, "Rate limit reached", type="requests", code="rate_limit_exceeded")
    started = time.monotonic()
    async with make(fake, max_retries=2, backoff_base=0.05) as model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS)
    elapsed = time.monotonic() - started
    assert fake.request_count == 3
    # Jittered sleeps of [0.025, 0.05] then [0.05, 0.1] seconds.
    assert 0.075 <= elapsed < 2
    assert caught.value.error == "model_rate_limited"
    assert "rate limiting" in caught.value.detail and "after 3 attempts" in caught.value.detail


@pytest.mark.anyio
async def test_retry_after_header_is_honoured(fake: FakeOpenAI) -> None:
    fake.enqueue(error_reply(429, "slow down", headers={"retry-after": "0.3"}), text_reply("ok"))
    started = time.monotonic()
    async with make(fake) as model:
        assert (await model.respond(MESSAGES, TOOLS)).text == "ok"
    assert time.monotonic() - started >= 0.3


@pytest.mark.anyio
async def test_exhausted_quota_is_not_retried(fake: FakeOpenAI) -> None:
    fake.default = error_reply(429, "You exceeded your current quota", type="insufficient_quota",
                               code="insufficient_quota")
    async with make(fake) as model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS)
    assert fake.request_count == 1
    assert caught.value.error == "model_quota" and "billing" in caught.value.detail


@pytest.mark.anyio
async def test_timeout_is_retried_then_explained(fake: FakeOpenAI) -> None:
    fake.enqueue(text_reply("too late", delay=3), text_reply("too late", delay=3))
    started = time.monotonic()
    async with make(fake, timeout=0.3, max_retries=1) as model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS)
    assert time.monotonic() - started < 2
    assert fake.request_count == 2
    assert caught.value.error == "model_timeout"
    assert "did not answer within 0.3 s" in caught.value.detail and fake.base_url in caught.value.detail


# -- errors that say how to fix them -----------------------------------------------------------


@pytest.mark.anyio
async def test_bad_key_is_explained_without_the_key(fake: FakeOpenAI) -> None:
    wrong = KEY + "-wrong"
    async with make(fake, api_key=wrong) as model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS)
    error = caught.value
    assert error.error == "model_auth"
    assert "the model server rejected the API key" in error.detail and "OPENAI_API_KEY" in error.detail
    assert fake.request_count == 1  # a bad key is not retried
    for text in (str(error), repr(error), str(error.to_dict())):
        assert wrong not in text and KEY not in text
    # The server did echo the key it got, so the message above was kept clean on purpose.
    echoed = httpx2.post(fake.base_url + "/chat/completions", json={"model": MODEL, "messages": []},
                         headers={"Authorization": f"Bearer {wrong}"})
    assert echoed.status_code == 401 and wrong in echoed.text


@pytest.mark.anyio
async def test_unknown_model_names_the_model_and_the_fix(fake: FakeOpenAI) -> None:
    async with make(fake, model="gpt-nonexistent") as model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS)
    error = caught.value
    assert error.error == "model_not_found"
    assert "'gpt-nonexistent'" in error.detail
    assert "CONCIERGE_MODEL" in error.detail and "--model" in error.detail
    assert fake.request_count == 1
    assert_no_key(error)


@pytest.mark.anyio
async def test_wrong_base_path_points_at_openai_base_url(fake: FakeOpenAI) -> None:
    base = fake.base_url.removesuffix("/v1") + "/nope"
    async with make(fake, base_url=base) as model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS)
    assert caught.value.error == "model_not_found"
    assert "OPENAI_BASE_URL" in caught.value.detail and "/v1" in caught.value.detail


@pytest.mark.anyio
async def test_no_connection_names_the_base_url() -> None:
    base = f"http://127.0.0.1:{free_port()}/v1"
    model = OpenAIChatModel(MODEL, api_key=KEY, base_url=base, timeout=2, max_retries=2, backoff_base=0.001)
    started = time.monotonic()
    async with model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS)
    assert time.monotonic() - started < 3
    error = caught.value
    assert error.error == "model_unreachable"
    assert base in error.detail and "OPENAI_BASE_URL" in error.detail and "after 3 attempts" in error.detail
    assert_no_key(error)


@pytest.mark.anyio
async def test_server_message_echoing_the_key_is_redacted(fake: FakeOpenAI) -> None:
    fake.enqueue(error_reply(400, f"Invalid 'messages': request from key {KEY} is malformed"))
    async with make(fake) as model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS)
    assert caught.value.error == "model_bad_request"
    assert "HTTP 400" in caught.value.detail and "request from key *** is malformed" in caught.value.detail
    assert_no_key(caught.value)


@pytest.mark.anyio
async def test_context_length_error_suggests_a_fix(fake: FakeOpenAI) -> None:
    fake.enqueue(error_reply(400, "This model's maximum context length is 8192 tokens.",
                             code="context_length_exceeded"))
    async with make(fake) as model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS)
    assert "too long for this model" in caught.value.detail


@pytest.mark.anyio
async def test_errors_raised_by_the_text_sink_propagate_unchanged(fake: FakeOpenAI) -> None:
    fake.enqueue(text_reply("some words to stream"))

    async def failing_sink(chunk: str) -> None:
        raise LookupError("the surface went away")

    async with make(fake) as model:
        with pytest.raises(LookupError):
            await model.respond(MESSAGES, TOOLS, on_text=failing_sink)
    assert fake.request_count == 1


# -- configuration -----------------------------------------------------------------------------


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelError, match="set OPENAI_API_KEY"):
        OpenAIChatModel(MODEL)


def test_repr_never_shows_the_key() -> None:
    model = OpenAIChatModel(MODEL, api_key=KEY, base_url="http://127.0.0.1:9/v1")
    assert KEY not in repr(model) and "gpt-test" in repr(model) and model.name == MODEL


def test_from_env_without_a_key_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("CONCIERGE_MODEL", "whatever")
    assert from_env() is None
    monkeypatch.setenv("OPENAI_API_KEY", "  ")
    assert from_env("gpt-x") is None


def test_from_env_model_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("CONCIERGE_MODEL", raising=False)
    default = from_env()
    assert default is not None and default.model == "gpt-4o-mini"
    assert default.base_url.startswith("https://api.openai.com/")
    monkeypatch.setenv("CONCIERGE_MODEL", "from-env")
    assert (model := from_env()) is not None and model.model == "from-env"
    assert (model := from_env("from-flag")) is not None and model.model == "from-flag"


@pytest.mark.anyio
async def test_from_env_talks_to_the_configured_server(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("CONCIERGE_MODEL", MODEL)
    fake.enqueue(text_reply("configured"))
    model = from_env()
    assert model is not None
    async with model:
        assert (await model.respond(MESSAGES, TOOLS)).text == "configured"
    assert fake.bodies[0]["model"] == MODEL


def test_accumulator_tolerates_odd_servers() -> None:
    # Shapes seen from weaker local servers, built as the SDK parses them (no HTTP involved).
    from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

    from concierge.agent.models.openai_model import _ToolCallAccumulator

    def delta(**fields: Any) -> ChoiceDeltaToolCall:
        return ChoiceDeltaToolCall.construct(**fields)

    # Every whole call numbered 0, told apart by their ids.
    acc = _ToolCallAccumulator()
    acc.add(delta(index=0, id="x", function={"name": "add", "arguments": '{"a": 1}'}))
    acc.add(delta(index=0, id="y", function={"name": "add", "arguments": '{"a": 2}'}))
    assert [(c.id, c.arguments) for c in acc.tool_calls()] == [("x", {"a": 1}), ("y", {"a": 2})]

    # No index at all, no ids; the name repeated in every fragment.
    acc = _ToolCallAccumulator()
    for part in ('{"a":', ' 1}'):
        acc.add(delta(function={"name": "add", "arguments": part}))
    acc.add(delta(function={"name": "list_sources", "arguments": ""}))
    assert [(c.id, c.name, c.arguments) for c in acc.tool_calls()] == [
        ("call_0", "add", {"a": 1}), ("call_1", "list_sources", {})]

    # No index, no ids: the same tool twice, each call whole.
    acc = _ToolCallAccumulator()
    acc.add(delta(function={"name": "add", "arguments": '{"a": 1}'}))
    acc.add(delta(function={"name": "add", "arguments": '{"a": 2}'}))
    assert [c.arguments for c in acc.tool_calls()] == [{"a": 1}, {"a": 2}]


@pytest.mark.anyio
async def test_a_stream_cut_mid_answer_is_not_retried(fake: FakeOpenAI) -> None:
    fake.enqueue(text_reply("Half an ans", drop_after_text=True), text_reply("never sent"))
    sink = Sink()
    async with make(fake) as model:
        with pytest.raises(ModelError) as caught:
            await model.respond(MESSAGES, TOOLS, on_text=sink)
    assert "".join(sink.chunks) == "Half an ans"
    assert fake.request_count == 1 and fake.remaining == 1  # the person already saw text: no retry
    assert "broke off in the middle of the answer" in caught.value.detail
