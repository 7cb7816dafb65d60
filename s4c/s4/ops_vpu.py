"""VPU opcodes: elementwise (binary with broadcast, unary, affine, fill), row ops (softmax,
LayerNorm, reductions), layout (transpose, copy) and dtype conversion.

All tiles are [rows, cols] row-major with a row pitch. Floating ops compute in float64 and round
once to `dt` (so f32/bf16 + - * / sqrt are the correctly rounded IEEE results; transcendental
functions are float64-accurate before that rounding). Each factory below returns the four
functions isa.py's table points to: the semantics and the cost formula sit side by side.
Cost of every VPU op: vpu.overhead + vpu.passes[op] * ceil(rows * cols / vpu.lanes[tdt]) -- the
VPU streams the tile's elements through its lanes; row boundaries cost nothing.
"""

from __future__ import annotations

import numpy as np

from s4c.s4 import dtypes as D
from s4c.s4.ops_common import (Cost, cdiv, dt_in, first_error, load, load64, load_vec, positive,
                               sram_bytes, store, store64, tdt, tile, vector)

ALL_DTYPES = tuple(D.NAMES)
BCAST_FULL, BCAST_ROW, BCAST_COL, BCAST_SCALAR = 0, 1, 2, 3
BCAST_NAMES = ("full", "row", "col", "scalar")
_SQRT2 = np.sqrt(2.0)
_SQRT_PI = np.sqrt(np.pi)


def vpu_cycles(m, op: str, rows: int, cols: int, dt: int) -> int:
    return m["vpu.overhead"] + m.vpu_passes(op) * cdiv(rows * cols, m.vpu_lanes(dt))


def _dts(a, allowed, key="dt"):
    return first_error(dt_in(a, key, allowed, "this VPU op"),
                       None if a["tdt"] == 0 else dt_in(a, "tdt", ALL_DTYPES, "the timing model"))


def _family(op, check, access, run, cols_key="cols"):
    def cost(a, m):
        return Cost(vpu_cycles(m, op, a["rows"], a[cols_key], tdt(a)), sram_bytes(access(a)),
                    m.vpu_passes(op) * a["rows"] * a[cols_key])
    return {"check": check, "access": access, "cost": cost, "run": run}


# -- special functions (vectorised, float64-accurate) -------------------------------------------
def _erfc_cf(x):
    """erfc(x) for x >= 3 by its continued fraction (60 terms, evaluated backwards)."""
    f = x.copy()
    for n in range(60, 0, -1):
        f = x + (n / 2.0) / f
    return np.exp(-x * x) / (_SQRT_PI * f)


def _erf_series(x):
    """erf(x) for |x| <= 3: 2/sqrt(pi) e^-x^2 sum 2^n x^(2n+1) / (2n+1)!!  (positive terms)."""
    two_x2 = 2.0 * x * x
    term = x.copy()
    total = x.copy()
    for n in range(1, 64):
        term = term * two_x2 / (2 * n + 1)
        total = total + term
    return 2.0 / _SQRT_PI * np.exp(-x * x) * total


def erf(x):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    small = np.abs(x) <= 3.0
    out[small] = _erf_series(x[small])
    big = ~small
    xb = x[big]
    out[big] = np.sign(xb) * (1.0 - _erfc_cf(np.abs(xb)))
    return out


def gelu(x):
    """0.5 x (1 + erf(x / sqrt 2)); 1 + erf(z) taken as erfc(-z) for z < -3 (no cancellation)."""
    x = np.asarray(x, dtype=np.float64)
    z = x / _SQRT2
    one_plus = np.empty_like(x)
    low = z < -3.0
    one_plus[low] = _erfc_cf(-z[low])
    one_plus[~low] = 1.0 + erf(z[~low])
    return np.where(x == -np.inf, 0.0, 0.5 * x * one_plus)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


# -- binary elementwise: dst = a OP b, b broadcast per `bcast` ------------------------------------
def _b_access(a):
    dt = a["dt"]
    mode = a["bcast"]
    if mode == BCAST_FULL:
        return tile("r", "sram", "b", a["b"], a["rows"], a["cols"], a["pb"], dt)
    n = {BCAST_ROW: a["cols"], BCAST_COL: a["rows"], BCAST_SCALAR: 1}[mode]
    return vector("r", "sram", "b", a["b"], n, dt)


def binary(op, fn):
    def check(a, m):
        err = first_error(_dts(a, D.FLOATS), positive(a, "rows", "cols"))
        if err:
            return err
        if a["bcast"] > BCAST_SCALAR:
            return f"bcast={a['bcast']} unknown (0 full, 1 row, 2 col, 3 scalar)"
        if a["bcast"] != BCAST_FULL and a["pb"] != 0:
            return "pb must be 0 when b is broadcast"
        return None

    def access(a):
        return [tile("r", "sram", "a", a["a"], a["rows"], a["cols"], a["pa"], a["dt"]), _b_access(a),
                tile("w", "sram", "dst", a["dst"], a["rows"], a["cols"], a["pd"], a["dt"])]

    def run(ctx, a):
        dt, rows, cols = a["dt"], a["rows"], a["cols"]
        x = load64(ctx, "sram", a["a"], rows, cols, a["pa"], dt)
        mode = a["bcast"]
        if mode == BCAST_FULL:
            y = load64(ctx, "sram", a["b"], rows, cols, a["pb"], dt)
        else:
            n = {BCAST_ROW: cols, BCAST_COL: rows, BCAST_SCALAR: 1}[mode]
            v = D.to_f64(load_vec(ctx, "sram", a["b"], n, dt), dt)
            y = v[:, None] if mode == BCAST_COL else v[None, :]
        store64(ctx, "sram", a["dst"], a["pd"], dt, fn(x, y))

    return _family(op, check, access, run)


# -- unary elementwise: dst = f(src) ------------------------------------------------------------
def _unary_access(a):
    return [tile("r", "sram", "src", a["src"], a["rows"], a["cols"], a["ps"], a["dt"]),
            tile("w", "sram", "dst", a["dst"], a["rows"], a["cols"], a["pd"], a["dt"])]


def unary(op, fn):
    def check(a, m):
        return first_error(_dts(a, D.FLOATS), positive(a, "rows", "cols"))

    def run(ctx, a):
        x = load64(ctx, "sram", a["src"], a["rows"], a["cols"], a["ps"], a["dt"])
        store64(ctx, "sram", a["dst"], a["pd"], a["dt"], fn(x))

    return _family(op, check, _unary_access, run)


def copy():
    def check(a, m):
        return first_error(_dts(a, ALL_DTYPES), positive(a, "rows", "cols"))

    def run(ctx, a):
        nb = a["cols"] * D.SIZE[a["dt"]]
        src = np.array(ctx.view("sram", a["src"], a["rows"], nb, a["ps"]))
        ctx.view("sram", a["dst"], a["rows"], nb, a["pd"])[...] = src

    return _family("copy", check, _unary_access, run)


def axpb():
    def check(a, m):
        return first_error(_dts(a, D.FLOATS), positive(a, "rows", "cols"))

    def run(ctx, a):
        x = load64(ctx, "sram", a["src"], a["rows"], a["cols"], a["ps"], a["dt"])
        store64(ctx, "sram", a["dst"], a["pd"], a["dt"], a["alpha"] * x + a["beta"])

    return _family("axpb", check, _unary_access, run)


def fill():
    def check(a, m):
        return first_error(_dts(a, ALL_DTYPES), positive(a, "rows", "cols"))

    def access(a):
        return [tile("w", "sram", "dst", a["dst"], a["rows"], a["cols"], a["pd"], a["dt"])]

    def run(ctx, a):
        value = D.from_f64(np.full((a["rows"], a["cols"]), a["value"]), a["dt"])
        store(ctx, "sram", a["dst"], a["pd"], a["dt"], value)

    return _family("fill", check, access, run)


# -- row ops ------------------------------------------------------------------------------------
def softmax():
    def check(a, m):
        return first_error(_dts(a, D.FLOATS), positive(a, "rows", "cols"))

    def run(ctx, a):
        x = load64(ctx, "sram", a["src"], a["rows"], a["cols"], a["ps"], a["dt"]) * a["scale"]
        e = np.exp(x - x.max(axis=1, keepdims=True))
        store64(ctx, "sram", a["dst"], a["pd"], a["dt"], e / e.sum(axis=1, keepdims=True))

    return _family("softmax", check, _unary_access, run)


def layernorm():
    def check(a, m):
        err = first_error(_dts(a, D.FLOATS), positive(a, "rows", "cols"))
        if not err and a["eps"] < 0:
            return "eps must be >= 0"
        return err

    def access(a):
        return _unary_access(a) + [vector("r", "sram", "gamma", a["gamma"], a["cols"], a["dt"]),
                                   vector("r", "sram", "beta", a["beta"], a["cols"], a["dt"])]

    def run(ctx, a):
        dt, cols = a["dt"], a["cols"]
        x = load64(ctx, "sram", a["src"], a["rows"], cols, a["ps"], dt)
        gamma = D.to_f64(load_vec(ctx, "sram", a["gamma"], cols, dt), dt)
        beta = D.to_f64(load_vec(ctx, "sram", a["beta"], cols, dt), dt)
        centred = x - x.mean(axis=1, keepdims=True)
        var = (centred * centred).mean(axis=1, keepdims=True)
        store64(ctx, "sram", a["dst"], a["pd"], dt, centred / np.sqrt(var + a["eps"]) * gamma + beta)

    return _family("layernorm", check, access, run)


def reduce(op, fn):
    def check(a, m):
        return first_error(_dts(a, D.FLOATS), positive(a, "rows", "cols"))

    def access(a):
        return [tile("r", "sram", "src", a["src"], a["rows"], a["cols"], a["ps"], a["dt"]),
                vector("w", "sram", "dst", a["dst"], a["rows"], a["dt"])]

    def run(ctx, a):
        x = load64(ctx, "sram", a["src"], a["rows"], a["cols"], a["ps"], a["dt"])
        store64(ctx, "sram", a["dst"], 0, a["dt"], fn(x, axis=1)[None, :])

    return _family(op, check, access, run)


# -- layout and conversion ----------------------------------------------------------------------
def trans():
    def check(a, m):
        return first_error(_dts(a, ALL_DTYPES), positive(a, "rows", "cols"))

    def access(a):
        return [tile("r", "sram", "src", a["src"], a["rows"], a["cols"], a["ps"], a["dt"]),
                tile("w", "sram", "dst", a["dst"], a["cols"], a["rows"], a["pd"], a["dt"])]

    def run(ctx, a):
        x = load(ctx, "sram", a["src"], a["rows"], a["cols"], a["ps"], a["dt"])
        store(ctx, "sram", a["dst"], a["pd"], a["dt"], np.ascontiguousarray(x.T))

    return _family("trans", check, access, run)


def cvt():
    def check(a, m):
        return first_error(_dts(a, ALL_DTYPES), dt_in(a, "sdt", ALL_DTYPES, "vpu.cvt"),
                           positive(a, "rows", "cols"))

    def access(a):
        return [tile("r", "sram", "src", a["src"], a["rows"], a["cols"], a["ps"], a["sdt"]),
                tile("w", "sram", "dst", a["dst"], a["rows"], a["cols"], a["pd"], a["dt"])]

    def run(ctx, a):
        x = load64(ctx, "sram", a["src"], a["rows"], a["cols"], a["ps"], a["sdt"])
        store64(ctx, "sram", a["dst"], a["pd"], a["dt"], x * a["scale"])

    return _family("cvt", check, access, run)


# -- int8 quantise / dequantise epilogue ----------------------------------------------------------
QMAX = 127                                          # vpu.quant saturates symmetrically to [-QMAX, QMAX]
ACTIVATIONS = ("none", "gelu", "gelu_tanh", "relu")  # vpu.dequant's `act` codes 0..3
_ACT_FN = {1: gelu, 2: gelu_tanh, 3: lambda x: np.where(x > 0, x, 0.0 * np.clip(x, -1.0, 0.0))}


def _rf32(x: np.ndarray) -> np.ndarray:
    """float64 -> the nearest f32 (ties to even), back as float64: one IEEE binary32 rounding."""
    with np.errstate(over="ignore"):
        return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


def fused_cost(a, m, stages: tuple, access) -> Cost:
    """A fused epilogue streams its tile through the VPU once, its stages pipelined one after the
    other: it costs the passes of its slowest stage (the activation's, when there is one), not their
    sum. `stages`: the vpu.passes keys of the arithmetic stages; a["act"] adds the activation's."""
    stages = stages + ((ACTIVATIONS[a["act"]],) if a["act"] else ())
    p = max(m.vpu_passes(s) for s in stages)
    n = a["rows"] * a["cols"]
    return Cost(m["vpu.overhead"] + p * cdiv(n, m.vpu_lanes(tdt(a))), sram_bytes(access), p * n)


def quant():
    """vpu.quant: dst i8 = saturate[-127,127](round_half_even(f32(src / s))), s per row or scalar."""

    def check(a, m):
        err = first_error(_dts(a, D.FLOATS), positive(a, "rows", "cols"))
        if err:
            return err
        if a["sbc"] not in (BCAST_COL, BCAST_SCALAR):
            return f"sbc={a['sbc']}: the scale is per row (2 col) or one scalar (3 scalar)"
        return None

    def access(a):
        n = a["rows"] if a["sbc"] == BCAST_COL else 1
        return [tile("r", "sram", "src", a["src"], a["rows"], a["cols"], a["ps"], a["dt"]),
                vector("r", "sram", "s", a["s"], n, D.F32),
                tile("w", "sram", "dst", a["dst"], a["rows"], a["cols"], a["pd"], D.I8)]

    def cost(a, m):
        passes = m.vpu_passes("div") + m.vpu_passes("cvt")
        n = a["rows"] * a["cols"]
        return Cost(m["vpu.overhead"] + passes * cdiv(n, m.vpu_lanes(tdt(a))), sram_bytes(access(a)), passes * n)

    def run(ctx, a):
        rows, cols = a["rows"], a["cols"]
        x = load64(ctx, "sram", a["src"], rows, cols, a["ps"], a["dt"])
        n = rows if a["sbc"] == BCAST_COL else 1
        s = D.to_f64(load_vec(ctx, "sram", a["s"], n, D.F32), D.F32)
        s = s[:, None] if a["sbc"] == BCAST_COL else s[None, :]
        with np.errstate(all="ignore"):
            q = _rf32(x / s)                    # the IEEE f32 quotient (float64 division, rounded once)
        store64(ctx, "sram", a["dst"], a["pd"], D.I8, np.clip(q, -QMAX, QMAX))   # NaN stays NaN -> 0

    return {"check": check, "access": access, "cost": cost, "run": run}


def _epilogue_error(a, *checks):
    """The first failing operand check of a GEMM epilogue (vpu.dequant, vpu.epilogue), then its act code."""
    err = first_error(*checks)
    if err:
        return err
    if a["act"] >= len(ACTIVATIONS):
        return f"act={a['act']} unknown (0 none, 1 gelu, 2 gelu_tanh, 3 relu)"
    return None


def _bias_act_store(ctx, a, y) -> None:
    """A GEMM epilogue's tail (vpu.dequant, vpu.epilogue): + bias[j] (hb=1), the activation, store in dt."""
    if a["hb"]:
        y = _rf32(y + D.to_f64(load_vec(ctx, "sram", a["bias"], a["cols"], D.F32), D.F32)[None, :])
    if a["act"]:
        y = _ACT_FN[a["act"]](y)
    store64(ctx, "sram", a["dst"], a["pd"], a["dt"], y)


def dequant():
    """vpu.dequant: the int8 GEMM epilogue, i32 accumulator -> dt = act(f32(acc) * scale + bias)."""

    def check(a, m):
        return _epilogue_error(a, _dts(a, D.FLOATS), positive(a, "rows", "cols"))

    def access(a):
        out = [tile("r", "sram", "src", a["src"], a["rows"], a["cols"], a["ps"], D.I32),
               vector("r", "sram", "cs", a["cs"], a["cols"], D.F32)]
        if a["rsc"]:
            out.append(vector("r", "sram", "rs", a["rs"], a["rows"], D.F32))
        if a["hb"]:
            out.append(vector("r", "sram", "bias", a["bias"], a["cols"], D.F32))
        out.append(tile("w", "sram", "dst", a["dst"], a["rows"], a["cols"], a["pd"], a["dt"]))
        return out

    def cost(a, m):
        return fused_cost(a, m, ("cvt", "mul") + (("add",) if a["hb"] else ()), access(a))

    def run(ctx, a):
        rows, cols = a["rows"], a["cols"]
        acc = load(ctx, "sram", a["src"], rows, cols, a["ps"], D.I32).astype(np.float64)
        cs = D.to_f64(load_vec(ctx, "sram", a["cs"], cols, D.F32), D.F32)[None, :]
        if a["rsc"]:
            rs = D.to_f64(load_vec(ctx, "sram", a["rs"], rows, D.F32), D.F32)[:, None]
            cs = _rf32(rs * cs)
        with np.errstate(all="ignore"):
            _bias_act_store(ctx, a, _rf32(_rf32(acc) * cs))

    return {"check": check, "access": access, "cost": cost, "run": run}


def epilogue():
    """vpu.epilogue: the float GEMM epilogue, dst = act(f32(src + bias[j])) in one pass (f32 / bf16)."""

    def check(a, m):
        return _epilogue_error(a, _dts(a, D.FLOATS), dt_in(a, "sdt", D.FLOATS, "vpu.epilogue's source"),
                               positive(a, "rows", "cols"))

    def access(a):
        out = [tile("r", "sram", "src", a["src"], a["rows"], a["cols"], a["ps"], a["sdt"])]
        if a["hb"]:
            out.append(vector("r", "sram", "bias", a["bias"], a["cols"], D.F32))
        out.append(tile("w", "sram", "dst", a["dst"], a["rows"], a["cols"], a["pd"], a["dt"]))
        return out

    def cost(a, m):
        # "cvt": the dequantise stage the MixInt8bf16 timing charges (tdt bf16) rides in the same pass
        return fused_cost(a, m, ("cvt",) + (("add",) if a["hb"] else ()), access(a))

    def run(ctx, a):
        rows, cols = a["rows"], a["cols"]
        with np.errstate(all="ignore"):
            _bias_act_store(ctx, a, load64(ctx, "sram", a["src"], rows, cols, a["ps"], a["sdt"]))

    return {"check": check, "access": access, "cost": cost, "run": run}
