"""`s4c inspect`: a plain-text summary of an ONNX model or a compiled OUTDIR.

Ops by type, inputs/outputs with shapes, and every weight (constant with 2+ dims) with its shape
and sparsity. An ONNX model is summarised as stored (no shape binding needed)."""

from __future__ import annotations

import collections
import os

import numpy as np

from s4c.errors import FrontendError


def _table(rows: list[tuple], header: tuple) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return [fmt(header), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]


def _summary(title: str, op_types: list[str], inputs, outputs, weights) -> str:
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
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")
    return _summary(f"{path}: ONNX opset {opset}, producer {model.producer_name or '?'} {model.producer_version}",
                    [n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node],
                    [(i.name, dims(i)) for i in model.graph.input if i.name not in inits],
                    [(o.name, dims(o)) for o in model.graph.output], weights)


def inspect_outdir(path: str) -> str:
    from s4c.driver import load_compiled

    compiled = load_compiled(path)
    g = compiled.graph
    weights = [(v.name, v.data) for v in g.constants() if isinstance(v.data, np.ndarray) and v.data.ndim >= 2]
    return _summary(f"{path}: compiled s4c model (targets: {', '.join(compiled.targets) or 'ir only'})",
                    [op.op for op in g.ops], [(v.name, str(v.type)) for v in g.inputs],
                    [(v.name, str(v.type)) for v in g.outputs], weights)


def inspect_path(path: str) -> str:
    if os.path.isdir(path):
        return inspect_outdir(path)
    if not os.path.exists(path):
        raise FrontendError(f"{path}: no such file or folder")
    return inspect_onnx(path)
