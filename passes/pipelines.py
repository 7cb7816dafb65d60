"""Named pipelines. Each is one explicit, ordered list; the comment on a step says why it is there.

`none` imports only; `cleanup` is target-independent tidying; `default` is `cleanup` then the
transformer fusions. After the pipeline, the compile driver runs `target_pipeline(NAME)` once per
target, on a copy of the graph (every target chooses its weight layouts for itself), in the same
PassManager context (s4c/driver.py `select_layouts`).
"""

from s4c.errors import PassError

CLEANUP: list[str] = [
    # first: rewrites below then see constants, and transposed weights arrive as [out, in]
    # (the fusions match constants, not the exporters' constant subgraphs)
    "fold-constants",
    # after folding (scales are constants by then); int8 weight + scale as one typed op,
    # DequantizeWeight, which fuse-linear takes as a weight
    "fold-weight-dequant",
    # identity reshapes/casts/expands, Transpose pairs, x*1 / x+0 left by the exporters:
    # fewer near misses for the patterns
    "simplify-algebra",
    # integer mask products tested for non-zero (DeBERTa's mask outer product) -> And of the
    # tests (no integer multiply left for the masks)
    "simplify-masks",
    # after simplify-algebra, which makes more duplicates identical: one mask computation for all
    # layers instead of one per layer
    "eliminate-common-subexpressions",
    # last: what the rewrites above left unread, so the fusions' single-use checks see real readers
    "eliminate-dead-code",
]

FUSIONS: list[str] = [
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
    # the attention biases fuse-attention summed per layer from the same terms (MPNet's position
    # bias + mask) -> one sum for all layers
    "eliminate-common-subexpressions",
    # last fusion: fuse-linear has taken the biases into the Linears, the embeddings are fused
    "fuse-skip-layernorm",
    # what the fusions left unread (e.g. a DequantizeWeight another user kept)
    "eliminate-dead-code",
]

PIPELINES: dict[str, list[str]] = {
    "none": [],
    "cleanup": CLEANUP,
    "default": CLEANUP + FUSIONS,
}


def target_pipeline(target: str, overrides: list[str] | tuple[str, ...] = (), default: str = "") -> str:
    """The steps run per target after the pipeline: choose every Linear weight's storage layout
    for `target` (`overrides`: the CLI's --layout GLOB=layout rules; `default`: --layout-default)."""
    options = [f"target={target}"]
    if overrides:
        options.append(f"overrides={_quote(';'.join(overrides))}")
    if default:
        options.append(f"default={_quote(default)}")
    return "select-sparse-layout{" + ",".join(options) + "}"


def _quote(text: str) -> str:
    if '"' in text:
        raise PassError(f"select-sparse-layout: an option value cannot contain '\"': {text!r}")
    return f'"{text}"'
