"""Imports inside ``zoo/`` flow one way (issue 11): the graph of every import statement is acyclic.

The graph is read statically from the sources (``ast``), with the imports inside functions included: a deferred
import hides a cycle from a test that imports each module in a fresh interpreter (the registry importing
``zoo.models`` on lookup while every family's config imports the registry was such a cycle), and reading the
files costs milliseconds where 60 fresh interpreters cost a minute. A package's ``__init__`` importing its own
submodules (re-exports, e.g. ``zoo.create_model``) is not an edge: a submodule may import the package's leaves
through it. Dynamic imports (``importlib.import_module(f"zoo.models.{family}.pt")``) are not in the graph.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def zoo_modules() -> dict:
    """{dotted module name: path} of every module under zoo/ (a package by its own name)."""
    out = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "zoo")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def imports_of(name: str, path: str, modules: dict) -> set:
    """The zoo modules ``name`` imports anywhere in its file (``from pkg import sub`` imports ``pkg.sub``)."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    found = {m for m in found if m in modules and m != name}
    if path.endswith("__init__.py"):  # re-exports of the package's own submodules
        found = {m for m in found if not m.startswith(name + ".")}
    return found


def import_graph() -> dict:
    modules = zoo_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict):
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state, stack = {}, []

    def visit(v):
        state[v] = "open"
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == "open":
                return stack[stack.index(w):] + [w]
            if w not in state:
                cycle = visit(w)
                if cycle:
                    return cycle
        state[v] = "done"
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state:
            cycle = visit(v)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_reader_sees_deferred_and_relative_imports(tmp_path):
    pkg = tmp_path / "zoo" / "x"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("def f():\n    from zoo.x import b\n    from .b import g\n")
    (pkg / "b.py").write_text("")
    modules = {"zoo.x": str(pkg / "__init__.py"), "zoo.x.a": str(pkg / "a.py"), "zoo.x.b": str(pkg / "b.py")}
    assert imports_of("zoo.x.a", modules["zoo.x.a"], modules) == {"zoo.x.b"}
    assert imports_of("zoo.x", modules["zoo.x"], modules) == set()  # a re-export


def test_no_import_cycle_in_zoo():
    graph = import_graph()
    assert len(graph) > 50 and "zoo.models.van.ms" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_leaves():
    """The registry (read by every family's config), the trainer's shared module and the command lines' shared
    module import (nearly) nothing of the zoo's."""
    graph = import_graph()
    allowed = {"zoo.errors": set(), "zoo.registry": {"zoo.errors"}, "zoo.train.common": {"zoo.errors"},
               "zoo.cli_common": {"zoo.errors", "zoo.train.common"}}
    assert {leaf: graph[leaf] for leaf in allowed if not graph[leaf] <= allowed[leaf]} == {}
