"""DMA engine opcodes: 2-D strided DRAM<->SRAM copies and the row gather (embeddings).

DMA moves bytes; `dt` names the element type (row bytes must be a whole number of elements) and
`tdt` the type the cycle model charges for: a row of `bytes` is timed as bytes/size(dt)*size(tdt).
"""

from __future__ import annotations

import numpy as np

from s4c.s4 import dtypes as D
from s4c.s4.ops_common import Access, Cost, cdiv, first_error, positive, tdt, vector


def _check_common(a, m):
    err = positive(a, "rows", "bytes")
    if err:
        return err
    if a["bytes"] % D.SIZE[a["dt"]]:
        return f"bytes={a['bytes']} is not a whole number of {D.name(a['dt'])} elements"
    return None


def _timed_row_bytes(a) -> int:
    return a["bytes"] // D.SIZE[a["dt"]] * D.SIZE[tdt(a)]


def transfer_cycles(m, rows: int, row_bytes: int, gather: bool = False) -> int:
    """overhead + latency [+ rows*gather_row_cycles] + ceil(rows*roundup(row_bytes, burst) / bytes_per_cycle)."""
    burst = m["dma.burst_bytes"]
    moved = rows * cdiv(row_bytes, burst) * burst
    cycles = m["dma.overhead"] + m["dma.latency"] + cdiv(moved, m["dma.bytes_per_cycle"])
    if gather:
        cycles += rows * m["dma.gather_row_cycles"]
    return cycles


# -- dma.ld ---------------------------------------------------------------------------------------
def ld_check(a, m):
    return _check_common(a, m)


def ld_access(a):
    return [Access("w", "sram", "dst", a["dst"], a["rows"], a["bytes"], a["dpitch"]),
            Access("r", "dram", "src", a["src"], a["rows"], a["bytes"], a["spitch"])]


def ld_cost(a, m):
    rb = _timed_row_bytes(a)
    return Cost(transfer_cycles(m, a["rows"], rb), a["rows"] * rb, 0)


def ld_run(ctx, a):
    src = ctx.view("dram", a["src"], a["rows"], a["bytes"], a["spitch"])
    ctx.view("sram", a["dst"], a["rows"], a["bytes"], a["dpitch"])[...] = src


# -- dma.st ---------------------------------------------------------------------------------------
def st_check(a, m):
    return _check_common(a, m)


def st_access(a):
    return [Access("w", "dram", "dst", a["dst"], a["rows"], a["bytes"], a["dpitch"]),
            Access("r", "sram", "src", a["src"], a["rows"], a["bytes"], a["spitch"])]


def st_cost(a, m):
    return ld_cost(a, m)


def st_run(ctx, a):
    src = ctx.view("sram", a["src"], a["rows"], a["bytes"], a["spitch"])
    ctx.view("dram", a["dst"], a["rows"], a["bytes"], a["dpitch"])[...] = src


# -- dma.gather -----------------------------------------------------------------------------------
def gather_check(a, m):
    return first_error(_check_common(a, m), positive(a, "trows"))


def gather_access(a):
    return [Access("w", "sram", "dst", a["dst"], a["rows"], a["bytes"], a["dpitch"]),
            vector("r", "sram", "idx", a["idx"], a["rows"], D.I32),
            Access("r", "dram", "table", a["table"], a["trows"], a["bytes"], a["tpitch"])]


def gather_cost(a, m):
    rb = _timed_row_bytes(a)
    return Cost(transfer_cycles(m, a["rows"], rb, gather=True), a["rows"] * rb, 0)


def gather_run(ctx, a):
    raw = ctx.view("sram", a["idx"], 1, a["rows"] * 4, 0)
    idx = np.ascontiguousarray(raw).view(np.int32).reshape(-1)
    bad = (idx < 0) | (idx >= a["trows"])
    if bad.any():
        pos = int(np.argmax(bad))
        ctx.fail(f"gather index {int(idx[pos])} (row {pos}) out of range [0, {a['trows']})")
    table = ctx.view("dram", a["table"], a["trows"], a["bytes"], a["tpitch"])
    ctx.view("sram", a["dst"], a["rows"], a["bytes"], a["dpitch"])[...] = table[idx]
