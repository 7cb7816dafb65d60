"""Generated parts of docs/isa.md: the opcode reference (from isa.OPS), the machine-parameter table
(from s4v1.json + machine.PARAM_DOCS) and the calibration table (from estimate.py).

    python -m s4c.s4.docgen            # rewrite the generated sections of docs/isa.md in place
    python -m s4c.s4.docgen --check    # exit 1 if any section is stale (tests/test_s4_docs.py does this)

A generated section sits between `<!-- BEGIN GENERATED name -->` and `<!-- END GENERATED name -->`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from s4c.s4 import isa
from s4c.s4.machine import PARAM_DOCS, VPU_PASSES_DOC, load_machine

DOC = Path(__file__).resolve().parents[2] / "docs" / "isa.md"


def _parameters() -> str:
    m = load_machine("s4v1")
    lines = ["| parameter | s4v1 value | status | meaning |", "|---|---|---|---|"]
    for key in sorted(m.params):
        status, text = PARAM_DOCS.get(key, VPU_PASSES_DOC if key.startswith("vpu.passes.") else ("?", "?"))
        value = m.params[key]
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        lines.append(f"| `{key}` | {shown} | {status} | {text} |")
    return "\n".join(lines) + "\n"


def _calibration() -> str:
    from s4c.s4.estimate import CALIBRATION_POINTS, estimate_bert, mlperf_analysis, nm_for

    m = load_machine("s4v1")
    lines = [f"Fitted through the lowering (benchmarks/s4_calibration.py): `spu.macs_per_cycle.dense.i8` = "
             f"{m['spu.macs_per_cycle.dense.i8']:g} (fixed by SparseBERT 1x), `spu.macs_per_cycle.nm.i8` = "
             f"{m['spu.macs_per_cycle.nm.i8']:g} (fixed by 8x) MACs/cycle/core. The analytic estimator under them:", "",
             "| compression | linears as | model sent/s | SparseBERT sent/s | error | layer bound by | "
             "DMA / SPU / VPU utilisation |", "|---|---|---|---|---|---|---|"]
    from s4c.s4.estimate import PAPER_THROUGHPUT

    for c, paper in PAPER_THROUGHPUT.items():
        est = estimate_bert(m, c)
        nm = nm_for(c)
        fmt = "dense `spu.mm`" if nm is None else f"`spu.nm` {nm[0]}:{nm[1]}"
        util = " / ".join(f"{est.utilisation()[u]:.2f}" for u in isa.UNITS)
        tag = " (calibration point)" if c in CALIBRATION_POINTS else " (prediction)"
        lines.append(f"| {c}x{tag} | {fmt} | {est.throughput:.0f} | {paper:.0f} | "
                     f"{est.throughput / paper - 1:+.1%} | {est.layer_bound} | {util} |")
    mlp = mlperf_analysis(m)
    ceil = mlp["unit_ceiling"]
    lines += ["", f"MLPerf v2.1 BERT-large seq 384 (second anchor, not fitted), N:M 1:{mlp['compression']}, "
              f"{mlp['batch_per_core']} sample per core (SRAM working set {mlp['sram_bytes'] / 2**20:.2f} MiB): "
              f"{mlp['predicted']:.0f} samples/s vs {mlp['anchor']} ({mlp['error']:+.1%}), bound by the "
              f"{mlp['bound'].upper()}. Each unit alone allows: SPU {ceil['spu']:.0f}, VPU {ceil['vpu']:.0f}, "
              f"DMA {ceil['dma']:.0f}; the SPU with an infinitely fast `spu.nm` (attention at the dense rate "
              f"only) {mlp['spu_ceiling_infinite_nm']:.0f}. Reaching {0.8 * mlp['anchor']:.0f}/s (-20%) needs "
              f"`spu.macs_per_cycle.nm.i8` >= {mlp['nm_rate_for_low']:.0f} or at most {mlp['seq_for_low']} "
              f"real tokens per sample instead of 384 padded; the anchor itself, {mlp['seq_for_anchor']} tokens."]
    return "\n".join(lines) + "\n"


def sections() -> dict:
    return {"opcodes": isa.reference_markdown(), "parameters": _parameters(), "calibration": _calibration()}


def _pattern(name: str):
    return re.compile(rf"(<!-- BEGIN GENERATED {name} -->\n)(.*?)(<!-- END GENERATED {name} -->)", re.S)


def stale(path: Path = DOC) -> list:
    """Names of generated sections that are missing or out of date in `path`."""
    text = path.read_text(encoding="utf-8")
    out = []
    for name, body in sections().items():
        match = _pattern(name).search(text)
        if not match or match.group(2) != body:
            out.append(name)
    return out


def update(path: Path = DOC) -> None:
    text = path.read_text(encoding="utf-8")
    for name, body in sections().items():
        pattern = _pattern(name)
        if not pattern.search(text):
            raise SystemExit(f"{path}: no GENERATED {name} markers")
        text = pattern.sub(lambda m: m.group(1) + body + m.group(3), text)
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="regenerate the generated sections of docs/isa.md")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    if args.check:
        bad = stale()
        print("stale: " + ", ".join(bad) if bad else "up to date")
        raise SystemExit(1 if bad else 0)
    update()
