"""`s4c calibrate --target c`: measure the C kernels on this machine for the C cost model.

Method: build the kernel library (kernels_build), run on one thread, and for every layout the C target offers time the layout's linear kernel at
out = in = 768, T = 128 tokens on a synthetic weight the layout stores without fill-in (dense: all
nonzero; CSR: random at `density`; BSR r x c: whole random blocks at block density `density`;
N:M: exactly N per group), and for CSR and each BSR shape also on an all-zero weight (no stored
values: what is left is the per-row work, bias and store). A timing is the median of >= `repeats`
runs (and >= `min_time` seconds of runs), best of `rounds` rounds (the machine may be shared).
Then, per layout, the two parameters of the model in s4c/targets/c.py, per token:

    row_ns = (t_empty - call) / T / out             (N:M: CSR's, the same row loop; dense: 0)
    rate   = V / ((t - call) / T - out * row_ns)    (V = stored values, MAC/ns on one core)

`call` is the median time of a 4x4x16 dense call. The int8 Linear (kernels/int8.c) is measured the same
way for its quad-block kernel (`int8-r4`: 4 rows x 4 features, `int8-r1`: 1 x 4: weights of whole
random blocks at `density`) and its column-group kernel (`int8-cols-r4`: 4x1 blocks, `int8-cols-r1`:
unstructured, at `density`), each also on an all-zero weight; the rate counts the stored slots.
The result is a small JSON file (default
$S4C_CACHE/c-costs.json, else ~/.cache/s4c/c-costs.json) that `get_target("c")` reads
(s4c/targets/c.py: the C cost model lives below codegen, its measurement here, beside the kernels).
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from s4c.codegen.c import kernels_build
from s4c.errors import S4CError
from s4c.sparse import BSRLayout, CSRLayout, DenseLayout, Layout, NMLayout
from s4c.targets.c import CALIBRATION_VERSION, CTarget, calibration_path


def calibrate_c(out: str | os.PathLike | None = None, *, cc: str | None = None, cflags: str | None = None,
                tokens: int = 128, out_features: int = 768, in_features: int = 768, density: float = 0.1,
                repeats: int = 5, min_time: float = 0.05, rounds: int = 2, layouts: list[Layout] | None = None,
                progress=None) -> tuple[Path, dict]:
    """Measure, write the calibration file (atomically) and return (its path, its JSON)."""
    kb = kernels_build
    path = Path(out) if out is not None else calibration_path()
    flags = tuple(cflags.split()) if cflags else kb.FAST_CFLAGS
    try:
        lib = kb.load(cc=cc, cflags=flags)
    except (RuntimeError, OSError) as e:
        raise S4CError(f"calibrate: cannot build the C kernels: {' '.join(str(e).split())[:500]}") from None
    lib.s4c_set_num_threads(1)
    rng = np.random.default_rng(0)
    layouts = list(layouts if layouts is not None else CTarget.supported_layouts)
    say = progress or (lambda text: None)
    shape = (out_features, in_features)

    cases = {"call": _Case(lib, DenseLayout(), rng.standard_normal((4, 4)).astype(np.float32), 16)}
    for layout in layouts:
        cases[str(layout)] = _Case(lib, layout, _weight(rng, layout, shape, density), tokens)
        if isinstance(layout, (CSRLayout, BSRLayout)):
            cases[f"{layout}/empty"] = _Case(lib, layout, np.zeros(shape, np.float32), tokens)
    for rows in (4, 1):
        blocks = BSRLayout(rows, 4)
        cases[f"int8-r{rows}"] = _Int8Case(lib, rows, _weight(rng, blocks, shape, density), tokens)
        cases[f"int8-r{rows}/empty"] = _Int8Case(lib, rows, np.zeros(shape, np.float32), tokens)
        single = BSRLayout(4, 1) if rows == 4 else CSRLayout()
        cases[f"int8-cols-r{rows}"] = _Int8Case(lib, rows, _weight(rng, single, shape, density), tokens, cols=True)
        cases[f"int8-cols-r{rows}/empty"] = _Int8Case(lib, rows, np.zeros(shape, np.float32), tokens, cols=True)
    best: dict[str, float] = {}
    for _ in range(max(1, rounds)):
        for key, case in cases.items():
            best[key] = min(best.get(key, np.inf), _median_time(case, repeats, min_time))
    call_s = best["call"]

    def per_token_ns(key: str) -> float:
        return max(best[key] - call_s, 0.0) / tokens * 1e9

    entries, measurements = {}, []
    for layout in layouts:
        name = str(layout)
        if isinstance(layout, DenseLayout):
            row_ns = 0.0
        elif isinstance(layout, NMLayout):
            row_ns = entries["csr"]["row_ns"] if "csr" in entries else 0.0
        else:
            row_ns = per_token_ns(f"{name}/empty") / out_features
        values = cases[name].values
        rate = values / max(per_token_ns(name) - out_features * row_ns, 1e-9)
        entries[name] = {"mac_per_ns": rate, "row_ns": row_ns}
        measurements.append({"layout": name, "out": out_features, "in": in_features, "tokens": tokens,
                             "stored_values": values, "seconds": best[name],
                             "empty_seconds": best.get(f"{name}/empty")})
        say(f"{name:<8} {rate:6.1f} MAC/ns/core  row {row_ns:.4f} ns/token")
    int8 = {}
    for name in ("int8-r4", "int8-r1", "int8-cols-r4", "int8-cols-r1"):
        row_ns = per_token_ns(f"{name}/empty") / out_features
        values = cases[name].values
        rate = values / max(per_token_ns(name) - out_features * row_ns, 1e-9)
        int8[name] = {"mac_per_ns": rate, "row_ns": row_ns}
        measurements.append({"layout": name, "out": out_features, "in": in_features, "tokens": tokens,
                             "stored_values": values, "seconds": best[name],
                             "empty_seconds": best[f"{name}/empty"], "isa": cases[name].isa})
        say(f"{name:<8} {rate:6.1f} MAC/ns/core  row {row_ns:.4f} ns/token ({cases[name].isa})")

    data = {
        "version": CALIBRATION_VERSION,
        "target": "c",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "processor": platform.processor() or "?",
                 "cpus": os.cpu_count(), "node": platform.node()},
        "cc": kb.find_cc(cc),
        "cflags": " ".join(flags),
        "threads": 1,
        "method": (f"median of >= {repeats} runs (>= {min_time}s), best of {rounds} rounds; {out_features}x"
                   f"{in_features}, T={tokens}, density {density} (N:M: N/M) and an all-zero weight (row cost)"),
        "call_us": call_s * 1e6,
        "layouts": entries,
        "int8": int8,
        "measurements": measurements,
    }
    _write_atomic(path, json.dumps(data, indent=1) + "\n")
    return path, data


def _weight(rng, layout: Layout, shape: tuple[int, int], density: float) -> np.ndarray:
    """A random weight that `layout` stores with no fill-in."""
    out_dim, in_dim = shape
    w = rng.standard_normal(shape).astype(np.float32)
    w[w == 0] = 1.0
    if isinstance(layout, DenseLayout):
        return w
    if isinstance(layout, CSRLayout):
        return w * (rng.random(w.shape) < density)
    if isinstance(layout, BSRLayout):
        r, c = layout.block_shape
        kept = rng.random((-(-out_dim // r), -(-in_dim // c))) < density
        return w * np.kron(kept, np.ones((r, c), bool))[:out_dim, :in_dim]
    if isinstance(layout, NMLayout):
        groups = -(-in_dim // layout.m)
        order = np.argsort(rng.random((out_dim, groups, layout.m)), axis=2)[:, :, :layout.n]
        mask = np.zeros((out_dim, groups, layout.m), bool)
        np.put_along_axis(mask, order, True, axis=2)
        return w * mask.reshape(out_dim, -1)[:, :in_dim]
    raise S4CError(f"calibrate: no kernel for layout {layout}")


def _aligned(a: np.ndarray, align: int = 64) -> np.ndarray:
    """A copy of `a` starting on an `align`-byte boundary (what the C backend allocates)."""
    buf = np.empty(a.nbytes + align, np.uint8)
    offset = (-buf.ctypes.data) % align
    out = buf[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


class _Case:
    """One kernel call with its (packed, aligned) operands."""

    def __init__(self, lib, layout: Layout, weight: np.ndarray, tokens: int):
        out_dim, in_dim = weight.shape
        rng = np.random.default_rng(1)
        self.x = _aligned(rng.standard_normal((in_dim, tokens)).astype(np.float32))
        self.y = _aligned(np.zeros((out_dim, tokens), np.float32))
        self.bias = rng.standard_normal(out_dim).astype(np.float32)
        tensor = layout.pack(weight)
        self.values = tensor.stored_values
        arrays = {name: _aligned(np.ascontiguousarray(a)) for name, a in tensor.arrays.items()}
        wide = "u16" if in_dim <= 65535 else "i32"
        if "indices" in arrays and not isinstance(layout, NMLayout):  # the kernels take u16 / i32
            arrays["indices"] = _aligned(arrays["indices"].astype(np.uint16 if wide == "u16" else np.int32))
        self.arrays = arrays
        p = lambda a: a.ctypes.data  # noqa: E731
        x, y, b = p(self.x), p(self.y), p(self.bias)
        if isinstance(layout, DenseLayout):
            self.call = lambda: lib.s4c_linear_dense(out_dim, in_dim, tokens, p(arrays["values"]), x, b, 0, None, y)
        elif isinstance(layout, CSRLayout):
            fn = getattr(lib, f"s4c_linear_csr_{wide}")
            self.call = lambda: fn(out_dim, in_dim, tokens, p(arrays["indptr"]), p(arrays["indices"]),
                                   p(arrays["values"]), x, b, 0, None, y)
        elif isinstance(layout, BSRLayout):
            fn = getattr(lib, f"s4c_linear_bsr_{wide}")
            r, c = layout.block_shape
            self.call = lambda: fn(out_dim, in_dim, tokens, r, c, p(arrays["indptr"]), p(arrays["indices"]),
                                   p(arrays["values"]), x, b, 0, None, y)
        else:
            self.call = lambda: lib.s4c_linear_nm(out_dim, in_dim, tokens, layout.n, layout.m, p(arrays["values"]),
                                                  p(arrays["indices"]), x, b, 0, None, y)
        status = self.call()
        if status != 0:
            raise S4CError(f"calibrate: the {layout} kernel returned {status} for {out_dim}x{in_dim}, T={tokens}")
        expected = weight @ self.x + self.bias[:, None]
        if not np.allclose(self.y, expected, rtol=1e-3, atol=1e-3):
            raise S4CError(f"calibrate: the {layout} kernel computed a wrong result for {out_dim}x{in_dim}")


class _Int8Case:
    """One s4c_linear_i8 call (`weight` quantised per row, stored as quad blocks of `rows` rows) or,
    with `cols`, one s4c_linear_i8_cols call (column groups of `rows` rows)."""

    def __init__(self, lib, rows: int, weight: np.ndarray, tokens: int, cols: bool = False):
        from s4c.codegen.c.emit_int8 import column_groups, padded_tokens, quad_blocks
        from s4c.ops.quant import int_matmul, quantize_weight_per_channel

        P, I = ctypes.c_void_p, ctypes.c_int
        for name in ("s4c_linear_i8", "s4c_linear_i8_cols"):
            getattr(lib, name).restype = I
            getattr(lib, name).argtypes = [I, I, I, I, P, P, P, P, P, P, I, P, P, I, P]
        lib.s4c_i8_isa.restype = ctypes.c_char_p
        self.isa = lib.s4c_i8_isa().decode()
        out_dim, in_dim = weight.shape
        rng = np.random.default_rng(1)
        w_q, w_s = quantize_weight_per_channel(weight)
        packed = column_groups(w_q, rows) if cols else quad_blocks(w_q, rows, False)
        self.values = int(packed["vals"].size)
        self.arrays = {k: _aligned(a) for k, a in packed.items()}
        x_q = rng.integers(-127, 128, (tokens, in_dim)).astype(np.int8)
        if cols:
            x1 = np.zeros((in_dim, padded_tokens(tokens)), np.int8)
            x1[:, :tokens] = x_q.T
            self.x = _aligned(x1)
        else:
            x4 = np.zeros((-(-in_dim // 4), padded_tokens(tokens), 4), np.int8)
            x4[:, :tokens, :] = np.pad(x_q, ((0, 0), (0, x4.shape[0] * 4 - in_dim))).reshape(tokens, -1, 4).transpose(1, 0, 2)
            self.x = _aligned(x4)
        self.scales = _aligned(w_s.astype(np.float32))
        self.xs = _aligned(np.full(1, 0.01, np.float32))
        self.y = _aligned(np.zeros((out_dim, tokens), np.float32))
        p = lambda a: a.ctypes.data  # noqa: E731
        a = self.arrays
        if cols:
            self.call = lambda: lib.s4c_linear_i8_cols(out_dim, in_dim, tokens, rows, p(a["gptr"]), p(a["cols"]),
                                                       p(a["vals"]), p(a["comp"]), p(self.x), p(self.xs), 0,
                                                       p(self.scales), None, 0, p(self.y))
        else:
            self.call = lambda: lib.s4c_linear_i8(out_dim, in_dim, tokens, rows, p(a["indptr"]), p(a["qidx"]),
                                                  p(a["vals"]), p(a["comp"]), p(self.x), p(self.xs), 0,
                                                  p(self.scales), None, 0, p(self.y))
        status = self.call()
        if status != 0:
            raise S4CError(f"calibrate: the int8 kernel returned {status} for {out_dim}x{in_dim}, T={tokens}")
        expected = (int_matmul(x_q, w_q).astype(np.float32) * (np.float32(0.01) * w_s)).T
        if not np.array_equal(self.y, expected):
            raise S4CError(f"calibrate: the int8 kernel computed a wrong result for {out_dim}x{in_dim}")


def _median_time(case: _Case, repeats: int, min_time: float) -> float:
    case.call()  # warm-up
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_time and len(times) < 1000):
        t0 = time.perf_counter()
        case.call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise S4CError(f"calibrate: cannot write {path}: {e.strerror}") from None
