"""`s4c run --trace-json`: the C per-step timeline and the S4 modelled timeline are Chrome / Perfetto
traces of one schema (the Trace Event Format's JSON object form: metadata "M" events naming
processes and threads, complete "X" events with name, cat, ts, dur, pid, tid, args.op)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s4c.cli import main

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


def test_s4_trace(built, capsys):
    path = built / "s4.json"
    assert main(["run", str(built / "out"), "--backend", "s4", "--inputs", str(built / "in.npz"),
                 "--trace-json", str(path)]) == 0
    out = capsys.readouterr().out
    trace = json.loads(path.read_text())
    _validate(trace)
    x = [e for e in trace["traceEvents"] if e["ph"] == "X"]
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
