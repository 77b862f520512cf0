"""The layering the design promises, read from the source: the core (index, model, engine, the
controller, the rules and the console API) imports neither Qt nor napari, ``_napari`` never
imports the widgets in ``_qt``, and no two modules of ours import each other, even lazily."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import napari_learn_complete

PACKAGE = Path(napari_learn_complete.__file__).parent
NAME = PACKAGE.name
CORE = ("index", "model", "engine", "session", "actions", "api", "errors", "sample", "_lazy")
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui",
       "app_model", "vispy")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, *, lazy: bool = True) -> set[str]:
    """The modules ``name`` imports: everywhere in its code (lazy imports in functions
    included), or with ``lazy`` False only the statements that run when it is imported."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # "from . import errors" names a module
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    return found


def test_the_core_imports_neither_qt_nor_napari() -> None:
    """(The console API imports napari inside the functions that are given a viewer.)"""
    core = [m for m in MODULES if m.split(".")[1:2] and m.split(".")[1] in CORE]
    assert len(core) > 20
    leaks = {m: sorted(i for i in _imports(m, lazy=False) if i.split(".")[0] in GUI)
             for m in core}
    assert {m: i for m, i in leaks.items() if i} == {}


def test_napari_glue_does_not_import_the_widgets() -> None:
    glue = [m for m in MODULES if m.startswith(f"{NAME}._napari")]
    assert {m: sorted(i for i in _imports(m) if i.startswith(f"{NAME}._qt"))
            for m in glue if any(i.startswith(f"{NAME}._qt") for i in _imports(m))} == {}


def test_no_import_cycles() -> None:
    graph = {m: {i for i in _imports(m) if i in MODULES and i != m} for m in MODULES}
    for package in [m for m in MODULES if MODULES[m].name == "__init__.py"]:
        for m in graph:  # a module importing a package's submodule runs the package first
            if m.startswith(f"{package}.") and package in graph[m]:
                graph[m].discard(package)
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|PRAGMA|CREATE|ALTER|DROP|WITH)\s")


def test_only_the_index_speaks_sql() -> None:
    """The store and its table modules own the database: no SQL string and no use of its
    connection (``query``, ``_conn``, ``_write``) anywhere else."""
    found = {}
    for name, path in MODULES.items():
        if name.startswith(f"{NAME}.index"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hits = [node.lineno for node in ast.walk(tree)
                if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and SQL.match(node.value))
                or (isinstance(node, ast.Attribute) and node.attr in ("query", "_conn", "_write")
                    and re.search("index|idx", ast.unparse(node.value)))]
        if hits:
            found[name] = hits
    assert found == {}
