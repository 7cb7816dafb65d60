"""Steady-state throughput: the bound (s4c.s4.steady: the busiest unit's work per batch, never more
than one batch's latency, the unit named) and the simulated stream (codegen/s4/batch_stream.py: K
batches scheduled as one program, checked in the interpreter against K single runs)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import s4c
from s4c.codegen.s4 import S4Options, to_device
from s4c.codegen.s4.batch_stream import steady_period, stream_program
from s4c.codegen.s4.lower import lower
from s4c.driver import run_pipeline, select_layouts
from s4c.errors import S4CError
from s4c.frontend import load_onnx
from s4c.passes import PassManager
from s4c.precision import quantize_model
from s4c.s4 import assemble, run
from s4c.s4.cycles import schedule
from s4c.s4.steady import steady_state

PROGRAM = """\
.dram_size 0x100000
.const_size 0
.sym input x 0x0 f32[128,64]
.core 0
    dma.ld dst=0x0 src=x rows=1 bytes=32768 dpitch=0 spitch=0 dt=f32
    sync.signal unit=dma sem=l0
    sync.wait unit=vpu sem=l0 value=1
""" + "    vpu.exp dst=0x8000 src=0x0 rows=128 cols=64 pd=256 ps=256 dt=f32\n" * 12 + "    end\n"


def test_period_is_the_busiest_unit_and_at_most_the_latency():
    program = assemble(PROGRAM)
    rep = schedule(program)
    st = steady_state(program)
    assert st.latency_cycles == rep.total_cycles
    assert st.period_cycles == max(rep.unit_busy.values()) == rep.unit_busy[st.bound]
    assert st.bound == "c0.vpu"
    assert st.period_cycles < st.latency_cycles      # the load overlaps the previous batch's VPU work
    assert st.overlap_gain > 1.0


# -- the simulated stream (codegen/s4/batch_stream.py) on BERT-mini ------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BERT_MINI = os.path.join(REPO, "examples", "models", "bert_mini_pruned90.onnx")
NAMES = ("input_ids", "attention_mask", "token_type_ids")
K = 3


def _feeds(seed: int, batch: int, seq: int) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[:, rng.integers(seq // 2, seq):] = 0
    return {"input_ids": rng.integers(0, 700, (batch, seq)), "attention_mask": mask,
            "token_type_ids": rng.integers(0, 2, (batch, seq))}


@pytest.fixture(scope="module", params=["fp32", "int8"])
def mini_stream(request):
    g = load_onnx(BERT_MINI, {n: (2, 64) for n in NAMES})
    run_pipeline(g, "default")
    if request.param == "int8":         # dynamic activation scales: vpu.quant / dequant, spu dt=i8
        quantize_model(g, PassManager(), "int8")
    g = select_layouts(g, "s4")
    lowered = lower(g, {**S4Options(cores=4).lowering(), "stream_batches": K})
    plain = lower(g, S4Options(cores=4).lowering())
    return lowered, plain, stream_program(lowered, K)


def _device_feeds(io: dict, feeds: dict) -> dict:
    return {e["symbol"]: to_device(np.asarray(feeds[e["name"]]), e) for e in io["inputs"] if e["symbol"]}


def test_stream_program_computes_each_batch_as_the_single_program(mini_stream):
    lowered, plain, stream = mini_stream
    # keeping the emission for the stream changes nothing in the single-batch program
    assert lowered.program.to_bytes() == plain.program.to_bytes()
    batches = [_feeds(seed, 2, 64) for seed in range(K)]
    feeds = {}
    for j in range(K):
        feeds.update(_device_feeds(stream.io[j], batches[j]))
    outs, _ = run(stream.program, feeds)          # the interpreter's race check is on by default
    for j, want_feeds in enumerate(batches):
        want, _ = run(lowered.program, _device_feeds(lowered.io, want_feeds))
        for e, se in zip(lowered.io["outputs"], stream.io[j]["outputs"]):
            assert se["symbol"].endswith(f".b{j}")
            np.testing.assert_array_equal(outs[se["symbol"]], want[e["symbol"]], err_msg=f"batch {j} {e['name']}")
    # the batches differ, so equal outputs are not a copy of one batch
    first = lowered.io["outputs"][0]["name"]
    a, b = (outs[stream.io[j]["outputs"][0]["symbol"]] for j in (0, 1))
    assert not np.array_equal(a, b), first


def test_period_between_the_bound_and_the_latency(mini_stream):
    lowered, _, stream = mini_stream
    single = schedule(lowered.program)
    streamed = schedule(stream.program)
    period = steady_period(single.total_cycles, streamed.total_cycles, K)
    bound = steady_state(lowered.program)
    assert streamed.total_cycles > single.total_cycles
    assert bound.period_cycles <= period <= single.total_cycles
    # the stream's DMA, SPU and VPU do K batches' work: exactly K times one batch's (sync aside)
    one, many = _work(lowered.program), _work(stream.program)
    assert one and many == {unit: K * cycles for unit, cycles in one.items()}


def _work(program) -> dict:
    """Cycles of every (core, unit)'s instructions other than sync and end."""
    out: dict = {}
    for core, instrs in enumerate(program.cores):
        for ins in instrs:
            if ins.mnemonic.startswith("sync.") or ins.mnemonic == "end":
                continue
            key = (core, ins.unit())
            out[key] = out.get(key, 0) + ins.spec.cost(ins.fields(), program.machine).cycles
    return out


def test_report_steady_state_section(tmp_path):
    cm = s4c.compile(BERT_MINI, {n: (1, 128) for n in NAMES}, target="s4", outdir=tmp_path / "o",
                     backend_options={"stream_batches": K})
    st = cm.report["s4"]["steady_state"]
    s = st["stream"]
    assert s["batches"] == K and st["latency_cycles"] == cm.report["s4"]["cycles"]
    assert st["bound"]["period_cycles"] <= s["period_cycles"] <= st["latency_cycles"]
    assert s["gain_over_latency"] == pytest.approx(st["latency_cycles"] / s["period_cycles"])
    assert s["throughput_per_s"] == pytest.approx(cm.report["s4"]["clock_hz"] / s["period_cycles"])
    assert s["busiest_unit"] in {f"c{c}.{u}" for c in range(4) for u in ("dma", "spu", "vpu")}
    w = st["weights"]
    assert w["mode"] == "double-buffered" and 0 < w["loaded_per_batch_bytes"] < cm.report["s4"]["dram_bytes_moved"]
    md = (tmp_path / "o" / "report.md").read_text()
    assert "### Steady state" in md and "steady state, simulated (3 batches" in md
    # without the option only the bound is reported, and model.s4 is the same program
    cm0 = s4c.compile(BERT_MINI, {n: (1, 128) for n in NAMES}, target="s4", outdir=tmp_path / "p",
                      backend_options={"stream_batches": 0})
    assert cm0.report["s4"]["steady_state"]["stream"] is None
    assert cm0.report["s4"]["steady_state"]["bound"] == st["bound"]
    assert (tmp_path / "o" / "model.s4").read_bytes() == (tmp_path / "p" / "model.s4").read_bytes()


def test_stream_batches_option_and_cli(tmp_path, capsys):
    from s4c.cli import main

    with pytest.raises(S4CError, match="stream_batches must be 0 \\(off\\) or 2..16, not 1"):
        s4c.compile(BERT_MINI, {n: (1, 128) for n in NAMES}, target="s4", outdir=tmp_path / "x",
                    backend_options={"stream_batches": 1})
    assert main(["compile", BERT_MINI, "-o", str(tmp_path / "c"), "--target", "s4", "--input-shape", "input_ids=1x128",
                 "--s4-stream-batches", "0"]) == 0
    assert json.loads((tmp_path / "c" / "report.json").read_text())["s4"]["steady_state"]["stream"] is None
    assert main(["compile", BERT_MINI, "-o", str(tmp_path / "d"), "--target", "s4", "--input-shape", "input_ids=1x128",
                 "--s4-stream-batches", "2"]) == 0
    assert json.loads((tmp_path / "d" / "report.json").read_text())["s4"]["steady_state"]["stream"]["batches"] == 2
    assert main(["compile", BERT_MINI, "-o", str(tmp_path / "e"), "--target", "s4", "--input-shape", "input_ids=1x128",
                 "--s4-stream-batches", "1"]) != 0
    err = capsys.readouterr().err
    assert "error: S4 stream_batches must be 0 (off) or 2..16, not 1" in err and "Traceback" not in err
