"""The IR verifier: SSA, definition before use, registered ops, valid attributes, and result types
equal to what the op registry infers. Every pass can be followed by it (`--verify-each`)."""

from __future__ import annotations

from s4c.errors import VerifyError
from s4c.ir import Graph
from s4c import ops


def verify(graph: Graph) -> None:
    """Raise VerifyError naming the first offending op/value; return None if the graph is sound."""
    defined: set[int] = set()
    names: dict[str, object] = {}

    def define(v, what: str) -> None:
        if id(v) in defined:
            raise VerifyError(f"value {v.name!r} is defined twice ({what})")
        other = names.get(v.name)
        if other is not None and other is not v:
            raise VerifyError(f"two different values are named {v.name!r} ({what})")
        names[v.name] = v
        defined.add(id(v))

    for v in graph.inputs:
        if v.is_constant or v.producer is not None:
            raise VerifyError(f"graph input {v.name!r} must be a plain runtime value")
        define(v, "graph input")
    for v in graph.constants():
        if v.producer is not None:
            raise VerifyError(f"constant {v.name!r} also has a producing op")
        define(v, "constant")

    for index, op in enumerate(graph.ops):
        where = f"op #{index} {op.describe()}"
        if op.op not in ops.REGISTRY:
            raise VerifyError(f"{where}: unknown op {op.op!r}")
        opdef = ops.REGISTRY[op.op]
        lo, hi = opdef.inputs
        if len(op.inputs) < lo or (hi >= 0 and len(op.inputs) > hi):
            raise VerifyError(f"{where}: takes {lo}..{'n' if hi < 0 else hi} operands, has {len(op.inputs)}")
        for v in op.inputs:
            if id(v) not in defined:
                raise VerifyError(f"{where}: operand {v.name!r} is used before it is defined")
        if not op.outputs:
            raise VerifyError(f"{where}: has no results")
        try:
            inferred = opdef.infer_types([v.type for v in op.inputs], op.attrs)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise VerifyError(f"{where}: {e}") from None
        actual = [v.type for v in op.outputs]
        if inferred != actual:
            raise VerifyError(f"{where}: result types {[str(t) for t in actual]} "
                              f"but the operands give {[str(t) for t in inferred]}")
        for v in op.outputs:
            if v.producer is not op:
                raise VerifyError(f"{where}: result {v.name!r} names another producer")
            define(v, where)

    for v in graph.outputs:
        if id(v) not in defined:
            raise VerifyError(f"graph output {v.name!r} is not defined")
