"""Graph -> S4 program: the driver (as codegen/c/lower.py is C's).

    lowered = lower(graph, {"cores": 4})
    lowered.program, lowered.io, lowered.stats

1. **Plan** (plan.py): constants evaluated, every op's kernel (base.KERNELS), aliases, SRAM
   residency, DRAM placement.
2. **Emission** (program.py, S4Program): every op's kernel in program order writes the instruction
   stream (stream.py), tiles from each core's SRAM scratch.
3. **Assembly** (here): the constant segment's size fixes the data base (`relocate`), then the
   dependency analysis (deps.py), the list scheduler with the semaphores (schedule.py), the
   symbols of the model's inputs and outputs, and the Program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from s4c.ir import Graph
from s4c.s4 import Program, Symbol

from .base import rup
from .deps import dependencies
from .plan import VBASE
from .program import S4Program
from .schedule import schedule
from .value_map import value_map

SKEW = 1.25               # scheduling rank of (op, block) = op + SKEW * block
_SYM_BAD = re.compile(r"[^A-Za-z0-9_.:/\-\[\]]")


@dataclass
class Lowered:
    program: Program
    io: dict
    stats: dict = field(default_factory=dict)
    op_names: list = field(default_factory=list)
    graph: Graph | None = None
    emitted: S4Program | None = None     # kept for a stream program (batch_stream.py): stream_batches set
    values: dict | None = None           # where each value lives (value_map.py): model.s4.values.json


def lower(graph: Graph, options: dict | None = None, const=None) -> Lowered:
    """`const`: a constants.ConstSegment to place the constants in (shared by the programs of a
    program set, buckets.py: what earlier lowerings placed is reused byte for byte), else a new one."""
    prog = S4Program(graph, options)
    if const is not None:
        const.fresh_keys()
        prog.const = const
    prog.make()
    debug = prog.emit()
    lowered = assemble(prog, debug)
    if prog.opts.get("stream_batches"):
        lowered.emitted = prog
    return lowered


def assemble(prog: S4Program, debug: dict) -> Lowered:
    """The emitted program relocated, its dependencies, scheduled, with symbols: the Program."""
    m = prog.m
    const = prog.const.pieces()
    const_end = rup(len(const), m.align)
    data_base = const_end
    nodes = [(core, relocate(ins, data_base)) for core, ins in prog.em.nodes]
    dram_size = rup(data_base + prog.data_bytes + m.align, m.align)
    preds = dependencies(nodes, m, prog.cores, const_end, dram_size)
    rank = [o + SKEW * b for o, b in zip(prog.em.op_of, prog.em.block_of)]
    prog.sched_debug = {"preds": preds, "nodes": nodes} if prog.opts.get("debug_schedule") else None
    streams, est = schedule(nodes, preds, m, prog.cores, rank=rank, debug=prog.sched_debug)
    symbols, io = io_symbols(prog, data_base, set())
    program = Program(m, streams, const, dram_size, symbols, debug)
    prog.stats.update({
        "instructions": sum(len(s) for s in streams),
        "kernel_instructions": len(nodes),
        "schedule_estimate_cycles": est,
        "const_bytes": len(const),
        "dram_size": dram_size,
        "sram_scratch_high": max((s.high for s in prog.em.scratch), default=0),
    })
    return Lowered(program, io, prog.stats, prog.op_names, prog.g, values=value_map(prog, data_base))


def io_symbols(prog: S4Program, data_base: int, names: set, suffix: str = "") -> tuple[list, dict]:
    """(symbols, io) of the model's inputs and outputs with the data at `data_base`: io lists each
    input / output (name, symbol, IR and S4 dtype, shape) as model.s4.json stores it. Symbol names
    are unique within `names` (+ `suffix`: one batch of a stream program, batch_stream.py)."""
    symbols = []
    io = {"inputs": [], "outputs": []}
    for info in (prog.info(v) for v in prog.g.inputs):
        sym = None
        if info.n:
            sym = unique_symbol(info.name + suffix, names)
            symbols.append(Symbol(sym, "input", info.dram - VBASE + data_base, info.dt, info.shape))
        io["inputs"].append({"name": info.name, "symbol": sym, "irdt": info.irdt, "dt": info.dt,
                             "shape": list(info.shape)})
    for entry in prog.io_out:
        info = entry["info"]
        sym = None
        if info.n:
            sym = unique_symbol(info.name + suffix, names)
            symbols.append(Symbol(sym, "output", entry["addr"] - VBASE + data_base, info.dt, info.shape))
        io["outputs"].append({"name": entry["value"].name, "symbol": sym, "irdt": info.irdt, "dt": info.dt,
                              "shape": list(info.shape)})
    return symbols, io


def relocate(ins, data_base: int, old_base: int = VBASE):
    """Instructions address non-constant DRAM as VBASE + offset until the constant segment's size is
    known; this rebases them to data_base + offset (every DRAM operand >= old_base: the data)."""
    spec = ins.spec
    args = list(ins.args)
    changed = False
    for k, f in enumerate(spec.fields):
        if f.kind == "dram" and args[k] >= old_base:
            args[k] = args[k] - old_base + data_base
            changed = True
    if not changed:
        return ins
    return type(ins)(ins.op, tuple(args), ins.dbg)


def unique_symbol(name: str, taken: set) -> str:
    base = _SYM_BAD.sub("_", name)[:200] or "v"
    if not re.match(r"[A-Za-z_]", base[0]):
        base = "v_" + base
    sym, k = base, 1
    while sym in taken:
        sym = f"{base}.{k}"
        k += 1
    taken.add(sym)
    return sym


__all__ = ["lower", "Lowered", "assemble", "relocate", "unique_symbol"]
