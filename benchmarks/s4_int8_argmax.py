"""int8 on the S4 at BERT-base size with a classification head: argmax agreement with onnxruntime fp32.

    python benchmarks/s4_int8_argmax.py [--batch 32] [--seq 32] [--count 256]

The model is examples/model_families.py's "bert-seqcls" at BERT-base size (12 layers, hidden 768,
3 labels, random weights, 90% unstructured pruning, TorchScript export; cached). It is compiled with
`--target s4 --precision int8`, calibrated on 32 random-token sentences (bench_s4.samples, seed 0),
then `count` other sentences (seed 1) run through the S4 interpreter in batches of `batch` and
through onnxruntime fp32. Printed: argmax agreement, the cosine of the logits, and the reference's
top-1 minus top-2 margins (a random-weight head gives close logits, so the margins of any sentence
whose argmax differs say how close the call was).

Slow on purpose (the interpreter runs every instruction: ~1-6 min per batch of 32x32 on a 2-vCPU
machine, calibration ~1-8 min): a benchmark, not a unit test. tests/test_s4_int8_models.py checks the
same property on the tiny head in CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "tests"), os.path.join(HERE, "..", "examples")]

from bench_s4 import samples  # noqa: E402
from model_families import cached_family_model  # noqa: E402
from oracle import ort_outputs  # noqa: E402

from s4c.accuracy import cosine  # noqa: E402
from s4c.cli import main as s4c_main  # noqa: E402
from s4c.codegen.registry import BACKENDS  # noqa: E402

NAMES = ("input_ids", "attention_mask", "token_type_ids")
VOCAB = 30522


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--count", type=int, default=256)
    args = ap.parse_args(argv)
    if args.count % args.batch or 32 % args.batch and args.batch % 32:
        raise SystemExit("--count must be a multiple of --batch, and --batch a divisor or multiple of 32")
    path = cached_family_model("bert-seqcls", "torchscript", size="base")
    with tempfile.TemporaryDirectory() as work:
        calib = os.path.join(work, "calib.npz")
        np.savez(calib, **samples(max(32 // args.batch, 1), 0, args.batch, args.seq, VOCAB))
        out = os.path.join(work, "int8")
        shapes = [a for n in NAMES for a in ("--input-shape", f"{n}={args.batch}x{args.seq}")]
        t0 = time.perf_counter()
        if s4c_main(["compile", str(path), "-o", out, *shapes, "--target", "s4", "--precision", "int8",
                     "--calibration-data", calib]):
            return 1
        print(f"compile {time.perf_counter() - t0:.0f} s", flush=True)
        runs = args.count // args.batch
        feeds = samples(runs, 1, args.batch, args.seq, VOCAB)
        runner = BACKENDS["s4"].load(out)
        got = []
        for i in range(runs):
            t0 = time.perf_counter()
            got.append(runner.run({k: v[i] for k, v in feeds.items()})["logits"])
            print(f"batch {i + 1}/{runs}: {time.perf_counter() - t0:.0f} s", flush=True)
    got = np.concatenate(got)
    ref = ort_outputs(str(path), {k: v.reshape(args.count, args.seq) for k, v in feeds.items()})["logits"]
    agree = got.argmax(1) == ref.argmax(1)
    top = np.sort(ref, axis=1)
    margin = top[:, -1] - top[:, -2]
    print(f"BERT-base seqcls 90%, S4 int8, {args.count} sentences of {args.seq} tokens: argmax agreement "
          f"{agree.mean():.4f} ({agree.sum()}/{args.count}); logits cosine {cosine(got, ref):.6f}, max |err| "
          f"{np.abs(got - ref).max():.3g}; reference top-1 - top-2 margin median {np.median(margin):.3g}; "
          f"margins where the argmax differs: {np.round(margin[~agree], 5).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
