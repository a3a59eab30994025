import warnings

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn

import _reference as ref
from conftest import assert_close, requires_torch, run_threads, torch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape,out_features", [((4, 7), 5), ((7,), 3), ((2, 3, 9), 11),
                                                  ((64, 300), 100), ((1, 1), 1), ((0, 5), 4),
                                                  ((3, 513), 1000),
                                                  # one row: the matrix-vector kernel, with
                                                  # ragged rows and tails; no inputs
                                                  ((1, 1283), 1003), ((1, 0), 9),
                                                  # several ragged output tiles
                                                  ((1000, 300), 770), ((3, 257, 129), 33)])
def test_linear_matches_reference(x_shape, out_features, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((out_features, x_shape[-1])).astype(dtype)
    b = rng.standard_normal(out_features).astype(dtype)
    y = F.linear(x, w, b)
    assert y.shape == x_shape[:-1] + (out_features,) and y.dtype == dtype
    assert_close(y, ref.linear(x, w, b), x_shape[-1])
    assert_close(F.linear(x, w), ref.linear(x, w), x_shape[-1])
    results = run_threads(lambda: F.linear(x, w, b))
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


def test_linear_fused_relu_and_out(rng):
    x = rng.standard_normal((5, 8)).astype(np.float32)
    w = rng.standard_normal((6, 8)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    out = np.empty((5, 6), np.float32)
    assert F.linear(x, w, b, out=out, activation="relu") is out
    assert_close(out, np.maximum(ref.linear(x, w, b), 0), 8)


def test_linear_zero_in_features():
    y = F.linear(np.zeros((3, 0), np.float32), np.zeros((4, 0), np.float32), np.ones(4, np.float32))
    np.testing.assert_array_equal(y, np.ones((3, 4), np.float32))


def test_linear_errors():
    x = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match=r"linear: input of shape \(2, 5\) has 5 features in its last dimension, but weight \(3, 4\) expects 4"):
        F.linear(x, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"^Linear: input of shape \(2, 5\) has 5 features"):
        nn.Linear(4, 3)(x)
    with pytest.raises(TypeError, match="dtype float32 does not match weight dtype float64"):
        F.linear(x, np.zeros((3, 5)))
    with pytest.raises(ValueError, match="weight must have shape"):
        F.linear(x, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        F.linear(x, np.zeros((3, 5), np.float32), np.zeros(2, np.float32))


def test_linear_layer_init_and_repr():
    fastcnn.manual_seed(0)
    layer = nn.Linear(100, 20)
    bound = 1 / np.sqrt(100)
    assert layer.weight.shape == (20, 100) and np.abs(layer.weight).max() <= bound
    assert np.abs(layer.bias).max() <= bound
    assert repr(layer) == "Linear(in_features=100, out_features=20, bias=True)"
    assert nn.Linear(3, 2, bias=False).bias is None
    assert list(layer.state_dict()) == ["weight", "bias"]


def test_flatten_unflatten(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    assert F.flatten(x).shape == (120,)
    assert F.flatten(x, 1).shape == (2, 60)
    assert F.flatten(x, 1, 2).shape == (2, 12, 5)
    assert np.shares_memory(F.flatten(x, 1), x)
    assert nn.Flatten()(x).shape == (2, 60)
    assert F.flatten(np.float32(3)).shape == (1,)
    assert F.unflatten(np.zeros((2, 12)), 1, (3, -1)).shape == (2, 3, 4)
    assert nn.Unflatten(1, (3, 4))(np.zeros((2, 12))).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="start_dim .* cannot come after end_dim"):
        F.flatten(x, 3, 1)
    with pytest.raises(ValueError, match="out of range"):
        F.flatten(x, 4)
    with pytest.raises(ValueError, match="multiply to 10"):
        F.unflatten(np.zeros((2, 12)), 1, (2, 5))


def test_dropout_eval_is_identity_and_training_scales(rng):
    x = np.ones((200, 500), np.float32)
    layer = nn.Dropout(0.3)
    layer.eval()
    assert layer(x) is x
    layer.train()
    fastcnn.manual_seed(5)
    y = layer(x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    fastcnn.manual_seed(5)
    np.testing.assert_array_equal(layer(x), y)
    layer.generator = np.random.default_rng(1)
    assert not np.array_equal(layer(x), y)
    assert np.count_nonzero(F.dropout(x, 1.0)) == 0
    assert F.dropout(x, 0.0) is x


def test_dropout2d_drops_whole_channels():
    x = np.ones((8, 50, 3, 3), np.float32)
    y = F.dropout2d(x, 0.5)
    per_channel = y.reshape(8, 50, 9)
    assert np.all((per_channel == 0).all(-1) | (per_channel == 2).all(-1))
    assert 0.3 < (per_channel[..., 0] == 0).mean() < 0.7
    assert F.dropout3d(np.ones((2, 3, 2, 2, 2), np.float32), 0.5).shape == (2, 3, 2, 2, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn,shape", [(F.dropout1d, (3, 5, 40)), (F.dropout2d, (2, 7, 9, 11)),
                                      (F.dropout2d, (7, 9, 11)), (F.dropout3d, (2, 3, 4, 5, 6))])
def test_channel_dropout_values(fn, shape, dtype, rng):
    """Whole channels kept and scaled by 1 / (1 - p), exactly as the mask the
    generator draws says; the same for any thread count, in place, and for a
    non-contiguous input."""
    x = rng.standard_normal(shape).astype(dtype)
    nd = {F.dropout1d: 1, F.dropout2d: 2, F.dropout3d: 3}[fn]
    lead = shape[:len(shape) - nd]
    keep = np.random.default_rng(9).random(lead) >= 0.3
    expected = x * (keep.astype(dtype) * dtype(1 / 0.7)).reshape(lead + (1,) * nd)
    for y in run_threads(lambda: fn(x, 0.3, generator=np.random.default_rng(9))):
        np.testing.assert_array_equal(y, expected)
    a = x.copy()
    assert fn(a, 0.3, inplace=True, generator=np.random.default_rng(9)) is a
    np.testing.assert_array_equal(a, expected)
    t = np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)    # same values, strided
    np.testing.assert_array_equal(fn(t, 0.3, generator=np.random.default_rng(9)), expected)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("fn,shape", [(F.dropout, (4, 6)), (F.dropout1d, (4, 6, 3))])
def test_dropout_of_inf_and_huge_values_is_ieee_without_warnings(fn, shape, inplace):
    """A dropped +-inf gives NaN (0 * inf, as PyTorch), a kept huge value
    overflows to inf; NumPy's floating-point warnings must not reach the
    caller. The strided input takes the NumPy path."""
    x = np.full(shape, np.inf, np.float32)
    x[1] = -np.inf
    x[2] = 3e38
    view = np.swapaxes(np.ascontiguousarray(np.swapaxes(x, 0, 1)), 0, 1)
    for a in (x.copy(), view.copy() if inplace else view):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = fn(a, 0.5, inplace=inplace, generator=np.random.default_rng(3))
        kept = (y != 0) & ~np.isnan(y)
        assert np.isnan(y[:2][~kept[:2]]).all() and np.isinf(y[kept]).all()
        assert (~kept).any() and kept.any()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        F.dropout(np.ones(3, np.float32), p)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(p)


@requires_torch
def test_linear_parity_with_pytorch(rng):
    layer = nn.Linear(37, 19)
    theirs = torch.nn.Linear(37, 19)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = rng.standard_normal((4, 6, 37)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    assert_close(layer(x), expected, 37)
