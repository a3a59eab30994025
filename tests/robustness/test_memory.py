"""Memory: no growth over many calls, shapes beyond 32-bit sizes refused
before allocating, and allocation failures surfacing as MemoryError."""
import gc
import os

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn


def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def _growth(fn, calls=10_000, warmup=300):
    for _ in range(warmup):
        fn()
    gc.collect()
    before = _rss_bytes()
    for _ in range(calls):
        fn()
    gc.collect()
    return _rss_bytes() - before


def _model():
    fastcnn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(2), nn.GroupNorm(2, 8), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4)).eval()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_growth_over_ten_thousand_calls():
    model = _model()
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    eager = _growth(lambda: model(x))
    plan = fastcnn.compile(model, x.shape)
    out = np.empty((2, 4), np.float32)
    compiled = _growth(lambda: plan(x, out=out))
    print(f"\nRSS growth over 10,000 calls: eager {eager / 1024:.0f} KiB, "
          f"compiled {compiled / 1024:.0f} KiB")
    assert eager < 2**20 and compiled < 2**20


def test_no_growth_for_onnx_models():
    pytest.importorskip("onnx")
    import io
    import fastcnn.onnx as fonnx
    buf = io.BytesIO()
    fonnx.export(_model(), (1, 3, 16, 16), buf)
    model = fonnx.load(buf.getvalue())
    x = np.zeros((1, 3, 16, 16), np.float32)
    assert _growth(lambda: model(x), calls=3000) < 2**20


def test_sizes_beyond_32_bits_are_refused_before_allocating():
    # views: no memory behind these shapes
    long_signal = np.broadcast_to(np.float32(1), (1, 1, 2**31 + 8))
    with pytest.raises(ValueError, match="too large for 32-bit BLAS"):
        F.conv1d(long_signal, np.ones((1, 1, 1), np.float32))
    wide = np.broadcast_to(np.float32(1), (1, 2**31 + 8))
    with pytest.raises(ValueError, match="too large for 32-bit BLAS"):
        F.linear(wide, wide, None)


def test_impossible_allocations_raise_memory_error():
    # 2^33 images: the output alone would need 2 TiB; refused by NumPy's allocator
    huge = np.broadcast_to(np.float32(1), (2**33, 1, 4, 4))
    with pytest.raises(MemoryError):
        F.max_pool2d(huge, 2)
    with pytest.raises(MemoryError):
        F.relu(huge)


def test_workspace_allocation_failure_is_memory_error(monkeypatch):
    from fastcnn._functional import conv as conv_module
    x = np.random.default_rng(0).standard_normal((1, 16, 20, 20)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
    want = F.conv2d(x, w, None, 1, 1)
    real_empty = np.empty

    class FailingNumpy:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def empty(shape, dtype=float, *args, **kwargs):
            if np.dtype(dtype) == np.float32 and np.prod(shape) > 2000:
                raise MemoryError("simulated: cannot allocate the workspace")
            return real_empty(shape, dtype, *args, **kwargs)
    monkeypatch.setattr(conv_module, "np", FailingNumpy())
    with pytest.raises(MemoryError, match="simulated"):
        F.conv2d(x, w, None, 1, 1)
    monkeypatch.undo()
    np.testing.assert_array_equal(F.conv2d(x, w, None, 1, 1), want)


# A LeNet-5 training step in a fresh process that has imported nothing but
# NumPy and fastcnn: glibc's own dynamic threshold has not risen there, so
# without the tuning each step's arrays are fresh mappings (about a thousand
# faults a step on the machines here).
_STEP_FAULTS = """
import resource, sys, numpy as np, fastcnn
from fastcnn import models, nn, optim
fastcnn.manual_seed(0)
if sys.argv[1] == "lenet5":          # small: every array below the trim threshold
    model, x = models.lenet5(), np.zeros((64, 3, 32, 32), np.float32)
else:                                # a step whose heap passes 256 MiB
    layers = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
    for _ in range(5):
        layers += [nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()]
    model, x = nn.Sequential(*layers), np.zeros((16, 3, 128, 128), np.float32)
x += np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
model.train()
opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
def step():
    opt.zero_grad()
    y = model(x)
    model.backward(np.full(y.shape, 1 / y.size, y.dtype), input_grad=False)
    opt.step()
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(int(sys.argv[2])):
    step()
print(fastcnn._malloc.state, "|", (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
      / int(sys.argv[2]))
"""


def _step_faults(tuning, model="lenet5", steps=10):
    import subprocess
    import sys
    env = dict(os.environ, FASTCNN_MALLOC_TUNING=tuning)
    out = subprocess.run([sys.executable, "-c", _STEP_FAULTS, model, str(steps)], env=env,
                         capture_output=True, text=True, cwd="/", check=True).stdout
    state, faults = out.rsplit("|", 1)
    return state.strip(), float(faults)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux")
def test_per_call_arrays_come_from_the_heap():
    """The arrays a training step makes (activations, gradients, a few MB
    each) are reused heap memory, not fresh mappings faulting on every page."""
    state, faults = _step_faults("1")
    if state.startswith("left"):
        pytest.skip(f"malloc {state}")
    untuned_state, untuned = _step_faults("0")
    assert "FASTCNN_MALLOC_TUNING=0" in untuned_state
    print(f"page faults a step: {faults} tuned, {untuned} untuned")
    assert faults < 50


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux")
def test_a_large_training_step_reuses_its_heap():
    """A step whose heap is far above the 64 MiB trim threshold: the backward
    frees the saved activations, and glibc would return the top of the heap
    (7,500 faults a step); after a backward the threshold is the step's heap."""
    state, faults = _step_faults("1", "wide", 3)
    if state.startswith("left"):
        pytest.skip(f"malloc {state}")
    assert "training step's heap" in state
    trim = int(state.split("trim threshold ")[1].split(" MiB")[0])
    assert trim >= 256, state
    assert faults < 50
