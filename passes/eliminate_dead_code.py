"""eliminate-dead-code: drop ops whose results no graph output needs."""

from __future__ import annotations

from s4c.ir import Graph
from s4c.passes.base import Pass, PassResult


class EliminateDeadCode(Pass):
    """Remove every op none of whose results reaches a graph output (constants only they read go
    with them), and the unused trailing statistics results (Mean, InvStdDev) of LayerNormalization.

    Every IR op is free of side effects, so liveness is reachability from the outputs. A multi-result
    op is kept whole while any result is live: Split's results are positional, so an unused one
    cannot be dropped (only LayerNormalization's optional trailing results can)."""

    name = "eliminate-dead-code"

    def run(self, graph: Graph) -> PassResult:
        removed = graph.remove_dead_ops()
        return PassResult.of({"removed": removed, "trimmed-statistics": self._trim_layer_norm_statistics(graph)})

    @staticmethod
    def _trim_layer_norm_statistics(graph: Graph) -> int:
        """How many LayerNormalization ops lost unread trailing results."""
        read = {id(v) for op in graph.ops for v in op.inputs} | {id(v) for v in graph.outputs}
        trimmed = 0
        for op in graph.ops:
            if op.op != "LayerNormalization" or len(op.outputs) == 1:
                continue
            keep = len(op.outputs)
            while keep > 1 and id(op.outputs[keep - 1]) not in read:
                keep -= 1
            if keep < len(op.outputs):
                for v in op.outputs[keep:]:
                    v.producer = None
                op.outputs = op.outputs[:keep]
                op.attrs["num_results"] = keep
                trimmed += 1
        return trimmed
