"""codegen/s4/deps.py: the dependencies the scheduler must respect. The scheduler reorders a
unit's own queue (rank first), so a write must wait for every reader since the last write, not
only the last one in program order (BERT-base batch 16 raced when it waited only for that one)."""

from __future__ import annotations

from s4c.codegen.s4.deps import dependencies
from s4c.codegen.s4.schedule import schedule
from s4c.s4 import load_machine, make

M = load_machine("s4v1")
MASK, OUT1, OUT2 = 0x10000, 0x20000, 0x30000
DRAM_SRC = 0x1000


def _cvt(dst: int, src: int):
    return make("vpu.cvt", dst=dst, src=src, rows=4, cols=64, pd=256, ps=256, scale=1.0, sdt="f32",
                dt="f32", tdt="bf16")


def _load(dst: int):
    return make("dma.ld", dst=dst, src=DRAM_SRC, rows=4, bytes=256, dpitch=256, spitch=256, dt="f32",
                tdt="bf16")


def _nodes():
    return [(0, _load(MASK)),        # 0: writes MASK
            (0, _cvt(OUT1, MASK)),   # 1: reads MASK
            (0, _cvt(OUT2, MASK)),   # 2: reads MASK (same unit)
            (0, _load(MASK))]        # 3: overwrites MASK: after both reads


def test_write_waits_for_every_reader_since_the_last_write():
    preds = dependencies(_nodes(), M, cores=1, const_end=0, dram_size=0x100000)
    assert preds[1] == [0] and preds[2] == [0]          # read after write, no read-read order
    assert {1, 2} <= set(preds[3])                      # write after *both* reads


def test_reads_of_a_later_write_do_not_wait_for_the_earlier_readers():
    nodes = _nodes() + [(0, _cvt(OUT1 + 0x8000, MASK))]
    preds = dependencies(nodes, M, cores=1, const_end=0, dram_size=0x100000)
    assert preds[4] == [3]


def test_schedule_that_swaps_the_readers_still_orders_the_write_after_both():
    busy = make("vpu.cvt", dst=0x40000, src=0x50000, rows=2048, cols=64, pd=256, ps=256, scale=1.0,
                sdt="f32", dt="f32", tdt="bf16")
    first, read1, read2, second = _nodes()
    # the VPU is busy while both readers become ready, so it picks between them by rank
    nodes = [first, (0, busy), read1, read2, second]
    preds = dependencies(nodes, M, cores=1, const_end=0, dram_size=0x100000)
    rank = [0.0, 0.0, 2.0, 1.0, 3.0]       # the second reader goes first
    debug: dict = {}
    schedule(nodes, preds, M, cores=1, rank=rank, debug=debug)
    start, finish = debug["start"], debug["finish"]
    assert start[3] < start[2], "the test needs the scheduler to reorder the readers"
    assert start[4] >= max(finish[2], finish[3])
