"""Idle attribution of the cycle model (s4c/s4/idle.py): per core x unit, busy + every idle cause ==
total cycles exactly, on hand-written programs whose attribution is known by construction and on
BERT-mini through `s4c compile` (report.json / report.md)."""

from __future__ import annotations

import json
from pathlib import Path

from test_s4_cycles import LD, M, ST, dma, program, vpu

from s4c.cli import main
from s4c.s4 import Program, simulate
from s4c.s4.cycles import schedule
from s4c.s4.idle import CAUSES

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "examples" / "models" / "bert_mini_pruned90.onnx"
SIG, WAIT, LAT, GLAT = M["sync.signal_cycles"], M["sync.wait_cycles"], M["sync.local_latency"], M["sync.global_latency"]
AXPB = "vpu.axpb dst=ys src=xs rows=4 cols=16 pd=64 ps=64 alpha=2 beta=0 dt=f32"
LD_Z = "dma.ld dst=zs src=x rows=4 bytes=64 dpitch=64 spitch=64 dt=f32"
LOAD_THEN_AXPB = f"""
    {LD}
    sync.signal unit=dma sem=l0
    sync.wait unit=vpu sem=l0 value=1
    {AXPB}"""         # the VPU's axpb waits for the DMA's load


def idle_of(report, unit: str) -> dict:
    """The unit's nonzero causes, after checking that busy + causes == total."""
    idle = report.unit_idle[unit]
    assert set(idle) == set(CAUSES)
    assert report.unit_busy[unit] + sum(idle.values()) == report.total_cycles, (unit, idle)
    return {c: v for c, v in idle.items() if v}


def test_vpu_waiting_on_a_dma_load_waits_its_duration_plus_sync_latency():
    report = simulate(program(f"""
        {LOAD_THEN_AXPB}
        end"""))
    d = dma(4, 64)
    assert idle_of(report, "c0.vpu") == {"wait_dma": d + SIG + LAT}
    assert report.total_cycles == d + SIG + LAT + WAIT + vpu("axpb", 64)
    assert idle_of(report, "c0.dma") == {"tail": report.total_cycles - d - SIG}
    assert idle_of(report, "c0.spu") == {"tail": report.total_cycles}       # no instruction: all tail
    gap = report.idle_gaps[(0, 2)]                                         # the sync.wait, stream index 2
    assert (gap.queue, gap.start, gap.cycles, gap.producer) == ("c0.vpu", 0, d + SIG + LAT, "c0.dma")


def test_work_queued_ahead_of_the_awaited_load_is_waiting_on_a_busy_unit():
    # the VPU needs zs; the DMA first loads xs (announced on l1, which nobody waits for)
    report = simulate(program(f"""
        {LD}
        sync.signal unit=dma sem=l1
        {LD_Z}
        sync.signal unit=dma sem=l0
        sync.wait unit=vpu sem=l0 value=1
        vpu.axpb dst=ys src=zs rows=4 cols=16 pd=64 ps=64 alpha=2 beta=0 dt=f32
        end"""))
    d = dma(4, 64)
    assert idle_of(report, "c0.vpu") == {"wait_busy_unit": d + SIG, "wait_dma": d + SIG + LAT}


def test_signals_right_after_the_work_still_announce_it():
    # a second signal straight after the first (as the cores' barriers do) announces the same load
    report = simulate(program(f"""
        {LD}
        sync.signal unit=dma sem=l1
        sync.signal unit=dma sem=l0
        sync.wait unit=vpu sem=l0 value=1
        {AXPB}
        end"""))
    assert idle_of(report, "c0.vpu") == {"wait_dma": dma(4, 64) + 2 * SIG + LAT}


def test_store_waiting_on_the_vpu():
    report = simulate(program(f"""
        {LOAD_THEN_AXPB}
        sync.signal unit=vpu sem=l1
        sync.wait unit=dma sem=l1 value=1
        {ST}
        end"""))
    # the DMA is free after load + signal; before the VPU's awaited run (the axpb) the VPU still
    # waited LAT cycles for that signal (so does the DMA: waiting on DMA), then ran its sync.wait
    # (a busy unit); the axpb, the VPU's signal and its latency are the VPU's
    assert idle_of(report, "c0.dma") == {"wait_dma": LAT, "wait_busy_unit": WAIT,
                                         "wait_vpu": vpu("axpb", 64) + SIG + LAT}
    assert idle_of(report, "c0.vpu") == {"wait_dma": dma(4, 64) + SIG + LAT, "tail": LAT + WAIT + dma(4, 64)}


def test_a_global_semaphore_from_another_core():
    report = simulate(program(f"""
        {LOAD_THEN_AXPB}
        sync.signal unit=vpu sem=g0
        end""", f"""
        sync.wait unit=vpu sem=g0 value=1
        vpu.axpb dst=0x800 src=0x0 rows=4 cols=16 pd=64 ps=64 alpha=2 beta=0 dt=f32
        end"""))
    d = dma(4, 64)
    axpb_start = d + SIG + LAT + WAIT
    visible = axpb_start + vpu("axpb", 64) + SIG + GLAT
    # before its axpb, core 0's VPU waited on its DMA, then ran its sync.wait (a busy unit)
    assert idle_of(report, "c1.vpu") == {"wait_dma": d + SIG + LAT, "wait_busy_unit": WAIT,
                                         "wait_other_core": vpu("axpb", 64) + SIG + GLAT}
    assert report.total_cycles == visible + WAIT + vpu("axpb", 64)
    assert idle_of(report, "c1.dma") == {"tail": report.total_cycles}


def test_bert_mini_idle_sums_to_the_total(tmp_path):
    out = tmp_path / "out"
    assert main(["compile", str(MODEL), "-o", str(out), "--input-shape", "input_ids=1x32", "--target", "s4"]) == 0
    r = json.loads((out / "report.json").read_text())["s4"]
    idle, total = r["idle"], r["cycles"]
    assert idle["causes"] == ["busy", *CAUSES]
    assert len(idle["units"]) == 3 * r["cores"]
    for name, d in idle["units"].items():
        assert all(isinstance(v, int) and v >= 0 for v in d.values()), (name, d)
        assert sum(d.values()) == total, (name, d)
    for unit, d in idle["by_unit"].items():
        assert sum(d.values()) == r["cores"] * total, (unit, d)
    # DMA-bound at batch 1: the VPUs mostly wait on DMA, directly or queued behind earlier transfers
    vpu_wait = idle["by_unit"]["vpu"]
    assert vpu_wait["wait_dma"] + vpu_wait["wait_busy_unit"] > vpu_wait["busy"]
    md = (out / "report.md").read_text()
    assert "### Idle time" in md
    row = idle["units"]["c0.vpu"]
    assert f"| c0.vpu | {row['busy']:,} | {row['wait_dma']:,} |" in md

    # against quantities the ledger does not compute: the scheduler's stalls, each queue's last end
    program = Program.from_bytes((out / "model.s4").read_bytes())
    last_end: dict = {}

    def on_event(ev):
        last_end[f"c{ev.core}.{ev.unit}"] = ev.start + ev.cost.cycles

    report = schedule(program, None, on_event)
    assert report.total_cycles == total
    gaps_by_queue: dict = {}
    for gap in report.idle_gaps.values():
        assert sum(gap.parts.values()) == gap.cycles > 0
        gaps_by_queue[gap.queue] = gaps_by_queue.get(gap.queue, 0) + gap.cycles
    for name, causes in report.unit_idle.items():
        assert causes["tail"] == total - last_end.get(name, 0)
        assert sum(v for c, v in causes.items() if c != "tail") == report.unit_stall[name] == gaps_by_queue.get(name, 0)
        assert causes == {c: v for c, v in idle["units"][name].items() if c != "busy"}
