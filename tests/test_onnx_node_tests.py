"""ONNX's own backend node tests, run through s4c's `onnx.backend` adaptor (s4c.backend, "ref" executor).

The onnx wheel ships the node cases as Python generators (onnx.backend.test.case.node), not as the
data/node folders BackendTest reads: importing a case module runs its `export*` functions, which
record each case's model, inputs, expected outputs and tolerances. Only the modules that build
nodes of the ops we test are imported (the pooling modules alone take seconds).

Which cases run is decided by tests/onnx_node_allowlist.py: every case of an allowed op must pass,
except the listed exclusions, which must still fail (checked by one test) so the list stays accurate.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import warnings
from collections import defaultdict

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

from onnx_node_allowlist import ALLOWED_OPS, EXCLUDE
from s4c import backend as s4c_backend
from s4c.backend import EXECUTORS, S4CBackend, register_executor
from s4c.errors import FrontendError, S4CError
from s4c.evaluate import evaluate
from s4c.frontend.onnx_ops import SUPPORTED_OPS

_MAKE_NODE = re.compile(r"""make_node\(\s*["'](\w+)["']""")
_EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


def _load_cases() -> tuple[dict, dict]:
    """(case name -> TestCase, case name -> op type) for every node case of an op s4c might import."""
    import onnx.backend.test.case.node as node_pkg

    wanted = set(ALLOWED_OPS) | SUPPORTED_OPS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators overflow casts on purpose
        if hasattr(node_pkg, "_NodeTestCases") and getattr(node_pkg, "_TargetOpType", None) is None:
            pkg_dir = os.path.dirname(node_pkg.__file__)
            for info in pkgutil.iter_modules(node_pkg.__path__):
                path = os.path.join(pkg_dir, info.name + ".py")
                if info.ispkg or not os.path.isfile(path):
                    continue
                with open(path, encoding="utf-8") as f:
                    if set(_MAKE_NODE.findall(f.read())) & wanted:
                        importlib.import_module(f"{node_pkg.__name__}.{info.name}")
            cases = list(node_pkg._NodeTestCases)
        else:  # the private hooks moved: collect everything (slower, same result)
            cases = node_pkg.collect_testcases()
    by_name = {c.name: c for c in cases}
    op_of = {c.name: c.model.graph.node[0].op_type for c in cases
             if not _EXPANDED.search(c.name) and len(c.model.graph.node) == 1}
    for c in cases:  # an _expanded case (the op's function body) belongs to its op
        base = _EXPANDED.sub("", c.name)
        if c.name not in op_of and base in op_of:
            op_of[c.name] = op_of[base]
    return by_name, op_of


CASES, OP_OF = _load_cases()
ALLOWED = set(ALLOWED_OPS)
SELECTED = sorted((name for name, op in OP_OF.items() if op in ALLOWED), key=lambda n: (OP_OF[n], n))


def _array(value) -> np.ndarray:
    return onnx.numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)


def run_case(name: str, backend: str | None = None) -> None:
    """Run node case `name` through `backend` (None: the adaptor's default, the reference
    evaluator) and check every output's dtype, shape and values against the case's expectation.
    The C and S4 backend tests run the same cases through this."""
    case = CASES[name]
    rep = S4CBackend.prepare(case.model) if backend is None else S4CBackend.prepare(case.model, backend=backend)
    for inputs, expected in case.data_sets:
        got = rep.run([_array(x) for x in inputs])
        assert len(got) == len(expected), f"{len(got)} outputs, expected {len(expected)}"
        for out_name, actual, want in zip(rep.output_names, got, expected):
            want = _array(want)
            assert actual.dtype == want.dtype, f"output {out_name!r}: dtype {actual.dtype}, expected {want.dtype}"
            assert actual.shape == want.shape, f"output {out_name!r}: shape {actual.shape}, expected {want.shape}"
            np.testing.assert_allclose(actual, want, rtol=case.rtol, atol=case.atol, err_msg=f"output {out_name!r}")


@pytest.mark.parametrize("name", [n for n in SELECTED if n not in EXCLUDE])
def test_node_case(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. log(0), nan compares in the cases
        run_case(name)


def test_excluded_cases_still_fail():
    """An excluded case that starts passing must leave EXCLUDE (one test, not 200 xfail lines)."""
    passing = []
    for name in sorted(EXCLUDE):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                run_case(name)
            except Exception:  # noqa: BLE001 - any failure keeps the exclusion valid
                continue
        passing.append(name)
    assert passing == [], "excluded cases that now pass (remove them from tests/onnx_node_allowlist.py)"


# -- the allow-list itself ----------------------------------------------------------------------------

def test_allowed_ops_are_supported():
    assert sorted(ALLOWED - SUPPORTED_OPS) == []


def test_every_supported_op_with_node_cases_is_allowed():
    covered = {op for op in OP_OF.values() if op in SUPPORTED_OPS}
    assert sorted(covered - ALLOWED) == []


def test_every_allowed_op_has_cases():
    counts = defaultdict(int)
    for name in SELECTED:
        counts[OP_OF[name]] += 1
    assert sorted(op for op in ALLOWED if not counts[op]) == []


def test_exclusions_name_real_cases_of_allowed_ops():
    assert sorted(n for n in EXCLUDE if n not in SELECTED) == []
    assert all(reason and "\n" not in reason for reason in EXCLUDE.values())


# -- the backend adaptor ------------------------------------------------------------------------------

def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_output_that_is_an_input_through_identity():
    model = _model([helper.make_node("Identity", ["x"], ["y"], name="id"),
                    helper.make_node("Add", ["x", "x"], ["z"], name="add")],
                   [_vi("x", TensorProto.FLOAT, ["N", 3])],
                   [_vi("z", TensorProto.FLOAT, ["N", 3]), _vi("y", TensorProto.FLOAT, ["N", 3])])
    rep = S4CBackend.prepare(model)
    for n in (2, 5):
        x = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
        z, y = rep.run([x])
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(z, x + x)
        out = rep.run({"x": x})
        np.testing.assert_array_equal(out["y"], x)
    assert len(rep._graphs) == 2  # one compiled graph per input shape


def test_output_that_is_an_input_without_a_node():
    model = _model([], [_vi("x", TensorProto.FLOAT, [2])], [_vi("x", TensorProto.FLOAT, [2])])
    (y,) = S4CBackend.run_model(model, [np.array([1, 2], np.float32)])
    np.testing.assert_array_equal(y, [1, 2])


def test_compiled_graph_cache_is_bounded():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, ["N"])],
                   [_vi("y", TensorProto.FLOAT, ["N"])])
    rep = S4CBackend.prepare(model, max_cached=2)
    for n in (1, 2, 3, 2):
        (y,) = rep.run([np.full(n, -1, np.float32)])
        assert y.shape == (n,)
    assert [key[0][0][1] for key in rep._graphs] == [(3,), (2,)]


def test_only_identity_model():
    model = _model([helper.make_node("Identity", ["x"], ["y"])], [_vi("x", TensorProto.INT64, [4])],
                   [_vi("y", TensorProto.INT64, [4])])
    x = np.array([3, 1, 4, 1], np.int64)
    (y,) = S4CBackend.run_model(model, [x])
    np.testing.assert_array_equal(y, x)
    assert y.dtype == np.int64


def test_unsupported_ops_are_listed_in_one_line():
    model = _model([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk_first"),
                    helper.make_node("Relu", ["v"], ["r"], name="relu"),
                    helper.make_node("TopK", ["r", "k"], ["v2", "i2"], name="topk_second"),
                    helper.make_node("Hardmax", ["v2"], ["h"], name="hardmax_first")],
                   [_vi("x", TensorProto.FLOAT, [2, 8]), _vi("k", TensorProto.INT64, [1])],
                   [_vi("h", TensorProto.FLOAT, [2, 3])])
    with pytest.raises(FrontendError) as info:
        S4CBackend.prepare(model)
    message = str(info.value)
    assert "\n" not in message
    assert "unsupported op type(s): Hardmax (first at node 'hardmax_first'), TopK (first at node 'topk_first')" \
        in message
    assert "Relu" not in message and "topk_second" not in message


def test_runtime_shape_operand_is_specialised_and_cached():
    # y = Reshape(x, Concat(Shape(x)[0:1], tail)): only `tail` decides the shape, `x` stays an input.
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=0, end=1),
             helper.make_node("Concat", ["s", "tail"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 6]), _vi("tail", TensorProto.INT64, [2])],
                   [_vi("y", TensorProto.FLOAT, ["a", "b", "c"])])
    rep = S4CBackend.prepare(model)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    (y,) = rep.run([x, np.array([3, 2], np.int64)])
    np.testing.assert_array_equal(y, x.reshape(2, 3, 2))
    graph = next(iter(rep._graphs.values()))
    assert [v.name for v in graph.inputs] == ["x"]  # tail frozen, x still a runtime input
    (y,) = rep.run([x + 1, np.array([3, 2], np.int64)])  # same shapes and tail: cached
    np.testing.assert_array_equal(y, (x + 1).reshape(2, 3, 2))
    assert len(rep._graphs) == 1
    (y,) = rep.run([x, np.array([2, 3], np.int64)])  # a new tail value: a new specialisation
    np.testing.assert_array_equal(y, x.reshape(2, 2, 3))
    assert len(rep._graphs) == 2


def test_executor_registry():
    calls = []

    def probe(graph, inputs):
        calls.append(sorted(inputs))
        return evaluate(graph, inputs)

    register_executor("probe", probe)
    try:
        with pytest.raises(ValueError):
            register_executor("probe", probe)
        model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [3])],
                       [_vi("y", TensorProto.FLOAT, [3])])
        (y,) = S4CBackend.run_model(model, [np.array([-1, 0, 2], np.float32)], backend="probe")
        np.testing.assert_array_equal(y, [0, 0, 2])
        assert calls == [["x"]]
        with pytest.raises(S4CError, match="unknown backend 'nope'"):
            S4CBackend.prepare(model, backend="nope")
    finally:
        EXECUTORS.pop("probe", None)


def test_backend_api_surface():
    assert S4CBackend.supports_device("CPU")
    assert not S4CBackend.supports_device("CUDA")
    assert s4c_backend.supports_device("CPU")
    with pytest.raises(NotImplementedError):
        S4CBackend.run_node(helper.make_node("Relu", ["x"], ["y"]), [np.zeros(3, np.float32)])
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [3])],
                   [_vi("y", TensorProto.FLOAT, [3])])
    with pytest.raises(S4CError, match="got 2 input"):
        S4CBackend.prepare(model).run([np.zeros(3, np.float32)] * 2)


def test_old_opset_is_converted():
    model = _model([helper.make_node("Not", ["x"], ["y"])], [_vi("x", TensorProto.BOOL, [2])],
                   [_vi("y", TensorProto.BOOL, [2])], opset=7)
    (y,) = S4CBackend.run_model(model, [np.array([True, False])])
    np.testing.assert_array_equal(y, [False, True])
    model.opset_import[0].version = 6  # older than any opset s4c imports: refused at prepare
    with pytest.raises(FrontendError, match="opset 6 is not supported"):
        S4CBackend.prepare(model)
