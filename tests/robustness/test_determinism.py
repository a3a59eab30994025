"""Determinism: every op gives bit-identical results for 1, 2, 3 and 4
threads and across repeated runs (work is split by shape, never by thread
count, and each output is summed in one fixed order)."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import models
from fastcnn._functional.conv import _conv

R = np.random.default_rng(11)


_MADE = {}


def a(*shape, low=None):
    """A fixed random array per (shape, low): the same input on every call."""
    key = (shape, low)
    if key not in _MADE:
        x = R.standard_normal(shape).astype(np.float32)
        _MADE[key] = np.abs(x) + low if low is not None else x
    return _MADE[key]


X4 = a(3, 16, 23, 21)
X_BIG = a(2, 64, 28, 28)
W3 = a(32, 16, 3, 3) * 0.1
W_BIG = a(64, 64, 3, 3) * 0.05

CASES = {
    **{f"conv2d {alg}": (lambda alg=alg: _conv(2, "conv2d", X_BIG, W_BIG, None, 1, 1, 1, 1, None,
                                              "relu", algorithm=alg))
       for alg in ("im2col", "winograd", "blocked", "blocked_oc")},
    "conv2d 1x1": lambda: F.conv2d(X_BIG, a(32, 64, 1, 1)),
    "conv2d depthwise": lambda: F.conv2d(X_BIG, a(64, 1, 3, 3), None, 2, 1, 1, 64),
    "conv2d strided dilated grouped": lambda: F.conv2d(X4, a(8, 8, 3, 3), a(8), 2, 2, 2, 2),
    "conv1d": lambda: F.conv1d(a(4, 8, 301), a(16, 8, 5), None, 2, 2),
    "conv3d": lambda: F.conv3d(a(2, 4, 9, 10, 11), a(6, 4, 3, 3, 3), None, 1, 1),
    "max_pool2d": lambda: F.max_pool2d(X_BIG, 3, 2, 1),
    "max_pool2d indices": lambda: F.max_pool2d(X4, 2, return_indices=True)[1],
    "avg_pool2d": lambda: F.avg_pool2d(X4, 3, 2, 1, ceil_mode=True),
    "lp_pool2d": lambda: F.lp_pool2d(np.abs(X4), 2.5, 3, 2),
    "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(X4, (5, 7)),
    "global average": lambda: F.adaptive_avg_pool2d(X_BIG, 1),
    "adaptive_max_pool3d": lambda: F.adaptive_max_pool3d(a(2, 3, 8, 9, 10), 3),
    **{name: (lambda name=name: getattr(F, name)(X_BIG))
       for name in ("relu", "relu6", "elu", "selu", "celu", "sigmoid", "tanh", "silu",
                    "hardswish", "hardsigmoid", "gelu", "mish", "softplus", "leaky_relu")},
    "softmax channels": lambda: F.softmax(X_BIG, 1),
    "log_softmax rows": lambda: F.log_softmax(a(300, 1000), 1),
    "prelu": lambda: F.prelu(X_BIG, a(64)),
    "linear": lambda: F.linear(a(257, 300), a(130, 300), a(130)),
    "batch_norm train": lambda: F.batch_norm(X_BIG, None, None, a(64), a(64), True),
    "batch_norm eval": lambda: F.batch_norm(X_BIG, a(64), a(64, low=0.5), None, None, False),
    "instance_norm": lambda: F.instance_norm(X_BIG),
    "group_norm": lambda: F.group_norm(X_BIG, 8, a(64), a(64), activation="silu"),
    "layer_norm": lambda: F.layer_norm(X_BIG, (64, 28, 28)),
    "local_response_norm": lambda: F.local_response_norm(X4, 5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_is_bit_identical_for_any_thread_count(name):
    fn = CASES[name]
    results = []
    for n in (1, 2, 3, 4, 2, 1):
        with fastcnn.threads(n):
            results.append(np.array(fn()))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "groupnorm_cnn"])
def test_compiled_networks_are_bit_identical_for_any_thread_count(name):
    ctor, sample = models.REFERENCE_NETWORKS[name]
    fastcnn.manual_seed(0)
    model = ctor().eval()
    shape = (2,) + (sample if name == "groupnorm_cnn" else (3, 64, 64))
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    plan = fastcnn.compile(model, shape)
    results = []
    for n in (1, 2, 3, 4, 1):
        with fastcnn.threads(n):
            results.append(plan(x))
            results.append(model(x))
    for k in range(2, len(results)):
        np.testing.assert_array_equal(results[k], results[k % 2])
