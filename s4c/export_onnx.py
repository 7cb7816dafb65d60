"""IR -> ONNX model file, to look at a graph in Netron (the PassManager's --dump-dir writes one per pass).

ONNX ops go out as themselves (opset 21), with the operands the IR keeps as attributes (Reshape's
shape, Slice's starts/ends/axes/steps, Squeeze/Unsqueeze/Reduce* axes, Split's sizes, Expand's shape,
Tile's repeats, ConstantOfShape's shape) turned back into int64 constant inputs. s4c's own ops
(Linear, LayerNorm, SkipLayerNorm, MultiHeadAttention, Embedding, DequantizeWeight, ...) become nodes
of the custom domain "ai.s4c" with their attributes: Netron shows them, onnxruntime cannot run them.
A graph of ONNX ops only loads in onnxruntime and computes what the IR does.

Constants are initializers, stored as external data (`<file>.data` beside the model) when they add up
to more than 100 MB. Constants parsed from text without values become graph inputs of their type.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from s4c import ops
from s4c.ir import Graph, Op, Value

OPSET = 21
IR_VERSION = 10  # what opset 21 shipped with; onnxruntime accepts it
CUSTOM_DOMAIN = "ai.s4c"
EXTERNAL_DATA_THRESHOLD = 100 * 1024 * 1024

DTYPE_TO_ONNX = {
    "f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16, "f64": TensorProto.DOUBLE,
    "bf16": TensorProto.BFLOAT16, "i64": TensorProto.INT64, "i32": TensorProto.INT32,
    "i16": TensorProto.INT16, "i8": TensorProto.INT8, "u8": TensorProto.UINT8,
    "u16": TensorProto.UINT16, "bool": TensorProto.BOOL,
}

ATTR_TYPES = {
    "int": onnx.AttributeProto.INT, "float": onnx.AttributeProto.FLOAT, "str": onnx.AttributeProto.STRING,
    "ints": onnx.AttributeProto.INTS, "floats": onnx.AttributeProto.FLOATS,
    "strs": onnx.AttributeProto.STRINGS, "tensor": onnx.AttributeProto.TENSOR,
}

_REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd")
# IR attribute -> ONNX input position, for the operands the frontend turned into attributes.
SHAPE_OPERANDS: dict[str, list[tuple[str, int]]] = {
    "Reshape": [("shape", 1)],
    "Expand": [("shape", 1)],
    "Tile": [("repeats", 1)],
    "Squeeze": [("axes", 1)],
    "Unsqueeze": [("axes", 1)],
    "Slice": [("starts", 1), ("ends", 2), ("axes", 3), ("steps", 4)],
    "Split": [("split", 1)],
    "ConstantOfShape": [("shape", 0)],
    **{name: [("axes", 1)] for name in _REDUCTIONS},
}
# IR attributes with no ONNX counterpart (the number of results is the number of node outputs).
IR_ONLY_ATTRS = {"LayerNormalization": {"num_results"}}


def _contiguous(array: np.ndarray) -> np.ndarray:
    # (np.ascontiguousarray would turn a 0-d array into a 1-d one)
    return array if array.flags.c_contiguous else array.copy(order="C")


def is_custom_op(name: str) -> bool:
    """Whether op `name` is s4c's own (exported in the ai.s4c domain) rather than an ONNX op."""
    return ops.REGISTRY[name].infer.__module__ == "s4c.ops.fused" or not onnx.defs.has(name)


def export_onnx(graph: Graph, path: str | os.PathLike) -> onnx.ModelProto:
    """Write `graph` to `path` as an ONNX model; returns the ModelProto (with external data
    references when the weights went to a side file)."""
    path = os.fspath(path)
    model = _Exporter(graph).model()
    total = sum(v.type.nbytes for v in graph.constants() if isinstance(v.data, np.ndarray))
    if total > EXTERNAL_DATA_THRESHOLD:
        location = os.path.basename(path) + ".data"
        data_path = os.path.join(os.path.dirname(path) or ".", location)
        if os.path.exists(data_path):
            os.remove(data_path)  # onnx appends to an existing data file
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=1024)
    else:
        onnx.save_model(model, path)
    return model


class _Exporter:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.names = {v.name for v in graph.values()}
        self.initializers: list[TensorProto] = []
        self.uses_custom_ops = False

    def model(self) -> onnx.ModelProto:
        g = self.graph
        inputs = [self._value_info(v) for v in g.inputs]
        for v in g.constants():
            if isinstance(v.data, np.ndarray):
                self.initializers.append(numpy_helper.from_array(_contiguous(v.data), v.name))
            else:  # an elided weight (IR text without values): still typed and visible
                info = self._value_info(v)
                info.doc_string = "constant whose values were elided from the IR text"
                inputs.append(info)
        nodes = [self._node(op) for op in g.ops]
        outputs = {id(v) for v in g.outputs}
        value_info = [self._value_info(v) for op in g.ops for v in op.outputs if id(v) not in outputs]
        graph = helper.make_graph(nodes, g.name, inputs, [self._value_info(v) for v in g.outputs],
                                  initializer=self.initializers, value_info=value_info)
        opsets = [helper.make_opsetid("", OPSET)]
        if self.uses_custom_ops:
            opsets.append(helper.make_opsetid(CUSTOM_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="s4c")
        model.ir_version = IR_VERSION
        return model

    @staticmethod
    def _value_info(v: Value) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(v.name, DTYPE_TO_ONNX[v.dtype], list(v.shape))

    def _fresh(self, hint: str) -> str:
        name, n = hint, 1
        while name in self.names:
            name, n = f"{hint}.{n}", n + 1
        self.names.add(name)
        return name

    def _node(self, op: Op) -> onnx.NodeProto:
        opdef = ops.REGISTRY[op.op]
        attrs = {k: v for k, v in op.attrs.items() if v is not None}
        inputs = [v.name for v in op.inputs]
        outputs = [v.name for v in op.outputs]
        label = op.outputs[0].name
        custom = is_custom_op(op.op)
        if custom:
            self.uses_custom_ops = True
        else:
            for key in IR_ONLY_ATTRS.get(op.op, ()):
                attrs.pop(key, None)
            if op.op == "Cast":
                attrs["to"] = DTYPE_TO_ONNX[attrs["to"]]
            inputs = self._shape_operands(op, attrs, inputs, label)
        node = helper.make_node(op.op, inputs, outputs, name=label,
                                domain=CUSTOM_DOMAIN if custom else "",
                                doc_string="ONNX nodes: " + ", ".join(op.onnx_nodes) if op.onnx_nodes else None)
        for key in sorted(attrs):
            kind = "int" if (op.op == "Cast" and key == "to") else opdef.attrs[key].kind
            value = attrs[key]
            if kind == "tensor":
                value = numpy_helper.from_array(np.asarray(value))
            node.attribute.append(helper.make_attribute(key, value, attr_type=ATTR_TYPES[kind]))
        return node

    def _shape_operands(self, op: Op, attrs: dict, inputs: list[str], label: str) -> list[str]:
        """Move the attributes ONNX takes as inputs back to (int64 initializer) inputs."""
        table = SHAPE_OPERANDS.get(op.op)
        if not table:
            return inputs
        if op.op == "Slice" and "steps" in attrs and "axes" not in attrs:
            attrs["axes"] = list(range(len(attrs["starts"])))  # steps sits after axes
        result = list(inputs)
        for key, position in table:
            if key not in attrs:
                continue
            name = self._fresh(f"{label}.{key}")
            self.initializers.append(numpy_helper.from_array(np.asarray(attrs.pop(key), np.int64), name))
            while len(result) < position:
                result.append("")  # an omitted optional input
            result.insert(position, name)
        return result
