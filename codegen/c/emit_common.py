"""Shared pieces of the C emission table: the registry every emit_*.py module adds to, and the
helpers their emitters share.

    registry         EMITTERS (op name -> emitter), @emits, unsupported() (the TargetError), attrs()
    C expressions    load / store (f16 and bool conversions), lit, fsuffix, product_sum, plus
    loops            elementwise() (a strided loop nest over a result with numpy broadcasting) and
                     its layout rule ew_layout()
    operands         expand_to (broadcast, folded at compile time for constants), as_dtype,
                     feature_vector (an f32 per-feature vector for a fused kernel)
    sizes            size_of, c_int (checked against the kernels' int range)

Imports nothing from the other emit modules (they all import from here).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from s4c import ops as registry
from s4c.codegen.c import cnames
from s4c.codegen.c.cnames import COMPUTE, int_literal, scalar_literal
from s4c.codegen.c.loops import Access, broadcast_strides, nest, render
from s4c.codegen.c.program import CProgram, Tensor
from s4c.errors import TargetError
from s4c.ir import Op, Value

EMITTERS: dict[str, Callable[[CProgram, Op], None]] = {}


def emits(*names: str):
    def wrap(fn):
        for n in names:
            EMITTERS[n] = fn
        return fn
    return wrap


def unsupported(op: Op, why: str) -> TargetError:
    return TargetError(f"C backend: {why}: {op.describe()}")


def attrs(op: Op) -> dict:
    return registry.REGISTRY[op.op].with_defaults(op.attrs)


# -- shared helpers ---------------------------------------------------------------------------------

def load(lw: CProgram, t: Tensor, expr: str) -> str:
    if t.dtype == "f16":
        lw.uses_extra = True
        return f"s4cx_h2f({expr})"
    return expr


def store(lw: CProgram, dtype: str, expr: str) -> str:
    if dtype == "f16":
        lw.uses_extra = True
        return f"s4cx_d2h({expr})"
    if dtype == "bool":  # every bool-valued expression here is 0 or 1 already
        return f"(uint8_t)({expr})"
    return f"({cnames.ctype(dtype)})({expr})"


def lit(value, dtype: str) -> str:
    return scalar_literal(value, dtype)


def fsuffix(dtype: str) -> str:
    """libm suffix for the compute type of a float dtype ("f" for float, "" for double)."""
    return "f" if COMPUTE[dtype] == "float" else ""


def ew_layout(shape, ins: list[Tensor]) -> int | None:
    """Elementwise result layout: feature-major when every full-shape operand is (at one split)."""
    full = [t for t in ins if t.shape == tuple(shape)]
    fms = {t.fm for t in full}
    if full and len(fms) == 1 and None not in fms:
        return fms.pop()
    return None


def elementwise(lw: CProgram, op: Op, ins: list[Tensor], value: Value, expr: Callable[[list[str]], str] | None,
                accesses: list[Access] | None = None, fm="auto", kind: str | None = None,
                keep: tuple[int, ...] = (), body_fn=None) -> Tensor:
    """y = expr(operands) over `value`'s shape with numpy broadcasting (`expr` None: a plain copy of
    the single operand, e.g. Transpose / Slice / Expand through its access strides)."""
    shape = value.shape
    y = lw.out(value, ew_layout(shape, ins) if fm == "auto" else fm, ins)
    if y.size == 0:
        return y
    acc = accesses or [Access(f"x{i}", broadcast_strides(t.shape, t.strides, shape)) for i, t in enumerate(ins)]
    n = nest(shape, [Access("y0", y.strides)] + acc, parallel=True, keep=keep)
    if expr is None and body_fn is None:
        lw.generic(kind or op.op, ins, [y], render(n, [f"y0[{n.index[0]}] = x0[{n.index[1]}];"]))
        return y
    loads = [load(lw, t, f"x{i}[{n.index[i + 1]}]") for i, t in enumerate(ins)]
    e = expr(loads) if body_fn is None else body_fn(loads, n)
    lw.generic(kind or op.op, ins, [y], render(n, [f"y0[{n.index[0]}] = {store(lw, y.dtype, e)};"]))
    return y


def expand_to(lw: CProgram, value: Value, shape, name: str) -> Tensor:
    """`value` broadcast to `shape`, contiguous token-major (built at compile time for constants)."""
    shape = tuple(shape)
    if value.shape == shape:
        return lw.get(value, None)
    if value.is_constant:
        data = np.ascontiguousarray(np.broadcast_to(np.asarray(value.data), shape))
        if data.dtype == np.bool_:
            data = data.astype(np.uint8)
        t = lw.weight(data, f"{value.name} (broadcast)", key=("expand", id(value), shape))
        t.dtype = value.dtype
        return t
    src = lw.home(value)
    y = lw.temp(value.dtype, shape, None, [src], f"{value.name} (broadcast)")
    n = nest(shape, [Access("y0", y.strides), Access("x0", broadcast_strides(src.shape, src.strides, shape))])
    lw.generic(f"broadcast_{name}", [src], [y], render(n, [f"y0[{n.index[0]}] = x0[{n.index[1]}];"]))
    return y


def as_dtype(lw: CProgram, t: Tensor, dtype: str, name: str) -> Tensor:
    if t.dtype == dtype:
        return t
    y = lw.temp(dtype, t.shape, t.fm, [t], f"{t.label} ({dtype})")
    n = nest(t.shape, [Access("y0", y.strides), Access("x0", t.strides)])
    lw.generic(f"cast_{name}", [t], [y], render(n, [f"y0[{n.index[0]}] = {store(lw, dtype, load(lw, t, 'x0[' + n.index[1] + ']'))};"]))
    return y


def product_sum(terms: list[tuple[str, int]]) -> str:
    """sum(var * n) as C, skipping zero factors and writing 'var' for a factor 1."""
    parts = [v if n == 1 else f"{v} * {int_literal(n)}" for v, n in terms if n]
    return " + ".join(parts) if parts else "0"


def plus(a: str, b: str) -> str:
    """a + b for C index expressions, dropping a literal 0."""
    if a == "0":
        return b
    if b == "0":
        return a
    return f"{a} + {b}"


def size_of(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def c_int(n: int, what: str, op: Op) -> int:
    if n > 2 ** 31 - 1:
        raise unsupported(op, f"{what} {n} exceeds the kernels' int range")
    return int(n)


def feature_vector(lw: CProgram, v: Value, shape, what: str) -> Tensor:
    t = expand_to(lw, v, shape, what)
    if t.dtype != "f32":
        raise unsupported(lw.op, f"{what} must be f32")
    return t
