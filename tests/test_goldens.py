"""The golden IR tests of every pass: one harness over tests/golden/<pass>/<case>.s4ir.

A case file holds header comments, the input IR, a `# ---- expected ----` line and the expected IR:

    # <pass>: what the case checks (one line or more)
    # pipeline: fuse-linear,fuse-gelu     what to run (default: the folder's pass)
    # expect-op: Linear                   an op type that must be in the result (optional)
    # forbid-op: Gelu                     an op type that must not be (optional)
    # partial: yes                        a neg_ case whose allowed part does change (see below)
    # evaluate-before: untyped            the input's types are stale (infer-shapes): evaluate it
                                          without checking each result's type
    # tolerance: 0.05                     max abs difference allowed before/after (default 1e-5):
                                          for passes that change the numbers on purpose
                                          (quantize-int8), the error the case accepts
    <input IR>
    # ---- expected ----
    <expected IR>

Weights too big to print inline (more than s4c.text.INLINE_LIMIT elements) come from
`<case>.npz` beside the case (arrays keyed by constant name).

Rules, for every case:
- the pipeline runs with the verifier after each pass; its text is exactly the expected IR, and
  both the input and the expected IR round-trip through the text form;
- numbers as well as text: the reference evaluator gives the same outputs (within 1e-5, or the
  case's `tolerance`) before and after, on random inputs;
- `pos_*` cases change the graph and their passes say so (PassResult.changed);
- `neg_*` cases are near misses: the graph stays exactly as it was and no pass reports a change,
  unless the header says `partial: yes` (e.g. fuse-gelu fusing a Gelu but keeping it out of a
  Linear whose result is also returned): then an `expect-op` / `forbid-op` says what must not happen;
- every registered pass (s4c.passes.all_passes) has at least one `pos_*` and one `neg_*` case.

Regenerate the expected parts with `S4C_UPDATE_GOLDEN=1 pytest tests/test_goldens.py` and review the diff.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from oracle import assert_outputs_close, random_feeds
from s4c import ops
from s4c.evaluate import check_inputs, evaluate
from s4c.ir import Graph
from s4c.passes import PassManager, VerifyEach, all_passes, parse_pipeline
from s4c.text import parse_graph, print_graph
from s4c.verify import verify

GOLDEN = Path(__file__).resolve().parent / "golden"
MARK = "# ---- expected ----\n"
CASES = sorted(GOLDEN.glob("*/*.s4ir"))
TOL = 1e-5


@pytest.fixture(autouse=True)
def _no_user_calibration(tmp_path, monkeypatch):
    """select-sparse-layout's C cost model from its built-in defaults, never ~/.cache/s4c."""
    monkeypatch.setenv("S4C_CACHE", str(tmp_path / "s4c-cache"))


def read_case(path: Path) -> tuple[str, str, dict[str, str], dict | None]:
    """(input IR, expected IR, header, weights or None)."""
    text = path.read_text()
    source, sep, expected = text.partition(MARK)
    assert sep or os.environ.get("S4C_UPDATE_GOLDEN"), f"{path}: no '{MARK.strip()}' line"
    header = dict(re.findall(r"^# ([a-z-]+): (.*)$", source, re.M))
    npz = path.with_suffix(".npz")
    weights = None
    if npz.exists():
        with np.load(npz) as data:
            weights = {k: data[k] for k in data.files}
    return source, expected, header, weights


def evaluate_untyped(graph: Graph, feeds: dict) -> dict:
    """The reference evaluator's semantics without its check of each result against the IR's
    declared type (for inputs whose types are stale on purpose)."""
    env = {id(v): a for v, a in zip(graph.inputs, (check_inputs(graph, feeds)[v.name] for v in graph.inputs))}
    env.update({id(v): v.data for v in graph.constants()})
    for op in graph.ops:
        for v, r in zip(op.outputs, ops.REGISTRY[op.op].run([env[id(v)] for v in op.inputs], op.attrs)):
            env[id(v)] = np.asarray(r)
    return {v.name: env[id(v)] for v in graph.outputs}


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_golden(path):
    source, expected, header, weights = read_case(path)
    pipeline = header.get("pipeline", path.parent.name)
    graph = parse_graph(source, weights=weights)
    untyped = header.get("evaluate-before") == "untyped"
    if not untyped:
        verify(graph)
    original = print_graph(graph)
    feeds = random_feeds(graph)
    before = (evaluate_untyped if untyped else evaluate)(parse_graph(source, weights=weights), feeds)

    pm = PassManager(parse_pipeline(pipeline), [VerifyEach()])
    pm.run(graph)
    actual = print_graph(graph)
    if os.environ.get("S4C_UPDATE_GOLDEN"):
        path.write_text(source + MARK + actual)
        expected = actual
    assert actual == expected, f"{path.name}: the pass output differs from the golden text"
    assert print_graph(parse_graph(expected, weights=weights)) == expected, f"{path.name}: expected IR does not round-trip"
    assert_outputs_close(before, evaluate(graph, feeds), path.name, tol=float(header.get("tolerance", TOL)))

    if path.stem.startswith("pos_"):
        assert pm.changed and actual != original, f"{path.name}: a positive case changed nothing"
    elif header.get("partial") == "yes":
        assert "expect-op" in header or "forbid-op" in header, f"{path.name}: a partial near miss says what must not fuse"
    else:
        assert actual == original, f"{path.name}: a near miss changed the graph"
        assert not pm.changed, f"{path.name}: a pass reported a change on a near miss: " \
                               f"{[(str(p), r.stats) for p, r in pm.results if r.changed]}"
    found = Counter(op.op for op in graph.ops)
    if "expect-op" in header:
        assert found[header["expect-op"]], f"{path.name}: expected a {header['expect-op']} op"
    if "forbid-op" in header:
        assert not found[header["forbid-op"]], f"{path.name}: {header['forbid-op']} must not remain"


def test_every_registered_pass_has_positive_and_negative_goldens():
    missing = []
    for name, cls in sorted(all_passes().items()):
        assert (cls.__doc__ or "").strip(), f"{name}: no docstring"
        stems = [p.stem for p in (GOLDEN / name).glob("*.s4ir")]
        for kind in ("pos_", "neg_"):
            if not any(s.startswith(kind) for s in stems):
                missing.append(f"{name}: no {kind}* case")
    assert not missing, missing
    assert {p.parent.name for p in CASES} <= set(all_passes()), "a golden folder names no registered pass"
    assert all(p.stem.startswith(("pos_", "neg_")) for p in CASES)
