"""analyze-sparsity: the sparsity of every weight a weight-consuming op reads.

A thin pass over `s4c.sparse.uses` (`weight_uses` finds the weights, `analyze_uses` analyses them;
select-sparse-layout, the layout report and `s4c inspect` use the same analysis): it records each
Linear's result in its `sparsity` attribute.
"""

from __future__ import annotations

from s4c import ops as op_registry
from s4c.ir import Graph, Op
from s4c.passes.base import Pass, PassResult
from s4c.sparse import SparsityReport
from s4c.sparse.uses import WeightUse, analyze_uses, weight_uses

# The Linear attribute this pass writes, when the op registry declares it (see `record`).
ATTR = "sparsity"


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
