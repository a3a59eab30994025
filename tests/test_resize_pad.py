"""interpolate, pad, pixel_shuffle and pixel_unshuffle (and their layers):
against slow definitions, against PyTorch, and through ONNX export."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn
from conftest import requires_torch, torch


def _linear_1d(x, out, align_corners):
    """Linear resize of the last axis by its definition (PyTorch's mapping)."""
    n = x.shape[-1]
    y = np.empty(x.shape[:-1] + (out,))
    for i in range(out):
        if align_corners:
            src = i * (n - 1) / (out - 1) if out > 1 else 0.0
        else:
            src = max((i + 0.5) * n / out - 0.5, 0.0)
        lo = min(int(np.floor(src)), n - 1)
        hi = min(lo + 1, n - 1)
        frac = src - lo
        y[..., i] = x[..., lo] * (1 - frac) + x[..., hi] * frac
    return y


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("out", [1, 3, 7, 11])
def test_linear_matches_the_definition(rng, align_corners, out):
    x = rng.standard_normal((2, 3, 5)).astype(np.float64)
    np.testing.assert_allclose(F.interpolate(x, size=out, mode="linear",
                                             align_corners=align_corners),
                               _linear_1d(x, out, align_corners), rtol=1e-12, atol=1e-12)


def test_nearest_is_a_gather_and_area_an_average(rng):
    x = rng.standard_normal((1, 2, 4, 6)).astype(np.float32)
    y = F.interpolate(x, scale_factor=2)
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))
    np.testing.assert_allclose(F.interpolate(x, size=(2, 3), mode="area"),
                               x.reshape(1, 2, 2, 2, 3, 2).mean(axis=(3, 5)), rtol=1e-6)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_matches_the_gather_definition(rng, nd, dtype):
    """y[..., i] = x[..., floor(i * in / out)] on every axis: integer
    factors (the copying kernel), other sizes (the gather) and one output."""
    spatial = (5, 7, 4)[:nd]
    x = rng.standard_normal((2, 3) + spatial).astype(dtype)
    for size in [(10, 14, 8), (15, 21, 12), (7, 9, 7), (3, 2, 1), (1, 1, 1), (5, 14, 4)]:
        size = size[:nd]
        expected = x
        for axis, (n, o) in enumerate(zip(spatial, size)):
            expected = np.take(expected, np.arange(o) * n // o, axis=2 + axis)
        np.testing.assert_array_equal(F.interpolate(x, size=size, mode="nearest"), expected,
                                      err_msg=str(size))


def test_nearest_kernel_refuses_what_does_not_fit():
    from fastcnn import _kernels
    run = _kernels._pool.resize_nearest_2d
    x = np.ones((2, 3, 4), np.float32)
    y = np.zeros((2, 5, 6), np.float32)
    rows, cols = np.zeros(5, np.int64), np.zeros(6, np.int64)
    run(x, y, rows, cols, 2)
    assert np.all(y == 1)
    for args, message in [
            ((x, y.astype(np.float64), rows, cols, 1), "one dtype"),
            ((x, y[:, :, ::2], rows, cols[:3], 1), "C-contiguous"),
            ((x, y, rows[:4], cols, 1), "one per output row"),
            ((x, y, rows.astype(np.int32), cols, 1), "int64"),
            ((x, y, rows + 3, cols, 1), "outside the input"),
            ((x, y, rows, cols - 1, 1), "outside the input")]:
        with pytest.raises(ValueError, match=message):
            run(*args)


def test_pad_and_pixel_shuffle_definitions(rng):
    x = rng.standard_normal((2, 8, 3, 4)).astype(np.float32)
    y = F.pixel_shuffle(x, 2)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                np.testing.assert_array_equal(y[:, c, i::2, j::2], x[:, c * 4 + i * 2 + j])
    np.testing.assert_array_equal(F.pixel_unshuffle(y, 2), x)
    p = F.pad(x, (1, 2, 0, 1), value=7.0)
    assert p.shape == (2, 8, 4, 7)
    np.testing.assert_array_equal(p[:, :, :3, 1:5], x)
    assert np.all(p[:, :, 3] == 7) and np.all(p[..., 0] == 7)
    np.testing.assert_array_equal(F.pad(x, (-1, -1)), x[..., 1:3])


@pytest.mark.parametrize("call, message", [
    (lambda x: F.interpolate(x, size=4, mode="bilinear"), "needs a 4-D input"),
    (lambda x: F.interpolate(x, mode="linear"), "exactly one of size or scale_factor"),
    (lambda x: F.interpolate(x, scale_factor=0.1), "the output would be"),
    (lambda x: F.interpolate(x, size=4, align_corners=True), "align_corners option"),
    (lambda x: F.interpolate(x, size=4, mode="cubic"), "mode must be one of"),
    (lambda x: F.pad(x, (1,)), "even length"),
    (lambda x: F.pad(x, (5, 5), mode="reflect"), "reflect padding"),
    (lambda x: F.pad(x, (-3, -3)), "removes more than"),
    (lambda x: F.pixel_shuffle(x, 2), "divisible by the square"),
    (lambda x: F.pixel_unshuffle(x, 2), "must be divisible by downscale_factor"),
])
def test_bad_arguments_are_named(rng, call, message):
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    with pytest.raises((ValueError, TypeError), match=message):
        call(x)


MODES = [("nearest", 1), ("nearest", 2), ("nearest", 3), ("nearest-exact", 2), ("linear", 1),
         ("bilinear", 2), ("bicubic", 2), ("trilinear", 3), ("area", 2)]


@requires_torch
@pytest.mark.parametrize("mode, nd", MODES)
def test_interpolate_matches_pytorch(rng, mode, nd):
    shapes = {1: (2, 3, 5), 2: (2, 3, 5, 6), 3: (1, 2, 4, 5, 3)}
    x = rng.standard_normal(shapes[nd]).astype(np.float32)
    corners = [None] if mode in ("nearest", "nearest-exact", "area") else [False, True]
    alias = [False, True] if mode in ("bilinear", "bicubic") else [False]
    for size, scale in [((7,) * nd, None), ((3,) * nd, None), ((1,) * nd, None),
                        (None, 2.0), (None, 0.5), (None, 1.7), (None, (2.5,) * nd)]:
        if mode == "area" and scale is not None:
            continue
        for align in corners:
            for aa in alias:
                if aa and min(size or (2,)) == 1:
                    continue     # PyTorch's antialiased kernels mishandle an output of 1
                expected = torch.nn.functional.interpolate(
                    torch.from_numpy(x), size=size, scale_factor=scale, mode=mode,
                    align_corners=align, antialias=aa).numpy()
                got = F.interpolate(x, size=size, scale_factor=scale, mode=mode,
                                    align_corners=align, antialias=aa)
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5,
                                           err_msg=f"{size} {scale} {align} {aa}")


@requires_torch
def test_pad_and_shuffles_match_pytorch(rng):
    x = rng.standard_normal((2, 8, 5, 6)).astype(np.float32)
    t = torch.from_numpy(x)
    for mode in ("constant", "reflect", "replicate", "circular"):
        for amounts in [(1, 2), (1, 2, 0, 3), (2, 1, 1, 0, 1, 1), (-1, 2, 1, -2), (3, 3, -2, 0)]:
            try:
                expected = torch.nn.functional.pad(t, amounts, mode).numpy()
            except (RuntimeError, NotImplementedError, ValueError):
                with pytest.raises(ValueError):
                    F.pad(x, amounts, mode)
                continue
            np.testing.assert_array_equal(F.pad(x, amounts, mode), expected)
    np.testing.assert_array_equal(F.pixel_shuffle(x, 2),
                                  torch.nn.functional.pixel_shuffle(t, 2).numpy())
    y = x[:, :, :4]
    np.testing.assert_array_equal(F.pixel_unshuffle(y, 2),
                                  torch.nn.functional.pixel_unshuffle(torch.from_numpy(
                                      np.ascontiguousarray(y)), 2).numpy())


def test_layers_plans_and_onnx_export(rng, tmp_path):
    """A decoder: Upsample, PixelShuffle, padding layers, in a plan and through ONNX."""
    pytest.importorskip("onnx")
    from fastcnn import onnx as fonnx
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Upsample(scale_factor=2,
                                                                    mode="bilinear"),
                          nn.ReflectionPad2d(1), nn.Conv2d(8, 8, 3), nn.PixelShuffle(2),
                          nn.Upsample(size=(20, 18), mode="nearest"), nn.ZeroPad2d((0, 2, 2, 0)),
                          nn.PixelUnshuffle(2)).eval()
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    eager = model(x)
    assert eager.shape == (2, 8, 11, 10)
    np.testing.assert_allclose(fastcnn.compile(model, x.shape)(x), eager, rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "decoder.onnx")
    fonnx.export(model, x.shape, path)
    np.testing.assert_allclose(fonnx.load(path)(x), eager, rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    np.testing.assert_allclose(ort.InferenceSession(path).run(None, {"input": x})[0], eager,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_resizing_is_bit_identical_across_threads(rng, mode):
    from conftest import run_threads
    x = rng.standard_normal((2, 5, 9, 7)).astype(np.float32)
    results = run_threads(lambda: F.interpolate(x, scale_factor=2.5, mode=mode))
    assert all(np.array_equal(results[0], r) for r in results[1:])
    assert results[0].shape == (2, 5, 22, 17)
