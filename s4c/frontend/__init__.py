"""Frontends: model formats -> s4c IR."""

from s4c.frontend.onnx_import import load_onnx, parse_shape_binding

__all__ = ["load_onnx", "parse_shape_binding"]
