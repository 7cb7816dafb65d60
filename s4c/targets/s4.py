"""The S4 target: layouts the SPU runs natively and a cost model derived from the S4 machine model.

Nothing here restates a machine number. A Linear is priced as the instructions the lowering
emits for it, built with `s4c.s4.isa.make` and costed with the opcode table's own cost functions
(the ones the cycle model and `s4c.s4.estimate` use), under the parameters of the machine file
(s4c/s4/s4v1.json by default):

    per output tile of `O_TILE` rows (block rows for BSR):
        dma.ld of each array of the packed weight tile (values [, indices] [, pointers])
        one SPU instruction: spu.mm tb=1 (dense) | spu.nm (N:M) | spu.bsr (BSR r x c)
    cycles = max(SPU cycles, DMA cycles)          (units overlap: weight tiles double-buffered)
    seconds = cycles / clock_hz                   (one core)

So the SPU side is `spu.overhead + MACs / spu.macs_per_cycle[format][dt]` per instruction, with
the MACs counting every stored slot (BSR fill-in, N:M padding) and BSR blocks smaller than
`spu.bsr_full_rate_block` elements slowed down, and the DMA side is `dma.overhead + dma.latency +
burst-rounded bytes / dma.bytes_per_cycle` per transfer, the bytes being the packed arrays'.

As in the estimator (`s4c.s4.estimate`), activations stay in SRAM between ops (only weights are
DMA'd) and weights are timed as int8 (MixInt8bf16; `weight_dtype` changes it). VPU work (bias,
dequantisation) is the same for every layout and is left out.

Layouts: dense, every BSR block with r, c <= the SPU's largest block side, every N:M pattern with
m <= the widest group its input mux selects from, also with fill-in (for each M, N = the fullest
group's count, emptier groups padded with zeros), so an unstructured weight is priced as N:M too. CSR is not offered: the SPU runs it only as 1x1
BSR at 1/8 of the BSR rate (docs/isa.md: "the compiler should convert it to N:M or r x 1 blocks").
"""

from __future__ import annotations

import math

from s4c.errors import TargetError
from s4c.s4 import isa
from s4c.s4.machine import Machine, load_machine
from s4c.s4.ops_spu import MAX_BLOCK, MAX_M
from s4c.sparse import SUPPORTED_LAYOUTS, BSRLayout, DenseLayout, NMLayout, index_dtype
from s4c.targets.base import LayoutWork, LinearShapes, Target

# Output rows per weight tile: the tiling of s4c.s4.estimate (layer_work's o_tile default), so a
# BERT-base 768-wide weight is one tile. A lowering choice, not a machine parameter.
O_TILE = 768

_INDEX_NAMES = {"uint8": "u8", "uint16": "u16", "int32": "i32"}


def _s4_runs(layout) -> bool:
    if isinstance(layout, DenseLayout):
        return True
    if isinstance(layout, BSRLayout):
        return max(layout.block_shape) <= MAX_BLOCK
    if isinstance(layout, NMLayout):
        return layout.m <= MAX_M
    return False  # CSR: only as 1x1 BSR at a fraction of the rate; convert instead


class S4Target(Target):
    """Layout selection for the S4 backend (one core of the machine in `machine`)."""

    name = "s4"
    supported_layouts = tuple(layout for layout in SUPPORTED_LAYOUTS if _s4_runs(layout))
    nm_max_m = MAX_M
    nm_fill_in = True  # an unstructured weight may run faster as N:M with padding slots than as BSR

    def __init__(self, machine: Machine | str = "s4v1", weight_dtype: str = "i8"):
        self.machine = load_machine(machine)
        if weight_dtype not in ("f32", "bf16", "i8"):
            raise TargetError(f"target s4: weight_dtype must be f32, bf16 or i8, not {weight_dtype!r}")
        self.weight_dtype = weight_dtype
        # (mnemonic, fields) -> cycles: layout selection costs ~10 candidates of every weight, and
        # BERT-base's 12 layers ask for the same instructions again and again
        self._instr_cycles: dict = {}

    def describe(self) -> str:
        return (f"s4: machine {self.machine.name}, opcode-table costs of the emitted DMA + SPU instructions, "
                f"max(SPU, weight DMA) cycles / {self.machine.clock_hz:.3g} Hz, one core; weights timed as "
                f"{self.weight_dtype}")

    # -- the model --------------------------------------------------------------------------------
    def cycles(self, work: LayoutWork, shapes: LinearShapes) -> dict[str, int]:
        """{"spu": cycles, "dma": cycles} of one op on one core."""
        m = self.machine
        layout = work.layout
        tokens, out_dim, in_dim = shapes.tokens, shapes.out_features, shapes.in_features
        wdt = self.weight_dtype
        wsize = _size(wdt)
        spu = dma = 0

        def ld(nbytes: int, dt: str) -> int:
            if nbytes <= 0:
                return 0
            return run("dma.ld", dst=0, src=0, rows=1, bytes=nbytes, dpitch=0, spitch=0, dt=dt)

        def run(mnemonic: str, **fields) -> int:
            key = (mnemonic, *fields.items())
            cycles = self._instr_cycles.get(key)
            if cycles is None:
                ins = isa.make(mnemonic, **fields)
                cycles = self._instr_cycles[key] = ins.spec.cost(ins.fields(), m).cycles
            return cycles

        if isinstance(layout, BSRLayout):
            r, c = layout.block_shape
            tile_rows = -(-O_TILE // r) * r
        else:
            r, c, tile_rows = 1, 1, O_TILE
        tiles = math.ceil(out_dim / tile_rows)
        rows = math.ceil(out_dim / tiles)  # output rows of an average tile
        if isinstance(layout, DenseLayout):
            dma += tiles * ld(rows * in_dim * wsize, wdt)
            spu += tiles * run("spu.mm", dst=0, a=0, b=0, m=tokens, n=rows, k=in_dim, pd=0, pa=0, pb=0,
                               tb=1, dt=wdt)
        elif isinstance(layout, NMLayout):
            slots = math.ceil(in_dim / layout.m) * layout.n * rows
            dma += tiles * (ld(slots * wsize, wdt) + ld(slots, "u8"))
            spu += tiles * run("spu.nm", dst=0, x=0, val=0, idx=0, t=tokens, o=rows, k=in_dim, n=layout.n,
                               m=layout.m, pd=0, px=0, dt=wdt)
        elif isinstance(layout, BSRLayout):
            nnzb = math.ceil(work.blocks / tiles)
            cdt = _INDEX_NAMES[index_dtype(math.ceil(in_dim / c)).name]
            dma += tiles * (ld(nnzb * r * c * wsize, wdt) + ld(nnzb * _size(cdt), cdt)
                            + ld((math.ceil(rows / r) + 1) * 4, "i32"))
            spu += tiles * run("spu.bsr", dst=0, x=0, val=0, col=0, ptr=0, t=tokens, o=rows, k=in_dim, r=r,
                               c=c, nnzb=nnzb, pd=0, px=0, dt=wdt, cdt=cdt)
        else:  # pragma: no cover - Target.cost rejects unsupported layouts first
            raise TargetError(f"target s4 does not run layout {layout}")
        return {"spu": spu, "dma": dma}

    def linear_cost(self, work: LayoutWork, shapes: LinearShapes) -> float:
        cycles = self.cycles(work, shapes)
        return max(cycles.values()) / self.machine.clock_hz


def _size(dt: str) -> int:
    from s4c.s4 import dtypes

    return dtypes.SIZE[dtypes.code(dt)]
