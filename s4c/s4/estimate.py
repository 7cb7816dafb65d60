"""Analytic BERT throughput estimator for the S4 model, and the calibration of the target file.

    est = estimate_bert(machine, compression=8.0)      # -> BertEstimate (throughput, per-unit cycles)
    python -m s4c.s4.estimate                          # predictions of s4v1.json vs SparseBERT, MLPerf
    mlperf_analysis(machine)                           # BERT-large s384 vs MLPerf v2.1, and what bounds it

The estimator builds, for one core and one batch, the instructions a BERT-base forward pass needs
(isa.make, the same `Instr` objects the lowering emits, with placeholder addresses) and prices
each with the SAME per-opcode cost functions the cycle model uses (isa.OPS[...].cost). Only the
schedule is analytic: per encoder layer the three units of a core overlap perfectly (software
pipelining across heads, tiles and the sentences of the batch), so a layer takes
max(SPU, VPU, DMA) cycles; layers run one after the other; the 4 cores run independent batches
(4-core data-parallel mode). The end-to-end check on a lowered BERT program comes with the
lowering; this is the design-time check.

Calibration (docs/isa.md#calibration) is done through the lowering, not here:
benchmarks/s4_calibration.py fits spu.macs_per_cycle.dense.i8 on SparseBERT 1x and
spu.macs_per_cycle.nm.i8 on 8x with compiled programs. This estimator is the design-time check
under those parameters: the same instruction mix (fused epilogues, per-width tiles, SRAM-fit check)
priced by the same opcode costs, with perfect overlap inside a layer, and the place the second
anchor (MLPerf v2.1 BERT-large seq 384) is analysed, since a 24-layer seq-384 lowering is not run.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from s4c.errors import TargetError
from s4c.s4 import isa
from s4c.s4.machine import Machine, load_machine

# SparseBERT (NAACL 2021), BERT-base, MRPC, seq 128, Moffett hardware: sentences/s per compression.
PAPER_THROUGHPUT = {1: 800.0, 2: 1600.0, 4: 3050.0, 8: 5500.0, 16: 9300.0, 20: 10800.0}
CALIBRATION_POINTS = (1, 8)     # fixed through the lowering: benchmarks/s4_calibration.py


@dataclass(frozen=True)
class BertShape:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    seq: int = 128
    vocab: int = 30522


BERT_BASE = BertShape()
BERT_LARGE = BertShape(layers=24, hidden=1024, heads=16, ffn=4096, seq=384)
# MLPerf Inference v2.1, open division, one Moffett S4 (Inspur NF5280M6), bert-99.9 offline, int8:
# the second anchor. Not used in any fit. The submission does not state the weight sparsity
# (sparsification_description.md: "methods described in" arXiv 2207.08006); the chip's maximum is 32x.
MLPERF_BERT_LARGE = 1219.41
MLPERF_COMPRESSION = 32

@dataclass
class BertEstimate:
    compression: float
    nm: tuple | None                 # (n, m) used for the linears, None = dense
    batch_per_core: int
    cycles_per_batch: int            # one core, one batch
    throughput: float                # sentences / s for the whole chip
    unit_cycles: dict = field(default_factory=dict)      # busy cycles per unit (one core, one batch)
    layer_bound: str = ""            # the unit that bounds an encoder layer
    serial_cycles: int = 0           # the same work with no overlap at all (a lower bound on speed)
    sram_bytes: dict = field(default_factory=dict)       # peak working set per core, by part
    sram_capacity: int = 0

    @property
    def sram_fits(self) -> bool:
        return sum(self.sram_bytes.values()) <= self.sram_capacity

    def utilisation(self) -> dict:
        return {u: c / self.cycles_per_batch for u, c in self.unit_cycles.items()}


def nm_for(compression: float) -> tuple[int, int] | None:
    """The N:M pattern (m <= 32) closest to 1/compression; None (dense) at 1x."""
    if compression <= 1.0:
        return None
    best = min(((n, m) for m in range(2, 33) for n in range(1, m)),
               key=lambda nm: (abs(nm[1] / nm[0] - compression), nm[1]))
    return best


class _Work:
    """Instructions of one encoder layer (or stage), with multiplicities, priced per unit."""

    def __init__(self, machine: Machine):
        self.m = machine
        self.cycles = {u: 0 for u in isa.UNITS}

    def add(self, mnemonic: str, count: int = 1, **fields):
        ins = isa.make(mnemonic, **fields)
        self.cycles[ins.unit()] += count * ins.spec.cost(ins.fields(), self.m).cycles

    def bound(self) -> tuple[int, str]:
        unit = max(self.cycles, key=self.cycles.get)
        return self.cycles[unit], unit


WEIGHT_TILE_BYTES = 768 << 10       # packed int8 weight bytes per output tile (as the lowering's plan.py)


def weight_row_bytes(k: int, nm) -> int:
    """Stored bytes of one output row of a k-input weight: int8 values (+ u8 offsets for N:M)."""
    return k if nm is None else 2 * math.ceil(k / nm[1]) * nm[0]


def tile_width(k: int, nm, widest: int = 768) -> int:
    """Output rows per weight tile: at most `widest`, a multiple of 64, within WEIGHT_TILE_BYTES."""
    return max(64, min(widest, WEIGHT_TILE_BYTES // weight_row_bytes(k, nm) // 64 * 64))


def tile_widths(out: int, o_tile: int) -> list[int]:
    """The output tiles of a `out`-wide linear: full `o_tile`-wide ones, then the remainder (BERT-large's
    1024 = 768 + 256, 4096 = 5 x 768 + 256); each is priced at its own width."""
    full, rest = divmod(out, o_tile)
    return [o_tile] * full + ([rest] if rest else [])


def _linear(w: _Work, tokens: int, sentences: int, out: int, k: int, nm, o_tile: int, act: int = 0):
    """A linear layer for `sentences` sentences of `tokens` tokens: weights DMA'd once per batch,
    one SPU tile op per (sentence, output tile), then the fused epilogue (dequantise, bias, activation
    `act`: 0 none, 1 gelu) in one VPU pass, as the lowering's vpu.epilogue / vpu.dequant."""
    for o in tile_widths(out, tile_width(k, nm, o_tile)):
        if nm is None:
            w.add("dma.ld", 1, dst=0, src=0, rows=1, bytes=o * k, dpitch=0, spitch=0, dt="i8")
            w.add("spu.mm", sentences, dst=0, a=0, b=0, m=tokens, n=o, k=k, pd=_rnd(4 * o),
                  pa=_rnd(k), pb=_rnd(k), tb=1, dt="i8")
        else:
            n, m = nm
            slots = math.ceil(k / m) * n
            for dt in ("i8", "u8"):        # values, then offsets: one contiguous packed tile each
                w.add("dma.ld", 1, dst=0, src=0, rows=1, bytes=o * slots, dpitch=0, spitch=0, dt=dt)
            w.add("spu.nm", sentences, dst=0, x=0, val=0, idx=0, t=tokens, o=o, k=k, n=n, m=m,
                  pd=_rnd(4 * o), px=_rnd(k), dt="i8")
    w.add("vpu.dequant", sentences, dst=0, src=0, cs=0, rs=0, bias=0, rows=tokens, cols=out, pd=_rnd(2 * out),
          ps=_rnd(4 * out), hb=1, act=act, dt="bf16")        # fused epilogue: dequantise, bias, activation


def _rnd(n: int) -> int:
    return -(-n // 64) * 64


def _quant(w: _Work, sentences: int, rows: int, cols: int):
    w.add("vpu.cvt", sentences, dst=0, src=0, rows=rows, cols=cols, pd=_rnd(cols), ps=_rnd(2 * cols),
          scale=1.0, sdt="bf16", dt="i8")


def layer_work(machine: Machine, shape: BertShape, nm, batch: int, o_tile: int = 768) -> _Work:
    """One encoder layer for `batch` sentences on one core (MixInt8bf16 timing)."""
    s, h, ff, heads = shape.seq, shape.hidden, shape.ffn, shape.heads
    dh = h // heads
    w = _Work(machine)
    _quant(w, batch, s, h)                                     # x -> i8 for Q, K, V
    for _ in range(3):
        _linear(w, s, batch, h, h, nm, o_tile)
    for _ in range(3):                                         # Q, K, V -> i8 for the attention matmuls
        _quant(w, batch, s, h)
    per_head = batch * heads
    w.add("spu.mm", per_head, dst=0, a=0, b=0, m=s, n=s, k=dh, pd=_rnd(4 * s), pa=_rnd(h), pb=_rnd(h),
          tb=1, dt="i8")                                       # scores = Q K^T
    w.add("vpu.cvt", per_head, dst=0, src=0, rows=s, cols=s, pd=_rnd(2 * s), ps=_rnd(4 * s), scale=1.0,
          sdt="i32", dt="bf16")
    w.add("vpu.add", per_head, dst=0, a=0, b=0, rows=s, cols=s, pd=_rnd(2 * s), pa=_rnd(2 * s),
          bcast="row", dt="bf16")                              # attention mask
    w.add("vpu.softmax", per_head, dst=0, src=0, rows=s, cols=s, pd=_rnd(2 * s), ps=_rnd(2 * s),
          scale=1.0 / math.sqrt(dh), dt="bf16")
    _quant(w, per_head, s, s)
    w.add("spu.mm", per_head, dst=0, a=0, b=0, m=s, n=dh, k=s, pd=_rnd(4 * h), pa=_rnd(s), pb=_rnd(h),
          dt="i8")                                             # context = P V
    w.add("vpu.cvt", per_head, dst=0, src=0, rows=s, cols=dh, pd=_rnd(2 * h), ps=_rnd(4 * h), scale=1.0,
          sdt="i32", dt="bf16")
    _quant(w, batch, s, h)
    _linear(w, s, batch, h, h, nm, o_tile)                     # attention output
    w.add("vpu.add", batch, dst=0, a=0, b=0, rows=s, cols=h, pd=_rnd(2 * h), pa=_rnd(2 * h),
          pb=_rnd(2 * h), dt="bf16")                           # residual
    w.add("vpu.layernorm", batch, dst=0, src=0, gamma=0, beta=0, rows=s, cols=h, pd=_rnd(2 * h),
          ps=_rnd(2 * h), eps=1e-12, dt="bf16")
    _quant(w, batch, s, h)
    _linear(w, s, batch, ff, h, nm, o_tile, act=1)             # FFN up, GELU in its epilogue
    _quant(w, batch, s, ff)
    _linear(w, s, batch, h, ff, nm, o_tile)                    # FFN down
    w.add("vpu.add", batch, dst=0, a=0, b=0, rows=s, cols=h, pd=_rnd(2 * h), pa=_rnd(2 * h),
          pb=_rnd(2 * h), dt="bf16")                           # residual
    w.add("vpu.layernorm", batch, dst=0, src=0, gamma=0, beta=0, rows=s, cols=h, pd=_rnd(2 * h),
          ps=_rnd(2 * h), eps=1e-12, dt="bf16")
    return w


def edge_work(machine: Machine, shape: BertShape, batch: int) -> _Work:
    """Embeddings (gather + position/type add + LayerNorm) and pooler, for `batch` sentences."""
    s, h = shape.seq, shape.hidden
    w = _Work(machine)
    w.add("dma.gather", batch, dst=0, table=0, idx=0, rows=s, bytes=2 * h, dpitch=_rnd(2 * h),
          tpitch=_rnd(2 * h), trows=shape.vocab, dt="bf16")
    w.add("dma.ld", 1, dst=0, src=0, rows=s + 2, bytes=2 * h, dpitch=_rnd(2 * h), spitch=_rnd(2 * h),
          dt="bf16")                                           # position + token-type tables, once
    w.add("vpu.add", 2 * batch, dst=0, a=0, b=0, rows=s, cols=h, pd=_rnd(2 * h), pa=_rnd(2 * h),
          pb=_rnd(2 * h), dt="bf16")
    w.add("vpu.layernorm", batch, dst=0, src=0, gamma=0, beta=0, rows=s, cols=h, pd=_rnd(2 * h),
          ps=_rnd(2 * h), eps=1e-12, dt="bf16")
    w.add("dma.ld", 1, dst=0, src=0, rows=h, bytes=h, dpitch=_rnd(h), spitch=_rnd(h), dt="i8")
    w.add("spu.mm", batch, dst=0, a=0, b=0, m=1, n=h, k=h, pd=_rnd(4 * h), pa=_rnd(h), pb=_rnd(h), tb=1,
          dt="i8")
    w.add("vpu.tanh", batch, dst=0, src=0, rows=1, cols=h, pd=_rnd(2 * h), ps=_rnd(2 * h), dt="bf16")
    return w


def sram_working_set(shape: BertShape, nm, batch: int, o_tile: int = 768) -> dict:
    """Peak SRAM bytes one core needs for `batch` sentences, by part, as the schedule above assumes
    it (activations resident, MixInt8bf16: bf16 token matrices, i32 accumulators): the residual
    input, then the larger of the attention stage (bf16 Q/K/V; one head's i32 scores and bf16
    probabilities) and the FFN stage (the bf16 intermediate), per sentence; one i32 accumulator tile;
    two weight tiles (double buffered: the next loads while the SPU works on this one)."""
    s, h, ff = shape.seq, shape.hidden, shape.ffn
    tile = max(tile_width(k, nm, o_tile) * weight_row_bytes(k, nm) for k in (h, ff))
    attention = 3 * s * h * 2 + s * s * (4 + 2)
    return {"residual input": batch * s * h * 2,
            "attention or FFN stage": batch * max(attention, s * ff * 2),
            "accumulator tile": s * o_tile * 4,
            "weight tiles x2": 2 * tile}


def max_fitting_batch(machine: Machine | str, shape: BertShape, compression: float = 1.0) -> int:
    """The most sentences per core whose working set fits one core's SRAM (0: not even one)."""
    machine = load_machine(machine)
    nm = nm_for(compression)
    b = 0
    while sum(sram_working_set(shape, nm, b + 1).values()) <= machine.sram_bytes:
        b += 1
    return b


def estimate_bert(machine: Machine | str = "s4v1", compression: float = 1.0, *, batch_per_core: int = 4,
                  shape: BertShape = BertShape(), check_sram: bool = True) -> BertEstimate:
    """`check_sram`: refuse (TargetError) a batch whose working set does not fit one core's SRAM, since
    the schedule assumes every activation stays resident (no spill traffic is priced)."""
    machine = load_machine(machine)
    nm = nm_for(compression)
    sram = sram_working_set(shape, nm, batch_per_core)
    if check_sram and sum(sram.values()) > machine.sram_bytes:
        parts = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in sram.items())
        raise TargetError(f"estimate: {batch_per_core} sentence(s) of {shape.seq} tokens per core need "
                          f"{sum(sram.values()) / 2**20:.2f} MiB of SRAM ({parts} MiB), the core has "
                          f"{machine.sram_bytes / 2**20:.2f} MiB (fits {max_fitting_batch(machine, shape, compression)})")
    layer = layer_work(machine, shape, nm, batch_per_core)
    edge = edge_work(machine, shape, batch_per_core)
    layer_cycles, bound = layer.bound()
    edge_cycles, _ = edge.bound()
    total = shape.layers * layer_cycles + edge_cycles
    units = {u: shape.layers * layer.cycles[u] + edge.cycles[u] for u in isa.UNITS}
    throughput = machine.n_cores * batch_per_core * machine.clock_hz / total
    return BertEstimate(compression, nm, batch_per_core, total, throughput, units, bound,
                        sum(units.values()), sram, machine.sram_bytes)


# -- the design-time check against SparseBERT ----------------------------------------------------------
def _solve(fn, target: float, lo: float = 1.0, hi: float = 1e6) -> float:
    """The smallest integer rate r in [lo, hi] with fn(r) >= target (fn increases with r)."""
    if fn(hi) < target:
        raise ValueError(f"target {target:.0f}/s unreachable even at {hi:.0f} MACs/cycle "
                         "(another unit bounds the model)")
    lo, hi = int(lo), int(hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if fn(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return float(lo)


def prediction_table(machine: Machine | str = "s4v1", *, batch_per_core: int = 4) -> dict:
    """{compression: (predicted sentences/s, paper sentences/s, relative error, bounding unit)}."""
    out = {}
    for c, paper in PAPER_THROUGHPUT.items():
        est = estimate_bert(machine, c, batch_per_core=batch_per_core)
        out[c] = (est.throughput, paper, est.throughput / paper - 1.0, est.layer_bound)
    return out


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="s4v1")
    args = ap.parse_args(argv)
    machine = load_machine(args.target)
    print(f"{'x':>4} {'n:m':>6} {'model/s':>9} {'paper/s':>9} {'error':>7}  bound  util(dma/spu/vpu)")
    for c, paper in PAPER_THROUGHPUT.items():
        est = estimate_bert(machine, c)
        util = "/".join(f"{est.utilisation()[u]:.2f}" for u in isa.UNITS)
        nm = "dense" if est.nm is None else f"{est.nm[0]}:{est.nm[1]}"
        tag = " (fit point of the lowering)" if c in CALIBRATION_POINTS else ""
        print(f"{c:>4} {nm:>6} {est.throughput:9.0f} {paper:9.0f} {est.throughput / paper - 1:+7.1%}  "
              f"{est.layer_bound}    {util}{tag}")
    mlp = mlperf_analysis(machine)
    print(f"MLPerf v2.1 BERT-large s384 at {mlp['compression']}x: {mlp['predicted']:.0f}/s vs {mlp['anchor']}/s "
          f"({mlp['error']:+.1%}), bound by {mlp['bound']}")
    return 0



# -- the second anchor: MLPerf BERT-large ------------------------------------------------------------
def _best(machine: Machine, compression: float, shape: BertShape) -> BertEstimate:
    """The estimate at the largest batch per core whose working set fits the SRAM."""
    return estimate_bert(machine, compression, batch_per_core=max(1, max_fitting_batch(machine, shape, compression)),
                         shape=shape)


def mlperf_analysis(machine: Machine | str = "s4v1", compression: float = MLPERF_COMPRESSION) -> dict:
    """BERT-large seq 384 under `machine` against MLPerf v2.1's 1219.41 samples/s, and what bounds it:
    the prediction; the ceilings each unit alone allows (SPU with the linears free, i.e. attention at
    the dense rate only; VPU alone); the spu.macs_per_cycle.nm.i8 and the effective (unpadded)
    sequence length that would reach the anchor's -20% bound (975.5/s) and the anchor itself."""
    machine = load_machine(machine)
    est = _best(machine, compression, BERT_LARGE)
    per_core = est.batch_per_core * machine.n_cores * machine.clock_hz
    no_linears = _best(with_rates(machine, machine["spu.macs_per_cycle.dense.i8"], 1e9), compression, BERT_LARGE)
    out = {"predicted": est.throughput, "anchor": MLPERF_BERT_LARGE, "error": est.throughput / MLPERF_BERT_LARGE - 1,
           "compression": compression, "batch_per_core": est.batch_per_core, "bound": est.layer_bound,
           "sram_bytes": sum(est.sram_bytes.values()),
           "unit_ceiling": {u: per_core / c for u, c in est.unit_cycles.items() if c},
           "spu_ceiling_infinite_nm": per_core / no_linears.unit_cycles["spu"]}
    for name, target in (("low", 0.8 * MLPERF_BERT_LARGE), ("anchor", MLPERF_BERT_LARGE)):
        try:
            out[f"nm_rate_for_{name}"] = _solve(lambda r: _best(with_rates(
                machine, machine["spu.macs_per_cycle.dense.i8"], r), compression, BERT_LARGE).throughput, target)
        except ValueError:
            out[f"nm_rate_for_{name}"] = None
        seq = BERT_LARGE.seq
        while seq > 8 and _best(machine, compression, replace(BERT_LARGE, seq=seq)).throughput < target:
            seq -= 8
        out[f"seq_for_{name}"] = seq
    return out


def with_rates(machine: Machine, dense_i8: float, nm_i8: float) -> Machine:
    """`machine` with the two fitted SPU rates; bf16 = i8/2, f32 = i8/8, bsr = dense (the fit's ratios,
    benchmarks/s4_calibration.py)."""
    over = {}
    for fmt, rate in (("dense", dense_i8), ("nm", nm_i8), ("bsr", dense_i8)):
        over[f"spu.macs_per_cycle.{fmt}.i8"] = float(rate)
        over[f"spu.macs_per_cycle.{fmt}.bf16"] = rate / 2
        over[f"spu.macs_per_cycle.{fmt}.f32"] = rate / 8
    return machine.replace(over)


if __name__ == "__main__":
    raise SystemExit(_main())
