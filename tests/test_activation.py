import math

import numpy as np
import pytest

import fastcnn.functional as F
from fastcnn import nn
from fastcnn._kernels import _act

import _reference as ref
from conftest import assert_close, requires_torch, run_threads, torch

ACTIVATIONS = [
    ("relu", {}), ("relu6", {}), ("leaky_relu", {"negative_slope": 0.2}), ("elu", {"alpha": 0.7}),
    ("selu", {}), ("celu", {"alpha": 1.5}), ("hardtanh", {"min_val": -0.5, "max_val": 2.0}),
    ("sigmoid", {}), ("tanh", {}), ("silu", {}), ("hardswish", {}), ("hardsigmoid", {}),
    ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("mish", {}),
    ("softplus", {"beta": 2.0, "threshold": 10.0}),
]
IN_PLACE = {"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "hardtanh", "silu",
            "hardswish", "hardsigmoid", "mish"}


def _values(dtype):
    """A range of magnitudes, both signs, the exact edges (0, +-3, +-6), and extremes."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(3000) * 4, rng.standard_normal(500) * 1e-3,
                        np.linspace(-30, 30, 601), [0.0, -0.0, 3.0, -3.0, 6.0, -6.0, 88.0,
                                                    -88.0, 1e-30, -1e-30]])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw", ACTIVATIONS)
def test_matches_reference(name, kw, dtype):
    x = _values(dtype)
    y = getattr(F, name)(x, **kw)
    assert y.dtype == dtype and y.shape == x.shape
    expected = ref.activation(name, x, **kw)
    tol = 4e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("name,kw", ACTIVATIONS)
def test_special_values(name, kw):
    x = np.array([np.nan, np.inf, -np.inf], np.float32)
    y = getattr(F, name)(x, **kw)
    assert np.isnan(y[0])
    with np.errstate(all="ignore"):
        expected = ref.activation(name, x.astype(np.float64), **kw)
    np.testing.assert_array_equal(y[1:], expected[1:].astype(np.float32))


@pytest.mark.parametrize("name,kw", [a for a in ACTIVATIONS if a[0] in IN_PLACE])
def test_in_place_equals_out_of_place(name, kw, rng):
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    expected = getattr(F, name)(x, **kw)
    a = x.copy()
    assert getattr(F, name)(a, inplace=True, **kw) is a
    np.testing.assert_array_equal(a, expected)
    b = x.copy()
    assert getattr(F, name)(b, out=b, **kw) is b
    np.testing.assert_array_equal(b, expected)
    view = x.copy()[:, :, ::2]          # non-contiguous, in place
    expected_view = getattr(F, name)(view, **kw)
    getattr(F, name)(view, inplace=True, **kw)
    np.testing.assert_array_equal(view, expected_view)


@pytest.mark.parametrize("name,kw", ACTIVATIONS)
def test_thread_counts_and_layout(name, kw, rng):
    x = rng.standard_normal((3, 40000)).astype(np.float32)
    results = run_threads(lambda: getattr(F, name)(x, **kw))
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)
    np.testing.assert_array_equal(getattr(F, name)(np.asfortranarray(x), **kw), results[0])


def test_prelu(rng):
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    w = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    expected = np.where(x > 0, x, x * w[None, :, None, None])
    np.testing.assert_array_equal(F.prelu(x, w), expected)
    np.testing.assert_array_equal(F.prelu(x, np.array([0.25], np.float32)),
                                  np.where(x > 0, x, 0.25 * x))
    layer = nn.PReLU(4)
    assert repr(layer) == "PReLU(num_parameters=4)" and list(layer.state_dict()) == ["weight"]
    np.testing.assert_array_equal(layer(x), np.where(x > 0, x, 0.25 * x))
    with pytest.raises(ValueError, match="weight must have 1 or 4 elements"):
        F.prelu(x, np.ones(3, np.float32))


@pytest.mark.parametrize("shape,dim", [((7,), 0), ((3, 50), 1), ((3, 50), 0), ((2, 5, 7, 3), 1),
                                       ((2, 5, 7, 3), -1), ((2, 5, 7, 3), 2), ((4, 1000), 1),
                                       ((2, 3, 600), 1), ((1, 17, 33), -2)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_matches_reference(shape, dim, log, rng):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    fn = F.log_softmax if log else F.softmax
    assert_close(fn(x, dim), ref.softmax(x, dim, log), shape[dim])
    results = run_threads(lambda: fn(x, dim))
    for result in results[1:]:
        np.testing.assert_array_equal(results[0], result)


def test_softmax_is_stable_and_propagates_nan(rng):
    x = (rng.standard_normal((3, 10)) + 1000).astype(np.float32)
    y = F.softmax(x, 1)
    assert np.all(np.isfinite(y)) and np.allclose(y.sum(1), 1, atol=1e-6)
    assert np.all(np.isfinite(F.log_softmax(x, 1)))
    x[1, 4] = np.nan
    y = F.softmax(x, 1)
    assert np.isnan(y[1]).all() and np.isfinite(y[0]).all()
    z = np.zeros((2, 3, 4), np.float32)
    z[0, 1, 2] = np.nan
    y = F.softmax(z, 1)
    assert np.isnan(y[0, :, 2]).all() and np.isfinite(y[0, :, :2]).all()


@pytest.mark.parametrize("n", [1, 15, 16, 17, 64, 65, 200])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_rows_special_values(n, log, rng):
    """Contiguous rows (softmax over the last dim): whole and masked vectors,
    large values (stable), -inf entries (0, or -inf for log), and rows with a
    NaN, a +inf or only -inf giving NaN throughout, as in PyTorch."""
    x = (rng.standard_normal((6, n)) * 5).astype(np.float32)
    x[1] += 1000
    x[2, n // 2] = -np.inf
    x[3, n - 1] = np.nan
    x[4, 0] = np.inf
    x[5] = -np.inf
    fn = F.log_softmax if log else F.softmax
    y = fn(x, 1)
    ok = [0, 1] + ([2] if n > 1 else [])
    with np.errstate(invalid="ignore"):
        expected = ref.softmax(x[ok], 1, log)
    finite = np.isfinite(expected)
    assert_close(y[ok][finite], expected[finite], n)
    if n > 1:
        assert y[2, n // 2] == (-np.inf if log else 0)
    assert np.isnan(y[3:]).all()


@pytest.mark.parametrize("n", [10, 16, 112, 200, 1024, 1025])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_rows_in_lockstep_match_rows_alone(n, log, rng):
    """Short rows run several at a time: each row's result must be the bits
    it gets alone, whatever its neighbours hold (a NaN, -inf, huge values)
    and however the threads split the rows."""
    x = (rng.standard_normal((13, n)) * 5).astype(np.float32)
    x[2, n // 3] = np.nan
    x[5] = -np.inf
    x[6] += 1000
    x[9, 1] = -np.inf
    fn = F.log_softmax if log else F.softmax
    alone = np.concatenate([fn(x[i:i + 1], -1) for i in range(len(x))])
    for result in run_threads(lambda: fn(x, -1)):
        np.testing.assert_array_equal(result, alone)
    assert np.isnan(alone[[2, 5]]).all() and np.isfinite(alone[[0, 1, 3, 4, 6, 7, 8]]).all()


@pytest.mark.parametrize("log", [False, True])
def test_softmax_vector_and_tail_positions_agree(log, rng):
    """Inner positions 0-15 run as a whole vector, 16 as a masked one: equal
    columns must give equal bits, across the whole range of exp (results down
    to subnormal and 0, -inf, NaN)."""
    col = np.concatenate([rng.uniform(-110, 0, 60), [0, -87.5, -100, -103.9, -np.inf]])
    col = col.astype(np.float32)
    x = np.repeat(col[None, :, None], 17, axis=2)
    x[..., 1:16] += rng.uniform(-1, 1, (1, col.size, 15)).astype(np.float32)
    x[0, 3, 5] = np.nan
    fn = F.log_softmax if log else F.softmax
    y = fn(x, 1)
    np.testing.assert_array_equal(y[..., 0], y[..., 16])
    assert np.isnan(y[0, :, 5]).all()
    assert_close(y, ref.softmax(x, 1, log), col.size)


def _offset_view(shape, offset, dtype=np.float32):
    """An uninitialised C-contiguous array starting offset elements past a
    64-byte boundary."""
    size = int(np.prod(shape))
    buf = np.empty(size + 32, dtype)
    start = (-buf.ctypes.data % 64) // buf.itemsize + offset
    return buf[start:start + size].reshape(shape)


@pytest.mark.parametrize("shape", [(2, 64, 128, 128), (1, 64, 183, 183)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_large_outputs_any_alignment(shape, log, rng):
    """Outputs of 8 MiB and more bypass the cache (whole lines streamed, the
    partial lines at block ends stored normally); with inner a multiple of 16
    the blocks shift to the output's line boundaries. A column's result never
    depends on its block: every output alignment, in place or not, and every
    thread count gives the same bits."""
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    fn = F.log_softmax if log else F.softmax
    expected = fn(x, 1)
    assert_close(expected, ref.softmax(x, 1, log), shape[1])
    for offset in (1, 4, 13):
        out = _offset_view(shape, offset)
        fn(x, 1, out=out)
        np.testing.assert_array_equal(out, expected)
        xin = _offset_view(shape, offset)      # in place, as the C-API allows
        xin[...] = x
        _act.softmax(xin, xin, shape[0], shape[1], shape[2] * shape[3], log, 2)
        np.testing.assert_array_equal(xin, expected)
    for result in run_threads(lambda: fn(x, 1)):
        np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_over_many_channels_without_tile(log, rng):
    """Over 2048 channels a block's exponents go to the output itself."""
    x = (rng.standard_normal((2, 3000, 21)) * 4).astype(np.float32)
    fn = F.log_softmax if log else F.softmax
    y = fn(x, 1)
    assert_close(y, ref.softmax(x, 1, log), 3000)
    xin = x.copy()
    _act.softmax(xin, xin, 2, 3000, 21, log, 2)
    np.testing.assert_array_equal(xin, y)
    for result in run_threads(lambda: fn(x, 1)):
        np.testing.assert_array_equal(result, y)


def _at_every_position(vals):
    """vals in the first 64 elements (four vectors a step) and on, reversed,
    and again in the masked last vector."""
    return np.concatenate([vals, vals[::-1], vals[:37]])


def _same_bits_everywhere(y, n):
    """The n values of _at_every_position came out alike at every position."""
    np.testing.assert_array_equal(y[:n], y[n:2 * n][::-1])
    np.testing.assert_array_equal(y[:37], y[2 * n:])


@pytest.mark.parametrize("name", ["sigmoid", "silu"])
def test_sigmoid_vector_and_tail_positions_agree(name, rng):
    """As for erf: a value gives the same bits wherever it sits, including
    where exp(-x) overflows (x below -88.7: sigmoid 0, silu -0, as
    x / (1 + inf)), subnormal results, +-inf and NaN."""
    vals = np.concatenate([rng.uniform(-20, 20, 70), [0, -0.0, -87.5, -88.5, -88.8, -100, 90,
                                                      np.inf, -np.inf, np.nan]])
    vals = vals.astype(np.float32)
    y = getattr(F, name)(_at_every_position(vals))
    n = vals.size
    _same_bits_everywhere(y, n)
    v = vals.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = 1 / (1 + np.exp(-v)) * (v if name == "silu" else 1)
    ok = np.isfinite(v) & (v > -88.7)      # exp(-v) finite in float32
    # subnormal results (x below -87.3) may come out 0 (builds without AVX-512)
    np.testing.assert_allclose(y[:n][ok], expected[ok], rtol=3e-7,
                               atol=np.finfo(np.float32).tiny * (100 if name == "silu" else 1))
    tail = y[n - 6:n]           # -88.8, -100, 90, inf, -inf, nan
    assert list(np.signbit(tail[:2])) == [name == "silu"] * 2 and not tail[:2].any()
    assert tail[2] == (90 if name == "silu" else 1) and tail[3] == (np.inf if name == "silu" else 1)
    assert (np.isnan(tail[4]) if name == "silu" else tail[4] == 0) and np.isnan(tail[5])


@pytest.mark.parametrize("approximate", [None, "tanh"])
def test_tanh_vector_and_tail_positions_agree(approximate, rng):
    """tanh (and GELU's tanh form) as for erf: the same bits at vector and
    tail positions, both sides of the switch between tanh's two formulas
    (0.625), exp(2|x|) overflowing (tanh 1), -0, +-inf and NaN."""
    vals = np.concatenate([rng.uniform(-12, 12, 70), [0, -0.0, 0.6249, 0.6251, -0.6251, 1e-20,
                                                      44.5, 45, -100, np.inf, -np.inf,
                                                      np.nan]]).astype(np.float32)
    x = _at_every_position(vals)
    v = vals.astype(np.float64)
    if approximate:
        y = F.gelu(x, approximate="tanh")
        with np.errstate(invalid="ignore"):
            expected = 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))
    else:
        y = F.tanh(x)
        expected = np.tanh(v)
    n = vals.size
    _same_bits_everywhere(y, n)
    finite = np.isfinite(vals)
    # GELU's 1 + tanh cancels for x below -3: an absolute bound there
    np.testing.assert_allclose(y[:n][finite], expected[finite], rtol=3e-7,
                               atol=1e-6 if approximate else 1e-30)
    tail = y[n - 3:n]                                             # inf, -inf, nan
    if approximate:
        assert tail[0] == np.inf and np.isnan(tail[1]) and np.isnan(tail[2])
    else:
        assert list(tail[:2]) == [1, -1] and np.isnan(tail[2])
        assert np.signbit(y[71]) and y[71] == 0                   # -0
        assert list(y[n - 6:n - 3]) == [1, 1, -1]                 # 44.5, 45, -100


@pytest.mark.parametrize("name", ["gelu", "erf"])
def test_erf_vector_and_tail_positions_agree(name, rng):
    """Elements 0-63 run four vectors at a time, the rest one masked vector:
    a value gives the same bits wherever it sits, over erf's whole range,
    its clamp at 4, +-inf and NaN. (erf itself serves ONNX's Erf.)"""
    from fastcnn._functional import activation as A
    vals = np.concatenate([rng.uniform(-8, 8, 70), [0, -0.0, 3.99, 4.01, -6, np.inf,
                                                     np.nan]]).astype(np.float32)
    x = _at_every_position(vals)
    if name == "gelu":
        y = F.gelu(x)
        expected = 0.5 * vals * (1 + ref._erf(vals / np.sqrt(2)))
    else:
        y = A.apply("erf", A.ERF, x, False, None)
        expected = ref._erf(vals)
    n = vals.size
    _same_bits_everywhere(y, n)
    finite = np.isfinite(vals)
    # gelu's 1 + erf cancels for x < -3: an absolute bound there, |x| ulp(1)
    np.testing.assert_allclose(y[:n][finite], expected[finite], rtol=2e-6,
                               atol=1e-6 if name == "gelu" else 1e-7)
    assert np.isnan(y[n - 1]) and y[n - 2] == (np.inf if name == "gelu" else 1)


def test_softmin_and_dtype(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert_close(F.softmin(x, 1), ref.softmax(-x, 1), 4)
    assert F.softmax(x, 1, dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("dim", [2, -3, 5])
def test_softmax_dim_out_of_range(dim):
    with pytest.raises(ValueError, match=r"softmax: dim .* is out of range .* \[-2, 1\]"):
        F.softmax(np.zeros((2, 3), np.float32), dim)


def test_softmax_implicit_dim_warns():
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = F.softmax(np.zeros((2, 3), np.float32))
    np.testing.assert_allclose(y, np.full((2, 3), 1 / 3), rtol=1e-6)


def test_activation_errors():
    with pytest.raises(TypeError, match="relu: input must be float32 or float64, got int64"):
        F.relu(np.arange(3))
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        F.relu(ro, inplace=True)
    with pytest.raises(ValueError, match="approximate must be"):
        F.gelu(np.zeros(3, np.float32), approximate="fast")
    with pytest.raises(ValueError, match="min_val"):
        nn.Hardtanh(1.0, -1.0)
    with pytest.raises(ValueError, match=r"out has shape \(4,\)"):
        F.relu(np.zeros(3, np.float32), out=np.zeros(4, np.float32))


def test_layers_and_reprs(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    cases = [(nn.ReLU(), "ReLU()", F.relu), (nn.ReLU(inplace=True), "ReLU(inplace=True)", F.relu),
             (nn.ReLU6(), "ReLU6()", F.relu6), (nn.SiLU(), "SiLU()", F.silu),
             (nn.LeakyReLU(0.2), "LeakyReLU(negative_slope=0.2)", lambda v: F.leaky_relu(v, 0.2)),
             (nn.ELU(), "ELU(alpha=1.0)", F.elu), (nn.GELU(), "GELU(approximate='none')", F.gelu),
             (nn.Hardtanh(), "Hardtanh(min_val=-1.0, max_val=1.0)", F.hardtanh),
             (nn.Softmax(dim=1), "Softmax(dim=1)", lambda v: F.softmax(v, 1)),
             (nn.LogSoftmax(dim=-1), "LogSoftmax(dim=-1)", lambda v: F.log_softmax(v, -1)),
             (nn.Sigmoid(), "Sigmoid()", F.sigmoid), (nn.Tanh(), "Tanh()", F.tanh),
             (nn.Mish(), "Mish()", F.mish), (nn.Hardswish(), "Hardswish()", F.hardswish),
             (nn.Softplus(), "Softplus(beta=1.0, threshold=20.0)", F.softplus)]
    for layer, text, fn in cases:
        assert repr(layer) == text
        np.testing.assert_array_equal(layer(x.copy()), fn(x))
    a = x.copy()
    assert nn.ReLU(inplace=True)(a) is a


@requires_torch
@pytest.mark.parametrize("name,kw", ACTIVATIONS)
def test_parity_with_pytorch(name, kw):
    """PyTorch's formula, evaluated by PyTorch in float64: its own float32 tanh
    is sometimes off by up to 9e-5 (now and then, on part of a tensor; seen
    in the test suite), which would make a float32 comparison flaky."""
    x = _values(np.float32)
    theirs = getattr(torch.nn.functional, name)(torch.from_numpy(x.astype(np.float64)), **kw)
    np.testing.assert_allclose(getattr(F, name)(x, **kw), theirs.numpy().astype(np.float32),
                               rtol=4e-6, atol=4e-6)


@requires_torch
def test_softmax_parity_with_pytorch(rng):
    x = rng.standard_normal((2, 5, 7, 3)).astype(np.float32)
    for dim in range(4):
        np.testing.assert_allclose(F.softmax(x, dim), torch.softmax(torch.from_numpy(x), dim).numpy(),
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(F.log_softmax(x, dim),
                                   torch.log_softmax(torch.from_numpy(x), dim).numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_out_as_another_view_of_the_input(rng):
    """out= a second view of the input with the same layout runs in place;
    an overlapping view with another layout is refused, not computed."""
    x = rng.standard_normal((4, 6)).astype(np.float32)
    expected = np.maximum(x, 0)
    y = F.relu(x, out=x[...])
    np.testing.assert_array_equal(x, expected)
    assert np.shares_memory(y, x)
    flat = rng.standard_normal(30).astype(np.float32)
    with pytest.raises(ValueError, match="relu: out must not overlap the input"):
        F.relu(flat[:24].reshape(4, 6), out=flat[6:].reshape(4, 6))
    with pytest.raises(ValueError, match="sigmoid: out must not overlap the input"):
        F.sigmoid(flat[:24].reshape(4, 6), out=flat[1:25].reshape(4, 6))


def test_float64_exp_within_an_ulp(rng):
    """float64 exp (softmax, sigmoid, SiLU, ONNX Exp in double) is fastcnn's
    vectorizable one: within an ulp of numpy's over the whole range, the
    subnormal results included, and exact at the special values."""
    from fastcnn._functional import activation as A
    x = np.concatenate([rng.uniform(-745, 709.7, 20000), rng.uniform(-1, 1, 2000),
                        [0.0, -0.0, 709.78, -708.4, -744.4, 1e-300]])
    y = A.apply("exp", A.EXP, x, False, None)
    ref = np.exp(x)
    ulp = np.spacing(ref)
    assert np.all(np.abs(y - ref) <= ulp), np.max(np.abs(y - ref) / ulp)
    special = np.array([np.nan, np.inf, -np.inf, 710.0, 1000.0, -746.0, -1000.0])
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(A.apply("exp", A.EXP, special, False, None),
                                      np.exp(special))


def _max_ulps(y, ref):
    spacing = np.maximum(np.spacing(np.abs(ref)), 5e-324)
    return np.max(np.abs(y - ref) / spacing)


def test_float64_tanh_expm1_log_log1p_near_libm(rng):
    """The float64 tanh, expm1 (ELU family), log and log1p (softplus, mish)
    and erf (GELU) are fastcnn's branch-free ones (loops of them vectorise): within a few
    ulp of numpy's over the whole range, subnormals included, and the
    special values exact (tanh(-0) = -0, -1 and 1 at the ends, log(0) = -inf,
    NaN through)."""
    from fastcnn._functional import activation as A
    x = np.concatenate([rng.standard_normal(20000) * 4, rng.uniform(-800, 800, 5000),
                        np.geomspace(1e-320, 1e-3, 2000), -np.geomspace(1e-320, 1e-3, 2000),
                        rng.uniform(0.1, 0.7, 5000), [709.78, -37.5, 40.0, 0.25, 0.5]])
    with np.errstate(over="ignore"):
        assert _max_ulps(F.tanh(x), np.tanh(x)) <= 3
        neg = x[x < 0]
        assert _max_ulps(F.elu(neg), np.expm1(neg)) <= 1
        assert _max_ulps(F.celu(x, 2.0)[x < 0], 2 * np.expm1(x[x < 0] / 2)) <= 2
        pos = np.abs(x)
        assert _max_ulps(A.apply("log", A.LOG, pos, False, None), np.log(pos)) <= 1
        sp = F.softplus(x)
        ref = np.where(x > 20, x, np.log1p(np.exp(x)))
        assert _max_ulps(sp, ref) <= 3
        near = x[np.abs(x) < 8]         # every erf piece and its edges
        near = np.concatenate([near, [0.84375, 1.25, 2.857142857142857, 6.0, -6.5, 1e-310]])
        erf = A.apply("erf", A.ERF, near, False, None)
        assert _max_ulps(erf, np.array([math.erf(v) for v in near])) <= 1
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-320, 710.0, -745.0])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(A.apply("erf", A.ERF, special, False, None),
                                      [math.erf(v) for v in special])
    t = F.tanh(special)
    np.testing.assert_array_equal(t, np.tanh(special))
    np.testing.assert_array_equal(np.signbit(t[:2]), [False, True])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(F.elu(special), np.where(special > 0, special, np.expm1(special)))
        logs = np.array([0.0, -0.0, -1.0, np.inf, np.nan, 5e-324, 1.0])
        np.testing.assert_array_equal(A.apply("log", A.LOG, logs, False, None), np.log(logs))
        np.testing.assert_array_equal(F.softplus(np.array([-np.inf, np.inf, np.nan, -800.0])),
                                      [0.0, np.inf, np.nan, 0.0])


@requires_torch
def test_out_and_inplace_are_where_the_readme_says():
    """Every functional op that computes new values takes out=; flatten,
    unflatten and the dropouts do not (views, or the input itself); inplace=
    exactly where torch.nn.functional has it."""
    import inspect
    import fastcnn.functional as FF
    no_out = {"flatten", "unflatten", "dropout", "dropout1d", "dropout2d", "dropout3d"}
    losses = {"cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits"}
    no_out |= losses | {name + "_grad" for name in losses}     # scalars, or new gradients
    for name in FF.__all__:
        fn = getattr(FF, name)
        if not callable(fn) or name.endswith("_"):
            continue
        params = inspect.signature(fn).parameters
        assert ("out" in params) == (name not in no_out), name
        theirs = getattr(torch.nn.functional, name, None)
        if theirs is not None:
            try:
                torch_params = inspect.signature(theirs).parameters
            except (TypeError, ValueError):
                continue
            assert ("inplace" in params) == ("inplace" in torch_params), name
