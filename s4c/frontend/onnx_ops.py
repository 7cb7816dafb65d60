"""Per-op import rules: ONNX node -> IR op(s).

Most ops map one-to-one (`_generic`). The table below lists only the ops whose ONNX form differs from
the IR's: shape-deciding operands become attributes (so they must be known at compile time), and a
few ops are rewritten (Identity/Dropout alias, Constant becomes a value, CastLike becomes Cast...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from s4c import ops
from s4c.errors import RuntimeShapeOperandError
from s4c.ir import DTYPES, Value, dtype_name

# ONNX attributes that carry no meaning for inference-time, static-shape compilation.
IGNORED_ATTRS = {"saturate", "training_mode", "seed", "round_mode", "output_dtype", "precision"}

_ONNX_TO_IR = {
    onnx.TensorProto.FLOAT: "f32", onnx.TensorProto.FLOAT16: "f16", onnx.TensorProto.DOUBLE: "f64",
    onnx.TensorProto.BFLOAT16: "bf16", onnx.TensorProto.INT64: "i64", onnx.TensorProto.INT32: "i32",
    onnx.TensorProto.INT16: "i16", onnx.TensorProto.INT8: "i8", onnx.TensorProto.UINT8: "u8",
    onnx.TensorProto.UINT16: "u16", onnx.TensorProto.BOOL: "bool",
}


def onnx_dtype_to_ir(dtype, what: str, fail: Callable[[str], Exception]) -> str:
    """IR dtype name for an ONNX element type or numpy dtype; a frontend error if s4c lacks it."""
    try:
        if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
            return _ONNX_TO_IR[int(dtype)]
        return dtype_name(np.dtype(dtype))
    except (KeyError, TypeError):
        raise fail(f"{what} has element type {dtype!r}, which s4c does not support "
                   f"(supported: {', '.join(sorted(DTYPES))})") from None


@dataclass
class NodeContext:
    node: gs.Node
    label: str
    operands: list[Value | None]
    opset: int
    emit: Callable
    fail: Callable[[str], Exception]

    def attr(self, name: str, default=None):
        value = self.node.attrs.get(name, default)
        if isinstance(value, gs.Constant):
            value = np.asarray(value.values)
        return value

    def has(self, i: int) -> bool:
        return i < len(self.operands) and self.operands[i] is not None

    def value(self, i: int) -> Value:
        if not self.has(i):
            raise self.fail(f"{self.label}: operand {i} is required")
        return self.operands[i]

    def const(self, i: int, what: str) -> np.ndarray | None:
        """The compile-time value of operand i (None if omitted); an error if only known at run time."""
        if not self.has(i):
            return None
        v = self.operands[i]
        if not v.is_constant:
            raise RuntimeShapeOperandError(
                self.fail(f"{self.label}: {what} ({v.name!r}) is not known at compile time; s4c needs static "
                          f"shapes (bind the dynamic input dims with --input-shape)").args[0], v.name)
        return np.asarray(v.data)

    def result_names(self) -> list[str]:
        return [t.name for t in self.node.outputs]

    def emit_op(self, op_name: str, operands: list[Value], attrs: dict, n_results: int | None = None):
        names = self.result_names()
        if n_results is not None:
            names = names[:n_results]
        # Omitted optional results still need unique value names inside the IR.
        names = [n or f"{self.node.name or op_name}.unused{i}" for i, n in enumerate(names)]
        return self.emit(op_name, operands, attrs, names, self.node.name)


def _attrs_for(ctx: NodeContext, op_name: str) -> dict:
    schema = ops.REGISTRY[op_name].attrs
    attrs = {}
    for key in ctx.node.attrs:
        if key in IGNORED_ATTRS:
            continue
        if key not in schema:
            raise ctx.fail(f"{ctx.label}: attribute {key!r} is not supported")
        attrs[key] = ctx.attr(key)
    return attrs


def _generic(ctx: NodeContext):
    operands = list(ctx.operands)
    while operands and operands[-1] is None:
        operands.pop()
    if any(v is None for v in operands):
        raise ctx.fail(f"{ctx.label}: an omitted optional operand before a given one is not supported here")
    return ctx.emit_op(ctx.node.op, operands, _attrs_for(ctx, ctx.node.op))


def _alias(ctx: NodeContext):
    return [ctx.value(0)] + [None] * (len(ctx.node.outputs) - 1)


def _dropout(ctx: NodeContext):
    if ctx.has(2):
        training = ctx.const(2, "training_mode")
        ratio = ctx.const(1, "ratio") if ctx.has(1) else np.array(0.5)
        if bool(np.asarray(training).reshape(-1)[0]) and float(np.asarray(ratio).reshape(-1)[0]) != 0.0:
            raise ctx.fail(f"{ctx.label}: Dropout in training mode is not supported (s4c compiles for inference)")
    return _alias(ctx)


def _constant(ctx: NodeContext):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in ctx.node.attrs:
            raw = ctx.attr(key)
            dtype = np.float32 if "float" in key else (np.int64 if "int" in key else None)
            array = np.asarray(raw, dtype=dtype) if dtype else np.asarray(raw)
            return [Value.constant(ctx.result_names()[0], array)]
    raise ctx.fail(f"{ctx.label}: only tensor, float and int Constant attributes are supported")


def _shape_attr(ctx: NodeContext, i: int, what: str) -> list[int] | None:
    value = ctx.const(i, what)
    return None if value is None else [int(v) for v in value.reshape(-1)]


def _with_shape_operand(op_name: str, attr_name: str, operand: int = 1, what: str | None = None,
                        min_opset: int = 0):
    """An op whose operand `operand` is (since `min_opset`) what the IR keeps as attribute `attr_name`."""

    def importer(ctx: NodeContext):
        attrs = _attrs_for(ctx, op_name)
        if ctx.opset >= min_opset and len(ctx.operands) > operand:
            value = _shape_attr(ctx, operand, what or attr_name)
            if value is not None:
                attrs[attr_name] = value
        return ctx.emit_op(op_name, [ctx.value(0)], attrs)

    return importer


def _slice(ctx: NodeContext):
    names = ("starts", "ends", "axes", "steps")
    attrs = {n: _shape_attr(ctx, i + 1, n) for i, n in enumerate(names)}
    return ctx.emit_op("Slice", [ctx.value(0)], attrs)


def _split(ctx: NodeContext):
    x = ctx.value(0)
    attrs = _attrs_for(ctx, "Split") if "num_outputs" not in ctx.node.attrs else {}
    axis = int(ctx.attr("axis", 0))
    dim = x.shape[axis]
    split = _shape_attr(ctx, 1, "split") if len(ctx.operands) > 1 else ctx.attr("split")
    if split is None:
        n = int(ctx.attr("num_outputs", len(ctx.node.outputs)))
        chunk = -(-dim // n)  # opset 18: equal chunks, the last one smaller
        split = [min(chunk, dim - i * chunk) for i in range(n)]
    attrs.update(axis=axis, split=[int(s) for s in split])
    return ctx.emit_op("Split", [x], attrs)


def _constant_of_shape(ctx: NodeContext):
    attrs = {"shape": _shape_attr(ctx, 0, "shape"), "value": ctx.attr("value")}
    return ctx.emit_op("ConstantOfShape", [], attrs)


def _range(ctx: NodeContext):
    start, limit, delta = (ctx.const(i, n) for i, n in enumerate(("start", "limit", "delta")))
    return [Value.constant(ctx.result_names()[0], np.arange(start, limit, delta).astype(start.dtype))]


def _cast(ctx: NodeContext):
    to = onnx_dtype_to_ir(int(ctx.attr("to")), f"{ctx.label} target", ctx.fail)
    return ctx.emit_op("Cast", [ctx.value(0)], {"to": to})


def _cast_like(ctx: NodeContext):
    return ctx.emit_op("Cast", [ctx.value(0)], {"to": ctx.value(1).dtype})


def _clip(ctx: NodeContext):
    x = ctx.value(0)
    bounds = []
    for i, extreme in ((1, "min"), (2, "max")):
        if ctx.has(i):
            bounds.append(ctx.operands[i])
        elif i == 1 and ctx.has(2):  # Clip(x, "", max): make the missing lower bound explicit
            dt = np.dtype(x.data.dtype if x.is_constant else DTYPES[x.dtype])
            low = -np.inf if np.issubdtype(dt, np.floating) else np.iinfo(dt).min
            bounds.append(Value.constant(f"{ctx.node.name}.min", np.array(low, dt)))
    return ctx.emit_op("Clip", [x] + bounds, {})


def _layer_normalization(ctx: NodeContext):
    attrs = _attrs_for(ctx, "LayerNormalization")
    names = ctx.result_names()
    attrs["num_results"] = max(i + 1 for i, n in enumerate(names) if n) if any(names) else 1
    operands = [v for v in ctx.operands if v is not None]
    return ctx.emit_op("LayerNormalization", operands, attrs, n_results=attrs["num_results"])


def _reduce(op_name: str):
    def importer(ctx: NodeContext):
        attrs = _attrs_for(ctx, op_name)
        if len(ctx.operands) > 1:  # axes as an operand: ReduceSum since 13, the others since 18
            axes = _shape_attr(ctx, 1, "axes")
            if axes is not None:
                attrs["axes"] = axes
        return ctx.emit_op(op_name, [ctx.value(0)], attrs)
    return importer


def _cumsum(ctx: NodeContext):
    attrs = _attrs_for(ctx, "CumSum")
    x = ctx.value(0)
    axis_v = ctx.value(1)
    if not axis_v.is_constant:  # a RuntimeShapeOperandError: the backend adaptor can specialise it
        raise RuntimeShapeOperandError(
            ctx.fail(f"{ctx.label}: axis ({axis_v.name!r}) is not known at compile time; s4c needs a "
                     f"constant CumSum axis").args[0], axis_v.name)
    axis = np.asarray(axis_v.data)
    if axis.size != 1 or not np.issubdtype(axis.dtype, np.integer):
        raise ctx.fail(f"{ctx.label}: axis must be one integer, got {axis.dtype} {list(axis.shape)}")
    attrs["axis"] = int(axis.reshape(-1)[0])
    if not -max(x.type.rank, 1) <= attrs["axis"] < max(x.type.rank, 1):
        raise ctx.fail(f"{ctx.label}: axis {attrs['axis']} is out of range for rank {x.type.rank}")
    return ctx.emit_op("CumSum", [x], attrs)


def _trilu(ctx: NodeContext):
    attrs = _attrs_for(ctx, "Trilu")
    k = _shape_attr(ctx, 1, "k")  # the diagonal offset is an optional operand, the IR's attribute `k`
    if k is not None:
        attrs["k"] = k[0]
    return ctx.emit_op("Trilu", [ctx.value(0)], attrs)


def _dequantize_linear(ctx: NodeContext):
    attrs = _attrs_for(ctx, "DequantizeLinear")
    operands = [v for v in ctx.operands if v is not None]
    out_type = int(ctx.attr("output_dtype", 0) or 0)  # opset 23+: the result type, else the scale's
    out_dtype = onnx_dtype_to_ir(out_type, f"{ctx.label} output_dtype", ctx.fail) if out_type else None
    if out_dtype is None or out_dtype == ctx.value(1).dtype:
        return ctx.emit_op("DequantizeLinear", operands, attrs)
    name = ctx.result_names()[0]
    (wide,) = ctx.emit("DequantizeLinear", operands, attrs, [f"{name}.{ctx.value(1).dtype}"], ctx.node.name)
    return ctx.emit("Cast", [wide], {"to": out_dtype}, [name], ctx.node.name)


IMPORTERS: dict[str, Callable] = {
    "*": _generic,
    "Identity": _alias,
    "Dropout": _dropout,
    "Constant": _constant,
    "Reshape": _with_shape_operand("Reshape", "shape"),
    "Expand": _with_shape_operand("Expand", "shape"),
    "Tile": _with_shape_operand("Tile", "repeats"),
    "Squeeze": _with_shape_operand("Squeeze", "axes", min_opset=13),
    "Unsqueeze": _with_shape_operand("Unsqueeze", "axes", min_opset=13),
    "Slice": _slice,
    "Split": _split,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Cast": _cast,
    "CastLike": _cast_like,
    "Clip": _clip,
    "LayerNormalization": _layer_normalization,
    "DequantizeLinear": _dequantize_linear,
    "Trilu": _trilu,
    "CumSum": _cumsum,
    **{name: _reduce(name) for name in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                                        "ReduceL2")},
}

# The ONNX ops s4c imports: the ones with a rule above, and every IR op with the same name.
# (s4c's own ops, from s4c/ops/fused.py, are not ONNX ops even where a name is shared.)
_IR_ONLY = {name for name, opdef in ops.REGISTRY.items() if opdef.infer.__module__ == "s4c.ops.fused"}
SUPPORTED_OPS = (set(IMPORTERS) - {"*"}) | (set(ops.REGISTRY) - _IR_ONLY)
