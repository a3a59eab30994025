import gc
import resource

import numpy as np
import pytest

import fastcnn
from fastcnn import models, nn
from fastcnn._graph import TraceError

from conftest import assert_close, requires_torch, torch

NETS = list(models.REFERENCE_NETWORKS)


def _model(name):
    fastcnn.manual_seed(0)
    ctor, shape = models.REFERENCE_NETWORKS[name]
    model = ctor().eval()
    rng = np.random.default_rng(1)
    for m in model.modules():          # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean[...] = rng.standard_normal(m.num_features) * 0.1
            m.running_var[...] = rng.random(m.num_features) + 0.5
    return model, shape


def test_reference_parameter_counts():
    assert sum(p.size for p in models.resnet18().parameters()) == 11_689_512
    assert sum(p.size for p in models.mobilenet_v2().parameters()) == 3_504_872
    assert sum(p.size for p in models.lenet5().parameters()) == 62_006


def test_summary_totals_lenet5():
    s = fastcnn.summary(models.lenet5(), (1, 3, 32, 32), print_table=False)
    macs = 6 * 28 * 28 * 75 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert s.params == 62_006 and s.macs == macs
    rows = {r["name"]: r for r in s.rows}
    assert rows["conv1"]["output_shape"] == (1, 6, 28, 28) and rows["conv1"]["rf"] == (5, 5)
    assert rows["conv2"]["rf"] == (14, 14) and rows["conv2"]["jump"] == (2, 2)
    assert [r["name"] for r in s.rows] == ["conv1", "pool", "conv2", "pool", "fc1", "fc2", "fc3"]
    assert s.weight_bytes == 62_006 * 4 and s.activation_bytes > 0


def test_summary_totals_resnet18(capsys):
    s = fastcnn.summary(models.resnet18(), (1, 3, 224, 224))
    assert s.params == 11_689_512
    assert abs(s.macs - 1.814e9) < 0.005e9
    out = capsys.readouterr().out
    assert "Total params: 11,689,512" in out and "layer4.1.conv2" in out
    rows = {r["name"]: r for r in s.rows}
    assert rows["conv1"]["rf"] == (7, 7) and rows["maxpool"]["rf"] == (11, 11)
    assert rows["layer1.0.conv1"]["rf"] == (19, 19) and rows["layer4.1.conv2"]["jump"] == (32, 32)


@pytest.mark.parametrize("name", NETS)
def test_compiled_plan_matches_eager(name):
    model, shape = _model(name)
    x = np.random.default_rng(2).standard_normal((2,) + shape).astype(np.float32)
    expected = model(x)
    plan = fastcnn.compile(model, x.shape)
    assert_close(plan(x), expected, 512)
    out = np.empty_like(expected)
    assert plan(x, out=out) is out
    np.testing.assert_array_equal(out, plan(x))
    assert plan.nbytes > 0
    with pytest.raises(ValueError, match=r"compiled for input 0 of shape \(2, "):
        plan(x[:1])
    with pytest.raises(ValueError, match="dtype float32, got shape .* dtype float64"):
        plan(x.astype(np.float64))


def test_plan_replans_when_asked():
    model, shape = _model("lenet5")
    plan = fastcnn.compile(model, (1,) + shape, replan=True)
    x = np.random.default_rng(0).standard_normal((3,) + shape).astype(np.float32)
    assert_close(plan(x), model(x), 400)


def test_replanning_plan_reports_each_shape():
    """A replanning plan's algorithms, memory and profile are its kept plans'."""
    model, shape = _model("lenet5")
    plan = fastcnn.compile(model, (1,) + shape, replan=True)
    x = np.random.default_rng(0).standard_normal((3,) + shape).astype(np.float32)
    steps = plan.profile(x, repeat=1)       # plans this shape
    own = plan.plans[(x.shape, x.dtype)].profile(x, repeat=1)
    assert [s[:3] for s in steps] == [s[:3] for s in own] and steps[-1][2] == (3, 10)
    keys = [((1,) + shape, np.dtype(np.float32)), (x.shape, np.dtype(np.float32))]
    assert list(plan.plans) == keys
    assert plan.algorithms == {k: fastcnn.compile(model, k[0]).algorithms for k in keys}
    assert plan.algorithms[keys[0]]       # lenet5's convolutions are named
    assert plan.weight_nbytes == sum(p.weight_nbytes for p in plan.plans.values()) > 0
    assert plan.nbytes == sum(p.nbytes for p in plan.plans.values()) > 0
    with pytest.raises(TypeError, match="input must be a numpy.ndarray"):
        plan.profile([1.0])


def test_replanning_keeps_the_most_recent_shapes():
    model, shape = _model("lenet5")
    plan = fastcnn.compile(model, (1,) + shape, replan=True)
    rng = np.random.default_rng(0)
    for batch in range(1, 12):
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        assert_close(plan(x), model(x), 400)
    kept = plan._plans
    assert len(kept) == plan.LIMIT
    assert [k[0][0] for k in kept] == list(range(12 - plan.LIMIT, 12))


def test_plan_memory_does_not_grow():
    model, shape = _model("lenet5")
    x = np.random.default_rng(0).standard_normal((4,) + shape).astype(np.float32)
    plan = fastcnn.compile(model, x.shape)
    out = np.empty(plan.output_specs[0][0], np.float32)
    for _ in range(50):
        plan(x, out=out)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(1000):
        plan(x, out=out)
    gc.collect()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1024     # KiB


def test_scratch_is_one_aligned_workspace():
    from fastcnn._memory import Scratch
    scratch = Scratch()
    small = scratch.getter(lambda n: 100 * n, np.float32, 1)
    wide = scratch.getter(lambda n: 10 * n, np.float64, 2)
    empty = scratch.getter(lambda n: 0, np.float32, 2)
    a, b = small(1), wide(2)
    assert a.dtype == np.float32 and a.size == 100 and b.dtype == np.float64 and b.size == 20
    assert np.shares_memory(a, b) and a.ctypes.data % 64 == 0 and empty(2) is None
    assert scratch.nbytes == 400 + Scratch.ALIGN            # the larger need, not the sum
    assert small(1) is a                                     # kept while nothing grows
    grown = small(8)                                         # more threads: remade, larger
    assert grown.size == 800 and scratch.nbytes >= 3200 and wide(2).base is grown.base


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_plan_steps_share_one_workspace(name):
    # the steps run one after another: the plan holds the largest step's
    # workspace once, and more threads than it was compiled for grow it
    model, shape = _model(name)
    x = np.random.default_rng(0).standard_normal((1,) + shape).astype(np.float32)
    with fastcnn.threads(1):
        plan = fastcnn.compile(model, x.shape)
        y1 = plan(x)
    executor = plan._executors[0]
    buffers = sum(b.nbytes for b in executor._buffers)
    assert plan.nbytes - buffers == executor._scratch.nbytes + executor.workspace_nbytes
    assert executor._scratch.nbytes < 4 * 2 ** 20
    with fastcnn.threads(3):
        y3 = plan(x)
    np.testing.assert_array_equal(y1, y3)
    assert_close(y1, model(x), 512)


def test_plan_fuses_activation_nodes():
    model, shape = _model("lenet5")
    plan = fastcnn.compile(model, (8,) + shape)
    ops = [n.op for n in plan.nodes]
    assert "relu" not in ops            # every F.relu went into its conv or linear


def test_plan_fuses_residual_adds():
    """ResNet's add(conv2(...), identity) and the relu after it run in the
    second convolution's epilogue; the downsample branch, traced after conv2,
    is computed first."""
    model, shape = _model("resnet18")
    x = np.random.default_rng(5).standard_normal((1,) + shape).astype(np.float32)
    plan = fastcnn.compile(model, x.shape)
    ops = [n.op for n in plan.nodes]
    assert "add" not in ops and "relu" not in ops
    assert sum(n.kwargs.get("residual") is not None for n in plan.nodes) == 8
    assert_close(plan(x), model(x), 512)


class _SharedConv(nn.Module):
    """The conv's output is read twice: no residual fusion."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y + x, y * 2


def test_residual_not_fused_when_output_is_shared():
    x = np.random.default_rng(6).standard_normal((2, 4, 5, 5)).astype(np.float32)
    model = _SharedConv().eval()
    plan = fastcnn.compile(model, x.shape)
    assert "add" in [n.op for n in plan.nodes]
    # the plan and eager mode may pick different kernel paths: equal within rounding
    for got, want in zip(plan(x), model(x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class _StridedViews(nn.Module):
    """Layers reading strided views of a plan buffer (every other channel)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.even = nn.Conv2d(8, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        y = self.conv(x)
        return self.even(y[:, ::2]), self.pool(y[:, 1::2]), self.fc(y[:, :, 0, ::2])


def test_plan_layers_read_strided_views_of_its_buffers():
    """A strided view of a plan buffer is copied on every call, never bound
    once (a copy made when the plan was built would be stale, and the
    kernels read their input as lying contiguously)."""
    rng = np.random.default_rng(7)
    model = _StridedViews().eval()
    plan = fastcnn.compile(model, (2, 3, 12, 12))
    for _ in range(2):
        x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
        for got, want in zip(plan(x), model(x)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_compile_errors():
    class Bad(nn.Module):
        def forward(self, x):
            return np.sort(x)
    with pytest.raises(TraceError, match="numpy.sort is not supported"):
        fastcnn.compile(Bad(), (2, 3))
    with pytest.raises(TypeError, match="fastcnn.nn.Module"):
        fastcnn.compile(lambda x: x, (2, 3))
    with pytest.raises(ValueError, match="input_shape must be positive"):
        fastcnn.compile(models.lenet5(), (0, 3, 32, 32))


def test_viz_writes_pngs(tmp_path):
    pytest.importorskip("PIL")
    from fastcnn import viz
    w = models.resnet18().conv1.weight
    img = viz.filter_grid(w, tmp_path / "f.png")
    assert img.shape[2] == 3 and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    img = viz.filter_grid(np.random.rand(4, 2, 3, 3), tmp_path / "g.png")
    assert img.ndim == 2
    img = viz.activation_grid(np.random.rand(1, 5, 8, 8), tmp_path / "a.png")
    assert (tmp_path / "a.png").exists() and img.ndim == 2
    with pytest.raises(ValueError, match="expected weights of shape"):
        viz.filter_grid(np.zeros((3, 3)), tmp_path / "x.png")


@requires_torch
@pytest.mark.parametrize("name", NETS)
def test_state_dict_round_trip_with_pytorch(name):
    from fastcnn._bench.torch_nets import torch_twin
    model, shape = _model(name)
    twin = torch_twin(name, model)
    back = models.REFERENCE_NETWORKS[name][0]().eval()
    back.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    x = np.random.default_rng(3).standard_normal((2,) + shape).astype(np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert_close(back(x), expected, 512)
    assert_close(fastcnn.compile(back, x.shape)(x), expected, 512)
