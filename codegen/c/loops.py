"""Strided loop nests: the one piece of machinery every generic (non-kernel) emitter uses.

An iteration space is a shape; each array taking part is an `Access`: a pointer name and, per
dimension of the space, the element stride to step by (0 broadcasts), plus a base offset and
optional per-dimension divisor / modulus (block-quantised scales, Tile). `nest` orders the loops by
the first access's strides (so the written array is walked in memory order), drops size-1
dimensions, merges dimensions that are contiguous for every access, and returns the C text:

    for (ptrdiff_t i0 = 0; i0 < 32; i0++)
        for (ptrdiff_t i1 = 0; i1 < 64; i1++)
            y[i0 * 64 + i1] = x0[i0 * 64 + i1] + x1[i1];
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s4c.codegen.c.cnames import int_literal

PARALLEL_MIN_ELEMENTS = 1 << 16  # below this an OpenMP fork costs more than the loop


@dataclass
class Access:
    ptr: str
    strides: list[int]
    base: int = 0
    div: list[int] | None = None
    mod: list[int] | None = None

    def plain(self, d: int) -> bool:
        return (self.div is None or self.div[d] == 1) and (self.mod is None or self.mod[d] == 0)


def row_major_strides(shape) -> list[int]:
    strides, acc = [], 1
    for d in reversed(list(shape)):
        strides.append(acc)
        acc *= int(d)
    return strides[::-1]


def broadcast_strides(shape, strides, out_shape) -> list[int]:
    """Strides of an operand of `shape` (with `strides`) broadcast to `out_shape` (numpy rules)."""
    lead = len(out_shape) - len(shape)
    out = [0] * len(out_shape)
    for d, (n, s) in enumerate(zip(shape, strides)):
        out[lead + d] = 0 if n == 1 and out_shape[lead + d] != 1 else s
    return out


@dataclass
class Nest:
    open: list[str] = field(default_factory=list)
    close: list[str] = field(default_factory=list)
    index: list[str] = field(default_factory=list)  # element index expression per access
    dim_var: dict[int, str] = field(default_factory=dict)  # kept dims -> their loop variable
    depth: int = 0  # indentation level of the body
    count: int = 1  # iterations of the body


def _term(var: str, stride: int) -> str:
    """var * |stride| (the sign is written by index_expr)."""
    return var if abs(stride) == 1 else f"{var} * {int_literal(abs(stride))}"


def index_expr(base: int, terms: list[tuple[str, int]]) -> str:
    """base + sum(var * stride) as C, with negative strides subtracted."""
    parts: list[str] = []
    if base:
        parts.append(int_literal(base))
    for var, stride in terms:
        if stride == 0:
            continue
        t = _term(var, stride)
        if not parts:
            parts.append(t if stride > 0 else f"-{t}")
        else:
            parts.append(f"+ {t}" if stride > 0 else f"- {t}")
    return " ".join(parts) if parts else "0"


def nest(shape, accesses: list[Access], indent: int = 1, var: str = "i", keep: tuple[int, ...] = (),
         parallel: bool = False, order: list[int] | None = None) -> Nest:
    """The loop nest over `shape` for `accesses` (see the module docstring).

    `keep`: dimensions never merged or dropped (their loop variable is in `dim_var`, for bodies
    that need the index itself). `order`: the dimensions outermost first (default: by the first
    access's strides, largest first)."""
    shape = [int(n) for n in shape]
    dims = [d for d in range(len(shape)) if shape[d] != 1 or d in keep]
    if order is None:
        ref = accesses[0].strides if accesses else [0] * len(shape)
        dims.sort(key=lambda d: (-abs(ref[d]), d))
    else:
        dims = [d for d in order if d in dims]
    # merge (outer a, inner b) when every access steps contiguously across them
    groups: list[list[int]] = []
    for d in dims:
        if groups:
            a = groups[-1]
            outer, inner = a[-1], d
            size_inner = shape[inner]
            if (outer not in keep and inner not in keep and all(
                    acc.plain(outer) and acc.plain(inner) and acc.strides[outer] == acc.strides[inner] * size_inner
                    for acc in accesses)):
                a.append(d)
                continue
        groups.append([d])
    result = Nest(count=1)
    terms: list[list[tuple[str, int]]] = [[] for _ in accesses]
    pad = "    "
    for k, group in enumerate(groups):
        size = 1
        for d in group:
            size *= shape[d]
        inner = group[-1]
        v = f"{var}{k}"
        if parallel and k == 0 and size > 1:
            total = 1
            for n in shape:
                total *= n
            if total >= PARALLEL_MIN_ELEMENTS:
                result.open += ["#ifdef _OPENMP", "#pragma omp parallel for schedule(static)", "#endif"]
        result.open.append(f"{pad * (indent + k)}for (ptrdiff_t {v} = 0; {v} < {int_literal(size)}; {v}++)")
        result.count *= size
        for d in group:
            if d in keep:
                result.dim_var[d] = v
        for j, acc in enumerate(accesses):
            s = acc.strides[inner]
            if s == 0:
                continue
            div = acc.div[inner] if acc.div is not None else 1
            mod = acc.mod[inner] if acc.mod is not None else 0
            expr = v
            if div != 1:
                expr = f"{expr} / {int_literal(div)}"
            if mod:
                expr = f"{expr} % {int_literal(mod)}"
            if expr != v:
                expr = f"({expr})"
            terms[j].append((expr, s))
    for d in keep:
        result.dim_var.setdefault(d, "0")
    result.depth = indent + len(groups)
    result.index = [index_expr(acc.base, t) for acc, t in zip(accesses, terms)]
    return result


def render(n: Nest, body: list[str]) -> list[str]:
    """The nest around `body` (lines without indentation, relative indentation kept): a one-line
    body hangs off the innermost loop, a longer one gets braces."""
    pad = "    " * n.depth
    lines = [pad + line if line else line for line in body]
    if len(body) > 1 and n.open:
        return n.open[:-1] + [n.open[-1] + " {"] + lines + ["    " * (n.depth - 1) + "}"]
    return n.open + lines
