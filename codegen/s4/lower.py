"""Graph -> S4 program: planning, memory placement, kernel emission, scheduling, assembly.

    lowered = lower(graph, {"cores": 4})
    lowered.program, lowered.io, lowered.stats

1. **Prepare** a copy of the graph: ops whose operands are all constants are evaluated (weight
   dequantisation, folded shape arithmetic); int8 weights (DequantizeWeight) end up fp32.
2. **Kernels.** Every op gets a kernel (kernels.py; the generic ones in movement.py, gather.py,
   elementwise.py, reductions.py, matmul.py) or a TargetError naming op and node.
   Row kernels (Linear, SkipLayerNorm, LayerNorm, MultiHeadAttention, Embedding, elementwise ops
   on token matrices) work on the rows of a [R, C] view of their tensors, split across the cores
   (`row_partition`); generic kernels read and write DRAM.
3. **SRAM residency.** A token matrix produced and consumed only by row kernels stays in SRAM: on
   each core the rows that core owns, at the same offset on every core. Offsets come from the
   liveness planner (codegen/memory_plan.py) over op indices; when the plan exceeds the budget the
   largest value live at the peak is demoted to DRAM and the plan redone. The rest of SRAM is each
   core's scratch area (emit.Scratch) for tiles.
4. **DRAM.** Constant segment at 0 (weights packed per layout and output tile, weights.py), then
   the model inputs and outputs (symbols), then the activations that need DRAM, placed by the
   liveness planner with reuse (the report gives the peak and the sum without reuse).
5. **Emission** of every op's kernel in program order, then the dependency analysis (deps.py), the
   list scheduler with the semaphores (schedule.py), and the Program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from s4c import ops as irops
from s4c.errors import S4CError, TargetError
from s4c.ir import Graph, Value
from s4c.ranges import integer_ranges
from s4c.s4 import DebugEntry, Program, Symbol, load_machine
from s4c.s4.isa import KINDS
from s4c.codegen.memory_plan import Interval, plan_arena

from .deps import dependencies
from .emit import SIZE, Emitter, Region, Scratch, rup
from .schedule import schedule
from .weights import ConstSegment

VBASE = 1 << 40          # DRAM addresses of non-constant data are emitted relative to this, then relocated
S4DT = {"f32": "f32", "f16": "f32", "f64": "f32", "i64": "i32", "i32": "i32", "i16": "i32", "i8": "i8",
        "u8": "u8", "u16": "u16", "bool": "u8"}
ALIAS_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
SUB_BLOCKS = 2           # work units per residency block (sentence)
SKEW = 1.25               # scheduling rank of (op, block) = op + SKEW * block
MIN_SCRATCH = 3 << 20    # SRAM bytes per core kept for tiles whatever the residency plan wants
WEIGHT_TILE_BYTES = 768 << 10   # packed weight bytes per output tile (MIN_SCRATCH holds several)
_SYM_BAD = re.compile(r"[^A-Za-z0-9_.:/\-\[\]]")


def s4_dtype(irdt: str, what: str) -> str:
    if irdt not in S4DT:
        raise TargetError(f"S4 lowering: {what} has dtype {irdt}, which the S4 backend does not carry "
                          f"(supported: {', '.join(S4DT)})")
    return S4DT[irdt]


@dataclass(eq=False)
class VInfo:
    v: Value
    irdt: str
    dt: str
    shape: tuple
    n: int
    kind: str                       # const | input | temp
    root: "VInfo | None" = None
    dram: int | None = None         # const address, or VBASE-relative address
    resident: bool = False
    needs_dram: bool = False
    const_array: np.ndarray | None = None
    producer: int = -1
    last_use: int = -1
    sram_off: int = 0
    out_symbol: str | None = None

    @property
    def name(self) -> str:
        return self.v.name

    @property
    def R(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1

    @property
    def C(self) -> int:
        return int(self.shape[-1]) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.n * SIZE[self.dt]

    def region(self) -> Region:
        """The whole tensor in DRAM as [R, C] (packed rows)."""
        assert self.dram is not None, f"value {self.name!r} has no DRAM home"
        return Region.dram(self.dram, self.R, self.C, self.dt)


@dataclass
class RowInfo:
    """How a row kernel uses an op: its [R, C] output view and the inputs it reads row-locally."""
    R: int
    local: tuple = ()              # input indices read as local rows (resident allowed)
    dram_too: tuple = ()           # of those, inputs also read from DRAM (e.g. K/V across cores)


@dataclass
class Lowered:
    program: Program
    io: dict
    stats: dict = field(default_factory=dict)
    op_names: list = field(default_factory=list)
    graph: Graph | None = None


def row_partition(R: int, cores: int, unit: int = 1, min_rows: int = 8) -> list[tuple[int, int]]:
    """Rows [r0, r1) of each core (empty ranges for idle cores). With a sentence length `unit`
    and at least one sentence per core the cut falls between sentences."""
    if R <= 0:
        return [(0, 0)] * cores
    if unit > 1 and R % unit == 0 and R // unit >= cores:
        units = R // unit
        bounds = [round(c * units / cores) * unit for c in range(cores + 1)]
        return [(bounds[c], bounds[c + 1]) for c in range(cores)]
    k = max(1, min(cores, R // max(min_rows, 1)))
    step = -(-R // k)
    step = -(-step // 8) * 8 if step > 8 else step
    out = []
    for c in range(cores):
        r0, r1 = min(R, c * step), min(R, (c + 1) * step)
        out.append((r0, r1) if c < k else (R, R))
    return out


def prepare(graph: Graph) -> Graph:
    """A copy of `graph` with every op whose operands are all constants evaluated."""
    g = graph.clone()
    kept = []
    for op in g.ops:
        args = [v for v in op.inputs if v is not None]
        if op.op not in ("ConstantOfShape",) and (not args or not all(v.is_constant for v in args)):
            kept.append(op)
            continue
        try:
            results = irops.REGISTRY[op.op].run([v.data if v is not None else None for v in op.inputs], op.attrs)
        except Exception as e:  # noqa: BLE001 - the model's own failure, reported as such
            raise S4CError(f"evaluating constant op {op.describe()}: {type(e).__name__}: {e}") from None
        for v, r in zip(op.outputs, results):
            v.data = np.asarray(r).astype(np.dtype(irops_dtype(v.type.dtype)), copy=False) if v.type.dtype != "bf16" else r
            v.producer = None
    g.ops = kept
    return g


def irops_dtype(name: str):
    from s4c.ir import numpy_dtype
    return numpy_dtype(name)


class Lowering:
    def __init__(self, graph: Graph, options: dict | None = None):
        from . import kernels  # noqa: F401  (registries)
        self.opts = dict(options or {})
        self.m = load_machine(self.opts.get("machine") or "s4v1")
        cores = self.opts.get("cores") or 4
        try:
            cores = int(cores)
        except (TypeError, ValueError):
            raise TargetError(f"--cores must be an integer, not {cores!r}") from None
        if not 1 <= cores <= self.m.n_cores:
            raise TargetError(f"--cores {cores}: the S4 machine {self.m.name} has 1..{self.m.n_cores} cores")
        self.cores = cores
        self.g = prepare(graph)
        # integers provably below 2^24 compute exactly on the fp32 VPU (positions, masks, token types)
        self.int_ranges = integer_ranges(self.g)
        self.const = ConstSegment()
        self.em = Emitter(self.m, cores, self.opts.get("precision", "mixed"))
        self.infos: dict[int, VInfo] = {}
        self.kern: list = []
        self.rowinfo: list[RowInfo | None] = []
        self.temp_dram: dict[int, int] = {}      # op index -> VBASE-relative scratch DRAM
        self.temp_req: dict[int, int] = {}
        self.sentence = 1
        self.sub = int(self.opts.get("sub_blocks", SUB_BLOCKS))
        self.stats: dict = {}
        self._packed: dict = {}

    # -- values ------------------------------------------------------------------------------------
    def info(self, v: Value) -> VInfo:
        return self.infos[id(v)]

    def _make_infos(self) -> None:
        g = self.g
        for v in g.values():
            if v is None or id(v) in self.infos:
                continue
            kind = "const" if v.is_constant else ("input" if any(v is x for x in g.inputs) else "temp")
            what = f"value {v.name!r}"
            dt = s4_dtype(v.dtype, what)
            self.infos[id(v)] = VInfo(v, v.dtype, dt, tuple(v.shape), int(np.prod(v.shape, dtype=np.int64)), kind)
        for info in self.infos.values():
            info.root = info
        for i, op in enumerate(g.ops):
            for v in op.outputs:
                self.info(v).producer = i
            for v in op.inputs:
                if v is not None:
                    self.info(v).last_use = i

    def root(self, v: Value) -> VInfo:
        info = self.info(v)
        while info.root is not info:
            info = info.root
        return info

    def const_addr(self, info: VInfo) -> int:
        """DRAM address of a constant operand (stored in its S4 dtype, once)."""
        if info.dram is None:
            data = np.asarray(info.v.data)
            info.const_array = to_storage(data, info.dt)
            info.dram = self.const.add(info.const_array)
        return info.dram

    def dram_of(self, v: Value) -> Region:
        """The value as [R, C] in DRAM (constants are placed on first use)."""
        info = self.root(v) if not self.info(v).v.is_constant else self.info(v)
        if info.kind == "const":
            self.const_addr(info)
        me = self.info(v)
        if info.dram is None:
            raise AssertionError(f"value {v.name!r} has no DRAM home (resident only)")
        return Region.dram(info.dram, me.R, me.C, me.dt)

    def const_array(self, v: Value) -> np.ndarray | None:
        return np.asarray(v.data) if v is not None and v.is_constant else None

    # -- partitions --------------------------------------------------------------------------------
    def part(self, R: int) -> list[tuple[int, int]]:
        unit = self.sentence if R % max(self.sentence, 1) == 0 and R >= self.sentence else 1
        return row_partition(R, self.cores, unit)

    def generic_part(self, R: int, min_rows: int = 64) -> list[tuple[int, int]]:
        return row_partition(R, self.cores, 1, min_rows)

    # -- SRAM helpers used by kernels ----------------------------------------------------------------
    def scratch(self, core: int) -> Scratch:
        return self.em.scratch[core]

    def blocks(self, R: int, core: int) -> list[tuple[int, int]]:
        """The row blocks of core's share of an [R, C] token matrix: one per sentence when the
        core holds whole sentences (kernels work block by block, and residency is planned per
        block, so a block's buffer is free for the next op as soon as that block is done), else
        the core's whole share."""
        p0, p1 = self.part(R)[core]
        if p1 <= p0:
            return []
        s = self.sentence
        if s > 1 and R % s == 0 and p0 % s == 0 and (p1 - p0) % s == 0 and p1 - p0 > s:
            return [(r, r + s) for r in range(p0, p1, s)]
        return [(p0, p1)]

    def row_tiles(self, R: int, core: int, max_rows: int) -> list[tuple[int, int]]:
        """Core's rows of the current op, cut at block boundaries and into at most `max_rows`
        rows (row kernels: the residency blocks; other ops: the generic split)."""
        if self.rowinfo[self.em.op_index] is not None:
            ranges = []
            for b0, b1 in self.blocks(R, core):
                ranges += self.sub_blocks(b0, b1)
        else:
            p0, p1 = self.generic_part(R)[core]
            ranges = [(p0, p1)] if p1 > p0 else []
        out = []
        step = max(1, max_rows)
        for b0, b1 in ranges:
            out += [(r, min(b1, r + step)) for r in range(b0, b1, step)]
        return out

    def sub_blocks(self, b0: int, b1: int) -> list[tuple[int, int]]:
        """A block cut into SUB parts (multiples of 8 rows): the units of work kernels emit, so
        several independent chains per core keep the SPU and VPU busy at the same time."""
        n = b1 - b0
        k = max(1, min(self.sub, n // 8))
        step = -(-n // k)
        step = -(-step // 8) * 8
        return [(r, min(b1, r + step)) for r in range(b0, b1, step)]

    def set_block(self, R: int, core: int, r0: int) -> None:
        """Tag the instructions emitted next with the (sub-)block holding row r0 (scheduling rank)."""
        for b, (b0, b1) in enumerate(self.blocks(R, core)):
            if b0 <= r0 < b1:
                subs = self.sub_blocks(b0, b1)
                j = next((i for i, (s0, s1) in enumerate(subs) if s0 <= r0 < s1), 0)
                self.em.block = b * self.sub + j
                return
        self.em.block = 0

    def resident_rows(self, v: Value, core: int, r0: int, r1: int) -> Region | None:
        info = self.root(v)
        me = self.info(v)
        if not info.resident or me.C != info.C or r1 <= r0:
            return None
        for b, (b0, b1) in enumerate(self.blocks(info.R, core)):
            if b0 <= r0 and r1 <= b1:
                base = self.sram_base + info.sram_off[b]
                pitch = rup(info.C * 4)
                return Region("sram", base + (r0 - b0) * pitch, r1 - r0, info.C, pitch, "f32", core)
        return None

    def src_rows(self, core: int, v: Value, r0: int, r1: int, f32: bool = True) -> tuple[Region, bool]:
        """Rows [r0, r1) of v's [R, C] view in core's SRAM: the resident rows, or a scratch tile
        loaded from DRAM (converted to f32 when `f32`). Returns (region, owned)."""
        res = self.resident_rows(v, core, r0, r1)
        if res is not None:
            return res, False
        src = self.dram_of(v).sub(r0, r1 - r0)
        tile = self.scratch(core).tile(r1 - r0, src.cols, src.dt)
        self.em.ld(core, tile, src)
        if f32 and src.dt != "f32":
            conv = self.scratch(core).tile(r1 - r0, src.cols, "f32")
            self.em.cvt(core, conv, tile)
            self.scratch(core).release(tile)
            return conv, True
        return tile, True

    def dst_rows(self, core: int, v: Value, r0: int, r1: int) -> tuple[Region, bool]:
        """Where to compute rows [r0, r1) of v (f32): its resident rows or a scratch tile."""
        res = self.resident_rows(v, core, r0, r1)
        if res is not None:
            return res, False
        return self.scratch(core).tile(r1 - r0, self.info(v).C, "f32"), True

    def commit_rows(self, core: int, v: Value, tile: Region, r0: int, r1: int, owned: bool) -> None:
        """Store computed rows to v's DRAM home when it has one (converting from f32)."""
        info = self.root(v)
        if info.dram is not None and (info.needs_dram or not info.resident):
            dst = self.dram_of(v).sub(r0, r1 - r0)
            src = tile
            conv = None
            if dst.dt != tile.dt:
                conv = self.scratch(core).tile(tile.rows, tile.cols, dst.dt)
                self.em.cvt(core, conv, tile)
                src = conv
            self.em.st(core, dst, src)
            self.scratch(core).release(conv)
        if owned:
            self.scratch(core).release(tile)

    def load_vector(self, core: int, v: Value, f32: bool = True, start: int = 0, count: int | None = None) -> Region:
        """Elements [start, start+count) of v (flat) as a packed vector in scratch."""
        info = self.info(v)
        count = info.n - start if count is None else count
        base = self.dram_of(v).addr + start * SIZE[info.dt]
        tile = self.scratch(core).tile(1, count, info.dt)
        self.em.ld(core, tile, Region.dram(base, 1, count, info.dt))
        if f32 and info.dt != "f32":
            conv = self.scratch(core).tile(1, count, "f32")
            self.em.cvt(core, conv, tile)
            return conv
        return tile

    def const_vector(self, core: int, array: np.ndarray, dt: str = "f32") -> Region:
        """A compile-time vector loaded into core's scratch (packed)."""
        arr = to_storage(np.asarray(array).reshape(-1), dt)
        key = ("vec", dt, arr.tobytes()) if arr.size <= 4096 else None
        addr = self.const.add(arr, key=key)
        tile = self.scratch(core).tile(1, arr.size, dt)
        self.em.ld(core, tile, Region.dram(addr, 1, arr.size, dt))
        return tile

    def const_region(self, array: np.ndarray, dt: str) -> Region:
        arr = to_storage(np.asarray(array), dt)
        arr2 = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr.reshape(1, -1)
        addr = self.const.add(arr2)
        return Region.dram(addr, arr2.shape[0], arr2.shape[1], dt)

    def rows_mode(self, R: int) -> bool:
        """Whether a Linear over R token rows splits its rows across the cores (at least one
        sentence per core) rather than its output features (tensor parallel)."""
        if self.cores == 1:
            return True
        unit = self.sentence if self.sentence > 1 and R % self.sentence == 0 else 1
        return R // unit >= self.cores

    def packed_linear(self, op, min_tiles: int = 1):
        """The weight of a Linear (or a MatMul by a constant) packed in its layout, cut into output
        tiles sized for this core's scratch area (once per weight and layout)."""
        from .weights import pack_linear
        w = op.inputs[1]
        layout = op.attrs.get("layout", "dense") if op.op == "Linear" else "dense"
        key = (id(w), layout, op.op, min_tiles)
        if key not in self._packed:
            W = np.asarray(w.data, dtype=np.float32)
            if op.op != "Linear":
                W = np.ascontiguousarray(W.T)
            budget = WEIGHT_TILE_BYTES
            self._packed[key] = pack_linear(W, layout, self.const, budget, key=(id(w), op.op),
                                            max_rows=-(-W.shape[0] // min_tiles))
        return self._packed[key]

    # -- planning ------------------------------------------------------------------------------------
    def _select_kernels(self) -> None:
        from .kernels import KERNELS
        for op in self.g.ops:
            if op.op == "MultiHeadAttention":
                self.sentence = op.inputs[0].shape[1]
                break
        for i, op in enumerate(self.g.ops):
            kernel = KERNELS.get(op.op)
            if kernel is None:
                where = f" (ONNX node {op.onnx_nodes[0]!r})" if op.onnx_nodes else ""
                raise TargetError(f"S4 lowering: op {op.op} -> {op.outputs[0].name!r}{where} has no S4 kernel")
            kernel.check(self, op)
            self.kern.append(kernel)
            self.rowinfo.append(kernel.row_info(self, op))
            need = kernel.temp_dram(self, op)
            if need:
                self.temp_req[i] = need

    def _plan_aliases(self) -> None:
        for i, op in enumerate(self.g.ops):
            if op.op in ALIAS_OPS and op.inputs[0] is not None:
                src, dst = self.info(op.inputs[0]), self.info(op.outputs[0])
                if src.dt == dst.dt and src.n == dst.n:
                    dst.root = self.root(op.inputs[0])

    def _plan_residency(self) -> None:
        g = self.g
        outputs = {id(v) for v in g.outputs}
        users: dict[int, list[tuple[int, int]]] = {}
        for i, op in enumerate(g.ops):
            for j, v in enumerate(op.inputs):
                if v is not None:
                    users.setdefault(id(self.root(v)), []).append((i, j))
        cands = []
        for i, op in enumerate(g.ops):
            ri = self.rowinfo[i]
            for v in op.outputs:
                info = self.info(v)
                if info.root is not info or info.kind != "temp":
                    continue
                uses = users.get(id(info), [])
                aliased = any(self.info(x).root is info and x is not v for x in self._values_with_root(info))
                local_ok = (ri is not None and info.dt == "f32" and info.irdt == "f32" and id(v) not in outputs
                            and not aliased and uses and info.R == ri.R)
                dram = id(v) in outputs or ri is None or aliased or not uses
                for (u, j) in uses:
                    uri = self.rowinfo[u]
                    if uri is None or j not in uri.local or uri.R != info.R:
                        local_ok = False
                        dram = True
                    elif j in uri.dram_too:
                        dram = True
                info.needs_dram = dram or not local_ok
                if local_ok and self.opts.get("residency", True):
                    cands.append(info)
        # liveness plan of the candidates, per row block (the widest core's block sizes), over
        # steps = (op, block): a block-sequential op handles block b at step op*NB + b; an op that
        # interleaves its blocks (a Linear whose weight tiles stream past every block) spans all
        nb_max = max([len(self.blocks(info.R, c)) for info in cands for c in range(self.cores)] + [1])
        inter = [self.kern[i].interleaved(self, op) for i, op in enumerate(g.ops)]
        users_of = {id(info): [u for u, _ in users.get(id(info), [])] for info in cands}

        def span(op_index, b, nb, first):
            if inter[op_index] or nb == 1:
                return op_index * nb_max + (0 if first else nb_max - 1)
            return op_index * nb_max + b

        # each block index is its own lane: a block's buffers only ever reuse dead buffers of the
        # same block, so an op on block 0 never waits for the previous op still reading block 1
        budget = self.m.sram_bytes - MIN_SCRATCH
        while True:
            lanes: dict[int, list] = {}
            sizes: dict[int, int] = {}
            for info in cands:
                blocks = [self.blocks(info.R, c) for c in range(self.cores)]
                nb = max(len(b) for b in blocks)
                for b in range(nb):
                    rows = max((bl[b][1] - bl[b][0]) for bl in blocks if len(bl) > b)
                    start = span(info.producer, b, nb, True)
                    end = max([span(u, b, nb, False) for u in users_of[id(info)]] + [start])
                    if self.sub > 1 and self.opts.get("lane_slack", False):
                        end += nb_max           # the next op's sub-blocks overlap this op's last ones
                    size = rows * rup(info.C * 4)
                    lanes.setdefault(b, []).append(Interval((id(info), b), size, start, end))
                    sizes[id(info)] = sizes.get(id(info), 0) + size
            offsets, peak = {}, 0
            for b in sorted(lanes):
                plan = plan_arena(lanes[b], self.m.align)
                for key, off in plan.offsets.items():
                    offsets[key] = peak + off
                peak += plan.peak
            if peak <= budget or not cands:
                break
            # demote the largest value
            worst = max(cands, key=lambda x: (sizes[id(x)], -x.producer))
            cands.remove(worst)
            worst.needs_dram = True
        for info in cands:
            info.resident = True
            nb = max(len(self.blocks(info.R, c)) for c in range(self.cores))
            info.sram_off = [offsets[(id(info), b)] for b in range(nb)]
        self.sram_base = 0
        self.resident_peak = peak if cands else 0
        self.stats["sram_resident_values"] = len(cands)
        self.stats["sram_resident_peak"] = self.resident_peak

    def _values_with_root(self, info: VInfo):
        return [i.v for i in self.infos.values() if i.root is info]

    def _plan_dram(self) -> None:
        g = self.g
        # inputs and outputs: symbols, never reused
        cursor = 0
        self.io_in: list[tuple[VInfo, int]] = []
        for v in g.inputs:
            info = self.info(v)
            if info.n == 0:
                continue
            info.dram = VBASE + cursor
            self.io_in.append((info, info.dram))
            cursor = rup(cursor + info.nbytes)
        self.io_out: list[dict] = []
        taken: set[int] = set()
        for k, v in enumerate(g.outputs):
            info = self.info(v)
            root = self.root(v)
            entry = {"value": v, "info": info, "addr": None, "copy_from": None}
            if info.n == 0:
                self.io_out.append(entry)
                continue
            if root.kind == "temp" and id(root) not in taken and root.dt == info.dt:
                root.dram = VBASE + cursor
                root.needs_dram = True
                taken.add(id(root))
                entry["addr"] = root.dram
            else:
                entry["addr"] = VBASE + cursor
                entry["copy_from"] = v
            self.io_out.append(entry)
            cursor = rup(cursor + info.nbytes)
        self.io_bytes = cursor
        # activations: liveness over op indices, with reuse
        ivs = []
        by_id = {}
        last = len(g.ops)
        for info in self.infos.values():
            if info.root is not info or info.kind != "temp" or info.dram is not None:
                continue
            if info.n == 0 or not (info.needs_dram or not info.resident):
                continue
            end = info.last_use
            for other in self.infos.values():
                if other.root is info:
                    end = max(end, other.last_use)
            if any(self.root(v) is info for v in g.outputs):
                end = last
            by_id[id(info)] = info
            ivs.append(Interval(("v", id(info)), info.nbytes, info.producer, max(end, info.producer)))
        for i, nbytes in self.temp_req.items():
            ivs.append(Interval(("t", i), nbytes, i, i))
        plan = plan_arena(ivs, self.m.align)
        base = cursor
        for iv in ivs:
            kind, key = iv.key
            if kind == "v":
                by_id[key].dram = VBASE + base + plan.offsets[iv.key]
            else:
                self.temp_dram[key] = VBASE + base + plan.offsets[iv.key]
        self.data_bytes = base + plan.peak
        self.stats["dram_activation_peak"] = plan.peak
        self.stats["dram_activation_total"] = plan.total
        self.stats["dram_io_bytes"] = cursor

    # -- emission ------------------------------------------------------------------------------------
    def run(self) -> Lowered:
        self._make_infos()
        self._select_kernels()
        self._plan_aliases()
        self._plan_residency()
        self._plan_dram()
        scratch_lo = rup(self.sram_base + self.resident_peak)
        self.em.scratch = [Scratch(c, scratch_lo, self.m.sram_bytes) for c in range(self.cores)]
        self.scratch_lo = scratch_lo
        g = self.g
        debug = {}
        self.op_names = []
        for i, op in enumerate(g.ops):
            name = f"{i}:{op.op}:{op.outputs[0].name}"[:200]
            self.op_names.append(name)
            debug[i] = DebugEntry(name, op.onnx_nodes[0] if op.onnx_nodes else "")
            self.em.begin_op(i, i)
            self.kern[i].emit(self, op)
            for c in range(self.cores):
                self.scratch(c).release_all()
        # outputs that are inputs, constants or another output's value: copied
        copy_id = len(g.ops)
        for entry in self.io_out:
            if entry["copy_from"] is not None:
                debug[copy_id] = DebugEntry(f"{copy_id}:output-copy:{entry['value'].name}"[:200], "")
                self.em.begin_op(copy_id, copy_id)
                from .movement import copy_dram
                copy_dram(self, self.dram_of(entry["copy_from"]), Region.dram(entry["addr"], self.info(entry["value"]).R,
                                                                               self.info(entry["value"]).C,
                                                                               self.info(entry["value"]).dt))
                for c in range(self.cores):
                    self.scratch(c).release_all()
                copy_id += 1
        return self._assemble(debug)

    def _assemble(self, debug) -> Lowered:
        m = self.m
        const = self.const.pieces()
        const_end = rup(len(const), m.align)
        data_base = const_end
        nodes = [(core, relocate(ins, data_base)) for core, ins in self.em.nodes]
        dram_size = rup(data_base + self.data_bytes + m.align, m.align)
        preds = dependencies(nodes, m, self.cores, const_end, dram_size)
        rank = [o + SKEW * b for o, b in zip(self.em.op_of, self.em.block_of)]
        self.sched_debug = {"preds": preds, "nodes": nodes} if self.opts.get("debug_schedule") else None
        streams, est = schedule(nodes, preds, m, self.cores, rank=rank, debug=self.sched_debug)
        symbols = []
        names: set[str] = set()
        io = {"inputs": [], "outputs": []}
        for info in (i for i in (self.info(v) for v in self.g.inputs)):
            sym = None
            if info.n:
                sym = unique_symbol(info.name, names)
                symbols.append(Symbol(sym, "input", info.dram - VBASE + data_base, info.dt, info.shape))
            io["inputs"].append({"name": info.name, "symbol": sym, "irdt": info.irdt, "dt": info.dt,
                                 "shape": list(info.shape)})
        for entry in self.io_out:
            info = entry["info"]
            sym = None
            if info.n:
                sym = unique_symbol(info.name, names)
                symbols.append(Symbol(sym, "output", entry["addr"] - VBASE + data_base, info.dt, info.shape))
            io["outputs"].append({"name": entry["value"].name, "symbol": sym, "irdt": info.irdt, "dt": info.dt,
                                  "shape": list(info.shape)})
        program = Program(m, streams, const, dram_size, symbols, debug)
        self.stats.update({
            "instructions": sum(len(s) for s in streams),
            "kernel_instructions": len(nodes),
            "schedule_estimate_cycles": est,
            "const_bytes": len(const),
            "dram_size": dram_size,
            "sram_scratch_high": max((s.high for s in self.em.scratch), default=0),
        })
        return Lowered(program, io, self.stats, self.op_names, self.g)


def relocate(ins, data_base: int):
    """Instructions address non-constant DRAM as VBASE + offset until the constant segment's size is
    known; this rebases them to data_base + offset."""
    spec = ins.spec
    args = list(ins.args)
    changed = False
    for k, f in enumerate(spec.fields):
        if f.kind == "dram" and args[k] >= VBASE:
            args[k] = args[k] - VBASE + data_base
            changed = True
    if not changed:
        return ins
    return type(ins)(ins.op, tuple(args), ins.dbg)


def unique_symbol(name: str, taken: set) -> str:
    base = _SYM_BAD.sub("_", name)[:200] or "v"
    if not re.match(r"[A-Za-z_]", base[0]):
        base = "v_" + base
    sym, k = base, 1
    while sym in taken:
        sym = f"{base}.{k}"
        k += 1
    taken.add(sym)
    return sym


def to_storage(array: np.ndarray, dt: str) -> np.ndarray:
    """A host array in the S4 storage dtype `dt` (bool -> u8 0/1, i64 -> i32 range-checked, floats -> f32)."""
    a = np.asarray(array)
    if dt == "f32":
        return np.ascontiguousarray(a, dtype=np.float32)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    target = {"i32": np.int32, "i8": np.int8, "u8": np.uint8, "u16": np.uint16}[dt]
    if a.dtype.kind == "f":
        a = np.trunc(a)
    info = np.iinfo(target)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise TargetError(f"S4 lowering: integer constant outside the {dt} range the S4 backend stores "
                          f"[{info.min}, {info.max}]")
    return np.ascontiguousarray(a.astype(target))


def lower(graph: Graph, options: dict | None = None) -> Lowered:
    return Lowering(graph, options).run()


__all__ = ["lower", "Lowered", "Lowering", "row_partition", "to_storage", "VBASE", "S4DT"]
