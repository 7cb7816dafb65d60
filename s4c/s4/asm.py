"""S4 assembly: text <-> Program. disassemble(assemble(t)) is canonical, and
assemble(disassemble(p)).to_bytes() == p.to_bytes() for every valid program.

    p = assemble(text)            # S4ProgramError("asm line N: ...") on bad text; p is validated
    text = disassemble(p)         # canonical text; disassemble(p, data=False) omits .data lines

Syntax (docs/isa.md §Assembly), one item per line, `;` starts a comment:

    .machine s4v1                         built-in target (default s4v1); then .param overrides
    .param dma.bytes_per_cycle 16
    .dram_size 0x100000                   bytes of DRAM the program uses
    .const_size 256                       constant segment (DRAM 0..), contents from .data
    .data 0x40 00112233...                hex bytes at a constant-segment offset
    .sym input x 0x1000 f32[4,16]         kinds: input output const dram sram:<core>
    .debug 3 "ir_op" "onnx_node"          debug-map entry (JSON strings)
    .core 0                               the following instructions belong to core 0
        dma.ld dst=xs src=x rows=4 bytes=64 dpitch=64 spitch=64 dt=f32 @3 ; comment
        end

A program set (several programs sharing one constant segment, s4c/s4/program_set.py) names each
program with `.program NAME` after the shared `.machine` / `.param` / `.const_size` / `.data`
lines; its `.dram_size`, `.sym`, `.debug` and `.core` lines follow. assemble() then returns a
ProgramSet, and disassemble() takes one.

Operands are name=value in any order; optional ones (see isa.OPS defaults) may be left out.
Addresses may be symbolic: NAME or NAME+OFFSET (DRAM symbols for DRAM operands, the current
core's sram symbols for SRAM operands). `@N` attaches debug-map entry N; the disassembler adds a
comment naming its ONNX node.
"""

from __future__ import annotations

import json
import re

from s4c.errors import S4ProgramError, TargetError
from s4c.s4 import dtypes as D
from s4c.s4 import isa
from s4c.s4.machine import DEFAULT_TARGET, Machine, builtin_targets, load_machine
from s4c.s4.ops_sync import GLOBAL_BIT
from s4c.s4.ops_vpu import BCAST_NAMES
from s4c.s4.program import DebugEntry, Program, Symbol, SYMBOL_KINDS
from s4c.s4.program_set import ProgramSet

MAX_CONST_BYTES = 1 << 30      # text is not the medium for larger weight sets: use the binary container
_TYPE_RE = re.compile(r"^([a-z0-9]+)\[([0-9,]*)\]$")
_DATA_CHUNK = 64


class _Error(Exception):
    pass


def _int(token: str) -> int:
    try:
        value = int(token, 0)
    except ValueError:
        raise _Error(f"bad number {token!r}") from None
    if value < 0:
        raise _Error(f"negative number {token!r}")
    return value


def assemble(text: str) -> "Program | ProgramSet":
    if not isinstance(text, str):
        raise S4ProgramError("assembly must be a str")
    state = _Assembler()
    for number, line in enumerate(text.splitlines(), 1):
        try:
            state.line(line)
        except _Error as exc:
            raise S4ProgramError(f"asm line {number}: {exc}") from None
        except S4ProgramError as exc:
            raise S4ProgramError(f"asm line {number}: {exc}") from None
    return state.finish()


class _Assembler:
    def __init__(self):
        self.machine_name = None
        self.params: dict = {}
        self.const = None
        self.named: list = []       # (name, per-program state) of a program set's finished programs
        self.name = None
        self._program_state()

    def _program_state(self) -> None:
        self.dram_size = None
        self.symbols: list = []
        self.by_space: dict = {}
        self.debug: dict = {}
        self.cores: list = []

    def _started(self) -> bool:
        return self.dram_size is not None or bool(self.symbols or self.debug or self.cores)

    def line(self, line: str) -> None:
        stripped = line.strip()
        if stripped.startswith(".debug"):
            return self.debug_line(stripped)
        code = stripped.split(";", 1)[0].strip()
        if not code:
            return
        tokens = code.split()
        head, rest = tokens[0], tokens[1:]
        if head.startswith("."):
            handler = getattr(self, "d_" + head[1:], None)
            if handler is None:
                raise _Error(f"unknown directive {head}")
            return handler(rest)
        self.instruction(head, rest)

    # -- directives -------------------------------------------------------------------------
    def _arity(self, rest, n, usage):
        if len(rest) != n:
            raise _Error(f"usage: {usage}")

    def _shared_line(self, what: str) -> None:
        if self.name is not None:
            raise _Error(f"{what} belongs before the first .program (the programs share it)")

    def d_machine(self, rest):
        self._arity(rest, 1, ".machine NAME")
        if self.machine_name is not None or self.params:
            raise _Error(".machine must come first, once")
        self.machine_name = rest[0]

    def d_param(self, rest):
        self._arity(rest, 2, ".param KEY VALUE")
        self._shared_line(".param")
        try:
            value = float(rest[1])
        except ValueError:
            raise _Error(f"bad parameter value {rest[1]!r}") from None
        if rest[0] in self.params:
            raise _Error(f"parameter {rest[0]} set twice")
        self.params[rest[0]] = int(value) if value.is_integer() and abs(value) < 2 ** 53 else value

    def d_dram_size(self, rest):
        self._arity(rest, 1, ".dram_size BYTES")
        if self.dram_size is not None:
            raise _Error(".dram_size given twice")
        self.dram_size = _int(rest[0])

    def d_const_size(self, rest):
        self._arity(rest, 1, ".const_size BYTES")
        self._shared_line(".const_size")
        if self.const is not None:
            raise _Error(".const_size given twice")
        size = _int(rest[0])
        if size > MAX_CONST_BYTES:
            raise _Error(f"constant segment larger than the assembler's limit ({MAX_CONST_BYTES} bytes)")
        self.const = bytearray(size)

    def d_data(self, rest):
        self._arity(rest, 2, ".data OFFSET HEX")
        self._shared_line(".data")
        if self.const is None:
            raise _Error(".data before .const_size")
        offset = _int(rest[0])
        try:
            raw = bytes.fromhex(rest[1])
        except ValueError:
            raise _Error("bad hex data") from None
        if offset + len(raw) > len(self.const):
            raise _Error(f".data [{offset}, {offset + len(raw)}) past the constant segment ({len(self.const)} bytes)")
        self.const[offset:offset + len(raw)] = raw

    def d_sym(self, rest):
        self._arity(rest, 4, ".sym KIND NAME ADDR DTYPE[SHAPE]")
        kind, name, addr, typ = rest
        core = 0
        if kind.startswith("sram:"):
            core = _int(kind[5:])
            kind = "sram"
        if kind not in SYMBOL_KINDS:
            raise _Error(f"unknown symbol kind {kind!r} ({', '.join(SYMBOL_KINDS[:-1])}, sram:<core>)")
        match = _TYPE_RE.match(typ)
        if not match or match.group(1) not in D.CODES:
            raise _Error(f"bad type {typ!r} (e.g. f32[128,768])")
        dims = match.group(2)
        shape = tuple(_int(d) for d in dims.split(",")) if dims else ()
        sym = Symbol(name, kind, _int(addr), match.group(1), shape, core)
        self.symbols.append(sym)
        self.by_space.setdefault((sym.space, name), sym)

    def debug_line(self, line: str) -> None:
        parts = line[len(".debug"):].strip()
        match = re.match(r"^(\S+)\s+", parts)
        if not match:
            raise _Error('usage: .debug ID "ir_op" "onnx_node"')
        key = _int(match.group(1))
        if key >= isa.NO_DEBUG:
            raise _Error(f"debug id {key} too large")
        decoder = json.JSONDecoder()
        pos, texts = match.end(), []
        for _ in range(2):
            try:
                value, pos = decoder.raw_decode(parts, pos)
            except ValueError:
                raise _Error('usage: .debug ID "ir_op" "onnx_node" (JSON strings)') from None
            if not isinstance(value, str):
                raise _Error(".debug names must be strings")
            texts.append(value)
            while pos < len(parts) and parts[pos] in " \t":
                pos += 1
        if parts[pos:] and not parts[pos:].startswith(";"):
            raise _Error("unexpected text after .debug")
        if key in self.debug:
            raise _Error(f"debug id {key} defined twice")
        self.debug[key] = DebugEntry(*texts)

    def d_program(self, rest):
        self._arity(rest, 1, ".program NAME")
        if self.name is None and self._started():
            raise _Error(".program must come before every program's .dram_size / .sym / .debug / .core")
        if self.name is not None:
            self.named.append((self.name, self._program(self._shared())))
        if rest[0] in [n for n, _ in self.named] or rest[0] == self.name:
            raise _Error(f"program {rest[0]} defined twice")
        self.name = rest[0]
        self._program_state()

    def d_core(self, rest):
        self._arity(rest, 1, ".core N")
        if _int(rest[0]) != len(self.cores):
            raise _Error(f"expected .core {len(self.cores)} (cores are listed in order from 0)")
        self.cores.append([])

    # -- instructions -----------------------------------------------------------------------
    def instruction(self, mnemonic: str, tokens: list) -> None:
        spec = isa.BY_MNEMONIC.get(mnemonic)
        if spec is None:
            raise _Error(f"unknown mnemonic {mnemonic!r}")
        if not self.cores:
            raise _Error("instruction before the first .core")
        kinds = {f.name: f.kind for f in spec.fields}
        values, dbg = {}, None
        for token in tokens:
            if token.startswith("@"):
                if dbg is not None:
                    raise _Error("two @debug ids")
                dbg = _int(token[1:])
                continue
            name, sep, value = token.partition("=")
            if not sep or name not in kinds:
                raise _Error(f"{mnemonic}: bad operand {token!r} (operands: {', '.join(spec.names) or 'none'})")
            if name in values:
                raise _Error(f"{mnemonic}: operand {name} given twice")
            values[name] = self.value(kinds[name], value)
        self.cores[-1].append(isa.make(mnemonic, dbg=dbg, **values))

    def value(self, kind: str, token: str):
        if kind in ("dram", "sram"):
            return self.address(kind, token)
        if kind == "f32":
            try:
                return float(token)
            except ValueError:
                raise _Error(f"bad number {token!r}") from None
        if kind in ("dtype", "tdtype", "unit", "sem", "bcast") and not token[:1].isdigit():
            return token
        return _int(token)

    def address(self, kind: str, token: str) -> int:
        if token[:1].isdigit():
            return _int(token)
        name, _, offset = token.partition("+")
        space = "dram" if kind == "dram" else f"sram:{len(self.cores) - 1}"
        sym = self.by_space.get((space, name))
        if sym is None:
            raise _Error(f"unknown {'DRAM' if kind == 'dram' else 'SRAM (this core)'} symbol {name!r}")
        return sym.addr + (_int(offset) if offset else 0)

    def _shared(self) -> tuple:
        """(machine, constant segment) of the text (shared by a set's programs): made once."""
        if not hasattr(self, "_machine"):
            name = self.machine_name or DEFAULT_TARGET
            try:
                if name in builtin_targets():
                    machine = load_machine(name).replace(self.params) if self.params else load_machine(name)
                else:
                    machine = Machine(name, self.params)
            except TargetError as exc:
                raise S4ProgramError(f"asm machine: {exc}") from None
            self._machine, self._const = machine, bytes(self.const or b"")
        return self._machine, self._const

    def _program(self, shared: tuple) -> Program:
        machine, const = shared
        dram = self.dram_size if self.dram_size is not None else -(-len(const) // machine.align) * machine.align
        return Program(machine, self.cores, const, dram, self.symbols, self.debug)

    def finish(self) -> "Program | ProgramSet":
        if self.name is None:
            program = self._program(self._shared())
            program.validate()
            return program
        self.named.append((self.name, self._program(self._shared())))
        machine, const = self._shared()
        programs = ProgramSet(machine, const, dict(self.named))
        programs.validate()
        return programs


# -- disassembly ------------------------------------------------------------------------------
def disassemble(program: "Program | ProgramSet", data: bool = True, validate: bool = True) -> str:
    """Canonical assembly text. data=False leaves out the .data lines (not re-assemblable then);
    validate=False skips validating a program the caller has just validated (a big one takes a while).
    A ProgramSet: the shared lines, then each program after its `.program NAME`."""
    if validate:
        program.validate()
    if isinstance(program, ProgramSet):
        out = _shared_lines(program, data)
        for name, p in program.programs.items():
            out += [f".program {name}", f".dram_size 0x{p.dram_size:x}"] + _program_lines(p)
    else:   # (a single program's .dram_size comes before .const_size, as it always has)
        out = _shared_lines(program, data, f".dram_size 0x{program.dram_size:x}") + _program_lines(program)
    return "\n".join(out) + "\n"


def _shared_lines(program, data: bool, dram_line: str | None = None) -> list:
    m = program.machine
    out = [f"; s4 assembly, s4 ISA v{isa.ISA_VERSION[0]}.{isa.ISA_VERSION[1]}", f".machine {m.name}"]
    base = load_machine(m.name) if m.name in builtin_targets() else None
    for key in sorted(m.params):
        if base is None or base.params[key] != m.params[key]:
            out.append(f".param {key} {m.params[key]!r}")
    if dram_line:
        out.append(dram_line)
    out.append(f".const_size {len(program.const)}")
    const = program.const_bytes() if data else program.const
    if data:
        zero = bytes(_DATA_CHUNK)
        for off in range(0, len(const), _DATA_CHUNK):
            chunk = const[off:off + _DATA_CHUNK]
            if chunk != zero[:len(chunk)]:
                out.append(f".data 0x{off:x} {chunk.hex()}")
    elif const:
        out.append(f"; constant data omitted ({len(const)} bytes)")
    return out


def _program_lines(program: Program) -> list:
    out = []
    for s in program.symbols:
        kind = f"sram:{s.core}" if s.kind == "sram" else s.kind
        out.append(f".sym {kind} {s.name} 0x{s.addr:x} {s.dtype}[{','.join(map(str, s.shape))}]")
    for key in sorted(program.debug):
        entry = program.debug[key]
        out.append(f".debug {key} {json.dumps(entry.ir_op)} {json.dumps(entry.onnx_node)}")
    spaces: dict = {}
    for s in program.symbols:
        spaces.setdefault(s.space, []).append(s)
    for core, stream in enumerate(program.cores):
        out.append(f".core {core}")
        for ins in stream:
            out.append("    " + _format(ins, spaces.get("dram", []), spaces.get(f"sram:{core}", []), program.debug))
    return out


def _format(ins: isa.Instr, dram_syms, sram_syms, debug) -> str:
    spec = ins.spec
    parts = [f"{spec.mnemonic:<12}"]
    for f, value in zip(spec.fields, ins.args):
        if f.default is not None and value == f.default:
            continue
        parts.append(f"{f.name}={_format_value(f.kind, value, dram_syms, sram_syms)}")
    if ins.dbg != isa.NO_DEBUG:
        parts.append(f"@{ins.dbg}")
    text = " ".join(parts).rstrip()
    entry = debug.get(ins.dbg)
    if entry is not None:
        node = " ".join(entry.onnx_node.split())
        text += f"  ; {node}" if node else ""
    return text


def _format_value(kind, value, dram_syms, sram_syms) -> str:
    if kind in ("dram", "sram"):
        for sym in (dram_syms if kind == "dram" else sram_syms):
            if sym.addr <= value < sym.addr + sym.size:
                return sym.name if value == sym.addr else f"{sym.name}+0x{value - sym.addr:x}"
        return f"0x{value:x}"
    if kind == "dtype":
        return D.NAMES[value]
    if kind == "tdtype":
        return D.NAMES[value] if value else "same"
    if kind == "unit":
        return isa.UNITS[value]
    if kind == "sem":
        return f"{'g' if value & GLOBAL_BIT else 'l'}{value & ~GLOBAL_BIT}"
    if kind == "bcast":
        return BCAST_NAMES[value]
    if kind == "f32":
        return repr(float(value))
    return str(value)
