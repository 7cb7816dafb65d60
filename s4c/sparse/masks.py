"""Fast, vectorised reductions of a weight's nonzero mask into blocks and N:M groups.

Shared by BSR packing and the sparsity analysis, which runs them on every weight of a model, so
they avoid numpy's slow reductions over a short last axis (~100x slower than the tricks below).
"""

from __future__ import annotations

import numpy as np

from s4c.sparse.base import ceil_div

# Viewing c adjacent bools as one c-byte unsigned int turns "any of these c" into "!= 0".
_BYTES_AS_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def pad_to_multiple(array: np.ndarray, row_multiple: int, col_multiple: int) -> np.ndarray:
    """`array` zero-padded at the bottom/right to multiples; the array itself when none is needed."""
    rows, cols = array.shape
    pad_rows = ceil_div(rows, row_multiple) * row_multiple - rows
    pad_cols = ceil_div(cols, col_multiple) * col_multiple - cols
    if pad_rows == 0 and pad_cols == 0:
        return array
    return np.pad(array, ((0, pad_rows), (0, pad_cols)))


def any_in_row_groups(mask: np.ndarray, group: int) -> np.ndarray:
    """[ceil(out/group), in] bool: does any of each `group` consecutive rows hold a nonzero?"""
    if group == 1:
        return mask
    padded = pad_to_multiple(mask, group, 1)
    # Reducing the middle axis is fast: the inner loop runs along the contiguous `in` axis.
    return padded.reshape(-1, group, padded.shape[1]).any(axis=1)


def any_in_col_groups(mask: np.ndarray, group: int) -> np.ndarray:
    """[out, ceil(in/group)] bool: does any of each `group` consecutive columns hold a nonzero?"""
    if group == 1:
        return mask
    padded = np.ascontiguousarray(pad_to_multiple(mask, 1, group))
    if group in _BYTES_AS_UINT:
        return padded.view(_BYTES_AS_UINT[group]) != 0
    return padded.reshape(padded.shape[0], -1, group).any(axis=-1)


def kept_blocks(mask: np.ndarray, block_rows: int, block_cols: int) -> np.ndarray:
    """[ceil(out/r), ceil(in/c)] bool: the r x c blocks (edge blocks zero-padded) with a nonzero."""
    return any_in_col_groups(any_in_row_groups(mask, block_rows), block_cols)


def count_in_col_groups(mask: np.ndarray, group: int) -> np.ndarray:
    """[out, ceil(in/group)] uint8: nonzeros in each `group` consecutive columns (group <= 255)."""
    padded = pad_to_multiple(mask, 1, group).view(np.uint8)
    # Summing `group` strided column slices instead of reducing a short last axis.
    counts = padded[:, 0::group].copy()
    for offset in range(1, group):
        counts += padded[:, offset::group]
    return counts
