"""The pattern-rewrite helper the fusion passes share.

A fusion is a list of `Pattern` classes, one per pattern. A pattern names the op types its ROOT may
have (the op whose results the rewrite takes over), and implements two methods:

    match(rw, root)    -> Match | None   walk up from the root through producers; list every op
                                         the rewrite replaces in `Match.ops`; capture operands
    rewrite(rw, match) -> [Op] | None    the new ops, in order; they produce the root's result
                                         Values themselves (the same objects, so no use needs
                                         rewiring and a graph output keeps its public name);
                                         None to give up after all

`apply_patterns(graph, patterns)` visits the ops in order and, for each match, checks what every
fusion must check before it replaces anything: the values the matched ops define, other than the
root's results, are used only by matched ops and are not graph outputs (an intermediate with a
second user, or one the model returns, blocks the fusion: replacing it would duplicate work or
change the result). It then splices the new ops in at the root's place, erases the matched ops and
revisits the new ops, so patterns compose (MatMul -> Linear, then Linear + bias Add -> Linear with
bias). A pattern may also take over the results of other matched ops (`Match.takeover`, e.g.
merge-qkv's Split giving back a projection that something else reads): then the new ops go where
the first of those was, and the pattern makes sure everything they read is defined by then.

Matching is on structure and on what constants MEAN: `close_f32` compares a constant (or a product
of constants) with the exact value it stands for, within a few float32 ulps, so 1/sqrt(2) written
as Mul(0.70710677), as Div(1.4142135), or folded into another factor all match, and 0.7071 doesn't.
"""

from __future__ import annotations

import math
from typing import ClassVar, Iterable, Sequence

import numpy as np

from s4c import ops as op_registry
from s4c.ir import Graph, Op, TensorType, Value

F32_EPS = float(np.finfo(np.float32).eps)  # 2**-23


def close_f32(value: float, expected: float, ulps: float = 8.0) -> bool:
    """`value` (computed in float64 from float32 constants) means `expected`: equal within `ulps`
    float32 ulps, relative (each f32 constant is off by <= 0.5 ulp; a product of a few of them,
    or an exporter computing sqrt(2/pi) in float32, stays well inside 8)."""
    if not (math.isfinite(value) and math.isfinite(expected)):
        return value == expected
    return abs(value - expected) <= ulps * F32_EPS * max(abs(expected), np.finfo(np.float32).tiny)


class Match(dict):
    """What a pattern found: `root`, `ops` (every op the rewrite replaces, the root included), and
    captured values/constants/attributes as dict items."""

    def __init__(self, root: Op, ops: Iterable[Op], takeover: Iterable[Op] = (), **captures):
        super().__init__(captures)
        self.root = root
        # Matched ops whose results, like the root's, the new ops take over (so their users need
        # not be inside the match): e.g. merge-qkv's Linears whose results other ops also read.
        self.takeover: list[Op] = list(takeover)
        self.ops: list[Op] = []
        seen: set[int] = set()
        for op in [root, *self.takeover, *ops]:
            if id(op) not in seen:
                seen.add(id(op))
                self.ops.append(op)

    def add(self, *ops: Op) -> "Match":
        for op in ops:
            if all(op is not o for o in self.ops):
                self.ops.append(op)
        return self


class Pattern:
    """One rewrite pattern. Subclasses set `roots`, write a docstring with an ASCII drawing of the
    matched subgraph, and implement `match` and `rewrite`."""

    roots: ClassVar[tuple[str, ...]] = ()

    def match(self, rw: "Rewriter", root: Op) -> Match | None:
        raise NotImplementedError

    def rewrite(self, rw: "Rewriter", m: Match) -> list[Op]:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__


class Rewriter:
    """The graph being rewritten, with a use map kept up to date across rewrites, plus the small
    queries and builders patterns need.

    It starts from the graph's use lists and name table (Graph.users / Graph.names) and works on its
    own copies while it rewrites: matched ops are only marked erased until `finish`, and a name once
    in the graph or handed out stays taken for the whole run (so a rewrite never reuses the name of
    a value another pattern still holds)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.ops: list[Op] = list(graph.ops)
        self.erased: set[int] = set()
        self._users: dict[int, list[Op]] = graph.users()
        self._outputs: set[int] = {id(v) for v in graph.outputs}
        self._names: set[str] = graph.names()
        self.counts: dict[str, int] = {}

    # -- queries ---------------------------------------------------------------------------------
    def users(self, value: Value) -> list[Op]:
        return self._users.get(id(value), [])

    def is_output(self, value: Value) -> bool:
        return id(value) in self._outputs

    def single_use(self, value: Value) -> bool:
        """`value` is read by exactly one op (possibly as several operands) and is not an output."""
        return len(self.users(value)) == 1 and not self.is_output(value)

    def only_used_by(self, value: Value, ops: Sequence[Op]) -> bool:
        return not self.is_output(value) and all(any(u is o for o in ops) for u in self.users(value))

    @staticmethod
    def producer(value: Value, *types: str) -> Op | None:
        """The op defining `value` if its type is one of `types` (any type when none given)."""
        op = value.producer
        if op is None or (types and op.op not in types):
            return None
        return op

    @staticmethod
    def const(value: Value) -> np.ndarray | None:
        return value.data if value.is_constant and isinstance(value.data, np.ndarray) else None

    @staticmethod
    def scalar(value: Value) -> float | None:
        """The value of a one-element float constant (any rank), else None."""
        data = Rewriter.const(value)
        if data is None or data.size != 1 or not np.issubdtype(data.dtype, np.floating):
            return None
        return float(data.reshape(-1)[0])

    @staticmethod
    def int_scalar(value: Value) -> float | None:
        """The value of a one-element constant of any numeric dtype, else None."""
        data = Rewriter.const(value)
        if data is None or data.size != 1 or data.dtype == np.bool_:
            return None
        return float(data.reshape(-1)[0])

    @staticmethod
    def attrs(op: Op) -> dict:
        """The op's attributes with the registry's defaults filled in."""
        return op_registry.REGISTRY[op.op].with_defaults(op.attrs)

    # -- builders --------------------------------------------------------------------------------
    def fresh_name(self, hint: str) -> str:
        name, n = hint, 0
        while name in self._names:
            n += 1
            name = f"{hint}.{n}"
        self._names.add(name)
        return name

    def constant(self, hint: str, array: np.ndarray) -> Value:
        return Value.constant(self.fresh_name(hint), np.asarray(array))

    def op(self, op_name: str, inputs: list[Value], attrs: dict | None = None, *, hint: str = "",
           outputs: list[Value] | None = None) -> Op:
        """A new op; its result values are `outputs` (existing values it takes over) or new ones
        named after `hint`, typed by the registry's inference."""
        attrs = dict(attrs or {})
        if outputs is None:
            types = op_registry.REGISTRY[op_name].infer_types([v.type for v in inputs], attrs)
            base = hint or op_name
            outputs = [Value(self.fresh_name(base if len(types) == 1 else f"{base}.{i}"), t)
                       for i, t in enumerate(types)]
        return Op(op_name, inputs, outputs, attrs)

    def infer(self, op_name: str, inputs: list[Value], attrs: dict | None = None) -> list[TensorType] | None:
        """The result types `op_name` would have, or None if the operands don't fit it."""
        try:
            return op_registry.REGISTRY[op_name].infer_types([v.type for v in inputs], dict(attrs or {}))
        except (KeyError, ValueError, TypeError, IndexError):
            return None

    # -- the rewrite -----------------------------------------------------------------------------
    def check(self, m: Match) -> bool:
        """Every value a matched op defines, except the root's results, is used only inside the
        match and is not a graph output."""
        for op in m.ops:
            if id(op) in self.erased:
                return False
            if op is m.root or any(op is t for t in m.takeover):
                continue
            for v in op.outputs:
                if not self.only_used_by(v, m.ops):
                    return False
        return True

    def replace(self, index: int, m: Match, new_ops: list[Op]) -> int:
        """Erase the matched ops, put `new_ops` in at the root (`index`), or where the first op whose
        results they take over was; returns the position from which to continue visiting."""
        locs = tuple(dict.fromkeys(n for op in sorted(m.ops, key=self._position) for n in op.onnx_nodes))
        for op in new_ops:
            if not op.onnx_nodes:
                op.onnx_nodes = locs
        for op in m.ops:
            self.erased.add(id(op))
            for v in op.inputs:
                bucket = self._users.get(id(v))
                if bucket is not None:
                    self._users[id(v)] = [u for u in bucket if u is not op]
        for op in new_ops:
            for v in op.inputs:
                bucket = self._users.setdefault(id(v), [])
                if not bucket or bucket[-1] is not op:
                    bucket.append(op)
            for v in op.outputs:
                self._names.add(v.name)
        at = min([index] + [self._position(op) for op in m.takeover])
        self.ops[at:at] = new_ops
        return at

    def _position(self, op: Op) -> int:
        for i, o in enumerate(self.ops):
            if o is op:
                return i
        return len(self.ops)

    def finish(self) -> None:
        self.graph.ops = [op for op in self.ops if id(op) not in self.erased]


def apply_patterns(graph: Graph, patterns: Sequence[Pattern], max_sweeps: int = 10) -> dict[str, int]:
    """Rewrite `graph` with `patterns` (tried in order at each op) until none matches; returns how
    many times each pattern fired (by pattern class name, only those that did)."""
    by_root: dict[str, list[Pattern]] = {}
    for p in patterns:
        for r in p.roots:
            by_root.setdefault(r, []).append(p)
    rw = Rewriter(graph)
    for _ in range(max_sweeps):
        fired = 0
        i = 0
        while i < len(rw.ops):
            op = rw.ops[i]
            if id(op) in rw.erased:
                i += 1
                continue
            for p in by_root.get(op.op, ()):
                m = p.match(rw, op)
                if m is None or not rw.check(m):
                    continue
                new_ops = p.rewrite(rw, m)
                if new_ops is None:
                    continue
                i = rw.replace(i, m, new_ops)
                rw.counts[p.name] = rw.counts.get(p.name, 0) + 1
                fired += 1
                break
            else:
                i += 1
        if not fired:
            break
    rw.finish()
    return rw.counts


# -- small matching utilities shared by several fusions -----------------------------------------

def flatten_product(rw: Rewriter, value: Value, m_ops: list[Op], shape: tuple[int, ...] | None = None,
                    ) -> tuple[float, list[Value]]:
    """`value` as coefficient * product(factors): expands Mul, Div by a constant, and Neg through
    single-use ops of the same shape as `value` (the expanded ops are appended to `m_ops`).
    One-element float constants become the coefficient."""
    shape = value.shape if shape is None else shape
    coef, factors = 1.0, []

    def visit(v: Value, top: bool) -> None:
        nonlocal coef
        c = rw.scalar(v)
        if c is not None:
            coef *= c
            return
        op = rw.producer(v, "Mul", "Div", "Neg")
        if op is None or (not top and not rw.single_use(v)) or v.shape != shape:
            factors.append(v)
            return
        if op.op == "Mul":
            m_ops.append(op)
            visit(op.inputs[0], False)
            visit(op.inputs[1], False)
        elif op.op == "Neg":
            m_ops.append(op)
            coef = -coef
            visit(op.inputs[0], False)
        else:
            d = rw.scalar(op.inputs[1])
            if d is None or d == 0.0:
                factors.append(v)
                return
            m_ops.append(op)
            coef /= d
            visit(op.inputs[0], False)

    visit(value, True)
    return coef, factors


def polynomial(rw: Rewriter, value: Value, x: Value, m_ops: list[Op], max_degree: int = 4
               ) -> dict[int, float] | None:
    """`value` as a polynomial in `x` ({power: coefficient}) if it is built from x and one-element
    constants by Add/Sub/Mul/Div-by-constant/Neg/Pow-by-small-integer through single-use ops (which
    are appended to `m_ops`); None otherwise."""

    def add(a, b, sign=1.0):
        out = dict(a)
        for k, c in b.items():
            out[k] = out.get(k, 0.0) + sign * c
        return out

    def mul(a, b):
        out: dict[int, float] = {}
        for i, ci in a.items():
            for j, cj in b.items():
                if i + j > max_degree:
                    raise _NotPolynomial
                out[i + j] = out.get(i + j, 0.0) + ci * cj
        return out

    def visit(v: Value, top: bool) -> dict[int, float]:
        if v is x:
            return {1: 1.0}
        c = rw.scalar(v)
        if c is not None:
            return {0: c}
        op = rw.producer(v, "Add", "Sub", "Mul", "Div", "Neg", "Pow")
        if op is None or (not top and not rw.single_use(v)):
            raise _NotPolynomial
        m_ops.append(op)
        if op.op == "Neg":
            return {k: -c for k, c in visit(op.inputs[0], False).items()}
        if op.op == "Div":
            d = rw.scalar(op.inputs[1])
            if d is None or d == 0.0:
                raise _NotPolynomial
            return {k: c / d for k, c in visit(op.inputs[0], False).items()}
        if op.op == "Pow":
            n = rw.int_scalar(op.inputs[1])
            if n is None or n != int(n) or not 1 <= n <= max_degree:
                raise _NotPolynomial
            base = visit(op.inputs[0], False)
            out = base
            for _ in range(int(n) - 1):
                out = mul(out, base)
            return out
        a = visit(op.inputs[0], False)
        # Mul(x, x) reads x twice: visit it once per operand, which is what the product means.
        b = visit(op.inputs[1], False)
        if op.op == "Add":
            return add(a, b)
        if op.op == "Sub":
            return add(a, b, -1.0)
        return mul(a, b)

    try:
        poly = visit(value, True)
    except _NotPolynomial:
        return None
    return {k: c for k, c in poly.items() if c != 0.0}


class _NotPolynomial(Exception):
    pass


def last_axis_layernorm(rw: "Rewriter", root: Op) -> int | None:
    """The hidden size if `root` is a LayerNorm over the last axis only, with [hidden] gamma/beta of
    its input's dtype (what Embedding and SkipLayerNorm can absorb); None otherwise."""
    s = root.inputs[0]
    rank = s.type.rank
    if rank == 0 or rw.attrs(root)["axis"] % rank != rank - 1:
        return None
    hidden = s.shape[-1]
    if any(v.shape != (hidden,) or v.dtype != s.dtype for v in root.inputs[1:]):
        return None
    return hidden


def bias_vector(data: np.ndarray, n: int, out_rank: int) -> np.ndarray | None:
    """A constant added to a [..., n] result as a length-n vector, if adding it broadcasts along the
    last axis only (shape [n], [1, n], [1, 1, n], or one element); None otherwise."""
    if data.ndim > out_rank:
        return None
    if data.size == 1:
        return np.full((n,), data.reshape(-1)[0], dtype=data.dtype)
    if data.size == n and data.shape[-1] == n:
        return data.reshape(n)
    return None
