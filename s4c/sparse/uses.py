"""Which weights a graph's weight-consuming ops read, and their sparsity: the analysis behind the
analyze-sparsity and select-sparse-layout passes, the layout report and `s4c inspect`.

A weight use is the weight operand of a Linear or LinearInt8 (an i8 weight), or of a MatMul / Gemm whose second operand is a 2-D
weight (the unfused forms), seen as W[out, in] (`in` = the reduction dim, the orientation the
layouts use). A weight is a constant, or a DequantizeWeight of an int8 constant (the zeros are the
int8 constant's; its values are what a backend stores).

    uses = weight_uses(graph)            # [WeightUse], in op order
    reports = analyze_uses(uses)         # [SparsityReport], one per use (shared weights analysed once)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from s4c.ir import Graph, Op, Value
from s4c.sparse.analysis import SparsityReport, analyze_sparsity

DEQUANT = "DequantizeWeight"


@dataclass(frozen=True)
class WeightUse:
    """One weight operand of one op."""

    op: Op
    value: Value          # the op's operand (the constant itself, or a DequantizeWeight result)
    source: Value         # the constant holding the stored values
    transposed: bool      # the constant is [in, out]: W is source.data.T
    tokens: int           # activation rows the op applies W to (product of the leading dims)

    @property
    def name(self) -> str:
        """The weight's name: its constant's."""
        return self.source.name

    @property
    def names(self) -> tuple[str, ...]:
        """What an override glob is matched against: the operand and constant names and the ONNX
        nodes the op implements."""
        names = [self.value.name]
        if self.source is not self.value:
            names.append(self.source.name)
        return tuple(names) + tuple(self.op.onnx_nodes)

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.source.shape
        return (cols, rows) if self.transposed else (rows, cols)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.data.dtype)

    def matrix(self) -> np.ndarray:
        """W[out, in] (a view, never a copy)."""
        return self.source.data.T if self.transposed else self.source.data


def _source(value: Value) -> Value | None:
    """The constant behind a weight operand (itself, or a DequantizeWeight's int8 input), or None.
    Constants whose values were elided from parsed IR text (no ndarray) are not weights here."""
    if value.type.rank != 2:
        return None
    if value.is_constant:
        return value if isinstance(value.data, np.ndarray) else None
    producer = value.producer
    if producer is not None and producer.op == DEQUANT and producer.inputs[0].is_constant:
        return _source(producer.inputs[0])
    return None


def weight_uses(graph: Graph) -> list[WeightUse]:
    """Every weight operand of a Linear / MatMul / Gemm, in op order."""
    uses = []
    for op in graph.ops:
        if op.op not in ("Linear", "LinearInt8", "MatMul", "Gemm") or len(op.inputs) < 2:
            continue
        x, w = op.inputs[0], op.inputs[1]
        if op.op == "Gemm" and op.attrs.get("transA", 0):
            continue
        source = _source(w)
        if source is None or x.is_constant or x.type.rank < 1:
            continue
        transposed = op.op == "MatMul" or (op.op == "Gemm" and not op.attrs.get("transB", 0))
        tokens = math.prod(x.shape[:-1])
        uses.append(WeightUse(op, w, source, transposed, tokens))
    return uses


def analyze_uses(uses: list[WeightUse]) -> list[SparsityReport]:
    """The sparsity report of each use's W[out, in] (a weight read by several ops is analysed once)."""
    cache: dict[tuple[int, bool], SparsityReport] = {}
    reports = []
    for use in uses:
        key = (id(use.source.data), use.transposed)
        if key not in cache:
            # a no-op for fuse-linear's weights (C order); the analysis is ~8x slower on a transposed view
            cache[key] = analyze_sparsity(np.ascontiguousarray(use.matrix()))
        reports.append(cache[key])
    return reports
