"""The reference evaluator: runs an IR graph with the registry's numpy implementations.

It is the oracle every pass and backend is checked against, so it is plain and exact (fp32 math as
ONNX specifies it), and frees each intermediate after its last use to keep BERT-base runs small."""

from __future__ import annotations

import numpy as np

from s4c.errors import S4CError
from s4c.ir import Graph, TensorType, numpy_dtype
from s4c import ops


def check_inputs(graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model inputs as arrays of the graph's dtypes and shapes; a one-line error otherwise."""
    missing = [v.name for v in graph.inputs if v.name not in inputs]
    if missing:
        raise S4CError(f"missing model input(s): {', '.join(map(repr, missing))}")
    unknown = sorted(set(inputs) - {v.name for v in graph.inputs})
    if unknown:
        raise S4CError(f"unknown model input(s): {', '.join(map(repr, unknown))}; "
                       f"the model takes {', '.join(repr(v.name) for v in graph.inputs)}")
    out = {}
    for v in graph.inputs:
        a = np.asarray(inputs[v.name])
        if a.shape != v.shape:
            raise S4CError(f"input {v.name!r} has shape {list(a.shape)}, the compiled model takes {list(v.shape)}")
        try:
            want = numpy_dtype(v.dtype)
        except TypeError as e:
            raise S4CError(f"input {v.name!r}: {e}") from None
        if a.dtype != want:
            if not np.can_cast(a.dtype, want, casting="same_kind"):
                raise S4CError(f"input {v.name!r} has dtype {a.dtype}, the model takes {want}")
            a = a.astype(want)
        out[v.name] = a
    return out


def evaluate(graph: Graph, inputs: dict[str, np.ndarray], keep_all: bool = False) -> dict[str, np.ndarray]:
    """Run `graph` on `inputs` (keyed by input name); returns outputs keyed by output name
    (every value, keyed by name, with `keep_all`)."""
    env: dict[int, np.ndarray] = {}
    checked = check_inputs(graph, inputs)
    for v in graph.inputs:
        env[id(v)] = checked[v.name]
    for v in graph.constants():
        if not isinstance(v.data, np.ndarray):
            raise S4CError(f"constant {v.name!r} has no values (IR parsed from text without weights)")
        env[id(v)] = v.data
    last_use: dict[int, int] = {}
    for i, op in enumerate(graph.ops):
        for v in op.inputs:
            last_use[id(v)] = i
    keep = {id(v) for v in graph.outputs} | {id(v) for v in graph.inputs} | {id(v) for v in graph.constants()}
    for i, op in enumerate(graph.ops):
        args = [env[id(v)] for v in op.inputs]
        try:
            results = ops.REGISTRY[op.op].run(args, op.attrs)
        except S4CError:
            raise
        except Exception as e:  # a runtime failure of the model's own semantics (e.g. index out of range)
            raise S4CError(f"evaluating {op.describe()}: {type(e).__name__}: {e}") from e
        for v, r in zip(op.outputs, results):
            r = np.asarray(r)
            if TensorType.of(r) != v.type:
                raise AssertionError(f"{op.describe()}: reference gave {TensorType.of(r)}, IR says {v.type}")
            env[id(v)] = r
        if not keep_all:
            for v in op.inputs:
                if last_use.get(id(v)) == i and id(v) not in keep:
                    env.pop(id(v), None)
    if keep_all:
        return {v.name: env[id(v)] for v in graph.values() if id(v) in env}
    return {v.name: env[id(v)] for v in graph.outputs}
