"""Sparse weight formats: exact round trips, array conventions, byte accounting, layout strings."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s4c.errors import S4CError
from s4c.sparse import (
    INDPTR_DTYPE,
    LAYOUTS_BY_NAME,
    SUPPORTED_LAYOUTS,
    BSRLayout,
    BSRTensor,
    CSRLayout,
    CSRTensor,
    DenseLayout,
    NMLayout,
    NMTensor,
    NotNMCompliantError,
    SparseFormatError,
    analyze_sparsity,
    index_dtype,
    parse_layout,
)

EXACT_LAYOUTS = [layout for layout in SUPPORTED_LAYOUTS if not isinstance(layout, NMLayout)]
NM_LAYOUTS = [layout for layout in SUPPORTED_LAYOUTS if isinstance(layout, NMLayout)]
DTYPES = [np.float32, np.int8]


def random_weight(seed, out_dim, in_dim, density, dtype):
    """Nonzero-where-kept values; int8 spans the full range (incl. -128), floats are arbitrary."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.int8:
        values = rng.integers(-128, 128, (out_dim, in_dim)).astype(np.int8)
    else:
        values = rng.standard_normal((out_dim, in_dim)).astype(dtype)
    return np.where(rng.random((out_dim, in_dim)) < density, values, 0).astype(dtype)


def nm_compliant_weight(seed, out_dim, in_dim, density, dtype, n, m):
    """A random weight with at most n nonzeros in every aligned group of m columns."""
    weight = random_weight(seed, out_dim, in_dim, density, dtype)
    groups = -(-in_dim // m)
    ranks = np.random.default_rng(seed + 1).random((out_dim, groups, m)).argsort(-1).argsort(-1)
    allowed = (ranks < n).reshape(out_dim, groups * m)[:, :in_dim]
    return np.where(allowed, weight, 0).astype(dtype)


weights = st.tuples(
    st.integers(0, 2**32 - 1),  # seed
    st.integers(1, 40),  # out: includes sizes not divisible by any block
    st.integers(1, 70),  # in
    st.sampled_from([0.0, 0.05, 0.3, 0.8, 1.0]),
    st.sampled_from(DTYPES),
)


@settings(max_examples=60, deadline=None)
@given(weights, st.sampled_from(EXACT_LAYOUTS))
def test_exact_layouts_round_trip(params, layout):
    weight = random_weight(*params)
    tensor = layout.pack(weight)
    dense = tensor.to_dense()
    assert dense.dtype == weight.dtype and dense.shape == weight.shape
    assert np.array_equal(dense, weight)
    assert tensor.layout == layout and tensor.shape == weight.shape and tensor.dtype == weight.dtype
    assert np.array_equal(layout.from_arrays(tensor.shape, tensor.arrays).to_dense(), weight)


@settings(max_examples=60, deadline=None)
@given(weights, st.sampled_from(EXACT_LAYOUTS + NM_LAYOUTS))
def test_bytes_are_the_arrays_bytes_and_match_the_analysis(params, layout):
    weight = random_weight(*params)
    tensor = layout.pack(weight, prune=True)
    assert tensor.nbytes == sum(array.nbytes for array in tensor.arrays.values())
    if isinstance(layout, NMLayout) or not np.array_equal(tensor.to_dense(), weight):
        weight = tensor.to_dense()  # the pruned weight is what the analysis should price
    assert analyze_sparsity(weight).storage_bytes(layout) == tensor.nbytes


@settings(max_examples=60, deadline=None)
@given(weights)
def test_csr_arrays_follow_the_convention(params):
    weight = random_weight(*params)
    tensor = CSRLayout().pack(weight)
    out_dim, in_dim = weight.shape
    nnz = np.count_nonzero(weight)
    assert list(tensor.arrays) == ["indptr", "indices", "values"]
    assert tensor.indptr.dtype == INDPTR_DTYPE and tensor.indptr.shape == (out_dim + 1,)
    assert tensor.indices.dtype == index_dtype(in_dim) and tensor.indices.shape == (nnz,)
    assert tensor.values.shape == (nnz,) and np.all(tensor.values != 0)


@settings(max_examples=60, deadline=None)
@given(weights, st.sampled_from([layout for layout in EXACT_LAYOUTS if isinstance(layout, BSRLayout)]))
def test_bsr_arrays_follow_the_convention(params, layout):
    weight = random_weight(*params)
    tensor = layout.pack(weight)
    r, c = layout.block_shape
    grid_rows, grid_cols = -(-weight.shape[0] // r), -(-weight.shape[1] // c)
    assert tensor.indptr.dtype == INDPTR_DTYPE and tensor.indptr.shape == (grid_rows + 1,)
    assert tensor.indices.dtype == index_dtype(grid_cols) and tensor.indices.shape == (tensor.nnzb,)
    assert tensor.values.shape == (tensor.nnzb, r, c)
    # Every stored block holds a nonzero; an edge block's lanes past the weight are zero.
    assert np.all(tensor.values.reshape(tensor.nnzb, r * c).any(axis=1))
    padded = np.zeros((grid_rows * r, grid_cols * c), weight.dtype)
    padded[: weight.shape[0], : weight.shape[1]] = weight
    for block_row in range(grid_rows):
        for k in range(tensor.indptr[block_row], tensor.indptr[block_row + 1]):
            column = int(tensor.indices[k])
            expected = padded[block_row * r:(block_row + 1) * r, column * c:(column + 1) * c]
            assert np.array_equal(tensor.values[k], expected)  # row-major within the block


@settings(max_examples=80, deadline=None)
@given(weights, st.sampled_from(NM_LAYOUTS))
def test_nm_round_trips_compliant_weights(params, layout):
    weight = nm_compliant_weight(*params, layout.n, layout.m)
    tensor = layout.pack(weight)
    assert np.array_equal(tensor.to_dense(), weight) and tensor.dtype == weight.dtype
    out_dim, in_dim = weight.shape
    groups = -(-in_dim // layout.m)
    assert tensor.values.shape == tensor.indices.shape == (out_dim, groups * layout.n)
    assert tensor.indices.dtype == np.uint8
    offsets = tensor.indices.reshape(out_dim, groups, layout.n).astype(int)
    columns = np.arange(groups)[:, None] * layout.m + offsets
    assert np.all(offsets < layout.m) and np.all(columns < in_dim)  # never past the weight
    assert np.all(np.diff(offsets, axis=-1) >= 0)
    # A slot holds the weight's value at its column, or is 0-valued padding that points at a zero
    # or repeats the previous slot's column (only in a last group narrower than N).
    at_column = np.take_along_axis(weight, columns.reshape(out_dim, -1), 1)
    repeats = np.zeros(offsets.shape, bool)
    repeats[..., 1:] = np.diff(offsets, axis=-1) == 0
    padding_ok = (tensor.values == 0) & ((at_column == 0) | repeats.reshape(out_dim, -1))
    assert np.all((tensor.values == at_column) | padding_ok)
    assert np.array_equal(layout.from_arrays(weight.shape, tensor.arrays).to_dense(), weight)


@settings(max_examples=60, deadline=None)
@given(weights, st.sampled_from(NM_LAYOUTS))
def test_nm_prune_keeps_the_largest_of_each_group(params, layout):
    weight = random_weight(*params)
    pruned = layout.pack(weight, prune=True).to_dense()
    kept = pruned != 0
    assert np.array_equal(pruned[kept], weight[kept])
    n, m = layout.n, layout.m
    for row in range(weight.shape[0]):
        for start in range(0, weight.shape[1], m):
            group = np.abs(weight[row, start:start + m].astype(np.float64))
            group_kept = kept[row, start:start + m]
            assert group_kept.sum() == min(n, np.count_nonzero(group))
            if group_kept.any() and (~group_kept).any():
                assert group[group_kept].min() >= group[~group_kept].max()


def test_nm_rejects_a_non_compliant_weight_with_a_clear_message():
    weight = np.zeros((3, 8), np.float32)
    weight[1, 4:7] = 1.0
    with pytest.raises(NotNMCompliantError, match=r"not 2:4 .* row 1, columns 4\.\.7 hold 3") as error:
        NMLayout(2, 4).pack(weight)
    assert isinstance(error.value, ValueError) and isinstance(error.value, S4CError)
    assert NMLayout(2, 4).pack(weight, prune=True).to_dense()[1].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]


def test_nm_narrow_last_group_keeps_offsets_inside_the_weight():
    weight = np.array([[0, 0, 3, 0, 7]], np.int8)  # last group of 2:4 is 1 column wide
    tensor = NMLayout(2, 4).pack(weight)
    assert tensor.indices.tolist() == [[0, 2, 0, 0]]
    assert tensor.values.tolist() == [[0, 3, 7, 0]]
    assert np.array_equal(tensor.to_dense(), weight)


@pytest.mark.parametrize("extent, dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16),
                                           (65536, np.uint16), (65537, np.int32)])
def test_index_dtype_is_the_smallest_that_fits(extent, dtype):
    assert index_dtype(extent) == dtype


def test_csr_indices_widen_with_in():
    assert CSRLayout().pack(np.eye(4, 300, dtype=np.float32)).indices.dtype == np.uint16
    assert BSRLayout(1, 4).pack(np.eye(4, 1100, dtype=np.float32)).indices.dtype == np.uint16


def test_layout_strings_round_trip():
    for name, layout in LAYOUTS_BY_NAME.items():
        assert str(layout) == name and parse_layout(name) == layout
        assert parse_layout(layout.ir_name) == layout
    assert parse_layout(" BSR16x1 ") == BSRLayout(16, 1)
    assert str(parse_layout("nm2:8")) == "nm2:8" and parse_layout("nm<2:8>") == NMLayout(2, 8)
    for name in ["dense", "csr", "bsr4x1", "bsr16x1", "nm2:8"]:
        assert name in LAYOUTS_BY_NAME


@pytest.mark.parametrize("text", ["bsr3x3", "nm5:4", "nm0:4", "nm1:33", "coo", "", "bsr16x1x", "nm<2:8"])
def test_unknown_layout_strings_are_rejected(text):
    with pytest.raises(SparseFormatError, match="supported: dense, csr, bsr4x1"):
        parse_layout(text)


def test_unsupported_block_or_pattern_cannot_be_built():
    with pytest.raises(SparseFormatError):
        BSRLayout(3, 3)
    for n, m in [(5, 4), (0, 4), (1, 33)]:
        with pytest.raises(SparseFormatError):
            NMLayout(n, m)


def test_any_n_m_up_to_32_packs_with_a_short_last_group():
    """1:20 on 768 inputs is 38 groups of 20 and one of 8; 3:7 on 50 ends with a group of 1."""
    rng = np.random.default_rng(5)
    for (n, m), in_dim in [((1, 20), 768), ((3, 7), 50), ((2, 32), 40)]:
        layout = parse_layout(f"nm{n}:{m}")
        assert layout == NMLayout(n, m) and str(layout) == f"nm{n}:{m}" and parse_layout(layout.ir_name) == layout
        weight = rng.standard_normal((16, in_dim)).astype(np.float32)
        pruned = layout.pack(weight, prune=True)
        dense = pruned.to_dense()
        groups = np.pad(dense != 0, ((0, 0), (0, -in_dim % m))).reshape(16, -1, m).sum(-1)
        assert groups[:, :-1].min() == groups[:, :-1].max() == n and groups[:, -1].max() <= n  # every full group keeps N
        assert pruned.values.shape == (16, -(-in_dim // m) * n)
        exact = layout.pack(dense)
        np.testing.assert_array_equal(exact.to_dense(), dense)
        assert exact.nbytes == layout.storage_bytes(dense.shape, dense.dtype)
        with pytest.raises(NotNMCompliantError):
            layout.pack(weight)


def test_summaries():
    weight = np.zeros((32, 64), np.float32)
    weight[:16, :8] = 1.0
    assert re.fullmatch(r"dense bytes=8192", DenseLayout().pack(weight).summary())
    assert re.fullmatch(r"csr nnz=128 density=0\.062 bytes=\d+", CSRLayout().pack(weight).summary())
    assert re.fullmatch(r"bsr<16x1> nnzb=8 density=0\.062 bytes=\d+",
                        BSRLayout(16, 1).pack(weight).summary())
    assert re.fullmatch(r"nm<2:8> density=0\.250 bytes=\d+",
                        NMLayout(2, 8).pack(weight, prune=True).summary())


def test_packing_leaves_the_input_alone_and_the_tensor_immutable():
    weight = random_weight(0, 16, 32, 0.3, np.float32)
    before = weight.copy()
    dense = DenseLayout().pack(weight)
    assert np.shares_memory(dense.values, weight)  # no copy of a contiguous input
    for layout in SUPPORTED_LAYOUTS:
        tensor = layout.pack(weight, prune=True)
        for array in tensor.arrays.values():
            with pytest.raises(ValueError):
                array[...] = 0
        tensor.to_dense()[...] = 0  # a fresh copy
        with pytest.raises(AttributeError):
            tensor.shape = (1, 1)
    assert np.array_equal(weight, before) and weight.flags.writeable


def test_transposed_input_packs_like_its_copy():
    weight = random_weight(1, 24, 40, 0.3, np.float32)
    for layout in EXACT_LAYOUTS:
        assert np.array_equal(layout.pack(weight.T).to_dense(), weight.T)


@pytest.mark.parametrize("weight", [np.zeros((4, 4)), np.zeros(4, np.float32),
                                    np.zeros((0, 4), np.float32), np.zeros((4, 4), np.int32)])
def test_bad_weights_are_rejected(weight):
    for layout in SUPPORTED_LAYOUTS:
        with pytest.raises(SparseFormatError):
            layout.pack(weight)


def test_bad_arrays_are_rejected():
    good = CSRLayout().pack(np.eye(3, dtype=np.float32))
    with pytest.raises(SparseFormatError, match="indices"):
        CSRTensor((3, 3), good.indptr, good.indices.astype(np.int32), good.values)
    with pytest.raises(SparseFormatError, match="increase"):
        CSRTensor((3, 3), np.array([0, 2, 2, 3], np.int32), np.array([1, 0, 2], np.uint8), good.values)
    with pytest.raises(SparseFormatError, match="outside"):
        CSRTensor((3, 3), good.indptr, np.array([0, 1, 3], np.uint8), good.values)
    with pytest.raises(SparseFormatError, match="indptr"):
        CSRTensor((3, 3), np.array([0, 2, 1, 3], np.int32), good.indices, good.values)
    # A 4x1 block of a 3-row weight with a nonzero in the lane past the edge.
    with pytest.raises(SparseFormatError, match="edge"):
        BSRTensor((3, 1), np.array([0, 1], np.int32), np.array([0], np.uint8),
                  np.ones((1, 4, 1), np.float32))
    with pytest.raises(SparseFormatError, match="inside"):
        NMTensor((1, 5), 2, 4, np.array([[0, 1, 1, 1]], np.uint8), np.zeros((1, 4), np.float32))
    with pytest.raises(SparseFormatError, match="rise"):
        NMTensor((1, 4), 2, 4, np.array([[2, 1]], np.uint8), np.ones((1, 2), np.float32))
