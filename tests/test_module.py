from collections import OrderedDict

import numpy as np
import pytest

import fastcnn
from fastcnn import nn
from conftest import assert_close, requires_torch, torch


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


@requires_torch
def test_constructor_signatures_match_torch_nn():
    """Every fastcnn.nn class that torch.nn also has takes the same arguments,
    in the same order and kinds, with the same defaults (device and dtype
    defaults aside: fastcnn's dtype default is float32, PyTorch's None)."""
    import inspect
    checked, mismatches = 0, []
    for name in nn.__all__:
        ours, theirs = getattr(nn, name), getattr(torch.nn, name, None)
        if not (isinstance(ours, type) and issubclass(ours, nn.Module)) or theirs is None:
            continue
        checked += 1
        a = [p for p in inspect.signature(ours.__init__).parameters.values() if p.name != "self"]
        b = [p for p in inspect.signature(theirs.__init__).parameters.values() if p.name != "self"]
        if theirs.__init__ is torch.nn.Module.__init__:
            b = []                  # torch.nn.Module.__init__(*args, **kwargs) takes none
        if [(p.name, p.kind) for p in a] != [(p.name, p.kind) for p in b]:
            mismatches.append(f"{name}: {[p.name for p in a]} vs torch {[p.name for p in b]}")
            continue
        for p, q in zip(a, b):
            if p.name not in ("device", "dtype") and repr(p.default) != repr(q.default):
                mismatches.append(f"{name}.{p.name}: default {p.default!r}, torch {q.default!r}")
    assert checked >= 45
    assert not mismatches, "\n".join(mismatches)


@requires_torch
@pytest.mark.parametrize("cls,args", [("BatchNorm2d", (3,)), ("InstanceNorm2d", (3,)),
                                      ("GroupNorm", (1, 3))])
def test_norms_with_affine_weight_and_no_bias(cls, args, rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    kw = {"affine": True} if cls == "InstanceNorm2d" else {}
    ours = getattr(nn, cls)(*args, bias=False, **kw)
    theirs = getattr(torch.nn, cls)(*args, bias=False, **kw)
    assert ours.bias is None and theirs.bias is None
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.weight[...] = np.linspace(0.5, 2, 3)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight))
    assert_close(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), reduction=40)


# ------------------------------------------------------------ eval-mode packed weights

def _count_packs(monkeypatch):
    """How many times a convolution's weights get packed (ConvEngine.pack)."""
    from fastcnn._functional import conv as C
    calls = [0]
    pack = C.ConvEngine.pack

    def counted(self, w, num_threads, out=None):
        calls[0] += int(self.packed_size > 0)
        return pack(self, w, num_threads, out)
    monkeypatch.setattr(C.ConvEngine, "pack", counted)
    return calls


def _conv_reference(layer, x):
    from _reference import conv_nd
    return conv_nd(x, np.asarray(layer.weight), np.asarray(layer.bias), 1, 1, None, 1, 1)


def test_eval_conv_packs_its_weights_once_and_again_after_every_write(monkeypatch, rng):
    """An eval-mode Conv layer keeps its weights packed between calls; every
    way of changing them repacks: the Parameter replaced, item assignment,
    in-place arithmetic, np.copyto, fill, a write through .data or a view,
    load_state_dict, an optimizer step; train() and eval() drop the packing."""
    packs = _count_packs(monkeypatch)
    layer = nn.Conv2d(16, 32, 3, padding=1).eval()       # winograd: packs its weights
    x = rng.standard_normal((1, 16, 24, 24)).astype(np.float32)

    def check(expect_packs):
        y = layer(x)
        assert packs[0] == expect_packs
        assert_close(y, _conv_reference(layer, x), 16 * 9 * 100)
        return y
    check(1)
    check(1)                                             # kept
    writes = [
        lambda w: w.__setitem__((0, 0, 0, 0), 3.0),
        lambda w: w.__imul__(0.5),
        lambda w: np.copyto(w, rng.standard_normal(w.shape).astype(np.float32)),
        lambda w: w.fill(0.25),
        lambda w: w.data.__setitem__(Ellipsis, rng.standard_normal(w.shape)),
        lambda w: w.reshape(-1).__setitem__(slice(0, 5), 7.0),
        lambda w: np.copyto(w, nn.Parameter(np.ones(w.shape, np.float32))),  # two Parameters
        lambda w: np.multiply(nn.Parameter(np.ones(w.shape, np.float32)), 0.5, out=w),
    ]
    for k, write in enumerate(writes):
        write(layer.weight)
        check(2 + k)
    count = 2 + len(writes)
    layer.weight = nn.Parameter(rng.standard_normal(layer.weight.shape).astype(np.float32))
    check(count)
    state = {k: v * 2 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)
    check(count + 1)
    layer.weight.grad = np.ones_like(layer.weight)
    layer.bias.grad = np.ones_like(layer.bias)
    fastcnn.optim.SGD(layer.parameters(), lr=0.1).step()
    check(count + 2)
    layer.eval()
    check(count + 3)
    layer.bias[...] = 0                                   # bias: read per call, not packed
    check(count + 3)


def test_training_mode_packs_per_call_and_copies_start_empty(monkeypatch, rng):
    """Training mode keeps nothing packed; deep copies and pickles of an eval
    layer (and of one after a training-mode forward) carry no packing and
    compute the same."""
    import copy
    import pickle
    packs = _count_packs(monkeypatch)
    layer = nn.Conv2d(16, 32, 3, padding=1)
    x = rng.standard_normal((1, 16, 24, 24)).astype(np.float32)
    layer(x)
    layer(x)
    assert packs[0] >= 2
    layer.eval()
    y = layer(x)
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        before = packs[0]
        np.testing.assert_array_equal(other(x), y)
        assert packs[0] == before + 1
    layer.train()
    layer(x)                                             # a recorded forward: pickles without it
    again = pickle.loads(pickle.dumps(layer)).eval()
    np.testing.assert_array_equal(again(x), y)


def test_eval_conv_from_threads_at_once(rng):
    """One eval-mode layer called from several Python threads at once (each
    may repack while the others read), and under 1, 2 and 3 kernel threads:
    every result is bit for bit the first one."""
    from concurrent.futures import ThreadPoolExecutor
    from conftest import run_threads
    layer = nn.Conv2d(16, 32, 3, padding=1).eval()
    x = rng.standard_normal((1, 16, 24, 24)).astype(np.float32)
    expected = layer(x)
    for r in run_threads(lambda: layer(x)):
        np.testing.assert_array_equal(r, expected)
    layer.eval()                                         # dropped: the threads race to repack
    with ThreadPoolExecutor(4) as pool:
        for r in pool.map(lambda _: layer(x), range(16)):
            np.testing.assert_array_equal(r, expected)


def test_eval_conv_nonfinite_values_as_ieee_says(rng):
    """The eval-mode packing keeps functional conv's IEEE behaviour: a NaN or
    Inf input to a Winograd layer runs im2col (no tile-wide spread), and NaN
    or Inf weights of a grouped (direct) layer meet the padding's zeros."""
    from _reference import conv_nd
    layer = nn.Conv2d(16, 32, 3, padding=1).eval()
    x = rng.standard_normal((1, 16, 24, 24)).astype(np.float32)
    layer(x)
    assert layer._packed_weights._entry[3].algorithm == "winograd"
    x[0, 3, 5, 7] = np.nan
    x[0, 4, 20, 2] = np.inf
    expected = conv_nd(x, np.asarray(layer.weight), np.asarray(layer.bias), 1, 1, None, 1, 1)
    y = layer(x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4).eval()
    grouped.weight[1, 0, 0, 0] = np.inf
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    expected = conv_nd(x, np.asarray(grouped.weight), np.asarray(grouped.bias), 1, 1, None, 1, 4)
    for _ in range(2):
        y = grouped(x)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))


def test_eval_conv_unpickled_without_its_packing(rng):
    """A Conv layer pickled before layers kept packed weights (no
    _packed_weights in its state) runs, and packs from then on."""
    import pickle
    layer = nn.Conv2d(4, 8, 3, padding=1).eval()
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    y = layer(x)
    old = pickle.loads(pickle.dumps(layer))
    del old.__dict__["_packed_weights"]
    np.testing.assert_array_equal(old(x), y)
    old.eval()
    np.testing.assert_array_equal(old(x), y)
