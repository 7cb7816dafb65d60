"""The C target: every layout the C kernels implement, and a cost model for them that is either
calibrated on this machine (`s4c calibrate --target c`) or a conservative built-in default.

Model of one Linear y[T, out] = x[T, in] @ W^T with W stored in layout L:

    seconds = call_s + T * (V / rate[L] + out * row_ns[L]) * 1e-9 / threads

    V       stored value slots of W in L (nnz for CSR, kept blocks * r*c for BSR: fill-in counts,
            out * ceil(in/M) * N for N:M, out*in dense): the multiply-adds per token
    rate    MAC/ns on one core per stored value, index handling included
    row_ns  ns per output row per token (row set-up, bias, epilogue, store)
    call_s  fixed cost of one kernel call

Built-in defaults (no calibration file).  What matters for the choice is their ratios, which
follow benchmarks/bench_kernels.py (1 thread, T = 128, BERT-base shapes, gcc 12 -O3
-march=native, Zen 4 with AVX-512; codegen/c/kernels/README.md): dense 48-54 MAC/ns, BSR r x 1
44-48 (in = 3072: 36-41), 4x4 / 8x8 38-43, CSR and BSR 1 x c 25-26 (in = 3072: 21), N:M 24-26 at
1:8..1:32 (2:4 on large shapes ~15).  The absolute values are scaled down by ~0.78 (a loaded,
shared machine; the calibration file replaces them with this machine's):

    dense                       40 MAC/ns   register-tiled GEMM (6 rows x 16 tokens)
    BSR r x c, r%4 == 0, c <= 8 37 MAC/ns   4-row register tile: each X vector feeds 4 FMAs
    CSR, BSR 1 x c              22 MAC/ns   one row at a time: one FMA per X vector loaded
                                            (bound by L2 -> L1 traffic on X)
    N:M                         24 MAC/ns   fixed-length rows, 1-byte offsets, no row pointers
    minus 0.005 ns per stored index per token (CSR: one per value, BSR: one per block, N:M: one
    per slot), so:  CSR ~19.8, N:M ~21.4, bsr4x1 ~35.4, bsr16x1 ~36.7, bsr1x4 ~21.4 MAC/ns;
    row_ns 0.08 for the sparse kernels, 0 for dense (measured: 0.07-0.1); call_s 2 us.

These make dense the choice for dense and lightly (<= 30%) unstructured-sparse weights: CSR only
beats dense below ~49% density and r x 1 blocks of such weights are ~all kept; 4x1-block-pruned
weights choose an r x 1 BSR, 90% unstructured ones CSR (4 x 1 blocks of those keep ~34% of the
slots).

int8 (LinearInt8, `--precision int8`; codegen/c/emit_int8.py, kernels/int8.c): two kernels, both on
the 4-way int8 dot product, picked by the weight's layout (`int8_kernel`):

    quads   dense, BSR r x c with c % 4 == 0 (1x4, 1x8, 4x4, 8x8): quad blocks of R output rows x 4
            aligned input features holding a nonzero (R = 4 when r % 4 == 0 or dense, else 1);
            V = kept quad blocks * 4R (zeros inside them included)
    cols    CSR, N:M, r x 1 BSR: column groups, each 4 of the nonzero columns of R rows (R = 4 for
            r x 1 blocks of r % 4 == 0, else 1), gathered and interleaved from the activations at
            run time (no fill-in); V = (nonzero columns of the R-row block rows, padded to 4) * R,
            estimated as nnz (blocks for r x 1) + 2 padded columns per block row

with one rate per kernel and R (`int8-r4`, `int8-r1` quads; `int8-cols-r4`, `int8-cols-r1`) and a
row cost for the float epilogue (convert, scale, bias). Defaults, measured on an AVX2-only machine
(vpmaddubsw path) under load:

    int8-r4         50 MAC/ns    int8-cols-r4    44 MAC/ns
    int8-r1         50 MAC/ns    int8-cols-r1    24 MAC/ns    row_ns 0.4

(the fp32 kernels measured alongside: dense 41, bsr4x1 40, csr 20 MAC/ns; at 768 x 768, T = 128, 10%
density, int8 4x1 / csr run as fast as fp32 bsr4x1 / csr on AVX2, 1x4 / 4x4 blocks 1.1-2x faster).

Calibration (codegen/c/calibrate.py) measures `rate` and `row_ns` for each layout, the two int8 block
kinds and `call_s`; the file lives at $S4C_CACHE/c-costs.json (default ~/.cache/s4c/c-costs.json).
Layouts it lacks keep their defaults.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from s4c.errors import TargetError
from s4c.sparse import NM_MAX_M, SUPPORTED_LAYOUTS, BSRLayout, CSRLayout, DenseLayout, Layout, NMLayout, parse_layout
from s4c.targets.base import LayoutWork, LinearShapes, Target, as_layout

CALIBRATION_VERSION = 1
CALIBRATION_FILE = "c-costs.json"

# -- built-in defaults (see the module docstring) ------------------------------------------------
DENSE_RATE = 40.0   # MAC/ns/core
TILE_RATE = 37.0    # BSR with a 4-row register tile
ROW_RATE = 22.0     # row-at-a-time kernels (CSR, BSR 1 x c)
NM_RATE = 24.0      # N:M
INDEX_NS = 0.005    # ns per stored index per token
SPARSE_ROW_NS = 0.08  # ns per output row per token, sparse kernels
CALL_S = 2e-6       # seconds per kernel call
INT8_RATES = {"int8-r4": 50.0, "int8-r1": 50.0,  # MAC/ns/core per stored value slot
              "int8-cols-r4": 44.0, "int8-cols-r1": 24.0}
INT8_COLS_MAX_IN = 65535  # column groups index columns as uint16; wider weights take quad blocks
INT8_ROW_NS = 0.4   # ns per output row per token, int8 epilogue


@dataclass(frozen=True)
class KernelRate:
    """How fast the kernel for one layout runs on one core."""

    rate: float    # MAC/ns per stored value slot (index handling included)
    row_ns: float  # ns per output row per token

    def __post_init__(self):
        if not (math.isfinite(self.rate) and self.rate > 0 and math.isfinite(self.row_ns) and self.row_ns >= 0):
            raise ValueError(f"rate must be > 0 and row_ns >= 0, got {self.rate!r}, {self.row_ns!r}")


def default_rate(layout: Layout) -> KernelRate:
    """The built-in (uncalibrated) rate of the C kernel for `layout`."""
    if isinstance(layout, DenseLayout):
        return KernelRate(DENSE_RATE, 0.0)
    if isinstance(layout, CSRLayout):
        value_rate, values_per_index = ROW_RATE, 1
    elif isinstance(layout, BSRLayout):
        r, c = layout.block_shape
        value_rate = TILE_RATE if r % 4 == 0 and c <= 8 else ROW_RATE
        values_per_index = r * c
    elif isinstance(layout, NMLayout):
        value_rate, values_per_index = NM_RATE, 1
    else:
        raise TargetError(f"no C cost model for layout {layout}")
    return KernelRate(1.0 / (1.0 / value_rate + INDEX_NS / values_per_index), SPARSE_ROW_NS)


def int8_kernel(layout: Layout, in_features: int = 0) -> tuple[str, int]:
    """(kernel, R) of the C int8 Linear for a weight stored in `layout` (module docstring): "quads"
    or "cols", and the output rows R (4 or 1) that share each activation load."""
    if isinstance(layout, DenseLayout):
        return "quads", 4
    if isinstance(layout, BSRLayout):
        r, c = layout.block_shape
        if c % 4 == 0 or in_features > INT8_COLS_MAX_IN:
            return "quads", 4 if r % 4 == 0 else 1
        return "cols", 4 if r % 4 == 0 and c == 1 else 1
    if in_features > INT8_COLS_MAX_IN:
        return "quads", 1
    return "cols", 1


def int8_quad_rows(layout: Layout) -> int:
    """R of the C int8 kernel for a weight stored in `layout`."""
    return int8_kernel(layout)[1]


def int8_slots(layout: Layout, report) -> int:
    """The value slots (multiply-adds per token) the C int8 kernel stores for a weight (`report`, a
    SparsityReport) in `layout`: quad blocks holding a nonzero (all when dense), or column groups."""
    out_dim, in_dim = report.shape
    kind, r = int8_kernel(layout, in_dim)
    if isinstance(layout, DenseLayout):
        return math.ceil(out_dim / r) * math.ceil(in_dim / 4) * r * 4
    if kind == "quads":
        return report.block((r, 4)).kept_blocks * r * 4
    columns = report.block((4, 1)).kept_blocks if r == 4 else report.nnz
    return (columns + 2 * math.ceil(out_dim / r)) * r


def default_int8_rates() -> dict[str, KernelRate]:
    return {name: KernelRate(rate, INT8_ROW_NS) for name, rate in INT8_RATES.items()}


@dataclass(frozen=True)
class CCostParams:
    """Per-layout kernel rates (fp32), the int8 kernel's rates per quad-block rows (`int8-r4`,
    `int8-r1`) and the per-call cost; `source` says where they come from."""

    rates: Mapping[str, KernelRate]
    call_s: float
    source: str = "built-in defaults"
    calibrated: frozenset = frozenset()  # layout (and int8-rN) names whose rate was measured
    int8: Mapping[str, KernelRate] = field(default_factory=default_int8_rates)

    @classmethod
    def defaults(cls) -> "CCostParams":
        return cls({str(layout): default_rate(layout) for layout in SUPPORTED_LAYOUTS}, CALL_S)

    def rate(self, layout: Layout) -> KernelRate:
        if str(layout) not in self.rates and isinstance(layout, NMLayout):
            # An unlisted N:M (nm1:20) runs the kernel's run-time-N, M instance of the same loop:
            # priced as the named pattern nearest in N, then M.
            named = [parse_layout(name) for name in self.rates if name.startswith("nm")]
            layout = min(named, key=lambda p: (abs(p.n - layout.n), abs(p.m - layout.m)))
        return self.rates[str(layout)]

    def int8_rate(self, layout: Layout, in_features: int = 0) -> KernelRate:
        kind, r = int8_kernel(layout, in_features)
        return self.int8[f"int8-r{r}" if kind == "quads" else f"int8-cols-r{r}"]

    # -- the calibration file ----------------------------------------------------------------------
    @classmethod
    def from_json(cls, data, source: str) -> "CCostParams":
        """Parameters from a calibration file's JSON (layouts it lacks keep the defaults)."""
        if not isinstance(data, dict) or data.get("version") != CALIBRATION_VERSION or data.get("target") != "c":
            raise ValueError(f"not a version-{CALIBRATION_VERSION} C calibration")
        base = cls.defaults()
        rates = dict(base.rates)
        measured = set()
        layouts = data.get("layouts")
        if not isinstance(layouts, dict):
            raise ValueError("'layouts' must be an object")
        for name, entry in layouts.items():
            if name not in rates:
                raise ValueError(f"unknown layout {name!r}")
            rates[name] = KernelRate(float(entry["mac_per_ns"]), float(entry["row_ns"]))
            measured.add(name)
        int8 = dict(base.int8)
        for name, entry in (data.get("int8") or {}).items():  # optional: files from before int8 lack it
            if name not in int8:
                raise ValueError(f"unknown int8 kernel {name!r}")
            int8[name] = KernelRate(float(entry["mac_per_ns"]), float(entry["row_ns"]))
            measured.add(name)
        call_s = float(data.get("call_us", base.call_s * 1e6)) * 1e-6
        if not (math.isfinite(call_s) and call_s >= 0):
            raise ValueError(f"call_us must be >= 0, got {data.get('call_us')!r}")
        return cls(rates, call_s, source, frozenset(measured), int8)


def cache_dir() -> Path:
    """Where s4c keeps calibration files: $S4C_CACHE, else ~/.cache/s4c."""
    env = os.environ.get("S4C_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "s4c"


def calibration_path() -> Path:
    return cache_dir() / CALIBRATION_FILE


def load_params(path: str | os.PathLike | None = None) -> CCostParams:
    """The calibrated parameters at `path` (default: calibration_path()), or the built-in
    defaults when there is no such file. A file that exists but is unreadable is a TargetError."""
    path = Path(path) if path is not None else calibration_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CCostParams.defaults()
    except OSError as e:
        raise TargetError(f"cannot read C calibration {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
        return CCostParams.from_json(data, f"calibrated ({path}, {data.get('created', '?')})")
    except (ValueError, KeyError, TypeError) as e:
        raise TargetError(f"C calibration {path} is invalid ({e}); rerun `s4c calibrate --target c` "
                          f"or delete the file") from None


class CTarget(Target):
    """Layout selection for the C backend."""

    name = "c"
    supported_layouts = SUPPORTED_LAYOUTS  # the kernels implement every s4c.sparse layout
    nm_max_m = NM_MAX_M  # s4c_linear_nm takes N and M at run time

    def __init__(self, params: CCostParams | None = None, threads: int = 1):
        if threads < 1:
            raise TargetError(f"target c: threads must be >= 1, not {threads}")
        self.params = params if params is not None else CCostParams.defaults()
        self.threads = int(threads)

    @classmethod
    def load(cls, calibration: str | os.PathLike | None = None, threads: int = 1) -> "CTarget":
        """A C target with the calibration file's rates (or the defaults when there is none)."""
        return cls(load_params(calibration), threads)

    def describe(self) -> str:
        return (f"c: call + T*(stored values / rate + out rows * row_ns) / threads; {self.params.source}; "
                f"threads={self.threads}")

    def cost(self, op: str, layout: Layout | str, shapes: LinearShapes) -> float:
        """Target.cost; LinearInt8 is priced by the int8 kernel's quad blocks (int8_slots)."""
        seconds = super().cost(op, layout, shapes)  # validates op, layout and N:M compliance
        if op != "LinearInt8":
            return seconds
        layout = as_layout(layout)
        k = self.params.int8_rate(layout, shapes.in_features)
        per_token_ns = int8_slots(layout, shapes.report) / k.rate + shapes.out_features * k.row_ns
        return self.params.call_s + shapes.tokens * per_token_ns * 1e-9 / self.threads

    def linear_cost(self, work: LayoutWork, shapes: LinearShapes) -> float:
        k = self.params.rate(work.layout)
        per_token_ns = work.values / k.rate + work.rows * k.row_ns
        return self.params.call_s + shapes.tokens * per_token_ns * 1e-9 / self.threads
