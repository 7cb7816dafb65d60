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

Use lists and the name table: `graph.users_of(v)`, `graph.users()`, `graph.is_output(v)`,
`graph.value_named(name)` and `graph.fresh_name(hint)` answer from an index of the graph (per value:
the ops reading it, in op order, and how often the graph mentions it; per name: the values carrying
it), built on first use and kept until the IR changes. Every way of changing what the index records
is seen: assigning or mutating in place `graph.ops` / `graph.inputs` / `graph.outputs`, an op's
`inputs` / `outputs`, or a value's `name` bumps a global mutation epoch, and an index built at
another epoch is rebuilt on its next query, so passes may keep editing those lists directly. The
graph's own edits (`add_op`, `remove_ops`, `set_input`, `rename`, `replace_all_uses`,
`remove_dead_ops`) update a current index in place instead of dropping it. `graph.check_index()` compares
it with a fresh scan (the tests run it after every pass).
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


# The IR mutation epoch: bumped by every change a graph index records (see the module docstring). Only
# the bump's uniqueness matters (itertools.count's next() is atomic in CPython), never its order.
_EPOCHS = itertools.count(1)
_epoch = 0


def _touch() -> None:
    global _epoch
    _epoch = next(_EPOCHS)


class _TrackedList(list):
    """A list whose in-place changes bump the IR mutation epoch (reads are plain list reads)."""

    __slots__ = ()

    def __setitem__(self, key, value):
        list.__setitem__(self, key, value)
        _touch()

    def __delitem__(self, key):
        list.__delitem__(self, key)
        _touch()

    def __iadd__(self, other):
        list.extend(self, other)
        _touch()
        return self

    def __imul__(self, n):
        list.__imul__(self, n)
        _touch()
        return self

    def append(self, item):
        list.append(self, item)
        _touch()

    def extend(self, items):
        list.extend(self, items)
        _touch()

    def insert(self, index, item):
        list.insert(self, index, item)
        _touch()

    def pop(self, index=-1):
        item = list.pop(self, index)
        _touch()
        return item

    def remove(self, item):
        list.remove(self, item)
        _touch()

    def clear(self):
        list.clear(self)
        _touch()

    def sort(self, *, key=None, reverse=False):
        list.sort(self, key=key, reverse=reverse)
        _touch()

    def reverse(self):
        list.reverse(self)
        _touch()

    def __reduce_ex__(self, protocol):  # copies and pickles are plain lists
        return (list, (list(self),))


def _tracked(items) -> _TrackedList:
    return items if type(items) is _TrackedList else _TrackedList(items)


class Value:
    """An SSA value. Constants carry `data`; op results carry `producer`."""

    __slots__ = ("name", "type", "producer", "data", "__weakref__")

    def __init__(self, name: str, type: TensorType, producer: "Op | None" = None, data=None):
        set_ = object.__setattr__  # a new value is in no graph yet: nothing to invalidate
        set_(self, "name", name)
        set_(self, "type", type)
        set_(self, "producer", producer)
        set_(self, "data", data)

    def __setattr__(self, attr: str, value) -> None:
        object.__setattr__(self, attr, value)
        if attr == "name":
            _touch()  # graph name tables

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
        set_ = object.__setattr__  # a new op is in no graph yet: nothing to invalidate
        set_(self, "op", op)
        set_(self, "inputs", _TrackedList(inputs))
        set_(self, "outputs", _TrackedList(outputs))
        set_(self, "attrs", dict(attrs or {}))
        set_(self, "onnx_nodes", tuple(onnx_nodes))
        for v in self.outputs:
            v.producer = self

    def __setattr__(self, attr: str, value) -> None:
        if attr == "inputs" or attr == "outputs":
            object.__setattr__(self, attr, _tracked(value))
            _touch()  # graph use lists and name tables
        else:
            object.__setattr__(self, attr, value)

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


class _UseIndex:
    """What a graph's queries answer from: built by one scan of the graph, then kept up to date by the
    graph's own edits (see the module docstring)."""

    __slots__ = ("epoch", "ops", "refs", "users", "names")

    def __init__(self, graph: "Graph"):
        self.epoch = _epoch  # read before the scan: a change during it leaves the index stale
        self.ops: set[int] = set()                    # id(op) of the graph's ops
        self.refs: dict[int, list] = {}               # id(value) -> [value, times the graph mentions it]
        self.users: dict[int, list[Op]] = {}          # id(value) -> ops reading it, in op order, each once
        self.names: dict[str, list[Value]] = {}       # name -> the graph's values carrying it
        refs, users, names = self.refs, self.users, self.names
        add_op = self.ops.add

        def mention(v: Value) -> None:  # self.mention, inlined where it is hot
            entry = refs.get(id(v))
            if entry is None:
                refs[id(v)] = [v, 1]
                names.setdefault(v.name, []).append(v)
            else:
                entry[1] += 1

        for v in graph.inputs:
            mention(v)
        for op in graph.ops:
            add_op(id(op))
            for v in op.inputs:
                key = id(v)
                entry = refs.get(key)
                if entry is None:
                    refs[key] = [v, 1]
                    names.setdefault(v.name, []).append(v)
                    users[key] = [op]
                else:
                    entry[1] += 1
                    bucket = users.get(key)
                    if bucket is None:
                        users[key] = [op]
                    elif bucket[-1] is not op:
                        bucket.append(op)
            for v in op.outputs:
                key = id(v)
                entry = refs.get(key)
                if entry is None:
                    refs[key] = [v, 1]
                    names.setdefault(v.name, []).append(v)
                else:
                    entry[1] += 1
        for v in graph.outputs:
            mention(v)

    def mention(self, v: Value, n: int = 1) -> None:
        entry = self.refs.get(id(v))
        if entry is None:
            self.refs[id(v)] = [v, n]
            self.names.setdefault(v.name, []).append(v)
        else:
            entry[1] += n

    def forget(self, v: Value, n: int = 1) -> None:
        entry = self.refs[id(v)]
        entry[1] -= n
        if entry[1] == 0:
            del self.refs[id(v)]
            self._unname(v, v.name)
            self.users.pop(id(v), None)

    def _unname(self, v: Value, name: str) -> None:
        bucket = self.names[name]
        del bucket[next(i for i, u in enumerate(bucket) if u is v)]
        if not bucket:
            del self.names[name]

    def rename(self, v: Value, old: str) -> None:
        if id(v) in self.refs:
            self._unname(v, old)
            self.names.setdefault(v.name, []).append(v)

    def add_reader(self, v: Value, op: Op, positions) -> None:
        """`op` (at the end of the graph's ops if `positions` is None) now reads `v`."""
        bucket = self.users.setdefault(id(v), [])
        if any(u is op for u in bucket):
            return
        bucket.append(op)
        if positions is not None and len(bucket) > 1:
            bucket.sort(key=lambda u: positions()[id(u)])

    def drop_reader(self, v: Value, op: Op) -> None:
        bucket = self.users.get(id(v), [])
        kept = [u for u in bucket if u is not op]
        if kept:
            self.users[id(v)] = kept
        else:
            self.users.pop(id(v), None)

    def differences(self, other: "_UseIndex") -> list[str]:
        """How this index differs from `other` (a fresh scan), for check_index."""
        diffs = []
        if self.ops != other.ops:
            diffs.append(f"ops: {len(self.ops - other.ops)} extra, {len(other.ops - self.ops)} missing")
        counts = lambda idx: {k: e[1] for k, e in idx.refs.items()}
        if counts(self) != counts(other):
            bad = {k for k in counts(self).keys() | counts(other).keys() if counts(self).get(k) != counts(other).get(k)}
            diffs.append("mentions of " + ", ".join(sorted((self.refs.get(k) or other.refs[k])[0].name for k in bad)))
        users = lambda idx: {k: [id(u) for u in us] for k, us in idx.users.items()}
        if users(self) != users(other):
            bad = {k for k in users(self).keys() | users(other).keys() if users(self).get(k) != users(other).get(k)}
            diffs.append("users of " + ", ".join(sorted(str((self.refs.get(k) or other.refs.get(k) or ["?"])[0])
                                                         for k in bad)))
        names = lambda idx: {n: sorted(map(id, vs)) for n, vs in idx.names.items()}
        if names(self) != names(other):
            bad = names(self).keys() ^ names(other).keys() or {n for n in names(self) if names(self)[n] != names(other)[n]}
            diffs.append("names " + ", ".join(sorted(bad)))
        return diffs


@dataclass
class DimRanges:
    """The dims of a graph compiled for a shape range (`--input-shape input_ids=1..8x1..256`).

    The graph's shapes are static at each range's maximum (memory is planned for it); this records
    what may vary at run time: `ranges` {symbol: (lo, hi)} (the ONNX dim name, e.g. "sequence", or
    "INPUT.AXIS" for an unnamed dim) and `inputs` {input name: (symbol or None per axis)}.
    `specialize(dims) -> Graph`, where the driver provides it, rebuilds the graph at other values
    of the symbols ({symbol: int}; used by backends to learn how the code depends on them)."""
    ranges: dict[str, tuple[int, int]]
    inputs: dict[str, tuple]
    specialize: object = field(default=None, repr=False, compare=False)
    # {output name: (symbol or None per axis)}: which output dims follow which symbol (the driver
    # finds them by specialising once); empty when not known
    outputs: dict = field(default_factory=dict)

    @property
    def symbols(self) -> list[str]:
        return list(self.ranges)

    def maximum(self) -> dict[str, int]:
        return {k: hi for k, (lo, hi) in self.ranges.items()}

    def bind(self, shapes: dict) -> dict[str, int]:
        """{symbol: value} from the run-time input shapes {input name: shape}; ValueError naming the
        input and dim when a value is outside its range or two inputs disagree."""
        dims: dict[str, int] = {}
        for name, axes in self.inputs.items():
            shape = shapes.get(name)
            if shape is None:
                continue
            for axis, sym in enumerate(axes):
                if sym is None or axis >= len(shape):
                    continue
                n = int(shape[axis])
                lo, hi = self.ranges[sym]
                if not lo <= n <= hi:
                    raise ValueError(f"input {name!r} dim {axis} ({sym}) is {n}, outside the compiled range {lo}..{hi}")
                if dims.setdefault(sym, n) != n:
                    raise ValueError(f"input {name!r} dim {axis} ({sym}) is {n}, another input gives {dims[sym]}")
        return dims

    # -- running a smaller shape on a program built for a larger one (padding) ---------------------
    def batch_symbols(self) -> set[str]:
        """The symbols that are only ever axis 0 of an input (batch dims)."""
        axes: dict[str, set] = {}
        for syms in self.inputs.values():
            for axis, sym in enumerate(syms):
                if sym is not None:
                    axes.setdefault(sym, set()).add(axis)
        return {s for s, a in axes.items() if a == {0}}

    def padding_exact(self) -> bool:
        """Whether padding the sequence dims leaves the real tokens' results unchanged: only when an
        input named like an attention mask spans them (padded positions get mask 0)."""
        sequence = set(self.symbols) - self.batch_symbols()
        return not sequence or any("mask" in name.lower() for name, syms in self.inputs.items() if set(syms) & sequence)

    def pad(self, feeds: dict, to: dict) -> dict:
        """`feeds` grown to the dims `to` ({symbol: int}): zeros along sequence dims (pad id 0,
        mask 0, token type 0), copies of the last sentence along batch dims (no sentence is all
        padding)."""
        batch = self.batch_symbols()
        out = {}
        for name, a in feeds.items():
            a = np.asarray(a)
            for axis, sym in enumerate(self.inputs.get(name, ())):
                if sym is None or axis >= a.ndim or a.shape[axis] >= to[sym]:
                    continue
                extra = to[sym] - a.shape[axis]
                if sym in batch:
                    last = np.take(a, [a.shape[axis] - 1], axis=axis)
                    a = np.concatenate([a, np.repeat(last, extra, axis=axis)], axis=axis)
                else:
                    width = [(0, 0)] * a.ndim
                    width[axis] = (0, extra)
                    a = np.pad(a, width)
            out[name] = a
        return out

    def cut(self, outputs: dict, dims: dict, axes: dict | None = None) -> dict:
        """Padded outputs sliced back to the real `dims` (axes: {output: symbols per axis}, by
        default `self.outputs`)."""
        axes = self.outputs if axes is None else axes
        result = {}
        for name, value in outputs.items():
            cut = tuple(slice(0, dims[s]) if s in dims else slice(None) for s in axes.get(name, ()))
            result[name] = np.ascontiguousarray(value[cut])
        return result


@dataclass
class Graph:
    name: str = "main"
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    # ONNX node name -> the module scope it came from ("/model/encoder/layer.0/attention/..."), from the
    # exporter's metadata where it has any; reports group ops by it (s4c/fusion_report.py).
    source_scopes: dict[str, str] = field(default_factory=dict)
    # set when the graph was compiled for shape ranges (DimRanges); None: every dim is fixed
    dim_ranges: "DimRanges | None" = None
    _name_counter: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _uses: "_UseIndex | None" = field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, attr: str, value) -> None:
        if attr == "ops" or attr == "inputs" or attr == "outputs":
            object.__setattr__(self, attr, _tracked(value))
            _touch()
        else:
            object.__setattr__(self, attr, value)

    # -- the index -------------------------------------------------------------------------------
    def _index(self) -> _UseIndex:
        """The use lists and name table, scanned again if the IR changed since they were built."""
        idx = self._uses
        if idx is None or idx.epoch != _epoch:
            idx = self._uses = _UseIndex(self)
        return idx

    def _positions(self):
        """A function giving {id(op): position}, computed on the first call."""
        cache: list[dict[int, int]] = []

        def get() -> dict[int, int]:
            if not cache:
                cache.append({id(op): i for i, op in enumerate(self.ops)})
            return cache[0]
        return get

    def check_index(self) -> list[str]:
        """Differences between the use lists / name table the queries would use and a fresh scan
        (empty when they agree)."""
        idx = self._uses
        if idx is None or idx.epoch != _epoch:
            return []  # the next query scans again
        return idx.differences(_UseIndex(self))

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
        """id(value) -> ops reading it (in op order, each once); a copy, the caller may keep it."""
        return {k: list(us) for k, us in self._index().users.items()}

    def users_of(self, value: Value) -> list[Op]:
        """The ops reading `value`, in op order, each once."""
        return list(self._index().users.get(id(value), ()))

    def is_output(self, value: Value) -> bool:
        return any(value is o for o in self.outputs)

    def value_named(self, name: str) -> Value | None:
        """The graph's value called `name` (the first one found if, wrongly, several are)."""
        bucket = self._index().names.get(name)
        return bucket[0] if bucket else None

    def names(self) -> set[str]:
        """The names of the graph's values."""
        return set(self._index().names)

    def fresh_name(self, hint: str) -> str:
        """A value name not used in the graph yet, derived from `hint`."""
        taken = self._index().names
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
        return Graph(self.name, inputs, [copy(v) for v in self.outputs], ops, self.source_scopes, self.dim_ranges)

    # -- edits ---------------------------------------------------------------------------------
    # Each edit updates a current index in place (and re-stamps it: its own changes are the only ones
    # since the stamp); a stale one it leaves stale, for the next query to scan, rather than scan now.
    def _current_index(self) -> _UseIndex | None:
        idx = self._uses
        return idx if idx is not None and idx.epoch == _epoch else None

    def add_op(self, op: Op, index: int | None = None) -> None:
        """Put `op` into the graph at position `index` (the end when None)."""
        idx = self._current_index()
        if (id(op) in idx.ops) if idx is not None else any(o is op for o in self.ops):
            raise ValueError(f"{op.describe()} is in the graph already")
        at_end = index is None or index >= len(self.ops)
        if at_end:
            self.ops.append(op)
        else:
            self.ops.insert(index, op)
        if idx is None:
            return
        idx.ops.add(id(op))
        positions = None if at_end else self._positions()
        for v in op.inputs:
            idx.mention(v)
            idx.add_reader(v, op, positions)
        for v in op.outputs:
            idx.mention(v)
        idx.epoch = _epoch

    def remove_ops(self, ops: Iterable[Op]) -> int:
        """Take `ops` out of the graph (those in it); returns how many were removed."""
        idx = self._current_index()
        drop = {id(op) for op in ops}
        removed = [op for op in self.ops if id(op) in drop]
        if not removed:
            return 0
        self.ops = [op for op in self.ops if id(op) not in drop]
        if idx is None:
            return len(removed)
        for op in removed:
            idx.ops.discard(id(op))
            for v in op.inputs:
                idx.drop_reader(v, op)
            for v in (*op.inputs, *op.outputs):
                idx.forget(v)
        idx.epoch = _epoch
        return len(removed)

    def remove_op(self, op: Op) -> None:
        if not self.remove_ops([op]):
            raise ValueError(f"{op.describe()} is not in the graph")

    def set_input(self, op: Op, i: int, value: Value) -> None:
        """Make operand `i` of `op` read `value`."""
        idx = self._current_index()
        old = op.inputs[i]
        op.inputs[i] = value
        if idx is None:
            return
        if id(op) in idx.ops and old is not value:
            if not any(v is old for v in op.inputs):
                idx.drop_reader(old, op)
            idx.add_reader(value, op, self._positions())
            idx.mention(value)
            idx.forget(old)
        idx.epoch = _epoch

    def rename(self, value: Value, name: str) -> None:
        """Give `value` the name `name` (the caller makes sure it is free)."""
        idx = self._current_index()
        old = value.name
        value.name = name
        if idx is None:
            return
        if old != name:
            idx.rename(value, old)
        idx.epoch = _epoch

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every reader of `old` (ops and graph outputs) read `new` instead.

        A graph output keeps its public name (the runtime API is keyed by it): `new` takes the name
        when it is a plain op result, otherwise (an input, a constant, another output) an Identity
        op appended to the graph carries it. `old` is renamed out of the way."""
        if new is old:
            return
        idx = self._current_index()
        if idx is None:
            for op in self.ops:
                if any(v is old for v in op.inputs):
                    op.inputs = [new if v is old else v for v in op.inputs]
        else:
            readers = idx.users.pop(id(old), [])
            for op in readers:
                n = sum(1 for v in op.inputs if v is old)
                op.inputs = [new if v is old else v for v in op.inputs]
                idx.mention(new, n)
                idx.forget(old, n)
            if readers:
                bucket = idx.users.get(id(new))
                if bucket:
                    merged = bucket + [op for op in readers if not any(op is u for u in bucket)]
                    positions = self._positions()
                    merged.sort(key=lambda u: positions()[id(u)])
                    idx.users[id(new)] = merged
                else:
                    idx.users[id(new)] = readers
            idx.epoch = _epoch
        if self.is_output(old):
            public = old.name
            self.rename(old, self.fresh_name(f"{public}.replaced"))  # fresh_name makes the index current
            if new.producer is not None and not self.is_output(new):
                self.rename(new, public)
            else:
                carrier = Value(public, new.type)
                self.add_op(Op("Identity", [new], [carrier]))
                new = carrier
            idx = self._current_index()
            n = sum(1 for v in self.outputs if v is old)
            self.outputs = [new if v is old else v for v in self.outputs]
            if idx is not None:
                idx.mention(new, n)
                idx.forget(old, n)
                idx.epoch = _epoch

    def remove_dead_ops(self) -> int:
        """Drop ops none of whose results reach an output. Returns how many were removed."""
        live: set[int] = {id(v) for v in self.outputs}
        dead: list[Op] = []
        for op in reversed(self.ops):
            if any(id(o) in live for o in op.outputs):
                live.update(id(i) for i in op.inputs)
            else:
                dead.append(op)
        return self.remove_ops(dead)


def content_hash(array: np.ndarray) -> str:
    """A short stable fingerprint of a constant's bytes (for the text form and bug reports)."""
    data = np.ascontiguousarray(array)
    return hashlib.blake2b(data.view(np.uint8).reshape(-1) if data.size else b"", digest_size=4).hexdigest()
