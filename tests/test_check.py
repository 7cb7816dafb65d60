"""`s4c check`: op-by-op comparison of c and s4 (and onnxruntime) against the reference evaluator.

The bundled pruned BERT is compiled once at 16 tokens. A clean build has no divergence (exit 0);
scaling a handful of one Linear's weight values in c/weights.bin and, the same way, in model.s4's
constant segment (section and header checksums recomputed) makes `check` name that Linear as the
first divergence on both backends (exit 1), while the reference and onnxruntime stay clean.

S4 values are snapshots of the built model.s4 (codegen/s4/snapshots.py): at 4x16 tokens the token
matrices are SRAM-resident across the 4 cores and overwritten by the end of the run, and the
snapshots equal the debug lowering's values; an int8 build's never-stored values, and only those,
come from the debug lowering.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from s4c.check import check, compare
from s4c.cli import main

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "examples" / "models" / "bert_mini_pruned90.onnx"
INPUTS = REPO / "examples" / "models" / "bert_mini_inputs.npz"
TOKENS = 16
# the Linear perturbed: layer 1's attention output projection (csr in C, dense in S4 at this shape)
TARGET = "/encoder/layer.1/attention/output/dense/Add_output_0"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("check")
    out = base / "out"
    assert main(["compile", str(MODEL), "-o", str(out), "--input-shape", f"input_ids=1x{TOKENS}"]) == 0
    with np.load(INPUTS) as npz:
        np.savez(base / "in.npz", **{k: npz[k][:, :TOKENS] for k in npz.files})
    return base


def _perturb(buf: bytearray, lo: int, hi: int, values: np.ndarray, factor: float) -> int:
    """Scale every value of `values` whose 4 bytes occur exactly once in buf[lo:hi]; how many."""
    region = bytes(buf[lo:hi])
    done = 0
    for x in values:
        pat = np.float32(x).tobytes()
        pos = region.find(pat)
        if pos < 0 or region.find(pat, pos + 1) >= 0:
            continue
        buf[lo + pos:lo + pos + 4] = np.float32(x * factor).tobytes()
        done += 1
    return done


def _sections(blob: bytes) -> list[tuple[bytes, int, int]]:
    from s4c.s4.program import HEADER_SIZE

    n = struct.unpack_from("<I", blob, 40)[0]
    return [struct.unpack_from("<4sQQI", blob, HEADER_SIZE + 24 * i)[:3] for i in range(n)]


def _fix_checksums(blob: bytearray) -> None:
    from s4c.s4.program import HEADER_SIZE

    n = struct.unpack_from("<I", blob, 40)[0]
    for i, (_, off, size) in enumerate(_sections(bytes(blob))):
        struct.pack_into("<I", blob, HEADER_SIZE + 24 * i + 20, zlib.crc32(bytes(blob[off:off + size])))
    table_end = HEADER_SIZE + 24 * n
    struct.pack_into("<I", blob, 60, zlib.crc32(bytes(blob[:60]) + bytes(blob[HEADER_SIZE:table_end])))


@pytest.fixture(scope="module")
def perturbed(built):
    from s4c.driver import load_compiled
    from s4c.s4 import Program
    from s4c.weight_store import write_weights

    out = built / "bad"
    shutil.copytree(built / "out", out)
    graph = load_compiled(out).graph
    # The reference reads the weights c/weights.bin holds from there (s4c/weight_store.py); keep its
    # own copy so only the backends see the perturbation (an edited weights.bin is otherwise refused)
    manifest = json.loads((out / "manifest.json").read_text())
    data = {v.name: v.data for v in graph.constants()}
    write_weights(str(out), [(name, data[name]) for name in manifest["weights"]], {})
    manifest["weight_refs"] = {}
    (out / "manifest.json").write_text(json.dumps(manifest))
    op = next(op for op in graph.ops if op.outputs[0].name == TARGET)
    assert op.op == "Linear"
    w = np.asarray(op.inputs[1].data, np.float32)
    nz = w[w != 0][:64]
    # C: weights.bin's payload
    path = out / "c" / "weights.bin"
    buf = bytearray(path.read_bytes())
    n_c = _perturb(buf, 64, len(buf), nz, 40.0)
    path.write_bytes(bytes(buf))
    # S4: model.s4's constant segment (section 2), checksums redone
    path = out / "model.s4"
    blob = bytearray(path.read_bytes())
    kind, off, size = _sections(bytes(blob))[2]
    n_s4 = _perturb(blob, off, off + size, nz, 40.0)
    _fix_checksums(blob)
    path.write_bytes(bytes(blob))
    Program.from_bytes(bytes(blob))  # still a valid program
    assert n_c >= 8 and n_s4 >= 8, (n_c, n_s4)
    return out


def test_clean_build_has_no_divergence(built, capsys):
    code = main(["check", str(built / "out"), "--inputs", str(built / "in.npz"), "--json", str(built / "check.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "first diverging op: none" in out
    assert "c: no divergence" in out and "s4: no divergence" in out
    report = json.loads((built / "check.json").read_text())
    assert {"ref", "c", "s4"} <= set(report["backends"])
    linear = next(r for r in report["ops"] if r["value"] == TARGET)
    assert linear["errors"]["c"]["max_abs_error"] < 1e-5 and linear["errors"]["s4"]["cosine"] > 0.99999
    assert all(not r["diverged"] for r in report["ops"])
    # every op result of the IR was compared on c and s4
    assert all(r["errors"]["c"] is not None and r["errors"]["s4"] is not None for r in report["ops"])


@pytest.mark.parametrize("backend", ["c", "s4"])
def test_perturbed_linear_is_the_first_divergence(perturbed, built, backend, capsys):
    code = main(["check", str(perturbed), "--inputs", str(built / "in.npz"), "--backends", f"ref,{backend}",
                 "--json", str(built / f"bad-{backend}.json")])
    out = capsys.readouterr().out
    assert code == 1, out
    report = json.loads((built / f"bad-{backend}.json").read_text())
    first = report["first_divergence"][backend]
    assert first is not None and first.endswith(f"Linear {TARGET}"), first
    assert f"{backend}: first divergence at op" in out and TARGET in out
    rows = report["ops"]
    k = next(i for i, r in enumerate(rows) if r["value"] == TARGET)
    assert not any(r["diverged"] for r in rows[:k])
    assert rows[k]["diverged"] == [backend]


def test_perturbed_both_backends_one_run(perturbed, built, capsys):
    code = main(["check", str(perturbed), "--inputs", str(built / "in.npz"), "--backends", "c,s4"])
    out = capsys.readouterr().out
    assert code == 1
    assert "first diverging op: " in out and out.strip().endswith(f"Linear {TARGET}")
    # every S4 value is the built (perturbed) model.s4's own, none from a re-lowering
    assert "| s4 from |" in out and "debug lowering |" not in out, out
    assert re.search(r"s4: (\d+) of \1 op results snapshot from the built program", out), out


def test_perturbed_debug_lowering_also_finds_it(perturbed, built, capsys):
    """--s4-debug-lowering (the fallback) runs on model.s4's constants: same first divergence, and it
    says the segment differs from a fresh lowering of the IR."""
    code = main(["check", str(perturbed), "--inputs", str(built / "in.npz"), "--backends", "ref,s4",
                 "--s4-debug-lowering", "--json", str(built / "bad-debug.json")])
    out = capsys.readouterr().out
    assert code == 1, out
    report = json.loads((built / "bad-debug.json").read_text())
    assert report["first_divergence"]["s4"].endswith(f"Linear {TARGET}")
    assert {r["sources"]["s4"] for r in report["ops"]} == {"debug lowering"}
    if "s4: model.s4's constant segment differs" not in out:
        pytest.fail("the S4 check should say model.s4's constants differ from a fresh lowering:\n" + out)


@pytest.fixture(scope="module")
def resident(tmp_path_factory):
    """4 sentences of 16 tokens on 4 cores: token matrices stay SRAM-resident, a block per core,
    their buffers reused by later values (the built program never holds them at its end)."""
    base = tmp_path_factory.mktemp("check4")
    out = base / "out"
    assert main(["compile", str(MODEL), "-o", str(out), "--input-shape", "input_ids=4x16", "--target", "s4"]) == 0
    with np.load(INPUTS) as npz:
        np.savez(base / "in.npz", **{k: npz[k][:, :64].reshape(4, 16) for k in npz.files})
    return base


def _feeds(path):
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def test_snapshots_of_the_built_program_equal_the_debug_lowering(resident):
    from s4c.codegen.s4.debug import debug_values
    from s4c.codegen.s4.snapshots import program_values

    from s4c.check import _read_report, _s4_graph
    from s4c.driver import load_compiled
    from s4c.evaluate import check_inputs
    from s4c.s4 import Program

    out = resident / "out"
    compiled = load_compiled(out)
    feeds = check_inputs(compiled.graph, _feeds(resident / "in.npz"))
    vmap = json.loads((out / "model.s4.values.json").read_text())
    io = json.loads((out / "model.s4.json").read_text())["io"]
    sram = {e["name"] for e in vmap["values"] if e["homes"] and e["homes"][0]["space"] == "sram"}
    split = [e for e in vmap["values"] if e["name"] in sram and {h["core"] for h in e["homes"]} == {0, 1, 2, 3}]
    assert len(split) >= 10, len(split)      # rows reassembled from every core's SRAM
    values, missing = program_values(Program.from_bytes((out / "model.s4").read_bytes()), vmap, io, feeds)
    assert not missing, missing
    target, options = _s4_graph(compiled.graph, _read_report(str(out)))
    debug, _ = debug_values(target, str(out / "model.s4"), feeds, options)
    results = [v.name for op in compiled.graph.ops for v in op.outputs if v is not None]
    assert set(results) <= set(values) and sram <= set(values)
    for name in results:
        err, cos = compare(debug[name], values[name])
        assert err <= 1e-5 and cos > 0.999999, (name, err, cos)
    # by the end of the run most resident homes hold later values: the snapshots were taken at op boundaries
    assert len(_overwritten_by_the_end(out, vmap, io, feeds, values, sram)) >= len(sram) // 2   # 19 of 22
    report = check(str(out), _feeds(resident / "in.npz"), ["ref", "s4"])
    assert report.ok and {r.sources["s4"] for r in report.rows} == {"program"}, report.notes


def test_bucketed_build_snapshots_its_largest_bucket(tmp_path):
    out = tmp_path / "b"
    assert main(["compile", str(MODEL), "-o", str(out), "--input-shape", "input_ids=1..2x1..32", "--target", "s4"]) == 0
    vmap = json.loads((out / "model.s4.values.json").read_text())
    assert set(vmap["buckets"]) == {"2x32", "1x32"}
    with np.load(INPUTS) as npz:
        feeds = {k: npz[k][:, :64].reshape(2, 32) for k in npz.files}
    report = check(str(out), feeds, ["ref", "s4"])
    assert report.ok and {r.sources["s4"] for r in report.rows} == {"program"}, report.notes
    assert "s4: bucket 2x32 of model.s4 (the compiled maximum dims)" in report.notes


def _overwritten_by_the_end(out, vmap, io, feeds, values, names) -> list:
    """The values among `names` whose homes no longer hold them when the program has run."""
    from s4c.codegen.s4.debug import write_feeds
    from s4c.codegen.s4.snapshots import _Shadow, _whole

    from s4c.s4 import Program
    from s4c.s4.cycles import schedule
    from s4c.s4.interp import DEFAULT_MAX_DRAM, _Machine

    program = Program.from_bytes((out / "model.s4").read_bytes())
    state = _Machine(program, False, None, DEFAULT_MAX_DRAM)
    write_feeds(state, io["inputs"], feeds)
    schedule(program, None, state.on_event)
    changed = []
    for e in vmap["values"]:
        if e["name"] in names:
            end = _Shadow(e)
            for home in e["homes"]:
                end.take(state.dram if home["space"] == "dram" else state.srams[home["core"]], _whole(home), home)
            if not np.array_equal(end.value(), values[e["name"]]):
                changed.append(e["name"])
    return changed


def test_values_never_stored_fall_back_to_the_debug_lowering(built, tmp_path):
    """An int8 build with static scales requantises some GEMM results in their epilogue: never
    stored, so only those come from the debug lowering, named in the note."""
    out = tmp_path / "q"
    with np.load(built / "in.npz") as npz:
        np.savez(tmp_path / "calib.npz", **{k: np.stack([npz[k]] * 2) for k in npz.files})
    assert main(["compile", str(MODEL), "-o", str(out), "--input-shape", f"input_ids=1x{TOKENS}", "--target", "s4",
                 "--precision", "int8", "--calibration-data", str(tmp_path / "calib.npz")]) == 0
    vmap = json.loads((out / "model.s4.values.json").read_text())
    never = {e["name"] for e in vmap["values"] if e.get("why", "").startswith("never stored")}
    assert never
    report = check(str(out), _feeds(built / "in.npz"), ["ref", "s4"])
    sources = {r.value: r.sources["s4"] for r in report.rows}
    assert {k for k, s in sources.items() if s == "debug lowering"} == never
    assert sum(s == "program" for s in sources.values()) > len(sources) // 2
    assert all(r.errors["s4"] is not None for r in report.rows)
    note = next(n for n in report.notes if "snapshot from the built program" in n)
    assert f"{len(never)} not observable there" in note and all(k in note for k in never)


def test_check_errors_are_one_line(built, tmp_path, capsys):
    code = main(["check", str(tmp_path / "nowhere"), "--inputs", str(built / "in.npz")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    code = main(["check", str(built / "out"), "--inputs", str(built / "in.npz"), "--backends", "ref,tpu"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown backend 'tpu'" in err and err.count("\n") == 1, err
    code = main(["check", str(built / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "--inputs" in err, err
