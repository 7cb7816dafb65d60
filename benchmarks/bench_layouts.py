"""Layout selection on a pruned BERT-base: the compile report's layout sections (per-weight choice,
modelled cost of every candidate, bytes) and totals (weight bytes vs dense, modelled time vs
all-dense) for each target, and how long analysis + selection take.

    python benchmarks/bench_layouts.py                          # 90% unstructured, seq 128, s4 and c
    python benchmarks/bench_layouts.py --pattern block16x1 --targets c
    python benchmarks/bench_layouts.py --markdown report.md     # also write the markdown sections

Needs torch + transformers (the model is built by examples/make_pruned_bert.py and cached). The C
model uses the calibration file if `s4c calibrate --target c` wrote one, else its defaults (the
report's "Cost model" line says which).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bert_base import bert_base  # noqa: E402

from s4c.driver import run_pipeline, select_layouts  # noqa: E402
from s4c.frontend import load_onnx  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--pattern", default="unstructured", help="unstructured, blockRxC or nmN:M")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--targets", default="c,s4")
    ap.add_argument("--markdown", metavar="FILE", help="write the report.md sections here")
    args = ap.parse_args(argv)

    path = bert_base(args.exporter, args.sparsity, pattern=args.pattern)
    start = time.perf_counter()
    graph = load_onnx(path, input_shapes={"input_ids": (1, args.seq), "attention_mask": (1, args.seq)})
    graph = run_pipeline(graph, "default")
    print(f"# BERT-base {args.pattern} {args.sparsity:g} ({args.exporter}), seq {args.seq}: import + default "
          f"pipeline {time.perf_counter() - start:.1f}s")
    report, md = {}, []
    for target in args.targets.split(","):
        start = time.perf_counter()
        select_layouts(graph, target, {}, None, report, md)
        t = report["layouts"][target]["totals"]
        print(f"{target}: {t['weights']} weights, {t['bytes'] / 2**20:.1f} MiB stored vs {t['dense_bytes'] / 2**20:.1f} "
              f"MiB dense ({t['bytes_vs_dense']:.1%}); modelled {t['cost_s'] * 1e3:.3f} ms vs {t['dense_cost_s'] * 1e3:.3f}"
              f" ms all-dense ({t['modelled_speedup']:.2f}x); layouts {t['layouts']}; analysis + selection "
              f"{time.perf_counter() - start:.2f}s")
        print(f"   cost model: {report['layouts'][target]['cost_model']}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n\n".join(md) + "\n")
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
