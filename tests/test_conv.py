import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn
from fastcnn._functional.conv import _conv as _conv_impl

from _reference import conv_nd, ACTIVATIONS
from conftest import assert_close, requires_torch, run_threads, torch

DTYPES = [np.float32, np.float64]

# (N, C_in, C_out, spatial, kernel, stride, padding, dilation, groups)
CONV2D_CASES = [
    (1, 1, 1, (5, 5), (1, 1), 1, 0, 1, 1),            # smallest
    (2, 3, 13, (9, 11), (3, 3), 1, 1, 1, 1),          # odd channels, non-square input
    (1, 16, 32, (8, 8), (3, 3), 2, 1, 1, 1),          # stride 2
    (1, 32, 16, (9, 9), (3, 3), 4, 1, 1, 1),          # stride > kernel
    (1, 13, 13, (7, 9), (3, 3), 1, 1, 1, 13),         # depthwise
    (2, 4, 8, (10, 7), (3, 3), (2, 1), 1, 1, 4),      # depthwise, channel multiplier 2
    (1, 32, 32, (6, 6), (1, 1), 1, 0, 1, 1),          # 1x1 GEMM path
    (3, 16, 24, (5, 7), (1, 1), 1, 0, 1, 2),          # grouped 1x1
    (1, 6, 9, (12, 10), (5, 5), 3, 2, 2, 3),          # groups with 2 channels each (direct)
    (2, 16, 16, (7, 7), (3, 3), 1, (1, 2), (2, 1), 2),  # grouped im2col, dilation
    (1, 3, 8, (11, 13), (3, 1), 1, (1, 0), 1, 1),     # non-square kernel
    (1, 8, 5, (6, 17), (1, 5), (1, 2), (0, 2), 1, 1),
    (2, 64, 64, (14, 14), (3, 3), 1, 1, 1, 1),        # several column tiles
    (1, 3, 64, (40, 40), (7, 7), 2, 3, 1, 1),         # the ResNet stem, smaller
    (1, 128, 256, (5, 5), (3, 3), 1, 1, 1, 1),        # few positions: channel split
    (1, 1, 4, (9, 9), (4, 4), 1, 2, 1, 1),            # even kernel, padding = k//2
]


def _run_conv2d(case, dtype, rng, **kw):
    n, cin, cout, spatial, kernel, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, cin) + spatial).astype(dtype)
    w = rng.standard_normal((cout, cin // groups) + kernel).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    y = F.conv2d(x, w, b, stride, padding, dilation, groups, **kw)
    return x, w, b, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV2D_CASES)
def test_conv2d_matches_reference(case, dtype, rng):
    x, w, b, y = _run_conv2d(case, dtype, rng)
    _, _, _, _, kernel, stride, padding, dilation, groups = case
    ref = conv_nd(x, w, b, stride, padding, None, dilation, groups)
    assert y.dtype == dtype and y.shape == ref.shape
    assert_close(y, ref, reduction=w[0].size)


@pytest.mark.parametrize("case", CONV2D_CASES)
def test_conv2d_identical_across_thread_counts(case, rng):
    results = run_threads(lambda: _run_conv2d(case, np.float32, np.random.default_rng(7))[3])
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    (1, 1, 1, (7,), (1,), 1, 0, 1, 1),
    (2, 3, 5, (20,), (3,), 2, 1, 1, 1),
    (1, 8, 8, (13,), (5,), 1, 4, 2, 8),               # depthwise, dilated
    (3, 6, 4, (9,), (2,), 3, 0, 1, 2),
    (1, 16, 32, (33,), (1,), 1, 0, 1, 1),
])
def test_conv1d_matches_reference(case, dtype, rng):
    n, cin, cout, spatial, kernel, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, cin) + spatial).astype(dtype)
    w = rng.standard_normal((cout, cin // groups) + kernel).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    y = F.conv1d(x, w, b, stride, padding, dilation, groups)
    assert_close(y, conv_nd(x, w, b, stride, padding, None, dilation, groups), w[0].size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    (1, 1, 2, (3, 4, 5), (1, 1, 1), 1, 0, 1, 1),
    (2, 3, 4, (5, 6, 7), (3, 3, 3), 1, 1, 1, 1),
    (1, 4, 8, (6, 5, 9), (2, 3, 1), (2, 1, 3), (1, 0, 0), (1, 2, 1), 2),
    (1, 6, 6, (4, 7, 7), (3, 3, 3), 2, 1, 1, 6),      # depthwise 3-D
])
def test_conv3d_matches_reference(case, dtype, rng):
    n, cin, cout, spatial, kernel, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, cin) + spatial).astype(dtype)
    w = rng.standard_normal((cout, cin // groups) + kernel).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    y = F.conv3d(x, w, b, stride, padding, dilation, groups)
    assert_close(y, conv_nd(x, w, b, stride, padding, None, dilation, groups), w[0].size)
    r1, r2 = run_threads(lambda: F.conv3d(x, w, b, stride, padding, dilation, groups), (1, 2))
    np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("kernel,dilation", [((4, 4), 1), ((2, 3), 1), ((4, 2), (1, 3)), ((3, 3), 2)])
def test_same_padding_even_kernels_is_asymmetric(kernel, dilation, rng):
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((5, 3) + kernel)
    y = F.conv2d(x, w, padding="same", dilation=dilation)
    d = (dilation,) * 2 if isinstance(dilation, int) else dilation
    total = [di * (k - 1) for di, k in zip(d, kernel)]
    before = [t // 2 for t in total]
    after = [t - b for t, b in zip(total, before)]
    ref = conv_nd(x, w, None, 1, before, after, d)
    assert y.shape == x.shape[:1] + (5,) + x.shape[2:]
    assert_close(y, ref, w[0].size)


def test_valid_padding(rng):
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    assert_close(F.conv2d(x, w, padding="valid"), conv_nd(x, w), 18)


@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("replicate", "edge"),
                                          ("circular", "wrap")])
def test_padding_modes(mode, np_mode, rng):
    layer = nn.Conv2d(3, 4, (3, 5), padding=(1, 2), padding_mode=mode, dtype=np.float64)
    x = rng.standard_normal((2, 3, 7, 6))
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (2, 2)], mode=np_mode)
    assert_close(layer(x), conv_nd(padded, layer.weight, layer.bias), 45)


def test_padding_mode_with_same_even_kernel(rng):
    layer = nn.Conv1d(2, 3, 4, padding="same", padding_mode="replicate", dtype=np.float64)
    x = rng.standard_normal((1, 2, 10))
    padded = np.pad(x, [(0, 0), (0, 0), (1, 2)], mode="edge")
    assert_close(layer(x), conv_nd(padded, layer.weight, layer.bias), 8)


def test_reflect_padding_too_large_is_an_error():
    layer = nn.Conv2d(1, 1, 3, padding=4, padding_mode="reflect")
    with pytest.raises(ValueError, match="reflect padding"):
        layer(np.zeros((1, 1, 4, 4), np.float32))


@pytest.mark.parametrize("activation", ["relu", "relu6", "silu"])
@pytest.mark.parametrize("case", [CONV2D_CASES[1], CONV2D_CASES[4], CONV2D_CASES[6]])
def test_fused_activation(case, activation, rng):
    x, w, b, y = _run_conv2d(case, np.float32, rng, activation=activation)
    _, _, _, _, _, stride, padding, dilation, groups = case
    ref = ACTIVATIONS[activation](conv_nd(x, w, b, stride, padding, None, dilation, groups) * 3)
    x3 = x * 3
    y3 = F.conv2d(x3, w, b * 3, stride, padding, dilation, groups, activation=activation)
    assert_close(y3, ref, w[0].size)


def test_unbatched_input(rng):
    x = rng.standard_normal((3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = F.conv2d(x, w, padding=1)
    assert y.shape == (4, 8, 8)
    np.testing.assert_array_equal(y, F.conv2d(x[None], w, padding=1)[0])
    out = np.empty((4, 8, 8), np.float32)
    assert F.conv2d(x, w, padding=1, out=out) is out
    np.testing.assert_array_equal(out, y)


def test_zero_size_batch():
    x = np.zeros((0, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    y = F.conv2d(x, w, stride=2)
    assert y.shape == (0, 4, 3, 3) and y.dtype == np.float32


def test_out_reuse_and_equality(rng):
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    out = np.full((2, 16, 10, 10), np.nan, np.float32)
    for _ in range(2):
        r = F.conv2d(x, w, padding=1, out=out)
        assert r is out
        np.testing.assert_array_equal(out, F.conv2d(x, w, padding=1))


def test_non_contiguous_and_fortran_inputs(rng):
    base = rng.standard_normal((2, 6, 12, 14)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    views = [base[:, ::2], base[:, :3, :, ::-1], np.asfortranarray(base[:, 1:4]),
             base[:, 2:5].transpose(0, 1, 3, 2)]
    for x in views:
        ref = conv_nd(x, w)
        assert_close(F.conv2d(x, w), ref, 27)
    w_view = rng.standard_normal((3, 5, 3, 3)).astype(np.float32).transpose(1, 0, 2, 3)
    assert_close(F.conv2d(base[:, :3], w_view), conv_nd(base[:, :3], w_view), 27)


def test_read_only_input_and_list_input(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    x.flags.writeable = False
    w = rng.standard_normal((1, 2, 3, 3))
    assert_close(F.conv2d(x, w), conv_nd(x, w), 18)
    assert_close(F.conv2d(x.tolist(), w), conv_nd(x, w), 18)


def test_nan_propagates(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 1, 2, 2] = np.nan
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    y = F.conv2d(x, w, activation="relu")
    ref = conv_nd(x, w)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y).sum() == 27


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("x_shape,w_shape,kwargs,error,match", [
    ((8, 8), (1, 1, 3, 3), {}, ValueError, r"conv2d: expected input of shape \(C, H, W\) or \(N, C, H, W\), got shape \(8, 8\)"),
    ((1, 2, 3, 8, 8), (1, 1, 3, 3), {}, ValueError, "expected input of shape"),
    ((1, 3, 8, 8), (4, 2, 3, 3), {}, ValueError, r"expected input with 2 channels \(weight \(4, 2, 3, 3\), groups=1\), got input of shape \(1, 3, 8, 8\)"),
    ((1, 4, 8, 8), (3, 2, 3, 3), {"groups": 2}, ValueError, r"out_channels \(3\) must be divisible by groups \(2\)"),
    ((1, 3, 8, 8), (4, 3, 3), {}, ValueError, "weight must have shape"),
    ((1, 3, 4, 4), (4, 3, 5, 5), {}, ValueError, r"kernel size \(5, 5\) \(after dilation\) is larger than the padded input \(4, 4\)"),
    ((1, 3, 4, 4), (4, 3, 3, 3), {"dilation": 2}, ValueError, "larger than the padded input"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"stride": 0}, ValueError, "stride must be positive"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"stride": -1}, ValueError, "stride must be positive"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"dilation": 0}, ValueError, "dilation must be positive"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"padding": -1}, ValueError, "padding must be >= 0"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"padding": "same", "stride": 2}, ValueError, "'same' is not supported for strided"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"padding": "full"}, ValueError, "padding must be 'valid', 'same'"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"groups": 0}, ValueError, "groups must be positive"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"stride": (1, 2, 3)}, ValueError, "tuple of 2 ints"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"stride": 1.5}, TypeError, "stride must be int"),
    ((1, 3, 8, 8), (0, 3, 3, 3), {}, ValueError, "zero-size dimension"),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"activation": "tanh"}, ValueError, "activation must be one of"),
])
def test_bad_arguments(x_shape, w_shape, kwargs, error, match):
    x = np.zeros(x_shape, np.float32)
    w = np.zeros(w_shape, np.float32)
    with pytest.raises(error, match=match):
        F.conv2d(x, w, **kwargs)


def test_dtype_errors():
    x32 = np.zeros((1, 3, 8, 8), np.float32)
    w64 = np.zeros((4, 3, 3, 3), np.float64)
    with pytest.raises(TypeError, match="input dtype float32 does not match weight dtype float64"):
        F.conv2d(x32, w64)
    with pytest.raises(TypeError, match="bias dtype float64 does not match input dtype float32"):
        F.conv2d(x32, w64.astype(np.float32), np.zeros(4))
    with pytest.raises(TypeError, match="must be float32 or float64, got int64"):
        F.conv2d(np.zeros((1, 3, 8, 8), np.int64), w64)
    with pytest.raises(TypeError, match="must be float32 or float64, got float16"):
        F.conv2d(np.zeros((1, 3, 8, 8), np.float16), w64)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        F.conv2d(x32, w64.astype(np.float32), np.zeros(3, np.float32))


def test_bad_out():
    x = np.zeros((1, 3, 8, 8), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"out has shape \(1, 4, 8, 8\), expected \(1, 4, 6, 6\)"):
        F.conv2d(x, w, out=np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(TypeError, match="out has dtype float64"):
        F.conv2d(x, w, out=np.zeros((1, 4, 6, 6)))
    with pytest.raises(ValueError, match="C-contiguous"):
        F.conv2d(x, w, out=np.zeros((1, 4, 6, 12), np.float32)[..., ::2])
    ro = np.zeros((1, 4, 6, 6), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        F.conv2d(x, w, out=ro)
    big = np.zeros((1, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="must not overlap the input"):
        F.conv2d(big[:, :3], np.zeros((4, 3, 1, 1), np.float32), out=big)


# ---------------------------------------------------------------- layers

def test_layer_init_matches_pytorch_bounds():
    fastcnn.manual_seed(0)
    layer = nn.Conv2d(16, 32, 3, groups=2)
    bound = 1 / np.sqrt(8 * 9)
    assert layer.weight.shape == (32, 8, 3, 3) and layer.weight.dtype == np.float32
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.weight).max() > 0.9 * bound
    assert np.abs(layer.bias).max() <= bound
    assert abs(layer.weight.std() - bound / np.sqrt(3)) < 0.1 * bound
    assert nn.Conv1d(2, 3, 5, bias=False, dtype=np.float64).bias is None
    assert nn.Conv3d(2, 3, 3, dtype=np.float64).weight.dtype == np.float64
    fastcnn.manual_seed(0)
    np.testing.assert_array_equal(nn.Conv2d(16, 32, 3, groups=2).weight, layer.weight)


def test_layer_repr_and_state_dict():
    layer = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    assert repr(layer) == "Conv2d(3, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False)"
    assert list(layer.state_dict()) == ["weight"]
    assert list(nn.Conv1d(1, 2, 3).state_dict()) == ["weight", "bias"]


@pytest.mark.parametrize("kwargs,match", [
    ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "groups": 2}, r"in_channels \(3\) must be divisible by groups \(2\)"),
    ({"in_channels": 4, "out_channels": 3, "kernel_size": 3, "groups": 2}, r"out_channels \(3\) must be divisible"),
    ({"in_channels": 4, "out_channels": 4, "kernel_size": 0}, "kernel_size must be positive"),
    ({"in_channels": 0, "out_channels": 4, "kernel_size": 3}, "in_channels must be positive"),
    ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding_mode": "mirror"}, "padding_mode must be one of"),
    ({"in_channels": 4, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": "same"}, "not supported for strided"),
])
def test_layer_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nn.Conv2d(**kwargs)


def test_layer_wrong_channels_names_layer():
    layer = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"^Conv2d: expected input with 3 channels"):
        layer(np.zeros((1, 5, 8, 8), np.float32))


# ---------------------------------------------------------------- PyTorch parity

@requires_torch
@pytest.mark.parametrize("nd,case", [(2, c) for c in CONV2D_CASES] + [
    (1, (2, 6, 4, (15,), (3,), 2, 1, 2, 2)),
    (3, (1, 4, 6, (5, 6, 7), (3, 2, 3), (1, 2, 1), (1, 0, 1), 1, 2)),
])
def test_parity_with_pytorch(nd, case, rng):
    n, cin, cout, spatial, kernel, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, cin) + spatial).astype(np.float32)
    w = rng.standard_normal((cout, cin // groups) + kernel).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    ours = getattr(F, f"conv{nd}d")(x, w, b, stride, padding, dilation, groups)
    tf = getattr(torch.nn.functional, f"conv{nd}d")
    theirs = tf(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride,
                padding, dilation, groups).numpy()
    assert_close(ours, theirs, w[0].size)


@requires_torch
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, "same", (2, 0)])
def test_layer_parity_with_pytorch(padding_mode, padding, rng):
    fastcnn.manual_seed(3)
    ours = nn.Conv2d(4, 6, (3, 4) if padding == "same" else 3, padding=padding,
                     padding_mode=padding_mode, groups=2)
    theirs = torch.nn.Conv2d(4, 6, ours.kernel_size, padding=padding,
                             padding_mode=padding_mode, groups=2)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    assert_close(ours(x), expected, 24)


# ---------------------------------------------------------------- every algorithm

ALGORITHMS = ["im2col", "gemm_1x1", "direct", "winograd", "blocked", "blocked_oc",
              "blocked_oc_unpacked", "depthwise", "pointwise"]
WINOGRAD_CASES = [
    (1, 8, 8, (9, 9), (3, 3), 1, 1, 1, 1),
    (2, 16, 24, (13, 7), (3, 3), 1, 1, 1, 1),        # output not a multiple of 4
    (1, 32, 16, (10, 11), (3, 3), 1, 0, 1, 1),       # no padding
    (1, 8, 8, (5, 5), (3, 3), 1, 2, 1, 1),           # padding 2
    (1, 8, 8, (3, 3), (3, 3), 1, 1, 1, 1),           # a single tile
    (3, 64, 64, (20, 20), (3, 3), 1, 1, 1, 1),       # several tasks per image
    (1, 3, 5, (6, 9), (3, 3), 1, (0, 1), 1, 1),
    (1, 32, 48, (10, 14), (3, 3), 1, 1, 1, 1),       # few tiles: shared transformed input
    (2, 40, 64, (7, 9), (3, 3), 1, 1, 1, 1),         # shared, two images, partial tiles
    (8, 8, 64, (12, 11), (3, 3), 1, 1, 1, 1),        # shared on many tiles (each task would read U)
    # F(4x4, 2x2)
    (1, 8, 8, (9, 9), (2, 2), 1, 0, 1, 1),
    (2, 16, 24, (13, 7), (2, 2), 1, 1, 1, 1),        # padding 1: output 14 x 8
    (1, 3, 5, (6, 9), (2, 2), 1, (0, 1), 1, 1),      # odd channels, padding along W only
    (1, 8, 8, (2, 2), (2, 2), 1, 0, 1, 1),           # a single output
    (3, 64, 64, (21, 20), (2, 2), 1, 0, 1, 1),       # several tasks per image
    (2, 40, 64, (7, 9), (2, 2), 1, 1, 1, 1),         # shared, two images, partial tiles
]


BLOCKED_CASES = [
    (1, 5, 7, (9, 8), (3, 3), 3, 1, 2, 1),            # stride 3 with dilation 2
    (2, 4, 13, (5, 13), (1, 7), (1, 2), (0, 3), 1, 1),  # 1x7, strided along W only
    (1, 8, 8, (4, 4), (3, 3), 1, 1, 1, 1),            # tiny plane
    (1, 3, 5, (11, 11), (11, 11), 1, 0, 1, 1),        # kernel as large as the input
    (3, 6, 16, (14, 14), (5, 5), 1, 0, 1, 1),         # LeNet's second layer
    (1, 16, 12, (30, 3), (3, 3), 2, 1, 1, 2),         # narrow, grouped, stride 2
    # output channels the 3-channel tile pads less than the 6-channel one
    (2, 64, 3, (17, 19), (3, 3), 1, 1, 1, 1),         # an image's colours, several lane tiles
    (1, 6, 9, (12, 10), (4, 4), 2, 1, 1, 3),          # 3 per group, stride 2
    (1, 10, 15, (9, 9), (3, 3), 1, 1, 1, 1),          # 15: five 3-channel blocks
    # weights larger than the padded images: blocked_oc's tasks block by block
    (3, 64, 40, (3, 4), (3, 3), 1, 1, 1, 1),
    # blocked_oc's channel blocks fewer than 8 per thread and not a multiple
    # of 2 or 3 threads: the threads split their rows
    (1, 16, 200, (7, 7), (3, 3), 1, 1, 1, 1),         # 9 blocks of 24 (AVX2), 17 of 12 (SSE)
    (1, 16, 430, (7, 7), (3, 3), 1, 1, 1, 1),         # 9 blocks of 48 (AVX-512)
    # rows not a multiple of blocked_oc's tiles end in a narrower tile:
    # 32 = 14 + 14 + 4 (AVX-512), 6 x 5 + 2 (AVX2); strided, 16 = 7 + 7 + 2,
    # over several chunks of input channels (the narrow tile accumulating)
    (1, 40, 64, (9, 32), (3, 3), 1, 1, 1, 1),
    (2, 300, 64, (13, 31), (3, 3), 2, 1, 1, 1),
    # no padding: blocked_oc reads the input's planes as they lie, the last
    # input column unread (stride 2), grouped, dilated, ResNet's strided 1x1
    (2, 24, 40, (9, 12), (3, 3), 2, 0, 1, 2),
    (1, 8, 32, (11, 10), (3, 3), 1, 0, 2, 1),
    (2, 40, 48, (13, 14), (1, 1), 2, 0, 1, 1),
]


POINTWISE_CASES = [
    (2, 13, 17, (5, 7), (1, 1), 1, 0, 1, 1),         # odd channels, a partial block of positions
    (1, 6, 12, (9, 9), (1, 1), 1, 0, 1, 3),          # grouped
    (3, 40, 7, (4, 4), (1, 1), 1, 0, 1, 1),          # 16 positions, one partial channel block
    (1, 700, 10, (2, 3), (1, 1), 1, 0, 1, 1),        # input channels in several chunks
    (1, 1, 1, (1, 1), (1, 1), 1, 0, 1, 1),           # one of everything
    (1, 32, 16, (11, 13), (1, 1), 1, 0, 1, 1),       # whole 4-channel tiles (AVX2), ragged positions
    (2, 20, 18, (6, 9), (1, 1), 1, 0, 1, 2),         # 9 per group: a partial channel block each
    # blocked_oc runs these planes as one row of pixels (fewer padded tiles)
    (1, 24, 400, (7, 7), (1, 1), 1, 0, 1, 1),
    (1, 24, 400, (5, 5), (1, 1), 1, 0, 1, 1),
]


DEPTHWISE_CASES = [
    (2, 20, 20, (7, 7), (3, 3), 1, 1, 1, 20),         # channels not a multiple of the vector
    (1, 33, 33, (14, 14), (3, 3), 2, 1, 1, 33),       # stride 2, one channel in the last block
    (1, 16, 16, (9, 11), (5, 5), 1, 2, 1, 16),        # 5x5, non-square
    (1, 8, 8, (10, 9), (3, 3), (1, 2), (0, 1), 2, 8),  # dilation 2, stride along W only
    (1, 17, 17, (9, 9), (3, 3), 4, 1, 1, 17),         # stride > kernel
    (1, 40, 40, (3, 3), (3, 3), 1, 1, 1, 40),         # a 3x3 plane
    (3, 24, 24, (30, 5), (3, 3), 1, 1, 1, 24),        # tall: several row blocks per task set
    (1, 5, 5, (7, 37), (3, 3), 1, 1, 1, 5),           # wide rows, odd height: rows in pairs + one
    (2, 3, 3, (6, 40), (3, 3), 1, (2, 0), 1, 3),      # wide rows, zero rows above and below
    (1, 4, 4, (5, 70), (3, 3), (1, 3), (1, 2), 1, 4),  # wide rows, stride 3 along W only
    (1, 6, 6, (9, 71), (3, 3), 2, 1, 1, 6),           # wide rows, stride 2, a partial last vector
    (1, 3, 3, (8, 67), (3, 3), 2, 2, 1, 3),           # wide rows, stride 2, padding 2
    (1, 2, 2, (6, 70), (3, 3), 2, 0, 1, 2),           # wide rows, stride 2, last column unread
    (1, 3, 3, (6, 32), (3, 3), 1, 1, 1, 3),           # padded rows: whole vectors
    (2, 4, 8, (7, 10), (3, 3), 2, 0, 1, 4),           # stride 2, last column unread; 2 filters each
    (1, 2, 2, (5, 40), (3, 3), (1, 2), (3, 4), 1, 2),  # padding past the kernel: zero rows, columns
    (1, 2, 4, (5, 40), (3, 3), 1, (3, 4), 1, 2),      # the same at stride 1 (padded rows), 2 filters each
]


def _geometry(x_shape, w_shape, stride, padding, dilation, groups):
    nd = len(x_shape) - 2
    st = (stride,) * nd if isinstance(stride, int) else stride
    pd = (padding,) * nd if isinstance(padding, int) else padding
    dl = (dilation,) * nd if isinstance(dilation, int) else dilation
    out = tuple((s + 2 * p - d * (k - 1) - 1) // t + 1
                for s, p, d, k, t in zip(x_shape[2:], pd, dl, w_shape[2:], st))
    one = (1,) * (3 - nd)
    zero = (0,) * (3 - nd)
    return ((x_shape[0], x_shape[1], w_shape[0], groups) + one + tuple(x_shape[2:]) + one + out
            + one + tuple(w_shape[2:]) + one + st + zero + pd + one + dl)


def _applicable_pairs():
    from fastcnn._kernels import _conv as kernels
    pairs = []
    for case in CONV2D_CASES + WINOGRAD_CASES + BLOCKED_CASES + DEPTHWISE_CASES + POINTWISE_CASES:
        n, cin, cout, spatial, kernel, stride, padding, dilation, groups = case
        geom = _geometry((n, cin) + spatial, (cout, cin // groups) + kernel, stride, padding,
                         dilation, groups)
        pairs += [(case, a) for a in ALGORITHMS if kernels.applicable(geom, a)]
    return pairs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,algorithm", _applicable_pairs())
def test_every_algorithm_matches_reference(case, algorithm, dtype, rng):
    n, cin, cout, spatial, kernel, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, cin) + spatial).astype(dtype)
    w = rng.standard_normal((cout, cin // groups) + kernel).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    run = lambda: _conv_impl(2, "conv2d", x, w, b, stride, padding, dilation, groups, None,
                          "relu", algorithm=algorithm)
    ref = ACTIVATIONS["relu"](conv_nd(x, w, b, stride, padding, None, dilation, groups))
    # Winograd rounds more than a direct sum (its transforms scale values by
    # up to 8x); within 10x the direct tolerance.
    assert_close(run(), ref, w[0].size * (100 if algorithm == "winograd" else 1))
    results = run_threads(run)
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)



def test_conv_geometry_names_the_kernels_fields():
    """ConvGeometry is the kernels' 22 fields by name: built per axis, it equals
    the layout written out here, and the kernels read it as that tuple."""
    from fastcnn._functional.conv import ConvGeometry
    from fastcnn._kernels import _conv as kernels
    g = ConvGeometry.of(2, 6, 8, 2, (9, 11), (5, 6), (3, 3), (2, 2), (1, 1), (1, 1))
    assert g == _geometry((2, 6, 9, 11), (8, 3, 3, 3), 2, 1, 1, 2)
    assert (g.batch, g.groups, g.out_h, g.pad_w) == (2, 2, 5, 1)
    assert g.out_spatial(2) == (5, 6) and g.positions == 30 and g.taps == 9
    assert not g.pointwise and not g.depthwise
    line = ConvGeometry.of(1, 3, 4, 1, (20,), (18,), (3,), (1,), (0,), (1,))
    assert line.out_spatial(1) == (18,) and line[4:7] == (1, 1, 20)
    assert ConvGeometry.of(1, 4, 4, 4, (7, 7), (7, 7), (3, 3), (1, 1), (1, 1), (1, 1)).depthwise
    assert ConvGeometry.of(1, 4, 5, 1, (7, 7), (7, 7), (1, 1), (1, 1), (0, 0), (1, 1)).pointwise
    for algorithm in ("im2col", "direct"):
        assert kernels.plan(g, algorithm, 4) == kernels.plan(tuple(g), algorithm, 4)
    with pytest.raises(ValueError):
        kernels.select(tuple(g)[:-1])                  # 21 fields: refused, not read past


@pytest.mark.parametrize("dtype", DTYPES)
def test_engine_runs_every_algorithm_as_the_functional_op(dtype, rng):
    """ConvEngine, what plans and the autotuner run: the dispatcher's choice
    by default, packed weights only where the algorithm packs, and for each
    algorithm the functional op's result with that algorithm pinned."""
    from fastcnn._functional.conv import ConvEngine, ConvGeometry
    from fastcnn._kernels import _conv as kernels
    x = rng.standard_normal((2, 16, 12, 13)).astype(dtype)
    w = rng.standard_normal((32, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(32).astype(dtype)
    r = rng.standard_normal((2, 32, 12, 13)).astype(dtype)
    g = ConvGeometry.of(2, 16, 32, 1, (12, 13), (12, 13), (3, 3), (1, 1), (1, 1), (1, 1))
    assert ConvEngine(g, dtype).algorithm == kernels.select(g)
    assert ConvEngine(g, dtype, weights_packed=True).algorithm == kernels.select(g, True)
    ran = []
    for algorithm in (a for a in ALGORITHMS if kernels.applicable(g, a)):
        engine = ConvEngine(g, dtype, algorithm)
        packed = engine.pack(w, 2)
        assert (packed is w) == (engine.packed_size == 0)
        y = np.full(r.shape, np.nan, dtype)
        ws = np.empty(engine.workspace_size(2), dtype) if engine.workspace_size(2) else None
        engine.forward(x, packed, b, y, ws, 1, 2, r)            # 1: ReLU
        expected = _conv_impl(2, "conv2d", x, w, b, 1, 1, 1, 1, None, "relu",
                              algorithm=algorithm, residual=r)
        np.testing.assert_array_equal(y, expected)
        assert_close(y, ACTIVATIONS["relu"](conv_nd(x, w, b, 1, 1, None, 1, 1) + r),
                     w[0].size * (100 if algorithm == "winograd" else 1))
        ran.append(algorithm)
    assert {"im2col", "winograd", "blocked_oc"} <= set(ran)


@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_every_tile_count(dtype, rng):
    """Winograd's products run over the tiles in whole blocks of vectors, then
    the remaining vectors: one tile row of 1 .. 70 tiles (every remainder
    past the widest block and vector, on any target), 7 output channels (a
    partial block of them), shared and per-task tiles; 3x3 and 2x2 kernels."""
    for k in (3, 2):
        for width in range(4, 4 * 70 + 1, 4):
            x = rng.standard_normal((1, 5, 4, width)).astype(dtype)
            w = rng.standard_normal((7, 5, k, k)).astype(dtype)
            out = _conv_impl(2, "conv2d", x, w, None, 1, k - 2, 1, 1, None, None,
                             algorithm="winograd")
            assert_close(out, conv_nd(x, w, None, 1, k - 2, None, 1, 1), w[0].size * 100)


WINO_ERROR_BOUND = 64


def _winograd_tile_bound(x, w, pad):
    """Per output: sum over input channels of max |x| over the input tile
    Winograd transforms for that output's 4x4 tile times sum |w| over the
    channel's taps (the norms its error bound is stated in)."""
    k = w.shape[-1]
    xp = np.pad(np.abs(x.astype(np.float64)), ((0, 0), (0, 0), (pad, pad + 4), (pad, pad + 4)))
    oh, ow = x.shape[2] + 2 * pad - k + 1, x.shape[3] + 2 * pad - k + 1
    w1 = np.abs(w.astype(np.float64)).sum(axis=(2, 3))              # (out, in)
    bound = np.empty((x.shape[0], w.shape[0], oh, ow))
    for a in range(0, oh, 4):
        for b in range(0, ow, 4):
            tile_max = xp[:, :, a:a + k + 3, b:b + k + 3].max(axis=(2, 3))    # (n, in)
            bound[:, :, a:a + 4, b:b + 4] = (tile_max @ w1.T)[:, :, None, None]
    return bound


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [3, 2])
def test_winograd_error_bound(dtype, k, rng):
    """Winograd's rounding error, against float64 sums: within WINO_ERROR_BOUND
    x u x sum_c max|x_c| (over the output's transformed input tile) x sum |w_c|,
    u the unit roundoff, for F(4x4, 3x3) and F(4x4, 2x2), any channel count
    (5 and 37 leave partial vectors), on plain, post-ReLU and spiked inputs
    (one large value among small ones, which the transforms spread over the
    tile). Measured up to 19.5 on avx512 and avx2, 21.7 on baseline (im2col's
    direct sums: up to 2), so the bound leaves a margin of 3 and still catches
    a transform coefficient or an accumulation order gone wrong."""
    u = np.finfo(dtype).eps / 2
    pad = k - 2
    for cin in (5, 37, 512):
        for data in ("normal", "relu", "spike"):
            x = rng.standard_normal((2, cin, 17, 23))
            if data == "relu":
                x = np.maximum(x, 0)
            elif data == "spike":
                x *= 1e-4
                x[:, :, 5, 7] = 1e3
            x = x.astype(dtype)
            w = (rng.standard_normal((16, cin, k, k)) / np.sqrt(cin * k * k)).astype(dtype)
            y = _conv_impl(2, "conv2d", x, w, None, 1, pad, 1, 1, None, None,
                           algorithm="winograd")
            exact = conv_nd(x.astype(np.float64), w.astype(np.float64), None, 1, pad, None, 1, 1)
            ratio = np.abs(y - exact) / (u * _winograd_tile_bound(x, w, pad))
            assert ratio.max() <= WINO_ERROR_BOUND, (cin, data, ratio.max())


@pytest.fixture
def dispatch():
    """The conv kernels with the dispatcher's machine facts pinned by the test
    (whether the BLAS has a small-matrix GEMM; a 48 KiB L1d and 2 MiB L2),
    restored afterwards."""
    from fastcnn import _kernels
    from fastcnn._kernels import _blas
    kernels = _kernels._conv
    kernels.set_cache_sizes(48 * 1024, 2048 * 1024)
    yield kernels
    kernels.set_blas_small_gemm(_blas.small_gemm())
    kernels.set_wide_vectors_full_rate(not _kernels._cpu.avx512_on_256_bit_units())
    if "l1d" in _kernels.CACHES and "l2" in _kernels.CACHES:
        kernels.set_cache_sizes(_kernels.CACHES["l1d"], _kernels.CACHES["l2"])


def test_winograd_shares_the_transformed_input_where_tasks_would_reread_weights(dispatch):
    """Shared layout (V of every tile, tasks of output-channel blocks): on
    few tiles, or where tasks of tile rows would each read all of the
    transformed weights more than the channel blocks read V; not on
    ResNet-18's 56x56 layer at batch 1 (4 tasks of 64 channels, 196 tiles)."""
    kernels = dispatch
    def shared(x_shape, cout):
        geom = _geometry(x_shape, (cout, x_shape[1], 3, 3), 1, 1, 1, 1)
        return kernels.plan(geom, "winograd", 4)[0] > 0
    assert shared((1, 256, 14, 14), 256)            # 16 tiles
    assert shared((8, 256, 14, 14), 256)            # 128 tiles, 8 tasks x 9.4 MB of U
    assert shared((8, 8, 12, 11), 64)               # 72 tiles, 8 tasks x 64 filters
    assert not shared((1, 64, 56, 56), 64)          # 196 tiles, 4 tasks x 64 filters
    assert not shared((8, 128, 28, 28), 128)        # 392 tiles, 8 tasks x 128 filters
    assert not shared((8, 8, 12, 11), 16)           # too few filters to share


def test_wide_vectors_at_half_rate_pay_for_winograd_as_narrow_ones(dispatch):
    """16-lane multiply-adds on 256-bit units (Zen 4) take the 8-lane rules."""
    kernels = dispatch
    fma = kernels.dispatch_facts()["fused_multiply_add"]
    layer3 = _geometry((1, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1)
    kernels.set_wide_vectors_full_rate(False)
    assert kernels.dispatch_facts()["winograd_narrow_vectors"] == fma
    assert kernels.select(layer3, True) == ("winograd" if fma else "blocked_oc")
    kernels.set_wide_vectors_full_rate(True)
    narrow = kernels.dispatch_facts()["winograd_narrow_vectors"]
    assert narrow == (fma and kernels.dispatch_facts()["blocked_oc_min_channels"] < 32)
    assert kernels.select(layer3, True) == ("winograd" if narrow else "blocked_oc")


def test_dispatcher_picks_fast_paths(dispatch):
    kernels = dispatch
    kernels.set_blas_small_gemm(True)
    g = lambda *a: _geometry(*a)
    assert kernels.select(g((1, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1)) == "winograd"
    assert kernels.select(g((1, 64, 56, 56), (128, 64, 1, 1), 1, 0, 1, 1)) == "gemm_1x1"
    # prepacked, widening, <= 512 positions (MobileNetV2's last 1x1 up to
    # batch 10): blocked_oc with FMA; narrowing, or more positions: the GEMM
    fma = kernels.dispatch_facts()["fused_multiply_add"]
    last = g((1, 320, 7, 7), (1280, 320, 1, 1), 1, 0, 1, 1)
    assert kernels.select(last, True) == ("blocked_oc" if fma else "gemm_1x1")
    assert kernels.select(last) == "gemm_1x1"
    assert kernels.select(g((1, 960, 7, 7), (160, 960, 1, 1), 1, 0, 1, 1), True) == "gemm_1x1"
    batch8 = g((8, 320, 7, 7), (1280, 320, 1, 1), 1, 0, 1, 1)
    assert kernels.select(batch8, True) == ("blocked_oc" if fma else "gemm_1x1")
    assert kernels.select(g((11, 320, 7, 7), (1280, 320, 1, 1), 1, 0, 1, 1), True) == "gemm_1x1"
    # strided too (ResNet's downsampling at 7x7), but not with padding
    down = g((1, 256, 14, 14), (512, 256, 1, 1), 2, 0, 1, 1)
    assert kernels.select(down, True) == ("blocked_oc" if fma else "im2col")
    assert kernels.select(down) == "im2col"
    assert kernels.select(g((1, 256, 12, 12), (512, 256, 1, 1), 2, 1, 1, 1), True) == "im2col"
    assert kernels.select(g((1, 32, 56, 56), (32, 1, 3, 3), 1, 1, 1, 32)) == "direct"
    # narrow depthwise outputs: vectors over channels
    assert kernels.select(g((1, 576, 14, 14), (576, 1, 3, 3), 1, 1, 1, 576)) == "depthwise"
    assert kernels.select(g((1, 960, 7, 7), (960, 1, 3, 3), 1, 1, 1, 960)) == "depthwise"
    assert kernels.select(g((1, 96, 14, 14), (192, 1, 3, 3), 1, 1, 1, 96)) == "direct"
    # strided 3x3 with many output channels: blocked over output channels
    assert kernels.select(g((1, 64, 56, 56), (128, 64, 3, 3), 2, 1, 1, 1)) == "blocked_oc"
    assert kernels.select(g((1, 64, 56, 56), (128, 64, 1, 1), 2, 0, 1, 1)) == "im2col"
    # few tiles (32) of many filters: Winograd with prepacked weights, and
    # unpacked only without fused multiply-adds or with 8-lane vectors (where
    # the direct kernels run at half the 16-lane rate)
    fma = kernels.dispatch_facts()["fused_multiply_add"]
    narrow = kernels.dispatch_facts()["winograd_narrow_vectors"]
    small = g((8, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1, 1)
    assert kernels.select(small) == ("blocked_oc" if fma and not narrow else "winograd")
    assert kernels.select(small, True) == "winograd"
    # unpacked, 48 tiles or more pay for transforming weights of 128-256
    # channels; with fused multiply-adds, few channels never pay (their GEMMs
    # run poorly against the direct kernels) but 64 do on 32 tiles with 8-lane
    # vectors; without, 32 tiles of 64
    mid = g((8, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1)
    assert kernels.select(mid) == "winograd"
    assert kernels.select(g((4, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1)) == "winograd"
    assert kernels.select(g((1, 128, 28, 28), (128, 128, 3, 3), 1, 1, 1, 1)) == "winograd"
    wino64 = kernels.select(g((8, 64, 14, 14), (64, 64, 3, 3), 1, 1, 1, 1)) == "winograd"
    wino32 = kernels.select(g((4, 32, 28, 28), (32, 32, 3, 3), 1, 1, 1, 1)) == "winograd"
    assert (wino64, wino32) == ((narrow, False) if fma else (True, True))
    assert kernels.select(g((4, 32, 28, 28), (32, 32, 3, 3), 1, 1, 1, 1), True) == "winograd"
    # 2x2 kernels (F(4x4, 2x2)): with channels enough for their transforms
    assert kernels.select(g((1, 64, 128, 128), (128, 64, 2, 2), 1, 0, 1, 1)) == "winograd"
    assert kernels.select(g((1, 64, 128, 128), (128, 64, 2, 2), 1, 0, 1, 1), True) == "winograd"
    assert kernels.select(g((1, 24, 24, 24), (24, 24, 2, 2), 1, 0, 1, 1), True) != "winograd"
    # ... and tiles enough an image (64 with 16-lane vectors, else 16)
    few = kernels.dispatch_facts()["winograd_2x2_min_image_tiles"]
    assert few in (16, 64)
    for size, tiles in ((28, 49), (14, 16), (7, 4)):
        wino = kernels.select(g((8, 128, size + 1, size + 1), (64, 128, 2, 2), 1, 0, 1, 1), True)
        assert (wino == "winograd") == (tiles >= few), (size, wino)
    # one image of 128-256 outputs: blocked_oc packing in its tasks (a pass
    # packing weights would not pay; with 8-lane vectors, 16 tiles of 256
    # channels pay for Winograd's, prepacked or not); fewer outputs: im2col
    layer3 = g((1, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1)
    assert kernels.select(layer3) == ("winograd" if narrow else "blocked_oc_unpacked")
    assert kernels.select(layer3, True) == ("winograd" if narrow else "blocked_oc")
    late = g((1, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1, 1)
    assert kernels.select(late) == "im2col"
    assert kernels.select(late, True) == "blocked_oc"
    assert kernels.select(g((2, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1, 1)) == "im2col"
    # few output channels (LeNet's 16): blocked over pixels, unless 16 channels
    # fill the target's output-channel tile (AVX2: 2 vectors of 8)
    lenet2 = g((64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1)
    fills = kernels.dispatch_facts()["blocked_oc_min_channels"] <= 16
    assert kernels.select(lenet2) == ("blocked_oc" if fills else "blocked")
    few = kernels.dispatch_facts()["blocked_oc_min_channels"] - 1
    assert kernels.select(g((64, 6, 14, 14), (few, 6, 5, 5), 1, 0, 1, 1)) == "blocked"
    # a short reduction into two vectors of output channels (a transposed
    # convolution's 1x2 phase): the small-matrix GEMM; fewer channels than a
    # vector (LeNet's first layer): blocked over pixels
    assert kernels.select(g((1, 64, 128, 129), (32, 64, 1, 2), 1, 0, 1, 1)) == "im2col"
    assert kernels.select(g((64, 1, 32, 32), (3, 1, 5, 5), 1, 0, 1, 1)) == "blocked"
    # a 7x7 stem's 64 output channels fill the output-channel kernel's vectors
    assert kernels.select(g((1, 3, 224, 224), (64, 3, 7, 7), 2, 3, 1, 1)) == "blocked_oc"
    assert kernels.select(g((1, 3, 224, 224), (32, 3, 3, 3), 2, 1, 1, 1)) == "im2col"
    # most lanes would be padding (with 8-, 16- or 32-lane blocks): 1x1 outputs
    assert kernels.select(g((8, 16, 1, 1), (16, 16, 3, 3), 1, 1, 1, 1), True) == "im2col"


def test_dispatcher_without_a_small_matrix_gemm(dispatch):
    """A GEMM that packs on every call (OpenBLAS's Haswell/Zen kernels) loses
    small problems to direct kernels: 1x1 layers whose weights fit in half of
    L2 (pointwise; strided: blocked_oc), short-reduction stems, one image's
    few outputs (blocked_oc)."""
    kernels = dispatch
    kernels.set_blas_small_gemm(False)
    g = lambda *a: _geometry(*a)
    assert kernels.select(g((1, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1, 1)) == "winograd"
    assert kernels.select(g((1, 64, 56, 56), (128, 64, 1, 1), 1, 0, 1, 1)) == "pointwise"
    assert kernels.select(g((1, 384, 14, 14), (96, 384, 1, 1), 1, 0, 1, 1)) == "pointwise"
    assert kernels.select(g((2, 5, 7, 3), (3, 5, 1, 1), 1, 0, 1, 1)) == "pointwise"
    assert kernels.select(g((1, 64, 56, 56), (128, 64, 1, 1), 2, 0, 1, 1)) == "blocked_oc"
    # weights over half of L2 (1.6 MB): GEMM, unless they are packed ahead and
    # splatted (SSE: the pointwise kernel needs no shuffles, the BLAS does)
    big = g((1, 320, 7, 7), (1280, 320, 1, 1), 1, 0, 1, 1)
    assert kernels.select(big) == "gemm_1x1"
    splat = kernels.dispatch_facts()["splatted_weights"]
    fma = kernels.dispatch_facts()["fused_multiply_add"]
    # prepacked and widening over one image's few positions: blocked_oc with FMA
    assert kernels.select(big, True) == ("blocked_oc" if fma else
                                         "pointwise" if splat else "gemm_1x1")
    many = g((11, 320, 7, 7), (1280, 320, 1, 1), 1, 0, 1, 1)
    assert kernels.select(many, True) == ("pointwise" if splat else "gemm_1x1")
    assert kernels.select(g((1, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1, 1)) == \
        "blocked_oc_unpacked"
    assert kernels.select(g((2, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1, 1)) == "blocked_oc"
    assert kernels.select(g((1, 3, 224, 224), (32, 3, 3, 3), 2, 1, 1, 1)) == "blocked_oc"
    # too few output channels for one register tile: not blocked_oc
    few = kernels.dispatch_facts()["blocked_oc_min_channels"] - 1
    assert kernels.select(g((1, 64, 14, 14), (few, 64, 3, 3), 2, 1, 1, 1)) == "im2col"
    assert kernels.select(g((1, 32, 56, 56), (32, 1, 3, 3), 1, 1, 1, 32)) == "direct"


@pytest.mark.parametrize("small_gemm", [True, False])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((1, 384, 14, 14), (96, 384, 1, 1), 1, 0),
    ((2, 19, 9, 11), (40, 19, 1, 1), 1, 0),
    ((1, 64, 15, 15), (33, 64, 1, 1), 2, 0),
    ((1, 3, 31, 29), (32, 3, 3, 3), 2, 1),
    ((1, 70, 7, 7), (48, 70, 3, 3), 1, 1),
    ((3, 40, 6, 5), (36, 40, 3, 3), 1, 1),
])
def test_either_dispatch_matches_the_reference(dispatch, small_gemm, x_shape, w_shape,
                                               stride, padding, rng):
    dispatch.set_blas_small_gemm(small_gemm)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    got = run_threads(lambda: F.conv2d(x, w, b, stride, padding))
    k = w_shape[1] * w_shape[2] * w_shape[3]
    assert_close(got[0], conv_nd(x, w, b, stride, padding), k)
    for other in got[1:]:
        np.testing.assert_array_equal(other, got[0])


@pytest.mark.parametrize("n, l2_kib, blocks", [(8, 128, 2), (9, 128, 2), (8, 2048, 1)])
def test_gemm_1x1_splits_weights_larger_than_half_of_l2(dispatch, n, l2_kib, blocks, rng):
    """With a small-matrix GEMM, over enough images, a 1x1 layer whose
    weights exceed half of L2 runs in blocks of output channels (each kept
    in L2 across the images): the same results as the reference,
    bit-identical for any thread count."""
    dispatch.set_blas_small_gemm(True)
    dispatch.set_cache_sizes(48 * 1024, l2_kib * 1024)
    x = rng.standard_normal((n, 300, 5, 6)).astype(np.float32)
    w = rng.standard_normal((70, 300, 1, 1)).astype(np.float32)      # 82 KiB
    b = rng.standard_normal(70).astype(np.float32)
    geom = _geometry(x.shape, w.shape, 1, 0, 1, 1)
    assert dispatch.plan(geom, "gemm_1x1", 4)[2] == n * blocks       # tasks: images x blocks
    run = lambda: _conv_impl(2, "conv2d", x, w, b, 1, 0, 1, 1, None, "relu",
                             algorithm="gemm_1x1")
    got = run_threads(run)
    assert_close(got[0], ACTIVATIONS["relu"](conv_nd(x, w, b, 1, 0)), 300)
    for other in got[1:]:
        np.testing.assert_array_equal(other, got[0])


@pytest.mark.parametrize("n, cin, cout, hw, tasks", [
    (1, 1024, 512, (28, 28), 8),      # one up-convolution phase: 8 large tiles
    (1, 160, 960, (7, 7), 2),         # few positions: the output channels split in 2
    (8, 64, 33, (5, 7), 8),           # one tile per image
    (1, 7, 5, (3, 2), 2),             # tiny: at least 2 (one per thread of 2)
])
def test_gemm_1x1_with_a_packing_blas_issues_few_large_tiles(dispatch, n, cin, cout, hw,
                                                            tasks, rng):
    """A BLAS that packs its operands on every call (no small-matrix GEMM)
    gets a few large tiles per layer, as many as the work needs (at most 8),
    from the shape alone: the same results as the reference, bit-identical
    for any thread count."""
    dispatch.set_blas_small_gemm(False)
    x = rng.standard_normal((n, cin) + hw).astype(np.float32)
    w = rng.standard_normal((cout, cin, 1, 1)).astype(np.float32)
    geom = _geometry(x.shape, w.shape, 1, 0, 1, 1)
    assert dispatch.plan(geom, "gemm_1x1", 4)[2] == tasks
    got = run_threads(lambda: _conv_impl(2, "conv2d", x, w, None, 1, 0, 1, 1, None, None,
                                         algorithm="gemm_1x1"))
    assert_close(got[0], conv_nd(x, w, None, 1, 0), cin)
    for other in got[1:]:
        np.testing.assert_array_equal(other, got[0])


@pytest.mark.parametrize("algorithm, message", [
    ("winograd", "does not apply"), ("depthwise", "does not apply"),
    ("nonsense", "unknown algorithm")])
def test_a_forced_algorithm_that_does_not_apply_is_refused(algorithm, message):
    """The kernels assume their geometry (Winograd a 3x3 or 2x2 kernel, depthwise one
    channel a group): every entry that takes an algorithm by name refuses one
    that does not apply, before any kernel runs."""
    from fastcnn import _kernels
    conv = _kernels._conv
    x = np.ones((1, 16, 7, 7), np.float32)
    w = np.ones((8, 16, 1, 1), np.float32)
    y = np.zeros((1, 8, 7, 7), np.float32)
    scratch = np.zeros(1 << 16, np.float32)
    geom = _geometry(x.shape, w.shape, 1, 0, 1, 1)
    assert not conv.applicable(geom, algorithm)
    for call in (lambda: conv.plan(geom, algorithm, 4),
                 lambda: conv.pack(geom, algorithm, w, scratch, 1),
                 lambda: conv.forward(geom, algorithm, x, w, None, y, scratch, 0, 1),
                 lambda: conv.forward_each([geom], [algorithm], [x], [w], [y], scratch, 1)):
        with pytest.raises(ValueError, match=message):
            call()
    assert not y.any()


@pytest.mark.parametrize("n", [1, 3])
def test_blocked_oc_unpacked_packs_each_call(n, rng):
    """Each thread keeps the channel block it packed last and reuses it for
    the next task of that block; a new call (new weights, the same scratch)
    must pack again. 50 output channels: a last block of 2 lanes."""
    x = rng.standard_normal((n, 24, 9, 7)).astype(np.float32)
    for _ in range(3):
        w = rng.standard_normal((50, 24, 3, 3)).astype(np.float32)
        got = _conv_impl(2, "conv2d", x, w, None, 1, 1, 1, 1, None, None,
                         algorithm="blocked_oc_unpacked")
        assert_close(got, conv_nd(x, w, None, 1, 1, None, 1, 1), w[0].size)


def test_blocked_in_image_chunks(rng):
    """More padded input than the blocked kernel holds at once (64 MB): the
    batch is padded and computed in chunks, with the same results."""
    x = rng.standard_normal((70, 64, 64, 64)).astype(np.float32)
    w = rng.standard_normal((8, 64, 3, 3)).astype(np.float32)
    y = _conv_impl(2, "conv2d", x, w, None, 1, 1, 1, 1, None, None, algorithm="blocked")
    ref = _conv_impl(2, "conv2d", x, w, None, 1, 1, 1, 1, None, None, algorithm="im2col")
    assert_close(y, ref, w[0].size)


@pytest.mark.parametrize("algorithm", [None, "im2col", "blocked"])
def test_asymmetric_padding_pairs(algorithm, rng):
    """padding=((top, bottom), (left, right)): what ONNX pads need."""
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    pads = ((0, 2), (1, 0))
    padded = np.pad(x, [(0, 0), (0, 0), (0, 2), (1, 0)])
    ref = conv_nd(padded, w, None, 1, 0, None, 1, 1)
    if algorithm is None:
        y = F.conv2d(x, w, None, 1, pads)
    else:
        y = _conv_impl(2, "conv2d", x, w, None, 1, pads, 1, 1, None, None, algorithm=algorithm)
    assert_close(y, ref, 27)
    with pytest.raises(ValueError, match="padding pair"):
        F.conv2d(x, w, None, 1, ((0, -1), (1, 0)))


@pytest.mark.parametrize("case,algorithm", _applicable_pairs())
def test_every_algorithm_adds_residual_before_activation(case, algorithm, rng):
    """The epilogue a plan fuses: relu((conv(x) + b) + r), in that order."""
    n, cin, cout, spatial, kernel, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, cin) + spatial).astype(np.float32)
    w = rng.standard_normal((cout, cin // groups) + kernel).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    plain = _conv_impl(2, "conv2d", x, w, b, stride, padding, dilation, groups, None, None,
                       algorithm=algorithm)
    r = rng.standard_normal(plain.shape).astype(np.float32)
    y = _conv_impl(2, "conv2d", x, w, b, stride, padding, dilation, groups, None, "relu",
                   algorithm=algorithm, residual=r)
    np.testing.assert_array_equal(y, np.maximum(plain + r, 0))


def test_residual_validation(rng):
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="residual must have shape"):
        _conv_impl(2, "conv2d", x, w, None, 1, 1, 1, 1, None, None,
                   residual=np.zeros((1, 4, 5, 5), np.float32))
    out = np.zeros((1, 4, 6, 6), np.float32) + 1
    y = _conv_impl(2, "conv2d", x, w, None, 1, 1, 1, 1, out, None, residual=out)
    ref = _conv_impl(2, "conv2d", x, w, None, 1, 1, 1, 1, None, None) + 1
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm,stride,width,cout", [
    ("direct", 1, 40, 5), ("direct", 2, 71, 5), ("direct", 1, 67, 5),  # padded rows
    ("depthwise", 1, 14, 5), ("depthwise", 2, 15, 5), ("depthwise", 1, 7, 5),  # channels in lanes
    # blocked_oc: after transposing its tiles (channels and pixels not whole vectors)
    ("blocked_oc", 1, 14, 37), ("blocked_oc", 2, 15, 20), ("blocked_oc", 1, 7, 5),
    # blocked: as it moves its tiles' rows into place (SiLU included below)
    ("blocked", 1, 14, 5), ("blocked", 2, 15, 10)])
def test_epilogue_in_the_kernel_is_the_epilogue_pass(algorithm, stride, width, cout, dtype,
                                                     rng):
    """Depthwise 3x3 kernels apply ReLU / ReLU6 as they store their vectors,
    blocked_oc over each task's rows, blocked as it stores each row: the same
    values, bit for bit, as the activation applied to the unactivated output
    (NaN, +-Inf and values around 0 and 6 included); a residual runs as a
    pass afterwards."""
    groups = 5 if algorithm != "blocked_oc" else 1
    x = (rng.standard_normal((2, 5, 6, width)) * 4).astype(dtype)
    x[0, 1, 2, 3], x[1, 2, 0, 5], x[0, 3, 4, 6] = np.nan, np.inf, -np.inf
    w = rng.standard_normal((cout, 5 // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    run = lambda act, res=None: _conv_impl(2, "conv2d", x, w, b, stride, 1, 1, groups, None,
                                           act, algorithm=algorithm, residual=res)
    with np.errstate(all="ignore"):
        plain = run(None)
        relu = np.where(plain < 0, dtype(0), plain)
        relu6 = np.where(relu > 6, dtype(6), relu)
        np.testing.assert_array_equal(run("relu"), relu)
        np.testing.assert_array_equal(run("relu6"), relu6)
        res = rng.standard_normal(plain.shape).astype(dtype)
        summed = plain + res
        np.testing.assert_array_equal(run("relu6", res), np.where(
            summed < 0, dtype(0), np.where(summed > 6, dtype(6), summed)))
    assert np.isnan(relu6).any() and (relu6 == 6).any() and (relu6 == 0).any()
    if algorithm == "blocked":                  # SiLU, with and without a residual
        silu = F.silu(plain)
        np.testing.assert_array_equal(run("silu"), silu)
        np.testing.assert_array_equal(run("silu", res), F.silu(summed))


@pytest.mark.parametrize("shape,wshape,groups,padding", [
    ((1, 16, 20, 20), (16, 16, 3, 3), 1, 1),      # Winograd: tiles would spread a NaN
    ((1, 8, 9, 9), (8, 1, 3, 3), 8, 1),           # depthwise direct: skips the padding taps
    ((1, 6, 7, 7), (6, 1, 1, 3), 6, (0, 2)),      # generic direct
    ((1, 8, 14, 14), (64, 8, 3, 3), 1, 1),        # blocked kernels
])
def test_nan_and_inf_pass_through_as_ieee_says(shape, wshape, groups, padding, rng):
    """Non-finite inputs and weights give NaN/Inf exactly where the
    definition's sums of products do (0 * Inf = NaN on padding included)."""
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    x[0, 1, 4, 5] = np.nan
    x[0, 2, 0, 0] = np.inf
    with np.errstate(all="ignore"):
        ref = conv_nd(x, w, None, 1, padding, None, 1, groups)
    y = F.conv2d(x, w, None, 1, padding, 1, groups)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))
    w2 = w.copy()
    w2[1, 0, 0, 0] = np.inf
    xf = np.where(np.isfinite(x), x, np.float32(0))
    with np.errstate(all="ignore"):
        ref = conv_nd(xf, w2, None, 1, padding, None, 1, groups)
    y = F.conv2d(xf, w2, None, 1, padding, 1, groups)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    finite = np.isfinite(ref)
    assert_close(y[finite], ref[finite], w[0].size)
    # the same through a compiled plan (prepacked weights)
    model = fastcnn.nn.Conv2d(shape[1], wshape[0], wshape[2:], padding=padding, groups=groups,
                              bias=False).eval()
    model.weight[...] = w
    plan = fastcnn.compile(model, x.shape)
    with np.errstate(all="ignore"):
        ref = conv_nd(x, w, None, 1, padding, None, 1, groups)
    np.testing.assert_array_equal(np.isnan(plan(x)), np.isnan(ref))
