"""The op registry: every IR op is defined once here, with its attributes, shape/type inference and
numpy reference implementation. The verifier, the text parser, the reference evaluator, the frontend
and the backends all read this table.

    @register("Relu", attrs={}, inputs=(1, 1))
    def relu(ctx): return [ctx.type(0)]            # inference: input types -> result types
    relu.reference = lambda xs, attrs: [np.maximum(xs[0], 0)]

IR ops follow ONNX semantics, with one normalisation done by the frontend: operands that decide a
result's SHAPE (Reshape's shape, Slice's starts/ends, Squeeze's axes, ReduceMean's axes...) are
attributes, so every shape in the IR is known from attributes and input types alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from s4c.ir import TensorType

# Attribute kinds, as the text form writes them.
ATTR_KINDS = ("int", "float", "str", "ints", "floats", "strs", "tensor")
REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    kind: str
    default: Any = REQUIRED

    def check(self, value) -> Any:
        """Coerce `value` to this attribute's kind (raising TypeError/ValueError if it can't be)."""
        k = self.kind
        if k == "int":
            if isinstance(value, (bool, np.bool_)) or not float(value).is_integer():
                raise TypeError(f"expected an int, got {value!r}")
            return int(value)
        if k == "float":
            return float(value)
        if k == "str":
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {value!r}")
            return value
        if k == "ints":
            return [Attr("int").check(v) for v in value]
        if k == "floats":
            return [float(v) for v in value]
        if k == "strs":
            return [Attr("str").check(v) for v in value]
        if k == "tensor":
            if not isinstance(value, np.ndarray):
                raise TypeError(f"expected a tensor, got {type(value).__name__}")
            return value
        raise AssertionError(k)


class InferContext:
    """What an inference function sees: input types, attributes (defaults filled in)."""

    def __init__(self, opdef: "OpDef", types: list[TensorType | None], attrs: dict):
        self.opdef = opdef
        self.types = types
        self.attrs = attrs

    def type(self, i: int) -> TensorType:
        return self.types[i]

    def has(self, i: int) -> bool:
        return i < len(self.types) and self.types[i] is not None

    def attr(self, name: str):
        return self.attrs[name]


@dataclass
class OpDef:
    name: str
    infer: Callable[[InferContext], list[TensorType]]
    attrs: dict[str, Attr] = field(default_factory=dict)
    inputs: tuple[int, int] = (1, 1)  # (min, max) operand count; max -1 = variadic
    reference: Callable[[list, dict], list] | None = None
    doc: str = ""

    def with_defaults(self, attrs: dict) -> dict:
        """The op's attributes with defaults filled in, coerced to their kinds.

        Raises KeyError for an unknown attribute and ValueError for a missing required one."""
        out = {}
        for key in attrs:
            if key not in self.attrs:
                raise KeyError(f"{self.name} has no attribute {key!r} (known: {sorted(self.attrs) or 'none'})")
        for key, spec in self.attrs.items():
            if key in attrs:
                out[key] = spec.check(attrs[key])
            elif spec.default is REQUIRED:
                raise ValueError(f"{self.name} needs attribute {key!r}")
            elif spec.default is not None:
                out[key] = spec.default
        return out

    def infer_types(self, types: list[TensorType | None], attrs: dict) -> list[TensorType]:
        return self.infer(InferContext(self, types, self.with_defaults(attrs)))

    def run(self, arrays: list, attrs: dict) -> list[np.ndarray]:
        return self.reference(arrays, self.with_defaults(attrs))


REGISTRY: dict[str, OpDef] = {}


def register(name: str, attrs: dict[str, Attr] | None = None, inputs: tuple[int, int] = (1, 1), doc: str = ""):
    """Decorator: register `fn` as the inference function of op `name`; set `.reference` after."""

    def wrap(fn):
        opdef = OpDef(name, fn, dict(attrs or {}), inputs, doc=doc or (fn.__doc__ or "").strip())
        if name in REGISTRY:
            raise AssertionError(f"op {name} registered twice")
        REGISTRY[name] = opdef
        fn.opdef = opdef
        return opdef

    return wrap


def implement(name: str):
    """Decorator: set the numpy reference implementation of a registered op."""

    def wrap(fn):
        REGISTRY[name].reference = fn
        return fn

    return wrap


def get(name: str) -> OpDef:
    return REGISTRY[name]


FLOAT_DTYPES = ("f16", "f32", "f64", "bf16")
QUANTIZED_DTYPES = ("i8", "u8")


def is_weight_dequantization(op_name: str, operand_dtypes: list[str], attrs: dict) -> bool:
    """Whether an op turns an 8-bit integer weight into floats (the start of a dequantisation).

    Neither the frontend nor fold-constants folds such an op, even on constants: the weight would
    become f32 (4x the bytes) and hide that it is int8 with a scale. Cast(int8) is that whatever
    follows it (usually Mul(scale)): once the Cast is kept, the Mul reads a non-constant and stays."""
    if op_name == "DequantizeWeight":
        return True
    if op_name == "DequantizeLinear":
        return operand_dtypes[0] in QUANTIZED_DTYPES
    if op_name == "Cast":
        return operand_dtypes[0] in QUANTIZED_DTYPES and attrs.get("to") in FLOAT_DTYPES
    return False


# Populate the registry (import order does not matter; each module registers its ops).
from s4c.ops import elementwise, shape_ops, nn, fused, quant  # noqa: E402,F401
