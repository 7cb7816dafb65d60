"""The default pass pipeline on BERT-base (seq 128) from both exporters: per-pass wall time, the
fused structure, and numerics against the unoptimised graph.

    python benchmarks/bench_passes.py [--repeat 3] [--pipeline default] [--no-check]

Builds (once, cached by examples/make_pruned_bert.py `cached_model`; needs torch + transformers)
and imports BERT-base with input_ids=1x128, then per exporter prints a --time-passes table (the
run with the median total of `--repeat` runs, each on a fresh import), checks the per-layer op
structure test_fusions.py checks on the fixtures (12 x QKV Linear, MultiHeadAttention, output
Linear, SkipLayerNorm, Linear+Gelu, Linear, SkipLayerNorm; one Embedding; the pooler's Linear) and
the reference evaluator's max abs difference from the unoptimised graph (verifier after each pass)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from bert_base import bert_base  # noqa: E402
from oracle import make_feeds  # noqa: E402
from s4c.evaluate import evaluate  # noqa: E402
from s4c.frontend import load_onnx  # noqa: E402
from s4c.passes import PassManager, PassTimer, VerifyEach, parse_pipeline  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--pipeline", default="default")
    p.add_argument("--no-check", action="store_true", help="skip the structure and numerics checks")
    args = p.parse_args()
    shapes = {"input_ids": (1, 128)}
    failed = False
    summary = []
    for exporter in ("torchscript", "dynamo"):
        path = bert_base(exporter, args.sparsity)
        runs = []
        for _ in range(max(args.repeat, 1)):
            graph = load_onnx(path, input_shapes=shapes)
            timer = PassTimer()
            pm = PassManager(parse_pipeline(args.pipeline), [timer])
            start = time.perf_counter()
            pm.run(graph)
            runs.append((time.perf_counter() - start, timer))
        runs.sort(key=lambda r: r[0])
        wall, timer = runs[len(runs) // 2]
        print(f"== BERT-base ({exporter}), pipeline {args.pipeline!r}, input_ids=1x128: "
              f"median {wall:.3f} s of {len(runs)} (min {runs[0][0]:.3f}, max {runs[-1][0]:.3f})")
        print(timer.table(), end="")
        line = f"{exporter:<12} pipeline {wall:6.3f} s"
        if not args.no_check:
            graph = load_onnx(path, input_shapes=shapes)
            feeds = make_feeds([v.name for v in graph.inputs], batch=1, seq=128, vocab=30522)
            reference = evaluate(graph, feeds)
            PassManager(parse_pipeline(args.pipeline), [VerifyEach()]).run(graph)
            got = evaluate(graph, feeds)
            diff = max(float(np.max(np.abs(got[k].astype(np.float64) - reference[k]))) for k in reference)
            ops = Counter(op.op for op in graph.ops)
            print("ops after:", dict(sorted(ops.items())))
            try:
                from test_fusions import check_encoder_structure
                check_encoder_structure(graph, 12, pooler=True)
                structure = "structure ok"
            except AssertionError as e:
                structure = f"STRUCTURE WRONG: {e}"
                failed = True
            if diff > 1e-4:
                failed = True
            print(f"max |optimised - unoptimised| = {diff:.2e}; {structure}")
            line += f"   max abs diff {diff:.2e}   {structure}"
        summary.append(line)
        print()
    print("\n".join(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
