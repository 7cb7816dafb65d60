"""A corpus of bad inputs: each gives one line `error: ...` naming the file/node, exit code 2,
no traceback, and no output folder left behind."""

import os
import shutil
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from oracle import fixtures
from s4c.cli import main

GOOD = fixtures()[0]["path"]


def _save(tmp_path, name, model):
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _truncated(tmp_path):
    data = open(GOOD, "rb").read()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 3])
    return str(path), ["--input-shape", "input_ids=1x8"], "truncated.onnx: not a readable ONNX model"


def _random_bytes(tmp_path):
    path = tmp_path / "random.onnx"
    path.write_bytes(os.urandom(4096))
    return str(path), [], "random.onnx: not"


def _unsupported_op(tmp_path):
    model = _model([helper.make_node("Sin", ["x"], ["y"], name="my_sin")], [_vi("x", [2])], [_vi("y", [2])])
    return _save(tmp_path, "sin.onnx", model), [], "unsupported op type(s): Sin (first at node 'my_sin')"


def _missing_initializer(tmp_path):
    model = _model([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [_vi("x", [2, 2])], [_vi("y", [2, 2])])
    return _save(tmp_path, "noinit.onnx", model), [], "node 'mm' (MatMul) reads 'W', which no node, input or initializer"


def _unbound_dim(tmp_path):
    return GOOD, [], "input 'input_ids' dim 0 ('batch') is dynamic and unbound"


def _cycle(tmp_path):
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="n_a"), helper.make_node("Relu", ["a"], ["b"], name="n_b")]
    model = _model(nodes, [_vi("x", [2])], [_vi("a", [2])])
    return _save(tmp_path, "cycle.onnx", model), [], "cycle through node(s)"


def _missing_file(tmp_path):
    return str(tmp_path / "nope.onnx"), [], "nope.onnx: no such file"


def _hostile_names(tmp_path):
    name = 'evil*/\n#include "x"\\ é'
    model = _model([helper.make_node("Sin", ["x"], ["y"], name=name)], [_vi("x", [2])], [_vi("y", [2])])
    return _save(tmp_path, "hostile.onnx", model), [], "unsupported op type(s): Sin"


def _bad_shape_value(tmp_path):
    return GOOD, ["--input-shape", "input_ids=1xq"], "dims must be integers"


CASES = [_truncated, _random_bytes, _unsupported_op, _missing_initializer, _unbound_dim, _cycle, _missing_file,
         _hostile_names, _bad_shape_value]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_bad_input_gives_one_line_error_and_exit_2(case, tmp_path, capsys):
    path, extra, expected = case(tmp_path)
    outdir = tmp_path / "out"
    code = main(["compile", path, "-o", str(outdir), "--target", "ir", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert "Traceback" not in err
    assert not outdir.exists(), "a failed compile must not leave an output folder"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.")], "temporary folder left behind"


def test_failed_compile_keeps_previous_output(tmp_path, capsys):
    outdir = tmp_path / "out"
    assert main(["compile", GOOD, "-o", str(outdir), "--target", "ir", "--input-shape", "input_ids=1x8"]) == 0
    before = (outdir / "model.s4ir").read_text()
    assert main(["compile", GOOD, "-o", str(outdir), "--target", "ir"]) == 2
    assert (outdir / "model.s4ir").read_text() == before


def test_cli_process_prints_no_traceback(tmp_path):
    path = tmp_path / "random.onnx"
    path.write_bytes(b"\x08\x07garbage" * 50)
    proc = subprocess.run([sys.executable, "-m", "s4c.cli", "compile", str(path), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_debug_flag_shows_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "s4c.cli", "--debug", "compile", str(tmp_path / "nope.onnx"),
                           "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
