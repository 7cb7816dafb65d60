"""The emission table: how each IR op becomes C.

`EMITTERS[op_name](lw, op)` lowers one op instance through the `Lowering` `lw` (program.py): it
asks for its operands in the layout it needs (`lw.get(value, fm)`), allocates its results
(`lw.out`) and appends steps: a call to a library kernel (s4c_kernels.h) or a generated function
`opN_kind(...)` with a strided loop nest (loops.py).

    fused ops (feature-major, kernels)   Linear (dense, csr, bsrRxC, nmN:M; int8 weights
                                         dequantised at init), LayerNorm, SkipLayerNorm,
                                         MultiHeadAttention, Embedding, Gelu
    elementwise (any layout, strided)    unary / binary / variadic ops, Where, Cast, Clip,
                                         DequantizeLinear / DequantizeWeight, Expand
    data movement (token-major)          Reshape & co. (aliases), Transpose, Slice, Split,
                                         Concat, Tile, Trilu, Gather, GatherND
    reductions / normalisation           Reduce*, Softmax, LogSoftmax, LayerNormalization,
                                         MatMul (dense kernel for f32), Gemm
    compile-time                         Shape, Size, Range (constants), ConstantOfShape (init)

An op with no entry, or an instance an entry cannot take (e.g. a sparse layout on a weight that is
not a constant), is a TargetError naming the op and its ONNX node.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from s4c import ops as registry
from s4c.codegen.c import cnames
from s4c.codegen.c.cnames import COMPUTE, UNSIGNED, float_literal, int_literal, scalar_literal
from s4c.codegen.c.loops import Access, broadcast_strides, nest, render, row_major_strides
from s4c.codegen.c.program import Lowering, Tensor
from s4c.errors import TargetError
from s4c.ir import Graph, Op, Value, numpy_dtype
from s4c.ops.elementwise import BINARY, UNARY
from s4c.ops.nn import _reduce_axes
from s4c.ops.shape_ops import slice_params

EMITTERS: dict[str, Callable[[Lowering, Op], None]] = {}

# attention kernel scratch: room for this many threads (the kernel uses at most as many as fit)
ATTENTION_THREADS = 16
# elementwise ops whose result at an index depends only on the operands at that index
_POINTWISE = set(UNARY) | set(BINARY) | {"Where", "Cast", "Clip", "Max", "Min", "Sum", "Expand", "Identity"}


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


def lower_graph(graph: Graph, options: dict | None = None) -> Lowering:
    """The whole graph as steps, outputs bound, memory planned."""
    lw = Lowering(graph, options)
    for i, v in enumerate(graph.inputs):
        buf = lw._buffer(v.type.nbytes, "input", v.name, index=i)
        lw.set(v, lw._tensor(v.dtype, v.shape, None, buf, v.name))
    _absorb_weight_dequant(lw)
    for i, op in enumerate(graph.ops):
        if id(op) in lw.absorbed:
            continue
        fn = EMITTERS.get(op.op)
        if fn is None:
            raise unsupported(op, f"op {op.op} is not supported")
        lw.op, lw.op_index = op, i
        try:
            fn(lw, op)
        except TargetError as e:
            if op.describe() in str(e):
                raise
            raise TargetError(f"{e} (in {op.describe()})") from None
    lw.bind_outputs()
    lw.plan_memory()
    return lw


# -- shared helpers ---------------------------------------------------------------------------------

def load(lw: Lowering, t: Tensor, expr: str) -> str:
    if t.dtype == "f16":
        lw.uses_extra = True
        return f"s4cx_h2f({expr})"
    return expr


def store(lw: Lowering, dtype: str, expr: str) -> str:
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


def elementwise(lw: Lowering, op: Op, ins: list[Tensor], value: Value, expr: Callable[[list[str]], str] | None,
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


def expand_to(lw: Lowering, value: Value, shape, name: str) -> Tensor:
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


def as_dtype(lw: Lowering, t: Tensor, dtype: str, name: str) -> Tensor:
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


# -- elementwise ------------------------------------------------------------------------------------

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


def _emit_unary(lw: Lowering, op: Op) -> None:
    x = lw.home(op.inputs[0])
    dtype = op.inputs[0].dtype
    if op.op == "Identity":
        lw.set(op.output, lw.alias(x, x.shape, x.fm, op.output.name))
        return
    elementwise(lw, op, [x], op.output, _unary_expr(op.op, dtype))


def _emit_binary(lw: Lowering, op: Op) -> None:
    a, b = lw.home(op.inputs[0]), lw.home(op.inputs[1])
    elementwise(lw, op, [a, b], op.output, _binary_expr(op.op, op.inputs[0].dtype, op.inputs[1].dtype))


for _n in UNARY:
    EMITTERS[_n] = _emit_unary
for _n in BINARY:
    EMITTERS[_n] = _emit_binary


@emits("Max", "Min", "Sum")
def _emit_variadic(lw: Lowering, op: Op) -> None:
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
def _emit_where(lw: Lowering, op: Op) -> None:
    ins = [lw.home(v) for v in op.inputs]
    elementwise(lw, op, ins, op.output, lambda xs: f"{xs[0]} ? {xs[1]} : {xs[2]}")


@emits("Clip")
def _emit_clip(lw: Lowering, op: Op) -> None:
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
def _emit_cast(lw: Lowering, op: Op) -> None:
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
def _emit_expand(lw: Lowering, op: Op) -> None:
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
def _emit_dequantize_linear(lw: Lowering, op: Op) -> None:
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
def _emit_dequantize_weight(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    q, s = lw.home(op.inputs[0]), lw.home(op.inputs[1])
    shape = op.output.shape
    axis = a["axis"] % max(len(shape), 1) if shape else 0
    acc = [Access("x0", q.strides), _axis_access("x1", s, shape, axis)]
    ct = COMPUTE[op.output.dtype]
    elementwise(lw, op, [q, s], op.output, lambda xs: f"({ct}){xs[0]} * {xs[1]}", accesses=acc, fm=None)


def _absorb_weight_dequant(lw: Lowering) -> None:
    """DequantizeWeight ops that only feed f32 Linear weights: the Linear stores the int8 values and
    dequantises them itself (at init, in the weight's sparse layout)."""
    for op in lw.graph.ops:
        if op.op != "DequantizeWeight" or lw.graph.is_output(op.output):
            continue
        users = lw.users.get(id(op.output), [])
        if users and all(u.op == "Linear" and u.inputs[1] is op.output and op.output not in u.inputs[:1] + u.inputs[2:]
                         and u.inputs[0].dtype == "f32" and op.output.dtype == "f32"
                         and op.inputs[0].is_constant and op.inputs[1].is_constant and op.inputs[0].type.rank == 2
                         for u in users):
            lw.absorbed.add(id(op))


# -- data movement ----------------------------------------------------------------------------------

@emits("Reshape", "Squeeze", "Unsqueeze", "Flatten")
def _emit_reshape(lw: Lowering, op: Op) -> None:
    x = lw.get(op.inputs[0], None)
    lw.set(op.output, lw.alias(x, op.output.shape, None, op.output.name))


@emits("Transpose")
def _emit_transpose(lw: Lowering, op: Op) -> None:
    x = lw.home(op.inputs[0])
    perm = attrs(op).get("perm") or list(range(x.rank))[::-1]
    strides = x.strides
    elementwise(lw, op, [x], op.output, None, accesses=[Access("x0", [strides[p] for p in perm])], fm=None)


@emits("Slice")
def _emit_slice(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    sl = slice_params(x.shape, a["starts"], a["ends"], a.get("axes"), a.get("steps"))
    base, strides = 0, []
    for s, n, st in zip(sl, x.shape, x.strides):
        start, _, step = s.indices(n)
        base += start * st if len(range(*s.indices(n))) else 0
        strides.append(st * step)
    elementwise(lw, op, [x], op.output, None, accesses=[Access("x0", strides, base)], fm=None)


@emits("Split")
def _emit_split(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    axis = a["axis"] % x.rank
    outs = [lw.out(v, x.fm if x.fm is not None and x.fm <= axis else None, [x]) for v in op.outputs]
    body: list[str] = []
    start = 0
    for j, y in enumerate(outs):
        if y.size:
            n = nest(y.shape, [Access(f"y{j}", y.strides), Access("x0", x.strides, start * x.strides[axis])],
                     parallel=True)
            body += render(n, [f"y{j}[{n.index[0]}] = x0[{n.index[1]}];"])
        start += y.shape[axis]
    if body:
        lw.generic(op.op, [x], outs, body)


@emits("Concat")
def _emit_concat(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    ins = [lw.home(v) for v in op.inputs]
    axis = a["axis"] % op.output.type.rank
    fm = ins[0].fm if all(t.fm == ins[0].fm for t in ins) else None
    y = lw.out(op.output, fm, ins)
    if y.size == 0:
        return
    body: list[str] = []
    offset = 0
    for i, t in enumerate(ins):
        if t.size:
            n = nest(t.shape, [Access("y0", y.strides, offset * y.strides[axis]), Access(f"x{i}", t.strides)],
                     parallel=True)
            body += render(n, [f"y0[{n.index[0]}] = x{i}[{n.index[1]}];"])
        offset += t.shape[axis]
    lw.generic(op.op, ins, [y], body)


@emits("Tile")
def _emit_tile(lw: Lowering, op: Op) -> None:
    x = lw.home(op.inputs[0])
    acc = Access("x0", list(x.strides), mod=[int(d) for d in x.shape])
    elementwise(lw, op, [x], op.output, None, accesses=[acc], fm=None)


@emits("Trilu")
def _emit_trilu(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    r = x.rank
    zero = lit(0, x.dtype) if x.dtype != "f16" else "0.0f"
    cmp = ">=" if a["upper"] else "<="

    def body(xs, n):
        row, col = n.dim_var[r - 2], n.dim_var[r - 1]
        return f"({col} - {row} {cmp} {int_literal(a['k'])}) ? {xs[0]} : {zero}"

    elementwise(lw, op, [x], op.output, None, fm=None, keep=(r - 2, r - 1), body_fn=body)


@emits("Gather")
def _emit_gather(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    data = lw.get(op.inputs[0], None)
    idx = lw.get(op.inputs[1], None)
    axis = a["axis"] % data.rank
    y = lw.out(op.output, None, [data, idx])
    if y.size == 0:
        return
    pre = size_of(data.shape[:axis])
    n = data.shape[axis]
    post = size_of(data.shape[axis + 1:])
    nidx = idx.size
    ind = "    "
    body = []
    if pre > 1:
        body.append(f"    for (ptrdiff_t p = 0; p < {int_literal(pre)}; p++)")
        ind = "        "
    dst = product_sum([("p", nidx * post), ("j", post)] if pre > 1 else [("j", post)])
    src = product_sum([("p", n * post), ("k", post)] if pre > 1 else [("k", post)])
    copy = (f"y0[{dst}] = x0[{src}];" if post == 1 else
            f"memcpy(y0 + {dst}, x0 + {src}, {int_literal(post)} * sizeof({data.ctype}));")
    body += [
        f"{ind}for (ptrdiff_t j = 0; j < {int_literal(nidx)}; j++) {{",
        f"{ind}    int64_t k = (int64_t)x1[j];",
        f"{ind}    if (k < 0) k += {int_literal(n)};",
        f"{ind}    if (k < 0 || k >= {int_literal(n)}) return 1;",
        f"{ind}    {copy}",
        f"{ind}}}",
    ]
    lw.generic(op.op, [data, idx], [y], body, fails=True, note="index out of range -> error")


@emits("GatherND")
def _emit_gather_nd(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    data = lw.get(op.inputs[0], None)
    idx = lw.get(op.inputs[1], None)
    y = lw.out(op.output, None, [data, idx])
    if y.size == 0:
        return
    b = a["batch_dims"]
    k = idx.shape[-1]
    nb = size_of(data.shape[:b])
    ni = size_of(idx.shape[b:-1])
    slice_n = size_of(data.shape[b + k:])
    batch_stride = size_of(data.shape[b:])
    dstr = row_major_strides(data.shape)
    body = [f"    for (ptrdiff_t n = 0; n < {int_literal(nb)}; n++)",
            f"        for (ptrdiff_t j = 0; j < {int_literal(ni)}; j++) {{",
            f"            const {idx.ctype} *ix = x1 + (n * {int_literal(ni)} + j) * {int_literal(k)};",
            "            ptrdiff_t off = 0;",
            "            int64_t v;"]
    for m in range(k):
        dim = data.shape[b + m]
        body += [f"            v = (int64_t)ix[{m}];",
                 f"            if (v < 0) v += {int_literal(dim)};",
                 f"            if (v < 0 || v >= {int_literal(dim)}) return 1;",
                 f"            off += (ptrdiff_t)v * {int_literal(dstr[b + m])};"]
    body += [f"            memcpy(y0 + (n * {int_literal(ni)} + j) * {int_literal(slice_n)}, "
             f"x0 + n * {int_literal(batch_stride)} + off, {int_literal(slice_n)} * sizeof({data.ctype}));",
             "        }"]
    lw.generic(op.op, [data, idx], [y], body, fails=True, note="index out of range -> error")


# -- compile-time values ----------------------------------------------------------------------------

@emits("Shape", "Size", "Range")
def _emit_constant_result(lw: Lowering, op: Op) -> None:
    """Results known at compile time (shapes are static): stored as constants."""
    if op.op == "Range" and not all(v.is_constant for v in op.inputs):
        raise unsupported(op, "Range needs constant operands")
    args = [np.asarray(v.data) if v.is_constant else np.zeros(v.shape, numpy_dtype(v.dtype)) for v in op.inputs]
    data = np.asarray(registry.REGISTRY[op.op].run(args, op.attrs)[0], dtype=numpy_dtype(op.output.dtype))
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    t = lw.weight(np.ascontiguousarray(data), op.output.name, shape=op.output.shape)
    t.dtype = op.output.dtype
    lw.set(op.output, t)


@emits("ConstantOfShape")
def _emit_constant_of_shape(lw: Lowering, op: Op) -> None:
    value = op.attrs.get("value")
    value = np.zeros((1,), np.float32) if value is None else np.asarray(value)
    y = lw.out(op.output, None, [])
    if y.size == 0:
        return
    v = value.reshape(-1)[0]
    lit_v = store(lw, y.dtype, lit(v, y.dtype) if y.dtype != "f16" else float_literal(float(v), "double"))
    body = [f"    for (ptrdiff_t i = 0; i < {int_literal(y.size)}; i++) y0[i] = {lit_v};"]
    lw.generic(op.op, [], [y], body)


# -- reductions and normalisation -------------------------------------------------------------------

def _minmax_init(dtype: str, is_max: bool) -> str:
    if dtype in cnames.FLOATS:
        return ("-" if is_max else "") + ("INFINITY" if COMPUTE[dtype] == "float" else "(double)INFINITY")
    if dtype == "bool":
        return "0" if is_max else "1"
    bits = cnames.ITEMSIZE[dtype] * 8
    if dtype.startswith("u"):
        return "0" if is_max else f"UINT{bits}_MAX"
    return f"INT{bits}_MIN" if is_max else f"INT{bits}_MAX"


@emits("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd")
def _emit_reduce(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    rank = x.rank
    axes = _reduce_axes(rank, a)
    if axes == ():
        lw.set(op.output, lw.alias(x, x.shape, x.fm, op.output.name))
        return
    axes = tuple(range(rank)) if axes is None else axes
    y = lw.out(op.output, None, [x])
    if y.size == 0:
        return
    # output strides over the input's dims (0 on reduced dims)
    ystr, j = [0] * rank, 0
    ys = y.strides
    for d in range(rank):
        if d in axes:
            if a["keepdims"]:
                j += 1
            continue
        ystr[d] = ys[j]
        j += 1
    outer_shape = [1 if d in axes else x.shape[d] for d in range(rank)]
    inner_shape = [x.shape[d] if d in axes else 1 for d in range(rank)]
    count = size_of(inner_shape)
    outer = nest(outer_shape, [Access("y0", ystr), Access("x0", x.strides)], parallel=True)
    dtype = x.dtype
    isf = dtype in cnames.FLOATS
    name = op.op
    int_acc = "uint64_t" if dtype.startswith("u") else "int64_t"
    if name in ("ReduceSum", "ReduceMean"):
        acc_t = "double" if isf else int_acc
        init, comb = "0", lambda acc, v: f"{acc} += ({acc_t}){v};"
    elif name == "ReduceProd":
        acc_t = "double" if isf else int_acc
        init, comb = "1", lambda acc, v: f"{acc} *= ({acc_t}){v};"
    else:
        is_max = name == "ReduceMax"
        acc_t = COMPUTE[dtype]
        init = _minmax_init(dtype, is_max)
        if isf:
            lw.uses_extra = True
            fn = ("s4cx_maxf" if is_max else "s4cx_minf") if acc_t == "float" else ("s4cx_max" if is_max else "s4cx_min")
            comb = lambda acc, v: f"{acc} = {fn}({acc}, {v});"  # noqa: E731
        else:
            cmp = ">" if is_max else "<"
            comb = lambda acc, v: f"if ({v} {cmp} {acc}) {acc} = {v};"  # noqa: E731
    inner = nest(inner_shape, [Access("x0", x.strides)], indent=0, var="r")
    v = load(lw, x, f"x0[{plus(outer.index[1], inner.index[0])}]")
    result = "acc"
    if name == "ReduceMean":
        result = f"acc / {float(count)!r}" if count else "NAN"
    if not isf and name in ("ReduceSum", "ReduceMean", "ReduceProd"):
        result = f"({COMPUTE[dtype]})({result})" if name != "ReduceMean" else result
    body = [f"{acc_t} acc = {init};"] + render(inner, [comb("acc", v)]) + [f"y0[{outer.index[0]}] = {store(lw, y.dtype, result)};"]
    lines = render(outer, body)
    lw.generic(op.op, [x], [y], lines)


@emits("Softmax", "LogSoftmax")
def _emit_softmax(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    x = lw.home(op.inputs[0])
    y = lw.out(op.output, None, [x])
    if y.size == 0:
        return
    axis = a["axis"] % x.rank
    n = x.shape[axis]
    outer_shape = [1 if d == axis else x.shape[d] for d in range(x.rank)]
    outer = nest(outer_shape, [Access("y0", y.strides), Access("x0", x.strides)], parallel=True)
    ct = COMPUTE[x.dtype]
    f = fsuffix(x.dtype)
    sx, sy = x.strides[axis], y.strides[axis]
    xi = load(lw, x, f"x0[{plus(outer.index[1], product_sum([('k', sx)]))}]")
    x0 = load(lw, x, f"x0[{outer.index[1]}]")
    if op.op == "Softmax":
        final = f"exp{f}({xi} - m) / ({ct})s"
    else:
        final = f"({xi} - m) - ({ct})log(s)"
    body = [f"{ct} m = {x0};",
            "double s = 0.0;",
            f"for (ptrdiff_t k = 1; k < {n}; k++) {{ {ct} v = {xi}; if (v > m || v != v) m = v; }}",
            f"for (ptrdiff_t k = 0; k < {n}; k++) s += (double)exp{f}({xi} - m);",
            f"for (ptrdiff_t k = 0; k < {n}; k++) y0[{plus(outer.index[0], product_sum([('k', sy)]))}] = "
            f"{store(lw, y.dtype, final)};"]
    lw.generic(op.op, [x], [y], render(outer, body))


def _layernorm_generic(lw: Lowering, op: Op, x_value: Value, scale: Value, bias: Value | None, axis: int,
                       eps: float, results: list[Value]) -> None:
    x = lw.get(x_value, None)
    axis = axis % x.rank
    F = size_of(x.shape[axis:])
    T = size_of(x.shape[:axis])
    g = expand_to(lw, scale, x.shape[axis:], "scale")
    ins = [x, g]
    if bias is not None:
        ins.append(expand_to(lw, bias, x.shape[axis:], "bias"))
    outs = [lw.out(results[0], None, [x])] + [lw.out(v, None, [x]) for v in results[1:]]
    if x.size == 0:
        return
    lx = load(lw, x, "xr[f]")
    lg = load(lw, g, "x1[f]")
    lb = f" + (double){load(lw, ins[2], 'x2[f]')}" if bias is not None else ""
    body = [
        f"    for (ptrdiff_t t = 0; t < {int_literal(T)}; t++) {{",
        f"        const {x.ctype} *xr = x0 + t * {int_literal(F)};",
        "        double mean = 0.0, var = 0.0, inv;",
        f"        for (ptrdiff_t f = 0; f < {int_literal(F)}; f++) mean += (double){lx};",
        f"        mean /= {float(F)!r};",
        f"        for (ptrdiff_t f = 0; f < {int_literal(F)}; f++) {{ double d = (double){lx} - mean; var += d * d; }}",
        f"        var /= {float(F)!r};",
        f"        inv = 1.0 / sqrt(var + {float(np.float32(eps))!r});",
        f"        for (ptrdiff_t f = 0; f < {int_literal(F)}; f++)",
        f"            y0[t * {int_literal(F)} + f] = {store(lw, outs[0].dtype, f'((double){lx} - mean) * inv * (double){lg}{lb}')};",
    ]
    if len(outs) > 1:
        body.append(f"        y1[t] = {store(lw, outs[1].dtype, 'mean')};")
    if len(outs) > 2:
        body.append(f"        y2[t] = {store(lw, outs[2].dtype, 'inv')};")
    body.append("    }")
    lw.generic(op.op, ins, outs, body)


@emits("LayerNormalization")
def _emit_layer_normalization(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    _layernorm_generic(lw, op, op.inputs[0], op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else None,
                       a["axis"], a["epsilon"], op.outputs)


@emits("MatMul")
def _emit_matmul(lw: Lowering, op: Op) -> None:
    av, bv = op.inputs
    a_t, b_t = lw.get(av, None), lw.get(bv, None)
    a_shape = (1,) + av.shape if av.type.rank == 1 else av.shape
    b_shape = bv.shape + (1,) if bv.type.rank == 1 else bv.shape
    M, K = a_shape[-2], a_shape[-1]
    N = b_shape[-1]
    y = lw.out(op.output, None, [a_t, b_t])
    if y.size == 0:
        return
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    sa = broadcast_strides(a_shape[:-2], [s * M * K for s in row_major_strides(a_shape[:-2])], batch)
    sb = broadcast_strides(b_shape[:-2], [s * K * N for s in row_major_strides(b_shape[:-2])], batch)
    sy = [s * M * N for s in row_major_strides(batch)]
    outer = nest(batch, [Access("y0", sy), Access("x0", sa), Access("x1", sb)], var="b")
    if K == 0:
        lw.generic(op.op, [a_t, b_t], [y], [f"    memset(y0, 0, {y.nbytes});", "    (void)x0; (void)x1;"])
        return
    if av.dtype == "f32" and M * N * K >= 64:
        call = (f"if (s4c_linear_dense({c_int(M, 'rows', op)}, {c_int(K, 'inner dim', op)}, {c_int(N, 'cols', op)}, "
                f"x0 + {outer.index[1]}, x1 + {outer.index[2]}, NULL, S4C_ACT_NONE, NULL, y0 + {outer.index[0]}) "
                f"!= S4C_OK) return 1;")
        lw.generic(op.op, [a_t, b_t], [y], render(outer, [call]), fails=True,
                   note="row-major product through s4c_linear_dense")
        return
    isf = av.dtype in cnames.FLOATS
    acc_t = "double" if isf else "uint64_t"
    la = load(lw, a_t, f"x0[{outer.index[1]} + i * {K} + k]")
    lb = load(lw, b_t, f"x1[{outer.index[2]} + k * {N} + j]")
    res = "acc" if isf else f"({COMPUTE[av.dtype]})acc"
    body = [f"for (ptrdiff_t i = 0; i < {M}; i++)",
            f"    for (ptrdiff_t j = 0; j < {N}; j++) {{",
            f"        {acc_t} acc = 0;",
            f"        for (ptrdiff_t k = 0; k < {K}; k++) acc += ({acc_t}){la} * ({acc_t}){lb};",
            f"        y0[{outer.index[0]} + i * {N} + j] = {store(lw, y.dtype, res)};",
            "    }"]
    lw.generic(op.op, [a_t, b_t], [y], render(outer, body))


@emits("Gemm")
def _emit_gemm(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    A, B = lw.get(op.inputs[0], None), lw.get(op.inputs[1], None)
    ins = [A, B]
    M, N = op.output.shape
    K = A.shape[0] if a["transA"] else A.shape[1]
    sa = (1, M) if a["transA"] else (K, 1)  # strides of (i, k)
    sb = (1, K) if a["transB"] else (N, 1)  # strides of (k, j)
    y = lw.out(op.output, None, ins)
    if y.size == 0:
        return
    dtype = op.output.dtype
    isf = dtype in cnames.FLOATS
    acc_t = "double" if isf else "uint64_t"
    ct = COMPUTE[dtype]
    la = load(lw, A, f"x0[i * {sa[0]} + k * {sa[1]}]")
    lb = load(lw, B, f"x1[k * {sb[0]} + j * {sb[1]}]")
    alpha = float_literal(a["alpha"], "double")
    expr = f"{alpha} * (double)acc" if isf else f"({ct})acc * ({ct}){int(a['alpha'])}"
    if len(op.inputs) > 2:
        C = lw.home(op.inputs[2])
        ins.append(C)
        cs = broadcast_strides(C.shape, C.strides, (M, N))
        lc = load(lw, C, f"x2[i * {cs[0]} + j * {cs[1]}]")
        beta = float_literal(a["beta"], "double")
        expr = f"{expr} + {beta} * (double){lc}" if isf else f"{expr} + ({ct}){int(a['beta'])} * {lc}"
    body = [f"    for (ptrdiff_t i = 0; i < {M}; i++)",
            f"        for (ptrdiff_t j = 0; j < {N}; j++) {{",
            f"            {acc_t} acc = 0;",
            f"            for (ptrdiff_t k = 0; k < {K}; k++) acc += ({acc_t}){la} * ({acc_t}){lb};",
            f"            y0[i * {N} + j] = {store(lw, dtype, expr)};",
            "        }"]
    lw.generic(op.op, ins, [y], body)


# -- fused ops (feature-major, library kernels) -----------------------------------------------------

_ACT = {"none": "S4C_ACT_NONE", "gelu": "S4C_ACT_GELU_ERF", "gelu_tanh": "S4C_ACT_GELU_TANH"}


@emits("Gelu")
def _emit_gelu(lw: Lowering, op: Op) -> None:
    x = lw.home(op.inputs[0])
    tanh = attrs(op)["approximate"] == "tanh"
    if x.dtype == "f32":
        y = lw.out(op.output, x.fm, [x])
        if y.size:
            fn = "s4c_gelu_tanh" if tanh else "s4c_gelu_erf"
            lw.step("Gelu", [x], [y], f"{fn}({y.size}, {x.name}, {y.name})", kernel=fn)
        return
    f = fsuffix(x.dtype)
    ct = COMPUTE[x.dtype]
    if tanh:
        expr = lambda xs: (f"({ct})0.5 * {xs[0]} * (({ct})1 + tanh{f}(({ct})0.79788456080286535588 * "  # noqa: E731
                           f"({xs[0]} + ({ct})0.044715 * {xs[0]} * {xs[0]} * {xs[0]})))")
    else:
        expr = lambda xs: f"({ct})0.5 * {xs[0]} * (({ct})1 + erf{f}({xs[0]} * ({ct})0.70710678118654752440))"  # noqa: E731
    elementwise(lw, op, [x], op.output, expr)


@emits("LayerNorm")
def _emit_layernorm(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    xv = op.inputs[0]
    axis = a["axis"] % xv.type.rank
    if xv.dtype != "f32":
        _layernorm_generic(lw, op, xv, op.inputs[1], op.inputs[2] if len(op.inputs) > 2 else None,
                           axis, a["epsilon"], op.outputs)
        return
    x = lw.get(xv, axis)
    g = _feature_vector(lw, op.inputs[1], xv.shape[axis:], "gamma")
    b = _feature_vector(lw, op.inputs[2], xv.shape[axis:], "beta") if len(op.inputs) > 2 else None
    y = lw.out(op.output, axis, [x])
    if y.size == 0:
        return
    ins = [x, g] + ([b] if b is not None else [])
    lw.step("LayerNorm", ins, [y], f"s4c_layernorm({c_int(x.F, 'features', op)}, {c_int(x.T, 'tokens', op)}, "
            f"{x.name}, {g.name}, {b.name if b is not None else 'NULL'}, {float_literal(a['epsilon'])}, {y.name})",
            kernel="s4c_layernorm")


def _feature_vector(lw: Lowering, v: Value, shape, what: str) -> Tensor:
    t = expand_to(lw, v, shape, what)
    if t.dtype != "f32":
        raise unsupported(lw.op, f"{what} must be f32")
    return t


@emits("SkipLayerNorm")
def _emit_skip_layernorm(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    xv = op.inputs[0]
    if xv.dtype != "f32":
        raise unsupported(op, f"SkipLayerNorm on {xv.dtype} (the kernel is f32)")
    k = xv.type.rank - 1
    x, skip = lw.get(xv, k), lw.get(op.inputs[1], k)
    g = _feature_vector(lw, op.inputs[2], xv.shape[k:], "gamma")
    b = _feature_vector(lw, op.inputs[3], xv.shape[k:], "beta")
    bias = _feature_vector(lw, op.inputs[4], xv.shape[k:], "bias") if len(op.inputs) > 4 else None
    y = lw.out(op.output, k, [x, skip])
    if y.size == 0:
        return
    ins = [x, skip, g, b] + ([bias] if bias is not None else [])
    lw.step("SkipLayerNorm", ins, [y],
            f"s4c_skip_layernorm({c_int(x.F, 'features', op)}, {c_int(x.T, 'tokens', op)}, {x.name}, {skip.name}, "
            f"{bias.name if bias is not None else 'NULL'}, {g.name}, {b.name}, {float_literal(a['epsilon'])}, "
            f"{y.name}, NULL)", kernel="s4c_skip_layernorm")


def uniform_along(lw: Lowering, v: Value, axis_from_right: int) -> bool:
    """True when `v`'s values do not change along the axis `axis_from_right` (-1 = last) — size 1
    there, a constant equal along it, or pointwise ops of such values."""
    key = ("uniform", id(v), axis_from_right)
    if key in lw.memo:
        return lw.memo[key]
    r = v.type.rank
    d = r + axis_from_right
    result = False
    if d < 0 or v.shape[d] == 1:
        result = True
    elif v.is_constant:
        data = np.asarray(v.data)
        result = bool(np.array_equal(data, np.broadcast_to(np.take(data, [0], axis=d), data.shape)))
    elif v.producer is not None and v.producer.op in _POINTWISE:
        result = all(uniform_along(lw, u, axis_from_right) for u in v.producer.inputs)
    lw.memo[key] = result
    return result


def attention_scratch_floats(seq: int) -> int:
    """Per-thread scratch of s4c_attention (codegen/c/kernels/README.md)."""
    tile = min(seq, 64)
    return seq * tile + seq + 2 * tile


@emits("MultiHeadAttention")
def _emit_attention(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    qv = op.inputs[0]
    if qv.dtype != "f32":
        raise unsupported(op, f"MultiHeadAttention on {qv.dtype} (the kernel is f32)")
    B, S, three_hd = qv.shape
    H = a["num_heads"]
    D = three_hd // (3 * H)
    qkv = lw.get(qv, 2)
    ins = [qkv]
    mask = None
    general = None
    if len(op.inputs) > 1:
        bv = op.inputs[1]
        bias = lw.home(bv)
        if bias.dtype != "f32":
            raise unsupported(op, "the attention bias must be f32")
        strides = broadcast_strides(bias.shape, bias.strides, (B, H, S, S))
        if uniform_along(lw, bv, -3) and uniform_along(lw, bv, -2):
            # one additive value per (sentence, key): the fused kernel's mask[batch][seq]
            if bias.size == B * S and (B == 1 or strides[0] == S) and strides[3] == 1:
                mask = bias
            elif ("mask", id(bv), B, S) in lw.memo:
                mask = lw.memo[("mask", id(bv), B, S)]
            else:
                mask = lw.temp("f32", (B, S), None, [bias], f"{bv.name} (per key)")
                n = nest((B, S), [Access("y0", mask.strides), Access("x0", [strides[0], strides[3]])])
                lw.generic("attention_mask", [bias], [mask], render(n, [f"y0[{n.index[0]}] = x0[{n.index[1]}];"]),
                           note="additive bias -> mask[batch][seq]")
                lw.memo[("mask", id(bv), B, S)] = mask
            ins.append(mask)
        else:
            general = (bias, strides)
            ins.append(bias)
    y = lw.out(op.output, 2, [qkv])
    if y.size == 0:
        return
    scale = float_literal(a["scale"])
    if general is not None:
        lw.uses_extra = True
        bias, st = general
        lw.step("MultiHeadAttention", ins, [y],
                f"s4cx_attention_bias({B}, {S}, {H}, {D}, {scale}, {qkv.name}, {bias.name}, "
                f"{st[0]}, {st[1]}, {st[2]}, {st[3]}, {y.name})", kernel="s4cx_attention_bias",
                note="generic: the bias varies by query or head")
        return
    floats = attention_scratch_floats(S) * ATTENTION_THREADS
    scratch = lw.temp("f32", (floats,), None, [qkv], "attention scratch")
    lw.step("MultiHeadAttention", ins, [y],
            f"s4c_attention_qkv({B}, {S}, {H}, {D}, {scale}, {qkv.name}, {mask.name if mask is not None else 'NULL'}, "
            f"{y.name}, {scratch.name}, {floats})", kernel="s4c_attention_qkv", fails=True, scratch=[scratch])


@emits("Embedding")
def _emit_embedding(lw: Lowering, op: Op) -> None:
    a = attrs(op)
    ids_v, word_v, pos_ids_v, pos_v, gamma_v, beta_v = op.inputs[:6]
    for v in (word_v, pos_v, gamma_v, beta_v) + tuple(op.inputs[7:8]):
        if v.dtype != "f32":
            raise unsupported(op, f"embedding table {v.name!r} must be f32")
    shape = ids_v.shape
    seq = shape[-1] if shape else 1
    batch = size_of(shape[:-1]) if shape else 1
    hidden = word_v.shape[1]

    def ids(v: Value, what: str) -> Tensor | None:
        if v.is_constant and what == "positions":
            data = np.broadcast_to(np.asarray(v.data), shape)
            if np.array_equal(data, np.broadcast_to(np.arange(seq), shape)):
                return None  # the kernel's default: position = index in the sentence
        t = expand_to(lw, v, shape, what)
        return as_dtype(lw, t, "i64", what)

    ids_t = ids(ids_v, "ids")
    pos_ids = ids(pos_ids_v, "positions")
    tt = ids(op.inputs[6], "token_types") if len(op.inputs) > 6 else None
    word, pos = lw.get(word_v, None), lw.get(pos_v, None)
    types = lw.get(op.inputs[7], None) if len(op.inputs) > 7 else None
    gamma = _feature_vector(lw, gamma_v, (hidden,), "gamma")
    beta = _feature_vector(lw, beta_v, (hidden,), "beta")
    ins = [t for t in (ids_t, tt, pos_ids, word, pos, types, gamma, beta) if t is not None]
    y = lw.out(op.output, len(shape), [ids_t])
    if y.size == 0:
        return
    nm = lambda t: t.name if t is not None else "NULL"  # noqa: E731
    lw.step("Embedding", ins, [y],
            f"s4c_embedding({batch}, {seq}, {hidden}, {ids_t.name}, {nm(tt)}, {nm(pos_ids)}, {word.name}, "
            f"{word_v.shape[0]}, {pos.name}, {pos_v.shape[0]}, {nm(types)}, "
            f"{op.inputs[7].shape[0] if types is not None else 0}, {gamma.name}, {beta.name}, "
            f"{float_literal(a['epsilon'])}, {y.name})", kernel="s4c_embedding", fails=True,
            note="id out of range -> error")


@emits("Linear")
def _emit_linear(lw: Lowering, op: Op) -> None:
    from s4c.sparse import parse_layout
    from s4c.sparse.errors import SparseFormatError

    a = attrs(op)
    xv, wv = op.inputs[0], op.inputs[1]
    out_f, in_f = wv.shape
    try:
        layout = parse_layout(a.get("layout", "dense"))
    except SparseFormatError as e:
        raise unsupported(op, str(e)) from None
    if xv.dtype != "f32" or wv.dtype != "f32":
        if layout.kind != "dense":
            raise unsupported(op, f"layout {layout} on a {xv.dtype} Linear (the sparse kernels are f32)")
        return _linear_generic(lw, op, a)
    k = xv.type.rank - 1
    x = lw.get(xv, k)
    bias = None
    if len(op.inputs) > 2:
        bias = _feature_vector(lw, op.inputs[2], (out_f,), "bias")
    y = lw.out(op.output, k, [x])
    if y.size == 0:
        return
    T = c_int(x.T, "tokens", op)
    wts, note = _linear_weight(lw, op, wv, layout)
    act = _ACT[a["activation"]]
    b = bias.name if bias is not None else "NULL"
    ins = [x] + wts + ([bias] if bias is not None else [])
    o, i = c_int(out_f, "rows", op), c_int(in_f, "columns", op)
    if layout.kind == "dense":
        fn = "s4c_linear_dense"
        call = f"{fn}({o}, {i}, {T}, {wts[0].name}, {x.name}, {b}, {act}, NULL, {y.name})"
    elif layout.kind == "csr":
        indptr, indices, values = wts
        fn = f"s4c_linear_csr_{'u16' if indices.dtype == 'u16' else 'i32'}"
        call = f"{fn}({o}, {i}, {T}, {indptr.name}, {indices.name}, {values.name}, {x.name}, {b}, {act}, NULL, {y.name})"
    elif layout.kind == "bsr":
        indptr, indices, values = wts
        r, c = layout.block_shape
        fn = f"s4c_linear_bsr_{'u16' if indices.dtype == 'u16' else 'i32'}"
        call = (f"{fn}({o}, {i}, {T}, {r}, {c}, {indptr.name}, {indices.name}, {values.name}, {x.name}, {b}, {act}, "
                f"NULL, {y.name})")
    elif layout.kind == "nm":
        indices, values = wts
        fn = "s4c_linear_nm"
        call = (f"{fn}({o}, {i}, {T}, {layout.n}, {layout.m}, {values.name}, {indices.name}, {x.name}, {b}, {act}, "
                f"NULL, {y.name})")
    else:
        raise unsupported(op, f"layout {layout}")
    lw.step("Linear", ins, [y], call, kernel=fn, fails=True, note=f"{layout} weight{note}")


def _linear_weight(lw: Lowering, op: Op, wv: Value, layout) -> tuple[list[Tensor], str]:
    """The weight's arrays in `layout`, as the kernel takes them (float; int8 dequantised at init)."""
    dq = wv.producer if wv.producer is not None and id(wv.producer) in lw.absorbed else None
    if dq is None and not wv.is_constant:
        if layout.kind != "dense":
            raise unsupported(op, f"layout {layout} needs a constant weight")
        return [lw.get(wv, None)], ""
    label = wv.name
    if dq is None:
        w = np.asarray(wv.data)
        if layout.kind == "dense":
            return [lw.weight(w, label, key=("w", id(wv), "dense"), shape=w.shape)], ""
        return _packed(lw, layout.pack(w), layout, label, ("w", id(wv), str(layout))), ""
    # int8 weight: store the int8 values (+ scale), dequantise once at init into float
    q = np.asarray(dq.inputs[0].data)
    scale = np.asarray(dq.inputs[1].data, dtype=np.float32)
    axis = attrs(dq)["axis"] % 2
    per = "S4CX_SCALE_TENSOR" if scale.size == 1 else ("S4CX_SCALE_ROW" if axis == 0 else "S4CX_SCALE_COL")
    s = lw.weight(scale.reshape(-1), f"{dq.inputs[1].name}", key=("scale", id(dq.inputs[1])))
    lw.uses_extra = True
    note = f" (int8, scale per {'tensor' if per.endswith('TENSOR') else 'row' if per.endswith('ROW') else 'column'})"
    out_f, in_f = q.shape
    if layout.kind == "dense":
        qt = lw.weight(q, dq.inputs[0].name, key=("w", id(dq.inputs[0]), "dense"))
        wf = lw.new("f32", q.shape, None, "init", f"{label} (dequantised)")
        lw.step("dequantize", [qt, s], [wf], f"s4cx_dequant_dense({out_f}, {in_f}, {qt.name}, {s.name}, {per}, {wf.name})",
                kernel="s4cx_dequant_dense")
        return [wf], note
    packed = _packed(lw, layout.pack(q), layout, dq.inputs[0].name, ("w", id(dq.inputs[0]), str(layout)))
    qv = packed[-1]
    vf = lw.new("f32", qv.shape, None, "init", f"{label} values (dequantised)")
    if layout.kind == "csr":
        indptr, indices, _ = packed
        call = (f"s4cx_dequant_csr({out_f}, {indptr.name}, {indices.name}, {2 if indices.dtype == 'u16' else 4}, "
                f"{qv.name}, {s.name}, {per}, {vf.name})")
    elif layout.kind == "bsr":
        indptr, indices, _ = packed
        r, c = layout.block_shape
        call = (f"s4cx_dequant_bsr({out_f}, {in_f}, {r}, {c}, {indptr.name}, {indices.name}, "
                f"{2 if indices.dtype == 'u16' else 4}, {qv.name}, {s.name}, {per}, {vf.name})")
    else:
        indices, _ = packed
        call = (f"s4cx_dequant_nm({out_f}, {in_f}, {layout.n}, {layout.m}, {indices.name}, {qv.name}, {s.name}, "
                f"{per}, {vf.name})")
    lw.step("dequantize", packed + [s], [vf], call, kernel=call.split("(")[0])
    return packed[:-1] + [vf], note


def _packed(lw: Lowering, tensor, layout, label: str, key) -> list[Tensor]:
    arrays = tensor.arrays
    out_f, in_f = tensor.shape
    names = ["indptr", "indices", "values"] if layout.kind in ("csr", "bsr") else ["indices", "values"]
    result = []
    for name in names:
        arr = np.asarray(arrays[name])
        if name == "indices" and layout.kind in ("csr", "bsr"):
            extent = in_f
            arr = arr.astype(np.uint16 if extent <= 65535 else np.int32)
        result.append(lw.weight(arr, f"{label} {name}", key=key + (name,)))
    return result


def _linear_generic(lw: Lowering, op: Op, a: dict) -> None:
    """A Linear the kernels do not take (non-f32): y[t][o] = act(sum_i x[t][i] w[o][i] + b[o])."""
    xv, wv = op.inputs[0], op.inputs[1]
    x = lw.get(xv, None)
    w = lw.get(wv, None)
    ins = [x, w]
    out_f, in_f = wv.shape
    y = lw.out(op.output, None, [x])
    if y.size == 0:
        return
    T = x.size // in_f if in_f else y.size // out_f
    isf = y.dtype in cnames.FLOATS
    acc_t = "double" if isf else "uint64_t"
    lb = "0"
    if len(op.inputs) > 2:
        b = expand_to(lw, op.inputs[2], (out_f,), "bias")
        ins.append(b)
        lb = f"({acc_t}){load(lw, b, 'x2[o]')}"
    act = a["activation"]
    res = "acc"
    if act == "gelu":
        res = "0.5 * acc * (1.0 + erf(acc * 0.70710678118654752440))"
    elif act == "gelu_tanh":
        res = "0.5 * acc * (1.0 + tanh(0.79788456080286535588 * (acc + 0.044715 * acc * acc * acc)))"
    if not isf:
        res = f"({COMPUTE[y.dtype]})acc"
    lx = load(lw, x, f"x0[t * {in_f} + i]")
    lwt = load(lw, w, f"x1[o * {in_f} + i]")
    body = [f"    for (ptrdiff_t t = 0; t < {T}; t++)",
            f"        for (ptrdiff_t o = 0; o < {out_f}; o++) {{",
            f"            {acc_t} acc = {lb};",
            f"            for (ptrdiff_t i = 0; i < {in_f}; i++) acc += ({acc_t}){lx} * ({acc_t}){lwt};",
            f"            y0[t * {out_f} + o] = {store(lw, y.dtype, res)};",
            "        }"]
    lw.generic("linear", ins, [y], body)
