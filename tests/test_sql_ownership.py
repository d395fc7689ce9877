"""SQL lives in the repositories, and each layer's repositories touch only the tables that
layer's migration sets (or the layers below it) create.

- the store (``concierge/store``: the engines, the migration sets, the async row modules) and
  the repositories (modules named ``*_rows.py``: ``concierge/registry/source_rows.py``,
  ``concierge/server/key_rows.py``, …) are the only modules with SQL in them, besides the sync
  facade ``concierge/registry/store.py`` and its generic insert/update;
- a registry repository names only tables of the ``store`` and ``registry`` sets; a server
  repository those and the ``http`` set's;
- no table is created by two sets.

A statement is a string constant (or an f-string's text) that starts like SQL: ``SELECT``,
``INSERT INTO``, ``UPDATE t SET``, ``DELETE FROM``, ``CREATE``/``ALTER``/``DROP TABLE|INDEX``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import concierge
from concierge.store._migrate import MigrationSet, render
from concierge.store.schema import HTTP, REGISTRY, STORE

PACKAGE = Path(concierge.__file__).resolve().parent
STATEMENT = re.compile(r"^\s*(SELECT\b|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|PRAGMA\s+\w+"
                       r"|(CREATE|ALTER|DROP)\s+(UNIQUE\s+)?(TABLE|INDEX)\b)")
TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+([a-z_]+)\b")
CREATED = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_]+)")
FACADE = PACKAGE / "registry" / "store.py"


def statements(source: str) -> list[tuple[int, str]]:
    """(line, text) of every SQL statement written in ``source``; an f-string's replacement
    fields read as ``{}``."""
    found = []
    parts_of_fstrings = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            parts_of_fstrings.update(id(v) for v in node.values)
            if STATEMENT.match(text):
                found.append((node.lineno, text))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts_of_fstrings
                and STATEMENT.match(node.value)):
            found.append((node.lineno, node.value))
    return sorted(found)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _is_store(path: Path) -> bool:
    return PACKAGE / "store" in path.parents


def _is_repository(path: Path) -> bool:
    return path.name.endswith("_rows.py") and not _is_store(path)


def _tables(*sets: MigrationSet) -> set[str]:
    out = set()
    for s in sets:
        for m in s.migrations:
            for statement in render(m.sql, "sqlite"):
                out.update(CREATED.findall(statement))
    return out


def test_the_scanner_finds_statements_and_leaves_prose_alone():
    source = '''
x = "SELECT * FROM sources WHERE id = ?"
y = ("UPDATE sources SET status = ?"
     " WHERE id = ?")
z = f"DELETE FROM {table} WHERE source_id = ?"
w = f"INSERT INTO audit ({cols}) VALUES ({marks})"
v = "  CREATE UNIQUE INDEX a ON b (c)"
prose = "Update the source, then select a sandbox"
doc = """SELECT is a word a docstring may start with""" if False else ""
fragment = " AND status = ?"
'''
    found = [text for _, text in statements(source)]
    assert found == ["SELECT * FROM sources WHERE id = ?", "UPDATE sources SET status = ? WHERE id = ?",
                     "DELETE FROM {} WHERE source_id = ?", "INSERT INTO audit ({}) VALUES ({})",
                     "  CREATE UNIQUE INDEX a ON b (c)", "SELECT is a word a docstring may start with"]


def test_sql_is_written_only_in_the_store_and_the_repositories():
    outside = []
    for path in _modules():
        if _is_store(path) or _is_repository(path):
            continue
        for line, text in statements(path.read_text(encoding="utf-8")):
            if path == FACADE and text.startswith(("INSERT INTO {}", "UPDATE {} SET", "SELECT", "PRAGMA")):
                continue  # the facade's generic row writes, its connection settings, its list of words that return rows
            outside.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text[:80]}")
    assert outside == [], "SQL outside the repositories (move it into a *_rows.py module):\n" + "\n".join(outside)


def test_the_repositories_exist_where_the_readme_names_them():
    repositories = {str(p.relative_to(PACKAGE.parent)) for p in _modules() if _is_repository(p)}
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    for name in repositories - {"concierge/registry/catalog_rows.py"}:  # (the catalog's: issue #13)
        assert Path(name).name in readme, f"{name} is not named in the README's architecture section"
    assert {"concierge/registry/source_rows.py", "concierge/registry/vault_rows.py",
            "concierge/server/key_rows.py", "concierge/server/conversation_rows.py"} <= repositories


def test_each_layer_s_repositories_touch_only_its_tables_and_those_below():
    below_registry = _tables(STORE, REGISTRY)
    below_server = below_registry | _tables(HTTP)
    allowed = {"registry": below_registry, "server": below_server}
    wrong = []
    for path in _modules():
        if not _is_repository(path):
            continue
        layer = path.parent.name
        assert layer in allowed, f"{path}: a repository outside the registry and the server"
        for line, text in statements(path.read_text(encoding="utf-8")):
            for table in set(TABLE.findall(text)) - allowed[layer]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: table {table} is not the {layer}'s "
                             "or a lower layer's")
    assert wrong == []


def test_no_table_is_created_by_two_migration_sets():
    sets = (STORE, REGISTRY, HTTP)
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            assert _tables(a) & _tables(b) == set(), (a.component, b.component)
    assert {"api_keys", "concierge_sessions", "concierge_events"} <= _tables(HTTP)
    assert not {"api_keys", "concierge_sessions", "concierge_events"} & _tables(REGISTRY)
