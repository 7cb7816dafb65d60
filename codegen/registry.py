"""The backends, registered explicitly: the one place that lists them.

    BACKENDS["c"].build(graph, outdir, options)     # see codegen/protocol.py
    get_backend("s4")                               # TargetError naming the known ones otherwise

The driver, the CLI and the ONNX backend adaptor (s4c.backend) find backends here. A new backend
subclasses `s4c.codegen.protocol.Backend` and adds its instance below.
"""

from __future__ import annotations

from s4c.codegen import c, s4
from s4c.codegen.protocol import Backend
from s4c.errors import TargetError

BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (s4.BACKEND, c.BACKEND)}


def get_backend(name: str) -> Backend:
    backend = BACKENDS.get(name)
    if backend is None:
        raise TargetError(f"unknown backend {name!r}; backends: {', '.join(BACKENDS)}")
    return backend


def calibrated_backends() -> list[str]:
    """The backends with a `calibrate` method (`s4c calibrate --target NAME`)."""
    return [name for name, backend in BACKENDS.items() if callable(getattr(backend, "calibrate", None))]


__all__ = ["BACKENDS", "get_backend", "calibrated_backends"]
