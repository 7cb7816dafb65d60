"""The s4c graph IR: one small node type (`Op`) over typed SSA values.

    Graph
      inputs:  [Value]            model inputs (runtime data)
      outputs: [Value]            model outputs
      ops:     [Op]               in topological order (the verifier checks it)
    Value: name, TensorType(dtype, shape), producer Op (None for inputs and constants),
           data (a numpy array for constants, never copied: BERT-base weights are 440 MB)
    Op:    op (registry name), inputs [Value], outputs [Value], attrs {str: int|float|str|list|ndarray},
           onnx_nodes (names of the ONNX nodes it implements, for debug maps and error messages)

Shapes are fully static after import. Ops are defined once in `s4c.ops` (inference + numpy reference).
The IR never imports passes or backends.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

# dtype name in IR text <-> numpy dtype. bf16 is reserved: typed in the IR, no numpy arithmetic.
DTYPES: dict[str, np.dtype | None] = {
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "f64": np.dtype(np.float64),
    "bf16": None,
    "i64": np.dtype(np.int64),
    "i32": np.dtype(np.int32),
    "i16": np.dtype(np.int16),
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "u16": np.dtype(np.uint16),
    "bool": np.dtype(np.bool_),
}
_NUMPY_TO_NAME = {v: k for k, v in DTYPES.items() if v is not None}


def dtype_name(dtype) -> str:
    """IR name of a numpy dtype (raises KeyError for dtypes the IR does not carry)."""
    return _NUMPY_TO_NAME[np.dtype(dtype)]


def numpy_dtype(name: str) -> np.dtype:
    dt = DTYPES[name]
    if dt is None:
        raise TypeError(f"dtype {name} has no numpy equivalent in the reference evaluator")
    return dt


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        itemsize = 2 if self.dtype == "bf16" else numpy_dtype(self.dtype).itemsize
        return self.size * itemsize

    @staticmethod
    def of(array: np.ndarray) -> "TensorType":
        return TensorType(dtype_name(array.dtype), array.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


class Value:
    """An SSA value. Constants carry `data`; op results carry `producer`."""

    __slots__ = ("name", "type", "producer", "data", "__weakref__")

    def __init__(self, name: str, type: TensorType, producer: "Op | None" = None, data=None):
        self.name = name
        self.type = type
        self.producer = producer
        self.data = data

    @staticmethod
    def constant(name: str, array: np.ndarray) -> "Value":
        array = np.asarray(array)
        return Value(name, TensorType.of(array), data=array)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"Value({self.name!r}: {self.type})"


class Op:
    """One operation: `outputs = op(inputs) {attrs}`."""

    __slots__ = ("op", "inputs", "outputs", "attrs", "onnx_nodes", "__weakref__")

    def __init__(self, op: str, inputs: list[Value], outputs: list[Value], attrs: dict | None = None,
                 onnx_nodes: Iterable[str] = ()):
        self.op = op
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.onnx_nodes = tuple(onnx_nodes)
        for v in self.outputs:
            v.producer = self

    @property
    def output(self) -> Value:
        """The single result of a one-result op."""
        assert len(self.outputs) == 1, f"{self.op} has {len(self.outputs)} results"
        return self.outputs[0]

    def describe(self) -> str:
        """How error messages name this op: the op type, its first result and its ONNX node."""
        where = f" (ONNX node {self.onnx_nodes[0]!r})" if self.onnx_nodes else ""
        first = self.outputs[0].name if self.outputs else "?"
        return f"{self.op} -> {first!r}{where}"

    def __repr__(self) -> str:
        return f"Op({self.describe()})"


@dataclass
class Graph:
    name: str = "main"
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    # ONNX node name -> the module scope it came from ("/model/encoder/layer.0/attention/..."), from the
    # exporter's metadata where it has any; reports group ops by it (s4c/fusion_report.py).
    source_scopes: dict[str, str] = field(default_factory=dict)
    _name_counter: Iterator[int] = field(default_factory=itertools.count, repr=False)

    # -- queries ---------------------------------------------------------------------------------
    def values(self) -> Iterator[Value]:
        """Every value the graph defines or reads, each once: inputs, constants, op results."""
        seen: set[int] = set()
        for v in itertools.chain(self.inputs, (i for op in self.ops for i in op.inputs),
                                 (o for op in self.ops for o in op.outputs), self.outputs):
            if id(v) not in seen:
                seen.add(id(v))
                yield v

    def constants(self) -> list[Value]:
        return [v for v in self.values() if v.is_constant]

    def users(self) -> dict[int, list[Op]]:
        """id(value) -> ops reading it (in op order). Recompute after rewrites."""
        result: dict[int, list[Op]] = {}
        for op in self.ops:
            for v in op.inputs:
                bucket = result.setdefault(id(v), [])
                if not bucket or bucket[-1] is not op:
                    bucket.append(op)
        return result

    def is_output(self, value: Value) -> bool:
        return any(value is o for o in self.outputs)

    def fresh_name(self, hint: str) -> str:
        """A value name not used in the graph yet, derived from `hint`."""
        taken = {v.name for v in self.values()}
        name = hint
        while name in taken:
            name = f"{hint}.{next(self._name_counter)}"
        return name

    def clone(self) -> "Graph":
        """A structural copy: new Ops and Values, the same constant arrays (weights are not copied)."""
        mapping: dict[int, Value] = {}

        def copy(v: Value) -> Value:
            if id(v) not in mapping:
                mapping[id(v)] = Value(v.name, v.type, data=v.data)
            return mapping[id(v)]

        inputs = [copy(v) for v in self.inputs]
        ops = [Op(op.op, [copy(v) for v in op.inputs], [copy(v) for v in op.outputs], dict(op.attrs), op.onnx_nodes)
               for op in self.ops]
        return Graph(self.name, inputs, [copy(v) for v in self.outputs], ops, self.source_scopes)

    # -- edits -----------------------------------------------------------------------------------
    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every reader of `old` (ops and graph outputs) read `new` instead.

        A graph output keeps its public name (the runtime API is keyed by it): `new` takes the name
        when it is a plain op result, otherwise (an input, a constant, another output) an Identity
        op appended to the graph carries it. `old` is renamed out of the way."""
        if new is old:
            return
        for op in self.ops:
            op.inputs = [new if v is old else v for v in op.inputs]
        if self.is_output(old):
            public = old.name
            old.name = self.fresh_name(f"{public}.replaced")
            if new.producer is not None and not self.is_output(new):
                new.name = public
            else:
                carrier = Value(public, new.type)
                self.ops.append(Op("Identity", [new], [carrier]))
                new = carrier
            self.outputs = [new if v is old else v for v in self.outputs]

    def remove_dead_ops(self) -> int:
        """Drop ops none of whose results reach an output. Returns how many were removed."""
        live: set[int] = {id(v) for v in self.outputs}
        kept: list[Op] = []
        for op in reversed(self.ops):
            if any(id(o) in live for o in op.outputs):
                kept.append(op)
                live.update(id(i) for i in op.inputs)
        removed = len(self.ops) - len(kept)
        self.ops = kept[::-1]
        return removed


def content_hash(array: np.ndarray) -> str:
    """A short stable fingerprint of a constant's bytes (for the text form and bug reports)."""
    data = np.ascontiguousarray(array)
    return hashlib.blake2b(data.view(np.uint8).reshape(-1) if data.size else b"", digest_size=4).hexdigest()
