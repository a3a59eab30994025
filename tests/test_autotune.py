"""A plan's convolution algorithms: the dispatcher's by default, timed with
autotune=True, replayed from plan.algorithms (fastcnn._autotune)."""
import io

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import _kernels, nn

from conftest import assert_close, run_threads


class Net(nn.Module):
    """Layers with several algorithms each, one of them run twice."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.head = nn.Conv2d(16, 24, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.body(x))
        x = self.body(x)                    # the same layer again: step "body#2"
        return self.head(self.dw(x))


@pytest.fixture
def net():
    fastcnn.manual_seed(0)
    return Net().eval()


SHAPE = (2, 3, 20, 18)
STEPS = ["stem", "body", "body#2", "dw", "head"]


def test_default_plan_records_the_dispatchers_choices(net, rng):
    x = rng.standard_normal(SHAPE).astype(np.float32)
    plan = fastcnn.compile(net, SHAPE)
    assert list(plan.algorithms) == STEPS
    assert set(plan.algorithms.values()) <= set(_kernels._conv.ALGORITHMS.values())
    assert fastcnn.compile(net, SHAPE).algorithms == plan.algorithms
    replayed = fastcnn.compile(net, SHAPE, autotune=plan.algorithms)
    assert replayed.algorithms == plan.algorithms
    assert np.array_equal(replayed(x), plan(x))


def test_autotune_keeps_results_and_replays_its_choices(net, rng):
    x = rng.standard_normal(SHAPE).astype(np.float32)
    tuned = fastcnn.compile(net, SHAPE, autotune=True)
    assert list(tuned.algorithms) == STEPS
    # within the tolerance of a reduction of 16 channels x 9 taps through
    # three layers, Winograd's rounding included
    assert_close(tuned(x), net(x), 16 * 9 * 3 * 100)
    replayed = fastcnn.compile(net, SHAPE, autotune=tuned.algorithms)
    assert replayed.algorithms == tuned.algorithms
    results = run_threads(lambda: replayed(x)) + [tuned(x)]
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_autotune_mapping_pins_the_named_steps_only(net, rng):
    x = rng.standard_normal(SHAPE).astype(np.float32)
    default = fastcnn.compile(net, SHAPE).algorithms
    pinned = fastcnn.compile(net, SHAPE, autotune={"body#2": "im2col", "head": "gemm_1x1"})
    assert pinned.algorithms == dict(default, **{"body#2": "im2col", "head": "gemm_1x1"})
    assert_close(pinned(x), net(x), 16 * 9 * 3)


def test_autotune_skips_the_direct_kernel_for_non_finite_weights(rng):
    fastcnn.manual_seed(0)
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8).eval()
    dw.weight[0, 0, 1, 1] = np.inf
    shape = (1, 8, 9, 9)
    assert list(fastcnn.compile(dw, shape).algorithms.values()) != ["direct"]
    tuned = fastcnn.compile(dw, shape, autotune=True)
    assert list(tuned.algorithms.values()) != ["direct"]
    x = rng.standard_normal(shape).astype(np.float32)
    assert np.array_equal(np.isnan(tuned(x)), np.isnan(dw(x)))


def test_autotune_errors(net):
    with pytest.raises(TypeError, match="compile: autotune must be True, False or a mapping"):
        fastcnn.compile(net, SHAPE, autotune="fast")
    with pytest.raises(TypeError, match=r"compile: autotune maps step names to algorithm names"):
        fastcnn.compile(net, SHAPE, autotune={"stem": 3})
    with pytest.raises(ValueError, match=r"names steps this plan does not have: \['tail'\]; "
                                         r"its convolution steps are \['stem', 'body'"):
        fastcnn.compile(net, SHAPE, autotune={"tail": "im2col"})
    with pytest.raises(ValueError, match=r"gives step 'head' the algorithm 'winograd', which "
                                         r"cannot run it here; usable: \["):
        fastcnn.compile(net, SHAPE, autotune={"head": "winograd"})


def test_onnx_load_autotunes_and_replays(net, rng):
    pytest.importorskip("onnx")
    buf = io.BytesIO()
    fastcnn.onnx.export(net, SHAPE, buf)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    tuned = fastcnn.onnx.load(buf.getvalue(), autotune=True)
    assert_close(tuned(x), net(x), 16 * 9 * 3 * 100)
    with pytest.raises(TypeError, match="fastcnn.onnx.load: autotune must be True, False"):
        fastcnn.onnx.load(buf.getvalue(), autotune=1.5)
    with pytest.raises(ValueError, match="fastcnn.onnx.load: autotune names steps"):
        fastcnn.onnx.load(buf.getvalue(), autotune={"no such step": "im2col"})(x)
