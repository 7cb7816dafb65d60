"""The generated C is portable: it cross-compiles for aarch64 (gcc-aarch64-linux-gnu) and its .npy
harness runs under qemu-user with the same outputs as onnxruntime. No x86 intrinsics leak into the
build for another architecture: the kernels' vector paths are chosen by the compiler's own macros.
The packages are installed on first use (tests/debian.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from debian import require
from oracle import REPO, fixtures, make_feeds, ort_outputs
import s4c
from s4c.accuracy import cosine
from s4c.driver import load_compiled

CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
SYSROOT = "/usr/aarch64-linux-gnu"
BUNDLED = os.path.join(REPO, "examples", "models", "bert_mini_pruned90.onnx")
FIXTURES = {m["name"]: m for m in fixtures()}


@pytest.fixture(scope="module", autouse=True)
def _toolchain():
    if not sys.platform.startswith("linux"):
        pytest.skip("qemu-user runs Linux binaries")
    require({CROSS_CC: "gcc-aarch64-linux-gnu", QEMU: "qemu-user"})


def _cross_run(model_path, shapes: dict, feeds: dict, tmp_path, cflags: str, precision: str = "fp32",
               **options) -> dict:
    """Compile for target c (sources only), build the harness for aarch64, run it under qemu."""
    s4c.compile(model_path, input_shapes=shapes, target="c", outdir=tmp_path / "out", precision=precision,
                backend_options={"compile": False, **options})
    cdir = tmp_path / "out" / "c"
    r = subprocess.run(["make", "-s", "s4c_model", f"CC={CROSS_CC}", f"CFLAGS={cflags}", "OPENMP="], cwd=cdir,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    kind = subprocess.run(["file", "-b", "s4c_model"], cwd=cdir, capture_output=True, text=True).stdout
    if kind:  # `file` may be absent; when present it must say aarch64
        assert "aarch64" in kind or "ARM" in kind, kind
    meta = json.loads((cdir / "model.json").read_text())
    ins = []
    for i, io in enumerate(meta["inputs"]):
        np.save(tmp_path / f"in{i}.npy", feeds[io["name"]])
        ins.append(str(tmp_path / f"in{i}.npy"))
    outs = [str(tmp_path / f"out{i}.npy") for i in range(len(meta["outputs"]))]
    r = subprocess.run([QEMU, "-L", SYSROOT, "./s4c_model", "weights.bin", *ins, *outs], cwd=cdir,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return {io["name"]: np.load(path) for io, path in zip(meta["outputs"], outs)}


@pytest.mark.parametrize("cflags", ["-O2", "-O2 -DS4C_PLAIN_C"], ids=["neon-vector-ext", "plain-c99"])
def test_bundled_model_runs_on_aarch64(tmp_path, cflags):
    feeds = make_feeds(["input_ids", "attention_mask", "token_type_ids"], batch=1, seq=16, vocab=100, seed=5)
    got = _cross_run(BUNDLED, {k: v.shape for k, v in feeds.items()}, feeds, tmp_path, cflags)
    want = ort_outputs(BUNDLED, feeds)
    for name, value in want.items():
        assert got[name].shape == value.shape
        assert float(np.max(np.abs(got[name] - value))) <= 1e-3, name


@pytest.mark.parametrize("fixture,layout", [("bert_tiny_ts_op17_int8dequant", "csr"),
                                            ("bert_tiny_ts_op21_block4x1", "bsr4x1"),
                                            ("bert_tiny_ts_op17_nm2of8", "nm2:8")])
def test_sparse_layouts_on_aarch64(tmp_path, fixture, layout):
    entry = FIXTURES[fixture]
    feeds = make_feeds([i["name"] for i in entry["inputs"]], batch=2, seq=8, seed=1)
    got = _cross_run(entry["path"], {k: v.shape for k, v in feeds.items()}, feeds, tmp_path, "-O2",
                     layout_default=layout)
    want = ort_outputs(entry["path"], feeds)
    for name, value in want.items():
        assert float(np.max(np.abs(got[name] - value))) <= 1e-3, (layout, name)


def test_int8_c_runs_on_aarch64(tmp_path):
    """The generated int8 C (plain-C path: no x86 intrinsics leak) gives the host reference's int8
    outputs under qemu (cosine >= 0.9999; int8 rounding differs from fp32 by design)."""
    feeds = make_feeds(["input_ids", "attention_mask", "token_type_ids"], batch=1, seq=16, vocab=100, seed=3)
    feeds["attention_mask"][0, 12:] = 0      # padded tail: masked rows quantised too
    shapes = {k: v.shape for k, v in feeds.items()}
    got = _cross_run(BUNDLED, shapes, feeds, tmp_path, "-O2", precision="int8")
    ref = load_compiled(tmp_path / "out").run(feeds, backend="ref")
    for name, value in ref.items():
        assert cosine(got[name], value) >= 0.9999, name
