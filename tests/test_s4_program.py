"""The S4 loader and interpreter reject every malformed or unsafe program with S4ProgramError:
container corruption, static operand rules, runtime faults, deadlocks and data races."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from s4c.errors import S4ProgramError
from s4c.s4 import Program, assemble, disassemble, load_machine, make, run, simulate
from s4c.s4.program import HEADER_SIZE, ConstPieces

M = load_machine()

HEAD = """
.dram_size 0x10000
.sym input x 0x1000 f32[4,16]
.sym output y 0x2000 f32[4,16]
.sym dram tmp 0x3000 f32[4,16]
.sym sram:0 xs 0x0 f32[4,16]
.sym sram:0 ys 0x400 f32[4,16]
"""


def prog(body: str, head: str = HEAD) -> str:
    lines = [ln.strip() for ln in body.strip().splitlines()]
    return head + ".core 0\n" + "\n".join("    " + ln for ln in lines) + "\n"


GOOD = prog("""
    dma.ld dst=xs src=x rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    sync.signal unit=dma sem=l0
    sync.wait unit=vpu sem=l0 value=1
    vpu.axpb dst=ys src=xs rows=4 cols=16 pd=64 ps=64 alpha=2.0 beta=1.0 dt=f32
    sync.signal unit=vpu sem=l1
    sync.wait unit=dma sem=l1 value=1
    dma.st dst=y src=ys rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    end
""")
X = np.arange(64, dtype=np.float32).reshape(4, 16)


def test_good_program_runs():
    out, report = run(assemble(GOOD), {"x": X})
    np.testing.assert_array_equal(out["y"], 2 * X + 1)
    assert report.total_cycles == simulate(assemble(GOOD)).total_cycles


def test_run_accepts_bytes_and_traces_one_line_per_instruction():
    lines = []
    out, report = run(assemble(GOOD).to_bytes(), {"x": X}, trace=lines.append)
    np.testing.assert_array_equal(out["y"], 2 * X + 1)
    assert len(lines) == 7                                   # every instruction but `end`
    assert "c0 dma" in lines[0] and "cycles=" in lines[0] and "bytes=256" in lines[0]
    assert any("vpu.axpb" in ln and " vpu " in ln for ln in lines)


# -- container ------------------------------------------------------------------------------------
def _refresh_header_crc(blob: bytearray) -> bytearray:
    n_sect = struct.unpack_from("<I", blob, 40)[0]
    table_end = HEADER_SIZE + 24 * n_sect
    crc = zlib.crc32(bytes(blob[:60]) + bytes(blob[HEADER_SIZE:table_end]))
    struct.pack_into("<I", blob, 60, crc)
    return blob


def _section(blob: bytes, index: int) -> tuple[int, int]:
    _, off, size, _ = struct.unpack_from("<4sQQI", blob, HEADER_SIZE + 24 * index)
    return off, size


def _refresh_section_crc(blob: bytearray, index: int) -> bytearray:
    off, size = _section(blob, index)
    struct.pack_into("<I", blob, HEADER_SIZE + 24 * index + 20, zlib.crc32(bytes(blob[off:off + size])))
    return _refresh_header_crc(blob)


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b[:10], "too short"),
    (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
    (lambda b: _refresh_header_crc(bytearray(b[:8]) + struct.pack("<H", 2) + b[10:]), "version"),
    (lambda b: bytearray(b[:20]) + bytes([b[20] ^ 1]) + b[21:], "file size"),
    (lambda b: bytearray(b[:61]) + bytes([b[61] ^ 0xFF]) + b[62:], "header checksum"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 0x55]), "checksum mismatch"),
    (lambda b: b + b"\x00", "file size"),
])
def test_container_corruption(mutate, message):
    blob = assemble(GOOD).to_bytes()
    with pytest.raises(S4ProgramError, match=message):
        Program.from_bytes(bytes(mutate(blob)))


def test_unknown_opcode_in_binary():
    blob = bytearray(assemble(GOOD).to_bytes())
    off, _ = _section(blob, 1)                    # CODE: u32 n_instr, u32 n_bytes, then instructions
    blob[off + 8] = 0xEE
    with pytest.raises(S4ProgramError, match="unknown opcode 0xee"):
        Program.from_bytes(bytes(_refresh_section_crc(blob, 1)))


def test_not_bytes():
    with pytest.raises(S4ProgramError):
        Program.from_bytes("S4CPROG")


# -- static rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("line,message", [
    ("vpu.axpb dst=0x7ffff0 src=xs rows=4 cols=16 pd=64 ps=64 alpha=1 beta=0 dt=f32", "aligned"),
    ("vpu.axpb dst=0x7fffc0 src=xs rows=4 cols=16 pd=64 ps=64 alpha=1 beta=0 dt=f32", "overflows SRAM"),
    ("vpu.axpb dst=0x20 src=xs rows=1 cols=16 pd=64 ps=64 alpha=1 beta=0 dt=f32", "not aligned"),
    ("vpu.axpb dst=ys src=xs rows=4 cols=16 pd=32 ps=64 alpha=1 beta=0 dt=f32", "pitch"),
    ("vpu.axpb dst=xs+0x40 src=xs rows=4 cols=16 pd=64 ps=64 alpha=1 beta=0 dt=f32", "overlap"),
    ("vpu.axpb dst=ys src=xs rows=4 cols=16 pd=64 ps=64 alpha=nan beta=0 dt=f32", "NaN"),
    ("vpu.axpb dst=ys src=xs rows=0 cols=16 pd=64 ps=64 alpha=1 beta=0 dt=f32", "rows must be >= 1"),
    ("vpu.add dst=ys a=xs b=xs rows=4 cols=16 pd=64 pa=64 pb=64 dt=i8", "not supported"),
    ("vpu.add dst=ys a=xs b=xs rows=4 cols=16 pd=64 pa=64 pb=64 bcast=row dt=f32", "pb must be 0"),
    ("spu.mm dst=xs a=xs b=ys m=4 n=16 k=16 pd=64 pa=64 pb=64 dt=f32", "overlap"),
    ("spu.nm dst=ys x=xs val=0x800 idx=0xc00 t=4 o=16 k=16 n=3 m=2 pd=64 px=64 dt=f32", "n <= m"),
    ("spu.nm dst=ys x=xs val=0x800 idx=0xc00 t=4 o=16 k=16 n=1 m=40 pd=64 px=64 dt=f32", "<= 32"),
    ("spu.bsr dst=ys x=xs val=0x800 col=0xc00 ptr=0xd00 t=4 o=16 k=16 r=4 c=1 nnzb=4 pd=64 px=64 dt=f32 cdt=f32",
     "cdt"),
    ("dma.ld dst=xs src=0xfff0 rows=4 bytes=64 dpitch=64 spitch=64 dt=f32", "overflows DRAM"),
    ("dma.ld dst=xs src=x rows=4 bytes=62 dpitch=64 spitch=64 dt=f32", "whole number"),
    ("sync.signal unit=vpu sem=l99", "out of range"),
    ("sync.wait unit=vpu sem=g40 value=1", "out of range"),
    ("vpu.axpb dst=ys src=xs rows=4 cols=16 pd=64 ps=64 alpha=1 beta=0 dt=f32 @7", "debug id 7"),
    ("end", "last instruction"),
])
def test_static_rules(line, message):
    with pytest.raises(S4ProgramError, match=message):
        assemble(prog(line + "\nend"))


def test_in_place_alias_is_allowed_where_documented():
    assemble(prog("vpu.axpb dst=xs src=xs rows=4 cols=16 pd=64 ps=64 alpha=1 beta=0 dt=f32\nend"))
    assemble(prog("vpu.mul dst=xs a=ys b=xs rows=4 cols=16 pd=64 pa=64 pb=64 dt=f32\nend"))


def test_constant_segment_is_read_only():
    head = HEAD.replace(".dram_size 0x10000", ".dram_size 0x10000\n.const_size 64\n.sym const w 0x0 f32[16]")
    with pytest.raises(S4ProgramError, match="read-only"):
        assemble(prog("dma.st dst=w src=xs rows=1 bytes=64 dpitch=0 spitch=0 dt=f32\nend", head))


def test_constant_segment_in_pieces_is_the_same_program():
    """The lowering's const is a ConstPieces (its arrays, never joined): the container bytes, the
    assembly and the run are those of the same segment given as bytes."""
    w = np.arange(16, dtype=np.float32)
    head = HEAD.replace(".dram_size 0x10000", ".dram_size 0x10000\n.const_size 128\n.sym const w 0x40 f32[16]")
    text = prog("""
        dma.ld dst=xs src=w rows=1 bytes=64 dpitch=64 spitch=64 dt=f32
        sync.signal unit=dma sem=l0
        sync.wait unit=vpu sem=l0 value=1
        vpu.axpb dst=ys src=xs rows=1 cols=16 pd=64 ps=64 alpha=2.0 beta=1.0 dt=f32
        sync.signal unit=vpu sem=l1
        sync.wait unit=dma sem=l1 value=1
        dma.st dst=y src=ys rows=1 bytes=64 dpitch=64 spitch=64 dt=f32
        end
    """, head)
    base = assemble(text)
    joined = Program(M, base.cores, bytes(64) + w.tobytes(), base.dram_size, base.symbols, base.debug)
    pieces = Program(M, base.cores, ConstPieces([(64, w.view(np.uint8))], 128), base.dram_size, base.symbols,
                     base.debug)
    assert pieces.to_bytes() == joined.to_bytes()
    assert b"".join(pieces.to_chunks()) == joined.to_bytes()
    assert Program.from_bytes(pieces.to_bytes()) == pieces == joined
    assert disassemble(pieces) == disassemble(joined)
    out, _ = run(pieces, {"x": X})
    np.testing.assert_array_equal(out["y"][0], 2 * w + 1)
    with pytest.raises(S4ProgramError, match="increasing order"):
        Program(M, base.cores, ConstPieces([(64, w.view(np.uint8)), (96, w.view(np.uint8))], 256),
                base.dram_size, base.symbols, base.debug).validate()
    with pytest.raises(S4ProgramError, match="past the segment"):
        Program(M, base.cores, ConstPieces([(64, w.view(np.uint8))], 100), base.dram_size, base.symbols,
                base.debug).validate()


def test_missing_end():
    with pytest.raises(S4ProgramError, match="last instruction"):
        assemble(prog("sync.signal unit=vpu sem=l0"))


@pytest.mark.parametrize("text,message", [
    (prog("vpu.ad dst=ys\nend"), "line 9: unknown mnemonic"),
    (prog("vpu.axpb dst=ys bogus=1\nend"), "bad operand"),
    (prog("vpu.axpb dst=ys src=xs rows=4 cols=16 pd=64 ps=64 alpha=1 dt=f32\nend"), "missing operand beta"),
    (prog("vpu.axpb dst=nowhere src=xs rows=4 cols=16 pd=64 ps=64 alpha=1 beta=0 dt=f32\nend"), "unknown SRAM"),
    (prog("vpu.axpb dst=ys src=xs rows=4 cols=16 pd=64 ps=64 alpha=1 beta=0 dt=f64\nend"), "bad dtype"),
    (HEAD + ".core 1\nend\n", "expected .core 0"),
    (".frobnicate 1\n", "unknown directive"),
    (".machine nosuch\n.core 0\nend\n", "missing parameter"),
    (HEAD.replace("f32[4,16]\n.sym output", "f32[4,16]\n.sym input x2 0x1020 f32[4]\n.sym output")
     + ".core 0\nend\n", "overlap"),
    (HEAD.replace("0x3000 f32[4,16]", "0x20000 f32[4,16]") + ".core 0\nend\n", "outside writable DRAM"),
    (HEAD + ".sym sram:0 xs 0x0 f32[4]\n.core 0\nend\n", "defined twice"),
    ('.debug 1 "a"\n', "usage"),
])
def test_assembler_errors(text, message):
    with pytest.raises(S4ProgramError, match=message):
        assemble(text)


def test_make_checks_values():
    with pytest.raises(S4ProgramError, match="outside"):
        make("vpu.fill", dst=0, rows=2 ** 32, cols=1, pd=64, value=0.0, dt="f32")
    with pytest.raises(S4ProgramError, match="missing operand"):
        make("vpu.fill", dst=0)
    with pytest.raises(S4ProgramError, match="unknown mnemonic"):
        make("vpu.frob")


# -- inputs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("feeds,message", [
    ({}, "missing input 'x'"),
    ({"x": X, "z": X}, "unknown input"),
    ({"x": X[:2]}, "shape"),
    ({"x": np.array([["a"] * 16] * 4)}, "not numeric"),
])
def test_input_checks(feeds, message):
    with pytest.raises(S4ProgramError, match=message):
        run(assemble(GOOD), feeds)


# -- runtime faults -------------------------------------------------------------------------------
RT_HEAD = """
.dram_size 0x10000
.const_size 512
.sym const table f32[8,16]
.sym input ids 0x200 i32[4]
.sym output y 0x1000 f32[4,16]
.sym sram:0 is 0x0 i32[4]
.sym sram:0 ys 0x400 f32[4,16]
""".replace(".sym const table f32", ".sym const table 0x0 f32")


def test_gather_index_out_of_range():
    text = prog("""
        dma.ld dst=is src=ids rows=1 bytes=16 dpitch=0 spitch=0 dt=i32
        dma.gather dst=ys table=table idx=is rows=4 bytes=64 dpitch=64 tpitch=64 trows=8 dt=f32
        dma.st dst=y src=ys rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
        end""", RT_HEAD)
    out, _ = run(assemble(text), {"ids": np.array([0, 7, 1, 1], np.int32)})
    assert out["y"].shape == (4, 16)
    with pytest.raises(S4ProgramError, match=r"core 0 #1 dma.gather: gather index 8 \(row 2\) out of range"):
        run(assemble(text), {"ids": np.array([0, 7, 8, 1], np.int32)})


def test_nm_offset_out_of_group_is_an_error():
    head = HEAD + ".sym input vi 0x4000 u8[64]\n.sym sram:0 vs 0x800 u8[64]\n"
    text = prog("""
        dma.ld dst=vs src=vi rows=1 bytes=64 dpitch=0 spitch=0 dt=u8
        sync.signal unit=dma sem=l0
        sync.wait unit=spu sem=l0 value=1
        spu.nm dst=ys x=xs val=vs idx=vs t=4 o=16 k=16 n=1 m=4 pd=64 px=64 dt=i8
        end""", head)
    program = assemble(text.replace("x=xs", "x=vs"))   # i8 activations: any bytes will do
    offsets = np.zeros(64, np.uint8)
    offsets[37] = 4
    with pytest.raises(S4ProgramError, match="spu.nm: N:M offset 4 in row 9"):
        run(program, {"x": X, "vi": offsets})


def test_bsr_bad_pointers_are_an_error():
    head = HEAD + ".sym input pv 0x4000 i32[16]\n.sym sram:0 ps 0x800 i32[16]\n"
    text = prog("""
        dma.ld dst=ps src=pv rows=1 bytes=64 dpitch=0 spitch=0 dt=i32
        sync.signal unit=dma sem=l0
        sync.wait unit=spu sem=l0 value=1
        spu.bsr dst=ys x=xs val=ps col=ps ptr=ps t=4 o=16 k=16 r=4 c=1 nnzb=2 pd=64 px=64 dt=f32 cdt=i32
        end""", head)
    with pytest.raises(S4ProgramError, match="BSR block pointers"):
        run(assemble(text), {"x": X, "pv": np.array([0, 5, 1, 1, 2] + [0] * 11, np.int32)})


# -- sync: deadlocks and races --------------------------------------------------------------------
def test_deadlock_is_reported():
    text = prog("""
        sync.wait unit=vpu sem=l0 value=1
        sync.signal unit=vpu sem=l1
        sync.wait unit=spu sem=l1 value=1
        sync.signal unit=spu sem=l0
        sync.wait unit=dma sem=l2 value=3
        end""")
    with pytest.raises(S4ProgramError, match=r"deadlock: .*dma #4 sync.wait l2>=3 \(count 0\).*vpu #0 "
                                             r"sync.wait l0>=1"):
        run(assemble(text), {"x": X})
    with pytest.raises(S4ProgramError, match="deadlock"):
        simulate(assemble(text))


def test_missing_sync_is_a_data_race():
    racy = GOOD.replace("    sync.wait unit=vpu sem=l0 value=1\n", "")
    with pytest.raises(S4ProgramError, match=r"data race: core 0 #\d vpu.axpb reads src .* written by core 0 #0 "
                                             r"dma.ld \(dma\)"):
        run(assemble(racy), {"x": X})
    racy = GOOD.replace("    sync.wait unit=dma sem=l1 value=1\n", "")
    with pytest.raises(S4ProgramError, match="data race: core 0 #3 vpu.axpb writes dst .* read by core 0 #5 dma.st"):
        run(assemble(racy), {"x": X})


def test_write_after_read_race():
    # reloading xs after the dma waited for the vpu (which read xs) is ordered -> fine
    text = GOOD.replace("    end", """    dma.ld dst=xs src=x rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    end""")
    run(assemble(text), {"x": X})
    # reloading xs before the vpu has read it is a write-after-read race
    text = GOOD.replace("    sync.signal unit=dma sem=l0\n", "    sync.signal unit=dma sem=l0\n"
                        "    dma.ld dst=xs src=x rows=4 bytes=64 dpitch=64 spitch=64 dt=f32\n")
    with pytest.raises(S4ProgramError, match="data race"):
        run(assemble(text), {"x": X})


TWO_CORES = """
.dram_size 0x10000
.sym input x 0x1000 f32[4,16]
.sym output y 0x2000 f32[4,16]
.sym dram tmp 0x3000 f32[4,16]
.sym sram:0 a 0x0 f32[4,16]
.sym sram:1 b 0x0 f32[4,16]
.core 0
    dma.ld dst=a src=x rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    sync.signal unit=dma sem=l0
    sync.wait unit=vpu sem=l0 value=1
    vpu.mul dst=a a=a b=a rows=4 cols=16 pd=64 pa=64 pb=64 dt=f32
    sync.signal unit=vpu sem=l1
    sync.wait unit=dma sem=l1 value=1
    dma.st dst=tmp src=a rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    sync.signal unit=dma sem=g0
    end
.core 1
    sync.wait unit=dma sem=g0 value=1
    dma.ld dst=b src=tmp rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    sync.signal unit=dma sem=l0
    sync.wait unit=vpu sem=l0 value=1
    vpu.axpb dst=b src=b rows=4 cols=16 pd=64 ps=64 alpha=1 beta=1 dt=f32
    sync.signal unit=vpu sem=l0
    sync.wait unit=dma sem=l0 value=2
    dma.st dst=y src=b rows=4 bytes=64 dpitch=64 spitch=64 dt=f32
    end
"""


def test_two_cores_with_global_semaphore():
    program = assemble(TWO_CORES)
    out, report = run(program, {"x": X})
    np.testing.assert_array_equal(out["y"], X * X + 1)
    assert report.core_cycles[1] > report.core_cycles[0]
    assert disassemble(assemble(disassemble(program))) == disassemble(program)


def test_cross_core_race_without_the_global_semaphore():
    racy = TWO_CORES.replace("    sync.wait unit=dma sem=g0 value=1\n", "")
    with pytest.raises(S4ProgramError, match=r"data race: core 1 #0 dma.ld reads src \(DRAM 0x3000\) written by "
                                             r"core 0 #6 dma.st|data race: core 0 #6 dma.st writes dst"):
        run(assemble(racy), {"x": X})


def test_interpreter_dram_limit():
    with pytest.raises(S4ProgramError, match="limited to"):
        run(assemble(GOOD), {"x": X}, max_dram_bytes=1024)
