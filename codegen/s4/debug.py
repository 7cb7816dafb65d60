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

`chrome_trace(program)` runs the cycle model (no numerics) and writes one complete event per run
of consecutive instructions of one op on one unit: pid = core, tid = unit (dma, spu, vpu),
microseconds at the machine's clock, named by the op's first ONNX node.
"""

from __future__ import annotations

import numpy as np

from s4c.errors import S4CError
from s4c.ir import Graph, numpy_dtype
from s4c.s4 import Program
from s4c.s4 import dtypes as D
from s4c.s4.cycles import schedule
from s4c.s4.interp import DEFAULT_MAX_DRAM, _Machine

from .base import STORAGE
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
    const = None
    if model_s4 is not None:
        with open(model_s4, "rb") as f:
            const = Program.from_bytes(f.read()).const_bytes()
    prog, program = debug_program(graph, options)
    info = {"const_bytes": len(program.const), "const_bytes_differing": 0}
    if const is not None:
        if len(const) != len(program.const):
            debug_program(graph, options, const)     # raises the size mismatch
        info["const_bytes_differing"] = const_diff(const, program.const_bytes())
        program = Program(program.machine, program.cores, const, program.dram_size, program.symbols, program.debug)
    program.validate()
    state = _Machine(program, True, None, DEFAULT_MAX_DRAM)
    device = {}
    for e in prog.io["inputs"]:
        if e["name"] not in feeds:
            raise S4CError(f"missing model input {e['name']!r}")
        if e["symbol"] is not None:
            device[e["symbol"]] = to_device(np.asarray(feeds[e["name"]]), e)
    state.write_inputs(device)
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
    spans: dict[tuple[int, str], list] = {}
    order: list[tuple[int, str]] = []

    def on_event(ev) -> None:
        key = (ev.core, ev.unit)
        end = ev.start + int(ev.cost.cycles)
        cur = spans.get(key)
        if cur is None:
            spans[key] = cur = []
            order.append(key)
        if cur and cur[-1][2] == ev.ins.dbg and ev.start <= cur[-1][1]:
            cur[-1][1] = max(cur[-1][1], end)
            cur[-1][3] += 1
        else:
            cur.append([ev.start, end, ev.ins.dbg, 1])

    report = schedule(program, None, on_event)
    hz = float(report.clock_hz)
    events = [{"ph": "M", "name": "process_name", "pid": core, "tid": 0,
               "args": {"name": f"s4c {name} core {core}"}} for core in sorted({k[0] for k in order})]
    units = {"dma": 0, "spu": 1, "vpu": 2}
    for core, unit in sorted(order, key=lambda k: (k[0], units.get(k[1], 9))):
        tid = units.get(unit, 9)
        events.append({"ph": "M", "name": "thread_name", "pid": core, "tid": tid, "args": {"name": unit}})
        for start, end, dbg, count in spans[(core, unit)]:
            entry = program.debug.get(dbg)
            label = entry.ir_op if entry else "(no debug info)"
            parts = label.split(":", 2)
            op_index = int(parts[0]) if parts[0].isdigit() else None
            events.append({"name": entry.onnx_node if entry else label,
                           "cat": parts[1] if len(parts) > 1 else "s4", "ph": "X",
                           "ts": round(start / hz * 1e6, 4), "dur": round(end / hz * 1e6, 4) - round(start / hz * 1e6, 4),
                           "pid": core, "tid": tid,
                           "args": {"op": parts[1] if len(parts) > 1 else None, "op_index": op_index, "ir_op": label, "instructions": count, "unit": unit,
                                    "cycles": end - start}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"backend": name, "clock_hz": hz, "total_cycles": int(report.total_cycles)}}
