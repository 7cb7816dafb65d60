"""The S4 reference interpreter.

    outputs, report = run(program, {"x": x}, trace=print)   # program: Program or its bytes
    outputs["y"]               # numpy array, shape / dtype of the output symbol (bf16 -> float32)
    report                     # cycles.CycleReport (the same timing simulate() computes)

run() validates the program first (program.validate: opcodes, operand ranges, alignment, SRAM /
DRAM bounds, read-only constants, overlaps, sync operands), copies the constant segment to DRAM
address 0 and the inputs to their symbols, then executes the per-core streams in the cycle
model's event order (cycles.schedule): each instruction's semantics run once, vectorised with
numpy, on DRAM (one uint8 buffer) and per-core SRAM (one uint8 buffer each).

Memory-ordering check (on by default): the SPU, VPU and DMA queues of a core, and all cores, run
concurrently, so two instructions on different units that touch the same bytes (one of them
writing) must be ordered by semaphores. Vector clocks over the unit queues track happens-before
through sync.signal / sync.wait at 64-byte-block granularity; an unordered conflicting access
raises S4ProgramError ("data race ...") instead of silently depending on timing.
Runtime faults (gather index, N:M offset, BSR pointer out of range) and deadlocks raise
S4ProgramError too, naming the core, instruction index and opcode.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from s4c.errors import S4ProgramError
from s4c.s4 import dtypes as D
from s4c.s4 import isa
from s4c.s4.cycles import CycleReport, Event, schedule
from s4c.s4.program import Program, region_blocks

DEFAULT_MAX_DRAM = 4 << 30       # bytes of DRAM the interpreter is willing to allocate
_UNIT_INDEX = {u: i for i, u in enumerate(isa.UNITS)}


class _Ctx:
    """What an op's run() sees: bounds-checked strided views of DRAM / this core's SRAM."""

    def __init__(self, dram: np.ndarray, srams: list):
        self.dram, self.srams = dram, srams
        self.core = 0
        self.where = ""

    def fail(self, msg: str):
        raise S4ProgramError(f"{self.where}: {msg}")

    def view(self, space: str, base: int, rows: int, row_bytes: int, pitch: int) -> np.ndarray:
        buf = self.dram if space == "dram" else self.srams[self.core]
        end = base + (rows - 1) * pitch + row_bytes
        if base < 0 or rows < 1 or row_bytes < 1 or end > buf.size or (rows > 1 and pitch < row_bytes):
            self.fail(f"access [0x{base:x}, 0x{end:x}) outside {space}")   # validation makes this unreachable
        return as_strided(buf[base:], shape=(rows, row_bytes), strides=(pitch if rows > 1 else row_bytes, 1))


class _Tracker:
    """Last writer / last readers of every block of one memory, for the race check."""

    def __init__(self, n_blocks: int, units: list, first_block: int = 0):
        self.units = np.asarray(units, dtype=np.int64)        # slot -> global unit id
        self.first = first_block
        self.w_slot = np.zeros(n_blocks, dtype=np.int64)
        self.w_epoch = np.zeros(n_blocks, dtype=np.int64)      # 0 = written by the host before the run
        self.r_epoch = np.zeros((len(units), n_blocks), dtype=np.int64)

    def blocks(self, acc, align):
        b = region_blocks(acc, align)
        if isinstance(b, slice):
            return slice(max(b.start - self.first, 0), max(b.stop - self.first, 0))
        b = b - self.first
        return b[b >= 0]

    def conflict(self, blocks, slot: int, vc: np.ndarray, write: bool):
        """(other global unit, its epoch) of an access not ordered before this one, or None."""
        writers = self.units[self.w_slot[blocks]]
        bad = self.w_epoch[blocks] > vc[writers]
        if bad.any():
            i = int(np.argmax(bad))
            return int(writers[i]), int(self.w_epoch[blocks][i]), "written"
        if write:
            for other in range(len(self.units)):
                if other == slot:
                    continue
                reads = self.r_epoch[other, blocks]
                late = reads > vc[self.units[other]]
                if late.any():
                    return int(self.units[other]), int(reads[int(np.argmax(late))]), "read"
        return None

    def commit(self, blocks, slot: int, epoch: int, write: bool):
        if write:
            self.w_slot[blocks] = slot
            self.w_epoch[blocks] = epoch
        else:
            self.r_epoch[slot, blocks] = epoch


class _Machine:
    """One execution: memories, vector clocks, trackers; `on_event` is the scheduler callback."""

    def __init__(self, program: Program, check_races: bool, trace, max_dram: int):
        m = self.m = program.machine
        if program.dram_size > max_dram:
            raise S4ProgramError(f"program needs {program.dram_size} bytes of DRAM; the interpreter is "
                                 f"limited to {max_dram} (run(..., max_dram_bytes=...))")
        self.program = program
        self.dram = np.zeros(program.dram_size, dtype=np.uint8)
        for offset, piece in program.const_pieces():
            self.dram[offset:offset + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
        n_cores = len(program.cores)
        self.srams = [np.zeros(m.sram_bytes, dtype=np.uint8) for _ in range(n_cores)]
        self.ctx = _Ctx(self.dram, self.srams)
        n_units = 3 * n_cores
        self.vc = np.zeros((n_units, n_units), dtype=np.int64)
        self.history = [[] for _ in range(n_units)]           # epoch - 1 -> stream index
        self.sem_clocks: dict = {}
        self.check_races = check_races
        self.trace = trace
        align = m.align
        if check_races:
            first = program.const_end // align
            n_blocks = max(-(-program.dram_size // align) - first, 1)
            self.dram_tracker = _Tracker(n_blocks, [3 * c for c in range(n_cores)], first)
            self.sram_trackers = [_Tracker(m.sram_bytes // align, [3 * c, 3 * c + 1, 3 * c + 2])
                                  for c in range(n_cores)]

    def on_event(self, ev: Event) -> None:
        uid = 3 * ev.core + _UNIT_INDEX[ev.unit]
        vc = self.vc[uid]
        vc[uid] += 1
        epoch = int(vc[uid])
        self.history[uid].append(ev.index)
        spec = isa.BY_CODE[ev.ins.op]
        if ev.ins.op == isa.SIGNAL:
            clocks = self.sem_clocks.setdefault(ev.sem_key, [])
            clocks.append(np.maximum(clocks[-1], vc) if clocks else vc.copy())
        elif ev.ins.op == isa.WAIT and ev.fields["value"]:
            np.maximum(vc, self.sem_clocks[ev.sem_key][ev.fields["value"] - 1], out=vc)
        else:
            where = f"core {ev.core} #{ev.index} {spec.mnemonic}"
            self.ctx.core, self.ctx.where = ev.core, where
            accesses = spec.access(ev.fields) if self.check_races else ()
            checked = []
            for acc in accesses:
                tracker, slot = self._tracker(acc, ev)
                blocks = tracker.blocks(acc, self.m.align)
                hit = tracker.conflict(blocks, slot, vc, acc.mode == "w")
                if hit:
                    self._race(where, acc, hit)
                checked.append((tracker, blocks, slot, acc.mode == "w"))
            with np.errstate(all="ignore"):
                spec.run(self.ctx, ev.fields)
            for tracker, blocks, slot, write in sorted(checked, key=lambda t: t[3]):
                tracker.commit(blocks, slot, epoch, write)
        if self.trace is not None:
            self._emit(ev, spec)

    def _tracker(self, acc, ev):
        if acc.space == "dram":
            return self.dram_tracker, ev.core
        return self.sram_trackers[ev.core], _UNIT_INDEX[ev.unit]

    def _race(self, where, acc, hit):
        other, epoch, how = hit
        core, unit = divmod(other, 3)
        index = self.history[other][epoch - 1]
        other_ins = self.program.cores[core][index]
        space = "DRAM" if acc.space == "dram" else "SRAM"
        raise S4ProgramError(
            f"data race: {where} {'writes' if acc.mode == 'w' else 'reads'} {acc.name} "
            f"({space} 0x{acc.base:x}) {how} by core {core} #{index} {other_ins.mnemonic} "
            f"({isa.UNITS[unit]}) with no sync.signal/sync.wait ordering them")

    def _emit(self, ev: Event, spec) -> None:
        entry = self.program.debug.get(ev.ins.dbg)
        node = f"  ; {entry.onnx_node}" if entry else ""
        line = (f"c{ev.core} {ev.unit:<3} #{ev.index:<6} t={ev.start:<10} cycles={ev.cost.cycles:<9} "
                f"bytes={ev.cost.bytes:<10} {spec.mnemonic}{node}")
        if callable(self.trace):
            self.trace(line)
        elif hasattr(self.trace, "write"):
            self.trace.write(line + "\n")
        else:
            self.trace.append(line)

    # -- host side ------------------------------------------------------------------------------
    def write_inputs(self, inputs: dict) -> None:
        if not isinstance(inputs, dict):
            raise S4ProgramError("inputs must be a dict {name: array}")
        declared = {s.name: s for s in self.program.inputs()}
        unknown = sorted(set(inputs) - set(declared))
        if unknown:
            raise S4ProgramError(f"unknown input(s) {', '.join(map(repr, unknown))} "
                                 f"(program inputs: {', '.join(declared) or 'none'})")
        for name, sym in declared.items():
            if name not in inputs:
                raise S4ProgramError(f"missing input {name!r} ({sym.dtype}{list(sym.shape)})")
            raw = _to_storage(np.asarray(inputs[name]), sym)
            self.dram[sym.addr:sym.addr + sym.size] = raw.view(np.uint8).reshape(-1)

    def read_outputs(self) -> dict:
        out = {}
        for sym in self.program.outputs():
            dt = D.CODES[sym.dtype]
            raw = self.dram[sym.addr:sym.addr + sym.size].copy().view(D.STORAGE[dt])
            out[sym.name] = D.to_numpy(raw, dt).reshape(sym.shape)
        return out


def _to_storage(arr: np.ndarray, sym) -> np.ndarray:
    if arr.shape != tuple(sym.shape):
        raise S4ProgramError(f"input {sym.name!r}: shape {list(arr.shape)} != {list(sym.shape)}")
    dt = D.CODES[sym.dtype]
    if dt in D.FLOATS:
        if arr.dtype.kind not in "biuf":
            raise S4ProgramError(f"input {sym.name!r}: {arr.dtype} is not numeric")
        return np.ascontiguousarray(D.from_f64(arr.astype(np.float64), dt))
    if arr.dtype.kind not in "biu":
        raise S4ProgramError(f"input {sym.name!r}: {sym.dtype} needs integers, got {arr.dtype}")
    lo, hi = D.INT_RANGE[dt]
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise S4ProgramError(f"input {sym.name!r}: values outside the {sym.dtype} range [{lo}, {hi}]")
    return np.ascontiguousarray(arr.astype(D.STORAGE[dt]))


def run(program, inputs: dict, trace=None, *, machine=None, check_races: bool = True,
        max_dram_bytes: int = DEFAULT_MAX_DRAM) -> tuple[dict, CycleReport]:
    """Execute a program. trace: None, a callable taking one line, a file-like or a list.
    machine: time (and check) the program against other machine parameters than it was built for."""
    if not isinstance(program, Program):
        program = Program.from_bytes(program)
    if machine is not None:
        program = Program(machine, program.cores, program.const, program.dram_size,
                          program.symbols, program.debug)
    program.validate()
    state = _Machine(program, check_races, trace, max_dram_bytes)
    state.write_inputs(inputs)
    report = schedule(program, None, state.on_event)
    return state.read_outputs(), report
