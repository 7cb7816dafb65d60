"""Write deterministic BERT-style inputs (.npz keyed by input name) for `s4c run --inputs`.

    python examples/make_example_inputs.py OUT.npz --batch 1 --seq 128 --vocab 768 [--no-token-type-ids]

No torch needed. The padding mask cuts the last quarter of every sentence after the first."""

import argparse

import numpy as np


def make_inputs(batch: int, seq: int, vocab: int, token_type_ids: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[1:, seq * 3 // 4:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if token_type_ids:
        types = np.zeros((batch, seq), np.int64)
        types[:, seq // 2:] = 1
        inputs["token_type_ids"] = types
    return inputs


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=768)
    p.add_argument("--no-token-type-ids", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    np.savez(a.out, **make_inputs(a.batch, a.seq, a.vocab, not a.no_token_type_ids, a.seed))
    print(f"wrote {a.out}")
