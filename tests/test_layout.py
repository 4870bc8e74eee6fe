"""The architecture rules of the design's Layout section, checked on the source:

- dependencies flow one way, ``data`` <- ``seq2seq`` <- ``captioning`` <- ``seqcap``: nothing in
  ``seq2seq`` imports ``captioning`` or ``seqcap``, nothing in ``data`` imports any of the three;
- inside ``data``, core <- prepared <- datamodules, and core <- builders: nothing imports "up";
- no import cycle among the project's modules;
- no source file over MAX_LINES lines.

Imports are read with ``ast`` from every .py file of the packages: at module level, inside
functions and classes, under ``if TYPE_CHECKING:`` alike (a cycle broken only by importing late
is still a cycle between the modules), relative ones resolved against their package. A
``from package import name`` counts as an import of ``package.name`` when that is a module.
Imports by string (``importlib.import_module``) are not seen. The last test checks the
``data`` rule at run time too: importing every data module loads no ``seq2seq``/``captioning``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [p for p in ("data", "seq2seq", "captioning", "seqcap") if (ROOT / p).is_dir()]
MAX_LINES = 450
# package -> the packages it must not import (the arrows of the layout, reversed)
FORBIDDEN = {
    "data": ("seq2seq", "captioning", "seqcap"),
    "seq2seq": ("captioning", "seqcap"),
    "captioning": ("seqcap",),
}

# data's parts -> the parts they may import (DESIGN: core; the memory-mapped path; the data modules
# over both; the corpus builders over core)
DATA_LAYERS = {
    "core": {"core"},
    "prepared": {"core", "prepared"},
    "datamodules": {"core", "prepared", "datamodules"},
    "builders": {"core", "builders"},
}
# scripts that drive a data module from above, though they live beside the part they measure
DATA_TOOLS = {"data.prepared.bench"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    """Every project module (dotted name) and its file."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) of every import statement in the file, anywhere in it; a name
    imported from a package counts as its submodule when there is one."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package `level - 1` above this module's
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in modules else target, node.lineno))
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    """module -> the project modules it imports; module -> all its imports (with lines)."""
    files = source_files()
    modules = set(files)
    every = {name: imports_of(name, path, modules) for name, path in files.items()}
    graph = {}
    for name, found in every.items():
        targets = set()
        for target, _ in found:
            while target and target not in modules:  # `import a.b.c` of a name inside a.b.c
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph, every


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def describe_cycle(component: list[str], graph: dict[str, set[str]]) -> str:
    """One component as its modules and the imports inside it (a -> b)."""
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return f"{', '.join(component)}  ({'; '.join(edges)})"


def test_the_packages_are_found():
    files = source_files()
    assert {"data", "seq2seq", "captioning"} <= set(PACKAGES)
    assert "data.core.vocab" in files and "seq2seq" in files


@pytest.mark.parametrize("package", sorted(FORBIDDEN.keys() & set(PACKAGES)))
def test_dependencies_flow_one_way(package):
    _, every = import_graph()
    files = source_files()
    bad = [
        f"{files[name].relative_to(ROOT)}:{line} imports {target}"
        for name, found in sorted(every.items())
        if name.split(".")[0] == package
        for target, line in found
        if target.split(".")[0] in FORBIDDEN[package]
    ]
    assert not bad, f"{package} must not import {', '.join(FORBIDDEN[package])}:\n" + "\n".join(bad)


def test_data_parts_import_only_downwards():
    graph, _ = import_graph()
    bad = []
    for name, targets in sorted(graph.items()):
        part = name.split(".")[1] if name.count(".") >= 1 and name.startswith("data.") else None
        if part is None or name in DATA_TOOLS:
            continue
        assert part in DATA_LAYERS, f"{name}: a part of data/ that DATA_LAYERS does not know"
        bad += [
            f"{name} -> {target}"
            for target in sorted(targets)
            if target.startswith("data.") and target.split(".")[1] not in DATA_LAYERS[part]
        ]
    assert not bad, (
        "data parts importing upwards (core <- prepared <- datamodules, core <- builders):\n" + "\n".join(bad)
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    """Every cycle of the whole tree is reported under the package(s) its modules are in."""
    graph, _ = import_graph()
    mine = [c for c in cycles(graph) if any(m.split(".")[0] == package for m in c)]
    assert not mine, (
        f"import cycles in {package} (function-level and TYPE_CHECKING imports count):\n"
        + "\n".join(describe_cycle(c, graph) for c in mine)
    )


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert describe_cycle(["e", "f"], graph) == "e, f  (e -> f; f -> e)"


def test_relative_and_from_imports_are_resolved(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text(
        "import data.core.vocab\nfrom . import sibling\nfrom ..core import vocab\n"
        "def f():\n    from data.prepared import parallel\n    from .x import y\n"
    )
    modules = {"data.core.vocab", "data.prepared.parallel", "data.datamodules.sibling"}
    found = [t for t, _ in imports_of("data.datamodules.mod", path, modules)]
    assert found == [
        "data.core.vocab", "data.datamodules.sibling", "data.core.vocab", "data.prepared.parallel",
        "data.datamodules.x",
    ]  # fmt: skip


@pytest.mark.parametrize("package", PACKAGES)
def test_no_file_is_too_long(package):
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / package).rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines (split them along a seam): {long}"


def test_importing_every_data_module_loads_no_task_package():
    """The data rule at run time: a fresh interpreter imports data and each of its modules and
    has no seq2seq/captioning/seqcap module loaded afterwards."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import data\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(data.__path__, 'data.'))\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('seq2seq', 'captioning', 'seqcap'))\n"
        "print(' '.join(names))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    imported = set(done.stdout.split())
    assert imported == {name for name in source_files() if name.startswith("data.")}, imported
