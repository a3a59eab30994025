"""Weight initialisation, as torch.nn.init, drawing from a NumPy Generator.

Layers draw from `default_generator()` unless given one; `fastcnn.manual_seed`
reseeds it so model construction is reproducible.
"""
import math

import numpy as np

from fastcnn._random import default_generator, manual_seed

__all__ = ["manual_seed", "default_generator", "calculate_gain", "uniform_", "normal_",
           "constant_", "zeros_", "ones_", "kaiming_uniform_", "kaiming_normal_",
           "xavier_uniform_", "xavier_normal_"]



def _fan_in_out(array):
    if array.ndim < 2:
        raise ValueError("fan in and fan out need an array with at least 2 dimensions, "
                         f"got shape {array.shape}")
    receptive = int(np.prod(array.shape[2:])) if array.ndim > 2 else 1
    return array.shape[1] * receptive, array.shape[0] * receptive


def calculate_gain(nonlinearity, param=None):
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _fill(array, values):
    array[...] = values
    return array


def uniform_(array, a=0.0, b=1.0, generator=None):
    g = generator or default_generator()
    return _fill(array, g.uniform(a, b, array.shape))


def normal_(array, mean=0.0, std=1.0, generator=None):
    g = generator or default_generator()
    return _fill(array, g.normal(mean, std, array.shape))


def constant_(array, val):
    return _fill(array, val)


def zeros_(array):
    return _fill(array, 0)


def ones_(array):
    return _fill(array, 1)


def kaiming_uniform_(array, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    fan_in, fan_out = _fan_in_out(array)
    fan = fan_in if mode == "fan_in" else fan_out
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0
    bound = math.sqrt(3.0) * std
    return uniform_(array, -bound, bound, generator)


def kaiming_normal_(array, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    fan_in, fan_out = _fan_in_out(array)
    fan = fan_in if mode == "fan_in" else fan_out
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0
    return normal_(array, 0.0, std, generator)


def xavier_uniform_(array, gain=1.0, generator=None):
    fan_in, fan_out = _fan_in_out(array)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(array, -bound, bound, generator)


def xavier_normal_(array, gain=1.0, generator=None):
    fan_in, fan_out = _fan_in_out(array)
    return normal_(array, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)
