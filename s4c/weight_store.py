"""OUTDIR's weights (the constants model.s4ir names but does not inline): stored compressed, read back exactly.

weights.npz holds weight i (manifest["weights"][i] names it) in one of three ways:

    w{i}                              the array as it is (a mostly-nonzero weight: a mask would not save bytes)
    w{i}.mask, w{i}.values, w{i}.shape    np.packbits of "nonzero" over the array in C order, the
                                      values there, the shape: a sparse weight in about 1/8 +
                                      density * itemsize bytes per element
    nothing                           another file of OUTDIR holds it exactly (a backend's packed
                                      weights, e.g. c/weights.bin): manifest["weight_refs"][name] is a
                                      `StoredWeight` saying where, in which s4c.sparse layout
    w{i}.negzero                      with either of the last two, where a float weight holds -0.0
                                      (np.packbits; only when it does): see `negative_zeros`

so a sparse BERT-base is not written twice as dense fp32 next to its packed copy. Every reader
(`s4c.load_compiled`: `s4c run`, `s4c check`, `s4c inspect`) gets bit-identical arrays back: values are
kept with their bits (NaN payloads survive), -0.0 positions are kept apart, and a reference is only
taken when the packed copy rebuilds the array bit for bit (`exact_copy`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from s4c.sparse import parse_layout

NPZ = "weights.npz"


@dataclass
class StoredWeight:
    """One IR weight as a backend stored it: its arrays in `layout` (s4c.sparse layout text; "dense":
    the array itself) at byte offsets of `file` (relative to OUTDIR). `arrays`: name -> (offset,
    dtype in the file, shape, dtype the layout's pack gives, which the file's may widen);
    `data`: the packed arrays in memory (for `exact_copy`; not written)."""

    file: str
    layout: str
    shape: tuple[int, ...]
    dtype: str
    arrays: dict[str, tuple[int, str, tuple[int, ...], str]]
    data: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # (start, end, blake2b-64 as a little-endian int) of a byte range of `file` holding these arrays,
    # checked on reading: an edited file is an error, not a silently different reference weight
    digest: tuple[int, int, int] | None = None

    def to_json(self) -> dict:
        d = {"file": self.file, "layout": self.layout, "shape": list(self.shape), "dtype": self.dtype,
             "arrays": {k: [off, dt, list(shape), pack] for k, (off, dt, shape, pack) in self.arrays.items()}}
        if self.digest is not None:
            d["blake2b64"] = list(self.digest)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "StoredWeight":
        return cls(d["file"], d["layout"], tuple(d["shape"]), d["dtype"],
                   {k: (int(off), dt, tuple(shape), pack) for k, (off, dt, shape, pack) in d["arrays"].items()},
                   digest=tuple(int(x) for x in d["blake2b64"]) if "blake2b64" in d else None)


def blake2b64(data) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _bits(a: np.ndarray) -> np.ndarray | None:
    """`a` (flat) as unsigned integers of its item size (None for item sizes without one)."""
    if a.dtype.itemsize not in (1, 2, 4, 8) or a.dtype.kind not in "biuf":
        return None
    return np.ascontiguousarray(a).reshape(-1).view(f"u{a.dtype.itemsize}")


def negative_zeros(array: np.ndarray) -> np.ndarray | None:
    """Where a float array holds -0.0 (flat, C order; None when nowhere). A weight pruned by
    multiplying with a 0/1 mask has one wherever a negative value was pruned: the packed layouts
    and `encode`'s mask keep nonzeros only, so these are stored apart to come back bit for bit."""
    if array.dtype.kind != "f":
        return None
    bits = _bits(array)
    if bits is None:
        return None
    where = bits == np.array(1 << (8 * array.dtype.itemsize - 1), dtype=bits.dtype)
    return where if where.any() else None


def exact_copy(original: np.ndarray, stored: StoredWeight) -> bool:
    """Whether `stored` (with the -0.0 positions of `original`, which the caller keeps) rebuilds
    `original` bit for bit. Dense: the same bytes. Packed: the layouts keep every nonzero value at
    its position and rebuild the rest as zeros (s4c.sparse's contract), so it is exact when the
    packed values hold as many nonzeros as `original`."""
    original = np.asarray(original)
    if tuple(original.shape) != tuple(stored.shape) or str(original.dtype) != stored.dtype:
        return False
    if stored.layout == "dense":
        (copy,) = stored.data.values()
        if copy is original:
            return True
        a, b = _bits(original), _bits(np.asarray(copy))
        return a is not None and b is not None and a.size == b.size and bool(np.array_equal(a, b))
    values = stored.data.get("values")
    return (values is not None and values.dtype == original.dtype
            and np.count_nonzero(values) == np.count_nonzero(original))


def encode(name: str, array: np.ndarray) -> dict[str, np.ndarray]:
    """The npz entries of one weight (`name` = its key, w{i}): masked when that is smaller."""
    array = np.asarray(array)
    if _bits(array) is None or array.size == 0:
        return {name: array}
    flat = np.ascontiguousarray(array).reshape(-1)
    mask = flat != 0  # NaN included: its bits are kept
    nonzero = int(np.count_nonzero(mask))
    negative = negative_zeros(array)
    packed_bytes = (array.size + 7) // 8 * (1 if negative is None else 2) + nonzero * array.dtype.itemsize
    if packed_bytes >= array.nbytes:
        return {name: array}
    # flat[flatnonzero(mask)]: the same values as flat[mask], ~3x faster (numpy's boolean subscript)
    out = {f"{name}.mask": np.packbits(mask), f"{name}.values": flat[np.flatnonzero(mask)],
           f"{name}.shape": np.asarray(array.shape, dtype=np.int64)}
    if negative is not None:
        out[f"{name}.negzero"] = np.packbits(negative)
    return out


def _with_negative_zeros(npz, name: str, array: np.ndarray) -> np.ndarray:
    key = f"{name}.negzero"
    if key in npz.files:
        flat = array.reshape(-1)
        flat[np.unpackbits(npz[key], count=flat.size).view(bool)] = -array.dtype.type(0)
    return array


def decode(npz, name: str) -> np.ndarray:
    """The weight `name` (w{i}) from an open weights.npz, as `encode` stored it."""
    if name in npz.files:
        return npz[name]
    shape = tuple(int(d) for d in npz[f"{name}.shape"])
    values = npz[f"{name}.values"]
    mask = np.unpackbits(npz[f"{name}.mask"], count=int(np.prod(shape, dtype=np.int64))).view(bool)
    out = np.zeros(mask.size, dtype=values.dtype)
    out[np.flatnonzero(mask)] = values
    return _with_negative_zeros(npz, name, out).reshape(shape)


def write_weights(outdir: str, names_arrays: list[tuple[str, np.ndarray]],
                  stored: dict[str, StoredWeight]) -> dict[str, dict]:
    """Write weights.npz for weights in order (weight i is `w{i}`), keeping of those `stored` holds
    exactly only their -0.0 positions; returns the manifest's weight_refs (name -> StoredWeight
    json) for those."""
    entries: dict[str, np.ndarray] = {}
    refs: dict[str, dict] = {}
    for i, (name, array) in enumerate(names_arrays):
        ref = stored.get(name)
        if ref is not None and exact_copy(array, ref):
            refs[name] = ref.to_json()
            negative = negative_zeros(np.asarray(array)) if ref.layout != "dense" else None
            if negative is not None:
                entries[f"w{i}.negzero"] = np.packbits(negative)
        else:
            entries.update(encode(f"w{i}", array))
    np.savez(os.path.join(outdir, NPZ), **entries)
    return refs


def read_weights(outdir: str, names: list[str], refs: dict[str, dict]) -> dict[str, np.ndarray]:
    """The weights `names` (manifest order) of a compile's OUTDIR, bit-identical to what was compiled."""
    out: dict[str, np.ndarray] = {}
    maps: dict[str, np.ndarray] = {}
    checked: set = set()
    with np.load(os.path.join(outdir, NPZ)) as npz:
        for i, name in enumerate(names):
            if name not in refs:
                out[name] = decode(npz, f"w{i}")
                continue
            ref = StoredWeight.from_json(refs[name])
            if ref.file not in maps:
                maps[ref.file] = np.memmap(os.path.join(outdir, ref.file), dtype=np.uint8, mode="r")
            blob = maps[ref.file]
            if ref.digest is not None and (ref.file, ref.digest) not in checked:
                start, end, expected = ref.digest
                if end > blob.size or blake2b64(blob[start:end]) != expected:
                    raise ValueError(f"{ref.file} changed after the compile (its weights no longer match "
                                     f"their recorded hash)")
                checked.add((ref.file, ref.digest))
            out[name] = _with_negative_zeros(npz, f"w{i}", rebuild(ref, blob))
    return out


def rebuild(ref: StoredWeight, blob: np.ndarray) -> np.ndarray:
    """The dense weight from its packed arrays in `blob` (the bytes of ref.file)."""
    arrays = {}
    for key, (offset, dtype, shape, pack_dtype) in ref.arrays.items():
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * np.dtype(dtype).itemsize
        if offset < 0 or offset + nbytes > blob.size:
            raise ValueError(f"{ref.file}: array {key!r} at {offset}+{nbytes} is outside the file ({blob.size} bytes)")
        arr = np.frombuffer(blob[offset:offset + nbytes], dtype=dtype).reshape(shape)
        arrays[key] = arr.astype(pack_dtype) if dtype != pack_dtype else np.array(arr)
    if ref.layout == "dense":
        (array,) = arrays.values()
        return array.reshape(ref.shape)
    return parse_layout(ref.layout).from_arrays(ref.shape, arrays).to_dense()
