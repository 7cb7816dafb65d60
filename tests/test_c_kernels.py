"""Tests for the C kernel library (codegen/c/kernels): every kernel against a
numpy reference, the strict -Werror -pedantic build, and an ASan/UBSan run.

Layout (see codegen/c/kernels/README.md): activations are feature-major
[features][T] with T = batch*seq contiguous; W is [out][in].  The sparse
arrays are made by the small packers below (same conventions as s4c.sparse,
which these tests deliberately do not import).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from debian import require
from s4c.codegen.c import kernels_build as kb

ACT_NONE, ACT_GELU_ERF, ACT_GELU_TANH, ACT_RELU = 0, 1, 2, 3


# --------------------------------------------------------------------------- packers
def pack_csr(W: np.ndarray, idx_dtype=np.uint16):
    out = W.shape[0]
    indptr = np.zeros(out + 1, np.int32)
    cols, vals = [], []
    for o in range(out):
        nz = np.flatnonzero(W[o])
        cols.append(nz)
        vals.append(W[o, nz])
        indptr[o + 1] = indptr[o] + len(nz)
    idx = np.concatenate(cols).astype(idx_dtype) if cols else np.zeros(0, idx_dtype)
    val = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, np.float32)
    return indptr, np.ascontiguousarray(idx), np.ascontiguousarray(val)


def pack_bsr(W: np.ndarray, r: int, c: int, idx_dtype=np.uint16, pad_value: float = 0.0):
    """Blocks with any nonzero are stored; padding outside W gets pad_value (the
    kernels must ignore it)."""
    out, inn = W.shape
    nbr, nbc = -(-out // r), -(-inn // c)
    P = np.full((nbr * r, nbc * c), pad_value, np.float32)
    P[:out, :inn] = W
    Z = np.zeros_like(P)
    Z[:out, :inn] = W
    indptr = np.zeros(nbr + 1, np.int32)
    idx, vals = [], []
    for br in range(nbr):
        for bc in range(nbc):
            if np.any(Z[br * r:(br + 1) * r, bc * c:(bc + 1) * c]):
                idx.append(bc)
                vals.append(P[br * r:(br + 1) * r, bc * c:(bc + 1) * c])
        indptr[br + 1] = len(idx)
    idx_a = np.array(idx, idx_dtype)
    val_a = np.array(vals, np.float32).reshape(-1, r, c) if vals else np.zeros((0, r, c), np.float32)
    return indptr, idx_a, np.ascontiguousarray(val_a)


def prune_nm(W: np.ndarray, n: int, m: int):
    """Keep the n largest |w| of each group of m along `in`; returns (W_pruned,
    values[out][G*n], indices uint8[out][G*n])."""
    out, inn = W.shape
    G = -(-inn // m)
    Wp = np.zeros_like(W)
    vals = np.zeros((out, G * n), np.float32)
    offs = np.zeros((out, G * n), np.uint8)
    for o in range(out):
        for g in range(G):
            seg = W[o, g * m:min((g + 1) * m, inn)]
            keep = np.sort(np.argsort(-np.abs(seg), kind="stable")[:n])
            for e, k in enumerate(keep):
                vals[o, g * n + e] = seg[k]
                offs[o, g * n + e] = k
                Wp[o, g * m + k] = seg[k]
            # padded entries (short last group): value 0, offset 0
    return Wp, vals, offs


# --------------------------------------------------------------------------- helpers
def ptr(a):
    return None if a is None else a.ctypes.data


def gelu_ref(x, act):
    x = np.asarray(x, np.float64)
    if act == ACT_GELU_ERF:
        erf = np.frompyfunc(math.erf, 1, 1)
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float64))
    if act == ACT_GELU_TANH:
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return x


def linear_ref(W, X, bias, act, res):
    y = W.astype(np.float64) @ X.astype(np.float64)
    if bias is not None:
        y += bias[:, None]
    y = gelu_ref(y, act)
    if res is not None:
        y += res
    return y


def assert_close(got, ref, rel=1e-4):
    ref = np.asarray(ref, np.float64)
    scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    err = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel:g} * {scale:.3g}"


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def sparse_w(rng, out, inn, density):
    return (rand(rng, out, inn) * (rng.random((out, inn)) < density)).astype(np.float32)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lib():
    """Fast build: -O3 -march=native, GNU vector extensions, OpenMP -- with the
    strict warning set as errors, so this build is also the gcc/cc strict check
    of that configuration."""
    lib = kb.load(extra_flags=kb.STRICT_WARNINGS)
    yield lib
    lib.s4c_set_num_threads(2)


@pytest.fixture(scope="module")
def lib_plain():
    """Plain C99 fallback (no vector extensions), no OpenMP, portable -O2."""
    return kb.load(cflags=("-std=c99", "-O2"), openmp=False, extra_flags=("-DS4C_PLAIN_C", *kb.STRICT_WARNINGS))


@pytest.fixture(params=[1, 2], ids=["1thr", "2thr"])
def threads(request, lib):
    lib.s4c_set_num_threads(request.param)
    return request.param


# (out, in, T): awkward T (not multiples of 8), small and large; in=2048 with
# T=70 makes the sparse kernels split tokens into blocks of 32.
LIN_SHAPES = [(1, 1, 1), (7, 5, 3), (37, 53, 20), (64, 96, 33), (50, 130, 64), (33, 2048, 70), (96, 64, 130)]
EPILOGUES = [
    (False, ACT_NONE, False),
    (True, ACT_NONE, False),
    (True, ACT_GELU_ERF, False),
    (True, ACT_GELU_TANH, True),
    (False, ACT_NONE, True),
]


def _epi(rng, out, T, with_bias, with_res):
    bias = rand(rng, out) if with_bias else None
    res = rand(rng, out, T) if with_res else None
    return bias, res


# --------------------------------------------------------------------------- linear
@pytest.mark.parametrize("shape", LIN_SHAPES)
@pytest.mark.parametrize("epi", EPILOGUES)
def test_linear_dense(lib, threads, shape, epi):
    out, inn, T = shape
    rng = np.random.default_rng(hash((shape, epi)) % 2**32)
    W, X = rand(rng, out, inn), rand(rng, inn, T)
    bias, res = _epi(rng, out, T, epi[0], epi[2])
    Y = np.full((out, T), np.nan, np.float32)
    assert lib.s4c_linear_dense(out, inn, T, ptr(W), ptr(X), ptr(bias), epi[1], ptr(res), ptr(Y)) == 0
    assert_close(Y, linear_ref(W, X, bias, epi[1], res))


def test_linear_dense_gemm_edges(lib):
    """Row counts around the 6-row micro-kernel, K across the 256 block, wide N."""
    rng = np.random.default_rng(1)
    for out, inn, T in [(5, 300, 9), (13, 513, 17), (12, 256, 1030), (6, 1, 8)]:
        W, X = rand(rng, out, inn), rand(rng, inn, T)
        Y = np.zeros((out, T), np.float32)
        lib.s4c_linear_dense(out, inn, T, ptr(W), ptr(X), None, ACT_NONE, None, ptr(Y))
        assert_close(Y, W.astype(np.float64) @ X)


@pytest.mark.parametrize("shape,idx", [(sh, ix) for sh in LIN_SHAPES for ix in ("u8", "u16", "i32")
                                       if ix != "u8" or sh[1] <= 256])
@pytest.mark.parametrize("epi", EPILOGUES[:3] + EPILOGUES[3:4])
def test_linear_csr(lib, threads, shape, epi, idx):
    out, inn, T = shape
    rng = np.random.default_rng(hash((shape, epi, idx)) % 2**32)
    W = sparse_w(rng, out, inn, 0.2)
    if out > 3:
        W[2] = 0  # an empty row
    X = rand(rng, inn, T)
    bias, res = _epi(rng, out, T, epi[0], epi[2])
    dtype, fn = {"u8": (np.uint8, lib.s4c_linear_csr_u8), "u16": (np.uint16, lib.s4c_linear_csr_u16),
                 "i32": (np.int32, lib.s4c_linear_csr_i32)}[idx]
    ip, ix, v = pack_csr(W, dtype)
    Y = np.full((out, T), np.nan, np.float32)
    assert fn(out, inn, T, ptr(ip), ptr(ix), ptr(v), ptr(X), ptr(bias), epi[1], ptr(res), ptr(Y)) == 0
    assert_close(Y, linear_ref(W, X, bias, epi[1], res))


def test_linear_csr_i32_wide(lib):
    """in > 65535 needs int32 column indices."""
    rng = np.random.default_rng(2)
    out, inn, T = 3, 70000, 11
    W = sparse_w(rng, out, inn, 0.01)
    W[0, inn - 1] = 1.5
    X = rand(rng, inn, T)
    ip, ix, v = pack_csr(W, np.int32)
    Y = np.zeros((out, T), np.float32)
    assert lib.s4c_linear_csr_i32(out, inn, T, ptr(ip), ptr(ix), ptr(v), ptr(X), None, 0, None, ptr(Y)) == 0
    assert_close(Y, W.astype(np.float64) @ X)


@pytest.fixture(scope="module")
def lib_avx2():
    """-march=native without the 16-float (AVX-512) CSR path: the 8-float path
    the kernels take on AVX2-only machines (same as `lib` where there is no
    AVX-512)."""
    return kb.load(extra_flags=("-DS4C_NO_AVX512", *kb.STRICT_WARNINGS))


# token counts that take every step of the CSR row loop: 16-float passes of
# 8 / 4 / 2 vectors (AVX-512), 8-float passes of 4 / 2 / 1 vectors, scalar tail
CSR_TOKENS = [1, 15, 16, 31, 32, 48, 63, 64, 100, 127, 128, 129, 144, 200, 255, 256, 263]


@pytest.mark.parametrize("T", CSR_TOKENS)
@pytest.mark.parametrize("variant", ["native", "avx2"])
def test_linear_csr_token_steps(lib, lib_avx2, variant, T):
    L = lib if variant == "native" else lib_avx2
    L.s4c_set_num_threads(2)
    rng = np.random.default_rng(T)
    out, inn = 45, 300
    W = sparse_w(rng, out, inn, 0.15)
    W[3] = 0
    X = rand(rng, inn, T)
    bias, res = _epi(rng, out, T, True, True)
    ip, ix, v = pack_csr(W, np.uint16)
    Y = np.full((out, T), np.nan, np.float32)
    assert L.s4c_linear_csr_u16(out, inn, T, ptr(ip), ptr(ix), ptr(v), ptr(X), ptr(bias), ACT_GELU_ERF,
                                ptr(res), ptr(Y)) == 0
    assert_close(Y, linear_ref(W, X, bias, ACT_GELU_ERF, res))


@pytest.mark.parametrize("kind", ["csr", "bsr4x1", "nm2:4"])
def test_linear_dynamic_chunks_uneven_rows(lib, kind):
    """Rows of very different weight, cut into dynamic chunks over 2 threads: every
    row written exactly once (Y starts as NaN), same result as 1 thread."""
    rng = np.random.default_rng(5)
    out, inn, T = 1000, 96, 40
    W = sparse_w(rng, out, inn, 0.1)
    W[:300] = rand(rng, 300, inn)  # dense head, sparse tail
    W[500:520] = 0
    X = rand(rng, inn, T)
    bias = rand(rng, out)
    outs = []
    for th in (1, 2):
        lib.s4c_set_num_threads(th)
        Y = np.full((out, T), np.nan, np.float32)
        if kind == "csr":
            ip, ix, v = pack_csr(W, np.uint8)
            rc = lib.s4c_linear_csr_u8(out, inn, T, ptr(ip), ptr(ix), ptr(v), ptr(X), ptr(bias), 0, None, ptr(Y))
            ref = linear_ref(W, X, bias, 0, None)
        elif kind == "bsr4x1":
            ip, ix, v = pack_bsr(W, 4, 1, np.uint8)
            rc = lib.s4c_linear_bsr_u8(out, inn, T, 4, 1, ptr(ip), ptr(ix), ptr(v), ptr(X), ptr(bias), 0, None,
                                       ptr(Y))
            ref = linear_ref(W, X, bias, 0, None)
        else:
            Wnm, vals, offs = prune_nm(W, 2, 4)
            rc = lib.s4c_linear_nm(out, inn, T, 2, 4, ptr(vals), ptr(offs), ptr(X), ptr(bias), 0, None, ptr(Y))
            ref = linear_ref(Wnm, X, bias, 0, None)
        assert rc == 0
        assert_close(Y, ref)
        outs.append(Y)
    np.testing.assert_array_equal(outs[0], outs[1])


BLOCKS = [(1, 4), (4, 1), (8, 1), (16, 1), (32, 1), (1, 8), (4, 4), (8, 8), (2, 3), (3, 1), (12, 2)]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b[0]}x{b[1]}")
@pytest.mark.parametrize("shape", [(64, 96, 37), (70, 45, 20), (35, 2048, 70), (32, 64, 5)])
def test_linear_bsr(lib, threads, block, shape):
    """out / in need not be multiples of the block: padded block entries are NaN
    here and must be ignored (rows >= out not written, columns >= in not read)."""
    r, c = block
    out, inn, T = shape
    rng = np.random.default_rng(hash((block, shape)) % 2**32)
    nbr, nbc = -(-out // r), -(-inn // c)
    bmask = rng.random((nbr, nbc)) < 0.3
    W = rand(rng, nbr * r, nbc * c) * np.kron(bmask, np.ones((r, c), np.float32))
    W = np.ascontiguousarray(W[:out, :inn])
    X = rand(rng, inn, T)
    bias, res = _epi(rng, out, T, True, True)
    variants = [(np.uint16, lib.s4c_linear_bsr_u16), (np.int32, lib.s4c_linear_bsr_i32)]
    if nbc <= 256:
        variants.append((np.uint8, lib.s4c_linear_bsr_u8))
    for idx_dtype, fn in variants:
        ip, ix, v = pack_bsr(W, r, c, idx_dtype, pad_value=np.nan)
        Y = np.full((out, T), np.nan, np.float32)
        rc = fn(out, inn, T, r, c, ptr(ip), ptr(ix), ptr(v), ptr(X), ptr(bias), ACT_GELU_ERF, ptr(res), ptr(Y))
        assert rc == 0
        assert_close(Y, linear_ref(W, X, bias, ACT_GELU_ERF, res))


NM = [(2, 4), (1, 4), (2, 8), (1, 8), (1, 16), (1, 32), (3, 5)]


@pytest.mark.parametrize("nm", NM, ids=lambda p: f"{p[0]}:{p[1]}")
@pytest.mark.parametrize("shape", [(40, 96, 37), (33, 70, 20), (17, 2048, 70), (8, 31, 3), (9, 70, 150)])
def test_linear_nm(lib, threads, nm, shape):
    n, m = nm
    out, inn, T = shape
    rng = np.random.default_rng(hash((nm, shape)) % 2**32)
    Wp, vals, offs = prune_nm(rand(rng, out, inn), n, m)
    X = rand(rng, inn, T)
    bias, res = _epi(rng, out, T, True, shape[0] % 2 == 1)
    Y = np.full((out, T), np.nan, np.float32)
    rc = lib.s4c_linear_nm(out, inn, T, n, m, ptr(vals), ptr(offs), ptr(X), ptr(bias), ACT_GELU_TANH, ptr(res), ptr(Y))
    assert rc == 0
    assert_close(Y, linear_ref(Wp, X, bias, ACT_GELU_TANH, res))


def test_linear_nm_padded_offsets_past_in(lib):
    """Padded entries of the short last group may carry any offset < m (value
    0); those whose column would be >= in must not be read."""
    rng = np.random.default_rng(3)
    out, inn, T, n, m = 4, 10, 9, 2, 8  # last group covers columns 8, 9 only
    Wp, vals, offs = prune_nm(rand(rng, out, inn), n, m)
    offs[:, -1] = 7  # column 15 >= in
    vals[:, -1] = 0.0
    X = rand(rng, inn, T)
    Y = np.zeros((out, T), np.float32)
    lib.s4c_linear_nm(out, inn, T, n, m, ptr(vals), ptr(offs), ptr(X), None, 0, None, ptr(Y))
    Wref = np.zeros_like(Wp)
    G = -(-inn // m)
    for o in range(out):
        for k in range(G * n):
            col = (k // n) * m + offs[o, k]
            if col < inn:
                Wref[o, col] += vals[o, k]
    assert_close(Y, Wref.astype(np.float64) @ X)


def test_linear_bad_args(lib):
    z = np.zeros(16, np.float32)
    ip = np.zeros(3, np.int32)
    assert lib.s4c_linear_dense(-1, 2, 2, ptr(z), ptr(z), None, 0, None, ptr(z)) == -1
    assert lib.s4c_linear_bsr_u16(2, 2, 2, 0, 1, ptr(ip), ptr(ip), ptr(z), ptr(z), None, 0, None, ptr(z)) == -1
    assert lib.s4c_linear_nm(2, 4, 2, 3, 2, ptr(z), ptr(ip), ptr(z), None, 0, None, ptr(z)) == -1
    # zero-sized problems are no-ops
    assert lib.s4c_linear_csr_u16(0, 4, 2, ptr(ip), None, None, ptr(z), None, 0, None, ptr(z)) == 0


@pytest.mark.parametrize("kind", ["dense", "csr", "bsr4x1", "nm2:4"])
def test_linear_plain_c99_fallback(lib_plain, kind):
    """The -DS4C_PLAIN_C build (struct vectors, serial) gives the same results."""
    rng = np.random.default_rng(4)
    out, inn, T = 45, 67, 29
    X = rand(rng, inn, T)
    bias, res = _epi(rng, out, T, True, True)
    Y = np.zeros((out, T), np.float32)
    L = lib_plain
    if kind == "dense":
        W = rand(rng, out, inn)
        L.s4c_linear_dense(out, inn, T, ptr(W), ptr(X), ptr(bias), 1, ptr(res), ptr(Y))
    elif kind == "csr":
        W = sparse_w(rng, out, inn, 0.2)
        ip, ix, v = pack_csr(W)
        L.s4c_linear_csr_u16(out, inn, T, ptr(ip), ptr(ix), ptr(v), ptr(X), ptr(bias), 1, ptr(res), ptr(Y))
    elif kind == "bsr4x1":
        W = sparse_w(rng, out, inn, 0.2)
        ip, ix, v = pack_bsr(W, 4, 1)
        L.s4c_linear_bsr_u16(out, inn, T, 4, 1, ptr(ip), ptr(ix), ptr(v), ptr(X), ptr(bias), 1, ptr(res), ptr(Y))
    else:
        W, vals, offs = prune_nm(rand(rng, out, inn), 2, 4)
        L.s4c_linear_nm(out, inn, T, 2, 4, ptr(vals), ptr(offs), ptr(X), ptr(bias), 1, ptr(res), ptr(Y))
    assert_close(Y, linear_ref(W, X, bias, 1, res))


# --------------------------------------------------------------------------- attention
def attention_ref(q, k, v, mask, batch, seq, heads, D, scale):
    T = batch * seq
    out = np.zeros((heads * D, T))
    for b in range(batch):
        sl = slice(b * seq, (b + 1) * seq)
        for h in range(heads):
            hs = slice(h * D, (h + 1) * D)
            Q, K, V = (a[hs, sl].astype(np.float64) for a in (q, k, v))
            s = scale * (Q.T @ K)  # [i][j]
            if mask is not None:
                s = s + mask[b][None, :]
            mx = np.max(s, axis=1, keepdims=True)
            mx[~np.isfinite(mx)] = 0.0
            e = np.exp(s - mx)
            den = e.sum(axis=1, keepdims=True)
            p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
            out[hs, sl] = (p @ V.T).T
    return out


@pytest.mark.parametrize(
    "cfg",
    [(1, 1, 1, 1), (2, 13, 3, 8), (1, 70, 2, 64), (3, 9, 4, 5), (2, 128, 2, 16)],
    ids=lambda c: "b{}s{}h{}d{}".format(*c),
)
@pytest.mark.parametrize("masked", [False, True])
def test_attention(lib, threads, cfg, masked):
    batch, seq, heads, D = cfg
    rng = np.random.default_rng(hash((cfg, masked)) % 2**32)
    T, H = batch * seq, heads * D
    qkv = rand(rng, 3 * H, T, scale=2.0)
    mask = None
    if masked:
        mask = np.where(rng.random((batch, seq)) < 0.3, -10000.0, 0.0).astype(np.float32)
        mask[:, 0] = 0.0
        if seq > 2:
            mask[0, 1] = -np.inf
    scale = 1.0 / math.sqrt(D)
    per = lib.s4c_attention_scratch_floats(seq)
    scratch = np.zeros(per * 2, np.float32)
    out = np.full((H, T), np.nan, np.float32)
    rc = lib.s4c_attention_qkv(batch, seq, heads, D, scale, ptr(qkv), ptr(mask), ptr(out), ptr(scratch), scratch.size)
    assert rc == 0
    assert_close(out, attention_ref(qkv[:H], qkv[H:2 * H], qkv[2 * H:], mask, batch, seq, heads, D, scale))


def test_attention_separate_qkv_all_masked_and_scratch(lib):
    rng = np.random.default_rng(5)
    batch, seq, heads, D = 2, 6, 2, 4
    T, H = batch * seq, heads * D
    q, k, v = rand(rng, H, T), rand(rng, H, T), rand(rng, H, T)
    mask = np.zeros((batch, seq), np.float32)
    mask[1, :] = -np.inf  # every key of sentence 1 masked -> zero output there
    per = lib.s4c_attention_scratch_floats(seq)
    out = np.full((H, T), np.nan, np.float32)
    small = np.zeros(per - 1, np.float32)
    assert lib.s4c_attention(batch, seq, heads, D, 0.5, ptr(q), ptr(k), ptr(v), ptr(mask), ptr(out), ptr(small), small.size) == -2
    one = np.zeros(per, np.float32)  # room for one thread only: still correct
    assert lib.s4c_attention(batch, seq, heads, D, 0.5, ptr(q), ptr(k), ptr(v), ptr(mask), ptr(out), ptr(one), one.size) == 0
    ref = attention_ref(q, k, v, mask, batch, seq, heads, D, 0.5)
    assert_close(out, ref)
    assert np.all(out[:, seq:] == 0.0)


# --------------------------------------------------------------------------- norms
def ln_ref(x, gamma, beta, eps):
    x = x.astype(np.float64)
    mu = x.mean(axis=0, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=0, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * gamma[:, None]
    return y + (beta[:, None] if beta is not None else 0.0)


@pytest.mark.parametrize("F,T", [(1, 1), (37, 70), (768, 128), (16, 5), (768, 512)])  # 768x512: threads split
def test_layernorm(lib, threads, F, T):
    rng = np.random.default_rng(F * 1000 + T)
    x = rand(rng, F, T, scale=3.0) + 5.0  # offset: checks the two-pass variance
    g, b = rand(rng, F), rand(rng, F)
    y = np.full_like(x, np.nan)
    lib.s4c_layernorm(F, T, ptr(x), ptr(g), ptr(b), 1e-5, ptr(y))
    assert_close(y, ln_ref(x, g, b, 1e-5))
    x2 = x.copy()  # in place, beta NULL
    lib.s4c_layernorm(F, T, ptr(x2), ptr(g), None, 1e-12, ptr(x2))
    assert_close(x2, ln_ref(x, g, None, 1e-12))


@pytest.mark.parametrize("F,T", [(37, 70), (768, 128), (5, 3), (768, 520)])  # 768x520: threads split
def test_skip_layernorm(lib, threads, F, T):
    rng = np.random.default_rng(F + T)
    x, s = rand(rng, F, T), rand(rng, F, T)
    bias, g, b = rand(rng, F), rand(rng, F), rand(rng, F)
    y = np.zeros_like(x)
    so = np.zeros_like(x)
    lib.s4c_skip_layernorm(F, T, ptr(x), ptr(s), ptr(bias), ptr(g), ptr(b), 1e-5, ptr(y), ptr(so))
    tot = x.astype(np.float64) + s + bias[:, None]
    assert_close(so, tot)
    assert_close(y, ln_ref(tot, g, b, 1e-5))
    xin = x.copy()  # y aliases x, no bias, no sum output
    lib.s4c_skip_layernorm(F, T, ptr(xin), ptr(s), None, ptr(g), ptr(b), 1e-5, ptr(xin), None)
    assert_close(xin, ln_ref(x.astype(np.float64) + s, g, b, 1e-5))


# --------------------------------------------------------------------------- activations
def test_gelu(lib):
    x = np.concatenate([np.linspace(-12, 12, 4001), [0.0, -0.0, 1e-8, -100.0, 100.0, 1e4, -1e4]]).astype(np.float32)
    for act, fn in ((ACT_GELU_ERF, lib.s4c_gelu_erf), (ACT_GELU_TANH, lib.s4c_gelu_tanh)):
        y = np.zeros_like(x)
        fn(x.size, ptr(x), ptr(y))
        ref = gelu_ref(x, act)
        err = np.abs(y - ref) / np.maximum(1.0, np.abs(ref))
        assert err.max() < 2e-6, (act, err.max(), x[np.argmax(err)])
        y2 = x.copy()
        lib.s4c_activation(act, x.size, ptr(y2), ptr(y2))
        np.testing.assert_array_equal(y2, y)


def test_relu_activation(lib):
    """S4C_ACT_RELU through s4c_activation, in place and not, on every vector-tail length."""
    for n in (1, 7, 8, 17, 4099):
        x = np.random.default_rng(n).uniform(-3, 3, n).astype(np.float32)
        x[0] = -0.0
        y = np.full_like(x, np.nan)
        lib.s4c_activation(ACT_RELU, x.size, ptr(x), ptr(y))
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        lib.s4c_activation(ACT_RELU, x.size, ptr(x), ptr(x))
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("n", [131072 * 2 + 5, 300001])
def test_gelu_threaded(lib, threads, n):
    """Above 128K elements the element-wise kernels split across threads."""
    x = np.random.default_rng(n).uniform(-8, 8, n).astype(np.float32)
    for act, fn in ((ACT_GELU_ERF, lib.s4c_gelu_erf), (ACT_GELU_TANH, lib.s4c_gelu_tanh)):
        y = np.full_like(x, np.nan)
        fn(x.size, ptr(x), ptr(y))
        assert_close(y, gelu_ref(x, act), rel=2e-6)


def softmax_ref(x, axis):
    """Stable softmax; a slice that is entirely -inf gives zeros (kernel rule)."""
    x = x.astype(np.float64)
    mx = np.max(x, axis=axis, keepdims=True)
    mx[~np.isfinite(mx)] = 0.0
    e = np.exp(x - mx)
    den = e.sum(axis=axis, keepdims=True)
    return np.divide(e, den, out=np.zeros_like(e), where=den > 0)


@pytest.mark.parametrize("F,T", [(1, 3), (10, 70), (3, 1)])
def test_softmax(lib, F, T):
    rng = np.random.default_rng(F * T)
    x = rand(rng, F, T, scale=20.0)
    x[0, 0] = -np.inf
    y = np.zeros_like(x)
    lib.s4c_softmax_features(F, T, ptr(x), ptr(y))
    assert_close(y, softmax_ref(x, 0), rel=1e-6)
    lib.s4c_softmax_rows(F, T, ptr(x), ptr(y))
    assert_close(y, softmax_ref(x, 1), rel=1e-6)
    y2 = x.copy()  # in place
    lib.s4c_softmax_features(F, T, ptr(y2), ptr(y2))
    assert_close(y2, softmax_ref(x, 0), rel=1e-6)


def test_transpose(lib):
    rng = np.random.default_rng(6)
    for r, c in [(1, 1), (33, 70), (128, 768)]:
        x = rand(rng, r, c)
        y = np.zeros((c, r), np.float32)
        lib.s4c_transpose(r, c, ptr(x), ptr(y))
        np.testing.assert_array_equal(y, x.T)


# --------------------------------------------------------------------------- embedding
@pytest.mark.parametrize("variant", ["full", "no_type_ids", "pos_ids", "no_ln", "no_tables"])
def test_embedding(lib, threads, variant):
    rng = np.random.default_rng(len(variant))
    batch, seq, H, V, P, NT = 2, 9, 37, 50, 16, 2
    T = batch * seq
    word, pos, typ = rand(rng, V, H), rand(rng, P, H), rand(rng, NT, H)
    g, b = rand(rng, H), rand(rng, H)
    ids = rng.integers(0, V, T).astype(np.int64)
    tt = rng.integers(0, NT, T).astype(np.int64)
    pids = rng.integers(0, P, T).astype(np.int64) if variant == "pos_ids" else None
    if variant == "no_type_ids":
        tt = None
    use_pos, use_type = (variant != "no_tables"), (variant != "no_tables")
    gamma, beta = (None, None) if variant == "no_ln" else (g, b)
    out = np.full((H, T), np.nan, np.float32)
    rc = lib.s4c_embedding(batch, seq, H, ptr(ids), ptr(tt), ptr(pids), ptr(word), V,
                           ptr(pos) if use_pos else None, P, ptr(typ) if use_type else None, NT,
                           ptr(gamma), ptr(beta), 1e-12, ptr(out))
    assert rc == 0
    p = pids if pids is not None else np.tile(np.arange(seq), batch)
    e = word[ids].astype(np.float64)
    if use_pos:
        e += pos[p]
    if use_type:
        e += typ[tt if tt is not None else np.zeros(T, np.int64)]
    ref = e.T if gamma is None else ln_ref(e.T, g, b, 1e-12)
    assert_close(out, ref)
    bad = ids.copy()
    bad[3] = V
    assert lib.s4c_embedding(batch, seq, H, ptr(bad), ptr(tt), ptr(pids), ptr(word), V, ptr(pos), P,
                             ptr(typ), NT, ptr(gamma), ptr(beta), 1e-12, ptr(out)) == -1


# --------------------------------------------------------------------------- builds
def _compile_all(cc: str, flags: list[str], tmp_path: Path) -> None:
    procs = [
        (src, subprocess.Popen([cc, *flags, "-c", str(src), "-o", str(tmp_path / (src.stem + ".o"))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for src in kb.sources()
    ]
    for src, p in procs:
        _, err = p.communicate()
        assert p.returncode == 0 and err == "", f"{cc} {' '.join(flags)} {src.name}:\n{err}"


# (the -O3 -march=native -fopenmp and the -DS4C_PLAIN_C serial configurations
# are also built with the strict flags by the `lib` / `lib_plain` fixtures)
STRICT_CONFIGS = {
    "openmp-native": ["-O2", "-march=native", "-fopenmp"],
    "serial-sse2": ["-O3"],
    "plain-c99": ["-O2", "-DS4C_PLAIN_C", "-fopenmp"],
    "avx512-off": ["-O2", "-march=native", "-DS4C_NO_AVX512", "-fopenmp"],
    "avx512": ["-O2", "-mavx512f", "-mfma", "-fopenmp"],
}


@pytest.mark.parametrize("cfg", list(STRICT_CONFIGS))
@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_strict_build(tmp_path, cc, cfg):
    """-std=c99 -Wall -Wextra -Werror -pedantic, with and without OpenMP and
    vector extensions; clang when it is installed.  (With gcc the
    openmp-native and plain-C99 configurations are the `lib` / `lib_plain`
    fixture builds, which use the same strict flags.)"""
    require({cc: cc})  # clang is installed on first use (tests/debian.py)
    if cc == "gcc" and cfg != "serial-sse2" and kb.find_cc() in ("cc", "gcc"):
        pytest.skip("covered by the strict fixture builds")
    flags = list(kb.STRICT_WARNINGS) + STRICT_CONFIGS[cfg]
    if "-fopenmp" in flags and not kb.openmp_flags(cc):
        flags.remove("-fopenmp")
    _compile_all(cc, flags, tmp_path)


SAN_DRIVER = r"""/* Sanitizer driver for the s4c kernels: small awkward shapes, exactly sized
 * heap buffers, results checked against naive double-precision loops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s4c_kernels.h"

static unsigned long rs = 88172645UL;
static float frand(void) {
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; rs &= 0xffffffffUL;
    return (float)((double)(rs & 0xffffff) / 8388608.0 - 1.0);
}
static void *xmalloc(size_t n) { void *p = malloc(n ? n : 1); if (!p) exit(3); return p; }
static float *frandv(size_t n) { float *p = xmalloc(n * sizeof *p); size_t i; for (i = 0; i < n; i++) p[i] = frand(); return p; }
static int fails = 0;

static void check(const char *name, const float *got, const double *ref, size_t n) {
    double mx = 1.0, err = 0.0;
    size_t i;
    for (i = 0; i < n; i++) if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    for (i = 0; i < n; i++) { double e = fabs((double)got[i] - ref[i]); if (!(e <= err)) err = e; }
    if (!(err <= 1e-4 * mx)) { printf("FAIL %s err %g scale %g\n", name, err, mx); fails++; }
}

static double act_ref(double v, int act) {
    if (act == S4C_ACT_GELU_ERF) return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    if (act == S4C_ACT_GELU_TANH) return 0.5 * v * (1.0 + tanh(sqrt(2.0 / 3.14159265358979) * (v + 0.044715 * v * v * v)));
    return v;
}

static double *ref_linear(int out, int in, int T, const float *W, const float *X, const float *b, int act, const float *res) {
    double *r = xmalloc((size_t)out * T * sizeof *r);
    int o, i, t;
    for (o = 0; o < out; o++) for (t = 0; t < T; t++) {
        double s = b ? b[o] : 0.0;
        for (i = 0; i < in; i++) s += (double)W[(size_t)o * in + i] * X[(size_t)i * T + t];
        s = act_ref(s, act);
        r[(size_t)o * T + t] = s + (res ? res[(size_t)o * T + t] : 0.0);
    }
    return r;
}

static void t_linear(int out, int in, int T, int act) {
    float *W = frandv((size_t)out * in), *X = frandv((size_t)in * T), *b = frandv(out);
    float *res = frandv((size_t)out * T), *Y = xmalloc((size_t)out * T * sizeof *Y);
    double *ref;
    int o, i, nnz = 0, r, c;
    for (o = 0; o < out * in; o++) if (frand() < 0.2f) W[o] = 0.0f;
    ref = ref_linear(out, in, T, W, X, b, act, res);
    s4c_linear_dense(out, in, T, W, X, b, act, res, Y);
    check("dense", Y, ref, (size_t)out * T);
    free(ref);
    /* sparse: keep ~30% */
    for (o = 0; o < out * in; o++) if (frand() < 0.4f) W[o] = 0.0f;
    ref = ref_linear(out, in, T, W, X, b, act, res);
    for (o = 0; o < out * in; o++) nnz += W[o] != 0.0f;
    {   /* CSR, both index types */
        int32_t *ip = xmalloc((size_t)(out + 1) * sizeof *ip), *i32 = xmalloc((size_t)nnz * sizeof *i32);
        uint16_t *i16 = xmalloc((size_t)nnz * sizeof *i16);
        float *v = xmalloc((size_t)nnz * sizeof *v);
        int k = 0;
        ip[0] = 0;
        for (o = 0; o < out; o++) {
            for (i = 0; i < in; i++) if (W[(size_t)o * in + i] != 0.0f) { i32[k] = i; i16[k] = (uint16_t)i; v[k++] = W[(size_t)o * in + i]; }
            ip[o + 1] = k;
        }
        s4c_linear_csr_u16(out, in, T, ip, i16, v, X, b, act, res, Y);
        check("csr_u16", Y, ref, (size_t)out * T);
        if (in <= 256) {
            uint8_t *i8 = xmalloc((size_t)nnz);
            for (o = 0; o < nnz; o++) i8[o] = (uint8_t)i32[o];
            s4c_linear_csr_u8(out, in, T, ip, i8, v, X, b, act, res, Y);
            check("csr_u8", Y, ref, (size_t)out * T);
            free(i8);
        }
        s4c_linear_csr_i32(out, in, T, ip, i32, v, X, NULL, act, NULL, Y);
        {
            double *r2 = ref_linear(out, in, T, W, X, NULL, act, NULL);
            check("csr_i32", Y, r2, (size_t)out * T);
            free(r2);
        }
        free(ip); free(i32); free(i16); free(v);
    }
    {   /* BSR: every block containing a nonzero; padding stays 0 */
        static const int shapes[][2] = {{4, 1}, {16, 1}, {1, 4}, {4, 4}, {8, 8}, {3, 2}};
        int s;
        for (s = 0; s < 6; s++) {
            int R = shapes[s][0], C = shapes[s][1], nbr = (out + R - 1) / R, nbc = (in + C - 1) / C, br, bc, nb = 0, k = 0;
            int32_t *ip = xmalloc((size_t)(nbr + 1) * sizeof *ip), *ix;
            uint16_t *i16;
            float *v;
            for (br = 0; br < nbr; br++) for (bc = 0; bc < nbc; bc++) {
                int any = 0;
                for (r = 0; r < R; r++) for (c = 0; c < C; c++)
                    if (br * R + r < out && bc * C + c < in && W[(size_t)(br * R + r) * in + bc * C + c] != 0.0f) any = 1;
                nb += any;
            }
            ix = xmalloc((size_t)nb * sizeof *ix); i16 = xmalloc((size_t)nb * sizeof *i16);
            v = xmalloc((size_t)nb * R * C * sizeof *v);
            ip[0] = 0;
            for (br = 0; br < nbr; br++) {
                for (bc = 0; bc < nbc; bc++) {
                    int any = 0;
                    for (r = 0; r < R; r++) for (c = 0; c < C; c++)
                        if (br * R + r < out && bc * C + c < in && W[(size_t)(br * R + r) * in + bc * C + c] != 0.0f) any = 1;
                    if (!any) continue;
                    ix[k] = bc; i16[k] = (uint16_t)bc;
                    for (r = 0; r < R; r++) for (c = 0; c < C; c++)
                        v[((size_t)k * R + r) * C + c] = (br * R + r < out && bc * C + c < in) ? W[(size_t)(br * R + r) * in + bc * C + c] : 0.0f;
                    k++;
                }
                ip[br + 1] = k;
            }
            s4c_linear_bsr_u16(out, in, T, R, C, ip, i16, v, X, b, act, res, Y);
            check("bsr_u16", Y, ref, (size_t)out * T);
            s4c_linear_bsr_i32(out, in, T, R, C, ip, ix, v, X, b, act, res, Y);
            check("bsr_i32", Y, ref, (size_t)out * T);
            if (nbc <= 256) {
                uint8_t *i8 = xmalloc((size_t)nb);
                for (k = 0; k < nb; k++) i8[k] = (uint8_t)ix[k];
                s4c_linear_bsr_u8(out, in, T, R, C, ip, i8, v, X, b, act, res, Y);
                check("bsr_u8", Y, ref, (size_t)out * T);
                free(i8);
            }
            free(ip); free(ix); free(i16); free(v);
        }
    }
    {   /* N:M: keep the first n nonzeros... build from scratch: 2:4 and 1:8 */
        static const int nms[][2] = {{2, 4}, {1, 8}, {1, 32}, {3, 5}};
        int s;
        for (s = 0; s < 4; s++) {
            int N = nms[s][0], M = nms[s][1], G = (in + M - 1) / M, g, e;
            float *Wn = xmalloc((size_t)out * in * sizeof *Wn), *v = xmalloc((size_t)out * G * N * sizeof *v);
            uint8_t *off = xmalloc((size_t)out * G * N);
            double *r3;
            memset(Wn, 0, (size_t)out * in * sizeof *Wn);
            for (o = 0; o < out; o++) for (g = 0; g < G; g++) for (e = 0; e < N; e++) {
                size_t k = ((size_t)o * G + g) * N + e;
                int col = g * M + e * (M / N);
                off[k] = (uint8_t)(e * (M / N));
                v[k] = col < in ? frand() : 0.0f;
                if (col < in) Wn[(size_t)o * in + col] = v[k];
            }
            r3 = ref_linear(out, in, T, Wn, X, b, act, res);
            s4c_linear_nm(out, in, T, N, M, v, off, X, b, act, res, Y);
            check("nm", Y, r3, (size_t)out * T);
            free(Wn); free(v); free(off); free(r3);
        }
    }
    free(ref); free(W); free(X); free(b); free(res); free(Y);
}

static void t_attention(int batch, int seq, int heads, int D, int use_mask) {
    const int H = heads * D, T = batch * seq;
    float *qkv = frandv((size_t)3 * H * T), *mask = frandv((size_t)batch * seq), *out = xmalloc((size_t)H * T * sizeof *out);
    size_t per = s4c_attention_scratch_floats(seq);
    float *scr = xmalloc(2 * per * sizeof *scr);
    double *ref = xmalloc((size_t)H * T * sizeof *ref), *p = xmalloc((size_t)seq * sizeof *p);
    double scale = 1.0 / sqrt((double)D);
    int b, h, i, j, d;
    for (i = 0; i < batch * seq; i++) mask[i] = mask[i] < -0.5f ? -10000.0f : 0.0f;
    for (b = 0; b < batch; b++) for (h = 0; h < heads; h++) for (i = 0; i < seq; i++) {
        double mx = -1e300, s = 0.0;
        for (j = 0; j < seq; j++) {
            double a = 0.0;
            for (d = 0; d < D; d++) a += (double)qkv[(size_t)(h * D + d) * T + b * seq + i] * qkv[(size_t)(H + h * D + d) * T + b * seq + j];
            p[j] = a * scale + (use_mask ? mask[b * seq + j] : 0.0);
            if (p[j] > mx) mx = p[j];
        }
        for (j = 0; j < seq; j++) { p[j] = exp(p[j] - mx); s += p[j]; }
        for (d = 0; d < D; d++) {
            double o = 0.0;
            for (j = 0; j < seq; j++) o += p[j] / s * qkv[(size_t)(2 * H + h * D + d) * T + b * seq + j];
            ref[(size_t)(h * D + d) * T + b * seq + i] = o;
        }
    }
    if (s4c_attention_qkv(batch, seq, heads, D, (float)scale, qkv, use_mask ? mask : NULL, out, scr, 2 * per) != 0) fails++;
    check("attention", out, ref, (size_t)H * T);
    free(qkv); free(mask); free(out); free(scr); free(ref); free(p);
}

static void t_norms(int F, int T) {
    float *x = frandv((size_t)F * T), *s = frandv((size_t)F * T), *g = frandv(F), *bt = frandv(F), *bias = frandv(F);
    float *y = xmalloc((size_t)F * T * sizeof *y), *so = xmalloc((size_t)F * T * sizeof *so);
    double *ref = xmalloc((size_t)F * T * sizeof *ref), *rs2 = xmalloc((size_t)F * T * sizeof *rs2);
    int f, t, pass;
    for (pass = 0; pass < 2; pass++) {
        for (t = 0; t < T; t++) {
            double m = 0.0, v = 0.0;
            for (f = 0; f < F; f++) { double e = x[(size_t)f * T + t] + (pass ? (double)s[(size_t)f * T + t] + bias[f] : 0.0); rs2[(size_t)f * T + t] = e; m += e; }
            m /= F;
            for (f = 0; f < F; f++) { double d = rs2[(size_t)f * T + t] - m; v += d * d; }
            v /= F;
            for (f = 0; f < F; f++) ref[(size_t)f * T + t] = (rs2[(size_t)f * T + t] - m) / sqrt(v + 1e-5) * g[f] + bt[f];
        }
        if (pass == 0) { s4c_layernorm(F, T, x, g, bt, 1e-5f, y); check("layernorm", y, ref, (size_t)F * T); }
        else {
            s4c_skip_layernorm(F, T, x, s, bias, g, bt, 1e-5f, y, so);
            check("skip_layernorm", y, ref, (size_t)F * T);
            check("skip_layernorm_sum", so, rs2, (size_t)F * T);
        }
    }
    /* activations, softmax, transpose on the same buffers */
    s4c_gelu_erf((size_t)F * T, x, y);
    for (f = 0; f < F * T; f++) ref[f] = act_ref(x[f], S4C_ACT_GELU_ERF);
    check("gelu_erf", y, ref, (size_t)F * T);
    s4c_gelu_tanh((size_t)F * T, x, y);
    for (f = 0; f < F * T; f++) ref[f] = act_ref(x[f], S4C_ACT_GELU_TANH);
    check("gelu_tanh", y, ref, (size_t)F * T);
    s4c_softmax_features(F, T, x, y);
    for (t = 0; t < T; t++) {
        double m = -1e300, sum = 0.0;
        for (f = 0; f < F; f++) if (x[(size_t)f * T + t] > m) m = x[(size_t)f * T + t];
        for (f = 0; f < F; f++) sum += exp(x[(size_t)f * T + t] - m);
        for (f = 0; f < F; f++) ref[(size_t)f * T + t] = exp(x[(size_t)f * T + t] - m) / sum;
    }
    check("softmax_features", y, ref, (size_t)F * T);
    s4c_softmax_rows(F, T, x, y);
    for (f = 0; f < F; f++) {
        double m = -1e300, sum = 0.0;
        for (t = 0; t < T; t++) if (x[(size_t)f * T + t] > m) m = x[(size_t)f * T + t];
        for (t = 0; t < T; t++) sum += exp(x[(size_t)f * T + t] - m);
        for (t = 0; t < T; t++) ref[(size_t)f * T + t] = exp(x[(size_t)f * T + t] - m) / sum;
    }
    check("softmax_rows", y, ref, (size_t)F * T);
    s4c_transpose(F, T, x, y);
    for (f = 0; f < F; f++) for (t = 0; t < T; t++) ref[(size_t)t * F + f] = x[(size_t)f * T + t];
    check("transpose", y, ref, (size_t)F * T);
    free(x); free(s); free(g); free(bt); free(bias); free(y); free(so); free(ref); free(rs2);
}

static void t_embedding(int batch, int seq, int H) {
    const int V = 11, P = 7, NT = 2, T = batch * seq;
    float *w = frandv((size_t)V * H), *p = frandv((size_t)P * H), *ty = frandv((size_t)NT * H), *g = frandv(H), *bt = frandv(H);
    float *out = xmalloc((size_t)H * T * sizeof *out);
    int64_t *ids = xmalloc((size_t)T * sizeof *ids), *tt = xmalloc((size_t)T * sizeof *tt);
    double *ref = xmalloc((size_t)H * T * sizeof *ref), *e = xmalloc((size_t)H * sizeof *e);
    int t, f;
    for (t = 0; t < T; t++) { ids[t] = (t * 7 + 3) % V; tt[t] = t % 2; }
    for (t = 0; t < T; t++) {
        double m = 0.0, v = 0.0;
        for (f = 0; f < H; f++) { e[f] = (double)w[(size_t)ids[t] * H + f] + p[(size_t)(t % seq) * H + f] + ty[(size_t)tt[t] * H + f]; m += e[f]; }
        m /= H;
        for (f = 0; f < H; f++) v += (e[f] - m) * (e[f] - m);
        v /= H;
        for (f = 0; f < H; f++) ref[(size_t)f * T + t] = (e[f] - m) / sqrt(v + 1e-12) * g[f] + bt[f];
    }
    if (s4c_embedding(batch, seq, H, ids, tt, NULL, w, V, p, P, ty, NT, g, bt, 1e-12f, out) != 0) fails++;
    check("embedding", out, ref, (size_t)H * T);
    ids[T - 1] = V;
    if (s4c_embedding(batch, seq, H, ids, tt, NULL, w, V, p, P, ty, NT, g, bt, 1e-12f, out) != S4C_EINVAL) fails++;
    free(w); free(p); free(ty); free(g); free(bt); free(out); free(ids); free(tt); free(ref); free(e);
}

int main(void) {
    int nt;
    for (nt = 1; nt <= 2; nt++) {
        s4c_set_num_threads(nt);
        t_linear(1, 1, 1, S4C_ACT_NONE);
        t_linear(13, 19, 7, S4C_ACT_GELU_ERF);
        t_linear(37, 21, 41, S4C_ACT_GELU_TANH);
        t_linear(10, 2100, 45, S4C_ACT_NONE);
        t_attention(2, 7, 2, 3, 1);
        t_attention(1, 67, 1, 9, 0);
        t_norms(13, 70);
        t_norms(1, 3);
        t_embedding(2, 5, 13);
    }
    if (fails) { printf("%d FAILURES\n", fails); return 1; }
    printf("ALL OK\n");
    return 0;
}
"""


def test_sanitizers(tmp_path):
    """ASan + UBSan: a C driver runs every kernel on small awkward shapes with
    exactly sized heap buffers and checks results against naive loops."""
    cc = kb.find_cc()
    exe = tmp_path / "san"
    drv = tmp_path / "driver.c"
    drv.write_text(SAN_DRIVER)
    flags = [*kb.STRICT_WARNINGS, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-fno-omit-frame-pointer", *kb.openmp_flags(cc), f"-I{kb.KERNEL_DIR}"]
    r = subprocess.run([cc, *flags, str(drv), *map(str, kb.sources()), "-o", str(exe), "-lm"],
                       capture_output=True, text=True)
    if r.returncode != 0 and "asan" in r.stderr.lower():
        pytest.skip("sanitizer runtime not available")
    assert r.returncode == 0, r.stderr
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1",
           "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "runtime error" not in run.stderr, run.stderr
    assert "ALL OK" in run.stdout, run.stdout
