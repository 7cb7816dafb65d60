"""The C program an IR graph is lowered to (`CProgram`, built by lower.py): tensors, buffers,
steps, layouts and the memory plan.

    Tensor   a typed view the generated C names (t12 run-time, w3 weight, d5 computed at init),
             in one of two layouts: token-major (the ONNX row-major layout, `fm=None`) or
             feature-major split at axis k (`fm=k`: the dims from k on are the features F, the dims
             before are the tokens T, stored [F][T], what the fused-op kernels read and write).
    Buffer   the storage behind tensors: the arena (planned by liveness), a caller's input or
             output buffer, the weights read from weights.bin, or memory filled once at init.
    Step     one statement of the generated code: a kernel call or a call to a generated
             function, with the tensors it reads and writes and the IR op / ONNX nodes it
             implements.

`CProgram.get(value, fm)` returns a value in the layout a consumer asks for, adding an explicit
layout conversion (s4c_transpose) the first time and reusing it after; when the two layouts put
the bytes in the same order (T or F is 1) the view is an alias, not a copy. Steps whose inputs
are all weights (or computed from weights) run once at init (`phase="init"`); their results live in
the init-time memory, so e.g. an int8 weight is dequantised once, not per run.

The per-op emitters (emit_*.py, driven by lower.py) call back into this module; `finish()` binds graph outputs
to the caller's buffers (a producer writes straight into them when it can), then plans the arena.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from s4c.codegen.memory_plan import Interval, align_up, plan_arena
from s4c.codegen.c import cnames
from s4c.codegen.c.cnames import comment_name, ctype
from s4c.codegen.c.loops import Access, nest, render, row_major_strides
from s4c.codegen.c.options import COptions
from s4c.codegen.c.weights_bin import HEADER_BYTES, WeightStore
from s4c.errors import TargetError
from s4c.ir import Graph, Op, Value, dtype_name
from s4c.weight_store import StoredWeight

ALIGN = 64


@dataclass(eq=False)
class Buffer:
    id: int
    nbytes: int
    kind: str  # "arena" | "input" | "output" | "weight" | "derived"
    index: int = -1  # input / output position
    offset: int = 0  # arena / weights / derived offset
    label: str = ""

    def base(self) -> str:
        """The C expression of the buffer's first byte (a `void *`-compatible pointer)."""
        if self.kind == "arena":
            return f"s4c_arena + {self.offset}"
        if self.kind == "input":
            return f"inputs[{self.index}]"
        if self.kind == "output":
            return f"outputs[{self.index}]"
        if self.kind == "weight":
            return f"s4c_mem + {self.offset}"
        if self.kind == "derived":
            return f"s4c_mem + S4C_WEIGHT_BYTES + {self.offset}"
        raise AssertionError(self.kind)


@dataclass(eq=False)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    fm: int | None
    buffer: Buffer
    label: str = ""

    @property
    def ctype(self) -> str:
        return ctype(self.dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * cnames.ITEMSIZE[self.dtype]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def T(self) -> int:
        k = self.rank - 1 if self.fm is None else self.fm
        return int(np.prod(self.shape[:k], dtype=np.int64))

    @property
    def F(self) -> int:
        k = self.rank - 1 if self.fm is None else self.fm
        return int(np.prod(self.shape[k:], dtype=np.int64))

    @property
    def strides(self) -> list[int]:
        """Element strides of the logical (ONNX) dims in this tensor's storage."""
        return layout_strides(self.shape, self.fm)

    @property
    def phase(self) -> str:
        return "init" if self.buffer.kind in ("weight", "derived") else "run"

    @property
    def readonly(self) -> bool:
        return self.buffer.kind in ("input", "weight")

    def layout_name(self) -> str:
        return "token-major" if self.fm is None else f"feature-major at axis {self.fm} [{self.F}][{self.T}]"

    def describe(self) -> str:
        dims = ",".join(map(str, self.shape))
        return f"{self.dtype}[{dims}] {self.layout_name()}"


def layout_strides(shape, fm: int | None) -> list[int]:
    if fm is None:
        return row_major_strides(shape)
    r = len(shape)
    perm = list(range(fm, r)) + list(range(fm))
    phys = row_major_strides([shape[p] for p in perm])
    strides = [0] * r
    for pos, d in enumerate(perm):
        strides[d] = phys[pos]
    return strides


def physical_order(shape, fm: int | None) -> list[int]:
    """The dims of size > 1, outermost first, as stored."""
    r = len(shape)
    order = list(range(r)) if fm is None else list(range(fm, r)) + list(range(fm))
    return [d for d in order if shape[d] != 1]


@dataclass(eq=False)
class Step:
    phase: str
    kind: str  # what it does, for reports: the IR op, "layout", "copy", "dequantize", ...
    kernel: str  # the kernel / generated function it calls (profile groups by it)
    ins: list[Tensor]
    outs: list[Tensor]
    call: str  # one C statement, or an expression returning int when `fails`
    fails: bool = False
    op: Op | None = None
    note: str = ""
    scratch: list[Tensor] = field(default_factory=list)
    index: int = -1

    def comment(self) -> str:
        parts = [cnames.comment_text(self.kind)]
        if self.note:
            parts.append(cnames.comment_text(self.note))
        if self.outs:
            parts.append("-> " + ", ".join(f"{t.name} {comment_name(t.label)}" for t in self.outs[:3]))
        if self.op is not None and self.op.onnx_nodes:
            nodes = self.op.onnx_nodes
            shown = ", ".join(comment_name(n) for n in nodes[:3])
            more = f" (+{len(nodes) - 3} more)" if len(nodes) > 3 else ""
            parts.append(f"ONNX {shown}{more}")
        return "; ".join(parts)


class CProgram:
    """Builds the step list for one graph. See the module docstring."""

    def __init__(self, graph: Graph, options: COptions | None = None):
        self.graph = graph
        self.options = options or COptions()
        self.buffers: list[Buffer] = []
        self.tensors: list[Tensor] = []
        self.steps: list[Step] = []
        self.functions: list[str] = []  # generated helper functions, in order
        self._fn_names: set[str] = set()
        self.weights = WeightStore(ALIGN)
        # IR weights weights.bin holds whole (by value name): the driver then leaves them out of
        # OUTDIR/weights.npz and s4c.weight_store rebuilds them from weights.bin
        self.stored: dict[str, StoredWeight] = {}
        self.derived_bytes = 0
        self._home: dict[int, Tensor] = {}
        self._views: dict[tuple[int, int | None], Tensor] = {}
        self._ids = itertools.count()
        self.users = graph.users()
        self.op: Op | None = None
        self.op_index = -1
        self.absorbed: set[int] = set()  # ids of ops another emitter implements
        self.uses_extra = False
        self.memo: dict = {}
        self.arena_plan = None
        self.output_tensors: list[Tensor] = []
        self.input_tensors: list[Tensor] = []

    # -- tensors -------------------------------------------------------------------------------
    def _buffer(self, nbytes: int, kind: str, label: str = "", index: int = -1) -> Buffer:
        b = Buffer(len(self.buffers), int(nbytes), kind, index=index, label=label)
        if kind == "derived":
            b.offset = self.derived_bytes
            self.derived_bytes = align_up(self.derived_bytes + max(int(nbytes), 1), ALIGN)
        self.buffers.append(b)
        return b

    def _tensor(self, dtype: str, shape, fm, buffer: Buffer, label: str) -> Tensor:
        prefix = {"weight": "w", "derived": "d"}.get(buffer.kind, "t")
        t = Tensor(f"{prefix}{next(self._ids)}", dtype, tuple(int(d) for d in shape), fm, buffer, label)
        ctype(dtype)  # raises TargetError for dtypes C has no type for
        self.tensors.append(t)
        return t

    def new(self, dtype: str, shape, fm: int | None, phase: str, label: str) -> Tensor:
        """A tensor with fresh storage: the arena at run time, init-time memory otherwise."""
        shape = tuple(int(d) for d in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * cnames.ITEMSIZE[dtype]
        buf = self._buffer(nbytes, "arena" if phase == "run" else "derived", label)
        return self._tensor(dtype, shape, fm, buf, label)

    def alias(self, t: Tensor, shape, fm: int | None, label: str, dtype: str | None = None) -> Tensor:
        """Another view of `t`'s bytes (Reshape & co., equal-byte-order layouts)."""
        return self._tensor(dtype or t.dtype, shape, fm, t.buffer, label)

    @staticmethod
    def phase_of(ins: list[Tensor]) -> str:
        return "init" if all(t.phase == "init" for t in ins) else "run"

    def out(self, value: Value, fm: int | None, ins: list[Tensor]) -> Tensor:
        """The tensor an op writes its result `value` to."""
        t = self.new(value.dtype, value.shape, fm, self.phase_of(ins), value.name)
        self.set(value, t)
        return t

    def set(self, value: Value, t: Tensor) -> None:
        self._home[id(value)] = t
        self._views[(id(value), t.fm)] = t

    def temp(self, dtype: str, shape, fm: int | None, ins: list[Tensor], label: str) -> Tensor:
        return self.new(dtype, shape, fm, self.phase_of(ins), label)

    def weight(self, array: np.ndarray, label: str, key=None, shape=None) -> Tensor:
        """A tensor stored in weights.bin (`key` deduplicates)."""
        array = np.asarray(array)
        offset = self.weights.add(array, key)
        buf = self._buffer(array.nbytes, "weight", label)
        buf.offset = offset
        return self._tensor(dtype_name(array.dtype), array.shape if shape is None else shape, None, buf, label)

    def record_stored(self, value: Value, layout: str, parts: dict[str, tuple[Tensor, np.ndarray, np.ndarray]]) -> None:
        """Note that weights.bin holds constant `value` whole, in `layout`: `parts` maps each array's
        name to (its weight tensor, the array as written, the array as `layout`'s pack gave it)."""
        data = np.asarray(value.data)
        arrays = {name: (HEADER_BYTES + t.buffer.offset, str(w.dtype), tuple(w.shape), str(a.dtype))
                  for name, (t, w, a) in parts.items()}
        self.stored[value.name] = StoredWeight("c/weights.bin", layout, tuple(data.shape), str(data.dtype), arrays,
                                               {name: a for name, (_, _, a) in parts.items()})

    def home(self, value: Value) -> Tensor:
        t = self._home.get(id(value))
        if t is not None:
            return t
        if value.is_constant:
            data = np.asarray(value.data)
            if data.dtype == np.bool_:
                data = data.astype(np.uint8)
            t = self.weight(data, value.name, key=("value", id(value)), shape=value.shape)
            t.dtype = value.dtype
            if data is value.data:
                self.record_stored(value, "dense", {"data": (t, data, data)})
            self.set(value, t)
            return t
        raise TargetError(f"C backend: value {value.name!r} is used before it is computed")

    def get(self, value: Value, fm: int | None = None) -> Tensor:
        """`value` in layout `fm` (None: token-major), converting once if needed."""
        if fm is not None and (value.type.rank == 0 or fm >= value.type.rank):
            fm = None if value.type.rank == 0 else fm
        key = (id(value), fm)
        t = self._views.get(key)
        if t is not None:
            return t
        src = self.home(value)
        if src.fm == fm:
            return src
        if physical_order(value.shape, src.fm) == physical_order(value.shape, fm):
            t = self.alias(src, value.shape, fm, value.name)
        else:
            if src.fm is not None and fm is not None:
                src = self.get(value, None)
            t = self.new(value.dtype, value.shape, fm, self.phase_of([src]), value.name)
            self.convert(src, t)
        self._views[key] = t
        return t

    def convert(self, src: Tensor, dst: Tensor, kind: str = "layout") -> None:
        """dst = src in dst's layout (same shape)."""
        if src.dtype == "f32" and (src.fm is None) != (dst.fm is None):
            if src.fm is None:  # [T][F] -> [F][T]
                rows, cols = dst.T, dst.F
            else:
                rows, cols = src.F, src.T
            self.step("layout", [src], [dst], f"s4c_transpose({rows}, {cols}, {src.name}, {dst.name})",
                      kernel="s4c_transpose", note=f"{src.layout_name()} -> {dst.layout_name()}")
            return
        self.copy(src, dst, kind=kind)

    def copy(self, src: Tensor, dst: Tensor, kind: str = "copy") -> None:
        """dst = src (same shape and dtype, any layouts): a strided copy (memcpy when contiguous)."""
        if src.nbytes == 0:
            return
        if src.strides == dst.strides:
            self.step(kind, [src], [dst], f"memcpy({dst.name}, {src.name}, {src.nbytes})", kernel="memcpy")
            return
        n = nest(src.shape, [Access("y0", dst.strides), Access("x0", src.strides)], parallel=True)
        body = render(n, [f"y0[{n.index[0]}] = x0[{n.index[1]}];"])
        self.generic(kind, [src], [dst], body, note=f"{src.layout_name()} -> {dst.layout_name()}")

    # -- steps ---------------------------------------------------------------------------------
    def fn_name(self, kind: str) -> str:
        base = f"op{self.op_index}_{cnames.identifier(kind)}" if self.op_index >= 0 else f"s4c_{cnames.identifier(kind)}"
        name, k = base, 2
        while name in self._fn_names:
            name, k = f"{base}_{k}", k + 1
        self._fn_names.add(name)
        return name

    def step(self, kind: str, ins: list[Tensor], outs: list[Tensor], call: str, kernel: str | None = None,
             fails: bool = False, note: str = "", scratch: list[Tensor] | None = None,
             phase: str | None = None) -> Step:
        phase = phase or self.phase_of(ins)
        for t in outs:
            want = "init" if phase == "init" else "run"
            if t.phase != want:
                raise AssertionError(f"{t.name} ({t.buffer.kind}) written by a {phase} step")
        s = Step(phase, kind, kernel or kind, list(ins), list(outs), call, fails, self.op, note, list(scratch or []))
        self.steps.append(s)
        return s

    def generic(self, kind: str, ins: list[Tensor], outs: list[Tensor], body: list[str], fails: bool = False,
                note: str = "", phase: str | None = None) -> Step:
        """A generated function `opN_kind(const T *x0, ..., T *y0, ...)` with `body`, and the step calling it."""
        name = self.fn_name(kind)
        params = [f"const {t.ctype} *x{i}" for i, t in enumerate(ins)] + [f"{t.ctype} *y{i}" for i, t in enumerate(outs)]
        text = "\n".join(body)
        unused = [p.split("*")[1] for p in params if not _mentions(text, p.split("*")[1])]
        header = []
        s = self.step(kind, ins, outs, "", kernel=f"{name}", fails=fails, note=note, phase=phase)
        header.append(f"/* {s.comment()} */")
        header.append(f"static {'int' if fails else 'void'} {name}({', '.join(params) or 'void'})")
        lines = header + ["{"] + [f"    (void){u};" for u in unused] + body + (["    return 0;"] if fails else []) + ["}"]
        self.functions.append("\n".join(lines))
        s.call = f"{name}({', '.join(t.name for t in ins + outs)})"
        s.kernel = f"generated {kind}"
        return s

    # -- finishing -----------------------------------------------------------------------------
    def bind_outputs(self) -> None:
        """Make every graph output land in the caller's buffer (directly when its producer can
        write there, else by a final copy)."""
        self.op, self.op_index = None, -1
        bound: set[int] = set()
        self.input_tensors = []
        for i, v in enumerate(self.graph.inputs):
            self.input_tensors.append(self._home[id(v)])
        for j, v in enumerate(self.graph.outputs):
            t = self.get(v, None)
            b = t.buffer
            if b.kind == "arena" and b.id not in bound and b.nbytes == t.nbytes:
                b.kind, b.index = "output", j
                bound.add(b.id)
                self.output_tensors.append(t)
                continue
            buf = self._buffer(t.nbytes, "output", v.name, index=j)
            dst = self._tensor(v.dtype, v.shape, None, buf, v.name)
            if t.nbytes:
                self.step("copy", [t], [dst], f"memcpy({dst.name}, {t.name}, {t.nbytes})", kernel="memcpy",
                          note="graph output", phase="run")
            self.output_tensors.append(dst)

    def plan_memory(self) -> None:
        run = [s for s in self.steps if s.phase == "run"]
        init = [s for s in self.steps if s.phase == "init"]
        self.steps = init + run
        for i, s in enumerate(init):
            s.index = i
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for i, s in enumerate(run):
            s.index = i
            for t in s.outs + s.scratch:
                first.setdefault(t.buffer.id, i)
                last[t.buffer.id] = max(last.get(t.buffer.id, i), i)
            for t in s.ins + s.scratch:
                if t.buffer.id in first:
                    last[t.buffer.id] = max(last[t.buffer.id], i)
        arena = [b for b in self.buffers if b.kind == "arena" and b.id in first]
        plan = plan_arena([Interval(b.id, b.nbytes, first[b.id], last[b.id]) for b in arena], ALIGN)
        for b in arena:
            b.offset = plan.offsets[b.id]
        self.arena_plan = plan

    @property
    def run_steps(self) -> list[Step]:
        return [s for s in self.steps if s.phase == "run"]

    @property
    def init_steps(self) -> list[Step]:
        return [s for s in self.steps if s.phase == "init"]


def _mentions(text: str, name: str) -> bool:
    import re

    return re.search(rf"\b{re.escape(name)}\b", text) is not None
