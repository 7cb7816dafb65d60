"""The S4 backend (codegen/s4): lowering to per-core S4 streams, run in the reference interpreter.

- every committed fixture through `s4c.compile(..., target="s4")` and the interpreter, within 1e-3
  (max abs) of onnxruntime, on 1, 2 and 4 cores;
- ONNX's own node tests of the supported op set through the S4 path (the "s4" executor of the
  ONNX backend adaptor), reusing tests/test_onnx_node_tests.py's case list; S4_EXCLUDE names, with
  reasons, what the S4 machine genuinely cannot run (they must still fail, with a TargetError);
- the command line: compile --target s4 writes model.s4 / model.s4.asm / report.json ("s4" keys),
  run --backend s4 (--trace), corrupt binaries fail with the one-line error (exit 2), an op the
  S4 path cannot lower is a one-line error naming op and node;
- BERT-base from both exporters at 0%, 90% and 97% sparsity, seq 128 (slow; needs torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnx_node_allowlist import EXCLUDE, S4_EXCLUDE
from oracle import fixtures, make_feeds, max_abs_diff, ort_outputs
from s4c.backend import S4CBackend
from s4c.driver import compile as s4c_compile
from s4c.driver import runner_for
from s4c.errors import TargetError

import s4c.codegen.s4 as s4backend

FIXTURES = {m["name"]: m for m in fixtures()}
TOL = 1e-3


def _feeds(model, batch=2, seq=16):
    names = [i["name"] for i in model["inputs"]]
    return names, make_feeds(names, batch=batch, seq=seq, vocab=min(100, model.get("vocab_size", 100)))


def _compile(model, out, cores=4, batch=2, seq=16):
    names, feeds = _feeds(model, batch, seq)
    compiled = s4c_compile(model["path"], input_shapes={n: (batch, seq) for n in names}, target="s4",
                           outdir=str(out), backend_options={"cores": cores})
    return compiled, feeds


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_matches_onnxruntime(name, tmp_path):
    model = FIXTURES[name]
    compiled, feeds = _compile(model, tmp_path / "out")
    got = runner_for(compiled, "s4").run(feeds)
    ref = ort_outputs(model["path"], feeds)
    diff = max_abs_diff({k: got[k] for k in ref}, ref)
    assert max(diff.values()) <= TOL, diff


@pytest.mark.parametrize("cores", [1, 2])
def test_fewer_cores_same_result(cores, tmp_path):
    model = FIXTURES["bert_tiny_ts_op17"]
    compiled, feeds = _compile(model, tmp_path / "out", cores=cores)
    got = runner_for(compiled, "s4").run(feeds)
    ref = ort_outputs(model["path"], feeds)
    assert max(max_abs_diff({k: got[k] for k in ref}, ref).values()) <= TOL
    report = json.loads((tmp_path / "out" / "report.json").read_text())["s4"]
    assert report["cores"] == cores
    program = s4backend.load(str(tmp_path / "out")).program
    assert len(program.cores) == cores


def test_sentences_per_core_mode(tmp_path):
    """4 sentences on 4 cores: rows split by sentence, activations kept in SRAM (no K/V exchange)."""
    model = FIXTURES["bert_tiny_dynamo"]
    compiled, feeds = _compile(model, tmp_path / "out", batch=4, seq=16)
    got = runner_for(compiled, "s4").run(feeds)
    ref = ort_outputs(model["path"], feeds)
    assert max(max_abs_diff({k: got[k] for k in ref}, ref).values()) <= TOL
    report = json.loads((tmp_path / "out" / "report.json").read_text())["s4"]
    assert report["sram"]["resident_values"] > 0


def test_report_keys_and_files(tmp_path):
    model = FIXTURES["bert_tiny_ts_op17_nm2of8"]
    out = tmp_path / "out"
    _compile(model, out)
    for f in ("model.s4", "model.s4.asm", "model.s4.json", "report.json", "report.md"):
        assert (out / f).exists(), f
    report = json.loads((out / "report.json").read_text())["s4"]
    for key in ("cycles", "clock_hz", "latency_s", "batch", "throughput_per_s", "cores", "sram_peak_bytes",
                "dram_bytes_moved", "ops"):
        assert key in report, key
    assert report["cycles"] > 0 and report["batch"] == 2 and report["cores"] == 4
    assert report["throughput_per_s"] == pytest.approx(2 / report["latency_s"])
    assert 0 < report["sram_peak_bytes"] <= 8 << 20
    assert report["dram"]["activation_peak_bytes"] <= report["dram"]["activation_sum_without_reuse_bytes"]
    op = report["ops"][0]
    assert set(op) >= {"name", "onnx_nodes", "unit", "cycles"} and op["unit"] in ("dma", "spu", "vpu")
    assert sum(o["cycles"] for o in report["ops"]) > 0
    assert "## S4" in (out / "report.md").read_text()


def test_assembly_round_trips(tmp_path):
    from s4c.s4 import assemble
    model = FIXTURES["bert_tiny_ts_op17"]
    out = tmp_path / "out"
    _compile(model, out)
    program = s4backend.load(str(out)).program
    again = assemble((out / "model.s4.asm").read_text())
    assert again.to_bytes() == program.to_bytes()


# -- ONNX node tests through S4 ----------------------------------------------------------------------

def _node_cases():
    import test_onnx_node_tests as node_tests
    return node_tests, [n for n in node_tests.SELECTED if n not in EXCLUDE]


NODE_TESTS, NODE_CASES = _node_cases()


@pytest.mark.parametrize("name", [n for n in NODE_CASES if n not in S4_EXCLUDE])
def test_node_case_on_s4(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        NODE_TESTS.run_case(name, "s4")


def test_s4_exclusions_are_target_errors():
    """Each S4 exclusion is a real case that fails with a TargetError naming the op (not a wrong result)."""
    for name in sorted(S4_EXCLUDE):
        assert name in NODE_CASES, name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(TargetError) as info:
                NODE_TESTS.run_case(name, "s4")
        op = NODE_TESTS.OP_OF[name]
        assert "S4 lowering" in str(info.value) and "\n" not in str(info.value)
        assert op in str(info.value) or "Log" in str(info.value), (name, str(info.value))


# -- command line ------------------------------------------------------------------------------------

def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "s4c", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def cli_build(tmp_path_factory):
    model = FIXTURES["bert_tiny_ts_op17"]
    base = tmp_path_factory.mktemp("cli")
    names, feeds = _feeds(model)
    np.savez(base / "in.npz", **feeds)
    shapes = [a for n in names for a in ("--input-shape", f"{n}=2x16")]
    r = _cli("compile", model["path"], "-o", str(base / "out"), "--target", "s4", "--cores", "2", *shapes)
    assert r.returncode == 0, r.stderr
    return model, base, feeds


def test_cli_compile_and_run(cli_build):
    model, base, feeds = cli_build
    assert (base / "out" / "model.s4").exists() and (base / "out" / "model.s4.asm").exists()
    r = _cli("run", str(base / "out"), "--backend", "s4", "--inputs", str(base / "in.npz"), "-o", str(base / "o.npz"))
    assert r.returncode == 0, r.stderr
    # the modelled time of the run is the compile report's (same program, same cycle model)
    import json
    cycles = json.loads((base / "out" / "report.json").read_text())["s4"]["cycles"]
    assert f"s4: modelled {cycles} cycles" in r.stdout and "on 2 core(s)" in r.stdout
    with np.load(base / "o.npz") as got:
        ref = ort_outputs(model["path"], feeds)
        assert max(max_abs_diff({k: got[k] for k in ref}, ref).values()) <= TOL


def test_cli_trace(cli_build):
    _, base, _ = cli_build
    r = _cli("run", str(base / "out"), "--backend", "s4", "--inputs", str(base / "in.npz"), "--trace")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith(("c0 ", "c1 "))]
    assert len(lines) > 100
    assert any("spu." in line for line in lines) and any("; /encoder" in line for line in lines)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_cli_corrupt_binary(cli_build, tmp_path, damage):
    import shutil
    _, base, _ = cli_build
    out = tmp_path / "out"
    shutil.copytree(base / "out", out)
    path = out / "model.s4"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        for pos in (100, len(data) // 3, len(data) - 7):
            data[pos] ^= 0x5A
    path.write_bytes(bytes(data))
    r = _cli("run", str(out), "--backend", "s4", "--inputs", str(base / "in.npz"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "model.s4" in err, err


def test_cli_unsupported_op_names_op_and_node(tmp_path):
    node = helper.make_node("Log", ["x"], ["y"], name="the_log_node")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    r = _cli("compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out"), "--target", "s4")
    assert r.returncode == 2
    err = r.stderr.strip()
    assert "\n" not in err and "Log" in err and "the_log_node" in err, err
    assert not (tmp_path / "out").exists()


def test_cli_bad_cores(tmp_path):
    model = FIXTURES["bert_tiny_ts_op17"]
    r = _cli("compile", model["path"], "-o", str(tmp_path / "out"), "--target", "s4", "--cores", "9",
             "--input-shape", "input_ids=1x8", "--input-shape", "attention_mask=1x8",
             "--input-shape", "token_type_ids=1x8")
    assert r.returncode == 2 and "--cores 9" in r.stderr


def test_int64_input_out_of_range_is_an_error():
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]), opset_imports=[helper.make_opsetid("", 17)])
    rep = S4CBackend.prepare(model, backend="s4")
    (y,) = rep.run([np.array([3, -7], np.int64)])
    np.testing.assert_array_equal(y, [3.0, -7.0])
    from s4c.errors import S4CError
    with pytest.raises(S4CError, match="outside"):
        rep.run([np.array([1 << 40, 0], np.int64)])


# -- BERT-base (slow) --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("sparsity", [0.0, 0.9, 0.97])
def test_bert_base_matches_onnxruntime(exporter, sparsity, tmp_path):
    pytest.importorskip("torch")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    from bert_base import bert_base

    path = bert_base(exporter, sparsity)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    feeds = make_feeds(names, batch=1, seq=128, vocab=30000)
    compiled = s4c_compile(path, input_shapes={n: (1, 128) for n in names}, target="s4", outdir=str(tmp_path / "out"))
    got = runner_for(compiled, "s4").run(feeds)
    ref = ort_outputs(path, feeds)
    diff = max_abs_diff({k: got[k] for k in ref}, ref)
    assert max(diff.values()) <= TOL, diff
