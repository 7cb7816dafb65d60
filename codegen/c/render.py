"""The generated files: jinja2 templates (templates/*.j2) for the skeletons, filled from a CProgram."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
from s4c import __version__
from s4c.codegen.c import cnames
from s4c.codegen.c.cnames import comment_name
from s4c.codegen.c.debug import debug_values
from s4c.codegen.c.program import CProgram, Tensor

TEMPLATES = Path(__file__).resolve().parent / "templates"
KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
EXTRA_DIR = Path(__file__).resolve().parent / "kernels_extra"

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True, trim_blocks=False, lstrip_blocks=False, autoescape=False)


def _io(t: Tensor, name: str) -> dict:
    shape = list(t.shape)
    return {
        "name": name,
        "comment": f"{comment_name(name)} {t.dtype}[{','.join(map(str, shape))}] ({t.ctype})",
        "dtype": t.dtype,
        "dtype_upper": t.dtype.upper(),
        "rank": len(shape),
        "shape_list": ", ".join(map(str, shape)) if shape else "0",
        "shape_list_or_zero": ", ".join(map(str, shape)) if shape else "0",
        "numel": t.size,
        "nbytes": t.nbytes,
        "descr": cnames.NPY_DESCR[t.dtype],
        "shape": shape,
    }


def declaration(t: Tensor) -> str:
    const = "const " if t.readonly else ""
    base = t.buffer.base()
    cast = f"({const}{t.ctype} *)" + ("" if t.buffer.kind in ("input", "output") else f"({const}void *)")
    if t.buffer.kind in ("input", "output"):
        base = f"{base}"
    return f"{const}{t.ctype} *const {t.name} = {cast}({base}); /* {comment_name(t.label)} {t.describe()} */"


def context(lw: CProgram, weights_id: int, source: str, dyn=None) -> dict:
    run_steps = lw.run_steps
    init_steps = lw.init_steps
    # run-time tensors each step touches, declared once at the top of s4c_model_run_steps
    declared: dict[str, Tensor] = {}
    for s in run_steps:
        for t in s.ins + s.outs + s.scratch:
            if t.phase == "run":
                declared.setdefault(t.name, t)
    # weights / init-time tensors: file-scope pointers set once by s4c_bind
    used_globals: dict[str, Tensor] = {}
    for s in init_steps + run_steps:
        for t in s.ins + s.outs + s.scratch:
            if t.phase == "init":
                used_globals.setdefault(t.name, t)
    glob = sorted(used_globals.values(), key=lambda t: (t.name[0], int(t.name[1:])))
    globals_ = []
    binds = []
    for t in glob:
        const = "const " if t.buffer.kind == "weight" else ""
        globals_.append(f"static {const}{t.ctype} *{t.name}; /* {comment_name(t.label)} {t.describe()} */")
        base = t.buffer.base() if dyn is None else dyn.const_binds.get(t.name, t.buffer.base())
        binds.append(f"{t.name} = ({const}{t.ctype} *)({const}void *)({base});")
    decls = [declaration(t) for t in sorted(declared.values(), key=lambda t: int(t.name[1:]))]
    plan = lw.arena_plan
    uses_arena = any(t.buffer.kind == "arena" for t in declared.values())
    for s in run_steps + init_steps:
        s._comment = s.comment()
    run_calls = [s.call for s in run_steps] if dyn is None else dyn.run_calls
    init_calls = [s.call for s in init_steps] if dyn is None else dyn.init_calls
    return {
        "version": __version__,
        "source": comment_name(source),
        "inputs": [_io(t, v.name) for t, v in zip(lw.input_tensors, lw.graph.inputs)],
        "outputs": [_io(t, v.name) for t, v in zip(lw.output_tensors, lw.graph.outputs)],
        "dtype_codes": [(k.upper(), v) for k, v in cnames.DTYPE_CODE.items()],
        "arena_bytes": plan.peak,
        "arena_alloc": max(plan.peak, 64),
        "arena_total": plan.total,
        "uses_arena": uses_arena,
        "weight_bytes": lw.weights.nbytes,
        "derived_bytes": lw.derived_bytes,
        "weights_id": f"{weights_id:016x}",
        "globals": globals_,
        "binds": binds,
        "functions": lw.functions if dyn is None else dyn.functions,
        "declarations": decls,
        "run_steps": [{"comment": s._comment, "call": c, "fails": s.fails} for s, c in zip(run_steps, run_calls)],
        "init_steps": [{"comment": s._comment, "call": c, "fails": s.fails} for s, c in zip(init_steps, init_calls)],
        "dims": _dims_context(dyn),
        "dims_fill": dyn.const_fill if dyn is not None else [],
        "dyn_bytes": max(dyn.dyn_bytes, 64) if dyn is not None else 0,
        "num_steps": len(run_steps),
        "uses_extra": lw.uses_extra,
    }


def _dims_context(dyn) -> list[dict]:
    """Shape ranges (codegen/c/dynamic.py): one entry per run-time dim; empty for a fixed build."""
    if dyn is None:
        return []
    return [{"index": i, "name": comment_name(n), "lo": lo, "hi": hi, "var": f"s4c_d{i}"}
            for i, (n, (lo, hi)) in enumerate(zip(dyn.symbols, dyn.ranges))]


def _dyn_io(dyn, ctx: dict) -> None:
    """Per input / output: the dim index of each axis (-1 fixed) and its extent as C at the run's dims."""
    for io, syms, exprs in zip(ctx["inputs"], dyn.input_syms, dyn.input_dims):
        io["dim_syms"] = ", ".join(map(str, syms)) if syms else "0"
        io["dim_exprs"] = exprs
    for io, exprs in zip(ctx["outputs"], dyn.output_dims):
        io["dim_exprs"] = exprs


def kernel_sources(texts: list[str]) -> list[Path]:
    """The kernel library sources the generated code needs (the closure over their references)."""
    defined: dict[str, Path] = {}
    refs: dict[Path, set[str]] = {}
    ident = re.compile(r"\bs4c_{1,2}[a-z0-9_]+\b")
    for src in sorted(KERNEL_DIR.glob("*.c")):
        text = src.read_text()
        for m in re.finditer(r"^(?!static)[A-Za-z_][\w \t\*]*?\b(s4c_{1,2}[a-z0-9_]+)\s*\(", text, re.M):
            defined.setdefault(m.group(1), src)
        refs[src] = set(ident.findall(text))
    needed: set[Path] = {KERNEL_DIR / "s4c_runtime.c"}
    todo = set()
    for text in texts:
        todo |= set(ident.findall(text))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        src = defined.get(name)
        if src is not None and src not in needed:
            needed.add(src)
            todo |= refs[src]
        elif src is not None:
            todo |= refs[src] - seen
    return sorted(needed)


def write_sources(lw: CProgram, cdir: Path, weights_id: int, source: str, dyn=None) -> dict[str, list[str]]:
    """Write model.h, model.c, main.c, the kernels used, Makefile and model.json into `cdir`
    (`dyn`: a shape-range build's DynamicCode, codegen/c/dynamic.py)."""
    ctx = context(lw, weights_id, source, dyn)
    if dyn is not None:
        _dyn_io(dyn, ctx)
    model_c = _env.get_template("model.c.j2").render(**ctx)
    model_h = _env.get_template("model.h.j2").render(**ctx)
    (cdir / "model.c").write_text(model_c)
    (cdir / "model.h").write_text(model_h)
    texts = [model_c]
    extra_sources: list[Path] = []
    if lw.uses_extra:
        extra_sources = [EXTRA_DIR / "s4c_extra.c"]
        texts.append(extra_sources[0].read_text())
    kernels = kernel_sources(texts)
    headers = sorted(KERNEL_DIR.glob("*.h")) + ([EXTRA_DIR / "s4c_extra.h"] if lw.uses_extra else [])
    for p in kernels + extra_sources + headers:
        (cdir / p.name).write_bytes(p.read_bytes())
    sources = [p.name for p in kernels + extra_sources]
    header_names = [p.name for p in headers]
    max_rank = max([len(io["shape"]) for io in ctx["inputs"] + ctx["outputs"]] + [1])
    main_c = _env.get_template("main.c.j2" if dyn is None else "main_dims.c.j2").render(max_rank=max_rank, **ctx)
    (cdir / "main.c").write_text(main_c)
    (cdir / "Makefile").write_text(_env.get_template("Makefile.j2").render(sources=sources, headers=header_names, **ctx))
    meta = {
        "version": 1,
        "inputs": [{"name": io["name"], "dtype": io["dtype"], "shape": io["shape"]} for io in ctx["inputs"]],
        "outputs": [{"name": io["name"], "dtype": io["dtype"], "shape": io["shape"]} for io in ctx["outputs"]],
        "steps": [{"kind": s.kind, "kernel": s.kernel, "op": s.op.op if s.op is not None else None,
                   "nodes": list(s.op.onnx_nodes) if s.op is not None else [],
                   "result": s.outs[0].label if s.outs else None} for s in lw.run_steps],
        "values": debug_values(lw),  # where each op result lives (codegen/c/debug.py: s4c check)
        "library": "libmodel.so",
        "weights": "weights.bin",
        "sources": ["model.c"] + sources,
    }
    if dyn is not None:  # shape ranges: the dims, which input axes they are, the outputs' extents
        meta["dims"] = {"names": dyn.symbols, "ranges": [list(r) for r in dyn.ranges],
                        "inputs": dyn.input_syms, "outputs": dyn.output_shapes}
    (cdir / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    return {"sources": ["model.c"] + sources, "headers": ["model.h"] + header_names}

