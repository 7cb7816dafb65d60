"""CSR: row-compressed storage of the individual nonzeros (wins at high, unstructured sparsity)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from s4c.sparse.base import (
    INDPTR_DTYPE,
    Layout,
    SparseTensor,
    check_array,
    check_indptr,
    check_shape,
    check_sorted_within_rows,
    check_values_dtype,
    check_weight,
    index_dtype,
)
from s4c.sparse.errors import SparseFormatError


@dataclass(frozen=True)
class CSRLayout(Layout):
    """indptr int32[out+1], indices (uint8/uint16/int32 by `in`)[nnz], values[nnz]."""

    kind = "csr"

    def __str__(self) -> str:
        return "csr"

    def pack(self, weight, *, prune: bool = False) -> CSRTensor:
        """Exact: every nonzero is kept (`prune` has nothing to do here)."""
        weight = check_weight(weight)
        nonzero = weight != 0
        row_counts = np.count_nonzero(nonzero, axis=1)
        indptr = np.zeros(weight.shape[0] + 1, dtype=np.int64)
        np.cumsum(row_counts, out=indptr[1:])
        if indptr[-1] > np.iinfo(INDPTR_DTYPE).max:
            raise SparseFormatError(f"{indptr[-1]} nonzeros overflow CSR's int32 indptr")
        # Flat positions in row-major order, so columns come out sorted within each row (one int64
        # array instead of np.nonzero's two: ~2.5x faster on BERT-base's weights).
        flat = np.flatnonzero(nonzero)
        columns = (flat % weight.shape[1]).astype(index_dtype(weight.shape[1]))
        values = np.ascontiguousarray(weight).reshape(-1)[flat]
        return CSRTensor(weight.shape, indptr.astype(INDPTR_DTYPE), columns, values)

    def from_arrays(self, shape, arrays: Mapping[str, np.ndarray]) -> CSRTensor:
        return CSRTensor(shape, arrays["indptr"], arrays["indices"], arrays["values"])

    @staticmethod
    def storage_bytes(shape, dtype, nnz: int) -> int:
        out_dim, in_dim = shape
        return ((out_dim + 1) * INDPTR_DTYPE.itemsize
                + nnz * (index_dtype(in_dim).itemsize + np.dtype(dtype).itemsize))


@dataclass(frozen=True, eq=False, repr=False)
class CSRTensor(SparseTensor):
    """A weight in CSR. Arrays are validated and kept read-only; explicit zeros are allowed."""

    shape: tuple[int, int]
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    def __post_init__(self):
        out_dim, in_dim = check_shape(self.shape)
        values = check_values_dtype(self.values)
        nnz = values.size
        indptr = check_array("indptr", self.indptr, INDPTR_DTYPE, (out_dim + 1,))
        indices = check_array("indices", self.indices, index_dtype(in_dim), (nnz,))
        values = check_array("values", values, None, (nnz,))
        check_indptr("indptr", indptr, nnz)
        check_sorted_within_rows("indices", indptr, indices, in_dim)
        for name, value in (("shape", (out_dim, in_dim)), ("indptr", indptr),
                            ("indices", indices), ("values", values)):
            object.__setattr__(self, name, value)

    @property
    def layout(self) -> CSRLayout:
        return CSRLayout()

    @property
    def nnz(self) -> int:
        return self.values.size

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return {"indptr": self.indptr, "indices": self.indices, "values": self.values}

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=self.values.dtype)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        dense[rows, self.indices] = self.values
        return dense

    @property
    def density(self) -> float:
        return self.nnz / (self.shape[0] * self.shape[1])

    def summary(self) -> str:
        return f"csr nnz={self.nnz} density={self.density:.3f} bytes={self.nbytes}"
