#!/usr/bin/env python3
"""Build a magnitude-pruned BERT-family model with random weights and export it to ONNX.

Used for the committed test fixtures (tests/models/, see tests/models/make_all.sh), the
bundled quick-start model (examples/models/) and, through ``cached_model``, for benchmarks
and slow tests that need BERT-base-sized graphs. Nothing is downloaded: models are built
from transformers configs and initialized from ``--seed``.

Examples::

    python examples/make_pruned_bert.py --out /tmp/m.onnx                      # bert tiny, ts opset 17
    python examples/make_pruned_bert.py --arch distilbert --size mini --pattern block4x1 --out d.onnx
    python examples/make_pruned_bert.py --size base --pattern nm2:4 --exporter dynamo --out b.onnx
    python examples/make_pruned_bert.py --weight-quant int8-dequant --out q.onnx

From Python::

    from make_pruned_bert import make_model, cached_model   # with examples/ on sys.path
    path = cached_model(size="base", sparsity=0.9)          # built once, then reused

Models
------
``--arch bert`` / ``minilm`` are ``BertModel`` (inputs input_ids, attention_mask,
token_type_ids; outputs last_hidden_state, pooler_output); ``distilbert`` is
``DistilBertModel`` (no token_type_ids, no pooler). Presets (``--size``):

=========  ========================  ==========================  =========================
preset     bert / distilbert          minilm (head_dim 32)        vocab / max_position
=========  ========================  ==========================  =========================
tiny       h64  L2 A4  ff256          h96  L2 A3  ff384            1000 / 128
mini       h128 L4 A4  ff512          h192 L4 A6  ff768            2000 / 128
base       h768 L12 A12 ff3072        h384 L12 A12 ff1536          30522 / 512
=========  ========================  ==========================  =========================

(distilbert base has 6 layers, like distilbert-base-uncased.) ``--layers/--hidden/--heads/
--vocab/--intermediate/--max-position`` override the preset; ``--hidden`` without
``--intermediate`` sets intermediate = 4*hidden.

Initialization: transformers' init plus small random biases and LayerNorm affine params
(``--hf-init`` keeps the stock init). Reason: with stock init every bias is 0 and every
LayerNorm gamma is 1, and the TorchScript exporter *deduplicates identical initializers*:
all the zero biases collapse into one tensor (named after whichever came first, e.g.
``embeddings.LayerNorm.bias``) and the rest become ``Identity`` nodes (20 of them for a
2-layer BERT). Trained models never look like that. The dynamo exporter shares them too
(one initializer used by many nodes, no Identity).

Pruning
-------
Every ``nn.Linear`` weight (encoder Q/K/V/O, FFN in/out, pooler) is pruned per tensor, by
magnitude, to exactly the requested fraction (embeddings and LayerNorms stay dense):

* ``unstructured`` - smallest |w|.
* ``blockRxC`` (``block4x1``, ``block16x1``, ``block1x4``, ``block4x4`` ...) - blocks in the
  torch [out, in] orientation: R output rows x C input columns, ranked by block L2 norm.
  In the exported MatMul weight (which is [in, out]) such a block is C rows x R columns.
* ``nmN:M`` (``nm2:4``, ``nm2:8``, ``nm1:16`` ...) - keep the N largest |w| of every M
  consecutive weights along the reduction (input) dim; sparsity is 1-N/M and
  ``--sparsity`` is ignored. In the exported [in, out] MatMul weight the groups run down
  the columns (axis 0).

Exporters (torch 2.13, transformers 5.24, onnxscript 0.7) - quirks found
-----------------------------------------------------------------------
* Calling the HF model directly through the TorchScript exporter fails
  (``forward() got multiple values for argument 'use_cache'``), and a wrapper module would
  prefix every parameter name; we swap the instance's class for a subclass whose forward
  takes the inputs positionally (explicit names: torch.export matches ``dynamic_shapes``
  keys against them) and returns a tuple.
* Both exporters turn ``nn.Linear`` on 3-D activations into ``MatMul`` with a
  pre-transposed **[in, out]** initializer whose torch name is lost (torchscript:
  ``onnx::MatMul_<n>``; dynamo: ``val_<n>``) followed by an ``Add`` of the bias, which keeps
  its name (``encoder.layer.0.attention.self.query.bias``). Operand order differs:
  torchscript emits ``Add(bias, matmul_out)``, dynamo ``Add(matmul_out, bias)``. The pooler
  (2-D input) becomes ``Gemm(transB=1)`` with the original [out, in] ``pooler.dense.weight``.
* Eager attention (both): ``MatMul(Q, K^T)`` -> ``Mul(.., 1/sqrt(head_dim))`` -> ``Add(mask)``
  -> ``Softmax`` -> ``MatMul(.., V)``; heads split by Reshape + Transpose(0,2,1,3), K^T by
  Transpose(0,2,3,1). The additive mask is one shared ``Where(bool_mask, 0, -3.4028235e38)``
  built once from ``attention_mask`` (transformers 5 masking_utils: Range /
  GreaterOrEqual / And / Expand (torchscript) or GatherND / Max / And (dynamo)), not the old
  ``(1 - mask) * -10000`` arithmetic.
* ``--attn sdpa`` (both exporters): scale applied as ``Mul(Q, sqrt(s))`` and
  ``Mul(K^T, sqrt(s))`` *before* the MatMul, then ``Add(Where(bool_mask, 0, -inf))`` (the
  Where is inside every layer for torchscript; dynamo's optimizer CSEs it to one), and a
  NaN guard after the softmax: ``Softmax -> IsNaN -> Where(isnan, 0, softmax) -> MatMul(V)``
  (fully masked rows). Dynamo additionally builds K^T as Reshape(3-D) ->
  Transpose(0,2,1) -> Reshape(4-D). Note transformers' default attention is sdpa, so
  most real-world exports of HF BERT look like this, not like eager.
* ``--exporter torchscript`` (``dynamo=False``): opsets 13..21 all export and run
  (torch's constant claims max 20; 21 works). LayerNorm is decomposed
  (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add) below 17 and ``LayerNormalization``
  from 17. GELU is erf-based (Div/Erf/Add/Mul/Mul) below 20 and a single ``Gelu`` op from
  20. Many ``Constant`` nodes and per-layer shape arithmetic (Shape/Gather/Unsqueeze/
  Concat); value names follow the module path (``/encoder/layer.0/attention/self/...``).
  With stock (zero) biases it also dedups identical initializers into ``Identity`` nodes
  (see Initialization). Default here: opset 17.
* ``--exporter dynamo`` (``dynamo=True``): implementations are opset 18; ``opset=None``
  gives **20** (``Gelu`` op), 18..23 work. 17 is produced by down-conversion (onnx C API
  version converter; works for these models, keeps ``LayerNormalization``); 16 and below
  fail to convert and torch *silently emits 18*, so ``make_model`` refuses them. Output is
  optimized/constant-folded: no ``Constant`` nodes (constants are initializers
  ``val_<n>``, scalar 0-d), ~100 nodes for 2 layers vs ~240-290 for torchscript, fx value
  names (``layer_norm_1``, ``softmax``, ``linear_3``), ``value_info`` for every
  intermediate, and node ``metadata_props`` (namespace / class_hierarchy / fx_node /
  name_scopes; the ``stack_trace`` entry holds absolute paths and is stripped here for
  reproducibility). LayerNorm is always ``LayerNormalization``. The ``batch``/``sequence``
  names come from ``torch.export.Dim``; torch warns that later inputs "share the same
  shape constraints" - harmless.

Weight quantization (``--weight-quant``) is done by examples/quantize_weights.py on the
exported ONNX (pure onnx): int8 weight + per-output-channel scale as ``DequantizeLinear``
or ``Cast``+``Mul``. Zeros stay exact zeros, so sparsity survives.

The exported graph is run in onnxruntime at a different batch/sequence length than the
export example (batch 3, sequence 11, padded) and compared with torch before saving; the
max abs diff is printed, and float exports fail above 1e-3.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ARCHS = ("bert", "distilbert", "minilm")
SIZES = ("tiny", "mini", "base")
EXPORTERS = ("torchscript", "dynamo")
ATTNS = ("eager", "sdpa")
WEIGHT_QUANTS = ("int8-dequant", "int8-castmul")

# hidden, layers, heads, intermediate, vocab, max_position
PRESETS = {
    "bert": {
        "tiny": (64, 2, 4, 256, 1000, 128),
        "mini": (128, 4, 4, 512, 2000, 128),
        "base": (768, 12, 12, 3072, 30522, 512),
    },
    "distilbert": {
        "tiny": (64, 2, 4, 256, 1000, 128),
        "mini": (128, 4, 4, 512, 2000, 128),
        "base": (768, 6, 12, 3072, 30522, 512),
    },
    "minilm": {
        "tiny": (96, 2, 3, 384, 1000, 128),
        "mini": (192, 4, 6, 768, 2000, 128),
        "base": (384, 12, 12, 1536, 30522, 512),
    },
}

DEFAULT_TS_OPSET = 17
MIN_DYNAMO_OPSET = 17
FLOAT_TOL = 1e-3
_CACHE_VERSION = 1  # bump when the generated graphs change


# ----------------------------------------------------------------------------- config/model
def model_dims(arch="bert", size="tiny", layers=None, hidden=None, heads=None, vocab=None,
               intermediate=None, max_position=None) -> dict:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    h, l, a, ff, v, p = PRESETS[arch][size]
    if hidden is not None:
        h = hidden
        ff = intermediate if intermediate is not None else 4 * hidden
    if intermediate is not None:
        ff = intermediate
    l = layers if layers is not None else l
    a = heads if heads is not None else a
    v = vocab if vocab is not None else v
    p = max_position if max_position is not None else p
    if h % a:
        raise ValueError(f"hidden {h} is not divisible by heads {a}")
    return dict(hidden_size=h, num_layers=l, num_heads=a, intermediate_size=ff,
                vocab_size=v, max_position=p)


def build_model(arch="bert", size="tiny", *, seed=0, attn="eager", pooler=True,
                hf_init=False, **dims_kw):
    """Random-weight transformers model (eval mode). Seeded: same args -> same weights."""
    import torch
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    if attn not in ATTNS:
        raise ValueError(f"attn must be one of {ATTNS}")
    d = model_dims(arch, size, **dims_kw)
    torch.manual_seed(seed)
    if arch == "distilbert":
        cfg = DistilBertConfig(vocab_size=d["vocab_size"], dim=d["hidden_size"],
                               n_layers=d["num_layers"], n_heads=d["num_heads"],
                               hidden_dim=d["intermediate_size"],
                               max_position_embeddings=d["max_position"])
        model = DistilBertModel._from_config(cfg, attn_implementation=attn)
    else:
        cfg = BertConfig(vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
                         num_hidden_layers=d["num_layers"], num_attention_heads=d["num_heads"],
                         intermediate_size=d["intermediate_size"],
                         max_position_embeddings=d["max_position"])
        model = BertModel._from_config(cfg, attn_implementation=attn, add_pooling_layer=pooler)
    if not hf_init:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.02)
                elif isinstance(mod, torch.nn.LayerNorm):
                    mod.weight.copy_(1.0 + torch.randn(mod.weight.shape, generator=g) * 0.05)
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.02)
    return model.eval()


# ----------------------------------------------------------------------------- pruning
def parse_pattern(pattern: str):
    """'unstructured' -> ('unstructured',); 'block4x1' -> ('block', 4, 1); 'nm2:4' -> ('nm', 2, 4)."""
    p = pattern.strip().lower()
    if p in ("unstructured", "u"):
        return ("unstructured",)
    m = re.fullmatch(r"block(\d+)x(\d+)", p)
    if m:
        r, c = int(m.group(1)), int(m.group(2))
        if r < 1 or c < 1:
            raise ValueError(f"bad block pattern {pattern!r}")
        return ("block", r, c)
    m = re.fullmatch(r"(?:nm)?(\d+):(\d+)", p)
    if m:
        n, mm = int(m.group(1)), int(m.group(2))
        if not 0 < n < mm:
            raise ValueError(f"bad N:M pattern {pattern!r} (need 0 < N < M)")
        return ("nm", n, mm)
    raise ValueError(f"unknown pattern {pattern!r}: use unstructured, blockRxC (e.g. block4x1) or nmN:M (e.g. nm2:4)")


def pattern_sparsity(pattern: str, sparsity: float) -> float:
    """Nominal sparsity of a pattern (N:M fixes it at 1 - N/M)."""
    p = parse_pattern(pattern)
    return 1.0 - p[1] / p[2] if p[0] == "nm" else float(sparsity)


def prune_mask(w: np.ndarray, pattern: str, sparsity: float) -> np.ndarray:
    """Boolean keep-mask for a torch-orientation [out, in] weight."""
    p = parse_pattern(pattern)
    out_f, in_f = w.shape
    a = np.abs(w.astype(np.float64))
    if p[0] == "unstructured":
        k = int(round(sparsity * w.size))
        keep = np.ones(w.size, bool)
        keep[np.argsort(a.ravel(), kind="stable")[:k]] = False
        return keep.reshape(w.shape)
    if p[0] == "block":
        r, c = p[1], p[2]
        if out_f % r or in_f % c:
            raise ValueError(f"weight [{out_f}, {in_f}] not divisible into {r}x{c} blocks")
        norms = np.sqrt((a.reshape(out_f // r, r, in_f // c, c) ** 2).sum(axis=(1, 3)))
        k = int(round(sparsity * norms.size))
        bkeep = np.ones(norms.size, bool)
        bkeep[np.argsort(norms.ravel(), kind="stable")[:k]] = False
        bkeep = bkeep.reshape(norms.shape)
        return np.repeat(np.repeat(bkeep, r, axis=0), c, axis=1)
    n, m = p[1], p[2]
    # M need not divide the input dim: the last group is short (768 at 1:20: 38 groups of 20 and
    # one of 8), padded with -1 so that padding is never kept
    pad = -in_f % m
    g = np.pad(a, ((0, 0), (0, pad)), constant_values=-1.0).reshape(out_f, -1, m)
    order = np.argsort(-g, axis=-1, kind="stable")[..., :n]
    keep = np.zeros_like(g, bool)
    np.put_along_axis(keep, order, True, axis=-1)
    return keep.reshape(out_f, -1)[:, :in_f]


def prune_model(model, pattern="unstructured", sparsity=0.9, verbose=True) -> dict:
    """Magnitude-prune every nn.Linear weight in place. Returns {name: achieved sparsity}."""
    import torch

    stats = {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear):
                w = mod.weight.detach().cpu().numpy()
                keep = prune_mask(w, pattern, sparsity)
                mod.weight.mul_(torch.from_numpy(keep.astype(np.float32)))
                stats[name] = 1.0 - np.count_nonzero(mod.weight.numpy()) / w.size
    if verbose:
        tot = sum(m.weight.numel() for n, m in model.named_modules() if n in stats)
        zeros = sum(stats[n] * m.weight.numel() for n, m in model.named_modules() if n in stats)
        vals = np.array(list(stats.values()))
        print(f"pruned {len(stats)} Linear weights, pattern {pattern}: achieved sparsity "
              f"{zeros / tot:.4f} overall (per tensor min {vals.min():.4f} max {vals.max():.4f})")
    return stats


# ----------------------------------------------------------------------------- export
def _io_names(arch, token_type_ids, pooler):
    inputs = ["input_ids", "attention_mask"]
    if arch != "distilbert" and token_type_ids:
        inputs.append("token_type_ids")
    outputs = ["last_hidden_state"]
    if arch != "distilbert" and pooler:
        outputs.append("pooler_output")
    return inputs, outputs


def _make_exportable(model, inputs, outputs):
    """Swap the instance class for one whose forward takes positional tensors and returns a
    tuple (TorchScript tracing of the HF forward fails; a wrapper module would prefix every
    parameter name)."""
    base = type(model)
    in_names, out_names = tuple(inputs), tuple(outputs)

    # explicit parameter names: torch.export matches dynamic_shapes keys against them
    if "token_type_ids" in in_names:
        def forward(self, input_ids, attention_mask, token_type_ids):
            o = base.forward(self, input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids, return_dict=True)
            return tuple(getattr(o, n) for n in out_names)
    else:
        def forward(self, input_ids, attention_mask):
            o = base.forward(self, input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
            return tuple(getattr(o, n) for n in out_names)

    # fixed __module__: the dynamo exporter records class names in node metadata, and the
    # bytes must not depend on whether this file ran as __main__ or was imported
    model.__class__ = type(f"Exportable{base.__name__}", (base,),
                           {"forward": forward, "__module__": base.__module__})
    return model


def _example_inputs(names, vocab, batch, seq, seed, pad=True):
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64)}
    mask = np.ones((batch, seq), np.int64)
    if pad:
        for b in range(1, batch):
            mask[b, seq - 1 - (b * 3) % max(seq // 2, 1):] = 0
    feeds["attention_mask"] = mask
    if "token_type_ids" in names:
        tt = np.zeros((batch, seq), np.int64)
        tt[:, seq // 2:] = 1
        feeds["token_type_ids"] = tt
    return {k: feeds[k] for k in names}


def export_onnx(model, path, *, arch, exporter="torchscript", opset=None, token_type_ids=True,
                pooler=True, vocab=1000, verbose=True) -> onnx.ModelProto:
    """Export to ``path`` (a scratch location); returns the loaded ModelProto."""
    with warnings.catch_warnings():
        # TracerWarning (mask padding branch, constant for our inputs), aten::index note,
        # FutureWarnings from torch.export internals: all noise for these models.
        warnings.simplefilter("ignore")
        return _export_onnx(model, path, arch=arch, exporter=exporter, opset=opset,
                            token_type_ids=token_type_ids, pooler=pooler, vocab=vocab,
                            verbose=verbose)


def _export_onnx(model, path, *, arch, exporter, opset, token_type_ids, pooler, vocab, verbose):
    import torch

    inputs, outputs = _io_names(arch, token_type_ids, pooler)
    _make_exportable(model, inputs, outputs)
    ex = tuple(torch.from_numpy(v) for v in _example_inputs(inputs, vocab, 2, 16, 0).values())
    path = str(path)
    if exporter == "torchscript":
        opset = DEFAULT_TS_OPSET if opset is None else opset
        dyn = {n: {0: "batch", 1: "sequence"} for n in inputs}
        dyn["last_hidden_state"] = {0: "batch", 1: "sequence"}
        if "pooler_output" in outputs:
            dyn["pooler_output"] = {0: "batch"}
        torch.onnx.export(model, ex, path, input_names=inputs, output_names=outputs,
                          dynamic_axes=dyn, opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    elif exporter == "dynamo":
        if opset is not None and opset < MIN_DYNAMO_OPSET:
            raise ValueError(f"dynamo exporter: opset {opset} cannot be produced (native 18, "
                             f"down-conversion works to {MIN_DYNAMO_OPSET}; torch would silently emit 18)")
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        shapes = {n: {0: batch, 1: seq} for n in inputs}
        torch.onnx.export(model, ex, path, input_names=inputs, output_names=outputs,
                          dynamic_shapes=shapes, opset_version=opset, dynamo=True,
                          external_data=False, verbose=verbose)
    else:
        raise ValueError(f"exporter must be one of {EXPORTERS}")
    m = onnx.load(path)
    _strip_stack_traces(m)
    got = _opset(m)
    if opset is not None and got != opset:
        raise RuntimeError(f"asked for opset {opset}, exporter produced {got}")
    return m


def _strip_stack_traces(model: onnx.ModelProto) -> None:
    """Drop the dynamo exporter's per-node ``pkg.torch.onnx.stack_trace`` metadata: it holds
    absolute file paths and line numbers (non-reproducible across machines, ~15% of a tiny
    model's bytes). The other node metadata (namespace, class_hierarchy, fx_node,
    name_scopes) is deterministic and kept."""
    for n in model.graph.node:
        keep = [p for p in n.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        if len(keep) != len(n.metadata_props):
            del n.metadata_props[:]
            n.metadata_props.extend(keep)


def _opset(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


# ----------------------------------------------------------------------------- checks / summary
def _ort_run(model_or_path, feeds):
    import onnxruntime as ort

    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def check_numerics(model, onnx_model, inputs, vocab, tol=FLOAT_TOL, seed=123) -> float:
    """ORT vs torch at batch 3 / sequence 11 with padding. Returns max abs diff."""
    import torch

    feeds = _example_inputs(inputs, vocab, 3, 11, seed)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(v) for v in feeds.values()))
    got = _ort_run(onnx_model, feeds)
    diff = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref))
    return diff


def linear_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every 2-D MatMul/Gemm weight initializer, followed back through DequantizeLinear / Cast /
    Mul / Transpose / Identity to the stored tensor, in torch [out, in] orientation (the
    orientation the pruning patterns are defined in). tests/test_fixtures.py reads the committed
    fixtures with it."""
    inits = {t.name: t for t in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for n in model.graph.node:
        if n.op_type not in ("MatMul", "Gemm") or len(n.input) < 2:
            continue
        name, transposed = n.input[1], False
        if n.op_type == "Gemm":
            transposed = any(a.name == "transB" and a.i for a in n.attribute)
        while name not in inits and name in prod and prod[name].op_type in (
                "DequantizeLinear", "Cast", "Mul", "Transpose", "Identity"):
            p = prod[name]
            if p.op_type == "Transpose":
                transposed = not transposed
            name = p.input[0]
        if name in inits and len(inits[name].dims) == 2:
            a = numpy_helper.to_array(inits[name])
            out[name] = a if transposed else a.T  # MatMul B is [in, out]
    return out


def weight_sparsity(model: onnx.ModelProto) -> dict[str, float]:
    """Sparsity of every MatMul/Gemm weight initializer (see linear_weights)."""
    return {name: 1.0 - np.count_nonzero(a) / a.size for name, a in linear_weights(model).items()}


def file_size(path) -> int:
    path = Path(path)
    m = onnx.load(str(path), load_external_data=False)
    size = path.stat().st_size
    locs = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    return size + sum((path.parent / loc).stat().st_size for loc in locs)


def summary(path, verbose=True) -> dict:
    m = onnx.load(str(path))
    ops = Counter(n.op_type for n in m.graph.node)
    sp = weight_sparsity(m)
    total = sum(np.prod(t.dims) for t in m.graph.initializer if t.name in sp)
    zeros = sum(sp[t.name] * np.prod(t.dims) for t in m.graph.initializer if t.name in sp)

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    info = {
        "opset": _opset(m),
        "ops": dict(sorted(ops.items())),
        "num_nodes": len(m.graph.node),
        "bytes": file_size(path),
        "weight_sparsity": float(zeros / total) if total else 0.0,
        "num_weights": len(sp),
        "inputs": [{"name": i.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(
            i.type.tensor_type.elem_type).name, "shape": dims(i)} for i in m.graph.input],
        "outputs": [{"name": o.name, "shape": dims(o)} for o in m.graph.output],
    }
    if verbose:
        print(f"{path}: {info['bytes'] / 1024:.1f} KiB, opset {info['opset']}, {info['num_nodes']} nodes")
        print("  inputs : " + ", ".join(f"{i['name']}{i['shape']}" for i in info["inputs"]))
        print("  outputs: " + ", ".join(f"{o['name']}{o['shape']}" for o in info["outputs"]))
        print("  ops    : " + ", ".join(f"{k}:{v}" for k, v in info["ops"].items()))
        print(f"  MatMul/Gemm weights: {len(sp)} tensors, sparsity {info['weight_sparsity']:.4f}")
    return info


# ----------------------------------------------------------------------------- top level
def make_model(out=None, *, arch="bert", size="tiny", layers=None, hidden=None, heads=None,
               vocab=None, intermediate=None, max_position=None, seed=0, sparsity=0.9,
               pattern="unstructured", exporter="torchscript", opset=None, attn="eager",
               token_type_ids=True, pooler=True, external_data=False, weight_quant=None,
               per_tensor=False, hf_init=False, check=True, verbose=True, manifest=None,
               command=None) -> Path:
    """Build, prune, export, (quantize), check and save a model. Returns the .onnx path.

    ``out`` defaults to ``./<arch>_<size>_<exporter>.onnx``. ``manifest``: path of a JSON
    manifest to add/replace this model's entry in (used for tests/models/manifest.json).
    """
    t0 = time.time()
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}")
    if weight_quant not in (None, *WEIGHT_QUANTS):
        raise ValueError(f"weight_quant must be None or one of {WEIGHT_QUANTS}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError("sparsity must be in [0, 1)")
    kind = parse_pattern(pattern)
    if kind[0] == "nm" and verbose and abs(sparsity - 0.9) > 1e-9 and abs(sparsity - pattern_sparsity(pattern, 0)) > 1e-9:
        print(f"note: --sparsity {sparsity} ignored for {pattern} (sparsity is {pattern_sparsity(pattern, 0):.4f})")
    if arch == "distilbert":
        token_type_ids, pooler = False, False
    out = Path(out) if out is not None else Path(f"{arch}_{size}_{exporter}.onnx")
    dims = model_dims(arch, size, layers, hidden, heads, vocab, intermediate, max_position)

    model = build_model(arch, size, seed=seed, attn=attn, pooler=pooler, hf_init=hf_init,
                        layers=layers, hidden=hidden, heads=heads, vocab=vocab,
                        intermediate=intermediate, max_position=max_position)
    if sparsity > 0 or kind[0] == "nm":
        prune_model(model, pattern, sparsity, verbose=verbose)

    inputs, outputs = _io_names(arch, token_type_ids, pooler)
    with tempfile.TemporaryDirectory() as td:
        onnx_model = export_onnx(model, Path(td) / "export.onnx", arch=arch, exporter=exporter,
                                 opset=opset, token_type_ids=token_type_ids, pooler=pooler,
                                 vocab=dims["vocab_size"], verbose=verbose)
    if weight_quant:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from quantize_weights import quantize_model

        onnx_model = quantize_model(onnx_model, weight_quant, per_channel=not per_tensor)

    big = onnx_model.ByteSize() > 1_800_000_000
    if check and not big:
        onnx.checker.check_model(onnx_model)
        diff = check_numerics(model, onnx_model, inputs, dims["vocab_size"])
        if verbose:
            print(f"onnxruntime vs torch (batch 3, seq 11, padded): max abs diff {diff:.3g}")
        if not weight_quant and diff > FLOAT_TOL:
            raise RuntimeError(f"exported model differs from torch: max abs diff {diff}")
        if weight_quant and diff > 0.25:
            raise RuntimeError(f"quantized model too far from torch: max abs diff {diff}")

    out.parent.mkdir(parents=True, exist_ok=True)
    data_name = out.name + ".data"
    if (out.parent / data_name).exists():
        (out.parent / data_name).unlink()
    if external_data or big:
        onnx.save_model(onnx_model, str(out), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
    else:
        onnx.save_model(onnx_model, str(out))
    if check and big:
        onnx.checker.check_model(str(out))
        diff = check_numerics(model, str(out), inputs, dims["vocab_size"])
        if verbose:
            print(f"onnxruntime vs torch: max abs diff {diff:.3g}")

    info = summary(out, verbose=verbose)
    if verbose:
        print(f"  built in {time.time() - t0:.1f}s")
    if manifest is not None:
        _update_manifest(manifest, out, info, dict(
            arch=arch, exporter=exporter, requested_opset=opset, attn=attn, pattern=pattern,
            sparsity=round(pattern_sparsity(pattern, sparsity), 6) if (sparsity > 0 or kind[0] == "nm") else 0.0,
            weight_quant=weight_quant, per_tensor=per_tensor if weight_quant else None,
            seed=seed, **dims), command)
    return out


def _update_manifest(manifest, out, info, meta, command):
    manifest = Path(manifest)
    entries = json.loads(manifest.read_text())["models"] if manifest.exists() else []
    rel = os.path.relpath(out.resolve(), manifest.resolve().parent)
    ext = out.name + ".data" if (out.parent / (out.name + ".data")).exists() else None
    entry = {
        "name": out.stem if out.stem != "model" else out.parent.name,
        "file": rel.replace(os.sep, "/"),
        "external_data": ext,
        "arch": meta["arch"],
        "exporter": meta["exporter"],
        "opset": info["opset"],
        "requested_opset": meta["requested_opset"],
        "attn": meta["attn"],
        "pattern": meta["pattern"],
        "sparsity": meta["sparsity"],
        "measured_sparsity": round(info["weight_sparsity"], 6),
        "num_pruned_weights": info["num_weights"],
        "weight_quant": meta["weight_quant"],
        "num_layers": meta["num_layers"],
        "num_heads": meta["num_heads"],
        "hidden_size": meta["hidden_size"],
        "intermediate_size": meta["intermediate_size"],
        "vocab_size": meta["vocab_size"],
        "max_position": meta["max_position"],
        "seed": meta["seed"],
        "inputs": info["inputs"],
        "outputs": info["outputs"],
        "ops": info["ops"],
        "bytes": info["bytes"],
        "command": command,
    }
    if any(e["file"] == entry["file"] for e in entries):
        entries = [entry if e["file"] == entry["file"] else e for e in entries]
    else:
        entries.append(entry)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": 1, "models": entries}, indent=1)
    # keep short scalar lists (shapes) on one line
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    manifest.write_text(text + "\n")


def cache_dir() -> Path:
    return Path(os.environ.get("S4C_MODEL_CACHE", Path.home() / ".cache" / "s4c" / "models"))


def cached_model(**kwargs) -> Path:
    """``make_model(**kwargs)`` built once per distinct argument set, cached under
    ``$S4C_MODEL_CACHE`` (default ``~/.cache/s4c/models/``). Returns the .onnx path.

    Each model lives in its own directory ``<arch>_<size>_<hash>/model.onnx`` (BERT-base
    models are saved with external data, ``model.onnx.data``). Safe against concurrent
    builders: the directory is built under a temporary name and renamed into place.
    """
    for k in ("out", "manifest", "command"):
        kwargs.pop(k, None)
    kwargs.setdefault("verbose", False)
    if kwargs.get("size", "tiny") == "base":
        kwargs.setdefault("external_data", True)
    # key on the full argument set with defaults filled in, so cached_model(size="base") and
    # cached_model(size="base", sparsity=0.9) share one build
    bound = inspect.signature(make_model).bind(None, **kwargs)
    bound.apply_defaults()
    key_kw = {k: v for k, v in bound.arguments.items()
              if k not in ("out", "verbose", "check", "manifest", "command")}
    key_kw["_cache_version"] = _CACHE_VERSION
    key = hashlib.sha256(json.dumps(key_kw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    final = cache_dir() / f"{key_kw.get('arch', 'bert')}_{key_kw.get('size', 'tiny')}_{key}"
    return build_cached(final, key_kw, lambda tmp: make_model(tmp / "model.onnx", **kwargs))


def build_cached(final: Path, key_kw: dict, build) -> Path:
    """final/model.onnx, made once: `build(tmp)` writes model.onnx into a temporary folder beside
    `final`, which gets args.json (`key_kw`) and is renamed into place, so concurrent builders are
    safe and a failed build leaves nothing behind."""
    path = final / "model.onnx"
    if path.exists():
        return path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp", dir=final.parent))
    os.chmod(tmp, 0o755)
    try:
        build(tmp)
        (tmp / "args.json").write_text(json.dumps(key_kw, sort_keys=True, default=str, indent=1) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not path.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=ARCHS, default="bert")
    ap.add_argument("--size", choices=SIZES, default="tiny")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--intermediate", type=int)
    ap.add_argument("--max-position", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--pattern", default="unstructured",
                    help="unstructured | blockRxC (block4x1, block16x1, block1x4, block4x4) | nmN:M (nm2:4, nm2:8, nm1:16)")
    ap.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    ap.add_argument("--opset", type=int, help=f"torchscript: 13..21 (default {DEFAULT_TS_OPSET}); dynamo: 17..23 (default: torch picks 20)")
    ap.add_argument("--attn", choices=ATTNS, default="eager")
    ap.add_argument("--no-token-type-ids", action="store_true")
    ap.add_argument("--no-pooler", action="store_true")
    ap.add_argument("--external-data", action="store_true", help="save weights in <out>.data beside the .onnx")
    ap.add_argument("--weight-quant", choices=WEIGHT_QUANTS)
    ap.add_argument("--per-tensor", action="store_true", help="with --weight-quant: one scale per tensor")
    ap.add_argument("--hf-init", action="store_true", help="stock transformers init (zero biases; see docstring)")
    ap.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-torch check")
    ap.add_argument("--manifest", help="add/replace this model's entry in a JSON manifest")
    ap.add_argument("--out", help="output .onnx path")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    cmd = "python examples/make_pruned_bert.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    make_model(a.out, arch=a.arch, size=a.size, layers=a.layers, hidden=a.hidden, heads=a.heads,
               vocab=a.vocab, intermediate=a.intermediate, max_position=a.max_position,
               seed=a.seed, sparsity=a.sparsity, pattern=a.pattern, exporter=a.exporter,
               opset=a.opset, attn=a.attn, token_type_ids=not a.no_token_type_ids,
               pooler=not a.no_pooler, external_data=a.external_data,
               weight_quant=a.weight_quant, per_tensor=a.per_tensor, hf_init=a.hf_init,
               check=not a.no_check, verbose=not a.quiet, manifest=a.manifest, command=cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
