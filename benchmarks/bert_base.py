"""Shared by the benchmarks and the slow tests: BERT-base models from examples/make_pruned_bert.py,
built once per configuration and cached (needs torch + transformers: `pip install -e '.[examples]'`)."""

from __future__ import annotations

import os
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def bert_base(exporter: str = "torchscript", sparsity: float = 0.9, pattern: str = "unstructured", **kwargs) -> str:
    """Path of a cached BERT-base ONNX export (seq/batch dynamic), pruned as asked."""
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    from make_pruned_bert import cached_model

    return str(cached_model(size="base", exporter=exporter, sparsity=sparsity, pattern=pattern, **kwargs))
