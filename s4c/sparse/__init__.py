"""Sparse weight formats (dense, CSR, BSR r x c, N:M) and the sparsity analysis (pure numpy).

    layout = parse_layout("bsr16x1")      # or BSRLayout(16, 1); str(layout) == "bsr16x1"
    tensor = layout.pack(W)               # exact; W is W[out, in], `in` is the reduction dim
    tensor.arrays, tensor.nbytes, tensor.summary(), tensor.to_dense()
    report = analyze_sparsity(W)          # density, block stats, N:M compliance, best block

Array conventions and byte accounting: docs/sparse-formats.md. Which weights an IR graph's ops read
(`weight_uses`, `analyze_uses`) is in s4c.sparse.uses, the one module here that reads the IR.
"""

from s4c.sparse.analysis import (
    DEFAULT_MAX_FILL_IN,
    NM_GROUP_SIZES,
    BlockStats,
    SparsityReport,
    analyze_sparsity,
    analyze_weights,
    best_block_shape,
    nm_compliance,
)
from s4c.sparse.base import INDPTR_DTYPE, SUPPORTED_DTYPES, Layout, SparseTensor, index_dtype
from s4c.sparse.bsr import SUPPORTED_BLOCK_SHAPES, BSRLayout, BSRTensor
from s4c.sparse.csr import CSRLayout, CSRTensor
from s4c.sparse.dense import DenseLayout, DenseTensor
from s4c.sparse.errors import NotNMCompliantError, SparseFormatError
from s4c.sparse.nm import NM_INDEX_DTYPE, NM_MAX_M, SUPPORTED_NM_PATTERNS, NMLayout, NMTensor
from s4c.sparse.registry import LAYOUTS_BY_NAME, SUPPORTED_LAYOUTS, parse_layout

__all__ = [
    "BSRLayout", "BSRTensor", "BlockStats", "CSRLayout", "CSRTensor", "DEFAULT_MAX_FILL_IN",
    "DenseLayout", "DenseTensor", "INDPTR_DTYPE", "LAYOUTS_BY_NAME", "Layout", "NMLayout",
    "NMTensor", "NM_GROUP_SIZES", "NM_INDEX_DTYPE", "NM_MAX_M", "NotNMCompliantError", "SUPPORTED_BLOCK_SHAPES",
    "SUPPORTED_DTYPES", "SUPPORTED_LAYOUTS", "SUPPORTED_NM_PATTERNS", "SparseFormatError",
    "SparseTensor", "SparsityReport", "analyze_sparsity", "analyze_weights", "best_block_shape",
    "index_dtype", "nm_compliance", "parse_layout",
]
