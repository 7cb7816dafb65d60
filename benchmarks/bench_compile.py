"""Compile time of BERT-base (seq 128, batch 1) for both targets, phase by phase, and OUTDIR's size.

    python benchmarks/bench_compile.py                                  # both exporters, 90%, --target all
    python benchmarks/bench_compile.py --target s4 --sparsity 0 0.9 0.97 --repeat 3
    python benchmarks/bench_compile.py --exporters torchscript --target c --cli --clock cpu
    python benchmarks/bench_compile.py --exporters torchscript --target s4 --cli --clock cpu --compile-args="--s4-stream-batches 0"

By default the figure is the whole `s4c.compile(MODEL, target=..., outdir=...)` in this process
(import, the default pipeline, per-target layout selection, both backends, every file in OUTDIR),
median of --repeat runs on a cached model; `without cc` subtracts the C compiler's own time (the
C backend's report: build_seconds - generate_seconds), as the CPU-performance issue counts it.
`--cli` times the command a user runs instead, `s4c compile MODEL -o OUTDIR ...` in a fresh Python
process (interpreter start and module imports included). `--clock cpu` reports CPU seconds (user +
system, every thread, the C compiler's and other child processes included) instead of wall seconds:
on a machine other jobs load, wall time grows with their load, CPU time much less so.
The phase columns are the driver's wall timings; `write-ir` (model.s4ir + weights.npz) runs in the
background while the backends build, so the phases add up to more than the total.
`outdir MB` is OUTDIR's size on disk; `x wbin` is that over c/weights.bin's (the C build's weights,
each in its compressed layout), the ratio the issue bounds at 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its waited-for children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def sizes(outdir: str) -> dict:
    wbin = os.path.join(outdir, "c", "weights.bin")
    out = {"outdir_mb": folder_bytes(outdir) / 1e6}
    if os.path.exists(wbin):
        out["x_wbin"] = folder_bytes(outdir) / os.path.getsize(wbin)
    return out


def cc_seconds(outdir: str) -> float:
    with open(os.path.join(outdir, "report.json")) as f:
        c = json.load(f).get("c")
    return c["build_seconds"] - c["generate_seconds"] if c else 0.0


def compile_once(path: str, target: str, workdir: str, clock: str) -> dict:
    import s4c

    outdir = os.path.join(workdir, "out")
    start, cpu0 = time.perf_counter(), cpu_seconds()
    compiled = s4c.compile(path, input_shapes={n: (1, 128) for n in NAMES}, target=target, outdir=outdir)
    total = time.perf_counter() - start if clock == "wall" else cpu_seconds() - cpu0
    cc = cc_seconds(outdir) if "c" in compiled.targets else 0.0
    return {"total": total, "cc": cc, "without_cc": total - cc, **compiled.timings, **sizes(outdir)}


def compile_cli(path: str, target: str, workdir: str, clock: str, extra: str = "") -> dict:
    """`s4c compile` in a fresh interpreter (`extra`: more of its options); phases parsed from its summary line."""
    outdir = os.path.join(workdir, "out")
    cmd = [sys.executable, "-m", "s4c.cli", "compile", path, "-o", outdir, "--target", target,
           *[a for n in NAMES for a in ("--input-shape", f"{n}=1x128")], *extra.split()]
    start, cpu0 = time.perf_counter(), cpu_seconds()
    done = subprocess.run(cmd, capture_output=True, text=True)
    total = time.perf_counter() - start if clock == "wall" else cpu_seconds() - cpu0
    if done.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {done.stderr.strip()}")
    phases = {k: int(v) / 1e3 for k, v in re.findall(r"([\w-]+)=(\d+)ms", done.stdout)}
    cc = cc_seconds(outdir) if target in ("c", "all") else 0.0
    return {"total": total, "cc": cc, "without_cc": total - cc, **phases, **sizes(outdir)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"])
    ap.add_argument("--sparsity", type=float, nargs="*", default=[0.9])
    ap.add_argument("--target", default="all", choices=["ir", "s4", "c", "all"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cli", action="store_true", help="time `s4c compile` in a fresh process (imports included)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="total as wall seconds or CPU seconds (user + system, children included)")
    ap.add_argument("--compile-args", default="", help="with --cli: more `s4c compile` options, one string")
    args = ap.parse_args(argv)
    if args.compile_args and not args.cli:
        ap.error("--compile-args needs --cli")

    from bert_base import bert_base

    cols = ["total", "without_cc", "cc", "import", "passes", "build-s4", "build-c", "write-ir", "outdir_mb", "x_wbin"]
    print(f"BERT-base seq 128, --target {args.target}, {'s4c compile (CLI)' if args.cli else 's4c.compile'}, "
          f"total in {args.clock} seconds, median of {args.repeat}; load average {os.getloadavg()[0]:.2f}"
          + (f"; options {args.compile_args}" if args.compile_args else ""))
    print(f"{'exporter':<12} {'sparsity':>8} " + " ".join(f"{c:>10}" for c in cols))
    for exporter in args.exporters:
        for sparsity in args.sparsity:
            path = bert_base(exporter, sparsity)
            runs = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as workdir:
                    runs.append(compile_cli(path, args.target, workdir, args.clock, args.compile_args) if args.cli
                                else compile_once(path, args.target, workdir, args.clock))
            med = {c: statistics.median(r.get(c, 0.0) for r in runs) for c in cols}
            print(f"{exporter:<12} {sparsity:>8g} " + " ".join(f"{med[c]:>10.2f}" for c in cols), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
