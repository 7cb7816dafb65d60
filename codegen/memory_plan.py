"""Static memory planning: place buffers in one arena by liveness, reusing space between buffers
whose lifetimes do not overlap.

Backends describe what they need as `Interval`s (a key, a byte size, and the first and last step
that touch the buffer, both inclusive) and get back offsets into one arena:

    plan = plan_arena([Interval("a", 4096, 0, 3), Interval("b", 1024, 2, 5), ...], alignment=64)
    plan.offsets["a"], plan.peak, plan.total

Two buffers share bytes only when their step ranges are disjoint, so a step may read its inputs
while it writes its outputs (no in-place reuse is assumed). The placement is "greedy by size"
(the largest buffer first, each at the lowest aligned offset that fits beside the buffers already
placed whose lifetimes overlap it), the scheme TFLite Micro and onnxruntime use; it is
deterministic: ties keep the order the intervals were given in.

`graph_intervals(graph, ...)` derives the intervals of an IR graph's op results (inputs and
constants live elsewhere; graph outputs stay live to the end; values that alias another value, e.g.
a Reshape done in place, share their root's interval), for backends that plan at the IR level.

`peak` is the arena size; `total` is what the same buffers would take without reuse (each aligned),
the figure reports compare it against. `lower_bound` is the largest sum of sizes live at one step:
no placement can beat it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable


@dataclass(frozen=True)
class Interval:
    key: Hashable
    size: int
    start: int
    end: int

    def __post_init__(self):
        if self.size < 0:
            raise ValueError(f"buffer {self.key!r}: negative size {self.size}")
        if self.end < self.start:
            raise ValueError(f"buffer {self.key!r}: lifetime ends ({self.end}) before it starts ({self.start})")

    def overlaps(self, other: "Interval") -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass
class ArenaPlan:
    offsets: dict = field(default_factory=dict)
    peak: int = 0
    total: int = 0
    lower_bound: int = 0
    alignment: int = 64
    intervals: list[Interval] = field(default_factory=list)

    @property
    def saved(self) -> float:
        """Fraction of the no-reuse size that reuse saves (0 when there is nothing to place)."""
        return 1.0 - self.peak / self.total if self.total else 0.0

    def summary(self) -> str:
        return (f"arena {self.peak} bytes for {len(self.intervals)} buffers "
                f"(without reuse {self.total} bytes, lower bound {self.lower_bound})")

    def check(self) -> None:
        """Raise AssertionError if two buffers with overlapping lifetimes share a byte."""
        placed = sorted(self.intervals, key=lambda iv: self.offsets[iv.key])
        for i, a in enumerate(placed):
            oa = self.offsets[a.key]
            if oa % self.alignment or oa + a.size > self.peak:
                raise AssertionError(f"buffer {a.key!r} at {oa} (+{a.size}) is misaligned or outside the arena")
            for b in placed[i + 1:]:
                ob = self.offsets[b.key]
                if ob >= oa + a.size:
                    break
                if a.size and b.size and a.overlaps(b):
                    raise AssertionError(f"buffers {a.key!r} and {b.key!r} overlap in time and memory")


def align_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def plan_arena(intervals: Iterable[Interval], alignment: int = 64) -> ArenaPlan:
    """Offsets for `intervals` in one arena (greedy by size, first fit by offset)."""
    if alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, not {alignment}")
    ivs = list(intervals)
    keys = [iv.key for iv in ivs]
    if len(set(keys)) != len(keys):
        raise ValueError("buffer keys must be unique")
    order = sorted(range(len(ivs)), key=lambda i: (-ivs[i].size, ivs[i].start, i))
    placed: list[tuple[int, Interval]] = []  # (offset, interval), kept sorted by offset
    offsets: dict = {}
    peak = 0
    for i in order:
        iv = ivs[i]
        size = align_up(iv.size, alignment)
        if size == 0:
            offsets[iv.key] = 0
            continue
        offset = 0
        for off, other in placed:  # sorted by offset: slide past every live neighbour in the way
            if not iv.overlaps(other):
                continue
            if off >= offset + size:
                break
            offset = max(offset, align_up(off + other.size, alignment))
        offsets[iv.key] = offset
        placed.append((offset, iv))
        placed.sort(key=lambda p: p[0])
        peak = max(peak, offset + size)
    total = sum(align_up(iv.size, alignment) for iv in ivs)
    return ArenaPlan(offsets, peak, total, _lower_bound(ivs, alignment), alignment, ivs)


def _lower_bound(ivs: list[Interval], alignment: int) -> int:
    events: dict[int, int] = {}
    for iv in ivs:
        size = align_up(iv.size, alignment)
        events[iv.start] = events.get(iv.start, 0) + size
        events[iv.end + 1] = events.get(iv.end + 1, 0) - size
    best = live = 0
    for step in sorted(events):
        live += events[step]
        best = max(best, live)
    return best


def graph_intervals(graph, size_of: Callable | None = None, aliases: dict | None = None,
                    include: Callable | None = None) -> list[Interval]:
    """Liveness of an IR graph's op results as intervals over op indices.

    `size_of(value)` gives a value's bytes (default: its type's nbytes); `aliases` maps id(value)
    -> the value whose storage it shares (its interval is merged into the root's); `include(value)`
    filters (default: every op result). Graph outputs live to the last op. Keys are the values' ids."""
    size_of = size_of or (lambda v: v.type.nbytes)
    aliases = aliases or {}

    def root(v):
        seen = set()
        while id(v) in aliases and id(v) not in seen:
            seen.add(id(v))
            v = aliases[id(v)]
        return v

    start: dict[int, int] = {}
    end: dict[int, int] = {}
    values: dict[int, object] = {}
    last = max(len(graph.ops) - 1, 0)
    for i, op in enumerate(graph.ops):
        for v in op.outputs:
            r = root(v)
            if r.producer is None or (include is not None and not include(r)):
                continue
            values.setdefault(id(r), r)
            start[id(r)] = min(start.get(id(r), i), i)
            end[id(r)] = max(end.get(id(r), i), i)
        for v in op.inputs:
            r = root(v)
            if id(r) in start:
                end[id(r)] = max(end[id(r)], i)
    for v in graph.outputs:
        r = root(v)
        if id(r) in start:
            end[id(r)] = last
    return [Interval(k, int(size_of(values[k])), start[k], end[k]) for k in start]


def plan_graph(graph, size_of: Callable | None = None, aliases: dict | None = None,
               include: Callable | None = None, alignment: int = 64) -> ArenaPlan:
    """`plan_arena` over `graph_intervals(graph, ...)`: offsets keyed by id(root value)."""
    return plan_arena(graph_intervals(graph, size_of, aliases, include), alignment)


__all__ = ["Interval", "ArenaPlan", "plan_arena", "graph_intervals", "plan_graph", "align_up"]
