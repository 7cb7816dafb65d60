"""The weight-layout part of the compile report: what select-sparse-layout chose for one target.

    section = layout_report(pass_instance.choices, target)     # -> dict (report.json)
    text = layout_report_md(section)                           # -> markdown (report.md)

Per weight: name, the op's ONNX node, shape, dtype, tokens, density, N:M pattern, the chosen
layout and why (cost model / override / default), the modelled seconds of every candidate, bytes
dense and chosen. Totals: weight bytes chosen vs dense (a weight shared by several Linears counted
once), modelled seconds chosen vs all-dense, and
how many weights took each layout.

For S4 also "projections": per weight and in total, the modelled time each named N:M pattern would
reach if the weight were pruned to it (`s4c sparsify --pattern`), against the current layouts: the
SPU runs N:M at its N:M rate, which unstructured sparsity stored as BSR never reaches.
"""

from __future__ import annotations

from collections import Counter

from s4c.sparse import SUPPORTED_NM_PATTERNS, NMLayout
from s4c.targets import LinearShapes, Target, layout_work

# Targets whose report projects every weight onto the named N:M patterns: on S4 an N:M weight's
# cost depends on its shape and pattern only (slots, not values), so it is priced without pruning.
PROJECTION_TARGETS = ("s4",)
PROJECTED_PATTERNS = tuple(NMLayout(n, m) for n, m in SUPPORTED_NM_PATTERNS)


def projected_cost(choice, target: Target, pattern: NMLayout) -> float:
    """Modelled seconds of the weight of `choice` once projected onto `pattern` and compiled again:
    unchanged when it already complies (projection keeps it as it is), otherwise the pattern's cost
    or the current layout's if lower (pruning only removes nonzeros, so no layout gets dearer)."""
    current = choice.costs[str(choice.layout)]
    if choice.report.satisfies(pattern):
        return current
    shapes = LinearShapes(choice.use.tokens, choice.report)
    return min(current, target.linear_cost(layout_work(pattern, choice.report), shapes))


def layout_report(choices, target: Target) -> dict:
    """The report.json section for one target (`choices`: select-sparse-layout's side table)."""
    weights = []
    for choice in choices:
        use, report, layout = choice.use, choice.report, str(choice.layout)
        pattern = report.nm_pattern
        weights.append({
            "weight": use.name,
            "op": use.op.outputs[0].name,
            "onnx_node": use.op.onnx_nodes[0] if use.op.onnx_nodes else None,
            "shape": list(report.shape),
            "dtype": str(report.dtype),
            "tokens": use.tokens,
            "density": report.density,
            "nm": f"{pattern.n}:{pattern.m}" if pattern else None,
            "layout": layout,
            "chosen_by": choice.chosen_by,
            "cost_s": choice.costs[layout],
            "dense_cost_s": choice.costs["dense"],
            "bytes": choice.bytes[layout],
            "dense_bytes": choice.bytes["dense"],
            "candidates": {name: {"cost_s": seconds, "bytes": choice.bytes[name]}
                           for name, seconds in sorted(choice.costs.items(), key=lambda kv: kv[1])},
        })
        if target.name in PROJECTION_TARGETS:
            weights[-1]["projections"] = {str(p): projected_cost(choice, target, p) for p in PROJECTED_PATTERNS
                                          if target.supports(p)}
    total = lambda key, rows=weights: sum(w[key] for w in rows)  # noqa: E731
    # a weight shared by several Linears (ALBERT's layers) is stored once per layout it takes:
    # bytes count each (weight, layout) once, modelled time counts every use
    stored = list({(w["weight"], w["layout"]): w for w in weights}.values())
    dense_bytes = total("dense_bytes", list({w["weight"]: w for w in weights}.values()))
    chosen_bytes = total("bytes", stored)
    dense_cost, chosen_cost = total("dense_cost_s"), total("cost_s")
    section = {
        "target": target.name,
        "cost_model": target.describe(),
        "weights": weights,
        "totals": {
            "weights": len(weights),
            "distinct_weights": len({w["weight"] for w in weights}),
            "dense_bytes": dense_bytes,
            "bytes": chosen_bytes,
            "bytes_vs_dense": chosen_bytes / dense_bytes if dense_bytes else 1.0,
            "dense_cost_s": dense_cost,
            "cost_s": chosen_cost,
            "modelled_speedup": dense_cost / chosen_cost if chosen_cost else 1.0,
            "layouts": dict(Counter(w["layout"] for w in weights).most_common()),
        },
    }
    if weights and "projections" in weights[0]:
        projected = {name: sum(w["projections"][name] for w in weights) for name in weights[0]["projections"]}
        section["projections"] = {name: {"cost_s": seconds,
                                         "speedup_vs_current": chosen_cost / seconds if seconds else 1.0,
                                         "speedup_vs_dense": dense_cost / seconds if seconds else 1.0}
                                  for name, seconds in projected.items()}
    return section


def layout_report_md(section: dict) -> str:
    """The report.md section for one target's layout report."""
    t = section["totals"]
    lines = [
        f"## Weight layouts: target {section['target']}",
        "",
        f"Cost model: {section['cost_model']}.",
        "",
        f"{t['weights']} weights"
        + (f" ({t['distinct_weights']} distinct: the rest are shared)" if t.get("distinct_weights", t["weights"]) < t["weights"] else "")
        + f": {_mb(t['bytes'])} stored vs {_mb(t['dense_bytes'])} dense "
        f"({t['bytes_vs_dense']:.1%}); modelled time {_time(t['cost_s'])} vs {_time(t['dense_cost_s'])} "
        f"all-dense ({t['modelled_speedup']:.2f}x). Layouts: "
        + ", ".join(f"{name} x{count}" for name, count in t["layouts"].items()) + ".",
    ]
    if section["weights"]:
        lines += ["", "| weight | shape | density | layout | chosen by | bytes (dense) | modelled time per "
                      "candidate, cheapest first |", "|---|---|---|---|---|---|---|"]
        for w in section["weights"]:
            name = w["weight"] if not w["onnx_node"] else f"{w['weight']} ({w['onnx_node']})"
            candidates = " · ".join(f"{n} {_time(c['cost_s'])}" for n, c in w["candidates"].items())
            lines.append(f"| {_cell(name)} | {w['shape'][0]}x{w['shape'][1]} {w['dtype']} | {w['density']:.3f}"
                         f"{' nm ' + w['nm'] if w['nm'] else ''} | {w['layout']} | {_cell(w['chosen_by'])} | "
                         f"{_mb(w['bytes'])} ({_mb(w['dense_bytes'])}) | {candidates} |")
    if section.get("projections"):
        lines += _projections_md(section)
    return "\n".join(lines)


def _projections_md(section: dict) -> list[str]:
    """What each N:M pattern would reach: totals, then per weight, modelled speed-up vs its layout."""
    projections = section["projections"]
    lines = ["", f"### What N:M pruning would reach (target {section['target']})", "",
             "The SPU runs N:M weights at its N:M rate; unstructured or block sparsity stored as BSR does "
             "not reach it. Modelled Linear time if every weight were pruned to each pattern (a weight "
             "that already complies keeps its layout); `s4c sparsify MODEL.onnx --pattern nm1:16 -o OUT.onnx` "
             "projects the weights by magnitude, then fine-tune OUT to recover accuracy.", "",
             "| pattern | modelled time | vs current layouts | vs all-dense |", "|---|---|---|---|"]
    lines += [f"| {name} | {_time(p['cost_s'])} | {p['speedup_vs_current']:.2f}x | {p['speedup_vs_dense']:.2f}x |"
              for name, p in projections.items()]
    names = list(projections)
    lines += ["", "| weight | layout | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for w in section["weights"]:
        speedups = " | ".join(f"{w['cost_s'] / w['projections'][n]:.2f}x" for n in names)
        lines.append(f"| {_cell(w['weight'])} | {w['layout']} | {speedups} |")
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _mb(nbytes: int) -> str:
    if nbytes >= 1 << 20:
        return f"{nbytes / (1 << 20):.2f} MiB"
    if nbytes >= 1 << 10:
        return f"{nbytes / (1 << 10):.1f} KiB"
    return f"{nbytes} B"


def _time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"
