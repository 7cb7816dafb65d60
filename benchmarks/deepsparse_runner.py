"""DeepSparse side of benchmarks/bench_cpu.py: a long-lived worker speaking a line protocol.

DeepSparse 1.8.0 needs numpy < 2, so it cannot live in s4c's environment; bench_cpu.py runs this
file with the Python of a separate venv (see ``bench_cpu.py --help``) and talks to it over
stdin/stdout, one JSON object per line each way, so its runs can be interleaved with the other
engines' runs in one process tree. This file imports nothing from s4c and only the standard
library at the top, so it runs in any environment that has deepsparse + numpy.

Requests (one per line) and replies (one per line, always with "ok"):

    {"cmd": "hello"}                                     -> {"ok": true, "deepsparse": "1.8.0", "numpy": ..., "avx": ...}
    {"cmd": "load", "model": PATH, "inputs": NPZ, "threads": N, "batch": 1}
                                                         -> {"ok": true, "compile_s": ..., "input_names": [...],
                                                             "output_names": [...], "supported_ops": 0.92}
    {"cmd": "feeds", "inputs": NPZ}                      -> {"ok": true}   (new inputs, the loaded shapes)
    {"cmd": "run", "n": K}                               -> {"ok": true, "elapsed": [s, ...], "cpu": [s, ...]}
                                                            (K engine calls; wall and this process's CPU time)
    {"cmd": "outputs", "path": NPZ}                      -> {"ok": true}   (last outputs, keyed by output name)
    {"cmd": "quit"}                                      -> {"ok": true}, then exit

Any failure is {"ok": false, "error": "..."} and the worker keeps serving. Only the engine call is
timed (time.perf_counter around ``engine.run``); inputs are prepared once at load. Everything
DeepSparse itself prints goes to stderr: the protocol has stdout to itself.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback


def _protocol_stream():
    """A private copy of stdout for the protocol; fd 1 then points at stderr so banners and
    prints from native code cannot corrupt the protocol."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", buffering=1)


def private_copy(model_path: str) -> str:
    """A copy of the ONNX graph file in a new temp folder, its external data files linked beside
    it. DeepSparse 1.8 writes the input shapes it compiles for into the model file itself
    (deepsparse.utils.onnx.override_onnx_input_shapes, inplace=True): compiled from the caller's
    file, a cached BERT's dynamic (batch, sequence) inputs became static for every later user."""
    import onnx

    graph = onnx.load(model_path, load_external_data=False)
    src = os.path.dirname(os.path.abspath(model_path))
    folder = tempfile.mkdtemp(prefix="s4c-ds-model-")
    for location in {e.value for t in graph.graph.initializer for e in t.external_data if e.key == "location"}:
        link = os.path.join(folder, location)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(src, location), link)
    copy = os.path.join(folder, os.path.basename(model_path))
    shutil.copyfile(model_path, copy)
    return copy


class Worker:
    def __init__(self):
        self.engine = None
        self.feeds = None
        self.outputs = None
        self.copy_dir = None

    def drop_copy(self):
        if self.copy_dir:
            shutil.rmtree(self.copy_dir, ignore_errors=True)
            self.copy_dir = None

    def hello(self, req):
        import numpy

        import deepsparse

        info = {"deepsparse": deepsparse.__version__, "numpy": numpy.__version__, "python": sys.version.split()[0]}
        try:
            from deepsparse.cpu import cpu_architecture

            arch = cpu_architecture()
            info["avx"] = getattr(arch, "isa", None)
            info["vnni"] = bool(getattr(arch, "vnni", False))
        except Exception:  # informational only
            pass
        return info

    def load(self, req):
        import numpy as np

        from deepsparse import compile_model

        self.engine = self.feeds = self.outputs = None
        self.drop_copy()
        with np.load(req["inputs"], allow_pickle=False) as npz:
            feeds = {k: npz[k] for k in npz.files}
        batch = int(req.get("batch", 1))
        # the ONNX inputs are dynamic (batch, sequence): bind them to the feeds' shapes
        # (DeepSparse orders inputs like the graph; the feed dict is keyed by name)
        import onnx

        graph_inputs = [i.name for i in onnx.load(req["model"], load_external_data=False).graph.input]
        missing = [n for n in graph_inputs if n not in feeds]
        if missing:
            raise ValueError(f"inputs file lacks {missing}")
        shapes = [list(feeds[n].shape) for n in graph_inputs]
        model = private_copy(req["model"])
        self.copy_dir = os.path.dirname(model)
        start = time.perf_counter()
        engine = compile_model(model, batch_size=batch, num_cores=int(req["threads"]), input_shapes=shapes)
        compile_s = time.perf_counter() - start
        names = list(engine.input_names)
        self.feeds = [np.ascontiguousarray(feeds[n]) for n in names]
        self.engine = engine
        self.shapes = {n: f.shape for n, f in zip(names, self.feeds)}
        try:
            supported = float(engine.fraction_of_supported_ops)
        except Exception:
            supported = None
        return {"compile_s": compile_s, "input_names": names, "output_names": list(engine.output_names),
                "supported_ops": supported, "num_cores": engine.num_cores}

    def set_feeds(self, req):
        """Other inputs for the loaded engine (benchmarks/bench_lengths.py: each sentence padded to
        the engine's bucket); the shapes must be the ones it was compiled for."""
        import numpy as np

        if self.engine is None:
            raise RuntimeError("no model loaded")
        with np.load(req["inputs"], allow_pickle=False) as npz:
            feeds = {k: npz[k] for k in npz.files}
        wrong = {n: feeds[n].shape if n in feeds else None for n in self.shapes
                 if n not in feeds or feeds[n].shape != self.shapes[n]}
        if wrong:
            raise ValueError(f"inputs {wrong} do not match the compiled shapes {self.shapes}")
        self.feeds = [np.ascontiguousarray(feeds[n]) for n in self.shapes]
        return {}

    def run(self, req):
        if self.engine is None:
            raise RuntimeError("no model loaded")
        engine, feeds = self.engine, self.feeds
        elapsed, cpu = [], []
        for _ in range(int(req.get("n", 1))):
            start, start_cpu = time.perf_counter(), time.process_time()
            out = engine.run(feeds)
            elapsed.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        self.outputs = out
        return {"elapsed": elapsed, "cpu": cpu}

    def save_outputs(self, req):
        import numpy as np

        if self.outputs is None:
            raise RuntimeError("nothing has run yet")
        np.savez(req["path"], **dict(zip(self.engine.output_names, self.outputs)))
        return {}


def main() -> int:
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    out = _protocol_stream()
    worker = Worker()
    handlers = {"hello": worker.hello, "load": worker.load, "feeds": worker.set_feeds, "run": worker.run,
                "outputs": worker.save_outputs}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "quit":
                worker.drop_copy()
                out.write(json.dumps({"ok": True}) + "\n")
                return 0
            if cmd not in handlers:
                raise ValueError(f"unknown command {cmd!r}")
            reply = {"ok": True, **handlers[cmd](req)}
        except Exception as e:  # report and keep serving
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"{type(e).__name__}: {' '.join(str(e).split())}"[:2000]}
        out.write(json.dumps(reply) + "\n")
    worker.drop_copy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
