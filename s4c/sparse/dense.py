"""The dense layout: the weight as one row-major array (the baseline every sparse format beats or not)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from s4c.sparse.base import Layout, SparseTensor, check_weight, read_only
from s4c.sparse.errors import SparseFormatError


@dataclass(frozen=True)
class DenseLayout(Layout):
    """Row-major W[out, in], nothing else."""

    kind = "dense"

    def __str__(self) -> str:
        return "dense"

    def pack(self, weight, *, prune: bool = False) -> DenseTensor:
        # ascontiguousarray copies only when the input is not already C-ordered (e.g. a W.T view).
        return DenseTensor(np.ascontiguousarray(check_weight(weight)))

    def from_arrays(self, shape, arrays: Mapping[str, np.ndarray]) -> DenseTensor:
        tensor = DenseTensor(arrays["values"])
        if tensor.shape != tuple(shape):
            raise SparseFormatError(f"dense values have shape {tensor.shape}, expected {tuple(shape)}")
        return tensor

    @staticmethod
    def storage_bytes(shape, dtype) -> int:
        return int(np.prod(shape)) * np.dtype(dtype).itemsize


@dataclass(frozen=True, eq=False, repr=False)
class DenseTensor(SparseTensor):
    """A dense weight. Holds a read-only view of the array it was given (no copy)."""

    values: np.ndarray

    def __post_init__(self):
        values = np.ascontiguousarray(check_weight(self.values))
        object.__setattr__(self, "values", read_only(values))

    @property
    def layout(self) -> DenseLayout:
        return DenseLayout()

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return {"values": self.values}

    def to_dense(self) -> np.ndarray:
        return self.values.copy()

    @property
    def density(self) -> float:
        return 1.0

    def summary(self) -> str:
        return f"dense bytes={self.nbytes}"
