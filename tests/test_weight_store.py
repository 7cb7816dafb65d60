"""OUTDIR's compressed weight store (s4c/weight_store.py) and what reads it: every weight comes back bit
for bit, weights c/weights.bin holds are not stored twice, and a --target c OUTDIR stays within 1.5x of
its weights.bin (the issue's bound; BERT-base's figure is in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from s4c.cli import main
from s4c.driver import _stored_weights, compile as s4c_compile, load_compiled
from s4c.errors import FrontendError, S4CError
from s4c.frontend import load_onnx
from s4c.sparse import parse_layout
from s4c.weight_store import NPZ, StoredWeight, decode, encode, exact_copy, read_weights, write_weights

MODEL = os.path.join(os.path.dirname(__file__), "..", "examples", "models", "bert_mini_pruned90.onnx")
SHAPES = {"input_ids": (1, 128)}


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def pruned(shape, density, seed=0, dtype=np.float32):
    """A weight pruned the way exporters leave it: w * mask, so negative pruned values are -0.0."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(dtype)
    return w * (rng.random(shape) < density).astype(dtype)


def awkward_arrays():
    w = pruned((64, 48), 0.1)
    w[3, 5] = np.frombuffer(np.uint32(0x7FC01234).tobytes(), np.float32)[0]  # a NaN with a payload
    return {
        "sparse_f32_negzero": w,
        "dense_f32": np.random.default_rng(1).standard_normal((16, 16)).astype(np.float32),
        "sparse_i8": (np.random.default_rng(2).integers(-127, 128, (32, 32)) * (np.arange(32) % 9 == 0)).astype(np.int8),
        "sparse_f16": pruned((8, 40), 0.2, dtype=np.float16),
        "bool": np.arange(300) % 7 == 0,
        "int64": np.arange(100, dtype=np.int64),
        "zeros_3d": np.zeros((4, 5, 6), np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }


@pytest.mark.parametrize("name", list(awkward_arrays()))
def test_encode_decode_is_bit_identical(tmp_path, name):
    array = awkward_arrays()[name]
    np.savez(tmp_path / "w.npz", **encode("w0", array))
    with np.load(tmp_path / "w.npz") as npz:
        assert same_bits(decode(npz, "w0"), array)


def test_sparse_weights_are_stored_masked_and_small(tmp_path):
    w = pruned((256, 256), 0.1)
    entries = encode("w0", w)
    assert "w0" not in entries and "w0.negzero" in entries  # the -0.0 of pruned negatives kept apart
    assert sum(a.nbytes for a in entries.values()) < 0.2 * w.nbytes
    assert list(encode("w1", np.ones((8, 8), np.float32))) == ["w1"]  # dense: as it is


def stored_in_file(tmp_path, weight, layout_text):
    """A StoredWeight for `weight` packed in `layout_text`, its arrays written at odd offsets of a file."""
    arrays = {"data": weight} if layout_text == "dense" else parse_layout(layout_text).pack(weight).arrays
    blob, parts = bytearray(b"head"), {}
    for key, arr in arrays.items():
        written = arr.astype(np.uint16) if key == "indices" and arr.dtype == np.uint8 else arr  # widened, as C does
        parts[key] = (len(blob), str(written.dtype), tuple(written.shape), str(arr.dtype))
        blob += np.ascontiguousarray(written).tobytes() + b"pad"
    (tmp_path / "blob.bin").write_bytes(bytes(blob))
    return StoredWeight("blob.bin", layout_text, weight.shape, str(weight.dtype), parts,
                        {k: np.asarray(v) for k, v in arrays.items()})


@pytest.mark.parametrize("layout", ["dense", "csr", "bsr4x1", "bsr1x4", "nm2:8"])
def test_weights_held_by_another_file_are_referenced_and_rebuilt_exactly(tmp_path, layout):
    w = pruned((64, 48), 0.1 if layout != "nm2:8" else 0.0)
    if layout == "nm2:8":  # two per group of 8, some of them negative zeros
        w[:, ::8] = np.random.default_rng(3).standard_normal((64, 6)).astype(np.float32)
        w[::3, 1::8] = -0.0
    ref = stored_in_file(tmp_path, w, layout)
    other = pruned((10, 10), 0.3, seed=4)
    refs = write_weights(str(tmp_path), [("a", w), ("b", other)], {"a": ref})
    assert list(refs) == ["a"]
    with np.load(tmp_path / NPZ) as npz:
        assert "w0" not in npz.files and "w0.values" not in npz.files  # not stored twice
    back = read_weights(str(tmp_path), ["a", "b"], json.loads(json.dumps(refs)))
    assert same_bits(back["a"], w) and same_bits(back["b"], other)


def test_a_packed_copy_missing_a_nonzero_is_not_referenced(tmp_path):
    w = pruned((32, 32), 0.2)
    ref = stored_in_file(tmp_path, w, "csr")
    ref.data["values"] = ref.data["values"].copy()
    ref.data["values"][0] = 0
    assert not exact_copy(w, ref)
    assert write_weights(str(tmp_path), [("a", w)], {"a": ref}) == {}
    assert same_bits(read_weights(str(tmp_path), ["a"], {})["a"], w)


@pytest.fixture(scope="module")
def c_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("wstore") / "c"
    compiled = s4c_compile(MODEL, input_shapes=SHAPES, target="c", outdir=out)
    return compiled, out


def folder_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def test_c_outdir_is_within_1_5x_of_its_compressed_weights(c_build):
    compiled, out = c_build
    wbin = os.path.getsize(out / "c" / "weights.bin")
    dense = sum(np.asarray(v.data).nbytes for v in _stored_weights(compiled.graph))
    total = folder_bytes(out)
    print(f"OUTDIR {total} bytes, weights.bin {wbin}, ratio {total / wbin:.3f}; weights.npz "
          f"{os.path.getsize(out / NPZ)} (dense weights {dense})")
    assert total <= 1.5 * wbin
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["weight_refs"]) >= 0.9 * len(manifest["weights"])  # the Linears and embeddings
    assert os.path.getsize(out / NPZ) < 0.2 * dense


@pytest.mark.parametrize("target", ["c", "s4"])
def test_every_reader_gets_the_compiled_weights_back_bit_for_bit(c_build, tmp_path, target):
    if target == "c":
        compiled, out = c_build
    else:
        out = tmp_path / "s4"
        compiled = s4c_compile(MODEL, input_shapes=SHAPES, target="s4", outdir=out)
    expected = {v.name: v.data for v in _stored_weights(compiled.graph)}
    loaded = load_compiled(out)  # what s4c run / check / inspect read
    got = {v.name: v.data for v in _stored_weights(loaded.graph)}
    assert expected.keys() == got.keys()
    for name in expected:
        assert same_bits(got[name], expected[name]), name
    assert main(["inspect", str(out)]) == 0


def test_a_version_1_outdir_with_dense_weights_still_loads(c_build, tmp_path):
    compiled, out = c_build
    old = tmp_path / "old"
    os.makedirs(old)
    for name in ("model.s4ir", "manifest.json"):
        (old / name).write_bytes((out / name).read_bytes())
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["version"], manifest["targets"] = 1, []
    del manifest["weight_refs"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    weights = {v.name: v.data for v in _stored_weights(compiled.graph)}
    np.savez(old / NPZ, **{f"w{i}": weights[n] for i, n in enumerate(manifest["weights"])})
    got = {v.name: v.data for v in _stored_weights(load_compiled(old).graph)}
    assert all(same_bits(got[n], weights[n]) for n in weights)


@pytest.mark.parametrize("edit", ["truncated", "one byte changed"])
def test_an_edited_weights_bin_is_refused_not_read_as_other_weights(c_build, tmp_path, edit):
    _, out = c_build
    bad = tmp_path / "bad"
    os.makedirs(bad / "c")
    for name in ("model.s4ir", NPZ, "manifest.json"):
        (bad / name).write_bytes((out / name).read_bytes())
    blob = bytearray((out / "c" / "weights.bin").read_bytes())
    if edit == "truncated":
        blob = blob[:1000]
    else:
        blob[len(blob) // 2] ^= 1
    (bad / "c" / "weights.bin").write_bytes(bytes(blob))
    with pytest.raises(S4CError, match="compiled output is corrupt.*weights.bin changed after the compile"):
        load_compiled(bad)


def test_a_reference_outside_its_file_is_an_error(tmp_path):
    w = pruned((16, 16), 0.3)
    ref = stored_in_file(tmp_path, w, "csr")
    key = next(iter(ref.arrays))
    off, dt, shape, pack = ref.arrays[key]
    ref.arrays[key] = (off + 10_000, dt, shape, pack)
    refs = write_weights(str(tmp_path), [("a", w)], {"a": ref})
    with pytest.raises(ValueError, match="outside the file"):
        read_weights(str(tmp_path), ["a"], refs)


def external_model(tmp_path, location="model.onnx.data"):
    w = np.random.default_rng(5).standard_normal((4, 300)).astype(np.float32)
    b = np.arange(4, dtype=np.int64)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 300])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Cast", ["b"], ["bf"], to=1),
             helper.make_node("ReduceSum", ["bf"], ["s"], keepdims=0), helper.make_node("Add", ["m", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [onnx.numpy_helper.from_array(w, "w"),
                                                     onnx.numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
              size_threshold=0)
    return path, w


def test_external_initializers_are_read_straight_into_numpy(tmp_path):
    path, w = external_model(tmp_path)
    graph = load_onnx(str(path))
    assert any(same_bits(v.data, w) for v in graph.constants())
    reference = load_onnx(onnx.load(str(path)))  # onnx's own loader
    a = {v.name: v.data for v in graph.constants()}
    b = {v.name: v.data for v in reference.constants()}
    assert a.keys() == b.keys() and all(same_bits(a[k], b[k]) for k in a)


def test_external_initializers_map_the_file_privately(tmp_path):
    """The arrays map the data file copy-on-write: writing to one changes that array, not the file."""
    path, w = external_model(tmp_path)
    before = (tmp_path / "model.onnx.data").read_bytes()
    (mapped,) = [v.data for v in load_onnx(str(path)).constants() if same_bits(v.data, w)]
    assert mapped.flags.writeable
    mapped[0, 0] = 123.0
    assert mapped[0, 0] == 123.0 and (tmp_path / "model.onnx.data").read_bytes() == before
    again = [v.data for v in load_onnx(str(path)).constants() if v.data.shape == w.shape]
    assert len(again) == 1 and same_bits(again[0], w)


def test_external_data_outside_the_model_folder_or_too_short_is_a_frontend_error(tmp_path):
    path, _ = external_model(tmp_path)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../elsewhere.data"
    onnx.save(model, str(tmp_path / "escape.onnx"))
    with pytest.raises(FrontendError, match="not a file inside the model's folder"):
        load_onnx(str(tmp_path / "escape.onnx"))
    (tmp_path / "model.onnx.data").write_bytes((tmp_path / "model.onnx.data").read_bytes()[:100])
    with pytest.raises(FrontendError, match="too short"):
        load_onnx(str(path))
