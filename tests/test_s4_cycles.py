"""The cycle model: per-unit timelines, semaphore dependencies with latency, overlap, reports."""

from __future__ import annotations

import math

import numpy as np

from s4c.s4 import assemble, load_machine, run, simulate

M = load_machine()
HEAD = """
.dram_size 0x10000
.sym input x 0x1000 f32[4,16]
.sym output y 0x2000 f32[4,16]
.sym sram:0 xs 0x0 f32[4,16]
.sym sram:0 ys 0x400 f32[4,16]
.sym sram:0 zs 0x800 f32[4,16]
.debug 5 "scale_1" "/Mul"
"""
LD = "dma.ld dst=xs src=x rows=4 bytes=64 dpitch=64 spitch=64 dt=f32"
ST = "dma.st dst=y src=ys rows=4 bytes=64 dpitch=64 spitch=64 dt=f32"
X = np.ones((4, 16), np.float32)


def dma(rows, row_bytes):
    moved = rows * math.ceil(row_bytes / M["dma.burst_bytes"]) * M["dma.burst_bytes"]
    return M["dma.overhead"] + M["dma.latency"] + math.ceil(moved / M["dma.bytes_per_cycle"])


def vpu(op, elems, dt="f32"):
    return M["vpu.overhead"] + M[f"vpu.passes.{op}"] * math.ceil(elems / M[f"vpu.lanes.{dt}"])


def program(*cores):
    text = HEAD
    for i, body in enumerate(cores):
        text += f".core {i}\n" + "".join(f"    {ln.strip()}\n" for ln in body.strip().splitlines())
    return assemble(text)


def test_sequential_chain_follows_the_formulas():
    p = program(f"""
        {LD}
        sync.signal unit=dma sem=l0
        sync.wait unit=vpu sem=l0 value=1
        vpu.axpb dst=ys src=xs rows=4 cols=16 pd=64 ps=64 alpha=2 beta=0 dt=f32 @5
        sync.signal unit=vpu sem=l1
        sync.wait unit=dma sem=l1 value=1
        {ST}
        end""")
    sig, wait, lat = M["sync.signal_cycles"], M["sync.wait_cycles"], M["sync.local_latency"]
    t = dma(4, 64) + sig                  # load, signal
    t = t + lat + wait                    # visible, wait
    t = t + vpu("axpb", 64) + sig         # axpb, signal
    t = t + lat + wait + dma(4, 64)       # visible, wait, store
    report = simulate(p)
    assert report.total_cycles == t
    assert report.latency_s == t / M.clock_hz
    assert report.unit_busy["c0.dma"] == 2 * dma(4, 64) + sig + wait
    assert report.unit_busy["c0.vpu"] == wait + vpu("axpb", 64) + sig
    assert report.unit_busy["c0.spu"] == 0
    assert report.by_node["/Mul"].cycles == vpu("axpb", 64)
    assert report.by_ir_op["scale_1"].count == 1
    assert report.by_opcode["sync.signal"].count == 2
    util = report.utilisation()
    assert util["c0.dma"] == report.unit_busy["c0.dma"] / t
    _, run_report = run(p, {"x": X})
    assert run_report.total_cycles == t
    assert "c0.vpu" in report.summary()


def test_independent_units_overlap():
    p = program(f"""
        {LD}
        vpu.fill dst=zs rows=4 cols=16 pd=64 value=1 dt=f32
        end""")
    report = simulate(p)
    assert report.total_cycles == max(dma(4, 64), vpu("fill", 64))


def test_wait_value_zero_never_blocks():
    p = program("""
        sync.wait unit=vpu sem=l3 value=0
        vpu.fill dst=zs rows=4 cols=16 pd=64 value=1 dt=f32
        end""")
    assert simulate(p).total_cycles == M["sync.wait_cycles"] + vpu("fill", 64)


def test_barrier_across_four_cores_uses_the_global_latency():
    bodies = []
    for core in range(4):
        fills = "\n".join(["vpu.fill dst=0x0 rows=4 cols=16 pd=64 value=1 dt=f32"] * (core + 1))
        bodies.append(f"""{fills}
            sync.signal unit=vpu sem=g0
            sync.wait unit=vpu sem=g0 value=4
            vpu.fill dst=0x400 rows=4 cols=16 pd=64 value=2 dt=f32
            end""")
    report = simulate(program(*bodies))
    sig, wait = M["sync.signal_cycles"], M["sync.wait_cycles"]
    last_signal_end = 4 * vpu("fill", 64) + sig
    expected = last_signal_end + M["sync.global_latency"] + wait + vpu("fill", 64)
    assert report.total_cycles == expected
    assert all(c == expected for c in report.core_cycles)
    assert report.unit_stall["c0.vpu"] > report.unit_stall["c3.vpu"]


def test_retiming_with_other_parameters():
    p = program(f"""
        {LD}
        sync.signal unit=dma sem=l0
        sync.wait unit=vpu sem=l0 value=1
        vpu.gelu dst=ys src=xs rows=4 cols=16 pd=64 ps=64 dt=f32 tdt=bf16
        end""")
    base = run(p, {"x": X})[1].by_opcode["vpu.gelu"].cycles
    assert base == vpu("gelu", 64, "bf16")
    slow = M.replace({"vpu.lanes.bf16": 8, "vpu.overhead": 100})
    out, report = run(p, {"x": X}, machine=slow)
    assert report.by_opcode["vpu.gelu"].cycles == 100 + M["vpu.passes.gelu"] * 8
    assert report.machine == "s4v1"
