"""The S4 backend's debug views: every op's result after a run (`s4c check`), and the modelled
timeline as a Chrome / Perfetto trace (`s4c run --backend s4 --trace-json`).

`debug_values(graph, model_s4, feeds, options)` lowers `graph` (the IR with the S4 target's layout
choices) again with SRAM residency off and no DRAM reuse (plan option keep_values), so every op
result is written to its own DRAM home and is still there when the program ends: the snapshot of
each op boundary. The instruction stream is the debug lowering's; the constant segment (weights,
biases, tables) is model.s4's own, so what the built program computes with is what is checked
(model.s4's segment must have the fresh lowering's size; the bytes that differ are counted).
The program then runs in the reference interpreter; each value is read from DRAM, converted from
its S4 storage dtype back to the IR's.

`chrome_trace(program)` runs the cycle model (no numerics) and writes one complete event per
instruction: pid = core, tid = unit (dma, spu, vpu), microseconds at the machine's clock, named by
its op's first ONNX node (sync instructions by mnemonic and semaphore); a sync.wait that ended an
idle gap carries the gap's cycles, producer queue and causes (s4c/s4/idle.py) in its args, and
otherData has every unit's busy and idle-cause totals.
"""

from __future__ import annotations

import numpy as np

from s4c.errors import S4CError
from s4c.ir import Graph, numpy_dtype
from s4c.s4 import Program, ProgramSet, read_programs
from s4c.s4 import dtypes as D
from s4c.s4 import isa
from s4c.s4.cycles import schedule
from s4c.s4.ops_sync import sem_parts
from s4c.s4.interp import DEFAULT_MAX_DRAM, _Machine

from .base import STORAGE, UNITS
from .lower import assemble
from .plan import VBASE
from .program import S4Program


def debug_program(graph: Graph, options: dict, const=None):
    """(S4Program plan, Program) of the debug lowering (residency off, every value kept in DRAM);
    with `const`, the program runs on that constant segment instead of its own (same size)."""
    opts = dict(options)
    opts.update(residency=False, keep_values=True)
    prog = S4Program(graph, opts)
    prog.make()
    debug = prog.emit()
    lowered = assemble(prog, debug)
    program = lowered.program
    prog.io = lowered.io
    if const is not None:
        if len(const) != len(program.const):
            raise S4CError(f"model.s4's constant segment ({len(const)} bytes) does not match a debug lowering of "
                           f"the IR ({len(program.const)} bytes): the OUTDIR's IR and model.s4 disagree; recompile")
        program = Program(program.machine, program.cores, const, program.dram_size, program.symbols, program.debug)
    return prog, program


def const_diff(a, b) -> int:
    """How many bytes of two equal-size constant segments differ."""
    x = np.frombuffer(bytes(a), np.uint8)
    y = np.frombuffer(bytes(b), np.uint8)
    return int(np.count_nonzero(x != y)) if x.size == y.size else max(x.size, y.size)


def debug_values(graph: Graph, model_s4: str | None, feeds: dict, options: dict) -> tuple[dict, dict]:
    """({value name: array} of every op result, info) for the S4 lowering of `graph` on `feeds`
    (host feeds: converted to the device storage like S4Runner), constants from `model_s4`."""
    const = stored = None
    if model_s4 is not None:
        with open(model_s4, "rb") as f:
            stored = read_programs(f.read())
        const = stored.const_bytes()
    prog, program = debug_program(graph, options)
    if isinstance(stored, ProgramSet):   # bucketed (buckets.py): the largest bucket, lowered first, leads the segment
        const = const[:len(program.const)]
    info = {"const_bytes": len(program.const), "const_bytes_differing": 0}
    if const is not None:
        if len(const) != len(program.const):
            debug_program(graph, options, const)     # raises the size mismatch
        info["const_bytes_differing"] = const_diff(const, program.const_bytes())
        program = Program(program.machine, program.cores, const, program.dram_size, program.symbols, program.debug)
    program.validate()
    state = _Machine(program, True, None, DEFAULT_MAX_DRAM)
    write_feeds(state, prog.io["inputs"], feeds)
    schedule(program, None, state.on_event)
    data_base = program.const_end
    values: dict[str, np.ndarray] = {}
    for op in prog.g.ops:
        for v in op.outputs:
            if v is None:
                continue
            me = prog.info(v)
            root = prog.root(v)
            if root.dram is None or me.n == 0:
                continue
            addr = root.dram - VBASE + data_base if root.dram >= VBASE else root.dram
            dt = D.CODES[me.dt]
            nbytes = me.n * D.SIZE[dt]
            raw = state.dram[addr:addr + nbytes].copy().view(D.STORAGE[dt])
            a = np.asarray(D.to_numpy(raw, dt)).reshape(me.shape)
            values[v.name] = (a != 0) if me.irdt == "bool" else a.astype(numpy_dtype(me.irdt))
    return values, info


def write_feeds(state: _Machine, inputs: list, feeds: dict) -> None:
    """The host feeds into the machine's DRAM at their symbols (io "inputs" entries), as S4Runner does."""
    device = {}
    for e in inputs:
        if e["name"] not in feeds:
            raise S4CError(f"missing model input {e['name']!r}")
        if e["symbol"] is not None:
            device[e["symbol"]] = to_device(np.asarray(feeds[e["name"]]), e)
    state.write_inputs(device)


def to_device(a: np.ndarray, e: dict) -> np.ndarray:
    """A host input in its symbol's S4 storage dtype (as S4Runner converts it; range-checked)."""
    if e["dt"] == "f32":
        return a.astype(np.float32)
    a = a.astype(np.int64) if a.dtype.kind == "b" else a
    info = np.iinfo(STORAGE[e["dt"]])
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise S4CError(f"input {e['name']!r}: values outside [{info.min}, {info.max}], the range of the S4 "
                       f"{e['dt']} it is stored as")
    return a.astype(info.dtype)


def chrome_trace(program: Program, name: str = "s4") -> dict:
    """The cycle model's timeline of `program` as a Chrome / Perfetto trace (module docstring)."""
    tracks: dict[tuple[int, str], list] = {}

    def on_event(ev) -> None:
        tracks.setdefault((ev.core, ev.unit), []).append((ev.start, int(ev.cost.cycles), ev.index, ev.ins))

    report = schedule(program, None, on_event)
    hz = float(report.clock_hz)
    events = [{"ph": "M", "name": "process_name", "pid": core, "tid": 0,
               "args": {"name": f"s4c {name} core {core}"}} for core in sorted({k[0] for k in tracks})]
    for core, unit in sorted(tracks, key=lambda k: (k[0], UNITS.index(k[1]))):
        tid = UNITS.index(unit)
        events.append({"ph": "M", "name": "thread_name", "pid": core, "tid": tid, "args": {"name": unit}})
        for start, cycles, index, ins in tracks[(core, unit)]:
            ts = round(start / hz * 1e6, 4)
            event = {"ph": "X", "pid": core, "tid": tid, "ts": ts,
                     "dur": round(round((start + cycles) / hz * 1e6, 4) - ts, 4), **_slice_label(program, ins)}
            event["args"].update(mnemonic=ins.mnemonic, index=index, cycles=cycles)
            gap = report.idle_gaps.get((core, index))
            if gap is not None:         # why the unit sat idle before this sync.wait (s4c/s4/idle.py)
                event["args"].update(idle_before=gap.cycles, idle_producer=gap.producer, idle_causes=gap.parts)
            events.append(event)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"backend": name, "clock_hz": hz, "total_cycles": int(report.total_cycles),
                          "unit_busy": report.unit_busy, "unit_idle": report.unit_idle}}


def _slice_label(program: Program, ins) -> dict:
    """name, cat and the op's args of one instruction's slice: its op's first ONNX node and IR op
    (debug map); sync instructions carry no op and are named by what they do."""
    if ins.op in (isa.SIGNAL, isa.WAIT):
        a = ins.fields()
        is_global, sem = sem_parts(a["sem"])
        what = f"{ins.mnemonic} {'g' if is_global else 'l'}{sem}" + (f">={a['value']}" if ins.op == isa.WAIT else "")
        return {"name": what, "cat": "sync", "args": {"op": "sync", "op_index": None}}
    entry = program.debug.get(ins.dbg)
    if entry is None:
        return {"name": ins.mnemonic, "cat": "s4", "args": {"op": None, "op_index": None}}
    parts = entry.ir_op.split(":", 2)
    return {"name": entry.onnx_node or entry.ir_op, "cat": parts[1] if len(parts) > 1 else "s4",
            "args": {"op": parts[1] if len(parts) > 1 else None,
                     "op_index": int(parts[0]) if parts[0].isdigit() else None, "ir_op": entry.ir_op}}
