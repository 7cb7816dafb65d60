"""The IR's text form: `print_graph` and `parse_graph` round-trip (print -> parse -> print is identical).

    graph @main(%input_ids: i64[1,16], %attention_mask: i64[1,16]) {
      %w = const f32[64,64] <density=0.100 hash="1a2b3c4d">     # large constant: a summary
      %half = const f32[] [0.5]                               # small constant: its values
      %y = MatMul(%x, %w) : f32[1,16,64] loc("/bert/MatMul")
      %a, %b = Split(%y) {axis = 2, split = [32, 32]} : f32[1,16,32], f32[1,16,32]
      return %a, %b
    }

Names that are not plain identifiers are quoted with JSON escapes (%"a b"), so hostile ONNX names
cannot break the format. A parsed summary constant holds an `ElidedWeight` (type and fingerprint,
no values) unless `weights` supplies its array.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from s4c.errors import ParseError
from s4c.ir import Graph, Op, TensorType, Value, content_hash, dtype_name, numpy_dtype

INLINE_LIMIT = 16  # constants with at most this many elements print their values
# Plain names may contain "::" (as in onnx::MatMul_12) but no single ':' (it separates types).
_NAME_RE = r"[A-Za-z0-9_./\-]+(?:::[A-Za-z0-9_./\-]+)*"
_PLAIN_NAME = re.compile(_NAME_RE + r"\Z")


@dataclass(frozen=True)
class ElidedWeight:
    """A constant whose values were not printed: what parsing a summary gives back."""

    type: TensorType
    density: str
    hash: str

    def __array__(self, *args, **kwargs):
        raise ValueError(f"weight values were elided from the IR text (hash={self.hash})")


# -- printing ------------------------------------------------------------------------------------

def _name(name: str) -> str:
    return name if _PLAIN_NAME.match(name) else json.dumps(name)


def _scalar(v, dtype: str) -> str:
    if dtype == "bool":
        return "true" if v else "false"
    if dtype.startswith("f"):
        return str(np.float32(v)) if dtype == "f32" else repr(float(v))
    return str(int(v))


def _values(array: np.ndarray) -> str:
    dt = dtype_name(array.dtype)
    return "[" + ", ".join(_scalar(v, dt) for v in array.reshape(-1).tolist()) + "]"


def density_of(array: np.ndarray) -> str:
    return f"{np.count_nonzero(array) / max(array.size, 1):.3f}"


def _constant_body(value: Value) -> str:
    data = value.data
    if isinstance(data, ElidedWeight):
        return f'<density={data.density} hash="{data.hash}">'
    if data.size <= INLINE_LIMIT:
        return _values(data)
    return f'<density={density_of(data)} hash="{content_hash(data)}">'


def _attr(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, np.ndarray):
        return f"dense<{TensorType.of(v)}: {_values(v)}>"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_attr(x) for x in v) + "]"
    raise TypeError(f"unprintable attribute {v!r}")


def _loc(op: Op) -> str:
    return f" loc({', '.join(json.dumps(n) for n in op.onnx_nodes)})" if op.onnx_nodes else ""


def print_graph(graph: Graph) -> str:
    """The graph as text (constants first, in order of first use)."""
    lines = [f"graph @{_name(graph.name)}(" + ", ".join(f"%{_name(v.name)}: {v.type}" for v in graph.inputs) + ") {"]
    seen: set[int] = set()
    for v in graph.values():
        if v.is_constant and id(v) not in seen:
            seen.add(id(v))
            lines.append(f"  %{_name(v.name)} = const {v.type} {_constant_body(v)}")
    for op in graph.ops:
        results = ", ".join(f"%{_name(v.name)}" for v in op.outputs)
        operands = ", ".join(f"%{_name(v.name)}" for v in op.inputs)
        attrs = " {" + ", ".join(f"{k} = {_attr(op.attrs[k])}" for k in sorted(op.attrs)) + "}" if op.attrs else ""
        types = ", ".join(str(v.type) for v in op.outputs)
        lines.append(f"  {results} = {op.op}({operands}){attrs} : {types}{_loc(op)}")
    lines.append("  return " + ", ".join(f"%{_name(v.name)}" for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- parsing -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>[ \t]+|\#[^\n]*)
  | (?P<nl>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<value>%(?:NAME|"(?:[^"\\\n]|\\.)*"))
  | (?P<graphname>@(?:NAME|"(?:[^"\\\n]|\\.)*"))
  | (?P<number>[-+]?(?:(?:inf|nan)(?![A-Za-z0-9_])|(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()\[\]{}<>,:=])
""".replace("NAME", _NAME_RE), re.VERBOSE)


class _Parser:
    def __init__(self, text: str, weights: dict | None):
        self.tokens: list[tuple[str, str, int, int]] = []
        line, col, pos = 1, 1, 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise ParseError(f"line {line}:{col}: unexpected character {text[pos]!r}")
            kind = m.lastgroup
            if kind == "nl":
                line, col = line + 1, 1
            else:
                if kind != "ws":
                    self.tokens.append((kind, m.group(), line, col))
                col += m.end() - pos
            pos = m.end()
        self.tokens.append(("eof", "", line, col))
        self.i = 0
        self.weights = weights or {}
        self.values: dict[str, Value] = {}

    # token helpers
    def peek(self) -> tuple[str, str, int, int]:
        return self.tokens[self.i]

    def error(self, msg: str) -> ParseError:
        kind, text, line, col = self.peek()
        return ParseError(f"line {line}:{col}: {msg} (found {text or 'end of input'!r})")

    def take(self, kind: str | None = None, text: str | None = None) -> str:
        k, t, _, _ = self.peek()
        if (kind and k != kind) or (text and t != text):
            raise self.error(f"expected {text or kind}")
        self.i += 1
        return t

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text and self.peek()[0] in ("punct", "ident"):
            self.i += 1
            return True
        return False

    @staticmethod
    def _unquote(token: str) -> str:
        body = token[1:]
        return json.loads(body) if body.startswith('"') else body

    def name(self) -> str:
        return self._unquote(self.take("value"))

    def use(self) -> Value:
        line_col = self.peek()
        name = self.name()
        if name not in self.values:
            self.i -= 1
            raise self.error(f"use of undefined value %{name}")
        del line_col
        return self.values[name]

    def define(self, name: str, value: Value) -> None:
        if name in self.values:
            self.i -= 1
            raise self.error(f"value %{name} defined twice")
        self.values[name] = value

    def type(self) -> TensorType:
        dtype = self.take("ident")
        if dtype not in ("f32", "f16", "f64", "bf16", "i64", "i32", "i16", "i8", "u8", "u16", "bool"):
            self.i -= 1
            raise self.error("expected a dtype")
        self.take("punct", "[")
        dims = []
        while not self.accept("]"):
            if dims:
                self.take("punct", ",")
            dims.append(int(self.take("number")))
        return TensorType(dtype, tuple(dims))

    def literal_list(self, dtype: str) -> np.ndarray:
        self.take("punct", "[")
        items = []
        while not self.accept("]"):
            if items:
                self.take("punct", ",")
            k, t, _, _ = self.peek()
            self.i += 1
            if k == "ident" and t in ("true", "false"):
                items.append(t == "true")
            elif k == "number":
                items.append(float(t) if dtype.startswith("f") else int(t))
            else:
                self.i -= 1
                raise self.error("expected a number")
        return np.array(items, dtype=numpy_dtype(dtype))

    def attr_value(self):
        k, t, _, _ = self.peek()
        if k == "number":
            self.i += 1
            return float(t) if any(c in t for c in ".eEn") else int(t)
        if k == "string":
            self.i += 1
            return json.loads(t)
        if k == "ident" and t == "dense":
            self.i += 1
            self.take("punct", "<")
            typ = self.type()
            self.take("punct", ":")
            arr = self.literal_list(typ.dtype).reshape(typ.shape)
            self.take("punct", ">")
            return arr
        if t == "[":
            self.i += 1
            items = []
            while not self.accept("]"):
                if items:
                    self.take("punct", ",")
                items.append(self.attr_value())
            return items
        raise self.error("expected an attribute value")

    def constant(self, name: str) -> Value:
        typ = self.type()
        if self.peek()[1] == "[":
            arr = self.literal_list(typ.dtype)
            if arr.size != typ.size:
                raise self.error(f"constant %{name} has {arr.size} values for type {typ}")
            return Value(name, typ, data=arr.reshape(typ.shape))
        self.take("punct", "<")
        fields = {}
        while not self.accept(">"):
            key = self.take("ident")
            self.take("punct", "=")
            kind = self.peek()[0]
            token = self.take()
            fields[key] = json.loads(token) if kind == "string" else token
        if set(fields) != {"density", "hash"}:
            raise self.error("a constant summary needs density= and hash=")
        data = self.weights.get(name)
        if data is None:
            data = ElidedWeight(typ, fields["density"], fields["hash"])
        elif TensorType.of(data) != typ:
            raise ParseError(f"weight {name!r} supplied as {TensorType.of(data)} but the text says {typ}")
        return Value(name, typ, data=data)

    def graph(self) -> Graph:
        self.take("ident", "graph")
        graph = Graph(name=self._unquote(self.take("graphname")))
        self.take("punct", "(")
        while not self.accept(")"):
            if graph.inputs:
                self.take("punct", ",")
            name = self.name()
            self.take("punct", ":")
            v = Value(name, self.type())
            self.define(name, v)
            graph.inputs.append(v)
        self.take("punct", "{")
        while True:
            if self.accept("return"):
                graph.outputs = [self.use()]
                while self.accept(","):
                    graph.outputs.append(self.use())
                self.take("punct", "}")
                self.take("eof")
                return graph
            names = [self.name()]
            while self.accept(","):
                names.append(self.name())
            self.take("punct", "=")
            if self.accept("const"):
                if len(names) != 1:
                    raise self.error("a constant defines one value")
                self.define(names[0], self.constant(names[0]))
                continue
            graph.ops.append(self.op(names))

    def op(self, names: list[str]) -> Op:
        opname = self.take("ident")
        self.take("punct", "(")
        operands = []
        while not self.accept(")"):
            if operands:
                self.take("punct", ",")
            operands.append(self.use())
        attrs = {}
        if self.accept("{"):
            while not self.accept("}"):
                if attrs:
                    self.take("punct", ",")
                # 'inf'/'nan' tokenise as numbers but are valid attribute names
                key = self.take("number") if self.peek()[1] in ("inf", "nan") else self.take("ident")
                self.take("punct", "=")
                attrs[key] = self.attr_value()
        self.take("punct", ":")
        types = [self.type()]
        while self.accept(","):
            types.append(self.type())
        if len(types) != len(names):
            raise self.error(f"{len(names)} results but {len(types)} types")
        locs = []
        if self.accept("loc"):
            self.take("punct", "(")
            while not self.accept(")"):
                if locs:
                    self.take("punct", ",")
                locs.append(json.loads(self.take("string")))
        results = [Value(n, t) for n, t in zip(names, types)]
        for n, v in zip(names, results):
            self.define(n, v)
        return Op(opname, operands, results, attrs, onnx_nodes=locs)


def parse_graph(text: str, weights: dict[str, np.ndarray] | None = None) -> Graph:
    """Parse IR text. `weights` (name -> array) fills in constants printed as summaries."""
    return _Parser(text, weights).graph()
