"""Planning the S4 lowering: what runs where, before any instruction is written.

    plan = Plan(graph, {"cores": 4}); plan.make()       # S4Program (program.py) is a Plan

1. **Constants**: a copy of the graph without ops on constants only (`evaluate_constant_ops`:
   the fold-constants pass, and the int8 weights' dequantisation that pass leaves); the
   integer ranges (s4c.ranges) that let the fp32 VPU compute small integers exactly.
2. **Values**: every IR value's `VInfo` (S4 storage dtype, [R, C] view, producer, last use).
3. **Kernels**: every op's kernel from the registry (base.KERNELS, filled by the kernel modules
   imported here) or a TargetError naming op and node; its `check`, `row_info` (row kernels work
   on the rows of a [R, C] view, split across the cores: `row_partition`) and DRAM scratch need.
4. **Aliases**: Reshape & co. share their operand's memory (base.ALIAS_OPS).
5. **SRAM residency**: a token matrix produced and consumed only by row kernels stays in SRAM:
   on each core the rows that core owns, at the same offset on every core. Offsets come from the
   liveness planner (codegen/memory_plan.py) over (op, block) steps; when the plan exceeds the
   budget the largest value live at the peak is demoted to DRAM and the plan redone. The rest of
   SRAM is each core's scratch area (stream.Scratch) for tiles.
6. **DRAM**: the constant segment at 0 (constants.py: constants placed on first use, Linear
   weights packed per layout and output tile), then the model inputs and outputs (symbols), then
   the activations that need DRAM, placed by the liveness planner with reuse (the report gives the
   peak and the sum without reuse). Non-constant addresses are VBASE-relative until the constant
   segment's size is known (lower.relocate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s4c import ops as irops
from s4c.codegen.memory_plan import Interval, plan_arena
from s4c.errors import S4CError, TargetError
from s4c.ir import Graph, Value, numpy_dtype
from s4c.passes.fold_constants import FoldConstants, is_weight_dequantization
from s4c.ranges import integer_ranges
from s4c.s4 import load_machine

# the kernel modules register their kernels in base.KERNELS on import
from . import elementwise, gather, linear, matmul, movement, quant, reductions, transformer  # noqa: F401
from .base import ALIAS_OPS, KERNELS, S4DT, SIZE, RowInfo, no_kernel, rup
from .constants import ConstSegment, pack_linear, to_storage
from .stream import Region

VBASE = 1 << 40          # DRAM addresses of non-constant data are emitted relative to this, then relocated
SUB_BLOCKS = 2           # work units per residency block (sentence)
MIN_SCRATCH = 3 << 20    # SRAM bytes per core kept for tiles whatever the residency plan wants
WEIGHT_TILE_BYTES = 768 << 10   # packed weight bytes per output tile (MIN_SCRATCH holds several)


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
    elided: bool = False            # never stored (an int8 graph's requantised GEMM result, quant.py)

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


def first_fit_by_start(intervals: list[Interval], alignment: int) -> tuple[dict, int]:
    """(offsets, peak) of `intervals` placed in program order (start, then larger first), each at
    the lowest offset clear of the live ones placed before it. plan_arena's size-ordered greedy
    leaves holes when a block's values are a few similar sizes (BERT-base int8 at batch 16: 1.77
    MB per 128-token block where this needs 1.28 MB for a 1.18 MB lower bound)."""
    order = sorted(range(len(intervals)), key=lambda i: (intervals[i].start, -intervals[i].size, i))
    placed: list[tuple[int, Interval]] = []
    offsets: dict = {}
    peak = 0
    for i in order:
        iv = intervals[i]
        size = rup(iv.size, alignment)
        offset = 0
        for off, other in placed:
            if not iv.overlaps(other):
                continue
            if off >= offset + size:
                break
            offset = max(offset, rup(off + other.size, alignment))
        offsets[iv.key] = offset
        placed.append((offset, iv))
        placed.sort(key=lambda p: p[0])
        peak = max(peak, offset + size)
    return offsets, peak


def evaluate_constant_ops(graph: Graph) -> Graph:
    """A copy of `graph` without ops whose operands are all constants. The folding is the
    fold-constants pass's (a no-op after the pipelines, which run it; `execute` lowers graphs as
    they are). What that pass leaves on purpose, an 8-bit weight's dequantisation, is evaluated
    here by the op's reference (s4c.ops): the S4 stores weights fp32."""
    g = graph.clone()
    folder = FoldConstants()
    while True:
        folder.run(g)
        if not _dequantize_constant_weights(g):
            return g


def _dequantize_constant_weights(g: Graph) -> bool:
    kept, changed = [], False
    for op in g.ops:
        if not (all(v is not None and v.is_constant for v in op.inputs) and is_weight_dequantization(op)):
            kept.append(op)
            continue
        try:
            results = irops.REGISTRY[op.op].run([v.data for v in op.inputs], op.attrs)
        except Exception as e:  # noqa: BLE001 - the model's own failure, reported as such
            raise S4CError(f"evaluating constant op {op.describe()}: {type(e).__name__}: {e}") from None
        for v, r in zip(op.outputs, results):
            v.data = np.asarray(r).astype(numpy_dtype(v.type.dtype), copy=False)
            v.producer = None
        changed = True
    if changed:
        g.ops = kept
    return changed


class Plan:
    """The lowering's decisions about a graph (module docstring); `make()` takes them. Kernels get
    the plan (as `L`) in check / row_info / temp_dram / interleaved, and the S4Program that
    extends it in emit."""

    def __init__(self, graph: Graph, options: dict | None = None):
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
        self.g = evaluate_constant_ops(graph)
        # an int8 graph (quantize-int8: LinearInt8 / QuantizeInt8) is lowered as it computes (quant.py)
        self.int8 = any(op.op in quant.INT8_OPS for op in self.g.ops)
        # integers provably below 2^24 compute exactly on the fp32 VPU (positions, masks, token types)
        self.int_ranges = integer_ranges(self.g)
        self.const = ConstSegment()
        self.infos: dict[int, VInfo] = {}
        self.kern: list = []
        self.rowinfo: list[RowInfo | None] = []
        self.temp_dram: dict[int, int] = {}      # op index -> VBASE-relative scratch DRAM
        self.temp_req: dict[int, int] = {}
        self.sentence = 1
        self.sub = int(self.opts.get("sub_blocks", SUB_BLOCKS))
        self.stats: dict = {}
        self._packed: dict = {}
        self.fused_quant: dict = {}     # id(LinearInt8) <-> QuantizeInt8 it requantises into (quant.py)


    def make(self) -> None:
        """Kernels, aliases, SRAM residency, DRAM placement (in this order)."""
        self._make_infos()
        self._select_kernels()
        self._plan_aliases()
        self._plan_residency()
        self._plan_dram()

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
        if self.int8:
            quant.plan_storage(self)

    def root(self, v: Value) -> VInfo:
        info = self.info(v)
        while info.root is not info:
            info = info.root
        return info

    def const_addr(self, info: VInfo) -> int:
        """DRAM address of a constant operand (stored in its S4 dtype, once)."""
        if info.dram is None:
            if info.const_array is None:    # (an int8 word table's rows and scales are set by quant.py)
                info.const_array = to_storage(np.asarray(info.v.data), info.dt)
            info.dram = self.const.add(info.const_array)
        return info.dram

    # -- partitions --------------------------------------------------------------------------------
    def part(self, R: int) -> list[tuple[int, int]]:
        unit = self.sentence if R % max(self.sentence, 1) == 0 and R >= self.sentence else 1
        return row_partition(R, self.cores, unit)

    def generic_part(self, R: int, min_rows: int = 64) -> list[tuple[int, int]]:
        return row_partition(R, self.cores, 1, min_rows)

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

    def sub_blocks(self, b0: int, b1: int) -> list[tuple[int, int]]:
        """A block cut into SUB parts (multiples of 8 rows): the units of work kernels emit, so
        several independent chains per core keep the SPU and VPU busy at the same time."""
        n = b1 - b0
        k = max(1, min(self.sub, n // 8))
        step = -(-n // k)
        step = -(-step // 8) * 8
        return [(r, min(b1, r + step)) for r in range(b0, b1, step)]

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
        w = op.inputs[1]
        layout = op.attrs.get("layout", "dense") if op.op in ("Linear", "LinearInt8") else "dense"
        key = (id(w), layout, op.op, min_tiles)
        if key not in self._packed:
            W = np.asarray(w.data, dtype=np.int8 if op.op == "LinearInt8" else np.float32)
            if op.op not in ("Linear", "LinearInt8"):
                W = np.ascontiguousarray(W.T)
            budget = WEIGHT_TILE_BYTES
            # int8: the weight's int8 bytes; tiles of 32 rows keep bf16 output columns 64-byte aligned
            # (64 when the epilogue requantises: int8 output columns 64-byte aligned)
            unit = 64 if id(op) in self.fused_quant else 32 if self.info(op.outputs[0]).dt == "bf16" else 16
            self._packed[key] = pack_linear(W, layout, self.const, budget, key=(id(w), op.op),
                                            max_rows=-(-W.shape[0] // min_tiles), unit=unit)
        return self._packed[key]

    # -- the plan -----------------------------------------------------------------------------------
    def _select_kernels(self) -> None:
        for op in self.g.ops:
            if op.op == "MultiHeadAttention":
                self.sentence = op.inputs[0].shape[1]
                break
        for i, op in enumerate(self.g.ops):
            kernel = KERNELS.get(op.op)
            if kernel is None:
                no_kernel(op)
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
                if info.root is not info or info.kind != "temp" or info.elided:
                    continue
                uses = users.get(id(info), [])
                aliased = any(self.info(x).root is info and x is not v for x in self._values_with_root(info))
                local_ok = (ri is not None and (info.dt == "f32" and info.irdt == "f32" or self.int8 and info.dt in quant.RESIDENT_DTS)
                            and id(v) not in outputs
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
        spilled = []
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
                    size = rows * rup(info.C * SIZE[info.dt])
                    lanes.setdefault(b, []).append(Interval((id(info), b), size, start, end))
                    sizes[id(info)] = sizes.get(id(info), 0) + size
            offsets, peak = {}, 0
            for b in sorted(lanes):
                plan = plan_arena(lanes[b], self.m.align)
                lane_offsets, lane_peak = plan.offsets, plan.peak
                if self.int8:   # int8 graphs: also first fit in program order, the tighter packing wins
                    alt = first_fit_by_start(lanes[b], self.m.align)
                    if alt[1] < lane_peak:
                        lane_offsets, lane_peak = alt
                for key, off in lane_offsets.items():
                    offsets[key] = peak + off
                peak += lane_peak
            if peak <= budget or not cands:
                break
            # demote the largest value
            worst = max(cands, key=lambda x: (sizes[id(x)], -x.producer))
            cands.remove(worst)
            worst.needs_dram = True
            spilled.append(sizes[id(worst)])
        for info in cands:
            info.resident = True
            nb = max(len(self.blocks(info.R, c)) for c in range(self.cores))
            info.sram_off = [offsets[(id(info), b)] for b in range(nb)]
        self.sram_base = 0
        self.resident_peak = peak if cands else 0
        self.stats["sram_resident_values"] = len(cands)
        self.stats["sram_resident_peak"] = self.resident_peak
        # row-local values the budget sent to DRAM (spills), bytes per core summed over its blocks
        self.stats["sram_spilled_values"] = len(spilled)
        self.stats["sram_spilled_bytes"] = sum(spilled)

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
            if info.root is not info or info.kind != "temp" or info.dram is not None or info.elided:
                continue
            if info.n == 0 or not (info.needs_dram or not info.resident):
                continue
            end = info.last_use
            for other in self.infos.values():
                if other.root is info:
                    end = max(end, other.last_use)
            if any(self.root(v) is info for v in g.outputs) or self.opts.get("keep_values"):
                end = last      # keep_values: no reuse, every value readable after the run (s4c check)
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


__all__ = ["Plan", "VInfo", "row_partition", "evaluate_constant_ops", "first_fit_by_start", "s4_dtype", "VBASE"]
