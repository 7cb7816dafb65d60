"""An S4 program and its binary container (docs/isa.md §Binary container).

    p = Program(machine, cores=[[make(...), ..., make("end")]], const=b"...", dram_size=1 << 20,
                symbols=[Symbol("x", "input", 0x1000, "f32", (4, 16)), ...],
                debug={0: DebugEntry("ir_op", "onnx_node")})
    p.validate()              # every static rule; S4ProgramError naming core / index / opcode
    b = p.to_bytes()          # validates, then serialises
    f.writelines(p.to_chunks())   # the same bytes, the constant segment not copied
    p2 = Program.from_bytes(b)    # checks magic, version, checksums, structure, then validate()
    p.symbol("x"), p.inputs(), p.outputs()

DRAM layout: the constant segment is loaded at DRAM address 0 and is read-only; everything from
const_end = roundup(len(const), align) to dram_size is read-write (inputs, outputs, scratch).
Symbol kinds: input / output / const / dram (named scratch) live in DRAM; sram symbols name a
region of one core's SRAM (they only make the assembly readable).
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from s4c.errors import S4ProgramError, TargetError
from s4c.s4 import dtypes as D
from s4c.s4 import isa
from s4c.s4.machine import Machine, load_machine
from s4c.s4.ops_common import Access

MAGIC = b"S4CPROG\x00"
VERSION = isa.ISA_VERSION
SYMBOL_KINDS = ("input", "output", "const", "dram", "sram")
SYMBOL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/\-\[\]]{0,254}$")
MAX_NDIM = 8
SECTIONS = (b"MACH", b"CODE", b"CNST", b"SYMS", b"DBUG")

_HDR = struct.Struct("<8sHHIIQQII16s")      # + u32 crc
_HDR_CRC = struct.Struct("<I")
HEADER_SIZE = _HDR.size + _HDR_CRC.size     # 64
_SECT = struct.Struct("<4sQQI")
_U16, _U32, _U64, _F64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<d")
_SYM = struct.Struct("<BBBBHH")
_CODE_HEAD = struct.Struct("<II")


@dataclass(frozen=True)
class Symbol:
    name: str
    kind: str                      # input | output | const | dram | sram
    addr: int                      # byte address in DRAM, or in core `core`'s SRAM
    dtype: str                     # "f32", "bf16", "i8", "i32", "u8", "u16"
    shape: tuple
    core: int = 0                  # sram symbols only

    @property
    def size(self) -> int:
        return math.prod(self.shape) * D.SIZE[D.CODES[self.dtype]]

    @property
    def space(self) -> str:
        return f"sram:{self.core}" if self.kind == "sram" else "dram"


@dataclass(frozen=True)
class DebugEntry:
    ir_op: str                     # the IR op (name / id) the instruction implements
    onnx_node: str                 # the ONNX node that op came from


def _fail(msg: str):
    raise S4ProgramError(msg)


class ConstPieces:
    """A constant segment kept as the buffers it is made of: `pieces` [(offset, buffer)] in
    increasing order, not overlapping, zeros between them, `size` bytes in all. The S4 lowering's
    programs hold one: their ~300 MB of packed weights go to model.s4 and into the interpreter's
    DRAM straight from the arrays, never copied into one buffer (0.2-0.6 s of fresh memory)."""

    def __init__(self, pieces, size: int):
        self.pieces = [(off, memoryview(buf).cast("B")) for off, buf in pieces]
        self.size = size

    def __len__(self) -> int:
        return self.size

    def chunks(self) -> list:
        """The segment's bytes in order: the pieces and the zero gaps between them."""
        out, pos = [], 0
        for off, buf in self.pieces:
            if off > pos:
                out.append(bytes(off - pos))
            out.append(buf)
            pos = off + len(buf)
        if self.size > pos:
            out.append(bytes(self.size - pos))
        return out

    def __bytes__(self) -> bytes:
        return b"".join(self.chunks())

    def __eq__(self, other) -> bool:
        if isinstance(other, ConstPieces):
            other = bytes(other)
        return _is_bytes(other) and bytes(self) == other

    __hash__ = None

    def check(self) -> None:
        pos = 0
        for off, buf in self.pieces:
            if isinstance(off, bool) or not isinstance(off, int) or off < pos:
                _fail("const segment pieces must be in increasing order and must not overlap")
            pos = off + len(buf)
        if pos > self.size:
            _fail(f"const segment pieces end at {pos}, past the segment's {self.size} bytes")


@dataclass
class Program:
    machine: Machine
    cores: list
    const: bytes = b""             # or bytearray, a flat memoryview of bytes, ConstPieces
    dram_size: int = 0
    symbols: list = field(default_factory=list)
    debug: dict = field(default_factory=dict)

    # -- queries ----------------------------------------------------------------------------
    @property
    def const_end(self) -> int:
        align = self.machine.align
        return -(-len(self.const) // align) * align

    def const_pieces(self) -> list:
        """The constant segment as [(offset, buffer)] (zeros elsewhere), without copying it."""
        if isinstance(self.const, ConstPieces):
            return self.const.pieces
        return [(0, memoryview(self.const))] if len(self.const) else []

    def const_bytes(self):
        """The constant segment as one bytes-like buffer (joins ConstPieces)."""
        return bytes(self.const) if isinstance(self.const, ConstPieces) else self.const

    def symbol(self, name: str, space: str = "dram") -> Symbol:
        for sym in self.symbols:
            if sym.name == name and sym.space == space:
                return sym
        raise KeyError(name)

    def inputs(self) -> list:
        return [s for s in self.symbols if s.kind == "input"]

    def outputs(self) -> list:
        return [s for s in self.symbols if s.kind == "output"]

    def n_instructions(self) -> int:
        return sum(len(c) for c in self.cores)

    # -- validation -------------------------------------------------------------------------
    def validate(self, machine: Machine | None = None) -> None:
        """Raise S4ProgramError on the first broken rule (docs/isa.md §Validation)."""
        m = machine or self.machine
        if not isinstance(m, Machine):
            _fail("program has no machine description")
        if isinstance(self.const, ConstPieces):
            self.const.check()
        elif not _is_bytes(self.const):
            _fail("const segment must be bytes")
        if not isinstance(self.cores, list) or not 1 <= len(self.cores) <= m.n_cores:
            _fail(f"program needs 1..{m.n_cores} core streams")
        if isinstance(self.dram_size, bool) or not isinstance(self.dram_size, int):
            _fail("dram_size must be an integer")
        const_end = -(-len(self.const) // m.align) * m.align
        if not const_end <= self.dram_size <= m.dram_bytes:
            _fail(f"dram_size {self.dram_size} must lie in [{const_end} (constants), {m.dram_bytes} (machine)]")
        self._validate_symbols(m, const_end)
        self._validate_debug()
        for core, stream in enumerate(self.cores):
            if not isinstance(stream, list) or not stream:
                _fail(f"core {core}: empty instruction stream (must end with 'end')")
            for index, ins in enumerate(stream):
                validate_instr(ins, m, core, index, len(stream), self.dram_size, const_end, self.debug)

    def _validate_symbols(self, m: Machine, const_end: int) -> None:
        seen = set()
        io = []
        for sym in self.symbols:
            if not isinstance(sym, Symbol):
                _fail("symbols must be Symbol objects")
            what = f"symbol {sym.name!r}"
            if not isinstance(sym.name, str) or not SYMBOL_NAME_RE.match(sym.name):
                _fail(f"{what}: bad name (allowed: {SYMBOL_NAME_RE.pattern})")
            if sym.kind not in SYMBOL_KINDS:
                _fail(f"{what}: unknown kind {sym.kind!r}")
            if sym.dtype not in D.CODES:
                _fail(f"{what}: unknown dtype {sym.dtype!r}")
            if (not isinstance(sym.shape, tuple) or len(sym.shape) > MAX_NDIM
                    or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d < 2 ** 40 for d in sym.shape)):
                _fail(f"{what}: bad shape {sym.shape!r}")
            for value in (sym.addr, sym.core):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    _fail(f"{what}: bad address or core")
            align = m.align if sym.kind == "sram" else D.SIZE[D.CODES[sym.dtype]]
            if sym.addr % align:
                _fail(f"{what}: address 0x{sym.addr:x} not aligned to {align} bytes")
            end = sym.addr + sym.size
            if sym.kind == "sram":
                if sym.core >= len(self.cores):
                    _fail(f"{what}: core {sym.core} has no stream")
                if end > m.sram_bytes:
                    _fail(f"{what}: [0x{sym.addr:x}, 0x{end:x}) overflows SRAM ({m.sram_bytes} bytes)")
            else:
                if sym.core != 0:
                    _fail(f"{what}: only sram symbols have a core")
                if sym.kind == "const" and end > len(self.const):
                    _fail(f"{what}: [0x{sym.addr:x}, 0x{end:x}) outside the constant segment ({len(self.const)} bytes)")
                if sym.kind != "const" and (sym.addr < const_end or end > self.dram_size):
                    _fail(f"{what}: [0x{sym.addr:x}, 0x{end:x}) outside writable DRAM [0x{const_end:x}, 0x{self.dram_size:x})")
            key = (sym.space, sym.name)
            if key in seen:
                _fail(f"{what}: defined twice")
            seen.add(key)
            if sym.kind in ("input", "output"):
                io.append((sym.addr, end, sym.name))
        io.sort()
        for (a0, a1, n0), (b0, b1, n1) in zip(io, io[1:]):
            if b0 < a1:
                _fail(f"symbols {n0!r} and {n1!r} overlap in DRAM")

    def _validate_debug(self) -> None:
        if not isinstance(self.debug, dict):
            _fail("debug map must be a dict")
        for key, entry in self.debug.items():
            if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < isa.NO_DEBUG:
                _fail(f"debug id {key!r} out of range")
            if not isinstance(entry, DebugEntry):
                _fail(f"debug id {key}: entry must be a DebugEntry")
            for text in (entry.ir_op, entry.onnx_node):
                if not isinstance(text, str):
                    _fail(f"debug id {key}: names must be strings")
                try:
                    if len(text.encode("utf-8")) > 0xFFFF:
                        _fail(f"debug id {key}: name longer than 65535 bytes")
                except UnicodeEncodeError:
                    _fail(f"debug id {key}: name is not valid unicode")

    # -- binary container -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return b"".join(self.to_chunks())

    def to_chunks(self, validate: bool = True) -> list:
        """Validate (unless the caller does), then serialise as a list of buffers in file order
        (to_bytes joins them). The constant segment (~300 MB for BERT-base) is among them,
        uncopied: write the list with `f.writelines(chunks)` rather than joining it."""
        if validate:
            self.validate()
        sections = [(b"MACH", [machine_section(self.machine)]), (b"CODE", [code_section(self.cores)]),
                    (b"CNST", const_chunks(self.const)), (b"SYMS", [symbol_section(self.symbols)]),
                    (b"DBUG", [debug_section(self.debug)])]
        return container_chunks(sections, 0, self.dram_size, len(self.cores))

    @classmethod
    def from_bytes(cls, data) -> "Program":
        """Parse and validate a binary program; anything wrong raises S4ProgramError."""
        return parse_guarded(_parse, data, "program")


def parse_guarded(parse, data, what: str):
    """parse(data), any error it raises an S4ProgramError (one line)."""
    try:
        return parse(data)
    except S4ProgramError:
        raise
    except TargetError as exc:
        raise S4ProgramError(f"machine section: {exc}") from None
    except (ValueError, TypeError, OverflowError, struct.error, UnicodeDecodeError,
            KeyError, IndexError, MemoryError, RecursionError) as exc:   # belt and braces
        raise S4ProgramError(f"malformed {what}: {type(exc).__name__}: {exc}") from None


def _is_bytes(data) -> bool:
    """bytes, bytearray, or a flat memoryview of bytes (a constant segment built in a numpy buffer)."""
    if isinstance(data, memoryview):
        return data.format == "B" and data.ndim == 1 and data.c_contiguous
    return isinstance(data, (bytes, bytearray))


def _str16(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U16.pack(len(raw)) + raw


# -- serialisation (shared with program_set.py: programs sharing one constant segment) ------------
def machine_section(m: Machine) -> bytes:
    mach = [_str16(m.name), _U32.pack(len(m.params))]
    for key in sorted(m.params):
        mach += [_str16(key), _F64.pack(float(m.params[key]))]
    return b"".join(mach)


def code_section(cores: list) -> bytes:
    code = []
    for stream in cores:
        blob = isa.encode_stream(stream)
        code += [_CODE_HEAD.pack(len(stream), len(blob)), blob]
    return b"".join(code)


def symbol_section(symbols: list) -> bytes:
    syms = [_U32.pack(len(symbols))]
    for s in symbols:
        name = s.name.encode("utf-8")
        syms += [_SYM.pack(SYMBOL_KINDS.index(s.kind), D.CODES[s.dtype], len(s.shape), 0, s.core, len(name)),
                 name, _U64.pack(s.addr)] + [_U64.pack(d) for d in s.shape]
    return b"".join(syms)


def debug_section(debug: dict) -> bytes:
    dbg = [_U32.pack(len(debug))]
    for key in sorted(debug):
        entry = debug[key]
        dbg += [_U32.pack(key), _str16(entry.ir_op), _str16(entry.onnx_node)]
    return b"".join(dbg)


def const_chunks(const) -> list:
    return const.chunks() if isinstance(const, ConstPieces) else [memoryview(const)]


def container_chunks(sections: list, flags: int, dram_size: int, n_cores: int) -> list:
    """Header, section table and sections ([(kind, [buffers])]) as a list of buffers in file order."""
    offset = HEADER_SIZE + _SECT.size * len(sections)
    table = []
    for kind, parts in sections:
        size, crc = 0, 0
        for part in parts:
            size += len(part)
            crc = zlib.crc32(part, crc)
        table.append(_SECT.pack(kind, offset, size, crc))
        offset += size
    table_bytes = b"".join(table)
    head = _HDR.pack(MAGIC, VERSION[0], VERSION[1], HEADER_SIZE, flags, offset, dram_size,
                     n_cores, len(sections), bytes(16))
    crc = zlib.crc32(head + table_bytes)
    return [head + _HDR_CRC.pack(crc) + table_bytes] + [part for _, parts in sections for part in parts]


# -- instruction validation -----------------------------------------------------------------------
def validate_instr(ins, m: Machine, core: int, index: int, length: int, dram_size: int,
                   const_end: int, debug: dict) -> None:
    if not isinstance(ins, isa.Instr):
        _fail(f"core {core} #{index}: not an Instr")
    spec = isa.BY_CODE.get(ins.op)
    if spec is None:
        _fail(f"core {core} #{index}: unknown opcode {ins.op!r}")
    where = f"core {core} #{index} {spec.mnemonic}"
    if not isinstance(ins.args, tuple) or len(ins.args) != len(spec.fields):
        _fail(f"{where}: expected {len(spec.fields)} operands")
    for f, bounds, value in zip(spec.fields, spec.int_bounds, ins.args):
        if bounds is not None and type(value) is int and bounds[0] <= value <= bounds[1]:
            continue            # what check_value accepts unchanged, without its call (~100k operands)
        try:
            checked = isa.check_value(f.kind, value, f.name)
        except S4ProgramError as exc:
            _fail(f"{where}: {exc}")
        if checked != value or type(checked) is not type(value):
            _fail(f"{where}: operand {f.name}={value!r} is not in encoded form")
    if ins.dbg != isa.NO_DEBUG and ins.dbg not in debug:
        _fail(f"{where}: debug id {ins.dbg!r} not in the debug map")
    if (ins.op == isa.END) != (index == length - 1):
        _fail(f"{where}: 'end' must be the last instruction of every core stream, and only there")
    a = ins.fields()
    err = spec.check(a, m)
    if err:
        _fail(f"{where}: {err}")
    accesses = spec.access(a)
    for acc in accesses:
        _check_region(acc, m, dram_size, const_end, where)
    writes = [x for x in accesses if x.mode == "w"]
    for w in writes:
        for x in accesses:
            if x is w or x.name == w.name or not overlaps(w, x, m.align):
                continue
            if (w.name, x.name) in spec.inplace and _same_region(w, x):
                continue
            _fail(f"{where}: operands {w.name} and {x.name} overlap (only an exact in-place alias is "
                  f"allowed, and only where documented)")


def _check_region(acc: Access, m: Machine, dram_size: int, const_end: int, where: str) -> None:
    """SRAM regions: base and pitch multiples of machine.align. DRAM regions (DMA only): any byte
    address and pitch. Both: pitch >= row size when rows > 1, inside the memory."""
    label = f"{where}: operand {acc.name}"
    if acc.rows < 1 or acc.row_bytes < 1:
        _fail(f"{label}: empty region")
    align = m.align if acc.space == "sram" else 1
    if acc.base % align:
        _fail(f"{label}: SRAM address 0x{acc.base:x} not aligned to {align} bytes")
    if acc.rows > 1 and (acc.pitch % align or acc.pitch < acc.row_bytes):
        _fail(f"{label}: pitch {acc.pitch} must be >= the row size {acc.row_bytes}"
              + (f" and a multiple of {align}" if align > 1 else ""))
    limit = dram_size if acc.space == "dram" else m.sram_bytes
    if acc.end > limit:
        what = "DRAM (program dram_size)" if acc.space == "dram" else "SRAM"
        _fail(f"{label}: [0x{acc.base:x}, 0x{acc.end:x}) overflows {what} of {limit} bytes")
    if acc.space == "dram" and acc.mode == "w" and acc.base < const_end:
        _fail(f"{label}: writes into the read-only constant segment [0, 0x{const_end:x})")


def region_blocks(acc: Access, align: int):
    """The align-sized blocks a region touches: a slice when they are contiguous, else an index
    array. SRAM rows start aligned, so two SRAM regions share a byte iff they share a block; DRAM
    rows may not, so block sharing is a conservative (never missed) approximation there."""
    first = acc.base // align
    if acc.rows == 1 or acc.pitch == acc.row_bytes:
        return slice(first, (acc.end - 1) // align + 1)
    if acc.base % align == 0 and acc.pitch % align == 0:
        # aligned rows (every SRAM region) all span the same number of blocks
        per_row, step = -(-acc.row_bytes // align), acc.pitch // align
        if per_row >= step:
            return slice(first, first + (acc.rows - 1) * step + per_row)
        rows = first + np.arange(acc.rows, dtype=np.int64) * step
        return (rows[:, None] + np.arange(per_row, dtype=np.int64)).reshape(-1)
    starts = acc.base + np.arange(acc.rows, dtype=np.int64) * acc.pitch
    lo = starts // align
    hi = (starts + acc.row_bytes - 1) // align + 1
    if acc.base % align == 0 and acc.pitch % align == 0 and (hi - lo).min() * align >= acc.pitch:
        return slice(first, int(hi[-1]))
    counts = hi - lo
    idx = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return idx + np.arange(int(counts.sum()), dtype=np.int64)


def overlaps(x: Access, y: Access, align: int) -> bool:
    if x.space != y.space or x.end <= y.base or y.end <= x.base:
        return False
    bx, by = region_blocks(x, align), region_blocks(y, align)
    if isinstance(bx, slice) and isinstance(by, slice):
        return True
    ax = np.arange(bx.start, bx.stop) if isinstance(bx, slice) else bx
    ay = np.arange(by.start, by.stop) if isinstance(by, slice) else by
    return np.intersect1d(ax, ay).size > 0


def _same_region(x: Access, y: Access) -> bool:
    return (x.base, x.rows, x.row_bytes) == (y.base, y.rows, y.row_bytes) and (x.rows == 1 or x.pitch == y.pitch)


# -- parsing ----------------------------------------------------------------------------------
class _Reader:
    def __init__(self, buf, what: str):
        self.buf, self.pos, self.what = buf, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            _fail(f"{self.what}: truncated")
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def u32(self) -> int:
        return self.unpack(_U32)[0]

    def str16(self) -> str:
        raw = self.take(self.unpack(_U16)[0])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            _fail(f"{self.what}: string is not UTF-8")

    def count(self, min_entry: int) -> int:
        n = self.u32()
        if n * min_entry > len(self.buf) - self.pos:
            _fail(f"{self.what}: count {n} exceeds the section size")
        return n

    def done(self) -> None:
        if self.pos != len(self.buf):
            _fail(f"{self.what}: {len(self.buf) - self.pos} trailing bytes")


FLAG_PROGRAM_SET = 1      # header flag: several programs sharing one constant segment (program_set.py)


def read_container(data, flags_expected: int) -> tuple:
    """(dram_size, n_cores, [(kind, body)]) of a container whose header and checksums are sound."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail("a program must be bytes")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        _fail("not an S4 program: too short")
    magic, major, minor, hdr_size, flags, file_size, dram_size, n_cores, n_sect, reserved = _HDR.unpack_from(data)
    if magic != MAGIC:
        _fail("not an S4 program: bad magic")
    if major != VERSION[0] or minor > VERSION[1]:
        _fail(f"unsupported S4 program version {major}.{minor} (this s4c reads {VERSION[0]}.0..{VERSION[0]}.{VERSION[1]})")
    if hdr_size != HEADER_SIZE or flags not in (0, FLAG_PROGRAM_SET) or reserved != bytes(16):
        _fail("corrupt header (size / flags / reserved bytes)")
    if flags != flags_expected:
        _fail("this file holds several programs sharing one constant segment (a bucketed build): read it with "
              "s4c.s4.read_programs" if flags else "this file holds a single program, not a program set")
    if file_size != len(data):
        _fail(f"file size {len(data)} does not match the header ({file_size}): truncated or padded")
    table_end = HEADER_SIZE + _SECT.size * n_sect
    if table_end > len(data):
        _fail("truncated section table")
    (crc,) = _HDR_CRC.unpack_from(data, _HDR.size)
    if zlib.crc32(data[:_HDR.size] + data[HEADER_SIZE:table_end]) != crc:
        _fail("header checksum mismatch")
    sections = []
    offset = table_end
    for i in range(n_sect):
        kind, off, size, sect_crc = _SECT.unpack_from(data, HEADER_SIZE + i * _SECT.size)
        if off != offset or off + size > len(data):
            _fail(f"section {kind!r} has a bad offset or size")
        body = data[off:off + size]
        if zlib.crc32(body) != sect_crc:
            _fail(f"section {kind!r}: checksum mismatch")
        sections.append((kind, body))
        offset = off + size
    if offset != len(data):
        _fail("trailing bytes after the last section")
    return dram_size, n_cores, sections


def expect_kinds(sections: list, kinds: list) -> None:
    if len(sections) != len(kinds):
        _fail(f"expected {len(kinds)} sections, header says {len(sections)}")
    for i, ((kind, _), want) in enumerate(zip(sections, kinds)):
        if kind != want:
            _fail(f"section {i} is {kind!r}, expected {want!r}")


def parse_machine(body) -> Machine:
    r = _Reader(body, "machine section")
    name = r.str16()
    params = {}
    for _ in range(r.count(2 + 8)):
        key = r.str16()
        (value,) = r.unpack(_F64)
        if key in params:
            _fail(f"machine section: parameter {key} twice")
        params[key] = int(value) if value.is_integer() and abs(value) < 2 ** 53 else value
    r.done()
    return Machine(name, params)


def parse_code(body, n_cores: int, machine: Machine) -> list:
    if not 1 <= n_cores <= machine.n_cores:
        _fail(f"program has {n_cores} core streams, machine {machine.name} has {machine.n_cores} cores")
    r = _Reader(body, "code section")
    cores = []
    for core in range(n_cores):
        n_instr, n_bytes = r.unpack(_CODE_HEAD)
        blob = r.take(n_bytes)
        if n_instr * isa.HEADER.size > n_bytes:
            _fail(f"core {core}: {n_instr} instructions cannot fit in {n_bytes} bytes")
        stream, pos = [], 0
        for index in range(n_instr):
            ins, pos = isa.decode(blob, pos, f"core {core} #{index}: ")
            stream.append(ins)
        if pos != n_bytes:
            _fail(f"core {core}: {n_bytes - pos} bytes after the last instruction")
        cores.append(stream)
    r.done()
    return cores


def parse_symbols(body) -> list:
    r = _Reader(body, "symbol section")
    symbols = []
    for _ in range(r.count(_SYM.size + 8)):
        kind, dtype, ndim, pad, core, name_len = r.unpack(_SYM)
        if kind >= len(SYMBOL_KINDS) or dtype not in D.NAMES or ndim > MAX_NDIM or pad:
            _fail("symbol section: bad symbol kind / dtype / rank")
        raw = r.take(name_len)
        try:
            sym_name = raw.decode("utf-8")
        except UnicodeDecodeError:
            _fail("symbol section: name is not UTF-8")
        (addr,) = r.unpack(_U64)
        shape = tuple(r.unpack(_U64)[0] for _ in range(ndim))
        symbols.append(Symbol(sym_name, SYMBOL_KINDS[kind], addr, D.NAMES[dtype], shape, core))
    r.done()
    return symbols


def parse_debug(body) -> dict:
    r = _Reader(body, "debug section")
    debug = {}
    for _ in range(r.count(8)):
        key = r.u32()
        if key in debug:
            _fail(f"debug section: id {key} twice")
        debug[key] = DebugEntry(r.str16(), r.str16())
    r.done()
    return debug


def _parse(data) -> Program:
    dram_size, n_cores, sections = read_container(data, 0)
    expect_kinds(sections, list(SECTIONS))
    bodies = dict(sections)
    machine = parse_machine(bodies[b"MACH"])
    cores = parse_code(bodies[b"CODE"], n_cores, machine)
    program = Program(machine, cores, bodies[b"CNST"], dram_size, parse_symbols(bodies[b"SYMS"]),
                      parse_debug(bodies[b"DBUG"]))
    program.validate()
    return program


def default_machine() -> Machine:
    return load_machine()
