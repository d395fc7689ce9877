"""Who the audit log names: the registry's own actor, or the caller of the current task.

`acting_as` sets the actor for the current context (an HTTP request's task, a chat run):
every audit record written from there on, by any registry, names that caller. A
ContextVar, so concurrent requests (one awaiting a health check while another writes) are
each audited under their own caller, and a request never leaks its actor to another task.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["acting_as", "current_actor"]

_ACTOR: contextvars.ContextVar[str | None] = contextvars.ContextVar("concierge_audit_actor",
                                                                     default=None)


def current_actor(default: str) -> str:
    """The actor set for this context, else ``default`` (the registry's own)."""
    return _ACTOR.get() or default


@contextmanager
def acting_as(actor: str | None) -> Iterator[None]:
    """Audit what runs inside as ``actor`` (``None``: the registry's own actor)."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)
