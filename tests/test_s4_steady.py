"""Steady-state throughput (s4c.s4.steady): a stream's period is the busiest unit's work per batch,
never more than one batch's latency, and the unit that sets it is named."""

from __future__ import annotations

from s4c.s4 import assemble
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
