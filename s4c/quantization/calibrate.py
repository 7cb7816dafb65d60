"""Calibration: run the fp32 reference evaluator over calibration samples and record, with one
observer per tensor, the clip threshold of every activation quantize-int8 will quantise.

A calibration file is an .npz with one array per graph input, keyed by the input's name, each with a
leading sample axis: [N, *bound shape] (the shape the model was compiled for). Integer inputs may come
as any integer dtype, float inputs as any float dtype; anything else is a one-line error naming the
file and the input.

    samples = load_samples("calib.npz", graph)          # [{input name: array}] * N
    table = collect_ranges(graph, samples, "entropy")   # {value name: Observer}
    amax = {name: obs.amax() for name, obs in table.items()}
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from s4c import ops
from s4c.errors import S4CError
from s4c.evaluate import check_inputs
from s4c.ir import Graph, numpy_dtype
from s4c.quantization import activation_values
from s4c.quantization.observers import Observer, make_observer


class CalibrationError(S4CError):
    """A calibration (or accuracy) data file that cannot be used; names the file and the input."""


def load_samples(path: str | os.PathLike, graph: Graph, what: str = "calibration data") -> list[dict[str, np.ndarray]]:
    """The samples of `path` as N feeds of `graph` (each input's [N, *shape] array split on axis 0)."""
    path = os.fspath(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CalibrationError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise CalibrationError(f"{what} {path}: is a folder, not an .npz file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CalibrationError(f"{what} {path}: not a readable .npz file ({' '.join(str(e).split())})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CalibrationError(f"{what} {path}: a single array, not an .npz file with one array per model input")
    try:
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CalibrationError(f"{what} {path}: not a readable .npz file ({' '.join(str(e).split())})") from None
    expected = ", ".join(f"{v.name!r} {v.dtype}[N,{','.join(map(str, v.shape))}]" for v in graph.inputs)
    missing = [v.name for v in graph.inputs if v.name not in arrays]
    if missing:
        raise CalibrationError(f"{what} {path}: no array for model input {missing[0]!r} (expected {expected})")
    unknown = sorted(set(arrays) - {v.name for v in graph.inputs})
    if unknown:
        raise CalibrationError(f"{what} {path}: array {unknown[0]!r} is not a model input (expected {expected})")
    count = None
    for v in graph.inputs:
        a = arrays[v.name]
        if a.ndim != len(v.shape) + 1 or tuple(a.shape[1:]) != tuple(v.shape):
            raise CalibrationError(f"{what} {path}: input {v.name!r} has shape {list(a.shape)}, expected "
                                   f"[N, {', '.join(map(str, v.shape))}] (a leading sample axis, then the bound shape)")
        want = numpy_dtype(v.dtype)
        if want == np.bool_:
            kind_ok = a.dtype == np.bool_
        elif np.issubdtype(want, np.integer):
            kind_ok = np.issubdtype(a.dtype, np.integer)
        else:
            kind_ok = np.issubdtype(a.dtype, np.floating)
        if not kind_ok:
            raise CalibrationError(f"{what} {path}: input {v.name!r} has dtype {a.dtype}, the model takes {v.dtype}")
        if count is None:
            count = a.shape[0]
        elif a.shape[0] != count:
            raise CalibrationError(f"{what} {path}: input {v.name!r} has {a.shape[0]} samples, "
                                   f"{graph.inputs[0].name!r} has {count}")
    if not count:
        raise CalibrationError(f"{what} {path}: holds no samples (N = 0)")
    return [{v.name: arrays[v.name][i].astype(numpy_dtype(v.dtype)) for v in graph.inputs} for i in range(count)]


def run_observed(graph: Graph, feeds: dict[str, np.ndarray], watch: dict[int, list]) -> dict[str, np.ndarray]:
    """The reference evaluator's run of `graph` on `feeds` that hands every value whose id is in
    `watch` to the callbacks listed there; intermediates are freed after their last use."""
    env: dict[int, np.ndarray] = {}
    checked = check_inputs(graph, feeds)
    for v in graph.inputs:
        env[id(v)] = checked[v.name]
        for fn in watch.get(id(v), ()):
            fn(env[id(v)])
    for v in graph.constants():
        env[id(v)] = v.data
    last_use = {id(v): i for i, op in enumerate(graph.ops) for v in op.inputs}
    keep = {id(v) for v in graph.outputs}
    for i, op in enumerate(graph.ops):
        try:
            results = ops.REGISTRY[op.op].run([env[id(v)] for v in op.inputs], op.attrs)
        except S4CError:
            raise
        except Exception as e:
            raise S4CError(f"evaluating {op.describe()}: {type(e).__name__}: {e}") from e
        for v, r in zip(op.outputs, results):
            env[id(v)] = np.asarray(r)
            for fn in watch.get(id(v), ()):
                fn(env[id(v)])
        for v in op.inputs:
            if last_use.get(id(v)) == i and id(v) not in keep and not v.is_constant:
                env.pop(id(v), None)
    return {v.name: env[id(v)] for v in graph.outputs}


def collect_ranges(graph: Graph, samples: list[dict[str, np.ndarray]], method: str = "minmax",
                   percentile: float = 99.99, outputs: list | None = None) -> dict[str, Observer]:
    """{value name: observer} for every activation quantize-int8 quantises, after observing all
    samples. `outputs`, when given, gets each sample's graph outputs appended (the fp32 reference
    the accuracy report compares against, without a second run)."""
    observers: dict[str, Observer] = {}
    watch: dict[int, list] = {}
    for v in activation_values(graph):
        obs = observers[v.name] = make_observer(method, percentile)
        watch.setdefault(id(v), []).append(obs.observe)
    for feeds in samples:
        result = run_observed(graph, feeds, watch)
        if outputs is not None:
            outputs.append(result)
    return observers
