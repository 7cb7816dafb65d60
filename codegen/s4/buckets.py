"""S4 builds for shape ranges: one program per bucket in one model.s4, the weights stored once.

S4 instruction streams are static (every loop bound, address and token count is in the code), so a
graph compiled for ranges (`--input-shape input_ids=1..4x1..256`, `Graph.dim_ranges`) becomes a set
of programs, one per bucket of dims, in one container (s4c/s4/program_set.py):

- **Sequence buckets** (a symbol on an axis after the first, e.g. `sequence`): `--seq-buckets
  32,64,128,256`, or by default the powers of two from 32 up to the maximum, with the maximum
  itself; those below the range's minimum are dropped (`1..256` -> 32,64,128,256; `1..200` ->
  32,64,128,200; `100..256` -> 128,256; `1..16` -> 16).
- **Batch buckets** (the symbol of axis 0): the powers of two from 1 up to the maximum, with the
  maximum (`1..4` -> 1,2,4). Why not batch fixed at the maximum: an S4 program's cost is its
  token rows (they are split across the cores, each row costs the same), so one sentence padded
  to batch 4 would take 4x the modelled time; a program is its code only (~1-3 MB for BERT-base,
  the weights are shared), so a program per (batch, sequence) bucket is cheap to store.
- Every bucket is lowered from the graph rebuilt at its dims (the driver's `dim_ranges.specialize`,
  the same pipeline and layout choices), into one shared constant segment (`lower(..., const=)`):
  arrays equal byte for byte to one already placed are placed once, so the weights are stored
  once; only what depends on the dims (a position-embedding slice, ...) is per bucket. The
  programs' data regions are then moved above the final segment (`relocate`).
- **Run** (`BucketRunner`): of the buckets holding the input's dims, the one the cycle model times
  fastest (report.json `s4.buckets`), then the smallest (fewest token rows). Usually that is the
  smallest; not always: fewer sentences than cores split each sentence across the cores (K/V through
  DRAM), so BERT-base 2x256 models slower than 4x256 (6.3 vs 3.9 ms), and a 2-sentence run of 256
  tokens then uses the 4x256 program;
  inputs are padded along the sequence with 0 (input_ids: pad id 0, attention_mask: 0 = masked,
  token_type_ids: 0) and along the batch with copies of the last sentence (so no sentence is all
  padding); outputs are sliced back to the real dims. A model without an attention mask input
  cannot hide padded tokens from the real ones, so it runs only at sequence lengths that are a
  bucket (anything else is a one-line error listing them). Dims outside the range: a one-line error.
"""

from __future__ import annotations

import gc
import itertools
import math
from dataclasses import dataclass

import numpy as np

from s4c.codegen.protocol import Runner
from s4c.errors import S4CError, TargetError
from s4c.ir import DimRanges, Graph
from s4c.s4 import Program, ProgramSet, Symbol

from .base import rup
from .constants import ConstSegment
from .lower import lower, relocate
from .value_map import moved
from .report import make_report

FIRST_SEQ_BUCKET = 32
MAX_BUCKETS = 64


def power_buckets(lo: int, hi: int, first: int) -> list[int]:
    """The powers of two from `first` below `hi`, then `hi`; those below `lo` dropped."""
    out, p = [], first
    while p < hi:
        if p >= lo:
            out.append(p)
        p *= 2
    return out + [hi]


def parse_buckets(spec, lo: int, hi: int, symbol: str) -> list[int]:
    """--seq-buckets '32,64,128' (or a sequence of ints) for a symbol ranging lo..hi: sorted, each
    inside the range; the maximum is added when missing (every length in the range must fit)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        values = sorted({int(str(v).strip()) for v in items if str(v).strip()})
    except ValueError:
        raise TargetError(f"--seq-buckets {spec!r}: expected comma-separated integers, e.g. 32,64,128") from None
    if not values:
        raise TargetError(f"--seq-buckets {spec!r}: no bucket given")
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise TargetError(f"--seq-buckets: {bad[0]} is outside the compiled range of {symbol} ({lo}..{hi})")
    return values if values[-1] == hi else values + [hi]


@dataclass
class BucketPlan:
    symbols: list           # the range symbols, in DimRanges order
    batch: set              # those that are a batch dim (axis 0 of every input using them)
    values: dict            # symbol -> bucket values
    exact_sequence: bool    # no attention mask: sequence dims run only at bucket values

    def buckets(self) -> list[dict]:
        """Every combination, largest first (lowered first: its constants lead the segment)."""
        combos = itertools.product(*(self.values[s] for s in self.symbols))
        return sorted((dict(zip(self.symbols, c)) for c in combos), key=lambda d: [-d[s] for s in self.symbols])


def plan_buckets(dim_ranges, seq_buckets=None) -> BucketPlan:
    batch = dim_ranges.batch_symbols()
    sequence = [s for s in dim_ranges.symbols if s not in batch]
    if seq_buckets is not None and not sequence:
        raise TargetError("--seq-buckets: the compiled ranges have no sequence dim (only "
                          f"{', '.join(dim_ranges.symbols)})")
    values = {}
    for s in dim_ranges.symbols:
        lo, hi = dim_ranges.ranges[s]
        if s in batch:
            values[s] = power_buckets(lo, hi, 1)
        elif seq_buckets is not None:
            values[s] = parse_buckets(seq_buckets, lo, hi, s)
        else:
            values[s] = power_buckets(lo, hi, FIRST_SEQ_BUCKET)
    count = math.prod(len(v) for v in values.values())
    if count > MAX_BUCKETS:
        raise TargetError(f"shape ranges need {count} S4 programs (buckets {values}), more than {MAX_BUCKETS}: "
                          f"narrow the ranges or give fewer --seq-buckets")
    return BucketPlan(list(dim_ranges.symbols), batch, values, not dim_ranges.padding_exact())


def bucket_name(dims: dict, symbols: list) -> str:
    return "x".join(str(dims[s]) for s in symbols)


def lower_buckets(graph: Graph, options: dict, seq_buckets=None):
    """(ProgramSet, meta for model.s4.json, [(name, dims, report, markdown)], {name: value map}) of
    `graph` (compiled for ranges; its shapes are the maxima) lowered once per bucket; each value map
    (value_map.py) with its program's data moved as move_data moves it."""
    dr = graph.dim_ranges
    if dr.specialize is None:
        raise TargetError("S4 backend: shape ranges need the compile driver (s4c.compile), which rebuilds the "
                          "graph at each bucket's dims")
    plan = plan_buckets(dr, seq_buckets)
    top = dr.maximum()
    const = ConstSegment()
    if not dr.outputs:
        raise TargetError("S4 buckets: the outputs' dims could not be matched to the input dims (the driver's "
                          "dim_ranges.outputs is empty), so a padded run cannot be cut back: compile this model "
                          "for fixed dims on s4")
    built, vmaps = [], {}
    for dims in plan.buckets():
        g = graph if dims == top else dr.specialize(dims)
        lowered = lower(g, options, const)
        report, md = make_report(lowered, g)
        built.append((bucket_name(dims, plan.symbols), dims, lowered.program, lowered.io, report, md))
        vmaps[built[-1][0]] = lowered.values
        # a specialised graph holds its own copy of the weights (~440 MB for BERT-base), in reference
        # cycles that the paused cyclic GC (the backend's _gc_paused) would keep until the build ends
        del g, lowered
        gc.collect()
    axes = {name: list(syms) for name, syms in dr.outputs.items()}   # found once by the driver
    pieces = const.pieces()
    base = rup(len(pieces), built[0][2].machine.align)
    programs = {name: move_data(program, base, pieces) for name, _, program, *_ in built}
    align = built[0][2].machine.align
    vmaps = {name: moved(vmaps[name], rup(len(program.const), align), base) for name, _, program, *_ in built}
    ps = ProgramSet(built[0][2].machine, pieces, programs)
    meta = {"version": 2, "symbols": plan.symbols, "ranges": {s: list(dr.ranges[s]) for s in plan.symbols},
            "inputs": {k: list(v) for k, v in dr.inputs.items()}, "batch_symbols": sorted(plan.batch),
            "exact_sequence": plan.exact_sequence, "output_axes": axes,
            "buckets": [{"name": name, "dims": dims, "cycles": report["cycles"], "io": io}
                        for name, dims, _, io, report, _ in built]}
    return ps, meta, [(name, dims, report, md) for name, dims, _, _, report, md in built], vmaps


def move_data(program: Program, base: int, const) -> Program:
    """`program` on the shared segment `const`: its data (DRAM from its own constant end) moved to `base`."""
    old = rup(len(program.const), program.machine.align)
    if old == base:
        return Program(program.machine, program.cores, const, program.dram_size, program.symbols, program.debug)
    cores = [[relocate(ins, base, old) for ins in stream] for stream in program.cores]
    symbols = [Symbol(s.name, s.kind, s.addr - old + base, s.dtype, s.shape, s.core)
               if s.kind in ("input", "output", "dram") else s for s in program.symbols]
    return Program(program.machine, cores, const, program.dram_size - old + base, symbols, program.debug)


class BucketRunner(Runner):
    """Runs a bucketed model.s4: picks the bucket, pads the inputs, runs its program (an S4Runner
    per bucket, made by the backend's load), slices the outputs."""

    def __init__(self, runners: dict, meta: dict):
        self.runners = runners          # bucket name -> S4Runner
        self.meta = meta
        self.inputs = meta["buckets"][0]["io"]["inputs"]
        self.last = None                # the bucket name the last run used

    @property
    def program(self):
        """The last run's program (the largest bucket's before any run): --trace-json times it."""
        return self.runners[self.last or self.meta["buckets"][0]["name"]].program

    def set_threads(self, n: int) -> None:
        """The interpreter is single-threaded (kept for s4c.load's serving-loop interface)."""

    def choose(self, dims: dict) -> dict:
        """Of the buckets whose dims hold `dims` (sequence dims equal to it when the model has no
        attention mask), the fastest by the cycle model, then the one with the fewest token rows."""
        exact = [s for s in self.meta["symbols"] if self.meta["exact_sequence"] and s not in self.meta["batch_symbols"]]
        fits = [b for b in self.meta["buckets"]
                if all(b["dims"][s] >= dims[s] for s in dims) and all(b["dims"][s] == dims[s] for s in exact if s in dims)]
        if not fits:
            s = exact[0]
            values = sorted({b["dims"][s] for b in self.meta["buckets"]})
            raise S4CError(f"{s} {dims[s]} is not an S4 bucket ({', '.join(map(str, values))}): this model has no "
                           f"attention mask input, so padding would change its results; run at a bucket length "
                           f"or compile with --seq-buckets listing the lengths you run")
        return min(fits, key=lambda b: (b.get("cycles", 0), math.prod(b["dims"].values()),
                                        [b["dims"][s] for s in self.meta["symbols"]]))

    def run(self, feeds: dict) -> dict:
        ranges = dim_ranges(self.meta)
        try:
            dims = ranges.bind({k: np.shape(v) for k, v in feeds.items()})
        except ValueError as e:
            raise S4CError(str(e)) from None
        bucket = self.choose(dims)
        self.last = bucket["name"]
        outs = self.runners[bucket["name"]].run(ranges.pad(feeds, bucket["dims"]))
        return ranges.cut(outs, dims)

    def summary(self) -> str | None:
        line = self.runners[self.last].summary() if self.last else None
        return f"{line} [bucket {self.last}]" if line else None


def dim_ranges(meta: dict) -> DimRanges:
    """model.s4.json's ranges, input and output axes as a DimRanges (bind, pad, cut)."""
    return DimRanges({s: tuple(r) for s, r in meta["ranges"].items()}, {k: tuple(v) for k, v in meta["inputs"].items()},
                     outputs={k: tuple(v) for k, v in meta["output_axes"].items()})


def buckets_markdown(rows: list) -> str:
    """report.md's bucket table: per program its dims and modelled cost."""
    lines = ["### S4 buckets", "",
             "One program per bucket in model.s4 (the weights stored once); a run uses the smallest bucket "
             "holding its dims, padded.", "",
             "| bucket | dims | modelled cycles | latency | throughput | instructions |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        dims = ", ".join(f"{k}={v}" for k, v in r["dims"].items())
        lines.append(f"| `{r['name']}` | {dims} | {r['cycles']:,} | {r['latency_s'] * 1e6:,.1f} us | "
                     f"{r['throughput_per_s']:,.1f} sentences/s | {r['instructions']:,} |")
    return "\n".join(lines)


__all__ = ["BucketPlan", "BucketRunner", "bucket_name", "buckets_markdown", "lower_buckets", "parse_buckets",
           "plan_buckets", "power_buckets"]
