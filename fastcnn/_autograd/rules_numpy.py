"""Backward rules of the NumPy ufuncs and functions a forward may call (by
argument position), with PyTorch's conventions where a derivative is a
choice: ties of maximum / minimum split the gradient, ties of max / amax
share it equally, clip passes it inside [min, max] inclusive."""
import numpy as np

__all__ = ["RULES", "unbroadcast"]


def unbroadcast(g, shape):
    """g summed down to `shape` (the shape of an operand NumPy broadcast)."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _shape(a):
    return np.shape(a)


def _each(ctx, grads):
    """{position: grad unbroadcast to that operand} for the operands wanted."""
    return {i: unbroadcast(g, _shape(ctx.pos[i])) for i, g in grads.items()
            if ctx.needs(i) and g is not None}


def _binary(fn):
    def rule(ctx):
        a, b = ctx.pos[0], ctx.pos[1]
        ga, gb = fn(ctx.grad, a, b, ctx.outputs[0], ctx)
        return _each(ctx, {0: ga, 1: gb})
    return rule


def _unary(fn):
    def rule(ctx):
        return {0: fn(ctx.grad, ctx.pos[0], ctx.outputs[0])} if ctx.needs(0) else {}
    return rule


def _split_ties(g, a, b, a_wins):
    tie = a == b
    half = np.where(tie, g * 0.5, 0)
    return np.where(a_wins, g, half), np.where(~a_wins & ~tie, g, half)


def _matmul(g, a, b, y, ctx):
    a2, b2 = np.asarray(a), np.asarray(b)
    ga = gb = None
    if ctx.needs(0):
        ga = g @ np.swapaxes(b2, -1, -2) if b2.ndim > 1 else np.multiply.outer(g, b2)
        if a2.ndim == 1:
            ga = (g[..., None, :] @ np.swapaxes(b2, -1, -2))[..., 0, :] if b2.ndim > 1 else g * b2
    if ctx.needs(1):
        if a2.ndim == 1:
            gb = np.multiply.outer(a2, g) if b2.ndim > 1 else g * a2
        else:
            gb = np.swapaxes(a2, -1, -2) @ (g if b2.ndim > 1 else g[..., None])
            if b2.ndim == 1:
                gb = gb[..., 0]
    return ga, gb


def _power(g, a, b, y, ctx):
    ga = gb = None
    if ctx.needs(0):
        with np.errstate(divide="ignore", invalid="ignore"):
            ga = g * b * np.power(a, b - 1)
    if ctx.needs(1):
        with np.errstate(divide="ignore", invalid="ignore"):
            gb = g * y * np.where(a > 0, np.log(np.where(a > 0, a, 1)), 0)
    return ga, gb


_UFUNCS = {
    "add": _binary(lambda g, a, b, y, c: (g, g)),
    "subtract": _binary(lambda g, a, b, y, c: (g, -g)),
    "multiply": _binary(lambda g, a, b, y, c: (g * b, g * a)),
    "true_divide": _binary(lambda g, a, b, y, c: (g / b, -g * y / b)),
    "divide": _binary(lambda g, a, b, y, c: (g / b, -g * y / b)),
    "maximum": _binary(lambda g, a, b, y, c: _split_ties(g, a, b, a > b)),
    "minimum": _binary(lambda g, a, b, y, c: _split_ties(g, a, b, a < b)),
    "power": _binary(_power),
    "matmul": _binary(_matmul),
    "negative": _unary(lambda g, x, y: -g),
    "positive": _unary(lambda g, x, y: g),
    "exp": _unary(lambda g, x, y: g * y),
    "log": _unary(lambda g, x, y: g / x),
    "sqrt": _unary(lambda g, x, y: g / (2 * y)),
    "square": _unary(lambda g, x, y: 2 * g * x),
    "absolute": _unary(lambda g, x, y: g * np.sign(x)),
    "tanh": _unary(lambda g, x, y: g * (1 - y * y)),
    "reciprocal": _unary(lambda g, x, y: -g * y * y),
}


def _reshaped(ctx):
    return {0: ctx.grad.reshape(_shape(ctx.pos[0]))} if ctx.needs(0) else {}


def _transpose(ctx):
    axes = ctx.pos[1] if len(ctx.pos) > 1 else ctx.kw.get("axes")
    if axes is None:
        return {0: ctx.grad.transpose()}
    return {0: ctx.grad.transpose(np.argsort(axes))}


def _getitem(ctx):
    x, key = ctx.pos[0], ctx.pos[1]
    gx = np.zeros(_shape(x), ctx.grad.dtype)
    np.add.at(gx, key, ctx.grad)
    return {0: gx}


def _setitem(ctx):
    target, key, value = ctx.pos
    out = {}
    if ctx.needs(0):
        g = ctx.grad.copy()
        g[key] = 0
        out[0] = g
    if ctx.needs(2):
        out[2] = unbroadcast(ctx.grad[key], _shape(value))
    return out


def _arg(ctx, index, name, default=None):
    if len(ctx.pos) > index:
        return ctx.pos[index]
    return ctx.kw.get(name, default)


def _concatenate(ctx):
    arrays = ctx.pos[0]
    axis = _arg(ctx, 1, "axis", 0)
    if axis is None:
        sizes = np.cumsum([np.size(a) for a in arrays])[:-1]
        parts = np.split(ctx.grad, sizes)
        return {0: [p.reshape(_shape(a)) for p, a in zip(parts, arrays)]}
    sizes = np.cumsum([_shape(a)[axis] for a in arrays])[:-1]
    return {0: np.split(ctx.grad, sizes, axis=axis)}


def _stack(ctx):
    axis = _arg(ctx, 1, "axis", 0)
    return {0: [np.take(ctx.grad, i, axis=axis) for i in range(len(ctx.pos[0]))]}


def _expand_reduced(ctx, g):
    """g of a reduction's output, broadcast back over the reduced axes."""
    x = ctx.pos[0]
    axis = _arg(ctx, 1, "axis")
    keepdims = ctx.kw.get("keepdims", False)
    shape = _shape(x)
    if axis is None:
        axes = tuple(range(len(shape)))
    else:
        axes = tuple(a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,)))
    if not keepdims:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape), axes


def _sum(ctx):
    g, _ = _expand_reduced(ctx, ctx.grad)
    return {0: np.array(g)}


def _mean(ctx):
    g, axes = _expand_reduced(ctx, ctx.grad)
    count = int(np.prod([_shape(ctx.pos[0])[a] for a in axes]))
    return {0: g / max(count, 1)}


def _extreme(ctx):
    x = ctx.pos[0]
    y, _ = _expand_reduced(ctx, ctx.outputs[0])
    g, axes = _expand_reduced(ctx, ctx.grad)
    hit = x == y
    share = hit.sum(axis=axes, keepdims=True)
    return {0: np.where(hit, g / share, 0)}


def _where(ctx):
    cond = ctx.pos[0]
    g = ctx.grad
    zero = np.zeros((), g.dtype)
    return _each(ctx, {1: np.where(cond, g, zero), 2: np.where(cond, zero, g)})


def _clip(ctx):
    x = ctx.pos[0]
    lo, hi = _arg(ctx, 1, "a_min"), _arg(ctx, 2, "a_max")
    inside = np.ones(_shape(x), bool)
    if lo is not None:
        inside &= x >= lo
    if hi is not None:
        inside &= x <= hi
    return {0: np.where(inside, ctx.grad, 0)}


def _astype(ctx):
    return {0: ctx.grad.astype(ctx.pos[0].dtype)}


def _identity(ctx):
    return {0: ctx.grad}


RULES = {
    **_UFUNCS,
    "reshape": _reshaped, "squeeze": _reshaped, "expand_dims": _reshaped, "ravel": _reshaped,
    "flatten": _reshaped, "transpose": _transpose, "getitem": _getitem, "setitem": _setitem,
    "concatenate": _concatenate, "stack": _stack, "sum": _sum, "mean": _mean,
    "amax": _extreme, "amin": _extreme, "max": _extreme, "min": _extreme,
    "where": _where, "clip": _clip, "copy": _identity, "astype": _astype,
}
# numpy.pad records as "pad", as fastcnn's pad does: rules_nn's rule takes both
