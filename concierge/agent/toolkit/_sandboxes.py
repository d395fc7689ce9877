"""The sandbox tools: list them, switch the conversation to another, create one."""

from __future__ import annotations

from typing import Any

from concierge.agent.toolkit._base import ToolContext
from concierge.agent.toolkit._sources import sandbox_of
from concierge.agent.toolkit.args import CreateSandboxArgs, NoArgs, SwitchSandboxArgs
from concierge.agent.toolkit.results import SandboxCreated, SandboxList, SandboxRow, SandboxSwitch

__all__ = ["create_sandbox", "list_sandboxes", "summary_create_sandbox", "switch_sandbox"]


async def list_sandboxes(ctx: ToolContext, args: NoArgs, _: Any) -> SandboxList:
    return SandboxList(sandboxes=[SandboxRow(id=s.id, name=s.name) for s in await ctx.backend.list_sandboxes()],
                       current=ctx.sandbox or "default")


async def switch_sandbox(ctx: ToolContext, args: SwitchSandboxArgs, _: Any) -> SandboxSwitch:
    """Only the conversation's current sandbox changes (nothing in the registry): a read."""
    sb = await ctx.backend.get_sandbox(args.sandbox)
    previous = sandbox_of(ctx, None)
    ctx.sandbox = sb.name
    return SandboxSwitch(sandbox=sb.name, sandbox_id=sb.id, previous=previous)


def summary_create_sandbox(args: CreateSandboxArgs, prep: Any) -> str:
    return (f'Create the sandbox "{args.name}": an empty workspace with its own sources and '
            "agents. The conversation stays in the current sandbox.")


async def create_sandbox(ctx: ToolContext, args: CreateSandboxArgs, _: Any) -> SandboxCreated:
    sb = await ctx.backend.create_sandbox(args.name)
    return SandboxCreated(id=sb.id, name=sb.name)
