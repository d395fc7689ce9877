"""The HTTP service: the reference REST API, the concierge over SSE, webhooks, the MCP gateway
mount and the embeddable widget. Start it with ``concierge serve``; build it with `build_app`.

Names are imported lazily so that `concierge.remote` can use `concierge.server.errors` without
loading the whole service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concierge.server.app import build_app
    from concierge.server.auth import ApiKey, CreatedKey, KeyStore, Principal, Role

__all__ = ["ApiKey", "CreatedKey", "KeyStore", "Principal", "Role", "build_app"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from concierge.server.app import build_app

        return build_app
    if name in ("ApiKey", "CreatedKey", "KeyStore", "Principal", "Role"):
        from concierge.server import auth

        return getattr(auth, name)
    raise AttributeError(f"module 'concierge.server' has no attribute {name!r}")
