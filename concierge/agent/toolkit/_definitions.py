"""``tools/<name>.json``: the model-facing definitions on disk, regenerated from the code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from concierge.agent.toolkit._base import Toolkit

__all__ = ["main", "write_definitions"]


def write_definitions(directory: Path, toolkit: Toolkit | None = None) -> list[Path]:
    """Write ``<directory>/<name>.json`` for each tool and remove stale ones."""
    from concierge.agent.toolkit._tools import default_toolkit

    toolkit = toolkit or default_toolkit()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for tool in toolkit:
        path = directory / f"{tool.name}.json"
        data = tool.definition() | {"x-concierge": {"kind": tool.kind}}
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    for stale in directory.glob("*.json"):
        if stale not in written:
            stale.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    from concierge.agent.toolkit._tools import default_toolkit

    parser = argparse.ArgumentParser(prog="python -m concierge.agent.toolkit",
                                     description="Print or regenerate the tool definitions (tools/).")
    parser.add_argument("--write", action="store_true", help="regenerate tools/<name>.json")
    parser.add_argument("--dir", type=Path, help="target directory (default: the tools/ folder)")
    args = parser.parse_args(argv)
    if args.write:
        from concierge.agent.prompts import tools_dir

        for path in write_definitions(args.dir or tools_dir()):
            print(path)
        return 0
    json.dump(default_toolkit().definitions(), sys.stdout, indent=2)
    print()
    return 0
