"""What the S4 lowering's modules share (this module imports none of them):

- the tables: `S4DT` (IR dtype -> the S4 storage dtype it is carried in), `SIZE` / `STORAGE`
  (bytes per element / numpy storage dtype of an S4 dtype, from the ISA's s4c.s4.dtypes),
  `UNITS` / `UNIT_INDEX` (the per-core unit queues, the ISA's), `MAX_BLOCK` / `MAX_M` (the SPU's
  largest BSR block side and N:M group, s4c.s4.ops_spu), `ALIGN` and `rup`;
- the kernel interface: `Kernel` (check, interleaved, row_info, temp_dram, emit; `L` is the
  S4Program, program.py), `RowInfo` (how a row kernel uses an op), `reject` (the TargetError naming
  the op and its ONNX node) and the registry: `KERNELS[op name]`, filled by `@kernel("Op", ...)` on
  the kernel classes of the kernel modules (plan.py imports them all);
- `ALIAS_OPS` (ops that share their operand's memory when the storage matches), the SRAM tile
  budget of the generic kernels, the integer storage types the VPU cannot compute on exactly.

The kernels: movement.py (data movement), gather.py (run-time-index Gather / GatherND /
GatherElements), elementwise.py, reductions.py (Reduce*, CumSum, Softmax, LayerNormalization),
matmul.py (MatMul / Gemm of run-time operands), linear.py (Linear, MatMul by a constant),
transformer.py (MultiHeadAttention, SkipLayerNorm, LayerNorm, Embedding).
"""

from __future__ import annotations

from dataclasses import dataclass

from s4c.errors import TargetError
from s4c.s4 import dtypes as _dtypes
from s4c.s4.isa import UNITS
from s4c.s4.ops_spu import MAX_BLOCK, MAX_M

SIZE = {_dtypes.NAMES[code]: nbytes for code, nbytes in _dtypes.SIZE.items()}
STORAGE = {_dtypes.NAMES[code]: dtype for code, dtype in _dtypes.STORAGE.items()}   # numpy storage dtype
UNIT_INDEX = {unit: i for i, unit in enumerate(UNITS)}     # a unit's queue within its core
ALIGN = 64               # SRAM rows and buffers, constant arrays (the machine's align)
# the S4 storage dtype of each IR dtype (S4 has no i64 / bool / f16 / f64 storage)
S4DT = {"f32": "f32", "f16": "f32", "f64": "f32", "i64": "i32", "i32": "i32", "i16": "i32", "i8": "i8",
        "u8": "u8", "u16": "u16", "bool": "u8"}
# ops that share their operand's memory (DRAM home or SRAM rows) when dtype and size match
ALIAS_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
TILE_BUDGET = 1 << 20
X_BUDGET = 1536 << 10    # SRAM bytes of one token tile of a row kernel's input
# 32/64-bit integers: the VPU has no integer ALU and fp32 holds them exactly only below 2^24
INT32ISH = ("i32", "i64")


def rup(n: int, a: int = ALIGN) -> int:
    return -(-n // a) * a


def _where(op) -> str:
    return f" (ONNX node {op.onnx_nodes[0]!r})" if op.onnx_nodes else ""


def reject(op, why: str):
    raise TargetError(f"S4 lowering: op {op.op} -> {op.outputs[0].name!r}{_where(op)}: {why}")


def no_kernel(op):
    raise TargetError(f"S4 lowering: op {op.op} -> {op.outputs[0].name!r}{_where(op)} has no S4 kernel")


@dataclass
class RowInfo:
    """How a row kernel uses an op: its [R, C] output view and the inputs it reads row-locally."""
    R: int
    local: tuple = ()              # input indices read as local rows (resident allowed)
    dram_too: tuple = ()           # of those, inputs also read from DRAM (e.g. K/V across cores)


class Kernel:
    def check(self, L, op) -> None:
        pass

    def interleaved(self, L, op) -> bool:
        """Whether the op works on its row blocks interleaved rather than one after the other."""
        return False

    def row_info(self, L, op) -> RowInfo | None:
        return None

    def temp_dram(self, L, op) -> int:
        return 0

    def emit(self, L, op) -> None:
        raise NotImplementedError


KERNELS: dict[str, Kernel] = {}


def kernel(*names: str):
    """Class decorator: one instance of the class is the kernel of every op in `names`
    (`@kernel("Softmax")`; a module with a derived list calls `kernel(*NAMES)(Class)`)."""

    def register(cls):
        instance = cls()
        for name in names:
            if name in KERNELS:
                raise AssertionError(f"S4 kernel for {name} registered twice")
            KERNELS[name] = instance
        return cls

    return register


__all__ = ["SIZE", "STORAGE", "ALIGN", "S4DT", "UNITS", "UNIT_INDEX", "MAX_BLOCK", "MAX_M", "ALIAS_OPS", "TILE_BUDGET", "X_BUDGET",
           "INT32ISH", "rup", "reject", "no_kernel", "RowInfo", "Kernel", "KERNELS", "kernel"]
