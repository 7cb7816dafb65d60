"""S4 machine parameters: one target description (s4c/s4/s4v1.json) holds every number the
interpreter, the cycle model and the estimator use.

    m = load_machine()                    # the built-in "s4v1" target (or a name / a .json path)
    m["spu.macs_per_cycle.nm.i8"]         # flat dotted keys; ints stay ints
    m.clock_hz, m.n_cores, m.sram_bytes, m.dram_bytes, m.align
    m.spu_rate("nm", dt), m.vpu_lanes(dt), m.vpu_passes("gelu")
    m2 = m.replace({"dma.bytes_per_cycle": 16})   # a new, validated Machine
    m.to_nested()                         # the JSON structure (for writing a re-calibrated file)

The file is nested JSON; keys starting with "_" are documentation and ignored. Programs embed
the full flat parameter set they were built for (program.py). An invalid description raises
`TargetError` (the program loader turns it into `S4ProgramError`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import MappingProxyType

from s4c.errors import TargetError
from s4c.s4 import dtypes

_HERE = Path(__file__).resolve().parent
DEFAULT_TARGET = "s4v1"
SPU_FORMATS = ("dense", "nm", "bsr")
SPU_DTYPES = (dtypes.F32, dtypes.BF16, dtypes.I8)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

# key -> (type, min, max). vpu.passes.<op> keys are added from the opcode table (isa.VPU_OPS).
_I, _F = int, float
_SCHEMA = {
    "clock_hz": (_F, 1e6, 1e11),
    "n_cores": (_I, 1, 64),
    "dram_bytes": (_I, 1 << 16, 1 << 44),
    "sram_bytes": (_I, 4096, (1 << 32) - 1),
    "align": (_I, 1, 4096),
    "sync.local_sems": (_I, 1, 32767),
    "sync.global_sems": (_I, 1, 32767),
    "sync.signal_cycles": (_I, 0, 1 << 20),
    "sync.wait_cycles": (_I, 0, 1 << 20),
    "sync.local_latency": (_I, 0, 1 << 20),
    "sync.global_latency": (_I, 0, 1 << 20),
    "dma.overhead": (_I, 0, 1 << 20),
    "dma.latency": (_I, 0, 1 << 20),
    "dma.bytes_per_cycle": (_F, 1e-3, 1e6),
    "dma.burst_bytes": (_I, 1, 1 << 16),
    "dma.gather_row_cycles": (_I, 0, 1 << 20),
    "spu.overhead": (_I, 0, 1 << 20),
    "spu.bsr_full_rate_block": (_I, 1, 1024),
    "vpu.overhead": (_I, 0, 1 << 20),
}
# What a whole chip may add up to: a program's loader (program.py) and the interpreter allocate
# every core's SRAM and its race-check blocks (40 bytes each) on the host, so a machine section
# asking for more is refused when it is read, before anything is allocated.
MAX_CHIP_SRAM_BYTES = 1 << 32         # n_cores x sram_bytes
MAX_CHIP_SRAM_BLOCKS = 1 << 24        # n_cores x sram_bytes / align
for _fmt in SPU_FORMATS:
    for _dt in SPU_DTYPES:
        _SCHEMA[f"spu.macs_per_cycle.{_fmt}.{dtypes.name(_dt)}"] = (_F, 1e-3, 1e9)
for _dt in dtypes.NAMES.values():
    _SCHEMA[f"vpu.lanes.{_dt}"] = (_I, 1, 1 << 20)


# What every parameter means (docs/isa.md's parameter table is generated from this).
# "assumed": chosen a priori (public figure or engineering guess); "fitted": calibrated through the
# lowering on the SparseBERT 1x / 8x points (benchmarks/s4_calibration.py); "derived": a fixed ratio.
PARAM_DOCS = {
    "clock_hz": ("assumed", "core clock; only MACs/cycle x clock matters for the calibration"),
    "n_cores": ("public", "cores per chip (Antoum: 4)"),
    "dram_bytes": ("public", "device LPDDR4X capacity (S4 card: 20 GiB); a program's dram_size must fit"),
    "sram_bytes": ("assumed", "SRAM scratchpad per core"),
    "align": ("assumed", "SRAM address / row-pitch alignment and race-check block size, bytes"),
    "sync.local_sems": ("assumed", "semaphores per core (l0..)"),
    "sync.global_sems": ("assumed", "chip-wide semaphores (g0..)"),
    "sync.signal_cycles": ("assumed", "cycles a sync.signal occupies its unit"),
    "sync.wait_cycles": ("assumed", "cycles a sync.wait occupies its unit once satisfied"),
    "sync.local_latency": ("assumed", "signal-to-visible delay of a local semaphore"),
    "sync.global_latency": ("assumed", "signal-to-visible delay of a global (cross-core) semaphore"),
    "dma.overhead": ("assumed", "issue cost of one DMA instruction"),
    "dma.latency": ("assumed", "DRAM access latency paid once per DMA instruction"),
    "dma.bytes_per_cycle": ("assumed", "DRAM bandwidth per core's DMA engine (x4 cores = chip bandwidth)"),
    "dma.burst_bytes": ("assumed", "DRAM burst: every row moves a whole number of bursts"),
    "dma.gather_row_cycles": ("assumed", "extra cycles per gathered row (random access)"),
    "spu.overhead": ("assumed", "issue + pipeline fill/drain of one SPU instruction"),
    "spu.bsr_full_rate_block": ("assumed", "BSR blocks with fewer elements run at r*c/this of the BSR rate"),
    "spu.macs_per_cycle.dense.i8": ("fitted", "spu.mm int8 MACs/cycle (fixed by SparseBERT 1x, through the lowering)"),
    "spu.macs_per_cycle.nm.i8": ("fitted", "spu.nm int8 MACs/cycle, stored slots only (fixed by SparseBERT 8x)"),
    "spu.macs_per_cycle.bsr.i8": ("derived", "spu.bsr int8 MACs/cycle = the dense rate (blocks fed to the dense array)"),
    "vpu.overhead": ("assumed", "issue cost of one VPU instruction"),
}
for _fmt in SPU_FORMATS:
    PARAM_DOCS.setdefault(f"spu.macs_per_cycle.{_fmt}.bf16", ("derived", f"= {_fmt}.i8 / 2 (bf16 MACs are 2x int8)"))
    PARAM_DOCS.setdefault(f"spu.macs_per_cycle.{_fmt}.f32", ("derived", f"= {_fmt}.i8 / 8 (fp32 is emulated)"))
for _dt in dtypes.NAMES.values():
    PARAM_DOCS[f"vpu.lanes.{_dt}"] = ("assumed", f"VPU elements per cycle for {_dt}")
VPU_PASSES_DOC = ("assumed", "passes over the data the VPU needs for this op (cost multiplier)")


def _schema() -> dict:
    from s4c.s4.isa import VPU_OPS  # late import: isa imports the op modules, not machine

    schema = dict(_SCHEMA)
    for op in VPU_OPS:
        schema[f"vpu.passes.{op}"] = (_I, 1, 1 << 10)
    return schema


class Machine:
    """A validated, immutable set of machine parameters (flat dotted keys)."""

    __slots__ = ("name", "params")

    def __init__(self, name: str, params: dict):
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise TargetError(f"machine name {name!r} must match {_NAME_RE.pattern}")
        schema = _schema()
        missing = sorted(set(schema) - set(params))
        unknown = sorted(set(params) - set(schema))
        if missing:
            raise TargetError(f"machine {name}: missing parameter(s) {', '.join(missing[:5])}")
        if unknown:
            raise TargetError(f"machine {name}: unknown parameter(s) {', '.join(unknown[:5])}")
        clean = {}
        for key in sorted(schema):
            typ, lo, hi = schema[key]
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TargetError(f"machine {name}: {key} must be a number, not {value!r}")
            if not math.isfinite(value) or not lo <= value <= hi:
                raise TargetError(f"machine {name}: {key}={value!r} outside [{lo}, {hi}]")
            if typ is int:
                if value != int(value):
                    raise TargetError(f"machine {name}: {key}={value!r} must be an integer")
                value = int(value)
            else:
                value = float(value)
            clean[key] = value
        if clean["align"] & (clean["align"] - 1):
            raise TargetError(f"machine {name}: align={clean['align']} must be a power of two")
        if clean["sram_bytes"] % clean["align"]:
            raise TargetError(f"machine {name}: sram_bytes must be a multiple of align")
        chip_sram = clean["n_cores"] * clean["sram_bytes"]
        if chip_sram > MAX_CHIP_SRAM_BYTES:
            raise TargetError(f"machine {name}: n_cores x sram_bytes = {clean['n_cores']} x {clean['sram_bytes']} "
                              f"= {chip_sram} bytes of SRAM, more than the {MAX_CHIP_SRAM_BYTES} s4c can model")
        if chip_sram // clean["align"] > MAX_CHIP_SRAM_BLOCKS:
            raise TargetError(f"machine {name}: n_cores x sram_bytes / align = {chip_sram // clean['align']} SRAM "
                              f"blocks, more than the {MAX_CHIP_SRAM_BLOCKS} s4c can model (raise align)")
        self.name = name
        self.params = MappingProxyType(clean)

    # -- access -------------------------------------------------------------------------------
    def __getitem__(self, key: str):
        return self.params[key]

    def __eq__(self, other):
        return isinstance(other, Machine) and self.name == other.name and dict(self.params) == dict(other.params)

    def __hash__(self):
        return hash((self.name, tuple(sorted(self.params.items()))))

    def __repr__(self):
        return f"Machine({self.name!r}, {len(self.params)} params)"

    @property
    def clock_hz(self) -> float:
        return self.params["clock_hz"]

    @property
    def n_cores(self) -> int:
        return self.params["n_cores"]

    @property
    def sram_bytes(self) -> int:
        return self.params["sram_bytes"]

    @property
    def dram_bytes(self) -> int:
        return self.params["dram_bytes"]

    @property
    def align(self) -> int:
        return self.params["align"]

    def spu_rate(self, fmt: str, dt: int) -> float:
        """SPU multiply-accumulates per cycle for a weight format ("dense"/"nm"/"bsr") and dtype."""
        return self.params[f"spu.macs_per_cycle.{fmt}.{dtypes.name(dt)}"]

    def vpu_lanes(self, dt: int) -> int:
        return self.params[f"vpu.lanes.{dtypes.name(dt)}"]

    def vpu_passes(self, op: str) -> int:
        return self.params[f"vpu.passes.{op}"]

    # -- derive / serialise -------------------------------------------------------------------
    def replace(self, overrides: dict, name: str | None = None) -> "Machine":
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            raise TargetError(f"machine {self.name}: unknown parameter(s) {', '.join(unknown[:5])}")
        return Machine(name or self.name, {**self.params, **overrides})

    def to_nested(self) -> dict:
        out: dict = {"name": self.name}
        for key, value in self.params.items():
            node = out
            *path, leaf = key.split(".")
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out

    @classmethod
    def from_nested(cls, data) -> "Machine":
        if not isinstance(data, dict):
            raise TargetError("a target description must be a JSON object")
        name = data.get("name")
        flat: dict = {}

        def walk(node, prefix):
            for key, value in node.items():
                if not isinstance(key, str) or key.startswith("_") or (not prefix and key == "name"):
                    continue
                if isinstance(value, dict):
                    walk(value, prefix + key + ".")
                else:
                    flat[prefix + key] = value

        walk(data, "")
        return cls(name, flat)


def load_machine(target: "str | Path | Machine" = DEFAULT_TARGET) -> Machine:
    """A built-in target by name ("s4v1"), or a target description file (*.json path)."""
    if isinstance(target, Machine):
        return target
    path = Path(target)
    if isinstance(target, str) and _NAME_RE.match(target) and not target.endswith(".json"):
        path = _HERE / f"{target}.json"
        if not path.is_file():
            raise TargetError(f"unknown S4 target {target!r} (built-in: {', '.join(builtin_targets())})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TargetError(f"cannot read target description {path}: {exc}") from None
    return Machine.from_nested(data)


def builtin_targets() -> list[str]:
    return sorted(p.stem for p in _HERE.glob("*.json"))
