"""Argument normalisation and checks shared by the functional ops.

Every public op validates here, before any kernel runs, and raises ValueError
or TypeError with the op's name, what was expected and what was got.
"""
import operator

import numpy as np

from fastcnn._kernels import _act

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def ntuple(value, n, op, name, minimum=None):
    """An int or a sequence of n ints, as a tuple of n Python ints."""
    # fast path for plain ints (most calls; bool is not int by type): a
    # microsecond per argument matters on small inputs
    if type(value) is int:
        out = (value,) * n
    elif type(value) is tuple and len(value) == n and all(type(v) is int for v in value):
        out = value
    else:
        out = _ntuple_general(value, n, op, name)
    if minimum is not None and out and min(out) < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{op}: {name} must be {what}, got {value!r}")
    return out


def _ntuple_general(value, n, op, name):
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = tuple(value) * n
        if len(value) != n:
            raise ValueError(f"{op}: {name} must be an int or a tuple of {n} ints, got {value!r}")
        items = value
    else:
        items = (value,) * n
    out = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"{op}: {name} must be int, got bool")
        try:
            out.append(operator.index(item))
        except TypeError:
            raise TypeError(f"{op}: {name} must be int or a tuple of ints, got {value!r}") from None
    return tuple(out)


def as_array(x, op, name="input"):
    """A NumPy array from an array or array-like (lists are converted)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}") from exc
    if arr.dtype == object:
        raise TypeError(f"{op}: {name} must be a numeric array, got {type(x).__name__} of objects")
    return arr


def check_float(x, op, name="input"):
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {x.dtype}")


def contiguous(x):
    """C-contiguous, aligned, native-byte-order array (copied only if needed)."""
    if x.flags.c_contiguous and x.flags.aligned and x.dtype.isnative:
        return x
    return np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))


def check_out(out, shape, dtype, op, inputs=()):
    """Validate an out= array: exact shape and dtype, C-contiguous, writeable,
    and not overlapping inputs the kernel still reads."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{op}: out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{op}: out has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"{op}: out has dtype {out.dtype}, expected {dtype}")
    flags = out.flags
    if not (flags.c_contiguous and flags.aligned and out.dtype.isnative):
        raise ValueError(f"{op}: out must be C-contiguous")
    if not flags.writeable:
        raise ValueError(f"{op}: out is read-only")
    for arr in inputs:
        if arr is not None and np.may_share_memory(out, arr):
            raise ValueError(f"{op}: out must not overlap the input")
    return out


def conv_output_size(size, kernel, stride, pad_before, pad_after, dilation):
    """floor((L + pads - d(k-1) - 1) / s) + 1; <= 0 when the window does not fit."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


# Padded extents and window extents below this keep every index a kernel
# computes (sums of a position, an offset and an extent) inside int64.
INDEX_LIMIT = 2**62


def index_steps(op, spatial, kernel, stride, pad_before, pad_after, dilation, out_spatial):
    """Strides and dilations for the kernels, after checking the extents can be
    indexed in 64 bits: a stride along an axis with one output, or a dilation
    along an axis with a one-tap kernel, is never used, so it becomes 1 (a huge
    one would overflow index arithmetic for nothing)."""
    # a bound over all axes first: this runs on every call, the loop only when it fails
    if (max(spatial) + max(pad_before) + max(pad_after) >= INDEX_LIMIT
            or max(dilation) * max(kernel) >= INDEX_LIMIT):
        for size, k, pb, pa, d in zip(spatial, kernel, pad_before, pad_after, dilation):
            if size + pb + pa >= INDEX_LIMIT or d * (k - 1) + 1 >= INDEX_LIMIT:
                raise ValueError(f"{op}: sizes too large to index: padded input "
                                 f"{size + pb + pa} and window {d * (k - 1) + 1} must be "
                                 f"below 2**62")
    if 1 in out_spatial:
        stride = tuple(1 if o == 1 else s for s, o in zip(stride, out_spatial))
    if 1 in kernel:
        dilation = tuple(1 if k == 1 else d for d, k in zip(dilation, kernel))
    return stride, dilation


def shape_str(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


# Activations a kernel epilogue can fuse: name (None: none) -> kernel code.
FUSABLE_ACTIVATIONS = {name: _act.CODES[name] for name in _act.FUSABLE}


def activation_code(activation, op):
    try:
        return FUSABLE_ACTIVATIONS[activation]
    except (KeyError, TypeError):
        names = ", ".join(repr(n) if n else "None" for n in FUSABLE_ACTIVATIONS)
        raise ValueError(f"{op}: activation must be one of {names}, got {activation!r}") from None


def spatial_input(x, nd, op, layout=None):
    """Accept (N, C, *spatial) or unbatched (C, *spatial); return the batched
    array and whether a batch axis was added."""
    if x.ndim not in (nd + 1, nd + 2):
        dims = layout or ("(L)", "(H, W)", "(D, H, W)")[nd - 1][1:-1]
        raise ValueError(f"{op}: expected input of shape (C, {dims}) or (N, C, {dims}), "
                         f"got shape {shape_str(x.shape)}")
    if x.ndim == nd + 1:
        return x[None], True
    return x, False
