"""`s4c sparsify MODEL.onnx --pattern nm1:16 -o OUT.onnx [--inputs IN.npz]`: project every Linear
weight of an ONNX model onto an N:M pattern by magnitude, as NVIDIA's ASP does for 2:4.

A Linear weight is a 2-D floating initializer that a MatMul (input B) or Gemm (input B, `transB`
honoured) multiplies by, possibly through Transpose / Identity / Cast. Along its reduction dim
`in`, each aligned group of M keeps its N largest |w| (ties: the lower offset; the last group may be
short: 768 inputs at 1:20 are 38 groups of 20 and one of 8) - exactly what
`NMLayout(n, m).pack(w, prune=True)` keeps, so the result packs into the pattern without loss.
Weights stored quantised (behind DequantizeLinear / Mul) are left alone and listed as skipped.

Reported per weight: the fraction of its nonzeros kept and the relative Frobenius change
|W' - W|_F / |W|_F; with inputs, per model output the max abs deviation and the cosine similarity
of OUT vs MODEL (onnxruntime when installed, else s4c's reference evaluator). The projection costs
accuracy; recovering it (fine-tuning with the mask fixed) is the user's job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from s4c.accuracy import cosine
from s4c.errors import S4CError
from s4c.evaluate import evaluate
from s4c.frontend import load_onnx
from s4c.sparse import NMLayout, SparseFormatError, parse_layout

# Nodes a weight may pass through on its way from the initializer to the MatMul / Gemm.
_PASS_THROUGH = ("Transpose", "Identity", "Cast")
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16}


@dataclass
class WeightChange:
    name: str                 # the initializer
    nodes: list[str]          # the MatMul / Gemm nodes reading it
    shape: tuple[int, int]    # as W[out, in]
    nnz_before: int
    nnz_after: int
    relative_change: float    # |W' - W|_F / |W|_F (0 for an all-zero weight)

    @property
    def kept(self) -> float:
        """Fraction of the weight's nonzeros the projection kept."""
        return self.nnz_after / self.nnz_before if self.nnz_before else 1.0

    @property
    def density(self) -> float:
        return self.nnz_after / (self.shape[0] * self.shape[1])


@dataclass
class SparsifyResult:
    pattern: NMLayout
    weights: list[WeightChange]
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (initializer, why)
    deviation: dict[str, dict[str, float]] | None = None            # output -> max_abs, cosine
    evaluator: str = ""

    def to_json(self) -> dict:
        return {
            "pattern": str(self.pattern),
            "weights": [{"weight": w.name, "nodes": w.nodes, "shape": list(w.shape), "nnz_before": w.nnz_before,
                         "nnz_after": w.nnz_after, "kept": w.kept, "density": w.density,
                         "relative_change": w.relative_change} for w in self.weights],
            "skipped": [{"weight": name, "why": why} for name, why in self.skipped],
            "deviation": self.deviation, "evaluator": self.evaluator,
        }

    def table(self) -> str:
        rows = [("weight", "W[out,in]", "kept", "density", "rel. change")]
        rows += [(w.name, f"{w.shape[0]}x{w.shape[1]}", f"{w.kept:.3f}", f"{w.density:.3f}",
                  f"{w.relative_change:.4f}") for w in self.weights]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped]
        if self.deviation is not None:
            lines.append(f"output deviation of the projected model ({self.evaluator}):")
            lines += [f"  {name}: max_abs={d['max_abs']:.4g} cosine={d['cosine']:.6f}"
                      for name, d in self.deviation.items()]
        return "\n".join(lines)


def parse_pattern(text: str) -> NMLayout:
    """The N:M pattern named by `text` (`nm1:16`, `nm2:4`, ...); S4CError otherwise."""
    try:
        layout = parse_layout(text)
    except SparseFormatError:
        layout = None
    if not isinstance(layout, NMLayout):
        raise S4CError(f"--pattern {text!r}: not an N:M pattern (nmN:M with 1 <= N <= M <= 32, e.g. nm2:4, "
                       f"nm1:16)")
    return layout


def project(weight: np.ndarray, pattern: NMLayout) -> np.ndarray:
    """W[out, in] with only the N largest |w| of each aligned group of M along `in` kept."""
    as_f32 = np.ascontiguousarray(weight, dtype=np.float32)
    keep = pattern.pack(as_f32, prune=True).to_dense() != 0
    return np.where(keep, weight, np.zeros((), weight.dtype))


def linear_weights(graph: onnx.GraphProto) -> tuple[dict[str, tuple[bool, list[str]]], list[tuple[str, str]]]:
    """({initializer: (stored transposed, i.e. as [in, out]; reading nodes)}, skipped) for every
    MatMul / Gemm weight operand that traces back to a 2-D floating initializer."""
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    found: dict[str, tuple[bool, list[str]]] = {}
    skipped: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        name = node.input[1]
        as_in_out = not (node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute))
        while name not in inits and name in producer and producer[name].op_type in _PASS_THROUGH:
            if producer[name].op_type == "Transpose":
                as_in_out = not as_in_out
            name = producer[name].input[0]
        if name not in inits:
            if name in producer and producer[name].op_type in ("DequantizeLinear", "Mul"):
                skipped[name] = f"stored quantised (behind {producer[name].op_type}); not projected"
            continue
        tensor = inits[name]
        if len(tensor.dims) != 2 or tensor.data_type not in _FLOAT_TYPES:
            skipped[name] = "not a 2-D floating initializer"
            continue
        label = node.name or node.output[0]
        if name in found and found[name][0] != as_in_out:
            skipped[name] = "read in both orientations; not projected"
            continue
        found.setdefault(name, (as_in_out, []))[1].append(label)
    return {k: v for k, v in found.items() if k not in skipped}, sorted(skipped.items())



def sparsify(model_path: str, pattern: str | NMLayout, out_path: str,
             inputs: dict[str, np.ndarray] | None = None) -> SparsifyResult:
    """Project MODEL's Linear weights onto `pattern`, write OUT (external data beside it when MODEL
    keeps its weights externally), and, given inputs, compare OUT's outputs with MODEL's."""
    pattern = parse_pattern(pattern) if isinstance(pattern, str) else pattern
    model, external = _load(model_path)
    weights, skipped = linear_weights(model.graph)
    if not weights:
        raise S4CError(f"{model_path}: no MatMul / Gemm weight initializer to project")
    by_name = {t.name: t for t in model.graph.initializer}
    changes = []
    for name, (as_in_out, nodes) in weights.items():
        stored = numpy_helper.to_array(by_name[name])
        w = stored.T if as_in_out else stored                # W[out, in]
        projected = project(w, pattern)
        norm = float(np.linalg.norm(w.astype(np.float64)))
        change = float(np.linalg.norm((projected - w).astype(np.float64))) / norm if norm else 0.0
        changes.append(WeightChange(name, nodes, w.shape, int(np.count_nonzero(w)),
                                    int(np.count_nonzero(projected)), change))
        by_name[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(projected.T if as_in_out else projected),
                                                       name))
    _save(model, out_path, external)
    result = SparsifyResult(pattern, changes, skipped)
    if inputs is not None:
        result.deviation, result.evaluator = _deviation(model_path, out_path, inputs)
    return result


def _load(path: str) -> tuple[onnx.ModelProto, bool]:
    if not os.path.isfile(path):
        raise S4CError(f"{path}: no such file")
    try:
        model = onnx.load(path, load_external_data=False)
        external = any(external_data_helper.uses_external_data(t) for t in model.graph.initializer)
        if external:
            external_data_helper.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise S4CError(f"{path}: not a readable ONNX model ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    return model, external


def _save(model: onnx.ModelProto, path: str, external: bool) -> None:
    data = os.path.basename(path) + ".data"
    try:
        if external:
            data_path = os.path.join(os.path.dirname(os.path.abspath(path)), data)
            if os.path.exists(data_path):
                os.remove(data_path)  # onnx appends to an existing data file
            onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data)
        else:
            onnx.save_model(model, path)
    except OSError as e:
        raise S4CError(f"cannot write {path}: {e.strerror or e}") from None


def _deviation(model_path: str, out_path: str, inputs: dict[str, np.ndarray]) -> tuple[dict, str]:
    """{output: {max_abs, cosine}} of OUT vs MODEL on `inputs`, and the evaluator's name."""
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        options = ort.SessionOptions()  # its fusions approximate; the comparison wants ONNX semantics
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

        def run(path):
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            return dict(zip(names, session.run(names, {i.name: inputs[i.name] for i in session.get_inputs()})))
        evaluator = f"onnxruntime {ort.__version__}"
    else:
        def run(path):
            shapes = {name: value.shape for name, value in inputs.items()}
            return evaluate(load_onnx(path, input_shapes=shapes), inputs)
        evaluator = "s4c reference evaluator"
    try:
        before, after = run(model_path), run(out_path)
    except KeyError as e:
        raise S4CError(f"--inputs: no array for model input {e}") from None
    except S4CError:
        raise
    except Exception as e:  # onnxruntime's own errors (wrong dtype or shape)
        raise S4CError(f"--inputs: the model does not run on them ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]})") from None
    deviation = {}
    for name, reference in before.items():
        a, b = np.asarray(reference, np.float64), np.asarray(after[name], np.float64)
        deviation[name] = {"max_abs": float(np.max(np.abs(a - b))) if a.size else 0.0, "cosine": cosine(b, a)}
    return deviation, evaluator
