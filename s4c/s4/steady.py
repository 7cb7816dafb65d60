"""Steady-state throughput of an S4 program: a stream of batches, not one.

    st = steady_state(program)              # SteadyState(latency_cycles, period_cycles, bound)
    batch * clock_hz / st.period_cycles     # sentences/s once a stream of batches is running

Latency mode (cycles.schedule) times one batch from an idle chip: the first weight tiles load with
nothing to overlap them, the embedding gather and the last stores run alone, and within the batch
the units wait on each other's results. Serving a stream, the next batch's DMA (its embedding
gather, its weight tiles, streamed into double-buffered tiles: BERT-base's weights are not resident,
they do not fit the SRAM) runs under this batch's compute, and one batch's dependency stalls are
filled by another batch's work. Then each unit of each core is busy for its own work per batch, and
the busiest one sets the period: period = max over (core, unit) of its busy cycles per batch. It is
the bound a stream reaches when the units' queues interleave batches; it needs the SRAM for the
double buffers (the estimator's SRAM-fit check, s4c.s4.estimate.sram_working_set).

Why not simulate the stream by repeating the program: each core has ONE in-order DMA queue, so
batch i's final result stores (which wait for its last VPU work) block batch i+1's loads, and a
program repeated back to back is exactly `copies` latencies (checked on BERT-base: no overlap at
all). The lowering's simulated stream (codegen/s4/batch_stream.py, the report's "steady state")
schedules K batches as one program instead; it reuses one batch's SRAM plan, so it lands between
this bound and the latency, usually near the latency (BERT-base 90% 1x128: latency 1,930,635
cycles, stream period 1,921,175, this bound 1,914,142).
"""

from __future__ import annotations

from dataclasses import dataclass

from s4c.s4.cycles import CycleReport, schedule


@dataclass(frozen=True)
class SteadyState:
    latency_cycles: int          # one batch from an idle chip (cycles.schedule)
    period_cycles: int           # cycles each further batch of a stream adds (the busiest unit's work)
    bound: str                   # that unit, e.g. "c0.spu"

    @property
    def overlap_gain(self) -> float:
        return self.latency_cycles / self.period_cycles if self.period_cycles else 1.0


def from_report(report: CycleReport) -> SteadyState:
    unit = max(report.unit_busy, key=report.unit_busy.get) if report.unit_busy else ""
    return SteadyState(report.total_cycles, report.unit_busy.get(unit, 0), unit)


def steady_state(program, machine=None) -> SteadyState:
    return from_report(schedule(program, machine))
