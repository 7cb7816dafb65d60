"""Running a compiled OUTDIR/c from Python: the shared library through ctypes.

The model's state (weights, arena) is global in its library, so one library file is opened once
per process and shared by every `CModel` on it (reference-counted; weights freed with the last).
A library rebuilt at the same path is opened from a private copy (the dynamic loader would hand
back the old one by name).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import weakref

import numpy as np

from s4c.codegen.c import cnames
from s4c.codegen.c.options import COptions
from s4c.codegen.protocol import Runner
from s4c.errors import S4CError, TargetError

_lock = threading.Lock()
_libs: dict[str, dict] = {}  # real path -> {"identity", "lib", "refs"}
_copies: list[str] = []
_loaded_from: set[str] = set()

INIT_ERRORS = {1: "cannot open the weights file", 2: "the weights file is not an s4c weights file or is truncated",
               3: "the weights file belongs to another compile", 4: "out of memory",
               5: "an init-time step failed"}


def _np_dtype(name: str) -> np.dtype:
    return np.dtype(np.bool_) if name == "bool" else np.dtype(cnames.NPY_DESCR[name].replace("|", "="))


def _identity(path: str) -> tuple:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _open(path: str) -> dict:
    real = os.path.realpath(path)
    with _lock:
        entry = _libs.get(real)
        ident = _identity(real)
        if entry is not None and entry["identity"] == ident:
            return entry
        load_path = real
        if real in _loaded_from:  # rebuilt: dlopen would return the library loaded before by this name
            fd, load_path = tempfile.mkstemp(suffix=".so", prefix="s4c-model-")
            os.close(fd)
            shutil.copyfile(real, load_path)
            _copies.append(load_path)
        _loaded_from.add(load_path)
        lib = ctypes.CDLL(load_path)
        for name, res, args in (("s4c_model_init", ctypes.c_int, [ctypes.c_char_p]),
                                ("s4c_model_run", ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
                                ("s4c_model_run_steps", ctypes.c_int,
                                 [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]),
                                ("s4c_model_free", None, []),
                                ("s4c_model_set_threads", None, [ctypes.c_int]),
                                ("s4c_model_num_steps", ctypes.c_int, [])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        if hasattr(lib, "s4c_model_set_dims"):  # a shape-range build (codegen/c/dynamic.py)
            lib.s4c_model_set_dims.restype = ctypes.c_int
            lib.s4c_model_set_dims.argtypes = [ctypes.c_void_p]
        entry = {"identity": ident, "lib": lib, "refs": 0, "weights": None}
        _libs[real] = entry
        return entry


@atexit.register
def _cleanup() -> None:
    for p in _copies:
        try:
            os.unlink(p)
        except OSError:
            pass


def _release(entry: dict) -> None:
    with _lock:
        entry["refs"] -= 1
        if entry["refs"] == 0:
            entry["lib"].s4c_model_free()
            entry["weights"] = None


class CModel(Runner):
    """A compiled C model: `run({input name: array}) -> {output name: array}`."""

    def __init__(self, cdir: str, threads: int | None = None, profile: bool = False):
        self.cdir = cdir
        try:
            with open(os.path.join(cdir, "model.json")) as f:
                self.meta = json.load(f)
        except FileNotFoundError:
            raise S4CError(f"{cdir}: no C build here (model.json missing); compile with --target c") from None
        lib_path = os.path.join(cdir, self.meta["library"])
        if not os.path.exists(lib_path):
            raise S4CError(f"{cdir}: {self.meta['library']} is missing (the C build did not finish)")
        self._entry = _open(lib_path)
        self.lib = self._entry["lib"]
        weights = os.path.abspath(os.path.join(cdir, self.meta["weights"]))
        with _lock:
            if self._entry["refs"] == 0 or self._entry["weights"] != weights:
                rc = self.lib.s4c_model_init(os.fsencode(weights))
                if rc != 0:
                    raise S4CError(f"{weights}: s4c_model_init failed: {INIT_ERRORS.get(rc, f'status {rc}')}")
                self._entry["weights"] = weights
            self._entry["refs"] += 1
        self._finalizer = weakref.finalize(self, _release, self._entry)
        if threads:
            self.lib.s4c_model_set_threads(int(threads))
        self.inputs = self.meta["inputs"]
        self.outputs = self.meta["outputs"]
        self.dims = self.meta.get("dims")  # shape ranges: names, ranges, input axes, output extents
        self.steps = self.meta["steps"]
        self.profile = profile
        self.step_times = np.zeros(len(self.steps))
        self.runs = 0
        if profile:
            atexit.register(self._print_profile)

    def _arrays(self, inputs: dict) -> list[np.ndarray]:
        names = [io["name"] for io in self.inputs]
        missing = [n for n in names if n not in inputs]
        if missing:
            raise S4CError(f"missing model input(s): {', '.join(map(repr, missing))}")
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise S4CError(f"unknown model input(s): {', '.join(map(repr, unknown))}; the model takes "
                           f"{', '.join(map(repr, names))}")
        arrays = []
        self._dims = self._bind_dims(inputs) if self.dims else None
        for i, io in enumerate(self.inputs):
            a = np.asarray(inputs[io["name"]])
            want = _np_dtype(io["dtype"])
            if self.dims:
                if a.ndim != len(io["shape"]):
                    raise S4CError(f"input {io['name']!r} has rank {a.ndim}, the compiled model takes {len(io['shape'])}")
                expect = tuple(self._dims[d] if d >= 0 else n for d, n in zip(self.dims["inputs"][i], io["shape"]))
            else:
                expect = tuple(io["shape"])
            if a.shape != expect:
                raise S4CError(f"input {io['name']!r} has shape {list(a.shape)}, the compiled model takes "
                               f"{io['shape']}")
            if a.dtype != want:
                if not np.can_cast(a.dtype, want, casting="same_kind"):
                    raise S4CError(f"input {io['name']!r} has dtype {a.dtype}, the model takes {want}")
                a = a.astype(want)
            arrays.append(np.ascontiguousarray(a))
        return arrays

    def _bind_dims(self, inputs: dict) -> list[int]:
        """The run's dims from the input shapes (one-line S4CError outside the compiled ranges)."""
        names, ranges = self.dims["names"], self.dims["ranges"]
        dims: list[int | None] = [None] * len(names)
        for io, axes in zip(self.inputs, self.dims["inputs"]):
            a = inputs.get(io["name"])
            shape = np.shape(a)
            for axis, d in enumerate(axes):
                if d < 0 or axis >= len(shape):
                    continue
                n = int(shape[axis])
                lo, hi = ranges[d]
                if not lo <= n <= hi:
                    raise S4CError(f"input {io['name']!r} dim {axis} ({names[d]}) is {n}, outside the compiled range "
                                   f"{lo}..{hi}")
                if dims[d] is not None and dims[d] != n:
                    raise S4CError(f"input {io['name']!r} dim {axis} ({names[d]}) is {n}, another input gives {dims[d]}")
                dims[d] = n
        return [n if n is not None else hi for n, (lo, hi) in zip(dims, ranges)]

    def _output_shape(self, j: int) -> tuple:
        if not self.dims:
            return tuple(self.outputs[j]["shape"])
        out = []
        for e in self.dims["outputs"][j]:
            if isinstance(e, dict):
                m = 1
                for n, k in zip(self._dims, e["e"]):
                    m *= n ** k
                e = e["c"] * m + e["d"]
            out.append(int(e))
        return tuple(out)

    def run(self, inputs: dict) -> dict:
        arrays = self._arrays(inputs)
        outs = [np.empty(self._output_shape(j), _np_dtype(io["dtype"])) for j, io in enumerate(self.outputs)]
        if self.dims:
            dims = (ctypes.c_longlong * len(self._dims))(*self._dims)
            if self.lib.s4c_model_set_dims(dims) != 0:
                raise S4CError(f"dims {self._dims} outside the compiled ranges {self.dims['ranges']}")
        in_ptrs = (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[o.ctypes.data for o in outs])
        if self.profile:
            rc = 0
            for i in range(len(self.steps)):
                t0 = time.perf_counter()
                rc = self.lib.s4c_model_run_steps(in_ptrs, out_ptrs, i, i + 1)
                self.step_times[i] += time.perf_counter() - t0
                if rc:
                    rc = i + 1 if rc > 0 else rc
                    break
            self.runs += 1
        else:
            rc = self.lib.s4c_model_run(in_ptrs, out_ptrs)
        if rc != 0:
            raise S4CError(self._failure(rc))
        return {io["name"]: o for io, o in zip(self.outputs, outs)}

    __call__ = run

    def set_threads(self, n: int) -> None:
        """OpenMP threads for later runs (every CModel on this library shares the setting)."""
        self.lib.s4c_model_set_threads(int(n))

    def _failure(self, rc: int) -> str:
        if rc < 0:
            return "the C model is not initialised"
        step = self.steps[rc - 1] if 0 < rc <= len(self.steps) else {}
        where = f" ONNX node {step['nodes'][0]!r}" if step.get("nodes") else ""
        return (f"C model: step {rc - 1} ({step.get('kind', '?')}, {step.get('kernel', '?')}{where}) failed: "
                f"an index out of range or an invalid shape")

    def profile_report(self) -> str:
        if not self.runs:
            return "no profiled runs"
        per = self.step_times / self.runs * 1e3
        total = per.sum()
        lines = [f"C profile: {self.runs} run(s), {total:.3f} ms per run", "  by kernel:"]
        by_kernel: dict[str, float] = {}
        for s, t in zip(self.steps, per):
            key = s["kernel"] if not s["kernel"].startswith("op") else f"generated {s['kind']}"
            by_kernel[key] = by_kernel.get(key, 0.0) + t
        for k, t in sorted(by_kernel.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {t:9.3f} ms {100 * t / total if total else 0:5.1f}%  {k}")
        lines.append("  slowest steps:")
        for i in np.argsort(-per)[:15]:
            s = self.steps[i]
            node = s["nodes"][0] if s["nodes"] else (s["result"] or "")
            lines.append(f"    {per[i]:9.3f} ms  step {i:4d} {s['kind']:<18} {s['kernel']:<26} {node!r}")
        return "\n".join(lines)

    def _print_profile(self) -> None:
        if self.runs:
            print(self.profile_report(), file=sys.stderr)


def load(outdir: str, options: COptions | None = None) -> CModel:
    options = options or COptions()
    cdir = os.path.join(outdir, "c")
    if not os.path.isdir(cdir):
        raise TargetError(f"{outdir}: no C build (OUTDIR/c missing); compile with --target c")
    return CModel(cdir, threads=options.threads, profile=options.profile)
