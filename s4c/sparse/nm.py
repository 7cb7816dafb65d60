"""N:M structured sparsity along the reduction dim `in`: at most N nonzeros in every aligned group
of M columns (wins when hardware or kernels exploit the fixed pattern, e.g. 2:4 units).

When `in` is not a multiple of M the last group is zero-padded (768 inputs at 1:20: 38 groups of
20 and one of 8). Every group stores exactly N (value, offset) slots; groups with fewer than N
nonzeros are padded with value-0 slots (the fill-in an unstructured weight pays when stored as
N:M with N = its fullest group's count).

Any 1 <= N <= M <= NM_MAX_M is a layout: the S4 SPU's input mux selects from up to 32 columns and
the C kernel takes N, M at run time. SUPPORTED_NM_PATTERNS are the named patterns: the C kernel's
compiled-in fast paths, offered to layout selection wherever a weight complies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from s4c.sparse.base import (
    Layout,
    SparseTensor,
    ceil_div,
    check_array,
    check_shape,
    check_values_dtype,
    check_weight,
)
from s4c.sparse.errors import NotNMCompliantError, SparseFormatError
from s4c.sparse.masks import pad_to_multiple

SUPPORTED_NM_PATTERNS: tuple[tuple[int, int], ...] = ((2, 4), (1, 4), (2, 8), (1, 8), (1, 16), (1, 32))

NM_MAX_M = 32  # widest group: the S4 SPU's input mux (s4c.s4.ops_spu.MAX_M); offsets fit uint8

NM_INDEX_DTYPE = np.dtype(np.uint8)  # an offset inside a group of M <= 32 always fits


@dataclass(frozen=True)
class NMLayout(Layout):
    """values[out, ceil(in/M)*N] and indices uint8[out, ceil(in/M)*N] (offset 0..M-1 in its group)."""

    n: int
    m: int
    kind = "nm"

    def __post_init__(self):
        if not 1 <= self.n <= self.m <= NM_MAX_M:
            raise SparseFormatError(f"unsupported N:M pattern {self.n}:{self.m} (supported: 1 <= N <= M <= "
                                    f"{NM_MAX_M}, e.g. 2:4, 1:16, 1:20)")

    def __str__(self) -> str:
        return f"nm{self.n}:{self.m}"

    @property
    def ir_name(self) -> str:
        return f"nm<{self.n}:{self.m}>"

    @property
    def density(self) -> float:
        return self.n / self.m

    def pack(self, weight, *, prune: bool = False) -> NMTensor:
        """Exact for a compliant weight; otherwise NotNMCompliantError unless `prune=True`, which
        keeps the N largest-magnitude values of each group (ties: the lower offset wins)."""
        weight = check_weight(weight)
        out_dim, in_dim = weight.shape
        n, m = self.n, self.m
        group_count = ceil_div(in_dim, m)
        if prune:
            groups = pad_to_multiple(weight, 1, m).reshape(out_dim, group_count, m)
            keep = _largest_in_each_group(groups, n) & (groups != 0)
            weight = np.where(keep, groups, 0).astype(weight.dtype).reshape(out_dim, -1)[:, :in_dim]
        # Work from the nonzeros (~10% of a pruned weight) rather than every entry: flat positions
        # in row-major order, so a group's nonzeros are adjacent and in offset order. `!= 0` first:
        # flatnonzero of a bool mask is ~6x faster than of the floats, and the same set.
        flat = np.flatnonzero(weight != 0)
        row, col = np.divmod(flat, in_dim)
        group, offset = np.divmod(col, m)
        group += row * group_count
        counts = np.bincount(group, minlength=out_dim * group_count)
        if not prune:
            self._raise_unless_compliant(counts.reshape(out_dim, group_count), in_dim)
        offsets, values = _slots(group, offset, counts, n, weight.reshape(-1)[flat])
        offsets = offsets.reshape(out_dim, group_count, n)
        last_group_width = in_dim - (group_count - 1) * m
        if last_group_width < n:
            # A last group narrower than N cannot hold N distinct in-range offsets; padding slots
            # repeat its last column so no offset ever points past the weight.
            np.minimum(offsets[:, -1, :], last_group_width - 1, out=offsets[:, -1, :])
        return NMTensor((out_dim, in_dim), n, m, offsets.reshape(out_dim, -1), values.reshape(out_dim, -1))

    def _raise_unless_compliant(self, counts: np.ndarray, in_dim: int) -> None:
        """`counts`: [out, groups] nonzeros per group."""
        worst = np.unravel_index(np.argmax(counts), counts.shape)
        if counts[worst] > self.n:
            row, group = (int(i) for i in worst)
            first = group * self.m
            last = min(first + self.m, in_dim) - 1
            raise NotNMCompliantError(
                f"weight is not {self.n}:{self.m} along `in`: row {row}, columns {first}..{last} "
                f"hold {counts[worst]} nonzeros (at most {self.n}); pass prune=True to keep "
                f"the {self.n} largest per group")

    def from_arrays(self, shape, arrays: Mapping[str, np.ndarray]) -> NMTensor:
        return NMTensor(shape, self.n, self.m, arrays["indices"], arrays["values"])

    def storage_bytes(self, shape, dtype) -> int:
        out_dim, in_dim = shape
        slots = out_dim * ceil_div(in_dim, self.m) * self.n
        return slots * (np.dtype(dtype).itemsize + NM_INDEX_DTYPE.itemsize)


def _slots(group: np.ndarray, offset: np.ndarray, counts: np.ndarray, n: int, kept: np.ndarray):
    """(uint8 offsets, values), [groups * n] each: every group's N slots in ascending offset order,
    its kept entries (`group`, `offset`, `kept`: one per entry, grouped and in offset order; `counts`
    per group, at most N) and, as value-0 padding, its earliest other offsets.

    Where slots go, without sorting: with k kept, the padding is the first N - k free offsets, all
    below N. So some t splits the slots: slot j < t holds offset j (kept or padding), and the
    kept entries at offsets >= t fill the last slots in order. The kept entry of rank r (0-based
    in its group) at offset o therefore sits at slot min(o, N - k + r): o when o < t (all of
    [0, o) is taken), N - k + r otherwise. Start from every slot j holding offset j with value 0
    and write the kept entries over it."""
    starts = np.cumsum(counts) - counts
    rank = np.arange(group.size) - starts[group]
    slot = np.minimum(offset, n - counts[group] + rank)
    slot += group * n
    offsets = np.tile(np.arange(n, dtype=NM_INDEX_DTYPE), counts.size)
    values = np.zeros(counts.size * n, dtype=kept.dtype)
    offsets[slot] = offset
    values[slot] = kept
    return offsets, values


def _largest_in_each_group(groups: np.ndarray, n: int) -> np.ndarray:
    """Bool mask of the n largest-magnitude entries of each group (last axis); ties: lower offset."""
    magnitude = np.abs(groups.astype(np.float32))  # float32: |int8 -128| would overflow int8
    order = np.argsort(-magnitude, axis=-1, kind="stable")[..., :n]
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order, True, axis=-1)
    return keep


@dataclass(frozen=True, eq=False, repr=False)
class NMTensor(SparseTensor):
    """A weight in N:M. Within a group offsets never decrease and only value-0 padding slots may
    repeat an offset, so every nonzero has a distinct column and every offset is inside the weight."""

    shape: tuple[int, int]
    n: int
    m: int
    indices: np.ndarray
    values: np.ndarray

    def __post_init__(self):
        out_dim, in_dim = check_shape(self.shape)
        layout = NMLayout(self.n, self.m)
        slots = (out_dim, ceil_div(in_dim, self.m) * self.n)
        values = check_array("values", check_values_dtype(self.values), None, slots)
        indices = check_array("indices", self.indices, NM_INDEX_DTYPE, slots)
        self._check_offsets(indices, values, in_dim)
        for name, value in (("shape", (out_dim, in_dim)), ("indices", indices),
                            ("values", values), ("_layout", layout)):
            object.__setattr__(self, name, value)

    def _check_offsets(self, indices: np.ndarray, values: np.ndarray, in_dim: int) -> None:
        offsets = indices.reshape(indices.shape[0], -1, self.n)
        last_group_width = in_dim - (offsets.shape[1] - 1) * self.m
        if np.any(offsets >= self.m) or np.any(offsets[:, -1, :] >= last_group_width):
            raise SparseFormatError("N:M indices must point inside their group and the weight")
        step = np.diff(offsets.astype(np.int16), axis=-1)
        repeats_padding = (step == 0) & (values.reshape(offsets.shape)[..., 1:] == 0)
        if not np.all((step > 0) | repeats_padding):
            raise SparseFormatError("N:M indices must rise within a group (only 0-valued slots may repeat)")

    @property
    def layout(self) -> NMLayout:
        return self._layout

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return {"indices": self.indices, "values": self.values}

    def to_dense(self) -> np.ndarray:
        out_dim, in_dim = self.shape
        group_of_slot = np.arange(self.values.shape[1]) // self.n
        columns = group_of_slot * self.m + self.indices
        # Only nonzero slots are written: padding slots may share a column with a real value.
        rows, slots = np.nonzero(self.values)
        dense = np.zeros(self.shape, dtype=self.values.dtype)
        dense[rows, columns[rows, slots]] = self.values[rows, slots]
        return dense

    @property
    def density(self) -> float:
        return self._layout.density

    def summary(self) -> str:
        return f"{self._layout.ir_name} density={self.density:.3f} bytes={self.nbytes}"
