"""SparseBERT check of the S4 lowering end to end: BERT-base, seq 128, the encoder's Linears pruned
to N:M 1:c (c = 2, 4, 8, 16, 20; dense at 1x) and lowered to S4 instruction streams by the S4
backend (codegen/s4), timed by the cycle model (s4c.s4.cycles), beside SparseBERT's measured
sentences/s (800 / 1600 / 3050 / 5500 / 9300 / 10800) and the analytic estimator (s4c.s4.estimate).

    python benchmarks/bench_sparsebert.py                       # table (batch 8, 4 cores)
    python benchmarks/bench_sparsebert.py --plot benchmarks/sparsebert_s4.png
    python benchmarks/bench_sparsebert.py --refit               # try re-fitting the two SPU rates on the lowering
    python benchmarks/bench_sparsebert.py --batch 16 --compressions 1 20

The model is the dense BERT-base export (benchmarks/bert_base.py, dynamo exporter: batch-dynamic),
imported and run through the default pipeline once; each compression then prunes the weights of the
12 x 4 encoder Linears to 1:c by magnitude (the largest |w| of every group of c along `in`; the
pooler stays dense, as in the estimator) and sets their layout to `nmN:M`, which the S4 backend packs
for spu.nm. Numerics play no part in the timing (costs never depend on data), so the pruned model is
not re-exported. Machine: s4v1 (the SPU rates fitted by `python -m s4c.s4.estimate --calibrate` on the
estimator's 1x and 20x points). Throughput = batch / modelled latency of one program (4 cores, rows of
whole sentences per core: 2 sentences per core at batch 8). Beside it the steady state: "stream" =
a stream of 3 batches scheduled as one program (codegen/s4/batch_stream.py), "bound" = the busiest
unit's work per batch (s4c/s4/steady.py), both in sentences/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

PAPER = {1: 800.0, 2: 1600.0, 4: 3050.0, 8: 5500.0, 16: 9300.0, 20: 10800.0}
NAMES = ("input_ids", "attention_mask", "token_type_ids")


def load_dense(batch: int, seq: int = 128):
    from bert_base import bert_base

    import s4c
    from s4c.driver import run_pipeline

    path = bert_base("dynamo", 0.0)
    graph = s4c.load_onnx(path, input_shapes={n: (batch, seq) for n in NAMES})
    return run_pipeline(graph, "default")


def prune_1_of(w: np.ndarray, m: int) -> np.ndarray:
    """Keep the largest-magnitude value of every group of m along the reduction dim (1:m)."""
    o, k = w.shape
    groups = -(-k // m)
    pad = np.zeros((o, groups * m), np.float32)
    pad[:, :k] = w
    g = pad.reshape(o, groups, m)
    keep = np.argmax(np.abs(g), axis=-1)[..., None]
    out = np.zeros_like(g)
    np.put_along_axis(out, keep, np.take_along_axis(g, keep, -1), -1)
    return out.reshape(o, -1)[:, :k]


def encoder_linears(graph):
    """The Linears of the encoder (every Linear except the pooler's, whose result feeds Tanh)."""
    feeds_tanh = {id(op.inputs[0]) for op in graph.ops if op.op == "Tanh"}
    return [op for op in graph.ops if op.op == "Linear" and id(op.outputs[0]) not in feeds_tanh]


def compressed(graph, c: int):
    from s4c.ir import Value

    g = graph.clone()
    if c > 1:
        for op in encoder_linears(g):
            w = op.inputs[1]
            op.inputs[1] = Value(w.name, w.type, data=prune_1_of(np.asarray(w.data, np.float32), c))
            op.attrs["layout"] = f"nm1:{c}"
    return g


def measure(graph, c: int, batch: int, machine=None, cores: int = 4, stream: int = 3) -> dict:
    """One compression lowered and timed: latency mode, and (stream > 0) the steady state of a stream
    of `stream` batches scheduled as one program (codegen/s4/batch_stream.py) and the bound."""
    from s4c.codegen.s4.batch_stream import steady_period, stream_program
    from s4c.codegen.s4.lower import lower
    from s4c.s4.cycles import schedule as cycle_model
    from s4c.s4.steady import from_report

    t0 = time.perf_counter()
    lowered = lower(compressed(graph, c), {"cores": cores, "stream_batches": stream,
                                           **({"machine": machine} if machine else {})})
    t1 = time.perf_counter()
    rep = cycle_model(lowered.program, machine)
    busy = {u: sum(v for k, v in rep.unit_busy.items() if k.endswith("." + u)) / (cores * rep.total_cycles)
            for u in ("dma", "spu", "vpu")}
    hz = lowered.program.machine.clock_hz
    steady = None
    if stream:
        t_k = cycle_model(stream_program(lowered, stream).program, machine).total_cycles
        steady = batch * hz / steady_period(rep.total_cycles, t_k, stream)
    return {"c": c, "throughput": batch / rep.latency_s, "cycles": rep.total_cycles, "util": busy,
            "instructions": rep.instructions, "lower_s": t1 - t0, "program": lowered.program,
            "stream": steady, "bound": batch * hz / from_report(rep).period_cycles}


def retime(program, machine, batch: int) -> float:
    """Throughput of an already lowered program under other machine parameters."""
    from s4c.s4.cycles import schedule as cycle_model
    return batch / cycle_model(program, machine).latency_s


def refit(graph, batch: int, rows: dict) -> dict:
    """Fit spu.macs_per_cycle.dense.i8 on 1x and nm.i8 on 20x with the lowered programs (re-timed,
    not re-lowered), as s4c.s4.estimate does with its analytic model. Returns the fitted rates and
    the re-timed table, or the reason the fit is impossible."""
    from s4c.s4 import load_machine
    from s4c.s4.estimate import with_rates as _with_rates

    base = load_machine("s4v1")
    nm0 = base["spu.macs_per_cycle.nm.i8"]

    def solve(fn, target, lo=100.0, hi=1e6):
        if fn(hi) < target:
            return None
        for _ in range(40):
            mid = (lo * hi) ** 0.5
            lo, hi = (mid, hi) if fn(mid) < target else (lo, mid)
        return hi

    dense = solve(lambda r: retime(rows[1]["program"], _with_rates(base, r, nm0), batch), PAPER[1])
    out = {"dense.i8": dense}
    if dense is None:
        return out
    nm = solve(lambda r: retime(rows[20]["program"], _with_rates(base, dense, r), batch), PAPER[20])
    out["nm.i8"] = nm
    if nm is not None:
        m = _with_rates(base, dense, nm)
        out["table"] = {c: retime(rows[c]["program"], m, batch) for c in rows}
    else:
        inf = base.replace({k: v * 1000 for k, v in base.params.items() if k.startswith("spu.macs")})
        out["infinite_spu_20x"] = retime(rows[20]["program"], inf, batch)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cores", type=int, default=4)
    ap.add_argument("--compressions", type=int, nargs="*", default=sorted(PAPER))
    ap.add_argument("--plot", metavar="PNG", help="write the plot (needs matplotlib)")
    ap.add_argument("--refit", action="store_true", help="re-fit the two SPU rates on the lowering (1x, 20x)")
    args = ap.parse_args(argv)

    from s4c.s4.estimate import estimate_bert

    graph = load_dense(args.batch)
    rows = {}
    print(f"BERT-base seq 128, batch {args.batch}, {args.cores} cores, S4 lowering timed by the cycle model")
    print(f"{'x':>4} {'layout':>7} {'S4 lowering':>12} {'SparseBERT':>11} {'error':>7} {'estimator':>10}  "
          f"util dma/spu/vpu   instrs  lower  {'stream':>7} {'bound':>7}")
    for c in args.compressions:
        r = measure(graph, c, args.batch, cores=args.cores)
        rows[c] = r
        est = estimate_bert("s4v1", c).throughput
        paper = PAPER.get(c)
        err = f"{r['throughput'] / paper - 1:+7.1%}" if paper else "      -"
        util = "/".join(f"{r['util'][u]:.2f}" for u in ("dma", "spu", "vpu"))
        print(f"{c:>4} {'dense' if c == 1 else f'nm1:{c}':>7} {r['throughput']:12.0f} {paper or 0:11.0f} {err} "
              f"{est:10.0f}  {util:>16} {r['instructions']:8d} {r['lower_s']:5.1f}s  {r['stream']:7.0f} {r['bound']:7.0f}",
              flush=True)
    if args.refit and 1 in rows and 20 in rows:
        fit = refit(graph, args.batch, rows)
        print("refit on the lowering:", {k: v for k, v in fit.items() if k != "table"})
        for c, thr in fit.get("table", {}).items():
            print(f"  {c:>4}x {thr:8.0f}  ({thr / PAPER[c] - 1:+.1%})")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cs = sorted(rows)
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.plot(cs, [PAPER[c] for c in cs], "o-", label="SparseBERT (measured, NAACL 2021)")
        ax.plot(cs, [estimate_bert("s4v1", c).throughput for c in cs], "s--", label="s4c.s4.estimate (analytic)")
        ax.plot(cs, [rows[c]["throughput"] for c in cs], "^-", label=f"S4 lowering, cycle model (batch {args.batch})")
        ax.set_xlabel("weight compression (x)")
        ax.set_ylabel("sentences / s (BERT-base, seq 128)")
        ax.set_xticks(cs)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
