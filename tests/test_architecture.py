"""The structure stays as the README's "Architecture" draws it.

- import-linter: the layers contract in pyproject.toml (dependencies point down), the HTTP
  client free of the server, store, vault and MCP SDK, and service -> webhooks one way;
- mypy: 0 errors on the whole package, and ``--strict`` on the registry and the engine;
- every package ``__init__`` re-exports lazily, in one shape (`concierge._lazy`);
- what a command actually imports: ``--help`` and ``source list`` load no mcp SDK, openai,
  Starlette or engine; the remote client loads no server, store or vault.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import concierge

ROOT = Path(concierge.__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STRICT = ["concierge/registry", "concierge/agent/session.py", "concierge/agent/events.py",
          "concierge/agent/toolkit"]
"""Type-checked with ``mypy --strict`` (the rest at mypy's default level)."""


def _run(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.timeout(300)  # a cold mypy run on a busy 2-core machine
def test_import_linter_contracts_hold_and_mypy_finds_nothing():
    # The three checks run side by side (mypy's cold run is the slow part). Each mypy run has a
    # cache of its own: two runs writing one cache at once crashed mypy ("INTERNAL ERROR") on a
    # fresh checkout.
    jobs = {
        "lint-imports": _run([str(BIN / "lint-imports"), "--no-cache"]),
        "mypy": _run([sys.executable, "-m", "mypy", "--cache-dir", ".mypy_cache/default"]),
        "mypy --strict": _run([sys.executable, "-m", "mypy", "--strict", "--no-warn-unused-configs",
                               "--cache-dir", ".mypy_cache/strict", *STRICT]),
    }
    failures = []
    for name, job in jobs.items():
        out, _ = job.communicate(timeout=280)
        if job.returncode != 0:
            failures.append(f"$ {name}\n{out[-4000:]}")
    assert not failures, "\n\n".join(failures)


def _packages() -> list[Path]:
    return sorted(p for p in (ROOT / "concierge").rglob("__init__.py") if p.parent != ROOT / "concierge")


@pytest.mark.parametrize("path", _packages(), ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_every_package_init_exports_lazily_in_one_shape(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    runtime_imports = []
    for node in tree.body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` holds the imports type checkers see
            assert isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            runtime_imports.append(ast.unparse(node))
    assert runtime_imports == ["from __future__ import annotations", "from typing import TYPE_CHECKING",
                               "from concierge._lazy import lazy_exports"]
    assert "__getattr__, __dir__ = lazy_exports(__name__, " in path.read_text(encoding="utf-8")
    name = ".".join(path.parent.relative_to(ROOT).parts)
    module = importlib.import_module(name)
    assert list(module.__all__) == sorted(module.__all__)
    for export in module.__all__:
        assert getattr(module, export) is not None


def _modules_after(code: str, home: Path) -> set[str]:
    """The modules loaded by ``code`` in a fresh interpreter."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "", "CONCIERGE_MASTER_KEY": "00" * 32, "CONCIERGE_HOME": str(home),
                               "XDG_CONFIG_HOME": str(home / "config")})
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


HEAVY = ("mcp", "mcp_types", "openai", "starlette", "uvicorn", "prompt_toolkit", "tiktoken")


def _loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in prefixes or m.startswith(prefixes))


def test_help_and_source_list_load_no_sdk_and_no_engine(tmp_path: Path):
    helped = _modules_after("from concierge.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
                            tmp_path)
    assert _loaded(helped, HEAVY) == []
    assert _loaded(helped, ("concierge.agent.session", "concierge.backend", "concierge.registry.service")) == []
    listed = _modules_after("from concierge.cli import main\nmain(['source', 'list'])", tmp_path)
    assert _loaded(listed, HEAVY + ("concierge.agent.session", "concierge.server", "concierge.registry.catalog")) == []


def test_the_http_client_loads_no_server_store_vault_or_sdk(tmp_path: Path):
    loaded = _modules_after("import concierge.remote", tmp_path)
    assert _loaded(loaded, HEAVY + ("cryptography", "concierge.server", "concierge.registry.store",
                                    "concierge.registry.vault", "concierge.registry.service")) == []
