"""Analytic BERT throughput estimator for the S4 model, and the calibration of the target file.

    est = estimate_bert(machine, compression=8.0)      # -> BertEstimate (throughput, per-unit cycles)
    fit = calibrate(machine)                           # -> (Machine with fitted SPU rates, report)
    python -m s4c.s4.estimate                          # predictions of s4v1.json vs SparseBERT
    python -m s4c.s4.estimate --calibrate [--write]    # re-fit (and rewrite s4v1.json)

The estimator builds, for one core and one batch, the instructions a BERT-base forward pass needs
(isa.make, the same `Instr` objects the lowering emits, with placeholder addresses) and prices
each with the SAME per-opcode cost functions the cycle model uses (isa.OPS[...].cost). Only the
schedule is analytic: per encoder layer the three units of a core overlap perfectly (software
pipelining across heads, tiles and the sentences of the batch), so a layer takes
max(SPU, VPU, DMA) cycles; layers run one after the other; the 4 cores run independent batches
(4-core data-parallel mode). The end-to-end check on a lowered BERT program comes with the
lowering; this is the design-time check.

Calibration (docs/isa.md#calibration): only spu.macs_per_cycle.dense.i8 (fitted on the 1x point,
where weights are dense and run as spu.mm) and spu.macs_per_cycle.nm.i8 (fitted on the 20x point,
N:M 1:20) are fitted; bf16 = i8/2, f32 = i8/8 and bsr = nm follow by fixed ratios. 2x..16x are
then predictions: their saturation comes from the modelled dense attention matmuls, vector work
and weight DMA, not from a fitted curve.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from s4c.s4 import isa
from s4c.s4.machine import Machine, load_machine

# SparseBERT (NAACL 2021), BERT-base, MRPC, seq 128, Moffett hardware: sentences/s per compression.
PAPER_THROUGHPUT = {1: 800.0, 2: 1600.0, 4: 3050.0, 8: 5500.0, 16: 9300.0, 20: 10800.0}
CALIBRATION_POINTS = (1, 20)


@dataclass(frozen=True)
class BertShape:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    seq: int = 128
    vocab: int = 30522


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


def _linear(w: _Work, tokens: int, sentences: int, out: int, k: int, nm, o_tile: int):
    """A linear layer for `sentences` sentences of `tokens` tokens: weights DMA'd once per batch,
    one SPU tile op per (sentence, output tile), bias added on the VPU."""
    tiles = math.ceil(out / o_tile)
    if nm is None:
        w.add("dma.ld", tiles, dst=0, src=0, rows=1, bytes=o_tile * k, dpitch=0, spitch=0, dt="i8")
        w.add("spu.mm", sentences * tiles, dst=0, a=0, b=0, m=tokens, n=o_tile, k=k, pd=_rnd(4 * o_tile),
              pa=_rnd(k), pb=_rnd(k), tb=1, dt="i8")
    else:
        n, m = nm
        slots = math.ceil(k / m) * n
        for dt in ("i8", "u8"):        # values, then offsets: one contiguous packed tile each
            w.add("dma.ld", tiles, dst=0, src=0, rows=1, bytes=o_tile * slots, dpitch=0, spitch=0, dt=dt)
        w.add("spu.nm", sentences * tiles, dst=0, x=0, val=0, idx=0, t=tokens, o=o_tile, k=k, n=n, m=m,
              pd=_rnd(4 * o_tile), px=_rnd(k), dt="i8")
    w.add("vpu.cvt", sentences, dst=0, src=0, rows=tokens, cols=out, pd=_rnd(2 * out), ps=_rnd(4 * out),
          scale=1.0, sdt="i32", dt="bf16")                                           # dequantise
    w.add("vpu.add", sentences, dst=0, a=0, b=0, rows=tokens, cols=out, pd=_rnd(2 * out), pa=_rnd(2 * out),
          bcast="row", dt="bf16")                                                    # bias


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
    _linear(w, s, batch, ff, h, nm, o_tile)                    # FFN up
    w.add("vpu.gelu", batch, dst=0, src=0, rows=s, cols=ff, pd=_rnd(2 * ff), ps=_rnd(2 * ff), dt="bf16")
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


def estimate_bert(machine: Machine | str = "s4v1", compression: float = 1.0, *, batch_per_core: int = 4,
                  shape: BertShape = BertShape()) -> BertEstimate:
    machine = load_machine(machine)
    nm = nm_for(compression)
    layer = layer_work(machine, shape, nm, batch_per_core)
    edge = edge_work(machine, shape, batch_per_core)
    layer_cycles, bound = layer.bound()
    edge_cycles, _ = edge.bound()
    total = shape.layers * layer_cycles + edge_cycles
    units = {u: shape.layers * layer.cycles[u] + edge.cycles[u] for u in isa.UNITS}
    throughput = machine.n_cores * batch_per_core * machine.clock_hz / total
    return BertEstimate(compression, nm, batch_per_core, total, throughput, units, bound,
                        sum(units.values()))


# -- calibration ----------------------------------------------------------------------------------
def _with_rates(machine: Machine, dense_i8: float, nm_i8: float) -> Machine:
    over = {}
    for fmt, rate in (("dense", dense_i8), ("nm", nm_i8), ("bsr", nm_i8)):
        over[f"spu.macs_per_cycle.{fmt}.i8"] = rate
        over[f"spu.macs_per_cycle.{fmt}.bf16"] = rate / 2
        over[f"spu.macs_per_cycle.{fmt}.f32"] = rate / 8
    return machine.replace(over)


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


def calibrate(machine: Machine | str = "s4v1", *, batch_per_core: int = 4) -> tuple[Machine, dict]:
    """Fit spu.macs_per_cycle.dense.i8 on the 1x point, then spu.macs_per_cycle.nm.i8 on 20x."""
    machine = load_machine(machine)
    nm0 = machine["spu.macs_per_cycle.nm.i8"]
    dense = _solve(lambda r: estimate_bert(_with_rates(machine, r, nm0), 1, batch_per_core=batch_per_core)
                   .throughput, PAPER_THROUGHPUT[1])
    nm = _solve(lambda r: estimate_bert(_with_rates(machine, dense, r), 20, batch_per_core=batch_per_core)
                .throughput, PAPER_THROUGHPUT[20])
    fitted = _with_rates(machine, dense, nm)
    return fitted, prediction_table(fitted, batch_per_core=batch_per_core)


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
    ap.add_argument("--calibrate", action="store_true", help="re-fit the two SPU rates")
    ap.add_argument("--write", action="store_true", help="with --calibrate: rewrite the target file")
    args = ap.parse_args(argv)
    machine = load_machine(args.target)
    if args.calibrate:
        machine, _ = calibrate(machine)
        print(f"spu.macs_per_cycle.dense.i8 = {machine['spu.macs_per_cycle.dense.i8']:.0f}")
        print(f"spu.macs_per_cycle.nm.i8    = {machine['spu.macs_per_cycle.nm.i8']:.0f}")
        if args.write:
            path = Path(__file__).with_name(f"{machine.name}.json")
            old = json.loads(path.read_text())
            new = machine.to_nested()
            old["spu"]["macs_per_cycle"] = new["spu"]["macs_per_cycle"]
            path.write_text(json.dumps(old, indent=2) + "\n")
            print(f"wrote {path}")
    print(f"{'x':>4} {'n:m':>6} {'model/s':>9} {'paper/s':>9} {'error':>7}  bound  util(dma/spu/vpu)")
    for c, paper in PAPER_THROUGHPUT.items():
        est = estimate_bert(machine, c)
        util = "/".join(f"{est.utilisation()[u]:.2f}" for u in isa.UNITS)
        nm = "dense" if est.nm is None else f"{est.nm[0]}:{est.nm[1]}"
        tag = " (fit)" if c in CALIBRATION_POINTS else ""
        print(f"{c:>4} {nm:>6} {est.throughput:9.0f} {paper:9.0f} {est.throughput / paper - 1:+7.1%}  "
              f"{est.layer_bound}    {util}{tag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
