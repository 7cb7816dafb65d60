"""Opsets: the frontend imports every default-domain opset from 7 to the newest the installed onnx
knows. 13-28 are read natively; older models are converted up to 13 with onnx.version_converter
(issue 12). The same BERT-like block is written in each opset's own spelling (Split sizes as an
attribute / an operand / num_outputs, ReduceMean and Squeeze/Unsqueeze axes as attributes or
operands, Clip bounds and Slice starts as attributes or operands, Softmax's pre-13 flattening), then
compiled for ref, C and S4 and compared with onnxruntime on the model as written."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx.reference
import onnx.version_converter
import pytest
from onnx import TensorProto, helper, numpy_helper

import s4c
import s4c.frontend.onnx_import as onnx_import
from oracle import max_abs_diff, ort_outputs
from s4c.backend import S4CBackend
from s4c.errors import FrontendError
from s4c.evaluate import evaluate

NEWEST = onnx.defs.onnx_opset_version()
HIDDEN, HEADS, SEQ, BATCH = 16, 2, 8, 2


def block(opset: int) -> onnx.ModelProto:
    """Self-attention + residual + decomposed LayerNorm + a pooled head, spelled for `opset`."""
    rng = np.random.default_rng(0)
    h = HIDDEN
    inits = [numpy_helper.from_array(rng.standard_normal((h, 3 * h)).astype(np.float32) * 0.3, "w_qkv"),
             numpy_helper.from_array(rng.standard_normal(3 * h).astype(np.float32) * 0.1, "b_qkv"),
             numpy_helper.from_array(np.array([BATCH, SEQ, HEADS, h // HEADS], np.int64), "heads_shape"),
             numpy_helper.from_array(np.array([BATCH, SEQ, h], np.int64), "merge_shape"),
             numpy_helper.from_array(np.array(np.sqrt(h // HEADS), np.float32), "scale"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps")]
    nodes = []

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=f"{op}_{len(nodes)}", **attrs))

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    node("MatMul", ["x", "w_qkv"], ["qkv0"])
    node("Add", ["qkv0", "b_qkv"], ["qkv"])
    if opset < 13:
        node("Split", ["qkv"], ["q", "k", "v"], axis=2, split=[h, h, h])
    elif opset < 18:
        node("Split", ["qkv", const("split_sizes", np.array([h, h, h], np.int64))], ["q", "k", "v"], axis=2)
    else:
        node("Split", ["qkv"], ["q", "k", "v"], axis=2, num_outputs=3)
    for t in "qkv":
        node("Reshape", [t, "heads_shape"], [t + "4"])
    node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3])
    node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1])
    node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3])
    node("MatMul", ["qh", "kt"], ["s0"])
    node("Div", ["s0", "scale"], ["s1"])
    node("Softmax", ["s1"], ["p"], axis=3)
    node("MatMul", ["p", "vh"], ["ctx4"])
    node("Transpose", ["ctx4"], ["ctx3"], perm=[0, 2, 1, 3])
    node("Reshape", ["ctx3", "merge_shape"], ["ctx"])
    node("Add", ["ctx", "x"], ["res"])

    def reduce_mean(src, dst):  # axes: an attribute before 18, an operand from 18
        if opset < 18:
            node("ReduceMean", [src], [dst], axes=[-1], keepdims=1)
        else:
            node("ReduceMean", [src, const(dst + "_axes", np.array([-1], np.int64))], [dst], keepdims=1)

    reduce_mean("res", "mu")
    node("Sub", ["res", "mu"], ["xc"])
    node("Pow", ["xc", "two"], ["xc2"])
    reduce_mean("xc2", "var")
    node("Add", ["var", "eps"], ["var_eps"])
    node("Sqrt", ["var_eps"], ["std"])
    node("Div", ["xc", "std"], ["ln"])
    node("Tanh", ["ln"], ["act"])
    # Softmax of a 3-D tensor at axis 1: before 13 over the flattened axes 1.., from 13 over axis 1 alone
    node("Softmax", ["act"], ["sm"], axis=1)
    if opset < 11:  # Clip bounds: attributes before 11
        node("Clip", ["sm"], ["clipped"], min=0.0, max=0.05)
    else:
        node("Clip", ["sm", const("lo", np.array(0.0, np.float32)), const("hi", np.array(0.05, np.float32))],
             ["clipped"])
    if opset < 10:  # Slice starts/ends/axes: attributes before 10
        node("Slice", ["clipped"], ["first"], axes=[1], starts=[0], ends=[1])
    else:
        node("Slice", ["clipped", const("st", np.array([0], np.int64)), const("en", np.array([1], np.int64)),
                       const("ax", np.array([1], np.int64))], ["first"])
    if opset < 13:  # Squeeze/Unsqueeze axes: attributes before 13
        node("Squeeze", ["first"], ["pooled"], axes=[1])
        node("Unsqueeze", ["pooled"], ["pooled3"], axes=[1])
    else:
        node("Squeeze", ["first", const("sq_axes", np.array([1], np.int64))], ["pooled"])
        node("Unsqueeze", ["pooled", const("usq_axes", np.array([1], np.int64))], ["pooled3"])
    node("Concat", ["pooled3", "clipped"], ["out"], axis=1)
    graph = helper.make_graph(nodes, f"block_opset{opset}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", h])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq1", h]),
                               helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", h])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, SEQ, HIDDEN)).astype(np.float32)


def _expected(model: onnx.ModelProto, feeds: dict) -> dict:
    """onnxruntime on the model as written; the reference evaluator where onnxruntime lacks its opset."""
    try:
        return ort_outputs(model, feeds)
    except Exception:  # noqa: BLE001 - an onnxruntime older than the installed onnx's newest opset
        names = [o.name for o in model.graph.output]
        return dict(zip(names, onnx.reference.ReferenceEvaluator(model).run(names, feeds)))


def test_the_block_tells_old_and_new_softmax_apart():
    """The pre-13 Softmax semantics change the block's result: the comparisons below can fail."""
    feeds = {"x": _x()}
    diff = max_abs_diff(ort_outputs(block(11), feeds), ort_outputs(block(13), feeds))
    assert diff["out"] > 1e-2


@pytest.mark.parametrize("opset", sorted({7, 9, 11, 13, 17, 21, NEWEST}))
def test_block_at_opset_matches_onnxruntime(opset, tmp_path):
    model = block(opset)
    feeds = {"x": _x()}
    want = _expected(model, feeds)
    compiled = s4c.compile(model, {"x": (BATCH, SEQ, HIDDEN)}, target="all", outdir=tmp_path / "out")
    assert {"c", "s4"} <= set(compiled.targets)
    for backend in ("ref", "c", "s4"):
        got = compiled.run(feeds, backend=backend)
        for name, diff in max_abs_diff(got, want).items():
            assert diff <= 1e-5, f"opset {opset}, {backend}: output {name!r} differs by {diff}"


def test_old_opset_converts_through_the_file_path(tmp_path):
    """`s4c compile` reads a path: the conversion happens there too, not only for ModelProtos."""
    path = tmp_path / "block9.onnx"
    onnx.save(block(9), path)
    graph = s4c.load_onnx(path, input_shapes={"x": (BATCH, SEQ, HIDDEN)})
    feeds = {"x": _x(2)}
    assert max(max_abs_diff(evaluate(graph, feeds), ort_outputs(str(path), feeds)).values()) <= 1e-5


def test_large_and_external_initializers_bypass_the_converter(tmp_path, monkeypatch):
    """An opset-7 model with an external-data weight: converted without the weight's bytes going
    through the converter, and the weight is intact afterwards."""
    w = np.random.default_rng(0).standard_normal((HIDDEN, 2048)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, HIDDEN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 2048])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin",
              size_threshold=1024)
    assert os.path.getsize(tmp_path / "ext.bin") >= w.nbytes

    seen = []
    real_convert = onnx.version_converter.convert_version

    def spy(proto, target):
        seen.append(({t.name for t in proto.graph.initializer}, {i.name for i in proto.graph.input}, target))
        return real_convert(proto, target)

    monkeypatch.setattr(onnx.version_converter, "convert_version", spy)
    compiled = s4c.compile(path, target="c", outdir=tmp_path / "out")
    assert seen == [(set(), {"x", "w"}, 13)]  # the weight stood in as an input, not as bytes
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 3, HIDDEN)).astype(np.float32)}
    want = ort_outputs(str(path), feeds)
    for backend in ("ref", "c"):
        assert max(max_abs_diff(compiled.run(feeds, backend=backend), want).values()) <= 1e-5
    assert [v.name for v in compiled.graph.inputs] == ["x"]  # the stand-in input is gone again


@pytest.mark.parametrize("opset", [1, 6, NEWEST + 1])
def test_opset_outside_7_to_newest_is_a_one_line_error(opset, tmp_path):
    model = block(7)
    model.opset_import[0].version = opset
    with pytest.raises(FrontendError) as err:
        s4c.compile(model, {"x": (BATCH, SEQ, HIDDEN)}, target="c", outdir=tmp_path / "out")
    message = str(err.value)
    assert f"opset {opset} is not supported" in message and f"7-{NEWEST}" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def _batchnorm_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    params = [numpy_helper.from_array(np.full(2, v, np.float32), n) for n, v in zip("sbmv", (1.0, 0.0, 0.0, 1.0))]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["y"], name="the_bn", spatial=0)]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
                              params)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])


def test_failed_conversion_names_the_node_and_op(tmp_path):
    """BatchNormalization-8 with spatial=0 has no adapter to 9; the converter's message does not
    name the op ("Attribute spatial must have value 1"), so the frontend finds the node itself."""
    with pytest.raises(FrontendError) as err:
        s4c.compile(_batchnorm_model(), target="c", outdir=tmp_path / "out")
    message = str(err.value)
    assert "opset 8" in message and "node 'the_bn' (BatchNormalization)" in message and "spatial" in message
    assert "relu" not in message and "\n" not in message and "/project/" not in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(FrontendError, match="node 'the_bn' \\(BatchNormalization\\)"):
        S4CBackend.prepare(_batchnorm_model())


def test_failed_downgrade_names_the_op_from_the_converters_message(monkeypatch):
    """Newer-than-native models are converted down; an op with no older version is named (the
    installed onnx's newest opset may be native, so the native range is narrowed here)."""
    monkeypatch.setattr(onnx_import, "NATIVE_OPSETS", (13, 21))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("RMSNormalization", ["r", "g"], ["y"], name="the_rms")]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(np.ones(4, np.float32), "g")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    with pytest.raises(FrontendError) as err:
        s4c.load_onnx(model)
    message = str(err.value)
    assert "opset 23" in message and "node 'the_rms' (RMSNormalization) to opset 21" in message
    assert "\n" not in message


def test_dequantize_linear_output_dtype():
    """Opset 23+ DequantizeLinear may produce another float type than its scale's."""
    q = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["d"], output_dtype=TensorProto.FLOAT16),
             helper.make_node("Mul", ["d", "x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 4])],
                              [numpy_helper.from_array(q, "q"),
                               numpy_helper.from_array(np.array(0.37, np.float32), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    x = np.random.default_rng(1).standard_normal((4, 4)).astype(np.float16)
    want = onnx.reference.ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = evaluate(s4c.load_onnx(model), {"x": x})["y"]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)
