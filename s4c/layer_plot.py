"""report.md's time per encoder layer: the S4 cycle model (report.json's per-op cycles, each op's
bottleneck unit, at the machine's clock) and the C library measured per step (`--profile`'s
mechanism: three runs on synthetic inputs after a warm-up), summed by layer (fusion_report.layer_of
on each op's first ONNX node; "embeddings" / "other" outside the layers). A table always; a bar plot,
OUTDIR/report_layers.png, where matplotlib is installed."""

from __future__ import annotations

import os
import re

import numpy as np

from s4c.fusion_report import layer_of

PLOT = "report_layers.png"


def _group(nodes) -> str:
    node = nodes[0] if nodes else ""
    layer = layer_of(node)
    if layer is not None:
        return layer
    return "embeddings" if "embed" in node.lower() else "other"


def _order(name: str):
    m = re.search(r"(\d+)$", name)
    return (0, 0) if name == "embeddings" else ((1, int(m.group(1))) if m else (2, 0))


def synthetic_inputs(graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for timing: masks all ones, token types / positions zero, other ids in [1, 100), floats N(0, 1)."""
    from s4c.ir import numpy_dtype

    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        dt = numpy_dtype(v.dtype)
        name = v.name.lower()
        if np.dtype(dt).kind in "iub":
            if "mask" in name:
                a = np.ones(v.shape, dt)
            elif "type" in name or "position" in name:
                a = np.zeros(v.shape, dt)
            else:
                a = rng.integers(1, 100, size=v.shape).astype(dt)
        else:
            a = rng.standard_normal(v.shape).astype(dt)
        feeds[v.name] = a
    return feeds


def layer_times(outdir: str, graph, report: dict, runs: int = 3, measure_c: bool = True) -> dict[str, dict[str, float]]:
    """{"s4": {layer: ms}, "c": {layer: ms}} for the targets built into `outdir` (C: timed only if
    `measure_c`, i.e. `s4c compile --time-layers`: a compile does not run the model by default)."""
    out: dict[str, dict[str, float]] = {}
    s4 = report.get("s4")
    if s4 and s4.get("ops"):
        hz = float(s4.get("clock_hz") or 1e9)
        per: dict[str, float] = {}
        for op in s4["ops"]:
            key = _group(op.get("onnx_nodes") or [])
            per[key] = per.get(key, 0.0) + op["cycles"] / hz * 1e3
        out["s4"] = per
    cdir = os.path.join(outdir, "c")
    if measure_c and "c" in report and os.path.exists(os.path.join(cdir, "libmodel.so")):
        from s4c.codegen.c.runtime import CModel

        model = CModel(cdir)
        feeds = synthetic_inputs(graph)
        model.run(feeds)
        model.profile = True      # time each step (set after init: no profile table printed at exit)
        for _ in range(runs):
            model.run(feeds)
        per = {}
        for step, t in zip(model.steps, model.step_times / max(model.runs, 1)):
            key = _group(step.get("nodes") or [])
            per[key] = per.get(key, 0.0) + float(t) * 1e3
        out["c"] = per
    return out


def layer_section(outdir: str, graph, report: dict, measure_c: bool = True) -> tuple[str, dict[str, str], dict]:
    """(markdown, files written, report.json section) of the per-layer times (C only if `measure_c`)."""
    times = layer_times(outdir, graph, report, measure_c=measure_c)
    if not times:
        return "", {}, {}
    layers = sorted({k for per in times.values() for k in per}, key=_order)
    cols = [b for b in ("s4", "c") if b in times]
    names = {"s4": "S4 modelled ms", "c": "C measured ms"}
    lines = ["## Time per layer", "",
             "S4: the cycle model's per-op cycles (bottleneck unit) summed by layer; C: the library, timed per "
             "step (3 runs on synthetic inputs).", "",
             "| layer | " + " | ".join(names[b] for b in cols) + " |", "|---|" + "---:|" * len(cols)]
    for layer in layers:
        lines.append(f"| {layer} | " + " | ".join(f"{times[b].get(layer, 0.0):.4f}" for b in cols) + " |")
    files = {}
    if _plot(times, layers, cols, names, os.path.join(outdir, PLOT)):
        lines += ["", f"![time per layer]({PLOT})"]
        files["report_layers_plot"] = PLOT
    return "\n".join(lines), files, {"layers": layers, **{b: times[b] for b in cols}}


def safe_layer_section(outdir: str, graph, report: dict, measure_c: bool = False) -> tuple[str, dict[str, str], dict]:
    """layer_section, or nothing when it cannot be made (the report's extra; never fails a compile)."""
    try:
        return layer_section(outdir, graph, report, measure_c)
    except Exception as e:  # noqa: BLE001
        return f"## Time per layer\n\nnot available ({type(e).__name__}: {e})", {}, {}


def _plot(times, layers, cols, names, path) -> bool:
    try:  # the object API without pyplot: pyplot's import alone took ~0.3 s of a compile
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(5 * len(cols), 3.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(cols), squeeze=False)
    x = np.arange(len(layers))
    for ax, b in zip(axes[0], cols):
        ax.bar(x, [times[b].get(layer, 0.0) for layer in layers], color="tab:blue" if b == "s4" else "tab:orange")
        ax.set_xticks(x)
        ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("ms")
        ax.set_title(names[b])
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True
