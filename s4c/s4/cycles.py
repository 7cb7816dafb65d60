"""The S4 cycle model: per-unit timelines, sync dependencies, and the CycleReport.

    report = simulate(program)            # timing only (no data needed: all costs are static)
    report.total_cycles, report.latency_s, report.utilisation(), report.by_opcode, report.by_node
    report.unit_idle["c0.vpu"]            # why the unit is not busy, by cause (idle.py); + busy == total
    print(report.summary())

Model (docs/isa.md §Cycle model): each core has three unit queues (DMA, SPU, VPU); a core's
stream is split by unit in program order. A unit runs its instructions one after another; an
instruction occupies it for `cost(...).cycles` cycles (the formula next to the op's semantics,
see isa.OPS). Units and cores run concurrently; the only cross-unit dependencies are semaphores:
a `sync.signal` completes at t and its count becomes visible at t + latency (local or global); a
`sync.wait` starts when its unit is free and the count has reached the value. The event loop below
always executes the ready instruction with the earliest start (ties: lowest core, then unit), so
the interpreter can run each instruction's semantics in a sync-consistent order through
`on_event`. A state where some queue is blocked forever is reported as a deadlock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from s4c.errors import S4ProgramError
from s4c.s4 import isa
from s4c.s4.idle import IdleLedger
from s4c.s4.ops_sync import sem_parts


@dataclass
class OpStat:
    count: int = 0
    cycles: int = 0
    bytes: int = 0
    work: int = 0

    def add(self, cost) -> None:
        self.count += 1
        self.cycles += cost.cycles
        self.bytes += cost.bytes
        self.work += cost.work


@dataclass
class CycleReport:
    machine: str
    clock_hz: float
    total_cycles: int = 0
    instructions: int = 0
    core_cycles: list = field(default_factory=list)
    unit_busy: dict = field(default_factory=dict)     # "c0.dma" -> busy cycles
    unit_stall: dict = field(default_factory=dict)    # "c0.vpu" -> cycles spent waiting on semaphores
    unit_idle: dict = field(default_factory=dict)     # "c0.vpu" -> {cause: cycles}: busy + these == total (idle.py)
    idle_gaps: dict = field(default_factory=dict)     # (core, stream index of the sync.wait) -> idle.Gap
    by_opcode: dict = field(default_factory=dict)     # mnemonic -> OpStat
    by_node: dict = field(default_factory=dict)       # ONNX node name (debug map) -> OpStat
    by_ir_op: dict = field(default_factory=dict)      # IR op (debug map) -> OpStat

    @property
    def latency_s(self) -> float:
        return self.total_cycles / self.clock_hz

    def utilisation(self) -> dict:
        """busy cycles / total cycles for every unit of every core."""
        total = max(self.total_cycles, 1)
        return {unit: busy / total for unit, busy in self.unit_busy.items()}

    def summary(self) -> str:
        lines = [f"machine {self.machine}: {self.total_cycles} cycles = {self.latency_s * 1e6:.3f} us "
                 f"at {self.clock_hz / 1e9:g} GHz, {self.instructions} instructions"]
        lines.append("unit      busy        util   stall")
        util = self.utilisation()
        for unit, busy in self.unit_busy.items():
            lines.append(f"{unit:<8} {busy:>10}  {util[unit]:6.1%}  {self.unit_stall.get(unit, 0):>8}")
        lines.append("opcode          count      cycles        bytes")
        for name, st in sorted(self.by_opcode.items(), key=lambda kv: -kv[1].cycles):
            lines.append(f"{name:<14} {st.count:>6} {st.cycles:>11} {st.bytes:>12}")
        if self.by_node:
            lines.append("onnx node (top 20 by cycles)")
            for name, st in sorted(self.by_node.items(), key=lambda kv: -kv[1].cycles)[:20]:
                lines.append(f"  {st.cycles:>11}  {name}")
        return "\n".join(lines)


class Event(NamedTuple):
    core: int
    unit: str
    index: int            # position in the core's stream
    ins: isa.Instr
    fields: dict
    start: int
    cost: object          # ops_common.Cost
    sem_key: tuple | None  # ("l", core, i) / ("g", i) for sync ops


NO_NODE = "(no debug info)"


def sem_key(core: int, sem: int) -> tuple:
    is_global, index = sem_parts(sem)
    return ("g", index) if is_global else ("l", core, index)


def schedule(program, machine=None, on_event: Callable | None = None) -> CycleReport:
    """Run the timing model over a validated program; `on_event(Event)` sees every instruction in
    execution order (before its effects become visible to later instructions)."""
    m = machine or program.machine
    queues, names = [], []
    for core, stream in enumerate(program.cores):
        per_unit = {u: [] for u in isa.UNITS}
        for index, ins in enumerate(stream):
            if ins.op != isa.END:
                key = sem_key(core, ins.args[1]) if isa.BY_CODE[ins.op].unit == "sync" else None
                per_unit[ins.unit()].append((index, ins, key))
        for unit in isa.UNITS:
            queues.append((core, unit, per_unit[unit]))
            names.append(f"c{core}.{unit}")
    n = len(queues)
    pos = [0] * n
    t_free = [0] * n
    busy = [0] * n
    stall = [0] * n
    counts: dict = {}
    reach: dict = {}          # sem key -> visibility time of the 1st, 2nd, ... increment
    report = CycleReport(m.name, m.clock_hz, core_cycles=[0] * len(program.cores))
    local_lat, global_lat = m["sync.local_latency"], m["sync.global_latency"]
    debug = program.debug
    ledger = IdleLedger([(core, unit) for core, unit, _ in queues])

    def head_start(k: int):
        """When queue k's next instruction can start: inf when the queue is done, or when it
        waits for a semaphore count not reached yet."""
        queue = queues[k][2]
        if pos[k] >= len(queue):
            return math.inf
        _, ins, key = queue[pos[k]]
        if ins.op == isa.WAIT and ins.args[2]:
            value = ins.args[2]
            if counts.get(key, 0) < value:
                return math.inf
            return max(t_free[k], reach[key][value - 1])
        return t_free[k]

    # a queue's start changes only when it runs an instruction, or it waits and a semaphore moves
    ready = [head_start(k) for k in range(n)]
    while True:
        best_start = min(ready)
        if best_start == math.inf:
            break
        best = ready.index(best_start)          # ties: the lowest core, then unit
        core, unit, queue = queues[best]
        index, ins, key = queue[pos[best]]
        spec = isa.BY_CODE[ins.op]
        a = ins.fields()
        cost = spec.cost(a, m)
        if on_event is not None:
            on_event(Event(core, unit, index, ins, a, best_start, cost, key))
        end = best_start + cost.cycles
        if best_start > t_free[best]:
            ledger.gap(best, index, ins, key, t_free[best], best_start)
        ledger.executed(best, ins.op, best_start, end)
        if ins.op == isa.SIGNAL:
            counts[key] = counts.get(key, 0) + 1
            times = reach.setdefault(key, [])
            visible = end + (global_lat if key[0] == "g" else local_lat)
            times.append(max(visible, times[-1]) if times else visible)
            ledger.signaled(key, best, visible)
            for k in range(n):
                if ready[k] == math.inf:
                    ready[k] = head_start(k)
        stall[best] += best_start - t_free[best]
        t_free[best] = end
        busy[best] += cost.cycles
        pos[best] += 1
        ready[best] = head_start(best)
        report.instructions += 1
        entry = debug.get(ins.dbg)
        _stat(report.by_opcode, spec.mnemonic).add(cost)
        _stat(report.by_node, entry.onnx_node if entry else NO_NODE).add(cost)
        _stat(report.by_ir_op, entry.ir_op if entry else NO_NODE).add(cost)
    blocked = []
    for k in range(n):
        core, unit, queue = queues[k]
        if pos[k] < len(queue):
            index, ins, key = queue[pos[k]]
            label = f"{key[0]}{key[-1]}"
            blocked.append(f"core {core} {unit} #{index} sync.wait {label}>={ins.args[2]} "
                           f"(count {counts.get(key, 0)})")
    if blocked:
        raise S4ProgramError("deadlock: " + "; ".join(blocked))
    report.instructions += len(program.cores)          # the `end`s
    report.total_cycles = max(t_free) if t_free else 0
    report.unit_idle, report.idle_gaps = ledger.finish(report.total_cycles), ledger.gaps
    for k, (core, unit, _) in enumerate(queues):
        report.unit_busy[names[k]] = busy[k]
        report.unit_stall[names[k]] = stall[k]
        report.core_cycles[core] = max(report.core_cycles[core], t_free[k])
    return report


def _stat(stats: dict, key) -> OpStat:
    st = stats.get(key)
    if st is None:
        st = stats[key] = OpStat()
    return st


def simulate(program, machine=None) -> CycleReport:
    """Validate, then time a program without executing it (costs do not depend on data)."""
    program.validate(machine)
    return schedule(program, machine)
