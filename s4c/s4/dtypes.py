"""S4 data types: codes, sizes, storage dtypes and the exact conversion rules (docs/isa.md §Data types).

    F32, BF16, I8, I32, U8, U16          # dtype codes as encoded in instructions (1..6)
    code("bf16") -> 2; name(2) -> "bf16"; SIZE[code] -> bytes per element
    to_f64(raw, dt)        # stored elements (numpy storage dtype) -> float64, exactly
    from_f64(x, dt)        # float64 -> stored elements: RNE for floats, round-half-even + saturate for ints
    to_numpy(raw, dt)      # stored elements -> user-facing array (bf16 shown as float32)

bf16 is stored as the upper 16 bits of an IEEE float32 (uint16 storage). Every rounding here is
round-to-nearest-even and done once from float64, so f32/bf16 results of + - * / sqrt are the
correctly rounded IEEE results.
"""

from __future__ import annotations

import numpy as np

F32, BF16, I8, I32, U8, U16 = 1, 2, 3, 4, 5, 6

NAMES = {F32: "f32", BF16: "bf16", I8: "i8", I32: "i32", U8: "u8", U16: "u16"}
CODES = {v: k for k, v in NAMES.items()}
SIZE = {F32: 4, BF16: 2, I8: 1, I32: 4, U8: 1, U16: 2}
STORAGE = {F32: np.dtype(np.float32), BF16: np.dtype(np.uint16), I8: np.dtype(np.int8),
           I32: np.dtype(np.int32), U8: np.dtype(np.uint8), U16: np.dtype(np.uint16)}
FLOATS = (F32, BF16)
INTS = (I8, I32, U8, U16)
INT_RANGE = {I8: (-128, 127), I32: (-(2 ** 31), 2 ** 31 - 1), U8: (0, 255), U16: (0, 65535)}
BF16_MAX = (2.0 - 2.0 ** -7) * 2.0 ** 127


def code(dt) -> int:
    """A dtype code from a code or a name ("f32", "bf16", "i8", "i32", "u8", "u16")."""
    if isinstance(dt, str):
        if dt not in CODES:
            raise KeyError(f"unknown dtype {dt!r} (known: {', '.join(CODES)})")
        return CODES[dt]
    if dt not in NAMES:
        raise KeyError(f"unknown dtype code {dt!r}")
    return int(dt)


def name(dt: int) -> str:
    return NAMES[dt]


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 array holding the bf16 values nearest (ties to even), overflow -> inf."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        ax = np.abs(x)
        _, e = np.frexp(ax)                   # ax = m * 2**e, m in [0.5, 1)
        q = np.maximum(e, -125) - 8           # quantum exponent: 8 significant bits; subnormals fixed
        r = np.ldexp(np.rint(np.ldexp(ax, -q)), q)
        r = np.where(np.isfinite(ax), r, ax)
        r = np.where(r > BF16_MAX, np.inf, r)
        return np.copysign(r, x).astype(np.float32)


def to_f64(raw: np.ndarray, dt: int) -> np.ndarray:
    """Stored elements -> float64 (exact for every dtype)."""
    if dt == BF16:
        return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return raw.astype(np.float64)


def from_f64(x: np.ndarray, dt: int) -> np.ndarray:
    """float64 -> stored elements. Floats: round to nearest even (overflow -> inf, NaN kept).
    Integers: round half to even, saturate to the type's range, NaN -> 0."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        if dt == F32:
            return x.astype(np.float32)
        if dt == BF16:
            f = round_bf16(x)
            return (f.view(np.uint32) >> 16).astype(np.uint16)
        lo, hi = INT_RANGE[dt]
        y = np.clip(np.rint(np.nan_to_num(x, nan=0.0, posinf=hi, neginf=lo)), lo, hi)
        return y.astype(STORAGE[dt])


def to_numpy(raw: np.ndarray, dt: int) -> np.ndarray:
    """Stored elements -> the array a user sees: bf16 as float32, everything else as stored."""
    if dt == BF16:
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(STORAGE[dt], copy=True)
