"""Hand-written S4 assembly for every opcode: the interpreter's result equals the numpy reference,
the cycle count equals the documented formula (docs/isa.md), and every program round-trips
text -> binary -> text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from s4c.s4 import Program, assemble, disassemble, isa, load_machine, run

M = load_machine()
RNG = np.random.default_rng(1234)
ESIZE = {"f32": 4, "bf16": 2, "i8": 1, "i32": 4, "u8": 1, "u16": 2}
NPDT = {"f32": np.float32, "i8": np.int8, "i32": np.int32, "u8": np.uint8, "u16": np.uint16, "bf16": np.float32}


def _align(n: int) -> int:
    return -(-n // 64) * 64


def build(inputs: dict, outputs: dict, body: str, consts: dict | None = None, tiles: dict | None = None) -> str:
    """A one-core program: every input/const X is DMA'd (one contiguous row) to SRAM symbol sX, then
    `body` runs (SPU/VPU wait for the loads), then every output is stored from SRAM sX.
    inputs/outputs: {name: (dtype, shape)}; consts: {name: (dtype, array)}; tiles: {name: shape}
    overrides the SRAM shape of sX (e.g. a padded pitch)."""
    consts = consts or {}
    tiles = tiles or {}
    lines, code, addr, sram = [], [], 0, 0
    blob = bytearray()
    for name, (dt, arr) in consts.items():
        if dt == "bf16":                                   # bf16 storage: upper half of the f32 bits
            arr = (np.asarray(arr, np.float32).view(np.uint32) >> 16).astype(np.uint16)
        raw = np.ascontiguousarray(arr).tobytes()
        lines.append(f".sym const {name} 0x{len(blob):x} {dt}[{','.join(map(str, arr.shape))}]")
        blob += raw + bytes(_align(len(raw)) - len(raw))
    addr = len(blob)
    decls = dict(inputs)
    decls.update(outputs)
    for name, (dt, shape) in decls.items():
        kind = "input" if name in inputs else "output"
        lines.append(f".sym {kind} {name} 0x{addr:x} {dt}[{','.join(map(str, shape))}]")
        addr += _align(math.prod(shape) * ESIZE[dt])
    for name, (dt, shape) in list(decls.items()) + [(n, (d, a.shape)) for n, (d, a) in consts.items()]:
        shape = tiles.get(name, shape)
        lines.append(f".sym sram:0 s{name} 0x{sram:x} {dt}[{','.join(map(str, shape))}]")
        sram += _align(math.prod(shape) * ESIZE[dt])
    header = [f".dram_size 0x{_align(addr) + 0x1000:x}", f".const_size {len(blob)}"]
    for off in range(0, len(blob), 64):
        header.append(f".data 0x{off:x} {bytes(blob[off:off + 64]).hex()}")
    loads = [n for n in inputs] + list(consts)
    for name in loads:
        dt, shape = (inputs[name] if name in inputs else (consts[name][0], consts[name][1].shape))
        code.append(_move("ld", name, dt, shape, tiles.get(name)))
    code += ["sync.signal unit=dma sem=l0", "sync.wait unit=spu sem=l0 value=1",
             "sync.wait unit=vpu sem=l0 value=1"]
    code += [ln.strip() for ln in body.strip().splitlines()]
    code += ["sync.signal unit=spu sem=l1", "sync.signal unit=vpu sem=l1", "sync.wait unit=dma sem=l1 value=2"]
    for name, (dt, shape) in outputs.items():
        code.append(_move("st", name, dt, shape, tiles.get(name)))
    code.append("end")
    return "\n".join(header + lines + [".core 0"] + ["    " + c for c in code]) + "\n"


def _move(kind: str, name: str, dt: str, shape: tuple, tile: tuple | None) -> str:
    """DMA between DRAM `name` (packed) and SRAM `s<name>`: one contiguous row, or row by row into a
    [rows, padded cols] tile."""
    src, dst = (f"s{name}", name) if kind == "st" else (name, f"s{name}")
    if tile is None:
        nbytes = math.prod(shape) * ESIZE[dt]
        return f"dma.{kind} dst={dst} src={src} rows=1 bytes={nbytes} dpitch=0 spitch=0 dt={dt}"
    row, pad = shape[-1] * ESIZE[dt], tile[-1] * ESIZE[dt]
    dp, sp = (row, pad) if kind == "st" else (pad, row)
    return f"dma.{kind} dst={dst} src={src} rows={math.prod(shape[:-1])} bytes={row} dpitch={dp} spitch={sp} dt={dt}"


def round_trip(text: str) -> Program:
    """text -> binary -> text is exact (after the first canonicalisation) and binary is stable."""
    program = assemble(text)
    canonical = disassemble(program)
    blob = program.to_bytes()
    again = Program.from_bytes(blob)
    assert again.to_bytes() == blob
    assert disassemble(again) == canonical
    assert assemble(canonical).to_bytes() == blob
    return program


def execute(text: str, feeds: dict, mnemonic: str | None = None, expected_cycles: int | None = None):
    program = round_trip(text)
    outputs, report = run(program, feeds)
    if mnemonic is not None and expected_cycles is not None:
        assert report.by_opcode[mnemonic].cycles == expected_cycles
    return outputs, report


def vpu_cycles(op, rows, cols, dt="f32", count=1):
    return count * (M["vpu.overhead"] + M[f"vpu.passes.{op}"] * math.ceil(rows * cols / M[f"vpu.lanes.{dt}"]))


def dma_cycles(rows, row_bytes, gather=False):
    burst = M["dma.burst_bytes"]
    moved = rows * math.ceil(row_bytes / burst) * burst
    extra = rows * M["dma.gather_row_cycles"] if gather else 0
    return M["dma.overhead"] + M["dma.latency"] + math.ceil(moved / M["dma.bytes_per_cycle"]) + extra


def spu_cycles(fmt, macs, dt="f32", eff=1.0):
    return M["spu.overhead"] + math.ceil(macs / (M[f"spu.macs_per_cycle.{fmt}.{dt}"] * eff))


def rand(*shape, dt=np.float32):
    return RNG.standard_normal(shape).astype(dt)


def to_bf16(x):
    """Round float64/float32 to bf16 values (nearest even), returned as float32."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)


# -- DMA ------------------------------------------------------------------------------------------
def test_dma_2d_strided_load_and_store():
    a = rand(8, 32)
    text = build({"a": ("f32", (8, 32))}, {"b": ("f32", (8, 32))}, "")
    # replace the generic load/store with strided ones: columns 16..31 of a -> SRAM [8,16] -> b[:, 0:16]
    text = text.replace("dma.ld dst=sa src=a rows=1 bytes=1024 dpitch=0 spitch=0 dt=f32",
                        "dma.ld dst=sa src=a+0x40 rows=8 bytes=64 dpitch=64 spitch=128 dt=f32")
    text = text.replace("dma.st dst=b src=sb rows=1 bytes=1024 dpitch=0 spitch=0 dt=f32",
                        "dma.st dst=b src=sa rows=8 bytes=64 dpitch=128 spitch=64 dt=f32")
    out, rep = execute(text, {"a": a})
    expect = np.zeros((8, 32), np.float32)
    expect[:, :16] = a[:, 16:]
    np.testing.assert_array_equal(out["b"], expect)
    assert rep.by_opcode["dma.ld"].cycles == dma_cycles(8, 64)
    assert rep.by_opcode["dma.st"].cycles == dma_cycles(8, 64)
    assert rep.by_opcode["dma.ld"].bytes == 512


def test_dma_timing_dtype_scales_bytes():
    text = build({"a": ("f32", (4, 64))}, {"b": ("f32", (4, 64))}, "")
    text = text.replace("bytes=1024 dpitch=0 spitch=0 dt=f32\n    sync.signal",
                        "bytes=1024 dpitch=0 spitch=0 dt=f32 tdt=i8\n    sync.signal")
    out, rep = execute(text, {"a": rand(4, 64)})
    assert rep.by_opcode["dma.ld"].cycles == dma_cycles(1, 256)      # timed as 256 int8 elements
    assert rep.by_opcode["dma.st"].cycles == dma_cycles(1, 1024)


def test_dma_gather_embedding_rows():
    table = rand(10, 16)
    ids = np.array([3, 0, 9, 3, 7, 1, 2, 2], np.int32)
    body = "dma.gather dst=sout table=tab idx=sids rows=8 bytes=64 dpitch=64 tpitch=64 trows=10 dt=f32"
    text = build({"ids": ("i32", (8,))}, {"out": ("f32", (8, 16))}, body, consts={"tab": ("f32", table)})
    out, rep = execute(text, {"ids": ids}, "dma.gather", dma_cycles(8, 64, gather=True))
    np.testing.assert_array_equal(out["out"], table[ids])


# -- SPU ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tb", [0, 1])
def test_spu_mm_f32(tb):
    a, b = rand(16, 32), rand(32, 48)
    stored_b = b.T.copy() if tb else b
    pb = 128 if tb else 192
    body = f"spu.mm dst=sc a=sa b=sb m=16 n=48 k=32 pd=192 pa=128 pb={pb} tb={tb} dt=f32"
    text = build({"a": ("f32", (16, 32)), "b": ("f32", stored_b.shape)}, {"c": ("f32", (16, 48))}, body)
    out, _ = execute(text, {"a": a, "b": stored_b}, "spu.mm", spu_cycles("dense", 16 * 48 * 32))
    np.testing.assert_allclose(out["c"], (a.astype(np.float64) @ b).astype(np.float32), rtol=1e-6, atol=1e-6)


def test_spu_mm_accumulate_i8():
    a = RNG.integers(-128, 128, (16, 64)).astype(np.int8)
    bt = RNG.integers(-128, 128, (16, 64)).astype(np.int8)         # B^T: [n, k]
    c0 = RNG.integers(-1000, 1000, (16, 16)).astype(np.int32)
    body = """spu.mm dst=sc a=sa b=sb m=16 n=16 k=64 pd=64 pa=64 pb=64 tb=1 acc=1 dt=i8
              sync.signal unit=spu sem=l2
              sync.wait unit=vpu sem=l2 value=1
              vpu.copy dst=so src=sc rows=16 cols=16 pd=64 ps=64 dt=i32"""
    text = build({"a": ("i8", (16, 64)), "b": ("i8", (16, 64)), "c": ("i32", (16, 16))}, {"o": ("i32", (16, 16))},
                 body)
    out, _ = execute(text, {"a": a, "b": bt, "c": c0}, "spu.mm", spu_cycles("dense", 16 * 16 * 64, "i8"))
    np.testing.assert_array_equal(out["o"], c0 + a.astype(np.int32) @ bt.T.astype(np.int32))


def test_spu_mm_bf16_inputs_f32_accumulator():
    a, b = to_bf16(rand(16, 32)), to_bf16(rand(32, 32))
    body = "spu.mm dst=sc a=sa b=sb m=16 n=32 k=32 pd=128 pa=64 pb=64 dt=bf16"
    text = build({"a": ("bf16", (16, 32)), "b": ("bf16", (32, 32))}, {"c": ("f32", (16, 32))}, body)
    out, _ = execute(text, {"a": a, "b": b}, "spu.mm", spu_cycles("dense", 16 * 32 * 32, "bf16"))
    np.testing.assert_allclose(out["c"], (a.astype(np.float64) @ b).astype(np.float32), rtol=1e-6, atol=1e-6)


def nm_pack(w: np.ndarray, n: int, m: int):
    """Prune w[o, k] to N:M (keep the n largest per group) -> (dense pruned, values, offsets)."""
    o, k = w.shape
    groups = -(-k // m)
    padded = np.zeros((o, groups * m), w.dtype)
    padded[:, :k] = w
    g = padded.reshape(o, groups, m)
    offs = np.sort(np.argsort(-np.abs(g), axis=-1, kind="stable")[..., :n], axis=-1)
    width = k - (groups - 1) * m
    offs[:, -1, :] = np.minimum(offs[:, -1, :], width - 1)     # stay inside k in the last group
    vals = np.take_along_axis(g, offs, axis=-1)
    if width < n:                                                # repeated offsets hold zeros
        dup = np.zeros_like(offs[:, -1, :], dtype=bool)
        dup[:, 1:] = offs[:, -1, 1:] == offs[:, -1, :-1]
        vals[:, -1, :][dup] = 0
    dense = np.zeros((o, groups * m), np.float64)
    rows = np.repeat(np.arange(o), groups * n)
    cols = (np.arange(groups)[None, :, None] * m + offs).reshape(-1)
    np.add.at(dense, (rows, cols), vals.reshape(-1))
    return dense[:, :k], vals.reshape(o, -1).astype(w.dtype), offs.reshape(o, -1).astype(np.uint8)


@pytest.mark.parametrize("n,m,k", [(2, 8, 64), (1, 4, 32), (1, 32, 64), (3, 16, 40)])
def test_spu_nm(n, m, k):
    t, o = 16, 32
    x = rand(t, k)
    w, vals, offs = nm_pack(rand(o, k), n, m)
    slots = vals.shape[1]
    kp = _align(4 * k) // 4                      # SRAM row pitch of X, in elements
    body = f"spu.nm dst=sy x=sx val=sv idx=si t={t} o={o} k={k} n={n} m={m} pd=128 px={4 * kp} dt=f32 tdt=i8"
    text = build({"x": ("f32", (t, k))}, {"y": ("f32", (t, o))}, body,
                 consts={"v": ("f32", vals), "i": ("u8", offs)}, tiles={"x": (t, kp)})
    macs = t * o * (-(-k // m)) * n
    out, _ = execute(text, {"x": x}, "spu.nm", spu_cycles("nm", macs, "i8"))
    np.testing.assert_allclose(out["y"], (x.astype(np.float64) @ w.T).astype(np.float32), rtol=1e-6, atol=1e-6)
    assert slots == (-(-k // m)) * n


def test_spu_nm_i8_accumulates_exactly_in_i32():
    t, o, k, n, m = 16, 32, 64, 2, 8
    x = RNG.integers(-128, 128, (t, k)).astype(np.int8)
    w, vals, offs = nm_pack(RNG.integers(-128, 128, (o, k)).astype(np.int16), n, m)
    body = f"spu.nm dst=sy x=sx val=sv idx=si t={t} o={o} k={k} n={n} m={m} pd=128 px=64 dt=i8"
    text = build({"x": ("i8", (t, k))}, {"y": ("i32", (t, o))}, body,
                 consts={"v": ("i8", vals.astype(np.int8)), "i": ("u8", offs)})
    out, _ = execute(text, {"x": x}, "spu.nm", spu_cycles("nm", t * o * (k // m) * n, "i8"))
    np.testing.assert_array_equal(out["y"], x.astype(np.int64) @ w.T.astype(np.int64))


def bsr_pack(w: np.ndarray, r: int, c: int, keep: float = 0.4):
    """Random block pattern over w[o, k] (edges padded) -> (dense, ptr, col, vals, nnzb)."""
    o, k = w.shape
    nbr, nbc = -(-o // r), -(-k // c)
    mask = RNG.random((nbr, nbc)) < keep
    mask[0, 0] = True
    padded = np.zeros((nbr * r, nbc * c), np.float32)
    padded[:o, :k] = w
    blocks = padded.reshape(nbr, r, nbc, c).transpose(0, 2, 1, 3)[mask]
    ptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int32)
    col = np.nonzero(mask)[1]
    dense = np.zeros_like(padded)
    dense.reshape(nbr, r, nbc, c).transpose(0, 2, 1, 3)[mask] = blocks
    return dense[:o, :k].astype(np.float64), ptr, col, blocks.astype(np.float32), int(mask.sum())


@pytest.mark.parametrize("r,c,cdt", [(4, 1, "u16"), (1, 1, "i32"), (8, 8, "u8"), (1, 4, "u8")])
def test_spu_bsr(r, c, cdt):
    t, k, o = 16, 64, 32
    x = rand(t, k)
    w, ptr, col, vals, nnzb = bsr_pack(rand(o, k), r, c)
    body = (f"spu.bsr dst=sy x=sx val=sv col=sc ptr=sp t={t} o={o} k={k} r={r} c={c} nnzb={nnzb} "
            f"pd=128 px=256 dt=f32 cdt={cdt}")
    text = build({"x": ("f32", (t, k))}, {"y": ("f32", (t, o))}, body,
                 consts={"v": ("f32", vals), "c": (cdt, col.astype(NPDT[cdt])), "p": ("i32", ptr)})
    eff = min(1.0, r * c / M["spu.bsr_full_rate_block"])
    out, _ = execute(text, {"x": x}, "spu.bsr", spu_cycles("bsr", t * nnzb * r * c, eff=eff))
    np.testing.assert_allclose(out["y"], (x.astype(np.float64) @ w.T).astype(np.float32), rtol=1e-6, atol=1e-6)


def test_spu_bsr_bf16_inputs():
    t, k, o, r = 16, 64, 32, 8
    x = to_bf16(rand(t, k))
    w, ptr, col, vals, nnzb = bsr_pack(to_bf16(rand(o, k)), r, 1)
    body = (f"spu.bsr dst=sy x=sx val=sv col=sc ptr=sp t={t} o={o} k={k} r={r} c=1 nnzb={nnzb} "
            f"pd=128 px=128 dt=bf16 cdt=u8 tdt=i8")
    text = build({"x": ("bf16", (t, k))}, {"y": ("f32", (t, o))}, body,
                 consts={"v": ("bf16", vals), "c": ("u8", col.astype(np.uint8)), "p": ("i32", ptr)})
    out, _ = execute(text, {"x": x}, "spu.bsr", spu_cycles("bsr", t * nnzb * r, "i8"))
    np.testing.assert_allclose(out["y"], (x.astype(np.float64) @ w.T).astype(np.float32), rtol=1e-6, atol=1e-6)


def test_spu_bsr_padded_rows():
    """o not a multiple of r (edge block) and an output tile with a padded SRAM pitch."""
    t, k, o, r = 4, 64, 30, 4
    x = rand(t, k)
    w, ptr, col, vals, nnzb = bsr_pack(rand(o, k), r, 1)
    body = (f"spu.bsr dst=sy x=sx val=sv col=sc ptr=sp t={t} o={o} k={k} r={r} c=1 nnzb={nnzb} "
            f"pd=128 px=256 dt=f32 cdt=i32")
    text = build({"x": ("f32", (t, k))}, {"y": ("f32", (t, 32))}, body,
                 consts={"v": ("f32", vals), "c": ("i32", col.astype(np.int32)), "p": ("i32", ptr)})
    out, _ = execute(text, {"x": x}, "spu.bsr", spu_cycles("bsr", t * nnzb * r, eff=r / M["spu.bsr_full_rate_block"]))
    np.testing.assert_allclose(out["y"][:, :o], (x.astype(np.float64) @ w.T).astype(np.float32), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out["y"][:, o:], 0)


# -- VPU ------------------------------------------------------------------------------------------
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
          "min": np.minimum}


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("bcast", ["full", "row", "col", "scalar"])
def test_vpu_binary(op, bcast):
    rows, cols = 8, 32
    a = rand(rows, cols)
    bshape = {"full": (rows, cols), "row": (cols,), "col": (rows,), "scalar": (1,)}[bcast]
    b = rand(*bshape)
    pb = "pb=128 " if bcast == "full" else ""
    body = f"vpu.{op} dst=sc a=sa b=sb rows={rows} cols={cols} pd=128 pa=128 {pb}bcast={bcast} dt=f32"
    text = build({"a": ("f32", (rows, cols)), "b": ("f32", bshape)}, {"c": ("f32", (rows, cols))}, body)
    out, _ = execute(text, {"a": a, "b": b}, f"vpu.{op}", vpu_cycles(op, rows, cols))
    bb = {"full": b, "row": b[None, :], "col": b[:, None], "scalar": b[None, :]}[bcast].astype(np.float64)
    with np.errstate(all="ignore"):
        expect = BINARY[op](a.astype(np.float64), bb).astype(np.float32)
    np.testing.assert_array_equal(out["c"], expect)


def test_vpu_add_in_place_bf16():
    a, b = to_bf16(rand(4, 64)), to_bf16(rand(4, 64))
    body = "vpu.add dst=sa a=sa b=sb rows=4 cols=64 pd=128 pa=128 pb=128 dt=bf16\n" \
           "vpu.copy dst=sc src=sa rows=4 cols=64 pd=128 ps=128 dt=bf16"
    text = build({"a": ("bf16", (4, 64)), "b": ("bf16", (4, 64))}, {"c": ("bf16", (4, 64))}, body)
    out, _ = execute(text, {"a": a, "b": b}, "vpu.add", vpu_cycles("add", 4, 64, "bf16"))
    np.testing.assert_array_equal(out["c"], to_bf16(a.astype(np.float64) + b))


_erf = np.vectorize(math.erf)
_erfc = np.vectorize(math.erfc)
UNARY = {
    "exp": np.exp, "erf": _erf, "gelu": lambda x: 0.5 * x * _erfc(-x / math.sqrt(2)),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "tanh": np.tanh, "relu": lambda x: np.maximum(x, 0), "sqrt": lambda x: np.sqrt(np.abs(x)),
    "rsqrt": lambda x: 1 / np.sqrt(np.abs(x)), "recip": lambda x: 1 / x,
}


@pytest.mark.parametrize("op", list(UNARY))
def test_vpu_unary(op):
    x = rand(4, 48) * 3
    if op in ("sqrt", "rsqrt"):
        x = np.abs(x)
    body = f"vpu.{op} dst=sy src=sx rows=4 cols=48 pd=192 ps=192 dt=f32"
    text = build({"x": ("f32", (4, 48))}, {"y": ("f32", (4, 48))}, body)
    out, _ = execute(text, {"x": x}, f"vpu.{op}", vpu_cycles(op, 4, 48))
    np.testing.assert_allclose(out["y"], UNARY[op](x.astype(np.float64)).astype(np.float32), rtol=2e-7, atol=1e-30)


def test_vpu_axpb_and_fill():
    x = rand(4, 16)
    body = ("vpu.axpb dst=sy src=sx rows=4 cols=16 pd=64 ps=64 alpha=0.125 beta=-2.5 dt=f32\n"
            "vpu.fill dst=sz rows=2 cols=16 pd=64 value=-3.5 dt=i32")
    text = build({"x": ("f32", (4, 16))}, {"y": ("f32", (4, 16)), "z": ("i32", (2, 16))}, body)
    out, _ = execute(text, {"x": x}, "vpu.fill", vpu_cycles("fill", 2, 16, "i32"))
    np.testing.assert_array_equal(out["y"], (0.125 * x.astype(np.float64) - 2.5).astype(np.float32))
    np.testing.assert_array_equal(out["z"], np.full((2, 16), -4, np.int32))     # round half to even


def test_vpu_softmax():
    x = rand(8, 32) * 4
    body = "vpu.softmax dst=sy src=sx rows=8 cols=32 pd=128 ps=128 scale=0.125 dt=f32"
    text = build({"x": ("f32", (8, 32))}, {"y": ("f32", (8, 32))}, body)
    out, _ = execute(text, {"x": x}, "vpu.softmax", vpu_cycles("softmax", 8, 32))
    z = x.astype(np.float64) * 0.125
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(out["y"], (e / e.sum(1, keepdims=True)).astype(np.float32), rtol=1e-6)


def test_vpu_layernorm():
    x, g, b = rand(8, 48) * 3 + 1, rand(48), rand(48)
    body = "vpu.layernorm dst=sy src=sx gamma=sg beta=sb rows=8 cols=48 pd=192 ps=192 eps=1e-5 dt=f32"
    text = build({"x": ("f32", (8, 48)), "g": ("f32", (48,)), "b": ("f32", (48,))}, {"y": ("f32", (8, 48))}, body)
    out, _ = execute(text, {"x": x, "g": g, "b": b}, "vpu.layernorm", vpu_cycles("layernorm", 8, 48))
    x64 = x.astype(np.float64)
    mu, var = x64.mean(1, keepdims=True), x64.var(1, keepdims=True)
    eps = float(np.float32(1e-5))
    np.testing.assert_allclose(out["y"], ((x64 - mu) / np.sqrt(var + eps) * g + b).astype(np.float32), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("op,fn", [("rsum", np.sum), ("rmax", np.max), ("rmean", np.mean)])  # REDUCTIONS
def test_vpu_reductions(op, fn):
    x = rand(16, 32)
    body = f"vpu.{op} dst=sy src=sx rows=16 cols=32 ps=128 dt=f32"
    text = build({"x": ("f32", (16, 32))}, {"y": ("f32", (16,))}, body)
    out, _ = execute(text, {"x": x}, f"vpu.{op}", vpu_cycles(op, 16, 32))
    np.testing.assert_allclose(out["y"], fn(x.astype(np.float64), axis=1).astype(np.float32), rtol=1e-6)


def test_vpu_trans_and_copy():
    x = RNG.integers(-100, 100, (16, 64)).astype(np.int8)
    body = ("vpu.trans dst=sy src=sx rows=16 cols=64 pd=64 ps=64 dt=i8\n"
            "vpu.copy dst=sz src=sx+0x40 rows=2 cols=64 pd=64 ps=128 dt=i8")
    # the transposed tile has 16-byte rows at a 64-byte SRAM pitch: stored row by row (DRAM pitch 16)
    text = build({"x": ("i8", (16, 64))}, {"y": ("i8", (64, 16)), "z": ("i8", (2, 64))}, body,
                 tiles={"y": (64, 64)})
    out, _ = execute(text, {"x": x}, "vpu.trans", vpu_cycles("trans", 16, 64, "i8"))
    np.testing.assert_array_equal(out["y"], x.T)
    np.testing.assert_array_equal(out["z"], x[1:4:2])


def test_vpu_cvt_quantise_dequantise():
    x = rand(4, 64) * 50
    acc = RNG.integers(-2 ** 31, 2 ** 31 - 1, (4, 16)).astype(np.int32)
    body = ("vpu.cvt dst=sq src=sx rows=4 cols=64 pd=64 ps=256 scale=2.0 sdt=f32 dt=i8\n"
            "vpu.cvt dst=sd src=sa rows=4 cols=16 pd=64 ps=64 scale=0.5 sdt=i32 dt=f32\n"
            "vpu.cvt dst=sb src=sx rows=4 cols=64 pd=128 ps=256 scale=1.0 sdt=f32 dt=bf16")
    text = build({"x": ("f32", (4, 64)), "a": ("i32", (4, 16))},
                 {"q": ("i8", (4, 64)), "d": ("f32", (4, 16)), "b": ("bf16", (4, 64))}, body)
    out, _ = execute(text, {"x": x, "a": acc}, "vpu.cvt",
                     vpu_cycles("cvt", 4, 64, "i8") + vpu_cycles("cvt", 4, 16) + vpu_cycles("cvt", 4, 64, "bf16"))
    np.testing.assert_array_equal(out["q"], np.clip(np.rint(x.astype(np.float64) * 2), -128, 127).astype(np.int8))
    np.testing.assert_array_equal(out["d"], (acc.astype(np.float64) * 0.5).astype(np.float32))
    np.testing.assert_array_equal(out["b"], to_bf16(x))


def test_vpu_quant_matches_quantize_int8_bit_for_bit():
    """vpu.quant is QuantizeInt8's contract (s4c/ops/quant.py): f32 division, round half to even,
    symmetric saturation at +-127 (an ordinary cvt saturates at -128), per row and per tensor."""
    from s4c.ops.quant import quantize

    x = rand(4, 64) * 3
    x[0, :4] = [1e6, -1e6, 0.5, -2.5]              # saturation both ways, ties to even
    rs = np.array([1.0, 0.01, 0.037, 1e-3], np.float32)
    s = np.array([0.02], np.float32)
    xb = to_bf16(x)
    body = ("vpu.quant dst=sq src=sx s=srs rows=4 cols=64 pd=64 ps=256 sbc=col dt=f32\n"
            "vpu.quant dst=sp src=sx s=ss rows=4 cols=64 pd=64 ps=256 sbc=scalar dt=f32\n"
            "vpu.quant dst=sb src=sxb s=ss rows=4 cols=64 pd=64 ps=128 sbc=scalar dt=bf16")
    text = build({"x": ("f32", (4, 64)), "xb": ("bf16", (4, 64))},
                 {"q": ("i8", (4, 64)), "p": ("i8", (4, 64)), "b": ("i8", (4, 64))}, body,
                 consts={"rs": ("f32", rs), "s": ("f32", s)})
    passes = M["vpu.passes.div"] + M["vpu.passes.cvt"]
    cyc = 2 * (M["vpu.overhead"] + passes * math.ceil(256 / M["vpu.lanes.f32"])) \
        + M["vpu.overhead"] + passes * math.ceil(256 / M["vpu.lanes.bf16"])
    out, _ = execute(text, {"x": x, "xb": xb}, "vpu.quant", cyc)
    np.testing.assert_array_equal(out["q"], quantize(x, rs[:, None]))
    np.testing.assert_array_equal(out["p"], quantize(x, s[0]))
    np.testing.assert_array_equal(out["b"], quantize(xb, s[0]))
    assert out["q"].min() == -127 and out["q"].max() == 127


@pytest.mark.parametrize("act", ["none", "gelu", "relu"])
def test_vpu_dequant_is_the_linear_int8_epilogue(act):
    """vpu.dequant: f32(acc) * f32(x_scale * w_scale) + bias, activation: bit-exact to LinearInt8's
    reference for none / relu (every step one binary32 rounding); gelu float64-accurate (1 ulp)."""
    from s4c.ops.quant import _linear_int8

    xq = RNG.integers(-127, 128, (4, 96)).astype(np.int8)
    wq = RNG.integers(-127, 128, (64, 96)).astype(np.int8)
    acc = (xq.astype(np.int64) @ wq.T.astype(np.int64)).astype(np.int32)
    ws = (RNG.random(64) * 0.01 + 1e-4).astype(np.float32)
    rs = (RNG.random(4) * 0.05 + 1e-3).astype(np.float32)
    bias = rand(64)
    code = {"none": 0, "gelu": 1, "gelu_tanh": 2, "relu": 3}[act]
    body = (f"vpu.dequant dst=sy src=sa cs=sws rs=srs bias=sbias rows=4 cols=64 pd=256 ps=256 rsc=1 hb=1 act={code} dt=f32\n"
            f"vpu.dequant dst=sz src=sa cs=sws rs=srs bias=sbias rows=4 cols=64 pd=128 ps=256 rsc=1 hb=1 act={code} dt=bf16\n"
            "vpu.dequant dst=sa src=sa cs=sws rs=srs bias=sbias rows=4 cols=64 pd=256 ps=256 dt=f32\n"
            "vpu.copy dst=sw src=sa rows=4 cols=64 pd=256 ps=256 dt=f32")
    text = build({"a": ("i32", (4, 64))}, {"y": ("f32", (4, 64)), "z": ("bf16", (4, 64)), "w": ("f32", (4, 64))},
                 body, consts={"ws": ("f32", ws), "rs": ("f32", rs), "bias": ("f32", bias)})
    # one fused pass, priced at its slowest stage (cvt, mul, add, the activation)
    p = max(M["vpu.passes.cvt"], M["vpu.passes.mul"])
    pa = max(p, M["vpu.passes.add"], M[f"vpu.passes.{act}"] if act != "none" else 0)
    cyc = (M["vpu.overhead"] + pa * 2) + (M["vpu.overhead"] + pa * 1) + (M["vpu.overhead"] + p * 2)
    out, _ = execute(text, {"a": acc}, "vpu.dequant", cyc)
    want = _linear_int8([xq, wq, rs[:, None], ws, bias], {"activation": act})[0]
    if act == "gelu":
        np.testing.assert_allclose(out["y"], want, rtol=3e-7, atol=1e-6)
    else:
        np.testing.assert_array_equal(out["y"], want)
    np.testing.assert_array_equal(out["z"], to_bf16(out["y"].astype(np.float64)) if act != "gelu" else out["z"])
    np.testing.assert_allclose(out["z"], want, rtol=2 ** -8, atol=1e-6)
    np.testing.assert_array_equal(out["w"], acc.astype(np.float32) * ws)   # in place, no row scale / bias


@pytest.mark.parametrize("act", ["none", "gelu", "relu"])
def test_vpu_epilogue_is_bias_add_then_activation(act):
    """vpu.epilogue gives the same bits as vpu.add (bcast=row) then the activation's opcode, in one
    fused pass priced at its slowest stage; bf16 output rounds that result once."""
    x, bias = rand(4, 64), rand(64)
    code = {"none": 0, "gelu": 1, "relu": 3}[act]
    sep = "vpu.add dst=sw a=sa b=sbias rows=4 cols=64 pd=256 pa=256 bcast=row dt=f32\n" + (
        f"vpu.{act} dst=sw src=sw rows=4 cols=64 pd=256 ps=256 dt=f32\n" if act != "none" else "")
    body = (f"vpu.epilogue dst=sy src=sa bias=sbias rows=4 cols=64 pd=256 ps=256 hb=1 act={code} dt=f32\n"
            f"vpu.epilogue dst=sz src=sa bias=sbias rows=4 cols=64 pd=128 ps=256 hb=1 act={code} dt=bf16\n"
            + sep + "vpu.epilogue dst=sa src=sa rows=4 cols=64 pd=256 ps=256 act=3 dt=f32 tdt=bf16\n"
            "vpu.copy dst=sv src=sa rows=4 cols=64 pd=256 ps=256 dt=f32")
    text = build({"a": ("f32", (4, 64))}, {"y": ("f32", (4, 64)), "z": ("bf16", (4, 64)), "w": ("f32", (4, 64)),
                                            "v": ("f32", (4, 64))},
                 body, consts={"bias": ("f32", bias)})
    pa = max(M["vpu.passes.cvt"], M["vpu.passes.add"], M[f"vpu.passes.{act}"] if act != "none" else 0)
    pr = max(M["vpu.passes.cvt"], M["vpu.passes.relu"])
    cyc = (2 * M["vpu.overhead"] + pa * (2 + 1)) + (M["vpu.overhead"] + pr * 1)   # f32: 2 steps of 128 lanes
    out, _ = execute(text, {"a": x}, "vpu.epilogue", cyc)
    np.testing.assert_array_equal(out["y"], out["w"])
    np.testing.assert_array_equal(out["z"], to_bf16(out["y"].astype(np.float64)))
    np.testing.assert_array_equal(out["v"], np.maximum(x, 0))      # in place, no bias


# -- whole-program checks -------------------------------------------------------------------------
REDUCTIONS = ("rsum", "rmax", "rmean")


def test_every_opcode_has_a_hand_written_program():
    import re

    source = open(__file__, encoding="utf-8").read()
    covered = set(re.findall(r"\b(?:dma|spu|vpu|sync)\.[a-z_]+(?==| )", source)) | {"end"}
    covered |= {f"vpu.{op}" for op in list(BINARY) + list(UNARY) + list(REDUCTIONS)}
    assert set(isa.BY_MNEMONIC) <= covered, sorted(set(isa.BY_MNEMONIC) - covered)


@pytest.mark.parametrize("line", [
    "vpu.dequant dst=sy src=sa cs=sws rs=sws bias=sws rows=4 cols=64 pd=256 ps=256 act=9 dt=f32",
    "vpu.epilogue dst=sy src=sa rows=4 cols=64 pd=256 ps=256 act=9 dt=f32"])
def test_gemm_epilogues_refuse_an_unknown_activation(line):
    from s4c.errors import S4CError

    text = build({"a": ("i32" if "dequant" in line else "f32", (4, 64))}, {"y": ("f32", (4, 64))}, line,
                 consts={"ws": ("f32", rand(64))})
    with pytest.raises(S4CError, match="act=9 unknown"):
        execute(text, {"a": np.zeros((4, 64), np.int32 if "dequant" in line else np.float32)})
