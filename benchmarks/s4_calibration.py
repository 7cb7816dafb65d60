"""The S4 machine model calibrated through the lowering: SparseBERT (NAACL 2021, BERT-base seq 128)
1x and 8x fix the two fitted SPU rates; 2x, 4x, 16x and 20x are held out and predicted.

    progs = sparsebert_programs([1, 2, 4, 8, 16, 20])   # {c: LayerPrograms}, compiled by s4c.compile
    m, fit = fit_machine(progs)                          # s4v1 with the two rates refitted on 1x, 8x
    table = predictions(progs, m)                         # {c: (sentences/s, SparseBERT, error)}
    python benchmarks/s4_calibration.py [--write]         # the table; --write stores the rates in s4v1.json

Each point is a BERT-base (hidden 768, 12 heads, FFN 3072) whose encoder Linears are pruned 1:c by
magnitude (the largest |w| of every group of c inputs, a tail group where c does not divide the
width) and written back to ONNX; `s4c.compile(..., target="s4")` then picks every layout itself
(select-sparse-layout: nothing set by hand) and lowers it, batch 8 x seq 128 on 4 cores, fp32 timed
as the MixInt8bf16 machine (docs/isa.md "Timing precision"). Compiled with 1 and 2 encoder layers,
not 12: BERT's layers are identical, so each adds the same instructions and the modelled cycles are
affine in the layer count, T(12) = T(1) + 11 (T(2) - T(1)) (`python benchmarks/s4_calibration.py
--check-layers` compares it with a 12-layer compile: within 0.1%). A 12-layer BERT-base compile is
~25 s, a 2-layer one ~5 s.

The fit: spu.macs_per_cycle.dense.i8 on 1x (dense weights: only spu.mm runs the Linears), then
spu.macs_per_cycle.nm.i8 on 8x (nm1:8), both by bisection on re-timed programs (rates do not
change what is lowered; layout selection is re-checked by compiling again under the fitted file).
bf16 = i8 / 2, f32 = i8 / 8 and bsr = dense follow by fixed ratios; everything else is assumed a
priori (docs/isa.md's parameter table). SparseBERT's figures are sentences/s of a stream of
batches, so the fit and the predictions use the steady-state period (s4c.s4.steady: the busiest
unit's work per batch); latency mode (one batch from an idle chip) is printed beside it, and the
simulated stream (3 batches scheduled as one program, codegen/s4/batch_stream.py; the compile
report's s4.steady_state.stream, under the stored s4v1 rates), which reuses one batch's SRAM plan
and so lands near latency mode: the bound is what a stream reaches only if every stall is filled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s4c.s4.cycles import schedule
from s4c.s4.estimate import with_rates  # bf16 = i8/2, f32 = i8/8, bsr = dense

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

SPARSEBERT = {1: 800.0, 2: 1600.0, 4: 3050.0, 8: 5500.0, 16: 9300.0, 20: 10800.0}
FIT_POINTS = (1, 8)
HELD_OUT = (2, 4, 16, 20)
BATCH, SEQ, LAYERS = 8, 128, 12
NAMES = ("input_ids", "attention_mask", "token_type_ids")
FITTED = ("spu.macs_per_cycle.dense.i8", "spu.macs_per_cycle.nm.i8")


def prune_1_of(w_in_out: np.ndarray, c: int) -> np.ndarray:
    """1:c along the input dim of an ONNX MatMul weight [in, out]: the largest |w| of every group of
    c consecutive inputs survives (the last group is the tail when c does not divide `in`)."""
    k, o = w_in_out.shape
    groups = -(-k // c)
    pad = np.zeros((groups * c, o), np.float32)
    pad[:k] = w_in_out
    g = pad.reshape(groups, c, o)
    keep = np.argmax(np.abs(g), axis=1)[:, None, :]
    out = np.zeros_like(g)
    np.put_along_axis(out, keep, np.take_along_axis(g, keep, 1), 1)
    return out.reshape(groups * c, o)[:k]


def encoder_weights(model) -> list[str]:
    """Initializers that are the constant operand of an encoder MatMul (the pooler stays dense)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.input[1] for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and "pooler" not in n.name]


def pruned_model(layers: int, c: int, cache: Path | None = None) -> Path:
    """A BERT-base with `layers` encoder layers, its encoder Linears pruned 1:c, as an ONNX file."""
    import onnx
    from onnx import numpy_helper

    from bert_base import bert_base

    dense = Path(bert_base("torchscript", 0.0, layers=None if layers == LAYERS else layers))
    if c == 1:
        return dense
    out = (cache or dense.parent) / f"pruned_1_{c}.onnx"
    if out.exists():
        return out
    model = onnx.load(str(dense))
    targets = set(encoder_weights(model))
    for init in model.graph.initializer:
        if init.name in targets:
            init.CopyFrom(numpy_helper.from_array(prune_1_of(numpy_helper.to_array(init), c), init.name))
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


@dataclass
class LayerPrograms:
    """One compression's S4 programs with 1 and 2 encoder layers, and the layouts chosen."""
    c: int
    one: object                # s4c.s4.Program
    two: object
    layouts: dict              # layout -> count (the 2-layer model's encoder weights)
    stream_periods: tuple = () # simulated steady-state period of the 1- and 2-layer programs (cycles per
                               # batch, codegen/s4/batch_stream.py), under the rates compiled with (s4v1)

    def cycles(self, machine=None, mode: str = "steady", layers: int = LAYERS) -> int:
        """Modelled cycles per batch of the `layers`-layer model, from the 1- and 2-layer programs:
        "latency" one batch from an idle chip; "steady" the period of a stream of batches (the
        busiest unit's work per batch, s4c.s4.steady), each (core, unit) extrapolated on its own."""
        r1, r2 = schedule(self.one, machine), schedule(self.two, machine)
        if mode == "latency":
            return r1.total_cycles + (layers - 1) * (r2.total_cycles - r1.total_cycles)
        return max(r1.unit_busy[k] + (layers - 1) * (r2.unit_busy[k] - r1.unit_busy[k]) for k in r1.unit_busy)

    def throughput(self, machine=None, mode: str = "steady", batch: int = BATCH) -> float:
        m = machine or self.one.machine
        return batch * m.clock_hz / self.cycles(machine, mode)

    def stream_cycles(self, layers: int = LAYERS) -> float:
        """The simulated stream's period (s4.steady_state.stream of the compile reports, under the
        stored s4v1 rates) for `layers` layers: the latency minus the 2-layer program's overlap gain.
        A batch overlaps the next only at its edges (SRAM reuse makes the next batch's first layer
        wait for this one's last), so the gain is a constant, not a per-layer amount: the 1- and
        2-layer gains differ by up to 5,000 cycles (a greedy schedule at the edges), and extrapolating
        the period like the latency would multiply that by 11."""
        gain = schedule(self.two).total_cycles - self.stream_periods[1]
        return self.cycles(None, "latency", layers) - gain

    def stream_throughput(self, batch: int = BATCH, layers: int = LAYERS) -> float:
        return batch * self.one.machine.clock_hz / self.stream_cycles(layers)


@contextmanager
def layout_machine(machine):
    """Layout selection (select-sparse-layout{target=s4}, which prices layouts with the built-in
    "s4v1") sees `machine` instead, in this process only: the fit compiles under candidate rates
    without rewriting s4v1.json under other users of the tree."""
    import s4c.targets.s4 as target

    if machine is None:
        yield
        return
    orig = target.load_machine
    target.load_machine = lambda m="s4v1": machine if m == "s4v1" else orig(m)
    try:
        yield
    finally:
        target.load_machine = orig


def compile_program(path: Path, batch: int = BATCH, seq: int = SEQ, machine=None):
    """s4c.compile(target="s4") with its own layout selection (under `machine`'s rates when given):
    the program, the layouts select-sparse-layout chose ({layout: weights}) and the report's
    simulated steady-state period (cycles per batch of a 3-batch stream, under s4v1)."""
    import s4c
    from s4c.s4 import Program

    with tempfile.TemporaryDirectory() as td, layout_machine(machine):
        out = Path(td) / "out"
        cm = s4c.compile(str(path), {n: (batch, seq) for n in NAMES}, target="s4", outdir=str(out),
                         backend_options={"stream_batches": 3})
        program = Program.from_bytes((out / "model.s4").read_bytes())
    stream = cm.report["s4"]["steady_state"]["stream"]
    return program, dict(cm.report["layouts"]["s4"]["totals"]["layouts"]), stream["period_cycles"]


def sparsebert_programs(compressions=tuple(SPARSEBERT), machine=None) -> dict:
    out = {}
    for c in compressions:
        one, _, p1 = compile_program(pruned_model(1, c), machine=machine)
        two, layouts, p2 = compile_program(pruned_model(2, c), machine=machine)
        out[c] = LayerPrograms(c, one, two, layouts, (p1, p2))
    return out


def _solve(fn, target: float, lo: int = 100, hi: int = 100_000) -> int:
    """The smallest integer rate in [lo, hi] with fn(rate) >= target (fn rises with the rate)."""
    if fn(hi) < target:
        raise ValueError(f"{target:.0f}/s is out of reach even at {hi} MACs/cycle: another unit bounds it")
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fn(mid) >= target else (mid + 1, hi)
    return lo


def fit_machine(progs: dict, base: str = "s4v1"):
    """(machine, {parameter: (value, the data point that fixes it)}): dense.i8 on 1x, nm.i8 on 8x."""
    from s4c.s4 import load_machine

    m0 = load_machine(base)
    nm0 = m0["spu.macs_per_cycle.nm.i8"]
    dense = _solve(lambda r: progs[1].throughput(with_rates(m0, r, nm0)), SPARSEBERT[1])
    nm = _solve(lambda r: progs[8].throughput(with_rates(m0, dense, r)), SPARSEBERT[8])
    fitted = with_rates(m0, dense, nm)
    return fitted, {FITTED[0]: (dense, "SparseBERT 1x = 800 sentences/s"),
                    FITTED[1]: (nm, "SparseBERT 8x = 5500 sentences/s")}


def predictions(progs: dict, machine, mode: str = "steady") -> dict:
    """{c: (modelled sentences/s, SparseBERT sentences/s, relative error)}."""
    out = {}
    for c, p in sorted(progs.items()):
        thr = p.throughput(machine, mode)
        out[c] = (thr, SPARSEBERT[c], thr / SPARSEBERT[c] - 1.0)
    return out


def write_rates(machine, path: Path | None = None) -> Path:
    """Store the fitted SPU rates in the target file (s4c/s4/<name>.json), nothing else."""
    import s4c.s4

    path = path or Path(s4c.s4.__file__).with_name(f"{machine.name}.json")
    old = json.loads(path.read_text())
    old["spu"]["macs_per_cycle"] = machine.to_nested()["spu"]["macs_per_cycle"]
    path.write_text(json.dumps(old, indent=2) + "\n")
    return path


def main(argv=None) -> int:
    from s4c.s4 import load_machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="store the fitted rates in s4c/s4/s4v1.json")
    ap.add_argument("--check-layers", action="store_true", help="also compile 12 layers and compare")
    args = ap.parse_args(argv)
    progs = sparsebert_programs()
    m, fit = fit_machine(progs)
    for key, (value, point) in fit.items():
        print(f"{key} = {value}   (fixed by {point})")
    stored = load_machine("s4v1")
    same = all(m[k] == stored[k] for k in FITTED)
    print(f"{'x':>4} {'layouts':<20} {'bound/s':>9} {'SparseBERT':>10} {'error':>7} {'latency/s':>9} {'error':>7}"
          f" {'stream/s':>9} {'error':>7}")
    lat = predictions(progs, m, "latency")
    for c, (thr, paper, err) in predictions(progs, m).items():
        tag = " (fit)" if c in FIT_POINTS else ""
        lay = ",".join(f"{k}x{v}" for k, v in sorted(progs[c].layouts.items()))
        sim = progs[c].stream_throughput()
        print(f"{c:>4} {lay:<20} {thr:9.0f} {paper:10.0f} {err:+7.1%} {lat[c][0]:9.0f} {lat[c][2]:+7.1%}"
              f" {sim:9.0f} {sim / paper - 1:+7.1%}{tag}")
    print("bound: the busiest unit's work per batch (s4c.s4.steady, what the fit uses); stream: 3 batches "
          "scheduled as one program (codegen/s4/batch_stream.py), under the stored s4v1 rates"
          + ("" if same else " (NOT this fit's: run with --write, then again)"))
    if args.check_layers:
        for c in (1, 8, 20):
            full, _, period = compile_program(pruned_model(LAYERS, c))
            t = schedule(full, m).total_cycles
            est = progs[c].cycles(m, "latency")
            sim = progs[c].stream_cycles()
            print(f"{c:>4}x 12 layers: {t} cycles compiled, {est} from 1 + 11 x (2 - 1) layers ({est / t - 1:+.3%}); "
                  f"stream period {period:.0f} compiled, {sim:.0f} from the 2-layer gain ({sim / period - 1:+.3%})")
    if args.write:
        print(f"wrote {write_rates(m)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
