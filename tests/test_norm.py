import numpy as np
import pytest

import fastcnn.functional as F
from fastcnn import nn

import _reference as ref
from conftest import assert_close, requires_torch, run_threads, torch

DTYPES = [np.float32, np.float64]
SHAPES = [(2, 3, 5, 7), (1, 13, 9, 9), (4, 16, 1, 1), (3, 8, 20), (2, 4, 3, 5, 6), (1, 32, 100, 100)]


def _inputs(shape, dtype, rng, offset=0.0):
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_train_and_eval(shape, dtype, rng):
    x, w, b = _inputs(shape, dtype, rng, 3.0)
    rm, rv = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
    y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.3)
    expected, mean, var = ref.batch_norm_train(x, w, b)
    assert_close(y, expected, x.size // shape[1])
    assert_close(rm, 0.3 * mean, 1)
    assert_close(rv, 0.7 + 0.3 * var, 1)
    assert_close(F.batch_norm(x, rm, rv, w, b), ref.batch_norm_eval(x, rm, rv, w, b), 1)
    assert_close(F.batch_norm(x, None, None, training=True), ref.batch_norm_train(x)[0],
                 x.size // shape[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_instance_group_layer_norm(shape, dtype, rng):
    x, w, b = _inputs(shape, dtype, rng, -1.0)
    spatial = x.size // (shape[0] * shape[1])
    if spatial > 1:
        assert_close(F.instance_norm(x), ref.instance_norm(x), spatial)
        assert_close(F.instance_norm(x, weight=w, bias=b), ref.instance_norm(x, w, b), spatial)
    for groups in {1, shape[1]} | ({2} if shape[1] % 2 == 0 else set()):
        assert_close(F.group_norm(x, groups, w, b), ref.group_norm(x, groups, w, b),
                     x.size // (shape[0] * groups))
        assert_close(F.group_norm(x, groups), ref.group_norm(x, groups), x.size // shape[0])
    norm_shape = shape[1:]
    lw = rng.standard_normal(norm_shape).astype(dtype)
    lb = rng.standard_normal(norm_shape).astype(dtype)
    assert_close(F.layer_norm(x, norm_shape, lw, lb), ref.layer_norm(x, norm_shape, lw, lb),
                 x.size // shape[0])
    assert_close(F.layer_norm(x, shape[-1:]), ref.layer_norm(x, shape[-1:]), shape[-1])
    assert_close(F.layer_norm(x, norm_shape, lw), ref.layer_norm(x, norm_shape, lw), x.size)


def test_group_norm_special_cases_equal_layer_and_instance_norm(rng):
    x, w, b = _inputs((2, 6, 7, 5), np.float64, rng)
    ln = F.layer_norm(x, x.shape[1:])
    np.testing.assert_allclose(F.group_norm(x, 1), ln, atol=1e-12)
    np.testing.assert_allclose(F.group_norm(x, 6), F.instance_norm(x), atol=1e-12)


@pytest.mark.parametrize("offset", [1e4, -1e5])
def test_variance_stays_accurate_with_large_offsets(offset, rng):
    x = (offset + rng.standard_normal((4, 3, 30, 30))).astype(np.float32)
    y = F.batch_norm(x, None, None, training=True)
    expected = ref.batch_norm_train(x)[0]
    np.testing.assert_allclose(y, expected, atol=2e-3)
    assert abs(float(y.std()) - 1) < 1e-3
    np.testing.assert_allclose(F.group_norm(x, 3), ref.group_norm(x, 3), atol=2e-3)
    np.testing.assert_allclose(F.layer_norm(x, (3, 30, 30)), ref.layer_norm(x, (3, 30, 30)), atol=2e-3)


@pytest.mark.parametrize("activation", ["relu", "relu6", "silu"])
def test_fused_activation(activation, rng):
    x, w, b = _inputs((2, 4, 9, 9), np.float32, rng)
    act = ref.ACTIVATIONS[activation]
    assert_close(F.group_norm(x, 2, w, b, activation=activation),
                 act(ref.group_norm(x, 2, w, b) * 1.0), 162)
    rm, rv = np.full(4, 0.5, np.float32), np.full(4, 2.0, np.float32)
    assert_close(F.batch_norm(x, rm, rv, w, b, activation=activation),
                 act(ref.batch_norm_eval(x, rm, rv, w, b)), 1)
    assert_close(F.instance_norm(x, activation=activation), act(ref.instance_norm(x)), 81)


def test_local_response_norm(rng):
    x = rng.standard_normal((2, 7, 4, 5)).astype(np.float32)
    for size in (1, 2, 3, 5, 9):
        assert_close(F.local_response_norm(x, size, 0.1, 0.6, 1.5),
                     ref.local_response_norm(x, size, 0.1, 0.6, 1.5), size)
    layer = nn.LocalResponseNorm(3)
    assert repr(layer) == "LocalResponseNorm(3, alpha=0.0001, beta=0.75, k=1.0)"
    assert_close(layer(x), ref.local_response_norm(x, 3), 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_local_response_norm_blocks_and_threads(dtype, rng):
    """Positions run in blocks of 256 with per-thread window sums: several
    blocks and a ragged last one (19 x 29 = 551 positions), every thread
    count giving the same bits, float32 and float64 against the reference."""
    x = (rng.standard_normal((3, 7, 19, 29)) * 3).astype(dtype)
    expected = ref.local_response_norm(x, 4, 0.05, 0.75, 1.2)
    results = run_threads(lambda: F.local_response_norm(x, 4, 0.05, 0.75, 1.2))
    assert_close(results[0], expected, 4)
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


@pytest.mark.parametrize("fn", [
    lambda x: F.batch_norm(x, None, None, training=True),
    lambda x: F.batch_norm(x, np.zeros(16, np.float32), np.ones(16, np.float32)),
    lambda x: F.group_norm(x, 4, activation="silu"),
    lambda x: F.instance_norm(x),
    lambda x: F.layer_norm(x, x.shape[1:]),
])
def test_identical_across_threads_and_in_place(fn, rng):
    x = rng.standard_normal((3, 16, 45, 47)).astype(np.float32)
    results = run_threads(lambda: fn(x))
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


def test_out_and_in_place(rng):
    x, w, b = _inputs((2, 4, 6, 6), np.float32, rng)
    expected = F.group_norm(x, 2, w, b)
    out = np.empty_like(x)
    assert F.group_norm(x, 2, w, b, out=out) is out
    np.testing.assert_array_equal(out, expected)
    a = x.copy()
    assert F.group_norm(a, 2, w, b, out=a) is a
    np.testing.assert_array_equal(a, expected)


def test_batch_norm_layers_running_stats_momentum_none(rng):
    layer = nn.BatchNorm2d(3, momentum=None)
    xs = [rng.standard_normal((4, 3, 5, 5)).astype(np.float32) + i for i in range(3)]
    for x in xs:
        layer(x)
    assert int(layer.num_batches_tracked) == 3
    stats = [ref.batch_norm_train(x) for x in xs]
    # momentum=None: the cumulative average of the batch statistics (the
    # initial values weigh nothing, the first factor being 1 / 1)
    np.testing.assert_allclose(layer.running_mean, np.mean([s[1] for s in stats], axis=0), atol=1e-5)
    np.testing.assert_allclose(layer.running_var, np.mean([s[2] for s in stats], axis=0), atol=1e-5)


def test_batch_norm_layer_modes(rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    layer = nn.BatchNorm2d(3)
    y_train = layer(x)
    assert_close(y_train, ref.batch_norm_train(x, layer.weight, layer.bias)[0], 100)
    layer.eval()
    assert_close(layer(x), ref.batch_norm_eval(x, layer.running_mean, layer.running_var,
                                               layer.weight, layer.bias), 1)
    untracked = nn.BatchNorm2d(3, track_running_stats=False).eval()
    assert untracked.running_mean is None
    assert_close(untracked(x), ref.batch_norm_train(x)[0], 100)
    assert list(nn.BatchNorm1d(5, affine=False).state_dict()) == ["running_mean", "running_var",
                                                                  "num_batches_tracked"]
    assert nn.BatchNorm1d(5)(np.ones((4, 5), np.float32) * np.arange(4, dtype=np.float32)[:, None]).shape == (4, 5)


def test_instance_norm_layer_with_running_stats(rng):
    layer = nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32) + 2
    y = layer(x)
    assert_close(y, ref.instance_norm(x, layer.weight, layer.bias), 36)
    assert_close(layer.running_mean, 0.1 * x.mean(axis=(2, 3)).mean(0), 1)
    layer.eval()
    assert_close(layer(x), ref.batch_norm_eval(x, layer.running_mean, layer.running_var,
                                               layer.weight, layer.bias), 1)
    assert layer(x[0]).shape == (3, 6, 6)


@pytest.mark.parametrize("call,error,match", [
    (lambda: nn.BatchNorm2d(3)(np.zeros((2, 4, 5, 5), np.float32)), ValueError,
     r"BatchNorm2d: expected input with 3 channels \(num_features\), got input of shape \(2, 4, 5, 5\)"),
    (lambda: nn.BatchNorm2d(3)(np.zeros((2, 3, 5), np.float32)), ValueError, r"expected 4D input \(got 3D"),
    (lambda: nn.BatchNorm1d(3)(np.zeros((1, 3), np.float32)), ValueError,
     "expected more than 1 value per channel when training"),
    (lambda: F.batch_norm(np.zeros((2, 3, 4), np.float32), np.zeros(4), np.ones(3)), ValueError,
     r"running_mean must have shape \(3,\)"),
    (lambda: F.batch_norm(np.zeros((2, 3, 4), np.float32), None, None), ValueError,
     "running_mean and running_var are required"),
    (lambda: nn.GroupNorm(3, 8), ValueError, r"num_channels \(8\) must be divisible by num_groups \(3\)"),
    (lambda: F.group_norm(np.zeros((2, 6, 4), np.float32), 4), ValueError,
     "divisible by num_groups"),
    (lambda: nn.GroupNorm(2, 6)(np.zeros((2, 4, 3), np.float32)), ValueError, r"\(N, 6, \.\.\.\)"),
    (lambda: F.layer_norm(np.zeros((2, 3, 4), np.float32), (3, 5)), ValueError,
     r"normalized_shape=\[3, 5\], expected input with shape \[\*, 3, 5\]"),
    (lambda: F.layer_norm(np.zeros((2, 3), np.float32), 3, np.ones(4, np.float32)), ValueError,
     r"weight must have shape \(3,\)"),
    (lambda: F.instance_norm(np.zeros((2, 3, 1), np.float32)), ValueError, "more than 1 spatial"),
    (lambda: F.group_norm(np.zeros((2, 6, 4), np.int32), 2), TypeError, "float32 or float64"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_eps_zero_is_allowed(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float64)
    assert_close(F.group_norm(x, 3, eps=0.0), ref.group_norm(x, 3, eps=0.0), 8)


@requires_torch
def test_parity_with_pytorch_after_several_steps(rng):
    ours = nn.Sequential(nn.BatchNorm2d(4), nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
                         nn.GroupNorm(2, 4), nn.LayerNorm((4, 6, 6)))
    theirs = torch.nn.Sequential(torch.nn.BatchNorm2d(4),
                                 torch.nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
                                 torch.nn.GroupNorm(2, 4), torch.nn.LayerNorm((4, 6, 6)))
    for p in ours.parameters():
        p[...] = rng.standard_normal(p.shape)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    for step in range(4):
        x = (rng.standard_normal((3, 4, 6, 6)) * (step + 1) + step).astype(np.float32)
        y = ours(x)
        with torch.no_grad():
            ty = theirs(torch.from_numpy(x)).numpy()
        assert_close(y, ty, 144)
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-5, atol=1e-6)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    with torch.no_grad():
        assert_close(ours(x), theirs(torch.from_numpy(x)).numpy(), 144)
