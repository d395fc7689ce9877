"""The ``concierge`` command (`concierge.cli.main`).

Modules: ``app`` (the parser, global options, settings, dispatch), one module per command
group (``registry_cmds``, ``catalog_cmds``, ``chat_cmds``, ``server_cmds``) and ``output``.
The parser's module is ``app``, not ``main``: a submodule named like the function would
replace the function on the package once something imported the submodule.
Names are loaded on first use (`concierge._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.cli.app import build_parser, main, open_backend

__all__ = ["build_parser", "main", "open_backend"]

_EXPORTS = {"build_parser": "app", "main": "app", "open_backend": "app"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
