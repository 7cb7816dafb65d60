"""SPU opcodes: dense x dense tile matmul (attention, dense weights) and sparse-weight x dense-
activation tile multiply-accumulate in the two native formats (N:M, BSR r x c).

Activation tiles are token-major: X[T, K] row-major with a row pitch, the output Y[T, O] likewise,
so SPU outputs feed VPU row ops (LayerNorm, softmax) with no layout change. A sparse weight is
W[O, K] (K = reduction dim) and the op computes Y (+)= X @ W^T.
Accumulator dtype: f32 for f32/bf16 inputs, i32 (wrapping) for i8 inputs.
"""

from __future__ import annotations

import numpy as np

from s4c.s4 import dtypes as D
from s4c.s4.ops_common import (Cost, cdiv, dt_in, first_error, load, load64, load_vec, positive,
                               sram_bytes, store, store64, tdt, tile, vector)

SPU_DTYPES = (D.F32, D.BF16, D.I8)
ACC = {D.F32: D.F32, D.BF16: D.F32, D.I8: D.I32}
MAX_M = 32            # widest N:M group the SPU's input mux can select from
MAX_BLOCK = 32        # largest BSR block side
BSR_INDEX_DTYPES = (D.U8, D.U16, D.I32)
_CHUNK = 1 << 22      # elements of densified weight per numpy step (bounds interpreter memory)


def _check_dts(a):
    return first_error(dt_in(a, "dt", SPU_DTYPES, "the SPU"),
                       None if a["tdt"] == 0 else dt_in(a, "tdt", SPU_DTYPES, "the SPU timing model"))


def _finish(ctx, a, y: np.ndarray, rows: int, cols: int):
    """Store y (float64, exact for i8 inputs) to dst, accumulating when acc=1."""
    acc_dt = ACC[a["dt"]]
    if acc_dt == D.I32:
        y = y.astype(np.int64)
        if a["acc"]:
            y = y + load(ctx, "sram", a["dst"], rows, cols, a["pd"], D.I32).astype(np.int64)
        store(ctx, "sram", a["dst"], a["pd"], D.I32, y.astype(np.int32))   # wraps mod 2**32
    else:
        if a["acc"]:
            y = y + load64(ctx, "sram", a["dst"], rows, cols, a["pd"], D.F32)
        store64(ctx, "sram", a["dst"], a["pd"], D.F32, y)


def _dst_access(a, rows, cols):
    out = [tile("w", "sram", "dst", a["dst"], rows, cols, a["pd"], ACC[a["dt"]])]
    if a["acc"]:
        out.append(tile("r", "sram", "dst", a["dst"], rows, cols, a["pd"], ACC[a["dt"]]))
    return out


def spu_cycles(m, fmt: str, dt: int, macs: int, efficiency: float = 1.0) -> int:
    """spu.overhead + ceil(macs / (spu.macs_per_cycle[fmt][dt] * efficiency))."""
    return m["spu.overhead"] + cdiv(macs, m.spu_rate(fmt, dt) * efficiency)


# -- spu.mm: C[M,N] (+)= A[M,K] @ B[K,N]   (tb=1: B stored as [N,K], C = A @ B^T) ---------------
def mm_check(a, m):
    return first_error(_check_dts(a), positive(a, "m", "n", "k"))


def mm_access(a):
    dt = a["dt"]
    b = (tile("r", "sram", "b", a["b"], a["n"], a["k"], a["pb"], dt) if a["tb"]
         else tile("r", "sram", "b", a["b"], a["k"], a["n"], a["pb"], dt))
    return [tile("r", "sram", "a", a["a"], a["m"], a["k"], a["pa"], dt), b] + _dst_access(a, a["m"], a["n"])


def mm_cost(a, m):
    macs = a["m"] * a["n"] * a["k"]
    return Cost(spu_cycles(m, "dense", tdt(a), macs), sram_bytes(mm_access(a)), macs)


def mm_run(ctx, a):
    dt = a["dt"]
    A = load64(ctx, "sram", a["a"], a["m"], a["k"], a["pa"], dt)
    if a["tb"]:
        B = load64(ctx, "sram", a["b"], a["n"], a["k"], a["pb"], dt).T
    else:
        B = load64(ctx, "sram", a["b"], a["k"], a["n"], a["pb"], dt)
    _finish(ctx, a, A @ B, a["m"], a["n"])


# -- spu.nm: Y[T,O] (+)= X[T,K] @ W^T, W in N:M along K ---------------------------------------
def nm_groups(a) -> int:
    return cdiv(a["k"], a["m"])


def nm_check(a, m):
    err = first_error(_check_dts(a), positive(a, "t", "o", "k", "n", "m"))
    if err:
        return err
    if not a["n"] <= a["m"] <= MAX_M:
        return f"N:M needs 1 <= n <= m <= {MAX_M} (got n={a['n']}, m={a['m']})"
    return None


def nm_access(a):
    slots = a["o"] * nm_groups(a) * a["n"]
    return ([tile("r", "sram", "x", a["x"], a["t"], a["k"], a["px"], a["dt"]),
             vector("r", "sram", "val", a["val"], slots, a["dt"]),
             vector("r", "sram", "idx", a["idx"], slots, D.U8)]
            + _dst_access(a, a["t"], a["o"]))


def nm_cost(a, m):
    macs = a["t"] * a["o"] * nm_groups(a) * a["n"]
    return Cost(spu_cycles(m, "nm", tdt(a), macs), sram_bytes(nm_access(a)), macs)


def nm_run(ctx, a):
    t, o, k, n, mm = a["t"], a["o"], a["k"], a["n"], a["m"]
    groups = nm_groups(a)
    slots = groups * n
    vals = D.to_f64(load_vec(ctx, "sram", a["val"], o * slots, a["dt"]), a["dt"]).reshape(o, slots)
    offs = load_vec(ctx, "sram", a["idx"], o * slots, D.U8).astype(np.int64).reshape(o, groups, n)
    cols = (np.arange(groups, dtype=np.int64) * mm)[None, :, None] + offs
    bad = (offs >= mm) | (cols >= k)
    if bad.any():
        row, grp, slot = (int(v[0]) for v in np.nonzero(bad))
        ctx.fail(f"N:M offset {int(offs[row, grp, slot])} in row {row} group {grp} points outside "
                 f"its group (m={mm}) or past k={k}")
    cols = cols.reshape(o, slots)
    X = load64(ctx, "sram", a["x"], t, k, a["px"], a["dt"])
    y = np.empty((t, o), dtype=np.float64)
    step = max(1, _CHUNK // k)
    for o0 in range(0, o, step):                    # a loop over weight chunks, not elements
        o1 = min(o, o0 + step)
        lin = (np.arange(o1 - o0, dtype=np.int64)[:, None] * k + cols[o0:o1]).ravel()
        W = np.bincount(lin, weights=vals[o0:o1].ravel(), minlength=(o1 - o0) * k).reshape(o1 - o0, k)
        y[:, o0:o1] = X @ W.T
    _finish(ctx, a, y, t, o)


# -- spu.bsr: Y[T,O] (+)= X[T,K] @ W^T, W in BSR with r x c blocks ------------------------------
def bsr_check(a, m):
    err = first_error(_check_dts(a), positive(a, "t", "o", "k", "r", "c", "nnzb"),
                      dt_in(a, "cdt", BSR_INDEX_DTYPES, "BSR column indices"))
    if err:
        return err
    if a["r"] > MAX_BLOCK or a["c"] > MAX_BLOCK:
        return f"BSR block {a['r']}x{a['c']} larger than {MAX_BLOCK}x{MAX_BLOCK}"
    return None


def bsr_access(a):
    nbr = cdiv(a["o"], a["r"])
    return ([tile("r", "sram", "x", a["x"], a["t"], a["k"], a["px"], a["dt"]),
             vector("r", "sram", "val", a["val"], a["nnzb"] * a["r"] * a["c"], a["dt"]),
             vector("r", "sram", "col", a["col"], a["nnzb"], a["cdt"]),
             vector("r", "sram", "ptr", a["ptr"], nbr + 1, D.I32)]
            + _dst_access(a, a["t"], a["o"]))


def bsr_efficiency(m, r: int, c: int) -> float:
    """Blocks smaller than spu.bsr_full_rate_block elements leave MAC lanes idle."""
    return min(1.0, r * c / m["spu.bsr_full_rate_block"])


def bsr_cost(a, m):
    macs = a["t"] * a["nnzb"] * a["r"] * a["c"]
    cycles = spu_cycles(m, "bsr", tdt(a), macs, bsr_efficiency(m, a["r"], a["c"]))
    return Cost(cycles, sram_bytes(bsr_access(a)), macs)


def bsr_run(ctx, a):
    t, o, k, r, c, nnzb = a["t"], a["o"], a["k"], a["r"], a["c"], a["nnzb"]
    nbr, nbc = cdiv(o, r), cdiv(k, c)
    ptr = load_vec(ctx, "sram", a["ptr"], nbr + 1, D.I32).astype(np.int64)
    counts = np.diff(ptr)
    if ptr[0] != 0 or ptr[-1] != nnzb or (counts < 0).any():
        ctx.fail(f"BSR block pointers must rise from 0 to nnzb={nnzb} (got {int(ptr[0])}..{int(ptr[-1])}"
                 f"{', decreasing' if (counts < 0).any() else ''})")
    col = load_vec(ctx, "sram", a["col"], nnzb, a["cdt"]).astype(np.int64)
    if ((col < 0) | (col >= nbc)).any():
        bad = int(col[np.argmax((col < 0) | (col >= nbc))])
        ctx.fail(f"BSR block column {bad} out of range [0, {nbc})")
    vals = D.to_f64(load_vec(ctx, "sram", a["val"], nnzb * r * c, a["dt"]), a["dt"]).reshape(nnzb, r, c)
    block_row = np.repeat(np.arange(nbr, dtype=np.int64), counts)
    X = load64(ctx, "sram", a["x"], t, k, a["px"], a["dt"])
    y = np.empty((t, o), dtype=np.float64)
    width = nbc * c
    step = max(1, _CHUNK // (r * width))
    for br0 in range(0, nbr, step):                 # a loop over block-row chunks, not elements
        br1 = min(nbr, br0 + step)
        b0, b1 = int(ptr[br0]), int(ptr[br1])
        rows_idx = (block_row[b0:b1] - br0)[:, None, None] * r + np.arange(r)[None, :, None]
        cols_idx = col[b0:b1][:, None, None] * c + np.arange(c)[None, None, :]
        lin = np.broadcast_to(rows_idx * width + cols_idx, (b1 - b0, r, c)).ravel()
        W = np.bincount(lin, weights=vals[b0:b1].ravel(), minlength=(br1 - br0) * r * width)
        W = W.reshape((br1 - br0) * r, width)
        o0, o1 = br0 * r, min(o, br1 * r)
        y[:, o0:o1] = X @ W[: o1 - o0, :k].T       # padding lanes past o / k are ignored
    _finish(ctx, a, y, t, o)
