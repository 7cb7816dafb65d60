"""End-to-end BERT-base latency of the s4c C backend next to onnxruntime, interleaved in one run.

    OMP_WAIT_POLICY=passive python benchmarks/bench_linear_e2e.py              # all four models
    OMP_WAIT_POLICY=passive python benchmarks/bench_linear_e2e.py --models 90 --profile

Models (benchmarks/bert_base.py, torchscript export, seq 128, batch 1, fp32): dense, 90%
unstructured, 90% in 4x1 blocks, 97% unstructured.  Each is compiled for the C target
(`s4c.compile(..., target="c")`, layouts chosen by the C cost model) into --outdir/<name>
(recompiled every run unless --reuse, so kernel changes are picked up).  The s4c runner
(--threads, default 2) and an onnxruntime session (intra-op threads = --threads, all graph
optimisations) run the same inputs in alternating blocks of --block runs for --rounds rounds;
the table shows each runtime's median over all its runs and `speedup` = ort median / s4c
median (issue 8's targets: 90% >= 3.0, 90% 4x1 >= 4.0, 97% >= 5.5, dense >= 1/1.3).  The
outputs are compared too.  No assertions: numbers only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MODELS = {  # name -> (sparsity, pattern)
    "dense": (0.0, "unstructured"),
    "90": (0.9, "unstructured"),
    "90-4x1": (0.9, "block4x1"),
    "97": (0.97, "unstructured"),
}


def feeds_for(names, seq: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for n in names:
        if n == "attention_mask":
            feeds[n] = np.ones((1, seq), np.int64)
        elif n == "token_type_ids":
            feeds[n] = np.zeros((1, seq), np.int64)
        else:
            feeds[n] = rng.integers(1000, 20000, (1, seq), dtype=np.int64)
    return feeds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="dense,90,90-4x1,97", help="comma list of " + ", ".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--block", type=int, default=5, help="runs per runtime per round")
    ap.add_argument("--outdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "s4c-e2e"))
    ap.add_argument("--reuse", action="store_true", help="do not recompile when OUTDIR/<name> exists")
    ap.add_argument("--profile", action="store_true", help="also print s4c's per-kernel profile")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    import s4c
    from bert_base import bert_base
    from s4c.driver import load_compiled, runner_for

    print(f"# threads={args.threads} seq={args.seq} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')} "
          f"loadavg={os.getloadavg()[0]:.2f} ort={ort.__version__}")
    rows = []
    for name in args.models.split(","):
        sp, pattern = MODELS[name]
        path = bert_base("torchscript", sp, pattern=pattern)
        out = os.path.join(args.outdir, name)
        if not (args.reuse and os.path.exists(os.path.join(out, "manifest.json"))):
            t0 = time.perf_counter()
            s4c.compile(path, input_shapes={"input_ids": (1, args.seq)}, target="c", outdir=out)
            print(f"# compiled {name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        compiled = load_compiled(out)
        run = runner_for(compiled, "c", {"threads": args.threads})
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feeds = feeds_for([i.name for i in sess.get_inputs()], args.seq)
        s4c_feeds = {k: v for k, v in feeds.items() if k in {v.name for v in compiled.graph.inputs}}
        got = run(s4c_feeds)
        ref = sess.run(None, feeds)
        err = max(float(np.max(np.abs(np.asarray(g) - r))) for g, r in zip(got.values(), ref))
        run(s4c_feeds)
        sess.run(None, feeds)
        ts, to = [], []
        for _ in range(args.rounds):
            for _ in range(args.block):
                t0 = time.perf_counter()
                run(s4c_feeds)
                ts.append(time.perf_counter() - t0)
            for _ in range(args.block):
                t0 = time.perf_counter()
                sess.run(None, feeds)
                to.append(time.perf_counter() - t0)
        ms, mo = statistics.median(ts) * 1e3, statistics.median(to) * 1e3
        rows.append((name, ms, min(ts) * 1e3, mo, min(to) * 1e3, mo / ms, err))
        print(f"{name:<8} s4c {ms:7.1f} ms (min {min(ts) * 1e3:6.1f})  ort {mo:7.1f} ms (min {min(to) * 1e3:6.1f})"
              f"  speedup {mo / ms:5.2f}x  max|diff| {err:.2e}", flush=True)
        if args.profile:
            prun = runner_for(compiled, "c", {"threads": args.threads, "profile": True})
            for _ in range(10):
                prun(s4c_feeds)
            rep = getattr(getattr(prun, "__self__", None), "profile_report", None)
            if rep:
                print(rep())
    return 0


if __name__ == "__main__":
    sys.exit(main())
