"""Fuzzing the S4 loader, interpreter and assembler: random bytes, mutated valid programs (with and
without repaired checksums, so the deep parsing and validation paths run) and mutated assembly
never raise anything but S4ProgramError."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s4c.errors import S4ProgramError
from s4c.s4 import Program, assemble, disassemble, run
from s4c.s4.program import HEADER_SIZE

SEEDS = [
    """
.dram_size 0x4000
.const_size 192
.data 0x0 0000803f000000400000404000008040
.data 0x80 00000000010000000200000003000000
.sym const w 0x0 f32[8,4]
.sym const ptr 0x80 i32[4]
.sym input x 0x1000 f32[4,16]
.sym input ids 0x1100 i32[4]
.sym output y 0x2000 f32[4,16]
.sym sram:0 xs 0x0 f32[4,16]
.sym sram:0 ws 0x400 f32[8,16]
.sym sram:0 ys 0x800 f32[4,16]
.sym sram:0 is 0xc00 i32[4]
.sym sram:0 gs 0x1000 f32[4,16]
.debug 0 "linear" "/MatMul"
.core 0
    dma.ld dst=xs src=x rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    dma.ld dst=ws src=w rows=8 bytes=16 dpitch=64 spitch=16 dt=f32
    dma.ld dst=is src=ids rows=1 bytes=16 dpitch=0 spitch=0 dt=i32
    dma.gather dst=gs table=w idx=is rows=4 bytes=16 dpitch=64 tpitch=16 trows=8 dt=f32
    sync.signal unit=dma sem=l0
    sync.wait unit=spu sem=l0 value=1
    sync.wait unit=vpu sem=l0 value=1
    spu.mm dst=ys a=xs b=ws m=4 n=8 k=4 pd=64 pa=64 pb=64 tb=1 dt=f32 @0
    vpu.softmax dst=gs src=gs rows=4 cols=4 pd=64 ps=64 scale=0.5 dt=f32
    sync.signal unit=spu sem=l1
    sync.signal unit=vpu sem=l1
    sync.wait unit=dma sem=l1 value=2
    dma.st dst=y src=ys rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    end
""",
    """
.dram_size 0x4000
.sym input x 0x1000 f32[4,16]
.sym output y 0x2000 f32[4,16]
.sym dram tmp 0x3000 f32[4,16]
.core 0
    dma.ld dst=0x0 src=x rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    sync.signal unit=dma sem=l0
    sync.wait unit=vpu sem=l0 value=1
    vpu.layernorm dst=0x0 src=0x0 gamma=0x400 beta=0x400 rows=4 cols=16 pd=64 ps=64 eps=1e-5 dt=f32
    vpu.gelu dst=0x800 src=0x0 rows=4 cols=16 pd=64 ps=64 dt=f32
    sync.signal unit=vpu sem=l1
    sync.wait unit=dma sem=l1 value=1
    dma.st dst=tmp src=0x800 rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    sync.signal unit=dma sem=g1
    end
.core 1
    sync.wait unit=dma sem=g1 value=1
    dma.ld dst=0x0 src=tmp rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    dma.st dst=y src=0x0 rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    end
""",
]
BLOBS = [assemble(text).to_bytes() for text in SEEDS]
# S4_FUZZ_EXAMPLES=4000 for a deeper local run (CI keeps the default small).
FUZZ = settings(max_examples=int(os.environ.get("S4_FUZZ_EXAMPLES", "250")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def repair_checksums(blob: bytearray) -> bytearray:
    """Recompute every section CRC and the header CRC (where the table is still readable)."""
    if len(blob) < HEADER_SIZE:
        return blob
    n_sect = struct.unpack_from("<I", blob, 40)[0]
    table_end = HEADER_SIZE + 24 * min(n_sect, 64)
    if table_end > len(blob):
        return blob
    for i in range(min(n_sect, 64)):
        _, off, size, _ = struct.unpack_from("<4sQQI", blob, HEADER_SIZE + 24 * i)
        if off + size <= len(blob):
            struct.pack_into("<I", blob, HEADER_SIZE + 24 * i + 20, zlib.crc32(bytes(blob[off:off + size])))
    struct.pack_into("<I", blob, 60, zlib.crc32(bytes(blob[:60]) + bytes(blob[HEADER_SIZE:table_end])))
    return blob


def load_and_run(blob: bytes) -> None:
    """from_bytes; if it loads, round-trip it through the assembler and execute it."""
    try:
        program = Program.from_bytes(blob)
    except S4ProgramError:
        return
    text = disassemble(program)
    assert assemble(text).to_bytes() == program.to_bytes()
    npdt = {"f32": np.float32, "bf16": np.float32, "i32": np.int32, "i8": np.int8, "u8": np.uint8,
            "u16": np.uint16}
    feeds = {sym.name: np.zeros(sym.shape, npdt[sym.dtype]) for sym in program.inputs()}
    try:
        run(program, feeds, max_dram_bytes=1 << 20)
    except S4ProgramError:
        pass


def test_seed_programs_run():
    for blob in BLOBS:
        load_and_run(blob)
    out, _ = run(Program.from_bytes(BLOBS[0]), {"x": np.ones((4, 16), np.float32),
                                                "ids": np.array([0, 1, 2, 3], np.int32)})
    assert out["y"].shape == (4, 16)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    load_and_run(data)


@FUZZ
@given(st.binary(min_size=0, max_size=64))
def test_random_bytes_after_magic(data):
    load_and_run(b"S4CPROG\x00" + data)


@FUZZ
@given(seed=st.integers(0, len(BLOBS) - 1), edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)),
                                                          min_size=1, max_size=8),
       repair=st.booleans(), cut=st.one_of(st.none(), st.integers(0, 1 << 16)))
def test_mutated_programs(seed, edits, repair, cut):
    blob = bytearray(BLOBS[seed])
    for pos, value in edits:
        blob[pos % len(blob)] = value
    if cut is not None:
        blob = blob[:cut % (len(blob) + 1)]
    if repair:
        blob = repair_checksums(blob)
    load_and_run(bytes(blob))


def _code_section(blob: bytes) -> tuple[int, int]:
    _, off, size, _ = struct.unpack_from("<4sQQI", blob, HEADER_SIZE + 24)
    return off, size


@FUZZ
@given(seed=st.integers(0, len(BLOBS) - 1), data=st.data())
def test_mutated_instructions(seed, data):
    """Edits confined to the code section, checksums repaired: exercises decode + validation + run."""
    blob = bytearray(BLOBS[seed])
    off, size = _code_section(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = off + data.draw(st.integers(0, size - 1))
        blob[pos] = data.draw(st.sampled_from([0, 1, 2, 3, 4, 0x3F, 0x40, 0x7F, 0x80, 0xFE, 0xFF,
                                               blob[pos] ^ 1, blob[pos] ^ 0x80]))
    load_and_run(bytes(repair_checksums(blob)))


@FUZZ
@given(seed=st.integers(0, len(BLOBS) - 1), data=st.data())
def test_mutated_symbols_and_machine(seed, data):
    """Edits in the machine, symbol and debug sections, checksums repaired."""
    blob = bytearray(BLOBS[seed])
    section = data.draw(st.sampled_from([0, 3, 4]))
    _, off, size, _ = struct.unpack_from("<4sQQI", blob, HEADER_SIZE + 24 * section)
    if size == 0:
        return
    for _ in range(data.draw(st.integers(1, 3))):
        pos = off + data.draw(st.integers(0, size - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    load_and_run(bytes(repair_checksums(blob)))


@FUZZ
@given(seed=st.integers(0, len(SEEDS) - 1), data=st.data())
def test_mutated_assembly(seed, data):
    lines = SEEDS[seed].strip().splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "token", "chars"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "token":
            tokens = lines[i].split()
            if tokens:
                j = data.draw(st.integers(0, len(tokens) - 1))
                tokens[j] = data.draw(st.sampled_from(["rows=0", "dt=q8", "@9", "0x7fffc0", "pd=1", "=", "x+",
                                                       "value=4294967296", "sem=g99999", "alpha=1e39", "\"", "nan"]))
                lines[i] = " ".join(tokens)
        else:
            lines[i] = data.draw(st.text(max_size=40))
        if not lines:
            break
    try:
        program = assemble("\n".join(lines) + "\n")
    except S4ProgramError:
        return
    load_and_run(program.to_bytes())
