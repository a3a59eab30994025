"""A convolution and the max pool after it run as one plan step (blocked_oc
pooling its rows in its scratch): the kernel against the NumPy reference on
awkward shapes, bit-identical over thread counts and equal to the two steps
run apart, NaN passing, bad arguments refused, which graphs plans fuse, and
ResNet-18's plan (native and through ONNX) against eager."""
import numpy as np
import pytest

import fastcnn
from fastcnn import _kernels, models, nn
from fastcnn._functional.conv import ConvEngine, layer_geometry
from fastcnn._validation import FUSABLE_ACTIVATIONS

from _reference import conv_nd, pool_nd, relu, relu6
from conftest import assert_close

ACTS = {None: lambda v: v, "relu": relu, "relu6": relu6}


def pool_case(rng, n, cin, cout, size, kernel, stride, pad, window, dtype=np.float32,
              groups=1):
    x = rng.standard_normal((n, cin) + size).astype(dtype)
    w = (rng.standard_normal((cout, cin // groups, kernel, kernel)) * 0.3).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    geom = layer_geometry("conv2d", 2, x.shape, w.shape,
                          dict(stride=stride, padding=pad, dilation=1, groups=groups))
    return geom, x, w, b


def run_fused(geom, window, x, w, b, act, threads):
    K = _kernels._conv
    packed = ConvEngine(geom, x.dtype, "blocked_oc").pack(w, 1)
    shared, per_thread = K.max_pool_plan(geom, window, x.itemsize)
    kh, kw, sh, sw, ph, pw = window
    y = np.full((geom.batch, geom.out_channels, (geom.out_h + 2 * ph - kh) // sh + 1,
                 (geom.out_w + 2 * pw - kw) // sw + 1), np.nan, x.dtype)
    K.max_pool_forward(geom, window, x, packed, b, y,
                       np.empty(shared + per_thread * threads, x.dtype),
                       FUSABLE_ACTIVATIONS[act], threads)
    return y


def reference(x, w, b, stride, pad, window, act, groups=1):
    kh, kw, sh, sw, ph, pw = window
    y = ACTS[act](conv_nd(x, w, b, stride, pad, groups=groups))
    return pool_nd(y, (kh, kw), (sh, sw), (ph, pw))[0]


# (batch, in, out, (H, W), kernel, stride, padding, pool window (kh, kw, sh, sw, ph, pw))
SHAPES = [
    (1, 3, 64, (61, 58), 7, 2, 3, (3, 3, 2, 2, 1, 1)),   # ResNet's stem, odd sizes
    (2, 3, 20, (37, 29), 3, 1, 1, (3, 3, 2, 2, 1, 1)),   # channels not a multiple of a vector
    (1, 5, 33, (30, 31), 5, 2, 2, (2, 2, 2, 2, 0, 0)),   # 2x2 windows, no padding
    (1, 4, 70, (17, 19), 3, 1, 0, (3, 3, 3, 3, 1, 1)),   # several channel blocks
    (1, 1, 17, (9, 9), 1, 2, 0, (2, 2, 1, 1, 1, 1)),     # 1 channel, stride > kernel
    (3, 2, 40, (8, 8), 3, 1, 1, (8, 8, 8, 8, 0, 0)),     # one window over the whole plane
    (1, 2, 16, (12, 20), 3, 1, 1, (3, 1, 2, 1, 1, 0)),   # non-square window and stride
    (0, 3, 16, (16, 16), 3, 1, 1, (3, 3, 2, 2, 1, 1)),   # N = 0
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:3])))
@pytest.mark.parametrize("act", [None, "relu", "relu6"])
def test_conv_max_pool_kernel_matches_reference(rng, shape, act):
    n, cin, cout, size, kernel, stride, pad, window = shape
    geom, x, w, b = pool_case(rng, n, cin, cout, size, kernel, stride, pad, window)
    assert _kernels._conv.max_pool_applies(geom, window, 4)
    expected = reference(x, w, b, stride, pad, window, act)
    results = [run_fused(geom, window, x, w, b, act, t) for t in (1, 2, 3)]
    assert results[0].shape == expected.shape
    assert_close(results[0], expected, reduction=cin * kernel * kernel)
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_conv_max_pool_kernel_float64(rng):
    window = (3, 3, 2, 2, 1, 1)
    geom, x, w, b = pool_case(rng, 2, 4, 21, (15, 13), 3, 1, 1, window, np.float64)
    expected = reference(x, w, b, 1, 1, window, "relu")
    results = [run_fused(geom, window, x, w, b, "relu", t) for t in (1, 2)]
    assert_close(results[0], expected, reduction=36)
    assert np.array_equal(results[0], results[1])


def test_conv_max_pool_kernel_groups(rng):
    window = (3, 3, 2, 2, 1, 1)
    geom, x, w, b = pool_case(rng, 2, 32, 96, (14, 15), 3, 1, 1, window, groups=2)
    assert _kernels._conv.max_pool_applies(geom, window, 4)
    expected = reference(x, w, b, 1, 1, window, "relu6", groups=2)
    results = [run_fused(geom, window, x, w, b, "relu6", t) for t in (1, 2, 3)]
    assert_close(results[0], expected, reduction=16 * 9)
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_conv_max_pool_equals_the_two_steps(rng):
    """The same sums, pooled before the epilogue: the values of running the
    convolution (blocked_oc) and then max_pool2d."""
    window = (3, 3, 2, 2, 1, 1)
    geom, x, w, b = pool_case(rng, 1, 3, 64, (45, 52), 7, 2, 3, window)
    engine = ConvEngine(geom, np.float32, "blocked_oc")
    y = np.empty((1, 64, geom.out_h, geom.out_w), np.float32)
    engine.forward(x, engine.pack(w, 1), b, y, np.empty(engine.workspace_size(2), np.float32),
                   FUSABLE_ACTIVATIONS["relu"], 2)
    two_steps = fastcnn.functional.max_pool2d(y, 3, 2, 1)
    assert np.array_equal(run_fused(geom, window, x, w, b, "relu", 2), two_steps)


def test_conv_max_pool_passes_nan(rng):
    window = (3, 3, 2, 2, 1, 1)
    geom, x, w, b = pool_case(rng, 1, 3, 24, (20, 20), 3, 1, 1, window)
    x[0, 1, 5, 7] = np.nan
    x[0, 2, 12, 3] = np.inf
    expected = reference(x, w, b, 1, 1, window, "relu")
    for t in (1, 2):
        y = run_fused(geom, window, x, w, b, "relu", t)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
        finite = np.isfinite(expected)
        assert_close(y[finite], expected[finite], reduction=27)
    assert np.isnan(expected).any()


def test_conv_max_pool_kernel_rejects_bad_arguments(rng):
    K = _kernels._conv
    window = (3, 3, 2, 2, 1, 1)
    geom, x, w, b = pool_case(rng, 1, 3, 16, (12, 12), 3, 1, 1, window)
    packed = ConvEngine(geom, np.float32, "blocked_oc").pack(w, 1)
    shared, per_thread = K.max_pool_plan(geom, window, 4)
    y = np.empty((1, 16, 6, 6), np.float32)
    ws = np.empty(shared + per_thread, np.float32)
    relu_code = FUSABLE_ACTIVATIONS["relu"]
    with pytest.raises(ValueError, match="workspace too small"):
        K.max_pool_forward(geom, window, x, packed, b, y, ws, relu_code, 2)
    with pytest.raises(ValueError, match="pooled output"):
        K.max_pool_forward(geom, window, x, packed, b, y[:, :8].copy(), ws, relu_code, 1)
    with pytest.raises(ValueError, match="does not keep order"):
        K.max_pool_forward(geom, window, x, packed, b, y, ws, FUSABLE_ACTIVATIONS["silu"], 1)
    for bad in ((3, 3, 2, 2, 2, 2),      # padding above half the window
                (3, 3, 0, 2, 1, 1),      # stride 0
                (20, 20, 1, 1, 0, 0)):   # a window larger than the output
        assert not K.max_pool_applies(geom, bad, 4)
        with pytest.raises(ValueError, match="cannot be fused"):
            K.max_pool_forward(geom, bad, x, packed, b, y, ws, relu_code, 1)


def _stem(act=nn.ReLU, pool=None):
    layers = [nn.Conv2d(3, 32, 7, 2, 3, bias=False), nn.BatchNorm2d(32)]
    if act is not None:
        layers.append(act())
    layers.append(pool or nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(*layers, nn.Conv2d(32, 8, 3, padding=1))


def _randomized(model, rng):
    state = model.state_dict()
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, v.shape).astype(v.dtype)
        elif v.dtype.kind == "f":
            state[k] = (rng.standard_normal(v.shape) * 0.3).astype(v.dtype)
    model.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6, None])
def test_plan_fuses_stem_and_matches_eager(rng, act):
    model = _randomized(_stem(act), rng)
    x = rng.standard_normal((2, 3, 41, 38)).astype(np.float32)
    plan = fastcnn.compile(model, x.shape)
    assert [n.op for n in plan.nodes][0] == "conv_max_pool"
    expected = model(x)
    for t in (1, 2, 3):
        with fastcnn.threads(t):
            assert_close(plan(x), expected, reduction=147)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                                  nn.MaxPool2d(3, 2, 1, dilation=2),
                                  nn.AvgPool2d(3, 2, 1)], ids=["ceil", "dilated", "avg"])
def test_plan_leaves_pools_it_cannot_fuse(rng, pool):
    model = _randomized(_stem(pool=pool), rng)
    x = rng.standard_normal((1, 3, 33, 33)).astype(np.float32)
    plan = fastcnn.compile(model, x.shape)
    assert "conv_max_pool" not in [n.op for n in plan.nodes]
    assert_close(plan(x), model(x), reduction=147)


def test_plan_leaves_stem_whose_output_is_read_twice_or_not_monotone(rng):
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.pool(y), y

    for model in (TwoReaders(), _stem(nn.SiLU)):
        model = _randomized(model, rng)
        x = rng.standard_normal((1, 3, 20, 20)).astype(np.float32)
        plan = fastcnn.compile(model, x.shape)
        assert "conv_max_pool" not in [n.op for n in plan.nodes]
        got, expected = plan(x), model(x)
        for g, e in zip(got if isinstance(got, tuple) else (got,),
                        expected if isinstance(expected, tuple) else (expected,)):
            assert_close(g, e, reduction=147)


def test_resnet18_plan_and_onnx_fuse_the_stem(rng, tmp_path):
    pytest.importorskip("onnx")
    from fastcnn import onnx as fonnx
    model = _randomized(models.resnet18(num_classes=10), rng)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    expected = model(x)
    native = fastcnn.compile(model, x.shape)
    assert [n.op for n in native.nodes].count("conv_max_pool") == 1
    assert_close(native(x), expected, reduction=512 * 9)
    path = tmp_path / "resnet18.onnx"
    fonnx.export(model, x.shape, path)
    loaded = fonnx.load(path)
    assert_close(loaded.run(None, {"input": x})[0], expected, reduction=512 * 9)
    (plan,) = loaded._plans.values()
    assert [n.op for n in plan.nodes].count("conv_max_pool") == 1
