"""The portable C99 backend (`--target c`): OUTDIR/c/ with model.h, model.c, the kernels it uses,
weights.bin, a Makefile and a .npy harness (main.c), plus libmodel.so built for `s4c run --backend c`.

    build(graph, outdir, options) -> {"files", "report", "report_md"}   (the driver's interface)
    load(outdir, options) -> CModel with .run(inputs) -> outputs          (threads, profile)
    execute(graph, inputs) -> outputs    compile into a temp folder and run (the s4c.backend
                                         executor for ONNX's node tests; memoised per graph)

How it works (details in the module docstrings):
  program.py  tensors / buffers / steps, layouts (token-major vs feature-major) and conversions,
              the arena plan (codegen/memory_plan.py);
  emit.py     the per-op emission table (kernel calls and generated strided loops): the driver,
              with the emitters in emit_*.py by op family (emit.py's docstring lists them);
  render.py   the jinja2 templates (templates/*.j2) and the kernel sources to copy;
  weights.py  weights.bin; toolchain.py compiles; runtime.py loads with ctypes.
int8 weights (a DequantizeWeight feeding a Linear weight) are stored int8 + f32 scale in
weights.bin and dequantised to float once, by s4c_model_init, in the weight's sparse layout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from collections import Counter
from pathlib import Path


__all__ = ["build", "load", "execute"]


def build(graph, outdir, options: dict | None = None) -> dict:
    from s4c.codegen.c.emit import lower_graph
    from s4c.codegen.c.render import write_sources
    from s4c.codegen.c.toolchain import compile_library

    options = dict(options or {})
    start = time.perf_counter()
    cdir = Path(outdir) / "c"
    cdir.mkdir(parents=True, exist_ok=True)
    lw = lower_graph(graph, options)
    weights_id = lw.weights.write(str(cdir / "weights.bin"))
    source = options.get("source") or graph.name
    written = write_sources(lw, cdir, weights_id, str(source))
    generate_s = time.perf_counter() - start
    tool = {"cc": None, "flags": []}
    if options.get("compile", True):
        tool = compile_library(cdir, written["sources"], options)
    files = {"c_dir": "c", "c_header": "c/model.h", "c_source": "c/model.c", "c_weights": "c/weights.bin",
             "c_makefile": "c/Makefile", "c_main": "c/main.c"}
    if options.get("compile", True):
        files["c_library"] = "c/libmodel.so"
    report = _report(lw, tool, generate_s, time.perf_counter() - start, written)
    return {"files": files, "report": report, "report_md": _report_md(report)}


def _report(lw, tool, generate_s, total_s, written) -> dict:
    plan = lw.arena_plan
    run = lw.run_steps
    layouts = Counter(s.note.split(" ")[0] for s in lw.steps if s.kind == "Linear")
    return {
        "arena_bytes": plan.peak,
        "arena_without_reuse_bytes": plan.total,
        "arena_lower_bound_bytes": plan.lower_bound,
        "arena_buffers": len(plan.intervals),
        "weights_bytes": lw.weights.nbytes,
        "init_bytes": lw.derived_bytes,
        "run_steps": len(run),
        "init_steps": len(lw.init_steps),
        "layout_conversions": sum(1 for s in run if s.kind == "layout"),
        "kernels": dict(sorted(Counter(s.kernel if not s.kernel.startswith("generated") else "generated"
                                       for s in run).items())),
        "linear_layouts": dict(sorted(layouts.items())),
        "sources": written["sources"],
        "cc": tool["cc"],
        "cflags": tool["flags"],
        "openmp": "-fopenmp" in tool["flags"],
        "generate_seconds": round(generate_s, 3),
        "build_seconds": round(total_s, 3),
    }


def _report_md(r: dict) -> str:
    mib = lambda n: f"{n / 2 ** 20:.2f} MiB"  # noqa: E731
    lines = ["## C backend (OUTDIR/c)", "",
             f"- run: {r['run_steps']} steps ({r['layout_conversions']} layout conversions), "
             f"init: {r['init_steps']} steps",
             f"- activation arena: {mib(r['arena_bytes'])} for {r['arena_buffers']} buffers "
             f"(without reuse {mib(r['arena_without_reuse_bytes'])}, lower bound {mib(r['arena_lower_bound_bytes'])})",
             f"- weights.bin: {mib(r['weights_bytes'])}; computed at init: {mib(r['init_bytes'])}",
             f"- Linear layouts: {', '.join(f'{k} x{v}' for k, v in r['linear_layouts'].items()) or 'none'}",
             f"- compiler: {r['cc'] or 'not compiled'} {' '.join(r['cflags'])}",
             "", "| kernel | steps |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["kernels"].items()]
    return "\n".join(lines)


def load(outdir, options: dict | None = None):
    from s4c.codegen.c.runtime import load as _load

    return _load(os.fspath(outdir), options)


# -- the s4c.backend executor -------------------------------------------------------------------------

#: backend options the executor compiles with (tests may change them, e.g. cflags)
EXECUTOR_OPTIONS: dict = {}
_executed: dict[int, tuple] = {}


def prepare(graph, options: dict | None = None):
    """Compile `graph` (as it is: no passes) into a temp folder and load it; memoised per graph
    object for as long as it lives."""
    entry = _executed.get(id(graph))
    if entry is not None and entry[0]() is graph:
        return entry[1]
    tmp = tempfile.mkdtemp(prefix="s4c-c-exec-")
    try:
        build(graph, tmp, {**EXECUTOR_OPTIONS, **(options or {})})
        model = load(tmp, {})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    key = id(graph)
    _executed[key] = (weakref.ref(graph), model)
    weakref.finalize(graph, _forget, key, tmp)
    return model


def _forget(key: int, tmp: str) -> None:
    _executed.pop(key, None)
    shutil.rmtree(tmp, ignore_errors=True)


def execute(graph, inputs: dict) -> dict:
    """Executor for `s4c.backend.register_executor("c", execute)`: graph inputs -> outputs."""
    return prepare(graph).run(inputs)
