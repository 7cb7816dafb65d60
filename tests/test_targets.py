"""Target descriptions and their cost models (issue 4): supported layouts, the S4 model derived
from the machine model, the C model's defaults and calibration file, `s4c calibrate`.

Nothing here depends on timing: calibration is checked for its file, not its numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from s4c.cli import main
from s4c.errors import TargetError
from s4c.s4 import isa, load_machine
from s4c.sparse import SUPPORTED_LAYOUTS, BSRLayout, CSRLayout, DenseLayout, NMLayout, analyze_sparsity, parse_layout
from s4c.targets import (CCostParams, CTarget, LinearShapes, S4Target, calibration_path, default_rate, get_target,
                         layout_work)
from s4c.targets import c as c_target


@pytest.fixture(autouse=True)
def _no_user_calibration(tmp_path, monkeypatch):
    """Never read the developer's own ~/.cache/s4c calibration."""
    monkeypatch.setenv("S4C_CACHE", str(tmp_path / "cache"))


def _random(shape, density, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[w == 0] = 1.0
    return w * (rng.random(shape) < density)


# -- target descriptions --------------------------------------------------------------------------

def test_targets_list_their_layouts_dense_first():
    c, s4 = get_target("c"), get_target("s4")
    assert c.supported_layouts == SUPPORTED_LAYOUTS
    assert s4.supported_layouts[0] == DenseLayout() and c.supported_layouts[0] == DenseLayout()
    # the SPU runs dense, BSR and N:M natively; CSR only as 1x1 BSR at 1/8 rate, so it is not offered
    assert CSRLayout() not in s4.supported_layouts
    assert {type(layout) for layout in s4.supported_layouts} == {DenseLayout, BSRLayout, NMLayout}
    assert len(s4.supported_layouts) == len(SUPPORTED_LAYOUTS) - 1
    with pytest.raises(TargetError, match="unknown target 'gpu'"):
        get_target("gpu")


def test_cost_rejects_unsupported_layouts_ops_and_non_compliant_nm():
    report = analyze_sparsity(_random((64, 64), 0.5))
    shapes = LinearShapes(16, report)
    with pytest.raises(TargetError, match=r"does not run layout csr \(supported: dense, bsr4x1"):
        get_target("s4").cost("Linear", "csr", shapes)
    with pytest.raises(TargetError, match="unknown layout 'bsr3x1'"):
        get_target("c").cost("Linear", "bsr3x1", shapes)
    with pytest.raises(TargetError, match="no cost model for op 'Softmax'"):
        get_target("c").cost("Softmax", "dense", shapes)
    with pytest.raises(TargetError, match="not 2:8 compliant"):
        get_target("c").cost("Linear", "nm2:8", shapes)


def test_candidates_offer_nm_only_where_the_weight_complies():
    w = _random((32, 64), 0.5)
    w[:, 2::4] = 0
    w[:, 3::4] = 0  # at most 2 of every 4: 2:4 compliant, not 1:4 (nor 2:8: up to 4 of every 8)
    report = analyze_sparsity(w)
    names = [str(layout) for layout in get_target("c").candidates(report)]
    assert "nm2:4" in names and "nm1:4" not in names and "nm1:32" not in names
    assert names[:2] == ["dense", "csr"] and all(f"bsr{r}x{c}" in names for r, c in [(4, 1), (8, 8)])


def test_layout_work_counts_stored_values_and_bytes_like_packing():
    w = _random((40, 72), 0.2, seed=3)
    report = analyze_sparsity(w)
    for layout in get_target("c").candidates(report):
        work = layout_work(layout, report)
        packed = layout.pack(w)
        assert work.values == packed.stored_values, layout
        assert work.bytes == packed.nbytes, layout
        assert work.rows == 40


# -- S4: derived from the machine model -----------------------------------------------------------

def _isa_cycles(machine, mnemonic, **fields):
    ins = isa.make(mnemonic, **fields)
    return ins.spec.cost(ins.fields(), machine).cycles


def test_s4_cost_is_the_opcode_tables_cost_of_the_emitted_instructions():
    m = load_machine("s4v1")
    target = S4Target()
    tokens, out_dim, in_dim = 128, 768, 768
    w = _random((out_dim, in_dim), 0.1)
    report = analyze_sparsity(w)
    shapes = LinearShapes(tokens, report)

    spu = _isa_cycles(m, "spu.mm", dst=0, a=0, b=0, m=tokens, n=out_dim, k=in_dim, pd=0, pa=0, pb=0, tb=1, dt="i8")
    dma = _isa_cycles(m, "dma.ld", dst=0, src=0, rows=1, bytes=out_dim * in_dim, dpitch=0, spitch=0, dt="i8")
    assert target.cost("Linear", "dense", shapes) == max(spu, dma) / m.clock_hz

    nnzb = report.block((8, 1)).kept_blocks
    spu = _isa_cycles(m, "spu.bsr", dst=0, x=0, val=0, col=0, ptr=0, t=tokens, o=out_dim, k=in_dim, r=8, c=1,
                      nnzb=nnzb, pd=0, px=0, dt="i8", cdt="u16")
    dma = sum(_isa_cycles(m, "dma.ld", dst=0, src=0, rows=1, bytes=b, dpitch=0, spitch=0, dt=dt)
              for b, dt in ((nnzb * 8, "i8"), (nnzb * 2, "u16"), ((out_dim // 8 + 1) * 4, "i32")))
    assert target.cost("Linear", "bsr8x1", shapes) == max(spu, dma) / m.clock_hz
    # the documented formula: overhead + MACs (fill-in included) / rate
    assert spu == m["spu.overhead"] + math.ceil(tokens * nnzb * 8 / m.spu_rate("bsr", 3))


def test_s4_cost_follows_the_machine_parameters():
    m = load_machine("s4v1")
    report = analyze_sparsity(_random((768, 768), 1.0))
    shapes = LinearShapes(128, report)
    base = S4Target(m).cost("Linear", "dense", shapes)
    assert S4Target(m.replace({"spu.macs_per_cycle.dense.i8": 2 * m["spu.macs_per_cycle.dense.i8"]})).cost(
        "Linear", "dense", shapes) < base
    slow_dma = S4Target(m.replace({"dma.bytes_per_cycle": 1.0}))
    assert slow_dma.cost("Linear", "dense", shapes) > base  # now DMA-bound
    # a bf16 weight moves twice the bytes and runs at half the rate
    assert S4Target(m, weight_dtype="bf16").cost("Linear", "dense", shapes) > base
    with pytest.raises(TargetError, match="weight_dtype"):
        S4Target(m, weight_dtype="i4")


def test_s4_small_blocks_run_slower_and_fill_in_costs():
    """4x1 (4 elements) runs at half the BSR rate; random zeros make big blocks store zeros."""
    target = S4Target()
    report = analyze_sparsity(_random((768, 768), 0.1))
    shapes = LinearShapes(128, report)
    cost = {str(layout): target.cost("Linear", layout, shapes) for layout in target.candidates(report)}
    assert cost["bsr8x1"] < cost["bsr4x1"]           # 4x1 keeps fewer values, but at half rate
    assert cost["bsr8x1"] < cost["bsr8x8"]           # 8x8 blocks keep ~all of a random weight


# -- C: defaults and calibration ------------------------------------------------------------------

def test_c_default_rates_reflect_the_kernels():
    rate = {str(layout): default_rate(layout).rate for layout in SUPPORTED_LAYOUTS}
    assert 30 <= rate["dense"] <= 40
    assert 19 <= rate["csr"] <= 21
    for r in (4, 8, 16, 32):
        assert rate["csr"] < rate[f"bsr{r}x1"] < rate["dense"]
    assert rate["bsr4x1"] < rate["bsr8x1"] < rate["bsr16x1"]  # per-block overhead amortised
    for n, m in ((2, 4), (2, 8), (1, 32)):
        assert rate["csr"] < rate[f"nm{n}:{m}"] < rate["dense"]
    assert default_rate(DenseLayout()).row_ns == 0 and default_rate(CSRLayout()).row_ns > 0


def test_c_cost_is_the_documented_formula():
    report = analyze_sparsity(_random((256, 512), 0.1))
    target = CTarget(threads=2)
    shapes = LinearShapes(64, report)
    k = default_rate(CSRLayout())
    expected = c_target.CALL_S + 64 * (report.nnz / k.rate + 256 * k.row_ns) * 1e-9 / 2
    assert target.cost("Linear", "csr", shapes) == pytest.approx(expected, rel=1e-12)
    assert target.cost("MatMul", "dense", shapes) == target.cost("Linear", "dense", shapes)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.2, 0.3])
def test_c_defaults_prefer_dense_for_dense_and_lightly_sparse_weights(sparsity):
    target = get_target("c")
    for shape in ((768, 768), (3072, 768), (768, 3072), (64, 64)):
        report = analyze_sparsity(_random(shape, 1 - sparsity))
        shapes = LinearShapes(128, report)
        costs = {str(layout): target.cost("Linear", layout, shapes) for layout in target.candidates(report)}
        assert min(costs, key=costs.get) == "dense", (shape, sparsity, sorted(costs.items(), key=lambda kv: kv[1])[:3])


def _calibration(**rates):
    return {"version": 1, "target": "c", "created": "2026-01-01T00:00:00+00:00", "call_us": 1.0,
            "layouts": {name: {"mac_per_ns": rate, "row_ns": 0.0} for name, rate in rates.items()}}


def test_c_target_reads_the_calibration_file_from_the_cache(tmp_path, monkeypatch):
    assert calibration_path() == tmp_path / "cache" / "c-costs.json"
    assert get_target("c").params.source == "built-in defaults"
    calibration_path().parent.mkdir(parents=True)
    calibration_path().write_text(json.dumps(_calibration(csr=100.0, dense=10.0)))
    target = get_target("c")
    assert "calibrated" in target.params.source and target.params.calibrated == {"csr", "dense"}
    assert "calibrated" in target.describe()
    report = analyze_sparsity(_random((100, 100), 0.5))
    shapes = LinearShapes(10, report)
    assert target.cost("Linear", "csr", shapes) == pytest.approx(1e-6 + 10 * report.nnz / 100.0 * 1e-9)
    assert target.cost("Linear", "dense", shapes) == pytest.approx(1e-6 + 10 * 100 * 100 / 10.0 * 1e-9)
    # layouts the file lacks keep their defaults
    assert target.params.rate(BSRLayout(4, 1)) == default_rate(BSRLayout(4, 1))
    # an explicit file wins over the cache
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_calibration(csr=1.0)))
    assert CTarget.load(other).params.rate(CSRLayout()).rate == 1.0
    monkeypatch.delenv("S4C_CACHE")
    assert c_target.cache_dir().parts[-2:] == (".cache", "s4c")


@pytest.mark.parametrize("content, message", [
    ("not json", "is invalid"),
    (json.dumps({"version": 99, "target": "c", "layouts": {}}), "not a version-1 C calibration"),
    (json.dumps(_calibration(bsr3x1=10.0)), "unknown layout 'bsr3x1'"),
    (json.dumps(_calibration(csr=-1.0)), "rate must be > 0"),
])
def test_a_broken_calibration_file_is_a_one_line_error(content, message):
    calibration_path().parent.mkdir(parents=True)
    calibration_path().write_text(content)
    with pytest.raises(TargetError, match=message) as info:
        get_target("c")
    assert "\n" not in str(info.value) and "s4c calibrate --target c" in str(info.value)


def test_calibrate_measures_every_c_layout_and_writes_a_readable_file(tmp_path):
    """A tiny, fast calibration with the real kernels: the file's structure, not its numbers."""
    from s4c.codegen.c.calibrate import calibrate_c

    path, data = calibrate_c(tmp_path / "cal" / "c.json", tokens=16, out_features=64,
                             in_features=64, repeats=2, min_time=0.0, rounds=1)
    assert path.is_file() and json.loads(path.read_text()) == data
    assert set(data["layouts"]) == {str(layout) for layout in SUPPORTED_LAYOUTS}
    assert all(e["mac_per_ns"] > 0 and e["row_ns"] >= 0 for e in data["layouts"].values())
    assert data["layouts"]["dense"]["row_ns"] == 0 and data["call_us"] > 0 and data["threads"] == 1
    assert set(data["int8"]) == {"int8-r4", "int8-r1", "int8-cols-r4", "int8-cols-r1"}  # the int8 kernels
    assert all(e["mac_per_ns"] > 0 and e["row_ns"] >= 0 for e in data["int8"].values())
    params = CTarget.load(path).params
    assert params.calibrated == frozenset(data["layouts"]) | frozenset(data["int8"])
    assert isinstance(params, CCostParams)
    assert params.int8["int8-r1"].rate == data["int8"]["int8-r1"]["mac_per_ns"]


def test_c_int8_cost_counts_the_slots_the_int8_kernels_store():
    """LinearInt8 on C: dense and BSR with c % 4 == 0 become quad blocks of 4 rows (r % 4 == 0, dense) or
    1 row by 4 input features; CSR, N:M and r x 1 BSR become column groups (4 nonzero columns of 4 rows
    for r x 1 blocks, else 1 row); the cost counts their slots."""
    from s4c.targets.c import int8_kernel, int8_slots

    rng = np.random.default_rng(0)
    keep = np.kron(rng.random((32, 128)) < 0.1, np.ones((4, 1), bool))  # 4x1 blocks, 90% sparse
    w = np.where(keep, 1.0, 0.0).astype(np.float32)
    report = analyze_sparsity(w)
    target = CTarget()
    shapes = LinearShapes(128, report)
    names = ("dense", "bsr4x1", "bsr8x1", "bsr4x4", "csr", "bsr1x4", "bsr8x8")
    assert [int8_kernel(parse_layout(n)) for n in names] == [
        ("quads", 4), ("cols", 4), ("cols", 4), ("quads", 4), ("cols", 1), ("quads", 1), ("quads", 4)]
    assert int8_kernel(parse_layout("csr"), 70000) == ("quads", 1)  # uint16 column indices
    assert int8_slots(parse_layout("dense"), report) == 128 * 128
    assert int8_slots(parse_layout("bsr4x4"), report) == report.block((4, 4)).kept_blocks * 16
    assert int8_slots(parse_layout("bsr1x4"), report) == report.block((1, 4)).kept_blocks * 4
    assert int8_slots(parse_layout("bsr4x1"), report) == (report.block((4, 1)).kept_blocks + 2 * 32) * 4
    assert int8_slots(parse_layout("csr"), report) == report.nnz + 2 * 128
    k = target.params.int8["int8-cols-r4"]
    want = target.params.call_s + 128 * (int8_slots(parse_layout("bsr4x1"), report) / k.rate + 128 * k.row_ns) * 1e-9
    assert target.cost("LinearInt8", "bsr4x1", shapes) == pytest.approx(want)
    assert target.cost("LinearInt8", "bsr4x1", shapes) < target.cost("LinearInt8", "dense", shapes)
    assert target.cost("Linear", "bsr4x1", shapes) != target.cost("LinearInt8", "bsr4x1", shapes)
