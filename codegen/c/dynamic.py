"""C code for shape ranges: one model.c that runs any dims inside the compiled range at their cost.

A graph compiled for ranges (`--input-shape input_ids=1..8x1..256`, `Graph.dim_ranges`) is static
at the ranges' maxima; the memory plan, the weights and the program's structure come from it. How
each integer in the generated code depends on the dims is learnt by differential specialisation:
the driver's `dim_ranges.specialize(dims)` rebuilds the graph at other values of each symbol (two
per symbol, one step apart; below the maximum when that stays >= 2, else above it), each is lowered
the same way, and the generated functions and step calls are compared token by token. The program
text must be the same apart from numbers; every number that changes is fitted to

    c * prod(symbol ** e) + d        (e in 0..2 per symbol, c and d integers)

(per symbol from the changes along it; c must agree between symbols) and written as a C expression
over the run-time dims `s4c_d0, s4c_d1, ...` (file-scope ptrdiff_t set by s4c_model_set_dims).
A float that changes is fitted the same way as n or 1/n (a mean over the sequence). Loop bounds,
strides, token counts passed to kernels, byte counts of copies: all follow the actual dims, so a
run costs what its B x T costs; tensors are stored compactly at the actual dims in their maximum's
arena slot. The arena offsets, weights.bin and the init-time steps are the maximum's (an init-time
step or a non-uniform constant that changes with the dims is an error naming it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from s4c.codegen.c.cnames import comment_text
from s4c.errors import TargetError

_TOKEN = re.compile(r"#ifdef _OPENMP\n#pragma omp[^\n]*\n#endif|INT64_C\(-?\d+\)|/\*.*?\*/|[A-Za-z_]\w*|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[fFuUlL]*"
                    r"|\s+|.", re.S)
_NUMBER = re.compile(r"INT64_C\(|\d|\.\d")


@dataclass
class DynamicCode:
    """What render.py needs to write a range build: the symbols, and the program's texts with the
    dims as expressions."""
    symbols: list[str]
    ranges: list[tuple[int, int]]
    input_dims: list[list[str]]  # per input, per axis: a C expression of its extent
    output_dims: list[list[str]]
    input_syms: list[list[int]]  # per input, per axis: the symbol index (-1 fixed)
    output_shapes: list[list]    # per output, per axis: int or {"c":, "e": [...], "d":} (model.json)
    functions: list[str]
    run_calls: list[str]
    init_calls: list[str]
    const_binds: dict[str, str]  # weights rebuilt at the run's dims: tensor name -> pointer into s4c_dyn
    const_fill: list[str]        # the body of s4c_dims_constants
    dyn_bytes: int
    probes: list[dict] = field(default_factory=list)


def var(i: int) -> str:
    return f"s4c_d{i}"


def probe_points(ranges: dict[str, tuple[int, int]]) -> list[dict[str, int]]:
    """Per symbol, two points one and two steps from the maximum (the others at their maximum)."""
    top = {k: hi for k, (lo, hi) in ranges.items()}
    points = []
    for k, (lo, hi) in ranges.items():
        step = -1 if hi - 2 >= 2 else 1
        points += [dict(top, **{k: hi + step}), dict(top, **{k: hi + 2 * step})]
    return points


def analyse(program, graph, lower) -> DynamicCode:
    """`program`: the CProgram of `graph` (at the maximum); `lower(graph) -> CProgram` lowers a
    specialised graph the same way."""
    dr = graph.dim_ranges
    if dr.specialize is None:
        raise TargetError("C backend: shape ranges need the compile driver (s4c.compile), which rebuilds the "
                          "graph at probe dims")
    symbols = dr.symbols
    top = dr.maximum()
    points = probe_points(dr.ranges)
    probes = [lower(dr.specialize(p)) for p in points]
    fitter = _Fitter(symbols, top, points)

    def texts(p):
        return ([*p.functions], [s.call for s in p.run_steps], [s.call for s in p.init_steps])

    base = texts(program)
    others = [texts(p) for p in probes]
    out = []
    for part, what in enumerate(("generated function", "run step", "init step")):
        items = []
        if any(len(o[part]) != len(base[part]) for o in others):
            raise TargetError(f"C backend: the number of {what}s changes with the dims: compile this model for fixed dims")
        for i, text in enumerate(base[part]):
            items.append(_symbolic(text, [o[part][i] for o in others], fitter, what, part == 2))
        out.append(items)
    const_binds, const_fill, dyn_bytes = _dynamic_constants(program, probes, points, fitter)
    in_dims, in_syms = [], []
    for t in program.input_tensors:
        shapes = [p.input_tensors[program.input_tensors.index(t)].shape for p in probes]
        exprs = [fitter.fit(t.shape[a], [s[a] for s in shapes], f"input {t.label!r} dim {a}") for a in range(t.rank)]
        in_dims.append([e.c_expr() for e in exprs])
        in_syms.append([e.symbol_index() for e in exprs])
    out_dims, out_shapes = [], []
    for j, t in enumerate(program.output_tensors):
        shapes = [p.output_tensors[j].shape for p in probes]
        exprs = [fitter.fit(t.shape[a], [s[a] for s in shapes], f"output {t.label!r} dim {a}") for a in range(t.rank)]
        out_dims.append([e.c_expr() for e in exprs])
        out_shapes.append([e.as_json() for e in exprs])
    return DynamicCode(symbols, [dr.ranges[k] for k in symbols], in_dims, out_dims, in_syms, out_shapes,
                       out[0], out[1], out[2], const_binds, const_fill, dyn_bytes, points)


@dataclass
class _Expr:
    c: int
    e: tuple[int, ...]
    d: int

    def c_expr(self) -> str:
        factors = [var(i) for i, n in enumerate(self.e) for _ in range(n)]
        if not factors:
            return str(self.c + self.d)
        text = " * ".join(([str(self.c)] if self.c != 1 else []) + factors)
        if self.d:
            text += f" {'+' if self.d > 0 else '-'} {abs(self.d)}"
        return f"({text})"

    def symbol_index(self) -> int:
        """The symbol this dim is, exactly (-1 when fixed or an expression)."""
        if self.c == 1 and self.d == 0 and sum(self.e) == 1:
            return self.e.index(1)
        return -1

    def as_json(self):
        return self.c + self.d if not any(self.e) else {"c": self.c, "e": list(self.e), "d": self.d}


class _Fitter:
    def __init__(self, symbols: list[str], top: dict[str, int], points: list[dict[str, int]]):
        self.symbols, self.top, self.points = symbols, top, points

    def fit(self, v0, values: list, what: str) -> _Expr:
        """v0 at the maximum, values at the probe points -> c * prod(s^e) + d; TargetError otherwise."""
        if all(v == v0 for v in values):
            return _Expr(v0, (0,) * len(self.symbols), 0)
        e, coef = [], []
        for i, s in enumerate(self.symbols):
            v1, v2 = values[2 * i], values[2 * i + 1]
            s0 = self.top[s]
            step = self.points[2 * i][s] - s0
            d1, d2 = v1 - v0, v2 - v1
            if d1 == 0 and d2 == 0:
                e.append(0)
                coef.append(None)
            elif d1 == d2:
                e.append(1)
                coef.append(Fraction(d1, step))
            elif (d2 - d1) % 2 == 0 and d1 == (d2 - d1) // 2 * (2 * s0 * step + 1):
                e.append(2)
                coef.append(Fraction(d2 - d1, 2))
            else:
                raise self._fail(what, v0, values)
        c = None
        for i, s in enumerate(self.symbols):
            if coef[i] is None:
                continue
            others = 1
            for j, t in enumerate(self.symbols):
                if j != i:
                    others *= self.top[t] ** e[j]
            ci = coef[i] / others
            if c is None:
                c = ci
            elif ci != c:
                raise self._fail(what, v0, values)
        if c.denominator != 1:
            raise self._fail(what, v0, values)
        c = int(c)
        mono = 1
        for j, t in enumerate(self.symbols):
            mono *= self.top[t] ** e[j]
        expr = _Expr(c, tuple(e), v0 - c * mono)
        for p, v in zip(self.points, values):
            m = 1
            for j, t in enumerate(self.symbols):
                m *= p[t] ** e[j]
            if expr.c * m + expr.d != v:
                raise self._fail(what, v0, values)
        return expr

    def _fail(self, what: str, v0, values) -> TargetError:
        probes = ", ".join(f"{v} at {p}" for p, v in zip(self.points, values))
        return TargetError(f"C backend: {what} ({v0} at the maximum; {probes}) is not c*dims+d in the shape "
                           f"range's dims: compile this model for fixed dims")


def _significant(tok: str) -> bool:
    """Tokens the comparison sees: not whitespace, comments or OpenMP pragmas (whose use depends on
    the loop's size: the maximum's choice is kept)."""
    return not (tok.isspace() or tok.startswith("/*") or tok.startswith("#ifdef _OPENMP"))


def _symbolic(text: str, others: list[str], fitter: _Fitter, what: str, fixed: bool) -> str:
    if all(o == text for o in others):
        return text
    toks = _TOKEN.findall(text)
    sig = [k for k, t in enumerate(toks) if _significant(t)]
    other_toks = [[t for t in _TOKEN.findall(o) if _significant(t)] for o in others]
    label = _label(text)
    if any(len(o) != len(sig) for o in other_toks):
        raise TargetError(f"C backend: {what} {label} changes its form with the dims: compile this model for fixed dims")
    alts_at = {k: [o[j] for o in other_toks] for j, k in enumerate(sig)}
    out = []
    for k, tok in enumerate(toks):
        alts = alts_at.get(k)
        if alts is None or all(a == tok for a in alts):
            out.append(tok)
            continue
        if not _NUMBER.match(tok) or any(not _NUMBER.match(a) for a in alts):
            raise TargetError(f"C backend: {what} {label} changes its form with the dims ({tok!r} vs {alts[0]!r}): "
                              f"compile this model for fixed dims")
        if fixed:
            raise TargetError(f"C backend: init-time {label} depends on the dims: compile this model for fixed dims")
        try:
            out.append(_number(tok, alts, fitter, f"{what} {label}"))
        except TargetError:
            if label in CAPACITY_LAST and _last_number(toks, k):
                out.append(tok)  # a scratch capacity: the maximum's buffer is there at any dims
                continue
            raise
    return "".join(out)


# Kernels whose last argument is the capacity of a scratch buffer (sized for the maximum; the
# kernel uses what it needs of it at the run's dims).
CAPACITY_LAST = {"s4c_attention_qkv"}


def _last_number(toks: list[str], k: int) -> bool:
    rest = [t for t in toks[k + 1:] if _significant(t)]
    return rest[:1] == [")"] and all(t in ")" for t in rest)


def _label(text: str) -> str:
    m = re.search(r"\b(op\d+_\w+|s4c_\w+|s4cx_\w+|memcpy)\s*\(", text)
    return m.group(1) if m else text[:40]


def _int_value(tok: str) -> int | None:
    if tok.startswith("INT64_C("):
        return int(tok[8:-1])
    body = tok.rstrip("uUlL")
    return int(body) if body.isdigit() else None


def _number(tok: str, alts: list[str], fitter: _Fitter, what: str) -> str:
    iv = _int_value(tok)
    if iv is not None and all(_int_value(a) is not None for a in alts):
        expr = fitter.fit(iv, [_int_value(a) for a in alts], what).c_expr()
        return f"((int64_t){expr})" if tok.startswith("INT64_C(") else expr
    f = tok[-1] in "fF"
    vals = [float(t.rstrip("fFlL")) for t in [tok] + alts]
    cast = "float" if f else "double"
    if all(v == round(v) for v in vals):
        expr = fitter.fit(int(round(vals[0])), [int(round(v)) for v in vals[1:]], what).c_expr()
        return f"(({cast}){expr})"
    inv = [1.0 / v if v else 0.0 for v in vals]
    if all(v and abs(x - round(x)) <= 1e-5 * abs(x) for v, x in zip(vals, inv)):
        expr = fitter.fit(int(round(inv[0])), [int(round(x)) for x in inv[1:]], what).c_expr()
        return f"(({cast})1 / ({cast}){expr})"
    raise TargetError(f"C backend: {what}: the constant {tok} changes with the dims ({', '.join(alts)}) in a way a "
                      f"range cannot follow: compile this model for fixed dims")


def _dynamic_constants(program, probes, points, fitter: "_Fitter") -> tuple[dict[str, str], list[str], int]:
    """Weights whose values change with the dims are rebuilt at the run's dims by s4c_dims_constants
    into s4c_dyn: a prefix of the maximum's array (relative-position tables, ...) or an affine
    function of the element's indices (index arithmetic folded at import: b*T + t, arange, zeros).
    Returns ({tensor name: its pointer expression}, the fill function's lines, s4c_dyn bytes)."""
    from s4c.codegen.c.cnames import ITEMSIZE, ctype

    base = [t for t in program.tensors if t.buffer.kind == "weight"]
    arrays = dict(program.weights.entries)
    others = []
    for p, point in zip(probes, points):
        other = [t for t in p.tensors if t.buffer.kind == "weight"]
        if len(other) != len(base):
            raise TargetError(f"C backend: the weights change with the dims (at {point}): compile this model for "
                              f"fixed dims")
        others.append((other, dict(p.weights.entries)))
    binds: dict[str, str] = {}
    lines: list[str] = []
    offset = 0
    for k, t in enumerate(base):
        m = _as_shape(arrays[t.buffer.offset], t.shape)
        datas = [_as_shape(ents[o[k].buffer.offset], o[k].shape) for o, ents in others]
        if all(d.shape == m.shape and d.dtype == m.dtype and np.array_equal(d, m) for d in datas):
            continue
        what = f"the constant {t.label!r} {list(t.shape)}"
        dims = [fitter.fit(t.shape[a], [d.shape[a] for d in datas], f"{what} dim {a}") for a in range(t.rank)]
        ct = ctype(t.dtype)
        ext = [e.c_expr() for e in dims]
        idx = [f"i{a}" for a in range(t.rank)]
        dst = " + ".join(f"{idx[a]} * {'1' if a == t.rank - 1 else ' * '.join(ext[a + 1:])}" for a in range(t.rank)) or "0"
        if all(m[tuple(slice(0, n) for n in d.shape)].shape == d.shape and
               np.array_equal(m[tuple(slice(0, n) for n in d.shape)], d) for d in datas):
            strides = [int(np.prod(t.shape[a + 1:], dtype=np.int64)) for a in range(t.rank)]
            src = " + ".join(f"{idx[a]} * {strides[a]}" for a in range(t.rank)) or "0"
            value = f"(({ct} const *)({t.buffer.base()}))[{src}]"
            how = "a prefix of its maximum"
        else:
            value = _affine(t, m, datas, fitter, what, ct)
            how = "affine in its indices"
        lines.append(f"    {{ /* {t.name}: {comment_text(t.label)}, {how} */")
        lines.append(f"        {ct} *y = ({ct} *)(void *)(s4c_dyn + {offset});")
        for a in range(t.rank):
            lines.append(f"        {'    ' * a}for (ptrdiff_t {idx[a]} = 0; {idx[a]} < {ext[a]}; {idx[a]}++)")
        lines.append(f"        {'    ' * t.rank}y[{dst}] = {value};")
        lines.append("    }")
        binds[t.name] = f"s4c_dyn + {offset}"
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * ITEMSIZE[t.dtype]
        offset += (nbytes + 63) // 64 * 64
    return binds, lines, offset


def _as_shape(array, shape) -> np.ndarray:
    a = np.asarray(array)
    return a.reshape(shape) if a.size == int(np.prod(shape, dtype=np.int64)) else a


def _affine(t, m: np.ndarray, datas: list[np.ndarray], fitter: "_Fitter", what: str, ct: str) -> str:
    """c + sum(a_j * i_j) with a_j, c fitted over the dims, as C; TargetError when it is not."""
    def coefficients(d: np.ndarray):
        if d.dtype.kind not in "iub" or d.size == 0:
            return None
        d = d.astype(np.int64)
        c = int(d.reshape(-1)[0])
        coef = []
        for a in range(d.ndim):
            step = int(np.take(d, [1], axis=a).reshape(-1)[0]) - c if d.shape[a] > 1 else 0
            coef.append(step)
        grid = np.full(d.shape, c, dtype=np.int64)
        for a, step in enumerate(coef):
            shape = [1] * d.ndim
            shape[a] = d.shape[a]
            grid = grid + step * np.arange(d.shape[a], dtype=np.int64).reshape(shape)
        return (c, coef) if np.array_equal(grid, d) else None

    def expression(arrays, axes: int) -> str | None:
        fits = [coefficients(x) for x in arrays]
        if any(f is None for f in fits):
            return None
        terms = [fitter.fit(fits[0][0], [f[0] for f in fits[1:]], what).c_expr()]
        for a in range(axes):
            e = fitter.fit(fits[0][1][a], [f[1][a] for f in fits[1:]], f"{what} step along dim {a}").c_expr()
            if e != "0":
                terms.append(f"{e} * i{a}")
        return f"({ct})({' + '.join(terms)})"

    whole = expression([m] + datas, m.ndim)
    if whole is not None:
        return whole
    # stacked indices (GatherND's [..., k] = (b, t)): affine per position along a small fixed last axis
    n = m.shape[-1] if m.ndim >= 2 else 0
    if 1 < n <= 8 and all(d.shape[-1] == n for d in datas):
        parts = [expression([x[..., k] for x in [m] + datas], m.ndim - 1) for k in range(n)]
        if all(p is not None for p in parts):
            last = f"i{m.ndim - 1}"
            text = parts[-1]
            for k in range(n - 2, -1, -1):
                text = f"({last} == {k} ? {parts[k]} : {text})"
            return text
    raise TargetError(f"C backend: {what} changes with the dims and is neither a prefix of its maximum nor "
                      f"affine in its indices: compile this model for fixed dims")
