"""fastcnn.fuse: fold eval-mode BatchNorm into the preceding Conv / Linear and
fuse a following ReLU / ReLU6 into that layer's epilogue."""
import copy

import numpy as np

from fastcnn.nn.conv import Conv1d, Conv2d, Conv3d
from fastcnn.nn.linear import Linear
from fastcnn.nn.container import Sequential
from fastcnn.nn.module import Identity, Module
from fastcnn.nn.normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d
from fastcnn.nn.activation import ReLU, ReLU6

__all__ = ["fuse", "fold_batch_norm"]

_FUSABLE_ACTIVATIONS = {ReLU: "relu", ReLU6: "relu6"}
_CONVS = (Conv1d, Conv2d, Conv3d)
_BATCH_NORMS = (BatchNorm1d, BatchNorm2d, BatchNorm3d)


def fuse(model, input_shape=None, *, rtol=1e-4, atol=1e-5):
    """Return an inference copy of `model` (eval mode) with:

    - every eval-mode BatchNorm that follows a Conv or Linear folded into that
      layer's weight and bias (also when the layer has a bias of its own);
    - a ReLU or ReLU6 that follows the pair (or the bare layer) applied in the
      layer's epilogue instead of a separate pass.

    "Follows" is read from the module structure: a BatchNorm registered right
    after a Conv/Linear with matching features (nn.Sequential, and modules
    written torchvision-style, register children in data-flow order). Inside a
    Sequential an activation that follows is fused and replaced by Identity;
    elsewhere activations are fused only when `input_shape` is given, because
    only a trace shows that the activation is applied to that layer's output
    (the module is then left in place: ReLU twice equals ReLU once).

    With `input_shape`, every candidate is confirmed by tracing a forward pass
    on random input, and the fused model's output is checked against the
    original's; a mismatch raises RuntimeError rather than returning a model
    that computes something else.
    """
    if not isinstance(model, Module):
        raise TypeError(f"fuse: expected a fastcnn.nn.Module, got {type(model).__name__}")
    fused = copy.deepcopy(model)
    fused.eval()
    candidates = _structural_candidates(fused)
    if input_shape is not None:
        sample = _sample_input(fused, input_shape)
        calls = _trace(fused, sample)
        candidates = _confirm(candidates, calls)
    else:
        candidates = _structural_only(candidates)
    for parent, layer_name, bn_name, act_name, act_is_module_in_seq in candidates:
        layer = parent._modules[layer_name]
        if bn_name is not None:
            _fold_batch_norm(layer, parent._modules[bn_name])
            parent._modules[bn_name] = Identity()
        if act_name is not None:
            act = parent._modules[act_name]
            layer.activation = _FUSABLE_ACTIVATIONS[type(act)]
            if act_is_module_in_seq:
                parent._modules[act_name] = Identity()
    if input_shape is not None:
        reference = copy.deepcopy(model).eval()(sample.copy())
        result = fused(sample.copy())
        if not _close(result, reference, rtol, atol):
            raise RuntimeError(
                "fuse: the fused model's output differs from the original's on a test input. "
                "A BatchNorm registered after a Conv/Linear is not applied to its output in "
                "forward(); fuse the model with nn.Sequential ordering, or fold by hand.")
    return fused


def _structural_candidates(model):
    """(parent, layer, batch norm or None, activation or None, act replaceable) from
    registration order."""
    out = []
    for parent in model.modules():
        names = [n for n, m in parent._modules.items() if m is not None]
        in_sequential = isinstance(parent, Sequential)
        i = 0
        while i < len(names):
            layer = parent._modules[names[i]]
            if not isinstance(layer, _CONVS + (Linear,)) or layer.activation is not None:
                i += 1
                continue
            bn_name = act_name = None
            j = i + 1
            if j < len(names) and _foldable(layer, parent._modules[names[j]]):
                bn_name = names[j]
                j += 1
            if j < len(names) and type(parent._modules[names[j]]) in _FUSABLE_ACTIVATIONS:
                act_name = names[j]
            if bn_name is not None or act_name is not None:
                out.append([parent, names[i], bn_name, act_name, in_sequential])
            i = j if j > i + 1 else i + 1
    return out


def _structural_only(candidates):
    """Without a trace, activations are fused only inside Sequential containers."""
    out = []
    for parent, layer, bn, act, in_seq in candidates:
        act = act if in_seq else None
        if bn is not None or act is not None:
            out.append([parent, layer, bn, act, in_seq])
    return out


def _foldable(layer, bn):
    if not isinstance(bn, _BATCH_NORMS) or bn.running_mean is None or bn.activation is not None:
        return False
    features = layer.out_channels if isinstance(layer, _CONVS) else layer.out_features
    return bn.num_features == features


def _sample_input(model, input_shape):
    dtype = next((p.dtype for p in model.parameters()), np.dtype(np.float32))
    rng = np.random.default_rng(0)
    return rng.standard_normal(tuple(input_shape)).astype(dtype)


def _trace(model, sample):
    """Run forward once, recording each leaf module call: (module, input, output)."""
    calls = []
    originals = {}
    for m in model.modules():
        if m._modules:
            continue

        def recorder(*args, __m=m, __f=m.forward, **kwargs):
            out = __f(*args, **kwargs)
            calls.append((__m, args[0] if args else None, out))
            return out
        originals[id(m)] = m
        object.__setattr__(m, "forward", recorder)
    try:
        model(sample.copy())
    finally:
        for m in originals.values():
            object.__delattr__(m, "forward")
    return calls


def _confirm(candidates, calls):
    """Keep what the trace shows: the batch norm reads the layer's output, and
    the activation reads the pair's output."""
    outputs = {}
    inputs = {}
    count = {}
    for m, x, y in calls:
        outputs.setdefault(id(m), []).append(y)
        inputs.setdefault(id(m), []).append(x)
        count[id(m)] = count.get(id(m), 0) + 1
    confirmed = []
    for parent, layer_name, bn_name, act_name, in_seq in candidates:
        layer = parent._modules[layer_name]
        if count.get(id(layer)) != 1:
            continue
        last = outputs[id(layer)][0]
        if bn_name is not None:
            bn = parent._modules[bn_name]
            if count.get(id(bn)) != 1 or inputs[id(bn)][0] is not last:
                bn_name = None
            else:
                last = outputs[id(bn)][0]
        if act_name is not None:
            act = parent._modules[act_name]
            uses = [x is last for x in inputs.get(id(act), [])]
            if not any(uses):
                act_name = None
            else:
                in_seq = in_seq and count[id(act)] == 1
        if bn_name is not None or act_name is not None:
            confirmed.append([parent, layer_name, bn_name, act_name, in_seq])
    return confirmed


def fold_batch_norm(weight, bias, mean, var, eps, gamma=None, beta=None):
    """The weight and bias of a layer (output channels first) followed by an
    inference BatchNorm, as one layer: W' = W * s, b' = (b - mean) * s + beta,
    s = gamma / sqrt(var + eps); computed in float64, returned in W's dtype
    (bias None: no bias; gamma, beta None: 1 and 0). Used by fuse() and the
    ONNX importer."""
    scale = 1.0 / np.sqrt(np.asarray(var, np.float64) + eps)
    if gamma is not None:
        scale = scale * np.asarray(gamma, np.float64)
    b = 0.0 if bias is None else np.asarray(bias, np.float64)
    new_bias = (b - np.asarray(mean, np.float64)) * scale
    if beta is not None:
        new_bias = new_bias + np.asarray(beta, np.float64)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    new_weight = weight.astype(np.float64) * scale.reshape(shape)
    return new_weight.astype(weight.dtype), new_bias.astype(weight.dtype)


def _fold_batch_norm(layer, bn):
    weight, bias = fold_batch_norm(layer.weight, layer.bias, bn.running_mean, bn.running_var,
                                   bn.eps, bn.weight, bn.bias)
    layer.weight = weight
    if layer.bias is None:
        layer.register_parameter("bias", bias)
    else:
        layer.bias = bias


def _close(a, b, rtol, atol):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    finite = np.abs(b[np.isfinite(b)]) if b.dtype.kind in "fc" else np.abs(b)
    scale = max(1.0, float(np.max(finite))) if finite.size else 1.0   # Inf and NaN match exactly
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol * scale, equal_nan=True))
