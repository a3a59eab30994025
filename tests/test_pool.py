import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn

from _reference import adaptive_pool_nd, pool_nd
from conftest import assert_close, requires_torch, run_threads, torch

DTYPES = [np.float32, np.float64]

# (input shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 9, 11), 3, 2, 1, 1, False),          # the ResNet stem pool, odd sizes
    ((1, 13, 8, 8), 2, None, 0, 1, False),        # 2x2, stride = kernel
    ((1, 4, 10, 7), (3, 2), (2, 1), (1, 1), 1, True),
    ((2, 2, 11, 11), 3, 2, 1, 2, False),          # dilation
    ((1, 3, 9, 9), 2, 3, 0, 1, False),            # stride > kernel
    ((1, 2, 7, 7), 3, 2, 1, 1, True),             # ceil_mode with padding
    ((1, 1, 5, 5), 5, 1, 2, 1, False),            # padding = kernel // 2, window = input
    ((3, 5, 6, 9), (1, 3), (1, 2), (0, 1), (1, 1), True),
    # rows wide enough for the 16-output vector kernel (strides 1 and 2, dilation)
    ((1, 3, 5, 67), 3, 2, 1, 1, False),
    ((1, 2, 4, 41), (2, 4), 1, (1, 2), 1, True),
    ((2, 2, 6, 53), 3, (1, 2), 1, 2, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool2d_matches_reference(case, dtype, rng):
    shape, k, s, p, d, ceil = case
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ref, ref_idx = pool_nd(x, k, s, p, d, ceil, "max")
    np.testing.assert_array_equal(y, ref.astype(dtype))
    np.testing.assert_array_equal(idx, ref_idx)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, d, ceil), y)


@pytest.mark.parametrize("nd,shape,k,s,p,d,ceil", [
    (1, (2, 3, 17), 3, 2, 1, 1, False),
    (1, (1, 4, 10), 4, 3, 2, 2, True),
    (3, (1, 2, 5, 6, 7), 3, 2, 1, 1, False),
    (3, (2, 3, 4, 5, 6), (2, 3, 1), (1, 2, 1), (1, 1, 0), 1, True),
])
def test_max_pool_1d_3d(nd, shape, k, s, p, d, ceil, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    fn = getattr(F, f"max_pool{nd}d")
    y, idx = fn(x, k, s, p, d, ceil, return_indices=True)
    ref, ref_idx = pool_nd(x, k, s, p, d, ceil, "max")
    np.testing.assert_array_equal(y, ref.astype(np.float32))
    np.testing.assert_array_equal(idx, ref_idx)


def test_max_pool_nan_propagates_with_pytorch_index(rng):
    x = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 1, 2] = np.nan
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    ref, ref_idx = pool_nd(x, 3, 2, 1, 1, False, "max")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(idx, ref_idx)
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 1, 1])


@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (5, 1, 2, 1), (4, 3, 2, 1), (3, 1, 1, 2),
                                     ((2, 5), 1, (1, 2), 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_2d_rows_swept_tap_by_tap(k, s, p, d, dtype, rng):
    """2-D max and average pooling without indices (strides other than 2)
    sweep each tap over the whole output row, a vector at a time: every
    column (interior and border, all positions of a vector) must equal the
    reference, NaN and +-inf included, for any thread count."""
    x = rng.standard_normal((2, 3, 9, 70)).astype(dtype)
    x[0, 1, 4, ::13] = np.nan
    x[1, 0, 2, 5::7] = np.inf
    x[1, 2, :, 30:33] = -np.inf
    ref, _ = pool_nd(x, k, s, p, d, False, "max")
    for y in run_threads(lambda: F.max_pool2d(x, k, s, p, d)):
        np.testing.assert_array_equal(y, ref.astype(dtype))
    if d == 1:
        finite = x.copy()
        finite[~np.isfinite(finite)] = 7.0
        finite[0, 1, 4, ::13] = np.nan
        for include in (True, False):
            ref_avg, _ = pool_nd(finite, k, s, p, 1, False, "avg", include)
            for a in run_threads(lambda: F.avg_pool2d(finite, k, s, p, False, include)):
                np.testing.assert_array_equal(np.isnan(a), np.isnan(ref_avg))
                ok = ~np.isnan(ref_avg)
                assert_close(a[ok], ref_avg[ok], 25)


AVG_CASES = [
    ((2, 3, 9, 11), 3, 2, 1, False, True, None),
    ((1, 13, 8, 8), 2, None, 0, False, True, None),
    ((1, 4, 10, 7), (3, 2), (2, 1), (1, 1), True, True, None),
    ((1, 4, 10, 7), (3, 2), (2, 1), (1, 1), True, False, None),
    ((1, 2, 7, 7), 3, 2, 1, True, False, None),
    ((2, 2, 9, 9), 3, 3, 1, False, True, 4),      # divisor_override
    ((1, 3, 9, 9), 2, 3, 0, False, True, None),   # stride > kernel
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool2d_matches_reference(case, dtype, rng):
    shape, k, s, p, ceil, include, divisor = case
    x = rng.standard_normal(shape).astype(dtype)
    y = F.avg_pool2d(x, k, s, p, ceil, include, divisor)
    ref, _ = pool_nd(x, k, s, p, 1, ceil, "avg", include, divisor)
    assert_close(y, ref, 9)


@pytest.mark.parametrize("nd,shape,k,s,p,ceil,include", [
    (1, (2, 3, 17), 3, 2, 1, False, True),
    (1, (1, 4, 10), 4, 3, 2, True, False),
    (3, (1, 2, 5, 6, 7), 3, 2, 1, True, False),
    (3, (2, 3, 4, 5, 6), (2, 3, 1), (1, 2, 1), (1, 1, 0), False, True),
])
def test_avg_pool_1d_3d(nd, shape, k, s, p, ceil, include, rng):
    x = rng.standard_normal(shape)
    y = getattr(F, f"avg_pool{nd}d")(x, k, s, p, ceil, include)
    assert_close(y, pool_nd(x, k, s, p, 1, ceil, "avg", include)[0], 27)


@pytest.mark.parametrize("nd,shape,p,k,s,ceil", [
    (2, (2, 3, 9, 8), 2.0, 3, 2, False),
    (2, (1, 2, 7, 7), 3.0, 2, 2, True),
    (2, (1, 2, 6, 6), 1.0, (2, 3), None, False),
    (1, (2, 3, 11), 2.0, 3, 2, True),
])
def test_lp_pool(nd, shape, p, k, s, ceil, rng):
    x = np.abs(rng.standard_normal(shape))
    y = getattr(F, f"lp_pool{nd}d")(x, p, k, s, ceil)
    assert_close(y, pool_nd(x, k, s, 0, 1, ceil, "lp", True, None, p)[0], 9)


@pytest.mark.parametrize("nd,shape,out", [
    (2, (2, 3, 7, 9), (3, 4)),
    (2, (1, 5, 10, 10), 1),            # global average: its own fast path
    (2, (2, 37, 7, 7), 1),             # 49 values a plane: whole vectors and a tail
    (2, (1, 4, 1, 3), 1),              # fewer values than a vector's lanes
    (2, (1, 5, 13, 13), (5, None)),    # None keeps the input size
    (2, (1, 2, 5, 5), (7, 8)),         # larger than the input
    (1, (2, 3, 11), 4),
    (3, (1, 2, 5, 6, 7), (2, 3, 4)),
    (3, (1, 2, 3, 3, 3), 1),
])
def test_adaptive_pools(nd, shape, out, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    sizes = out if isinstance(out, tuple) else (out,) * nd
    sizes = tuple(s if o is None else o for o, s in zip(sizes, shape[2:]))
    avg = getattr(F, f"adaptive_avg_pool{nd}d")(x, out)
    assert_close(avg, adaptive_pool_nd(x, sizes, "avg")[0], 64)
    for a in run_threads(lambda: getattr(F, f"adaptive_avg_pool{nd}d")(x, out)):
        np.testing.assert_array_equal(a, avg)
    xd = x.astype(np.float64)
    assert_close(getattr(F, f"adaptive_avg_pool{nd}d")(xd, out), adaptive_pool_nd(xd, sizes, "avg")[0], 64)
    mx, idx = getattr(F, f"adaptive_max_pool{nd}d")(x, out, True)
    ref, ref_idx = adaptive_pool_nd(x, sizes, "max")
    np.testing.assert_array_equal(mx, ref.astype(np.float32))
    np.testing.assert_array_equal(idx, ref_idx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nd,shape,out", [(2, (2, 3, 13, 17), (4, 5)), (2, (2, 3, 13, 17), (13, 17)),
                                          (2, (2, 3, 13, 17), (20, 3)), (3, (1, 3, 5, 6, 7), (2, 4, 3))])
def test_adaptive_max_values_without_indices(nd, shape, out, dtype, rng):
    """Without indices, adaptive max pooling reduces the window rows column
    by column first: its values (ties, -inf windows, NaN) must be those of
    the window-by-window path and the reference, for any thread count."""
    x = rng.integers(-2, 3, shape).astype(dtype)
    x[0, 0].flat[20:26] = np.nan
    x[1 if shape[0] > 1 else 0, 1] = -np.inf
    fn = getattr(F, f"adaptive_max_pool{nd}d")
    ref, _ = adaptive_pool_nd(x, out, "max")
    with_indices, _ = fn(x, out, True)
    for y in run_threads(lambda: fn(x, out)):
        np.testing.assert_array_equal(y, ref.astype(dtype))
        np.testing.assert_array_equal(y, with_indices)
    assert np.isnan(ref).any() and np.isneginf(ref).any()


def test_global_average_pool_large_plane_accuracy(rng):
    x = (1e4 + rng.standard_normal((2, 3, 112, 112))).astype(np.float32)
    y = F.adaptive_avg_pool2d(x, 1)
    assert_close(y, x.astype(np.float64).mean(axis=(2, 3), keepdims=True), 1)


@pytest.mark.parametrize("fn,kwargs", [
    (F.max_pool2d, dict(kernel_size=3, stride=2, padding=1)),
    (F.avg_pool2d, dict(kernel_size=3, stride=2, padding=1)),
    (F.adaptive_avg_pool2d, dict(output_size=(3, 5))),
    (F.adaptive_avg_pool2d, dict(output_size=1)),
    (F.lp_pool2d, dict(norm_type=2, kernel_size=2)),
])
def test_thread_counts_and_out_and_unbatched(fn, kwargs, rng):
    x = rng.standard_normal((3, 5, 15, 13)).astype(np.float32)
    results = run_threads(lambda: fn(x, **kwargs))
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)
    out = np.empty_like(results[0])
    assert fn(x, **kwargs, out=out) is out
    np.testing.assert_array_equal(out, results[0])
    np.testing.assert_array_equal(fn(x[0], **kwargs), results[0][0])


def test_max_pool_large_batch_many_planes(rng):
    x = rng.standard_normal((4, 64, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(F.max_pool2d(x, 2), x.reshape(4, 64, 14, 2, 14, 2).max(axis=(3, 5)))


@pytest.mark.parametrize("call,error,match", [
    (lambda x: F.max_pool2d(x, 3, padding=2), ValueError,
     "pad should be at most half of effective kernel size, but got pad=2, kernel_size=3"),
    (lambda x: F.max_pool2d(x, 0), ValueError, "kernel_size must be positive"),
    (lambda x: F.max_pool2d(x, 3, stride=0), ValueError, "stride must be positive"),
    (lambda x: F.max_pool2d(x, 3, dilation=0), ValueError, "dilation must be positive"),
    (lambda x: F.max_pool2d(x, 9), ValueError, r"Given input size: \(3x8x8\). Calculated output size: \(3x0x0\). Output size is too small"),
    (lambda x: F.max_pool2d(x[0, 0, 0], 2), ValueError, "expected input of shape"),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor must be not zero"),
    (lambda x: F.adaptive_avg_pool2d(x, 0), ValueError, "output_size must be positive"),
    (lambda x: F.adaptive_max_pool2d(x, (2, -1)), ValueError, "output_size must be positive"),
    (lambda x: F.lp_pool2d(x, -1, 2), ValueError, "norm_type must be positive"),
    (lambda x: F.max_pool2d(x.astype(np.int32), 2), TypeError, "float32 or float64, got int32"),
])
def test_bad_arguments(call, error, match):
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(error, match=match):
        call(x)


def test_layers():
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert repr(nn.MaxPool2d(3, 2, 1)) == "MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)"
    assert repr(nn.AvgPool2d(2)) == "AvgPool2d(kernel_size=2, stride=2, padding=0)"
    assert repr(nn.AdaptiveAvgPool2d((1, 1))) == "AdaptiveAvgPool2d(output_size=(1, 1))"
    np.testing.assert_array_equal(nn.MaxPool2d(2)(x), F.max_pool2d(x, 2))
    y, i = nn.MaxPool2d(2, return_indices=True)(x)
    np.testing.assert_array_equal(i, F.max_pool2d(x, 2, return_indices=True)[1])
    np.testing.assert_array_equal(nn.AvgPool3d(1)(x[None]), x[None])
    assert nn.AdaptiveAvgPool2d(1)(x).shape == (2, 3, 1, 1)
    assert nn.LPPool2d(2, 2)(x).shape == (2, 3, 4, 4)
    assert nn.AdaptiveMaxPool1d(3)(x[:, :, 0]).shape == (2, 3, 3)


WINDOW_CASES = [  # (kernel, stride, padding, dilation, ceil_mode) over (D, H, W)
    (3, 2, 1, 1, False),
    (2, 3, 1, 1, True),                           # stride > kernel, ceil_mode with padding
    (3, 1, 1, 2, False),                          # dilation with padding
    ((2, 3, 3), (1, 2, 3), (1, 1, 1), (1, 2, 1), True),
]


@pytest.mark.parametrize("case", WINDOW_CASES)
def test_general_window_path_ties_inf_nan(case, rng):
    """The general path (indices, 3-D, LP) sweeps taps over whole output
    rows; each window must still see its taps in order: ties keep the first
    maximum, a window of -inf reports its first tap inside the input, the
    last NaN wins; the same for any thread count."""
    k, s, p, d, ceil = case
    x = rng.integers(-2, 3, (2, 3, 5, 7, 39)).astype(np.float32)     # many ties
    x[0, 0, :2] = -np.inf
    x[1, 2].flat[::11] = np.nan
    ref, ref_idx = pool_nd(x, k, s, p, d, ceil, "max")
    for y, idx in run_threads(lambda: F.max_pool3d(x, k, s, p, d, ceil, return_indices=True)):
        np.testing.assert_array_equal(y, ref.astype(np.float32))
        np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(F.max_pool3d(x, k, s, p, d, ceil), y)
    if torch is not None:
        ty, tidx = torch.nn.functional.max_pool3d(torch.from_numpy(x), k, s, p, d, ceil,
                                                  return_indices=True)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())
    if d == 1:
        for include in (True, False):
            ref_avg, _ = pool_nd(x[1:, :2], k, s, p, 1, ceil, "avg", include)
            for a in run_threads(lambda: F.avg_pool3d(x[1:, :2], k, s, p, ceil, include)):
                assert_close(a, ref_avg, 4)


@requires_torch
@pytest.mark.parametrize("case", MAX_CASES)
def test_parity_with_pytorch(case, rng):
    shape, k, s, p, d, ceil = case
    x = rng.standard_normal(shape).astype(np.float32)
    t = torch.from_numpy(x)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(t, k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    for include in (True, False):
        if d == 1:
            a = F.avg_pool2d(x, k, s, p, ceil, include)
            ta = torch.nn.functional.avg_pool2d(t, k, s, p, ceil, include).numpy()
            assert_close(a, ta, 9)
    assert_close(F.adaptive_avg_pool2d(x, (3, 2)),
                 torch.nn.functional.adaptive_avg_pool2d(t, (3, 2)).numpy(), 20)
    assert_close(F.lp_pool2d(np.abs(x), 2, 2, None, ceil),
                 torch.nn.functional.lp_pool2d(t.abs(), 2, 2, None, ceil).numpy(), 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(64, 6, 28, 28), (64, 16, 10, 10), (1, 3, 2, 2),
                                   (3, 5, 2, 4), (1, 1, 2, 34), (2, 7, 12, 130), (5, 3, 6, 2)])
def test_2x2_pools_over_whole_planes(shape, dtype, rng):
    """2x2 windows tiling the planes exactly run over all planes' rows at
    once; every size of row, NaN, divisor_override, any thread count."""
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::37] = np.nan
    ref_max, _ = pool_nd(x, 2, 2, 0, 1, False, "max")
    ref_avg, _ = pool_nd(x, 2, 2, 0, 1, False, "avg")
    for y in run_threads(lambda: F.max_pool2d(x, 2)):
        np.testing.assert_array_equal(y, ref_max.astype(dtype))
    for y in run_threads(lambda: F.avg_pool2d(x, 2)):
        assert_close(y, ref_avg, 4)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ref_avg))
    y = F.avg_pool2d(x, 2, divisor_override=3)
    assert_close(y, ref_avg * 4 / 3, 4)


@pytest.mark.parametrize("layer,shape", [
    (nn.MaxPool2d(3, 2, 1), (2, 3, 9, 11)),
    (nn.MaxPool2d(2, ceil_mode=True), (1, 4, 7, 5)),
    (nn.MaxPool1d(3, 2, 1, dilation=2), (2, 3, 12)),
    (nn.MaxPool3d(2, 1), (1, 2, 4, 5, 3)),
    (nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 9, 8)),
    (nn.AvgPool2d(2, divisor_override=3), (1, 5, 6, 6)),
    (nn.AvgPool1d(3, 2, 1, ceil_mode=True), (2, 3, 10)),
    (nn.AvgPool3d(2), (1, 2, 4, 4, 4)),
    (nn.LPPool2d(3, 2), (1, 3, 7, 7)),
    (nn.LPPool1d(2.5, 3), (2, 3, 9)),
    (nn.AdaptiveAvgPool2d(1), (2, 17, 7, 7)),
    (nn.AdaptiveAvgPool2d((3, None)), (1, 3, 8, 5)),
    (nn.AdaptiveAvgPool1d(4), (2, 3, 10)),
    (nn.AdaptiveAvgPool3d((1, 2, 3)), (1, 2, 4, 5, 6)),
    (nn.AdaptiveMaxPool2d((2, 3)), (2, 3, 7, 8)),
    (nn.AdaptiveMaxPool1d(3), (1, 4, 10)),
    (nn.AdaptiveMaxPool3d(2), (1, 2, 4, 4, 5)),
])
def test_compiled_plan_binds_pooling_once(layer, shape, rng):
    """A plan runs pooling as a kernel call with its arguments checked and its
    workspace allocated at compile time: the same results, bit for bit, as
    the eager layer (NaN included), on every call and thread count."""
    model = nn.Sequential(layer, nn.ReLU()).eval()
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[3] = np.nan
    plan = fastcnn.compile(model, shape)
    expected = model(x)
    np.testing.assert_array_equal(plan(x), expected)
    np.testing.assert_array_equal(plan(x + 0), expected)
    for got in run_threads(lambda: plan(x)):
        np.testing.assert_array_equal(got, expected)
    with plan._executor() as executor:
        kinds = [step.__qualname__.split(".")[-3] for step in executor.steps]
    assert "_pool_step" in kinds


def test_compiled_plan_keeps_indices_pooling_as_called(rng):
    class WithIndices(nn.Module):
        def forward(self, x):
            y, idx = F.max_pool2d(x, 2, return_indices=True)
            return y + idx.astype(np.float32)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    model = WithIndices().eval()
    plan = fastcnn.compile(model, x.shape)
    np.testing.assert_array_equal(plan(x), model(x))
    with plan._executor() as executor:
        assert "_pool_step" not in [s.__qualname__.split(".")[-3] for s in executor.steps]
