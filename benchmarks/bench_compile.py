"""Compile time of BERT-base (seq 128, batch 1) for both targets, phase by phase.

    python benchmarks/bench_compile.py                                  # both exporters, 90%, --target all
    python benchmarks/bench_compile.py --target s4 --sparsity 0 0.9 0.97 --repeat 3

The figure is the whole `s4c.compile(MODEL, target=..., outdir=...)` (what `s4c compile` runs:
import, the default pipeline, per-target layout selection, both backends, every file in OUTDIR),
median of --repeat runs on a cached model; `without cc` subtracts the C compiler's own time (the
C backend's report: build_seconds - generate_seconds), as the CPU-performance issue counts it.
The phase columns are the driver's timings; `write-ir` (model.s4ir + weights.npz) runs in the
background while the backends build, so the phases add up to more than the total.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def compile_once(path: str, target: str, workdir: str) -> dict:
    import s4c

    outdir = os.path.join(workdir, "out")
    start = time.perf_counter()
    compiled = s4c.compile(path, input_shapes={n: (1, 128) for n in NAMES}, target=target, outdir=outdir)
    total = time.perf_counter() - start
    cc = 0.0
    if "c" in compiled.targets:
        with open(os.path.join(outdir, "report.json")) as f:
            c = json.load(f)["c"]
        cc = c["build_seconds"] - c["generate_seconds"]
    return {"total": total, "cc": cc, "without_cc": total - cc, **compiled.timings}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"])
    ap.add_argument("--sparsity", type=float, nargs="*", default=[0.9])
    ap.add_argument("--target", default="all", choices=["ir", "s4", "c", "all"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from bert_base import bert_base

    cols = ["total", "without_cc", "cc", "import", "passes", "build-s4", "build-c", "write-ir"]
    print(f"BERT-base seq 128, --target {args.target}, median of {args.repeat} (seconds)")
    print(f"{'exporter':<12} {'sparsity':>8} " + " ".join(f"{c:>10}" for c in cols))
    for exporter in args.exporters:
        for sparsity in args.sparsity:
            path = bert_base(exporter, sparsity)
            runs = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as workdir:
                    runs.append(compile_once(path, args.target, workdir))
            med = {c: statistics.median(r.get(c, 0.0) for r in runs) for c in cols}
            print(f"{exporter:<12} {sparsity:>8g} " + " ".join(f"{med[c]:>10.2f}" for c in cols), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
