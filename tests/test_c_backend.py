"""The portable C backend (issue 7): codegen/c.

- every committed fixture, compiled once per session (module-scoped cache), matches onnxruntime;
- every Linear layout (dense, csr, bsrRxC, nmN:M) with f32 and int8 weights matches the reference;
- ONNX's node tests of the supported op set pass through the C path (the "c" executor of
  s4c.backend), compiled with -Wall -Wextra -Werror -pedantic, as imported and after the default
  pipeline for the ops the fusions rewrite;
- the generated code compiles warning-free with gcc and clang, runs clean under ASan/UBSan through
  the Makefile + main.c harness, is byte-identical across compiles, and keeps hostile model names
  out of everything but comments;
- BERT-base (slow) from both exporters at 0/90/97% sparsity.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import s4c.codegen.c as cbackend
from debian import require
from oracle import REPO, fixtures, make_feeds, max_abs_diff, ort_outputs
from s4c.backend import EXECUTORS, S4CBackend, register_executor
from s4c.codegen.c.cnames import comment_name
from s4c.codegen.c.lower import lower_graph
from s4c.driver import compile as s4c_compile, run_pipeline, select_layouts
from s4c.errors import S4CError, TargetError
from s4c.evaluate import evaluate
from s4c.ir import Graph, Op, TensorType, Value
from s4c.sparse import SUPPORTED_LAYOUTS

FIXTURES = {m["name"]: m for m in fixtures()}
STRICT = "-O2 -march=native -Wall -Wextra -Werror -pedantic"
STRICT_OPTIONS = cbackend.COptions(cflags=STRICT)


def _feeds(entry, batch=2, seq=16):
    return make_feeds([i["name"] for i in entry["inputs"]], batch=batch, seq=seq)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (CompiledModel, feeds): each fixture compiled for C once per session."""
    root = tmp_path_factory.mktemp("c_fixtures")
    cache: dict = {}

    def get(name, **backend_options):
        key = (name, tuple(sorted(backend_options.items())))
        if key not in cache:
            entry = FIXTURES[name]
            feeds = _feeds(entry)
            out = root / f"{name}-{len(cache)}"
            model = s4c_compile(entry["path"], input_shapes={k: v.shape for k, v in feeds.items()}, target="c",
                                outdir=out, backend_options=backend_options)
            cache[key] = (model, feeds)
        return cache[key]

    return get


_ORT: dict = {}


def _ort(name, feeds):
    if name not in _ORT:
        _ORT[name] = ort_outputs(FIXTURES[name]["path"], feeds)
    return _ORT[name]


# -- fixtures vs onnxruntime ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_matches_onnxruntime(built, name):
    model, feeds = built(name)
    got = model.run(feeds, backend="c")
    diffs = max_abs_diff(got, _ort(name, feeds))
    assert max(diffs.values()) <= 1e-3, diffs
    report = json.load(open(os.path.join(model.outdir, "report.json")))["c"]
    assert 0 < report["arena_bytes"] < report["arena_without_reuse_bytes"]
    assert report["kernels"].get("s4c_attention_qkv") or report["kernels"].get("s4cx_attention_bias")


@pytest.mark.parametrize("layout", ["dense", "bsr16x1", "bsr1x8"])
def test_fixture_with_forced_layouts(built, layout):
    name = "bert_tiny_ts_op17_int8dequant"
    model, feeds = built(name, layout_default=layout)
    diffs = max_abs_diff(model.run(feeds, backend="c"), _ort(name, feeds))
    assert max(diffs.values()) <= 1e-3, diffs
    report = json.load(open(os.path.join(model.outdir, "report.json")))["c"]
    assert set(report["linear_layouts"]) == {layout}
    assert report["init_steps"] > 0  # the int8 weights are dequantised once, at init


def test_threads_and_repeat_runs_agree(built):
    model, feeds = built("bert_mini_pruned90")
    one = cbackend.load(model.outdir, {"threads": 1}).run(feeds)
    two = cbackend.load(model.outdir, {"threads": 2}).run(feeds)
    for k in one:
        np.testing.assert_allclose(one[k], two[k], atol=1e-5)
    again = model.run(feeds, backend="c")
    for k in one:
        np.testing.assert_allclose(one[k], again[k], atol=1e-5)


# -- every Linear layout, f32 and int8 --------------------------------------------------------------

def _nm_weight(rng, out, inp, n, m):
    w = rng.standard_normal((out, inp)).astype(np.float32)
    groups = -(-inp // m)
    mask = np.zeros((out, groups * m), bool)
    for o in range(out):
        for g in range(groups):
            mask[o, g * m + rng.choice(m, n, replace=False)] = True
    return w * mask[:, :inp]


def _linear_zoo():
    """One graph with a Linear per (layout, weight kind); odd sizes (edges of every block/group)."""
    rng = np.random.default_rng(7)
    B, S, IN, OUT = 2, 5, 45, 37
    x = Value("x", TensorType("f32", (B, S, IN)))
    ops, outs = [], []
    acts = ["none", "gelu", "gelu_tanh", "relu"]
    for li, layout in enumerate(SUPPORTED_LAYOUTS):
        name = str(layout)
        for kind in ("f32", "i8_row", "i8_col", "i8_tensor"):
            if layout.kind == "nm":
                w = _nm_weight(rng, OUT, IN, layout.n, layout.m)
            else:
                w = rng.standard_normal((OUT, IN)).astype(np.float32) * (rng.random((OUT, IN)) < 0.3)
            bias = Value.constant(f"b_{name}_{kind}", rng.standard_normal(OUT).astype(np.float32))
            y = Value(f"y_{name}_{kind}", TensorType("f32", (B, S, OUT)))
            attrs = {"layout": name, "activation": acts[(li + len(outs)) % len(acts)]}
            if kind == "f32":
                ops.append(Op("Linear", [x, Value.constant(f"w_{name}", w), bias], [y], attrs, [f"node {name}"]))
            else:
                axis = {"i8_row": 0, "i8_col": 1, "i8_tensor": 0}[kind]
                q = np.clip(np.round(w * 20), -127, 127).astype(np.int8)
                if kind == "i8_tensor":
                    scale = np.array(0.05, np.float32)
                else:
                    scale = (rng.random(q.shape[axis]) * 0.1 + 0.01).astype(np.float32)
                wf = Value(f"wf_{name}_{kind}", TensorType("f32", (OUT, IN)))
                ops.append(Op("DequantizeWeight", [Value.constant(f"q_{name}_{kind}", q),
                                                   Value.constant(f"s_{name}_{kind}", scale)], [wf], {"axis": axis}))
                ops.append(Op("Linear", [x, wf, bias], [y], attrs, [f"node {name} {kind}"]))
            outs.append(y)
    return Graph("zoo", [x], outs, ops), {"x": rng.standard_normal((B, S, IN)).astype(np.float32)}


def test_every_layout_and_int8_weight_kind(tmp_path):
    graph, feeds = _linear_zoo()
    want = evaluate(graph, feeds)
    built = cbackend.build(graph, tmp_path, {"cflags": STRICT})
    report = built.report
    assert set(report["linear_layouts"]) == {str(lay) for lay in SUPPORTED_LAYOUTS}
    assert report["init_steps"] == 3 * len(SUPPORTED_LAYOUTS)  # one dequantisation per int8 weight
    got = cbackend.load(tmp_path).run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4, err_msg=k)
    # int8 stays int8 in weights.bin: far smaller than the float weights it replaces
    src = open(tmp_path / "c" / "model.c").read()
    assert "s4cx_dequant_nm(" in src and "s4cx_dequant_bsr(" in src and "s4cx_dequant_csr(" in src


# -- ONNX node tests through C ----------------------------------------------------------------------

sys.path.insert(0, os.path.dirname(__file__))
import test_onnx_node_tests as node_tests  # noqa: E402
from onnx_node_allowlist import EXCLUDE  # noqa: E402

NODE_CASES = [n for n in node_tests.SELECTED if n not in EXCLUDE]
# the ops the default pipeline rewrites into fused ops: their cases also run after the pipeline
FUSED_OPS = {"LayerNormalization", "Gemm", "MatMul", "Gelu", "Softmax", "Erf", "Add", "Mul", "Div", "Where"}
PIPELINE_CASES = [n for n in NODE_CASES if node_tests.OP_OF[n] in FUSED_OPS]
_piped: dict[int, Graph] = {}


def _c_default(graph, inputs):
    """Executor: the default pipeline + layout selection (what `s4c compile --target c` builds), then C."""
    entry = _piped.get(id(graph))
    if entry is None or entry[0] is not graph:
        piped = select_layouts(run_pipeline(graph.clone(), "default"), "c", {}, None)
        _piped.clear()
        entry = _piped[id(graph)] = (graph, piped)
    return cbackend.execute(entry[1], inputs, STRICT_OPTIONS)


@pytest.fixture(scope="module")
def c_executors():
    saved_executors = dict(EXECUTORS)
    # every node case also checks the code is warning-free
    register_executor("c", functools.partial(cbackend.execute, options=STRICT_OPTIONS), replace=True)
    register_executor("c-default", _c_default, replace=True)
    yield
    EXECUTORS.clear()
    EXECUTORS.update(saved_executors)


@pytest.mark.parametrize("name", NODE_CASES)
def test_node_case_through_c(c_executors, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        node_tests.run_case(name, "c")


@pytest.mark.parametrize("name", PIPELINE_CASES)
def test_node_case_through_default_pipeline_and_c(c_executors, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        node_tests.run_case(name, "c-default")


# -- generated code quality -------------------------------------------------------------------------

@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_generated_code_is_strict_c99(tmp_path, cc):
    require({cc: {"gcc": "gcc", "clang": "clang"}[cc]})  # installed on first use (tests/debian.py)
    entry = FIXTURES["bert_tiny_ts_op17_int8dequant"]
    feeds = _feeds(entry)
    model = s4c_compile(entry["path"], input_shapes={k: v.shape for k, v in feeds.items()}, target="c",
                        outdir=tmp_path / "out", backend_options={"cc": cc, "cflags": STRICT})
    assert model.run(feeds, backend="c")  # built (kernels + model.c) with -Werror -pedantic and runs
    cdir = tmp_path / "out" / "c"
    for omp in ([], ["-fopenmp"]):
        r = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", *omp, "-O2", "-c",
                            "main.c", "-o", str(tmp_path / "main.o")], cwd=cdir, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_sanitizers_through_makefile_and_harness(built, tmp_path):
    model, feeds = built("bert_tiny_ts_op17_int8dequant")
    cdir = tmp_path / "c"
    shutil.copytree(os.path.join(model.outdir, "c"), cdir)
    flags = "-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
    r = subprocess.run(["make", "-s", "s4c_model", f"CFLAGS={flags}", "OPENMP="], cwd=cdir, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    meta = json.load(open(cdir / "model.json"))
    ins = []
    for i, io in enumerate(meta["inputs"]):
        np.save(tmp_path / f"in{i}.npy", feeds[io["name"]])
        ins.append(str(tmp_path / f"in{i}.npy"))
    outs = [str(tmp_path / f"out{i}.npy") for i in range(len(meta["outputs"]))]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    r = subprocess.run(["./s4c_model", "-r", "2", "weights.bin", *ins, *outs], cwd=cdir, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, r.stderr
    want = _ort("bert_tiny_ts_op17_int8dequant", feeds)
    for io, path in zip(meta["outputs"], outs):
        assert np.max(np.abs(np.load(path) - want[io["name"]])) <= 1e-3
    # the harness rejects an input of the wrong shape with a message
    np.save(tmp_path / "bad.npy", np.zeros((3, 3), np.int64))
    r = subprocess.run(["./s4c_model", "weights.bin", str(tmp_path / "bad.npy"), *ins[1:], *outs], cwd=cdir,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "expected" in r.stderr


def test_two_compiles_are_byte_identical(tmp_path):
    entry = FIXTURES["bert_tiny_dynamo"]
    shapes = {k: v.shape for k, v in _feeds(entry).items()}
    for d in ("a", "b"):
        s4c_compile(entry["path"], input_shapes=shapes, target="c", outdir=tmp_path / d)
    a, b = tmp_path / "a" / "c", tmp_path / "b" / "c"
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for n in names:
        if n == "libmodel.so":  # the compiler's output: not promised
            continue
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


# -- hostile names ----------------------------------------------------------------------------------

EVIL = ['EVIL*/ int x; /*', 'EVIL\n#include "/etc/passwd"\n', 'EVIL"\\";\\', 'EVIL #include <stdio.h> ??/',
        'EVIL_ünïcödé_名前_\u2028', 'EVIL */ #define return exit', 'EVIL\r\n\t\x01end\\']


def _hostile_model():
    rng = np.random.default_rng(3)
    n = lambda i: EVIL[i % len(EVIL)] + f" #{i}"  # noqa: E731
    w = (rng.standard_normal((8, 6)) * (rng.random((8, 6)) < 0.5)).astype(np.float32)
    inits = [numpy_helper.from_array(w, n(10)), numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), n(11)),
             numpy_helper.from_array(np.array([0, 2], np.int64), n(12))]
    nodes = [helper.make_node("MatMul", [n(0), n(10)], [n(1)], name=n(20)),
             helper.make_node("Add", [n(1), n(11)], [n(2)], name=n(21)),
             helper.make_node("Relu", [n(2)], [n(3)], name=n(22)),
             helper.make_node("Softmax", [n(3)], [n(4)], axis=-1, name=n(23)),
             helper.make_node("Gather", [n(4), n(12)], [n(5)], axis=1, name=n(24)),
             helper.make_node("ReduceMean", [n(2)], [n(6)], axes=[1], keepdims=0, name=n(25))]
    graph = helper.make_graph(nodes, n(30), [helper.make_tensor_value_info(n(0), TensorProto.FLOAT, [2, 3, 8])],
                              [helper.make_tensor_value_info(n(5), TensorProto.FLOAT, None),
                               helper.make_tensor_value_info(n(6), TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, {n(0): rng.standard_normal((2, 3, 8)).astype(np.float32)}


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def test_hostile_names_stay_in_comments(tmp_path):
    model, feeds = _hostile_model()
    path = tmp_path / "evil.onnx"
    onnx.save(model, path)
    compiled = s4c_compile(str(path), target="c", outdir=tmp_path / "out", backend_options={"cflags": STRICT})
    got = compiled.run(feeds, backend="c")
    diffs = max_abs_diff(got, ort_outputs(str(path), feeds))
    assert max(diffs.values()) <= 1e-5, diffs
    cdir = tmp_path / "out" / "c"
    seen_in_comments = False
    for fname in ("model.c", "model.h", "main.c", "Makefile"):
        text = (cdir / fname).read_text(encoding="ascii")  # generated C is pure ASCII
        seen_in_comments |= "EVIL" in text
        assert "EVIL" not in _strip_comments(text), fname  # names live only in comments
        for line in text.splitlines():
            assert not (line.lstrip().startswith("#") and "EVIL" in line), (fname, line)  # never in #-lines
        assert text.count("/*") == text.count("*/"), fname
    assert seen_in_comments  # ...but they are there, to map code back to the model
    assert subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "main.c",
                           "-o", str(tmp_path / "m.o")], cwd=cdir).returncode == 0


def test_comment_name_neutralises_everything():
    for name in EVIL + ["*/", "/*", "???/", "a\\", "\x00"]:
        c = comment_name(name)
        inner = c[1:-1]
        assert "*/" not in c and "/*" not in c and "??" not in c and "\n" not in c and "\r" not in c
        assert c.isascii() and c.isprintable() and c.startswith('"') and c.endswith('"')
        assert not inner.endswith("\\") or inner.endswith("\\\\")


# -- errors and options -----------------------------------------------------------------------------

def test_unsupported_op_names_op_and_node(monkeypatch):
    from s4c.codegen.c import lower as emit

    x = Value("x", TensorType("f32", (4,)))
    y = Value("y", TensorType("f32", (4,)))
    graph = Graph("g", [x], [y], [Op("Relu", [x], [y], {}, ["my_relu_node"])])
    monkeypatch.delitem(emit.EMITTERS, "Relu")
    with pytest.raises(TargetError, match=r"op Relu is not supported.*my_relu_node"):
        lower_graph(graph)
    # an instance the emitter cannot take: a sparse layout on a weight that is not a constant
    w = Value("w", TensorType("f32", (3, 4)))
    z = Value("z", TensorType("f32", (3,)))
    graph = Graph("g", [x, w], [z], [Op("Linear", [x, w], [z], {"layout": "csr"}, ["lin_node"])])
    with pytest.raises(TargetError, match=r"layout csr needs a constant weight.*Linear.*lin_node"):
        lower_graph(graph)


def test_runtime_index_error_names_the_node(tmp_path):
    x = Value("x", TensorType("f32", (5, 3)))
    i = Value("i", TensorType("i64", (2,)))
    y = Value("y", TensorType("f32", (2, 3)))
    graph = Graph("g", [x, i], [y], [Op("Gather", [x, i], [y], {"axis": 0}, ["the_gather"])])
    cbackend.build(graph, tmp_path, {})
    model = cbackend.load(tmp_path)
    data = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(model.run({"x": data, "i": np.array([4, -5])})["y"], data[[4, 0]])
    with pytest.raises(S4CError, match="the_gather"):
        model.run({"x": data, "i": np.array([0, 5])})
    with pytest.raises(S4CError, match="shape"):
        model.run({"x": data[:2], "i": np.array([0, 1])})


def test_weights_of_another_compile_are_refused(built, tmp_path):
    a, _ = built("bert_tiny_ts_op17")
    b, _ = built("bert_tiny_dynamo")
    cdir = tmp_path / "c"
    shutil.copytree(os.path.join(a.outdir, "c"), cdir)
    shutil.copy(os.path.join(b.outdir, "c", "weights.bin"), cdir / "weights.bin")
    with pytest.raises(S4CError, match="another compile"):
        cbackend.load(tmp_path)


def test_profile_reports_kernels(built):
    model, feeds = built("bert_tiny_ts_op17")
    m = cbackend.load(model.outdir, {"profile": True})
    m.run(feeds)
    report = m.profile_report()
    assert "s4c_linear_csr_u16" in report and "s4c_attention_qkv" in report
    m.runs = 0  # nothing printed at exit


def test_cli_compile_and_run(tmp_path):
    entry = FIXTURES["bert_tiny_ts_op17"]
    feeds = _feeds(entry)
    np.savez(tmp_path / "in.npz", **feeds)
    out = tmp_path / "out"
    shapes = [f"{k}=2x16" for k in feeds]
    cmd = [sys.executable, "-m", "s4c", "compile", entry["path"], "-o", str(out), "--target", "c"]
    for s in shapes:
        cmd += ["--input-shape", s]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert (out / "c" / "model.h").exists() and (out / "c" / "weights.bin").exists()
    r = subprocess.run([sys.executable, "-m", "s4c", "run", str(out), "--backend", "c", "--inputs",
                        str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"), "--threads", "2", "--repeat", "2"],
                       capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_WAIT_POLICY="passive"))
    assert r.returncode == 0, r.stderr
    assert "latency_ms median=" in r.stdout
    with np.load(tmp_path / "o.npz") as got:
        diffs = max_abs_diff(dict(got), _ort("bert_tiny_ts_op17", feeds))
    assert max(diffs.values()) <= 1e-3


# -- BERT-base (slow) -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("sparsity", [0.0, 0.9, 0.97])
def test_bert_base(tmp_path, exporter, sparsity):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bert_base import bert_base

    path = bert_base(exporter, sparsity)
    names = [i.name for i in onnx.load(path, load_external_data=False).graph.input]
    feeds = make_feeds(names, batch=1, seq=128, vocab=30522)
    model = s4c_compile(path, input_shapes={k: v.shape for k, v in feeds.items()}, target="c", outdir=tmp_path / "o")
    diffs = max_abs_diff(model.run(feeds, backend="c"), ort_outputs(path, feeds))
    assert max(diffs.values()) <= 1e-3, diffs


# -- fused ops off the BERT path --------------------------------------------------------------------

def _fused_zoo():
    """Fused ops in the forms BERT does not exercise: attention biases that vary by query (generic
    kernel), broadcast over the batch, absent; LayerNorm over two axes with a broadcast gamma;
    SkipLayerNorm with a bias; Embedding with int32 ids and runtime position ids to broadcast;
    Gelu / Linear / LayerNorm in f64 (generated code instead of the f32 kernels)."""
    rng = np.random.default_rng(11)
    B, S, H, D = 2, 6, 2, 4
    HD = H * D
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    c = Value.constant
    qkv = Value("qkv", TensorType("f32", (B, S, 3 * HD)))
    causal = Value("causal", TensorType("f32", (B, 1, S, S)))
    ops, outs = [], []

    def add(op, *vals):
        ops.append(op)
        outs.extend(vals)

    for i, bias in enumerate([causal, c("keys1", f(1, 1, 1, S)), c("keys", f(B, 1, 1, S)), None]):
        y = Value(f"attn{i}", TensorType("f32", (B, S, HD)))
        add(Op("MultiHeadAttention", [qkv] + ([bias] if bias is not None else []), [y],
               {"num_heads": H, "scale": 0.5}, [f"attn node {i}"]), y)
    x = Value("x", TensorType("f32", (B, S, 3, 5)))
    y = Value("ln2", TensorType("f32", (B, S, 3, 5)))
    add(Op("LayerNorm", [x, c("g2", f(5)), c("b2", f(3, 5))], [y], {"axis": 2, "epsilon": 1e-5}), y)
    h = Value("h", TensorType("f32", (B, S, HD)))
    y = Value("sln", TensorType("f32", (B, S, HD)))
    add(Op("SkipLayerNorm", [h, qkv_slice := Value("h2", TensorType("f32", (B, S, HD))), c("g", f(HD)), c("b", f(HD)),
                             c("bb", f(HD))], [y], {"epsilon": 1e-6}), y)
    ids = Value("ids", TensorType("i32", (B, S)))
    pos = Value("pos", TensorType("i64", (1, S)))
    y = Value("emb", TensorType("f32", (B, S, HD)))
    add(Op("Embedding", [ids, c("word", f(10, HD)), pos, c("ptab", f(S + 2, HD)), c("eg", f(HD)), c("eb", f(HD))],
           [y], {"epsilon": 1e-12}), y)
    xd = Value("xd", TensorType("f64", (B, 3, 5)))
    for name, op, attrs, extra in [("gelu64", "Gelu", {"approximate": "tanh"}, []),
                                   ("lin64", "Linear", {"activation": "gelu"},
                                    [c("w64", rng.standard_normal((4, 5))), c("bw64", rng.standard_normal(4))]),
                                   ("ln64", "LayerNorm", {"epsilon": 1e-5}, [c("g64", rng.standard_normal(5))])]:
        shape = (B, 3, 4) if op == "Linear" else (B, 3, 5)
        y = Value(name, TensorType("f64", shape))
        add(Op(op, [xd] + extra, [y], attrs), y)
    causal_mask = np.triu(np.full((S, S), -np.inf, np.float32), 1)
    feeds = {"qkv": f(B, S, 3 * HD), "causal": np.broadcast_to(causal_mask, (B, 1, S, S)).copy(), "x": f(B, S, 3, 5),
             "h": f(B, S, HD), "h2": f(B, S, HD), "ids": rng.integers(0, 10, (B, S)).astype(np.int32),
             "pos": np.array([[5, 4, 3, 2, 1, 0]], np.int64), "xd": rng.standard_normal((B, 3, 5))}
    inputs = [qkv, causal, x, h, qkv_slice, ids, pos, xd]
    return Graph("fused_zoo", inputs, outs, ops), feeds


def test_fused_ops_off_the_bert_path(tmp_path):
    graph, feeds = _fused_zoo()
    want = evaluate(graph, feeds)
    report = cbackend.build(graph, tmp_path, {"cflags": STRICT}).report
    assert report["kernels"]["s4cx_attention_bias"] == 1 and report["kernels"]["s4c_attention_qkv"] == 3
    got = cbackend.load(tmp_path).run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_backend_adaptor_finds_the_c_backend_without_registration(monkeypatch):
    """`backend="c"` works out of the box: the adaptor finds the C backend in the registry."""
    monkeypatch.setattr("s4c.backend.EXECUTORS", {"ref": EXECUTORS["ref"]})
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    data = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    (out,) = S4CBackend.prepare(model, backend="c").run([data])
    np.testing.assert_array_equal(out, np.maximum(data, 0))
    with pytest.raises(S4CError, match="unknown backend 'nope'"):
        S4CBackend.prepare(model, backend="nope").run([data])
