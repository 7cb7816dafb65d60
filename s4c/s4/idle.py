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

- wait_busy_unit: P's busy cycles within [a, min(w, b)): the awaited work was queued behind P's
  earlier work, and P was still doing that when this queue started waiting.
- the rest of the gap goes to P: wait_dma / wait_spu / wait_vpu when P is this core's DMA / SPU /
  VPU queue, wait_other_core when P is on another core (a global semaphore; the cores' barriers
  are signalled by their DMA after a store). It holds the awaited run, S itself, the sync
  latency, and any time P sat idle itself before w.
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
    """Per-queue instruction spans, each semaphore increment's origin, and the gaps' causes."""

    def __init__(self, queues: list[tuple[int, str]]):
        self.queues = queues
        self.names = [f"c{core}.{unit}" for core, unit in queues]
        n = len(queues)
        self.starts: list[list[int]] = [[] for _ in range(n)]
        self.ends: list[list[int]] = [[] for _ in range(n)]
        self.done: list[list[int]] = [[] for _ in range(n)]    # busy cycles up to and including each
        self.last_kind: list[str | None] = [None] * n
        self.run_start = [0] * n
        self.origin: dict = {}        # sem key -> per increment: (visible, producer queue, w) binding so far
        self.idle = [dict.fromkeys(CAUSES, 0) for _ in range(n)]
        self.gaps: dict = {}          # (core, stream index) -> Gap

    def gap(self, k: int, index: int, ins, key, a: int, b: int) -> None:
        """Queue k was free at a and its next instruction (a sync.wait) started at b > a."""
        if ins.op != isa.WAIT or not ins.args[2]:
            raise S4ProgramError(f"cycle model: {self.names[k]} #{index} started {b - a} cycles after its "
                                 f"queue got free, but is no sync.wait")
        visible, p, w = self.origin[key][ins.args[2] - 1]
        cut = min(max(w, a), b)
        blocked = self._busy_before(p, cut) - self._busy_before(p, a)
        core, pcore, punit = self.queues[k][0], *self.queues[p]
        cause = f"wait_{punit}" if pcore == core else "wait_other_core"
        parts = {cause: b - a - blocked}
        if blocked:
            parts["wait_busy_unit"] = blocked
        for c, cycles in parts.items():
            self.idle[k][c] += cycles
        self.gaps[(core, index)] = Gap(self.names[k], index, a, b - a, self.names[p], parts)

    def executed(self, k: int, op: int, start: int, end: int) -> None:
        kind = "signal" if op == isa.SIGNAL else "wait" if op == isa.WAIT else "work"
        last = self.last_kind[k]
        # a run of work opens at its first instruction; a signal opens one only after a wait (or at the start)
        if (kind == "work" and last != "work") or (kind == "signal" and last in (None, "wait")):
            self.run_start[k] = start
        self.last_kind[k] = kind
        done = self.done[k]
        self.starts[k].append(start)
        self.ends[k].append(end)
        done.append((done[-1] if done else 0) + end - start)

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
            self.idle[k]["tail"] = total - (self.ends[k][-1] if self.ends[k] else 0)
            out[name] = self.idle[k]
        return out

    def _busy_before(self, k: int, t: int) -> int:
        """Busy cycles of queue k in [0, t), from the instructions it has run so far."""
        ends = self.ends[k]
        i = bisect_right(ends, t)
        busy = self.done[k][i - 1] if i else 0
        if i < len(ends) and self.starts[k][i] < t:
            busy += t - self.starts[k][i]
        return busy
