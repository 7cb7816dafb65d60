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
