"""CumSum and ReduceL2 end to end (import, reference, C, S4), each against onnxruntime.

CumSum: RoBERTa / XLM-R / MPNet compute position ids as cumsum(input_ids != pad, axis=1) * mask +
pad on int32/int64 data; the S4 (fp32 VPU) computes that exactly because s4c.ranges bounds the sums
by the sequence length, and refuses a CumSum of an unbounded integer input. Float CumSum over every
axis sign, exclusive / reverse, and shapes that take each S4 path (transposed [A, n] tiles, strided
[A, n, B] tiles, several tiles and column chunks).

ReduceL2: the L2 normalisation of sentence-embedding models, x / max(ReduceL2(x, -1, keepdims), eps),
and plain ReduceL2 over various axes with and without keepdims.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from oracle import max_abs_diff, ort_outputs
from s4c import compile as s4c_compile
from s4c.errors import FrontendError, TargetError
from s4c.frontend import load_onnx

ONNX_TYPE = {np.float32: TensorProto.FLOAT, np.int64: TensorProto.INT64, np.int32: TensorProto.INT32}
PAD = 1


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run_everywhere(model, feeds, tmp_path, op_name, exact=True):
    """Every backend's outputs against onnxruntime's: equal (exact) or within 1e-5 relative."""
    compiled = s4c_compile(model, target="all", outdir=tmp_path / "out")
    assert op_name in [op.op for op in compiled.graph.ops]
    want = ort_outputs(model, feeds)
    for backend in ("ref", "c", "s4"):
        got = compiled.run(feeds, backend=backend)
        for name, w in want.items():
            assert got[name].dtype == w.dtype and got[name].shape == w.shape, (backend, name)
            if exact:
                np.testing.assert_array_equal(got[name], w, err_msg=f"{backend}: {name}")
            else:
                np.testing.assert_allclose(got[name], w, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(w), initial=1)),
                                           err_msg=f"{backend}: {name}")
    return want


# -- CumSum ------------------------------------------------------------------------------------------

def _position_ids_model(batch, seq, dtype, own_pad_constant=False):
    """HF RoBERTa's create_position_ids_from_input_ids: mask = (ids != pad) as `dtype`;
    pos = cumsum(mask, 1) * mask + pad, as int64. `own_pad_constant`: the Equal reads a pad constant
    nothing else reads (as the torchscript exporter writes it)."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq])
    pos = helper.make_tensor_value_info("pos", TensorProto.INT64, [batch, seq])
    inits = [numpy_helper.from_array(np.array(PAD, np.int64), "pad"),
             numpy_helper.from_array(np.array(PAD, np.int64), "pad_cmp"),
             numpy_helper.from_array(np.array(1, np.int64), "axis")]
    nodes = [helper.make_node("Equal", ["input_ids", "pad_cmp" if own_pad_constant else "pad"], ["is_pad"]),
             helper.make_node("Not", ["is_pad"], ["keep"]),
             helper.make_node("Cast", ["keep"], ["mask"], to=ONNX_TYPE[dtype]),
             helper.make_node("CumSum", ["mask", "axis"], ["csum"], name="cumsum"),
             helper.make_node("Mul", ["csum", "mask"], ["inc"]),
             helper.make_node("Cast", ["inc"], ["inc64"], to=TensorProto.INT64),
             helper.make_node("Add", ["inc64", "pad"], ["pos"])]
    return _model(nodes, [ids], [pos], inits)


@pytest.mark.parametrize("own_pad_constant", [False, True])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
@pytest.mark.parametrize("batch,seq", [(1, 16), (3, 40)])
def test_roberta_position_ids(tmp_path, dtype, batch, seq, own_pad_constant):
    rng = np.random.default_rng(batch * seq)
    ids = rng.integers(0, 50, (batch, seq)).astype(np.int64)
    ids[:, -5:] = PAD  # right padding, as a tokenizer writes it
    ids[0, 3] = PAD    # and one pad inside a row
    model = _position_ids_model(batch, seq, dtype, own_pad_constant)
    want = _run_everywhere(model, {"input_ids": ids}, tmp_path, "CumSum")
    # the oracle itself: positions count the non-pad tokens from pad + 1, pads stay at pad
    keep = ids != PAD
    np.testing.assert_array_equal(want["pos"], np.where(keep, np.cumsum(keep, axis=1) + PAD, PAD))


def _cumsum_model(shape, axis, dtype=np.float32, exclusive=0, reverse=0, axis_dtype=np.int64):
    x = helper.make_tensor_value_info("x", ONNX_TYPE[dtype], list(shape))
    y = helper.make_tensor_value_info("y", ONNX_TYPE[dtype], list(shape))
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], name="cs", exclusive=exclusive, reverse=reverse)
    return _model([node], [x], [y], [numpy_helper.from_array(np.array(axis, axis_dtype), "axis")])


# (shape, axis): every rank 1-4 and axis sign, and shapes for each S4 path: [A, n] rows transposed
# (axis last, A > 1), [A, n, B] strided tiles, several tiles ((300, 20): A > 256; (9, 700, 2)), column
# chunks ((2, 64, 1500))
CUMSUM_CASES = [((7,), 0), ((3, 5), 0), ((3, 5), 1), ((3, 5), -1), ((2, 6, 4), 1), ((2, 6, 4), -3),
                ((2, 3, 4, 5), -2), ((2, 3, 4, 5), 3), ((300, 20), 1), ((9, 700, 2), 1), ((2, 64, 1500), 1)]


# every flag combination on the small shapes; the large ones (their tiling) plain and exclusive+reverse
FLOAT_CUMSUM = [(shape, axis, e, r) for shape, axis in CUMSUM_CASES for e, r in ((0, 0), (1, 0), (0, 1), (1, 1))
                if np.prod(shape) < 10000 or e == r]


@pytest.mark.parametrize("shape,axis,exclusive,reverse", FLOAT_CUMSUM)
def test_float_cumsum(tmp_path, shape, axis, exclusive, reverse):
    rng = np.random.default_rng(len(shape) * 10 + axis)
    x = rng.standard_normal(shape).astype(np.float32)
    _run_everywhere(_cumsum_model(shape, axis, exclusive=exclusive, reverse=reverse), {"x": x}, tmp_path,
                    "CumSum", exact=False)


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 1)])
def test_bounded_integer_cumsum_on_s4(tmp_path, exclusive, reverse):
    """An int64 cumsum of a bounded value (a comparison cast to int64, times 3): exact on the S4."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 50])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [4, 3, 50])
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(3, np.int64), "three"),
             numpy_helper.from_array(np.array(-1, np.int32), "axis")]
    nodes = [helper.make_node("Greater", ["x", "zero"], ["pos"]),
             helper.make_node("Cast", ["pos"], ["i"], to=TensorProto.INT64),
             helper.make_node("Mul", ["i", "three"], ["i3"]),
             helper.make_node("CumSum", ["i3", "axis"], ["y"], name="cs", exclusive=exclusive, reverse=reverse)]
    model = _model(nodes, [x], [y], inits)
    feeds = {"x": np.random.default_rng(5).standard_normal((4, 3, 50)).astype(np.float32)}
    want = _run_everywhere(model, feeds, tmp_path, "CumSum")
    assert want["y"].max() > 0


def test_large_int64_cumsum_on_ref_and_c_and_refused_on_s4(tmp_path):
    """Sums beyond 2^32: ref and C are exact (64-bit accumulation); the S4 refuses the unbounded
    int64 input, naming the op and its node."""
    model = _cumsum_model((3, 9), 1, dtype=np.int64, exclusive=1)
    x = (np.random.default_rng(2).integers(-5, 5, (3, 9)) * (1 << 40) + 7).astype(np.int64)
    want = ort_outputs(model, {"x": x})
    assert np.abs(want["y"]).max() > 1 << 32
    compiled = s4c_compile(model, target="c", outdir=tmp_path / "c")
    for backend in ("ref", "c"):
        assert max_abs_diff(compiled.run({"x": x}, backend=backend), want) == {"y": 0.0}, backend
    with pytest.raises(TargetError, match=r"CumSum.*'cs'.*2\^24"):
        s4c_compile(model, target="s4", outdir=tmp_path / "s4")


def test_cumsum_import_errors():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])
    ax = helper.make_tensor_value_info("ax", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])
    runtime_axis = _model([helper.make_node("CumSum", ["x", "ax"], ["y"], name="cs")], [x, ax], [y])
    with pytest.raises(FrontendError) as info:
        load_onnx(runtime_axis)
    message = str(info.value)
    assert "\n" not in message and "'cs'" in message and "CumSum" in message and "axis" in message
    for axis, why in ((2, "out of range"), (-3, "out of range"), (np.array([0, 1]), "one integer")):
        with pytest.raises(FrontendError, match=f"'cs'.*CumSum.*{why}"):
            load_onnx(_cumsum_model((2, 5), axis))


def test_cumsum_axis_becomes_an_attribute():
    graph = load_onnx(_cumsum_model((2, 5), -1, exclusive=1, axis_dtype=np.int32))
    (op,) = graph.ops
    assert op.op == "CumSum" and [v.name for v in op.inputs] == ["x"]
    assert (op.attrs["axis"], op.attrs["exclusive"], op.attrs.get("reverse", 0)) == (-1, 1, 0)


# -- ReduceL2 ----------------------------------------------------------------------------------------

def _reduce_l2_model(shape, axes, keepdims, opset=18):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    operands, inits, attrs = ["x"], [], {"keepdims": keepdims}
    if axes is not None:
        if opset >= 18:
            operands.append("axes")
            inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        else:
            attrs["axes"] = axes
    node = helper.make_node("ReduceL2", operands, ["y"], name="l2", **attrs)
    return _model([node], [x], [y], inits, opset=opset)


@pytest.mark.parametrize("shape,axes,keepdims,opset", [
    ((2, 7, 48), [-1], 1, 18), ((2, 7, 48), [-1], 0, 18), ((2, 7, 48), [1], 1, 18), ((2, 7, 48), [0, 2], 0, 18),
    ((2, 7, 48), None, 1, 18), ((5, 300), [1], 1, 13), ((3, 4, 5, 6), [-3, -1], 1, 13)])
def test_reduce_l2(tmp_path, shape, axes, keepdims, opset):
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    want = _run_everywhere(_reduce_l2_model(shape, axes, keepdims, opset), {"x": x}, tmp_path, "ReduceL2",
                           exact=False)
    ref_axes = tuple(range(len(shape))) if axes is None else tuple(axes)
    np.testing.assert_allclose(want["y"], np.sqrt((x.astype(np.float64) ** 2).sum(ref_axes, keepdims=bool(keepdims))),
                               rtol=1e-5)


def test_reduce_l2_noop_with_empty_axes_is_elementwise(tmp_path):
    """No axes and noop_with_empty_axes: nothing is reduced, but ReduceL2 still takes sqrt(x^2) = |x|
    (ONNX's reference and onnxruntime), so it is not an alias of x."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])
    model = _model([helper.make_node("ReduceL2", ["x"], ["y"], name="l2", noop_with_empty_axes=1)], [x], [y], opset=18)
    feeds = {"x": np.random.default_rng(4).standard_normal((3, 5)).astype(np.float32)}
    want = _run_everywhere(model, feeds, tmp_path, "ReduceL2", exact=False)
    assert (feeds["x"] < 0).any()
    np.testing.assert_array_equal(want["y"], np.abs(feeds["x"]))


def test_sentence_embedding_l2_normalisation(tmp_path):
    """sentence-transformers' Normalize: x / max(||x||_2 over the last axis, eps)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 384])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 384])
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "axes"),
             numpy_helper.from_array(np.array(1e-12, np.float32), "eps")]
    nodes = [helper.make_node("ReduceL2", ["x", "axes"], ["norm"], keepdims=1, name="l2"),
             helper.make_node("Max", ["norm", "eps"], ["den"]),
             helper.make_node("Div", ["x", "den"], ["y"])]
    model = _model(nodes, [x], [y], inits, opset=18)
    feeds = {"x": (np.random.default_rng(9).standard_normal((3, 384)) * 4).astype(np.float32)}
    want = _run_everywhere(model, feeds, tmp_path, "ReduceL2", exact=False)
    np.testing.assert_allclose(np.linalg.norm(want["y"], axis=-1), 1.0, rtol=1e-5)
