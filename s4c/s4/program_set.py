"""Several S4 programs sharing one constant segment (docs/isa.md §Program sets).

A model compiled for shape ranges (`--input-shape input_ids=1..4x1..256 --target s4`) is one
program per bucket (the streams are static): the weights are the same for all of them, so the
container stores the constant segment once and each program's code, symbols and debug map.

    ps = ProgramSet(machine, const, {"1x32": p32, "1x64": p64, ...})   # each p.const is `const`
    ps.validate()                      # every program (S4ProgramError naming it)
    f.writelines(ps.to_chunks())       # the constant segment not copied
    ps = ProgramSet.from_bytes(blob)   # checks header, checksums, structure, then validate()
    ps["1x64"]                         # a Program: the interpreter and the cycle model run it
    read_programs(blob)                # a Program or a ProgramSet, whichever the file holds

File layout: the single-program container's header with flags = 1 (FLAG_PROGRAM_SET),
dram_size / core streams the maxima over the programs; sections MACH, CNST, PRGS, then CODE,
SYMS, DBUG per program in PRGS order. PRGS: u32 count, then per program its name (u16 length +
UTF-8), dram_size u64, core streams u32.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from s4c.errors import S4ProgramError
from s4c.s4.machine import Machine
from s4c.s4.program import (FLAG_PROGRAM_SET, ConstPieces, Program, _fail, _Reader, _str16, code_section,
                            const_chunks, container_chunks, debug_section, expect_kinds, machine_section,
                            parse_code, parse_debug, parse_guarded, parse_machine, parse_symbols, read_container,
                            symbol_section)

PROGRAM_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:x=,\-]{0,127}$")
MAX_PROGRAMS = 256
_PRG = struct.Struct("<QI")


@dataclass
class ProgramSet:
    machine: Machine
    const: object                              # bytes-like or ConstPieces, shared by every program
    programs: dict = field(default_factory=dict)   # name -> Program (its const is `const`)

    def __getitem__(self, name: str) -> Program:
        return self.programs[name]

    def __len__(self) -> int:
        return len(self.programs)

    def const_bytes(self):
        """The constant segment as one bytes-like buffer (joins ConstPieces)."""
        return bytes(self.const) if isinstance(self.const, ConstPieces) else self.const

    def validate(self) -> None:
        if not isinstance(self.programs, dict) or not 1 <= len(self.programs) <= MAX_PROGRAMS:
            _fail(f"a program set holds 1..{MAX_PROGRAMS} programs")
        for name, program in self.programs.items():
            if not isinstance(name, str) or not PROGRAM_NAME_RE.match(name):
                _fail(f"program name {name!r} is not allowed ({PROGRAM_NAME_RE.pattern})")
            if not isinstance(program, Program):
                _fail(f"program {name}: not a Program")
            if program.const is not self.const:
                _fail(f"program {name}: does not use the set's constant segment")
            if program.machine != self.machine:
                _fail(f"program {name}: built for another machine description than the set's")
            try:
                program.validate(self.machine)
            except S4ProgramError as exc:
                raise S4ProgramError(f"program {name}: {exc}") from None

    def to_bytes(self) -> bytes:
        return b"".join(self.to_chunks())

    def to_chunks(self, validate: bool = True) -> list:
        if validate:
            self.validate()
        table = [struct.pack("<I", len(self.programs))]
        sections = [(b"MACH", [machine_section(self.machine)]), (b"CNST", const_chunks(self.const)), (b"PRGS", table)]
        for name, p in self.programs.items():
            table += [_str16(name), _PRG.pack(p.dram_size, len(p.cores))]
            sections += [(b"CODE", [code_section(p.cores)]), (b"SYMS", [symbol_section(p.symbols)]),
                         (b"DBUG", [debug_section(p.debug)])]
        sections[2] = (b"PRGS", [b"".join(table)])
        programs = self.programs.values()
        return container_chunks(sections, FLAG_PROGRAM_SET, max(p.dram_size for p in programs),
                                max(len(p.cores) for p in programs))

    @classmethod
    def from_bytes(cls, data) -> "ProgramSet":
        return parse_guarded(_parse_set, data, "program set")


def read_programs(data) -> "Program | ProgramSet":
    """The Program or ProgramSet a container holds (by its header's flags)."""
    return parse_guarded(_parse_any, data, "program set")


def _parse_any(data):
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data) >= 20:
        (flags,) = struct.unpack_from("<I", bytes(data[16:20]))
        if flags == FLAG_PROGRAM_SET:
            return _parse_set(data)
    return Program.from_bytes(data)


def _parse_set(data) -> ProgramSet:
    dram_max, cores_max, sections = read_container(data, FLAG_PROGRAM_SET)
    if len(sections) < 3 or [k for k, _ in sections[:3]] != [b"MACH", b"CNST", b"PRGS"]:
        _fail("a program set starts with the sections MACH, CNST, PRGS")
    machine = parse_machine(sections[0][1])
    const = sections[1][1]
    r = _Reader(sections[2][1], "program table")
    entries = []
    for _ in range(r.count(2 + _PRG.size)):
        name = r.str16()
        dram_size, n_cores = r.unpack(_PRG)
        entries.append((name, dram_size, n_cores))
    r.done()
    expect_kinds(sections, [b"MACH", b"CNST", b"PRGS"] + [b"CODE", b"SYMS", b"DBUG"] * len(entries))
    if entries and (dram_max != max(e[1] for e in entries) or cores_max != max(e[2] for e in entries)):
        _fail("header dram_size / core streams are not the programs' maxima")
    programs = {}
    for i, (name, dram_size, n_cores) in enumerate(entries):
        if name in programs:
            _fail(f"program table: {name!r} twice")
        code, syms, dbg = (body for _, body in sections[3 + 3 * i:6 + 3 * i])
        try:
            programs[name] = Program(machine, parse_code(code, n_cores, machine), const, dram_size,
                                     parse_symbols(syms), parse_debug(dbg))
        except S4ProgramError as exc:
            raise S4ProgramError(f"program {name}: {exc}") from None
    ps = ProgramSet(machine, const, programs)
    ps.validate()
    return ps


__all__ = ["ProgramSet", "read_programs", "MAX_PROGRAMS", "PROGRAM_NAME_RE"]
