"""Where every IR value lives in the built S4 program: model.s4.values.json, what `s4c check` reads
to snapshot the real program's op results (codegen/s4/snapshots.py) instead of a debug lowering.

    vmap = value_map(prog, data_base)     # prog: the emitted S4Program; data_base: relocated VBASE

One entry per op result and per model input, in program order:

    name, op      the value and the index of its producing op in the lowered graph (the `dbg` of
                  that op's instructions; -1 for a model input, written by the host before the run)
    writer_op     present when another op's instructions write the value: an int8 graph's QuantizeInt8
                  requantised in its GEMM's epilogue (quant.py's fused_quant)
    irdt, dt      IR dtype and the S4 storage dtype its bytes have
    shape         the IR shape; the bytes are its [R, C] view, C = the last dim
    homes         where those rows are stored, each piece rows [row0, row0 + rows) of the [R, C] view:
                  {"core": null | c, "space": "dram" | "sram", "addr", "rows", "row_bytes", "pitch",
                  "row0"}; a DRAM home is one piece (any core may write it), an SRAM-resident value one
                  piece per (core, row block) at the offset the residency plan gave that block
    alias_of      a Reshape-like alias: the bytes of that (root) value, no instructions of its own
    why           present when the value has no home to read (never stored, empty)

A bucketed build (buckets.py) writes {"version", "buckets": {bucket name: map}}, each program's
map with its data moved as the program's was.

Only the placement is recorded. Which instructions complete a value is read from the program
itself when it is checked (its producer's instructions whose write accesses fall in a home), so
the map cannot disagree with the instruction stream's scheduling.
"""

from __future__ import annotations

from .base import SIZE, rup
from .plan import VBASE

VERSION = 1


def value_map(prog, data_base: int) -> dict:
    """The value map of an emitted S4Program (module docstring); `data_base` relocates VBASE."""
    entries = [_entry(prog, v, -1, data_base) for v in prog.g.inputs]
    index = {id(op): i for i, op in enumerate(prog.g.ops)}
    for i, op in enumerate(prog.g.ops):
        for v in op.outputs:
            if v is None:
                continue
            entry = _entry(prog, v, i, data_base)
            if op.op == "QuantizeInt8" and id(op) in prog.fused_quant:     # emitted by its GEMM (quant.py)
                entry["writer_op"] = index[id(prog.fused_quant[id(op)])]
            entries.append(entry)
    return {"version": VERSION, "cores": prog.cores, "values": entries}


def _entry(prog, v, op_index: int, data_base: int) -> dict:
    me, root = prog.info(v), prog.root(v)
    entry = {"name": v.name, "op": op_index, "irdt": me.irdt, "dt": me.dt, "shape": list(me.shape), "homes": []}
    row_bytes = me.C * SIZE[me.dt]
    if me.n == 0:
        entry["why"] = "empty"
    elif root is not me:
        entry["alias_of"] = root.name
    elif me.elided:
        entry["why"] = "never stored: requantised inside its GEMM's epilogue"
    elif me.dram is not None:
        addr = me.dram - VBASE + data_base if me.dram >= VBASE else me.dram
        entry["homes"].append({"core": None, "space": "dram", "addr": addr, "rows": me.R, "row_bytes": row_bytes,
                               "pitch": row_bytes, "row0": 0})
    elif me.resident:
        pitch = rup(row_bytes)          # as S4Program.resident_rows lays the rows out
        for core in range(prog.cores):
            for b, (b0, b1) in enumerate(prog.blocks(me.R, core)):
                entry["homes"].append({"core": core, "space": "sram", "addr": prog.sram_base + me.sram_off[b],
                                       "rows": b1 - b0, "row_bytes": row_bytes, "pitch": pitch, "row0": b0})
    else:
        entry["why"] = "no DRAM home and not SRAM-resident: computed in scratch tiles only"
    return entry


def moved(vmap: dict, old: int, base: int) -> dict:
    """`vmap` of a program whose data (DRAM from `old` on) moved to `base` (buckets.move_data)."""
    out = dict(vmap, values=[])
    for e in vmap["values"]:
        homes = [dict(h, addr=h["addr"] - old + base) if h["space"] == "dram" and h["addr"] >= old else h
                 for h in e["homes"]]
        out["values"].append(dict(e, homes=homes))
    return out


__all__ = ["VERSION", "moved", "value_map"]
