"""Accuracy of a lower-precision model against its fp32 reference: the numbers the compile report's
"Accuracy" section gives for `--precision int8`.

Per output, over a set of samples (each run separately through both graphs):

    max_abs_error    max |test - reference| over every element of every sample
    mean_abs_error   mean |test - reference|
    cosine           cosine similarity of test and reference, all samples flattened together
    min_cosine       the worst sample's cosine similarity
    argmax_agreement for classification / QA heads (an output named logits, start_logits or
                     end_logits, or any 2-D [batch, classes] output): the fraction of rows (every
                     position but the last axis) whose argmax over the last axis agrees

    section = compare_graphs(fp32_graph, int8_graph, samples)   # {"samples": N, "outputs": {name: {...}}}
"""

from __future__ import annotations

import numpy as np

from s4c.evaluate import evaluate
from s4c.ir import Graph

HEAD_NAMES = ("logits", "start_logits", "end_logits")


def is_classification_head(name: str, shape: tuple[int, ...]) -> bool:
    """Whether argmax agreement is meaningful for an output: a head by name, or a [batch, classes] output."""
    if not shape or shape[-1] < 2:
        return False
    return name in HEAD_NAMES or len(shape) == 2


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays as flat vectors, in float64 (1.0 when both are all zeros)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def compare_outputs(reference: list[dict[str, np.ndarray]], test: list[dict[str, np.ndarray]]) -> dict:
    """The metrics of each output over paired per-sample results (lists of {output name: array})."""
    outputs = {}
    for name in reference[0]:
        ref = [np.asarray(r[name]) for r in reference]
        got = [np.asarray(t[name]) for t in test]
        if not np.issubdtype(ref[0].dtype, np.floating):
            outputs[name] = {"exact_match": float(np.mean([np.array_equal(r, g) for r, g in zip(ref, got)]))}
            continue
        diff = [np.abs(g.astype(np.float64) - r.astype(np.float64)) for r, g in zip(ref, got)]
        entry = {
            "max_abs_error": float(max(d.max() if d.size else 0.0 for d in diff)),
            "mean_abs_error": float(np.mean(np.concatenate([d.ravel() for d in diff]))) if ref[0].size else 0.0,
            "cosine": cosine(np.concatenate([g.ravel() for g in got]), np.concatenate([r.ravel() for r in ref])),
            "min_cosine": float(min(cosine(g, r) for r, g in zip(ref, got))),
        }
        if is_classification_head(name, ref[0].shape):
            agree = np.concatenate([(np.argmax(g, -1) == np.argmax(r, -1)).ravel() for r, g in zip(ref, got)])
            entry["argmax_agreement"] = float(np.mean(agree))
        outputs[name] = entry
    return outputs


def compare_graphs(reference: Graph, test: Graph, samples: list[dict[str, np.ndarray]]) -> dict:
    """Run both graphs (the reference evaluator) on every sample and compare their outputs."""
    ref = [evaluate(reference, feeds) for feeds in samples]
    got = [evaluate(test, feeds) for feeds in samples]
    return {"samples": len(samples), "outputs": compare_outputs(ref, got)}


def accuracy_md(sets: dict[str, dict], against: str = "fp32 reference evaluator") -> list[str]:
    """Markdown table rows: one per (set, output)."""
    lines = [f"Against the {against}, per output:", "",
             "| set | samples | output | max abs error | mean abs error | cosine | min cosine | argmax agreement |",
             "|---|---|---|---|---|---|---|---|"]
    for set_name, section in sets.items():
        for name, m in section["outputs"].items():
            if "cosine" not in m:
                lines.append(f"| {set_name} | {section['samples']} | `{name}` | exact match {m['exact_match']:.3f} "
                             f"| | | | |")
                continue
            agree = f"{m['argmax_agreement']:.4f}" if "argmax_agreement" in m else "-"
            lines.append(f"| {set_name} | {section['samples']} | `{name}` | {m['max_abs_error']:.4g} | "
                         f"{m['mean_abs_error']:.4g} | {m['cosine']:.6f} | {m['min_cosine']:.6f} | {agree} |")
    return lines
