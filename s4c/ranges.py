"""Integer value ranges: which integer and bool values of a graph are provably small.

A forward interval analysis over the ops, in graph order. A value's range is known when it is a
constant, a bool, a comparison, or computed from values with known ranges by an op whose interval
rule is below (casts from bool, + - * on intervals, CumSum along an axis of length n, data movement).
Graph inputs have no known range (an int64 input may hold anything).

What it is for: RoBERTa-style position ids, cumsum(input_ids != pad) * (input_ids != pad) + pad,
are int64 arithmetic whose values never exceed the sequence length plus the pad id. A backend
whose arithmetic is fp32 (the S4 VPU) computes integers exactly below 2^24, so it may compute such
values instead of refusing all 32/64-bit integer arithmetic.
"""

from __future__ import annotations

import numpy as np

from s4c.ir import Graph, Op, Value

Range = tuple[int, int]
FP32_EXACT = 1 << 24  # every integer of magnitude <= 2^24 is an fp32 value

_MOVES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand", "Transpose", "Slice", "Identity",
          "Tile", "Split", "GatherElements", "GatherND"}
_COMPARES = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN"}
_INTEGER = ("bool", "i8", "u8", "i16", "u16", "i32", "i64")


def integer_ranges(graph: Graph) -> dict[int, Range]:
    """id(value) -> (lo, hi) inclusive, for every integer/bool value whose range is known."""
    ranges: dict[int, Range] = {}

    def of(v: Value | None) -> Range | None:
        if v is None or v.dtype not in _INTEGER:
            return None
        if id(v) not in ranges and v.is_constant:
            data = np.asarray(v.data)
            ranges[id(v)] = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if v.dtype == "bool":
            return (0, 1)
        return ranges.get(id(v))

    for op in graph.ops:
        for v in op.inputs:  # record constant operands' ranges even where the rule does not read them
            of(v)            # (Equal(input_ids, pad): the comparison is exact because pad is small)
        result = _rule(op, of)
        if result is not None:
            for out in op.outputs:
                if out.dtype in _INTEGER:
                    ranges[id(out)] = _clip_to_dtype(result, out.dtype)
    return ranges


def _rule(op: Op, of) -> Range | None:
    """The range of `op`'s integer results from its operands' ranges, or None if unknown."""
    name = op.op
    if name in _COMPARES:
        return (0, 1)
    if name == "Cast":
        return of(op.inputs[0])
    if name in _MOVES or name == "Gather":
        return of(op.inputs[0])
    operands = [of(v) for v in op.inputs if v is not None]
    if any(r is None for r in operands) or not operands:
        return None
    if name in ("Concat", "Where", "Max", "Min", "Sum"):
        ranges = operands[1:] if name == "Where" else operands
        if name == "Sum":
            return (sum(r[0] for r in ranges), sum(r[1] for r in ranges))
        return (min(r[0] for r in ranges), max(r[1] for r in ranges))
    if name == "Add":
        (a, b), (c, d) = operands
        return (a + c, b + d)
    if name == "Sub":
        (a, b), (c, d) = operands
        return (a - d, b - c)
    if name == "Mul":
        (a, b), (c, d) = operands
        products = (a * c, a * d, b * c, b * d)
        return (min(products), max(products))
    if name == "Neg":
        a, b = operands[0]
        return (-b, -a)
    if name == "Abs":
        a, b = operands[0]
        return (0 if a <= 0 <= b else min(abs(a), abs(b)), max(abs(a), abs(b)))
    if name == "CumSum":
        a, b = operands[0]
        n = op.inputs[0].shape[op.attrs.get("axis", 0)] if op.inputs[0].shape else 1
        return (min(a, a * n, 0), max(b, b * n, 0))
    return None


def _clip_to_dtype(r: Range, dtype: str) -> Range:
    if dtype == "bool":
        return (0, 1)
    info = np.iinfo(np.dtype({"i8": np.int8, "u8": np.uint8, "i16": np.int16, "u16": np.uint16,
                              "i32": np.int32, "i64": np.int64}[dtype]))
    lo, hi = r
    if lo < info.min or hi > info.max:  # may wrap: nothing is known
        return (int(info.min), int(info.max))
    return r


def fp32_exact(ranges: dict[int, Range], values) -> bool:
    """True when every integer value in `values` provably fits fp32's exact integers."""
    for v in values:
        if v is None or v.dtype not in _INTEGER or v.dtype == "bool":
            continue
        r = ranges.get(id(v))
        if r is None or r[0] < -FP32_EXACT or r[1] > FP32_EXACT:
            return False
    return True


_ORDERED = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"}


def fp32_exact_op(ranges: dict[int, Range], op: Op) -> bool:
    """True when computing `op` on fp32 copies of its integer operands gives its exact result.

    Arithmetic needs every operand and result within 2^24. A comparison needs only one operand
    there: int -> fp32 rounding is monotone and leaves |x| <= 2^24 unchanged, so comparing any x
    with such a value c (e.g. input_ids == pad) decides the same as on the integers (a rounded x
    lies beyond 2^24, on the same side of c as x)."""
    operands = [v for v in op.inputs if v is not None]
    if op.op in _ORDERED:
        return any(fp32_exact(ranges, [v]) for v in operands)
    return fp32_exact(ranges, operands + list(op.outputs))
