"""`s4c compare [LABEL=]A.onnx [LABEL=]B.onnx ... --input-shape ... [--accuracy LABEL=0.885 ...]`: the
sparse-large vs dense-small trade-off for the user's own models.

Each model is compiled for both targets (OUTDIR/<label>/); per model the table gives its parameters
and nonzeros (float weights of the ONNX file), the S4 modelled latency and throughput (the cycle
model of report.json), the measured C latency (median of `repeat` runs after one warm-up, on
synthetic inputs: masks all ones, token types zero, ids below 100), and the accuracy the user gives.
Written to OUTDIR/compare.md and compare.json, plus compare.png (throughput vs accuracy, or vs
nonzeros without accuracies) where matplotlib is installed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from s4c.errors import S4CError


@dataclass
class ModelRow:
    label: str
    path: str
    parameters: int
    nonzeros: int
    s4_latency_ms: float
    s4_throughput_per_s: float
    c_latency_ms: float
    c_throughput_per_s: float
    accuracy: float | None
    layers: int


def parse_model_args(items) -> list[tuple[str, str]]:
    """[LABEL=]PATH items -> [(label, path)], labels unique (the file stem, its folder's name when
    the stem is 'model', numbered when repeated)."""
    out, seen = [], {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or label.endswith(".onnx"):
            path = item
            stem = os.path.splitext(os.path.basename(path))[0]
            label = os.path.basename(os.path.dirname(os.path.abspath(path))) if stem == "model" else stem
        if label in seen:
            seen[label] += 1
            label = f"{label}-{seen[label]}"
        else:
            seen[label] = 1
        out.append((label, path))
    return out


def parse_accuracy(items, labels) -> dict[str, float]:
    acc = {}
    for item in items:
        label, sep, value = item.rpartition("=")
        if not sep or not label:
            raise S4CError(f"--accuracy {item!r}: expected LABEL=VALUE (labels: {', '.join(labels)})")
        if label not in labels:
            raise S4CError(f"--accuracy {item!r}: no model labelled {label!r} (labels: {', '.join(labels)})")
        try:
            acc[label] = float(value)
        except ValueError:
            raise S4CError(f"--accuracy {item!r}: {value!r} is not a number") from None
    return acc


def count_parameters(path: str) -> tuple[int, int]:
    """(parameters, nonzeros) over the float initializers / Constant tensors of an ONNX model."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(path)
    except Exception as e:  # noqa: BLE001
        raise S4CError(f"{path}: cannot read the ONNX model ({type(e).__name__}: {e})") from None
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.name == "value" and a.t is not None]
    params = nonzeros = 0
    for t in tensors:
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f" and a.ndim >= 1 and a.size > 1:
            params += int(a.size)
            nonzeros += int(np.count_nonzero(a))
    return params, nonzeros


def compare(models, input_shapes: dict, outdir, accuracies: dict | None = None, repeat: int = 10,
            threads: int | None = None, progress=None) -> list[ModelRow]:
    """Compile and measure every (label, path) of `models`; write compare.md / .json / .png."""
    from s4c.driver import compile, runner_for
    from s4c.layer_plot import synthetic_inputs

    say = progress or (lambda msg: None)
    accuracies = accuracies or {}
    outdir = os.fspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    rows = []
    for label, path in models:
        if not os.path.exists(path):
            raise S4CError(f"{path}: no such file")
        say(f"{label}: compiling {path}")
        compiled = compile(path, input_shapes=input_shapes, target="all", outdir=os.path.join(outdir, label),
                           time_layers=True)
        params, nonzeros = count_parameters(path)
        s4 = compiled.report.get("s4", {})
        runner = runner_for(compiled, "c", {"threads": threads} if threads else None)
        feeds = synthetic_inputs(compiled.graph)
        runner.run(feeds)
        times = []
        for _ in range(max(repeat, 1)):
            t0 = time.perf_counter()
            runner.run(feeds)
            times.append(time.perf_counter() - t0)
        c_ms = float(np.median(times) * 1e3)
        batch = int(s4.get("batch", 1) or 1)
        layers = sum(1 for op in compiled.graph.ops if op.op == "MultiHeadAttention")
        rows.append(ModelRow(label, path, params, nonzeros, float(s4.get("latency_s", float("nan"))) * 1e3,
                             float(s4.get("throughput_per_s", float("nan"))), c_ms, batch * 1e3 / c_ms,
                             accuracies.get(label), layers))
        say(f"{label}: s4 {rows[-1].s4_throughput_per_s:.0f}/s, c {c_ms:.2f} ms")
    shapes = {k: list(v) for k, v in input_shapes.items()}
    with open(os.path.join(outdir, "compare.json"), "w") as f:
        json.dump({"input_shapes": shapes, "repeat": repeat, "threads": threads,
                   "models": [asdict(r) for r in rows]}, f, indent=1)
    plot = write_plot(rows, os.path.join(outdir, "compare.png"))
    with open(os.path.join(outdir, "compare.md"), "w") as f:
        f.write(markdown(rows, shapes, repeat, "compare.png" if plot else None) + "\n")
    return rows


def markdown(rows: list[ModelRow], shapes: dict, repeat: int, plot: str | None = None) -> str:
    shape = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items()) or "as exported"
    lines = [f"Inputs {shape}; C latency: median of {repeat} runs after one warm-up; S4: the cycle model.", "",
             "| model | layers | parameters | nonzeros | density | S4 modelled ms | S4 inferences/s | C ms | "
             "C inferences/s | accuracy |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        acc = "-" if r.accuracy is None else f"{r.accuracy:g}"
        dens = r.nonzeros / r.parameters if r.parameters else float("nan")
        lines.append(f"| {r.label} | {r.layers} | {r.parameters / 1e6:.1f}M | {r.nonzeros / 1e6:.1f}M | {dens:.3f} | "
                     f"{r.s4_latency_ms:.3f} | {r.s4_throughput_per_s:,.0f} | {r.c_latency_ms:.2f} | "
                     f"{r.c_throughput_per_s:,.1f} | {acc} |")
    if plot:
        lines += ["", f"![throughput vs accuracy]({plot})"]
    return "\n".join(lines)


def write_plot(rows: list[ModelRow], path: str) -> bool:
    """S4 modelled and C measured throughput against accuracy (or nonzeros); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    with_acc = [r for r in rows if r.accuracy is not None]
    use_acc = bool(with_acc)
    pts = with_acc if use_acc else rows
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "s4_throughput_per_s", "S4 modelled"), (axes[1], "c_throughput_per_s", "C measured")):
        for r in pts:
            x = r.accuracy if use_acc else r.nonzeros / 1e6
            y = getattr(r, key)
            ax.scatter([x], [y], s=40)
            ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("accuracy" if use_acc else "nonzero parameters (M)")
        ax.set_ylabel("inferences / s")
        ax.set_yscale("log")
        ax.set_title(f"{title} throughput")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
