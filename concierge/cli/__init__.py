"""The ``concierge`` command (`concierge.cli.main`).

Modules: ``main`` (the parser, global options, settings, dispatch), one module per command
group (``registry_cmds``, ``catalog_cmds``, ``chat_cmds``, ``server_cmds``) and ``output``.
Names are loaded on first use (`concierge._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.cli.main import build_parser, main, open_backend

__all__ = ["build_parser", "main", "open_backend"]

_EXPORTS = {"build_parser": "main", "main": "main", "open_backend": "main"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
