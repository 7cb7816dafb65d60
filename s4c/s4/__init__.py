"""s4c.s4: s4c's own documented model of the S4 sparse accelerator ("s4 ISA v1", docs/isa.md).

The real S4 (Moffett AI Antoum) ISA is not public; this package defines a machine model, an
instruction set, a binary container, an assembler, a reference interpreter and a cycle model,
with every machine parameter in one target description (s4v1.json).

API for the lowering (stable):

    from s4c.s4 import (load_machine, make, Instr, Program, Symbol, DebugEntry,
                        assemble, disassemble, run, simulate)
    m = load_machine("s4v1")
    ins = make("spu.nm", dst=..., x=..., val=..., idx=..., t=128, o=768, k=768, n=1, m=8,
               pd=..., px=..., dt="f32", tdt="i8", dbg=12)
    p = Program(m, cores=[[..., make("end")]], const=weights_bytes, dram_size=...,
                symbols=[Symbol("input_ids", "input", addr, "i32", (1, 128)), ...],
                debug={12: DebugEntry("linear_3", "/encoder/layer.0/attention/self/query/MatMul")})
    blob = p.to_bytes(); p = Program.from_bytes(blob)
    ps = ProgramSet(m, const, {"1x32": p32, ...}); read_programs(blob)   # programs sharing one const
    text = disassemble(p); p = assemble(text)
    outputs, report = run(p, {"input_ids": ids}, trace=print)
    report = simulate(p)          # cycles only
"""

from s4c.s4.asm import assemble, disassemble
from s4c.s4.cycles import CycleReport, OpStat, simulate
from s4c.s4.interp import run
from s4c.s4.isa import NO_DEBUG, OPS, UNITS, Instr, make
from s4c.s4.machine import Machine, load_machine
from s4c.s4.program import DebugEntry, Program, Symbol
from s4c.s4.program_set import ProgramSet, read_programs

__all__ = [
    "CycleReport", "DebugEntry", "Instr", "Machine", "NO_DEBUG", "OPS", "OpStat", "Program", "ProgramSet",
    "Symbol", "UNITS", "assemble", "disassemble", "load_machine", "make", "read_programs", "run", "simulate",
]
