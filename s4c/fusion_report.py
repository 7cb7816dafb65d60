"""Which ops of each encoder layer fused, and which did not: so a user knows which layers run slowly.

After the pipeline, every op that came from an encoder layer is attributed to that layer by the ONNX
nodes it came from: their module scope (the dynamo exporter's metadata, else the TorchScript node
name) contains the layer's path, e.g. `/encoder/layer.3/` or `/transformer/layer/3`. An op of a
type in FUSED_OPS is a fused kernel; any other op inside a layer is left for the generic kernels
(an elementwise loop, a plain MatMul...) and is listed as unfused. Ops outside every layer
(embeddings, mask arithmetic, task heads) are counted apart.
"""

from __future__ import annotations

import re
from collections import Counter

from s4c.ir import Graph

# The transformer kernels the fusion passes produce, and the layout-free ops that cost nothing
# (views: the backends alias them).
FUSED_OPS = {"Linear", "MultiHeadAttention", "SkipLayerNorm", "LayerNorm", "LayerNormalization", "Embedding"}
FREE_OPS = {"Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten"}
# `layer.3`, `layers/3`, `albert_layers.0`, `block.2`: a container of repeated blocks and an index.
_LAYER = re.compile(r"([A-Za-z_]*(?:layer|block)s?)[./](\d+)(?=[./]|$)")


def layer_of(scope: str) -> str | None:
    """`/model/encoder/layer.3/attention/...` -> "layer.3"; None outside any layer."""
    m = _LAYER.search(scope)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def fusion_report(graph: Graph) -> dict:
    """{"layers": {layer: {"ops": {type: n}, "unfused": {type: n}}}, "outside_layers": {type: n},
    "fused_layers": n, "warning": one line or None}."""
    layers: dict[str, Counter] = {}
    outside: Counter = Counter()
    for op in graph.ops:
        layer = None
        for node in op.onnx_nodes:
            layer = layer_of(graph.source_scopes.get(node, node))
            if layer:
                break
        (layers.setdefault(layer, Counter()) if layer else outside)[op.op] += 1
    order = sorted(layers, key=lambda k: (re.sub(r"\.\d+$", "", k), int(k.rsplit(".", 1)[1])))
    section = {"layers": {}, "outside_layers": dict(sorted(outside.items()))}
    for layer in order:
        counts = layers[layer]
        unfused = {t: n for t, n in sorted(counts.items()) if t not in FUSED_OPS | FREE_OPS}
        section["layers"][layer] = {"ops": dict(sorted(counts.items())), "unfused": unfused}
    slow = [k for k, v in section["layers"].items() if v["unfused"]]
    section["fused_layers"] = len(order) - len(slow)
    section["warning"] = None
    if slow:
        kinds = Counter()
        for k in slow:
            kinds.update(section["layers"][k]["unfused"])
        what = ", ".join(f"{t} x{n}" for t, n in kinds.most_common(6))
        section["warning"] = (f"{len(slow)} of {len(order)} encoder layers are not fully fused "
                              f"({_span(slow)}: {what} left to generic kernels); see report.md")
    return section


def _span(layers: list[str]) -> str:
    return layers[0] if len(layers) == 1 else f"{layers[0]} .. {layers[-1]}"


def fusion_report_md(section: dict) -> str:
    lines = ["## Fusion per layer", "",
             f"{section['fused_layers']} of {len(section['layers'])} encoder layers fully fused "
             "(every op a fused kernel: " + ", ".join(sorted(FUSED_OPS)) + ").", "",
             "| layer | ops | left unfused |", "|---|---|---|"]
    for layer, info in section["layers"].items():
        ops = ", ".join(f"{t} {n}" for t, n in info["ops"].items())
        unfused = ", ".join(f"{t} {n}" for t, n in info["unfused"].items()) or "-"
        lines.append(f"| {layer} | {ops} | {unfused} |")
    if section["outside_layers"]:
        lines += ["", "Outside the layers: " + ", ".join(f"{t} {n}" for t, n in section["outside_layers"].items())]
    return "\n".join(lines)
