"""The S4 backend: IR graph -> per-core S4 instruction streams (s4c's S4 ISA v1, docs/isa.md).

`BACKEND` (an `S4Backend`, registered in codegen/registry.py) implements the backend protocol
(codegen/protocol.py) with the typed options `S4Options`:

    built = BACKEND.build(graph, outdir, S4Options(cores=4))  # model.s4, model.s4.asm, model.s4.json
    built.report                                       # cycles, latency, throughput, per-op/unit ...
    runner = BACKEND.load(outdir, S4Options(trace=True))
    outputs = runner.run({"input_ids": ids, ...})      # the reference interpreter (s4c.s4.run)
    runner.summary()                                   # one line: the last run's modelled time

`BACKEND.execute(graph, feeds)` is what the ONNX backend adaptor (s4c.backend) runs for
`backend="s4"`, so ONNX's own node tests run through the S4 path too:
`S4CBackend.prepare(model, backend="s4")`. `build`, `load`, `execute` and `check_sizes` are also
module functions (the same bound methods); each accepts an `S4Options` or a dict of its fields.

Modules (the same shape as codegen/c; no import cycle, tests/test_imports.py):

    lower.py        lower(): the driver (plan, emit, assemble: relocation, deps.py, schedule.py)
    plan.py         Plan: constants evaluated, values, kernel selection, aliases, SRAM residency,
                    DRAM placement (codegen/memory_plan.py)
    program.py      S4Program(Plan): what kernels emit through (row helpers), the emission loop
    stream.py       the instruction stream (Stream), SRAM scratch (Scratch), regions (Region)
    constants.py    the constant segment, Linear weight packing per layout
    base.py         the shared tables (SIZE, S4DT, UNITS, MAX_BLOCK / MAX_M, ALIAS_OPS), the Kernel
                    interface, RowInfo, reject, and the registry KERNELS / @kernel("Op", ...)
    deps.py, schedule.py   dependencies, the list scheduler and semaphores
    report.py       the cycle report
    value_map.py    where every value lives (DRAM home / SRAM-resident rows per core): model.s4.values.json
    debug.py, snapshots.py   `s4c check`: op results of a debug lowering / of the built program; the trace

Kernels (each module registers its own; the S4 kernel of op X is the class under `@kernel("X")`
or, for the elementwise family derived from s4c.ops, elementwise.ELEMENTWISE): linear.py (Linear,
MatMul), transformer.py (MultiHeadAttention, SkipLayerNorm, LayerNorm, Embedding), movement.py
(Transpose / Slice / Concat / ... as index maps -> DMA), gather.py (Gather / GatherND /
GatherElements), elementwise.py (their VPU sequences in vmath.py), reductions.py (Reduce*,
CumSum, Softmax, LayerNormalization), matmul.py (Gemm, MatMul of run-time operands).

How a graph is lowered:

- **Kernels**: every op left after the default pipeline has one; an op (or an op/dtype
  combination) the S4 path cannot run is a TargetError naming the op and its ONNX node.
- **Tiling**: Linear weights are packed per output tile (a multiple of 16 rows: output columns stay
  64-byte aligned in SRAM) of at most ~1 MiB, activations in token tiles when they do not stay
  in SRAM, attention per (sentence part, head); every buffer comes from the core's SRAM scratch,
  so every working set fits the 8 MiB per core.
- **Double buffering**: scratch is allocated next-fit (a ring), so each weight tile gets its own
  buffer and the DMA queue loads tile i+1 (and the next op's tiles) while the SPU works on tile i,
  as far as SRAM allows; the dependencies that buffer reuse creates are tracked exactly.
- **DRAM plan**: constants at 0, then inputs / outputs, then the activations that leave SRAM, placed
  by liveness with reuse (codegen/memory_plan.py); the report gives peak and sum without reuse.
- **Cores**: token rows are split across the cores (whole sentences per core when there are at
  least as many sentences as cores, the estimator's data-parallel mode; otherwise parts of
  sentences, with K/V exchanged through DRAM). A token matrix produced and consumed on the same
  core stays in that core's SRAM (liveness-planned); cross-core data moves DMA -> DRAM -> DMA,
  ordered by global semaphores.
- **Scheduler**: a list scheduler over the per-core DMA/SPU/VPU queues (dependencies from the
  opcode table's access functions, costs from its cost functions), then sync.signal / sync.wait on
  one semaphore per unit pair (schedule.py).
- **Precision**: an fp32 graph's functional program is fp32 (checked against onnxruntime to 1e-3);
  its cycle report is the MixInt8bf16 machine's (int8 SPU and weights, bf16 VPU and activations, with
  the quantise / dequantise passes s4c.s4.estimate counts); `precision="f32"` times it as fp32. An
  int8 graph (`--precision int8`) computes what it times (quant.py): int8 weights in the constant
  segment, `dt=i8` SPU ops into i32, the `vpu.dequant` epilogue, `vpu.quant`, bf16 activations
  between int8 GEMMs; every instruction's timing dtype is its functional dtype.
- **Host boundary**: S4 has no i64/bool/f16 storage: int64/int16 inputs go in as i32 (range-checked),
  bool as u8, f16/f64 as f32, converted back on output; empty outputs are made on the host.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from s4c.codegen.protocol import Artifacts, Backend, BackendOptions, Runner
from s4c.errors import S4CError, S4ProgramError, TargetError
from s4c.evaluate import check_inputs
from s4c.gcpause import paused_gc  # the lowering's ~1M instructions, operand dicts and dependency lists
from s4c.ir import Graph, numpy_dtype
from s4c.s4 import ProgramSet, disassemble, load_machine, read_programs
from s4c.s4 import run as run_program

from .base import STORAGE
from . import quant
from .buckets import BucketRunner, buckets_markdown, lower_buckets
from .lower import Lowered, lower
from .report import make_report

FILES = {"s4": "model.s4", "s4_asm": "model.s4.asm", "s4_io": "model.s4.json"}
VALUES_FILE = "model.s4.values.json"     # value_map.py
ASM_DATA_LIMIT = 16 << 20        # constant segments above this are left out of model.s4.asm
BUCKET_KEYS = ("cycles", "latency_s", "batch", "throughput_per_s", "instructions")   # report["buckets"] rows



@dataclass(frozen=True)
class S4Options(BackendOptions):
    """cores:     S4 cores to use (1 .. the machine's)
    machine:   the machine description (a name, e.g. s4v1, or a .json path)
    precision: "mixed" (timed as the MixInt8bf16 machine) or "f32"
    trace:     when run, one line per executed instruction (True: printed; or a callable)
    int8_bf16: int8 graphs (--precision int8): keep activations between int8 GEMMs in bf16, as
               MixInt8bf16 does (quant.py); False keeps them f32 (agrees with the reference evaluator)
    int8_word_table: with int8_bf16, how an int8 graph stores its word embedding table: "i8" (int8
               rows with a per-row f32 scale, dequantised on the VPU) or "bf16" (quant.py)
    sub_blocks, residency, lane_slack, debug_schedule: lowering knobs (plan.py; None = its default)
    seq_buckets: a graph compiled for shape ranges: the sequence lengths to build a program for
               ("32,64,128" or ints; the range maximum is always one); None: buckets.py's default
    stream_batches: also build (not write) a stream of this many batches as one scheduled program and
               time it: the report's simulated steady state (batch_stream.py); 0: only the bound. On
               by default, as it costs under ~30% of a compile: BERT-base 90% 1x128 `s4c compile --target
               s4` 7.05 -> 8.43 CPU s (+20%; bench_compile.py measured +28-31%, df4f452)"""

    cores: int = 4
    machine: str = "s4v1"
    precision: str = "mixed"
    trace: object = None
    sub_blocks: int | None = None
    residency: bool = True
    lane_slack: bool = False
    debug_schedule: bool = False
    int8_bf16: bool = True
    int8_word_table: str = "i8"
    seq_buckets: object = None
    stream_batches: int = 3

    def lowering(self) -> dict:
        """The options as the lowering (plan.py, program.py) reads them (a dict)."""
        opts = {"cores": self.cores, "machine": self.machine, "precision": self.precision,
                "residency": self.residency, "lane_slack": self.lane_slack, "debug_schedule": self.debug_schedule}
        if self.sub_blocks is not None:
            opts["sub_blocks"] = self.sub_blocks
        if not self.int8_bf16:
            opts["int8_bf16"] = False
        if self.int8_word_table != "i8":
            if self.int8_word_table not in quant.WORD_TABLES:
                raise TargetError(f"S4 option int8_word_table must be one of {', '.join(quant.WORD_TABLES)}, "
                                  f"not {self.int8_word_table!r}")
            opts["int8_word_table"] = self.int8_word_table
        return opts


def largest_value(graph):
    """(value, bytes) of the graph's largest tensor (IR storage bytes; shapes of any size), or (None, 0)."""
    best, best_bytes = None, 0
    for v in graph.values():
        itemsize = 2 if v.type.dtype == "bf16" else numpy_dtype(v.type.dtype).itemsize
        nbytes = math.prod(v.type.shape) * itemsize
        if nbytes > best_bytes:
            best, best_bytes = v, nbytes
    return best, best_bytes


class S4Backend(Backend):
    name = "s4"
    options_type = S4Options
    precisions = ("fp32", "int8")     # int8: LinearInt8 / QuantizeInt8 lowered as computed (quant.py)
    shape_ranges = True  # --input-shape NAME=LO..HI dims: one program per bucket in model.s4 (buckets.py)
    description = "S4 instruction streams (model.s4, model.s4.asm) run by the bundled interpreter"

    def check_sizes(self, graph: Graph, options=None) -> None:
        """Before any lowering: every tensor must fit the device's DRAM (the machine's dram_bytes), else
        a TargetError naming the value (lowering one that cannot fit would only take forever)."""
        m = load_machine(self.options(options).machine or "s4v1")
        value, nbytes = largest_value(graph)
        if nbytes > m.dram_bytes:
            raise TargetError(f"value {value.name!r} ({value.type}) takes {nbytes} bytes, more than the "
                              f"{m.dram_bytes} bytes of DRAM of the S4 device ({m.name}); it cannot run on S4")

    def build(self, graph: Graph, outdir, options=None) -> Artifacts:
        options = self.options(options)
        outdir = os.fspath(outdir)
        self.check_sizes(graph, options)
        k = options.stream_batches
        if isinstance(k, bool) or not isinstance(k, int) or not (k == 0 or 2 <= k <= 16):
            raise TargetError(f"S4 stream_batches must be 0 (off) or 2..16, not {options.stream_batches!r}")
        if options.seq_buckets is not None and graph.dim_ranges is None:
            raise TargetError("--seq-buckets needs a sequence range in --input-shape (e.g. input_ids=1x1..256)")
        t0 = time.perf_counter()
        with paused_gc():
            if graph.dim_ranges is not None:
                program, io, bucket_reports, values = lower_buckets(graph, options.lowering(), options.seq_buckets)
                values = {"version": 1, "buckets": values}
            else:
                lowered = lower(graph, {**options.lowering(), "stream_batches": options.stream_batches})
                program, io, bucket_reports, values = lowered.program, lowered.io, None, lowered.values
        t1 = time.perf_counter()
        errors: list = []
        writer = threading.Thread(target=_write, args=(program, os.path.join(outdir, FILES["s4"]), errors))
        # model.s4 (~300 MB: its checksum and write release the GIL) is written while this thread
        # validates the program, disassembles it and runs the report; a failed validation still
        # raises (an invalid model.s4 is left only in the driver's temporary folder)
        writer.start()
        try:
            program.validate()
            with open(os.path.join(outdir, FILES["s4_asm"]), "w") as f:
                f.write(_assembly(program))
            if bucket_reports is None:
                report, md = make_report(lowered, graph)
            else:   # the largest bucket's report, then every bucket's modelled cost
                report, md = bucket_reports[0][2], bucket_reports[0][3]
                report["buckets"] = [{"name": name, "dims": dims, **{k: r[k] for k in BUCKET_KEYS}}
                                     for name, dims, r, _ in bucket_reports]
                md += "\n\n" + buckets_markdown(report["buckets"])
        finally:
            writer.join()
        if errors:
            if isinstance(errors[0], OSError):
                raise S4CError(f"cannot write {FILES['s4']}: {errors[0]}")
            raise errors[0]
        t2 = time.perf_counter()
        report["compile_s"] = {"lower": round(t1 - t0, 3), "write": round(t2 - t1, 3)}
        with open(os.path.join(outdir, FILES["s4_io"]), "w") as f:
            json.dump(io if bucket_reports is not None else {"version": 1, "io": io}, f, indent=1)
        with open(os.path.join(outdir, VALUES_FILE), "w") as f:     # where each value lives: `s4c check`
            json.dump(values, f, separators=(",", ":"))
        return Artifacts({**FILES, "s4_values": VALUES_FILE}, report, md)

    def load(self, outdir, options=None) -> "S4Runner":
        options = self.options(options)
        outdir = os.fspath(outdir)
        path = os.path.join(outdir, FILES["s4"])
        try:
            with open(path, "rb") as f:
                blob = f.read()
            with open(os.path.join(outdir, FILES["s4_io"])) as f:
                meta = json.load(f)
        except FileNotFoundError as e:
            raise S4CError(f"{outdir}: not compiled for s4 ({os.path.basename(e.filename)} missing)") from None
        except (OSError, ValueError) as e:
            raise S4CError(f"{outdir}: {FILES['s4_io']} is corrupt ({e})") from None
        try:
            program = read_programs(blob)
            if isinstance(program, ProgramSet) != (meta.get("version") == 2):
                raise S4ProgramError(f"does not match {FILES['s4_io']} (one is a bucketed build, the other not)")
            if isinstance(program, ProgramSet):
                runners = {b["name"]: S4Runner(program[b["name"]], b["io"], trace=options.trace) for b in meta["buckets"]}
                return BucketRunner(runners, meta)
        except S4ProgramError as e:
            raise S4ProgramError(f"{path}: {e}") from None
        except (KeyError, TypeError) as e:
            raise S4CError(f"{outdir}: {FILES['s4_io']} is corrupt ({type(e).__name__}: {e})") from None
        return S4Runner(program, meta["io"], trace=options.trace)

    def prepare(self, graph: Graph, options: S4Options) -> "S4Runner":
        """Lower `graph` (as it is: no passes) in memory."""
        self.check_sizes(graph, options)
        lowered = lower(graph, options.lowering())
        return S4Runner(lowered.program, lowered.io, trace=options.trace)

    def check_feeds(self, graph: Graph, feeds: dict) -> dict:
        """Feeds of the graph's dtypes and shapes (s4c.evaluate.check_inputs), as the evaluator takes them."""
        return check_inputs(graph, feeds)


def _assembly(program) -> str:
    """model.s4.asm: the disassembly of a validated program, its data only if small."""
    include = len(program.const) <= ASM_DATA_LIMIT
    text = disassemble(program, data=include, validate=False)
    if not include:
        text = (f"; the constant segment ({len(program.const)} bytes) is in model.s4 only: this text "
                f"does not re-assemble\n") + text
    return text


def _write(program, path: str, errors: list) -> None:
    try:
        chunks = program.to_chunks(validate=False)      # build() validates it
        with open(path, "wb") as f:
            f.writelines(chunks)        # big chunks go straight to the file, uncopied
    except Exception as e:      # raised by the caller after join()
        errors.append(e)


class S4Runner(Runner):
    """Runs a program in the reference interpreter, converting at the host boundary."""

    def __init__(self, program, io: dict, trace=None):
        self.program = program
        self.io = io
        self.trace = trace
        self.last_report = None

    def run(self, inputs: dict) -> dict:
        feeds = {}
        known = {e["name"] for e in self.io["inputs"]}
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise S4CError(f"unknown model input(s): {', '.join(map(repr, unknown))}; the model takes "
                           f"{', '.join(repr(e['name']) for e in self.io['inputs'])}")
        for e in self.io["inputs"]:
            if e["name"] not in inputs:
                raise S4CError(f"missing model input {e['name']!r}")
            a = np.asarray(inputs[e["name"]])
            if list(a.shape) != e["shape"]:
                raise S4CError(f"input {e['name']!r} has shape {list(a.shape)}, the compiled model takes {e['shape']}")
            if e["symbol"] is None:
                continue
            feeds[e["symbol"]] = to_device(a, e)
        trace = self.trace
        if trace is True:
            trace = print
        outs, report = run_program(self.program, feeds, trace=trace)
        self.last_report = report
        result = {}
        for e in self.io["outputs"]:
            dtype = numpy_dtype(e["irdt"])
            if e["symbol"] is None:
                result[e["name"]] = np.zeros(e["shape"], dtype)
                continue
            raw = outs[e["symbol"]]
            result[e["name"]] = (raw != 0) if e["irdt"] == "bool" else raw.astype(dtype)
        return result

    def summary(self) -> str | None:
        """One line on the last run's modelled time (the cycle model of the machine it was built for)."""
        r = self.last_report
        if r is None:
            return None
        return (f"s4: modelled {r.total_cycles} cycles = {r.latency_s * 1e3:.3f} ms at {r.clock_hz / 1e9:g} GHz "
                f"on {len(self.program.cores)} core(s), {r.instructions} instructions ({r.machine})")


def to_device(a: np.ndarray, e: dict) -> np.ndarray:
    """A host input in the S4 storage dtype of its symbol (i64 -> i32 checked, bool -> u8, f16/f64 -> f32)."""
    dt = e["dt"]
    if dt == "f32":
        if a.dtype.kind not in "fiub":
            raise S4CError(f"input {e['name']!r}: dtype {a.dtype} is not numeric")
        return a.astype(np.float32)
    if a.dtype.kind == "b":
        a = a.astype(np.uint8)
    if a.dtype.kind not in "iub":
        raise S4CError(f"input {e['name']!r} has dtype {a.dtype}; the model takes integers ({e['irdt']})")
    info = np.iinfo(STORAGE[dt])
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise S4CError(f"input {e['name']!r}: values outside [{info.min}, {info.max}], the range of the S4 "
                       f"{dt} this {e['irdt']} input is stored as")
    return a.astype(info.dtype)


BACKEND = S4Backend()
build = BACKEND.build
load = BACKEND.load
execute = BACKEND.execute
check_sizes = BACKEND.check_sizes

__all__ = ["BACKEND", "S4Backend", "S4Options", "S4Runner", "build", "load", "execute", "check_sizes", "lower",
           "Lowered", "FILES"]
