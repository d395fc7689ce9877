"""The HTTP service: the reference REST API, the concierge over SSE, webhooks, the MCP gateway
mount and the embeddable widget. Start it with ``concierge serve``; build it with `build_app`.

Names are loaded on first use (`concierge._lazy`): the package imports no Starlette until then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.server.app import build_app
    from concierge.server.auth import ApiKey, CreatedKey, KeyStore, Principal, Role
    from concierge.server.services import Services

__all__ = ["ApiKey", "CreatedKey", "KeyStore", "Principal", "Role", "Services", "build_app"]

_EXPORTS = {"ApiKey": "auth", "CreatedKey": "auth", "KeyStore": "auth", "Principal": "auth",
            "Role": "auth", "Services": "services", "build_app": "app"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
