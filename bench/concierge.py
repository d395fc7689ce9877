"""Numbers for the concierge engine (prints them; not a pass/fail test).

    .venv/bin/python bench/concierge.py [--turns 200]

1. Tokens the model is sent before any conversation: the system prompt plus the tool
   definitions (tiktoken, the same counter the context budget uses).
2. The engine's own time per turn, without the model: a ScriptedModel answers instantly and
   the time spent inside it is subtracted; median and p90 over many turns, for a text-only
   turn and for a turn with one read tool call against a real LocalBackend.
3. Model calls a registration takes when the first message already holds everything, with
   the offline planner, against a real MCP server on loopback.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from concierge.agent.budget import TokenCounter  # noqa: E402
from concierge.agent.models import OfflinePlanner, ScriptedModel, tool_call  # noqa: E402
from concierge.agent.prompts import system_prompt  # noqa: E402
from concierge.agent.session import ConciergeSession  # noqa: E402
from concierge.agent.toolkit import default_toolkit  # noqa: E402
from concierge.backend import LocalBackend  # noqa: E402


class Timed:
    """Wraps a model and adds up the time spent inside it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = model.name
        self.inside = 0.0
        self.calls = 0

    async def respond(self, messages: Any, tools: Any, *, on_text: Any = None) -> Any:
        start = time.perf_counter()
        try:
            return await self.model.respond(messages, tools, on_text=on_text)
        finally:
            self.inside += time.perf_counter() - start
            self.calls += 1


def tokens() -> None:
    counter = TokenCounter()
    system = counter.count_message({"role": "system", "content": system_prompt()})
    tools = counter.count_tools(default_toolkit().definitions())
    print(f"system prompt + tool definitions: {system + tools} tokens "
          f"(system {system}, {len(default_toolkit().tools)} tools {tools}; encoding {counter.encoding_name})")


async def engine_time(turns: int) -> None:
    backend = LocalBackend.open()
    try:
        for label, steps in (("text-only turn", lambda: ["Hello."]),
                             ("turn with one read tool", lambda: [tool_call("list_sources"), "None yet."])):
            model = Timed(ScriptedModel([]))
            session = ConciergeSession(backend, model)
            samples = []
            for i in range(turns):
                model.model.enqueue(*steps())
                if i % 20 == 0:
                    session.reset()  # keep the history short: measure the turn, not the growth
                inside_before = model.inside
                start = time.perf_counter()
                async for _ in session.send("hello"):
                    pass
                elapsed = time.perf_counter() - start - (model.inside - inside_before)
                samples.append(elapsed * 1000)
            samples.sort()
            p90 = samples[int(len(samples) * 0.9) - 1]
            print(f"engine time per {label} (model excluded): median {statistics.median(samples):.2f} ms, "
                  f"p90 {p90:.2f} ms over {turns} turns")
    finally:
        await backend.aclose()


def _serve_demo() -> tuple[str, Any]:
    import socket

    import uvicorn

    from concierge.demo_server import build_demo_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_demo_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}/mcp", (server, thread)


async def registration_calls(url: str) -> None:
    backend = LocalBackend.open()
    try:
        model = Timed(OfflinePlanner())
        session = ConciergeSession(backend, model)
        text = f"Register {url} with no auth and call it Demo"
        async for _ in session.send(text):
            pass
        confirmations = 0
        while session.pending is not None:
            confirmations += 1
            session.confirm(session.pending["id"], True)
            async for _ in session.resume():
                pass
        status = (await backend.list_sources())[0].status.value
        print(f'registration from one complete message ("{text[:40]}…"): {model.calls} model calls, '
              f"{confirmations} confirmation, source {status}")
    finally:
        await backend.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["CONCIERGE_HOME"] = home
        tokens()
        anyio.run(engine_time, args.turns)
        url, (server, thread) = _serve_demo()
        try:
            anyio.run(registration_calls, url)
        finally:
            server.should_exit = True
            thread.join(5)


if __name__ == "__main__":
    main()
