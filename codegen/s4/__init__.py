"""The S4 backend: IR graph -> per-core S4 instruction streams (s4c's S4 ISA v1, docs/isa.md).

    built = build(graph, outdir, {"cores": 4})        # OUTDIR/model.s4, model.s4.asm, model.s4.json
    built["report"]                                    # cycles, latency, throughput, per-op/unit ...
    runner = load(outdir, {"trace": True})
    outputs = runner.run({"input_ids": ids, ...})      # the reference interpreter (s4c.s4.run)

`execute(graph, inputs)` is what the ONNX backend adaptor (s4c.backend, through the driver) runs for
`backend="s4"`, so ONNX's own node tests run through the S4 path too:
`S4CBackend.prepare(model, backend="s4")`.

Modules: lower.py (planning, memory placement, kernel emission, assembly), emit.py (the emitter,
SRAM scratch, regions), deps.py and schedule.py (dependencies, the list scheduler), weights.py (the
constant segment, Linear weight packing), report.py (the cycle report), kernels.py (the fused row
kernels: Linear, MultiHeadAttention, SkipLayerNorm, LayerNorm, Embedding; the op -> kernel registry)
and the generic kernels (any shape, operands in DRAM): base.py (the Kernel interface, `reject`, the
tile budget), movement.py (Transpose / Slice / Concat / ... as index maps -> DMA), gather.py
(run-time-index Gather / GatherND / GatherElements), elementwise.py (elementwise ops, also as row
kernels; their VPU sequences in vmath.py), reductions.py (Reduce*, CumSum, Softmax, LayerNormalization),
matmul.py (MatMul / Gemm of run-time operands).

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
- **Precision**: the functional program is fp32 (checked against onnxruntime to 1e-3); its cycle
  report is the MixInt8bf16 machine's (int8 SPU and weights, bf16 VPU and activations, with the
  quantise / dequantise passes s4c.s4.estimate counts); `precision="f32"` times it as fp32.
- **Host boundary**: S4 has no i64/bool/f16 storage: int64/int16 inputs go in as i32 (range-checked),
  bool as u8, f16/f64 as f32, converted back on output; empty outputs are made on the host.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import threading
import time
import weakref

import numpy as np

from s4c.errors import S4CError, S4ProgramError, TargetError

from .lower import Lowered, lower

FILES = {"s4": "model.s4", "s4_asm": "model.s4.asm", "s4_io": "model.s4.json"}
ASM_DATA_LIMIT = 16 << 20        # constant segments above this are left out of model.s4.asm


def largest_value(graph):
    """(value, bytes) of the graph's largest tensor (IR storage bytes; shapes of any size), or (None, 0)."""
    from s4c.ir import numpy_dtype
    best, best_bytes = None, 0
    for v in graph.values():
        itemsize = 2 if v.type.dtype == "bf16" else numpy_dtype(v.type.dtype).itemsize
        nbytes = math.prod(v.type.shape) * itemsize
        if nbytes > best_bytes:
            best, best_bytes = v, nbytes
    return best, best_bytes


def check_sizes(graph, options: dict | None = None) -> None:
    """Before any lowering: every tensor must fit the device's DRAM (the machine's dram_bytes), else
    a TargetError naming the value (lowering one that cannot fit would only take forever)."""
    from s4c.s4 import load_machine
    m = load_machine((options or {}).get("machine") or "s4v1")
    value, nbytes = largest_value(graph)
    if nbytes > m.dram_bytes:
        raise TargetError(f"value {value.name!r} ({value.type}) takes {nbytes} bytes, more than the "
                          f"{m.dram_bytes} bytes of DRAM of the S4 device ({m.name}); it cannot run on S4")


def build(graph, outdir: str, options: dict | None = None) -> dict:
    options = dict(options or {})
    check_sizes(graph, options)
    t0 = time.perf_counter()
    with _gc_paused():
        lowered = lower(graph, options)
    t1 = time.perf_counter()
    program = lowered.program
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
        from .report import make_report
        report, md = make_report(lowered, graph)
    finally:
        writer.join()
    if errors:
        if isinstance(errors[0], OSError):
            raise S4CError(f"cannot write {FILES['s4']}: {errors[0]}")
        raise errors[0]
    t2 = time.perf_counter()
    report["compile_s"] = {"lower": round(t1 - t0, 3), "write": round(t2 - t1, 3)}
    with open(os.path.join(outdir, FILES["s4_io"]), "w") as f:
        json.dump({"version": 1, "io": lowered.io}, f, indent=1)
    return {"files": dict(FILES), "report": report, "report_md": md}


@contextlib.contextmanager
def _gc_paused():
    """The lowering makes ~1M small objects (instructions, operand dicts, dependency lists) that
    all stay alive until it returns: the cyclic GC's collections would only traverse them again and
    again (0.1-0.3 s for BERT-base). Reference counting still frees everything else."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _assembly(program) -> str:
    """model.s4.asm: the disassembly of a validated program, its data only if small."""
    from s4c.s4 import disassemble
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


class S4Runner:
    """Runs a program in the reference interpreter, converting at the host boundary."""

    def __init__(self, program, io: dict, trace=None):
        self.program = program
        self.io = io
        self.trace = trace
        self.last_report = None

    def run(self, inputs: dict) -> dict:
        from s4c.s4 import run
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
        outs, report = run(self.program, feeds, trace=trace)
        self.last_report = report
        result = {}
        for e in self.io["outputs"]:
            dtype = _np_dtype(e["irdt"])
            if e["symbol"] is None:
                result[e["name"]] = np.zeros(e["shape"], dtype)
                continue
            raw = outs[e["symbol"]]
            result[e["name"]] = (raw != 0) if e["irdt"] == "bool" else raw.astype(dtype)
        return result


    def run_summary(self) -> str | None:
        """One line on the last run's modelled time (the cycle model of the machine it was built for)."""
        r = self.last_report
        if r is None:
            return None
        return (f"s4: modelled {r.total_cycles} cycles = {r.latency_s * 1e3:.3f} ms at {r.clock_hz / 1e9:g} GHz "
                f"on {len(self.program.cores)} core(s), {r.instructions} instructions ({r.machine})")


def _np_dtype(irdt: str):
    from s4c.ir import numpy_dtype
    return numpy_dtype(irdt)


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
    info = np.iinfo({"i32": np.int32, "i8": np.int8, "u8": np.uint8, "u16": np.uint16}[dt])
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise S4CError(f"input {e['name']!r}: values outside [{info.min}, {info.max}], the range of the S4 "
                       f"{dt} this {e['irdt']} input is stored as")
    return a.astype(info.dtype)


def load(outdir: str, options: dict | None = None) -> S4Runner:
    from s4c.s4 import Program
    options = dict(options or {})
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
        program = Program.from_bytes(blob)
    except S4ProgramError as e:
        raise S4ProgramError(f"{path}: {e}") from None
    return S4Runner(program, meta["io"], trace=options.get("trace"))


# -- the ONNX backend adaptor's "s4" executor (found by s4c.backend through the driver) --------------
_COMPILED: dict[int, tuple] = {}


def execute(graph, inputs: dict) -> dict:
    """Compile `graph` for S4 (memoised on the graph object) and run it in the interpreter."""
    key = id(graph)
    entry = _COMPILED.get(key)
    if entry is None or entry[0]() is not graph:
        check_sizes(graph)
        lowered = lower(graph, {"cores": 4})
        runner = S4Runner(lowered.program, lowered.io)
        _COMPILED[key] = (weakref.ref(graph), runner)
        weakref.finalize(graph, _COMPILED.pop, key, None)
        entry = _COMPILED[key]
    from s4c.evaluate import check_inputs
    return entry[1].run(check_inputs(graph, inputs))


__all__ = ["build", "load", "execute", "check_sizes", "S4Runner", "lower", "Lowered", "FILES"]
