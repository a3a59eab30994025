"""Regression tests for defects a new user and a hostile-input fuzzer found:
each would crash the process, hang, or return a wrong value. Calls that
crashed run in a child process, so a regression fails this test instead of
killing the run."""
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn

from conftest import assert_close, requires_torch, torch


def _in_child(code, timeout=120):
    """Run code in a fresh interpreter; its stdout, or a failure naming how it died."""
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=timeout, env=dict(os.environ, PYTHONFAULTHANDLER="1"))
    assert run.returncode == 0, f"child exited with {run.returncode}:\n{run.stderr[-3000:]}"
    return run.stdout


# ------------------------------------------------------------ empty batches

def test_empty_batch_through_a_replanned_conv_plan():
    out = _in_child("""
        import numpy as np, fastcnn
        from fastcnn import nn
        p = fastcnn.compile(nn.Conv2d(64, 64, 3, padding=1).eval(), (1, 64, 8, 8), replan=True)
        print(p(np.zeros((0, 64, 8, 8), np.float32)).shape)
    """)
    assert out.split("\n")[0] == "(0, 64, 8, 8)"


@pytest.mark.parametrize("algorithm", ["im2col", "gemm_1x1", "direct", "winograd", "blocked",
                                       "blocked_oc", "depthwise", "pointwise"])
def test_every_conv_algorithm_plans_and_packs_an_empty_batch(algorithm):
    from fastcnn import _kernels
    conv = _kernels._conv
    for depthwise in (False, True):
        c, groups, k = (16, 16, 3) if depthwise else (16, 1, 1 if "1x1" in algorithm
                                                      or algorithm == "pointwise" else 3)
        geom = (0, c, c, groups, 1, 8, 8, 1, 8, 8, 1, k, k, 1, 1, 1, 0, 0, 0, 1, 1, 1)
        if not conv.applicable(geom, algorithm):
            continue
        ws_shared, ws_thread, tasks, packed = conv.plan(geom, algorithm, 4)
        assert tasks == 0
        w = np.ones((c, c // groups, k, k), np.float32)
        packed_w = np.empty(max(packed, 1), np.float32)
        if packed:
            conv.pack(geom, algorithm, w, packed_w, 2)
        ws = np.empty(max(ws_shared + 2 * ws_thread, 1), np.float32)
        y = np.empty((0, c, 8, 8), np.float32)
        conv.forward(geom, algorithm, np.empty((0, c, 8, 8), np.float32),
                     packed_w if packed else w, None, y, ws, 0, 2)


def test_empty_batch_through_every_model_and_its_onnx_export():
    pytest.importorskip("onnx")
    out = _in_child("""
        import io, numpy as np, fastcnn
        from fastcnn import models, onnx
        for name in ["lenet5", "resnet18", "mobilenet_v2", "groupnorm_cnn"]:
            m = getattr(models, name)().eval()
            size = 32 if name == "lenet5" else 33
            p = fastcnn.compile(m, (1, 3, size, size), replan=True)
            buf = io.BytesIO()
            onnx.export(m, (1, 3, size, size), buf)
            om = onnx.load(buf.getvalue())
            x = np.zeros((0, 3, size, size), np.float32)
            print(name, m(x).shape, p(x).shape, om(x).shape)
    """, timeout=300)
    for line in out.strip().split("\n"):
        name, *shapes = line.split(" ", 1)
        assert shapes[0].count("(0, ") == 3, line


@requires_torch
def test_empty_batch_through_a_torch_exported_flatten_and_reshape():
    pytest.importorskip("onnx")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 5)

        def forward(self, x):
            y = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)
            y = torch.flatten(y.reshape(y.shape[0], -1), 1)
            return torch.softmax(self.fc(y), 1)

    buf = io.BytesIO()
    torch.onnx.export(Net().eval(), torch.zeros(1, 3, 8, 8), buf, dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}}, opset_version=13)
    from fastcnn import onnx as fonnx
    model = fonnx.load(buf.getvalue())
    for n in (0, 1, 2):
        assert model(np.zeros((n, 3, 8, 8), np.float32)).shape == (n, 5)


def test_empty_batch_through_a_plan_with_flatten():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    p = fastcnn.compile(m, (1, 3, 8, 8), replan=True)
    assert p(np.zeros((0, 3, 8, 8), np.float32)).shape == (0, 5)


# ------------------------------------------------------------ sizes that overflow

@requires_torch
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_huge_strides_and_dilations_compute_what_pytorch_does(nd, rng):
    x = rng.standard_normal((3,) + (5,) * nd).astype(np.float32)
    w = rng.standard_normal((2, 3) + (3,) * nd).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    fn, tfn = getattr(F, f"conv{nd}d"), getattr(torch.nn.functional, f"conv{nd}d")
    args = dict(stride=(2**63 - 1,) * nd, padding=(1,) * nd, dilation=2)
    got = fn(x, w, b, **args)
    want = tfn(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **args).numpy()
    assert_close(got, want, reduction=27)


def test_huge_pooling_windows_finish_and_unindexable_sizes_are_refused():
    # windows far wider than the input: only the taps inside are visited
    out = _in_child("""
        import numpy as np, fastcnn.functional as F
        x = np.ones((2, 3, 3), np.float32)
        print(F.lp_pool2d(x, 1.5, kernel_size=2147483648, ceil_mode=True).shape)
        print(F.lp_pool1d(np.ones((5, 3, 5), np.float32), 1, kernel_size=(2147483647,),
                          ceil_mode=True)[0, 0, 0])
        print(F.avg_pool1d(np.arange(5.0).reshape(1, 1, 5), 2**40, ceil_mode=True)[0, 0, 0])
    """, timeout=60)
    shape, lp, avg = out.split("\n")[:3]
    assert shape == "(2, 1, 1)"
    assert float(lp) == pytest.approx(2147483647.0)    # PyTorch's rule: avg * kernel size
    assert float(avg) == 2.0                           # divisor: the window up to the input's end
    with pytest.raises(ValueError, match="conv2d: sizes too large to index"):
        F.conv2d(np.ones((3, 2, 5), np.float32), np.ones((2, 3, 1, 3), np.float32),
                 stride=2**62, padding=(0, 2**61))
    with pytest.raises(ValueError, match="max_pool1d: sizes too large to index"):
        F.max_pool1d(np.ones((1, 1, 5), np.float32), 2**63 - 1, ceil_mode=True)


def test_plans_use_the_same_index_rules_as_eager():
    m = nn.Conv1d(3, 2, 3, stride=2**63 - 1, padding=1, dilation=2).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 5)).astype(np.float32)
    assert_close(fastcnn.compile(m, x.shape)(x), m(x), reduction=9)


# ------------------------------------------------------------ NaN and extreme parameters

@requires_torch
@pytest.mark.parametrize("bounds", [(float("nan"), 2.0), (-1.0, float("nan")), (-1.0, 1.0)])
def test_hardtanh_with_a_nan_bound_is_nan_as_in_pytorch(bounds):
    x = np.linspace(-3, 3, 13).astype(np.float32)
    want = torch.nn.functional.hardtanh(torch.from_numpy(x), *bounds).numpy()
    np.testing.assert_array_equal(F.hardtanh(x, *bounds), want)
    np.testing.assert_array_equal(F.hardtanh(x.copy(), *bounds, inplace=True), want)


@requires_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("params", [dict(alpha=-1e308), dict(alpha=-1e39), dict(k=-1e39),
                                    dict(alpha=100.0, k=-1.0), dict(k=-1.0, beta=2.0),
                                    dict(k=-1e308, beta=2.0), dict(alpha=-1.0, k=0.0)])
def test_local_response_norm_with_negative_parameters_follows_pytorch(dtype, params, rng):
    x = rng.standard_normal((2, 5, 3, 4)).astype(dtype)
    want = torch.nn.functional.local_response_norm(torch.from_numpy(x), 3, **params).numpy()
    got = F.local_response_norm(x, 3, **params)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-30)
