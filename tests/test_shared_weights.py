"""Weights shared between ops are stored once, in weights.bin (C) and in model.s4's constant segment.

ALBERT's encoder layers share one set of weights: every layer's MatMuls read the same initializers.
fuse-linear transposes a weight to [out, in] and merge-qkv concatenates Q/K/V once per distinct
source constant (memoised by identity), so the layers' Linears read the same constant Values; the
backends store one copy per Value and, as a safety net, one copy per distinct byte content (the
dynamo exporter writes each layer's transposed weight as its own initializer).

The expected sizes are derived from the IR after the passes: each distinct constant once, a Linear
weight in the layout the target chose (packed by s4c.sparse, each array 64-byte aligned).
"""

import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from oracle import REPO, max_abs_diff, ort_outputs

import s4c
from s4c.codegen.c.weights_bin import HEADER_BYTES, WeightStore
from s4c.codegen.s4.constants import ConstSegment
from s4c.s4 import Program
from s4c.sparse import parse_layout

TOL = 1e-3


def _rup(n: int) -> int:
    return -(-int(n) // 64) * 64


def _packed_arrays(w: np.ndarray, layout: str, widen: bool) -> list[np.ndarray]:
    """`w` packed in `layout` as s4c.sparse packs it; with `widen`, the indices int32 (the backends
    store them at least as wide as s4c.sparse does and at most int32)."""
    if layout == "dense":
        return [np.asarray(w, np.float32)]
    arrays = parse_layout(layout).pack(np.asarray(w, np.float32)).arrays
    return [np.asarray(a, np.int32) if widen and name == "indices" else np.asarray(a) for name, a in arrays.items()]


def _linear_uses(graph):
    """{id(weight Value): (Value, number of Linear ops reading it)}."""
    uses: dict = {}
    for op in graph.ops:
        if op.op == "Linear" and op.inputs[1].is_constant:
            v = op.inputs[1]
            uses[id(v)] = (v, uses.get(id(v), (v, 0))[1] + 1)
    return uses


def _bounds(model, target: str) -> tuple[int, int]:
    """(once, extra): an upper bound of the stored bytes with every distinct IR constant (by
    content) stored once (a Linear weight packed in the layout `target` chose, indices int32, each array 64-byte
    aligned, plus 256 bytes for per-tile tables), and a lower bound of the bytes more that storing
    a copy per Linear would take (the packed arrays, narrowest indices, unaligned, once per Linear
    after the first reading the weight)."""
    layouts = {w["weight"]: w["layout"] for w in model.report["layouts"][target]["weights"]}
    uses = _linear_uses(model.graph)
    once = extra = 0
    seen = set()
    for v in model.graph.constants():
        if not isinstance(v.data, np.ndarray):
            continue
        content = (v.data.dtype.str, v.data.shape, layouts.get(v.name), v.data.tobytes())
        if content in seen:  # equal constants (e.g. dynamo's per-layer initializers) are stored once too
            continue
        seen.add(content)
        if id(v) in uses:
            once += sum(_rup(a.nbytes) for a in _packed_arrays(v.data, layouts[v.name], True)) + 256
            extra += sum(a.nbytes for a in _packed_arrays(v.data, layouts[v.name], False)) * (uses[id(v)][1] - 1)
        else:
            once += _rup(v.data.nbytes)
    return once, extra


def _stored(model) -> dict[str, int]:
    c = os.path.getsize(os.path.join(model.outdir, "c", "weights.bin")) - HEADER_BYTES
    with open(os.path.join(model.outdir, "model.s4"), "rb") as f:
        s4 = len(Program.from_bytes(f.read()).const)
    return {"c": c, "s4": s4}


# -- ALBERT (needs torch + transformers to make the model) --------------------------------------------

@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("layout_default", [None, "bsr4x1"])
def test_albert_shared_weights_stored_once(exporter, layout_default, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(REPO, "examples"))
    from model_families import cached_family_model, example_inputs, input_names

    path = str(cached_family_model("albert", exporter))
    names = input_names("albert", True)
    options = {"layout_default": layout_default} if layout_default else None
    model = s4c.compile(path, {n: (2, 16) for n in names}, target="all", outdir=tmp_path / "out",
                        backend_options=options)

    # the IR: the encoder's Linears (QKV, attention output, FFN in, FFN out) read one weight per
    # role, each read by both layers
    shared = [v for v, n in _linear_uses(model.graph).values() if n > 1]
    if exporter == "torchscript":  # dynamo writes each layer's transposed weight as an initializer
        assert len(shared) == 4, [v.name for v in shared]
        assert all(n == 2 for _, n in _linear_uses(model.graph).values() if n > 1)

    stored = _stored(model)
    for target in ("c", "s4"):
        once, extra = _bounds(model, target)
        assert stored[target] <= once, (target, stored[target], once)
        if exporter == "torchscript":  # the bound is tight enough: a copy per layer would exceed it
            assert stored[target] + extra > once, (target, stored[target], extra, once)

    feeds = example_inputs(names, 2, 16, seed=3)
    expected = ort_outputs(path, feeds)
    for backend in ("c", "s4"):
        diff = max_abs_diff(expected, model.run(feeds, backend=backend))
        assert max(diff.values()) < TOL, (backend, diff)


# -- hand-made graphs (no torch) ------------------------------------------------------------------------

def _two_matmul_model(same: bool, n: int = 24, seed: int = 0) -> onnx.ModelProto:
    """x -> MatMul(W) -> Relu -> MatMul(W | W') -> y, W [n, n] (no zeros); W' a distinct
    initializer with W's content when not `same`."""
    rng = np.random.default_rng(seed)
    w = (rng.random((n, n), dtype=np.float32) + 0.5) * np.where(rng.random((n, n)) < 0.5, 1, -1).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    second = "W"
    if not same:
        inits.append(numpy_helper.from_array(w.copy(), "W2"))
        second = "W2"
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", second], ["y"])]
    graph = helper.make_graph(nodes, "two_matmuls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _count(haystack: bytes, needle: bytes) -> int:
    count, at = 0, haystack.find(needle)
    while at >= 0:
        count += 1
        at = haystack.find(needle, at + 1)
    return count


@pytest.mark.parametrize("same", [True, False], ids=["one-initializer", "equal-initializers"])
def test_two_matmuls_store_the_weight_once(same, tmp_path):
    proto = _two_matmul_model(same)
    w = numpy_helper.to_array(proto.graph.initializer[0])
    model = s4c.compile(proto, target="all", outdir=tmp_path / "out", backend_options={"layout_default": "dense"})

    linears = [op for op in model.graph.ops if op.op == "Linear"]
    assert len(linears) == 2
    if same:  # fuse-linear made one [out, in] copy for both
        assert linears[0].inputs[1] is linears[1].inputs[1]
        assert len([v for v in model.graph.constants() if v.type.shape == w.shape]) == 1

    wt = np.ascontiguousarray(w.T).tobytes()
    with open(os.path.join(model.outdir, "c", "weights.bin"), "rb") as f:
        weights_bin = f.read()
    with open(os.path.join(model.outdir, "model.s4"), "rb") as f:
        const = bytes(Program.from_bytes(f.read()).const)
    assert _count(weights_bin, wt) == 1
    assert _count(const, wt) == 1
    assert len(weights_bin) - HEADER_BYTES == _rup(w.nbytes)
    assert len(const) == _rup(w.nbytes)
    for target in ("c", "s4"):  # the layout report counts a shared weight's bytes once too
        totals = model.report["layouts"][target]["totals"]
        assert totals["weights"] == 2
        assert totals["distinct_weights"] == (1 if same else 2)
        assert totals["bytes"] == w.nbytes * (1 if same else 2), totals

    x = np.random.default_rng(1).standard_normal((2, 8, w.shape[0])).astype(np.float32)
    expected = ort_outputs(proto, {"x": x})
    for backend in ("ref", "c", "s4"):
        diff = max_abs_diff(expected, model.run({"x": x}, backend=backend))
        assert max(diff.values()) < TOL, (backend, diff)


def test_gemm_and_matmul_share_a_sparse_weight(tmp_path):
    """A Gemm and a MatMul on one [in, out] initializer (each needing the [out, in] transpose) and a
    Gemm(transB) reading it as [out, in]: the transpose is made once, and each weight is stored
    once in a sparse layout on both backends."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 32)).astype(np.float32) * (rng.random((32, 32)) < 0.2)
    nodes = [helper.make_node("Gemm", ["x", "W"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MatMul", ["r", "W"], ["b"]),
             helper.make_node("Relu", ["b"], ["s"]),
             helper.make_node("Gemm", ["s", "W"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "gemms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])],
                              [numpy_helper.from_array(w, "W")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = s4c.compile(proto, target="all", outdir=tmp_path / "out", backend_options={"layout_default": "bsr4x1"})
    weights = [op.inputs[1] for op in model.graph.ops if op.op == "Linear"]
    assert len(weights) == 3 and weights[0] is weights[1] and weights[2] is not weights[0]
    stored = _stored(model)
    for target in ("c", "s4"):
        once, extra = _bounds(model, target)
        assert stored[target] <= once < stored[target] + extra, (target, stored[target], once, extra)
    x = rng.standard_normal((4, 32)).astype(np.float32)
    expected = ort_outputs(proto, {"x": x})
    for backend in ("c", "s4"):
        diff = max_abs_diff(expected, model.run({"x": x}, backend=backend))
        assert max(diff.values()) < TOL, (backend, diff)


# -- the stores themselves --------------------------------------------------------------------------------

@pytest.mark.parametrize("store", [WeightStore, ConstSegment])
def test_store_dedupes_equal_bytes(store):
    s = store()
    a = np.arange(100, dtype=np.float32)
    first = s.add(a, key="a")
    assert s.add(a, key="a") == first                       # by key
    assert s.add(a.copy(), key="b") == first                # equal bytes, another key
    assert s.add(a.view(np.int32).copy()) == first          # equal bytes, another dtype
    other = a.copy()
    other[-1] += 1
    assert s.add(other) != first                            # same size, other bytes
    longer = s.add(np.arange(101, dtype=np.float32))
    assert longer != first
    size = s.nbytes
    assert s.add(np.arange(101, dtype=np.float32)) == longer and s.nbytes == size  # again: no growth
