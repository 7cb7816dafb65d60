"""What every S4 kernel module shares: the `Kernel` interface the lowering calls (check, row_info,
temp_dram, emit, ...), `reject` (the TargetError naming the op and its ONNX node), the SRAM tile
budget of the generic kernels, and the integer storage types the VPU cannot compute on exactly.

The kernels themselves: movement.py (data movement), gather.py (run-time-index Gather / GatherND),
elementwise.py, reductions.py (Reduce*, CumSum, Softmax, LayerNormalization), matmul.py (MatMul / Gemm of
run-time operands), kernels.py (the model-level kernels and the op -> kernel registry).
"""

from __future__ import annotations

from s4c.errors import TargetError

TILE_BUDGET = 1 << 20
# 32/64-bit integers: the VPU has no integer ALU and fp32 holds them exactly only below 2^24
INT32ISH = ("i32", "i64")


def _where(op) -> str:
    return f" (ONNX node {op.onnx_nodes[0]!r})" if op.onnx_nodes else ""


def reject(op, why: str):
    raise TargetError(f"S4 lowering: op {op.op} -> {op.outputs[0].name!r}{_where(op)}: {why}")


class Kernel:
    def check(self, L, op) -> None:
        pass

    def interleaved(self, L, op) -> bool:
        """Whether the op works on its row blocks interleaved rather than one after the other."""
        return False

    def row_info(self, L, op):
        return None

    def temp_dram(self, L, op) -> int:
        return 0

    def emit(self, L, op) -> None:
        raise NotImplementedError
