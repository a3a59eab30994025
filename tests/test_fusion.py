import numpy as np
import pytest

import fastcnn
from fastcnn import nn


def _randomize(model, rng):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            m.running_mean[...] = rng.standard_normal(m.num_features)
            m.running_var[...] = rng.random(m.num_features) + 0.3
            if m.weight is not None:
                m.weight[...] = rng.standard_normal(m.num_features)
                m.bias[...] = rng.standard_normal(m.num_features)
    return model.eval()


class Block(nn.Module):
    """A residual block: the ReLU module is used twice, once after the add."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6, None])
def test_conv_bn_act_stacks(bias, act, rng):
    layers = []
    for cin, cout in [(3, 8), (8, 16), (16, 4)]:
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
    model = _randomize(nn.Sequential(*layers), rng)
    x = rng.standard_normal((2, 3, 10, 9)).astype(np.float32)
    fused = fastcnn.fuse(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    if act is not None:
        assert not any(isinstance(m, act) for m in fused.modules())
    np.testing.assert_allclose(fused(x), model(x), rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())   # original untouched


def test_linear_batch_norm1d(rng):
    model = _randomize(nn.Sequential(nn.Linear(10, 6), nn.BatchNorm1d(6), nn.ReLU6(),
                                     nn.Linear(6, 3)), rng)
    x = rng.standard_normal((5, 10)).astype(np.float32)
    fused = fastcnn.fuse(model)
    assert fused[0].activation == "relu6"
    np.testing.assert_allclose(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_residual_block_structural_and_traced(rng):
    model = _randomize(nn.Sequential(Block(4), Block(4)), rng)
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    structural = fastcnn.fuse(model)
    assert structural[0].conv1.activation is None          # needs a trace outside Sequential
    traced = fastcnn.fuse(model, x.shape)
    assert traced[0].conv1.activation == "relu" and traced[0].conv2.activation is None
    for fused in (structural, traced):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        np.testing.assert_allclose(fused(x), model(x), rtol=1e-4, atol=1e-4)


def test_wrong_registration_order_is_caught_with_a_trace(rng):
    class Backwards(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.conv(self.bn(x))         # BN first, despite the registration order

    model = _randomize(Backwards(), rng)
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    traced = fastcnn.fuse(model, x.shape)       # the trace sees BN does not read conv's output
    assert isinstance(traced.bn, nn.BatchNorm2d)
    np.testing.assert_allclose(traced(x), model(x), rtol=1e-5, atol=1e-6)


def test_batch_norm_without_running_stats_is_not_folded(rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    fused = fastcnn.fuse(model)
    assert isinstance(fused[1], nn.BatchNorm2d)


def test_fuse_rejects_non_modules():
    with pytest.raises(TypeError, match="fastcnn.nn.Module"):
        fastcnn.fuse(object())
