"""weights.bin: every constant the generated C reads, in the layout its kernel wants.

    offset  0  8 bytes  magic "S4CWGT01"
            8  uint32   0x01020304 (byte-order probe: the file is little-endian)
           12  uint32   header size (64)
           16  uint64   payload bytes
           24  uint64   weights id: blake2b-64 of the payload (model.c is compiled with it and
                        s4c_model_init refuses a weights.bin from another compile)
           32  zeros up to 64
    64 ...              payload: one blob per constant, each at a 64-byte aligned offset

Arrays are written as they are (native little-endian, C order); int8 weights stay int8 (the
generated init code dequantises them), sparse weights are the packed arrays of s4c.sparse.
Blobs are added by reference and serialised one at a time at write time, so BERT-base's 440 MB
are never copied in memory all at once.

Each blob is stored once: `add(array, key)` returns the offset already given to `key` (the lowering
keys a constant by its IR Value, so weights shared between layers, as in ALBERT, are one blob), and,
as a safety net, an array whose bytes equal an earlier blob's (same size, same first bytes, same
blake2b digest, then compared byte for byte) gets that blob's offset. The generated code only reads weights.bin, so
blobs may be shared freely.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from s4c.codegen.memory_plan import align_up

MAGIC = b"S4CWGT01"
HEADER_BYTES = 64
PREFIX_BYTES = 256  # compared before two same-size blobs are hashed


class WeightStore:
    def __init__(self, alignment: int = 64):
        self.alignment = alignment
        self.entries: list[tuple[int, np.ndarray]] = []
        self.nbytes = 0
        self._keys: dict = {}
        self._by_size: dict[int, list[int]] = {}    # nbytes -> indices of entries of that size
        self._digests: dict[int, bytes] = {}        # entry index -> digest (computed on demand)
        self.fingerprint: int | None = None

    def add(self, array: np.ndarray, key=None) -> int:
        """Reserve room for `array` (kept by reference) and return its payload offset."""
        if key is not None and key in self._keys:
            return self._keys[key]
        array = np.asarray(array)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        offset = self._same_bytes(array)
        if offset is None:
            offset = self.nbytes
            self._by_size.setdefault(array.nbytes, []).append(len(self.entries))
            self.entries.append((offset, array))
            self.nbytes = align_up(offset + max(array.nbytes, 1), self.alignment)
        if key is not None:
            self._keys[key] = offset
        return offset

    def _same_bytes(self, array: np.ndarray) -> int | None:
        """The offset of an earlier blob with exactly `array`'s bytes, if any."""
        same = self._by_size.get(array.nbytes)
        if not same:
            return None
        data = _bytes_of(array)
        # BERT-base's 12 layers give many blobs of one size: compare a prefix before hashing 146 MB
        head = bytes(data[:PREFIX_BYTES])
        same = [i for i in same if bytes(_bytes_of(self.entries[i][1])[:PREFIX_BYTES]) == head]
        if not same:
            return None
        digest = _digest(data)
        for i in same:
            if i not in self._digests:
                self._digests[i] = _digest(_bytes_of(self.entries[i][1]))
            if self._digests[i] == digest and _equal(_bytes_of(self.entries[i][1]), data):
                return self.entries[i][0]
        return None

    def chunks(self):
        """(offset, bytes) of every blob, padding included, in file order."""
        pos = 0
        for offset, array in self.entries:
            if offset > pos:
                yield pos, bytes(offset - pos)
            data = _bytes_of(array)
            yield offset, data
            pos = offset + len(data)
        if self.nbytes > pos:
            yield pos, bytes(self.nbytes - pos)

    def write(self, path: str) -> int:
        """Write weights.bin; returns the weights id (also kept in `fingerprint`)."""
        h = hashlib.blake2b(digest_size=8)
        with open(path, "wb") as f:
            f.write(bytes(HEADER_BYTES))
            for _, data in self.chunks():
                h.update(data)
                f.write(data)
            self.fingerprint = int.from_bytes(h.digest(), "little")
            f.seek(0)
            f.write(header(self.nbytes, self.fingerprint))
        return self.fingerprint


def _bytes_of(array: np.ndarray):
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)) if array.size else b""


def _equal(a, b) -> bool:
    return np.array_equal(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8))


def _digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def header(payload: int, fingerprint: int) -> bytes:
    head = MAGIC + struct.pack("<IIQQ", 0x01020304, HEADER_BYTES, payload, fingerprint)
    return head + bytes(HEADER_BYTES - len(head))
