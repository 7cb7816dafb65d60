"""`s4c run --trace-json`: the C per-step timeline and the S4 modelled timeline are Chrome / Perfetto
traces of one schema (the Trace Event Format's JSON object form: metadata "M" events naming
processes and threads, complete "X" events with name, cat, ts, dur, pid, tid, args.op). The S4
trace has one track per core and unit and one slice per instruction, named by its ONNX node, with
the idle attribution (s4c/s4/idle.py) on the sync.waits that end a gap; BERT-base's too (slow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from s4c.cli import main
from s4c.s4 import Program, isa

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "examples" / "models" / "bert_mini_pruned90.onnx"
INPUTS = REPO / "examples" / "models" / "bert_mini_inputs.npz"

NUMBER = {"type": "number", "minimum": 0}
SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "traceEvents": {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [
                    {"type": "object", "required": ["ph", "name", "pid", "tid", "args"],
                     "properties": {"ph": {"const": "M"}, "name": {"enum": ["process_name", "thread_name"]},
                                    "pid": {"type": "integer"}, "tid": {"type": "integer"},
                                    "args": {"type": "object", "required": ["name"],
                                             "properties": {"name": {"type": "string"}}}}},
                    {"type": "object", "required": ["ph", "name", "cat", "ts", "dur", "pid", "tid", "args"],
                     "properties": {"ph": {"const": "X"}, "name": {"type": "string", "minLength": 1},
                                    "cat": {"type": "string", "minLength": 1}, "ts": NUMBER, "dur": NUMBER,
                                    "pid": {"type": "integer", "minimum": 0}, "tid": {"type": "integer", "minimum": 0},
                                    "args": {"type": "object", "required": ["op"]}}},
                ]
            },
        },
    },
}


def _validate(trace: dict) -> None:
    try:
        import jsonschema
    except ImportError:  # the same rules by hand
        jsonschema = None
    if jsonschema is not None:
        jsonschema.validate(trace, SCHEMA)
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    for e in events:
        assert e["ph"] in ("M", "X"), e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] == "X":
            assert isinstance(e["name"], str) and e["name"] and isinstance(e["cat"], str)
            assert e["ts"] >= 0 and e["dur"] >= 0 and "op" in e["args"], e
    # every thread with events is named
    named = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in events if e["ph"] == "X"} <= named
    # events on one thread do not overlap
    by_thread: dict = {}
    for e in events:
        if e["ph"] == "X":
            by_thread.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_thread.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end - 1e-3


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("traces")
    assert main(["compile", str(MODEL), "-o", str(base / "out"), "--input-shape", "input_ids=1x16"]) == 0
    with np.load(INPUTS) as npz:
        np.savez(base / "in.npz", **{k: npz[k][:, :16] for k in npz.files})
    return base


def test_c_trace(built, capsys):
    path = built / "c.json"
    assert main(["run", str(built / "out"), "--backend", "c", "--inputs", str(built / "in.npz"), "--repeat", "2",
                 "--trace-json", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    trace = json.loads(path.read_text())
    _validate(trace)
    meta = json.loads((built / "out" / "c" / "model.json").read_text())
    x = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(x) == len(meta["steps"])                 # one event per run step, in order
    assert [e["args"]["step"] for e in x] == list(range(len(x)))
    # named by the steps' ONNX nodes
    linear = [e for e in x if e["cat"] == "Linear"]
    assert linear and all(e["name"].startswith("/encoder/") or e["name"].startswith("/pooler/") for e in linear)
    assert any(e["name"] == "/encoder/layer.0/intermediate/dense/MatMul" for e in linear)
    assert sum(e["dur"] for e in x) > 0


def _check_s4_trace(trace: dict, outdir: Path, model: Path) -> list:
    """The S4 trace of OUTDIR's model.s4: schema, one slice per instruction on its core's unit track,
    named by an ONNX node of `model`, idle causes that add up; returns the X events."""
    _validate(trace)
    x = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    program = Program.from_bytes((outdir / "model.s4").read_bytes())
    for core, stream in enumerate(program.cores):
        want = {(ins.unit(), i) for i, ins in enumerate(stream) if ins.op != isa.END}
        got = [(isa.UNITS[e["tid"]], e["args"]["index"]) for e in x if e["pid"] == core]
        assert len(got) == len(set(got)) and set(got) == want, core
    nodes = {n.name for n in onnx.load(str(model), load_external_data=False).graph.node}
    work = [e for e in x if e["cat"] != "sync"]
    assert work and all(e["name"] in nodes and e["args"]["op"] == e["cat"] for e in work)
    hz = trace["otherData"]["clock_hz"]
    by_track: dict = {}
    for e in x:
        by_track.setdefault((e["pid"], e["tid"]), []).append(e)
    gaps = 0
    for events in by_track.values():
        free = 0.0                      # the unit is free from the end of its previous slice on
        for e in events:
            idle = e["args"].get("idle_before", 0)
            if idle:
                gaps += 1
                assert e["args"]["mnemonic"] == "sync.wait" and sum(e["args"]["idle_causes"].values()) == idle
            assert abs(e["ts"] - free - idle / hz * 1e6) < 2e-3, e
            free = e["ts"] + e["dur"]
    assert gaps
    total, busy = trace["otherData"]["total_cycles"], trace["otherData"]["unit_busy"]
    for unit, causes in trace["otherData"]["unit_idle"].items():
        assert busy[unit] + sum(causes.values()) == total, unit
    return x


def test_s4_trace(built, capsys):
    path = built / "s4.json"
    assert main(["run", str(built / "out"), "--backend", "s4", "--inputs", str(built / "in.npz"),
                 "--trace-json", str(path)]) == 0
    out = capsys.readouterr().out
    trace = json.loads(path.read_text())
    x = _check_s4_trace(trace, built / "out", MODEL)
    assert {e["pid"] for e in x} == {0, 1, 2, 3}              # four cores
    assert {e["tid"] for e in x} <= {0, 1, 2}                 # dma, spu, vpu
    assert any(e["name"] == "/encoder/layer.0/intermediate/dense/MatMul" and e["cat"] == "Linear" for e in x)
    # the trace ends where the cycle model's latency does
    latency_ms = float(out.split("cycles = ")[1].split(" ms")[0])
    end_us = max(e["ts"] + e["dur"] for e in x)
    assert abs(end_us / 1e3 - latency_ms) <= 0.02 * latency_ms + 1e-3


def test_trace_json_needs_c_or_s4(built, tmp_path, capsys):
    code = main(["run", str(built / "out"), "--inputs", str(built / "in.npz"), "--trace-json", str(tmp_path / "t.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.slow
def test_bert_base_s4_trace(tmp_path, capsys):
    """BERT-base 90% (seq 128, 4 cores) through `s4c run --trace-json`: ~19k slices, ~5 MB."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bert_base import bert_base

    model = Path(bert_base("torchscript", 0.9))
    out = tmp_path / "out"
    assert main(["compile", str(model), "-o", str(out), "--input-shape", "input_ids=1x128", "--target", "s4"]) == 0
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "in.npz", input_ids=rng.integers(0, 30000, (1, 128)), attention_mask=np.ones((1, 128), np.int64),
             token_type_ids=np.zeros((1, 128), np.int64))
    path = tmp_path / "trace.json"
    assert main(["run", str(out), "--backend", "s4", "--inputs", str(tmp_path / "in.npz"), "--trace-json", str(path)]) == 0
    assert path.stat().st_size < 16 << 20
    trace = json.loads(path.read_text())
    x = _check_s4_trace(trace, out, model)
    assert {(e["pid"], e["tid"]) for e in x} == {(c, u) for c in range(4) for u in range(3)}
    assert any(e["name"] == "/encoder/layer.11/intermediate/dense/MatMul" and e["cat"] == "Linear" for e in x)
    report = json.loads((out / "report.json").read_text())["s4"]
    assert report["cycles"] == trace["otherData"]["total_cycles"]
    for name, causes in report["idle"]["units"].items():
        assert sum(causes.values()) == report["cycles"], name
