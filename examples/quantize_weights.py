#!/usr/bin/env python3
"""Weight-only int8 quantization of an ONNX model's MatMul/Gemm weights (pure onnx + numpy).

Every 2-D float initializer that feeds the weight operand of a ``MatMul`` (input B) or a
``Gemm`` (input B, ``transB`` honoured) becomes an int8 initializer plus a float scale,
re-materialized in front of the consumer in one of the two patterns real tools emit:

``int8-dequant``::

    w_q (int8) ──┐
    scale ───────┼─ DequantizeLinear(axis=out_axis) ── MatMul
    zero_point ──┘   (zero_point: int8 zeros, same shape as scale)

``int8-castmul``::

    w_q (int8) ── Cast(to=FLOAT) ── Mul(scale) ── MatMul

Quantization is symmetric (zero point 0, range [-127, 127]) so exact zeros stay exact
zeros: the sparsity of a pruned weight is preserved in the int8 tensor.

Scales are per output channel by default (``--per-tensor`` for one scalar scale). The
output-channel axis is where the weight's *output* features live in the graph's own
orientation: axis 1 for a MatMul B of shape [in, out] (what both torch exporters emit for
``nn.Linear``: torchscript stores a pre-transposed ``onnx::MatMul_N`` initializer, dynamo a
constant-folded ``val_N``), axis 0 for a Gemm B with ``transB=1`` ([out, in], e.g. the
BERT pooler), axis 1 for ``transB=0``. For castmul the per-channel scale is shaped so
that it broadcasts on that axis ([out] for axis 1, [out, 1] for axis 0).

A weight reached through ``Transpose(perm=[1, 0])`` or ``Identity`` from an initializer is
followed back to the initializer, and the quantized pattern replaces the initializer at the
head of that chain (the Transpose stays; the axis is mapped through it). An initializer
shared by several consumers is quantized once; an initializer that is also used by a
non-weight consumer is kept as well.

Usage::

    python examples/quantize_weights.py in.onnx out.onnx --mode int8-dequant
    python examples/quantize_weights.py in.onnx out.onnx --mode int8-castmul --per-tensor

Importable: ``quantize_model(model_proto, mode=..., per_channel=True) -> ModelProto``.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODES = ("int8-dequant", "int8-castmul")


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def _quantize_array(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8. axis = output-channel axis (per-channel) or None (per-tensor)."""
    w = w.astype(np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max(), dtype=np.float32)
    else:
        red = 1 - axis
        amax = np.abs(w).max(axis=red).astype(np.float32)
    scale = amax / 127.0
    scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
    bshape = scale if axis is None else (scale[None, :] if axis == 1 else scale[:, None])
    q = np.clip(np.rint(w / bshape), -127, 127).astype(np.int8)
    return q, scale


def quantize_model(
    model: onnx.ModelProto,
    mode: str = "int8-dequant",
    per_channel: bool = True,
    verbose: bool = False,
) -> onnx.ModelProto:
    """Return a copy of ``model`` with MatMul/Gemm float weights quantized weight-only."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    if mode == "int8-dequant" and per_channel and _opset(model) < 13:
        raise ValueError("per-axis DequantizeLinear needs opset >= 13; use --per-tensor or int8-castmul")

    inits = {t.name: t for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    graph_outputs = {o.name for o in g.output}
    graph_inputs = {i.name for i in g.input}

    # weight initializer name -> output-channel axis (in the initializer's own orientation)
    targets: dict[str, int] = {}
    # (node, input index) to rewire -> initializer name ; only direct uses are rewired
    rewires: list[tuple[onnx.NodeProto, int, str]] = []

    for n in g.node:
        if n.op_type == "MatMul":
            idx, out_axis = 1, 1
        elif n.op_type == "Gemm":
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            idx, out_axis = 1, (0 if trans_b else 1)
        else:
            continue
        if len(n.input) <= idx:
            continue
        # walk back through Identity / 2-D Transpose to an initializer
        name, axis, user, uidx = n.input[idx], out_axis, n, idx
        while name not in inits and name in producers:
            p = producers[name]
            if p.op_type == "Identity":
                pass
            elif p.op_type == "Transpose":
                perm = next((list(a.ints) for a in p.attribute if a.name == "perm"), [1, 0])
                if perm != [1, 0]:
                    break
                axis = 1 - axis
            else:
                break
            name, user, uidx = p.input[0], p, 0
        t = inits.get(name)
        if t is None or name in graph_inputs:
            continue
        if len(t.dims) != 2 or t.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
            continue
        if name in targets and targets[name] != axis:
            continue  # same tensor used in two orientations: leave it alone
        targets[name] = axis
        rewires.append((user, uidx, name))

    if not targets:
        return model

    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    deq_name: dict[str, str] = {}
    for name, axis in targets.items():
        t = inits[name]
        w = numpy_helper.to_array(t)
        q, scale = _quantize_array(w, axis if per_channel else None)
        qn, sn, out = f"{name}_quantized", f"{name}_scale", f"{name}_dequantized"
        new_inits.append(numpy_helper.from_array(q, qn))
        if mode == "int8-dequant":
            zn = f"{name}_zero_point"
            new_inits.append(numpy_helper.from_array(scale, sn))
            new_inits.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8), zn))
            attrs = {"axis": axis} if scale.ndim == 1 else {}
            new_nodes.append(helper.make_node(
                "DequantizeLinear", [qn, sn, zn], [out], name=f"{name}_DequantizeLinear", **attrs))
        else:
            s = scale if scale.ndim == 0 or axis == 1 else scale.reshape(-1, 1)
            new_inits.append(numpy_helper.from_array(s.astype(np.float32), sn))
            cn = f"{name}_cast"
            new_nodes.append(helper.make_node("Cast", [qn], [cn], name=f"{name}_Cast", to=TensorProto.FLOAT))
            new_nodes.append(helper.make_node("Mul", [cn, sn], [out], name=f"{name}_Mul"))
        deq_name[name] = out
        if verbose:
            nz = 1.0 - np.count_nonzero(q) / q.size
            print(f"  quantized {name} {list(w.shape)} axis={axis if per_channel else 'tensor'} sparsity={nz:.3f}")

    for user, uidx, name in rewires:
        user.input[uidx] = deq_name[name]

    # drop float initializers that no longer have any consumer
    still_used = {i for n in g.node for i in n.input} | graph_outputs
    keep = [t for t in g.initializer if t.name not in targets or t.name in still_used]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    # the originals may have had value_info entries; they are harmless, but remove stale ones
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(new_nodes + nodes)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--mode", choices=MODES, default="int8-dequant")
    ap.add_argument("--per-tensor", action="store_true", help="one scale per tensor instead of per output channel")
    ap.add_argument("--external-data", action="store_true", help="save weights as <output>.data beside the model")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    m = onnx.load(a.input)
    q = quantize_model(m, a.mode, per_channel=not a.per_tensor, verbose=a.verbose)
    if a.external_data:
        import os
        onnx.save_model(q, a.output, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(a.output) + ".data")
    else:
        onnx.save_model(q, a.output)
    onnx.checker.check_model(a.output)
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
