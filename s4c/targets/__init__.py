"""Target descriptions for layout selection: per backend, the weight layouts it runs and a cost
model `cost(op, layout, shapes) -> seconds`.

    from s4c.targets import get_target, LinearShapes
    target = get_target("c")                  # "s4" | "c"; C uses the calibration file if any
    target.supported_layouts                  # (DenseLayout(), CSRLayout(), BSRLayout(4, 1), ...)
    shapes = LinearShapes(tokens=128, report=analyze_sparsity(W))
    target.cost("Linear", "bsr16x1", shapes)  # modelled seconds
    target.candidates(report)                 # supported layouts able to hold W (N:M only if compliant)

- `s4` (s4.py): derived from the S4 machine model (s4c/s4: machine parameters and the opcode
  table's per-instruction cost formulas): SPU cycles and DMA bytes of the emitted instructions.
- `c` (c.py): calibrated by `s4c calibrate --target c` (microbenchmarks of the C kernels, cached in
  $S4C_CACHE or ~/.cache/s4c), with a conservative built-in default.

Layering: imports s4c.sparse and s4c.s4, never passes or codegen.
"""

from s4c.errors import TargetError
from s4c.targets.base import WEIGHT_OPS, LayoutWork, LinearShapes, Target, as_layout, layout_work
from s4c.targets.c import CCostParams, CTarget, KernelRate, cache_dir, calibration_path, default_rate, load_params
from s4c.targets.s4 import S4Target

TARGET_NAMES = ("s4", "c")


def get_target(name: str, **options) -> Target:
    """The target description for backend `name` ("s4" or "c").

    Options: s4 — machine (name or .json path), weight_dtype; c — calibration (a file
    path; default the cache file), threads."""
    if name == "s4":
        return S4Target(**options)
    if name == "c":
        return CTarget.load(**options)
    raise TargetError(f"unknown target {name!r} (targets with a cost model: {', '.join(TARGET_NAMES)})")


__all__ = [
    "CCostParams", "CTarget", "KernelRate", "LayoutWork", "LinearShapes", "S4Target", "TARGET_NAMES",
    "Target", "WEIGHT_OPS", "as_layout", "cache_dir", "calibration_path", "default_rate", "get_target",
    "layout_work", "load_params",
]
