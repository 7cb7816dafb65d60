"""A corpus of bad inputs: each gives one line `error: ...` naming the file/node, exit code 2,
no traceback, and no output folder left behind."""

import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

from oracle import fixtures
from s4c.cli import main
from s4c.errors import S4ProgramError
from s4c.s4 import Program

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


# -- tensors too big for a target, values defined twice ------------------------------------------------
HUGE = "100000x100000x1000"        # f32: 4e13 bytes (36 TiB)


def _unary(op="Relu"):
    return _model([helper.make_node(op, ["x"], ["y"], name="n")], [_vi("x", ["a", "b", "c"])], [_vi("y", ["a", "b", "c"])])


def _shape_init(dims=(100000, 100000, 1000)):
    return onnx.numpy_helper.from_array(np.array(dims, np.int64), "shape")


def _huge_input_s4(tmp_path):
    return (_save(tmp_path, "relu.onnx", _unary()), ["--target", "s4", "--input-shape", f"x={HUGE}"],
            "value 'x' (f32[100000,100000,1000]) takes 40000000000000 bytes, more than the 21474836480 bytes "
            "of DRAM of the S4 device (s4v1)")


def _huge_input_all(tmp_path):
    path, _, expected = _huge_input_s4(tmp_path)
    return path, ["--target", "all", "--input-shape", f"x={HUGE}"], expected


def _huge_expand_s4(tmp_path):
    model = _model([helper.make_node("Expand", ["x", "shape"], ["y"], name="exp")], [_vi("x", [1])], [_vi("y", None)],
                   [_shape_init()])
    return (_save(tmp_path, "expand.onnx", model), ["--target", "s4"],
            "value 'y' (f32[100000,100000,1000]) takes 40000000000000 bytes, more than the 21474836480 bytes")


def _huge_input_c(tmp_path):
    return (_save(tmp_path, "relu.onnx", _unary()), ["--target", "c", "--input-shape", f"x={HUGE}"],
            "value 'x' (f32[100000,100000,1000]) takes 40000000000000 bytes, more than the C target's limit "
            "of 1099511627776 bytes for one tensor")


def _huge_arena_c(tmp_path):
    # two 0.6 TB activations live at once: each fits the C limit, the arena cannot
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Neg", ["x"], ["b"], name="n"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    model = _model(nodes, [_vi("x", ["a", "b", "c"])], [_vi("y", ["a", "b", "c"])])
    return (_save(tmp_path, "arena.onnx", model), ["--target", "c", "--input-shape", "x=1000x1000x150000"],
            "the C target's activation arena needs at least 1200000000000 bytes, more than its limit of "
            "1099511627776 bytes")


def _huge_constant_of_shape(tmp_path):
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["z"], name="cos", value=value),
             helper.make_node("Add", ["x", "z"], ["y"], name="add")]
    model = _model(nodes, [_vi("x", [1])], [_vi("y", None)], [_shape_init()])
    return (_save(tmp_path, "cos.onnx", model), ["--target", "s4"],
            "cos.onnx: node 'cos' (ConstantOfShape): constant result 'z' (f32[100000,100000,1000]) would take "
            "40000000000000 bytes, more than the 4294967296 bytes s4c computes at import")


def _two_writers(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r1"), helper.make_node("Neg", ["x"], ["y"], name="r2")]
    model = _model(nodes, [_vi("x", [2])], [_vi("y", [2])])
    return (_save(tmp_path, "dup.onnx", model), ["--target", "all"],
            "dup.onnx: node 'r2' (Neg) writes 'y', already defined by node 'r1' (Relu)")


def _output_shadows_input(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["x"], name="r1")], [_vi("x", [2])], [_vi("x", [2])])
    return (_save(tmp_path, "shadow_in.onnx", model), ["--target", "all"],
            "shadow_in.onnx: node 'r1' (Relu) writes 'x', already defined by the graph input")


def _output_shadows_initializer(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["w"], name="r1"), helper.make_node("Add", ["x", "w"], ["y"], name="a")]
    w = onnx.numpy_helper.from_array(np.ones(2, np.float32), "w")
    model = _model(nodes, [_vi("x", [2])], [_vi("y", [2])], [w])
    return (_save(tmp_path, "shadow_init.onnx", model), ["--target", "all"],
            "shadow_init.onnx: node 'r1' (Relu) writes 'w', already defined by an initializer")


SIZE_CASES = [_huge_input_s4, _huge_input_all, _huge_expand_s4, _huge_input_c, _huge_arena_c]
IMPORT_CASES = [_huge_constant_of_shape, _two_writers, _output_shadows_input, _output_shadows_initializer]


@pytest.mark.parametrize("case", SIZE_CASES, ids=[c.__name__.strip("_") for c in SIZE_CASES])
def test_tensor_too_big_for_target_fails_up_front(case, tmp_path):
    path, extra, expected = case(tmp_path)
    # a process with a timeout: the S4 lowering of a 36 TiB tensor used to hang
    proc = subprocess.run([sys.executable, "-m", "s4c.cli", "compile", path, "-o", str(tmp_path / "out"), *extra],
                          capture_output=True, text=True, timeout=120)
    _assert_failed_compile(proc.returncode, proc.stderr, expected, tmp_path)


@pytest.mark.parametrize("case", IMPORT_CASES, ids=[c.__name__.strip("_") for c in IMPORT_CASES])
def test_bad_graph_for_any_target_gives_one_line_error(case, tmp_path, capsys):
    path, extra, expected = case(tmp_path)
    code = main(["compile", path, "-o", str(tmp_path / "out"), *extra])
    _assert_failed_compile(code, capsys.readouterr().err, expected, tmp_path)


def _assert_failed_compile(code, err, expected, tmp_path):
    outdir = tmp_path / "out"
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert "Traceback" not in err
    assert not outdir.exists(), "a failed compile must not leave an output folder"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.")], "temporary folder left behind"


def test_huge_input_compiles_for_ir_only(tmp_path, capsys):
    """--target ir does not lower anything: a huge bound input is just a type there (no hang)."""
    path = _save(tmp_path, "relu.onnx", _unary())
    assert main(["compile", path, "-o", str(tmp_path / "out"), "--target", "ir", "--input-shape", f"x={HUGE}"]) == 0
    assert "f32[100000,100000,1000]" in (tmp_path / "out" / "model.s4ir").read_text()


# -- an S4 program whose machine section asks for too much ---------------------------------------------
def _set_machine_param(blob: bytes, key: str, value: float) -> bytes:
    """model.s4 with one machine parameter changed (same size), its section and header checksums redone."""
    from s4c.s4.program import HEADER_SIZE
    blob = bytearray(blob)
    _, off, size, _ = struct.unpack_from("<4sQQI", blob, HEADER_SIZE)          # section 0: MACH
    raw = struct.pack("<H", len(key)) + key.encode()
    pos = bytes(blob[off:off + size]).index(raw) + off + len(raw)
    struct.pack_into("<d", blob, pos, float(value))
    struct.pack_into("<I", blob, HEADER_SIZE + 20, zlib.crc32(bytes(blob[off:off + size])))
    n_sect = struct.unpack_from("<I", blob, 40)[0]
    table_end = HEADER_SIZE + 24 * n_sect
    struct.pack_into("<I", blob, 60, zlib.crc32(bytes(blob[:60]) + bytes(blob[HEADER_SIZE:table_end])))
    return bytes(blob)


@pytest.fixture(scope="module")
def s4_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("s4m")
    path = _save(base, "relu.onnx", _model([helper.make_node("Relu", ["x"], ["y"], name="n")],
                                           [_vi("x", [4, 16])], [_vi("y", [4, 16])]))
    assert main(["compile", path, "-o", str(base / "out"), "--target", "s4", "--cores", "1"]) == 0
    np.savez(base / "in.npz", x=np.ones((4, 16), np.float32))
    assert main(["run", str(base / "out"), "--backend", "s4", "--inputs", str(base / "in.npz")]) == 0
    return base


@pytest.mark.parametrize("params,expected", [
    ({"sram_bytes": (1 << 32) - 64}, "n_cores x sram_bytes = 4 x 4294967232 = 17179868928 bytes of SRAM, more than "
                                     "the 4294967296 s4c can model"),
    ({"align": 1, "sram_bytes": 1 << 30}, "n_cores x sram_bytes / align = 4294967296 SRAM blocks, more than the "
                                          "16777216 s4c can model"),
    ({"n_cores": 1 << 20}, "n_cores=1048576 outside [1, 64]"),
    ({"sram_bytes": 1e18}, "sram_bytes=1e+18 outside [4096, 4294967295]"),
], ids=["sram", "sram-blocks", "cores", "sram-1e18"])
def test_s4_program_machine_section_too_big(s4_build, tmp_path, capsys, params, expected):
    out = tmp_path / "out"
    shutil.copytree(s4_build / "out", out)
    blob = (out / "model.s4").read_bytes()
    for key, value in params.items():
        blob = _set_machine_param(blob, key, value)
    (out / "model.s4").write_bytes(blob)
    with pytest.raises(S4ProgramError, match=re.escape(expected)):
        Program.from_bytes(blob)
    capsys.readouterr()
    code = main(["run", str(out), "--backend", "s4", "--inputs", str(s4_build / "in.npz"), "-o", str(tmp_path / "o.npz")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"model.s4: machine section: machine s4v1: {expected}" in err, err
    assert not (tmp_path / "o.npz").exists()
