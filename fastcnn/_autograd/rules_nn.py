"""Backward rules of fastcnn's functional ops (arguments by name)."""
import inspect

import numpy as np

from fastcnn._functional import activation_grad as _ag
from fastcnn._functional import conv_grad as _cg
from fastcnn._functional import norm_grad as _ng
from fastcnn._functional import pool_grad as _pg
from fastcnn._functional.conv import conv_nd
from fastcnn._functional.padding import pad as _pad, pixel_shuffle, pixel_unshuffle
from fastcnn._random import default_generator

__all__ = ["RULES", "FORWARD_HOOKS"]


def _batched(x, nd):
    """x with a batch axis (unbatched calls get one), and whether it was added."""
    return (x[None], True) if x.ndim == nd + 1 else (x, False)


def _fused_activation(ctx, gy):
    """A conv / linear / norm that applied an activation in its epilogue
    (fastcnn.fuse): the gradient through it, from the op's output."""
    act = ctx.args.get("activation")
    if act is None:
        return gy
    if act not in ("relu", "relu6"):
        raise NotImplementedError(f"backward through the fused activation {act!r}: train the "
                                  f"unfused model (fastcnn.fuse is for inference)")
    y = ctx.outputs[0]
    return gy * ((y > 0) & (y < 6) if act == "relu6" else y > 0)


def _conv(ctx):
    a = ctx.args
    w = a["weight"]
    nd = w.ndim - 2
    gy = _fused_activation(ctx, ctx.grad)
    x, unbatched = _batched(a["input"], nd)
    gy = gy[None] if unbatched else gy
    op = a.get("op") or ctx.node.op
    gx, gw = _cg.padded_conv_grads(x, w, gy, a["stride"], a["padding"], a["dilation"],
                                   a["groups"], a.get("padding_mode", "zeros"),
                                   ctx.needs("input"), ctx.needs("weight"), op)
    out = {"input": gx[0] if unbatched and gx is not None else gx, "weight": gw}
    if ctx.needs("bias"):
        out["bias"] = _cg.conv_bias_grad(gy)
    if ctx.needs("residual"):
        out["residual"] = ctx.grad if a.get("activation") is None else \
            _fused_activation(ctx, ctx.grad)
    return out


def _conv_transpose(ctx):
    a = ctx.args
    w = a["weight"]
    nd = w.ndim - 2
    x, unbatched = _batched(a["input"], nd)
    gy = ctx.grad[None] if unbatched else ctx.grad
    out = {}
    if ctx.needs("input"):
        gx = conv_nd(nd, "conv_transpose backward", gy, w, None, a["stride"], a["padding"],
                     a["dilation"], a["groups"], None, None)
        out["input"] = gx[0] if unbatched else gx
    if ctx.needs("weight"):
        out["weight"] = _cg.conv_weight_grad(gy, w.shape, x, a["stride"], a["padding"],
                                             a["dilation"], a["groups"], "conv_transpose")
    if ctx.needs("bias"):
        out["bias"] = _cg.conv_bias_grad(gy)
    return out


def _linear(ctx):
    a = ctx.args
    gy = _fused_activation(ctx, ctx.grad)
    gx, gw, gb = _ag.linear_grad(a["input"], a["weight"], gy, ctx.needs("input"),
                                 ctx.needs("weight"), ctx.needs("bias"))
    return {"input": gx, "weight": gw, "bias": gb}


def _activation(op):
    code, reads, _ = _ag.ACTIVATIONS[op]

    def rule(ctx):
        a = ctx.args
        params = {k: v for k, v in a.items() if k not in ("input", "inplace", "out")}
        return {"input": _ag.activation_grad(op, ctx.grad, a["input"] if "x" in reads else None,
                                             ctx.outputs[0] if "y" in reads else None, **params)}
    return rule


def _prelu(ctx):
    x, w = ctx.args["input"], ctx.args["weight"]
    gy = ctx.grad
    shape = [1] * x.ndim
    if w.size > 1:
        shape[1 if x.ndim > 1 else 0] = w.size
    wb = w.reshape(shape)
    out = {}
    if ctx.needs("input"):
        out["input"] = np.where(x > 0, gy, gy * wb)
    if ctx.needs("weight"):
        contrib = np.where(x > 0, 0, x * gy)
        axes = tuple(i for i in range(x.ndim) if shape[i] == 1)
        out["weight"] = contrib.sum(axis=axes).reshape(w.shape).astype(w.dtype)
    return out


def _softmax(log, negate=False):
    def rule(ctx):
        a = ctx.args
        x = a["input"]
        g = _ag.softmax_grad(ctx.grad, ctx.outputs[0], a["dim"] if a["dim"] is not None else
                             _legacy_dim(x.ndim), log).astype(x.dtype, copy=False)
        return {"input": -g if negate else g}
    return rule


def _legacy_dim(ndim):
    return 0 if ndim in (0, 1, 3) else 1


# -- pooling

def _with_indices(fn, args, kwargs):
    """Run an adaptive max pooling with return_indices=True; keep the indices
    for backward."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    wanted = bound.arguments.get("return_indices", False)
    bound.arguments["return_indices"] = True
    values, indices = fn(*bound.args, **bound.kwargs)
    return ((values, indices) if wanted else values), indices


def _max_pool(nd):
    def rule(ctx):
        a = ctx.args
        k = a["kernel_size"]
        return {"input": _pg.max_pool_grad_from_output(
            ctx.grad, a["input"], ctx.outputs[0], tuple(k) if isinstance(k, (tuple, list))
            else (k,) * nd, a["stride"], a["padding"], a["dilation"])}
    return rule


def _adaptive_max_pool(nd):
    def rule(ctx):
        return {"input": _pg.max_pool_grad(ctx.grad, ctx.extra, ctx.args["input"].shape, nd)}
    return rule


def _avg_pool_nd(nd):
    def rule(ctx):
        a = dict(ctx.args)
        k = a["kernel_size"]
        a["kernel_size"] = tuple(k) if isinstance(k, (tuple, list)) else (k,) * nd
        return {"input": _pg.avg_pool_grad(ctx.grad, a["input"].shape, a["kernel_size"],
                                           a["stride"], a["padding"], a["count_include_pad"],
                                           a.get("divisor_override"))}
    return rule


def _adaptive_avg(nd):
    def rule(ctx):
        return {"input": _pg.adaptive_avg_pool_grad(ctx.grad, ctx.args["input"].shape, nd)}
    return rule


# -- normalization

def _norm_out(ctx, gx, gw, gb):
    return {"input": gx, "weight": gw, "bias": gb}


def _batch_norm(ctx):
    a = ctx.args
    gy = _fused_activation(ctx, ctx.grad)
    gx, gw, gb = _ng.batch_norm_grad(a["input"], gy, a["weight"], a["running_mean"],
                                     a["running_var"], bool(a["training"]), a["eps"],
                                     ctx.needs("input"))
    return _norm_out(ctx, gx, gw, gb)


def _instance_norm(ctx):
    a = ctx.args
    gy = _fused_activation(ctx, ctx.grad)
    if a["use_input_stats"]:
        gx, gw, gb = _ng.instance_norm_grad(a["input"], gy, a["weight"], a["eps"], ctx.needs("input"))
    else:
        gx, gw, gb = _ng.batch_norm_grad(a["input"], gy, a["weight"], a["running_mean"],
                                         a["running_var"], False, a["eps"], ctx.needs("input"))
    return _norm_out(ctx, gx, gw, gb)


def _group_norm(ctx):
    a = ctx.args
    gy = _fused_activation(ctx, ctx.grad)
    return _norm_out(ctx, *_ng.group_norm_grad(a["input"], gy, a["num_groups"], a["weight"],
                                               a["eps"], ctx.needs("input")))


def _layer_norm(ctx):
    a = ctx.args
    gy = _fused_activation(ctx, ctx.grad)
    return _norm_out(ctx, *_ng.layer_norm_grad(a["input"], gy, a["normalized_shape"],
                                               a["weight"], a["eps"], ctx.needs("input")))


# -- dropout, shapes, padding

def _dropout_state(fn, args, kwargs):
    """Keep the generator's state before a training-mode dropout draws its mask."""
    gen = kwargs.get("generator") or default_generator()
    state = (type(gen.bit_generator), gen.bit_generator.state)
    return fn(*args, **kwargs), state


def _dropout(ctx):
    a = ctx.args
    if not a["training"] or a["p"] == 0:
        return {"input": ctx.grad}
    kind, state = ctx.extra
    bits = kind()
    bits.state = state
    ones = np.ones(a["input"].shape, a["input"].dtype)
    mask = ctx.node.fn(ones, a["p"], True, False, generator=np.random.Generator(bits))
    return {"input": ctx.grad * mask}


def _reshape_back(ctx):
    return {"input": ctx.grad.reshape(ctx.args["input"].shape)}


def _pad_rule(ctx):
    a = ctx.args
    if "array" in a:                                # numpy.pad, also recorded as "pad"
        x, fn, rest = a["array"], ctx.node.fn, {"pad_width": a["pad_width"], "mode": a["mode"]}
        rest.update(a.get("kwargs") or {})
        if rest["mode"] == "constant":
            rest["constant_values"] = -1
    else:
        x, fn = a["input"], _pad
        rest = {"pad": a["pad"], "mode": a["mode"]}
        if a["mode"] == "constant":
            rest["value"] = -1
    # where each output element comes from: pad the flat indices the same way
    index = fn(np.arange(x.size, dtype=np.float64).reshape(x.shape), **rest).astype(np.int64)
    keep = index >= 0
    gx = np.bincount(index[keep], weights=ctx.grad[keep].astype(np.float64), minlength=x.size)
    return {"input" if "input" in a else "array": gx.reshape(x.shape).astype(x.dtype)}


def _pixel(inverse, factor):
    def rule(ctx):
        return {"input": inverse(ctx.grad, ctx.args[factor])}
    return rule


RULES = {
    "conv": _conv, "conv1d": _conv, "conv2d": _conv, "conv3d": _conv,
    "conv_transpose": _conv_transpose, "conv_transpose1d": _conv_transpose,
    "conv_transpose2d": _conv_transpose, "conv_transpose3d": _conv_transpose,
    "linear": _linear, "prelu": _prelu,
    "softmax": _softmax(False), "log_softmax": _softmax(True),
    "softmin": _softmax(False, negate=True),
    "batch_norm": _batch_norm, "instance_norm": _instance_norm, "group_norm": _group_norm,
    "layer_norm": _layer_norm,
    "flatten": _reshape_back, "unflatten": _reshape_back, "pad": _pad_rule,
    "pixel_shuffle": _pixel(pixel_unshuffle, "upscale_factor"),
    "pixel_unshuffle": _pixel(pixel_shuffle, "downscale_factor"),
}
RULES.update({op: _activation(op) for op in _ag.ACTIVATIONS})
RULES.update({name: _dropout for name in ("dropout", "dropout1d", "dropout2d", "dropout3d")})
FORWARD_HOOKS = {name: _dropout_state for name in ("dropout", "dropout1d", "dropout2d",
                                                   "dropout3d")}
for _nd in (1, 2, 3):
    RULES[f"max_pool{_nd}d"] = _max_pool(_nd)
    RULES[f"adaptive_max_pool{_nd}d"] = _adaptive_max_pool(_nd)
    RULES[f"avg_pool{_nd}d"] = _avg_pool_nd(_nd)
    RULES[f"adaptive_avg_pool{_nd}d"] = _adaptive_avg(_nd)
    FORWARD_HOOKS[f"adaptive_max_pool{_nd}d"] = _with_indices
