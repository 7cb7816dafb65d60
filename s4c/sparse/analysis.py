"""Sparsity analysis of weights: what each layout would keep, store and cost, without packing.

The `analyze-sparsity` pass and `s4c inspect` wrap these. Everything is vectorised over the nonzero
mask (see masks.py) so a whole BERT-base model is analysed in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from s4c.sparse.base import Layout, ceil_div, transposed
from s4c.sparse.bsr import SUPPORTED_BLOCK_SHAPES, BSRLayout
from s4c.sparse.csr import CSRLayout
from s4c.sparse.dense import DenseLayout
from s4c.sparse.errors import SparseFormatError
from s4c.sparse.masks import any_in_col_groups, any_in_row_groups
from s4c.sparse.nm import NM_MAX_M, SUPPORTED_NM_PATTERNS, NMLayout

# best_block_shape accepts a block only if at most this fraction of the values it stores are
# zeros. At 25% a block kernel does 4/3 of the ideal multiply-adds, which its regular, vectorised
# inner loop (and one index per block instead of per value) still typically repays.
DEFAULT_MAX_FILL_IN = 0.25

# N:M group sizes analysed by default: every M an N:M layout may have, so a weight pruned 1:20
# (M not a power of two, nor a divisor of its width) is recognised.
NM_GROUP_SIZES: tuple[int, ...] = tuple(range(2, NM_MAX_M + 1))


@dataclass(frozen=True)
class BlockStats:
    """How a weight would fare stored as BSR with one block shape (edge blocks zero-padded)."""

    block_shape: tuple[int, int]
    kept_blocks: int  # blocks holding at least one nonzero
    total_blocks: int  # blocks of the edge-padded grid
    nnz: int  # nonzeros of the weight

    @property
    def block_density(self) -> float:
        """Fraction of blocks kept."""
        return self.kept_blocks / self.total_blocks

    @property
    def fill_in(self) -> float:
        """Zeros stored inside kept blocks, as a fraction of stored values (0 when none is kept)."""
        stored = self.kept_blocks * self.block_shape[0] * self.block_shape[1]
        return 1.0 - self.nnz / stored if stored else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """The sparsity of one weight W[out, in]: density, per-block-shape stats and N:M compliance."""

    shape: tuple[int, int]
    dtype: np.dtype
    nnz: int
    blocks: tuple[BlockStats, ...]
    # Group size M along `in` -> the most nonzeros any aligned group of M holds.
    max_nonzeros_per_group: dict[int, int]

    @property
    def density(self) -> float:
        """Fraction of elements that are nonzero."""
        return self.nnz / (self.shape[0] * self.shape[1])

    def block(self, block_shape: tuple[int, int]) -> BlockStats:
        for stats in self.blocks:
            if stats.block_shape == tuple(block_shape):
                return stats
        raise SparseFormatError(f"block shape {block_shape} was not analysed")

    def satisfies(self, pattern: NMLayout) -> bool:
        """True if the weight packs into `pattern` exactly (no group holds more than N nonzeros)."""
        if pattern.m not in self.max_nonzeros_per_group:
            raise SparseFormatError(f"N:M groups of {pattern.m} were not analysed")
        return self.max_nonzeros_per_group[pattern.m] <= pattern.n

    @property
    def nm_pattern(self) -> NMLayout | None:
        """The tightest N:M pattern the weight satisfies exactly among the named patterns
        (SUPPORTED_NM_PATTERNS) and 1:M for every analysed M, or None: the structure a pruner
        left (1:20 when every aligned group of 20 holds at most one nonzero).

        Tightest = lowest N/M; on a tie the smaller M (1:4 implies 2:8, not the reverse).
        """
        patterns = {*SUPPORTED_NM_PATTERNS, *((1, m) for m in self.max_nonzeros_per_group)}
        compliant = [NMLayout(n, m) for n, m in patterns
                     if m in self.max_nonzeros_per_group and self.satisfies(NMLayout(n, m))]
        return min(compliant, key=lambda p: (p.n / p.m, p.m), default=None)

    def nm_fill_in(self, max_m: int = NM_MAX_M) -> list[NMLayout]:
        """For every analysed M <= max_m, the N:M layout with N = the most nonzeros any group of M
        holds (at least 1): it stores the weight exactly, the emptier groups padded with zeros.
        Groups of M that are ever full (N = M) are left out: that is dense with indices."""
        return [NMLayout(max(n, 1), m) for m, n in sorted(self.max_nonzeros_per_group.items())
                if m <= max_m and n < m]

    def best_block_shape(self, max_fill_in: float = DEFAULT_MAX_FILL_IN) -> tuple[int, int] | None:
        """See `best_block_shape`."""
        return best_block_shape(self.blocks, max_fill_in)

    def storage_bytes(self, layout: Layout) -> int:
        """Bytes the weight would take in `layout` (what `pack(...).nbytes` would report)."""
        if isinstance(layout, DenseLayout):
            return layout.storage_bytes(self.shape, self.dtype)
        if isinstance(layout, CSRLayout):
            return layout.storage_bytes(self.shape, self.dtype, self.nnz)
        if isinstance(layout, BSRLayout):
            return layout.storage_bytes(self.shape, self.dtype, self.block(layout.block_shape).kept_blocks)
        if isinstance(layout, NMLayout):
            return layout.storage_bytes(self.shape, self.dtype)
        raise SparseFormatError(f"no byte accounting for layout {layout}")

    def summary(self) -> str:
        """One line for `s4c inspect`, e.g. `density=0.100 nm=none best_block=16x1 fill_in=0.000`."""
        pattern = self.nm_pattern
        best = self.best_block_shape()
        block_text = f"{best[0]}x{best[1]} fill_in={self.block(best).fill_in:.3f}" if best else "none"
        return (f"density={self.density:.3f} nm={f'{pattern.n}:{pattern.m}' if pattern else 'none'} "
                f"best_block={block_text}")


def best_block_shape(blocks: Iterable[BlockStats],
                     max_fill_in: float = DEFAULT_MAX_FILL_IN) -> tuple[int, int] | None:
    """The largest block shape (by r*c) whose fill-in is <= `max_fill_in`, or None if none is.

    Ties in area go to the lower fill-in, then to the earlier shape in `blocks`. This only ranks
    block shapes; whether BSR beats dense or CSR at all is the caller's decision (compare density
    or `SparsityReport.storage_bytes`).
    """
    candidates = [(-s.block_shape[0] * s.block_shape[1], s.fill_in, index, s.block_shape)
                  for index, s in enumerate(blocks) if s.fill_in <= max_fill_in]
    return min(candidates)[3] if candidates else None


def analyze_sparsity(weight,
                     block_shapes: Iterable[tuple[int, int]] = SUPPORTED_BLOCK_SHAPES,
                     group_sizes: Iterable[int] = NM_GROUP_SIZES,
                     ) -> SparsityReport:
    """Analyse one 2-D weight W[out, in] (any numeric dtype) for every block shape and N:M group."""
    weight = np.asarray(weight)
    if weight.ndim != 2 or 0 in weight.shape:
        raise SparseFormatError(f"can only analyse a non-empty 2-D weight, got shape {weight.shape}")
    group_sizes = tuple(group_sizes)
    if any(not 1 <= m <= 255 for m in group_sizes):
        raise SparseFormatError(f"N:M group sizes must be 1..255 (counted in uint8), got {group_sizes}")
    out_dim, in_dim = weight.shape
    mask = weight != 0
    nnz = int(np.count_nonzero(mask))
    blocks = tuple(
        BlockStats((r, c), int(np.count_nonzero(any_in_col_groups(rows_any, c))),
                   ceil_div(out_dim, r) * ceil_div(in_dim, c), nnz)
        for (r, c), rows_any in _row_reductions(mask, block_shapes))
    max_per_group = _max_nonzeros_per_group(mask, group_sizes)
    return SparsityReport((out_dim, in_dim), weight.dtype, nnz, blocks, max_per_group)


def analyze_weights(weights: Mapping[str, np.ndarray], **options) -> dict[str, SparsityReport]:
    """`analyze_sparsity` for each named weight (options are passed through)."""
    return {name: analyze_sparsity(weight, **options) for name, weight in weights.items()}


def nm_compliance(weight) -> NMLayout | None:
    """The tightest supported N:M pattern `weight` satisfies exactly along `in`, or None."""
    return analyze_sparsity(weight, block_shapes=()).nm_pattern


def _row_reductions(mask: np.ndarray, block_shapes: Iterable[tuple[int, int]]):
    """Yield ((r, c), mask reduced over groups of r rows) for each block shape.

    A reduction over r rows is built from a cached one over a divisor of r (16 from 8 from 4):
    the result is identical, since edge padding is zeros, and each step reads far less data.
    """
    by_rows = {1: mask}
    for r, c in block_shapes:
        if r not in by_rows:
            divisor = max(k for k in by_rows if r % k == 0)
            by_rows[r] = any_in_row_groups(by_rows[divisor], r // divisor)
        yield (r, c), by_rows[r]


def _max_nonzeros_per_group(mask: np.ndarray, group_sizes: Iterable[int]) -> dict[int, int]:
    """{M: the most nonzeros any aligned group of M columns holds (the last group may be short)}.

    A running count over `in`, stored [in + 1, out] so that each M reads whole contiguous rows at
    its group edges (strided column reads, or numpy's cumsum along a row, are ~5x slower). The count
    is uint8 and wraps, which leaves every difference exact: a group of M <= 255 holds fewer than
    256 nonzeros. ~5 ms for a 3072x768 weight and all 31 group sizes."""
    out_dim, in_dim = mask.shape
    columns = transposed(mask, strip=32).view(np.uint8)      # [in, out]
    running = np.empty((in_dim + 1, out_dim), dtype=np.uint8)
    running[0] = 0
    for col in range(in_dim):  # one vector add per column: faster than any cumsum over this layout
        np.add(running[col], columns[col], out=running[col + 1])
    result = {}
    for m in sorted(set(group_sizes)):
        full = in_dim // m
        worst = int((running[m:full * m + 1:m] - running[0:(full - 1) * m + 1:m]).max()) if full else 0
        if in_dim % m:
            worst = max(worst, int((running[in_dim] - running[full * m]).max()))
        result[m] = worst
    return result
