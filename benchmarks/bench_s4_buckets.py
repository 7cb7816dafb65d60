"""S4 buckets for shape ranges (issue 16 item 3): one BERT-base build for a range of dims, one program
per bucket in one model.s4 sharing the weights; per bucket the modelled latency and throughput, and
model.s4's size against fixed-shape builds.

    python benchmarks/bench_s4_buckets.py                       # BERT-base 90% torchscript, 1..4x1..256
    python benchmarks/bench_s4_buckets.py --single 4x256 1x128  # also fixed-shape builds, their model.s4 sizes
    python benchmarks/bench_s4_buckets.py --model examples/models/bert_mini_pruned90.onnx --range 1..2x1..128

Figures are the cycle model's (no wall-clock in the latencies: machine load does not change them);
the compile time is wall-clock. Prints a markdown table (benchmarks/RESULTS.md "S4: sequence buckets").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import s4c  # noqa: E402
from s4c.s4 import read_programs  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="ONNX model (default: cached BERT-base, --exporter / --sparsity)")
    ap.add_argument("--exporter", default="torchscript")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--range", default="1..4x1..256", help="input_ids dims, e.g. 1..4x1..256")
    ap.add_argument("--seq-buckets", default=None)
    ap.add_argument("--single", nargs="*", default=[], metavar="BxT", help="also build these fixed shapes")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    if args.model is None:
        from bert_base import bert_base

        args.model = bert_base(args.exporter, args.sparsity)
    work = args.workdir or tempfile.mkdtemp(prefix="s4buckets-")
    out = os.path.join(work, "range")
    start = time.perf_counter()
    s4c.compile(args.model, {"input_ids": args.range}, target="s4", outdir=out,
                backend_options={"seq_buckets": args.seq_buckets} if args.seq_buckets else None)
    compile_s = time.perf_counter() - start
    with open(os.path.join(out, "report.json")) as f:
        rows = json.load(f)["s4"]["buckets"]
    size = os.path.getsize(os.path.join(out, "model.s4"))
    with open(os.path.join(out, "model.s4"), "rb") as f:
        const = len(read_programs(f.read()).const)
    print(f"model {os.path.basename(os.path.dirname(args.model))}/{os.path.basename(args.model)}, "
          f"input_ids={args.range}: {len(rows)} programs, compile {compile_s:.1f} s wall")
    print(f"model.s4 {size:,} bytes: constant segment {const:,} (stored once), code and tables {size - const:,}")
    print()
    print("| bucket | modelled cycles | latency (ms) | throughput (sentences/s) | instructions |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['cycles']:,} | {r['latency_s'] * 1e3:.3f} | {r['throughput_per_s']:,.1f} | "
              f"{r['instructions']:,} |")
    for shape in args.single:
        b, t = map(int, shape.split("x"))
        single = os.path.join(work, f"single_{shape}")
        s4c.compile(args.model, {"input_ids": (b, t)}, target="s4", outdir=single)
        print(f"\nfixed-shape {shape} build: model.s4 {os.path.getsize(os.path.join(single, 'model.s4')):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
