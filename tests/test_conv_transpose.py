"""conv_transpose1d/2d/3d and ConvTranspose1d/2d/3d against the definition
(tests/_reference.py) on awkward shapes, against PyTorch, and in plans and
ONNX files."""
import io

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn
import _reference as ref
from conftest import assert_close, requires_torch, run_threads, torch

FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

# (nd, batch, cin, cout, spatial, kernel, stride, padding, output_padding, dilation, groups)
CASES = [
    (1, 2, 3, 5, (7,), (3,), 1, 0, 0, 1, 1),
    (1, 1, 4, 6, (5,), (2,), 2, 0, 1, 1, 2),           # output_padding, groups
    (1, 3, 5, 3, (6,), (4,), 3, 1, 0, 2, 1),           # dilation
    (2, 2, 3, 4, (5, 4), (3, 3), 2, 1, 1, 1, 1),       # non-square, padding = k // 2
    (2, 1, 6, 4, (4, 4), (2, 2), 2, 0, 0, 1, 2),       # U-Net up-conv with groups
    (2, 2, 5, 7, (3, 5), (1, 3), (3, 1), (0, 1), (2, 0), 1, 1),  # stride > kernel
    (2, 1, 4, 4, (3, 3), (3, 2), 1, (1, 0), 0, (2, 1), 4),       # depthwise, dilation
    (3, 1, 2, 3, (3, 4, 2), (2, 3, 2), (2, 1, 2), (0, 1, 0), (1, 0, 0), 1, 1),
    # large enough that strided layers run one convolution per output phase
    (2, 1, 3, 4, (17, 16), (4, 4), 2, 1, 0, 1, 1),
    (2, 2, 4, 6, (16, 17), (3, 3), 2, 1, 1, 1, 2),     # groups, output_padding
    (2, 1, 2, 3, (20, 18), (1, 2), (3, 2), (0, 1), (2, 0), 1, 1),  # phases without taps
    (2, 1, 3, 2, (20, 19), (3, 3), 2, 3, 1, 1, 1),     # padding beyond the kernel
    (2, 1, 3, 4, (17, 16), (3, 1), 2, (1, 0), 1, 1, 1),  # odd columns without taps
    (2, 1, 5, 5, (18, 18), (3, 3), 2, 1, 1, 1, 5),     # depthwise
    (3, 1, 2, 3, (8, 8, 7), (3, 2, 3), 2, (1, 0, 1), (1, 1, 0), 1, 1),
    (1, 2, 3, 4, (300,), (5,), 3, 2, 2, 1, 1),
    # taps that never meet (kernel <= stride): every output belongs to one phase
    (2, 2, 5, 80, (20, 21), (2, 2), 2, 0, 0, 1, 1),    # several row and column tiles
    (2, 1, 6, 9, (7, 9), (2, 3), (2, 3), 1, 1, 1, 3),  # padding crops, output_padding
    (3, 1, 3, 4, (3, 4, 5), (2, 1, 2), (2, 2, 3), (1, 0, 1), (1, 0, 0), 1, 1),
    # kernel = stride, nothing cropped: every phase one tap over the whole input
    (1, 2, 3, 5, (300,), (3,), 3, 0, 0, 1, 1),
    (3, 2, 3, 5, (8, 8, 7), (2, 2, 2), 2, 0, 0, 1, 1),
    (2, 3, 7, 9, (17, 16), (2, 3), (2, 3), 0, 0, 1, 1),
    # ... run by taps: several channel and row blocks, one tap (1x1), groups in 1-D
    (2, 1, 5, 96, (33, 31), (2, 2), 2, 0, 0, 1, 1),
    (2, 2, 3, 5, (4, 5), (1, 1), 1, 0, 0, 1, 1),
    (1, 3, 4, 6, (9,), (4,), 4, 0, 0, 1, 2),
    # ... channel blocks that start mid-kernel-block unless whole (9 taps, 4 with groups)
    (2, 2, 96, 75, (13, 11), (3, 3), 3, 0, 0, 1, 1),
    (2, 1, 64, 50, (9, 7), (2, 2), 2, 0, 0, 1, 2),
    # phases padded only past the end of the input (their last column reads
    # past it), wide enough for blocked_oc, which must not read them unpadded
    (2, 8, 128, 64, (16, 16), (3, 3), 2, 1, 1, 1, 1),
]


def _data(rng, case, dtype=np.float32):
    nd, n, cin, cout, spatial, kernel, stride, pad, opad, dil, groups = case
    x = rng.standard_normal((n, cin) + spatial).astype(dtype)
    w = rng.standard_normal((cin, cout // groups) + kernel).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    return x, w, b, dict(stride=stride, padding=pad, output_padding=opad, dilation=dil,
                         groups=groups)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_the_definition(rng, case, dtype):
    x, w, b, kw = _data(rng, case, dtype)
    y = FN[case[0]](x, w, b, **kw)
    assert y.dtype == dtype
    expected = ref.conv_transpose_nd(x, w, b, **kw)
    assert_close(y, expected, reduction=w.shape[0] * np.prod(w.shape[2:]))
    # bit-identical across thread counts, and into out=
    results = run_threads(lambda: FN[case[0]](x, w, b, **kw))
    assert all(np.array_equal(results[0], r) for r in results)
    out = np.full_like(y, np.nan)
    assert FN[case[0]](x, w, b, out=out, **kw) is out
    np.testing.assert_array_equal(out, results[0])


def test_empty_batch_one_image_and_unbatched(rng):
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    assert F.conv_transpose2d(np.zeros((0, 3, 4, 4), np.float32), w, stride=2).shape == \
        (0, 2, 9, 9)
    assert F.conv_transpose2d(np.zeros((0, 3, 4, 4), np.float32), w[:, :, :2, :2],
                              stride=2).shape == (0, 2, 8, 8)       # by taps
    x = rng.standard_normal((3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(F.conv_transpose2d(x, w, stride=2),
                                  F.conv_transpose2d(x[None], w, stride=2)[0])


@pytest.mark.parametrize("call, message", [
    (lambda x, w: F.conv_transpose2d(x, w[:, :, :, :, None]), "weight must have shape"),
    (lambda x, w: F.conv_transpose2d(x[:, :2], w), "expected input with 4 channels"),
    (lambda x, w: F.conv_transpose2d(x, w, groups=3), "divisible by groups"),
    (lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=2),
     "output_padding must be smaller than either stride or dilation"),
    (lambda x, w: F.conv_transpose2d(x, w, padding=5), "too small"),
    (lambda x, w: F.conv_transpose2d(x, w.astype(np.float64)), "does not match"),
    (lambda x, w: F.conv_transpose2d(x, w, np.zeros(3, np.float32)), "bias must have shape"),
    (lambda x, w: F.conv_transpose2d(x, w, stride=0), "stride"),
])
def test_bad_arguments_are_named(rng, call, message):
    x = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    with pytest.raises((ValueError, TypeError), match=message):
        call(x, w)


@requires_torch
@pytest.mark.parametrize("case", CASES)
def test_matches_pytorch(rng, case):
    x, w, b, kw = _data(rng, case)
    t = getattr(torch.nn.functional, f"conv_transpose{case[0]}d")
    expected = t(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                 kw["stride"], kw["padding"], kw["output_padding"], kw["groups"],
                 kw["dilation"]).numpy()
    assert_close(FN[case[0]](x, w, b, **kw), expected, reduction=w.shape[0] * np.prod(w.shape[2:]))


@requires_torch
def test_module_as_pytorch_output_size_and_state_dict(rng):
    tm = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, groups=2, bias=True)
    m = nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, groups=2)
    assert list(m.state_dict()) == list(tm.state_dict())
    assert m.weight.shape == tuple(tm.weight.shape)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    for size in (None, (10, 9), (2, 6, 10, 9)):
        expected = tm(torch.from_numpy(x), output_size=size).detach().numpy()
        assert_close(m(x, output_size=size), expected, reduction=12)
    with pytest.raises(ValueError, match="valid sizes along axis 0 range from 9 to 10"):
        m(x, output_size=(12, 9))
    with pytest.raises(ValueError, match="only 'zeros' padding mode"):
        nn.ConvTranspose2d(4, 6, 3, padding_mode="reflect")


def test_compiled_plan_and_onnx_round_trip(rng, tmp_path):
    """A U-Net-like block: conv, up-conv, skip concatenation."""
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.head = nn.Conv2d(7, 2, 1)

        def forward(self, x):
            y = self.up(F.relu(self.down(x)))
            return self.head(np.concatenate([x, y], axis=1))

    model = Up().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    eager = model(x)
    plan = fastcnn.compile(model, x.shape)
    assert_close(plan(x), eager, reduction=72)
    onnx = pytest.importorskip("onnx")
    from fastcnn import onnx as fonnx
    path = str(tmp_path / "up.onnx")
    fonnx.export(model, x.shape, path)
    assert "ConvTranspose" in {n.op_type for n in onnx.load(path).graph.node}
    assert_close(fonnx.load(path)(x), eager, reduction=72)
    ort = pytest.importorskip("onnxruntime")
    got = ort.InferenceSession(path).run(None, {"input": x})[0]
    assert_close(got, eager, reduction=72)


LAYER = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


@pytest.mark.parametrize("case", [c for c in CASES if c[9] == 1])
def test_compiled_plan_packs_each_phase_once(rng, case):
    """In a plan, every phase's weights are packed at compile time and its
    input window and outputs have buffers of their own: the same results as
    the definition, call after call (the zeros around a window stay zero),
    on any thread count."""
    from fastcnn import _kernels
    from fastcnn._functional.conv_transpose import by_phases, by_taps
    nd, n, cin, cout, spatial, kernel, stride, pad, opad, dil, groups = case
    layer = LAYER[nd](cin, cout, kernel, stride, pad, opad, groups, dilation=dil).eval()
    x = rng.standard_normal((n, cin) + spatial).astype(np.float32)
    plan = fastcnn.compile(layer, x.shape)
    stride3 = (stride,) * nd if isinstance(stride, int) else stride
    pad3 = (pad,) * nd if isinstance(pad, int) else pad
    y_shape = plan.output_specs[0][0]
    if by_taps(x.shape, y_shape, layer.weight.shape, stride3, pad3, (1,) * nd):
        packed = _kernels._linear.by_taps_packed_size(groups, cin // groups, cout // groups,
                                                      int(np.prod(kernel)), 4)
        assert plan.weight_nbytes == 4 * packed          # packed once, or taken as stored
    elif by_phases(y_shape, layer.weight.shape, groups, stride3, (1,) * nd):
        assert plan.weight_nbytes >= layer.weight.nbytes     # packed once, not per call
    reduction = cin // groups * np.prod(kernel)
    for _ in range(2):
        x = rng.standard_normal(x.shape).astype(np.float32)
        expected = ref.conv_transpose_nd(x, layer.weight, layer.bias, stride=stride,
                                         padding=pad, output_padding=opad, dilation=dil,
                                         groups=groups)
        results = run_threads(lambda: plan(x))
        assert_close(results[0], expected, reduction=reduction)
        assert all(np.array_equal(results[0], r) for r in results)


def test_compiled_phases_windows_and_nonfinite_input(rng):
    """The compiled engine's own branches: a phase reading a cropped window,
    one padded beyond its kernel, phases no tap reaches, phases one thread
    each; a NaN in the input spreads to the outputs it reaches and no further
    (a Winograd phase falls back to the definition's products)."""
    from fastcnn._functional.conv_transpose import CompiledPhases
    seen = set()
    for shape, w_shape, stride, padding, out_sp in [
            ((2, 4, 9, 10), (4, 3, 3, 3), (2, 2), (0, 0), (20, 22)),    # padded beyond
            ((1, 6, 7, 9), (6, 3, 2, 3), (2, 3), (1, 1), (13, 26)),     # cropped windows
            ((1, 2, 20, 18), (2, 3, 1, 2), (3, 2), (0, 1), (59, 35)),   # phases without taps
            ((1, 32, 24, 24), (32, 32, 3, 3), (1, 1), (1, 1), (24, 24)),   # stride 1
            ((1, 32, 24, 24), (32, 32, 6, 6), (2, 2), (2, 2), (48, 48))]:  # 3x3 phases
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        b = rng.standard_normal(w_shape[1]).astype(np.float32)
        y_shape = (shape[0], w_shape[1]) + out_sp
        engine = CompiledPhases(shape, y_shape, w, 1, stride, padding, 2)
        seen |= {"padded" for p in engine.phases if p is not None and any(
            s < 0 or s + n > size for s, n, size in zip(p.start, p.in_shape[2:], shape[2:]))}
        seen |= {"copied" for k, p in enumerate(engine.phases)
                 if p is not None and engine._window_size(k, shape)}
        seen |= {"no taps" for p in engine.phases if p is None}
        seen |= {e.algorithm for e in engine.engines if e is not None}
        live = [k for k, p in enumerate(engine.phases) if p is not None]
        seen |= {"one thread each" for _ in range(engine._one_thread_each(live, 2))}
        y = np.empty(y_shape, np.float32)
        for trial in range(2):
            x[0, 0, 1, 1] = np.nan if trial else x[0, 0, 1, 1]
            engine(x, b, y, 2)
            opad = tuple(o - ((i - 1) * st - 2 * p + k) for o, i, st, p, k in
                         zip(out_sp, shape[2:], stride, padding, w_shape[2:]))
            kw = dict(stride=stride, padding=padding, output_padding=opad)
            expected = ref.conv_transpose_nd(np.nan_to_num(x), w, b, **kw)
            reached = ref.conv_transpose_nd(np.isnan(x).astype(np.float32), np.abs(w) + 1,
                                            None, **kw) > 0
            np.testing.assert_array_equal(np.isnan(y), reached)
            assert_close(np.where(reached, 0, y), np.where(reached, 0, expected),
                         reduction=w_shape[0] * 9)
    assert {"padded", "copied", "no taps", "winograd", "one thread each"} <= seen


def test_forward_each_refuses_what_does_not_fit():
    """The kernel entry that runs a transposed convolution's phases one
    thread each checks its lists, dtypes and workspace before any kernel runs."""
    from fastcnn import _kernels
    conv = _kernels._conv
    geom = (1, 4, 4, 1, 1, 6, 6, 1, 6, 6, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1)
    x = np.ones((1, 4, 6, 6), np.float32)
    w = np.ones((4, 4, 1, 1), np.float32)
    y = np.empty((1, 4, 6, 6), np.float32)
    algorithm = conv.select(geom, True)
    shared, per_thread, _, size = conv.plan(geom, algorithm, 4)
    packed = np.empty(max(size, 1), np.float32)
    if size:
        conv.pack(geom, algorithm, w, packed, 1)
    else:
        packed = w
    ws = np.empty(2 * (shared + per_thread) + 1, np.float32)
    conv.forward_each([geom, geom], [algorithm] * 2, [x, x], [packed, packed], [y, y], ws, 2)
    np.testing.assert_array_equal(y, np.full_like(y, 4))
    with pytest.raises(ValueError, match="one algorithm, input, weight and output"):
        conv.forward_each([geom, geom], [algorithm], [x, x], [packed, packed], [y, y], ws, 2)
    with pytest.raises(ValueError, match="of one dtype"):
        conv.forward_each([geom], [algorithm], [x.astype(np.float64)], [packed], [y], ws, 1)
    with pytest.raises(ValueError, match="at least one thread"):
        conv.forward_each([geom], [algorithm], [x], [packed], [y], ws, 0)
    if shared + per_thread:
        with pytest.raises(ValueError, match="workspace too small"):
            conv.forward_each([geom], [algorithm], [x], [packed], [y], ws[:0], 1)


@requires_torch
def test_torch_export_with_asymmetric_output_runs_as_onnx_runtime(rng):
    ort = pytest.importorskip("onnxruntime")
    from fastcnn import onnx as fonnx
    m = torch.nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1, output_padding=1, dilation=1)
    f = io.BytesIO()
    torch.onnx.export(m, (torch.randn(1, 3, 6, 6),), f, opset_version=17, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    x = rng.standard_normal((3, 3, 6, 6)).astype(np.float32)
    assert_close(fonnx.load(f.getvalue())(x),
                 ort.InferenceSession(f.getvalue()).run(None, {"x": x})[0], reduction=27)


def test_phase_interleave_refuses_what_does_not_fit():
    from fastcnn import _kernels
    interleave = _kernels._linear.interleave_phases
    y = np.zeros((2, 1, 5, 4), np.float32)
    fits = [np.zeros((2, 1, c0, 2), np.float32) for c0 in (3, 3, 2, 2)]
    interleave(fits, y, (1, 2, 2), None, 1)
    for sources, message in [
            (fits[:3], "expected 4 phases"),
            (fits[:2] + [np.zeros((2, 1, 3, 2), np.float32)] + fits[3:], "phase 2"),
            ([f.astype(np.float64) for f in fits], "phase 0"),
            ([f[:, :, :, ::2] for f in fits], "phase 0")]:
        with pytest.raises(ValueError, match=message):
            interleave(sources, y, (1, 2, 2), None, 1)
    with pytest.raises(ValueError, match="bias"):
        interleave(fits, y, (1, 2, 2), np.zeros(3, np.float32), 1)
    with pytest.raises(ValueError, match="strides must be positive"):
        interleave(fits, y, (1, 0, 2), None, 1)


@pytest.mark.parametrize("limit", [2**25, 700])
def test_columns_route_in_chunks_of_images(rng, monkeypatch, limit):
    # few outputs a phase (5 x 5): one GEMM over every image's columns, then
    # col2im; a small limit makes each image its own chunk
    from fastcnn._functional import conv_transpose as T
    monkeypatch.setattr(T, "_COLUMNS_LIMIT", limit)
    x = rng.standard_normal((5, 6, 5, 5)).astype(np.float32)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    assert not T.by_phases((5, 6, 10, 10), w.shape, 2, (2, 2), (1, 1))
    y = F.conv_transpose2d(x, w, b, **kw)
    assert_close(y, ref.conv_transpose_nd(x, w, b, **kw), reduction=6 * 9)
    results = run_threads(lambda: F.conv_transpose2d(x, w, b, **kw))
    assert all(np.array_equal(results[0], r) for r in results)


def test_phases_take_layers_with_many_outputs_a_phase():
    from fastcnn._functional.conv_transpose import by_phases, _PHASE_MIN_POSITIONS
    w = (512, 256, 3, 3)
    assert not by_phases((8, 256, 14, 14), w, 1, (2, 2), (1, 1))        # 49 a phase
    assert by_phases((8, 256, 28, 28), w, 1, (2, 2), (1, 1))            # 196 a phase
    assert by_phases((8, 256, 7, 7), w, 1, (1, 1), (1, 1))              # stride 1
    assert not by_phases((8, 256, 28, 28), w, 1, (2, 2), (2, 2))        # dilated
    assert 100 < _PHASE_MIN_POSITIONS <= 121


@pytest.mark.parametrize("start, out", [((0, -2, -3), (2, 7, 9)), ((1, 3, 4), (1, 4, 5)),
                                        ((0, 6, -9), (2, 3, 4)), ((0, 0, 0), (2, 5, 6))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_copy_window_crops_and_pads_in_one_pass(rng, start, out, dtype):
    from fastcnn import _kernels
    x = rng.standard_normal((3, 2, 5, 6)).astype(dtype)
    y = np.full((3,) + out, np.nan, dtype)
    _kernels._linear.copy_window(x, y, start, 2)
    padded = np.pad(x, ((0, 0),) + ((20, 20),) * 3)
    expected = padded[(slice(None),) + tuple(slice(20 + s, 20 + s + o)
                                            for s, o in zip(start, out))]
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="copy_window"):
        _kernels._linear.copy_window(x, y.astype(np.float16), start, 1)


def test_by_taps_runs_where_kernel_equals_stride():
    from fastcnn._functional.conv_transpose import by_taps
    x, w = (1, 8, 5, 6), (8, 4, 2, 3)
    assert by_taps(x, (1, 4, 10, 18), w, (2, 3), (0, 0), (1, 1))
    assert not by_taps(x, (1, 4, 11, 18), w, (2, 3), (0, 0), (1, 1))      # output_padding
    assert not by_taps(x, (1, 4, 8, 18), w, (2, 3), (1, 0), (1, 1))       # padding
    assert not by_taps(x, (1, 4, 10, 18), w, (2, 2), (0, 0), (1, 1))      # kernel > stride
    assert not by_taps(x, (1, 4, 10, 18), w, (2, 3), (0, 0), (2, 1))      # dilation


def test_by_taps_refuses_what_does_not_fit():
    from fastcnn import _kernels
    lin = _kernels._linear
    run, size = lin.conv_transpose_by_taps, lin.by_taps_workspace
    x = np.ones((2, 6, 3, 4), np.float32)
    w = np.ones((6, 2, 2, 2), np.float32)
    n_packed = lin.by_taps_packed_size(3, 2, 2, 4, 4)
    packed = np.empty(n_packed, np.float32) if n_packed else w    # 0: the weights as stored
    lin.by_taps_pack(w, 3, packed if n_packed else np.empty(0, np.float32), 2)
    y = np.zeros((2, 6, 6, 8), np.float32)
    ws = np.zeros(size(2, 3, 2, 2, (1, 3, 4), (1, 2, 2), 4, 2), np.float32)
    run(x, packed, None, y, 3, (2, 2), ws, 2)
    np.testing.assert_array_equal(y, 2)         # 2 input channels a group, each 1 x 1
    for args, message in [
            ((x, packed, None, np.zeros((2, 4, 6, 8), np.float32), 3, (2, 2), ws, 2),
             "shapes do not match"),
            ((x, packed, None, y, 4, (2, 2), ws, 2), "shapes do not match"),
            ((x, packed.reshape(-1)[:-1], None, y, 3, (2, 2), ws, 2), "shapes do not match"),
            ((x, packed, np.zeros(5, np.float32), y, 3, (2, 2), ws, 2), "shapes do not match"),
            ((x, packed, None, y, 3, (2, 3), ws, 2), "shapes do not match"),
            ((x, packed, None, y, 3, (2, 2), ws[:4], 2), "workspace too small"),
            ((x, packed.astype(np.float64), None, y, 3, (2, 2), ws, 2), "one dtype"),
            ((x, packed, None, y[:, :, :, ::2], 3, (2, 2), ws, 2), "C-contiguous"),
            ((x, packed, None, y, 3, (2,), ws, 2), "1-D to 3-D"),
            ((x, packed, None, y, 0, (2, 2), ws, 2), "1-D to 3-D")]:
        with pytest.raises(ValueError, match=message):
            run(*args)
    for args, message in [((w, 4, packed, 2), "groups must divide"),
                          ((w, 3, np.empty(n_packed + 1, np.float32), 2), "packed elements"),
                          ((w, 3, packed.astype(np.float64), 2), "one dtype")]:
        with pytest.raises(ValueError, match=message):
            lin.by_taps_pack(*args)


def test_phase_weights_swap_and_gather_taps(rng):
    from fastcnn import _kernels
    gather = _kernels._linear.phase_weights
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)        # 3 groups
    taps = np.array([8, 6, 2, 0], np.int64)
    out = np.empty((6, 2, 4), np.float32)
    gather(w, 3, taps, out, 2)
    two = np.empty((12, 2, 4), np.float32)                 # two sets of taps, -1 a zero
    gather(w, 3, np.stack([taps, [-1, 4, -1, 1]]), two, 2)
    np.testing.assert_array_equal(two[:6], out)
    for f in range(6):
        for i in range(2):
            np.testing.assert_array_equal(two[6 + f, i], [0, w[f // 2 * 2 + i, f % 2, 1, 1],
                                                          0, w[f // 2 * 2 + i, f % 2, 0, 1]])
    for g in range(3):
        for o in range(2):
            for i in range(2):
                np.testing.assert_array_equal(out[g * 2 + o, i],
                                              w[g * 2 + i, o].ravel()[taps])
    for args, message in [
            ((w, 4, taps, out, 1), "groups must divide"),
            ((w, 3, taps.astype(np.int32), out, 1), "int64 taps"),
            ((w, 3, taps[:3], out, 1), "taps\\) output"),
            ((w, 3, taps.reshape(2, 1, 2), out, 1), "int64 taps"),
            ((w, 3, taps + 1, out, 1), "outside the kernel"),
            ((w, 3, taps, out.astype(np.float64), 1), "one dtype"),
            ((w[:, :, ::2], 3, taps, out, 1), "C-contiguous")]:
        with pytest.raises(ValueError, match=message):
            gather(*args)


@pytest.mark.parametrize("k, padding, output_padding, window", [
    (3, 1, 1, 2),           # phases of 1x1, 1x2, 2x1, 2x2 taps: one 2x2 convolution
    (5, 2, 1, 3),           # 3x3, 3x2, 2x3, 2x2: one 3x3 convolution
    (4, 1, 0, None)])       # four 2x2 phases: each a 2x2 Winograd convolution
@pytest.mark.parametrize("n, cin, cout, size", [(1, 64, 32, (40, 40)), (2, 66, 34, (33, 35))])
def test_stride_2_phases_run_as_winograd(rng, n, cin, cout, size, k, padding, output_padding,
                                         window):
    """Stride-2 layers whose output is twice the input: the phases merge into
    one k x k convolution run as Winograd where that spends fewer multiplies
    than the phases on their own, else each phase runs as Winograd. Eager
    and compiled, within Winograd's rounding of the definition,
    bit-identical across thread counts, bias added once."""
    from fastcnn._functional.conv_transpose import Phases
    from fastcnn._kernels import _conv
    x = rng.standard_normal((n, cin) + size).astype(np.float32)
    w = rng.standard_normal((cin, cout, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    y_shape = (n, cout) + tuple(2 * s for s in size)
    phases = Phases(x.shape, y_shape, w, 1, (2, 2), (padding,) * 2, weights_packed=True)
    assert phases.merged == (window is not None)
    assert all(_conv.select(p.geom, True) == "winograd" for p in phases.phases
               if window is not None or p.geom[11:13] == (2, 2))
    if window is not None:
        assert phases.phases[0].geom[11:13] == (window, window)
    kw = dict(stride=2, padding=padding, output_padding=output_padding)
    expected = ref.conv_transpose_nd(x, w, b, **kw)
    results = run_threads(lambda: F.conv_transpose2d(x, w, b, **kw))
    assert_close(results[0], expected, reduction=k * k * cin)
    assert all(np.array_equal(results[0], r) for r in results)
    layer = nn.ConvTranspose2d(cin, cout, k, 2, padding, output_padding=output_padding).eval()
    layer.load_state_dict({"weight": w, "bias": b})
    plan = fastcnn.compile(layer, x.shape)
    for _ in range(2):
        assert_close(plan(x), expected, reduction=k * k * cin)
    points = 36 if window == 3 else 25
    assert plan.weight_nbytes >= points * 4 * cout * cin * 4     # transformed once
