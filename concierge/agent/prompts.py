"""Finding the model-facing files: ``prompts/`` (prose) and ``tools/`` (tool definitions).

Looked up in this order, first hit wins:

1. ``concierge/_data/{prompts,tools}`` inside the installed package (the wheel force-includes
   the top-level folders there, see ``pyproject.toml``);
2. ``prompts/`` and ``tools/`` at the root of a source checkout (next to ``concierge/``).
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["data_dir", "load_prompt", "prompts_dir", "system_prompt", "tools_dir"]

_PACKAGE = Path(__file__).resolve().parent.parent  # .../concierge


def data_dir(kind: str) -> Path:
    """The directory holding ``kind`` (``"prompts"`` or ``"tools"``)."""
    if kind not in ("prompts", "tools"):
        raise ValueError(f"unknown data kind {kind!r}")
    candidates = [_PACKAGE / "_data" / kind, _PACKAGE.parent / kind]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        f"cannot find the concierge {kind}/ folder (looked in: "
        + ", ".join(str(p) for p in candidates) + "); reinstall the package")


def prompts_dir() -> Path:
    return data_dir("prompts")


def tools_dir() -> Path:
    return data_dir("tools")


@functools.lru_cache(maxsize=16)
def _read(path: str, mtime: float) -> str:
    return Path(path).read_text(encoding="utf-8")


def load_prompt(name: str) -> str:
    """The text of ``prompts/<name>.md`` (re-read when the file changes)."""
    path = prompts_dir() / f"{name}.md"
    return _read(str(path), path.stat().st_mtime).strip() + "\n"


def system_prompt() -> str:
    """The concierge's system prompt (``prompts/system.md``)."""
    return load_prompt("system")
