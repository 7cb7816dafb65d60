"""s4c: a graph compiler for sparse neural networks (ONNX in; S4 instruction streams and C99 out).

    import s4c
    graph = s4c.load_onnx("model.onnx", input_shapes={"input_ids": (1, 128)})     # IR graph
    model = s4c.compile("model.onnx", input_shapes=..., target="ir", outdir="out")  # CompiledModel
    outputs = model.run({"input_ids": ids, ...})                                    # dict of arrays
    served = s4c.load("out", threads=4)   # compiled C model: run(feeds) at any shape its ranges allow
"""

from s4c.errors import S4CError

__all__ = ["S4CError", "load_onnx", "compile", "load", "load_compiled", "print_graph", "parse_graph", "verify", "evaluate"]
__version__ = "0.1.0"

_LAZY = {
    "load_onnx": "s4c.frontend",
    "compile": "s4c.driver",
    "load_compiled": "s4c.driver",
    "load": "s4c.driver",
    "print_graph": "s4c.text",
    "parse_graph": "s4c.text",
    "verify": "s4c.verify",
    "evaluate": "s4c.evaluate",
}


def __getattr__(name):
    # Lazy, so `import s4c` stays cheap and the IR layer does not pull in the driver at import time.
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 's4c' has no attribute {name!r}")
