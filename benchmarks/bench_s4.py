"""S4 backend timings on BERT-base (seq 128, batch 1): compile with `--target s4` and run the
program in the reference interpreter; checks the result against onnxruntime.

    python benchmarks/bench_s4.py                                  # both exporters, 90% sparsity
    python benchmarks/bench_s4.py --exporters dynamo --sparsity 0.97 --repeat 3

Equivalent command lines (what the figures measure):

    s4c compile MODEL.onnx -o OUT --target s4 --input-shape input_ids=1x128 \\
        --input-shape attention_mask=1x128 --input-shape token_type_ids=1x128
    s4c run OUT --backend s4 --inputs IN.npz

"compile" is the whole `s4c.compile(..., target="s4")` (import, pipeline, IR/weights files, layout
selection, lowering, model.s4 + .asm + report), best of --repeat; its phases are from the driver's
timings and the backend's own split (lower / write). "interpret" is `load(OUT)` (container parse
and validation) plus one `run` (validation, interpretation with the race check, host conversions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def bench(exporter: str, sparsity: float, repeat: int, workdir: str, check: bool) -> dict:
    from bert_base import bert_base
    from oracle import make_feeds, max_abs_diff, ort_outputs

    import s4c.codegen.s4 as s4backend
    from s4c.driver import compile as s4c_compile

    path = bert_base(exporter, sparsity)
    shapes = {n: (1, 128) for n in NAMES}
    out = os.path.join(workdir, f"{exporter}_{sparsity}")
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        compiled = s4c_compile(path, input_shapes=shapes, target="s4", outdir=out)
        t = time.perf_counter() - t0
        if best is None or t < best[0]:
            best = (t, dict(compiled.timings))
    report = json.load(open(os.path.join(out, "report.json")))["s4"]
    feeds = make_feeds(list(NAMES), batch=1, seq=128, vocab=30000)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        runner = s4backend.load(out)
        t1 = time.perf_counter()
        got = runner.run(feeds)
        runs.append((time.perf_counter() - t0, t1 - t0))
    err = None
    if check:
        ref = ort_outputs(path, feeds)
        err = max(max_abs_diff({k: got[k] for k in ref}, ref).values())
    return {"exporter": exporter, "sparsity": sparsity, "compile_s": best[0], "phases": best[1],
            "backend": report.get("compile_s", {}), "interpret_s": min(r[0] for r in runs),
            "load_s": min(r[1] for r in runs), "cycles": report["cycles"], "latency_s": report["latency_s"],
            "instructions": report["instructions"], "const_bytes": report["dram"]["const_bytes"],
            "max_abs_err": err}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for exporter in args.exporters:
            r = bench(exporter, args.sparsity, args.repeat, work, not args.no_check)
            rows.append(r)
            ph = r["phases"]
            print(f"{exporter:12s} sparsity {r['sparsity']:.2f}: compile {r['compile_s']:.2f}s "
                  f"(import {ph.get('import', 0):.2f} passes {ph.get('passes', 0):.2f} build-s4 {ph.get('build-s4', 0):.2f}"
                  f" = lower {r['backend'].get('lower', 0):.2f} + write {r['backend'].get('write', 0):.2f}), "
                  f"interpret {r['interpret_s']:.2f}s (load {r['load_s']:.2f}), {r['instructions']} instructions, "
                  f"constants {r['const_bytes'] / 1e6:.0f} MB, modelled latency {r['latency_s'] * 1e3:.2f} ms"
                  + (f", max |err| {r['max_abs_err']:.1e}" if r["max_abs_err"] is not None else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
