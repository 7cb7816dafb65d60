"""Import BERT-base (seq 128) from both exporters: wall time, no Shape op left, numerics vs onnxruntime.

    python benchmarks/bench_import.py [--repeat 5]

Prints one row per exporter: median import time of `--repeat` runs, op count, max abs difference of the
reference evaluator from onnxruntime (graph optimisations off) on the same inputs."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from bert_base import bert_base  # noqa: E402
from oracle import make_feeds, max_abs_diff, ort_outputs  # noqa: E402
from s4c.evaluate import evaluate  # noqa: E402
from s4c.frontend import load_onnx  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--sparsity", type=float, default=0.9)
    args = p.parse_args()
    shapes = {"input_ids": (1, 128)}
    print(f"{'exporter':<12} {'import s (median)':>17} {'ops':>5} {'Shape ops':>9} {'max |ref - ort|':>16}")
    for exporter in ("torchscript", "dynamo"):
        path = bert_base(exporter, args.sparsity)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            graph = load_onnx(path, input_shapes=shapes)
            times.append(time.perf_counter() - start)
        shape_ops = sum(op.op == "Shape" for op in graph.ops)
        feeds = make_feeds([v.name for v in graph.inputs], batch=1, seq=128, vocab=30522)
        diff = max(max_abs_diff(evaluate(graph, feeds), ort_outputs(path, feeds)).values())
        print(f"{exporter:<12} {statistics.median(times):>17.3f} {len(graph.ops):>5} {shape_ops:>9} {diff:>16.2e}")


if __name__ == "__main__":
    main()
