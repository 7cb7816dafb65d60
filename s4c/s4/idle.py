"""Why each unit queue is not busy: the cycle model's idle attribution (cycles.schedule feeds it).

For every unit queue (core x dma / spu / vpu) the run's total cycles split exactly, in integers:

    busy + wait_dma + wait_spu + wait_vpu + wait_other_core + wait_busy_unit + tail == total_cycles

busy is the queue's instruction cycles (CycleReport.unit_busy, sync instructions included). A queue
runs its instructions back to back, so before its last instruction it only sits idle in a gap
[a, b) before a `sync.wait` whose count is not visible yet when the queue gets free at a. The gap
ends at b, when the count's binding signal S becomes visible (the signal whose visibility fixed
the count's reach time: the latest-visible of the first `value` increments). S ran on the
producer queue P. The work S announces is P's *awaited run*: walking back from S over the
signals right before it, the maximal run of non-sync instructions; w = the start of its first
instruction (S's own start when there is none: S follows a wait or opens the queue).
The gap is split along the chain of producers:

- [max(a, w), b), P running the awaited run, S, and the sync latency: wait_dma / wait_spu /
  wait_vpu when P is this core's DMA / SPU / VPU, wait_other_core when P is on another core (a
  global semaphore; the cores' barriers are signalled by their DMA after a store).
- [a, w), before P started the awaited work: while P was busy (with work queued ahead of it),
  wait_busy_unit; while P sat in a gap of its own, that gap's causes over the same cycles. So
  waiting on a VPU that itself waited on a DMA load counts as waiting on DMA for those cycles.
- tail: total_cycles - the end of the queue's last instruction (all of total for an empty queue).

E.g. a DMA load of d cycles, `sync.signal unit=dma`, then `sync.wait unit=vpu` as the VPU's first
instruction: the VPU's gap is wait_dma = d + signal cycles + local latency.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

from s4c.errors import S4ProgramError
from s4c.s4 import isa

CAUSES = ("wait_dma", "wait_spu", "wait_vpu", "wait_other_core", "wait_busy_unit", "tail")


class Gap(NamedTuple):
    """One idle gap, ended by the sync.wait at stream index `index` of queue `queue` ("c0.vpu")."""
    queue: str
    index: int
    start: int
    cycles: int
    producer: str          # queue of the binding signal, "c0.dma"
    parts: dict            # cause -> cycles (nonzero only), sums to `cycles`


class IdleLedger:
    """Each queue's gaps and awaited-run start, each semaphore increment's origin, the causes."""

    def __init__(self, queues: list[tuple[int, str]]):
        self.queues = queues
        self.names = [f"c{core}.{unit}" for core, unit in queues]
        n = len(queues)
        self.last_end = [0] * n
        self.last_kind: list[str | None] = [None] * n
        self.run_start = [0] * n
        self.origin: dict = {}        # sem key -> per increment: (visible, producer queue, w) binding so far
        self.idle = [dict.fromkeys(CAUSES, 0) for _ in range(n)]
        self.gap_starts: list[list[int]] = [[] for _ in range(n)]    # each queue's gaps, in time order
        self.gap_ends: list[list[int]] = [[] for _ in range(n)]
        self.gap_segments: list[list[list]] = [[] for _ in range(n)]  # per gap: [(cause, cycles)] in time order
        self.gaps: dict = {}          # (core, stream index) -> Gap

    def gap(self, k: int, index: int, ins, key, a: int, b: int) -> None:
        """Queue k was free at a and its next instruction (a sync.wait) started at b > a."""
        if ins.op != isa.WAIT or not ins.args[2]:
            raise S4ProgramError(f"cycle model: {self.names[k]} #{index} started {b - a} cycles after its "
                                 f"queue got free, but is no sync.wait")
        visible, p, w = self.origin[key][ins.args[2] - 1]
        cut = min(max(w, a), b)
        segments: list = []
        self._before_run(p, a, cut, segments)
        core, pcore, punit = self.queues[k][0], *self.queues[p]
        _push(segments, f"wait_{punit}" if pcore == core else "wait_other_core", b - cut)
        parts: dict = {}
        for cause, cycles in segments:
            parts[cause] = parts.get(cause, 0) + cycles
            self.idle[k][cause] += cycles
        self.gap_starts[k].append(a)
        self.gap_ends[k].append(b)
        self.gap_segments[k].append(segments)
        self.gaps[(core, index)] = Gap(self.names[k], index, a, b - a, self.names[p], parts)

    def _before_run(self, p: int, t0: int, t1: int, segments: list) -> None:
        """Producer p's causes over [t0, t1): busy (p's instructions) or p's own gaps, clipped."""
        starts, ends = self.gap_starts[p], self.gap_ends[p]
        i = bisect_right(ends, t0)                 # p's first gap ending after t0
        t = t0
        while t < t1:
            if i < len(starts) and starts[i] < t1:
                _push(segments, "wait_busy_unit", starts[i] - t)
                t, offset = max(t, starts[i]), starts[i]
                for cause, cycles in self.gap_segments[p][i]:
                    _push(segments, cause, min(offset + cycles, t1) - max(offset, t))
                    offset += cycles
                t = min(ends[i], t1)
                i += 1
            else:
                _push(segments, "wait_busy_unit", t1 - t)
                t = t1

    def executed(self, k: int, op: int, start: int, end: int) -> None:
        kind = "signal" if op == isa.SIGNAL else "wait" if op == isa.WAIT else "work"
        last = self.last_kind[k]
        # a run of work opens at its first instruction; a signal opens one only after a wait (or at the start)
        if (kind == "work" and last != "work") or (kind == "signal" and last in (None, "wait")):
            self.run_start[k] = start
        self.last_kind[k] = kind
        self.last_end[k] = end

    def signaled(self, key, k: int, visible: int) -> None:
        """Queue k's signal on `key` (already `executed`) becomes visible at `visible`."""
        increments = self.origin.setdefault(key, [])
        if increments and increments[-1][0] >= visible:
            increments.append(increments[-1])
        else:
            increments.append((visible, k, self.run_start[k]))

    def finish(self, total: int) -> dict:
        """{queue name: {cause: cycles}} with the tails filled in."""
        out = {}
        for k, name in enumerate(self.names):
            self.idle[k]["tail"] = total - self.last_end[k]
            out[name] = self.idle[k]
        return out


def _push(segments: list, cause: str, cycles: int) -> None:
    """Append cycles of a cause, merged with the last segment when it has the same cause."""
    if cycles <= 0:
        return
    if segments and segments[-1][0] == cause:
        segments[-1] = (cause, segments[-1][1] + cycles)
    else:
        segments.append((cause, cycles))
