"""Data-movement ops. Shape-deciding operands are attributes here (the frontend moves them)."""

from __future__ import annotations

import numpy as np

from s4c.ir import TensorType, dtype_name, numpy_dtype
from s4c.ops import Attr, InferContext, implement, register
from s4c.ops.elementwise import broadcast_shapes


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % max(rank, 1)


def reshape_target(in_shape: tuple[int, ...], shape: list[int], allowzero: int = 0) -> tuple[int, ...]:
    """ONNX Reshape's target shape: 0 copies the input dim (unless allowzero), -1 is inferred."""
    out = [in_shape[i] if d == 0 and not allowzero else d for i, d in enumerate(shape)]
    size = int(np.prod(in_shape, dtype=np.int64))
    if out.count(-1) > 1:
        raise ValueError(f"Reshape to {shape}: more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape {list(in_shape)} to {shape}")
        out[out.index(-1)] = size // known
    if int(np.prod(out, dtype=np.int64)) != size:
        raise ValueError(f"cannot reshape {list(in_shape)} to {shape}")
    return tuple(out)


@register("Reshape", attrs={"shape": Attr("ints"), "allowzero": Attr("int", 0)})
def reshape(ctx: InferContext):
    """Reshape to the static `shape` (ONNX 0 / -1 conventions)."""
    t = ctx.type(0)
    return [TensorType(t.dtype, reshape_target(t.shape, ctx.attr("shape"), ctx.attr("allowzero")))]


@implement("Reshape")
def _reshape(xs, attrs):
    return [xs[0].reshape(reshape_target(xs[0].shape, attrs["shape"], attrs["allowzero"]))]


@register("Transpose", attrs={"perm": Attr("ints", None)})
def transpose(ctx: InferContext):
    """Permute axes (default: reverse them)."""
    t = ctx.type(0)
    perm = ctx.attrs.get("perm") or list(range(t.rank))[::-1]
    if sorted(perm) != list(range(t.rank)):
        raise ValueError(f"perm {perm} is not a permutation of rank {t.rank}")
    return [TensorType(t.dtype, tuple(t.shape[p] for p in perm))]


implement("Transpose")(lambda xs, attrs: [np.transpose(xs[0], attrs.get("perm"))])


@register("Squeeze", attrs={"axes": Attr("ints", None)})
def squeeze(ctx: InferContext):
    """Drop size-1 axes (all of them when `axes` is absent)."""
    t = ctx.type(0)
    axes = ctx.attrs.get("axes")
    axes = [i for i, d in enumerate(t.shape) if d == 1] if axes is None else [_axis(a, t.rank) for a in axes]
    if any(t.shape[a] != 1 for a in axes):
        raise ValueError(f"cannot squeeze axes {axes} of shape {list(t.shape)}")
    return [TensorType(t.dtype, tuple(d for i, d in enumerate(t.shape) if i not in axes))]


@implement("Squeeze")
def _squeeze(xs, attrs):
    axes = attrs.get("axes")
    return [np.squeeze(xs[0], axis=None if axes is None else tuple(axes))]


@register("Unsqueeze", attrs={"axes": Attr("ints")})
def unsqueeze(ctx: InferContext):
    """Insert size-1 axes at `axes` (positions in the result)."""
    t = ctx.type(0)
    rank = t.rank + len(ctx.attr("axes"))
    axes = sorted(_axis(a, rank) for a in ctx.attr("axes"))
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axes {ctx.attr('axes')}")
    dims = list(t.shape)
    for a in axes:
        dims.insert(a, 1)
    return [TensorType(t.dtype, tuple(dims))]


@implement("Unsqueeze")
def _unsqueeze(xs, attrs):
    rank = xs[0].ndim + len(attrs["axes"])
    return [np.expand_dims(xs[0], tuple(sorted(a % rank for a in attrs["axes"])))]


@register("Flatten", attrs={"axis": Attr("int", 1)})
def flatten(ctx: InferContext):
    """Collapse to 2-D at `axis`."""
    t = ctx.type(0)
    axis = ctx.attr("axis") + t.rank if ctx.attr("axis") < 0 else ctx.attr("axis")
    if not 0 <= axis <= t.rank:
        raise ValueError(f"axis {axis} out of range for rank {t.rank}")
    return [TensorType(t.dtype, (int(np.prod(t.shape[:axis], dtype=np.int64)),
                                 int(np.prod(t.shape[axis:], dtype=np.int64))))]


@implement("Flatten")
def _flatten(xs, attrs):
    x = xs[0]
    axis = attrs["axis"] + x.ndim if attrs["axis"] < 0 else attrs["axis"]
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


@register("Gather", attrs={"axis": Attr("int", 0)}, inputs=(2, 2))
def gather(ctx: InferContext):
    """Gather(data, indices) along `axis` (negative indices count from the end)."""
    t, idx = ctx.type(0), ctx.type(1)
    a = _axis(ctx.attr("axis"), t.rank)
    return [TensorType(t.dtype, t.shape[:a] + idx.shape + t.shape[a + 1:])]


@implement("Gather")
def _gather(xs, attrs):
    data, idx = xs
    axis = attrs["axis"] % data.ndim
    n = data.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"Gather index out of range [{-n}, {n})")
    return [np.take(data, np.where(idx < 0, idx + n, idx), axis=axis)]


@register("GatherElements", attrs={"axis": Attr("int", 0)}, inputs=(2, 2))
def gather_elements(ctx: InferContext):
    """GatherElements(data, indices): out[.., j, ..] = data[.., indices[.., j, ..], ..] along `axis`.

    indices (i32/i64) has data's rank; the result has indices' shape. Off `axis`, an indices dim
    may be smaller than data's (out[i][j] reads data[idx[i][j]][j], ONNX's formula), never larger.
    Negative indices count from the end; an index outside [-n, n) is an error."""
    t, idx = ctx.type(0), ctx.type(1)
    if t.rank == 0:
        raise ValueError("GatherElements needs data of rank >= 1")
    if idx.dtype not in ("i32", "i64"):
        raise ValueError(f"GatherElements indices must be i32 or i64, not {idx.dtype}")
    if idx.rank != t.rank:
        raise ValueError(f"GatherElements indices rank {idx.rank} != data rank {t.rank}")
    a = _axis(ctx.attr("axis"), t.rank)
    if any(i > d for k, (i, d) in enumerate(zip(idx.shape, t.shape)) if k != a):
        raise ValueError(f"GatherElements indices shape {list(idx.shape)} exceeds data shape {list(t.shape)} "
                         f"off axis {a}")
    return [TensorType(t.dtype, idx.shape)]


@implement("GatherElements")
def _gather_elements(xs, attrs):
    data, idx = xs
    axis = attrs["axis"] % data.ndim
    n = data.shape[axis]
    idx = np.asarray(idx)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"GatherElements index out of range [{-n}, {n}) on axis {axis}")
    idx = np.where(idx < 0, idx + n, idx).astype(np.intp)
    # off the axis, indices may cover a leading part of data's dims
    part = tuple(slice(None) if k == axis else slice(0, m) for k, m in enumerate(idx.shape))
    return [np.take_along_axis(data[part], idx, axis=axis)]


@register("GatherND", attrs={"batch_dims": Attr("int", 0)}, inputs=(2, 2))
def gather_nd(ctx: InferContext):
    """GatherND(data, indices) with `batch_dims` leading batch axes."""
    t, idx = ctx.type(0), ctx.type(1)
    b, k = ctx.attr("batch_dims"), idx.shape[-1]
    return [TensorType(t.dtype, idx.shape[:-1] + t.shape[b + k:])]


@implement("GatherND")
def _gather_nd(xs, attrs):
    data, idx = xs
    b = attrs["batch_dims"]
    batch_shape = data.shape[:b]
    nb = int(np.prod(batch_shape, dtype=np.int64))
    d = data.reshape((nb,) + data.shape[b:])
    i = idx.reshape((nb,) + idx.shape[b:])
    k = idx.shape[-1]
    i = np.where(i < 0, i + np.array(d.shape[1:1 + k]), i)
    out = np.stack([d[n][tuple(np.moveaxis(i[n], -1, 0))] for n in range(nb)]) if nb else \
        np.zeros((0,) + idx.shape[b:-1] + data.shape[b + k:], data.dtype)
    return [out.reshape(idx.shape[:-1] + data.shape[b + k:])]


def slice_params(shape, starts, ends, axes, steps):
    """Normalised python slices for ONNX Slice (clamping like the spec)."""
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [_axis(a, rank) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    slices = [slice(None)] * rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            raise ValueError("Slice step 0")
        n = shape[a]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
        else:
            s, e = min(max(s, -1), n - 1), min(max(e, -1), n - 1)
        slices[a] = slice(s, e if e >= 0 else None, st)
    return tuple(slices)


_SLICE_ATTRS = {"starts": Attr("ints"), "ends": Attr("ints"), "axes": Attr("ints", None), "steps": Attr("ints", None)}


@register("Slice", attrs=_SLICE_ATTRS)
def slice_(ctx: InferContext):
    """Static Slice: starts/ends/axes/steps are attributes."""
    t = ctx.type(0)
    sl = slice_params(t.shape, ctx.attr("starts"), ctx.attr("ends"), ctx.attrs.get("axes"), ctx.attrs.get("steps"))
    shape = tuple(len(range(*s.indices(d))) for s, d in zip(sl, t.shape))
    return [TensorType(t.dtype, shape)]


@implement("Slice")
def _slice(xs, attrs):
    sl = slice_params(xs[0].shape, attrs["starts"], attrs["ends"], attrs.get("axes"), attrs.get("steps"))
    return [xs[0][sl]]


@register("Split", attrs={"axis": Attr("int", 0), "split": Attr("ints")})
def split(ctx: InferContext):
    """Split along `axis` into pieces of the sizes in `split` (one result per piece)."""
    t = ctx.type(0)
    a = _axis(ctx.attr("axis"), t.rank)
    if sum(ctx.attr("split")) != t.shape[a]:
        raise ValueError(f"split sizes {ctx.attr('split')} do not add up to dim {t.shape[a]}")
    return [TensorType(t.dtype, t.shape[:a] + (n,) + t.shape[a + 1:]) for n in ctx.attr("split")]


@implement("Split")
def _split(xs, attrs):
    cuts = np.cumsum(attrs["split"])[:-1]
    return list(np.split(xs[0], cuts, axis=attrs["axis"] % xs[0].ndim))


@register("Concat", attrs={"axis": Attr("int")}, inputs=(1, -1))
def concat(ctx: InferContext):
    """Concatenate along `axis`."""
    ts = ctx.types
    a = _axis(ctx.attr("axis"), ts[0].rank)
    for t in ts[1:]:
        if t.rank != ts[0].rank or t.dtype != ts[0].dtype or any(
                d != e for i, (d, e) in enumerate(zip(t.shape, ts[0].shape)) if i != a):
            raise ValueError(f"Concat operands {[str(t) for t in ts]} disagree off axis {a}")
    return [TensorType(ts[0].dtype, ts[0].shape[:a] + (sum(t.shape[a] for t in ts),) + ts[0].shape[a + 1:])]


implement("Concat")(lambda xs, attrs: [np.concatenate(xs, axis=attrs["axis"] % xs[0].ndim)])


@register("Expand", attrs={"shape": Attr("ints")})
def expand(ctx: InferContext):
    """Broadcast to `shape` (bidirectional, as ONNX Expand)."""
    t = ctx.type(0)
    return [TensorType(t.dtype, broadcast_shapes(t.shape, tuple(ctx.attr("shape"))))]


@implement("Expand")
def _expand(xs, attrs):
    shape = broadcast_shapes(xs[0].shape, tuple(attrs["shape"]))
    return [np.array(np.broadcast_to(xs[0], shape))]


@register("Tile", attrs={"repeats": Attr("ints")})
def tile(ctx: InferContext):
    """Repeat the tensor `repeats[i]` times along each axis."""
    t = ctx.type(0)
    return [TensorType(t.dtype, tuple(d * r for d, r in zip(t.shape, ctx.attr("repeats"))))]


implement("Tile")(lambda xs, attrs: [np.tile(xs[0], attrs["repeats"])])


@register("Shape", attrs={"start": Attr("int", 0), "end": Attr("int", None)})
def shape(ctx: InferContext):
    """The input's shape as an i64 vector (always folded to a constant: shapes are static)."""
    t = ctx.type(0)
    return [TensorType("i64", (len(t.shape[slice(ctx.attr("start"), ctx.attrs.get("end"))]),))]


implement("Shape")(lambda xs, attrs: [np.array(xs[0].shape[slice(attrs["start"], attrs.get("end"))], np.int64)])


@register("Size")
def size(ctx: InferContext):
    """The input's element count as an i64 scalar."""
    return [TensorType("i64", ())]


implement("Size")(lambda xs, attrs: [np.array(xs[0].size, np.int64)])


@register("ConstantOfShape", attrs={"shape": Attr("ints"), "value": Attr("tensor", None)}, inputs=(0, 0))
def constant_of_shape(ctx: InferContext):
    """A tensor of `shape` filled with `value` (default f32 zero)."""
    value = ctx.attrs.get("value")
    dtype = dtype_name(value.dtype) if value is not None else "f32"
    return [TensorType(dtype, tuple(ctx.attr("shape")))]


@implement("ConstantOfShape")
def _constant_of_shape(xs, attrs):
    value = attrs.get("value")
    value = np.zeros((1,), np.float32) if value is None else value
    return [np.full(tuple(attrs["shape"]), value.reshape(-1)[0], value.dtype)]


@register("Range", inputs=(3, 3))
def range_(ctx: InferContext):
    """Range(start, limit, delta): only with constant operands (folded on import)."""
    raise ValueError("Range needs constant start/limit/delta to have a static shape")


implement("Range")(lambda xs, attrs: [np.arange(xs[0], xs[1], xs[2]).astype(xs[0].dtype)])


def trilu_mask(shape, k, upper):
    rows, cols = shape[-2], shape[-1]
    return np.triu(np.ones((rows, cols), bool), k) if upper else np.tril(np.ones((rows, cols), bool), k)


@register("Trilu", attrs={"upper": Attr("int", 1), "k": Attr("int", 0)})
def trilu(ctx: InferContext):
    """Keep the upper (or lower) triangle of the last two axes, offset `k`."""
    return [ctx.type(0)]


@implement("Trilu")
def _trilu(xs, attrs):
    mask = trilu_mask(xs[0].shape, attrs["k"], attrs["upper"])
    return [np.where(mask, xs[0], np.zeros((), xs[0].dtype))]


__all__ = ["reshape_target", "slice_params", "numpy_dtype"]
