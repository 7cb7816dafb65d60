"""The s4 ISA v1 opcode table: the ONE place listing every opcode with its number, mnemonic, unit,
operand fields (name, kind, binary encoding), semantics text and cost formula. The encoder and
decoder here, the assembler (asm.py), the loader checks (program.py), the interpreter (interp.py),
the cycle model (cycles.py) and the opcode reference in docs/isa.md are all driven from `OPS`.

    from s4c.s4.isa import make, Instr, OPS, BY_MNEMONIC
    ins = make("vpu.add", dst=0x0, a=0x1000, b=0x2000, rows=128, cols=768,
               pd=3072, pa=3072, pb=3072, dt="f32", dbg=7)   # defaults filled, values checked
    ins.mnemonic, ins.spec, ins["rows"], ins.fields()
    encode(ins) -> bytes;  encode_stream(instrs) -> bytes;  decode(buf, pos) -> (Instr, next_pos)
    reference_markdown() -> the generated opcode reference section of docs/isa.md

Binary encoding of one instruction: opcode u8, debug id u32 (0xFFFFFFFF = none), then the fields
in table order, little-endian, each with its kind's struct code (`KINDS`).
The semantics/cost/access/check functions live in ops_dma / ops_spu / ops_vpu / ops_sync.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from s4c.errors import S4ProgramError
from s4c.s4 import dtypes as D
from s4c.s4 import ops_dma, ops_spu, ops_sync, ops_vpu

ISA_VERSION = (1, 0)
NO_DEBUG = 0xFFFFFFFF
UNITS = ("dma", "spu", "vpu")          # the per-core unit queues, in this order everywhere
HEADER = struct.Struct("<BI")


class Kind(NamedTuple):
    fmt: str          # struct code
    lo: float
    hi: float
    doc: str


KINDS = {
    "dram": Kind("Q", 0, 2 ** 64 - 1, "u64 DRAM byte address"),
    "sram": Kind("I", 0, 2 ** 32 - 1, "u32 SRAM byte address (issuing core)"),
    "u32": Kind("I", 0, 2 ** 32 - 1, "u32"),
    "u8": Kind("B", 0, 255, "u8"),
    "bool": Kind("B", 0, 1, "u8, 0 or 1"),
    "dtype": Kind("B", 1, 6, "u8 dtype code (1 f32, 2 bf16, 3 i8, 4 i32, 5 u8, 6 u16)"),
    "tdtype": Kind("B", 0, 6, "u8 dtype code, 0 = same as dt"),
    "unit": Kind("B", 0, 2, "u8 unit (0 dma, 1 spu, 2 vpu)"),
    "sem": Kind("H", 0, 0xFFFF, "u16 semaphore: bit 15 set = global gN, else local lN"),
    "bcast": Kind("B", 0, 3, "u8 broadcast of b (0 full, 1 row, 2 col, 3 scalar)"),
    "f32": Kind("f", -math.inf, math.inf, "f32 immediate (not NaN)"),
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    doc: str
    default: object = None


@dataclass(frozen=True)
class OpSpec:
    code: int
    mnemonic: str
    unit: str                      # "dma" | "spu" | "vpu" | "sync" (unit given by operand) | "ctrl"
    fields: tuple
    summary: str
    semantics: str
    cost_doc: str
    check: Callable
    access: Callable
    cost: Callable
    run: Callable
    inplace: frozenset = frozenset()     # (written, read) operand pairs that may alias exactly
    names: tuple = field(init=False)
    struct: struct.Struct = field(init=False)
    int_bounds: tuple = field(init=False)     # per field (lo, hi) of an integer kind, None for f32

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(f.name for f in self.fields))
        fmt = "<" + "".join(KINDS[f.kind].fmt for f in self.fields)
        object.__setattr__(self, "struct", struct.Struct(fmt))
        bounds = tuple(None if f.kind == "f32" else (KINDS[f.kind].lo, KINDS[f.kind].hi) for f in self.fields)
        object.__setattr__(self, "int_bounds", bounds)

    @property
    def size(self) -> int:
        return HEADER.size + self.struct.size


def F(name, kind, doc, default=None):
    return Field(name, kind, doc, default)


_TDT = F("tdt", "tdtype", "dtype the cycle model charges for (0 = dt)", 0)


def _dt(doc="element dtype"):
    return F("dt", "dtype", doc)


# -- operand field lists ------------------------------------------------------------------------
DMA_LD = (F("dst", "sram", "destination, row 0"), F("src", "dram", "source, row 0"),
          F("rows", "u32", "rows"), F("bytes", "u32", "bytes per row"),
          F("dpitch", "u32", "destination row pitch, bytes"), F("spitch", "u32", "source row pitch, bytes"),
          _dt("element dtype (bytes must be a multiple of its size)"), _TDT)
DMA_ST = (F("dst", "dram", "destination, row 0"), F("src", "sram", "source, row 0")) + DMA_LD[2:]
DMA_GATHER = (F("dst", "sram", "destination, row 0"), F("table", "dram", "table row 0"),
              F("idx", "sram", "i32[rows] row indices"), F("rows", "u32", "rows gathered"),
              F("bytes", "u32", "bytes per row"), F("dpitch", "u32", "destination row pitch"),
              F("tpitch", "u32", "table row pitch"), F("trows", "u32", "rows in the table"),
              _dt(), _TDT)
SPU_MM = (F("dst", "sram", "C[m,n], accumulator dtype"), F("a", "sram", "A[m,k]"),
          F("b", "sram", "B[k,n], or B[n,k] when tb=1"), F("m", "u32", "rows of A and C"),
          F("n", "u32", "columns of C"), F("k", "u32", "reduction length"),
          F("pd", "u32", "C row pitch"), F("pa", "u32", "A row pitch"), F("pb", "u32", "B row pitch"),
          F("tb", "bool", "B is stored transposed ([n,k])", 0), F("acc", "bool", "add to C instead of overwriting", 0),
          _dt("input dtype: f32, bf16 or i8"), _TDT)
SPU_NM = (F("dst", "sram", "Y[t,o], accumulator dtype"), F("x", "sram", "X[t,k] activations"),
          F("val", "sram", "values [o, ceil(k/m)*n], packed"), F("idx", "sram", "u8 offsets [o, ceil(k/m)*n], packed"),
          F("t", "u32", "tokens (rows of X and Y)"), F("o", "u32", "outputs (rows of W)"),
          F("k", "u32", "reduction length (columns of W)"), F("n", "u8", "kept per group"),
          F("m", "u8", "group size (<= 32)"), F("pd", "u32", "Y row pitch"), F("px", "u32", "X row pitch"),
          F("acc", "bool", "add to Y instead of overwriting", 0), _dt("input dtype: f32, bf16 or i8"), _TDT)
SPU_BSR = (F("dst", "sram", "Y[t,o], accumulator dtype"), F("x", "sram", "X[t,k] activations"),
           F("val", "sram", "block values [nnzb, r, c], packed"), F("col", "sram", "block columns [nnzb] (cdt)"),
           F("ptr", "sram", "i32 block-row pointers [ceil(o/r)+1]"), F("t", "u32", "tokens"),
           F("o", "u32", "outputs"), F("k", "u32", "reduction length"), F("r", "u8", "block rows (along o)"),
           F("c", "u8", "block columns (along k)"), F("nnzb", "u32", "stored blocks"),
           F("pd", "u32", "Y row pitch"), F("px", "u32", "X row pitch"),
           F("acc", "bool", "add to Y instead of overwriting", 0), _dt("input dtype: f32, bf16 or i8"),
           F("cdt", "dtype", "block column index dtype: u8, u16 or i32"), _TDT)
VPU_BIN = (F("dst", "sram", "result [rows, cols]"), F("a", "sram", "first input [rows, cols]"),
           F("b", "sram", "second input, shape per bcast"), F("rows", "u32", "rows"), F("cols", "u32", "columns"),
           F("pd", "u32", "dst row pitch"), F("pa", "u32", "a row pitch"),
           F("pb", "u32", "b row pitch (0 unless bcast=full)", 0),
           F("bcast", "bcast", "b is full [rows,cols] / row [cols] / col [rows] / scalar", 0),
           _dt("f32 or bf16"), _TDT)
VPU_UN = (F("dst", "sram", "result [rows, cols]"), F("src", "sram", "input [rows, cols]"),
          F("rows", "u32", "rows"), F("cols", "u32", "columns"), F("pd", "u32", "dst row pitch"),
          F("ps", "u32", "src row pitch"), _dt("f32 or bf16"), _TDT)
VPU_COPY = VPU_UN[:6] + (_dt("any dtype (bytes are copied)"), _TDT)
VPU_AXPB = VPU_UN[:6] + (F("alpha", "f32", "scale"), F("beta", "f32", "offset"), _dt("f32 or bf16"), _TDT)
VPU_FILL = (F("dst", "sram", "result [rows, cols]"), F("rows", "u32", "rows"), F("cols", "u32", "columns"),
            F("pd", "u32", "dst row pitch"), F("value", "f32", "value, converted to dt"), _dt("any dtype"), _TDT)
VPU_SOFTMAX = VPU_UN[:6] + (F("scale", "f32", "input scale (e.g. 1/sqrt(d))"), _dt("f32 or bf16"), _TDT)
VPU_LN = (F("dst", "sram", "result [rows, cols]"), F("src", "sram", "input [rows, cols]"),
          F("gamma", "sram", "scale [cols]"), F("beta", "sram", "shift [cols]"), F("rows", "u32", "rows"),
          F("cols", "u32", "columns (normalised dim)"), F("pd", "u32", "dst row pitch"),
          F("ps", "u32", "src row pitch"), F("eps", "f32", "variance epsilon (>= 0)"), _dt("f32 or bf16"), _TDT)
VPU_RED = (F("dst", "sram", "result vector [rows], packed"), F("src", "sram", "input [rows, cols]"),
           F("rows", "u32", "rows"), F("cols", "u32", "columns reduced"), F("ps", "u32", "src row pitch"),
           _dt("f32 or bf16"), _TDT)
VPU_TRANS = (F("dst", "sram", "result [cols, rows]"), F("src", "sram", "input [rows, cols]"),
             F("rows", "u32", "input rows"), F("cols", "u32", "input columns"),
             F("pd", "u32", "dst row pitch"), F("ps", "u32", "src row pitch"), _dt("any dtype"), _TDT)
VPU_CVT = VPU_UN[:6] + (F("scale", "f32", "multiplier applied before rounding"),
                        F("sdt", "dtype", "source dtype"), _dt("destination dtype"), _TDT)
VPU_QUANT = (F("dst", "sram", "i8 result [rows, cols]"), F("src", "sram", "input [rows, cols] (dt)"),
             F("s", "sram", "f32 scales: [rows] packed (sbc=col) or one scalar (sbc=scalar)"),
             F("rows", "u32", "rows"), F("cols", "u32", "columns"), F("pd", "u32", "dst row pitch"),
             F("ps", "u32", "src row pitch"), F("sbc", "bcast", "scale per row (2 col) or one scalar (3 scalar)"),
             _dt("input dtype: f32 or bf16"), _TDT)
VPU_DEQUANT = (F("dst", "sram", "result [rows, cols] (dt)"), F("src", "sram", "i32 accumulator [rows, cols]"),
               F("cs", "sram", "f32 per-column scales [cols], packed"),
               F("rs", "sram", "f32 per-row scales [rows], packed (read when rsc=1)"),
               F("bias", "sram", "f32 bias [cols], packed (read when hb=1)"),
               F("rows", "u32", "rows"), F("cols", "u32", "columns"), F("pd", "u32", "dst row pitch"),
               F("ps", "u32", "src row pitch"), F("rsc", "bool", "multiply by the per-row scales too", 0),
               F("hb", "bool", "add the bias", 0),
               F("act", "u8", "activation: 0 none, 1 gelu, 2 gelu_tanh, 3 relu", 0),
               _dt("result dtype: f32 or bf16"), _TDT)
VPU_EPILOGUE = (F("dst", "sram", "result [rows, cols] (dt)"), F("src", "sram", "accumulator [rows, cols] (sdt)"),
                F("bias", "sram", "f32 bias [cols], packed (read when hb=1)", 0),
                F("rows", "u32", "rows"), F("cols", "u32", "columns"), F("pd", "u32", "dst row pitch"),
                F("ps", "u32", "src row pitch"), F("hb", "bool", "add the bias", 0),
                F("act", "u8", "activation: 0 none, 1 gelu, 2 gelu_tanh, 3 relu", 0),
                F("sdt", "dtype", "accumulator dtype: f32 or bf16", D.F32),
                _dt("result dtype: f32 or bf16"), _TDT)
SYNC_SIGNAL = (F("unit", "unit", "unit queue that executes it"), F("sem", "sem", "semaphore"))
SYNC_WAIT = SYNC_SIGNAL + (F("value", "u32", "wait until the count is >= value"),)

_DMA_COST = ("dma.overhead + dma.latency + ceil(rows * roundup(bytes*size(tdt)/size(dt), dma.burst_bytes) "
             "/ dma.bytes_per_cycle)")
_VPU_COST = "vpu.overhead + vpu.passes.{op} * ceil(rows*cols / vpu.lanes[tdt])"
_FUSED_COST = ("vpu.overhead + max(vpu.passes over its stages: {stages}, the activation's if act) "
               "* ceil(rows*cols / vpu.lanes[tdt]): one pipelined pass, priced at its slowest stage")
_ELEM = frozenset({("dst", "src")})
_ELEM2 = frozenset({("dst", "a"), ("dst", "b")})
_ROUND = ("Computed in float64 and rounded once to dt (round to nearest even); dst may be exactly "
          "the same tile as the input, otherwise they must not overlap.")


def _bin(code, op, fn, text):
    return OpSpec(code, f"vpu.{op}", "vpu", VPU_BIN, f"Elementwise {text}.",
                  f"dst[i,j] = {op_formula(op)} with b[i,j] taken from the full tile, b[j] (row), "
                  f"b[i] (col) or b[0] (scalar) per bcast. {_ROUND}",
                  _VPU_COST.format(op=op), inplace=_ELEM2, **ops_vpu.binary(op, fn))


def op_formula(op):
    return {"add": "a[i,j] + b", "sub": "a[i,j] - b", "mul": "a[i,j] * b", "div": "a[i,j] / b (IEEE: x/0 = ±inf)",
            "max": "max(a[i,j], b) (NaN if either is NaN)", "min": "min(a[i,j], b) (NaN if either is NaN)"}[op]


def _un(code, op, fn, formula):
    return OpSpec(code, f"vpu.{op}", "vpu", VPU_UN, f"Elementwise {formula}.",
                  f"dst[i,j] = {formula} of src[i,j]. {_ROUND}", _VPU_COST.format(op=op),
                  inplace=_ELEM, **ops_vpu.unary(op, fn))


def _reduce(code, op, fn, what):
    return OpSpec(code, f"vpu.{op}", "vpu", VPU_RED, f"Row {what}.",
                  f"dst[i] = {what} over j of src[i,j], computed in float64, rounded once; dst is a packed "
                  f"vector and must not overlap src.", _VPU_COST.format(op=op), **ops_vpu.reduce(op, fn))


def _mean(x, axis):
    return x.mean(axis=axis)


OPS: tuple[OpSpec, ...] = (
    OpSpec(0x00, "end", "ctrl", (), "End of this core's stream.",
           "Must be the last instruction of every core stream and appear nowhere else. The core is done "
           "when all three unit queues have drained.", "0", **ops_sync.END),
    OpSpec(0x01, "sync.signal", "sync", SYNC_SIGNAL, "Increment a semaphore.",
           "Queued on `unit`; when every earlier instruction of that unit queue has finished, adds 1 to "
           "the semaphore. The new count becomes visible to waiters sync.local_latency (local) or "
           "sync.global_latency (global) cycles after it completes. Counters never decrease.",
           "sync.signal_cycles", **ops_sync.SIGNAL),
    OpSpec(0x02, "sync.wait", "sync", SYNC_WAIT, "Wait for a semaphore count.",
           "Queued on `unit`; stalls that unit queue until the semaphore count is >= value (value 0 never "
           "stalls). It orders memory: everything the signalling units did before their first `value` "
           "signals happens-before everything this unit does after the wait. A wait that can never be "
           "satisfied is reported as a deadlock.", "sync.wait_cycles (after the count is reached)",
           **ops_sync.WAIT),
    OpSpec(0x10, "dma.ld", "dma", DMA_LD, "2-D strided copy DRAM -> SRAM.",
           "For r < rows: sram[dst + r*dpitch : +bytes] = dram[src + r*spitch : +bytes].",
           _DMA_COST, check=ops_dma.ld_check, access=ops_dma.ld_access, cost=ops_dma.ld_cost,
           run=ops_dma.ld_run),
    OpSpec(0x11, "dma.st", "dma", DMA_ST, "2-D strided copy SRAM -> DRAM.",
           "For r < rows: dram[dst + r*dpitch : +bytes] = sram[src + r*spitch : +bytes]. The constant "
           "segment is read-only.", _DMA_COST, check=ops_dma.st_check, access=ops_dma.st_access,
           cost=ops_dma.st_cost, run=ops_dma.st_run),
    OpSpec(0x12, "dma.gather", "dma", DMA_GATHER, "Row gather DRAM -> SRAM (embedding lookup).",
           "For r < rows: i = idx[r] (i32 in SRAM); requires 0 <= i < trows (else a runtime error); "
           "sram[dst + r*dpitch : +bytes] = dram[table + i*tpitch : +bytes].",
           _DMA_COST + " + rows * dma.gather_row_cycles", check=ops_dma.gather_check,
           access=ops_dma.gather_access, cost=ops_dma.gather_cost, run=ops_dma.gather_run),
    OpSpec(0x20, "spu.mm", "spu", SPU_MM, "Dense x dense tile matmul (attention; dense weights).",
           "C[m,n] (+)= A[m,k] @ B (B[k,n], or B[n,k]^T when tb=1). f32/bf16 inputs: exact products summed in "
           "float64, rounded once to the f32 accumulator. i8 inputs: exact integer sum into i32 (wraps "
           "mod 2^32). dst must not overlap a or b.",
           "spu.overhead + ceil(m*n*k / spu.macs_per_cycle.dense[tdt])", **{
               "check": ops_spu.mm_check, "access": ops_spu.mm_access, "cost": ops_spu.mm_cost,
               "run": ops_spu.mm_run}),
    OpSpec(0x21, "spu.nm", "spu", SPU_NM, "Sparse N:M weight x dense activation tile.",
           "W[o,k] holds n values in every group of m columns along k (G = ceil(k/m) groups, the last may "
           "be narrower). Slot s = g*n + j of row i has value val[i,s] at column g*m + idx[i,s]. "
           "Y[t,o] (+)= X[t,k] @ W^T. Offsets must be < m and point inside k (runtime error otherwise); "
           "repeated offsets add. Accumulation as spu.mm.",
           "spu.overhead + ceil(t*o*ceil(k/m)*n / spu.macs_per_cycle.nm[tdt])", **{
               "check": ops_spu.nm_check, "access": ops_spu.nm_access, "cost": ops_spu.nm_cost,
               "run": ops_spu.nm_run}),
    OpSpec(0x22, "spu.bsr", "spu", SPU_BSR, "Sparse BSR (r x c blocks) weight x dense activation tile.",
           "W[o,k] in block-sparse rows: block row br holds blocks ptr[br]..ptr[br+1]-1; block b covers "
           "rows br*r.. and columns col[b]*c.., values val[b] row-major. Lanes past o or k are ignored. "
           "Y[t,o] (+)= X[t,k] @ W^T. ptr must rise from 0 to nnzb and 0 <= col < ceil(k/c) (runtime "
           "error otherwise). Accumulation as spu.mm. CSR is the 1x1 case.",
           "spu.overhead + ceil(t*nnzb*r*c / (spu.macs_per_cycle.bsr[tdt] * min(1, r*c / "
           "spu.bsr_full_rate_block)))", **{
               "check": ops_spu.bsr_check, "access": ops_spu.bsr_access, "cost": ops_spu.bsr_cost,
               "run": ops_spu.bsr_run}),
    _bin(0x30, "add", np.add, "addition"),
    _bin(0x31, "sub", np.subtract, "subtraction"),
    _bin(0x32, "mul", np.multiply, "multiplication"),
    _bin(0x33, "div", np.divide, "division"),
    _bin(0x34, "max", np.maximum, "maximum"),
    _bin(0x35, "min", np.minimum, "minimum"),
    OpSpec(0x40, "vpu.copy", "vpu", VPU_COPY, "2-D strided copy inside SRAM (slicing, re-pitching).",
           "dst[i, :] = src[i, :] byte for byte (any dtype). dst must equal src or not overlap it.",
           _VPU_COST.format(op="copy"), inplace=_ELEM, **ops_vpu.copy()),
    _un(0x41, "exp", np.exp, "exp(x)"),
    _un(0x42, "erf", ops_vpu.erf, "erf(x)"),
    _un(0x43, "gelu", ops_vpu.gelu, "0.5*x*(1 + erf(x/sqrt(2)))"),
    _un(0x44, "gelu_tanh", ops_vpu.gelu_tanh, "0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3)))"),
    _un(0x45, "tanh", np.tanh, "tanh(x)"),
    _un(0x46, "relu", lambda x: np.where(x > 0, x, 0.0 * np.clip(x, -1.0, 0.0)), "max(x, 0)"),
    _un(0x47, "sqrt", np.sqrt, "sqrt(x)"),
    _un(0x48, "rsqrt", lambda x: 1.0 / np.sqrt(x), "1/sqrt(x)"),
    _un(0x49, "recip", lambda x: 1.0 / x, "1/x"),
    OpSpec(0x4A, "vpu.axpb", "vpu", VPU_AXPB, "Affine alpha*x + beta with immediates.",
           f"dst[i,j] = alpha*src[i,j] + beta. {_ROUND}", _VPU_COST.format(op="axpb"), inplace=_ELEM,
           **ops_vpu.axpb()),
    OpSpec(0x4B, "vpu.fill", "vpu", VPU_FILL, "Fill a tile with a constant.",
           "dst[i,j] = value converted to dt (floats: nearest even; ints: round half even, saturate).",
           _VPU_COST.format(op="fill"), **ops_vpu.fill()),
    OpSpec(0x50, "vpu.softmax", "vpu", VPU_SOFTMAX, "Row softmax.",
           f"z = scale*src[i,:]; dst[i,j] = exp(z_j - max z) / sum_j exp(z_j - max z). {_ROUND}",
           _VPU_COST.format(op="softmax"), inplace=_ELEM, **ops_vpu.softmax()),
    OpSpec(0x51, "vpu.layernorm", "vpu", VPU_LN, "Row LayerNorm.",
           "mu = mean_j x[i,j]; var = mean_j (x[i,j]-mu)^2 (biased); dst[i,j] = (x[i,j]-mu)/sqrt(var+eps)"
           f"*gamma[j] + beta[j]. {_ROUND}", _VPU_COST.format(op="layernorm"), inplace=_ELEM,
           **ops_vpu.layernorm()),
    _reduce(0x52, "rsum", np.sum, "sum"),
    _reduce(0x53, "rmax", np.max, "maximum"),
    _reduce(0x54, "rmean", _mean, "mean"),
    OpSpec(0x58, "vpu.trans", "vpu", VPU_TRANS, "Tile transpose (layout change).",
           "dst[j, i] = src[i, j] (any dtype, bytes moved unchanged); dst is [cols, rows] with pitch pd and "
           "must not overlap src.", _VPU_COST.format(op="trans"), **ops_vpu.trans()),
    OpSpec(0x59, "vpu.cvt", "vpu", VPU_CVT, "Dtype conversion with scale (quantise / dequantise).",
           "dst[i,j] = convert_dt(scale * src[i,j]), src read as sdt, computed in float64. To floats: round "
           "to nearest even; to ints: round half to even, saturate, NaN -> 0. dst may equal src exactly "
           "(same element size) or must not overlap it.", _VPU_COST.format(op="cvt"), inplace=_ELEM,
           **ops_vpu.cvt()),
    OpSpec(0x5A, "vpu.quant", "vpu", VPU_QUANT, "Quantise to symmetric int8 (per-tensor or per-row scale).",
           "dst[i,j] = saturate[-127,127](round_half_even(f32(src[i,j] / s))) with s = s[i] (sbc=col) or "
           "s[0] (sbc=scalar): the quotient is the IEEE binary32 one (computed in float64, rounded once to "
           "f32, nearest even), then rounded half to even to an integer and saturated symmetrically; "
           "NaN -> 0. src read as dt (f32 or bf16). dst must not overlap src.",
           "vpu.overhead + (vpu.passes.div + vpu.passes.cvt) * ceil(rows*cols / vpu.lanes[tdt])",
           **ops_vpu.quant()),
    OpSpec(0x5B, "vpu.dequant", "vpu", VPU_DEQUANT,
           "int8 GEMM epilogue: i32 accumulator -> scale, bias, activation (f32 or bf16).",
           "s = rs[i]*cs[j] rounded to f32 when rsc=1, else cs[j]; y = f32(f32(acc[i,j]) * s); when hb=1 "
           "y = f32(y + bias[j]); dst[i,j] = act(y) rounded once to dt. Every step before the activation "
           "is one IEEE binary32 operation (round to nearest even), so f32(acc) * (x_scale*w_scale) + bias "
           "is bit-exact; the activation is float64-accurate before the final rounding to dt (bf16: "
           "round to nearest even to 8 significant bits). dst may be exactly src when dt is f32 (same "
           "element size), otherwise they must not overlap.",
           _FUSED_COST.format(stages="cvt, mul, add if hb"), inplace=_ELEM, **ops_vpu.dequant()),
    OpSpec(0x5C, "vpu.epilogue", "vpu", VPU_EPILOGUE,
           "Float GEMM epilogue: bias and activation in one pass (f32 or bf16).",
           "y = src[i,j] (read as sdt); when hb=1 y = f32(y + bias[j]); dst[i,j] = act(y) rounded once to "
           "dt: the same bits as vpu.add (bcast=row) then the activation's own opcode. dst may be exactly "
           "src when sdt and dt have the same size, otherwise they must not overlap. Under the MixInt8bf16 "
           "timing (tdt bf16) it also stands for the dequantisation of the int8 GEMM's accumulator, a stage "
           "of the same pass.",
           _FUSED_COST.format(stages="cvt, add if hb"), inplace=_ELEM, **ops_vpu.epilogue()),
)

BY_CODE = {op.code: op for op in OPS}
BY_MNEMONIC = {op.mnemonic: op for op in OPS}
# fused VPU ops priced from the passes of the ops they fuse: no vpu.passes.<op> parameter of their own
FUSED_VPU = frozenset({"vpu.quant", "vpu.dequant", "vpu.epilogue"})
VPU_OPS = tuple(op.mnemonic[4:] for op in OPS if op.unit == "vpu" and op.mnemonic not in FUSED_VPU)
END = BY_MNEMONIC["end"].code
SIGNAL = BY_MNEMONIC["sync.signal"].code
WAIT = BY_MNEMONIC["sync.wait"].code
assert len(BY_CODE) == len(OPS) and len(BY_MNEMONIC) == len(OPS)


# -- instructions -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Instr:
    """One instruction: opcode number, operand values in table order, debug-map id."""

    op: int
    args: tuple = ()
    dbg: int = NO_DEBUG

    @property
    def spec(self) -> OpSpec:
        return BY_CODE[self.op]

    @property
    def mnemonic(self) -> str:
        return BY_CODE[self.op].mnemonic

    def fields(self) -> dict:
        return dict(zip(BY_CODE[self.op].names, self.args))

    def __getitem__(self, name: str):
        return self.args[BY_CODE[self.op].names.index(name)]

    def unit(self) -> str:
        """The unit queue the instruction runs on ("dma"/"spu"/"vpu"), or "ctrl" for end."""
        spec = BY_CODE[self.op]
        if spec.unit == "sync":
            return UNITS[self.args[0]]
        return spec.unit


_SEM_RE = re.compile(r"^([lg])(\d+)$")


def parse_value(kind: str, value, what: str = "operand"):
    """Convert a user-facing value (name or number) into the encoded operand value, or raise."""
    try:
        if kind in ("dtype", "tdtype") and isinstance(value, str):
            value = 0 if (kind == "tdtype" and value in ("same", "0")) else D.CODES[value]
        elif kind == "unit" and isinstance(value, str):
            value = UNITS.index(value)
        elif kind == "bcast" and isinstance(value, str):
            value = ops_vpu.BCAST_NAMES.index(value)
        elif kind == "sem" and isinstance(value, str):
            match = _SEM_RE.match(value)
            if not match or int(match.group(2)) >= ops_sync.GLOBAL_BIT:
                raise ValueError
            value = int(match.group(2)) | (ops_sync.GLOBAL_BIT if match.group(1) == "g" else 0)
        elif kind == "bool" and isinstance(value, bool):
            value = int(value)
    except (KeyError, ValueError):
        raise S4ProgramError(f"{what}: bad {kind} value {value!r}") from None
    return check_value(kind, value, what)


def check_value(kind: str, value, what: str = "operand"):
    spec = KINDS[kind]
    if kind == "f32":
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise S4ProgramError(f"{what}: expected a number, got {value!r}")
        value = float(value)
        if math.isnan(value):
            raise S4ProgramError(f"{what}: NaN immediate")
        with np.errstate(over="ignore"):
            value32 = float(np.float32(value))
        if math.isinf(value32) and not math.isinf(value):
            raise S4ProgramError(f"{what}: {value!r} overflows f32")
        return value32
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise S4ProgramError(f"{what}: expected an integer, got {value!r}")
    value = int(value)
    if not spec.lo <= value <= spec.hi:
        raise S4ProgramError(f"{what}: {value} outside [{spec.lo}, {spec.hi}]")
    return value


def make(mnemonic: str, dbg: int | None = None, **fields) -> Instr:
    """Build an instruction by mnemonic with named operands (defaults filled, each value checked).
    Names are accepted for dtypes ("f32"), units ("vpu"), semaphores ("l3"/"g0") and bcast ("row")."""
    spec = BY_MNEMONIC.get(mnemonic)
    if spec is None:
        raise S4ProgramError(f"unknown mnemonic {mnemonic!r}")
    unknown = set(fields) - set(spec.names)
    if unknown:
        raise S4ProgramError(f"{mnemonic}: unknown operand(s) {', '.join(sorted(unknown))}")
    args = []
    for f in spec.fields:
        if f.name in fields:
            value = fields[f.name]
        elif f.default is not None:
            value = f.default
        else:
            raise S4ProgramError(f"{mnemonic}: missing operand {f.name}")
        args.append(parse_value(f.kind, value, f"{mnemonic} {f.name}"))
    debug = NO_DEBUG if dbg is None else check_value("u32", dbg, f"{mnemonic} debug id")
    return Instr(spec.code, tuple(args), debug)


def encode(ins: Instr) -> bytes:
    spec = BY_CODE[ins.op]
    return HEADER.pack(ins.op, ins.dbg) + spec.struct.pack(*ins.args)


def encode_stream(stream) -> bytes:
    """encode() of each instruction of a stream, concatenated (the loop inlined: ~20k instructions)."""
    pack_header = HEADER.pack
    return b"".join([pack_header(ins.op, ins.dbg) + BY_CODE[ins.op].struct.pack(*ins.args) for ins in stream])


def decode(buf, pos: int, where: str = "") -> tuple[Instr, int]:
    """Decode one instruction at buf[pos:]; raises S4ProgramError on anything malformed."""
    if pos + HEADER.size > len(buf):
        raise S4ProgramError(f"{where}truncated instruction header")
    op, dbg = HEADER.unpack_from(buf, pos)
    spec = BY_CODE.get(op)
    if spec is None:
        raise S4ProgramError(f"{where}unknown opcode 0x{op:02x}")
    end = pos + spec.size
    if end > len(buf):
        raise S4ProgramError(f"{where}{spec.mnemonic}: truncated operands")
    args = spec.struct.unpack_from(buf, pos + HEADER.size)
    for f, value in zip(spec.fields, args):
        check_value(f.kind, value, f"{where}{spec.mnemonic} {f.name}")
    return Instr(op, tuple(args), dbg), end


# -- documentation ------------------------------------------------------------------------------
def reference_markdown() -> str:
    """The opcode reference of docs/isa.md, generated from OPS (a test keeps the doc in sync)."""
    lines = ["| code | mnemonic | unit | bytes | summary |", "|---|---|---|---|---|"]
    for op in OPS:
        lines.append(f"| `0x{op.code:02x}` | `{op.mnemonic}` | {op.unit} | {op.size} | {op.summary} |")
    for op in OPS:
        lines += ["", f"### `0x{op.code:02x}` `{op.mnemonic}` ({op.unit})", "", op.summary, ""]
        if op.fields:
            lines += ["| operand | kind | encoding | meaning |", "|---|---|---|---|"]
            for f in op.fields:
                default = "" if f.default is None else f" (default {f.default})"
                lines.append(f"| `{f.name}` | {f.kind} | `{KINDS[f.kind].fmt}` | {f.doc}{default} |")
            lines.append("")
        layout = "".join(KINDS[f.kind].fmt for f in op.fields)
        lines += [f"Encoding: `<BI{layout}` = {op.size} bytes (opcode, debug id, operands).", "",
                  f"Semantics: {op.semantics}", "", f"Cost (cycles): `{op.cost_doc}`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m s4c.s4.isa > reference.md
    print(reference_markdown(), end="")
