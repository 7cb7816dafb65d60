"""The C backend's int8 kernels (codegen/c/kernels/int8.c) and `--precision int8` for the C target
(issue 17 item 1).

The reference evaluator is the oracle (s4c/ops/quant.py). Tolerance: QuantizeInt8 and LinearInt8
without an activation (or with ReLU) are bit-exact on every instruction-set path: the kernels divide
(no reciprocal), round half to even, accumulate in exact int32 and round the scale product and the
bias add separately (no FMA), as numpy does. A GELU epilogue uses the C kernels' erf, within 1e-6
relative of numpy's. Whole models differ from `ref` only where the fp32 ops between the int8 ones
(LayerNorm, attention, GELU: the C kernels vs numpy, ~1e-6) move a value across a rounding boundary of
the next quantisation: one int8 step on rare elements; the outputs' cosine to ref stays >= 0.9999 and
to onnxruntime fp32 >= 0.99.

Instruction-set paths, each built and run here: "avx2" (-march=native on an AVX2 machine, or
-DS4C_I8_NO_VNNI), "plain-c" (-DS4C_I8_PLAIN; -DS4C_PLAIN_C without OpenMP), "avx-vnni (emulated)"
(-DS4C_I8_EMULATE_VNNI: the VNNI code, unsigned activations and the comp correction, with vpdpbusd
computed in AVX2), the native VNNI paths where /proc/cpuinfo has avx512_vnni / avx_vnni; on other
machines the VNNI builds are compiled and checked to contain vpdpbusd. The generated int8 C's aarch64
run under qemu-user is in tests/test_aarch64.py.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from oracle import REPO, ort_outputs
import s4c
from s4c.accuracy import cosine
from s4c.codegen.c import kernels_build as kb
from s4c.codegen.c.emit_int8 import column_groups, padded_tokens, quad_blocks
from s4c.ops import quant

ACT = {"none": 0, "gelu": 1, "gelu_tanh": 2, "relu": 3}
_P, _I = ctypes.c_void_p, ctypes.c_int
BUNDLED = os.path.join(REPO, "examples", "models", "bert_mini_pruned90.onnx")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = _cpu_flags()
X86 = sys.platform.startswith("linux") and os.uname().machine in ("x86_64", "AMD64")

# path id -> (cflags, openmp, extra flags, the s4c_i8_isa() it must report)
PATHS = {
    "native": (kb.FAST_CFLAGS, True, (), None),
    "avx2": (kb.FAST_CFLAGS, True, ("-DS4C_I8_NO_VNNI",), "avx2"),
    "vnni-emulated": (kb.FAST_CFLAGS, True, ("-DS4C_I8_EMULATE_VNNI",), "avx-vnni (emulated)"),
    "plain": (kb.FAST_CFLAGS, True, ("-DS4C_I8_PLAIN",), "plain-c"),
    "plain-c99-serial": (("-std=c99", "-O2"), False, ("-DS4C_PLAIN_C",), "plain-c"),
    "avx512-vnni": (kb.FAST_CFLAGS, True, (), "avx512-vnni"),
    "avx-vnni": (kb.FAST_CFLAGS, True, ("-DS4C_NO_AVX512",), "avx-vnni"),
}


def _runnable(path: str) -> str | None:
    """Why `path` cannot run on this machine (None: it can)."""
    if path in ("avx2", "vnni-emulated") and (not X86 or "avx2" not in FLAGS):
        return "needs an x86 CPU with AVX2"
    if path == "avx512-vnni" and not {"avx512_vnni", "avx512bw"} <= FLAGS:
        return "the CPU has no AVX512-VNNI (its build is compile-checked in test_vnni_builds_compile)"
    if path == "avx-vnni" and "avx_vnni" not in FLAGS and not {"avx512_vnni", "avx512vl"} <= FLAGS:
        return "the CPU has no AVX-VNNI (its build is compile-checked in test_vnni_builds_compile)"
    return None


_LIBS: dict[str, ctypes.CDLL] = {}


def load(path: str) -> ctypes.CDLL:
    if path not in _LIBS:
        cflags, openmp, extra, _ = PATHS[path]
        lib = ctypes.CDLL(str(kb.build(cflags=cflags, openmp=openmp, extra_flags=(*extra, *kb.STRICT_WARNINGS))))
        lib.s4c_i8_isa.restype = ctypes.c_char_p
        lib.s4c_i8_isa.argtypes = []
        lib.s4c_quantize_i8.restype = _I
        lib.s4c_quantize_i8.argtypes = [_I, _I, _P, _P, _P, _P, _P]
        for name in ("s4c_linear_i8", "s4c_linear_i8_cols"):
            getattr(lib, name).restype = _I
            getattr(lib, name).argtypes = [_I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _I, _P, _P, _I, _P]
        lib.s4c_set_num_threads.argtypes = [_I]
        _LIBS[path] = lib
    return _LIBS[path]


@pytest.fixture(params=[p for p in PATHS], ids=list(PATHS))
def lib(request):
    why = _runnable(request.param)
    if why:
        pytest.skip(why)
    L = load(request.param)
    want = PATHS[request.param][3]
    isa = L.s4c_i8_isa().decode()
    if want is not None:
        assert isa == want
    elif X86 and "avx2" in FLAGS:
        assert isa in ("avx2", "avx-vnni", "avx512-vnni")
    return L


def ptr(a):
    return None if a is None else a.ctypes.data


def to_x4(q: np.ndarray) -> np.ndarray:
    """q i8[T, K] (token-major) in the kernels' X4 layout [ceil(K/4)][Tp][4]."""
    T, K = q.shape
    P = np.zeros((padded_tokens(T), -(-K // 4) * 4), np.int8)
    P[:T, :K] = q
    return np.ascontiguousarray(P.reshape(P.shape[0], -1, 4).transpose(1, 0, 2))


def to_x1(q: np.ndarray) -> np.ndarray:
    """q i8[T, K] (token-major) in the kernels' X1 layout [K][Tp]."""
    T, K = q.shape
    P = np.zeros((K, padded_tokens(T)), np.int8)
    P[:, :T] = q.T
    return P


def run_quantize(L, x: np.ndarray, scale=None, layouts=("x4", "x1")):
    """x f32[T, K] through s4c_quantize_i8 (the kernel reads it feature-major [K][T]): (X4, X1, scales)."""
    T, K = x.shape
    xf = np.ascontiguousarray(x.T)
    x4 = np.full((-(-K // 4), padded_tokens(T), 4), 99, np.int8)
    x1 = np.full((K, padded_tokens(T)), 99, np.int8)
    s_in = None if scale is None else np.array([scale], np.float32)
    s_out = np.zeros(T, np.float32)
    assert L.s4c_quantize_i8(K, T, ptr(xf), ptr(s_in), None if scale is not None else ptr(s_out),
                             ptr(x4) if "x4" in layouts else None, ptr(x1) if "x1" in layouts else None) == 0
    return x4, x1, s_out


def run_linear(L, xq: np.ndarray, w: np.ndarray, xs, ws, bias, act: str, R: int, dense) -> np.ndarray:
    """dense: True / False for the quad-block kernel, "cols" for the column-group kernel."""
    T, K = xq.shape
    N = w.shape[0]
    per_token = np.ndim(xs) > 0
    xs_arr = np.ascontiguousarray(np.asarray(xs, np.float32).reshape(-1))
    Y = np.full((N, T), np.nan, np.float32)
    if dense == "cols":
        pk = column_groups(w, R)
        x1 = to_x1(xq)  # kept alive through the call
        rc = L.s4c_linear_i8_cols(N, K, T, R, ptr(pk["gptr"]), ptr(pk["cols"]), ptr(pk["vals"]), ptr(pk["comp"]),
                                  ptr(x1), ptr(xs_arr), int(per_token), ptr(ws), ptr(bias), ACT[act], ptr(Y))
        assert rc == 0
        return Y.T
    pk = quad_blocks(w, R, dense)
    x4 = to_x4(xq)  # kept alive through the call
    rc = L.s4c_linear_i8(N, K, T, R, ptr(pk["indptr"]), ptr(pk["qidx"]), ptr(pk["vals"]), ptr(pk["comp"]),
                         ptr(x4), ptr(xs_arr), int(per_token), ptr(ws), ptr(bias), ACT[act], ptr(Y))
    assert rc == 0
    return Y.T


def ref_linear(xq, w, xs, ws, bias, act):
    ins = [xq, w, np.asarray(xs, np.float32), ws] + ([bias] if bias is not None else [])
    return quant._linear_int8(ins, {"activation": act})[0]


def sparse_int8(rng, N, K, density, block=(1, 1), extreme=False):
    r, c = block
    keep = rng.random((-(-N // r), -(-K // c))) < density
    mask = np.kron(keep, np.ones((r, c), bool))[:N, :K]
    w = rng.integers(-127, 128, (N, K)).astype(np.int8)
    if extreme:
        w = np.where(rng.random((N, K)) < 0.5, -128, 127).astype(np.int8)
    return np.where(mask, w, 0).astype(np.int8)


# -- quantisation --------------------------------------------------------------------------------
@pytest.mark.parametrize("T,K", [(1, 1), (3, 5), (16, 64), (37, 130), (128, 128)])
def test_quantize_dynamic_and_static_exact(lib, T, K):
    rng = np.random.default_rng(T * 1000 + K)
    x = (rng.standard_normal((T, K)) * rng.uniform(0.1, 8, (T, 1))).astype(np.float32)
    if T > 2:
        x[1] = 0.0  # an all-zero token: scale 1
        x[2, : K // 2] = np.float32(0.5) * quant.scale_from_amax(np.abs(x[2]).max())  # ties to even
    got4, got1, s = run_quantize(lib, x)
    want_q, want_s = quant._quantize_int8([x], {})
    np.testing.assert_array_equal(s, want_s.reshape(-1))
    np.testing.assert_array_equal(got4, to_x4(want_q))
    np.testing.assert_array_equal(got1, to_x1(want_q))
    static = np.float32(np.abs(x).max() / 100)  # some values saturate at +-127
    got4, got1, _ = run_quantize(lib, x, static)
    np.testing.assert_array_equal(got4, to_x4(quant.quantize(x, static)))
    np.testing.assert_array_equal(got1, to_x1(quant.quantize(x, static)))
    only1 = run_quantize(lib, x, static, layouts=("x1",))
    assert (only1[0] == 99).all() and np.array_equal(only1[1], got1)


# -- the int8 Linear -----------------------------------------------------------------------------
CASES = [  # (N, K, T, block of the sparsity, density, R, dense)
    (8, 16, 16, (1, 1), 1.0, 4, True),
    (37, 53, 20, (1, 1), 1.0, 4, True),
    (64, 96, 33, (1, 1), 0.1, 1, False),     # CSR / N:M-like: 1x4 quad blocks
    (50, 130, 64, (4, 1), 0.2, 4, False),    # bsr4x1 -> 4x4 quad blocks
    (96, 64, 130, (1, 4), 0.15, 1, False),   # bsr1x4
    (33, 768, 70, (4, 1), 0.1, 4, False),
    (5, 9, 1, (1, 1), 0.5, 1, False),
    (12, 40, 17, (1, 1), 0.0, 4, False),     # no nonzero at all
    (64, 96, 33, (1, 1), 0.1, 1, "cols"),    # CSR / N:M: column groups of one row
    (50, 130, 64, (4, 1), 0.2, 4, "cols"),   # bsr4x1: column groups of 4 rows
    (33, 768, 70, (4, 1), 0.1, 4, "cols"),
    (37, 53, 20, (1, 1), 0.7, 1, "cols"),
    (8, 16, 1, (8, 1), 0.3, 4, "cols"),
    (12, 40, 17, (1, 1), 0.0, 4, "cols"),    # no nonzero at all
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}xT{c[2]}-R{c[5]}{'-' + str(c[6]) if c[6] else ''}"
                                             for c in CASES])
@pytest.mark.parametrize("epi", ["none-static", "bias-dynamic", "relu-bias-dynamic", "gelu-bias-static"])
def test_linear_int8_matches_reference(lib, case, epi):
    N, K, T, block, density, R, dense = case
    rng = np.random.default_rng(N * 7 + K * 3 + T)
    w = sparse_int8(rng, N, K, density, block)
    xq = rng.integers(-127, 128, (T, K)).astype(np.int8)
    ws = rng.uniform(1e-3, 2e-2, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32) if "bias" in epi else None
    xs = rng.uniform(1e-3, 5e-2, (T, 1)).astype(np.float32) if "dynamic" in epi else np.float32(0.0123)
    act = epi.split("-")[0] if epi.split("-")[0] in ACT else "none"
    got = run_linear(lib, xq, w, xs, ws, bias, act, R, dense)
    want = ref_linear(xq, w, xs, ws, bias, act)
    if act == "gelu":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("R,dense", [(4, True), (4, False), (1, False), (4, "cols"), (1, "cols")])
def test_linear_int8_extreme_values_do_not_saturate(lib, R, dense):
    """|x| = 127 with weights of +127 / -128 everywhere: the largest int16 pair sums vpmaddubsw
    sees (2 * 128 * 127), and the largest products; exact."""
    rng = np.random.default_rng(3)
    N, K, T = 16, 512, 48
    w = sparse_int8(rng, N, K, 1.0, extreme=True)
    xq = np.where(rng.random((T, K)) < 0.5, -127, 127).astype(np.int8)
    xq[0] = 127
    w[0] = -128
    ws = np.full(N, 1e-3, np.float32)
    got = run_linear(lib, xq, w, np.float32(1.0), ws, None, "none", R, dense)
    np.testing.assert_array_equal(got, ref_linear(xq, w, np.float32(1.0), ws, None, "none"))
    assert got[0, 0] == np.float32(-128 * 127 * K * np.float32(1e-3))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kernel", [False, "cols"])
def test_linear_int8_threads_same_result(lib, threads, kernel):
    rng = np.random.default_rng(11)
    N, K, T = 256, 256, 128
    w = sparse_int8(rng, N, K, 0.1, (4, 1))
    xq = rng.integers(-127, 128, (T, K)).astype(np.int8)
    ws = rng.uniform(1e-3, 2e-2, N).astype(np.float32)
    lib.s4c_set_num_threads(threads)
    try:
        got = run_linear(lib, xq, w, np.float32(0.02), ws, None, "none", 4, kernel)
    finally:
        lib.s4c_set_num_threads(2)
    np.testing.assert_array_equal(got, ref_linear(xq, w, np.float32(0.02), ws, None, "none"))


def test_linear_int8_bad_args():
    L = load("native")
    one = np.ones(4, np.float32)
    assert L.s4c_linear_i8(4, 4, 4, 3, None, None, None, None, None, ptr(one), 0, ptr(one), None, 0,
                           ptr(one)) == -1
    assert L.s4c_quantize_i8(-1, 4, None, None, None, None, None) == -1
    assert L.s4c_quantize_i8(4, 4, ptr(one), ptr(one), None, None, None) == -1  # no output
    assert L.s4c_linear_i8_cols(4, 4, 4, 4, None, None, None, None, None, ptr(one), 0, ptr(one), None, 0,
                                ptr(one)) == -1


@pytest.mark.skipif(not X86, reason="x86 instruction sets")
@pytest.mark.parametrize("flags,isa", [(("-mavxvnni",), "avx-vnni"),
                                       (("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"), "avx512-vnni"),
                                       (("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-DS4C_NO_AVX512"),
                                        "avx-vnni"),
                                       (("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-DS4C_I8_NO_VNNI"),
                                        "avx2")])
def test_vnni_builds_compile(tmp_path, flags, isa):
    """Every VNNI path compiles clean (strict warnings) and holds vpdpbusd where it should, chosen
    from the target's macros alone (they run in test_linear_int8_* where the CPU has them)."""
    src = os.path.join(os.path.dirname(kb.__file__), "kernels", "int8.c")
    cmd = [kb.find_cc(), "-std=c99", "-O2", "-march=haswell", *flags, *kb.STRICT_WARNINGS,
           "-I", os.path.dirname(src), "-S", src, "-o", str(tmp_path / "int8.s")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    asm = (tmp_path / "int8.s").read_text()
    assert f'"{isa}"' in asm
    assert ("vpdpbusd" in asm) == (isa != "avx2")
    if isa == "avx2":
        assert "vpmaddubsw" in asm
    if isa == "avx512-vnni":
        assert "zmm" in asm


# -- the C target with --precision int8 ----------------------------------------------------------
def _linear_model(path, N, K, W, bias, relu: bool):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["lin"])]
    nodes.append(helper.make_node("Relu", ["lin"], ["y"]) if relu else helper.make_node("Identity", ["lin"], ["y"]))
    g = helper.make_graph(nodes, "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", N])],
                          [numpy_helper.from_array(W.T.copy(), "W"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("layout", ["dense", "csr", "bsr4x1", "bsr1x4", "nm2:8", "bsr8x1"])
@pytest.mark.parametrize("calibrated", [False, True], ids=["dynamic", "static"])
def test_c_int8_linear_equals_reference_exactly(tmp_path, layout, calibrated):
    """One Linear (+ReLU), int8 on the C target, each weight layout: bit-identical to `ref`."""
    rng = np.random.default_rng(5)
    N, K = 40, 72
    keep = np.kron(rng.random((N // 4, K)) < 0.25, np.ones((4, 1))) if layout.startswith("bsr") else rng.random((N, K)) < 0.25
    if layout.startswith("nm"):
        keep = np.zeros((N, K), bool)
        for o in range(N):
            for g0 in range(0, K, 8):
                keep[o, g0 + rng.choice(8, 2, replace=False)] = True
    W = (rng.standard_normal((N, K)) * keep).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    model = str(tmp_path / "lin.onnx")
    _linear_model(model, N, K, W, bias, relu=True)
    x = rng.standard_normal((2, 9, K)).astype(np.float32)
    kw = {}
    if calibrated:
        np.savez(tmp_path / "calib.npz", x=rng.standard_normal((4, 2, 9, K)).astype(np.float32))
        kw["calibration_data"] = str(tmp_path / "calib.npz")
    compiled = s4c.compile(model, input_shapes={"x": (2, 9, K)}, target="c", outdir=str(tmp_path / "out"),
                           precision="int8", backend_options={"layout_default": layout}, **kw)
    text = (tmp_path / "out" / "c" / "model.c").read_text()
    kernel = "s4c_linear_i8(" if layout in ("dense", "bsr1x4") else "s4c_linear_i8_cols("
    assert kernel in text and "s4c_quantize_i8(" in text and f"{layout} weight (int8" in text
    got = compiled.run({"x": x}, backend="c")["y"]
    want = compiled.run({"x": x}, backend="ref")["y"]
    np.testing.assert_array_equal(got, want)
    assert cosine(got, np.maximum(x @ W.T + bias, 0)) > 0.999


def _bundled_feeds(seed: int, seq: int = 128):
    rng = np.random.default_rng(seed)
    mask = np.ones((1, seq), np.int64)
    mask[0, seq * 3 // 4:] = 0
    return {"input_ids": rng.integers(0, 768, (1, seq)), "attention_mask": mask,
            "token_type_ids": np.zeros((1, seq), np.int64)}


@pytest.fixture(scope="module")
def bundled_int8(tmp_path_factory):
    out = tmp_path_factory.mktemp("c-int8") / "out"
    return s4c.compile(BUNDLED, input_shapes={"input_ids": (1, 128)}, target="c", outdir=str(out),
                       precision="int8"), out


def test_bundled_model_int8_on_c_matches_ref_and_onnxruntime(bundled_int8):
    compiled, out = bundled_int8
    feeds = _bundled_feeds(7)
    got = compiled.run(feeds, backend="c")
    ref = compiled.run(feeds, backend="ref")
    ort = ort_outputs(BUNDLED, feeds)
    for name in ort:
        assert cosine(got[name], ref[name]) >= 0.9999, name
        assert cosine(got[name], ort[name]) >= 0.99, name
        assert not np.array_equal(got[name], ort[name])
    report = json.loads((out / "report.json").read_text())
    text = json.dumps(report)
    assert "s4c_linear_i8" in text and "s4c_quantize_i8" in text


def test_fp32_c_build_has_no_int8_kernels(tmp_path):
    s4c.compile(BUNDLED, input_shapes={"input_ids": (1, 16)}, target="c", outdir=str(tmp_path / "o"),
                backend_options={"compile": False})
    cdir = tmp_path / "o" / "c"
    assert not (cdir / "int8.c").exists()
    assert "s4c_linear_i8" not in (cdir / "model.c").read_text()
