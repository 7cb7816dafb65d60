"""`s4c inspect`: a plain-text summary of an ONNX model or a compiled OUTDIR.

Ops by type, inputs/outputs with shapes, every weight (constant with 2+ dims) with its shape
and sparsity, and the sparsity analysis of every 2-D weight as W[out, in] (transposed when a
MatMul / Gemm reads it as [in, out]): density, the best BSR block shape and its fill-in, and the
N:M pattern it satisfies, if any. An ONNX model is summarised as stored (no shape binding needed)."""

from __future__ import annotations

import collections
import json
import os

import numpy as np

from s4c.errors import FrontendError
from s4c.sparse.uses import weight_uses


def _table(rows: list[tuple], header: tuple) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return [fmt(header), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]


def _sparsity_table(matrices) -> list[str]:
    """The sparsity analysis of (name, W[out, in]) pairs (s4c.sparse.analyze_sparsity)."""
    from s4c.sparse import analyze_sparsity

    rows = []
    for name, w in matrices:
        report = analyze_sparsity(np.ascontiguousarray(w))  # MatMul weights are transposed views
        best = report.best_block_shape() or min(
            report.blocks, key=lambda b: (b.fill_in, -b.block_shape[0] * b.block_shape[1])).block_shape
        pattern = report.nm_pattern
        rows.append((name, "x".join(map(str, w.shape)), f"{report.density:.3f}",
                     f"{best[0]}x{best[1]}", f"{report.block(best).fill_in:.3f}",
                     f"{pattern.n}:{pattern.m}" if pattern else "-"))
    if not rows:
        return []
    header = ("name", "W[out,in]", "density", "best block", "fill-in", "N:M")
    return ["", f"sparsity analysis ({len(rows)} 2-D weights; best block: the largest with fill-in <= 25%, "
                  "else the one with the least fill-in):"] + \
        ["  " + l for l in _table(rows, header)]


def _summary(title: str, op_types: list[str], inputs, outputs, weights, matrices=()) -> str:
    lines = [title, "", f"ops ({len(op_types)}):"]
    for op, n in sorted(collections.Counter(op_types).items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {op:<24} {n}")
    lines += ["", "inputs:"] + [f"  {n}: {t}" for n, t in inputs]
    lines += ["", "outputs:"] + [f"  {n}: {t}" for n, t in outputs]
    rows = []
    total = nonzero = 0
    for name, array in weights:
        nz = int(np.count_nonzero(array))
        total, nonzero = total + array.size, nonzero + nz
        rows.append((name, "x".join(map(str, array.shape)), str(array.dtype), f"{1 - nz / max(array.size, 1):.1%}"))
    lines += ["", f"weights ({len(rows)}, {total:,} values, {1 - nonzero / max(total, 1):.1%} zeros):"]
    lines += ["  " + l for l in _table(rows, ("name", "shape", "dtype", "sparsity"))] if rows else []
    lines += _sparsity_table(matrices)
    return "\n".join(lines) + "\n"


def inspect_onnx(path: str) -> str:
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(path, load_external_data=True)
    except Exception as e:
        raise FrontendError(f"{os.path.basename(path)}: not a readable ONNX model ({type(e).__name__}: {e})") from None

    def dims(vi) -> str:
        t = vi.type.tensor_type
        shape = "x".join(d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in t.shape.dim)
        return f"{onnx.TensorProto.DataType.Name(t.elem_type).lower()}[{shape}]"

    inits = {i.name for i in model.graph.initializer}
    weights = []
    for init in model.graph.initializer:
        if len(init.dims) >= 2:
            weights.append((init.name, numpy_helper.to_array(init)))
    # initializers a MatMul (or a Gemm without transB) reads as B are [in, out]: analyse W = B^T
    transposed = set()
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in ("MatMul", "Gemm") and len(node.input) > 1:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            if node.op_type == "MatMul" or not trans_b:
                transposed.add(node.input[1])
    matrices = [(name, w.T if name in transposed else w) for name, w in weights if w.ndim == 2 and w.size]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")
    return _summary(f"{path}: ONNX opset {opset}, producer {model.producer_name or '?'} {model.producer_version}",
                    [n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node],
                    [(i.name, dims(i)) for i in model.graph.input if i.name not in inits],
                    [(o.name, dims(o)) for o in model.graph.output], weights, matrices)


def inspect_outdir(path: str) -> str:
    from s4c.driver import load_compiled

    compiled = load_compiled(path)
    g = compiled.graph
    weights = [(v.name, v.data) for v in g.constants() if isinstance(v.data, np.ndarray) and v.data.ndim >= 2]
    transposed = {use.source.name for use in weight_uses(g) if use.transposed}
    matrices = [(name, w.T if name in transposed else w) for name, w in weights if w.ndim == 2 and w.size]
    return _summary(f"{path}: compiled s4c model (targets: {', '.join(compiled.targets) or 'ir only'})",
                    [op.op for op in g.ops], [(v.name, str(v.type)) for v in g.inputs],
                    [(v.name, str(v.type)) for v in g.outputs], weights, matrices) + _s4_buckets(path)


def _s4_buckets(path: str) -> str:
    """A line on a bucketed S4 build (shape ranges: one program per bucket in model.s4), else ''."""
    try:
        with open(os.path.join(path, "model.s4.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return ""
    if not isinstance(meta, dict) or meta.get("version") != 2:
        return ""
    names = ", ".join(str(b.get("name")) for b in meta.get("buckets", []))
    size = os.path.getsize(os.path.join(path, "model.s4")) if os.path.exists(os.path.join(path, "model.s4")) else 0
    return (f"\nS4 programs (buckets): {names}; one constant segment, model.s4 {size:,} bytes "
            f"(ranges {', '.join(f'{k}={lo}..{hi}' for k, (lo, hi) in meta.get('ranges', {}).items())})\n")


def inspect_path(path: str) -> str:
    if os.path.isdir(path):
        return inspect_outdir(path)
    if not os.path.exists(path):
        raise FrontendError(f"{path}: no such file or folder")
    return inspect_onnx(path)
