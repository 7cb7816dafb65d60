"""Shared pieces of the per-unit op modules (ops_dma / ops_spu / ops_vpu / ops_sync).

Every opcode is described by four functions that the table in isa.py points to, kept next to
each other in its unit's module:

    check(a, m)   -> error text or None      static operand rules (a = {field: value}, m = Machine)
    access(a)     -> [Access, ...]           every memory region the instruction reads / writes
    cost(a, m)    -> Cost(cycles, bytes, work)   the cycle model (docs/isa.md gives the formula)
    run(ctx, a)   -> None                    the semantics, vectorised with numpy

`ctx` is the interpreter's execution context: ctx.view(space, base, rows, row_bytes, pitch)
gives a bounds-checked strided uint8 view of "dram" or this core's "sram"; ctx.fail(msg) raises
S4ProgramError naming the core / instruction / opcode.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from s4c.s4 import dtypes as D


class Access(NamedTuple):
    """A 2-D byte region: `rows` rows of `row_bytes` bytes, row r at base + r*pitch."""

    mode: str        # "r" or "w"
    space: str       # "dram" or "sram" (the issuing core's SRAM)
    name: str        # the operand field it comes from
    base: int
    rows: int
    row_bytes: int
    pitch: int

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    @property
    def end(self) -> int:
        """One past the last byte touched."""
        return self.base + (self.rows - 1) * self.pitch + self.row_bytes


class Cost(NamedTuple):
    cycles: int      # cycles the instruction occupies its unit
    bytes: int       # bytes moved (DMA, in the timing dtype) or SRAM bytes read + written (SPU/VPU)
    work: int        # MACs (SPU), element-passes (VPU), 0 otherwise


def cdiv(a: int, b: float) -> int:
    """ceil(a / b) for a >= 0, b > 0 (exact for integers)."""
    if isinstance(b, int):
        return -(-a // b)
    return int(math.ceil(a / b))


def tdt(a) -> int:
    """The timing dtype: the `tdt` field, or `dt` when it is 0 ("same")."""
    return a["tdt"] or a["dt"]


def tile(mode, space, name, base, rows, cols, pitch, dt) -> Access:
    return Access(mode, space, name, base, rows, cols * D.SIZE[dt], pitch)


def vector(mode, space, name, base, n, dt) -> Access:
    """A packed 1-D vector of n elements (one row, pitch irrelevant)."""
    return Access(mode, space, name, base, 1, n * D.SIZE[dt], 0)


def sram_bytes(accesses) -> int:
    return sum(x.nbytes for x in accesses)


# -- memory helpers used by run() -------------------------------------------------------------

def load(ctx, space, base, rows, cols, pitch, dt) -> np.ndarray:
    """A copy of a [rows, cols] tile in its storage dtype."""
    view = ctx.view(space, base, rows, cols * D.SIZE[dt], pitch)
    return np.ascontiguousarray(view).view(D.STORAGE[dt]).reshape(rows, cols)


def load64(ctx, space, base, rows, cols, pitch, dt) -> np.ndarray:
    return D.to_f64(load(ctx, space, base, rows, cols, pitch, dt), dt)


def load_vec(ctx, space, base, n, dt) -> np.ndarray:
    return load(ctx, space, base, 1, n, 0, dt).reshape(n)


def store(ctx, space, base, pitch, dt, values: np.ndarray) -> None:
    """Write a [rows, cols] array already in the storage dtype of `dt`."""
    rows, cols = values.shape
    view = ctx.view(space, base, rows, cols * D.SIZE[dt], pitch)
    view[...] = np.ascontiguousarray(values, dtype=D.STORAGE[dt]).view(np.uint8).reshape(rows, -1)


def store64(ctx, space, base, pitch, dt, values: np.ndarray) -> None:
    store(ctx, space, base, pitch, dt, D.from_f64(values, dt))


def dt_in(a, key, allowed, what) -> str | None:
    if a[key] not in allowed:
        names = "/".join(D.name(x) for x in allowed)
        return f"{key}={D.NAMES.get(a[key], a[key])} not supported by {what} (allowed: {names})"
    return None


def positive(a, *keys) -> str | None:
    for key in keys:
        if a[key] < 1:
            return f"{key} must be >= 1"
    return None


def first_error(*errors) -> str | None:
    for err in errors:
        if err:
            return err
    return None
