"""Named pipelines. Each is one explicit, ordered list; the comment on a step says why it is there.

`none` imports only; `cleanup` is target-independent tidying; `default` is cleanup then the
transformer fusions. Sparse layout selection is not here: the driver runs it per target, on a copy
of the graph, after this pipeline (see s4c/driver.py `select_layouts`)."""

PIPELINES: dict[str, list[str]] = {
    "none": [],
    "cleanup": [
        # first: rewrites below then see constants, and transposed weights arrive as [out, in]
        "fold-constants",
        # after folding (scales are constants by then); int8 weight + scale as one typed op
        "fold-weight-dequant",
        # identity reshapes/casts/expands, Transpose pairs, x*1 / x+0 left by the exporters
        "simplify-algebra",
        # integer mask products tested for non-zero -> And (no integer multiply left for the masks)
        "simplify-masks",
        # after simplify-algebra, which makes more duplicates identical (e.g. per-layer mask casts)
        "eliminate-common-subexpressions",
        # last: what the rewrites above left unread
        "eliminate-dead-code",
    ],
    "default": [
        # clean-up first (same order as "cleanup"): the fusions then match constants, not the
        # exporters' constant subgraphs (e.g. a Transpose of a weight, a folded position lookup)
        "fold-constants",
        # int8 weight dequant spellings -> DequantizeWeight, which fuse-linear takes as a weight
        "fold-weight-dequant",
        # identity reshapes/casts, Transpose pairs, x*1, x+0: fewer near misses for the patterns
        "simplify-algebra",
        # DeBERTa's int64 mask outer product, tested for non-zero -> And of the tests
        "simplify-masks",
        # one mask computation for all layers instead of one per layer
        "eliminate-common-subexpressions",
        # drop what the above left unread, so the single-use checks see real readers only
        "eliminate-dead-code",
        # layer norms first: fuse-embedding and fuse-skip-layernorm match on LayerNorm
        "fuse-layernorm",
        # before fuse-skip-layernorm, which would take the embeddings' sum for a residual Add
        "fuse-embedding",
        # MatMul/Gemm (+ bias) -> Linear: what fuse-gelu, fuse-attention and merge-qkv build on
        "fuse-linear",
        # after fuse-linear: the Gelu becomes the epilogue of the Linear before it
        "fuse-gelu",
        # after fuse-linear: Q/K/V are Linear results; emits Concat(q, k, v) for merge-qkv
        "fuse-attention",
        # right after fuse-attention: the Concat of the Q/K/V Linears -> one QKV Linear
        "merge-qkv",
        # last fusion: fuse-linear has taken the biases into the Linears, the embeddings are fused
        "fuse-skip-layernorm",
        # what the fusions left unread (e.g. a DequantizeWeight another user kept)
        "eliminate-dead-code",
    ],
}
