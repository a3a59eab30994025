"""Hostile input, generated: every public functional op and the layer classes
called with random ranks, sizes (0-9), dtypes, layouts (non-contiguous,
negative strides, Fortran order, read-only, Python lists), NaN/Inf values and
random (often invalid) arguments. Each call must either return what PyTorch
returns for the same call (float32/float64 inputs), or raise ValueError or
TypeError with a message; never crash, hang or return a wrong shape. Where
an array has a zero-size axis the two libraries may disagree on whether the
call is valid (PyTorch's rules vary by op), but never on a result.

PyTorch is the oracle: what fastcnn accepts on float32/float64 arrays,
PyTorch must accept too and compute alike. fastcnn may refuse what PyTorch
computes (e.g. a negative LP-pool norm), with a clear error; those cases are
counted in the report. For other dtypes (fastcnn computes in float32 and
float64 only) anything but a crash or an unclear error is acceptable.
"""
import faulthandler
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcnn.functional as F
from fastcnn import nn

torch = pytest.importorskip("torch", reason="PyTorch is the oracle of the hostile-input tests")
TF = torch.nn.functional

EXAMPLES = {"count": 0}
STRICTER = {}                 # op -> calls PyTorch accepted and fastcnn refused with a message
OPS_EXAMPLES = 200            # per functional op
LAYER_EXAMPLES = 100          # per layer class
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
FLOATS = (np.float32, np.float64)
MAX_ELEMENTS = 4000


@pytest.fixture(autouse=True)
def _watchdog():
    """A hang in a kernel fails the run with a traceback instead of stalling it."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# ---------------------------------------------------------------- generated values

@st.composite
def arrays(draw, rank=None, min_rank=0, max_rank=6, min_size=0, dtype=None, shape=None):
    """An array-like: mostly float32/float64 ndarrays, sometimes other dtypes,
    in any layout, with NaN/Inf now and then, or a Python list."""
    if dtype is None:
        dtype = draw(st.sampled_from(FLOATS * 6 + (np.float16, np.int32, np.int64, np.bool_,
                                                   np.complex64, np.object_, np.uint8)))
    if shape is None:
        if rank is None:
            rank = draw(st.integers(min_rank, max_rank))
        shape = [draw(st.integers(min_size, 9) if draw(st.integers(0, 9)) == 0
                      else st.integers(max(1, min_size), 6)) for _ in range(rank)]
        while math.prod(shape) > MAX_ELEMENTS:
            shape[shape.index(max(shape))] //= 2
    shape = tuple(shape)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 1e-3, 1e3]))
    values = np.asarray(rng.standard_normal(shape) * scale)
    if values.size and draw(st.integers(0, 5)) == 0:
        values.flat[rng.integers(0, values.size, 1 + values.size // 10)] = \
            rng.choice([np.nan, np.inf, -np.inf], 1 + values.size // 10)
    layout = draw(st.sampled_from(["c", "c", "c", "strided", "reversed", "fortran",
                                   "readonly", "list"]))
    with np.errstate(all="ignore"):
        x = np.array(values, dtype=dtype)
    if layout == "strided" and x.ndim:
        big = np.repeat(x, 2, axis=-1)
        x = big[..., ::2]
    elif layout == "reversed" and x.ndim:
        x = np.ascontiguousarray(x[..., ::-1])[..., ::-1]
    elif layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "readonly":
        x = x.copy()
        x.setflags(write=False)
    elif layout == "list" and dtype in FLOATS and x.ndim:
        x = x.tolist()
    return x


def ints(lo=-1, hi=5):
    return st.integers(lo, hi)


def int_or_tuple(n, lo=-1, hi=4):
    return st.one_of(ints(lo, hi), st.tuples(*[ints(lo, hi)] * n),
                     st.lists(ints(lo, hi), min_size=0, max_size=n + 1).map(tuple))


# ---------------------------------------------------------------- the oracle

def _torch_arg(a):
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.array(a))        # a writable, contiguous copy
    if isinstance(a, list):
        return torch.from_numpy(np.asarray(a))
    if isinstance(a, tuple) and any(isinstance(v, (np.ndarray, list)) for v in a):
        return type(a)(_torch_arg(v) for v in a)
    return a


def _is_float_array(a):
    if isinstance(a, list):
        a = np.asarray(a)
    return isinstance(a, np.ndarray) and a.dtype in FLOATS


def _reduction(args):
    sizes = [np.size(a) for a in args if isinstance(a, (np.ndarray, list))]
    return max(sizes + [1])


def _compare(got, want, dtype, reduction):
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    assert isinstance(got, np.ndarray), f"returned {type(got).__name__}, not an array"
    assert got.shape == want.shape, f"shape {got.shape}, PyTorch {want.shape}"
    if want.dtype.kind not in "fc":
        np.testing.assert_array_equal(got, want)
        return
    assert got.dtype == dtype, f"dtype {got.dtype}, expected {dtype}"
    want = want.astype(np.float64)
    got = got.astype(np.float64)
    finite = np.isfinite(want)
    assert not np.isfinite(got[~finite]).any(), "finite where PyTorch gives NaN/Inf"
    if finite.any():
        scale = max(1.0, float(np.max(np.abs(want[finite]))))
        eps = 1e-4 if dtype == np.float32 else 1e-9
        tol = eps * math.sqrt(reduction)
        err = np.abs(got[finite] - want[finite])
        assert np.all(err <= tol * scale + tol * np.abs(want[finite])) or \
            np.allclose(got[finite], want[finite], rtol=tol, atol=tol * scale, equal_nan=False), \
            f"max error {err.max()} (scale {scale})"


def _implementation_failure(exc):
    """PyTorch failing on an empty array inside its implementation (indexing
    element 0 of a parameter: prelu, instance_norm with weights), not refusing
    the call; fastcnn returns the empty result, as the README says."""
    return isinstance(exc, IndexError) and "select(): index 0 out of range" in str(exc)


def check(ours, theirs, args, float_call=None, compare=True, outputs=1):
    """Run fastcnn's call and PyTorch's; see the module docstring for the rules."""
    EXAMPLES["count"] += 1
    float_call = all(_is_float_array(a) for a in args if isinstance(a, (np.ndarray, list))) \
        if float_call is None else float_call
    dtype = None
    if float_call:
        first = np.asarray(args[0]) if isinstance(args[0], list) else args[0]
        dtype = first.dtype
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = ours()
        err = None
    except (ValueError, TypeError) as exc:
        assert str(exc), "an error without a message"
        got, err = None, exc
    except MemoryError:
        pytest.fail("MemoryError on a small input")
    if not float_call:
        return          # other dtypes: any outcome but a crash (errors are checked above)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = theirs()
        terr = None
    except Exception as exc:           # PyTorch raises RuntimeError, IndexError, ...
        want, terr = None, exc
    # Zero-size arrays: PyTorch's rules differ op by op (an empty batch is
    # fine, an empty channel axis sometimes, an empty spatial axis rarely);
    # fastcnn may be stricter there, never laxer, and results must agree.
    empty = any(0 in np.shape(np.asarray(a)) for a in args if isinstance(a, (np.ndarray, list)))
    if empty and err is not None and terr is None:
        return
    if empty and err is None and _implementation_failure(terr):
        return
    if err is not None and terr is None:
        # allowed (a clear error is always an acceptable answer); counted for the report
        op = str(err).split(":")[0]
        count, sample = STRICTER.get(op, (0, str(err)[:120]))
        STRICTER[op] = (count + 1, sample)
        return
    if err is None and terr is not None:
        pytest.fail(f"fastcnn accepted what PyTorch refuses ({type(terr).__name__}: "
                    f"{str(terr)[:200]}), returning shape "
                    f"{getattr(got, 'shape', type(got).__name__)}")
    if err is None and compare:
        if outputs == 1:
            _compare(got, want, dtype, _reduction(args))
        else:
            for g, w in zip(got, want):
                _compare(g, w, g.dtype if g.dtype.kind == "i" else dtype, _reduction(args))


# ---------------------------------------------------------------- functional ops

def spatial_input(data, nd, batched, unbatched, bare, extra):
    """An input for an op over nd spatial axes: rank nd + 2 (batched), nd + 1
    (unbatched), nd or nd + 3 (both wrong), drawn with these weights."""
    ranks = [nd + 2] * batched + [nd + 1] * unbatched + [nd] * bare + [nd + 3] * extra
    return data.draw(arrays(rank=data.draw(st.sampled_from(ranks)), min_size=0))


CONV = ["conv1d", "conv2d", "conv3d"]


@pytest.mark.parametrize("name", CONV)
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_conv(name, data):
    nd = int(name[-2])
    x = spatial_input(data, nd, 6, 2, 1, 1)
    xs = np.shape(np.asarray(x, dtype=object) if isinstance(x, list) else x)
    cin = xs[1] if len(xs) == nd + 2 else (xs[0] if len(xs) == nd + 1 else 2)
    groups = data.draw(st.sampled_from([1, 1, 1, 2, 3, 0, -1]))
    cout = data.draw(st.integers(1, 6)) * max(1, abs(groups))
    kernel = tuple(data.draw(st.integers(1, 4)) for _ in range(nd))
    wdtype = data.draw(st.sampled_from([None, None, None, np.float32, np.float64]))
    dtype = (np.asarray(x).dtype if wdtype is None else wdtype)
    dtype = dtype if dtype in (np.float32, np.float64) else np.float32
    w_shape = (cout, max(1, cin // max(1, abs(groups))) + data.draw(st.sampled_from([0, 0, 0, 1])),
               *kernel)
    w = data.draw(arrays(shape=w_shape, dtype=dtype))
    b = data.draw(st.one_of(st.none(), arrays(shape=(cout + data.draw(st.sampled_from([0, 0, 1])),),
                                              dtype=dtype)))
    stride = data.draw(int_or_tuple(nd, 0, 4))
    padding = data.draw(st.one_of(int_or_tuple(nd, -1, 3), st.sampled_from(["same", "valid", "bad"])))
    dilation = data.draw(int_or_tuple(nd, 0, 3))
    fn = getattr(F, name)
    tfn = getattr(TF, name)
    check(lambda: fn(x, w, b, stride, padding, dilation, groups),
          lambda: tfn(_torch_arg(x), _torch_arg(w), _torch_arg(b), stride, padding, dilation,
                      groups),
          [x, w] + ([b] if b is not None else []))


POOLS = ["max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d"]


@pytest.mark.parametrize("name", POOLS)
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_pool(name, data):
    nd = int(name[-2])
    x = spatial_input(data, nd, 6, 2, 1, 1)
    kernel = data.draw(int_or_tuple(nd, 0, 4))
    stride = data.draw(st.one_of(st.none(), int_or_tuple(nd, 0, 4)))
    padding = data.draw(int_or_tuple(nd, -1, 2))
    ceil = data.draw(st.booleans())
    fn, tfn = getattr(F, name), getattr(TF, name)
    if name.startswith("max"):
        dilation = data.draw(int_or_tuple(nd, 0, 3))
        indices = data.draw(st.booleans())
        check(lambda: fn(x, kernel, stride, padding, dilation, ceil, indices),
              lambda: tfn(_torch_arg(x), kernel, stride, padding, dilation, ceil, indices),
              [x], outputs=2 if indices else 1)
    else:
        include = data.draw(st.booleans())
        extra = {}
        if nd > 1:
            extra["divisor_override"] = data.draw(st.sampled_from([None, None, None, 0, 1, 3]))
        check(lambda: fn(x, kernel, stride, padding, ceil, include, **extra),
              lambda: tfn(_torch_arg(x), kernel, stride, padding, ceil, include, **extra), [x])


@pytest.mark.parametrize("name", ["lp_pool1d", "lp_pool2d"])
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_lp_pool(name, data):
    nd = int(name[-2])
    x = spatial_input(data, nd, 2, 1, 1, 0)
    p = data.draw(st.sampled_from([1, 2, 3.5, 0, -1]))
    # PyTorch's lp_pool1d takes ints only, lp_pool2d ints or pairs (its own
    # code multiplies and unpacks them)
    sizes = ints(0, 3) if nd == 1 else st.one_of(ints(0, 3), st.tuples(ints(0, 3), ints(0, 3)))
    kernel = data.draw(sizes)
    stride = data.draw(st.one_of(st.none(), sizes))
    ceil = data.draw(st.booleans())
    fn, tfn = getattr(F, name), getattr(TF, name)
    check(lambda: fn(x, p, kernel, stride, ceil), lambda: tfn(_torch_arg(x), p, kernel, stride, ceil),
          [x], compare=p > 0)


ADAPTIVE = ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
            "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"]


@pytest.mark.parametrize("name", ADAPTIVE)
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_adaptive_pool(name, data):
    nd = int(name[-2])
    x = spatial_input(data, nd, 4, 1, 1, 1)
    size = data.draw(st.one_of(ints(-1, 5), st.lists(st.one_of(st.none(), ints(-1, 5)),
                                                      min_size=nd, max_size=nd).map(tuple),
                               st.lists(ints(0, 4), min_size=1, max_size=nd + 1).map(tuple)))
    fn, tfn = getattr(F, name), getattr(TF, name)
    check(lambda: fn(x, size), lambda: tfn(_torch_arg(x), size), [x])


ACTIVATIONS = {
    "relu": lambda d: {}, "relu6": lambda d: {},
    "leaky_relu": lambda d: {"negative_slope": d.draw(st.sampled_from([0.01, -0.5, 2.0]))},
    "elu": lambda d: {"alpha": d.draw(st.sampled_from([1.0, 0.5, -1.0]))},
    "selu": lambda d: {}, "celu": lambda d: {"alpha": d.draw(st.sampled_from([1.0, 0.3, 2.0]))},
    "hardtanh": lambda d: dict(zip(("min_val", "max_val"),
                                   d.draw(st.sampled_from([(-1.0, 1.0), (0.0, 6.0), (-2.0, 0.5)])))),
    "sigmoid": lambda d: {}, "tanh": lambda d: {}, "silu": lambda d: {},
    "hardswish": lambda d: {}, "hardsigmoid": lambda d: {},
    "gelu": lambda d: {"approximate": d.draw(st.sampled_from(["none", "tanh"]))},
    "mish": lambda d: {},
    "softplus": lambda d: {"beta": d.draw(st.sampled_from([1.0, 2.0, 0.5])),
                           "threshold": d.draw(st.sampled_from([20.0, 1.0]))},
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_activation(name, data):
    x = data.draw(arrays())
    kwargs = ACTIVATIONS[name](data)
    inplace = name not in ("sigmoid", "tanh", "gelu", "softplus") and data.draw(st.booleans())
    fn, tfn = getattr(F, name), getattr(TF, name)
    if inplace and isinstance(x, np.ndarray):
        mine = x.copy()
        mine.setflags(write=x.flags.writeable)
        check(lambda: fn(mine, inplace=True, **kwargs), lambda: tfn(_torch_arg(x), **kwargs), [x])
    else:
        check(lambda: fn(x, **kwargs), lambda: tfn(_torch_arg(x), **kwargs), [x])


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_softmax(name, data):
    x = data.draw(arrays(min_rank=1))
    dim = data.draw(st.integers(-7, 6))
    fn, tfn = getattr(F, name), getattr(TF, name)
    check(lambda: fn(x, dim), lambda: tfn(_torch_arg(x), dim), [x])


@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_prelu(data):
    x = data.draw(arrays())
    c = np.shape(x)[1] if np.ndim(x) >= 2 else 1
    n = data.draw(st.sampled_from([1, c, c + 1]))
    w = data.draw(arrays(shape=(n,), dtype=np.asarray(x).dtype if _is_float_array(x) else np.float32))
    check(lambda: F.prelu(x, w), lambda: TF.prelu(_torch_arg(x), _torch_arg(w)), [x, w])


@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_linear(data):
    x = data.draw(arrays(max_rank=4))
    k = np.shape(x)[-1] if np.ndim(x) else 1
    dtype = np.asarray(x).dtype if _is_float_array(x) else np.float32
    w = data.draw(arrays(shape=(data.draw(st.integers(1, 6)), k + data.draw(st.sampled_from([0, 0, 1]))),
                         dtype=dtype))
    b = data.draw(st.one_of(st.none(), arrays(shape=(np.shape(w)[0],), dtype=dtype)))
    check(lambda: F.linear(x, w, b), lambda: TF.linear(_torch_arg(x), _torch_arg(w), _torch_arg(b)),
          [x, w] + ([b] if b is not None else []))


@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_flatten_unflatten(data):
    x = data.draw(arrays())
    start, end = data.draw(st.integers(-7, 6)), data.draw(st.integers(-7, 6))
    check(lambda: F.flatten(x, start, end),
          lambda: torch.flatten(_torch_arg(x), start, end), [x])
    dim = data.draw(st.integers(-7, 6))
    sizes = data.draw(st.lists(st.integers(-1, 4), min_size=0, max_size=3).map(tuple))
    check(lambda: F.unflatten(x, dim, sizes),
          lambda: torch.unflatten(_torch_arg(x), dim, sizes), [x])


@pytest.mark.parametrize("name", ["dropout", "dropout1d", "dropout2d", "dropout3d"])
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_dropout(name, data):
    x = data.draw(arrays())
    p = data.draw(st.sampled_from([0.0, 0.3, 0.5, 1.0, -0.1, 1.5]))
    training = data.draw(st.booleans())
    fn, tfn = getattr(F, name), getattr(TF, name)
    # training draws random masks: compare only shapes and that kept values are x / (1 - p)
    check(lambda: fn(x, p, training), lambda: tfn(_torch_arg(x), p, training), [x],
          compare=not training)
    if training and _is_float_array(x) and 0 <= p < 1:
        try:
            y = fn(x, p, True)
        except (ValueError, TypeError):
            return
        xa = np.asarray(x)
        with np.errstate(all="ignore"):
            scaled = (xa / (1 - p)).astype(xa.dtype)
            dropped = (xa * 0).astype(xa.dtype)      # 0, or NaN for +-Inf (as PyTorch)
        ok = np.isclose(y, scaled, rtol=1e-6, equal_nan=True) | \
            np.isclose(y, dropped, rtol=0, equal_nan=True)
        assert ok.all()


@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_batch_norm(data):
    x = data.draw(arrays(rank=data.draw(st.sampled_from([2, 3, 4, 5, 4, 1, 0]))))
    c = np.shape(x)[1] if np.ndim(x) >= 2 else 1
    dtype = np.asarray(x).dtype if _is_float_array(x) else np.float32
    n = data.draw(st.sampled_from([c, c, c, c + 1]))
    mean = np.asarray(data.draw(arrays(shape=(n,), dtype=dtype)), dtype=dtype)
    var = np.abs(np.asarray(data.draw(arrays(shape=(n,), dtype=dtype)), dtype=dtype))
    w = data.draw(st.one_of(st.none(), arrays(shape=(n,), dtype=dtype)))
    b = data.draw(st.one_of(st.none(), arrays(shape=(n,), dtype=dtype)))
    training = data.draw(st.booleans())
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    rm, rv = np.array(mean), np.array(var)
    check(lambda: F.batch_norm(x, rm, rv, w, b, training, 0.1, eps),
          lambda: TF.batch_norm(_torch_arg(x), _torch_arg(mean), _torch_arg(var), _torch_arg(w),
                                _torch_arg(b), training, 0.1, eps),
          [x, mean, var] + [a for a in (w, b) if a is not None])


@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_instance_and_group_norm(data):
    x = data.draw(arrays(rank=data.draw(st.sampled_from([3, 4, 5, 3, 2, 1]))))
    c = np.shape(x)[1] if np.ndim(x) >= 2 else 1
    dtype = np.asarray(x).dtype if _is_float_array(x) else np.float32
    w = data.draw(st.one_of(st.none(), arrays(shape=(c,), dtype=dtype)))
    b = data.draw(st.one_of(st.none(), arrays(shape=(c,), dtype=dtype)))
    eps = data.draw(st.sampled_from([1e-5, 1e-2]))
    args = [x] + [a for a in (w, b) if a is not None]
    check(lambda: F.instance_norm(x, None, None, w, b, True, 0.1, eps),
          lambda: TF.instance_norm(_torch_arg(x), None, None, _torch_arg(w), _torch_arg(b), True,
                                   0.1, eps), args)
    groups = data.draw(st.sampled_from([1, 2, 3, c, 0, -1, c + 1]))
    check(lambda: F.group_norm(x, groups, w, b, eps),
          lambda: TF.group_norm(_torch_arg(x), groups, _torch_arg(w), _torch_arg(b), eps), args)


@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_layer_norm(data):
    x = data.draw(arrays(min_rank=1))
    shape = np.shape(x)
    k = data.draw(st.integers(0, len(shape) + 1))
    normalized = tuple(shape[len(shape) - k:]) if k <= len(shape) else (3,) + tuple(shape)
    if data.draw(st.integers(0, 5)) == 0:
        normalized = tuple(s + 1 for s in normalized)
    dtype = np.asarray(x).dtype if _is_float_array(x) else np.float32
    w = data.draw(st.one_of(st.none(), arrays(shape=normalized, dtype=dtype))) if normalized else None
    b = data.draw(st.one_of(st.none(), arrays(shape=normalized, dtype=dtype))) if normalized else None
    check(lambda: F.layer_norm(x, normalized, w, b),
          lambda: TF.layer_norm(_torch_arg(x), normalized, _torch_arg(w), _torch_arg(b)),
          [x] + [a for a in (w, b) if a is not None])


@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_local_response_norm(data):
    x = data.draw(arrays(rank=data.draw(st.sampled_from([3, 4, 5, 2]))))
    size = data.draw(st.sampled_from([1, 2, 3, 5, 0]))
    check(lambda: F.local_response_norm(x, size, 1e-3, 0.75, 1.0),
          lambda: TF.local_response_norm(_torch_arg(x), size, 1e-3, 0.75, 1.0), [x])


# ---------------------------------------------------------------- layers

LAYERS = {
    "Conv1d": lambda d: (d.draw(st.integers(1, 4)), d.draw(st.integers(1, 4)), d.draw(st.integers(1, 3)),
                         d.draw(st.integers(1, 3)), d.draw(st.integers(0, 2))),
    "Conv2d": lambda d: (d.draw(st.integers(1, 4)), d.draw(st.integers(1, 4)), d.draw(st.integers(1, 3)),
                         d.draw(st.integers(1, 3)), d.draw(st.sampled_from([0, 1, "same"]))),
    "Conv3d": lambda d: (d.draw(st.integers(1, 3)), d.draw(st.integers(1, 3)), d.draw(st.integers(1, 2))),
    "MaxPool2d": lambda d: (d.draw(st.integers(1, 3)), d.draw(st.integers(1, 3))),
    "AvgPool2d": lambda d: (d.draw(st.integers(1, 3)), d.draw(st.integers(1, 3))),
    "AdaptiveAvgPool2d": lambda d: (d.draw(st.integers(1, 3)),),
    "BatchNorm1d": lambda d: (d.draw(st.integers(1, 5)),),
    "BatchNorm2d": lambda d: (d.draw(st.integers(1, 5)),),
    "InstanceNorm2d": lambda d: (d.draw(st.integers(1, 5)),),
    "GroupNorm": lambda d: (d.draw(st.integers(1, 3)), d.draw(st.integers(1, 6))),
    "LayerNorm": lambda d: (d.draw(st.integers(1, 5)),),
    "Linear": lambda d: (d.draw(st.integers(1, 6)), d.draw(st.integers(1, 6))),
    "ReLU": lambda d: (), "GELU": lambda d: (), "SiLU": lambda d: (), "Hardswish": lambda d: (),
    "Softmax": lambda d: (d.draw(st.integers(-2, 2)),), "Flatten": lambda d: (),
    "PReLU": lambda d: (d.draw(st.sampled_from([1, 3])),),
    "LocalResponseNorm": lambda d: (d.draw(st.integers(1, 4)),),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@settings(max_examples=LAYER_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_layer(name, data):
    args = LAYERS[name](data)
    try:
        ours = getattr(nn, name)(*args)
    except (ValueError, TypeError):
        EXAMPLES["count"] += 1
        return
    theirs = getattr(torch.nn, name)(*args)
    state = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state)
    if data.draw(st.booleans()):
        ours.eval()
        theirs.eval()
    x = data.draw(arrays(max_rank=5))

    def run_theirs():
        with torch.no_grad():
            return theirs(_torch_arg(x))
    check(lambda: ours(x), run_theirs, [x])


# ---------------------------------------------------------------- the count

def test_example_count():
    """The generated calls above (run in this module's order) add up to at
    least 10,000; the count is printed for the report."""
    print(f"\nhostile-input examples run: {EXAMPLES['count']}")
    print(f"refused with a message where PyTorch computes something: {STRICTER}")
    assert EXAMPLES["count"] >= 10_000


# ---------------------------------------------------------------- decoder ops

@pytest.mark.parametrize("name", ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"])
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_conv_transpose(name, data):
    nd = int(name[-2])
    x = spatial_input(data, nd, 6, 2, 1, 1)
    xs = np.shape(np.asarray(x, dtype=object) if isinstance(x, list) else x)
    cin = xs[1] if len(xs) == nd + 2 else (xs[0] if len(xs) == nd + 1 else 2)
    groups = data.draw(st.sampled_from([1, 1, 1, 2, 3, 0, -1]))
    kernel = tuple(data.draw(st.integers(1, 4)) for _ in range(nd))
    dtype = np.asarray(x).dtype
    dtype = dtype if dtype in (np.float32, np.float64) else np.float32
    w_shape = (max(cin, 1) + data.draw(st.sampled_from([0, 0, 0, 1])),
               data.draw(st.integers(1, 3)), *kernel)
    w = data.draw(arrays(shape=w_shape, dtype=dtype))
    cout = w_shape[1] * max(1, abs(groups))
    b = data.draw(st.one_of(st.none(), arrays(shape=(cout + data.draw(st.sampled_from([0, 0, 1])),),
                                              dtype=dtype)))
    stride = data.draw(int_or_tuple(nd, 0, 3))
    padding = data.draw(int_or_tuple(nd, -1, 3))
    output_padding = data.draw(int_or_tuple(nd, -1, 2))
    dilation = data.draw(int_or_tuple(nd, 0, 3))
    fn, tfn = getattr(F, name), getattr(TF, name)
    check(lambda: fn(x, w, b, stride, padding, output_padding, groups, dilation),
          lambda: tfn(_torch_arg(x), _torch_arg(w), _torch_arg(b), stride, padding,
                      output_padding, groups, dilation),
          [x, w] + ([b] if b is not None else []))


@settings(max_examples=OPS_EXAMPLES * 2, **SETTINGS)
@given(data=st.data())
def test_interpolate(data):
    nd = data.draw(st.integers(1, 3))
    x = spatial_input(data, nd, 6, 1, 1, 1)
    mode = data.draw(st.sampled_from(["nearest", "nearest-exact", "linear", "bilinear",
                                      "bicubic", "trilinear", "area", "bad"]))
    size = data.draw(st.one_of(st.none(), int_or_tuple(nd, -1, 6)))
    scale = data.draw(st.one_of(st.none(), st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 0.0, -1.0])))
    align = data.draw(st.sampled_from([None, None, False, True]))
    alias = data.draw(st.sampled_from([False, False, True]))
    check(lambda: F.interpolate(x, size, scale, mode, align, None, alias),
          lambda: TF.interpolate(_torch_arg(x), size, scale, mode, align, None, alias), [x])


@settings(max_examples=OPS_EXAMPLES * 2, **SETTINGS)
@given(data=st.data())
def test_pad(data):
    x = data.draw(arrays(rank=data.draw(st.integers(1, 5)), min_size=0))
    amounts = tuple(data.draw(st.lists(st.integers(-3, 4), min_size=0, max_size=7)))
    mode = data.draw(st.sampled_from(["constant", "constant", "reflect", "replicate", "circular",
                                      "bad"]))
    value = data.draw(st.sampled_from([None, None, 1.5])) if mode == "constant" else None
    check(lambda: F.pad(x, amounts, mode, value),
          lambda: TF.pad(_torch_arg(x), amounts, mode, value), [x])


@pytest.mark.parametrize("name", ["pixel_shuffle", "pixel_unshuffle"])
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_pixel_shuffle(name, data):
    x = data.draw(arrays(rank=data.draw(st.integers(2, 5)), min_size=0))
    factor = data.draw(st.sampled_from([1, 2, 2, 3, 0, -1]))
    fn, tfn = getattr(F, name), getattr(TF, name)
    check(lambda: fn(x, factor), lambda: tfn(_torch_arg(x), factor), [x])


# ---------------------------------------------------------------- losses

def _class_target(data, x):
    """Class indices for input x: mostly valid, sometimes out of range or the ignore index."""
    shape = np.shape(x)
    tshape = (shape[0],) + shape[2:] if len(shape) >= 2 else ()
    if data.draw(st.integers(0, 9)) == 0:
        tshape = tuple(data.draw(st.lists(st.integers(0, 4), max_size=4)))
    c = shape[1] if len(shape) >= 2 else (shape[0] if shape else 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    t = rng.integers(0, max(c, 1), tshape)
    if t.size and data.draw(st.integers(0, 4)) == 0:
        t.flat[0] = data.draw(st.sampled_from([-100, -1, c, c + 3]))
    return t.astype(data.draw(st.sampled_from([np.int64, np.int64, np.int32, np.float32])))


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_class_loss(name, data):
    x = data.draw(arrays(max_rank=4))
    probabilities = name == "cross_entropy" and data.draw(st.integers(0, 3)) == 0
    t = data.draw(arrays(shape=np.shape(x), dtype=np.asarray(x).dtype)) if probabilities \
        else _class_target(data, x)
    c = np.shape(x)[1] if np.ndim(x) >= 2 else (np.shape(x)[0] if np.ndim(x) else 1)
    dtype = np.asarray(x).dtype if _is_float_array(x) else np.float32
    w = data.draw(st.one_of(st.none(), arrays(shape=(data.draw(st.sampled_from([c, c + 1])),),
                                             dtype=dtype)))
    kwargs = dict(reduction=data.draw(st.sampled_from(["mean", "sum", "none", "avg"])),
                  ignore_index=data.draw(st.sampled_from([-100, 0, 1])))
    if name == "cross_entropy":
        kwargs["label_smoothing"] = data.draw(st.sampled_from([0.0, 0.1, 1.0, -0.1, 1.5]))
    fn, tfn = getattr(F, name), getattr(TF, name)
    float_call = _is_float_array(x) and (np.asarray(t).dtype.kind == "i" or _is_float_array(t)) \
        and (w is None or _is_float_array(w))
    # class indices of any integer dtype (PyTorch takes int64 and uint8 only)
    t_torch = t.astype(np.int64) if np.asarray(t).dtype.kind in "iu" else t
    check(lambda: fn(x, t, w, **kwargs),
          lambda: tfn(_torch_arg(x), _torch_arg(t_torch), _torch_arg(w), **kwargs),
          [x, t] + ([w] if w is not None else []), float_call=float_call)


@pytest.mark.parametrize("name", ["mse_loss", "binary_cross_entropy_with_logits"])
@settings(max_examples=OPS_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_elementwise_loss(name, data):
    x = data.draw(arrays())
    same = data.draw(st.integers(0, 5)) > 0
    t = data.draw(arrays(shape=np.shape(x) if same else None,
                         dtype=np.asarray(x).dtype if _is_float_array(x) else None))
    kwargs = dict(reduction=data.draw(st.sampled_from(["mean", "sum", "none", "avg"])))
    weights = []
    if name == "binary_cross_entropy_with_logits":
        dtype = np.asarray(x).dtype if _is_float_array(x) else np.float32
        for key in ("weight", "pos_weight"):
            if data.draw(st.booleans()):
                shape = np.shape(x)[data.draw(st.integers(0, np.ndim(x))):]
                kwargs[key] = data.draw(arrays(shape=shape, dtype=dtype))
                weights.append(kwargs[key])
    fn, tfn = getattr(F, name), getattr(TF, name)
    check(lambda: fn(x, t, **kwargs),
          lambda: tfn(_torch_arg(x), _torch_arg(t), **{k: _torch_arg(v) for k, v in kwargs.items()}),
          [x, t] + weights)
