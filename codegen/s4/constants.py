"""The constant segment (DRAM from address 0, read-only) and the packing of Linear weights into
the SPU's native formats, tiled along the output features.

    const = ConstSegment()
    addr = const.add(array)                         # 64-byte aligned, returns the DRAM address
    packed = pack_linear(W, "bsr16x1", const, o_tile=256, tokens=128)
    packed.tiles[i].o0, .o1, .arrays {"val": (addr, nbytes, dt), ...}, .nnzb

Layouts (the Linear's `layout` attribute, s4c.sparse spellings; docs/isa.md "Sparse weight formats"):

| layout | SPU op | arrays per output tile (each contiguous in the constant segment) |
|---|---|---|
| `dense` | `spu.mm tb=1` | `w`: W[o0:o1, :] row-major |
| `nmN:M` (any 1 <= N <= M <= MAX_M = 32) | `spu.nm` | `val`: values[o0:o1], `idx`: u8 offsets[o0:o1] |
| `bsrRxC` (R, C <= MAX_BLOCK = 32) | `spu.bsr` | `ptr`: i32 block-row pointers re-based to the tile, `col`, `val` (slices of the global arrays) |
| `csr` | `spu.bsr r=1 c=1` | as BSR 1x1 (CSR's own arrays; runs at 1/8 of the BSR rate) |

The array conventions are exactly s4c.sparse's (N:M patterns s4c.sparse does not list, e.g. 1:20
for the SparseBERT 20x point, are packed here with the same convention), so the bytes are what
s4c.sparse packs. A Linear's weights are stored fp32 (the functional dtype; the cycle model charges
them as int8, MixInt8bf16); a LinearInt8's (`--precision int8`) are stored as its int8 values in every
layout (`w` / `val` i8: a quarter of the bytes), and tiles are sized in those bytes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from s4c.errors import TargetError
from s4c.s4.dtypes import BF16, from_f64
from s4c.s4.program import ConstPieces
from s4c.sparse import BSRLayout, CSRLayout, DenseLayout, NMLayout, SparseFormatError, parse_layout

from .base import MAX_BLOCK, MAX_M, STORAGE, rup

_NM_RE = re.compile(r"^nm<?(\d+):(\d+)>?$")
# the S4 dtype of a numpy index array (the BSR / CSR column indices s4c.sparse packs)
_DT = {np.dtype(np.int32): "i32", np.dtype(np.uint8): "u8", np.dtype(np.uint16): "u16"}


class ConstSegment:
    """Arrays placed back to back (64-byte aligned); `pieces()` is the segment for the Program.

    Each array is stored once: `add(array, key)` returns the address already given to `key` (the
    lowering places a constant once per IR Value and packs a Linear weight once per Value, so
    weights shared between layers, as in ALBERT, are placed once), and, as a safety net, an array
    whose bytes equal an earlier array's (same size, same blake2b digest, then compared byte for
    byte) gets that array's address. The segment is read-only DRAM, so sharing is safe."""

    def __init__(self):
        self.items: list[tuple[int, np.ndarray]] = []
        self.size = 0
        self._cache: dict[tuple, int] = {}
        self._by_size: dict[int, list[int]] = {}    # nbytes -> indices into items
        self._digests: dict[int, bytes] = {}        # item index -> digest (computed on demand)

    def add(self, array: np.ndarray, key=None) -> int:
        if key is not None and key in self._cache:
            return self._cache[key]
        array = np.ascontiguousarray(array)
        addr = self._same_bytes(array)
        if addr is None:
            addr = rup(self.size)
            self._by_size.setdefault(array.nbytes, []).append(len(self.items))
            self.items.append((addr, array))
            self.size = addr + array.nbytes
        if key is not None:
            self._cache[key] = addr
        return addr

    def _same_bytes(self, array: np.ndarray) -> int | None:
        """The address of an earlier array with exactly `array`'s bytes, if any."""
        same = self._by_size.get(array.nbytes)
        if not same or not array.nbytes:
            return None
        data = array.reshape(-1).view(np.uint8)
        # many arrays share a size (BERT-base's 12 layers): compare a prefix before hashing them all
        head = data[:256]
        same = [i for i in same if np.array_equal(self.items[i][1].reshape(-1).view(np.uint8)[:256], head)]
        if not same:
            return None
        digest = hashlib.blake2b(data, digest_size=16).digest()
        for i in same:
            old = self.items[i][1].reshape(-1).view(np.uint8)
            if i not in self._digests:
                self._digests[i] = hashlib.blake2b(old, digest_size=16).digest()
            if self._digests[i] == digest and np.array_equal(old, data):
                return self.items[i][0]
        return None

    def fresh_keys(self) -> None:
        """Forget the keys (they name IR values of one lowering, by id) but keep the arrays: a
        segment shared by several lowerings (buckets.py) then reuses arrays by their bytes only."""
        self._cache = {k: v for k, v in self._cache.items() if isinstance(k, tuple) and k[:1] == ("vec",)}

    @property
    def nbytes(self) -> int:
        """The segment's size: the arrays and the padding to the next 64-byte boundary."""
        return rup(self.size)

    def pieces(self) -> ConstPieces:
        """The segment as a Program's const: the arrays themselves, not copied into one buffer
        (so they must stay unchanged: the IR's constants are never written in place)."""
        return ConstPieces([(addr, array.reshape(-1).view(np.uint8)) for addr, array in self.items if array.nbytes],
                           self.nbytes)


def to_storage(array: np.ndarray, dt: str) -> np.ndarray:
    """A host array in the S4 storage dtype `dt` (bool -> u8 0/1, i64 -> i32 range-checked, floats -> f32)."""
    a = np.asarray(array)
    if dt == "f32":
        return np.ascontiguousarray(a, dtype=np.float32)
    if dt == "bf16":            # round to nearest even (s4c.s4.dtypes), the upper half of the f32 bits
        return np.ascontiguousarray(from_f64(a, BF16))
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    target = STORAGE[dt]
    if a.dtype.kind == "f":
        a = np.trunc(a)
    info = np.iinfo(target)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise TargetError(f"S4 lowering: integer constant outside the {dt} range the S4 backend stores "
                          f"[{info.min}, {info.max}]")
    return np.ascontiguousarray(a.astype(target))


@dataclass
class WeightTile:
    o0: int
    o1: int
    arrays: dict = field(default_factory=dict)      # name -> (addr, nbytes, dt)
    nnzb: int = 0

    @property
    def nbytes(self) -> int:
        return sum(rup(nb) for _, nb, _ in self.arrays.values())


@dataclass
class PackedLinear:
    fmt: str                      # dense | nm | bsr
    out: int
    k: int
    layout: str
    tiles: list
    n: int = 0
    m: int = 0
    r: int = 1
    c: int = 1
    cdt: str = "u8"
    stored_bytes: int = 0
    dt: str = "f32"               # the values' dtype: f32, or i8 (LinearInt8)


def parse_s4_layout(text: str):
    """('dense',) / ('nm', n, m) / ('bsr', r, c) / ('csr',) for a Linear's layout attribute."""
    name = str(text).strip().lower()
    match = _NM_RE.match(name)
    if match:
        n, m = int(match.group(1)), int(match.group(2))
        if not 1 <= n <= m <= MAX_M:
            raise TargetError(f"layout {text!r}: the SPU runs N:M with 1 <= N <= M <= {MAX_M}")
        return ("nm", n, m)
    try:
        layout = parse_layout(name)
    except SparseFormatError as e:
        raise TargetError(f"layout {text!r}: {e}") from None
    if isinstance(layout, DenseLayout):
        return ("dense",)
    if isinstance(layout, CSRLayout):
        return ("csr",)
    if isinstance(layout, BSRLayout):
        r, c = layout.block_shape
        if r > MAX_BLOCK or c > MAX_BLOCK:
            raise TargetError(f"layout {text!r}: SPU blocks are at most {MAX_BLOCK}x{MAX_BLOCK}")
        return ("bsr", r, c)
    raise TargetError(f"layout {text!r} is not one the S4 SPU runs")


def pack_nm(w: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [O, ceil(K/m)*n], u8 offsets) with s4c.sparse's N:M convention; exact (raises if
    a group holds more than n nonzeros)."""
    t = NMLayout(n, m).pack(w)
    return np.asarray(t.values), np.asarray(t.indices)


def _tile_bounds(out: int, rows: int, unit: int) -> list[tuple[int, int]]:
    rows = max(unit, rows // unit * unit)
    return [(o0, min(out, o0 + rows)) for o0 in range(0, out, rows)]


def tile_rows(bytes_per_row: float, out: int, budget: int, unit: int, max_rows: int | None = None) -> int:
    """Output rows per tile: as many as fit `budget` bytes, a multiple of `unit` (16 keeps SRAM
    column offsets of the output aligned), the tiles of about equal size."""
    rows = int(budget // max(bytes_per_row, 1))
    if max_rows is not None:
        rows = min(rows, -(-max_rows // unit) * unit)
    rows = max(unit, rows // unit * unit)
    if rows >= out:
        return out
    tiles = -(-out // rows)
    even = -(-out // tiles)
    return max(unit, -(-even // unit) * unit)


def pack_linear(w: np.ndarray, layout: str, const: ConstSegment, budget: int, key=None,
                max_rows: int | None = None, unit: int = 16) -> PackedLinear:
    """Pack W[out, in] (fp32, or int8: stored as int8) in `layout`, cut into output tiles of about
    `budget` bytes (and at most about `max_rows` rows, so a weight can be shared out between cores),
    a multiple of `unit` rows (16: f32 output columns stay 64-byte aligned; 32 for bf16 outputs)."""
    dt = "i8" if np.asarray(w).dtype == np.int8 else "f32"
    es = 1 if dt == "i8" else 4
    w = np.ascontiguousarray(w, dtype=STORAGE[dt])
    o, k = w.shape
    kind = parse_s4_layout(layout)
    if kind[0] == "dense":
        rows = tile_rows(k * es, o, budget, unit, max_rows)
        base = const.add(w, key=(key, "dense"))
        tiles = [WeightTile(a, b, {"w": (base + a * k * es, (b - a) * k * es, dt)}) for a, b in _tile_bounds(o, rows, rows)]
        return PackedLinear("dense", o, k, layout, tiles, stored_bytes=w.nbytes, dt=dt)
    if kind[0] == "nm":
        n, m = kind[1], kind[2]
        try:
            vals, idx = pack_nm(w, n, m)
        except SparseFormatError as e:
            raise TargetError(f"layout {layout}: {e}") from None
        vals = np.ascontiguousarray(vals, dtype=STORAGE[dt])
        slots = vals.shape[1]
        rows = tile_rows(slots * (es + 1), o, budget, unit, max_rows)
        va, ia = const.add(vals), const.add(idx)
        tiles = [WeightTile(a, b, {"val": (va + a * slots * es, (b - a) * slots * es, dt),
                                   "idx": (ia + a * slots, (b - a) * slots, "u8")})
                 for a, b in _tile_bounds(o, rows, rows)]
        return PackedLinear("nm", o, k, layout, tiles, n=n, m=m, stored_bytes=vals.nbytes + idx.nbytes, dt=dt)
    if kind[0] == "csr":
        r, c = 1, 1
        t = CSRLayout().pack(w)
        indptr, indices, values = t.indptr, t.indices, t.values.reshape(-1, 1, 1)
    else:
        r, c = kind[1], kind[2]
        t = BSRLayout(r, c).pack(w)
        indptr, indices, values = t.indptr, t.indices, t.values
    indptr = np.asarray(indptr, np.int64)
    cdt = _DT[np.asarray(indices).dtype]
    csize = np.asarray(indices).dtype.itemsize
    nbr = len(indptr) - 1
    per_row = (indptr[-1] * (r * c * es + csize)) / max(o, 1) + 4
    unit = int(np.lcm(unit, r))
    rows = tile_rows(per_row * 1.0, o, budget, unit, max_rows)
    ca = const.add(np.asarray(indices))
    va = const.add(np.asarray(values, STORAGE[dt]))
    tiles = []
    for a, b in _tile_bounds(o, rows, rows):
        br0, br1 = a // r, -(-b // r)
        p0, p1 = int(indptr[br0]), int(indptr[min(br1, nbr)])
        ptr = (indptr[br0:br1 + 1] - p0).astype(np.int32)
        tile = WeightTile(a, b, nnzb=p1 - p0)
        if p1 > p0:
            tile.arrays = {"ptr": (const.add(ptr), ptr.nbytes, "i32"),
                           "col": (ca + p0 * csize, (p1 - p0) * csize, cdt),
                           "val": (va + p0 * r * c * es, (p1 - p0) * r * c * es, dt)}
        tiles.append(tile)
    stored = np.asarray(values, STORAGE[dt]).nbytes + np.asarray(indices).nbytes + indptr.size * 4
    return PackedLinear("bsr", o, k, layout, tiles, r=r, c=c, cdt=cdt, stored_bytes=stored, dt=dt)
