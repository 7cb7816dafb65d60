"""The portable C99 backend (`--target c`): OUTDIR/c/ with model.h, model.c, the kernels it uses,
weights.bin, a Makefile and a .npy harness (main.c), plus libmodel.so built for `s4c run --backend c`.

`BACKEND` (a `CBackend`, registered in codegen/registry.py) implements the backend protocol
(codegen/protocol.py) with the typed options `COptions` (options.py: cc, cflags, openmp, compile,
source, threads, profile, and the layout choices every backend has):

    BACKEND.build(graph, outdir, options) -> Artifacts        files, report, report_md
    BACKEND.load(outdir, options) -> CModel                   a Runner: .run(feeds) -> outputs
    BACKEND.execute(graph, feeds, options) -> outputs         compile into a temp folder and run
                                                              (the ONNX adaptor's executor; memoised)
    BACKEND.calibrate(out, cc=..., cflags=...)                `s4c calibrate --target c` (calibrate.py)

`build`, `load` and `execute` are also module functions (the same bound methods); each accepts a
`COptions` or a dict of its fields.

How it works (details in the module docstrings):
  lower.py     lower_graph: the IR graph -> a CProgram, op by op through the emission table
               (EMITTERS), the emitters in emit_*.py by op family (lower.py's docstring lists them);
  program.py   the CProgram: tensors / buffers / steps, layouts (token-major vs feature-major) and
               conversions, the arena plan (codegen/memory_plan.py);
  render.py    the jinja2 templates (templates/*.j2) and the kernel sources to copy;
  weights_bin.py  weights.bin; toolchain.py compiles; runtime.py loads with ctypes;
  calibrate.py microbenchmarks of the kernels for the C cost model (s4c/targets/c.py).
int8 weights (a DequantizeWeight feeding a Linear weight) are stored int8 + f32 scale in
weights.bin and dequantised to float once, by s4c_model_init, in the weight's sparse layout.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import weakref
from collections import Counter
from pathlib import Path

import numpy as np

from s4c.codegen.c import calibrate as calibration
from s4c.codegen.c.lower import lower_graph
from s4c.codegen.c.options import COptions
from s4c.codegen.c.render import write_sources
from s4c.codegen.c.runtime import CModel
from s4c.codegen.c.runtime import load as load_model
from s4c.codegen.c.toolchain import compile_library
from s4c.codegen.c.weights_bin import HEADER_BYTES
from s4c.codegen.protocol import Artifacts, Backend
from s4c.errors import TargetError
from s4c.ir import Graph, numpy_dtype

__all__ = ["BACKEND", "CBackend", "CModel", "COptions", "C_MAX_BYTES", "build", "load", "execute"]

# The C target's limit for one tensor and for its static activation arena: a library past it
# could not be loaded on any host, so such a compile is refused before any code is generated.
C_MAX_BYTES = 1 << 40


class CBackend(Backend):
    name = "c"
    precisions = ("fp32", "int8")  # int8: QuantizeInt8 / LinearInt8 on kernels/int8.c (emit_int8.py)
    shape_ranges = True  # --input-shape NAME=LO..HI dims: one build runs any dims inside (dynamic.py)
    options_type = COptions
    description = "portable C99 sources and a shared library (OUTDIR/c)"

    def check_sizes(self, graph: Graph, options=None) -> None:
        """TargetError when one tensor, or the activations live at once (a lower bound of the
        arena), take more than C_MAX_BYTES."""
        for value in graph.values():
            if value_bytes(value) > C_MAX_BYTES:
                raise TargetError(f"value {value.name!r} ({value.type}) takes {value_bytes(value)} bytes, more "
                                  f"than the C target's limit of {C_MAX_BYTES} bytes for one tensor")
        last_use = {id(v): i for i, op in enumerate(graph.ops) for v in op.inputs}
        public = {id(v) for v in graph.outputs}
        live = peak = 0
        ends: dict[int, int] = {}
        for i, op in enumerate(graph.ops):
            for v in op.outputs:
                if id(v) in last_use and id(v) not in public:
                    live += value_bytes(v)
                    ends[last_use[id(v)]] = ends.get(last_use[id(v)], 0) + value_bytes(v)
            peak = max(peak, live)
            live -= ends.pop(i, 0)
        if peak > C_MAX_BYTES:
            raise TargetError(f"the C target's activation arena needs at least {peak} bytes, more than its "
                              f"limit of {C_MAX_BYTES} bytes")

    def build(self, graph: Graph, outdir, options=None) -> Artifacts:
        options = self.options(options)
        start = time.perf_counter()
        cdir = Path(outdir) / "c"
        cdir.mkdir(parents=True, exist_ok=True)
        program = lower_graph(graph, options)
        dyn = None
        if graph.dim_ranges is not None:  # shape ranges: the code follows the run's dims (dynamic.py)
            from s4c.codegen.c.dynamic import analyse

            dyn = analyse(program, graph, lambda g: lower_graph(g, options))
        weights_id = program.weights.write(str(cdir / "weights.bin"))
        for stored in program.stored.values():  # the payload's hash, for readers of these weights
            stored.digest = (HEADER_BYTES, HEADER_BYTES + program.weights.nbytes, weights_id)
        source = options.source or graph.name
        written = write_sources(program, cdir, weights_id, str(source), dyn)
        generate_s = time.perf_counter() - start
        tool = {"cc": None, "flags": []}
        if options.compile:
            tool = compile_library(cdir, written["sources"], options)
        files = {"c_dir": "c", "c_header": "c/model.h", "c_source": "c/model.c", "c_weights": "c/weights.bin",
                 "c_makefile": "c/Makefile", "c_main": "c/main.c"}
        if options.compile:
            files["c_library"] = "c/libmodel.so"
        report = _report(program, tool, generate_s, time.perf_counter() - start, written)
        return Artifacts(files, report, _report_md(report), weights=program.stored)

    def load(self, outdir, options=None) -> CModel:
        return load_model(os.fspath(outdir), self.options(options))

    def prepare(self, graph: Graph, options: COptions) -> CModel:
        """Compile `graph` (as it is: no passes) into a temporary folder, removed with the model."""
        tmp = tempfile.mkdtemp(prefix="s4c-c-exec-")
        try:
            self.build(graph, tmp, options)
            model = self.load(tmp, options)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        weakref.finalize(model, shutil.rmtree, tmp, True)
        return model

    def calibrate(self, out=None, *, cc: str | None = None, cflags: str | None = None,
                  progress=None) -> tuple[Path, str]:
        """Microbenchmark the kernels (calibrate.py); (the file written, a one-line summary)."""
        path, data = calibration.calibrate_c(out, cc=cc, cflags=cflags, progress=progress)
        return path, f"call {data['call_us']:.1f} us; {data['cc']} {data['cflags']}"


def value_bytes(value) -> int:
    """A value's bytes in the IR (exact for shapes of any size: no int64 overflow)."""
    itemsize = 2 if value.type.dtype == "bf16" else np.dtype(numpy_dtype(value.type.dtype)).itemsize
    return math.prod(value.type.shape) * itemsize


def _report(program, tool, generate_s, total_s, written) -> dict:
    plan = program.arena_plan
    run = program.run_steps
    layouts = Counter(s.note.split(" ")[0] for s in program.steps if s.kind in ("Linear", "LinearInt8"))
    return {
        "arena_bytes": plan.peak,
        "arena_without_reuse_bytes": plan.total,
        "arena_lower_bound_bytes": plan.lower_bound,
        "arena_buffers": len(plan.intervals),
        "weights_bytes": program.weights.nbytes,
        "init_bytes": program.derived_bytes,
        "run_steps": len(run),
        "init_steps": len(program.init_steps),
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


BACKEND = CBackend()
build = BACKEND.build
load = BACKEND.load
execute = BACKEND.execute
