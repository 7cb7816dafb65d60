"""ONNX -> s4c IR.

    onnx.load (+ external data) -> inline local functions -> opset conversion (onnx.version_converter,
       for opsets outside the importers' native range) -> onnx-graphsurgeon graph -> cleanup
    -> bind dynamic input dims -> topological order -> one IR op per ONNX node, with
       shape-deciding operands turned into attributes and compile-time-known values folded away
       (an If whose condition is known by then is replaced by the nodes of the branch it takes)
    -> dead-op removal -> verify

Shapes are static after import: `Shape` of any value folds to a constant, so the exporters'
shape-computation subgraphs (Shape/Gather/Unsqueeze/Concat/Range/...) disappear. Weights are never
folded here (only small values are), so weight patterns stay visible to the fusion passes.
"""

from __future__ import annotations

import math
import mmap
import os
import heapq
import re
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnx.inliner
import onnx.reference
import onnx.shape_inference
import onnx.version_converter
from onnx import external_data_helper

from s4c import ops
from s4c.errors import FrontendError, RuntimeShapeOperandError
from s4c.frontend.onnx_ops import IMPORTERS, NodeContext, SUPPORTED_OPS, onnx_dtype_to_ir
from s4c.ir import DimRanges, Graph, Op, TensorType, Value
from s4c.ir import numpy_dtype as ir_numpy_dtype
from s4c.verify import verify

# Default-domain opsets: the importers handle NATIVE_OPSETS' op semantics directly (13: Split/Squeeze/
# Unsqueeze/ReduceSum axes become operands; 18: the other Reduce* axes, Split num_outputs; 22-28 only
# add element types and attributes for types s4c lacks, except DequantizeLinear's output_dtype, handled).
# Older models (from OLDEST_OPSET) are converted up to 13 and newer ones (up to the newest the installed
# onnx knows) down to 28 with onnx.version_converter.
OLDEST_OPSET = 7
NATIVE_OPSETS = (13, 28)
# Control flow the importer resolves itself: an If on a condition known at import is replaced by
# the branch it takes (an If on runtime data is an error).
INLINED_OPS = {"If"}
# Initializers above this many bytes skip the converter (it serialises the model; its adapters only
# ever rewrite small operands such as axes, sizes or scales); they are put back as they were.
CONVERT_KEEP_BYTES = 1 << 16
# Constant operands up to this many elements are folded on import; bigger ones are weights, which
# the passes must still see as weights (e.g. an int8 weight's Cast -> Mul dequantisation).
FOLD_LIMIT = 4096
# Ops whose result depends only on their operands' types: always folded (shapes are static).
TYPE_ONLY_OPS = {"Shape", "Size"}
# The largest constant a fold may compute at import (bytes).
FOLD_RESULT_BYTES = 1 << 32


@dataclass
class ImportOptions:
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Inputs to specialise to a value (the ONNX backend adaptor uses this for shape operands).
    frozen_inputs: dict[str, np.ndarray] = field(default_factory=dict)


def load_onnx(model: str | os.PathLike | onnx.ModelProto, input_shapes: dict | None = None,
              frozen_inputs: dict | None = None) -> Graph:
    """Import an ONNX model (path or ModelProto) as a verified IR graph with static shapes.

    `input_shapes` binds dynamic dims: {"input_ids": (1, 128)}; a dim symbol bound through one input
    (e.g. "sequence") binds it everywhere it appears. A dim may be a range (`range(1, 257)`, "1..256"
    or (1, 256)): the graph is then built at the range's maximum and `graph.dim_ranges` records the
    range and the input dims it binds (s4c.ir.DimRanges)."""
    options = ImportOptions({k: normalize_dims(k, v) for k, v in (input_shapes or {}).items()},
                            dict(frozen_inputs or {}))
    label = os.path.basename(os.fspath(model)) if not isinstance(model, onnx.ModelProto) else "model"
    proto, external = _read(model, label)
    return Importer(proto, label, options, external).run()


def parse_shape_binding(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=1x128` or `NAME=1,128` -> ("NAME", (1, 128)). NAME may itself contain '='."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise FrontendError(f"--input-shape {text!r}: expected NAME=DIMS, e.g. input_ids=1x128")
    try:
        shape = tuple(_parse_dim(d) for d in dims.replace(",", "x").split("x")) if dims else ()
    except ValueError:
        raise FrontendError(f"--input-shape {text!r}: dims must be integers or ranges LO..HI separated by "
                            f"'x' or ','") from None
    if any((d < 0) if isinstance(d, int) else (d[0] < 1 or d[0] > d[1]) for d in shape):
        raise FrontendError(f"--input-shape {text!r}: dims must not be negative; a range LO..HI needs 1 <= LO <= HI")
    return name, shape


def _parse_dim(text: str):
    lo, sep, hi = text.partition("..")
    if sep:
        lo, hi = int(lo), int(hi)
        return lo if lo == hi else (lo, hi)
    return int(text)


def normalize_dims(name: str, dims) -> tuple:
    """One input's binding as ints and (lo, hi) ranges: an int, "1..256", range(1, 257) or (1, 256)
    per dim (or the whole shape as text, "1..8x1..256"). A range with lo == hi is that int."""
    if isinstance(dims, str):
        return parse_shape_binding(f"{name}={dims}")[1]
    out = []
    for d in dims:
        if isinstance(d, range):
            if d.step != 1 or len(d) == 0:
                raise FrontendError(f"input_shapes[{name!r}]: a range dim must be a non-empty range(lo, hi + 1)")
            d = (d.start, d.stop - 1)
        elif isinstance(d, str):
            d = _parse_dim(d)
        if isinstance(d, (tuple, list)):
            lo, hi = (int(x) for x in d)
            if lo < 1 or lo > hi:
                raise FrontendError(f"input_shapes[{name!r}]: range {lo}..{hi} needs 1 <= lo <= hi")
            out.append(lo if lo == hi else (lo, hi))
        else:
            out.append(int(d))
    return tuple(out)


def _read(model, label: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """(the model, its top-level initializers kept in external data files, read into numpy by name)."""
    if isinstance(model, onnx.ModelProto):
        return model, {}
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FrontendError(f"{path}: no such file")
    try:
        proto = onnx.load(path, load_external_data=False)
        external = _read_external_initializers(proto, os.path.dirname(os.path.abspath(path)), label)
        for t in external_data_helper._get_all_tensors(proto):  # the rest (subgraphs, other dtypes): onnx's way
            if external_data_helper.uses_external_data(t) and t.name not in external:
                external_data_helper.load_external_data_for_tensor(t, os.path.dirname(path))
    except FrontendError:
        raise
    except Exception as e:  # protobuf DecodeError, external-data errors, ...
        raise FrontendError(f"{label}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    return proto, external


# dtypes whose external bytes numpy reads as they are (little-endian); others go through onnx
_EXTERNAL_DTYPES = {getattr(onnx.TensorProto, n): np.dtype(d).newbyteorder("<") for n, d in (
    ("FLOAT", np.float32), ("DOUBLE", np.float64), ("FLOAT16", np.float16), ("INT8", np.int8),
    ("INT16", np.int16), ("INT32", np.int32), ("INT64", np.int64), ("UINT8", np.uint8), ("UINT16", np.uint16),
    ("UINT32", np.uint32), ("UINT64", np.uint64), ("BOOL", np.bool_))}


def _read_external_initializers(proto: onnx.ModelProto, base_dir: str, label: str) -> dict[str, np.ndarray]:
    """The graph's initializers stored in external files, as arrays over a private (copy-on-write)
    memory map of each file: onnx.load would copy each into the protobuf and numpy_helper again out
    of it (~1 s for BERT-base), and reading them (np.fromfile) costs the zeroing of fresh pages and a
    copy (~0.8 CPU s for BERT-base's 438 MB), while mapped pages come straight from the page cache and
    most weights are only read once, into the layouts the passes make. Writing to an array copies
    its page, never touching the file; as with any memory-mapped array (numpy's mmap_mode, safetensors),
    the file must not be truncated or rewritten while the graph is in use. They stay external in
    `proto`. The file must lie inside the model's folder and hold the bytes the tensor's dims need,
    as onnx's own loader checks."""
    arrays: dict[str, np.ndarray] = {}
    maps: dict[str, mmap.mmap] = {}
    root = os.path.realpath(base_dir)
    for t in proto.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL or t.data_type not in _EXTERNAL_DTYPES:
            continue
        info = {e.key: e.value for e in t.external_data}
        where = f"{label}: initializer {t.name!r}: external data {info.get('location', '')!r}"
        location = os.path.realpath(os.path.join(root, info.get("location", "")))
        if not info.get("location") or os.path.isabs(info["location"]) or os.path.commonpath([root, location]) != root:
            raise FrontendError(f"{where} is not a file inside the model's folder")
        dtype = _EXTERNAL_DTYPES[t.data_type]
        count = math.prod(t.dims)
        offset, length = int(info.get("offset", 0)), info.get("length")
        if length is not None and int(length) != count * dtype.itemsize:
            raise FrontendError(f"{where}: {length} bytes for {count} x {dtype.itemsize}-byte values")
        if not os.path.isfile(location) or os.path.getsize(location) < offset + count * dtype.itemsize:
            raise FrontendError(f"{where}: the file is missing or too short for offset {offset} + "
                                f"{count * dtype.itemsize} bytes")
        if location not in maps and count:
            with open(location, "rb") as f:
                maps[location] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        array = np.frombuffer(maps[location], dtype, count, offset) if count else np.empty(0, dtype)
        if offset % dtype.itemsize:     # an unaligned start: numpy's fast paths want aligned data
            array = array.copy()
        arrays[t.name] = array.astype(dtype.newbyteorder("="), copy=False).reshape(tuple(t.dims))
    return arrays


# -- opsets ----------------------------------------------------------------------------------------

def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (ai.onnx) opset version; 0 if it imports none."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def newest_opset() -> int:
    """The newest default-domain opset the installed onnx knows."""
    return onnx.defs.onnx_opset_version()


def check_opset(opset: int, label: str = "model") -> None:
    """A FrontendError unless s4c imports `opset` (natively or through onnx.version_converter)."""
    if not opset:
        raise FrontendError(f"{label}: the model imports no default-domain opset")
    if not OLDEST_OPSET <= opset <= newest_opset():
        raise FrontendError(f"{label}: opset {opset} is not supported (s4c imports opsets {OLDEST_OPSET}-"
                            f"{newest_opset()}, the newest this onnx {onnx.__version__} knows)")


def convert_opset(model: onnx.ModelProto, label: str = "model") -> onnx.ModelProto:
    """`model` with its default-domain opset inside NATIVE_OPSETS: unchanged when it already is,
    otherwise converted by onnx.version_converter (up to 13 from older opsets, down to 28 from
    newer ones). A conversion that fails is a FrontendError naming the node and op at fault.
    Large initializers (external data included) bypass the converter and come back unchanged."""
    opset = default_opset(model)
    check_opset(opset, label)
    if NATIVE_OPSETS[0] <= opset <= NATIVE_OPSETS[1]:
        return model
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    target = NATIVE_OPSETS[0] if opset < NATIVE_OPSETS[0] else NATIVE_OPSETS[1]
    light, kept, stand_ins = _without_large_initializers(model)
    try:
        converted = onnx.version_converter.convert_version(light, target)
    except Exception as e:  # the converter raises RuntimeError/ValidationError with a C++ assertion
        reason = _converter_reason(e)
        culprit = _conversion_culprit(light, reason, target)
        where = f"node {culprit[0]!r} ({culprit[1]})" if culprit else "the model"
        raise FrontendError(f"{label}: opset {opset}: onnx.version_converter cannot convert {where} to opset "
                            f"{target}: {reason}") from None
    if kept:
        inputs = [i for i in converted.graph.input if i.name not in stand_ins]
        del converted.graph.input[:]
        converted.graph.input.extend(inputs)
        converted.graph.initializer.extend(kept)
    return converted


def _copy_except(message, skip: set[str]):
    """A copy of protobuf `message` without the fields named in `skip` (nothing large is copied)."""
    copy = type(message)()
    for field_desc, value in message.ListFields():
        if field_desc.name in skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(copy, field_desc.name).extend(value)
        elif field_desc.type == field_desc.TYPE_MESSAGE:
            getattr(copy, field_desc.name).CopyFrom(value)
        else:
            setattr(copy, field_desc.name, value)
    return copy


def _initializer_bytes(tensor: onnx.TensorProto) -> int:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return CONVERT_KEEP_BYTES + 1  # not loaded: never hand it to the converter
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:  # strings, unknown types: small enough to pass through
        itemsize = 1
    return math.prod(tensor.dims) * itemsize


def _without_large_initializers(model: onnx.ModelProto):
    """(a model for the converter, the large initializers left out of it, the names of the graph
    inputs added to the light model to stand in for them)."""
    graph = model.graph
    large = [t for t in graph.initializer if _initializer_bytes(t) > CONVERT_KEEP_BYTES]
    if not large:
        return model, [], set()
    light = _copy_except(model, {"graph"})
    light.graph.CopyFrom(_copy_except(graph, {"initializer"}))
    light.graph.initializer.extend(t for t in graph.initializer if _initializer_bytes(t) <= CONVERT_KEEP_BYTES)
    declared = {i.name for i in graph.input}  # IR version < 4 declares initializers as inputs too
    stand_ins = set()
    for t in large:
        if t.name not in declared:
            light.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            stand_ins.add(t.name)
    return light, large, stand_ins


def _converter_reason(error: Exception) -> str:
    """The converter's message without its C++ source location and assertion boilerplate."""
    text = " ".join(str(error).split()) or type(error).__name__
    for marker in ("failed: ", "Assertion "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
            break
    return text


def _conversion_culprit(model: onnx.ModelProto, reason: str, target: str | int):
    """(node name, op type) of the node the converter failed on: the op its message names, else the
    first node that fails to convert on its own; None if no single node does."""
    nodes = list(model.graph.node)
    label = {id(n): n.name or f"#{i}" for i, n in enumerate(nodes)}
    mentioned = {n.op_type for n in nodes if re.search(rf"\b{re.escape(n.op_type)}\b", reason)}
    for node in nodes:
        if node.op_type in mentioned:
            return label[id(node)], node.op_type
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    types = {v.name: v for v in list(inferred.graph.input) + list(inferred.graph.value_info)
             + list(inferred.graph.output)}
    inits = {t.name: t for t in model.graph.initializer}
    for node in nodes:
        names = [n for n in node.input if n]
        inputs = [types.get(n) or onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                  for n in names if n not in inits]
        outputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output if n]
        single = onnx.helper.make_model(
            onnx.helper.make_graph([node], "probe", inputs, outputs, [inits[n] for n in names if n in inits]),
            opset_imports=list(model.opset_import), ir_version=model.ir_version)
        try:
            onnx.version_converter.convert_version(single, int(target))
        except Exception:
            return label[id(node)], node.op_type
    return None


class Importer:
    def __init__(self, proto: onnx.ModelProto, label: str, options: ImportOptions,
                 external: dict[str, np.ndarray] | None = None):
        self.proto = proto
        self.external = external or {}  # initializers read from external data files (_read)
        self.label = label
        self.options = options
        self.env: dict[str, Value] = {}
        self.graph = Graph()
        self.opset = 0
        # op type -> first node name, for nodes s4c cannot import and cannot compute at import time
        self.unsupported: dict[str, str] = {}
        # For inlining If branches: ids of the gs tensors of the main graph (and inlined branches),
        # and every value name in use.
        self._outer_ids: set[int] = set()
        self._gs_nodes: list = []
        self._gs_graph_io: list = []
        self._names: set[str] | None = None

    def fail(self, message: str) -> FrontendError:
        return FrontendError(f"{self.label}: {message}")

    # -- driver ----------------------------------------------------------------------------------
    def run(self) -> Graph:
        self._check_model()
        if self.proto.functions:
            self.proto = onnx.inliner.inline_local_functions(self.proto)
        if not NATIVE_OPSETS[0] <= self.opset <= NATIVE_OPSETS[1]:
            self.proto = convert_opset(self.proto, self.label)
            self.opset = default_opset(self.proto)
        self._check_single_writer()
        try:
            gsg = gs.import_onnx(self.proto)
        except Exception as e:
            raise self.fail(f"malformed graph ({type(e).__name__}: {e})") from None
        gsg.cleanup(remove_unused_graph_inputs=False)
        if self.external:  # the initializers _read loaded; gs would read them from the (unloaded) proto
            for tensor in gsg.tensors().values():
                if isinstance(tensor, gs.Constant) and tensor.name in self.external:
                    tensor.values = self.external[tensor.name]
        self._gs_nodes = list(gsg.nodes)
        self._gs_graph_io = list(gsg.inputs) + list(gsg.outputs)
        self._outer_ids = {id(t) for n in gsg.nodes for t in list(n.inputs) + list(n.outputs)}
        self._outer_ids.update(id(t) for t in self._gs_graph_io)
        self.graph.name = self.proto.graph.name or "main"
        self.graph.source_scopes = source_scopes(self.proto.graph)
        self._bind_inputs(gsg)
        for node in self._topological_order(gsg):
            self._import_node(node)
        self._check_supported()
        self._bind_outputs(gsg)
        self.graph.remove_dead_ops()
        try:
            verify(self.graph)
        except FrontendError:
            raise
        except Exception as e:
            raise self.fail(f"imported graph does not verify: {e}") from None
        return self.graph

    def _check_model(self) -> None:
        p = self.proto
        if not p.HasField("graph") or not p.graph.output:
            raise self.fail("not an ONNX model (no graph or no outputs)")
        self.opset = default_opset(p)
        check_opset(self.opset, self.label)

    def _check_single_writer(self) -> None:
        """Every value has one definition: no two nodes write the same name, and no node writes
        the name of a graph input or an initializer (ONNX graphs are SSA)."""
        g = self.proto.graph
        defined = {t.name: "the graph input" for t in g.input}
        defined.update({t.name: "an initializer" for t in list(g.initializer) + list(g.sparse_initializer)
                        if t.name not in defined})
        for node in g.node:
            label = f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"
            for name in node.output:
                if not name:
                    continue
                if name in defined:
                    raise self.fail(f"{label} writes {name!r}, already defined by {defined[name]} "
                                    f"(a value must have one definition)")
                defined[name] = label

    def _check_supported(self) -> None:
        """One error listing every op type left unimported: unsupported and not computable now."""
        if self.unsupported:
            listing = ", ".join(f"{op} (first at node {name!r})" for op, name in sorted(self.unsupported.items()))
            raise self.fail(f"unsupported op type(s): {listing}")

    # -- inputs and outputs ----------------------------------------------------------------------
    def _bind_inputs(self, gsg: gs.Graph) -> None:
        declared = {t.name: t for t in gsg.inputs}
        unknown = sorted(set(self.options.input_shapes) - set(declared))
        if unknown:
            raise self.fail(f"--input-shape names unknown input(s) {', '.join(map(repr, unknown))}; "
                            f"the model's inputs are {', '.join(map(repr, declared))}")
        symbols: dict[str, int] = {}
        ranges: dict[str, tuple[int, int]] = {}  # range symbol -> (lo, hi)
        range_of: dict[str, str] = {}  # ONNX dim symbol -> range symbol
        input_dims: dict[str, list] = {}
        for name, tensor in declared.items():  # first pass: learn symbols from the user's bindings
            given = self.options.input_shapes.get(name)
            if given is not None and tensor.shape is not None:
                if len(given) != len(tensor.shape):
                    raise self.fail(f"input {name!r} has rank {len(tensor.shape)} "
                                    f"({_dims(tensor.shape)}), --input-shape gives {len(given)} dims")
                for axis, (d, g) in enumerate(zip(tensor.shape, given)):
                    if isinstance(g, tuple):  # a range: a symbol of its own, named by the ONNX dim
                        if isinstance(d, int) and d >= 0:
                            raise self.fail(f"input {name!r} dim {axis} is static ({d}); --input-shape gives "
                                            f"the range {g[0]}..{g[1]}")
                        sym = d if isinstance(d, str) and d else _range_symbol(ranges, axis, g, name)
                        if ranges.setdefault(sym, g) != g:
                            raise self.fail(f"dim {sym!r} bound to both {ranges[sym][0]}..{ranges[sym][1]} "
                                            f"and {g[0]}..{g[1]}")
                        if isinstance(d, str) and d:
                            range_of[d] = sym
                        input_dims.setdefault(name, [None] * len(given))[axis] = sym
                        g = g[1]
                    if isinstance(d, str) and d:
                        if symbols.setdefault(d, g) != g:
                            raise self.fail(f"dim {d!r} bound to both {symbols[d]} and {g}")
                    elif isinstance(d, int) and d >= 0 and d != g:
                        raise self.fail(f"input {name!r} has static shape {_dims(tensor.shape)}; "
                                        f"--input-shape gives {list(given)}")
        for name, tensor in declared.items():
            dtype = onnx_dtype_to_ir(tensor.dtype, f"input {name!r}", self.fail)
            shape = self.options.input_shapes.get(name)
            if shape is not None:
                shape = [d[1] if isinstance(d, tuple) else d for d in shape]
            else:
                if tensor.shape is None:
                    raise self.fail(f"input {name!r} has unknown rank; bind it with --input-shape {name}=DIMS")
                shape = []
                for axis, d in enumerate(tensor.shape):
                    if isinstance(d, int) and d >= 0:
                        shape.append(d)
                    elif isinstance(d, str) and d in symbols:
                        shape.append(symbols[d])
                        if d in range_of:
                            input_dims.setdefault(name, [None] * len(tensor.shape))[axis] = range_of[d]
                    else:
                        label = f" ({d!r})" if isinstance(d, str) and d else ""
                        raise self.fail(f"input {name!r} dim {axis}{label} is dynamic and unbound; "
                                        f"bind it with --input-shape {name}={'x'.join(_placeholder(tensor.shape))}")
            if name in self.options.frozen_inputs:
                array = np.asarray(self.options.frozen_inputs[name])
                self.env[name] = Value.constant(name, array)
                continue
            value = Value(name, TensorType(dtype, tuple(shape)))
            self.graph.inputs.append(value)
            self.env[name] = value
        if ranges:
            self.graph.dim_ranges = DimRanges(dict(ranges), {k: tuple(v) for k, v in input_dims.items()
                                                            if k not in self.options.frozen_inputs})

    def _bind_outputs(self, gsg: gs.Graph) -> None:
        for tensor in gsg.outputs:
            value = self.env.get(tensor.name)
            if value is None:
                raise self.fail(f"graph output {tensor.name!r} is not computed by any node")
            if value.name == tensor.name and any(value is v for v in self.graph.inputs):
                self.graph.outputs.append(value)  # an input passed straight through (no node)
                continue
            if value.name != tensor.name or value.producer is None:
                # The output is another value under a new name (Identity of an input, a constant,
                # a duplicated output): an explicit Identity keeps the public name.
                if value.is_constant and value.name == tensor.name:  # a folded result: free the name
                    value.name = self.graph.fresh_name(f"{tensor.name}.const")
                out = Value(tensor.name, value.type)
                self.graph.ops.append(Op("Identity", [value], [out], onnx_nodes=(tensor.name,)))
                value = out
            self.graph.outputs.append(value)

    # -- nodes -----------------------------------------------------------------------------------
    def _topological_order(self, gsg: gs.Graph) -> list:
        """The nodes in dependency order, ties to the earliest in the file (Kahn's algorithm over a
        heap of node indices: the order networkx's lexicographical_topological_sort gave, without
        importing networkx, ~0.15 s of a compile)."""
        nodes = gsg.nodes
        producer = {t.name: i for i, node in enumerate(nodes) for t in node.outputs}
        preds = [{producer[name] for name in [t.name for t in node.inputs] + sorted(_outer_scope_inputs(node))
                  if name and name in producer} for node in nodes]
        users: list[list[int]] = [[] for _ in nodes]
        for i, before in enumerate(preds):
            for p in before:
                users[p].append(i)
        waiting = [len(before) for before in preds]
        ready = [i for i, n in enumerate(waiting) if n == 0]
        order = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for user in users[i]:
                waiting[user] -= 1
                if waiting[user] == 0:
                    heapq.heappush(ready, user)
        if len(order) < len(nodes):
            names = [nodes[i].name or f"#{i}" for i in _a_cycle(preds, waiting)]
            raise self.fail(f"the graph has a cycle through node(s) {', '.join(map(repr, names))}")
        return [nodes[i] for i in order]

    def _operand(self, tensor, node_label: str) -> Value | None:
        if not tensor.name:
            return None  # an omitted optional operand
        value = self.env.get(tensor.name)
        if value is not None:
            return value
        if isinstance(tensor, gs.Constant):
            try:
                array = np.asarray(tensor.values)
            except Exception as e:
                raise self.fail(f"initializer {tensor.name!r} cannot be read ({type(e).__name__}: {e})") from None
            onnx_dtype_to_ir(array.dtype, f"initializer {tensor.name!r}", self.fail)
            value = Value.constant(tensor.name, array)
            self.env[tensor.name] = value
            return value
        raise self.fail(f"{node_label} reads {tensor.name!r}, which no node, input or initializer defines")

    def _import_node(self, node) -> None:
        label = f"node {node.name!r} ({node.op})" if node.name else f"a {node.op} node"
        if _op_key(node) in INLINED_OPS:
            self._import_if(node, label)
            return
        if any(t.name and self.env.get(t.name, True) is None for t in node.inputs):
            if _op_key(node) not in SUPPORTED_OPS:  # downstream of an unsupported node, itself unsupported
                self.unsupported.setdefault(_op_key(node), node.name or label)
            self._poison(node)
            return
        operands = [self._operand(t, label) for t in node.inputs]
        if _op_key(node) not in SUPPORTED_OPS:
            if not all(v is None or v.is_constant for v in operands):
                self.unsupported.setdefault(_op_key(node), node.name or label)
                self._poison(node)
                return
            results = self._fold_with_onnx_reference(node, operands, label)
        else:
            ctx = NodeContext(node=node, label=label, operands=operands, opset=self.opset, emit=self._emit,
                              fail=self.fail)
            try:
                results = IMPORTERS.get(node.op, IMPORTERS["*"])(ctx)
            except FrontendError:
                raise
            except (ValueError, TypeError, KeyError, IndexError) as e:
                raise self.fail(f"{label}: {e}") from None
        for tensor, value in zip(node.outputs, results):
            if tensor.name and value is not None:
                self.env[tensor.name] = value

    def _import_if(self, node, label: str) -> None:
        """An If whose condition is known now (after folding: e.g. a comparison of shapes) is
        replaced by the nodes of the branch it takes; one on runtime data is an error."""
        cond_tensor = node.inputs[0] if node.inputs else None
        if cond_tensor is None or not cond_tensor.name:
            raise self.fail(f"{label}: the condition operand is missing")
        if self.env.get(cond_tensor.name, True) is None:  # downstream of an unsupported node
            self._poison(node)
            return
        cond = self._operand(cond_tensor, label)
        if not cond.is_constant:
            raise RuntimeShapeOperandError(
                self.fail(f"{label}: control flow on runtime data is not supported (the condition "
                          f"{cond.name!r} is only known at run time)").args[0], cond.name)
        flag = np.asarray(cond.data)
        if flag.size != 1:
            raise self.fail(f"{label}: the condition {cond.name!r} has {flag.size} elements, not one")
        key = "then_branch" if bool(flag.reshape(-1)[0]) else "else_branch"
        branch = node.attrs.get(key)
        if not isinstance(branch, gs.Graph):
            raise self.fail(f"{label}: {key} is not a graph")
        if len(branch.outputs) != len(node.outputs):
            raise self.fail(f"{label}: {key} has {len(branch.outputs)} outputs, the If has {len(node.outputs)}")
        self._rename_branch_values(branch, node)
        for inner in self._topological_order(branch):
            self._import_node(inner)
        for tensor, result in zip(node.outputs, branch.outputs):
            if not tensor.name:
                continue
            if result.name and self.env.get(result.name, True) is None:
                self.env[tensor.name] = None
                continue
            self.env[tensor.name] = self._operand(result, f"{label} {key}")

    def _rename_branch_values(self, branch: gs.Graph, node) -> None:
        """Give the values a branch defines (node results, its own initializers) names no other value
        has: they join the main graph, and ONNX lets a subgraph reuse names of the outer scope."""
        taken = self._all_names()
        defined = [t for n in branch.nodes for t in n.outputs]
        defined += [t for n in branch.nodes for t in n.inputs
                    if isinstance(t, gs.Constant) and id(t) not in self._outer_ids]
        defined += list(branch.inputs)
        for tensor in defined:
            if tensor.name and tensor.name in taken:
                base = f"{node.name or node.op}/{tensor.name}"
                name, i = base, 1
                while name in taken:
                    name, i = f"{base}.{i}", i + 1
                tensor.name = name
            taken.add(tensor.name)
        self._outer_ids.update(id(t) for t in defined)  # a nested If's branches see these as outer

    def _all_names(self) -> set[str]:
        if self._names is None:
            self._names = set(self.env)
            for n in self._gs_nodes:
                self._names.update(t.name for t in list(n.inputs) + list(n.outputs))
            self._names.update(t.name for t in self._gs_graph_io)
            self._names.update(t.name for t in self.proto.graph.initializer)  # also those only branches read
        self._names.update(self.env)
        return self._names

    def _poison(self, node) -> None:
        for tensor in node.outputs:
            if tensor.name:
                self.env[tensor.name] = None

    def _fold_with_onnx_reference(self, node, operands: list[Value | None], label: str) -> list[Value]:
        """A node s4c has no IR op for, whose operands are all known now: computed by onnx's own
        reference implementation (the general folding rule: whatever computes a value that depends
        only on constants and bound shapes, the value is a constant after import)."""
        names = [t.name or f"{node.name or node.op}.unused{i}" for i, t in enumerate(node.outputs)]
        try:
            arrays = evaluate_onnx_node(node, [None if v is None else v.data for v in operands],
                                        self.proto.opset_import, names)
        except Exception as e:
            raise self.fail(f"{label}: cannot be computed at import time by onnx.reference "
                            f"({type(e).__name__}: {e})") from None
        results = []
        for name, array in zip(names, arrays):
            array = np.asarray(array)
            onnx_dtype_to_ir(array.dtype, f"{label} result {name!r}", self.fail)
            results.append(Value.constant(name, array))
        return results

    def _emit(self, op_name: str, operands: list[Value], attrs: dict, result_names: list[str],
              onnx_node: str) -> list[Value]:
        """Add one IR op (or fold it to constants when its value is known now); return its results."""
        opdef = ops.REGISTRY[op_name]
        # Keep only what the node set (defaults stay implicit), coerced to the attribute kinds.
        attrs = {k: opdef.attrs[k].check(v) for k, v in attrs.items() if v is not None}
        foldable = (all(v.is_constant for v in operands) and all(v.type.size <= FOLD_LIMIT for v in operands)
                    and not ops.is_weight_dequantization(op_name, [v.dtype for v in operands], attrs))
        if foldable and op_name not in TYPE_ONLY_OPS:
            self._check_fold_size(opdef, operands, attrs, result_names, onnx_node)
        if op_name in TYPE_ONLY_OPS or foldable:
            # Type-only ops see a zero-stride stand-in of the right shape for runtime operands.
            arrays = opdef.run([v.data if v.is_constant else np.broadcast_to(np.zeros((), np.uint8), v.shape)
                                for v in operands], attrs)
            return [Value.constant(n, np.asarray(a)) for n, a in zip(result_names, arrays)]
        types = opdef.infer_types([v.type for v in operands], attrs)
        results = [Value(n, t) for n, t in zip(result_names, types)]
        self.graph.ops.append(Op(op_name, operands, results, attrs,
                                 onnx_nodes=(onnx_node,) if onnx_node else ()))
        return results

    def _check_fold_size(self, opdef, operands: list[Value], attrs: dict, result_names: list[str],
                         onnx_node: str) -> None:
        """A fold must not try to allocate a constant past FOLD_RESULT_BYTES (Expand /
        ConstantOfShape / Tile... of small constants can ask for any size)."""
        try:
            types = opdef.infer_types([v.type for v in operands], attrs)
        except Exception:
            return  # the fold itself reports what is wrong
        for name, t in zip(result_names, types):
            itemsize = 2 if t.dtype == "bf16" else np.dtype(ir_numpy_dtype(t.dtype)).itemsize
            nbytes = math.prod(t.shape) * itemsize
            if nbytes > FOLD_RESULT_BYTES:
                raise self.fail(f"node {onnx_node!r} ({opdef.name}): constant result {name!r} ({t}) would take "
                                f"{nbytes} bytes, more than the {FOLD_RESULT_BYTES} bytes s4c computes at import")


def source_scopes(graph: onnx.GraphProto) -> dict[str, str]:
    """Node name -> module scope. The dynamo exporter names nodes after fx (`node_linear_3`) and
    keeps the module path in metadata (`pkg.torch.onnx.name_scopes`: ['', 'model', 'model.encoder',
    'model.encoder.layer.0', ...]), taken here as "/model/encoder/layer/0"; the TorchScript exporter's
    node names are the path itself ("/model/encoder/layer.0/..."), so it needs no entry."""
    scopes = {}
    for node in graph.node:
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                parts = [p.strip(" '\"") for p in prop.value.strip("[]").split(",")]
                dotted = max(parts, key=len, default="")
                scopes[node.name] = "/" + dotted.replace(".", "/")
    return scopes


def _subgraphs(node):
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, gs.Graph))


def _a_cycle(preds: list[set[int]], waiting: list[int]) -> list[int]:
    """The nodes of one cycle, in dependency order, among those Kahn's algorithm left waiting (each
    has a waiting predecessor: walk back through them until a node repeats)."""
    walk, seen = [min(i for i, n in enumerate(waiting) if n)], {}
    while walk[-1] not in seen:
        seen[walk[-1]] = len(walk) - 1
        walk.append(min(p for p in preds[walk[-1]] if waiting[p]))
    return walk[seen[walk[-1]]:-1][::-1]


def _outer_scope_inputs(node) -> set[str]:
    """Names node's subgraphs (nested ones included) read from the enclosing scopes."""
    used: set[str] = set()
    for graph in _subgraphs(node):
        local = {t.name for t in graph.inputs}
        local.update(t.name for n in graph.nodes for t in n.outputs)
        for n in graph.nodes:
            names = {t.name for t in n.inputs if not isinstance(t, gs.Constant)} | _outer_scope_inputs(n)
            used.update(name for name in names if name and name not in local)
    return used


def _op_key(node) -> str:
    return node.op if node.domain in ("", "ai.onnx", None) else f"{node.domain}.{node.op}"


def evaluate_onnx_node(node: gs.Node, arrays: list[np.ndarray | None], opset_import, output_names: list[str]):
    """Run one graphsurgeon node on concrete operands with onnx.reference; returns its outputs."""
    from_names = [f"in{i}" if a is not None else "" for i, a in enumerate(arrays)]
    attrs = {k: (onnx.numpy_helper.from_array(np.asarray(v.values)) if isinstance(v, gs.Constant) else v)
             for k, v in node.attrs.items()}
    proto = onnx.helper.make_node(node.op, from_names, [f"out{i}" for i in range(len(output_names))],
                                  domain=node.domain or "", **attrs)
    feeds = {n: np.ascontiguousarray(a) for n, a in zip(from_names, arrays) if n}
    evaluator = onnx.reference.ReferenceEvaluator(proto, opsets={i.domain: i.version for i in opset_import})
    return evaluator.run(None, feeds)


def _dims(shape) -> str:
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def _placeholder(shape) -> list[str]:
    return [str(d) if isinstance(d, int) and d >= 0 else "N" for d in shape]


def _range_symbol(ranges: dict, axis: int, bounds: tuple[int, int], name: str) -> str:
    """The symbol of a range on an unnamed dynamic dim: the one already given for the same axis with
    the same bounds (batch / sequence ranges repeated on every input), else a new `NAME.AXIS`."""
    for sym, b in ranges.items():
        if b == bounds and sym.endswith(f".{axis}"):
            return sym
    return f"{name}.{axis}"
