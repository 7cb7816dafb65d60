"""analyze-sparsity: the sparsity of every weight a weight-consuming op reads.

Also home of `weight_uses`, which finds those weights for select-sparse-layout, the layout report
and `s4c inspect`: the weight operand of every Linear, and of every MatMul / Gemm whose second
operand is a 2-D weight (the unfused forms), seen as W[out, in] (`in` = the reduction dim, the
orientation the layouts use). A weight is a constant, or a DequantizeWeight of an int8 constant
(the zeros are the int8 constant's; its values are what a backend stores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from s4c import ops as op_registry
from s4c.ir import Graph, Op, Value
from s4c.passes.base import Pass, PassResult
from s4c.sparse import SparsityReport, analyze_sparsity

DEQUANT = "DequantizeWeight"
# The Linear attribute this pass writes, when the op registry declares it (see `record`).
ATTR = "sparsity"


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
        if op.op not in ("Linear", "MatMul", "Gemm") or len(op.inputs) < 2:
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


def declares(op: Op, attr: str) -> bool:
    """True if the op registry declares `attr` for `op` (only declared attributes may be set:
    the verifier and the evaluator reject unknown ones)."""
    return op.op in op_registry.REGISTRY and attr in op_registry.get(op.op).attrs


def sparsity_attr(report: SparsityReport) -> list[str]:
    """The `sparsity` attribute: ["density=D", "nnz=N", "nm=N:M" | "nm=none",
    "bsrRxC=<block density>/<fill-in>" for every analysed block shape]."""
    pattern = report.nm_pattern
    items = [f"density={report.density:.4g}", f"nnz={report.nnz}",
             f"nm={pattern.n}:{pattern.m}" if pattern else "nm=none"]
    items += [f"bsr{s.block_shape[0]}x{s.block_shape[1]}={s.block_density:.4g}/{s.fill_in:.4g}"
              for s in report.blocks]
    return items


class AnalyzeSparsity(Pass):
    """Analyse every weight of every Linear (and unfused MatMul / Gemm by a weight): element
    density, for every candidate BSR block shape the block density and fill-in, and the tightest
    N:M pattern it satisfies exactly (s4c.sparse.analyze_sparsity, on W[out, in]).

    Results: the `sparsity` attribute of each Linear — a list of strings, e.g. ["density=0.1",
    "nnz=58982", "nm=none", "bsr4x1=0.3439/0.7093", ..., "bsr8x8=0.9988/0.8999"] (block density /
    fill-in) — when the op registry declares that attribute, and always the side table
    `self.results` (a list of (WeightUse, SparsityReport)), also the PassResult's `analysis`, for the
    caller. MatMul / Gemm have no such attribute: side table only. Weights are not modified.
    Stats: weights analysed, Linears whose attribute changed."""

    name = "analyze-sparsity"

    def __init__(self, **values):
        super().__init__(**values)
        self.results: list[tuple[WeightUse, SparsityReport]] = []

    def run(self, graph: Graph) -> PassResult:
        uses = weight_uses(graph)
        self.results = list(zip(uses, analyze_uses(uses)))
        annotated = 0
        for use, report in self.results:
            if declares(use.op, ATTR):
                items = sparsity_attr(report)
                if use.op.attrs.get(ATTR) != items:
                    use.op.attrs[ATTR] = items
                    annotated += 1
        stats = {k: v for k, v in {"weights": len(self.results), "annotated": annotated}.items() if v}
        return PassResult(annotated > 0, stats, self.results)
