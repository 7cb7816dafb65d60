"""Dependencies between emitted instructions: every read-after-write, write-after-read and
write-after-write on the same memory, at the 64-byte block granularity the interpreter's race
check uses (exact in SRAM, where rows start aligned; conservative in DRAM).

    preds = dependencies(nodes, machine, cores, const_end, dram_size)   # preds[i]: node ids before i

The regions come from the opcode table's own `access` functions, so nothing here restates an
instruction's operands. Reads of the constant segment never conflict (it is read-only) and are
not tracked. Per block the tracker keeps the last writer and *every* reader since that write (a
"reader group", shared by all blocks read by the same instructions): the scheduler reorders a
unit's queue (block 0 of the next op may run before block 1 of this one), so the last reader in
program order need not be the last to run, and a write must wait for all of them.
"""

from __future__ import annotations

import numpy as np

from s4c.s4.program import region_blocks



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
    """One memory's tracker: per block its last writer (-1: none) and its reader group (-1: no
    reads since that write). Groups are tuples of node ids in `groups`, interned by extension:
    a read turns group g into the group g + (reader,), made once per (g, reader)."""

    def __init__(self, n_blocks: int, first: int = 0):
        self.first = first
        self.w = np.full(n_blocks, -1, dtype=np.int64)
        self.rg = np.full(n_blocks, -1, dtype=np.int64)
        self.groups: list[tuple] = []
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

    def read(self, blocks, node: int) -> set[int]:
        """Record `node` reading `blocks`; its dependencies: the blocks' last writers."""
        deps = _ids(self.w[blocks])
        old = self.rg[blocks]
        present = _ids(old) | ({-1} if (old == -1).any() else set())
        for g in present:
            members = self.groups[g] if g >= 0 else ()
            if members and members[-1] == node:       # read twice by one instruction
                continue
            self.groups.append(members + (node,))
            new = len(self.groups) - 1
            if len(present) == 1:
                self.rg[blocks] = new
            elif isinstance(blocks, slice):
                view = self.rg[blocks]
                view[old == g] = new
            else:
                self.rg[blocks[old == g]] = new
        return deps

    def write(self, blocks, node: int) -> set[int]:
        """Record `node` writing `blocks`; its dependencies: the last writers and every reader
        since them."""
        deps = _ids(self.w[blocks])
        for g in _ids(self.rg[blocks]):
            deps.update(self.groups[g])
        self.w[blocks] = node
        self.rg[blocks] = -1
        return deps


def dependencies(nodes, machine, cores: int, const_end: int, dram_size: int) -> list[list[int]]:
    align = machine.align
    first = const_end // align
    dram = _Mem(max(-(-dram_size // align) - first, 1), first)
    srams = [_Mem(machine.sram_bytes // align) for _ in range(cores)]
    preds: list[list[int]] = []
    for i, (core, ins) in enumerate(nodes):
        spec = ins.spec
        deps: set[int] = set()
        accesses = spec.access(ins.fields())
        # reads first (a region may be read and written in place: the write wins)
        for acc in [a for a in accesses if a.mode == "r"] + [a for a in accesses if a.mode != "r"]:
            if acc.space == "dram":
                if acc.mode == "r" and acc.base + (acc.rows - 1) * acc.pitch + acc.row_bytes <= const_end:
                    continue
                mem = dram
            else:
                mem = srams[core]
            blocks = mem.blocks(acc, align)
            deps |= mem.read(blocks, i) if acc.mode == "r" else mem.write(blocks, i)
        deps.discard(i)
        preds.append(sorted(deps))
    return preds


__all__ = ["dependencies"]
