"""Pictures of what a layer learned: filter grids and activation grids as PNG.

Needs Pillow (pip install "fastcnn[viz]").
"""
import math

import numpy as np

__all__ = ["filter_grid", "activation_grid"]


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("fastcnn.viz needs Pillow: pip install \"fastcnn[viz]\"") from None
    return Image


def _grid(tiles, pad, scale):
    """Tiles (n, h, w) or (n, h, w, 3) in [0, 1] arranged in a near-square grid."""
    n = len(tiles)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = tiles.shape[1:3]
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad) + tiles.shape[3:]
    canvas = np.ones(shape, np.float64)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h,
               pad + c * (w + pad): pad + c * (w + pad) + w] = t
    image = (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)
    if scale > 1:
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    return image


def _minmax(a):
    lo, hi = np.nanmin(a), np.nanmax(a)
    return np.zeros_like(a, np.float64) if hi <= lo else (a - lo) / (hi - lo)


def filter_grid(conv_weight, path, *, scale=8, pad=1):
    """Write a PNG grid of a conv layer's filters (out_channels, in_channels, kH, kW):
    each filter min-max scaled on its own; RGB when in_channels == 3, otherwise
    one grey tile per (filter, input channel). Returns the image as an array."""
    w = np.asarray(conv_weight, np.float64)
    if w.ndim != 4:
        raise ValueError(f"filter_grid: expected weights of shape (out, in, kH, kW), got {w.shape}")
    if w.size == 0:
        raise ValueError(f"filter_grid: the weights have no filters to draw (shape {w.shape})")
    if w.shape[1] == 3:
        tiles = np.stack([_minmax(f).transpose(1, 2, 0) for f in w])
    else:
        tiles = np.stack([_minmax(f) for f in w]).reshape((-1,) + w.shape[2:])
    image = _grid(tiles, pad, scale)
    _pillow().fromarray(image).save(path, format="PNG")
    return image


def activation_grid(activation, path, *, scale=2, pad=1):
    """Write a PNG grid of one image's activation maps (C, H, W) (or (1, C, H, W)),
    each map min-max scaled on its own. Returns the image as an array."""
    a = np.asarray(activation, np.float64)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"activation_grid: expected one image's maps (C, H, W), got {a.shape}")
    if a.size == 0:
        raise ValueError(f"activation_grid: the activation has no maps to draw (shape {a.shape})")
    image = _grid(np.stack([_minmax(m) for m in a]), pad, scale)
    _pillow().fromarray(image).save(path, format="PNG")
    return image
