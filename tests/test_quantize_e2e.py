"""`s4c compile --precision int8` end to end on the bundled pruned BERT (issue 14 items 1 and 4):
calibrated on 16 random-token samples, the reference backend's int8 output on a different input stays
within cosine 0.99 of onnxruntime fp32; the report carries the accuracy section; fp32 stays
byte-identical; the CLI's errors are one line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from oracle import REPO, ort_outputs
from s4c.accuracy import cosine
from s4c.cli import main

MODEL = os.path.join(REPO, "examples", "models", "bert_mini_pruned90.onnx")
SHAPE = ["--input-shape", "input_ids=1x128"]
VOCAB = 768  # the bundled model's word embedding rows


def bert_samples(n: int, seed: int) -> dict[str, np.ndarray]:
    """n random-token samples, [n, 1, 128] per input, each with a random padded length."""
    rng = np.random.default_rng(seed)
    mask = np.ones((n, 1, 128), np.int64)
    for i, length in enumerate(rng.integers(16, 129, n)):
        mask[i, 0, length:] = 0
    return {"input_ids": rng.integers(0, VOCAB, (n, 1, 128)), "attention_mask": mask,
            "token_type_ids": np.zeros((n, 1, 128), np.int64)}


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    calib, held = root / "calib.npz", root / "held.npz"
    np.savez(calib, **bert_samples(16, 0))
    np.savez(held, **bert_samples(2, 1))
    out = root / "out"
    code = main(["compile", MODEL, "-o", str(out), *SHAPE, "--target", "ir", "--precision", "int8",
                 "--calibration-data", str(calib), "--accuracy-data", str(held)])
    assert code == 0
    return root, out, held


def test_int8_ref_output_matches_onnxruntime_fp32_on_a_different_input(int8_build, capsys):
    root, out, _ = int8_build
    feeds = {k: v[0] for k, v in bert_samples(1, 7).items()}
    np.savez(root / "in.npz", **feeds)
    assert main(["run", str(out), "--backend", "ref", "--inputs", str(root / "in.npz"), "-o", str(root / "y.npz")]) == 0
    expected = ort_outputs(MODEL, feeds)
    with np.load(root / "y.npz") as got:
        for name, ref in expected.items():
            sim = cosine(got[name], ref)
            print(f"{name}: cosine {sim:.6f} max abs {np.abs(got[name] - ref).max():.4g}")
            assert sim >= 0.99, (name, sim)
            assert not np.array_equal(got[name], ref)  # really computed in int8


def test_the_int8_build_holds_int8_ops_and_weights_and_the_report_says_how_accurate(int8_build):
    _, out, held = int8_build
    ir = (out / "model.s4ir").read_text()
    assert ir.count("= LinearInt8(") == 13 and "QuantizeInt8(" in ir and "= Linear(" not in ir
    with np.load(out / "weights.npz") as w:
        assert sum(w[k].dtype == np.int8 for k in w.files) == 13
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    q = json.loads((out / "report.json").read_text())["quantization"]
    assert q["activations"] == "static, per tensor" and q["calibration"]["samples"] == 16
    assert q["stats"]["LinearInt8"] == 13 and len(q["ranges"]) == 13
    for name in ("calibration", "held-out"):
        outputs = q["accuracy"][name]["outputs"]
        assert set(outputs) == {"last_hidden_state", "pooler_output"}
        for m in outputs.values():
            assert m["cosine"] >= 0.99 and m["min_cosine"] >= 0.99 and m["max_abs_error"] < 0.1
        assert outputs["pooler_output"]["argmax_agreement"] >= 0.9  # a [batch, features] output
        assert "argmax_agreement" not in outputs["last_hidden_state"]
    md = (out / "report.md").read_text()
    assert "## Quantisation" in md and "| held-out | 2 | `pooler_output` |" in md


def test_fp32_is_the_default_and_byte_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["compile", MODEL, "-o", str(a), *SHAPE, "--target", "ir"]) == 0
    assert main(["compile", MODEL, "-o", str(b), *SHAPE, "--target", "ir", "--precision", "fp32"]) == 0
    for name in ("model.s4ir", "report.json", "report.md", "manifest.json", "weights.npz"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert "precision" not in json.loads((a / "manifest.json").read_text())


def test_int8_without_calibration_is_dynamic_with_one_warning(tmp_path, capsys):
    assert main(["compile", MODEL, "-o", str(tmp_path / "o"), *SHAPE, "--target", "ir", "--precision", "int8"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: --precision int8 without --calibration-data") \
        and "per token" in err[0]
    ir = (tmp_path / "o" / "model.s4ir").read_text()
    assert "LinearInt8(" in ir and ".scale = QuantizeInt8(" in ir  # two results: the row scales
    q = json.loads((tmp_path / "o" / "report.json").read_text())["quantization"]
    assert q["activations"] == "dynamic, per token" and q["accuracy"] == {}


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("target", ["c", "s4", "all"])
def test_int8_for_a_backend_without_int8_is_a_clear_error_not_an_fp32_build(tmp_path, capsys, monkeypatch, target):
    """Both backends run int8 today; a backend that does not (its `precisions` lacks int8) must
    refuse --precision int8 in one line rather than build fp32: each backend in turn plays that one."""
    from s4c.codegen.registry import BACKENDS

    stripped = list(BACKENDS) if target == "all" else [target]
    for name in stripped:
        monkeypatch.setattr(type(BACKENDS[name]), "precisions", ("fp32",))
    err = _error(capsys, ["compile", MODEL, "-o", str(tmp_path / "o"), *SHAPE, "--target", target,
                          "--precision", "int8"])
    assert "--precision int8" in err and "backend cannot run int8" in err
    assert not (tmp_path / "o").exists()


def test_calibration_data_needs_int8(tmp_path, capsys):
    err = _error(capsys, ["compile", MODEL, "-o", str(tmp_path / "o"), *SHAPE, "--target", "ir",
                          "--calibration-data", str(tmp_path / "c.npz")])
    assert "--calibration-data is only used with --precision int8" in err


def test_bad_calibration_files_through_the_cli(tmp_path, capsys):
    good = bert_samples(2, 0)
    cases = {
        "missing.npz": (None, "no such file"),
        "noinput.npz": ({k: v for k, v in good.items() if k != "attention_mask"}, "no array for model input 'attention_mask'"),
        "shape.npz": ({**good, "input_ids": good["input_ids"][:, 0]}, "input 'input_ids' has shape [2, 128]"),
        "dtype.npz": ({**good, "input_ids": good["input_ids"].astype(np.float32)}, "input 'input_ids' has dtype float32"),
    }
    (tmp_path / "text.npz").write_text("not numpy")
    cases["text.npz"] = (None, "not a readable .npz file")
    for name, (arrays, message) in cases.items():
        path = tmp_path / name
        if arrays is not None:
            np.savez(path, **arrays)
        err = _error(capsys, ["compile", MODEL, "-o", str(tmp_path / "o"), *SHAPE, "--target", "ir",
                              "--precision", "int8", "--calibration-data", str(path)])
        assert f"calibration data {path}" in err and message in err, err
    assert not (tmp_path / "o").exists()
