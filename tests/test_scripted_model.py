"""ScriptedModel and FunctionModel: replay, recording, exhaustion, streaming."""

from __future__ import annotations

from typing import Any

import pytest

import concierge.agent.models as models
from concierge.agent.models import (
    ChatModel,
    FunctionModel,
    ModelResponse,
    ScriptedModel,
    ScriptExhausted,
    ToolCall,
    Usage,
    text,
    tool_call,
)
from concierge.errors import ModelError

TOOLS = [{"type": "function", "function": {"name": "list_sources", "description": "List sources.",
                                            "parameters": {"type": "object", "properties": {}}}}]


class Sink:
    def __init__(self) -> None:
        self.chunks: list[str] = []

    async def __call__(self, chunk: str) -> None:
        self.chunks.append(chunk)


def test_public_api_is_sorted_and_complete() -> None:
    assert models.__all__ == sorted(models.__all__)
    for name in ("ChatModel", "FunctionModel", "ModelResponse", "OpenAIChatModel", "ScriptExhausted",
                 "ScriptedModel", "TextSink", "ToolCall", "Usage", "from_env", "text", "tool_call"):
        assert name in models.__all__ and hasattr(models, name)


def test_helpers_build_responses() -> None:
    assert text("hi") == ModelResponse(text="hi", finish_reason="stop")
    reply = tool_call("register_source", name="Support", url="https://x.example/mcp")
    (call,) = reply.tool_calls
    # `name` is positional-only, so a tool argument called "name" is fine.
    assert call.name == "register_source"
    assert call.arguments == {"name": "Support", "url": "https://x.example/mcp"}
    assert call.raw_arguments == '{"name": "Support", "url": "https://x.example/mcp"}'
    assert reply.finish_reason == "tool_calls" and reply.text == ""


@pytest.mark.anyio
async def test_replays_steps_in_order_and_records_calls() -> None:
    model = ScriptedModel([tool_call("list_sources"), "You have two sources."])
    assert isinstance(model, ChatModel)
    history: list[dict[str, Any]] = [{"role": "user", "content": "what do I have?"}]
    first = await model.respond(history, TOOLS)
    assert first.tool_calls[0].name == "list_sources"
    assert first.tool_calls[0].id == "call_1_0"  # filled in deterministically
    history.append({"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1_0", "type": "function", "function": {"name": "list_sources", "arguments": "{}"}}]})
    history.append({"role": "tool", "tool_call_id": "call_1_0", "content": "[]"})
    second = await model.respond(history, TOOLS)
    assert second.text == "You have two sources." and second.tool_calls == ()

    assert len(model.calls) == 2 and model.remaining == 0
    messages, tools = model.calls[0]
    assert messages == [{"role": "user", "content": "what do I have?"}] and tools == TOOLS
    assert [m["role"] for m in model.calls[1].messages] == ["user", "assistant", "tool"]
    model.assert_complete()


@pytest.mark.anyio
async def test_recorded_calls_are_deep_copies() -> None:
    model = ScriptedModel(["ok"])
    history = [{"role": "user", "content": "hello", "meta": {"n": 1}}]
    tools = [{"type": "function", "function": {"name": "t", "parameters": {"properties": {}}}}]
    await model.respond(history, tools)
    history[0]["meta"]["n"] = 2
    history.append({"role": "assistant", "content": "later"})
    tools[0]["function"]["name"] = "changed"
    messages, recorded_tools = model.calls[0]
    assert messages == [{"role": "user", "content": "hello", "meta": {"n": 1}}]
    assert recorded_tools[0]["function"]["name"] == "t"


@pytest.mark.anyio
async def test_running_out_raises_script_exhausted() -> None:
    model = ScriptedModel(["only one"])
    await model.respond([{"role": "user", "content": "hi"}], [])
    with pytest.raises(ScriptExhausted) as caught:
        await model.respond([{"role": "user", "content": "and then what?"}], [])
    assert isinstance(caught.value, ModelError) and caught.value.error == "script_exhausted"
    assert "call 2" in caught.value.detail and "and then what?" in caught.value.detail
    assert "enqueue" in caught.value.detail
    assert len(model.calls) == 2  # the failed call is recorded too


@pytest.mark.anyio
async def test_enqueue_and_assert_complete() -> None:
    model = ScriptedModel()
    model.enqueue("one", tool_call("list_sources"))
    with pytest.raises(AssertionError, match="2 scripted step"):
        model.assert_complete()
    assert (await model.respond([], [])).text == "one"
    with pytest.raises(AssertionError, match="list_sources"):
        model.assert_complete()
    await model.respond([], [])
    model.assert_complete()


@pytest.mark.anyio
async def test_callable_steps_see_the_history_sync_and_async() -> None:
    seen: list[int] = []

    def count_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        seen.append(len(messages))
        messages.clear()  # editing its copy changes nothing outside
        return f"{len(tools)} tools"

    async def async_step(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelResponse:
        return tool_call("list_sources", note=messages[-1]["content"])

    model = ScriptedModel([count_messages, async_step])
    history = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert (await model.respond(history, TOOLS)).text == "1 tools"
    assert seen == [2] and len(history) == 2 and len(model.calls[0].messages) == 2
    reply = await model.respond(history, TOOLS)
    assert reply.tool_calls[0].arguments == {"note": "b"}


@pytest.mark.anyio
async def test_text_is_streamed_in_a_few_chunks() -> None:
    sentence = "Your source Support is healthy and exposes four tools."
    model = ScriptedModel([sentence, tool_call("list_sources"), "short"])
    sink = Sink()
    reply = await model.respond([], [], on_text=sink)
    assert reply.text == sentence
    assert 2 <= len(sink.chunks) <= 3 and "".join(sink.chunks) == sentence
    sink.chunks.clear()
    await model.respond([], [], on_text=sink)
    assert sink.chunks == []  # a pure tool call streams nothing
    await model.respond([], [], on_text=sink)
    assert sink.chunks == ["short"]


@pytest.mark.anyio
async def test_explicit_ids_usage_and_parallel_calls_are_kept() -> None:
    step = ModelResponse(
        tool_calls=(ToolCall("mine", "a", {}), ToolCall("", "b", {"x": 1})),
        usage=Usage(input_tokens=10, output_tokens=2),
        finish_reason="tool_calls",
    )
    model = ScriptedModel([step])
    reply = await model.respond([], [])
    assert [c.id for c in reply.tool_calls] == ["mine", "call_1_1"]
    assert reply.usage == Usage(10, 2)


@pytest.mark.anyio
async def test_a_bad_step_is_a_type_error() -> None:
    model = ScriptedModel([lambda messages, tools: 42])
    with pytest.raises(TypeError, match="ModelResponse or str"):
        await model.respond([], [])


@pytest.mark.anyio
async def test_function_model_decides_from_the_history() -> None:
    def reply(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ModelResponse | str:
        if messages[-1]["role"] == "user":
            return tool_call("list_sources")
        return f"Found {messages[-1]['content']}."

    model = FunctionModel(reply)
    assert isinstance(model, ChatModel)
    first = await model.respond([{"role": "user", "content": "list"}], TOOLS)
    assert first.tool_calls[0].name == "list_sources" and first.tool_calls[0].id == "call_1_0"
    sink = Sink()
    second = await model.respond([{"role": "user", "content": "list"}, {"role": "tool", "content": "nothing"}],
                                 TOOLS, on_text=sink)
    assert second.text == "Found nothing." and "".join(sink.chunks) == "Found nothing."
    assert len(model.calls) == 2 and model.calls[1].tools == TOOLS


@pytest.mark.anyio
async def test_function_model_accepts_async_functions() -> None:
    async def reply(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
        return f"{len(messages)} messages"

    model = FunctionModel(reply, name="counting")
    assert model.name == "counting"
    assert (await model.respond([{"role": "user", "content": "x"}], [])).text == "1 messages"
