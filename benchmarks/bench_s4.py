"""S4 backend timings on BERT-base (seq 128): compile with `--target s4` and run the program in the
reference interpreter; checks the result against onnxruntime.

    python benchmarks/bench_s4.py                                  # both exporters, 90% sparsity, fp32
    python benchmarks/bench_s4.py --exporters dynamo --sparsity 0.97 --repeat 3
    python benchmarks/bench_s4.py --precision fp32 int8 --repeat 1 --results benchmarks/RESULTS.md

Equivalent command lines (what the figures measure):

    s4c compile MODEL.onnx -o OUT --target s4 --input-shape input_ids=1x128 \\
        --input-shape attention_mask=1x128 --input-shape token_type_ids=1x128 \\
        [--precision int8 --calibration-data calib.npz]
    s4c run OUT --backend s4 --inputs IN.npz

"compile" is the whole `s4c.compile(..., target="s4")` (import, pipeline, IR/weights files, layout
selection, lowering, model.s4 + .asm + report; for int8 also the calibration runs of the fp32
reference evaluator), best of --repeat; its phases are from the driver's timings and the backend's
own split (lower / write). "interpret" is `load(OUT)` (container parse and validation) plus one
`run` (validation, interpretation with the race check, host conversions).

`--precision int8` is the S4's MixInt8bf16 (codegen/s4/quant.py), calibrated on 32 random-token
sentences (`samples(32, seed 0)`: ids uniform over the vocabulary, a padding mask of random length
16..128, token types 0), static per-tensor activation scales (percentile 99.99); the accuracy is
measured on other sentences (`samples(batch, seed 7)`) as the cosine similarity of each output to
onnxruntime fp32. With several precisions the script prints a markdown table (model.s4 bytes and
their share of fp32's, cosine per output, modelled latency and throughput, SRAM spills); `--results
RESULTS.md` writes it between the `<!-- bench_s4 precision table -->` markers there.

Beside latency mode every run prints the steady-state throughput (report.json s4.steady_state): a
stream of 3 batches scheduled as one program and timed by the cycle model (codegen/s4/batch_stream.py),
and the bound (the busiest unit's work per batch, s4c/s4/steady.py); the table's "steady state
(bound)" column holds both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def samples(n: int, seed: int, batch: int = 1, seq: int = 128, vocab: int = 30522) -> dict:
    """n x [batch, seq] random-token sentences: ids uniform in [0, vocab), each sentence's mask cut
    at a random length in [min(16, seq // 8), seq], token types 0."""
    rng = np.random.default_rng(seed)
    m = n * batch
    mask = np.ones((m, seq), np.int64)
    for i, length in enumerate(rng.integers(min(16, max(1, seq // 8)), seq + 1, m)):
        mask[i, length:] = 0
    flat = {"input_ids": rng.integers(0, vocab, (m, seq)), "attention_mask": mask,
            "token_type_ids": np.zeros((m, seq), np.int64)}
    return {k: v.reshape(n, batch, seq) for k, v in flat.items()}


def bench(exporter: str, sparsity: float, repeat: int, workdir: str, check: bool, precision: str = "fp32",
          batch: int = 1, calibration: int = 32) -> dict:
    from bert_base import bert_base
    from oracle import make_feeds, max_abs_diff, ort_outputs

    import s4c.codegen.s4 as s4backend
    from s4c.accuracy import cosine
    from s4c.driver import compile as s4c_compile

    path = bert_base(exporter, sparsity)
    shapes = {n: (batch, 128) for n in NAMES}
    out = os.path.join(workdir, f"{exporter}_{sparsity}_{precision}_b{batch}")
    extra = {}
    if precision == "int8":
        if calibration % batch:
            raise SystemExit(f"--calibration {calibration} must be a multiple of --batch {batch}")
        calib = os.path.join(workdir, f"calib_{calibration}_b{batch}.npz")
        np.savez(calib, **samples(calibration // batch, 0, batch))
        extra = {"precision": "int8", "calibration_data": calib}
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        compiled = s4c_compile(path, input_shapes=shapes, target="s4", outdir=out, **extra)
        t = time.perf_counter() - t0
        if best is None or t < best[0]:
            best = (t, dict(compiled.timings))
    report = json.load(open(os.path.join(out, "report.json")))["s4"]
    if precision == "int8" or batch > 1:
        feeds = {k: v[0] for k, v in samples(1, 7, batch).items()}
    else:
        feeds = make_feeds(list(NAMES), batch=1, seq=128, vocab=30000)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        runner = s4backend.load(out)
        t1 = time.perf_counter()
        got = runner.run(feeds)
        runs.append((time.perf_counter() - t0, t1 - t0))
    err, cos = None, {}
    if check:
        ref = ort_outputs(path, feeds)
        err = max(max_abs_diff({k: got[k] for k in ref}, ref).values())
        cos = {k: float(cosine(got[k], ref[k])) for k in ref}
    return {"exporter": exporter, "sparsity": sparsity, "precision": precision, "batch": batch,
            "compile_s": best[0], "phases": best[1],
            "backend": report.get("compile_s", {}), "interpret_s": min(r[0] for r in runs),
            "load_s": min(r[1] for r in runs), "cycles": report["cycles"], "latency_s": report["latency_s"],
            "throughput_per_s": report["throughput_per_s"], "instructions": report["instructions"],
            "const_bytes": report["dram"]["const_bytes"], "model_s4_bytes": os.path.getsize(os.path.join(out, "model.s4")),
            "sram": report["sram"], "dram_activation_peak": report["dram"]["activation_peak_bytes"],
            "max_abs_err": err, "cosine": cos, "steady_state": report["steady_state"]}


def steady_text(r: dict) -> str:
    """The steady-state throughput beside latency mode: the simulated stream's (when built) and the bound's."""
    st = r["steady_state"]
    s, b = st["stream"], st["bound"]
    sim = (f"{s['throughput_per_s']:,.0f}/s simulated ({s['gain_over_latency']:.3f}x latency mode, "
           f"{s['batches']} batches, limit {s['busiest_unit']} busy {s['busiest_unit_busy']:.1%})") if s else "not simulated"
    return f"steady state {sim}, bound {b['throughput_per_s']:,.0f}/s ({b['unit']})"


MARK_BEGIN, MARK_END = "<!-- bench_s4 precision table -->", "<!-- end bench_s4 precision table -->"


def table(rows: list[dict]) -> str:
    """The fp32-vs-int8 markdown table (one row per exporter and precision)."""
    fp32 = {(r["exporter"], r["batch"]): r["model_s4_bytes"] for r in rows if r["precision"] == "fp32"}
    outs = sorted({k for r in rows for k in r["cosine"]})
    lines = ["| exporter | precision | batch | model.s4 bytes | vs fp32 | "
             + " | ".join(f"cosine {k}" for k in outs)
             + " | modelled latency | modelled throughput | steady state (bound) | SRAM spills |",
             "|---|---|---|---|---|" + "---|" * len(outs) + "---|---|---|---|"]
    for r in rows:
        base = fp32.get((r["exporter"], r["batch"]))
        share = f"{r['model_s4_bytes'] / base:.1%}" if base else "—"
        cos = " | ".join(f"{r['cosine'][k]:.6f}" if k in r["cosine"] else "—" for k in outs)
        spill = f"{r['sram']['spilled_values']} ({r['sram']['spilled_bytes'] / 2**20:.1f} MiB/core)"
        st = r["steady_state"]
        sim = f"{st['stream']['throughput_per_s']:,.0f}" if st["stream"] else "—"
        steady = f"{sim} ({st['bound']['throughput_per_s']:,.0f}) sentences/s"
        lines.append(f"| {r['exporter']} | {r['precision']} | {r['batch']} | {r['model_s4_bytes']:,} | {share} | {cos} | "
                     f"{r['latency_s'] * 1e3:.3f} ms | {r['throughput_per_s']:,.0f} sentences/s | {steady} | {spill} |")
    return "\n".join(lines)


def update_results(path: str, text: str, argv: list[str]) -> None:
    """Replace the block between the markers in `path` with the table (and the command that made it)."""
    with open(path) as f:
        doc = f.read()
    if MARK_BEGIN not in doc or MARK_END not in doc:
        raise SystemExit(f"{path}: no '{MARK_BEGIN}' ... '{MARK_END}' block to replace")
    head, rest = doc.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    cmd = "python benchmarks/bench_s4.py " + " ".join(argv)
    block = f"{MARK_BEGIN}\n\nGenerated by `{cmd}`:\n\n{text}\n\n{MARK_END}"
    with open(path, "w") as f:
        f.write(head + block + tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exporters", nargs="*", default=["torchscript", "dynamo"])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--precision", nargs="+", choices=["fp32", "int8"], default=["fp32"])
    ap.add_argument("--batch", type=int, default=1, help="sentences per run (seq 128)")
    ap.add_argument("--calibration", type=int, default=32, help="int8: calibration sentences")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--results", metavar="RESULTS.md", help="write the precision table into this file's marked block")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for exporter in args.exporters:
            for precision in args.precision:
                r = bench(exporter, args.sparsity, args.repeat, work, not args.no_check, precision, args.batch,
                          args.calibration)
                rows.append(r)
                ph = r["phases"]
                print(f"{exporter:12s} {precision} batch {r['batch']} sparsity {r['sparsity']:.2f}: compile "
                      f"{r['compile_s']:.2f}s (import {ph.get('import', 0):.2f} passes {ph.get('passes', 0):.2f}"
                      + (f" quantize {ph['quantize']:.2f}" if "quantize" in ph else "")
                      + f" build-s4 {ph.get('build-s4', 0):.2f}"
                      f" = lower {r['backend'].get('lower', 0):.2f} + write {r['backend'].get('write', 0):.2f}), "
                      f"interpret {r['interpret_s']:.2f}s (load {r['load_s']:.2f}), {r['instructions']} instructions, "
                      f"model.s4 {r['model_s4_bytes']:,} bytes, modelled latency {r['latency_s'] * 1e3:.3f} ms, "
                      f"SRAM spills {r['sram']['spilled_values']}, {steady_text(r)}"
                      + (f", max |err| {r['max_abs_err']:.1e}" if r["max_abs_err"] is not None else "")
                      + "".join(f", cosine {k} {c:.6f}" for k, c in r["cosine"].items()), flush=True)
    if len(args.precision) > 1 or args.results:
        text = table(rows)
        print(text)
        if args.results:
            update_results(args.results, text, list(argv if argv is not None else sys.argv[1:]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
