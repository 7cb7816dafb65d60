"""The backend protocol: what the driver, the CLI and the ONNX backend adaptor (s4c.backend) ask of
a code generator, and what codegen/c and codegen/s4 implement.

    backend = get_backend("c")                            # s4c.codegen.registry: the one list
    options = backend.options({"cflags": "-O2"})          # typed: COptions / S4Options (dataclasses)
    artifacts = backend.build(graph, outdir, options)     # Artifacts: files, report, report_md
    runner = backend.load(outdir, options)                # Runner: run(feeds) -> outputs, summary()
    outputs = backend.execute(graph, feeds, options)      # build + load (memoised per graph), run
    target = backend.cost_model(options)                  # its layout cost model (s4c.targets)

Options are one frozen dataclass per backend (a subclass of `BackendOptions`); the fields every
backend has are the per-target layout choices the driver hands to select-sparse-layout. A mapping
of options (the CLI's, `s4c.compile(backend_options={...})`) is converted by `options()`; a name
the backend does not know is a TargetError naming it and listing the valid ones.

`execute` is the one memo of compiled graphs for both backends: keyed by (backend, options, the
graph object), dropped when the graph is collected; what a backend compiles into for it (C: a
temporary folder) goes with its runner.

Layering: codegen. Imports s4c's IR-level modules and s4c.targets; never the driver, the CLI or a
backend (the registry, codegen/registry.py, lists the backends).
"""

from __future__ import annotations

import abc
import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from s4c.errors import S4CError, TargetError
from s4c.evaluate import evaluate
from s4c.ir import Graph
from s4c.targets import Target, get_target

__all__ = ["Artifacts", "Backend", "BackendOptions", "EvaluatorRunner", "Runner", "option_names"]


@dataclass(frozen=True)
class BackendOptions:
    """What every backend's options have: the weight-layout choices for its target.

    layout_overrides: `--layout WEIGHT_OR_GLOB=LAYOUT` rules, in order
    layout_default:   `--layout-default LAYOUT` ("" = the cost model chooses)"""

    layout_overrides: tuple[str, ...] = ()
    layout_default: str = ""

    def __post_init__(self):
        # hashable and immutable whatever the caller handed in (lists from the CLI / a dict)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    def replace(self, **changes) -> "BackendOptions":
        return dataclasses.replace(self, **changes)


def option_names(options_type: type[BackendOptions]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(options_type))


@dataclass
class Artifacts:
    """What `build` wrote into OUTDIR: files (key -> path relative to OUTDIR, listed in
    manifest.json), its section of report.json and of report.md."""

    files: dict[str, str] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    report_md: str = ""
    # IR weights (by value name) these files hold whole (s4c.weight_store.StoredWeight): the
    # driver leaves them out of weights.npz, and readers rebuild them from these files
    weights: dict = field(default_factory=dict)


class Runner(abc.ABC):
    """A loaded, runnable compile: feeds and outputs keyed by the ONNX names."""

    @abc.abstractmethod
    def run(self, feeds: dict) -> dict:
        ...

    def summary(self) -> str | None:
        """One line on the last run (e.g. the S4's modelled time), or None."""
        return None


class EvaluatorRunner(Runner):
    """The reference evaluator over the IR (`s4c run --backend ref`)."""

    def __init__(self, graph: Graph):
        self.graph = graph

    def run(self, feeds: dict) -> dict:
        """At any dims inside a range build's ranges: the IR is at the maxima, so smaller inputs run
        padded (sequence: zeros with mask 0; batch: copies of the last sentence) and the outputs are
        cut back, as the S4 buckets do: exact for the real tokens where an attention mask hides the
        padding."""
        ranges = self.graph.dim_ranges
        if ranges is None:
            return evaluate(self.graph, feeds)
        try:
            dims = ranges.bind({k: np.shape(v) for k, v in feeds.items()})
        except ValueError as e:
            raise S4CError(str(e)) from None
        top = ranges.maximum()
        if all(dims.get(s, top[s]) == top[s] for s in top):
            return evaluate(self.graph, feeds)
        where = ", ".join(f"{s}={dims[s]}" for s in dims)
        if not ranges.outputs:
            raise S4CError(f"the reference evaluator runs this range build at its maximum dims only (not {where}): "
                           f"its output dims could not be matched to the input dims")
        if not ranges.padding_exact():
            raise S4CError(f"the reference evaluator runs this range build at its maximum dims only (not {where}): "
                           f"the model has no attention mask input to hide padding")
        return ranges.cut(evaluate(self.graph, ranges.pad(feeds, top)), dims)


# (backend name, options, id(graph)) -> (weakref to the graph, runner)
_PREPARED: dict[tuple, tuple] = {}


class Backend(abc.ABC):
    """One code generator. Subclasses set `name`, `options_type` and implement build / load / prepare."""

    name: ClassVar[str]
    options_type: ClassVar[type[BackendOptions]] = BackendOptions
    description: ClassVar[str] = ""

    # -- options -------------------------------------------------------------------------------
    def options(self, values: BackendOptions | Mapping[str, Any] | None = None) -> BackendOptions:
        """Typed options from an instance (returned as is), a mapping (None values mean "the
        default"), or None (all defaults). An unknown name is a TargetError naming it."""
        if values is None:
            return self.options_type()
        if isinstance(values, self.options_type):
            return values
        if isinstance(values, BackendOptions):
            raise TargetError(f"backend {self.name}: options of type {type(values).__name__}, "
                              f"expected {self.options_type.__name__}")
        if not isinstance(values, Mapping):
            raise TargetError(f"backend {self.name}: options must be a dict or {self.options_type.__name__}, "
                              f"not {type(values).__name__}")
        known = option_names(self.options_type)
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise TargetError(f"backend {self.name}: unknown option{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}; its options: {', '.join(known)}")
        return self.options_type(**{k: v for k, v in values.items() if v is not None})

    # -- the protocol --------------------------------------------------------------------------
    def check_sizes(self, graph: Graph, options: BackendOptions) -> None:
        """TargetError, before any code is generated, when a tensor cannot fit the target."""

    @abc.abstractmethod
    def build(self, graph: Graph, outdir, options=None) -> Artifacts:
        """Generate the target's files for `graph` (after its layout selection) into `outdir`."""

    @abc.abstractmethod
    def load(self, outdir, options=None) -> Runner:
        """A runner on what `build` wrote into `outdir`."""

    @abc.abstractmethod
    def prepare(self, graph: Graph, options: BackendOptions) -> Runner:
        """A runner on `graph` as it is (no passes), compiled wherever the backend likes (memory,
        a temporary folder that lives as long as the runner)."""

    def check_feeds(self, graph: Graph, feeds: dict) -> dict:
        """The feeds `execute` runs `prepare`'s runner on (a backend may check or convert them
        against the graph's inputs here: the runner keeps no reference to the graph)."""
        return feeds

    def cost_model(self, options=None) -> Target:
        """The target description layout selection prices this backend's layouts with."""
        return get_target(self.name)

    def execute(self, graph: Graph, feeds: dict, options=None) -> dict:
        """Compile `graph` (memoised on the graph object and the options) and run it on `feeds`:
        the ONNX backend adaptor's executor for this backend."""
        options = self.options(options)
        key = (self.name, options, id(graph))
        entry = _PREPARED.get(key)
        if entry is None or entry[0]() is not graph:
            runner = self.prepare(graph, options)
            entry = _PREPARED[key] = (weakref.ref(graph), runner)
            weakref.finalize(graph, _PREPARED.pop, key, None)
        return entry[1].run(self.check_feeds(graph, feeds))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
