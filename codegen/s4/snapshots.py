"""Snapshots of the built S4 program's op results (`s4c check`): model.s4 itself runs in the reference
interpreter, and every value is read at the op boundary where the program completes it.

    values, missing = program_values(program, value_map, io, feeds)     # program: model.s4's (a bucket's)
    # values: {name: array in the IR dtype}; missing: {name: why the built program never holds it whole}

Where a value lives comes from model.s4.values.json (value_map.py: a DRAM home, or SRAM-resident
row blocks per core). Which instructions write it is read from the program: those of its producing
op (debug index = the op; writer_op when another op emits it) whose write accesses (the opcode
table's, as the race check uses) fall in one of its homes. Right after each such instruction executes, in the interpreter's execution
order, the bytes it wrote inside the home are copied into a shadow of the value, before anything
later can reuse the memory: a race-free program orders any later writer of those bytes after
this one. A value is observed when its producer's writes covered every byte of its [R, C] rows;
the shadow then holds each byte's last write by that op (the op's result), converted from the
S4 storage dtype to the IR's and reassembled across cores.

Not observable (listed in `missing`): values never stored (an int8 graph's requantised GEMM
result), values computed in scratch tiles only, aliases of those, and values whose producer did
not write every byte of their home (reported with the covered fraction).
"""

from __future__ import annotations

import numpy as np

from s4c.ir import numpy_dtype
from s4c.s4 import Program, isa
from s4c.s4 import dtypes as D
from s4c.s4.cycles import schedule
from s4c.s4.interp import DEFAULT_MAX_DRAM, _Machine
from s4c.s4.ops_common import Access

from .debug import write_feeds


class _Shadow:
    """The [R, row_bytes] storage bytes of one value, filled as its producer writes its homes."""

    def __init__(self, entry: dict):
        self.entry = entry
        shape = entry["shape"]
        self.R = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        self.row_bytes = entry["homes"][0]["row_bytes"]
        self.buf = np.zeros(self.R * self.row_bytes, np.uint8)
        self.covered = np.zeros(self.R * self.row_bytes, bool)

    def take(self, mem: np.ndarray, acc, home: dict) -> None:
        """Copy the bytes access `acc` just wrote that fall in `home` from `mem`."""
        addrs = _addresses(acc)
        off = addrs - home["addr"]
        row, col = np.divmod(off, home["pitch"])
        keep = (off >= 0) & (row < home["rows"]) & (col < home["row_bytes"])
        dst = (home["row0"] + row[keep]) * self.row_bytes + col[keep]
        self.buf[dst] = mem[addrs[keep]]
        self.covered[dst] = True

    def value(self) -> np.ndarray:
        e = self.entry
        dt = D.CODES[e["dt"]]
        a = np.asarray(D.to_numpy(self.buf.view(D.STORAGE[dt]), dt)).reshape(e["shape"])
        return (a != 0) if e["irdt"] == "bool" else a.astype(numpy_dtype(e["irdt"]))


def _addresses(acc) -> np.ndarray:
    """Every byte address an access touches."""
    cols = np.arange(acc.row_bytes, dtype=np.int64)
    if acc.rows == 1 or acc.pitch == acc.row_bytes:
        return acc.base + np.arange(acc.rows * acc.row_bytes, dtype=np.int64)
    return (acc.base + np.arange(acc.rows, dtype=np.int64)[:, None] * acc.pitch + cols).reshape(-1)


def _overlaps(acc, home: dict) -> bool:
    home_end = home["addr"] + (home["rows"] - 1) * home["pitch"] + home["row_bytes"]
    return acc.base < home_end and home["addr"] < acc.end


def _writers(program: Program, by_op: dict) -> dict:
    """(core, stream index) -> [(access, shadow, home)]: the producer's writes into its values' homes."""
    hooks: dict = {}
    for core, stream in enumerate(program.cores):
        for index, ins in enumerate(stream):
            targets = by_op.get(ins.dbg)
            if not targets or ins.op == isa.END:
                continue
            spec = isa.BY_CODE[ins.op]
            for acc in spec.access(ins.fields()):
                if acc.mode != "w":
                    continue
                for shadow, home in targets:
                    if home["space"] == acc.space and home["core"] in (None, core) and _overlaps(acc, home):
                        hooks.setdefault((core, index), []).append((acc, shadow, home))
    return hooks


def program_values(program: Program, vmap: dict, io: dict, feeds: dict) -> tuple[dict, dict]:
    """({name: array} observed in the built program, {name: why not observable}); see the module
    docstring. `program`: model.s4's; `vmap`: its model.s4.values.json map; `io`: its model.s4.json io."""
    program.validate()
    state = _Machine(program, True, None, DEFAULT_MAX_DRAM)
    write_feeds(state, io["inputs"], feeds)
    shadows: dict[str, _Shadow] = {}
    by_op: dict[int, list] = {}
    missing: dict[str, str] = {}
    for e in vmap["values"]:
        if not e["homes"]:
            if "alias_of" not in e:
                missing[e["name"]] = e.get("why", "no home")
            continue
        shadow = shadows[e["name"]] = _Shadow(e)
        for home in e["homes"]:
            if e["op"] < 0:         # a model input: as the host wrote it
                mem = state.dram if home["space"] == "dram" else state.srams[home["core"]]
                shadow.take(mem, _whole(home), home)
            else:
                by_op.setdefault(e.get("writer_op", e["op"]), []).append((shadow, home))
    hooks = _writers(program, by_op)

    def on_event(ev) -> None:
        state.on_event(ev)
        for acc, shadow, home in hooks.get((ev.core, ev.index), ()):
            shadow.take(state.dram if acc.space == "dram" else state.srams[ev.core], acc, home)

    schedule(program, None, on_event)
    values: dict[str, np.ndarray] = {}
    for name, shadow in shadows.items():
        if shadow.covered.all():
            values[name] = shadow.value()
        else:
            missing[name] = (f"its op wrote {shadow.covered.mean():.0%} of its home's bytes in the built program "
                             f"(the rest never exists there whole)")
    for e in vmap["values"]:        # aliases: the root's bytes in the alias's shape
        root = e.get("alias_of")
        if root is None:
            continue
        if root in values:
            values[e["name"]] = values[root].reshape(e["shape"]).astype(numpy_dtype(e["irdt"]))
        else:
            missing[e["name"]] = f"alias of {root!r}: " + missing.get(root, "not observable")
    return values, missing


def _whole(home: dict):
    """An access covering a whole home (a model input: written by the host, not an instruction)."""
    return Access("w", home["space"], "host", home["addr"], home["rows"], home["row_bytes"], home["pitch"])


__all__ = ["program_values"]
