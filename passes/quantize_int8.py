"""quantize-int8: every Linear to int8 weights (per output channel) and int8 activations (per tensor
from calibration, or per token at run time), with int32 accumulation."""

from __future__ import annotations

import numpy as np

from s4c.errors import PassError
from s4c.ir import Graph, Op, TensorType, Value
from s4c.passes.base import Pass, PassResult, option
from s4c.quantization import linear_weight, quantizable_linear, quantize_weight_per_channel, scale_from_amax

MODES = ("auto", "static", "dynamic", "none")


class QuantizeInt8(Pass):
    """Quantise every f32 Linear of an activation by a compile-time weight (see s4c/ops/quant.py for
    the ops' exact semantics, which the reference evaluator computes as integer hardware does):

                 fp32                                          int8 (activations=static)

        x f32   W f32[out,in]   b            x f32        s_x f32[] (calibrated: amax / 127)
          \\       |           /                \\        /
           `--- Linear {act} -'                 QuantizeInt8            W_q i8[out,in]  s_w f32[out]
                   |                               | x_q i8            /              /
                   y f32                           `----- LinearInt8 {act, layout} -- b f32[out]
                                                              |     int32 acc = x_q . W_q^T
                                                              y f32 = act(f32(acc) * (s_x*s_w) + b)

      activations=dynamic (no calibration): QuantizeInt8(x) has no scale operand and two results,
      x_q and s_x f32[..., 1] = max|x| per token / 127, both read by LinearInt8.
      activations=none (weight-only int8): Linear(x, DequantizeWeight(W_q, s_w) {axis = 0}, b), the
      form every backend already runs.

    - Weights: symmetric per output channel, s_w[n] = max|W[n, :]| / 127, W_q = round(W / s_w) in
      [-127, 127]; zeros stay zeros, so sparsity (and select-sparse-layout's choice, which now sees an
      i8 weight) is kept. An int8 weight from the model (DequantizeWeight, per tensor or per output
      channel) is kept bit for bit; one scaled per input channel is dequantised and requantised. A
      weight shared by several Linears is quantised once.
    - Activations: one QuantizeInt8 per quantised value, however many Linears read it (the merged
      QKV and attention-output Linears read one each). Static scales come from `ranges`
      ("NAME=AMAX;NAME=AMAX", the clip threshold |x| <= AMAX of each activation by value name) or,
      from the driver's calibration step, the `amax` table this pass is constructed with
      (s4c.quantization.calibrate). `activations=auto` (default) is static when a table is given,
      else dynamic. A static run missing a quantised activation's range is a PassError naming it.
    - Everything else stays f32: attention, softmax, LayerNorm, GELU outside a Linear, embeddings.
    - Backend lowering: QuantizeInt8 is one elementwise (VPU / vector) pass; LinearInt8 is the int8
      GEMM with i32 accumulation (S4 SPU dt=i8, C VNNI / maddubs) and an epilogue that converts the
      accumulator, multiplies by the per-channel combined scale, adds the bias, applies the
      activation. A LinearInt8 whose only reader is another QuantizeInt8 can fuse that in
      (requantise in the epilogue).

    Stats: LinearInt8 made, QuantizeInt8 by kind (static / dynamic), weights quantised here vs int8
    weights kept from the model, weight-only Linears."""

    name = "quantize-int8"
    activations: str = option("auto", "static | dynamic | none (weight-only) | auto: static when ranges are given")
    ranges: str = option("", "NAME=AMAX;NAME=AMAX: clip threshold of each activation to quantise (static)")

    def __init__(self, amax: dict[str, float] | None = None, **values):
        super().__init__(**values)
        if self.activations not in MODES:
            raise PassError(f"pass {self.name}: option activations: expected one of {', '.join(MODES)}, "
                            f"got {self.activations!r}")
        self.amax = dict(amax or {})

    def _table(self) -> dict[str, float]:
        table = dict(self.amax)
        for item in filter(None, (s.strip() for s in self.ranges.split(";"))):
            name, sep, value = item.rpartition("=")
            try:
                if not sep or not name.strip():
                    raise ValueError
                table[name.strip()] = float(value)
            except ValueError:
                raise PassError(f"pass {self.name}: range {item!r} is not NAME=AMAX") from None
        return table

    def run(self, graph: Graph) -> PassResult:
        table = self._table()
        mode = self.activations if self.activations != "auto" else ("static" if table else "dynamic")
        taken = graph.names()

        def fresh(hint: str) -> str:
            name, n = hint, 0
            while name in taken:
                n += 1
                name = f"{hint}.{n}"
            taken.add(name)
            return name

        stats = {"LinearInt8": 0, "QuantizeInt8-static": 0, "QuantizeInt8-dynamic": 0, "weights-quantized": 0,
                 "weights-int8-kept": 0, "weight-only": 0}
        weights: dict[tuple, tuple[Value, Value]] = {}
        activations: dict[int, tuple[Value, Value]] = {}
        dequantized: dict[int, Value] = {}  # weight-only: id(w_q) -> its DequantizeWeight result
        new_ops: list[Op] = []

        def weight(op: Op) -> tuple[Value, Value] | None:
            found = linear_weight(op)
            source, key = found[-2], found[-1]
            if key not in weights:
                if found[0] == "int8":
                    q, scale = found[1], found[2]
                    stats["weights-int8-kept"] += 1
                    q_value = source
                    given = op.inputs[1].producer.inputs[1]  # the DequantizeWeight's scale
                    if given.dtype == "f32" and given.shape == (q.shape[0],):
                        weights[key] = (q_value, given)
                        return weights[key]
                else:
                    q, scale = quantize_weight_per_channel(found[1])
                    stats["weights-quantized"] += 1
                    q_value = Value.constant(fresh(f"{source.name}.i8"), q)
                weights[key] = (q_value, Value.constant(fresh(f"{source.name}.scale"), scale))
            return weights[key]

        for op in graph.ops:
            if not quantizable_linear(op):
                new_ops.append(op)
                continue
            found = linear_weight(op)
            if mode == "none":
                if found[0] == "int8":  # already weight-only int8 in a form the backends run
                    new_ops.append(op)
                    continue
                w_q, w_s = weight(op)
                if id(w_q) not in dequantized:  # one DequantizeWeight per stored weight
                    w = op.inputs[1]
                    dq = Op("DequantizeWeight", [w_q, w_s], [Value(fresh(f"{w.name}.dequant"), w.type)],
                            {"axis": 0}, onnx_nodes=op.onnx_nodes)
                    new_ops.append(dq)
                    dequantized[id(w_q)] = dq.output
                new_ops.append(Op("Linear", [op.inputs[0], dequantized[id(w_q)]] + list(op.inputs[2:]),
                                  list(op.outputs), dict(op.attrs), op.onnx_nodes))
                stats["weight-only"] += 1
                continue
            x = op.inputs[0]
            if id(x) not in activations:
                x_q = Value(fresh(f"{x.name}.i8"), TensorType("i8", x.shape))
                if mode == "static":
                    if x.name not in table:
                        raise PassError(f"pass {self.name}: no calibration range for activation {x.name!r} "
                                        f"(input of {op.describe()})")
                    x_s = Value.constant(fresh(f"{x.name}.scale"), scale_from_amax(table[x.name]))
                    new_ops.append(Op("QuantizeInt8", [x, x_s], [x_q], onnx_nodes=op.onnx_nodes))
                else:
                    x_s = Value(fresh(f"{x.name}.scale"), TensorType("f32", x.shape[:-1] + (1,)))
                    new_ops.append(Op("QuantizeInt8", [x], [x_q, x_s], onnx_nodes=op.onnx_nodes))
                stats[f"QuantizeInt8-{mode}"] += 1
                activations[id(x)] = (x_q, x_s)
            x_q, x_s = activations[id(x)]
            w_q, w_s = weight(op)
            new_ops.append(Op("LinearInt8", [x_q, w_q, x_s, w_s] + list(op.inputs[2:]), list(op.outputs),
                              dict(op.attrs), op.onnx_nodes))
            stats["LinearInt8"] += 1

        if any(stats.values()):
            read = {id(v) for op in new_ops for v in op.inputs} | {id(v) for v in graph.outputs}
            graph.ops = [op for op in new_ops
                         if not (op.op == "DequantizeWeight" and all(id(v) not in read for v in op.outputs))]
        return PassResult.of(stats)
