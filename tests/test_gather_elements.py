"""GatherElements end to end: the IR op's reference, import (including folding when data and indices
are constants, as in BERT exports without token_type_ids), and the C and S4 backends, each against
onnxruntime. GatherElements only moves elements, so every backend must match exactly.

Out-of-range indices (outside [-n, n) on the axis) are an error on every backend: the reference
raises IndexError, the generated C step returns failure (S4CError naming the step), the S4 program
stops at its `dma.gather` (the run-time kernel turns such an index into -1 so it can never land on
another element of the flattened data).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from oracle import max_abs_diff, ort_outputs
from s4c import compile as s4c_compile
from s4c.errors import FrontendError, S4CError
from s4c.evaluate import evaluate
from s4c.frontend import load_onnx
from s4c.ops import REGISTRY

ONNX_TYPE = {np.float32: TensorProto.FLOAT, np.int64: TensorProto.INT64, np.int32: TensorProto.INT32}


def _model(data_shape, idx_shape, axis, data_dtype=np.float32, idx_dtype=np.int64, idx_const=None,
           data_const=None, opset=17):
    """y = GatherElements(data, indices, axis); data / indices are inputs unless given as constants."""
    inputs, inits = [], []
    if data_const is None:
        inputs.append(helper.make_tensor_value_info("data", ONNX_TYPE[data_dtype], list(data_shape)))
    else:
        inits.append(numpy_helper.from_array(data_const, "data"))
    if idx_const is None:
        inputs.append(helper.make_tensor_value_info("indices", ONNX_TYPE[idx_dtype], list(idx_shape)))
    else:
        inits.append(numpy_helper.from_array(idx_const, "indices"))
    y = helper.make_tensor_value_info("y", ONNX_TYPE[data_dtype], list(idx_shape))
    node = helper.make_node("GatherElements", ["data", "indices"], ["y"], axis=axis, name="ge")
    graph = helper.make_graph([node], "g", inputs, [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _indices(rng, data_shape, idx_shape, axis, dtype, negative=True):
    n = data_shape[axis]
    lo = -n if negative else 0
    return rng.integers(lo, n, idx_shape).astype(dtype)


def _data(rng, shape, dtype):
    if dtype == np.float32:
        return rng.standard_normal(shape).astype(np.float32)
    # integers beyond fp32's exact range: the S4 must move them, not compute them
    return (rng.integers(-30, 30, shape) * (1 << 26) + rng.integers(0, 7, shape)).astype(dtype)


def _run_everywhere(model, feeds, tmp_path, expect_op=True):
    compiled = s4c_compile(model, target="all", outdir=tmp_path / "out")
    assert ("GatherElements" in [op.op for op in compiled.graph.ops]) == expect_op
    want = ort_outputs(model, feeds)
    results = {}
    for backend in ("ref", "c", "s4"):
        got = compiled.run(feeds, backend=backend)
        assert got["y"].dtype == want["y"].dtype and got["y"].shape == want["y"].shape, backend
        results[backend] = max_abs_diff(got, want)["y"]
    assert results == {"ref": 0.0, "c": 0.0, "s4": 0.0}, results
    return want


# (data shape, indices shape, axis): ranks 1-4, every axis sign, indices smaller than data off the axis
CASES = [
    ((7,), (12,), 0),
    ((3, 5), (4, 5), 0),
    ((3, 5), (3, 9), 1),
    ((3, 5), (2, 4), -1),
    ((2, 6, 4), (2, 3, 4), 1),
    ((2, 6, 4), (1, 6, 2), -3),
    ((2, 3, 4, 5), (2, 3, 7, 5), -2),
    ((2, 3, 4, 5), (2, 2, 4, 3), 3),
]


@pytest.mark.parametrize("data_shape,idx_shape,axis", CASES)
def test_reference_matches_per_element_definition(data_shape, idx_shape, axis):
    rng = np.random.default_rng(0)
    data = rng.standard_normal(data_shape).astype(np.float32)
    idx = _indices(rng, data_shape, idx_shape, axis, np.int64)
    (got,) = REGISTRY["GatherElements"].run([data, idx], {"axis": axis})
    a = axis % len(data_shape)
    want = np.empty(idx_shape, np.float32)
    for pos in np.ndindex(*idx_shape):
        src = list(pos)
        src[a] = int(idx[pos]) % data_shape[a]
        want[pos] = data[tuple(src)]
    assert got.shape == tuple(idx_shape)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("data_shape,idx_shape,axis", CASES)
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_runtime_indices_on_every_backend(tmp_path, data_shape, idx_shape, axis, idx_dtype):
    rng = np.random.default_rng(1)
    feeds = {"data": _data(rng, data_shape, np.float32),
             "indices": _indices(rng, data_shape, idx_shape, axis, idx_dtype)}
    assert (feeds["indices"] < 0).any() and (feeds["indices"] >= 0).any()
    _run_everywhere(_model(data_shape, idx_shape, axis, idx_dtype=idx_dtype), feeds, tmp_path)


@pytest.mark.parametrize("data_dtype", [np.float32, np.int64, np.int32])
def test_constant_indices_runtime_data(tmp_path, data_dtype):
    """Constant indices: the S4 lowers it as data movement (index map at compile time)."""
    rng = np.random.default_rng(2)
    data_shape, idx_shape, axis = (2, 5, 6), (2, 5, 4), 2
    idx = _indices(rng, data_shape, idx_shape, axis, np.int64)
    feeds = {"data": _data(rng, data_shape, data_dtype)}
    _run_everywhere(_model(data_shape, idx_shape, axis, data_dtype=data_dtype, idx_const=idx), feeds, tmp_path)


@pytest.mark.parametrize("data_dtype", [np.int64, np.int32])
def test_integer_data_runtime_indices(tmp_path, data_dtype):
    """Integer data beyond 2^24 is moved exactly by the S4's run-time kernel (no fp32 rounding)."""
    rng = np.random.default_rng(3)
    data_shape, idx_shape, axis = (3, 8), (3, 5), 1
    feeds = {"data": _data(rng, data_shape, data_dtype),
             "indices": _indices(rng, data_shape, idx_shape, axis, np.int64)}
    assert np.abs(feeds["data"]).max() > 1 << 24
    _run_everywhere(_model(data_shape, idx_shape, axis, data_dtype=data_dtype), feeds, tmp_path)


def test_many_elements_several_chunks_and_cores(tmp_path):
    """More indices than one S4 chunk (2048), spread over the cores; DeBERTa-like c2p shape."""
    rng = np.random.default_rng(4)
    data_shape, idx_shape, axis = (4, 32, 64), (4, 32, 40), -1
    feeds = {"data": _data(rng, data_shape, np.float32),
             "indices": _indices(rng, data_shape, idx_shape, axis, np.int64)}
    assert np.prod(idx_shape) > 2 * 2048
    _run_everywhere(_model(data_shape, idx_shape, axis), feeds, tmp_path)


def test_constant_operands_fold_at_import():
    rng = np.random.default_rng(5)
    data = rng.standard_normal((3, 4)).astype(np.float32)
    idx = np.array([[0, -1, 2, 1], [3, 3, -4, 0]], np.int64)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    nodes = [helper.make_node("GatherElements", ["data", "indices"], ["g"], axis=1),
             helper.make_node("Add", ["x", "g"], ["y"])]
    inits = [numpy_helper.from_array(data, "data"), numpy_helper.from_array(idx, "indices")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    graph = load_onnx(model)
    assert [op.op for op in graph.ops] == ["Add"]
    feeds = {"x": rng.standard_normal((2, 4)).astype(np.float32)}
    assert max_abs_diff(evaluate(graph, feeds), ort_outputs(model, feeds))["y"] == 0.0


def test_token_type_buffer_pattern_folds(tmp_path):
    """The BERT export without token_type_ids: a constant token-type buffer expanded to the batch,
    read with GatherElements at positions arange(seq) (both shape-derived) -> a constant once the
    input shape is bound; then it feeds a Gather of the type embedding."""
    rng = np.random.default_rng(6)
    max_pos, hidden = 16, 8
    buffer = np.zeros((1, max_pos), np.int64)
    buffer[0, 5:] = 1                               # a non-zero buffer, so a wrong gather shows
    table = rng.standard_normal((2, hidden)).astype(np.float32)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])
    c = lambda name, v: numpy_helper.from_array(np.asarray(v, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["input_ids"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["b"], axis=0),
        helper.make_node("Gather", ["shape", "one"], ["s"], axis=0),
        helper.make_node("Range", ["zero", "s", "one"], ["pos"]),
        helper.make_node("Unsqueeze", ["pos", "axes0"], ["pos2"]),
        helper.make_node("Unsqueeze", ["b", "axes0"], ["b1"]),
        helper.make_node("Unsqueeze", ["s", "axes0"], ["s1"]),
        helper.make_node("Concat", ["b1", "s1"], ["bs"], axis=0),
        helper.make_node("Concat", ["b1", "one1"], ["bm"], axis=0),   # Expand: 1 keeps the dim
        helper.make_node("Expand", ["pos2", "bs"], ["pos_b"]),
        helper.make_node("Expand", ["buffer", "bm"], ["buf_b"]),
        helper.make_node("GatherElements", ["buf_b", "pos_b"], ["types"], axis=1, name="types_ge"),
        helper.make_node("Gather", ["table", "types"], ["te"], axis=0),
        helper.make_node("Gather", ["table", "input_ids"], ["we"], axis=0),
        helper.make_node("Add", ["we", "te"], ["y"]),
    ]
    inits = [c("zero", 0), c("one", 1), c("axes0", [0]), c("one1", [1]),
             numpy_helper.from_array(buffer, "buffer"), numpy_helper.from_array(table, "table")]
    model = helper.make_model(helper.make_graph(nodes, "g", [ids], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    graph = load_onnx(model, input_shapes={"input_ids": (2, 9)})
    assert "GatherElements" not in [op.op for op in graph.ops]
    feeds = {"input_ids": rng.integers(0, 2, (2, 9)).astype(np.int64)}
    want = ort_outputs(model, feeds)
    assert max_abs_diff(evaluate(graph, feeds), want)["y"] == 0.0
    compiled = s4c_compile(model, input_shapes={"input_ids": (2, 9)}, target="all", outdir=tmp_path / "out")
    for backend in ("ref", "c", "s4"):
        assert max_abs_diff(compiled.run(feeds, backend=backend), want)["y"] <= 1e-6, backend


def test_shape_errors_at_import():
    with pytest.raises(FrontendError, match="GatherElements indices shape"):
        load_onnx(_model((3, 4), (3, 5), 0))          # off the axis, indices larger than data
    with pytest.raises(FrontendError, match="rank"):
        load_onnx(_model((3, 4), (3,), 0))


@pytest.mark.parametrize("bad", ["high", "low"])
def test_out_of_range_index_is_an_error_everywhere(tmp_path, bad):
    data_shape, idx_shape, axis = (3, 4, 5), (3, 4, 5), 1
    rng = np.random.default_rng(7)
    idx = _indices(rng, data_shape, idx_shape, axis, np.int64)
    # an index that, flattened, would still land inside the data: only a per-axis check catches it
    idx[1, 2, 3] = 4 if bad == "high" else -5
    feeds = {"data": _data(rng, data_shape, np.float32), "indices": idx}
    with pytest.raises(IndexError, match="out of range"):
        REGISTRY["GatherElements"].run([feeds["data"], idx], {"axis": axis})
    compiled = s4c_compile(_model(data_shape, idx_shape, axis), target="all", outdir=tmp_path / "out")
    with pytest.raises(Exception, match="out of range"):
        compiled.run(feeds, backend="ref")
    with pytest.raises(S4CError, match="index out of range"):
        compiled.run(feeds, backend="c")
    with pytest.raises(S4CError, match=r"dma\.gather: gather index -1 .* out of range"):
        compiled.run(feeds, backend="s4")
    idx[1, 2, 3] = 3 if bad == "high" else -4                # the same element in range: all run
    want = ort_outputs(_model(data_shape, idx_shape, axis), feeds)
    assert max_abs_diff(compiled.run(feeds, backend="s4"), want)["y"] == 0


def test_constant_out_of_range_indices_fail_at_run_time(tmp_path):
    """Constant indices out of range (data at run time): nothing folds; every backend stops the run."""
    idx = np.array([[0, 2], [1, 3]], np.int64)           # 3 is out of range for axis 0 of [3, 2]
    model = _model((3, 2), (2, 2), 0, idx_const=idx)
    compiled = s4c_compile(model, target="all", outdir=tmp_path / "out")
    feeds = {"data": np.arange(6, dtype=np.float32).reshape(3, 2)}
    with pytest.raises(Exception, match="out of range"):
        compiled.run(feeds, backend="ref")
    with pytest.raises(S4CError, match="index out of range"):
        compiled.run(feeds, backend="c")
    with pytest.raises(S4CError, match="out of range"):
        compiled.run(feeds, backend="s4")


def test_s4_refuses_runtime_indices_into_data_beyond_fp32_exact(tmp_path):
    """Run-time indices into data of more than 2^24 elements: flat indices would not be exact in
    fp32, so the S4 lowering refuses in one line naming the op (constant indices would still move)."""
    from s4c.errors import TargetError

    model = _model((2, (1 << 23) + 1), (2, 3), 1)
    with pytest.raises(TargetError) as info:
        s4c_compile(model, target="s4", outdir=tmp_path / "out")
    msg = str(info.value)
    assert "GatherElements" in msg and "2^24" in msg and "\n" not in msg, msg
