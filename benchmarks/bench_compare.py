"""Sparse-large vs dense-small: `s4c compare` on BERT-base pruned to 90% and 95% (unstructured)
against dense 4-layer and 6-layer BERTs of the TinyBERT shapes (TinyBERT4: 4 layers, hidden 312,
FFN 1200, 12 heads; TinyBERT6: 6 layers, hidden 768, FFN 3072, 12 heads), with published accuracies.

The models are random-weight exports of those shapes (examples/make_pruned_bert.py, cached): the
throughput columns are properties of the shapes and sparsity, the accuracy column is cited (see
RESULTS.md), not measured here.

    python benchmarks/bench_compare.py [--seq 128] [--repeat 10] [-o build/compare]
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples"))

# MNLI-m accuracy (%): see RESULTS.md for the sources; None = no published figure found
ACCURACY = {"bert-base-90": 83.40, "bert-base-95": None, "tinybert4-dense": 82.5, "tinybert6-dense": 84.6}


def models() -> list[tuple[str, str]]:
    from make_pruned_bert import cached_model

    return [
        ("bert-base-90", str(cached_model(size="base", sparsity=0.9))),
        ("bert-base-95", str(cached_model(size="base", sparsity=0.95))),
        ("tinybert4-dense", str(cached_model(size="base", layers=4, hidden=312, heads=12, intermediate=1200,
                                             sparsity=0.0))),
        ("tinybert6-dense", str(cached_model(size="base", layers=6, sparsity=0.0))),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("-o", "--output", default="build/compare")
    args = ap.parse_args(argv)
    from s4c.cli import main as s4c_main

    cmd = ["compare", *[f"{label}={path}" for label, path in models()], "--input-shape", f"input_ids=1x{args.seq}",
           "-o", args.output, "--repeat", str(args.repeat)]
    cmd += [f"--accuracy={label}={acc}" for label, acc in ACCURACY.items() if acc is not None]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    print("s4c " + " ".join(cmd), file=sys.stderr)
    return s4c_main(cmd)


if __name__ == "__main__":
    sys.exit(main())
