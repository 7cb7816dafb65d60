"""What every target description shares: the `Target` interface, the shapes a cost is asked for,
and `layout_work`, the per-token counts (stored values, indices, rows, bytes) of a weight in a
layout that both cost models price.

A cost is a *model*: an estimate in seconds of one weight-consuming op (a Linear) with its weight
in one layout. Only the ranking of layouts for the same op matters to layout selection; the
absolute numbers go into the compile report.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

from s4c.errors import TargetError
from s4c.sparse import (BSRLayout, CSRLayout, DenseLayout, Layout, NMLayout, SparseFormatError,
                        SparsityReport, parse_layout)

# The ops a cost model prices: a weight W[out, in] applied to `tokens` activation rows.
WEIGHT_OPS = ("Linear", "LinearInt8", "MatMul", "Gemm")


@dataclass(frozen=True)
class LinearShapes:
    """A weight-consuming op as the cost models see it: y[tokens, out] = x[tokens, in] @ W^T.

    `report` is the weight's sparsity analysis (it decides what each layout stores)."""

    tokens: int
    report: SparsityReport

    @property
    def out_features(self) -> int:
        return self.report.shape[0]

    @property
    def in_features(self) -> int:
        return self.report.shape[1]

    @property
    def dense_macs(self) -> int:
        return self.tokens * self.out_features * self.in_features


@dataclass(frozen=True)
class LayoutWork:
    """What a kernel running a weight in `layout` handles, per activation row (token).

    values:  stored value slots = multiply-adds per token (zeros stored inside blocks or N:M
             groups included: that is the fill-in a block kernel pays for)
    indices: stored indices (0 dense, nnz CSR, blocks BSR, slots N:M)
    rows:    output rows (every format writes each of them once per token)
    blocks:  stored BSR blocks (0 for other layouts)
    bytes:   storage bytes in the weight's own dtype (what `layout.pack(W).nbytes` reports)
    """

    layout: Layout
    values: int
    indices: int
    rows: int
    blocks: int
    bytes: int


def layout_work(layout: Layout, report: SparsityReport) -> LayoutWork:
    """The counts of `layout` for the weight `report` describes (no packing)."""
    out_dim, in_dim = report.shape
    nbytes = report.storage_bytes(layout)
    if isinstance(layout, DenseLayout):
        return LayoutWork(layout, out_dim * in_dim, 0, out_dim, 0, nbytes)
    if isinstance(layout, CSRLayout):
        return LayoutWork(layout, report.nnz, report.nnz, out_dim, 0, nbytes)
    if isinstance(layout, BSRLayout):
        r, c = layout.block_shape
        nnzb = report.block((r, c)).kept_blocks
        return LayoutWork(layout, nnzb * r * c, nnzb, out_dim, nnzb, nbytes)
    if isinstance(layout, NMLayout):
        slots = out_dim * math.ceil(in_dim / layout.m) * layout.n
        return LayoutWork(layout, slots, slots, out_dim, 0, nbytes)
    raise TargetError(f"no work model for layout {layout}")


def as_layout(layout: Layout | str) -> Layout:
    """A Layout from a Layout or a layout string (TargetError naming the supported ones)."""
    if isinstance(layout, Layout):
        return layout
    try:
        return parse_layout(layout)
    except SparseFormatError as e:
        raise TargetError(str(e)) from None


class Target(abc.ABC):
    """A backend as layout selection sees it: the layouts it runs and a cost model.

    Subclasses set `name`, `supported_layouts` (dense first) and implement `linear_cost`."""

    name: str = ""
    supported_layouts: tuple[Layout, ...] = ()
    # Any N:M with M up to this runs too (0: only the listed patterns), e.g. nm1:20 for a weight
    # pruned 1:20; `candidates` offers the weight's own tightest pattern.
    nm_max_m: int = 0
    # Also offer N:M with fill-in: for every M, N = the fullest group's count (SparsityReport.nm_fill_in).
    nm_fill_in: bool = False

    @property
    def supported_names(self) -> tuple[str, ...]:
        return tuple(str(layout) for layout in self.supported_layouts)

    def supports(self, layout: Layout | str) -> bool:
        layout = as_layout(layout)
        return layout in self.supported_layouts or (isinstance(layout, NMLayout) and layout.m <= self.nm_max_m)

    def cost(self, op: str, layout: Layout | str, shapes: LinearShapes) -> float:
        """Modelled seconds of `op` (Linear / MatMul / Gemm by a weight) with its weight in `layout`.

        TargetError if the target does not run `layout` or the op is not weight-consuming."""
        layout = as_layout(layout)
        if op not in WEIGHT_OPS:
            raise TargetError(f"target {self.name}: no cost model for op {op!r} (weight ops: {', '.join(WEIGHT_OPS)})")
        if not self.supports(layout):
            raise TargetError(f"target {self.name} does not run layout {layout} "
                              f"(supported: {', '.join(self.supported_names)})")
        if isinstance(layout, NMLayout) and not shapes.report.satisfies(layout):
            raise TargetError(f"the weight is not {layout.n}:{layout.m} compliant; {layout} cannot hold it")
        return self.linear_cost(layout_work(layout, shapes.report), shapes)

    def candidates(self, report: SparsityReport) -> list[Layout]:
        """The supported layouts that can hold the weight exactly: every listed layout except
        N:M patterns the weight does not satisfy (BSR always can: its cost counts the fill-in),
        then the weight's tightest N:M pattern when it is not listed (nm1:20 for a weight pruned
        1:20) and, with `nm_fill_in`, N:M with fill-in for every group size M."""
        listed = [layout for layout in self.supported_layouts
                  if not isinstance(layout, NMLayout) or report.satisfies(layout)]
        tightest = [report.nm_pattern] if report.nm_pattern is not None else []
        # Of the fill-in patterns only the one storing the fewest slots (ties: the smaller M): an
        # N:M kernel's work and weight bytes are its slots, so the others cannot be cheaper.
        fill_in = min(report.nm_fill_in(self.nm_max_m) if self.nm_fill_in else [],
                      key=lambda p: (layout_work(p, report).values, p.m), default=None)
        extra = [layout for layout in tightest + [fill_in] if layout is not None and self.supports(layout)]
        return listed + [layout for layout in dict.fromkeys(extra) if layout not in listed]

    @abc.abstractmethod
    def linear_cost(self, work: LayoutWork, shapes: LinearShapes) -> float:
        """Seconds for one op of `shapes` storing what `work` counts."""

    def describe(self) -> str:
        """One line for reports: what the cost model is and where its numbers come from."""
        return self.name
