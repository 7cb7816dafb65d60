"""Dependencies between emitted instructions: every read-after-write, write-after-read and
write-after-write on the same memory, at the 64-byte block granularity the interpreter's race
check uses (exact in SRAM, where rows start aligned; conservative in DRAM).

    preds = dependencies(nodes, machine, cores, const_end, dram_size)   # preds[i]: node ids before i

The regions come from the opcode table's own `access` functions, so nothing here restates an
instruction's operands. Reads of the constant segment never conflict (it is read-only) and are
not tracked. Per block the tracker keeps the last writer and the last reader of each unit slot
(3 per core in SRAM, one DMA engine per core in DRAM); a write clears the readers it ordered.
"""

from __future__ import annotations

import numpy as np

from s4c.s4.program import region_blocks

from .base import UNIT_INDEX


def _ids(arr: np.ndarray) -> set[int]:
    """The node ids (>= 0; -1 = none) in `arr`, 1-D or one row per unit slot. Regions are written
    in runs, so only each row's first value and the values that differ from their left neighbour
    need to go through Python."""
    if arr.size < 256:
        ids = set(arr.ravel().tolist())
    else:
        rest = arr[..., 1:]
        ids = set(rest[rest != arr[..., :-1]].tolist())
        ids.update(arr[..., 0].ravel().tolist())
    ids.discard(-1)
    return ids


class _Mem:
    def __init__(self, n_blocks: int, slots: int, first: int = 0):
        self.first = first
        # row 0: each block's last writer; rows 1..: its last reader per unit slot (-1: none)
        self.wr = np.full((1 + slots, n_blocks), -1, dtype=np.int64)
        self.w, self.r = self.wr[0], self.wr[1:]
        self.cache: dict = {}

    def blocks(self, acc, align):
        key = (acc.base, acc.rows, acc.row_bytes, acc.pitch)
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = self._blocks(acc, align)
        return hit

    def _blocks(self, acc, align):
        b = region_blocks(acc, align)
        if isinstance(b, slice):
            return slice(max(b.start - self.first, 0), max(b.stop - self.first, 0))
        if self.first == 0:
            return b
        b = b - self.first
        return b[b >= 0]


def dependencies(nodes, machine, cores: int, const_end: int, dram_size: int) -> list[list[int]]:
    align = machine.align
    first = const_end // align
    dram = _Mem(max(-(-dram_size // align) - first, 1), cores, first)
    srams = [_Mem(machine.sram_bytes // align, 3) for _ in range(cores)]
    preds: list[list[int]] = []
    for i, (core, ins) in enumerate(nodes):
        spec = ins.spec
        unit = ins.unit()
        deps: set[int] = set()
        accesses = spec.access(ins.fields())
        # reads first (a region may be read and written in place: the write wins)
        for acc in [a for a in accesses if a.mode == "r"] + [a for a in accesses if a.mode != "r"]:
            if acc.space == "dram":
                if acc.mode == "r" and acc.base + (acc.rows - 1) * acc.pitch + acc.row_bytes <= const_end:
                    continue
                mem, slot = dram, core
            else:
                mem, slot = srams[core], UNIT_INDEX[unit]
            blocks = mem.blocks(acc, align)
            if acc.mode == "r":
                deps |= _ids(mem.w[blocks])
                mem.r[slot, blocks] = i
            else:
                deps |= _ids(mem.wr[:, blocks])
                mem.w[blocks] = i
                mem.r[:, blocks] = -1
        deps.discard(i)
        preds.append(sorted(deps))
    return preds


def unit_of(ins) -> str:
    return ins.unit()


__all__ = ["dependencies"]
