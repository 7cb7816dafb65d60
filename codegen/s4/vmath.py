"""Elementwise ops as VPU instruction sequences on fp32 SRAM tiles.

The VPU computes in float64 and rounds once to fp32 (docs/isa.md), and has add/sub/mul/div/max/min
with row/column/scalar broadcast, exp/erf/gelu/tanh/relu/sqrt/rsqrt/recip, an affine op with
immediates (axpb), fill and dtype conversion. Everything else is built from those, exactly:

- comparisons: step(d) = min(max(d * 2^149, 0), 1) is 1 for d > 0 and 0 for d <= 0 exactly (the
  difference of two distinct fp32 values is at least 2^-149); NaN propagates and becomes False when
  stored as bool (cvt maps NaN to 0), as numpy's comparisons give;
- Where(c, x, y) = max(min(x, M), min(y, -M)) with M = +inf where c else -inf: exact for every
  non-NaN x, y including infinities (two scalar constants whose difference is exact in fp32 take
  one axpb instead);
- floor = rne(x) - step(rne(x) - x) for |x| < 2^23 (rne via cvt to i32), x itself above;
- IsNaN through cvt's NaN -> 0; Sign = step(x) - step(-x).

Operands are (Region, mode) with mode full | row | col | scalar (the VPU's broadcast of `b`).
Bool values are fp32 0/1 inside SRAM. There is no log: Log, LogSoftmax and Pow with a non-constant
exponent have no lowering (TargetError).
"""

from __future__ import annotations

import math

import numpy as np

from s4c.errors import TargetError

from .stream import Region

TWO100 = 2.0 ** 100
TWO49 = 2.0 ** 49
F32_MAX = float(np.finfo(np.float32).max)


class VM:
    """Temporaries and scalar constants for one [rows, cols] block on one core."""

    def __init__(self, L, core: int, rows: int, cols: int):
        self.L, self.core, self.rows, self.cols = L, core, rows, cols
        self.em = L.em
        self.temps: list[Region] = []
        self._scalars: dict[float, Region] = {}

    def tmp(self) -> Region:
        t = self.L.scratch(self.core).tile(self.rows, self.cols, "f32")
        self.temps.append(t)
        return t

    def scalar(self, value: float) -> tuple[Region, str]:
        if value not in self._scalars:
            t = self.L.const_vector(self.core, np.array([value], np.float32))
            self.temps.append(t)
            self._scalars[value] = t
        return self._scalars[value], "scalar"

    def free(self, keep: Region | None = None) -> None:
        for t in self.temps:
            if keep is None or t.addr != keep.addr:
                self.L.scratch(self.core).release(t)
        self.temps = [t for t in self.temps if keep is not None and t.addr == keep.addr]

    # -- primitives ------------------------------------------------------------------------------
    def full(self, x) -> Region:
        """x as a full tile (broadcast operands materialised: 0 + x)."""
        r, mode = x[0], x[1]
        if mode == "full":
            return r
        t = self.tmp()
        self.em.fill(self.core, t, 0.0)
        self.em.vbin(self.core, "add", t, t, r, bcast=mode)
        return t

    def bin(self, op: str, a, b, dst: Region | None = None) -> Region:
        commutative = op in ("add", "mul", "max", "min")
        if a[1] != "full" and b[1] == "full" and commutative:
            a, b = b, a
        af = self.full(a)
        dst = dst or self.tmp()
        self.em.vbin(self.core, op, dst, af, b[0], bcast=b[1])
        return dst

    def un(self, op: str, x, dst: Region | None = None, **extra) -> Region:
        xf = self.full(x)
        dst = dst or self.tmp()
        self.em.vun(self.core, op, dst, xf, **extra)
        return dst

    def axpb(self, x, alpha: float, beta: float = 0.0, dst: Region | None = None) -> Region:
        xf = self.full(x)
        dst = dst or self.tmp()
        self.em.axpb(self.core, dst, xf, alpha, beta)
        return dst

    def step(self, d: Region, dst: Region | None = None) -> Region:
        """1 where d > 0, else 0 (NaN stays NaN)."""
        t = self.axpb((d, "full"), TWO100, 0.0, dst)
        self.em.axpb(self.core, t, t, TWO49, 0.0)
        self.em.vun(self.core, "relu", t, t)
        self.em.vbin(self.core, "min", t, t, self.scalar(1.0)[0], bcast="scalar")
        return t

    def sub(self, a, b) -> Region:
        return self.bin("sub", a, b)

    def ne0(self, x) -> Region:
        """1 where x != 0 (|x| > 0)."""
        xf = self.full(x)
        n = self.axpb((xf, "full"), -1.0)
        a = self.bin("max", (xf, "full"), (n, "full"))
        return self.step(a, dst=a)

    def select(self, c, x, y) -> Region:
        """c ? x : y for c in {0, 1}."""
        xs, ys = _const_scalar(self, x), _const_scalar(self, y)
        if xs is not None and ys is not None:
            alpha = np.float32(xs) - np.float32(ys)
            if (np.isfinite(alpha) and float(alpha) == float(xs) - float(ys)
                    and float(np.float32(float(alpha) + float(ys))) == float(xs)):
                return self.axpb(c, float(alpha), float(ys))
        cf = self.full(c)
        mask = self.axpb((cf, "full"), 2.0, -1.0)
        self.em.axpb(self.core, mask, mask, math.inf, 0.0)                       # +-inf
        neg = self.axpb((mask, "full"), -1.0, 0.0)
        xm = self.bin("min", (mask, "full"), x)
        ym = self.bin("min", (neg, "full"), y)
        self.em.vbin(self.core, "max", xm, xm, ym)
        return xm

    def floor(self, x) -> Region:
        xf = self.full(x)
        r = self.tmp()
        ri = self.L.scratch(self.core).tile(self.rows, self.cols, "i32")
        self.temps.append(ri)
        self.em.cvt(self.core, ri, xf)
        self.em.cvt(self.core, r, ri)
        d = self.sub((r, "full"), (xf, "full"))
        s = self.step(d, dst=d)
        self.em.vbin(self.core, "sub", r, r, s)
        # |x| >= 2^23 (or inf/NaN): x is its own floor
        n = self.axpb((xf, "full"), -1.0)
        a = self.bin("max", (xf, "full"), (n, "full"), dst=n)
        self.em.axpb(self.core, a, a, 1.0, -(2.0 ** 23) + 0.5)
        big = self.step(a, dst=a)
        return self.select((big, "full"), (xf, "full"), (r, "full"))

    def isnan(self, x) -> Region:
        xf = self.full(x)
        t = self.bin("max", (xf, "full"), self.scalar(-1.0))
        self.em.vbin(self.core, "min", t, t, self.scalar(1.0)[0], bcast="scalar")
        self.em.axpb(self.core, t, t, 0.0, 1.0)                                  # 1, or NaN
        ti = self.L.scratch(self.core).tile(self.rows, self.cols, "i32")
        self.temps.append(ti)
        self.em.cvt(self.core, ti, t)                                            # NaN -> 0
        self.em.cvt(self.core, t, ti)
        self.em.axpb(self.core, t, t, -1.0, 1.0)
        return t


def _const_scalar(vm: VM, x):
    """The value of a scalar operand that is a compile-time constant (else None)."""
    return x[2] if x is not None and len(x) > 2 else None


def pow_const(vm: VM, x, e: float) -> Region:
    if e == 1.0:
        return vm.full(x)
    if e == 2.0:
        return vm.bin("mul", x, x)
    if e == 3.0:
        sq = vm.bin("mul", x, x)
        return vm.bin("mul", (sq, "full"), x)
    if e == 0.5:
        return vm.un("sqrt", x)
    if e == -0.5:
        return vm.un("rsqrt", x)
    if e == -1.0:
        return vm.un("recip", x)
    if e == 0.0:
        t = vm.tmp()
        vm.em.fill(vm.core, t, 1.0)
        return t
    if e == 4.0:
        sq = vm.bin("mul", x, x)
        return vm.bin("mul", (sq, "full"), (sq, "full"))
    raise TargetError(f"Pow with exponent {e}: the S4 VPU has no log/pow (constant exponents "
                      f"0, +-0.5, +-1, 2, 3, 4 only)")


POW_EXPONENTS = (0.0, 0.5, -0.5, 1.0, -1.0, 2.0, 3.0, 4.0)


def compute(vm: VM, op, operands: list, out_irdt: str) -> Region:
    """The op on operand tiles [(Region, mode[, const scalar])...] -> a full fp32 tile."""
    name = op.op
    a = operands[0]
    b = operands[1] if len(operands) > 1 else None
    em, core = vm.em, vm.core
    if name in ("Add", "Sub", "Mul"):
        return vm.bin(name.lower(), a, b)
    if name == "Div":
        q = vm.bin("div", a, b)
        if out_irdt not in ("f32", "f16", "f64"):           # ONNX integer Div truncates toward zero
            return trunc(vm, (q, "full"))
        return q
    if name in ("Max", "Min", "Sum"):
        prim = {"Max": "max", "Min": "min", "Sum": "add"}[name]
        if len(operands) == 1:
            return vm.full(a)
        acc = vm.bin(prim, a, operands[1])
        for x in operands[2:]:
            em.vbin(core, prim, acc, acc, x[0], bcast=x[1])
        return acc
    if name == "Pow":
        e = _const_scalar(vm, b)
        return pow_const(vm, a, float(e))
    if name in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
        if name == "Equal":
            d = vm.sub(a, b)
            t = vm.ne0((d, "full"))
            em.axpb(core, t, t, -1.0, 1.0)
            return t
        if name in ("Greater", "LessOrEqual"):
            d = vm.sub(a, b)
        else:
            d = vm.sub(b, a)
        t = vm.step(d, dst=d)
        if name in ("LessOrEqual", "GreaterOrEqual"):
            em.axpb(core, t, t, -1.0, 1.0)
        return t
    if name == "And":
        return vm.bin("mul", a, b)
    if name == "Or":
        return vm.bin("max", a, b)
    if name == "Xor":
        d = vm.sub(a, b)
        em.vbin(core, "mul", d, d, d)
        return d
    if name == "Not":
        return vm.axpb(a, -1.0, 1.0)
    if name == "Where":
        return vm.select(a, operands[1], operands[2])
    if name == "Clip":
        t = vm.full(a)
        out = None
        if len(operands) > 1 and operands[1] is not None:
            out = vm.bin("max", (t, "full"), operands[1])
        if len(operands) > 2 and operands[2] is not None:
            out = vm.bin("min", (out if out is not None else t, "full"), operands[2], dst=out)
        return out if out is not None else vm.un("copy", (t, "full"))
    unary = {"Relu": "relu", "Exp": "exp", "Erf": "erf", "Tanh": "tanh", "Sqrt": "sqrt",
             "Reciprocal": "recip", "Identity": "copy", "Dropout": "copy"}
    if name in unary:
        return vm.un(unary[name], a)
    if name == "Gelu":
        return vm.un("gelu_tanh" if op.attrs.get("approximate", "none") == "tanh" else "gelu", a)
    if name == "Neg":
        return vm.axpb(a, -1.0)
    if name == "Abs":
        n = vm.axpb(a, -1.0)
        return vm.bin("max", (vm.full(a), "full"), (n, "full"), dst=n)
    if name == "Sigmoid":
        t = vm.axpb(a, -1.0)
        em.vun(core, "exp", t, t)
        em.axpb(core, t, t, 1.0, 1.0)
        em.vun(core, "recip", t, t)
        return t
    if name == "Sign":
        p = vm.step(vm.un("copy", a))
        n = vm.axpb(a, -1.0)
        vm.step(n, dst=n)
        em.vbin(core, "sub", p, p, n)
        return p
    if name == "Floor":
        return vm.floor(a)
    if name == "Ceil":
        n = vm.axpb(a, -1.0)
        f = vm.floor((n, "full"))
        em.axpb(core, f, f, -1.0, 0.0)
        return f
    if name == "IsNaN":
        return vm.isnan(a)
    if name in ("Cast", "CastLike"):
        return cast(vm, op, a, out_irdt)
    if name == "DequantizeLinear":
        t = vm.full(a)
        if len(operands) > 2 and operands[2] is not None:
            t = vm.bin("sub", (t, "full"), operands[2])
        return vm.bin("mul", (t, "full"), b)
    raise TargetError(f"S4 lowering: no VPU sequence for {name}")


def cast(vm: VM, op, a, out_irdt: str) -> Region:
    src = op.inputs[0].dtype
    floats = ("f32", "f16", "f64")
    if out_irdt == "bool":
        if src == "bool":
            return vm.un("copy", a)
        return vm.ne0(a)
    if out_irdt in floats or src in ("bool",) or src not in floats:
        return vm.un("copy", a)
    return trunc(vm, a)


def trunc(vm: VM, a) -> Region:
    """Round toward zero (float -> integer casts, integer Div); the store's cvt then saturates."""
    x = vm.full(a)
    neg = vm.axpb((x, "full"), -1.0)
    fl = vm.floor((x, "full"))
    fn = vm.floor((neg, "full"))
    vm.em.axpb(vm.core, fn, fn, -1.0, 0.0)                  # ceil(x)
    s = vm.step(vm.un("copy", (x, "full")))               # x > 0
    return vm.select((s, "full"), (fl, "full"), (fn, "full"))
