"""The backend protocol (codegen/protocol.py) and its registry (codegen/registry.py): every backend
has a name, typed options, build / load / prepare / execute and a cost model; options given as a
dict are converted and an unknown name is an error naming it; runners have run() and summary()."""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest

import s4c
from oracle import fixtures, make_feeds
from s4c.cli import CALIBRATE_TARGETS, COMPILE_TARGETS, main
from s4c.codegen import protocol
from s4c.codegen.c import COptions
from s4c.codegen.protocol import Artifacts, Backend, BackendOptions, Runner
from s4c.codegen.registry import BACKENDS, calibrated_backends, get_backend
from s4c.codegen.s4 import S4Options
from s4c.driver import TARGETS, backend_options, runner_for
from s4c.errors import TargetError
from s4c.evaluate import evaluate
from s4c.ir import Graph, Op, TensorType, Value
from s4c.targets import Target


@pytest.fixture(autouse=True)
def _no_user_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv("S4C_CACHE", str(tmp_path / "s4c-cache"))


def _tiny() -> tuple[Graph, dict]:
    rng = np.random.default_rng(0)
    x, y = Value("x", TensorType("f32", (1, 4, 8))), Value("y", TensorType("f32", (1, 4, 8)))
    w = Value.constant("w", rng.standard_normal((8, 8)).astype(np.float32))
    graph = Graph("tiny", [x], [y], [Op("Linear", [x, w], [y], {"activation": "relu"})])
    return graph, {"x": rng.standard_normal((1, 4, 8)).astype(np.float32)}


def test_the_registry_lists_every_backend_once():
    assert list(BACKENDS) == ["s4", "c"]
    for name, backend in BACKENDS.items():
        assert isinstance(backend, Backend) and backend.name == name and get_backend(name) is backend
        assert issubclass(backend.options_type, BackendOptions)
        assert dataclasses.is_dataclass(backend.options_type)
        assert backend.options_type.__dataclass_params__.frozen
        assert isinstance(backend.cost_model(), Target) and backend.cost_model().name == name
    with pytest.raises(TargetError, match=r"unknown backend 'gpu'; backends: s4, c"):
        get_backend("gpu")
    # the CLI spells the names out (building its parser imports no backend): they match
    assert COMPILE_TARGETS == TARGETS
    assert list(CALIBRATE_TARGETS) == calibrated_backends() == ["c"]


def test_options_are_typed_and_converted_from_dicts():
    c, s4 = BACKENDS["c"], BACKENDS["s4"]
    assert c.options() == COptions() and s4.options(None) == S4Options()
    opts = c.options({"cflags": "-O1", "threads": 2, "cc": None, "layout_overrides": ["a=csr"]})
    assert opts == COptions(cflags="-O1", threads=2, layout_overrides=("a=csr",))
    assert hash(opts) == hash(COptions(cflags="-O1", threads=2, layout_overrides=("a=csr",)))
    assert s4.options(S4Options(cores=2)) == S4Options(cores=2)
    with pytest.raises(TargetError, match=r"^backend c: unknown option 'cores'; its options: layout_overrides, "):
        c.options({"cores": 2})
    with pytest.raises(TargetError, match=r"backend s4: options of type COptions, expected S4Options"):
        s4.options(COptions())
    # a dict shared by the targets: each takes its own names; a name no backend has is an error
    shared = {"cores": 2, "cflags": "-O1", "layout_default": "dense"}
    assert backend_options(c, shared) == COptions(cflags="-O1", layout_default="dense")
    assert backend_options(s4, shared) == S4Options(cores=2, layout_default="dense")
    assert backend_options(s4, [COptions(cc="gcc"), S4Options(cores=1)]) == S4Options(cores=1)
    assert backend_options(c, S4Options(cores=1)) == COptions()
    with pytest.raises(TargetError, match=r"unknown backend option 'core'; options: s4: .*cores.*; c: .*cflags"):
        backend_options(c, {"core": 2})


def test_compile_rejects_an_unknown_option_before_importing(tmp_path):
    with pytest.raises(TargetError, match=r"unknown backend options 'cflag', 'corse'"):
        s4c.compile(str(tmp_path / "no-such-model.onnx"), target="ir", backend_options={"corse": 2, "cflag": "-O1"})


def test_compile_with_typed_options_and_run_through_runners(tmp_path, capsys):
    entry = fixtures()[0]
    shapes = {i["name"]: (1, 16) for i in entry["inputs"]}
    compiled = s4c.compile(entry["path"], input_shapes=shapes, target="s4", outdir=tmp_path / "out",
                           backend_options=S4Options(cores=1, layout_default="bsr4x1"))
    assert compiled.report["s4"]["cores"] == 1
    assert {w["layout"] for w in compiled.report["layouts"]["s4"]["weights"]} == {"bsr4x1"}
    feeds = make_feeds([i["name"] for i in entry["inputs"]], batch=1, seq=16, vocab=entry["vocab_size"])
    ref = runner_for(compiled, "ref")
    assert isinstance(ref, Runner) and ref.summary() is None
    runner = runner_for(compiled, "s4")
    assert isinstance(runner, Runner) and runner.summary() is None  # nothing run yet
    got, want = runner.run(feeds), ref.run(feeds)
    assert runner.summary().startswith("s4: modelled ") and "on 1 core(s)" in runner.summary()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-3, atol=1e-3)
    with pytest.raises(TargetError, match=r"backend ref takes no options"):
        compiled.run(feeds, backend="ref", threads=2)
    with pytest.raises(TargetError, match=r"backend s4: unknown option 'threads'"):
        compiled.run(feeds, backend="s4", threads=2)
    with pytest.raises(TargetError, match=r"not compiled for 'c'"):
        compiled.run(feeds, backend="c")


def test_execute_memoises_per_graph_and_options():
    graph, feeds = _tiny()
    s4 = BACKENDS["s4"]
    want = evaluate(graph, feeds)
    before = set(protocol._PREPARED)
    np.testing.assert_allclose(s4.execute(graph, feeds)["y"], want["y"], rtol=1e-3, atol=1e-3)
    s4.execute(graph, feeds)
    s4.execute(graph, feeds, {"cores": 2})
    added = set(protocol._PREPARED) - before
    assert sorted(k[1].cores for k in added) == [2, 4] and all(k[0] == "s4" for k in added)
    del graph
    gc.collect()
    assert not set(protocol._PREPARED) - before, "a collected graph's compiled programs are dropped"


def test_a_backend_must_implement_the_protocol():
    class Half(Backend):
        name = "half"

        def build(self, graph, outdir, options=None):
            return Artifacts()

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_cli_calibrate_goes_through_the_backend(monkeypatch, tmp_path, capsys):
    seen = {}

    def calibrate(out=None, *, cc=None, cflags=None, progress=None):
        seen.update(out=out, cc=cc, cflags=cflags)
        return tmp_path / "c.json", "call 1.0 us"

    monkeypatch.setattr(BACKENDS["c"], "calibrate", calibrate)
    assert main(["calibrate", "--target", "c", "--cflags=-O1"]) == 0
    assert seen == {"out": None, "cc": None, "cflags": "-O1"}
    assert f"wrote {tmp_path / 'c.json'} (call 1.0 us)" in capsys.readouterr().out
