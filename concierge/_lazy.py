"""The one way a Concierge package ``__init__`` re-exports names: lazily.

Every package's ``__init__`` imports nothing at run time. It lists its public names in a
sorted ``__all__``, maps each to the submodule that defines it, imports them under
``TYPE_CHECKING`` for type checkers, and ends with::

    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

So ``import concierge.registry.models`` does not import the store, the vault or the mcp SDK,
and ``concierge --help`` does not pay for the mcp SDK, openai or Starlette. A test keeps every
``__init__`` in this shape.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str],
                 public: Sequence[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a name to the
    submodule (relative to ``package``) that defines it."""
    missing = sorted(set(public) ^ set(exports))
    if missing:
        raise RuntimeError(f"{package}: __all__ and the export table differ on {missing}")

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        # Cache it on the package, so the next lookup is a plain attribute.
        importlib.import_module(package).__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(public)

    return __getattr__, __dir__
