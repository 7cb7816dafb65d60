"""The compile driver: import -> pass pipeline -> backends, writing OUTDIR atomically.

    OUTDIR/model.s4ir       the IR after the pipeline (text form; weights summarised)
    OUTDIR/weights.npz      the IR's weights (w0, w1, ... in manifest order), compressed, without
                            those a backend's files hold whole (s4c/weight_store.py)
    OUTDIR/manifest.json    source model, shapes, pipeline, targets built and their files
    OUTDIR/report.json|md   per-target reports (added by backends)
    OUTDIR/...              whatever each backend writes (model.s4, c/ ...)

Everything is written into a temporary sibling folder that replaces OUTDIR only when the whole
compile succeeded, so a failed compile never leaves a half-written OUTDIR.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence, Union

import numpy as np

from s4c.codegen.protocol import Backend, BackendOptions, EvaluatorRunner, Runner, option_names
from s4c.codegen.registry import BACKENDS
from s4c.errors import S4CError, TargetError
from s4c.frontend import load_onnx
from s4c.fusion_report import fusion_report, fusion_report_md
from s4c.gcpause import paused_gc
from s4c.ir import DimRanges, Graph
from s4c.layout_report import layout_report, layout_report_md
from s4c.passes import PassManager, parse_pipeline
from s4c.passes.instruments import format_stats
from s4c.passes.pipelines import target_pipeline
from s4c.passes.select_sparse_layout import LayoutSelection
from s4c.precision import DEFAULT_METHOD, check_precision, quantize_model
from s4c.text import INLINE_LIMIT, parse_graph, print_graph
from s4c.weight_store import NPZ as WEIGHTS_NPZ
from s4c.weight_store import read_weights
from s4c.weight_store import write_weights as write_weight_store

# 2: weights.npz compressed, and weights a backend's files hold whole listed in "weight_refs"
# (s4c/weight_store.py); version 1 folders (every weight dense in weights.npz) still load.
MANIFEST_VERSION = 2
# The backends (codegen/registry.py) implement codegen/protocol.py: typed options, build(graph,
# outdir, options) -> Artifacts, load(outdir, options) -> Runner. The graph a backend gets has been
# through the pipeline and then passes/pipelines.py `target_pipeline(NAME)`
# (select-sparse-layout{target=NAME}), in the same PassManager context.
TARGETS = ("ir", *BACKENDS, "all")

# What `backend_options` may be: a mapping of option names (shared by the targets built: each takes
# the names it has), one backend's typed options, or several.
OptionsArg = Union[Mapping[str, object], BackendOptions, Iterable[BackendOptions], None]


def available_backends() -> dict[str, Backend]:
    """The registered backends, by name (codegen/registry.py)."""
    return dict(BACKENDS)


def backend_options(backend: Backend, options: OptionsArg, backends: Mapping[str, Backend] | None = None):
    """`backend`'s typed options from what `compile` / `runner_for` were given.

    A mapping is shared by every target: each backend takes the names it knows, and a name that no
    backend knows (registered, or in `backends`) is a TargetError naming it. Typed options apply to
    their own backend; a backend given none gets its defaults."""
    if options is None:
        return backend.options()
    if isinstance(options, Mapping):
        every = list(BACKENDS.values()) + [b for b in (backends or {}).values() if b not in BACKENDS.values()]
        mine = option_names(backend.options_type)
        known = {name for b in every for name in option_names(b.options_type)} | set(mine)
        unknown = sorted(k for k in options if k not in known)
        if unknown:
            raise TargetError(f"unknown backend option{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}; options: "
                              + "; ".join(f"{b.name}: {', '.join(option_names(b.options_type))}" for b in every))
        return backend.options({k: v for k, v in options.items() if k in mine})
    given = [options] if isinstance(options, BackendOptions) else list(options)
    for item in given:
        if not isinstance(item, BackendOptions):
            raise TargetError(f"backend options must be a dict or typed options, not {type(item).__name__}")
        if isinstance(item, backend.options_type):
            return item
    return backend.options()


@dataclass
class CompiledModel:
    graph: Graph
    outdir: str | None
    paths: dict[str, str]
    targets: list[str]
    timings: dict[str, float]
    report: dict = field(default_factory=dict)  # what report.json holds (fusion per layer, targets')

    def run(self, inputs: dict[str, np.ndarray], backend: str = "ref", **options) -> dict[str, np.ndarray]:
        """Run the compiled model: inputs and outputs keyed by the ONNX names (`options`: the
        backend's load options, e.g. threads=2 for C)."""
        return runner_for(self, backend, options).run(inputs)


def run_pipeline(graph: Graph, passes: str, manager=None) -> Graph:
    """Run the pipeline text `passes` over `graph` in place (in `manager`, a PassManager, whose
    instruments and results then cover it; else a plain one)."""
    return (manager or PassManager()).run(graph, parse_pipeline(passes))


def compile(model, input_shapes: dict | None = None, target: str = "all", passes: str = "default",
            outdir: str | os.PathLike | None = None, instruments: Sequence = (),
            backend_options: OptionsArg = None, precision: str = "fp32", calibration_data=None,
            calibration_method: str = "percentile", accuracy_data=None, time_layers: bool = False) -> CompiledModel:
    """Import `model` (path or ModelProto), run the pass pipeline, build the target(s).

    `instruments` (s4c.passes.instruments, e.g. standard_instruments(time_passes=True)) see every
    pass: the pipeline's and each target's layout selection, in one PassManager context.
    `backend_options`: a dict of option names (e.g. {"cores": 2, "cflags": "-O2"}: each target
    takes its own; a name no backend has is an error) or typed options (COptions, S4Options).
    With `outdir`, writes the artifacts there (atomically); without, keeps everything in memory
    (target "ir" only). `precision` "int8" quantises after the pipeline (s4c/precision.py), with
    static activation scales from `calibration_data` (an .npz, [N, *input shape] per input;
    `calibration_method` minmax, percentile or entropy) and the accuracy measured on it and on
    `accuracy_data`. `time_layers`: also run the built C library on synthetic inputs to time each
    layer for report.md (the S4 cycle model's per-layer time is always there)."""
    manager = PassManager(instruments=instruments)
    quant = dict(precision=precision, calibration_data=calibration_data, method=calibration_method,
                 accuracy_data=accuracy_data)
    with manager, paused_gc():     # s4c/gcpause.py: the compile's objects live to its end
        return _compile(model, input_shapes, target, passes, outdir, manager, backend_options, quant, time_layers)


def _compile(model, input_shapes, target: str, passes: str, outdir, manager, options_arg: OptionsArg,
             quant: dict | None = None, time_layers: bool = False) -> CompiledModel:
    if target not in TARGETS:
        raise TargetError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    backends = available_backends()
    if target == "all":
        targets = list(backends)
    elif target == "ir":
        targets = []
    elif target not in backends:
        raise TargetError(f"target {target!r} is not available in this build of s4c "
                          f"(available: ir{''.join(', ' + b for b in backends)})")
    else:
        targets = [target]
    # every backend's typed options (a misspelt option fails before the import, whatever the target)
    options = {name: backend_options(b, options_arg, backends) for name, b in backends.items()}
    quant = quant or {"precision": "fp32"}
    check_precision(quant["precision"], quant.get("calibration_data"), quant.get("method", DEFAULT_METHOD),
                    targets, backends)
    timings = {}
    start = time.perf_counter()
    graph = load_onnx(model, input_shapes=input_shapes)
    timings["import"] = time.perf_counter() - start
    range_warning = None
    if graph.dim_ranges is not None:
        targets, range_warning = _range_targets(graph, target, targets, backends, quant)
    start = time.perf_counter()
    graph = run_pipeline(graph, passes, manager)
    timings["passes"] = time.perf_counter() - start
    if graph.dim_ranges is not None:  # which output dims follow which symbol: the ref runner's cut
        start = time.perf_counter()
        graph.dim_ranges = replace(graph.dim_ranges, outputs=_output_axes(
            graph, _with_specializer(graph.dim_ranges, model, input_shapes, passes, graph).specialize))
        timings["output-dims"] = time.perf_counter() - start
    fusion = fusion_report(graph)
    if range_warning:
        fusion = dict(fusion, warning=" ".join(w for w in (fusion.get("warning"), range_warning) if w))
    quantized = None
    if quant["precision"] != "fp32":
        start = time.perf_counter()
        quantized = quantize_model(graph, manager, quant["precision"], quant.get("calibration_data"),
                                   quant.get("method", DEFAULT_METHOD), quant.get("accuracy_data"))
        timings["quantize"] = time.perf_counter() - start
    pass_section = {"pipeline": passes, "steps": pass_stats(manager.results), "targets": {}}

    if outdir is None:
        if targets:
            raise TargetError("building a backend needs an output folder")
        report = {"fusion": fusion, "passes": pass_section}
        if quantized is not None:
            report["quantization"] = quantized.section
        return CompiledModel(graph, None, {}, [], timings, report)

    for name in targets:  # every target's size limits, before any backend starts
        backends[name].check_sizes(graph, options[name])
    outdir = os.fspath(outdir)
    source = model if isinstance(model, (str, os.PathLike)) else "<ModelProto>"
    with _atomic_dir(outdir) as tmp, ThreadPoolExecutor(max_workers=1) as background:
        # The IR text is written while the backends build (it only reads the graph); weights.npz
        # after them, as it leaves out the weights a backend's files already hold whole.
        ir_written = background.submit(_timed, write_ir, graph, tmp)
        held: dict = {}
        report: dict = {"fusion": fusion, "passes": pass_section}
        report_md: list[str] = [fusion_report_md(fusion)]
        if quantized is not None:
            report["quantization"] = quantized.section
            report_md.append(quantized.markdown)
        built_files: dict[str, str] = {}
        for name in targets:
            start = time.perf_counter()
            done = len(manager.results)
            target_graph = select_layouts(graph, name, options[name], manager, report, report_md)
            if graph.dim_ranges is not None:  # the backend rebuilds the graph at other dims to learn its code's
                target_graph.dim_ranges = _with_specializer(graph.dim_ranges, model, input_shapes, passes,
                                                            target_graph)
            pass_section["targets"][name] = pass_stats(manager.results[done:])
            built = backends[name].build(target_graph, tmp, options[name])
            timings[f"build-{name}"] = time.perf_counter() - start
            built_files.update(built.files)
            held.update(built.weights)
            if built.report:
                report[name] = built.report
            if built.report_md:
                report_md.append(built.report_md)
        report_md.insert(1, pass_stats_md(pass_section))
        weights_written = background.submit(_timed, write_weights, tmp, _stored_weights(graph), held)
        if targets:  # time per layer: S4 modelled, C measured (a table; a plot with matplotlib)
            from s4c.layer_plot import safe_layer_section

            layers_md, layer_files, report["layer_times"] = safe_layer_section(
                tmp, graph, report, measure_c=time_layers)
            if layers_md:
                report_md.append(layers_md)
            built_files.update(layer_files)
        paths, timings["write-ir"] = ir_written.result()
        weight_refs, timings["write-weights"] = weights_written.result()
        paths["weights"] = WEIGHTS_NPZ
        paths.update(built_files)
        paths.update(write_report(tmp, report, report_md))
        manifest = {
            "version": MANIFEST_VERSION,
            "source": os.fspath(source),
            "input_shapes": {v.name: list(v.shape) for v in graph.inputs},
            "outputs": [v.name for v in graph.outputs],
            "passes": passes,
            "targets": targets,
            "files": {k: os.path.relpath(v, tmp) if os.path.isabs(v) else v for k, v in paths.items()},
            "weights": [v.name for v in _stored_weights(graph)],
            "weight_refs": weight_refs,
        }
        if quantized is not None:
            manifest["precision"] = quant["precision"]
        if graph.dim_ranges is not None:
            manifest["dim_ranges"] = {"ranges": {k: list(v) for k, v in graph.dim_ranges.ranges.items()},
                                      "inputs": {k: list(v) for k, v in graph.dim_ranges.inputs.items()},
                                      "outputs": {k: list(v) for k, v in graph.dim_ranges.outputs.items()}}
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
    files = {k: os.path.join(outdir, v) for k, v in manifest["files"].items()}
    return CompiledModel(graph, outdir, files, targets, timings, report)


def _range_targets(graph: Graph, target: str, targets: list[str], backends, quant: dict):
    """The targets that build a graph compiled for shape ranges (and a warning for those skipped under
    --target all); a one-line error when the chosen target cannot."""
    ranges = ", ".join(f"{k}={lo}..{hi}" for k, (lo, hi) in graph.dim_ranges.ranges.items())
    if quant.get("precision", "fp32") != "fp32":
        raise TargetError(f"shape ranges ({ranges}) are compiled at fp32 only; bind fixed dims for --precision int8")
    able = [n for n in targets if getattr(backends[n], "shape_ranges", False)]
    skipped = [n for n in targets if n not in able]
    if skipped and target != "all":
        raise TargetError(f"target {target} cannot compile shape ranges ({ranges}); bind fixed dims")
    warning = None
    if skipped:
        warning = (f"shape ranges ({ranges}): built {', '.join(able) or 'no backend'} only; "
                   f"{', '.join(skipped)} needs fixed dims")
    return able, warning


def _with_specializer(ranges, model, input_shapes: dict, passes: str, like: Graph):
    """`ranges` with specialize(dims) -> the graph imported at those dims ({symbol: int}), through the
    same pipeline, every op given `like`'s attributes' layout choices (the target's selection)."""
    from s4c.frontend.onnx_import import normalize_dims

    given = {k: normalize_dims(k, v) for k, v in (input_shapes or {}).items()}

    def specialize(dims: dict) -> Graph:
        shapes = {}
        for name, shape in given.items():
            syms = ranges.inputs.get(name, ())
            shapes[name] = tuple(dims[syms[a]] if isinstance(d, tuple) else d for a, d in enumerate(shape))
        g = run_pipeline(load_onnx(model, input_shapes=shapes), passes)
        if len(g.ops) != len(like.ops) or any(a.op != b.op for a, b in zip(g.ops, like.ops)):
            raise TargetError(f"the graph at dims {dims} has other ops than at the range maximum: this model's "
                              f"structure depends on its input shape, compile it for fixed dims")
        for a, b in zip(g.ops, like.ops):
            if "layout" in b.attrs:
                a.attrs["layout"] = b.attrs["layout"]
        return g

    return replace(ranges, specialize=specialize)


def _output_axes(graph: Graph, specialize) -> dict:
    """{output name: [symbol or None per axis]} from the graph rebuilt once at other dims (each symbol
    one or more below its maximum, all different); {} when that cannot tell (the ref runner then runs
    at the maximum only)."""
    ranges = graph.dim_ranges.ranges
    probe = {s: max(lo, hi - 1 - i) for i, (s, (lo, hi)) in enumerate(ranges.items())}
    if probe == graph.dim_ranges.maximum():
        return {v.name: [None] * len(v.shape) for v in graph.outputs}
    try:
        small = specialize(probe)
    except S4CError:      # the backends that need other dims say why; the ref runner keeps the maximum
        return {}
    axes = {}
    for big, v in zip(graph.outputs, small.outputs):
        per_axis = []
        for n_max, n in zip(big.shape, v.shape):
            match = [s for s, (_, hi) in ranges.items() if n_max != n and (hi, probe[s]) == (n_max, n)]
            if n_max != n and len(match) != 1:
                return {}
            per_axis.append(match[0] if match else None)
        axes[big.name] = per_axis
    return axes


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def select_layouts(graph: Graph, target: str, options: BackendOptions | Mapping | None = None, manager=None,
                   report: dict | None = None, report_md: list[str] | None = None) -> Graph:
    """A copy of `graph` after `target_pipeline(target)` (each weight's layout chosen for `target`;
    the original stays as is, so every target chooses for itself), run in `manager` (a PassManager:
    its instruments and results cover these passes too; else a plain one). With `report` /
    `report_md`, also adds the target's weight-layout report: report["layouts"][target]
    (s4c.layout_report) and a markdown section. `options`: the target's (typed, or a dict with
    layout_overrides / layout_default)."""
    if not isinstance(options, BackendOptions):
        options = BackendOptions(**{k: v for k, v in (options or {}).items() if v is not None})
    manager = manager or PassManager()
    steps = parse_pipeline(target_pipeline(target, options.layout_overrides, options.layout_default))
    copy = graph.clone()
    done = len(manager.results)
    manager.run(copy, steps)
    selection = next((r.analysis for _, r in reversed(manager.results[done:])
                      if isinstance(r.analysis, LayoutSelection)), None)
    if report is not None and selection is not None:
        section = layout_report(selection.choices, selection.target)
        report.setdefault("layouts", {})[target] = section
        if report_md is not None:
            report_md.append(layout_report_md(section))
    return copy


def pass_stats(results) -> list[dict]:
    """[(pass, PassResult)] -> [{"pass": pipeline text, "changed": bool, "stats": {what: n}}]."""
    return [{"pass": str(p), "changed": r.changed, "stats": dict(r.stats)} for p, r in results]


def pass_stats_md(section: dict) -> str:
    """The compile report's pass section: one row per pass run (the pipeline's, then each target's)."""
    lines = ["## Passes", "", f"Pipeline `{section['pipeline']}`; each target's steps run on a copy of its result.", "",
             "| pass | target | changed | stats |", "|---|---|---|---|"]
    rows = [("", step) for step in section["steps"]]
    rows += [(name, step) for name, steps in section["targets"].items() for step in steps]
    for target, step in rows:
        stats = format_stats(step["stats"]) or "-"
        lines.append(f"| `{step['pass']}` | {target or '-'} | {'yes' if step['changed'] else 'no'} | {stats} |")
    return "\n".join(lines)


def write_report(outdir: str, report: dict, sections_md: list[str]) -> dict[str, str]:
    """report.json (one key per target, stable for other tools) and report.md (the sections)."""
    with open(os.path.join(outdir, "report.json"), "w") as f:
        json.dump(report, f, indent=1, default=float)
    with open(os.path.join(outdir, "report.md"), "w") as f:
        f.write("# s4c compile report\n\n" + "\n\n".join(sections_md) + "\n")
    return {"report": "report.json", "report_md": "report.md"}


def _stored_weights(graph: Graph):
    return [v for v in graph.constants() if isinstance(v.data, np.ndarray) and v.data.size > INLINE_LIMIT]


def write_ir(graph: Graph, outdir: str) -> dict[str, str]:
    with open(os.path.join(outdir, "model.s4ir"), "w") as f:
        f.write(print_graph(graph))
    return {"ir": "model.s4ir"}


def write_weights(outdir: str, weights, held: dict) -> dict[str, dict]:
    """weights.npz (s4c/weight_store.py: compressed; without those `held` by a backend's files
    whole); returns the manifest's weight_refs."""
    return write_weight_store(outdir, [(v.name, v.data) for v in weights], held)


def load_compiled(outdir: str | os.PathLike) -> CompiledModel:
    """Re-open a compile's OUTDIR (the IR with its weights) to run it."""
    outdir = os.fspath(outdir)
    manifest_path = os.path.join(outdir, "manifest.json")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("version") not in (1, MANIFEST_VERSION):
            raise ValueError(f"manifest version {manifest.get('version')!r}")
        with open(os.path.join(outdir, "model.s4ir")) as f:
            text = f.read()
        weights = read_weights(outdir, manifest["weights"], manifest.get("weight_refs", {}))
    except FileNotFoundError as e:
        raise S4CError(f"{outdir}: not a compiled s4c output folder ({os.path.basename(e.filename)} missing)") from None
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as e:
        raise S4CError(f"{outdir}: compiled output is corrupt ({type(e).__name__}: {e})") from None
    graph = parse_graph(text, weights=weights)
    ranges = manifest.get("dim_ranges")
    if ranges:
        graph.dim_ranges = DimRanges({k: tuple(v) for k, v in ranges["ranges"].items()},
                                     {k: tuple(v) for k, v in ranges["inputs"].items()},
                                     outputs={k: tuple(v) for k, v in ranges.get("outputs", {}).items()})
    files = {k: os.path.join(outdir, v) for k, v in manifest["files"].items()}
    return CompiledModel(graph, outdir, files, manifest["targets"], {})


def load(outdir: str | os.PathLike, threads: int | None = None, backend: str | None = None) -> Runner:
    """A compiled OUTDIR's model for a serving loop: `run(feeds) -> outputs` at any shape the compile
    allows (every dim inside its --input-shape range; a one-line S4CError outside), `set_threads(n)`.
    The weights are read once, here; runs reuse them (`threads`: the C backend's OpenMP threads).
    `backend`: c (the default when compiled) or s4 (its buckets, codegen/s4/buckets.py)."""
    outdir = os.fspath(outdir)
    try:
        with open(os.path.join(outdir, "manifest.json")) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise S4CError(f"{outdir}: not a compiled s4c output folder (manifest.json missing)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise S4CError(f"{outdir}: compiled output is corrupt ({type(e).__name__}: {e})") from None
    if backend is None:
        backend = "c" if "c" in manifest.get("targets", []) or not manifest.get("targets") else manifest["targets"][0]
    if backend not in manifest.get("targets", []):
        raise TargetError(f"{outdir} was not compiled for {backend!r} (compiled targets: "
                          f"{', '.join(manifest.get('targets', [])) or 'none'}); compile with --target {backend}")
    backends = available_backends()
    threaded = threads and "threads" in option_names(backends[backend].options_type)
    return backends[backend].load(outdir, backends[backend].options({"threads": threads} if threaded else None))


def runner_for(compiled: CompiledModel, backend: str, options: BackendOptions | Mapping | None = None) -> Runner:
    """A Runner (run(feeds) -> outputs, summary()) for `backend` ("ref" = the reference evaluator
    on the IR). `options` (threads, trace, profile...: typed, or a dict of the backend's option
    names) go to the backend's load(outdir, options)."""
    if backend == "ref":
        if options:
            raise TargetError(f"backend ref takes no options (got {', '.join(map(repr, options))})")
        return EvaluatorRunner(compiled.graph)
    backends = available_backends()
    if backend not in backends:
        raise TargetError(f"unknown backend {backend!r}; available: ref{''.join(', ' + b for b in backends)}")
    if compiled.outdir is None or backend not in compiled.targets:
        raise TargetError(f"the model was not compiled for {backend!r} (compiled targets: "
                          f"{', '.join(compiled.targets) or 'none'}); compile with --target {backend}")
    return backends[backend].load(compiled.outdir, backends[backend].options(options))


class _atomic_dir:
    """Context manager: a temp folder beside `path` that replaces `path` on success only."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def __enter__(self) -> str:
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise S4CError(f"cannot create output folder {parent}: {e.strerror}") from None
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise S4CError(f"output path {self.path} exists and is not a folder")
        self.tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.tmp-", dir=parent)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        if os.path.exists(self.path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.old-", dir=os.path.dirname(self.path))
            os.rename(self.path, os.path.join(old, "x"))
        os.rename(self.tmp, self.path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return False
