"""Emitters for elementwise ops: generated strided loops over any layout, with numpy broadcasting.

    unary / binary ops (ops.elementwise UNARY, BINARY), Max / Min / Sum, Where, Clip, Cast, Expand,
    DequantizeLinear, DequantizeWeight (one not absorbed into a Linear: see emit_linear.py)

Signed integer arithmetic wraps (two's complement through the unsigned type), integer division
by zero gives 0, as numpy's does.
"""

from __future__ import annotations

from typing import Callable

from s4c.codegen.c import cnames
from s4c.codegen.c.cnames import COMPUTE, UNSIGNED
from s4c.codegen.c.emit_common import EMITTERS, attrs, elementwise, emits, fsuffix, lit
from s4c.codegen.c.loops import Access
from s4c.codegen.c.program import CProgram, Tensor
from s4c.ir import Op
from s4c.ops.elementwise import BINARY, UNARY


def _wrap(dtype: str, a: str, b: str, sym: str) -> str:
    """a sym b with two's-complement wrap-around for 32/64-bit signed ints (signed overflow is UB in C)."""
    if dtype in UNSIGNED:
        u = UNSIGNED[dtype]
        return f"({cnames.ctype(dtype)})(({u}){a} {sym} ({u}){b})"
    return f"{a} {sym} {b}"


def _unary_expr(name: str, dtype: str) -> Callable[[list[str]], str]:
    f = fsuffix(dtype) if dtype in cnames.FLOATS else ""
    isf = dtype in cnames.FLOATS
    zero = lit(0, dtype)
    one = lit(1, dtype)
    table = {
        "Sqrt": lambda a: f"sqrt{f}({a})",
        "Reciprocal": lambda a: f"{one} / {a}",
        "Erf": lambda a: f"erf{f}({a})",
        "Tanh": lambda a: f"tanh{f}({a})",
        "Exp": lambda a: f"exp{f}({a})",
        "Log": lambda a: f"log{f}({a})",
        "Sigmoid": lambda a: f"{one} / ({one} + exp{f}(-{a}))",
        "Floor": (lambda a: f"floor{f}({a})") if isf else (lambda a: a),
        "Ceil": (lambda a: f"ceil{f}({a})") if isf else (lambda a: a),
        "Relu": lambda a: f"({a} < {zero} ? {zero} : {a})",
        "Neg": (lambda a: f"-{a}") if isf or dtype not in UNSIGNED else (lambda a: _wrap(dtype, "0", a, "-")),
        "Abs": (lambda a: f"fabs{f}({a})") if isf else (
            (lambda a: a) if dtype in ("u8", "u16", "bool") else
            (lambda a: f"({a} < 0 ? {_wrap(dtype, '0', a, '-')} : {a})")),
        "Identity": lambda a: a,
        "Not": lambda a: f"!{a}",
        "IsNaN": (lambda a: f"isnan({a})") if isf else (lambda a: "0"),
        "Sign": (lambda a: f"({a} > {zero} ? {one} : ({a} < {zero} ? -{one} : {a}))") if isf else (
            lambda a: f"(({a} > 0) - ({a} < 0))"),
    }
    fn = table[name]
    return lambda xs: fn(xs[0])


def _binary_expr(name: str, dtype: str, dtype_b: str) -> Callable[[list[str]], str]:
    isf = dtype in cnames.FLOATS
    f = fsuffix(dtype) if isf else ""
    ct = COMPUTE[dtype]

    def div(a, b):
        if isf:
            return f"{a} / {b}"
        if dtype in ("u8", "u16", "bool"):
            return f"({b} == 0 ? 0 : {a} / {b})"
        return f"({b} == 0 ? 0 : ({b} == -1 ? {_wrap(dtype, '0', a, '-')} : {a} / {b}))"

    def pow_(a, b):
        if isf:
            return f"pow{f}({a}, ({ct}){b})"
        return f"({ct})pow((double){a}, (double){b})"

    table = {
        "Add": lambda a, b: _wrap(dtype, a, b, "+"),
        "Sub": lambda a, b: _wrap(dtype, a, b, "-"),
        "Mul": lambda a, b: _wrap(dtype, a, b, "*"),
        "Div": div,
        "Pow": pow_,
        "Equal": lambda a, b: f"{a} == {b}",
        "Less": lambda a, b: f"{a} < {b}",
        "Greater": lambda a, b: f"{a} > {b}",
        "LessOrEqual": lambda a, b: f"{a} <= {b}",
        "GreaterOrEqual": lambda a, b: f"{a} >= {b}",
        "And": lambda a, b: f"{a} && {b}",
        "Or": lambda a, b: f"{a} || {b}",
        "Xor": lambda a, b: f"(!{a}) != (!{b})",
    }
    fn = table[name]
    return lambda xs: fn(xs[0], xs[1])


def _emit_unary(lw: CProgram, op: Op) -> None:
    x = lw.home(op.inputs[0])
    dtype = op.inputs[0].dtype
    if op.op == "Identity":
        lw.set(op.output, lw.alias(x, x.shape, x.fm, op.output.name))
        return
    elementwise(lw, op, [x], op.output, _unary_expr(op.op, dtype))


def _emit_binary(lw: CProgram, op: Op) -> None:
    a, b = lw.home(op.inputs[0]), lw.home(op.inputs[1])
    elementwise(lw, op, [a, b], op.output, _binary_expr(op.op, op.inputs[0].dtype, op.inputs[1].dtype))


for _n in UNARY:
    EMITTERS[_n] = _emit_unary
for _n in BINARY:
    EMITTERS[_n] = _emit_binary


@emits("Max", "Min", "Sum")
def _emit_variadic(lw: CProgram, op: Op) -> None:
    ins = [lw.home(v) for v in op.inputs]
    dtype = op.inputs[0].dtype

    def combine(a: str, b: str) -> str:
        if op.op == "Sum":
            return _wrap(dtype, a, b, "+") if dtype in UNSIGNED else f"{a} + {b}"
        if dtype in cnames.FLOATS:
            lw.uses_extra = True
            fn = ("s4cx_maxf" if op.op == "Max" else "s4cx_minf") if COMPUTE[dtype] == "float" else (
                "s4cx_max" if op.op == "Max" else "s4cx_min")
            return f"{fn}({a}, {b})"
        cmp = ">" if op.op == "Max" else "<"
        return f"({a} {cmp} {b} ? {a} : {b})"

    def expr(xs):
        e = xs[0]
        for x in xs[1:]:
            e = combine(e, x) if op.op != "Sum" or dtype in UNSIGNED else f"{e} + {x}"
        return e

    elementwise(lw, op, ins, op.output, expr)


@emits("Where")
def _emit_where(lw: CProgram, op: Op) -> None:
    ins = [lw.home(v) for v in op.inputs]
    elementwise(lw, op, ins, op.output, lambda xs: f"{xs[0]} ? {xs[1]} : {xs[2]}")


@emits("Clip")
def _emit_clip(lw: CProgram, op: Op) -> None:
    ins = [lw.home(v) for v in op.inputs]

    def expr(xs):
        e = xs[0]
        if len(xs) > 1:
            e = f"({e} < {xs[1]} ? {xs[1]} : {e})"
        if len(xs) > 2:
            e = f"({e} > {xs[2]} ? {xs[2]} : {e})"
        return e

    elementwise(lw, op, ins, op.output, expr)


@emits("Cast")
def _emit_cast(lw: CProgram, op: Op) -> None:
    x = lw.home(op.inputs[0])
    src, dst = op.inputs[0].dtype, op.output.dtype
    if src == dst:
        lw.set(op.output, lw.alias(x, x.shape, x.fm, op.output.name))
        return

    def expr(xs):
        a = xs[0]
        if dst == "bool":
            return f"{a} != 0"
        if src in cnames.FLOATS and dst not in cnames.FLOATS:
            return f"({COMPUTE[dst]})({a})"
        if dst == "f16":
            return f"(double){a}"
        return f"({COMPUTE[dst]}){a}"

    elementwise(lw, op, [x], op.output, expr)


@emits("Expand")
def _emit_expand(lw: CProgram, op: Op) -> None:
    x = lw.home(op.inputs[0])
    if x.shape == op.output.shape:
        lw.set(op.output, lw.alias(x, x.shape, x.fm, op.output.name))
        return
    elementwise(lw, op, [x], op.output, None, fm=None)


def _axis_access(name: str, t: Tensor, out_shape, axis: int, block: int = 0) -> Access:
    """A per-axis operand (1-D along `axis`, or blocked with the operand's own rank)."""
    rank = len(out_shape)
    if t.rank == 0 or t.size == 1:
        return Access(name, [0] * rank)
    if t.rank == 1 and not block:
        strides = [0] * rank
        strides[axis] = t.strides[0]
        return Access(name, strides)
    strides = list(t.strides)
    div = [1] * rank
    if block:
        div[axis] = block
    return Access(name, [0 if t.shape[d] == 1 else strides[d] for d in range(rank)], div=div)


@emits("DequantizeLinear")
def _emit_dequantize_linear(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    ins = [x] + [lw.home(v) for v in op.inputs[1:]]
    shape = op.output.shape
    axis = a["axis"] % max(len(shape), 1) if shape else 0
    acc = [Access("x0", x.strides)] + [_axis_access(f"x{i + 1}", t, shape, axis, a["block_size"])
                                        for i, t in enumerate(ins[1:])]
    ct = COMPUTE[op.output.dtype]
    if len(ins) > 2:
        expr = lambda xs: f"(({ct})(float){xs[0]} - ({ct})(float){xs[2]}) * {xs[1]}"  # noqa: E731
    else:
        expr = lambda xs: f"({ct})(float){xs[0]} * {xs[1]}"  # noqa: E731
    elementwise(lw, op, ins, op.output, expr, accesses=acc, fm=x.fm if x.shape == shape else None)


@emits("DequantizeWeight")
def _emit_dequantize_weight(lw: CProgram, op: Op) -> None:
    a = attrs(op)
    q, s = lw.home(op.inputs[0]), lw.home(op.inputs[1])
    shape = op.output.shape
    axis = a["axis"] % max(len(shape), 1) if shape else 0
    acc = [Access("x0", q.strides), _axis_access("x1", s, shape, axis)]
    ct = COMPUTE[op.output.dtype]
    elementwise(lw, op, [q, s], op.output, lambda xs: f"({ct}){xs[0]} * {xs[1]}", accesses=acc, fm=None)
