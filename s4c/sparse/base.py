"""The interface every weight format shares, and the small helpers the formats have in common.

A weight is a 2-D array W[out, in]; `in` is the reduction dimension (y = W @ x). A `Layout` is an
immutable description of a storage format (what the CLI's `--layout WEIGHT=bsr16x1` names); its
`pack` turns a weight into a `SparseTensor`, which holds the format's typed arrays. Packing is
exact unless the caller explicitly asks for pruning, and nothing here ever densifies silently.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from s4c.sparse.errors import SparseFormatError

# Weight dtypes the formats accept. int8 weights carry their float scale elsewhere (per row or per
# tensor); a format only stores the int8 values. Adding a dtype here is all a new one needs.
SUPPORTED_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.int8))

# Row / block-row pointers are always int32: kernels index them without knowing the weight.
INDPTR_DTYPE = np.dtype(np.int32)
_INT32_MAX = np.iinfo(np.int32).max


def index_dtype(extent: int) -> np.dtype:
    """The smallest index type able to address `extent` positions (indices 0..extent-1).

    uint8, uint16 or int32. It depends on the shape only (not on the largest index actually
    stored), so a kernel variant can be chosen from the weight's shape alone.
    """
    if extent <= 1 << 8:
        return np.dtype(np.uint8)
    if extent <= 1 << 16:
        return np.dtype(np.uint16)
    if extent - 1 <= _INT32_MAX:
        return np.dtype(np.int32)
    raise SparseFormatError(f"cannot index {extent} positions with int32")


def check_weight(weight) -> np.ndarray:
    """`weight` as a 2-D ndarray of a supported dtype (no copy when it already is one)."""
    array = np.asarray(weight)
    if array.ndim != 2:
        raise SparseFormatError(f"a weight must be 2-D [out, in], got shape {array.shape}")
    if array.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise SparseFormatError(f"unsupported weight dtype {array.dtype} (supported: {names})")
    if 0 in array.shape:
        raise SparseFormatError(f"a weight must not be empty, got shape {array.shape}")
    return array


def check_shape(shape) -> tuple[int, int]:
    """`shape` as a validated (out, in) pair of positive ints."""
    try:
        out_dim, in_dim = (int(d) for d in shape)
    except (TypeError, ValueError):
        raise SparseFormatError(f"a weight shape must be (out, in), got {shape!r}") from None
    if out_dim < 1 or in_dim < 1:
        raise SparseFormatError(f"a weight shape must be positive, got {shape!r}")
    return out_dim, in_dim


def check_array(name: str, array, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only, C-contiguous view of `array` (copied only if it was not contiguous) after
    checking its exact dtype and shape.

    Exact dtypes only: kernels are compiled against them, so converting here would hide a bug.
    """
    array = np.asarray(array)
    if dtype is not None and array.dtype != dtype:
        raise SparseFormatError(f"array '{name}' must be {np.dtype(dtype)}, got {array.dtype}")
    if array.shape != shape:
        raise SparseFormatError(f"array '{name}' must have shape {shape}, got {array.shape}")
    return read_only(np.ascontiguousarray(array))


def check_values_dtype(values) -> np.ndarray:
    """`values` as an ndarray after checking its dtype is one the formats store."""
    values = np.asarray(values)
    if values.dtype not in SUPPORTED_DTYPES:
        raise SparseFormatError(f"unsupported values dtype {values.dtype}")
    return values


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: the tensor stays immutable without copying or touching the caller's flags."""
    view = array.view()
    view.flags.writeable = False
    return view


def check_indptr(name: str, indptr: np.ndarray, count: int) -> None:
    """Pointers start at 0, end at `count` and never decrease."""
    if indptr[0] != 0 or indptr[-1] != count or np.any(np.diff(indptr) < 0):
        raise SparseFormatError(f"array '{name}' must rise from 0 to {count} without decreasing")


def check_sorted_within_rows(name: str, indptr: np.ndarray, indices: np.ndarray, limit: int) -> None:
    """Indices lie in [0, limit) and strictly increase inside each row (so no duplicates)."""
    if indices.size == 0:
        return
    wide = indices.astype(np.int64)
    if wide.min() < 0 or wide.max() >= limit:
        raise SparseFormatError(f"array '{name}' holds an index outside [0, {limit})")
    rising = np.diff(wide) > 0
    row_starts = indptr[1:-1]
    # A drop is fine where a new row starts; anywhere else it means unsorted or duplicate indices.
    rising[row_starts[(row_starts > 0) & (row_starts < indices.size)] - 1] = True
    if not rising.all():
        raise SparseFormatError(f"array '{name}' must strictly increase within each row")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def transposed(array: np.ndarray, strip: int = 16) -> np.ndarray:
    """`array.T` (2-D) as a new C-contiguous array, copied in strips of `strip` rows of `array`:
    numpy's own copy of a transposed view reads the source column by column, a cache miss per
    element (2-3x slower on BERT-base's 768x3072 weights)."""
    out = np.empty(array.shape[::-1], array.dtype)
    for row in range(0, array.shape[0], strip):
        out[:, row:row + strip] = array[row:row + strip].T
    return out


class Layout(abc.ABC):
    """An immutable storage format for a weight W[out, in]; `str()` is its canonical spelling."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def __str__(self) -> str: ...

    @property
    def ir_name(self) -> str:
        """How the IR printer names the layout (e.g. `bsr<16x1>`); `parse_layout` accepts it too."""
        return str(self)

    @abc.abstractmethod
    def pack(self, weight, *, prune: bool = False) -> SparseTensor:
        """Store `weight` in this layout. Exact unless `prune=True` (only N:M ever needs it)."""

    @abc.abstractmethod
    def from_arrays(self, shape, arrays: Mapping[str, np.ndarray]) -> SparseTensor:
        """Rebuild a tensor from its `arrays` (e.g. read back from a weight file), validating them."""


class SparseTensor(abc.ABC):
    """A weight stored in some layout: typed arrays plus the logical shape (out, in).

    Subclasses provide `shape` (a field or a property): the weight's (out, in), never padded.
    """

    shape: tuple[int, int]

    @property
    @abc.abstractmethod
    def layout(self) -> Layout: ...

    @property
    @abc.abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """Name -> read-only array, in the order a weight file should store them."""

    @abc.abstractmethod
    def to_dense(self) -> np.ndarray:
        """A fresh, writable dense copy of the weight, exactly as packed."""

    @property
    def dtype(self) -> np.dtype:
        return self.arrays["values"].dtype

    @property
    def nbytes(self) -> int:
        """Bytes of storage: values + indices + pointers, exactly the arrays' sizes."""
        return sum(array.nbytes for array in self.arrays.values())

    @property
    def stored_values(self) -> int:
        """Value slots stored, including zeros kept inside blocks / N:M groups."""
        return self.arrays["values"].size

    @property
    @abc.abstractmethod
    def density(self) -> float:
        """Stored value slots / value slots of the dense grid (edge-padded for BSR and N:M)."""

    @abc.abstractmethod
    def summary(self) -> str:
        """One line for the IR printer, e.g. `bsr<16x1> nnzb=1234 density=0.100 bytes=...`."""

    def __repr__(self) -> str:
        out_dim, in_dim = self.shape
        return f"<{type(self).__name__} {out_dim}x{in_dim} {self.dtype} {self.summary()}>"
