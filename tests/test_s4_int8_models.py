"""int8 on the S4 (issue 14) on exported models, against onnxruntime fp32:

- a sequence-classification head (examples/model_families.py "bert-seqcls", tiny, torchscript),
  calibrated on 32 random-token sentences: argmax agreement on 256 other sentences >= 97% (the
  issue's bar; the test prints the reference's top-1 / top-2 margins, since random-weight heads give
  close logits, and the margins of any input where the argmax differs);
- BERT-base 90% from both exporters (slow), calibrated on 32 random-token sentences
  (benchmarks/bench_s4.py `samples`): every instruction timed in the dtype it computes in, model.s4
  at most 35% of the fp32 program's bytes, cosine >= 0.99 to onnxruntime fp32 on another input.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from oracle import REPO, ort_outputs
from s4c.accuracy import cosine
from s4c.cli import main
from s4c.codegen.registry import BACKENDS
from s4c.s4 import Program
from test_s4_int8 import timing_mismatches

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
sys.path.insert(0, os.path.join(REPO, "examples"))
from bench_s4 import samples  # noqa: E402

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def _compile(path, out, batch, seq, extra=()):
    shapes = [a for n in NAMES for a in ("--input-shape", f"{n}={batch}x{seq}")]
    assert main(["compile", str(path), "-o", str(out), *shapes, "--target", "s4", *extra]) == 0


def test_seqcls_head_int8_on_s4_agrees_with_onnxruntime_fp32_on_argmax(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from model_families import TINY, cached_family_model

    path = cached_family_model("bert-seqcls", "torchscript")
    B, S, N, vocab = 16, 16, 256, TINY["vocab_size"]
    cal = samples(32 // B, 0, B, S, vocab)
    np.savez(tmp_path / "calib.npz", **cal)
    _compile(path, tmp_path / "int8", B, S, ["--precision", "int8", "--calibration-data", str(tmp_path / "calib.npz")])
    feeds = samples(N // B, 1, B, S, vocab)
    runner = BACKENDS["s4"].load(str(tmp_path / "int8"))
    got = np.concatenate([runner.run({k: v[i] for k, v in feeds.items()})["logits"] for i in range(N // B)])
    ref = ort_outputs(str(path), {k: v.reshape(N, S) for k, v in feeds.items()})["logits"]
    agree = got.argmax(1) == ref.argmax(1)
    top = np.sort(ref, axis=1)
    margin = top[:, -1] - top[:, -2]
    err = np.abs(got - ref).max(axis=1)
    print(f"argmax agreement {agree.mean():.4f} ({agree.sum()}/{N}); logits max |err| {err.max():.3g} "
          f"(median {np.median(err):.3g}); reference top-1 - top-2 margin min {margin.min():.3g} median "
          f"{np.median(margin):.3g}; margins where the argmax differs: {np.round(margin[~agree], 5).tolist()}")
    assert agree.mean() >= 0.97
    assert cosine(got, ref) >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_bert_base_int8_on_s4(exporter, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from bert_base import bert_base

    path = bert_base(exporter, 0.9)
    np.savez(tmp_path / "calib.npz", **samples(32, 0))
    _compile(path, tmp_path / "int8", 1, 128, ["--precision", "int8", "--calibration-data", str(tmp_path / "calib.npz")])
    _compile(path, tmp_path / "fp32", 1, 128)
    sizes = {p: (tmp_path / p / "model.s4").stat().st_size for p in ("int8", "fp32")}
    print(f"model.s4 int8 {sizes['int8']:,} bytes = {sizes['int8'] / sizes['fp32']:.1%} of fp32's {sizes['fp32']:,}")
    assert sizes["int8"] <= 0.35 * sizes["fp32"]
    program = Program.from_bytes((tmp_path / "int8" / "model.s4").read_bytes())
    assert timing_mismatches(program) == []
    feeds = {k: v[0] for k, v in samples(1, 7).items()}
    got = BACKENDS["s4"].load(str(tmp_path / "int8")).run(feeds)
    for name, fp32 in ort_outputs(path, feeds).items():
        print(f"{name}: cosine to onnxruntime fp32 {cosine(got[name], fp32):.6f}")
        assert cosine(got[name], fp32) >= 0.99
