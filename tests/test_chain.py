"""Convolution chains (a 1x1 expansion, a depthwise convolution and a 1x1
projection run band by band as one plan step): the kernel against the NumPy
reference on awkward shapes, bit-identical over thread counts and band
sizes, which graphs plans fuse, and plans of MobileNetV2 against eager."""
import numpy as np
import pytest

import fastcnn
from fastcnn import _kernels, models, nn
from fastcnn._validation import FUSABLE_ACTIVATIONS

from _reference import conv_nd, relu, relu6
from conftest import assert_close, run_threads

ACTS = {None: lambda v: v, "relu": relu, "relu6": relu6}


def reference(x, we, be, wd, bd, wp, bp, stride, pad, dilation, residual, acts):
    h = ACTS[acts[0]](conv_nd(x, we, be)) if we is not None else x.astype(np.float64)
    h = ACTS[acts[1]](conv_nd(h, wd, bd, stride, pad, dilation=dilation, groups=wd.shape[0]))
    y = conv_nd(h, wp, bp)
    if residual is not None:
        y = y + residual
    return ACTS[acts[2]](y)


def chain_case(rng, n, cin, cexp, cout, size, kernel, stride, pad, dilation, expand,
               residual=False, acts=("relu6", "relu6", None)):
    h, w = size
    out_h = (h + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    out_w = (w + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    cexp = cexp if expand else cin
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    we = (rng.standard_normal((cexp, cin, 1, 1)) * 0.3).astype(np.float32) if expand else None
    be = rng.standard_normal(cexp).astype(np.float32)
    wd = (rng.standard_normal((cexp, 1, kernel, kernel)) * 0.3).astype(np.float32)
    bd = rng.standard_normal(cexp).astype(np.float32)
    wp = (rng.standard_normal((cout, cexp, 1, 1)) * 0.2).astype(np.float32)
    bp = rng.standard_normal(cout).astype(np.float32)
    res = rng.standard_normal((n, cout, out_h, out_w)).astype(np.float32) if residual else None
    geom = (cin, h, w, cexp, cout, out_h, out_w, kernel, kernel, stride, stride, pad, pad,
            dilation, dilation, h, w, 1, 1, 0)
    return geom, x, (we, be, wd, bd, wp, bp), res, acts


def run_chain(geom, x, weights, res, acts, l2, threads):
    K = _kernels._chain
    expand = weights[0] is not None
    _, _, scratch, _ = K.plan(geom, expand, l2)
    packed = K.pack(geom, *weights, l2)
    y = np.full((x.shape[0], geom[4], geom[5], geom[6]), np.nan, np.float32)
    codes = [FUSABLE_ACTIVATIONS[a] for a in acts]
    K.forward(geom, expand, x, packed, res, y, np.empty(scratch * threads, np.float32),
              *codes, threads, l2)
    return y


# (batch, in, expanded, out, (H, W), kernel, stride, padding, dilation)
SHAPES = [
    (1, 16, 96, 24, (23, 31), 3, 2, 1, 1),    # MobileNetV2's stride-2 block, odd sizes
    (2, 24, 144, 24, (14, 9), 3, 1, 1, 1),    # stride 1 with its residual
    (1, 5, 7, 3, (6, 7), 3, 2, 1, 1),         # channels below one vector
    (3, 4, 20, 33, (10, 3), 5, 1, 2, 1),      # 5x5, padding = kernel // 2, non-square
    (1, 6, 12, 6, (8, 8), 3, 1, 2, 2),        # dilation
    (1, 3, 17, 4, (7, 9), 3, 3, 0, 1),        # stride > kernel, no padding
    (1, 8, 40, 8, (1, 1), 3, 1, 1, 1),        # a 1x1 plane: only padding around it
    (0, 8, 8, 8, (5, 5), 3, 1, 1, 1),         # N = 0
    (1, 40, 160, 48, (7, 7), 3, 1, 1, 1),     # several tiles of channels
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:4])))
@pytest.mark.parametrize("expand", [True, False])
def test_chain_kernel_matches_reference(rng, shape, expand):
    n, cin, cexp, cout, size, kernel, stride, pad, dilation = shape
    h, w = size
    residual = (stride == 1 and cin == cout
                and (h + 2 * pad - dilation * (kernel - 1) - 1) + 1 == h)
    for acts in (("relu6", "relu6", None), (None, "relu", "relu6")):
        geom, x, weights, res, acts = chain_case(rng, n, cin, cexp, cout, size, kernel,
                                                 stride, pad, dilation, expand, residual, acts)
        expected = reference(x, *weights, stride, pad, dilation, res, acts)
        # a large L2 (whole images per band) and a small one (one row per band)
        results = [run_chain(geom, x, weights, res, acts, l2, threads)
                   for l2 in (4 << 20, 64 << 10) for threads in (1, 2, 3)]
        assert_close(results[0], expected, reduction=geom[3] * 9)
        for r in results[1:]:
            assert np.array_equal(r, results[0])


# first-layer expansions: (batch, in, expanded, out, (H, W), expansion kernel,
# stride, padding; depthwise kernel, stride, padding)
FIRST_LAYER_SHAPES = [
    (1, 3, 32, 16, (40, 37), 3, 2, 1, 3, 1, 1),    # MobileNetV2's stem and first block, odd sizes
    (2, 3, 24, 8, (17, 16), 3, 1, 1, 3, 2, 1),     # stride 1, a stride-2 depthwise after it
    (1, 1, 20, 5, (11, 13), 5, 2, 2, 3, 1, 1),     # 1 channel, 5x5 (25 columns)
    (1, 2, 16, 16, (9, 9), 3, 3, 0, 3, 1, 1),      # stride > kernel, no padding
    (0, 3, 8, 8, (6, 6), 3, 2, 1, 3, 1, 1),        # N = 0
]


@pytest.mark.parametrize("shape", FIRST_LAYER_SHAPES, ids=lambda s: "x".join(map(str, s[:4])))
def test_chain_first_layer_expansion_matches_reference(rng, shape):
    n, cin, cexp, cout, (h, w), ek, es, ep, kernel, stride, pad = shape
    eh, ew = (h + 2 * ep - ek) // es + 1, (w + 2 * ep - ek) // es + 1
    out_h, out_w = (eh + 2 * pad - kernel) // stride + 1, (ew + 2 * pad - kernel) // stride + 1
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    we = (rng.standard_normal((cexp, cin, ek, ek)) * 0.3).astype(np.float32)
    be = rng.standard_normal(cexp).astype(np.float32)
    wd = (rng.standard_normal((cexp, 1, kernel, kernel)) * 0.3).astype(np.float32)
    bd = rng.standard_normal(cexp).astype(np.float32)
    wp = (rng.standard_normal((cout, cexp, 1, 1)) * 0.2).astype(np.float32)
    bp = rng.standard_normal(cout).astype(np.float32)
    geom = (cin, eh, ew, cexp, cout, out_h, out_w, kernel, kernel, stride, stride, pad, pad,
            1, 1, h, w, ek, es, ep)
    acts = ("relu6", "relu6", None)
    e = relu6(conv_nd(x, we, be, es, ep))
    d = relu6(conv_nd(e, wd, bd, stride, pad, groups=cexp))
    expected = conv_nd(d, wp, bp)
    results = [run_chain(geom, x, (we, be, wd, bd, wp, bp), None, acts, l2, threads)
               for l2 in (4 << 20, 64 << 10) for threads in (1, 2, 3)]
    assert results[0].shape == (n, cout, out_h, out_w)
    assert_close(results[0], expected, reduction=cin * ek * ek * 9)
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_chain_first_layer_geometry_is_checked():
    K = _kernels._chain
    with pytest.raises(ValueError, match="do not take"):      # 3x3/2 pad 1: 40 -> 20, not 19
        K.plan((3, 19, 19, 32, 16, 19, 19, 3, 3, 1, 1, 1, 1, 1, 1, 40, 40, 3, 2, 1), True,
               1 << 20)
    with pytest.raises(ValueError, match="do not take"):      # an expansion is needed
        K.plan((3, 20, 20, 27, 16, 20, 20, 3, 3, 1, 1, 1, 1, 1, 1, 40, 40, 3, 2, 1), False,
               1 << 20)
    with pytest.raises(ValueError, match="20 fields"):
        K.plan((3, 20, 20, 32, 16, 20, 20, 3, 3, 1, 1, 1, 1, 1, 1), True, 1 << 20)


def test_chain_kernel_passes_nan_and_inf(rng):
    geom, x, weights, res, acts = chain_case(rng, 1, 8, 24, 8, (9, 9), 3, 1, 1, 1, True)
    x[0, 3, 4, 4] = np.nan
    x[0, 5, 0, 0] = np.inf
    expected = reference(x, *weights, 1, 1, 1, None, acts)
    y = run_chain(geom, x, weights, None, acts, 4 << 20, 2)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    finite = np.isfinite(expected)
    assert_close(y[finite], expected[finite], reduction=24 * 9)


def test_chain_kernel_rejects_bad_arguments(rng):
    K = _kernels._chain
    geom, x, weights, res, acts = chain_case(rng, 1, 8, 24, 8, (9, 9), 3, 1, 1, 1, True)
    packed = K.pack(geom, *weights, 1 << 20)
    scratch = K.plan(geom, True, 1 << 20)[2]
    y = np.empty((1, 8, 9, 9), np.float32)
    ws = np.empty(scratch, np.float32)
    with pytest.raises(ValueError, match="expected input"):
        K.forward(geom, True, x[:, :4].copy(), packed, None, y, ws, 2, 2, 0, 1, 1 << 20)
    with pytest.raises(ValueError, match="expected output"):
        K.forward(geom, True, x, packed, None, y[:, :4].copy(), ws, 2, 2, 0, 1, 1 << 20)
    with pytest.raises(ValueError, match="workspace too small"):
        K.forward(geom, True, x, packed, None, y, ws, 2, 2, 0, 2, 1 << 20)
    with pytest.raises(ValueError, match="packed weights too small"):
        K.forward(geom, True, x, packed[:10], None, y, ws, 2, 2, 0, 1, 1 << 20)
    with pytest.raises(ValueError, match="float32"):
        K.forward(geom, True, x.astype(np.float64), packed, None, y, ws, 2, 2, 0, 1, 1 << 20)
    with pytest.raises(ValueError, match="not fused"):
        K.forward(geom, True, x, packed, None, y, ws, 2, 2, 3, 1, 1 << 20)
    with pytest.raises(ValueError, match="residual"):
        K.forward(geom, True, x, packed, y[:, :, :3].copy(), y, ws, 2, 2, 0, 1, 1 << 20)
    with pytest.raises(ValueError, match="invalid geometry"):
        K.plan((8, 9, 9, 24, 8, 9, 9, 3, 3, 0, 1, 1, 1, 1, 1, 9, 9, 1, 1, 0), True, 1 << 20)


def _randomize(model, rng):
    """Weights and batch-norm statistics of realistic scale (the default
    initialisation leaves MobileNetV2's output near zero)."""
    state = model.state_dict()
    for k, v in state.items():
        if k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, v.shape).astype(v.dtype)
        elif k.endswith("running_mean") or k.endswith("bias"):
            state[k] = (rng.standard_normal(v.shape) * 0.1).astype(v.dtype)
        elif k.endswith("weight") and v.ndim == 1:
            state[k] = rng.uniform(0.5, 1.5, v.shape).astype(v.dtype)
        elif v.dtype.kind == "f":
            fan_in = int(np.prod(v.shape[1:])) or 1
            state[k] = (rng.standard_normal(v.shape) * np.sqrt(2.0 / fan_in)).astype(v.dtype)
    model.load_state_dict(state)
    return model


FMA = _kernels._conv.dispatch_facts()["fused_multiply_add"]


@pytest.fixture
def small_l2():
    """An L2 of 128 KiB, so plans cut the chains of small test networks into
    several bands; restored afterwards."""
    _kernels._conv.set_cache_sizes(32 * 1024, 128 * 1024)
    yield
    _kernels._conv.set_cache_sizes(_kernels.CACHES["l1d"], _kernels.CACHES["l2"])


def test_chains_pay_with_an_expansion_and_fma():
    assert _kernels._chain.pays(True) == FMA
    assert not _kernels._chain.pays(False)


def _expected_chains(blocks):
    return blocks if FMA else 0


@pytest.mark.parametrize("batch", [1, 2])
def test_mobilenet_plan_runs_chains_and_matches_eager(rng, batch, small_l2):
    model = _randomize(models.MobileNetV2(num_classes=10, width_mult=0.5), rng).eval()
    x = rng.standard_normal((batch, 3, 96, 96)).astype(np.float32)
    plan = fastcnn.compile(model, x.shape)
    # every block: the first, which has no expansion, with the stem before it
    assert [n.op for n in plan.nodes].count("conv_chain") == _expected_chains(17)
    assert [n.op for n in plan.nodes][0] == ("conv_chain" if FMA else "conv")
    expected = model(x)
    results = run_threads(lambda: plan(x))
    assert np.abs(expected).max() > 1e-2           # a real comparison, not of zeros
    assert_close(results[0], expected, reduction=960 * 9)
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_mobilenet_onnx_model_runs_chains(rng, tmp_path, small_l2):
    from fastcnn import onnx as fonnx
    model = _randomize(models.MobileNetV2(num_classes=10, width_mult=0.5), rng).eval()
    path = tmp_path / "mobilenet.onnx"
    fonnx.export(model, (1, 3, 48, 48), path)
    loaded = fonnx.load(path)
    x = rng.standard_normal((1, 3, 48, 48)).astype(np.float32)
    y = loaded.run(None, {"input": x})[0]
    assert_close(y, model(x), reduction=960 * 9)
    (plan,) = loaded._plans.values()
    chains = [n.op for n in plan.nodes].count("conv_chain")
    assert chains >= 1 if FMA else chains == 0


class _Block(nn.Module):
    """expansion -> depthwise -> projection, its expanded tensor also returned
    when `leak` is set (then nothing may be fused)."""

    def __init__(self, leak=False):
        super().__init__()
        self.leak = leak
        self.expand = nn.Conv2d(8, 32, 1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.project = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        e = fastcnn.functional.relu6(self.expand(x))
        y = self.project(fastcnn.functional.relu(self.dw(e))) + x
        return (y, e) if self.leak else y


@pytest.mark.parametrize("leak", [False, True])
def test_plan_fuses_only_private_intermediates(rng, leak, small_l2):
    block = _Block(leak).eval()
    x = rng.standard_normal((2, 8, 24, 24)).astype(np.float32)
    plan = fastcnn.compile(block, x.shape)
    chains = [n.op for n in plan.nodes].count("conv_chain")
    assert chains == (0 if leak else _expected_chains(1))
    got, expected = plan(x), block(x)
    for g, e in zip(got if leak else (got,), expected if leak else (expected,)):
        assert_close(g, e, reduction=32 * 9)


def test_plan_keeps_float64_layers(rng, small_l2):
    block = _Block().double().eval()
    x = rng.standard_normal((1, 8, 24, 24))
    plan = fastcnn.compile(block, x.shape, dtype=np.float64)
    assert "conv_chain" not in [n.op for n in plan.nodes]
    assert_close(plan(x), block(x), reduction=32 * 9)
