"""`--precision`: the driver's quantisation step, between the pass pipeline and the backends.

    fp32   nothing happens (the default; outputs byte-identical to a compile without the option)
    int8   calibration (when `calibration_data` is given): the fp32 graph runs in the reference
           evaluator over every sample, one observer per activation the pass quantises
           (s4c.quantization.calibrate; method minmax, percentile or entropy); then quantize-int8
           (passes/quantize_int8.py) with those clip thresholds (static per-tensor activation
           scales), in the compile's PassManager, so instruments and the report's pass table see it.
           Without calibration data: dynamic per-token activation scales, and a warning.
           Then the accuracy against the fp32 graph (s4c.accuracy) on the calibration samples and
           on `accuracy_data` (held-out samples, same .npz format) when given.

A backend runs a precision when it lists it in its `precisions` attribute (("fp32",) when it has
none); compiling int8 for one that does not is a one-line TargetError before anything is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s4c.accuracy import accuracy_md, compare_graphs, compare_outputs
from s4c.errors import S4CError, TargetError
from s4c.evaluate import evaluate
from s4c.ir import Graph
from s4c.passes.quantize_int8 import QuantizeInt8
from s4c.quantization.calibrate import collect_ranges, load_samples
from s4c.quantization.observers import METHODS

PRECISIONS = ("fp32", "int8")
DEFAULT_METHOD = "percentile"


@dataclass
class QuantizationResult:
    section: dict                                        # report.json["quantization"]
    markdown: str                                        # report.md's section
    warnings: list[str] = field(default_factory=list)    # printed by the CLI, one line each


def check_precision(precision: str, calibration_data, method: str, targets, backends) -> None:
    """One-line errors for a precision / calibration request that cannot be honoured, before import."""
    if precision not in PRECISIONS:
        raise S4CError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if method not in METHODS:
        raise S4CError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if precision == "fp32":
        if calibration_data is not None:
            raise S4CError("--calibration-data is only used with --precision int8")
        return
    for name in targets:
        if precision not in getattr(backends[name], "precisions", ("fp32",)):
            raise TargetError(f"--precision {precision}: the {name} backend cannot run int8 models yet "
                              f"(no lowering of QuantizeInt8 / LinearInt8); compile with --target ir and run "
                              f"with s4c run OUTDIR --backend ref")


def quantize_model(graph: Graph, manager, precision: str, calibration_data=None, method: str = DEFAULT_METHOD,
                   accuracy_data=None) -> QuantizationResult:
    """Quantise `graph` in place (see the module docstring); returns the report section."""
    samples = load_samples(calibration_data, graph) if calibration_data is not None else []
    held_out = load_samples(accuracy_data, graph, "accuracy data") if accuracy_data is not None else []
    warnings = []
    fp32 = graph.clone() if held_out else None  # shares the weight arrays; the held-out reference
    ranges = {}
    fp32_outputs: list = []
    if samples:
        observers = collect_ranges(graph, samples, method, outputs=fp32_outputs)
        ranges = {name: obs.summary() for name, obs in observers.items()}
        step = QuantizeInt8(amax={name: obs.amax() for name, obs in observers.items()}, activations="static")
        activations = "static"
    else:
        step = QuantizeInt8(activations="dynamic")
        activations = "dynamic"
        warnings.append("--precision int8 without --calibration-data: activations are quantised per token at "
                        "run time (dynamic scales); give a calibration set for static per-tensor scales")
    done = len(manager.results)
    manager.run(graph, [step])
    stats = dict(manager.results[done][1].stats) if len(manager.results) > done else {}
    if not stats.get("LinearInt8"):
        warnings.append("--precision int8: no Linear was quantised (the pipeline fused none); the model stays fp32")

    sets = {}
    if samples:
        sets["calibration"] = {"samples": len(samples), "outputs": compare_outputs(
            fp32_outputs, [evaluate(graph, feeds) for feeds in samples])}
    if held_out:
        sets["held-out"] = compare_graphs(fp32, graph, held_out)
    section = {
        "precision": precision,
        "weights": "int8, symmetric per output channel",
        "activations": activations + (", per tensor" if activations == "static" else ", per token"),
        "calibration": ({"file": str(calibration_data), "samples": len(samples), "method": method}
                        if samples else None),
        "pass": str(step),
        "stats": stats,
        "ranges": ranges,
        "accuracy": sets,
        "warning": " ".join(warnings) or None,
    }
    return QuantizationResult(section, quantization_md(section), warnings)


def quantization_md(section: dict) -> str:
    lines = ["## Quantisation", "",
             f"Precision {section['precision']}: weights {section['weights']}; activations {section['activations']}."]
    cal = section["calibration"]
    if cal:
        lines.append(f"Calibrated on {cal['samples']} samples of `{cal['file']}` ({cal['method']}).")
    if section["stats"]:
        lines.append("Pass `" + section["pass"] + "`: " + ", ".join(f"{k}={v}" for k, v in section["stats"].items()) + ".")
    lines += ["", "### Accuracy", ""]
    if section["accuracy"]:
        lines += accuracy_md(section["accuracy"])
    else:
        lines.append("Not measured: no calibration or accuracy data (`--calibration-data`, `--accuracy-data`).")
    if section["ranges"]:
        lines += ["", "### Activation ranges", "", "| activation | min | max | clip at (amax) |", "|---|---|---|---|"]
        for name, r in section["ranges"].items():
            lines.append(f"| `{name}` | {r['min']:.4g} | {r['max']:.4g} | {r['amax']:.4g} |")
    return "\n".join(lines)
