"""The C backend's debug build: every IR value's output readable after the step that completes it
(`s4c check`), and the per-step timeline as a Chrome / Perfetto trace (`s4c run --backend c
--profile --trace-json`).

At build time `debug_values(lw)` lists, for each op result of the lowered graph, where the
generated code keeps it (model.json "values"): its buffer (arena, caller's input / output,
weights, init-time memory) and offset, dtype, shape, element strides (feature-major tensors are
stored [F][T]) and `after`, the number of run steps after which it is complete (every step of its op
and of the ops before it). The arena is reused by liveness, so a value is read right after its
step, before anything else can overwrite it.

`build_debug(cdir)` compiles OUTDIR/c/debug/libmodel_debug.so only when asked: the same model.c
plus three accessors (the arena, the weights and the init-time memory), the kernels from the
object cache. `DebugCModel(cdir).run(feeds)` then runs the steps one by one through
s4c_model_run_steps (as `--profile` does) and returns {value name: array in the ONNX layout}.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

from s4c.codegen.c import cnames
from s4c.codegen.c.options import COptions
from s4c.errors import S4CError

DEBUG_DIR = "debug"
DEBUG_LIB = "libmodel_debug.so"
_ACCESSORS = """
/* s4c debug build (s4c check): where the intermediates live */
S4C_MODEL_API void *s4c_model_debug_arena(void) { return %s; }
S4C_MODEL_API void *s4c_model_debug_weights(void) { return s4c_mem; }
S4C_MODEL_API void *s4c_model_debug_derived(void) { return s4c_mem ? s4c_mem + S4C_WEIGHT_BYTES : NULL; }
"""


def debug_values(lw) -> list[dict]:
    """Where each op result of `lw` (a finished CProgram) lives, in graph op order (see module doc)."""
    op_index = {id(op): i for i, op in enumerate(lw.graph.ops)}
    last: dict[int, int] = {}
    for s in lw.run_steps:
        if s.op is not None and id(s.op) in op_index:
            k = op_index[id(s.op)]
            last[k] = max(last.get(k, -1), s.index)
    out, ready = [], 0
    for i, op in enumerate(lw.graph.ops):
        ready = max(ready, last.get(i, -1) + 1)
        for v in op.outputs:
            t = lw._home.get(id(v)) if v is not None else None
            if t is None:
                continue
            out.append({"name": v.name, "op": i, "op_type": op.op, "after": ready if t.phase == "run" else 0,
                        "buffer": t.buffer.kind, "offset": t.buffer.offset, "index": t.buffer.index,
                        "dtype": t.dtype, "shape": list(t.shape), "strides": list(t.strides),
                        "layout": op.attrs.get("layout", "dense") if op.op == "Linear" else None})
    return out


def _np_dtype(name: str) -> np.dtype:
    return np.dtype(np.uint8) if name == "bool" else np.dtype(cnames.NPY_DESCR[name].replace("|", "="))


def build_debug(cdir, cflags=None, cc: str | None = None) -> Path:
    """OUTDIR/c/debug/libmodel_debug.so (rebuilt only when model.c changed); its path."""
    from s4c.codegen.c.toolchain import REQUIRED, compile_library

    cdir = Path(cdir)
    try:
        meta = json.loads((cdir / "model.json").read_text())
        model_c = (cdir / "model.c").read_text()
    except FileNotFoundError as e:
        raise S4CError(f"{cdir}: no C build here ({os.path.basename(e.filename)} missing); compile with --target c") from None
    if "values" not in meta:
        raise S4CError(f"{cdir}/model.json has no debug value map (compiled by an older s4c); recompile")
    arena = "s4c_arena" if "static unsigned char s4c_arena[" in model_c else "NULL"
    text = model_c + _ACCESSORS % arena
    ddir = cdir / DEBUG_DIR
    lib = ddir / DEBUG_LIB
    if lib.exists() and (ddir / "model.c").exists() and (ddir / "model.c").read_text() == text:
        return lib
    ddir.mkdir(exist_ok=True)
    sources = list(meta["sources"])
    for p in cdir.iterdir():
        if p.is_file() and (p.suffix in (".c", ".h")) and p.name != "model.c":
            shutil.copyfile(p, ddir / p.name)
    (ddir / "model.c").write_text(text)
    flags = [f for f in (cflags or []) if f not in REQUIRED and f != "-fopenmp"]
    compile_library(ddir, sources, COptions(cc=cc, cflags=tuple(flags) if cflags else None), out_name=DEBUG_LIB)
    return lib


class DebugCModel:
    """The debug library of OUTDIR/c: `run(feeds) -> {value name: array}` (every op result) and
    `outputs` (the graph outputs of that run)."""

    def __init__(self, cdir, cflags=None, cc: str | None = None):
        from s4c.codegen.c import runtime

        self.cdir = Path(cdir)
        lib_path = build_debug(self.cdir, cflags, cc)
        self.meta = json.loads((self.cdir / "model.json").read_text())
        self.values = self.meta["values"]
        entry = runtime._open(str(lib_path))
        self.lib = lib = entry["lib"]
        for name in ("s4c_model_debug_arena", "s4c_model_debug_weights", "s4c_model_debug_derived"):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = ctypes.c_void_p, []
        weights = os.path.abspath(self.cdir / self.meta["weights"])
        rc = lib.s4c_model_init(os.fsencode(weights))
        if rc != 0:
            raise S4CError(f"{weights}: s4c_model_init failed: {runtime.INIT_ERRORS.get(rc, f'status {rc}')}")
        self.steps = self.meta["steps"]

    def close(self) -> None:
        self.lib.s4c_model_free()

    def _read(self, v: dict, ins: list, outs: list) -> np.ndarray:
        dt = _np_dtype(v["dtype"])
        shape, strides = tuple(v["shape"]), tuple(int(s) * dt.itemsize for s in v["strides"])
        kind = v["buffer"]
        if kind == "input":
            base = ins[v["index"]]
        elif kind == "output":
            base = outs[v["index"]]
        else:
            ptr = {"arena": self.lib.s4c_model_debug_arena, "weight": self.lib.s4c_model_debug_weights,
                   "derived": self.lib.s4c_model_debug_derived}[kind]()
            if not ptr:
                raise S4CError(f"C debug build: no {kind} memory for value {v['name']!r}")
            size = int(np.prod(shape, dtype=np.int64))
            span = (sum((d - 1) * s for d, s in zip(shape, strides)) + dt.itemsize) if size else 0
            base = np.ctypeslib.as_array((ctypes.c_ubyte * max(span, 1)).from_address(ptr + v["offset"]))
        flat = np.asarray(base).reshape(-1).view(np.uint8)
        if v["buffer"] in ("input", "output"):
            flat = flat[v.get("byte_offset", 0):]
        a = as_strided(flat.view(dt) if flat.size % dt.itemsize == 0 else flat[:flat.size - flat.size % dt.itemsize].view(dt),
                       shape=shape, strides=strides).copy()
        return a != 0 if v["dtype"] == "bool" else a

    def run(self, feeds: dict) -> dict:
        from s4c.codegen.c.runtime import _np_dtype as io_dtype

        ins = []
        for io in self.meta["inputs"]:
            if io["name"] not in feeds:
                raise S4CError(f"missing model input {io['name']!r}")
            ins.append(np.ascontiguousarray(np.asarray(feeds[io["name"]]).astype(io_dtype(io["dtype"]))))
        outs = [np.zeros(tuple(io["shape"]), io_dtype(io["dtype"])) for io in self.meta["outputs"]]
        in_ptrs = (ctypes.c_void_p * max(len(ins), 1))(*[a.ctypes.data for a in ins])
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[o.ctypes.data for o in outs])
        by_after: dict[int, list[dict]] = {}
        for v in self.values:
            by_after.setdefault(int(v["after"]), []).append(v)
        result: dict[str, np.ndarray] = {}
        for v in by_after.pop(0, []):
            result[v["name"]] = self._read(v, ins, outs)
        for i in range(len(self.steps)):
            rc = self.lib.s4c_model_run_steps(in_ptrs, out_ptrs, i, i + 1)
            if rc != 0:
                step = self.steps[i]
                raise S4CError(f"C debug build: step {i} ({step['kind']}, {step['kernel']}) failed")
            for v in by_after.pop(i + 1, []):
                result[v["name"]] = self._read(v, ins, outs)
        self.outputs = {io["name"]: o for io, o in zip(self.meta["outputs"], outs)}
        return result


def chrome_trace(steps: list[dict], step_seconds, runs: int = 1, name: str = "c") -> dict:
    """The C per-step timeline (mean seconds per run of each step, in program order) as a Chrome /
    Perfetto trace: one complete ("X") event per step on one track, named by its ONNX node."""
    events = [{"ph": "M", "name": "process_name", "pid": 0, "tid": 0, "args": {"name": f"s4c {name} backend"}},
              {"ph": "M", "name": "thread_name", "pid": 0, "tid": 0, "args": {"name": "steps"}}]
    t = 0.0
    for i, (s, sec) in enumerate(zip(steps, step_seconds)):
        us = float(sec) * 1e6
        node = s["nodes"][0] if s.get("nodes") else (s.get("result") or s["kind"])
        start, end = round(t, 3), round(t + us, 3)
        events.append({"name": node, "cat": s["kind"], "ph": "X", "ts": start, "dur": round(end - start, 3),
                       "pid": 0, "tid": 0,
                       "args": {"step": i, "op": s.get("op"), "kernel": s["kernel"], "nodes": s.get("nodes", []),
                                "result": s.get("result"), "runs": runs}})
        t += us
    return {"traceEvents": events, "displayTimeUnit": "ms"}
