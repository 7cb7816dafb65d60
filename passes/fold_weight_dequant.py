"""fold-weight-dequant: weight-only int8 dequantisation as one typed DequantizeWeight op."""

from __future__ import annotations

import numpy as np

from s4c.ir import Graph, Op, Value, numpy_dtype
from s4c.passes.base import Pass, PassResult

FLOAT_DTYPES = ("f16", "f32", "f64")


def _int8_weight(value: Value) -> bool:
    return value.dtype == "i8" and isinstance(value.data, np.ndarray)


def _float_constant(value: Value) -> bool:
    return value.dtype in FLOAT_DTYPES and isinstance(value.data, np.ndarray)


def per_channel_axis(scale_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> int | None:
    """The weight axis a broadcast scale varies along: -1 for one value for the whole weight, the
    axis when exactly one broadcast dim is not 1, None when the scale is not of that form (or would
    broadcast the weight to a bigger shape)."""
    if len(scale_shape) > len(weight_shape):
        return None
    aligned = (1,) * (len(weight_shape) - len(scale_shape)) + tuple(scale_shape)
    varying = [i for i, d in enumerate(aligned) if d != 1]
    if len(varying) > 1 or any(aligned[i] != weight_shape[i] for i in varying):
        return None
    return varying[0] if varying else -1


class FoldWeightDequant(Pass):
    """Rewrite weight-only int8 dequantisation into `DequantizeWeight(w_i8, scale) {axis}`, the
    typed "int8 weight + scale" that fuse-linear accepts as a Linear weight and backends store as
    int8 (see s4c/ops/fused.py for the op):

    - `Mul(Cast(w_i8 const) {to = f32}, scale const)` (either operand order), where the scale is
      one value or varies along one axis of the weight (any broadcastable shape, e.g. [256] or
      [1, 256] for a [64, 256] weight) and does not broadcast the weight to a bigger shape;
    - `DequantizeLinear(w_i8 const, scale const, zero_point const?)`, per tensor or per axis, when
      the zero point is absent or all zeros;
    - a `Cast(w_i8 const) {to = f32}` no Mul scales (its scale is 1: e.g. after simplify-algebra
      removed a `* 1`) becomes `DequantizeWeight(w_i8, 1.0)`, so int8 weights have one form;
    - then `Transpose(DequantizeWeight(w))` whose DequantizeWeight has no other reader: the int8
      constant is transposed instead (the axis follows), so a transposed weight stays int8.
    The rewritten op keeps the result value (name, readers); a Cast or DequantizeWeight it leaves
    unread is removed, one still read elsewhere stays.

    Kept as they are (still correct, evaluated as written, just not the int8 fast path):
    - a non-zero zero point: DequantizeWeight is symmetric so a backend can run the int8 product and
      scale the result per channel; `(w - zp) * scale` would need a zero-point correction term
      per output the backends do not implement, and `w - zp` can leave the int8 range, so it
      cannot be folded into the weight either;
    - uint8 weights, blocked DequantizeLinear (block_size > 0), scales varying along two axes, and
      weights or scales computed at run time."""

    name = "fold-weight-dequant"

    def run(self, graph: Graph) -> PassResult:
        casts: list[Op] = []  # Casts a rewritten Mul read: dropped below unless read elsewhere
        # DequantizeWeight ops made, by the form they were written in
        stats = {"cast-mul": 0, "dequantize-linear": 0, "cast-unit-scale": 0, "transposed": 0}
        for index, op in enumerate(graph.ops):
            rewritten = self._rewrite(graph, op)
            if rewritten is not None:
                casts += [v.producer for v in op.inputs if v.producer is not None]
                graph.ops[index] = rewritten
                stats["cast-mul" if op.op == "Mul" else "dequantize-linear"] += 1
        if casts:
            read = {id(v) for op in graph.ops for v in op.inputs} | {id(v) for v in graph.outputs}
            unread = {id(op) for op in casts if id(op.output) not in read}
            graph.ops = [op for op in graph.ops if id(op) not in unread]
        for index, op in enumerate(graph.ops):
            if op.op == "Cast" and _int8_weight(op.inputs[0]) and op.attrs["to"] in FLOAT_DTYPES:
                unit = Value.constant(graph.fresh_name(f"{op.inputs[0].name}.unit_scale"),
                                      np.ones((), numpy_dtype(op.attrs["to"])))
                graph.ops[index] = self._dequantize_weight(graph, op, op.inputs[0], unit, -1)
                stats["cast-unit-scale"] += 1
        stats["transposed"] = self._fold_transposes(graph)
        return PassResult.of(stats)

    def _rewrite(self, graph: Graph, op: Op) -> Op | None:
        if op.op == "Mul":
            return self._from_cast_mul(graph, op)
        if op.op == "DequantizeLinear":
            return self._from_dequantize_linear(graph, op)
        return None

    def _from_cast_mul(self, graph: Graph, mul: Op) -> Op | None:
        for cast_position in (0, 1):
            cast_result, scale = mul.inputs[cast_position], mul.inputs[1 - cast_position]
            cast = cast_result.producer
            if cast is None or cast.op != "Cast" or not _int8_weight(cast.inputs[0]):
                continue
            weight = cast.inputs[0]
            if not _float_constant(scale) or scale.dtype != cast_result.dtype \
                    or mul.output.shape != weight.shape:
                continue
            axis = per_channel_axis(scale.shape, weight.shape)
            if axis is None:
                continue
            return self._dequantize_weight(graph, mul, weight, scale, axis)
        return None

    def _from_dequantize_linear(self, graph: Graph, dq: Op) -> Op | None:
        weight, scale = dq.inputs[0], dq.inputs[1]
        if not _int8_weight(weight) or not _float_constant(scale) or dq.attrs.get("block_size", 0):
            return None
        if len(dq.inputs) > 2:
            zero_point = dq.inputs[2]
            if not isinstance(zero_point.data, np.ndarray) or np.any(zero_point.data != 0):
                return None
        if scale.type.size == 1:
            axis = -1
        elif scale.type.rank == 1 and weight.type.rank > 0:
            axis = dq.attrs.get("axis", 1) % weight.type.rank
            if scale.shape[0] != weight.shape[axis]:
                return None
        else:
            return None
        return self._dequantize_weight(graph, dq, weight, scale, axis)

    @staticmethod
    def _dequantize_weight(graph: Graph, op: Op, weight: Value, scale: Value, axis: int) -> Op:
        """DequantizeWeight producing `op`'s result; axis -1 means one scale for the whole weight."""
        want = () if axis < 0 else (weight.shape[axis],)
        if scale.shape != want:
            scale = Value.constant(graph.fresh_name(f"{scale.name}.{'scalar' if axis < 0 else 'per_channel'}"),
                                   scale.data.reshape(want))
        return Op("DequantizeWeight", [weight, scale], [op.output], {"axis": max(axis, 0)},
                  onnx_nodes=op.onnx_nodes)

    @staticmethod
    def _fold_transposes(graph: Graph) -> int:
        users = graph.users()
        replaced: set[int] = set()
        for index, op in enumerate(graph.ops):
            if op.op != "Transpose":
                continue
            dequant = op.inputs[0].producer
            if dequant is None or dequant.op != "DequantizeWeight" or graph.is_output(dequant.output) \
                    or len(users.get(id(dequant.output), ())) != 1:
                continue
            weight, scale = dequant.inputs
            perm = op.attrs.get("perm") or list(range(weight.type.rank))[::-1]
            transposed = Value.constant(graph.fresh_name(f"{weight.name}.transposed"),
                                        np.transpose(weight.data, perm).copy(order="C"))
            axis = perm.index(dequant.attrs["axis"] % weight.type.rank) if scale.type.rank == 1 else 0
            graph.ops[index] = Op("DequantizeWeight", [transposed, scale], [op.output], {"axis": axis},
                                  onnx_nodes=dequant.onnx_nodes + op.onnx_nodes)
            replaced.add(id(dequant))  # its one reader now reads the transposed weight
        graph.ops = [op for op in graph.ops if id(op) not in replaced]
        return len(replaced)
