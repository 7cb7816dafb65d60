"""s4c: a graph compiler for sparse neural networks (ONNX in; S4 instruction streams and C99 out)."""

from s4c.errors import S4CError

__all__ = ["S4CError"]
__version__ = "0.1.0"
