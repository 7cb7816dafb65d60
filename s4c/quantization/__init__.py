"""Target-independent int8 quantisation: the math the quantize-int8 pass and the calibration step
share, and the calibration observers.

    s4c.ops.quant                 the IR ops (QuantizeInt8, LinearInt8) and their exact reference
    s4c.quantization.observers    min-max / percentile / entropy (KL) observers -> clip threshold amax
    s4c.quantization.calibrate    calibration samples (.npz) -> per-tensor amax, via the reference evaluator
    s4c.quantization (here)       which Linears quantise, and their weights as int8 per output channel

Layer: IR (imports s4c.ir, s4c.ops, s4c.evaluate and s4c.errors only).
"""

from __future__ import annotations

import numpy as np

from s4c.ir import Op, Value
from s4c.ops.quant import QMAX, quantize, quantize_weight_per_channel, scale_from_amax

__all__ = ["QMAX", "quantize", "quantize_weight_per_channel", "scale_from_amax", "quantizable_linear",
           "linear_weight"]

DEQUANT = "DequantizeWeight"


def _const(v: Value) -> np.ndarray | None:
    return v.data if v.is_constant and isinstance(v.data, np.ndarray) else None


def linear_weight(op: Op):
    """A Linear's weight as the quantiser wants it, or None when it is not a compile-time weight:

    ("int8", w_q i8[out, in], scale f32[out], source, key)  an int8 weight (DequantizeWeight) whose
                                                       scale is per tensor or per output channel: kept
    ("float", W f32[out, in], source, key)             an f32 constant, or an int8 weight scaled per
                                                       input channel (dequantised, to be requantised)
    `source` is the constant holding the stored values (names what is derived from it); `key`
    identifies the weight (the same for Linears sharing it: constant, and scale when int8)."""
    w = op.inputs[1]
    if w.type.rank != 2:
        return None
    data = _const(w)
    if data is not None:
        return ("float", data, w, (id(w),)) if w.dtype == "f32" else None
    dq = w.producer
    if dq is None or dq.op != DEQUANT or w.dtype != "f32":
        return None
    q, scale = _const(dq.inputs[0]), _const(dq.inputs[1])
    if q is None or scale is None or q.dtype != np.int8 or q.ndim != 2:
        return None
    out_dim = q.shape[0]
    key = (id(dq.inputs[0]), id(dq.inputs[1]), dq.attrs.get("axis", 0) % 2 if scale.ndim else -1)
    if scale.ndim == 0:
        return ("int8", q, np.full(out_dim, scale, np.float32), dq.inputs[0], key)
    if dq.attrs.get("axis", 0) % 2 == 0:
        return ("int8", q, scale.astype(np.float32), dq.inputs[0], key)
    return ("float", q.astype(np.float32) * scale.astype(np.float32)[None, :], dq.inputs[0], key)


def quantizable_linear(op: Op) -> bool:
    """Whether quantize-int8 turns `op` into a LinearInt8: an f32 Linear of an activation (not a
    constant) by a compile-time weight, with an f32 [out] bias if any."""
    if op.op != "Linear" or op.output.dtype != "f32":
        return False
    x = op.inputs[0]
    if x.dtype != "f32" or x.is_constant or x.type.rank < 1:
        return False
    if len(op.inputs) > 2 and op.inputs[2].dtype != "f32":
        return False
    return linear_weight(op) is not None


def activation_values(graph) -> list[Value]:
    """The activations quantize-int8 quantises: the input of every quantisable Linear, each once
    (what calibration observes)."""
    seen: dict[int, Value] = {}
    for op in graph.ops:
        if quantizable_linear(op):
            seen.setdefault(id(op.inputs[0]), op.inputs[0])
    return list(seen.values())
