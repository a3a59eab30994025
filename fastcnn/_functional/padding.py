"""pad, pixel_shuffle and pixel_unshuffle: data movement as torch.nn.functional's."""
import operator

import numpy as np

from fastcnn._functional.conv import pad_input
from fastcnn._graph import traceable
from fastcnn._validation import as_array, check_out, shape_str

__all__ = ["pad", "pixel_shuffle", "pixel_unshuffle"]

def _ints(values, op, name):
    try:
        return tuple(operator.index(v) for v in values)
    except TypeError:
        raise TypeError(f"{op}: {name} must be ints, got {values!r}") from None


@traceable("pad")
def pad(input, pad, mode="constant", value=None, *, out=None):
    """Pad (or, with negative amounts in constant mode, crop) the last
    len(pad) // 2 axes, as torch.nn.functional.pad: pad = (last_before,
    last_after, second_last_before, ...); modes constant, reflect, replicate,
    circular (these three on 1-3 axes: all but the first one or two)."""
    op = "pad"
    x = as_array(input, op)
    if not isinstance(pad, (tuple, list)):
        raise TypeError(f"{op}: pad must be a tuple of ints, got {type(pad).__name__}")
    amounts = _ints(pad, op, "pad")
    if len(amounts) % 2 or len(amounts) // 2 > x.ndim:
        raise ValueError(f"{op}: pad must have an even length of at most 2 x the input's "
                         f"{x.ndim} dimensions, got {len(amounts)}")
    axes = len(amounts) // 2
    widths = [(0, 0)] * (x.ndim - axes) + [(amounts[2 * k], amounts[2 * k + 1])
                                           for k in reversed(range(axes))]
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise ValueError(f"{op}: mode must be 'constant', 'reflect', 'replicate' or "
                         f"'circular', got {mode!r}")
    for (b, a), n in zip(widths, x.shape):
        if max(-b, 0) + max(-a, 0) > n:            # negative amounts crop the input itself
            raise ValueError(f"{op}: negative padding {tuple(amounts)} removes more than the "
                             f"input {shape_str(x.shape)} holds")
    grow = [(max(b, 0), max(a, 0)) for b, a in widths]
    if mode == "constant":
        y = np.pad(x, grow, constant_values=0 if value is None else value) \
            if any(b or a for b, a in grow) else x
    else:
        if value is not None and value != 0:
            raise ValueError(f"{op}: padding mode {mode!r} does not take a value")
        if not (1 <= axes <= 3 and x.ndim - 2 <= axes <= x.ndim - 1):
            raise ValueError(f"{op}: {mode} padding of {axes} axes needs a {axes + 1}-D or "
                             f"{axes + 2}-D input (as PyTorch), got a {x.ndim}-D input")
        if 0 in x.shape[x.ndim - axes:]:
            raise ValueError(f"{op}: {mode} padding of an empty axis: {shape_str(x.shape)}")
        if mode == "circular":          # PyTorch crops first, then wraps what is left
            x = x[tuple(slice(max(-b, 0), n - max(-a, 0)) for (b, a), n in zip(widths, x.shape))]
            widths = grow
        y = pad_input(x, [b for b, _ in grow[x.ndim - axes:]],
                      [a for _, a in grow[x.ndim - axes:]], mode, op)
    # negative amounts crop what is left
    crop = tuple(slice(max(-b, 0), y.shape[k] - max(-a, 0)) for k, (b, a) in enumerate(widths))
    if any(sl.start > sl.stop for sl in crop):
        raise ValueError(f"{op}: negative padding {tuple(amounts)} removes more than the "
                         f"input {shape_str(x.shape)} holds")
    y = np.array(y[crop])
    if out is None:
        return y
    np.copyto(check_out(out, y.shape, y.dtype, op, (x,)), y)
    return out


def _shuffle_check(x, factor, op, name):
    try:
        factor = operator.index(factor)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int, got {factor!r}") from None
    if factor < 1:
        raise ValueError(f"{op}: {name} must be positive, got {factor}")
    if x.ndim < 3:
        raise ValueError(f"{op}: expected an input of at least 3 dimensions (*, C, H, W), got "
                         f"shape {shape_str(x.shape)}")
    return factor


@traceable("pixel_shuffle")
def pixel_shuffle(input, upscale_factor, *, out=None):
    """(*, C r^2, H, W) -> (*, C, H r, W r), as torch.nn.functional.pixel_shuffle."""
    op = "pixel_shuffle"
    x = as_array(input, op)
    r = _shuffle_check(x, upscale_factor, op, "upscale_factor")
    *lead, c, h, w = x.shape
    if c % (r * r):
        raise ValueError(f"{op}: the channels ({c}) must be divisible by the square of "
                         f"upscale_factor ({r * r})")
    y = x.reshape(*lead, c // (r * r), r, r, h, w)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 3, k + 1, k + 4, k + 2).reshape(
        *lead, c // (r * r), h * r, w * r)
    if out is None:
        return np.ascontiguousarray(y)
    np.copyto(check_out(out, y.shape, x.dtype, op, (x,)), y)
    return out


@traceable("pixel_unshuffle")
def pixel_unshuffle(input, downscale_factor, *, out=None):
    """(*, C, H r, W r) -> (*, C r^2, H, W), as torch.nn.functional.pixel_unshuffle."""
    op = "pixel_unshuffle"
    x = as_array(input, op)
    r = _shuffle_check(x, downscale_factor, op, "downscale_factor")
    *lead, c, h, w = x.shape
    if h % r or w % r:
        raise ValueError(f"{op}: the height ({h}) and width ({w}) must be divisible by "
                         f"downscale_factor ({r})")
    k = len(lead)
    y = x.reshape(*lead, c, h // r, r, w // r, r)
    y = y.transpose(*range(k), k, k + 2, k + 4, k + 1, k + 3).reshape(
        *lead, c * r * r, h // r, w // r)
    if out is None:
        return np.ascontiguousarray(y)
    np.copyto(check_out(out, y.shape, x.dtype, op, (x,)), y)
    return out
