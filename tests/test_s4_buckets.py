"""S4 builds for shape ranges (issue 16 item 3): one program per bucket in one model.s4 sharing one
constant segment (codegen/s4/buckets.py, s4c/s4/program_set.py), run padded through the smallest
bucket that fits, checked against onnxruntime at several shapes."""

from __future__ import annotations

import json
import os
import re
import struct
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import s4c
from oracle import ort_outputs
from s4c.cli import main
from s4c.codegen.s4.buckets import BucketRunner, parse_buckets, power_buckets
from s4c.errors import S4CError, S4ProgramError, TargetError
from s4c.s4 import Program, ProgramSet, assemble, disassemble, read_programs, run, simulate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BERT_MINI = os.path.join(REPO, "examples", "models", "bert_mini_pruned90.onnx")
NAMES = ["input_ids", "attention_mask", "token_type_ids"]
BUCKETS = ["2x128", "2x64", "2x32", "1x128", "1x64", "1x32"]


def _feeds(names, B, T, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((B, T), np.int64)
    for b in range(1, B):
        mask[b, max(T - 1 - 3 * b, 1):] = 0   # the later sentences padded, never fully
    feeds = {"input_ids": rng.integers(3, 500, (B, T)).astype(np.int64), "attention_mask": mask,
             "token_type_ids": (np.arange(T)[None, :] >= T // 2).astype(np.int64).repeat(B, 0)}
    return {n: feeds[n] for n in names}


def test_bucket_rule():
    assert power_buckets(1, 256, 32) == [32, 64, 128, 256]
    assert power_buckets(1, 200, 32) == [32, 64, 128, 200]
    assert power_buckets(100, 256, 32) == [128, 256]
    assert power_buckets(1, 16, 32) == [16]
    assert power_buckets(1, 4, 1) == [1, 2, 4] and power_buckets(1, 6, 1) == [1, 2, 4, 6]
    assert parse_buckets("64, 16", 1, 128, "sequence") == [16, 64, 128]   # sorted, the maximum added
    assert parse_buckets([32, 128], 1, 128, "sequence") == [32, 128]
    with pytest.raises(TargetError, match="300 is outside the compiled range of sequence"):
        parse_buckets("32,300", 1, 128, "sequence")
    with pytest.raises(TargetError, match="comma-separated integers"):
        parse_buckets("32,x", 1, 128, "sequence")


def test_choice_fastest_then_smallest():
    """Of the buckets that hold the dims, the fastest by the cycle model, then the fewest tokens (fewer
    sentences than cores can model slower than a full batch: BERT-base 2x256 vs 4x256)."""
    def bucket(b, t, cycles):
        return {"name": f"{b}x{t}", "dims": {"batch": b, "sequence": t}, "cycles": cycles, "io": {"inputs": []}}

    meta = {"symbols": ["batch", "sequence"], "batch_symbols": ["batch"], "exact_sequence": False,
            "buckets": [bucket(4, 64, 50), bucket(2, 64, 80), bucket(2, 32, 30), bucket(1, 64, 40), bucket(1, 32, 30)]}
    runner = BucketRunner({}, dict(meta, buckets=meta["buckets"]))
    assert runner.choose({"batch": 2, "sequence": 40})["name"] == "4x64"   # 50 cycles < 2x64's 80
    assert runner.choose({"batch": 1, "sequence": 20})["name"] == "1x32"   # tie with 2x32: fewer tokens
    assert runner.choose({"batch": 2, "sequence": 32})["name"] == "2x32"
    exact = BucketRunner({}, dict(meta, exact_sequence=True))
    assert exact.choose({"batch": 1, "sequence": 64})["name"] == "1x64"
    with pytest.raises(S4CError, match=r"sequence 40 is not an S4 bucket \(32, 64\)"):
        exact.choose({"batch": 1, "sequence": 40})


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    out = tmp_path_factory.mktemp("buckets") / "out"
    s4c.compile(BERT_MINI, {"input_ids": "1..2x1..128"}, target="s4", outdir=out)
    return out


def test_mini_buckets_match_onnxruntime(mini):
    pytest.importorskip("onnxruntime")
    model = s4c.load(mini)          # compiled for s4 only: s4c.load picks it
    for (B, T), bucket in [((1, 16), "1x32"), ((1, 64), "1x64"), ((1, 128), "1x128"), ((2, 100), "2x128"),
                           ((2, 33), "2x64"), ((1, 1), "1x32")]:
        feeds = _feeds(NAMES, B, T)
        got = model.run(feeds)
        assert model.last == bucket, (B, T)
        assert model.summary().endswith(f"[bucket {bucket}]")
        for name, want in ort_outputs(BERT_MINI, feeds).items():
            assert got[name].shape == want.shape, (B, T, name)
            assert np.max(np.abs(got[name] - want)) <= 1e-3, (B, T, name)


def test_mini_report_and_container(mini):
    report = json.loads((mini / "report.json").read_text())["s4"]
    rows = report["buckets"]
    assert [r["name"] for r in rows] == BUCKETS
    cycles = {r["name"]: r["cycles"] for r in rows}
    assert cycles["1x32"] < cycles["1x64"] < cycles["1x128"] < cycles["2x128"]   # cost follows the tokens
    for r in rows:
        assert r["throughput_per_s"] == pytest.approx(r["batch"] / r["latency_s"])
    assert report["cycles"] == cycles["2x128"]          # the main report is the largest bucket's
    assert "### S4 buckets" in (mini / "report.md").read_text()
    ps = read_programs((mini / "model.s4").read_bytes())
    assert isinstance(ps, ProgramSet) and list(ps.programs) == BUCKETS
    assert ps.to_bytes() == (mini / "model.s4").read_bytes()
    # each bucket's program is an ordinary program: the cycle model and the interpreter run it alone
    assert simulate(ps["1x64"]).total_cycles == cycles["1x64"]
    ids = {s.name: s for s in ps["1x32"].inputs()}
    outs, _ = run(ps["1x32"], {n: np.zeros(s.shape, np.int32) for n, s in ids.items()})
    assert outs
    with pytest.raises(S4ProgramError, match="several programs sharing one constant segment"):
        Program.from_bytes((mini / "model.s4").read_bytes())


def test_weights_stored_once(mini, tmp_path):
    """model.s4 holds the weights once: smaller than the separate fixed-shape builds together; the largest
    bucket's program times the same as the fixed-shape build at its dims."""
    ps = read_programs((mini / "model.s4").read_bytes())
    cycles = {r["name"]: r["cycles"] for r in json.loads((mini / "report.json").read_text())["s4"]["buckets"]}
    total = 0
    for name in BUCKETS:
        B, T = map(int, name.split("x"))
        out = tmp_path / name
        s4c.compile(BERT_MINI, {"input_ids": (B, T)}, target="s4", outdir=out)
        total += (out / "model.s4").stat().st_size
        single = Program.from_bytes((out / "model.s4").read_bytes())
        assert len(ps.const) < 1.1 * len(single.const), name
        if name == BUCKETS[0]:   # (the other buckets keep the maximum's layout choices, a fixed build its own)
            assert json.loads((out / "report.json").read_text())["s4"]["cycles"] == cycles[name]
    size = (mini / "model.s4").stat().st_size
    assert size < total / 3, (size, total)


def test_asm_round_trip(mini):
    ps = read_programs((mini / "model.s4").read_bytes())
    text = disassemble(ps)
    assert text.count("\n.program ") == len(BUCKETS)
    again = assemble(text)
    assert isinstance(again, ProgramSet) and again.to_bytes() == ps.to_bytes()
    assert disassemble(again) == text
    first = text.index(".program ")
    with pytest.raises(S4ProgramError, match=r"asm line \d+: .data belongs before the first .program"):
        assemble(text + ".data 0x0 00\n")
    with pytest.raises(S4ProgramError, match="program 1x32 defined twice"):
        assemble(text + ".program 1x32\n")
    with pytest.raises(S4ProgramError, match=".program must come before"):
        assemble(".dram_size 0x1000\n" + text[first:])


def test_out_of_range_and_cli(mini, tmp_path, capsys):
    model = s4c.load(mini, backend="s4")
    with pytest.raises(S4CError, match=r"dim 1 \(sequence\) is 200, outside the compiled range 1..128"):
        model.run(_feeds(NAMES, 1, 200))
    with pytest.raises(S4CError, match=r"dim 0 \(batch\) is 3, outside the compiled range 1..2"):
        model.run(_feeds(NAMES, 3, 16))
    np.savez(tmp_path / "big.npz", **_feeds(NAMES, 1, 129))
    capsys.readouterr()
    assert main(["run", str(mini), "--backend", "s4", "--inputs", str(tmp_path / "big.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "outside the compiled range 1..128" in err
    np.savez(tmp_path / "in.npz", **_feeds(NAMES, 2, 40))
    assert main(["run", str(mini), "--backend", "s4", "--inputs", str(tmp_path / "in.npz"),
                 "-o", str(tmp_path / "o.npz")]) == 0
    assert "[bucket 2x64]" in capsys.readouterr().out
    with np.load(tmp_path / "o.npz") as o:
        assert o["last_hidden_state"].shape == (2, 40, 128)


def test_check_runs_on_the_largest_bucket(mini, tmp_path, capsys):
    """s4c check (at the compiled IR's shape, the ranges' maximum) runs the debug lowering on the shared
    constant segment, whose first bytes are the largest bucket's."""
    np.savez(tmp_path / "in.npz", **_feeds(NAMES, 2, 128))
    capsys.readouterr()
    assert main(["check", str(mini), "--inputs", str(tmp_path / "in.npz"), "--backends", "ref,s4"]) == 0
    out = capsys.readouterr().out
    assert "s4: no divergence" in out and "differs" not in out


def _rewrite(blob: bytes, section: int, edit) -> bytes:
    """`blob` with section `section`'s body changed by edit(bytearray) (same size), checksums redone."""
    from zlib import crc32

    from s4c.s4.program import HEADER_SIZE
    b = bytearray(blob)
    _, off, size, _ = struct.unpack_from("<4sQQI", b, HEADER_SIZE + 24 * section)
    body = bytearray(b[off:off + size])
    edit(body)
    b[off:off + size] = body
    struct.pack_into("<I", b, HEADER_SIZE + 24 * section + 20, crc32(bytes(body)))
    n_sect = struct.unpack_from("<I", b, 40)[0]
    struct.pack_into("<I", b, 60, crc32(bytes(b[:60]) + bytes(b[HEADER_SIZE:HEADER_SIZE + 24 * n_sect])))
    return bytes(b)


@pytest.mark.parametrize("damage,expected", [
    (lambda b: b[:len(b) // 2], r"file size \d+ does not match the header \(\d+\): truncated"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "checksum mismatch"),
    (lambda b: _rewrite(b, 2, lambda t: t.__setitem__(slice(0, 4), struct.pack("<I", 7))), "program table"),
    (lambda b: _rewrite(b, 2, lambda t: t.__setitem__(slice(6, 11), b"1x128")), "program table: '1x128' twice"),
], ids=["half", "last-byte", "flipped-bit", "program-count", "program-name"])
def test_corrupt_program_set(mini, tmp_path, capsys, damage, expected):
    blob = (mini / "model.s4").read_bytes()
    bad = damage(blob)
    with pytest.raises(S4ProgramError, match=expected):
        read_programs(bad)
    out = tmp_path / "out"
    out.mkdir()
    for f in os.listdir(mini):
        if os.path.isfile(mini / f):
            (out / f).write_bytes((mini / f).read_bytes())
    (out / "model.s4").write_bytes(bad)
    np.savez(tmp_path / "in.npz", **_feeds(NAMES, 1, 16))
    capsys.readouterr()
    assert main(["run", str(out), "--backend", "s4", "--inputs", str(tmp_path / "in.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "model.s4: " in err, err


def _without_mask(tmp_path) -> str:
    """bert_mini with its attention_mask input replaced by ones of input_ids' shape (no mask input)."""
    m = onnx.load(BERT_MINI)
    g = m.graph
    keep = [i for i in g.input if i.name != "attention_mask"]
    del g.input[:]
    g.input.extend(keep)
    ones = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    g.node.insert(0, helper.make_node("ConstantOfShape", ["ids_shape"], ["attention_mask"], value=ones))
    g.node.insert(0, helper.make_node("Shape", ["input_ids"], ["ids_shape"]))
    path = str(tmp_path / "nomask.onnx")
    onnx.save(m, path)
    return path


def test_model_without_mask_runs_exact_buckets_only(tmp_path):
    pytest.importorskip("onnxruntime")
    path = _without_mask(tmp_path)
    s4c.compile(path, {"input_ids": "1x1..64"}, target="s4", outdir=tmp_path / "o",
                backend_options={"seq_buckets": "16,48"})
    meta = json.loads((tmp_path / "o" / "model.s4.json").read_text())
    assert meta["exact_sequence"] and [b["name"] for b in meta["buckets"]] == ["64", "48", "16"]
    model = s4c.load(tmp_path / "o")
    names = ["input_ids", "token_type_ids"]
    for T in (16, 48):
        feeds = _feeds(names, 1, T)
        got = model.run(feeds)
        for name, want in ort_outputs(path, feeds).items():
            assert np.max(np.abs(got[name] - want)) <= 1e-3, (T, name)
    with pytest.raises(S4CError, match=r"sequence 20 is not an S4 bucket \(16, 48, 64\): this model has no "
                                       r"attention mask input"):
        model.run(_feeds(names, 1, 20))


def test_refusals(tmp_path):
    with pytest.raises(TargetError, match="--seq-buckets needs a sequence range"):
        s4c.compile(BERT_MINI, {"input_ids": (1, 16)}, target="s4", outdir=tmp_path / "a",
                    backend_options={"seq_buckets": "16"})
    with pytest.raises(TargetError, match="compiled at fp32 only"):
        s4c.compile(BERT_MINI, {"input_ids": "1x1..32"}, target="s4", outdir=tmp_path / "b", precision="int8")
    with pytest.raises(TargetError, match="300 is outside the compiled range"):
        s4c.compile(BERT_MINI, {"input_ids": "1x1..32"}, target="s4", outdir=tmp_path / "c",
                    backend_options={"seq_buckets": "300"})
    assert not any((tmp_path / d).exists() for d in "abc")


def test_cli_seq_buckets(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compile", BERT_MINI, "-o", str(out), "--target", "s4", "--input-shape", "input_ids=1x1..64",
                 "--seq-buckets", "8,32", "--cores", "2"]) == 0
    rows = json.loads((out / "report.json").read_text())["s4"]["buckets"]
    assert [r["name"] for r in rows] == ["64", "32", "8"]
    text = (out / "model.s4.asm").read_text()
    assert re.findall(r"^\.program (\S+)$", text, re.M) == ["64", "32", "8"]
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "S4 programs (buckets): 64, 32, 8" in capsys.readouterr().out


@pytest.mark.slow
def test_bert_base_buckets(tmp_path):
    """BERT-base 90% compiled 1..4x1..256 on s4: 1x16, 1x64, 1x128, 1x256, 4x128 within 1e-3 of onnxruntime."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bert_base import bert_base

    path = bert_base("torchscript", 0.9)
    out = tmp_path / "o"
    s4c.compile(path, {"input_ids": "1..4x1..256"}, target="s4", outdir=out)
    report = json.loads((out / "report.json").read_text())["s4"]
    assert len(report["buckets"]) == 12
    model = s4c.load(out)
    names = [e["name"] for e in model.inputs]
    for B, T in [(1, 16), (1, 64), (1, 128), (1, 256), (4, 128)]:
        feeds = _feeds(names, B, T)
        got = model.run(feeds)
        for name, want in ort_outputs(path, feeds).items():
            assert got[name].shape == want.shape
            assert np.max(np.abs(got[name] - want)) <= 1e-3, (B, T, name)
