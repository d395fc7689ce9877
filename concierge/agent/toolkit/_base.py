"""What a tool is: `Tool`, `Toolkit`, the `ToolContext` it runs in, and argument parsing."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from concierge.agent.secrets import MASK, SecretStore, normalize_ref
from concierge.backend import Backend
from concierge.errors import ToolArgumentError
from concierge.registry import validation as rules

__all__ = [
    "READ",
    "SecretNeed",
    "Tool",
    "ToolArgumentError",
    "ToolContext",
    "Toolkit",
    "WRITE",
    "mask_arguments",
]

READ: Literal["read"] = "read"
WRITE: Literal["write"] = "write"

_APPROVAL_WORDS = {"confirmed", "confirm", "approved", "approve", "yes", "force",
                   "skip_confirmation", "no_confirm", "auto_approve", "user_approved"}
_SECRET_KEYS = {"token", "password", "secret", "api_key", "apikey", "credential", "authorization"}


@dataclass
class ToolContext:
    """What a tool may use: the backend, the session's sandbox and its secret store.

    ``sandbox`` is the session's current sandbox; a tool that switches sandboxes sets it and
    the engine carries the new value over to the session.
    """

    backend: Backend
    secrets: SecretStore
    sandbox: str | None = None

    def secret(self, ref: str | None) -> str | None:
        """The credential behind a reference, or None when it is unknown."""
        if not ref:
            return None
        key = normalize_ref(ref)
        return self.secrets.get(key) if key else None


@dataclass(frozen=True)
class SecretNeed:
    """A credential the person must give (hidden input) before a write can be confirmed."""

    field: str
    purpose: str


Prepared = Any
RunFn = Callable[[ToolContext, Any, Prepared], Awaitable[Any]]
PrepareFn = Callable[[ToolContext, Any], Awaitable[Prepared]]


@dataclass(frozen=True)
class Tool:
    """One model-facing tool.

    ``run`` returns a `concierge.agent.toolkit.results` model (or a JSON-able value);
    ``prepare`` (writes) resolves the target and asks the registry's own rules whether the
    call would be accepted, so nobody is asked to confirm what would be refused.
    """

    name: str
    description: str
    args: type[BaseModel]
    kind: Literal["read", "write"]
    run: RunFn
    prepare: PrepareFn | None = None
    summary: Callable[[Any, Prepared], str] | None = None
    needs_secret: Callable[[ToolContext, Any, Prepared], SecretNeed | None] | None = None
    progress: str | None = None
    """A short line a surface may show while the tool runs (health checks, catalog resolution)."""

    @property
    def is_write(self) -> bool:
        return self.kind == WRITE

    def definition(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": _parameters(self.args)}}

    def parse(self, raw: dict[str, Any]) -> BaseModel:
        """Validate the model's arguments; a clear `ToolArgumentError` otherwise."""
        if not isinstance(raw, dict):
            raise ToolArgumentError("arguments must be a JSON object")
        approval = sorted(k for k in raw if k.lower() in _APPROVAL_WORDS)
        if approval:
            raise ToolArgumentError(
                f"unknown argument {approval[0]!r}: only the person can approve a change, "
                "by answering the confirmation; no argument can skip it")
        secretish = sorted(k for k in raw if k.lower() in _SECRET_KEYS)
        if secretish:
            raise ToolArgumentError(
                f"unknown argument {secretish[0]!r}: credentials are never passed directly; "
                "leave token_ref out and the person will be asked for it privately")
        try:
            return self.args.model_validate(raw)
        except ValidationError as exc:
            raise ToolArgumentError(rules.from_pydantic(exc).detail) from None


@functools.lru_cache(maxsize=64)
def _parameters_cached(args: type[BaseModel]) -> str:
    return json.dumps(_clean_schema(args.model_json_schema()))


def _parameters(args: type[BaseModel]) -> dict[str, Any]:
    """The argument model's schema (built once per model; each caller gets its own copy)."""
    schema: dict[str, Any] = json.loads(_parameters_cached(args))
    return schema


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's JSON schema trimmed for models: no titles, no null branches, no None defaults."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: walk(v) for k, v in node.items() if k != "title"}
            if "anyOf" in node:
                branches = [b for b in node["anyOf"] if b != {"type": "null"}]
                if len(branches) == 1:
                    rest = {k: v for k, v in node.items() if k != "anyOf"}
                    node = {**branches[0], **rest}
            if node.get("default", 0) is None:
                node.pop("default")
            return node
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    out: dict[str, Any] = walk(schema)
    out.setdefault("properties", {})
    out["additionalProperties"] = False
    return out


def mask_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments safe to show: references stay (they are not secrets), secret-named keys masked."""
    return {k: (MASK if k.lower() in _SECRET_KEYS and v else v) for k, v in arguments.items()}


class Toolkit:
    """The tools by name, in a fixed order."""

    def __init__(self, tools: list[Tool]) -> None:
        self.tools = {t.name: t for t in tools}
        self._definitions: list[dict[str, Any]] | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools.values())

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def definitions(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` list (built once; treat it as read-only)."""
        if self._definitions is None:
            self._definitions = [t.definition() for t in self.tools.values()]
        return self._definitions

    @property
    def writes(self) -> set[str]:
        return {t.name for t in self.tools.values() if t.is_write}
