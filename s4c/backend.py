"""s4c as an `onnx.backend.base.Backend`, so ONNX's own backend tests (and any harness written for
that API) run models through s4c.

    rep = S4CBackend.prepare(model)                 # keeps the model; checks op support only
    y, = rep.run([x])                               # compiles for x's shape, then executes
    y, = S4CBackend.run_model(model, {"x": x}, backend="ref")

s4c compiles for static shapes, so `prepare` cannot compile yet: `BackendRep.run` compiles for the
shapes of the inputs it is given (every input's shape is bound through `input_shapes`). When the
model has a shape-deciding operand that is a runtime input (Reshape's shape, Slice's starts,
Expand's shape, a Reduce's axes, Split's sizes, Tile's repeats, ConstantOfShape, Range...), the
import fails; the rep then specialises: it recompiles with the graph inputs feeding that operand
frozen to their current values (`frozen_inputs`), as a static-shape compiler must. Compiled graphs
are cached by input shapes and dtypes (+ the frozen inputs' values), the `max_cached` (default 8)
most recently used ones.

Opsets are the frontend's business: `prepare` converts the model once with
`s4c.frontend.onnx_import.convert_opset` (onnx.version_converter, for opsets outside the importers'
native range), as every other s4c entry point does through `load_onnx`.

Execution paths are pluggable: `EXECUTORS` maps a name to `callable(graph, inputs) -> {output
name: array}`; "ref" is the reference evaluator. Every registered backend (s4c.codegen.registry:
"c", "s4") serves as `backend=NAME` through the protocol's `execute(graph, inputs)` (which memoises
the compiled graph on the graph object: the rep hands it the same Graph for as long as that graph
stays in the rep's cache), so codegen never imports this module; `register_executor` adds others
or replaces one (e.g. a backend's execute with other options).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Callable, Mapping

import numpy as np
import onnx
import onnx.inliner
import onnx.numpy_helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from s4c.codegen.registry import BACKENDS
from s4c.errors import FrontendError, RuntimeShapeOperandError, S4CError
from s4c.evaluate import evaluate
from s4c.frontend.onnx_import import INLINED_OPS, convert_opset, load_onnx
from s4c.frontend.onnx_ops import SUPPORTED_OPS
from s4c.ir import Graph

Executor = Callable[[Graph, dict], dict]

EXECUTORS: dict[str, Executor] = {"ref": evaluate}
DEFAULT_EXECUTOR = "ref"


def register_executor(name: str, fn: Executor, replace: bool = False) -> None:
    """Make `backend=name` run compiled graphs with `fn(graph, inputs) -> {output name: array}`."""
    if name in EXECUTORS and not replace:
        raise ValueError(f"executor {name!r} is already registered")
    EXECUTORS[name] = fn


def _executor(name: str) -> Executor:
    if name not in EXECUTORS:
        backend = BACKENDS.get(name)
        if backend is None:
            raise S4CError(f"unknown backend {name!r} (available: {', '.join(sorted(set(EXECUTORS) | set(BACKENDS)))})")
        EXECUTORS[name] = backend.execute
    return EXECUTORS[name]


# -- model preparation ------------------------------------------------------------------------------

def check_supported_ops(model: onnx.ModelProto, label: str = "model") -> None:
    """Raise one FrontendError listing every op type s4c cannot import, with its first node."""
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    first: dict[str, str] = {}
    for i, node in enumerate(model.graph.node):
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if key not in SUPPORTED_OPS and key not in INLINED_OPS and key not in first:
            first[key] = node.name or f"#{i}"
    if first:
        listing = ", ".join(f"{op} (first at node {name!r})" for op, name in sorted(first.items()))
        raise FrontendError(f"{label}: unsupported op type(s): {listing}")


def check_tensor_io(model: onnx.ModelProto, label: str = "model") -> None:
    """Raise a FrontendError if a model input or output is not a tensor (a sequence, optional, map...)."""
    for what, infos in (("input", model.graph.input), ("output", model.graph.output)):
        for info in infos:
            kind = info.type.WhichOneof("value")
            if kind not in ("tensor_type", None):
                raise FrontendError(f"{label}: {what} {info.name!r} is of {kind.replace('_type', '')} type; "
                                    f"s4c compiles tensor-only models")


# -- specialisation ---------------------------------------------------------------------------------

def _runtime_operand(error: FrontendError) -> str | None:
    """The value the importer needed at compile time (None if the error is about something else)."""
    return error.value_name if isinstance(error, RuntimeShapeOperandError) else None


# Ops whose result depends only on their operand's type, never its values: the walk stops there.
_TYPE_ONLY = {"Shape", "Size"}


def _input_ancestors(graph: onnx.GraphProto, tensor: str, inputs: set[str]) -> set[str]:
    """The graph inputs whose values `tensor` is computed from (itself, if it is one)."""
    producer = {out: node for node in graph.node for out in node.output if out}
    found: set[str] = set()
    stack, seen = [tensor], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
        node = producer.get(name)
        if node is not None and not (node.op_type in _TYPE_ONLY and node.domain in ("", "ai.onnx")):
            stack.extend(i for i in node.input if i)
    return found


def _array(value: Any) -> np.ndarray:
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value)


class S4CBackendRep(BackendRep):
    """A prepared model: compiles per input signature on `run`, then executes on `backend`."""

    def __init__(self, model: onnx.ModelProto, backend: str = DEFAULT_EXECUTOR, label: str = "model",
                 max_cached: int = 8):
        self.model = model
        self.max_cached = max(1, int(max_cached))
        self.label = label
        self.backend = backend
        _executor(backend)
        init_names = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in init_names]
        self.output_names = [o.name for o in model.graph.output]
        # input signature -> names of the inputs that must be frozen to compile it
        self._frozen_names: dict[tuple, tuple[str, ...]] = {}
        # (input signature, frozen values) -> compiled graph, least recently used first
        self._graphs: OrderedDict[tuple, Graph] = OrderedDict()

    # -- inputs ------------------------------------------------------------------------------------
    def _named_inputs(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            named = {k: _array(v) for k, v in inputs.items()}
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) != len(self.input_names):
                raise S4CError(f"{self.label}: got {len(inputs)} input(s), the model takes "
                               f"{len(self.input_names)} ({', '.join(map(repr, self.input_names))})")
            named = {n: _array(v) for n, v in zip(self.input_names, inputs)}
        unknown = sorted(set(named) - set(self.input_names))
        missing = [n for n in self.input_names if n not in named]
        if unknown or missing:
            raise S4CError(f"{self.label}: inputs must be {', '.join(map(repr, self.input_names))}"
                           + (f"; unknown {', '.join(map(repr, unknown))}" if unknown else "")
                           + (f"; missing {', '.join(map(repr, missing))}" if missing else ""))
        return named

    # -- compilation -------------------------------------------------------------------------------
    def compile(self, inputs: Mapping[str, np.ndarray]) -> tuple[Graph, dict[str, np.ndarray]]:
        """The graph compiled for these inputs' shapes, and the inputs it still takes at run time."""
        signature = tuple((n, inputs[n].shape, inputs[n].dtype.str) for n in self.input_names)
        frozen_names = self._frozen_names.get(signature, ())
        key = (signature, self._frozen_key(inputs, frozen_names))
        graph = self._graphs.get(key)
        if graph is None:
            graph, frozen_names = self._compile_specialising(inputs, signature, frozen_names)
        else:
            self._graphs.move_to_end(key)
        runtime = {n: inputs[n] for n in self.input_names if n not in frozen_names}
        return graph, runtime

    @staticmethod
    def _frozen_key(inputs, names) -> tuple:
        return tuple((n, inputs[n].tobytes()) for n in names)

    def _import(self, inputs, frozen_names) -> Graph:
        shapes = {n: inputs[n].shape for n in self.input_names}
        frozen = {n: inputs[n] for n in frozen_names}
        return load_onnx(self.model, input_shapes=shapes, frozen_inputs=frozen)

    def _compile_specialising(self, inputs, signature, frozen: tuple[str, ...]) -> tuple[Graph, tuple[str, ...]]:
        """Import, freezing more inputs each time the importer names a runtime shape operand."""
        runtime_inputs = set(self.input_names)
        while True:
            try:
                graph = self._import(inputs, frozen)
                break
            except FrontendError as e:
                operand = _runtime_operand(e)
                if operand is None:
                    raise
                # Freeze the inputs the operand's value is computed from (usually one int vector;
                # Range may also take float scalars).
                needed = _input_ancestors(self.model.graph, operand, runtime_inputs - set(frozen))
                if not needed:
                    raise
                frozen = tuple(n for n in self.input_names if n in needed or n in frozen)
        self._frozen_names[signature] = frozen
        self._graphs[(signature, self._frozen_key(inputs, frozen))] = graph
        while len(self._graphs) > self.max_cached:  # weights are per graph: keep the cache small
            self._graphs.popitem(last=False)
        return graph, frozen

    # -- execution ---------------------------------------------------------------------------------
    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Outputs in the model's output order (a namedtuple that also indexes by output name)."""
        named = self._named_inputs(inputs)
        graph, runtime = self.compile(named)
        results = _executor(kwargs.get("backend", self.backend))(graph, runtime)
        values = [np.asarray(results[n]) for n in self.output_names]
        return namedtupledict("Outputs", self.output_names)(*values)


class S4CBackend(Backend):
    """`onnx.backend.base.Backend` over s4c. Keyword `backend=` picks the executor ("ref", ...)."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto | str, device: str = "CPU", **kwargs: Any) -> S4CBackendRep:
        if not cls.supports_device(device):
            raise S4CError(f"s4c backend: device {device!r} is not supported (only CPU)")
        label = "model"
        if not isinstance(model, onnx.ModelProto):
            label = str(model)
            model = onnx.load(model, load_external_data=True)
        check_tensor_io(model, label)
        model = convert_opset(model, label)
        check_supported_ops(model, label)
        try:
            super().prepare(model, device)  # onnx.checker
        except onnx.checker.ValidationError as e:
            raise FrontendError(f"{label}: not a valid ONNX model ({e})") from None
        return S4CBackendRep(model, backend=kwargs.get("backend", DEFAULT_EXECUTOR), label=label,
                             max_cached=kwargs.get("max_cached", 8))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU", outputs_info=None, **kwargs: Any):
        raise NotImplementedError("s4c compiles whole models; wrap the node in a model and use run_model")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            return Device(device).type == DeviceType.CPU
        except AttributeError:
            return False


prepare = S4CBackend.prepare
run_model = S4CBackend.run_model
run_node = S4CBackend.run_node
supports_device = S4CBackend.supports_device

__all__ = ["S4CBackend", "S4CBackendRep", "EXECUTORS", "register_executor", "check_supported_ops",
           "prepare", "run_model", "run_node", "supports_device"]
