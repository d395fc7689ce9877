"""`Services`: everything a route handler may use, built once by `build_app`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concierge.backend import LocalBackend
    from concierge.registry import Registry
    from concierge.registry.webhooks import Webhooks
    from concierge.server.auth import KeyStore
    from concierge.server.chat import ChatService
    from concierge.server.signins import SignIns

__all__ = ["Services"]


@dataclass(frozen=True)
class Services:
    """The server's collaborators, each built before this (nothing is patched in later)."""

    backend: LocalBackend
    keys: KeyStore
    webhooks: Webhooks
    chat: ChatService
    allow_anonymous_loopback: bool = False
    anonymous_with_scoped_keys: bool = False
    """Serve anonymous loopback requests even while scoped keys exist (explicit opt-in)."""
    openapi: dict[str, Any] = field(default_factory=dict)
    sign_ins: SignIns | None = None
    """OAuth sign-ins waiting in this server (their callback route is public)."""

    @property
    def registry(self) -> Registry:
        return self.backend.registry
