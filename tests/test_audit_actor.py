"""The audit log names the caller of the current context (`concierge.registry.acting_as`, a
ContextVar owned by the registry), else the registry's own actor; concurrent tasks never see
each other's caller."""

from __future__ import annotations

import anyio
import pytest

from concierge.registry import Registry, acting_as

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("engine")]


async def test_each_task_is_audited_as_its_own_caller(registry: Registry):
    registry.actor = "cli"
    registry.create_sandbox("mine")
    gate = anyio.Event()

    async def as_caller(name: str, sandbox: str) -> None:
        with acting_as(name):
            await gate.wait()  # both are inside their context before either writes
            registry.create_sandbox(sandbox)

    async with anyio.create_task_group() as tg:
        tg.start_soon(as_caller, "key_alice", "alice")
        tg.start_soon(as_caller, "key_bob", "bob")
        await anyio.sleep(0.01)
        gate.set()
    registry.create_sandbox("after")
    actors = {e.after["name"]: e.actor for e in registry.audit(limit=10) if e.action == "sandbox.create"}
    assert actors == {"mine": "cli", "alice": "key_alice", "bob": "key_bob", "after": "cli"}


def test_acting_as_none_means_the_registry_itself(registry: Registry):
    with acting_as("key_x"), acting_as(None):
        registry.create_sandbox("inner")
    assert registry.audit(limit=1)[0].actor == "local"
    assert type(registry) is Registry  # the class is never swapped
