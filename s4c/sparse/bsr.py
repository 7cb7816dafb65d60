"""BSR: block-row-compressed storage of r x c blocks (wins when nonzeros cluster into blocks).

Shapes not divisible by the block are zero-padded at the bottom/right edge: the last block row /
column may reach past the weight, those lanes always hold 0, and `to_dense()` crops them away.
Kernels must not read activations beyond `in` for such blocks (pad x, or peel the last block).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from s4c.sparse.base import (
    INDPTR_DTYPE,
    Layout,
    SparseTensor,
    ceil_div,
    check_array,
    check_indptr,
    check_shape,
    check_sorted_within_rows,
    check_values_dtype,
    check_weight,
    index_dtype,
)
from s4c.sparse.errors import SparseFormatError
from s4c.sparse.masks import kept_blocks, pad_to_multiple

# (r, c): r rows along `out`, c columns along `in`. r x 1 blocks suit output-stationary SIMD
# kernels (one activation broadcast, r outputs); 1 x c and square blocks suit dot-product units.
SUPPORTED_BLOCK_SHAPES: tuple[tuple[int, int], ...] = (
    (4, 1), (8, 1), (16, 1), (32, 1), (1, 4), (1, 8), (4, 4), (8, 8),
)


@dataclass(frozen=True)
class BSRLayout(Layout):
    """indptr int32[ceil(out/r)+1], indices (block column; smallest width)[nnzb], values[nnzb, r, c]."""

    block_rows: int
    block_cols: int
    kind = "bsr"

    def __post_init__(self):
        if (self.block_rows, self.block_cols) not in SUPPORTED_BLOCK_SHAPES:
            supported = ", ".join(f"{r}x{c}" for r, c in SUPPORTED_BLOCK_SHAPES)
            raise SparseFormatError(
                f"unsupported BSR block {self.block_rows}x{self.block_cols} (supported: {supported})")

    @property
    def block_shape(self) -> tuple[int, int]:
        return self.block_rows, self.block_cols

    def __str__(self) -> str:
        return f"bsr{self.block_rows}x{self.block_cols}"

    @property
    def ir_name(self) -> str:
        return f"bsr<{self.block_rows}x{self.block_cols}>"

    def pack(self, weight, *, prune: bool = False) -> BSRTensor:
        """Exact: every block holding a nonzero is kept (`prune` has nothing to do here)."""
        weight = check_weight(weight)
        r, c = self.block_shape
        kept = kept_blocks(weight != 0, r, c)
        padded = pad_to_multiple(weight, r, c)
        # [R, r, C, c] -> [R, C, r, c] is a view; boolean indexing then makes the one copy.
        blocks = padded.reshape(kept.shape[0], r, kept.shape[1], c).swapaxes(1, 2)
        indptr = np.zeros(kept.shape[0] + 1, dtype=INDPTR_DTYPE)
        np.cumsum(np.count_nonzero(kept, axis=1), out=indptr[1:])
        block_columns = np.nonzero(kept)[1].astype(index_dtype(kept.shape[1]))
        return BSRTensor(weight.shape, indptr, block_columns, blocks[kept])

    def from_arrays(self, shape, arrays: Mapping[str, np.ndarray]) -> BSRTensor:
        tensor = BSRTensor(shape, arrays["indptr"], arrays["indices"], arrays["values"])
        if tensor.layout != self:
            raise SparseFormatError(f"values hold {tensor.layout} blocks, expected {self}")
        return tensor

    def storage_bytes(self, shape, dtype, nnzb: int) -> int:
        out_dim, in_dim = shape
        r, c = self.block_shape
        return ((ceil_div(out_dim, r) + 1) * INDPTR_DTYPE.itemsize
                + nnzb * (index_dtype(ceil_div(in_dim, c)).itemsize
                          + r * c * np.dtype(dtype).itemsize))


@dataclass(frozen=True, eq=False, repr=False)
class BSRTensor(SparseTensor):
    """A weight in BSR; the block shape is values.shape[1:]. Arrays are validated and read-only."""

    shape: tuple[int, int]
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    def __post_init__(self):
        out_dim, in_dim = check_shape(self.shape)
        values = check_values_dtype(self.values)
        if values.ndim != 3:
            raise SparseFormatError(f"BSR values must be [nnzb, r, c], got shape {values.shape}")
        nnzb, r, c = values.shape
        layout = BSRLayout(r, c)
        block_grid = (ceil_div(out_dim, r), ceil_div(in_dim, c))
        indptr = check_array("indptr", self.indptr, INDPTR_DTYPE, (block_grid[0] + 1,))
        indices = check_array("indices", self.indices, index_dtype(block_grid[1]), (nnzb,))
        values = check_array("values", values, None, values.shape)
        check_indptr("indptr", indptr, nnzb)
        check_sorted_within_rows("indices", indptr, indices, block_grid[1])
        for name, value in (("shape", (out_dim, in_dim)), ("indptr", indptr),
                            ("indices", indices), ("values", values), ("_layout", layout)):
            object.__setattr__(self, name, value)
        self._check_edge_lanes_are_zero()

    def _check_edge_lanes_are_zero(self) -> None:
        """Lanes of edge blocks that reach past the weight must hold 0 (looks at edge blocks only)."""
        r, c = self._layout.block_shape
        grid_rows, grid_cols = self.block_grid
        rows_past_edge = grid_rows * r - self.shape[0]
        cols_past_edge = grid_cols * c - self.shape[1]
        last_row_blocks = self.values[self.indptr[-2]:]
        last_col_blocks = self.values[self.indices == grid_cols - 1]
        if (rows_past_edge and np.any(last_row_blocks[:, r - rows_past_edge:, :])) or (
                cols_past_edge and np.any(last_col_blocks[:, :, c - cols_past_edge:])):
            raise SparseFormatError("BSR edge blocks must hold 0 past the weight's edge")

    @property
    def layout(self) -> BSRLayout:
        return self._layout

    @property
    def nnzb(self) -> int:
        return self.values.shape[0]

    @property
    def block_grid(self) -> tuple[int, int]:
        """(block rows, block columns) of the edge-padded weight."""
        r, c = self._layout.block_shape
        return ceil_div(self.shape[0], r), ceil_div(self.shape[1], c)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return {"indptr": self.indptr, "indices": self.indices, "values": self.values}

    def _padded_dense(self) -> np.ndarray:
        r, c = self._layout.block_shape
        grid_rows, grid_cols = self.block_grid
        padded = np.zeros((grid_rows * r, grid_cols * c), dtype=self.values.dtype)
        block_rows = np.repeat(np.arange(grid_rows), np.diff(self.indptr))
        padded.reshape(grid_rows, r, grid_cols, c).swapaxes(1, 2)[block_rows, self.indices] = self.values
        return padded

    def to_dense(self) -> np.ndarray:
        out_dim, in_dim = self.shape
        padded = self._padded_dense()
        return padded if padded.shape == self.shape else padded[:out_dim, :in_dim].copy()

    @property
    def density(self) -> float:
        grid_rows, grid_cols = self.block_grid
        return self.nnzb / (grid_rows * grid_cols)

    def summary(self) -> str:
        return (f"{self._layout.ir_name} nnzb={self.nnzb} density={self.density:.3f} "
                f"bytes={self.nbytes}")
