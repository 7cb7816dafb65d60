#!/usr/bin/env python3
"""Tiny random BERT-family models, exported the way users export them: the model-family matrix.

Each entry of FAMILIES is a transformers architecture (an encoder or an encoder with a task head)
at a tiny random config. `make_family_model` builds it (seeded), magnitude-prunes every nn.Linear
weight to `sparsity`, and exports it with `torch.onnx.export` (TorchScript or the default dynamo
exporter) with inputs input_ids + attention_mask (+ token_type_ids when asked and the family has
them). `cached_family_model` builds once per argument set under $S4C_MODEL_CACHE (as
make_pruned_bert.cached_model does). Nothing is downloaded.

    python examples/model_families.py --family roberta --exporter dynamo --out /tmp/r.onnx
    python examples/model_families.py --list

The exported graph is checked against torch in onnxruntime at another shape (batch 2, seq 11,
padded); float exports fail above 1e-3.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_pruned_bert import EXPORTERS, build_cached, cache_dir, prune_model  # noqa: E402

_CACHE_VERSION = 1  # bump when the generated graphs change
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            vocab_size=200, max_position_embeddings=64)
#: BERT-base size (for benchmarks); vocabulary and positions stay at each family's defaults
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
SIZES = {"tiny": TINY, "base": BASE}


@dataclass(frozen=True)
class Family:
    config: str                 # transformers config class
    model: str                  # transformers model class
    config_kw: dict = field(default_factory=dict)
    token_types: bool = True    # the architecture takes token_type_ids
    head: str = "encoder"       # encoder | seqcls | qa | tokcls | sentence (masked mean + L2)
    pad_token_id: int | None = None
    segments: int = 2           # token type ids in use (RoBERTa-style models have one: all zeros)


FAMILIES: dict[str, Family] = {
    "bert": Family("BertConfig", "BertModel"),
    "bert-seqcls": Family("BertConfig", "BertForSequenceClassification", {"num_labels": 3}, head="seqcls"),
    "bert-qa": Family("BertConfig", "BertForQuestionAnswering", head="qa"),
    "bert-tokcls": Family("BertConfig", "BertForTokenClassification", {"num_labels": 5}, head="tokcls"),
    "bert-gelu-new": Family("BertConfig", "BertModel", {"hidden_act": "gelu_new"}),
    "bert-relu": Family("BertConfig", "BertModel", {"hidden_act": "relu"}),
    "bert-sentence": Family("BertConfig", "BertModel", head="sentence"),
    "distilbert": Family("DistilBertConfig", "DistilBertModel", token_types=False),
    "roberta": Family("RobertaConfig", "RobertaModel", {"type_vocab_size": 1}, pad_token_id=1, segments=1),
    "xlm-roberta": Family("XLMRobertaConfig", "XLMRobertaModel", {"type_vocab_size": 1}, pad_token_id=1,
                          segments=1),
    "albert": Family("AlbertConfig", "AlbertModel", {"embedding_size": 32}),
    "electra": Family("ElectraConfig", "ElectraModel", {"embedding_size": 32}),
    "mpnet": Family("MPNetConfig", "MPNetModel", token_types=False, pad_token_id=1),
    "deberta-v2": Family("DebertaV2Config", "DebertaV2Model",
                         {"relative_attention": True, "position_buckets": 16, "max_relative_positions": 32,
                          "pos_att_type": ["p2c", "c2p"], "type_vocab_size": 2, "position_biased_input": False}),
}
DISTILBERT_KEYS = {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                   "intermediate_size": "hidden_dim"}


def build(family: str, seed: int = 0, size: str = "tiny"):
    """The family's random model at `size` (eval mode), with random biases and LayerNorm affines
    (stock init leaves them 0/1, which exporters deduplicate into one initializer)."""
    import torch
    import transformers

    fam = FAMILIES[family]
    kw = dict(SIZES[size])
    if fam.config == "DistilBertConfig":
        kw = {DISTILBERT_KEYS.get(k, k): v for k, v in kw.items()}
    if fam.pad_token_id is not None:
        kw["pad_token_id"] = fam.pad_token_id
    kw.update(fam.config_kw)
    if "embedding_size" in kw and size == "base":
        kw["embedding_size"] = 128  # ALBERT/ELECTRA-base factorised embeddings
    torch.manual_seed(seed)
    cfg = getattr(transformers, fam.config)(**kw)
    model = getattr(transformers, fam.model)._from_config(cfg, attn_implementation="eager")
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.02)
            elif isinstance(mod, torch.nn.LayerNorm) and mod.weight is not None:
                mod.weight.copy_(1.0 + torch.randn(mod.weight.shape, generator=g) * 0.05)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.02)
    return model.eval()


def input_names(family: str, token_type_ids: bool) -> list[str]:
    names = ["input_ids", "attention_mask"]
    if token_type_ids and FAMILIES[family].token_types:
        names.append("token_type_ids")
    return names


def output_names(family: str) -> list[str]:
    return {"encoder": ["last_hidden_state"], "seqcls": ["logits"], "qa": ["start_logits", "end_logits"],
            "tokcls": ["logits"], "sentence": ["sentence_embedding"]}[FAMILIES[family].head]


def example_inputs(names, batch: int, seq: int, seed: int = 0, vocab: int = TINY["vocab_size"],
                   segments: int = 2) -> dict:
    """input_ids avoiding the pad id (ids >= 3), a padding mask with later rows cut short, types 0 then 1."""
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(3, vocab, (batch, seq), dtype=np.int64)}
    mask = np.ones((batch, seq), np.int64)
    for b in range(1, batch):
        mask[b, seq - 1 - (b * 3) % max(seq // 2, 1):] = 0
    feeds["attention_mask"] = mask
    types = np.zeros((batch, seq), np.int64)
    types[:, seq // 2:] = segments - 1
    feeds["token_type_ids"] = types
    return {k: feeds[k] for k in names}


def export(model, family: str, path: str, exporter: str, names: list[str], opset: int | None = None) -> None:
    import torch

    outs = output_names(family)
    head = FAMILIES[family].head

    class Exportable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def run(self, kw, attention_mask):
            o = self.model(**kw, return_dict=True)
            if head == "sentence":  # sentence-transformers pooling: masked mean, then L2 normalise
                m = attention_mask.unsqueeze(-1).to(o.last_hidden_state.dtype)
                mean = (o.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)
                return (torch.nn.functional.normalize(mean, p=2, dim=1),)
            return tuple(getattr(o, n) for n in outs)

    class Two(Exportable):
        def forward(self, input_ids, attention_mask):
            return self.run(dict(input_ids=input_ids, attention_mask=attention_mask), attention_mask)

    class Three(Exportable):
        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.run(dict(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids), attention_mask)

    wrapped = (Three if len(names) == 3 else Two)().eval()
    ex = tuple(torch.from_numpy(v) for v in example_inputs(names, 2, 16, segments=FAMILIES[family].segments).values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            dyn = {n: {0: "batch", 1: "sequence"} for n in names}
            torch.onnx.export(wrapped, ex, path, input_names=names, output_names=outs, dynamic_axes=dyn,
                              opset_version=opset or 17, dynamo=False, do_constant_folding=True)
        elif exporter == "dynamo":
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            torch.onnx.export(wrapped, ex, path, input_names=names, output_names=outs,
                              dynamic_shapes={n: {0: batch, 1: seq} for n in names}, opset_version=opset,
                              dynamo=True, external_data=False, verbose=False)
        else:
            raise ValueError(f"exporter must be one of {EXPORTERS}")
    return wrapped


def make_family_model(out, family: str, exporter: str = "torchscript", token_type_ids: bool = True,
                      sparsity: float = 0.9, seed: int = 0, opset: int | None = None, size: str = "tiny") -> Path:
    """Build, prune, export and check one model; returns the .onnx path."""
    import onnxruntime as ort
    import torch

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}")
    model = build(family, seed, size)
    if sparsity:
        prune_model(model, "unstructured", sparsity, verbose=False)
    names = input_names(family, token_type_ids)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapped = export(model, family, str(out), exporter, names, opset)
    m = onnx.load(str(out))
    for n in m.graph.node:  # absolute paths in dynamo's stack traces: not reproducible
        keep = [p for p in n.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del n.metadata_props[:]
        n.metadata_props.extend(keep)
    onnx.save_model(m, str(out))
    feeds = example_inputs(names, 2, 11, seed=7, segments=FAMILIES[family].segments)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    got = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    with torch.no_grad():
        ref = wrapped(*(torch.from_numpy(v) for v in feeds.values()))
    diff = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref))
    if diff > 1e-3:
        raise RuntimeError(f"{family} ({exporter}): onnxruntime differs from torch by {diff}")
    return out


def cached_family_model(family: str, exporter: str = "torchscript", token_type_ids: bool = True,
                        sparsity: float = 0.9, seed: int = 0, opset: int | None = None, size: str = "tiny") -> Path:
    """make_family_model, built once per argument set under $S4C_MODEL_CACHE/families/."""
    key_kw = dict(family=family, exporter=exporter, token_type_ids=token_type_ids and FAMILIES[family].token_types,
                  sparsity=sparsity, seed=seed, opset=opset, v=_CACHE_VERSION)
    if size != "tiny":  # tiny models keep the keys they had before sizes existed
        key_kw["size"] = size
    key = hashlib.sha256(json.dumps(key_kw, sort_keys=True).encode()).hexdigest()[:12]
    final = cache_dir() / "families" / f"{family}_{exporter}{'' if size == 'tiny' else '_' + size}_{key}"
    return build_cached(final, key_kw, lambda tmp: make_family_model(
        tmp / "model.onnx", family, exporter, token_type_ids, sparsity, seed, opset, size))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=sorted(FAMILIES))
    ap.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    ap.add_argument("--no-token-type-ids", action="store_true")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--opset", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--out")
    ap.add_argument("--list", action="store_true", help="list the families")
    a = ap.parse_args(argv)
    if a.list or not a.family:
        for name, fam in FAMILIES.items():
            print(f"{name:14s} {fam.model} ({fam.head})")
        return 0
    out = make_family_model(a.out or f"{a.family}_{a.exporter}.onnx", a.family, a.exporter,
                            not a.no_token_type_ids, a.sparsity, a.seed, a.opset, a.size)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
