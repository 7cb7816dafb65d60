"""The project's import structure, read from the source (ast; top-level and function-local imports):

1. no import cycle among the project's modules (s4c/, passes/ as s4c.passes, codegen/ as s4c.codegen);
2. the layering: each module belongs to one layer of LAYERS and imports only from its own layer and the
   layers MAY_IMPORT lists for it (lower layers never import upper ones).

Known violations are listed explicitly (KNOWN_CYCLE_EDGES) and the test also fails when one of them is
gone, so the list cannot go stale: delete the entry when the code no longer needs it.

An import of a module's own ancestor package (`from s4c.ops import register` in s4c/ops/nn.py, the
package's __init__ importing its submodules to fill a registry) is not an edge for the cycle check:
Python initialises a package before any of its submodules, so every submodule depends on its ancestors
anyway. Such an import must name what the package defines before importing its submodules. It still
counts for the layering.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# source folder -> the package it installs as (pyproject.toml's package-dir)
ROOTS = {"s4c": "s4c", "passes": "s4c.passes", "codegen": "s4c.codegen"}

# layer -> module prefixes (a module belongs to the layer of its longest matching prefix; "s4c" matches
# only the package's own __init__).
LAYERS: dict[str, tuple[str, ...]] = {
    "core": ("s4c", "s4c.errors", "s4c.gcpause"),
    # the IR, the op registry, and what works on IR alone: text form, verifier, reference evaluator, ranges
    "ir": ("s4c.ir", "s4c.ops", "s4c.text", "s4c.verify", "s4c.evaluate", "s4c.ranges",
           "s4c.quantization", "s4c.accuracy"),  # int8 math, calibration observers, accuracy metrics
    "frontend": ("s4c.frontend", "s4c.export_onnx"),
    # sparse formats and the weight analyses; OUTDIR's compressed weight store
    "sparse": ("s4c.sparse", "s4c.weight_store"),
    "isa": ("s4c.s4",),                 # the S4 ISA, machine description, interpreter, cycle model
    "targets": ("s4c.targets",),        # per-target cost models
    "passes": ("s4c.passes",),
    "codegen": ("s4c.codegen",),
    "driver": ("s4c.driver", "s4c.cli", "s4c.backend", "s4c.__main__", "s4c.inspect", "s4c.calibrate", "s4c.precision",
               "s4c.fusion_report", "s4c.layout_report", "s4c.check", "s4c.compare",
               "s4c.layer_plot", "s4c.sparsify"),
}
_MID = {"core", "ir"}
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "ir": {"core"},
    "frontend": _MID,
    "sparse": _MID,
    "isa": _MID,
    "targets": _MID | {"sparse", "isa"},
    "passes": _MID | {"frontend", "sparse", "isa", "targets"},
    "codegen": _MID | {"frontend", "sparse", "isa", "targets", "passes"},
    "driver": _MID | {"frontend", "sparse", "isa", "targets", "passes", "codegen"},
}

# Imports that close a cycle today, as (importer, imported); none today (codegen/s4's kernels and its
# orchestrator imported each other until issue 13 item 1 gave them a base module and a kernel registry).
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()
# Layering violations allowed for now, as (importer, imported); none today.
KNOWN_LAYER_EDGES: set[tuple[str, str]] = set()


def project_modules() -> dict[str, Path]:
    mods = {}
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join([package, *parts])] = path
    return mods


class Import:
    def __init__(self, importer: str, imported: str, line: int, local: bool):
        self.importer, self.imported, self.line, self.local = importer, imported, line, local

    def __repr__(self) -> str:
        where = "function-local " if self.local else ""
        return f"{self.importer}:{self.line} {where}import of {self.imported}"


def read_imports(mods: dict[str, Path]) -> list[Import]:
    """Every import of a project module, resolved to the module it loads: `from P import n` is P.n
    when that is a module, else P; relative imports are resolved; `import a.b.c` is a.b.c."""
    found = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        local: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                local.update(id(sub) for sub in ast.walk(node) if sub is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.append(Import(name, target, node.lineno, id(node) in local))
    return found


def layer_of(module: str) -> str | None:
    best: tuple[str, str] | None = None
    for layer, prefixes in LAYERS.items():
        for p in prefixes:
            hit = module == p or (p != "s4c" and module.startswith(p + "."))
            if hit and (best is None or len(p) > len(best[1])):
                best = (layer, p)
    return best[0] if best else None


def cycle_edges(mods: dict[str, Path], imports: list[Import]) -> set[tuple[str, str]]:
    """The import edges inside a strongly connected component (those are the edges on some cycle),
    ignoring imports of the importer's own ancestor packages."""
    adj: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        if not imp.importer.startswith(imp.imported + "."):
            adj[imp.importer].add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    component: dict[str, int] = {}

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(adj[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component[w] = index[v]
                if w == v:
                    break

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return {(a, b) for a in adj for b in adj[a] if component[a] == component[b]}


@pytest.fixture(scope="module")
def graph():
    mods = project_modules()
    return mods, read_imports(mods)


def test_the_reader_sees_top_level_local_and_relative_imports(graph):
    mods, imports = graph
    assert {"s4c.ir", "s4c.ops", "s4c.passes.rewrite", "s4c.codegen.c", "s4c.sparse.uses"} <= set(mods)
    edges = {(i.importer, i.imported, i.local) for i in imports}
    assert ("s4c.passes.rewrite", "s4c.ops", False) in edges            # from s4c import ops as op_registry
    assert ("s4c.passes.rewrite", "s4c.ir", False) in edges
    assert ("s4c.ops", "s4c.ops.nn", False) in edges                    # from s4c.ops import ..., nn, ...


def test_the_reader_sees_function_local_relative_imports(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "k.py").write_text("x = 1\n")
    (pkg / "m.py").write_text("class C:\n    def f(self):\n        from . import k\n        from .k import x\n")
    mods = {"p": pkg / "__init__.py", "p.k": pkg / "k.py", "p.m": pkg / "m.py"}
    found = {(i.importer, i.imported, i.line, i.local) for i in read_imports(mods)}
    assert found == {("p.m", "p.k", 3, True), ("p.m", "p.k", 4, True)}


def test_codegen_s4_has_no_function_local_imports(graph):
    """codegen/s4's modules import each other at the top (base.py holds what they share, the kernel
    modules register themselves), so a function-local import there can only be dodging a cycle."""
    _, imports = graph
    local = [repr(i) for i in imports if i.importer.startswith("s4c.codegen.s4") and i.local]
    assert not local, "function-local imports in codegen/s4:\n" + "\n".join(local)


def test_every_module_has_a_layer(graph):
    mods, _ = graph
    assert [m for m in mods if layer_of(m) is None] == [], "add the module to LAYERS"


def test_layering(graph):
    _, imports = graph
    bad = [i for i in imports
           if layer_of(i.importer) != layer_of(i.imported)
           and layer_of(i.imported) not in MAY_IMPORT[layer_of(i.importer)]]
    new = [f"{i!r} ({layer_of(i.importer)} -> {layer_of(i.imported)})" for i in bad
           if (i.importer, i.imported) not in KNOWN_LAYER_EDGES]
    assert not new, "imports against the layering:\n" + "\n".join(new)
    stale = KNOWN_LAYER_EDGES - {(i.importer, i.imported) for i in bad}
    assert not stale, f"no longer needed, remove from KNOWN_LAYER_EDGES: {sorted(stale)}"


def test_no_import_cycles(graph):
    mods, imports = graph
    on_cycle = cycle_edges(mods, imports)
    new = sorted(on_cycle - KNOWN_CYCLE_EDGES)
    detail = [repr(i) for i in imports if (i.importer, i.imported) in set(new)]
    assert not new, "imports on a cycle:\n" + "\n".join(detail)
    stale = sorted(KNOWN_CYCLE_EDGES - on_cycle)
    assert not stale, f"no longer on a cycle, remove from KNOWN_CYCLE_EDGES: {stale}"


def test_cycle_check_catches_a_cycle_and_ignores_ancestor_packages():
    mods = {m: Path() for m in ("p", "p.a", "p.b", "q")}
    imp = lambda a, b: Import(a, b, 1, False)
    assert cycle_edges(mods, [imp("p", "p.a"), imp("p.a", "p"), imp("p.a", "q")]) == set()
    assert cycle_edges(mods, [imp("p.a", "p.b"), imp("p.b", "p.a"), imp("p.b", "q")]) == {("p.a", "p.b"), ("p.b", "p.a")}
