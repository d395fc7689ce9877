"""The concierge's tools: what the model may ask for, mapped onto the `Backend`.

Each `Tool` has a pydantic argument model (turned into an OpenAI function schema), a kind
(``read`` runs at once; ``write`` never runs without the person's yes, enforced by the
engine), and for writes a ``prepare`` step (resolve the target and ask the registry's own
rules, so nobody is asked to confirm something that would be refused), a plain-language
``summary`` for the confirmation and ``needs_secret`` (a credential the person must give out
of band). Results are typed models (`concierge.agent.toolkit.results`).

Credentials only travel by reference: ``token_ref`` holds ``sec_…`` and is resolved through
the session's `SecretStore` at the moment the backend is called.

Modules: ``_base`` (Tool, Toolkit, context), ``args`` (argument models), ``results`` (result
models), ``_sources`` / ``_agents`` / ``_sandboxes`` (the tools), ``_tools`` (the toolkit),
``_definitions`` (``tools/`` on disk). ``python -m concierge.agent.toolkit --write``
regenerates ``tools/<name>.json``; a test keeps those files in step with this package.
Names are loaded on first use (`concierge._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.agent.toolkit._base import (
        READ,
        WRITE,
        SecretNeed,
        Tool,
        ToolArgumentError,
        ToolContext,
        Toolkit,
        mask_arguments,
    )
    from concierge.agent.toolkit._definitions import main, write_definitions
    from concierge.agent.toolkit._sources import delete_command, health_hint, resolve_source
    from concierge.agent.toolkit._tools import default_toolkit
    from concierge.agent.toolkit.results import ToolError, ToolResult, parse_result

__all__ = [
    "READ",
    "SecretNeed",
    "Tool",
    "ToolArgumentError",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "Toolkit",
    "WRITE",
    "default_toolkit",
    "delete_command",
    "health_hint",
    "main",
    "mask_arguments",
    "parse_result",
    "resolve_source",
    "write_definitions",
]

_EXPORTS = {
    "READ": "_base", "SecretNeed": "_base", "Tool": "_base", "ToolArgumentError": "_base",
    "ToolContext": "_base", "Toolkit": "_base", "WRITE": "_base", "mask_arguments": "_base",
    "main": "_definitions", "write_definitions": "_definitions",
    "delete_command": "_sources", "health_hint": "_sources", "resolve_source": "_sources",
    "default_toolkit": "_tools",
    "ToolError": "results", "ToolResult": "results", "parse_result": "results",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
