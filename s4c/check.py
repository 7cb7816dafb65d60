"""`s4c check OUTDIR --inputs IN.npz`: every backend's value of every op, compared op by op with the
reference evaluator, in program order, naming the first op whose output diverges (Polygraphy-style
layer-wise comparison).

    ref          the reference evaluator on OUTDIR's IR (model.s4ir + weights.npz), every value kept
    c            OUTDIR/c's debug build (codegen/c/debug.py): the same model.c with accessors, run
                 step by step; each op's result read from the arena right after its last step
    s4           model.s4 itself in the S4 interpreter, each op's result snapshot where the built
                 program completes it (codegen/s4/snapshots.py, placement from model.s4.values.json:
                 DRAM homes and SRAM-resident rows per core); a value the built program never holds
                 whole (never stored, scratch tiles only) comes from a debug lowering of the IR with model.s4's constant segment
                 (codegen/s4/debug.py: residency off, no DRAM reuse, every result read from DRAM).
                 The table's "s4 from" column and the JSON's "sources" say which, per value
    onnxruntime  the source model, with every ONNX tensor whose name an IR value carries exposed
                 as an output (when onnxruntime is installed and the source model is readable)

An op diverges on a backend when max |backend - ref| > atol + rtol * max |ref| (or the shapes
differ, or a NaN appears where the reference has none). `check` returns the report; the CLI prints
its table and exits 1 when some op diverges.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from s4c.errors import S4CError
from s4c.s4 import ProgramSet, read_programs

DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 1e-3
ALL_BACKENDS = ("ref", "c", "s4", "onnxruntime")


@dataclass
class Row:
    index: int          # op index in the IR
    op: str             # op type
    value: str          # the result compared
    nodes: list
    layout: dict        # backend -> Linear weight layout
    errors: dict = field(default_factory=dict)     # backend -> (max abs error, cosine) or None
    sources: dict = field(default_factory=dict)    # backend -> where its value came from (s4: program | debug lowering)
    diverged: list = field(default_factory=list)   # backends beyond tolerance


@dataclass
class CheckReport:
    outdir: str
    backends: list
    rows: list
    atol: float
    rtol: float
    notes: list = field(default_factory=list)

    def first_divergence(self, backend: str | None = None) -> Row | None:
        for r in self.rows:
            if (backend is None and r.diverged) or (backend is not None and backend in r.diverged):
                return r
        return None

    @property
    def ok(self) -> bool:
        return self.first_divergence() is None

    def to_json(self) -> dict:
        return {"outdir": self.outdir, "backends": self.backends, "atol": self.atol, "rtol": self.rtol,
                "notes": self.notes,
                "first_divergence": {b: _row_name(self.first_divergence(b)) for b in self.backends if b != "ref"},
                "ops": [{"index": r.index, "op": r.op, "value": r.value, "onnx_nodes": r.nodes, "layout": r.layout,
                         "errors": {b: (None if e is None else {"max_abs_error": e[0], "cosine": e[1]})
                                    for b, e in r.errors.items()},
                         "sources": r.sources, "diverged": r.diverged} for r in self.rows]}

    def table(self) -> str:
        others = [b for b in self.backends if b != "ref"]
        sourced = [b for b in others if any(b in r.sources for r in self.rows)]
        head = ["#", "op", "ONNX nodes", "layout"] + [f"{b} max abs err" for b in others] + \
               [f"{b} cosine" for b in others] + [f"{b} from" for b in sourced] + ["status"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            nodes = (r.nodes[0] + (f" (+{len(r.nodes) - 1})" if len(r.nodes) > 1 else "")) if r.nodes else "-"
            layout = ", ".join(f"{b}:{lay}" for b, lay in r.layout.items()) or "-"
            errs = [_fmt_err(r.errors.get(b)) for b in others]
            coss = [_fmt_cos(r.errors.get(b)) for b in others]
            froms = [r.sources.get(b, "-") for b in sourced]
            status = ("DIVERGES: " + ",".join(r.diverged)) if r.diverged else "ok"
            lines.append("| " + " | ".join([str(r.index), f"{r.op} `{r.value}`", nodes, layout] + errs + coss +
                                           froms + [status]) + " |")
        return "\n".join(lines)

    def summary(self) -> str:
        lines = []
        for b in self.backends:
            if b == "ref":
                continue
            r = self.first_divergence(b)
            if r is None:
                lines.append(f"{b}: no divergence (atol={self.atol:g}, rtol={self.rtol:g})")
            else:
                err = r.errors[b]
                what = f"max abs error {err[0]:.3g}, cosine {err[1]:.6f}" if err else "shape mismatch"
                lines.append(f"{b}: first divergence at op {r.index} {r.op} {r.value!r} "
                             f"(ONNX {r.nodes[0] if r.nodes else '-'}): {what}")
        first = self.first_divergence()
        lines.append("first diverging op: " + (_row_name(first) if first else "none"))
        return "\n".join(lines)


def _row_name(r: Row | None) -> str | None:
    return None if r is None else f"{r.index} {r.op} {r.value}"


def _fmt_err(e) -> str:
    return "-" if e is None else f"{e[0]:.3g}"


def _fmt_cos(e) -> str:
    return "-" if e is None else f"{e[1]:.6f}"


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max abs error, cosine similarity) of `got` against `ref` (equal entries, infinities
    included, count as 0 error; a NaN where ref has none is an infinite error)."""
    r = np.asarray(ref).astype(np.float64)
    g = np.asarray(got).astype(np.float64)
    if r.shape != g.shape:
        if r.size != g.size:
            return float("inf"), float("nan")
        g = g.reshape(r.shape)
    if r.size == 0:
        return 0.0, 1.0
    with np.errstate(all="ignore"):
        same = (r == g) | (np.isnan(r) & np.isnan(g))
        diff = np.where(same, 0.0, np.abs(r - g))
        diff = np.where(np.isnan(diff), np.inf, diff)
        err = float(diff.max())
        fr, fg = np.where(np.isfinite(r), r, 0.0), np.where(np.isfinite(g), g, 0.0)
        nr, ng = np.linalg.norm(fr), np.linalg.norm(fg)
        if nr == 0 and ng == 0:
            cos = 1.0
        elif nr == 0 or ng == 0:
            cos = 0.0
        else:
            cos = float(np.dot(fr.ravel(), fg.ravel()) / (nr * ng))
    return err, cos


def _scale(ref: np.ndarray) -> float:
    r = np.asarray(ref).astype(np.float64)
    r = r[np.isfinite(r)]
    return float(np.abs(r).max()) if r.size else 0.0


def _read_report(outdir: str) -> dict:
    try:
        with open(os.path.join(outdir, "report.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _s4_graph(graph, report: dict):
    """The IR with the S4 target's layout choices (as report.json lists them) and its lowering options."""
    from s4c.driver import select_layouts

    section = report.get("layouts", {}).get("s4", {})
    overrides = [f"{w['weight']}={w['layout']}" for w in section.get("weights", [])
                 if not any(ch in w["weight"] for ch in "*?[")]
    target = select_layouts(graph, "s4", {"layout_overrides": overrides})
    s4 = report.get("s4", {})
    options = {"cores": s4.get("cores", 4), "machine": s4.get("machine", "s4v1"), "precision": s4.get("precision", "mixed")}
    return target, options


def _onnxruntime_values(source: str, names: set, feeds: dict, notes: list) -> dict:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        notes.append("onnxruntime: not installed, skipped")
        return {}
    if not source or not os.path.exists(source):
        notes.append(f"onnxruntime: source model {source!r} not found, skipped")
        return {}
    try:
        model = onnx.load(source)
        produced = {o for n in model.graph.node for o in n.output}
        outputs = {o.name for o in model.graph.output}
        wanted = sorted((names & produced) - outputs)
        for name in wanted:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        inputs = {}
        for i in sess.get_inputs():
            if i.name not in feeds:
                continue
            a = np.asarray(feeds[i.name])
            want = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
                    "tensor(bool)": np.bool_}.get(i.type)
            inputs[i.name] = a.astype(want) if want is not None else a
        out_names = [o.name for o in sess.get_outputs()]
        results = sess.run(out_names, inputs)
    except Exception as e:  # noqa: BLE001 - an optional cross-check: say why it is missing
        notes.append(f"onnxruntime: could not run {source} ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        return {}
    values = {n: np.asarray(r) for n, r in zip(out_names, results) if n in names}
    notes.append(f"onnxruntime: {len(values)} IR values map to ONNX tensors of {os.path.basename(source)}")
    return values


def check(outdir, feeds: dict, backends=None, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
          progress=None, s4_debug_lowering: bool = False) -> CheckReport:
    """Compare every op's result on `backends` (default: c and s4 where compiled, onnxruntime where
    installed) with the reference evaluator; see the module docstring. `s4_debug_lowering`: every S4
    value from the debug lowering, none from the built program."""
    from s4c.driver import load_compiled
    from s4c.evaluate import check_inputs, evaluate

    outdir = os.fspath(outdir)
    compiled = load_compiled(outdir)
    graph = compiled.graph
    report = _read_report(outdir)
    explicit = backends is not None
    if backends is None:
        backends = ["ref"] + [b for b in ("c", "s4") if b in compiled.targets] + ["onnxruntime"]
    backends = list(dict.fromkeys(["ref", *backends]))
    for b in backends:
        if b not in ALL_BACKENDS:
            raise S4CError(f"unknown backend {b!r} for check; choose from {', '.join(ALL_BACKENDS)}")
        if b in ("c", "s4") and b not in compiled.targets:
            raise S4CError(f"{outdir}: not compiled for {b!r} (compiled targets: "
                           f"{', '.join(compiled.targets) or 'none'}); compile with --target {b} or all")
    say = progress or (lambda msg: None)
    checked = check_inputs(graph, feeds)
    say("ref: evaluating every value")
    values = {"ref": evaluate(graph, checked, keep_all=True)}
    notes: list[str] = []
    layouts: dict[str, dict[str, str]] = {}
    sources: dict[str, dict[str, str]] = {}
    if "c" in backends:
        from s4c.codegen.c.debug import DebugCModel

        say("c: building and running the debug library")
        cflags = report.get("c", {}).get("cflags") or None
        model = DebugCModel(os.path.join(outdir, "c"), cflags=cflags)
        try:
            values["c"] = model.run(checked)
        finally:
            model.close()
        layouts["c"] = {v["name"]: v["layout"] for v in model.values if v.get("layout")}
    if "s4" in backends:
        say("s4: the built program in the interpreter, every op's result snapshot")
        results = {v.name for op in graph.ops for v in op.outputs if v is not None}
        values["s4"], sources["s4"], layouts["s4"] = _s4_values(outdir, compiled, report, checked, results, notes,
                                                                s4_debug_lowering, say)
    if "onnxruntime" in backends:
        names = {v.name for op in graph.ops for v in op.outputs if v is not None}
        ort_values = _onnxruntime_values(_source(outdir, compiled), names, feeds, notes)
        if ort_values or explicit:
            values["onnxruntime"] = ort_values
        else:
            backends.remove("onnxruntime")
    rows = []
    for i, op in enumerate(graph.ops):
        for v in op.outputs:
            if v is None or v.name not in values["ref"]:
                continue
            ref = values["ref"][v.name]
            row = Row(i, op.op, v.name, list(op.onnx_nodes),
                      {b: layouts[b][v.name] for b in layouts if v.name in layouts[b]},
                      sources={b: sources[b][v.name] for b in sources if v.name in sources[b]})
            tol = atol + rtol * _scale(ref)
            for b in backends:
                if b == "ref":
                    continue
                got = values.get(b, {}).get(v.name)
                if got is None:
                    row.errors[b] = None
                    continue
                err, cos = compare(ref, got)
                row.errors[b] = (err, cos)
                if not err <= tol:
                    row.diverged.append(b)
            rows.append(row)
    return CheckReport(outdir, backends, rows, atol, rtol, notes)


def _s4_values(outdir: str, compiled, report: dict, feeds: dict, results: set, notes: list,
               debug_only: bool, say) -> tuple[dict, dict, dict]:
    """(values, sources, Linear layouts) of S4: snapshots of the built model.s4 where the value map
    places a value (codegen/s4/snapshots.py), the debug lowering for the rest (module docstring)."""
    from s4c.codegen.s4.debug import debug_values
    from s4c.codegen.s4.snapshots import program_values

    model_s4 = compiled.paths.get("s4", os.path.join(outdir, "model.s4"))
    values: dict = {}
    missing: dict = {}
    vmap_path = compiled.paths.get("s4_values")
    if debug_only:
        notes.append("s4: every value from the debug lowering (asked for), none from the built program")
    elif vmap_path is None or not os.path.exists(vmap_path):
        vmap_path = None
        notes.append("s4: OUTDIR has no model.s4.values.json (built before it existed): "
                     "every value from the debug lowering, none from the built program")
    else:
        try:
            with open(vmap_path) as f:
                vmap = json.load(f)
            with open(compiled.paths.get("s4_io", os.path.join(outdir, "model.s4.json"))) as f:
                meta = json.load(f)
            with open(model_s4, "rb") as f:
                program = read_programs(f.read())
            if isinstance(program, ProgramSet):     # the largest bucket: the IR's dims, which check runs at
                name = meta["buckets"][0]["name"]
                program, vmap, io = program[name], vmap["buckets"][name], meta["buckets"][0]["io"]
                notes.append(f"s4: bucket {name} of model.s4 (the compiled maximum dims)")
            else:
                io = meta["io"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise S4CError(f"{outdir}: cannot read the S4 value map, io or program ({type(e).__name__}: {e})") from None
        values, missing = program_values(program, vmap, io, feeds)
    values = {k: a for k, a in values.items() if k in results}
    sources = {k: "program" for k in values}
    mapped = vmap_path is not None and not debug_only
    # with a value map, the debug lowering only for what the built program never holds whole
    todo = sorted(k for k in results - set(values) if k in missing or not mapped)
    layouts = _s4_layouts(compiled.graph, report)
    if todo:
        say(f"s4: debug lowering for {len(todo)} value(s)")
        target, options = _s4_graph(compiled.graph, report)
        debug, info = debug_values(target, model_s4, feeds, options)
        if info["const_bytes_differing"]:
            notes.append(f"s4: model.s4's constant segment differs from a fresh lowering of the IR in "
                         f"{info['const_bytes_differing']} of {info['const_bytes']} bytes")
        layouts = layouts or {op.outputs[0].name: op.attrs.get("layout", "dense") for op in target.ops if op.op == "Linear"}
        for k in todo:
            if k in debug:
                values[k] = debug[k]
                sources[k] = "debug lowering"
    if mapped:
        said = "; ".join(f"{k}: {missing[k]}" for k in todo[:8]) + (f"; +{len(todo) - 8} more" if len(todo) > 8 else "")
        observed = sum(1 for k in sources.values() if k == "program")
        notes.append(f"s4: {observed} of {len(results)} op results snapshot from the built program (model.s4)"
                     + (f"; {len(todo)} not observable there, from the debug lowering ({said})" if todo else ""))
    return values, sources, layouts


def _s4_layouts(graph, report: dict) -> dict:
    """Linear result -> the S4 layout of its weight, as report.json lists the S4 target's choices."""
    chosen = {w["weight"]: w["layout"] for w in report.get("layouts", {}).get("s4", {}).get("weights", [])}
    return {op.outputs[0].name: chosen[op.inputs[1].name] for op in graph.ops
            if op.op == "Linear" and op.inputs[1] is not None and op.inputs[1].name in chosen}


def _source(outdir: str, compiled) -> str:
    try:
        with open(os.path.join(outdir, "manifest.json")) as f:
            return json.load(f).get("source", "")
    except (OSError, ValueError):
        return ""
