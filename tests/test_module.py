from collections import OrderedDict

import numpy as np
import pytest

import fastcnn
from fastcnn import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn1(self.conv1(x)) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.layer1 = nn.Sequential(Block(), Block())
        self.scale = nn.Parameter(np.ones(1, np.float32))
        self.register_buffer("offset", np.zeros(1, np.float32))
        self.register_buffer("scratch", np.zeros(2, np.float32), persistent=False)

    def forward(self, x):
        return self.layer1(self.stem(x)) * self.scale + self.offset


def test_registration_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names[:2] == ["scale", "stem.weight"] or names[0] == "stem.weight"
    assert "layer1.0.conv1.weight" in names and "layer1.1.bn1.bias" in names
    assert "layer1.0.bn1.running_mean" in [n for n, _ in net.named_buffers()]
    assert [n for n, _ in net.named_children()] == ["stem", "layer1"]
    assert len(list(net.modules())) == 1 + 1 + 1 + 2 * 4
    assert [n for n, _ in net.named_modules()][:3] == ["", "stem", "layer1"]


def test_state_dict_keys_and_persistent_buffers():
    sd = Net().state_dict()
    assert isinstance(sd, OrderedDict)
    assert "layer1.0.bn1.num_batches_tracked" in sd and "offset" in sd and "scratch" not in sd
    assert sd["layer1.0.bn1.num_batches_tracked"].dtype == np.int64


def test_load_state_dict_round_trip_and_errors(tmp_path):
    a, b = Net(), Net()
    for p in a.parameters():
        p[...] = np.random.default_rng(0).standard_normal(p.shape)
    res = b.load_state_dict(a.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(a.eval()(x), b.eval()(x))
    sd = a.state_dict()
    bad = dict(sd)
    bad["stem.weight"] = np.zeros((5, 3, 1, 1), np.float32)
    bad["extra"] = np.zeros(1)
    del bad["offset"]
    before = b.stem.weight.copy()
    with pytest.raises(ValueError) as exc:
        b.load_state_dict(bad)
    msg = str(exc.value)
    assert "Unexpected key(s) in state_dict: 'extra'" in msg
    assert "Missing key(s) in state_dict: 'offset'" in msg
    assert "size mismatch for stem.weight: copying a param with shape (5, 3, 1, 1)" in msg
    np.testing.assert_array_equal(b.stem.weight, before)       # nothing half-loaded
    res = b.load_state_dict({"stem.weight": sd["stem.weight"], "extra": 1}, strict=False)
    assert "offset" in res.missing_keys and res.unexpected_keys == ["extra"]
    wrong = dict(sd)
    wrong["layer1.0.bn1.num_batches_tracked"] = np.array(1.5)
    with pytest.raises(ValueError, match="cannot be loaded into int64"):
        b.load_state_dict(wrong)


def test_train_eval_and_repr():
    net = Net()
    assert net.training and net.layer1[0].bn1.training
    net.eval()
    assert not net.training and not net.layer1[1].relu.training
    text = repr(net)
    assert text.startswith("Net(\n  (stem): Conv2d(3, 4, kernel_size=(1, 1), stride=(1, 1))")
    assert "(layer1): Sequential(\n    (0): Block(\n      (conv1): Conv2d(4, 4, kernel_size=(3, 3)" in text


def test_sequential_containers():
    seq = nn.Sequential(nn.ReLU(), nn.Identity(), nn.Sigmoid())
    assert len(seq) == 3 and isinstance(seq[-1], nn.Sigmoid)
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and len(sub) == 2
    seq.append(nn.Tanh())
    assert list(seq._modules) == ["0", "1", "2", "3"]
    del seq[1]
    assert list(seq._modules) == ["0", "1", "2"] and isinstance(seq[1], nn.Sigmoid)
    with pytest.raises(IndexError):
        seq[5]
    named = nn.Sequential(OrderedDict([("a", nn.ReLU()), ("b", nn.ReLU6())]))
    assert list(named.state_dict()) == [] and list(named._modules) == ["a", "b"]
    ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 3)])
    assert len(list(ml.parameters())) == 4 and ml[-1].out_features == 3
    md = nn.ModuleDict({"x": nn.Conv2d(1, 1, 1)})
    md["y"] = nn.ReLU()
    assert "x" in md and list(md.keys()) == ["x", "y"]
    assert list(md.state_dict()) == ["x.weight", "x.bias"]


def test_parameter_assignment_and_errors():
    layer = nn.Linear(3, 2)
    layer.weight = np.zeros((2, 3), np.float32)
    assert "weight" in dict(layer.named_parameters())
    with pytest.raises(TypeError, match="child module"):
        Net().stem = 3
    with pytest.raises(KeyError):
        nn.Module().register_buffer("a.b", np.zeros(1))
    with pytest.raises(NotImplementedError, match="no forward"):
        nn.Module()(1)


def test_save_and_load(tmp_path):
    net = Net()
    path = tmp_path / "net.npz"
    fastcnn.save(net.state_dict(), path)
    sd = fastcnn.load(path)
    assert list(sd) == list(net.state_dict())
    other = Net()
    other.load_state_dict(sd)
    np.testing.assert_array_equal(other.stem.weight, net.stem.weight)
    (tmp_path / "not.npz").write_text("hello")
    with pytest.raises(ValueError, match="is not an .npz file"):
        fastcnn.load(tmp_path / "not.npz")
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError):
        fastcnn.load(truncated)
    obj = tmp_path / "obj.npz"
    np.savez(obj, a=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="could not be read"):
        fastcnn.load(obj)
    with pytest.raises(FileNotFoundError):
        fastcnn.load(tmp_path / "missing.npz")
