"""A stream of batches as one S4 program: what the steady-state throughput is timed on.

    stream = stream_program(lowered, batches=3)   # lowered from lower(..., {"stream_batches": 3})
    stream.program, stream.io[j]                  # batch j's input / output symbols ("<name>.b<j>")
    period = steady_period(single_cycles, stream_cycles, 3)

Latency mode times one batch from an idle chip. Serving, batch j+1's embedding gather and first
weight loads can run under batch j's last layers, and one batch's dependency stalls can be filled
with the other's work. Repeating the *scheduled* program does not show that (each core has one
in-order DMA queue: batch j's last stores block batch j+1's loads), so the K batches are one
*unscheduled* node list that the list scheduler (schedule.py) interleaves:

- Each batch is the single-batch program's instructions with its own data segment (inputs,
  outputs, activations: the program's DRAM data relocated to its own base); the constant segment
  (weights) is shared.
- SRAM is reused as the single-batch plan laid it out (the residency offsets, the scratch ring), so
  every conflict between batch j's uses and batch j+1's is a real dependency (deps.py): the overlap
  the stream gets is the one this SRAM plan allows. Each batch being the same instructions, the
  period measures the overlap alone.
- Batch j's scheduling rank is the single program's (op + SKEW x block, lower.py) plus j times
  one more than the largest: a unit takes batch j+1's work only when none of batch j's is ready (it fills stalls and the drain), and the scheduler's window (256
  instructions per queue) lets batch j+1's head start once batch j's queues are near their end.
  A head start (batch j+1's first ops ranked above batch j's last 10-50%, with a queue order
  interleaving the batches) was tried and was no better overall: BERT-base int8 1x128 period
  1,476,275 cycles vs 1,470,074 without; fp32 BERT-base 20x batch 8 (2 layers) 201,305 vs 206,999;
  re-emitting each batch with the scratch ring going on: 1,499,859 and 204,247.

The steady-state period is (T(K) - T(1)) / (K - 1) cycles per batch (the first batch pays the
pipeline's fill and drain, each further one its period), T from the cycle model of the stream and
of the single-batch program. This program is built only to be timed (and checked in the
interpreter by the tests); `s4c run` executes the single-batch model.s4.
"""

from __future__ import annotations

from dataclasses import dataclass

from s4c.s4 import Program
from s4c.s4.cycles import CycleReport
from s4c.s4.cycles import schedule as cycle_schedule
from s4c.s4.steady import from_report

from .base import rup
from .deps import dependencies
from .lower import SKEW, Lowered, io_symbols, relocate
from .plan import MIN_SCRATCH, WEIGHT_TILE_BYTES
from .schedule import schedule

STREAM_BATCHES = 3        # K: the default stream length


@dataclass
class StreamProgram:
    program: Program
    io: list                  # per batch: {"inputs": [...], "outputs": [...]} as Lowered.io
    batches: int
    data_stride: int          # DRAM bytes of each batch's data segment
    schedule_estimate_cycles: int


def stream_program(lowered: Lowered, batches: int = STREAM_BATCHES) -> StreamProgram:
    """The K-batch stream of a lowering that kept its emission (lower(..., {"stream_batches": K}))."""
    prog = lowered.emitted
    if prog is None:
        raise ValueError("stream_program needs a lowering with stream_batches set (Lowered.emitted)")
    m = prog.m
    em = prog.em
    const_end = rup(len(lowered.program.const), m.align)
    stride = rup(prog.data_bytes + m.align, m.align)
    single_rank = [o + SKEW * b for o, b in zip(em.op_of, em.block_of)]
    span = int(max(single_rank, default=0)) + 1      # every rank of batch j below every rank of j+1
    nodes, rank = [], []
    symbols, io = [], []
    names: set[str] = set()
    for j in range(batches):
        base = const_end + j * stride
        nodes += [(core, relocate(ins, base)) for core, ins in em.nodes]
        rank += [r + j * span for r in single_rank]
        syms, batch_io = io_symbols(prog, base, names, suffix=f".b{j}")
        symbols += syms
        io.append(batch_io)
    dram_size = const_end + batches * stride
    preds = dependencies(nodes, m, prog.cores, const_end, dram_size)
    streams, est = schedule(nodes, preds, m, prog.cores, rank=rank)
    program = Program(m, streams, lowered.program.const, dram_size, symbols, lowered.program.debug)
    return StreamProgram(program, io, batches, stride, est)


def steady_period(single_cycles: int, stream_cycles: int, batches: int) -> float:
    """Cycles per batch in steady state: what each batch after the first adds to the stream."""
    if batches < 2:
        raise ValueError("a steady-state period needs a stream of at least 2 batches")
    return (stream_cycles - single_cycles) / (batches - 1)


def steady_state_section(lowered: Lowered, single: CycleReport, batch: int, const_loaded_bytes: int) -> dict:
    """report.json's s4.steady_state: the bound (s4c.s4.steady: the busiest unit's work per batch),
    the simulated stream when the lowering kept its emission (S4Options.stream_batches), and how the
    weights are held. `single`: the single-batch program's CycleReport."""
    m = lowered.program.machine
    hz = m.clock_hz
    bound = from_report(single)
    section = {
        "latency_cycles": int(single.total_cycles),
        "bound": {"period_cycles": int(bound.period_cycles), "unit": bound.bound,
                  "throughput_per_s": batch * hz / bound.period_cycles if bound.period_cycles else 0.0},
        "weights": weights_residency(lowered, const_loaded_bytes),
        "stream": None,
    }
    prog = lowered.emitted
    if prog is not None:
        k = int(prog.opts["stream_batches"])
        stream = stream_program(lowered, k)
        lowered.emitted = None          # the emission is no longer needed: free it
        rep = cycle_schedule(stream.program)
        period = steady_period(single.total_cycles, rep.total_cycles, k)
        unit = max(rep.unit_busy, key=rep.unit_busy.get)
        idle = {c: v for c, v in rep.unit_idle[unit].items() if v}
        section["stream"] = {
            "batches": k, "cycles": int(rep.total_cycles), "period_cycles": period,
            "throughput_per_s": batch * hz / period if period > 0 else 0.0,
            "gain_over_latency": single.total_cycles / period if period > 0 else 0.0,
            "busiest_unit": unit, "busiest_unit_busy": rep.unit_busy[unit] / max(rep.total_cycles, 1),
            "busiest_unit_idle": {c: v / max(rep.total_cycles, 1) for c, v in idle.items()},
            "instructions": int(rep.instructions),
        }
    return section


def weights_residency(lowered: Lowered, const_loaded_bytes: int) -> dict:
    """How a stream holds the weights: the lowering never keeps constants resident in SRAM; each
    batch streams them from DRAM through each core's scratch ring (plan.WEIGHT_TILE_BYTES tiles,
    several in flight: the DMA loads the next tiles while the SPU works on the current one)."""
    cores = len(lowered.program.cores)
    sram = lowered.program.machine.sram_bytes * cores
    # bytes as the cycle model charges them (int8 weights on the MixInt8bf16 machine)
    return {"mode": "double-buffered", "loaded_per_batch_bytes": int(const_loaded_bytes),
            "sram_bytes_all_cores": int(sram),
            "would_fit_resident": const_loaded_bytes <= sram - cores * MIN_SCRATCH,
            "tile_bytes": WEIGHT_TILE_BYTES}


__all__ = ["StreamProgram", "stream_program", "steady_period", "steady_state_section", "STREAM_BATCHES"]
