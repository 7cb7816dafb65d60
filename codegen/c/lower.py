"""Lowering an IR graph to C: `lower_graph` and the emission table (how each IR op becomes C).

`EMITTERS[op_name](lw, op)` lowers one op instance through the `CProgram` `lw` (program.py): it
asks for its operands in the layout it needs (`lw.get(value, fm)`), allocates its results
(`lw.out`) and appends steps: a call to a library kernel (s4c_kernels.h) or a generated function
`opN_kind(...)` with a strided loop nest (loops.py).

    fused ops (feature-major, kernels)   Linear (dense, csr, bsrRxC, nmN:M; int8 weights
                                         dequantised at init), LayerNorm, SkipLayerNorm,
                                         MultiHeadAttention, Embedding, Gelu
    elementwise (any layout, strided)    unary / binary / variadic ops, Where, Cast, Clip,
                                         DequantizeLinear / DequantizeWeight, Expand
    data movement (token-major)          Reshape & co. (aliases), Transpose, Slice, Split,
                                         Concat, Tile, Trilu, Gather, GatherElements,
                                         GatherND
    reductions / normalisation           Reduce*, CumSum, Softmax, LogSoftmax, LayerNormalization,
                                         MatMul (dense kernel for f32), Gemm
    compile-time                         Shape, Size, Range (constants), ConstantOfShape (init)

Where the entries live (each module registers into emit_common.EMITTERS on import):

    lower.py              lower_graph: the driver (inputs, int8-weight absorption, ops in order,
                          outputs, memory plan); re-exports EMITTERS
    emit_common.py        the registry (EMITTERS, @emits) and the helpers the emitters share
    emit_elementwise.py   unary / binary / variadic ops, Where, Cast, Clip, Expand, Dequantize*
    emit_movement.py      aliases, Transpose, Slice, Split, Concat, Tile, Trilu, Gather(ND/Elements), constants
    emit_reduce.py        Reduce*, CumSum, Softmax, LogSoftmax, MatMul, Gemm
    emit_transformer.py   Gelu, LayerNorm, SkipLayerNorm, LayerNormalization, MultiHeadAttention,
                          Embedding
    emit_linear.py        Linear: kernels per weight layout, weight packing, int8 weights
    emit_int8.py          QuantizeInt8, LinearInt8 (`--precision int8`: kernels/int8.c)

An op with no entry, or an instance an entry cannot take (e.g. a sparse layout on a weight that is
not a constant), is a TargetError naming the op and its ONNX node.
"""

from __future__ import annotations

# the emit_* modules register their emitters on import
from s4c.codegen.c import emit_elementwise, emit_int8, emit_movement, emit_reduce, emit_transformer  # noqa: F401
from s4c.codegen.c.emit_common import EMITTERS, unsupported
from s4c.codegen.c.emit_linear import absorb_weight_dequant
from s4c.codegen.c.options import COptions
from s4c.codegen.c.program import CProgram
from s4c.errors import TargetError
from s4c.ir import Graph

__all__ = ["EMITTERS", "lower_graph"]


def lower_graph(graph: Graph, options: COptions | None = None) -> CProgram:
    """The whole graph as steps, outputs bound, memory planned."""
    lw = CProgram(graph, options)
    for i, v in enumerate(graph.inputs):
        buf = lw._buffer(v.type.nbytes, "input", v.name, index=i)
        lw.set(v, lw._tensor(v.dtype, v.shape, None, buf, v.name))
    absorb_weight_dequant(lw)
    for i, op in enumerate(graph.ops):
        if id(op) in lw.absorbed:
            continue
        fn = EMITTERS.get(op.op)
        if fn is None:
            raise unsupported(op, f"op {op.op} is not supported")
        lw.op, lw.op_index = op, i
        try:
            fn(lw, op)
        except TargetError as e:
            if op.describe() in str(e):
                raise
            raise TargetError(f"{e} (in {op.describe()})") from None
    lw.bind_outputs()
    lw.plan_memory()
    return lw
