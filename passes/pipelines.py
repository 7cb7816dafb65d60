"""Named pipelines. Each is one explicit, ordered list; the comment on a step says why it is there.

The fusion work (issue 3) fills in `default`; until then it is the clean-up pipeline."""

PIPELINES: dict[str, list[str]] = {
    "none": [],
    "cleanup": [],
    "default": [
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
    ],
}
