"""Compiled plans and ONNX-imported models driven by Hypothesis, compared with
eager execution: batch sizes 0-9, odd spatial sizes, every network in
fastcnn.models at small image sizes, float32 and float64, and networks
exported by PyTorch with open batch and spatial axes.

Each test runs its Hypothesis loop in a child interpreter: a crash (a signal,
an abort) fails that test with the child's traceback instead of ending the run."""
import os
import subprocess
import sys
import textwrap

import pytest

from fastcnn import models

EXAMPLES = 40                 # per network; the whole file stays within a few minutes

COMMON = """
import faulthandler, io, sys
import numpy as np
from hypothesis import given, settings, strategies as st, HealthCheck
import fastcnn
from fastcnn import models

faulthandler.enable()
SETTINGS = dict(max_examples=int(sys.argv[1]), deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


RAN = []


def close(got, want, what):
    RAN.append(what)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, eager {want.shape}"
    tol = 1e-4 if got.dtype == np.float32 else 1e-10
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = float(np.abs(got - want).max()) if want.size else 0.0
    assert err <= tol * scale, f"{what}: max difference {err} (scale {scale})"
"""


def _run(code, *args, timeout=600):
    src = textwrap.dedent(COMMON) + textwrap.dedent(code)
    run = subprocess.run([sys.executable, "-c", src, str(EXAMPLES), *map(str, args)],
                         capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert run.returncode == 0, (f"child exited with {run.returncode}\n"
                                 f"{run.stdout[-2000:]}\n{run.stderr[-6000:]}")
    ran = int(run.stdout.split("ran ")[-1])
    assert ran >= EXAMPLES, f"only {ran} comparisons ran"


@pytest.mark.parametrize("name", sorted(models.REFERENCE_NETWORKS))
def test_plans_and_onnx_models_agree_with_eager(name):
    pytest.importorskip("onnx")
    _run("""
        from fastcnn import onnx as fonnx
        name = sys.argv[2]
        ctor, sample = models.REFERENCE_NETWORKS[name]
        fixed = name == "lenet5"                 # its Linear layers fix the image size
        nets = {dt: ctor(dtype=dt).eval() for dt in (np.float32, np.float64)}
        for net in nets.values():
            net.load_state_dict(nets[np.float32].state_dict())   # one set of weights
        plans = {dt: fastcnn.compile(m, (1, 3, 32, 32), replan=True) for dt, m in nets.items()}
        buf = io.BytesIO()
        fonnx.export(nets[np.float32], (1, 3, 32, 32), buf)      # the batch axis left open
        onnx_model = fonnx.load(buf.getvalue())

        @settings(**SETTINGS)
        @given(batch=st.integers(0, 9), h=st.integers(8, 20), w=st.integers(8, 20),
               dtype=st.sampled_from([np.float32, np.float32, np.float64]),
               seed=st.integers(0, 2**16))
        def check(batch, h, w, dtype, seed):
            size = (32, 32) if fixed else (2 * h + 1, 2 * w + 1)   # odd sizes
            x = np.random.default_rng(seed).standard_normal((batch, 3) + size).astype(dtype)
            want = nets[dtype](x)
            close(plans[dtype](x), want, f"{name} plan, input {x.shape} {x.dtype}")
            if dtype == np.float32:
                xo = x if size == (32, 32) else \\
                    np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(dtype)
                close(onnx_model(xo), nets[dtype](xo), f"{name} onnx, input {xo.shape}")

        check()
        print("ran", len(RAN))
    """, name)


def test_pytorch_exported_networks_with_open_axes():
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    _run("""
        import warnings
        import torch
        from fastcnn import onnx as fonnx
        warnings.simplefilter("ignore")
        torch.manual_seed(0)

        class Block(torch.nn.Module):
            def __init__(self, c):
                super().__init__()
                self.conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
                self.bn = torch.nn.BatchNorm2d(c)

            def forward(self, x):
                return torch.relu(self.bn(self.conv(x)) + x)

        nets = {
            "residual": torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), Block(8),
                torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True), Block(8),
                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
                torch.nn.Softmax(dim=1)),
            "depthwise": torch.nn.Sequential(
                torch.nn.Conv2d(3, 16, 1), torch.nn.BatchNorm2d(16), torch.nn.ReLU6(),
                torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.SiLU(),
                torch.nn.AvgPool2d(2, ceil_mode=True), torch.nn.Conv2d(16, 4, 1),
                torch.nn.GroupNorm(2, 4), torch.nn.Hardswish()),
        }
        loaded = {}
        for key, net in nets.items():
            net.eval()
            with torch.no_grad():
                for m in net.modules():        # non-trivial statistics for the folds
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.5, 0.5)
                        m.running_var.uniform_(0.5, 2.0)
            buf = io.BytesIO()
            torch.onnx.export(net, torch.zeros(1, 3, 17, 17), buf, dynamo=False, opset_version=13,
                              input_names=["x"],
                              dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
            loaded[key] = fonnx.load(buf.getvalue())

        @settings(**SETTINGS)
        @given(key=st.sampled_from(sorted(nets)), batch=st.integers(0, 9),
               h=st.integers(4, 16), w=st.integers(4, 16), seed=st.integers(0, 2**16))
        def check(key, batch, h, w, seed):
            x = np.random.default_rng(seed).standard_normal(
                (batch, 3, 2 * h + 1, 2 * w + 1)).astype(np.float32)
            with torch.no_grad():
                want = nets[key](torch.from_numpy(x)).numpy()
            close(loaded[key](x), want, f"{key} onnx, input {x.shape}")

        check()
        print("ran", len(RAN))
    """)
