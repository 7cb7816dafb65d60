"""The `s4c` command line: compile, run, check, compare, inspect, calibrate, sparsify.

Errors caused by the input are one line `error: ...` on stderr and exit code 2; a bug in s4c is
one line and exit code 1. `--debug` shows the traceback instead."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from s4c import __version__
from s4c.errors import S4CError


# The backends' names, spelt out so that building the parser imports no backend (codegen/registry.py
# is the list; tests/test_backend_protocol.py checks these against it).
COMPILE_TARGETS = ("ir", "s4", "c", "all")
CALIBRATE_TARGETS = ("c",)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s4c", description="Compile pruned ONNX models for the S4 accelerator and C.")
    p.add_argument("--version", action="version", version=f"s4c {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="{compile,run,check,compare,inspect,calibrate,sparsify}")

    c = sub.add_parser("compile", help="import, optimise and build a model")
    c.add_argument("model", help="ONNX model file")
    c.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    c.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                   help="bind an input's shape, e.g. input_ids=1x128 (or 1,128); repeatable")
    c.add_argument("--target", default="all", choices=COMPILE_TARGETS)
    c.add_argument("--passes", default="default", metavar="PIPELINE",
                   help="a named pipeline (none, cleanup, default) or 'pass-a,pass-b{key=value}'")
    c.add_argument("--print-ir", action="store_true", help="print the IR after the pipeline")
    c.add_argument("--print-after-all", action="store_true")
    c.add_argument("--print-after", action="append", default=[], metavar="PASS")
    c.add_argument("--time-passes", action="store_true")
    c.add_argument("--verify-each", action="store_true")
    c.add_argument("--dump-dir", metavar="DIR", help="IR text and ONNX after every pass")
    c.add_argument("--layout", action="append", default=[], metavar="WEIGHT_OR_GLOB=LAYOUT",
                   help="force a weight's layout, e.g. '*.query.*=bsr16x1' (dense, csr, bsrRxC, nmN:M)")
    c.add_argument("--layout-default", metavar="LAYOUT", help="use this layout wherever no --layout matches")
    c.add_argument("--cores", type=int, default=4, help="S4 cores to use (1-4)")
    c.add_argument("--seq-buckets", default=None, metavar="T1,T2,...",
                   help="S4 with a sequence range (input_ids=1..4x1..256): one program per listed length (the "
                        "range maximum always added), e.g. 32,64,128,256; default: the powers of two from 32 up "
                        "to the maximum, and the maximum (batch: powers of two from 1, and the maximum)")
    c.add_argument("--s4-stream-batches", type=int, default=3, metavar="K",
                   help="S4 report: time a stream of K batches scheduled as one program for the steady-state "
                        "throughput beside latency mode (0: only the busiest-unit bound; it costs 20-30%% of the compile)")
    c.add_argument("--cc", default=None, help="C compiler for --target c (default: $CC or cc)")
    c.add_argument("--cflags", default=None, help="C flags (default: -O3 -march=native, plus OpenMP when available)")
    c.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                   help="int8: quantize-int8 after the pipeline (int8 weights per channel, int8 activations)")
    c.add_argument("--calibration-data", metavar="CALIB.npz",
                   help="int8: samples for static activation scales, one array per input shaped [N, *input shape]")
    c.add_argument("--calibration-method", default="percentile", choices=("minmax", "percentile", "entropy"),
                   help="int8: how a calibrated activation's clip threshold is chosen (default: percentile 99.99)")
    c.add_argument("--time-layers", action="store_true",
                   help="also run the built C library on synthetic inputs and put its time per layer in report.md")
    c.add_argument("--accuracy-data", metavar="HELDOUT.npz",
                   help="int8: held-out samples (same format) the report's accuracy is also measured on")

    r = sub.add_parser("run", help="run a compiled model")
    r.add_argument("outdir", metavar="OUTDIR")
    r.add_argument("--backend", default="ref", help="ref, s4 or c")
    r.add_argument("--inputs", metavar="IN.npz", help="inputs keyed by ONNX input name")
    r.add_argument("-o", "--output", metavar="OUT.npz")
    r.add_argument("--repeat", type=int, default=0, metavar="N", help="one warm-up, then N timed runs")
    r.add_argument("--threads", type=int, default=None, metavar="N", help="threads for the C backend")
    r.add_argument("--trace", action="store_true", help="S4: one line per executed instruction")
    r.add_argument("--profile", action="store_true", help="C: time per op instance and per kernel type")
    r.add_argument("--trace-json", metavar="TRACE.json",
                   help="c: per-step timings (implies --profile), s4: the modelled timeline, as a Chrome/Perfetto trace")

    ck = sub.add_parser("check", help="compare every op's output on each backend with the reference evaluator")
    ck.add_argument("outdir", metavar="OUTDIR")
    ck.add_argument("--inputs", metavar="IN.npz", help="inputs keyed by ONNX input name")
    ck.add_argument("--backends", default=None, metavar="LIST",
                    help="comma-separated: ref,c,s4,onnxruntime (default: the compiled ones, onnxruntime if installed)")
    ck.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-3)")
    ck.add_argument("--rtol", type=float, default=None, help="tolerance relative to max |ref| of the value (default 1e-3)")
    ck.add_argument("--json", metavar="CHECK.json", help="also write the per-op comparison as JSON")
    ck.add_argument("--s4-debug-lowering", action="store_true",
                    help="S4: every value from a debug lowering of the IR (residency off, every value in DRAM) "
                         "instead of snapshots of the built model.s4")

    cp = sub.add_parser("compare", help="parameters, nonzeros, S4 and C throughput, accuracy of several models")
    cp.add_argument("models", nargs="+", metavar="[LABEL=]MODEL.onnx")
    cp.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS")
    cp.add_argument("--accuracy", action="append", default=[], metavar="LABEL=VALUE",
                    help="the model's accuracy, from your own evaluation (repeatable)")
    cp.add_argument("-o", "--output", default="compare", metavar="OUTDIR",
                    help="compare.md, compare.json, compare.png and each model's compile (default: ./compare)")
    cp.add_argument("--repeat", type=int, default=10, metavar="N", help="timed C runs per model (median)")
    cp.add_argument("--threads", type=int, default=None, metavar="N", help="threads for the C backend")

    i = sub.add_parser("inspect", help="summarise an ONNX model or a compiled OUTDIR")
    i.add_argument("target", metavar="MODEL.onnx|OUTDIR")

    sp = sub.add_parser("sparsify", help="project a model's Linear weights onto an N:M pattern by magnitude",
                        description="Keep the N largest |w| of every aligned group of M inputs of each MatMul / "
                                    "Gemm weight (as NVIDIA ASP does for 2:4) and write the result. This costs "
                                    "accuracy: fine-tuning with the mask fixed is the user's job, not s4c's.")
    sp.add_argument("model", metavar="MODEL.onnx")
    sp.add_argument("--pattern", required=True, metavar="nmN:M", help="e.g. nm2:4, nm1:16 (1 <= N <= M <= 32)")
    sp.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    sp.add_argument("--inputs", metavar="IN.npz", help="also report OUT's output deviation from MODEL on these inputs")
    sp.add_argument("--json", metavar="FILE.json", help="also write the per-weight changes as JSON")

    k = sub.add_parser("calibrate", help="microbenchmark a backend's kernels for its layout cost model")
    k.add_argument("--target", required=True, choices=CALIBRATE_TARGETS,
                   help="c: time the C kernels (the S4 model comes from its machine file)")
    k.add_argument("--out", metavar="FILE",
                   help="calibration file (default: $S4C_CACHE/c-costs.json, else ~/.cache/s4c/c-costs.json)")
    k.add_argument("--cc", default=None, help="C compiler (default: $CC or cc)")
    k.add_argument("--cflags", default=None, help="C flags (default: -std=c99 -O3 -march=native -ffp-contract=fast)")
    return p


def cmd_compile(args) -> None:
    from s4c.driver import compile
    from s4c.frontend import parse_shape_binding
    from s4c.passes.instruments import standard_instruments
    from s4c.text import print_graph

    shapes = dict(parse_shape_binding(s) for s in args.input_shape)
    instruments = standard_instruments(verify_each=args.verify_each, print_after_all=args.print_after_all,
                                       print_after=args.print_after, time_passes=args.time_passes,
                                       dump_dir=args.dump_dir)
    backend_options = {"layout_overrides": args.layout, "layout_default": args.layout_default,
                       "cores": args.cores, "cc": args.cc, "cflags": args.cflags, "seq_buckets": args.seq_buckets,
                       "stream_batches": args.s4_stream_batches}
    result = compile(args.model, input_shapes=shapes, target=args.target, passes=args.passes,
                     outdir=args.output, instruments=instruments, backend_options=backend_options,
                     precision=args.precision, calibration_data=args.calibration_data,
                     calibration_method=args.calibration_method, accuracy_data=args.accuracy_data,
                     time_layers=args.time_layers)
    if args.print_ir:
        sys.stdout.write(print_graph(result.graph))
    ops = len(result.graph.ops)
    built = ", ".join(result.targets) or "ir only"
    times = " ".join(f"{k}={v * 1e3:.0f}ms" for k, v in result.timings.items())
    print(f"compiled {args.model} -> {args.output} ({ops} ops; targets: {built}; {times})")
    if result.report["fusion"]["warning"]:  # layers that run on generic kernels: say so, once
        print(f"warning: {result.report['fusion']['warning']}", file=sys.stderr)
    if result.report.get("quantization", {}).get("warning"):  # int8 without calibration data, ...
        print(f"warning: {result.report['quantization']['warning']}", file=sys.stderr)


def _load_inputs(path: str | None, graph) -> dict[str, np.ndarray]:
    if path is None:
        raise S4CError(f"--inputs IN.npz is required; the model takes "
                       f"{', '.join(f'{v.name!r} {v.type}' for v in graph.inputs)}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise S4CError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise S4CError(f"{path}: not a readable .npz file ({e})") from None


def cmd_run(args) -> None:
    from s4c.driver import load_compiled, runner_for

    compiled = load_compiled(args.outdir)
    if args.trace_json and args.backend not in ("c", "s4"):
        raise S4CError(f"--trace-json needs --backend c or s4 (got {args.backend})")
    run_options = {"threads": args.threads, "trace": args.trace,
                   "profile": args.profile or bool(args.trace_json and args.backend == "c")}
    runner = runner_for(compiled, args.backend, {k: v for k, v in run_options.items() if v})
    inputs = _load_inputs(args.inputs, compiled.graph)
    outputs = runner.run(inputs)
    if args.repeat > 0:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            runner.run(inputs)
            times.append((time.perf_counter() - start) * 1e3)
        print(f"latency_ms median={np.median(times):.3f} min={min(times):.3f} max={max(times):.3f}")
    # Backends whose runner models time (S4: the cycle model) say so after the run.
    summary = runner.summary()
    if summary is not None:
        print(summary)
    for name, value in outputs.items():
        print(f"{name}: {value.dtype}{list(value.shape)} mean={float(np.mean(value)):.6g} "
              f"std={float(np.std(value)):.6g}")
    if args.trace_json:
        _write_trace(args.trace_json, args.backend, runner)
    if args.output:
        tmp = args.output + ".tmp.npz"
        np.savez(tmp, **outputs)
        os.replace(tmp, args.output)


def _write_trace(path: str, backend: str, runner) -> None:
    """The run's timeline as a Chrome / Perfetto trace (c: measured per step, s4: the cycle model)."""
    import json

    if backend == "c":
        from s4c.codegen.c.debug import chrome_trace

        trace = chrome_trace(runner.steps, runner.step_times / max(runner.runs, 1), runner.runs)
    else:
        from s4c.codegen.s4.debug import chrome_trace

        trace = chrome_trace(runner.program)
    try:
        with open(path, "w") as f:
            json.dump(trace, f)
    except OSError as e:
        raise S4CError(f"cannot write {path}: {e.strerror}") from None
    print(f"wrote {path} ({sum(1 for e in trace['traceEvents'] if e['ph'] == 'X')} events)")


def cmd_inspect(args) -> None:
    from s4c.inspect import inspect_path

    sys.stdout.write(inspect_path(args.target))


def cmd_calibrate(args) -> None:
    from s4c.codegen.registry import get_backend

    path, summary = get_backend(args.target).calibrate(args.out, cc=args.cc, cflags=args.cflags, progress=print)
    print(f"wrote {path} ({summary})")


def cmd_check(args) -> int:
    import json

    from s4c.check import DEFAULT_ATOL, DEFAULT_RTOL, check
    from s4c.driver import load_compiled

    compiled = load_compiled(args.outdir)
    inputs = _load_inputs(args.inputs, compiled.graph)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    report = check(args.outdir, inputs, backends,
                   atol=DEFAULT_ATOL if args.atol is None else args.atol,
                   rtol=DEFAULT_RTOL if args.rtol is None else args.rtol, s4_debug_lowering=args.s4_debug_lowering)
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    print(report.summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_json(), f, indent=1)
    return 0 if report.ok else 1


def cmd_compare(args) -> None:
    from s4c.compare import compare, parse_accuracy, parse_model_args
    from s4c.frontend import parse_shape_binding

    models = parse_model_args(args.models)
    accuracies = parse_accuracy(args.accuracy, [label for label, _ in models])
    shapes = dict(parse_shape_binding(s) for s in args.input_shape)
    compare(models, shapes, args.output, accuracies, repeat=args.repeat, threads=args.threads,
            progress=lambda msg: print(msg, file=sys.stderr))
    with open(os.path.join(args.output, "compare.md")) as f:
        sys.stdout.write(f.read())
    print(f"wrote {os.path.join(args.output, 'compare.md')} and compare.json")


def cmd_sparsify(args) -> None:
    import json

    from s4c.sparsify import parse_pattern, sparsify

    pattern = parse_pattern(args.pattern)  # before reading anything: a bad pattern is the first error
    inputs = _load_inputs(args.inputs, None) if args.inputs else None
    result = sparsify(args.model, pattern, args.output, inputs)
    print(result.table())
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(result.to_json(), f, indent=1)
        except OSError as e:
            raise S4CError(f"cannot write {args.json}: {e.strerror}") from None
    print(f"wrote {args.output} ({len(result.weights)} weights projected onto {pattern}; fine-tune it to recover "
          f"accuracy)")


COMMANDS = {"compile": cmd_compile, "run": cmd_run, "check": cmd_check, "compare": cmd_compare, "inspect": cmd_inspect,
            "calibrate": cmd_calibrate, "sparsify": cmd_sparsify}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rc = COMMANDS[args.command](args)
    except S4CError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug in s4c: say so in one line, traceback only with --debug
        if args.debug:
            raise
        message = " ".join(str(e).split())
        print(f"error: internal error ({type(e).__name__}): {message} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
