"""Training: backward of every layer against central finite differences
(float64, the slow obvious reference) and PyTorch autograd, losses,
optimizers step by step against torch.optim, whole training steps, thread
determinism, and the errors a wrong backward call gets."""
import numpy as np
import pytest

import fastcnn
from fastcnn import models, nn, optim
import fastcnn.functional as F
import fastcnn.grad as G

torch = pytest.importorskip("torch")
from fastcnn._bench.torch_nets import torch_twin  # noqa: E402
from conftest import run_threads  # noqa: E402

rng = np.random.default_rng(0)


def finite_difference(f, x, eps=1e-6):
    """d sum(f(x) * w) / dx for a fixed random w, by central differences."""
    w = np.random.default_rng(1).standard_normal(np.shape(f(x)))
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = np.sum(f(x) * w)
        flat[i] = old - eps
        lo = np.sum(f(x) * w)
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return g, w


def module_grads(module, x, w):
    module.train()
    module(x)
    gx = module.backward(w)
    return gx, {n: p.grad for n, p in module.named_parameters()}


def check_module_fd(module, shape, tol=1e-6):
    module = module.double()
    x = rng.standard_normal(shape)

    def f(z):
        with fastcnn.no_grad():
            return module(z)
    num, w = finite_difference(f, x.copy())
    gx, grads = module_grads(module, x, w)
    np.testing.assert_allclose(gx, num, atol=tol * max(1, np.abs(num).max()), rtol=1e-5)
    for name, p in module.named_parameters():
        pnum, _ = finite_difference(lambda v: (np.copyto(p, v), f(x))[1],
                                    np.array(p, copy=True))
        np.testing.assert_allclose(grads[name], pnum, atol=tol * max(1, np.abs(pnum).max()),
                                   rtol=1e-5, err_msg=name)


LAYERS = [
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 6)),
    (lambda: nn.Conv2d(4, 6, (3, 2), stride=(1, 3), padding=(1, 0), dilation=(2, 1), groups=2),
     (1, 4, 7, 8)),
    (lambda: nn.Conv2d(4, 8, 3, padding=1, groups=4), (2, 4, 5, 5)),            # depthwise x2
    (lambda: nn.Conv2d(3, 2, 2, stride=3), (2, 3, 7, 7)),                         # stride > kernel
    (lambda: nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect"), (1, 3, 5, 4)),
    (lambda: nn.Conv2d(3, 2, 3, padding=1, padding_mode="circular"), (1, 3, 5, 4)),
    (lambda: nn.Conv2d(2, 3, 4, padding="same"), (1, 2, 5, 6)),                  # asymmetric
    (lambda: nn.Conv1d(3, 5, 3, stride=2, padding=1), (2, 3, 9)),
    (lambda: nn.Conv3d(2, 3, 2, stride=(1, 2, 1), padding=1), (1, 2, 3, 4, 3)),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), (2, 3, 3, 4)),
    (lambda: nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2), (1, 4, 3, 3)),
    (lambda: nn.Linear(7, 5), (3, 7)),
    (lambda: nn.Linear(4, 3), (2, 3, 4)),
    (lambda: nn.BatchNorm2d(3), (4, 3, 3, 2)),
    (lambda: nn.BatchNorm1d(5), (6, 5)),
    (lambda: nn.GroupNorm(2, 6), (2, 6, 3, 3)),
    (lambda: nn.LayerNorm((3, 4)), (2, 5, 3, 4)),
    (lambda: nn.InstanceNorm2d(3, affine=True), (2, 3, 4, 4)),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 6)),
    (lambda: nn.MaxPool2d(2, ceil_mode=True), (1, 2, 5, 5)),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 2, 7, 6)),
    (lambda: nn.AvgPool2d(2, ceil_mode=True, divisor_override=3), (1, 2, 5, 5)),
    (lambda: nn.AvgPool1d(3, stride=2, padding=1), (2, 2, 8)),
    (lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 2, 7, 5)),
    (lambda: nn.AdaptiveMaxPool2d(2), (1, 3, 5, 5)),
    (lambda: nn.Softmax(dim=1), (3, 5, 2)),
    (lambda: nn.LogSoftmax(dim=-1), (3, 5)),
    (lambda: nn.PReLU(3), (2, 3, 4)),
    (lambda: nn.Flatten(), (2, 3, 2, 2)),
    (lambda: nn.PixelShuffle(2), (1, 8, 2, 3)),
    (lambda: nn.ReflectionPad2d((1, 2, 0, 1)), (1, 2, 3, 4)),
]
ACTIVATIONS = [nn.ReLU(), nn.ReLU6(), nn.LeakyReLU(0.2), nn.ELU(0.7), nn.SELU(), nn.CELU(1.3),
               nn.Hardtanh(-0.5, 0.8), nn.Sigmoid(), nn.Tanh(), nn.SiLU(), nn.Hardswish(),
               nn.Hardsigmoid(), nn.GELU(), nn.GELU("tanh"), nn.Mish(), nn.Softplus(2, 3)]


@pytest.mark.parametrize("make, shape", LAYERS, ids=lambda v: repr(v) if isinstance(v, tuple) else "")
def test_layer_backward_matches_finite_differences(make, shape):
    check_module_fd(make(), shape)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda m: repr(m))
def test_activation_backward_matches_finite_differences(act):
    # away from the kinks, where a derivative is a convention
    x = rng.uniform(-4, 4, (3, 7))
    x[np.abs(x) < 0.05] += 0.2
    for kink in (-3, 3, 6, -0.5, 0.8):
        x[np.abs(x - kink) < 0.05] += 0.2
    act = act.double() if hasattr(act, "double") else act
    num, w = finite_difference(lambda z: act.eval()(z), x.copy())
    act.train()
    act(x)
    np.testing.assert_allclose(act.backward(w), num, atol=1e-6, rtol=1e-5)


def _torch_layer(module):
    """The torch twin of a single fastcnn layer, with the same weights."""
    name = type(module).__name__
    t = getattr(torch.nn, name)
    kw = {}
    if hasattr(module, "padding_mode"):
        kw["padding_mode"] = module.padding_mode
    return t, kw


def _torch_grads(name, model, x, gy, dtype):
    """PyTorch's input and parameter gradients for the twin of `model` in `dtype`."""
    t = torch_twin(name, model).to(getattr(torch, np.dtype(dtype).name))
    for mod in t.modules():              # dropout masks differ between the libraries
        if isinstance(mod, torch.nn.Dropout):
            mod.eval()
    tdt = getattr(torch, np.dtype(dtype).name)
    xt = torch.tensor(x, dtype=tdt, requires_grad=True)
    t(xt).backward(torch.tensor(gy, dtype=tdt))
    return ([xt.grad.numpy().astype(np.float64)]
            + [p.grad.numpy().astype(np.float64) for p in t.parameters()],
            [n for n, _ in t.named_parameters()], t)


@pytest.mark.parametrize("name, shape", [("lenet5", (4, 3, 32, 32)), ("resnet18", (2, 3, 48, 48)),
                                         ("mobilenet_v2", (2, 3, 48, 40)),
                                         ("groupnorm_cnn", (3, 3, 32, 32))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_model_backward_matches_pytorch(name, shape, dtype):
    """float64: equal to PyTorch's gradients to 1e-10 of each network's largest.
    float32: no further from the float64 gradients than PyTorch's float32 ones
    (small batches normalize the last layers over a few values each, which
    amplifies float32 rounding in both libraries alike)."""
    rng = np.random.default_rng(7)
    fastcnn.manual_seed(7)
    m = getattr(models, name)()
    for mod in m.modules():
        if isinstance(mod, nn.Dropout):
            mod.eval()
    x = rng.standard_normal(shape)
    reference = {k: np.array(v) for k, v in m.state_dict().items()}
    m.to(dtype)
    y = m(x.astype(dtype))
    gy = rng.standard_normal(y.shape)
    gx = m.backward(gy.astype(dtype))
    ours = [gx.astype(np.float64)] + [p.grad.astype(np.float64) for p in m.parameters()]
    base = models.__dict__[name]()
    base.load_state_dict(reference)
    exact, names, t = _torch_grads(name, base, x, gy, np.float64)
    assert names == [n for n, _ in m.named_parameters()]
    if dtype == np.float32:
        theirs, _, _ = _torch_grads(name, base, x, gy, np.float32)
    for i, (a, e) in enumerate(zip(ours, exact)):
        scale = max(np.abs(e).max() if i == 0 else max(np.abs(g).max() for g in exact[1:]),
                    1e-30)
        err = np.abs(a - e).max() / scale
        label = "input" if i == 0 else names[i - 1]
        if dtype == np.float64:
            assert err < 1e-10, (label, err)
        else:
            assert err <= 4 * np.abs(theirs[i] - e).max() / scale + 2e-5, (label, err)
    # running statistics updated once, as PyTorch's
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for (n, b), (tn, tb) in zip(m.named_buffers(), t.named_buffers()):
        np.testing.assert_allclose(b, tb.numpy(), rtol=tol, atol=tol, err_msg=n)


@pytest.mark.parametrize("kw", [dict(), dict(weight=True), dict(label_smoothing=0.15),
                                dict(weight=True, label_smoothing=0.2, reduction="sum"),
                                dict(reduction="none"), dict(ignore_index=1)])
def test_cross_entropy_and_nll_match_pytorch(kw):
    x = rng.standard_normal((6, 4, 3))
    t = rng.integers(0, 4, (6, 3))
    t[0, 0] = kw.get("ignore_index", -100)
    w = rng.random(4) + 0.1
    opts = {k: v for k, v in kw.items() if k != "weight"}
    if kw.get("weight"):
        opts["weight"] = w
    topts = {k: torch.tensor(v) if k == "weight" else v for k, v in opts.items()}
    g = rng.random((6, 3)) if kw.get("reduction") == "none" else 1.0
    for f, fg, tf, inp in ((F.cross_entropy, F.cross_entropy_grad,
                            torch.nn.functional.cross_entropy, x),
                           (F.nll_loss, F.nll_loss_grad, torch.nn.functional.nll_loss,
                            F.log_softmax(x, 1))):
        if f is F.nll_loss and "label_smoothing" in opts:
            continue
        xt = torch.tensor(inp, requires_grad=True)
        lt = tf(xt, torch.tensor(t), **topts)
        lt.backward(torch.tensor(g) if np.ndim(g) else None)
        np.testing.assert_allclose(f(inp, t, **opts), lt.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fg(inp, t, grad_output=g, **opts), xt.grad.numpy(),
                                   rtol=1e-10, atol=1e-12)


def test_probability_targets_bce_and_mse_match_pytorch():
    x = rng.standard_normal((5, 4, 2))
    p = rng.random((5, 4, 2))
    p /= p.sum(1, keepdims=True)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(xt, torch.tensor(p), label_smoothing=0.1).backward()
    np.testing.assert_allclose(F.cross_entropy_grad(x, p, label_smoothing=0.1), xt.grad.numpy(),
                               atol=1e-14)
    y, z, pw, w = rng.random((5, 4)), rng.standard_normal((5, 4)) * 30, rng.random(4) + .5, rng.random(4)
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.tensor(y), torch.tensor(w),
                                                              pos_weight=torch.tensor(pw))
    lt.backward()
    assert abs(F.binary_cross_entropy_with_logits(z, y, w, pos_weight=pw) - lt.item()) < 1e-12
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits_grad(z, y, w, pos_weight=pw),
                               zt.grad.numpy(), atol=1e-14)
    crit = nn.MSELoss(reduction="sum")
    crit(z, y)
    np.testing.assert_allclose(crit.backward(2.0), 4 * (z - y))


@pytest.mark.parametrize("make, tmake", [
    (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4)),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.5, dampening=0.1),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5, dampening=0.1)),
    (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, maximize=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    (lambda p: optim.Adam(p, lr=1e-2, weight_decay=1e-3, amsgrad=True),
     lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3, amsgrad=True)),
    (lambda p: optim.AdamW(p, lr=1e-2, betas=(0.8, 0.99)),
     lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.8, 0.99))),
])
def test_training_steps_match_pytorch(make, tmake):
    """Five steps of LeNet-5 from the same weights: same losses, same weights."""
    m = models.lenet5().double()
    t = torch_twin("lenet5", m).double()
    opt, topt = make(m.parameters()), tmake(t.parameters())
    sched = optim.lr_scheduler.StepLR(opt, 2, 0.5)
    tsched = torch.optim.lr_scheduler.StepLR(topt, 2, 0.5)
    crit = nn.CrossEntropyLoss(label_smoothing=0.05)
    for _ in range(5):
        x, y = rng.standard_normal((8, 3, 32, 32)), rng.integers(0, 10, 8)
        opt.zero_grad()
        loss = crit(m(x), y)
        m.backward(crit.backward(), input_grad=False)
        opt.step()
        sched.step()
        topt.zero_grad()
        tl = torch.nn.functional.cross_entropy(t(torch.tensor(x)), torch.tensor(y),
                                               label_smoothing=0.05)
        tl.backward()
        topt.step()
        tsched.step()
        assert abs(float(loss) - tl.item()) < 1e-10
    for (n, p), tp in zip(m.named_parameters(), t.parameters()):
        np.testing.assert_allclose(p, tp.detach().numpy(), atol=1e-10, err_msg=n)
    assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr())


def test_optimizer_state_dict_round_trip():
    m = models.lenet5()
    opt = optim.Adam(m.parameters(), lr=1e-3)
    m(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    m.backward(np.ones((2, 10), np.float32))
    opt.step()
    state = opt.state_dict()
    opt2 = optim.Adam(m.parameters(), lr=5.0)
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == 1e-3
    for p in m.parameters():
        np.testing.assert_array_equal(opt2.state[id(p)]["exp_avg"], opt.state[id(p)]["exp_avg"])


def test_cosine_schedule_matches_pytorch():
    p = nn.Parameter(np.zeros(2))
    opt, topt = optim.SGD([p], lr=0.1), torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    s = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=0.01)
    ts = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=7, eta_min=0.01)
    for _ in range(10):
        opt.step()
        topt.step()
        s.step()
        ts.step()
        assert s.get_last_lr()[0] == pytest.approx(ts.get_last_lr()[0], rel=1e-12)


def test_gradients_bit_identical_across_thread_counts():
    m = models.resnet18(num_classes=10)
    x = rng.standard_normal((2, 3, 40, 40)).astype(np.float32)
    gy = rng.standard_normal((2, 10)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        state = {k: np.array(v) for k, v in m.state_dict().items()}
        with fastcnn.threads(threads):
            m.zero_grad()
            m(x)
            gx = m.backward(gy)
        results.append((gx, [p.grad.copy() for p in m.parameters()]))
        m.load_state_dict(state)         # running statistics back
    for gx, grads in results[1:]:
        np.testing.assert_array_equal(gx, results[0][0])
        for a, b in zip(grads, results[0][1]):
            np.testing.assert_array_equal(a, b)


def test_gradients_accumulate_and_zero_grad_resets():
    m = nn.Linear(3, 2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    m(x)
    m.backward(np.ones((4, 2), np.float32))
    first = m.weight.grad.copy()
    m(x)
    m.backward(np.ones((4, 2), np.float32))
    np.testing.assert_allclose(m.weight.grad, 2 * first, rtol=1e-6)
    m.zero_grad()
    assert m.weight.grad is None


def test_parameters_keep_identity_and_arithmetic_gives_plain_arrays():
    m = nn.Conv2d(2, 3, 3)
    w = m.weight
    opt = optim.SGD(m.parameters(), lr=1.0)
    m.load_state_dict({k: np.full(v.shape, 2.0, v.dtype) for k, v in m.state_dict().items()})
    assert m.weight is w and np.all(w == 2.0)
    assert type(w * 2) is np.ndarray and type(w[0]) is np.ndarray and type(w.reshape(-1)) is np.ndarray
    assert isinstance(w, nn.Parameter) and w.requires_grad
    m(rng.standard_normal((1, 2, 5, 5)).astype(np.float32))
    m.backward(np.ones((1, 3, 3, 3), np.float32))
    before = np.array(w)
    opt.step()
    np.testing.assert_allclose(m.weight, before - w.grad)


def test_frozen_parameters_and_no_grad():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    m[1].requires_grad_(False)
    m[1].eval()                                     # a frozen-BN fine-tune
    m(rng.standard_normal((2, 2, 5, 5)).astype(np.float32))
    m.backward(np.ones((2, 3, 3, 3), np.float32))
    assert m[1].weight.grad is None and m[0].weight.grad is not None
    with fastcnn.no_grad():
        m(rng.standard_normal((2, 2, 5, 5)).astype(np.float32))
    with pytest.raises(RuntimeError, match="already back-propagated"):
        m.backward(np.ones((2, 3, 3, 3), np.float32))
    assert fastcnn.is_grad_enabled()

    @fastcnn.no_grad()
    def infer():
        return fastcnn.is_grad_enabled()
    assert infer() is False and fastcnn.is_grad_enabled()


def test_inplace_ops_keep_what_backward_needs():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            z = F.relu(y)              # relu saves y's output
            y += x                     # overwrites y in place
            F.relu_(y)
            return y * z
    check_module_fd(Block(), (1, 3, 4, 4))


def test_residual_and_user_numpy_ops():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 3)

        def forward(self, x):
            h = np.tanh(self.a(x)) + x
            h = np.concatenate([h, h[:, :2] * 2.0], axis=1)
            return self.b(h[:, :4]) - h.mean(axis=1, keepdims=True)
    check_module_fd(Net(), (3, 4))


def test_parameter_grads_never_alias_what_the_caller_holds():
    # p.grad takes a backward's fresh array as it is, and copies what the
    # caller can reach: the gradient given, an input gradient returned, or
    # another parameter's gradient
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = nn.Parameter(np.zeros((2, 3), np.float32))
            self.twin = nn.Parameter(np.zeros((2, 3), np.float32))
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x) + self.shift + self.twin
    m = Net().train()
    x = np.ones((2, 3), np.float32)
    m(x)
    g = np.full((2, 3), 2.0, np.float32)
    gx = m.backward(g)
    grads = [m.shift.grad, m.twin.grad, m.lin.weight.grad, m.lin.bias.grad, gx]
    for i, a in enumerate(grads):
        assert not np.may_share_memory(a, g)
        assert not any(np.may_share_memory(a, b) for b in grads[i + 1:])
    np.testing.assert_array_equal(m.shift.grad, g)
    np.testing.assert_array_equal(m.lin.bias.grad, g.sum(0))
    g[:] = 7
    np.testing.assert_array_equal(m.twin.grad, 2.0)


def test_dropout_backward_uses_the_forward_mask():
    m = nn.Dropout(0.5).double()
    x = rng.standard_normal((4, 50))
    y = m(x)
    g = m.backward(np.ones_like(x))
    kept = y != 0
    np.testing.assert_array_equal(g[kept], 2.0)
    np.testing.assert_array_equal(g[~kept], 0.0)


def test_backward_errors():
    m = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="no recorded forward"):
        m.backward(np.ones((1, 2), np.float32))
    m(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"output's shape \(4, 2\)"):
        m.backward(np.ones((4, 3), np.float32))
    m.backward(np.ones((4, 2), np.float32))
    with pytest.raises(RuntimeError, match="already back-propagated"):
        m.backward(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="grad_output must have shape"):
        G.conv2d_input((1, 2, 5, 5), np.ones((3, 2, 3, 3)), np.ones((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="target values must be in"):
        F.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="optimizer can only optimize Parameters"):
        optim.SGD([np.zeros(3)], lr=0.1)


def test_eval_mode_records_nothing():
    m = models.lenet5().eval()
    m(rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    with pytest.raises(RuntimeError, match="no recorded forward"):
        m.backward(np.ones((1, 10), np.float32))


def test_conv_grad_functions_match_torch_nn_grad():
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    gy = rng.standard_normal((2, 6, 5, 4))
    args = dict(stride=2, padding=1, dilation=1, groups=2)
    np.testing.assert_allclose(
        G.conv2d_input(x.shape, w, gy, **args),
        torch.nn.grad.conv2d_input(x.shape, torch.tensor(w), torch.tensor(gy), **args).numpy(),
        atol=1e-12)
    np.testing.assert_allclose(
        G.conv2d_weight(x, w.shape, gy, **args),
        torch.nn.grad.conv2d_weight(torch.tensor(x), w.shape, torch.tensor(gy), **args).numpy(),
        atol=1e-12)


def test_train_digits_experiment(tmp_path, capsys):
    """The batch-norm experiment end to end (one epoch): both runs recorded,
    the model saved, reloaded, compiled and as accurate as the eager one."""
    pytest.importorskip("sklearn")
    import json
    from fastcnn.__main__ import main
    assert main(["train-digits", "--epochs", "1", "--out", str(tmp_path), "--quiet"]) == 0
    report = json.loads((tmp_path / "digits_bn.json").read_text())
    runs = report["runs"]
    assert set(runs) == {"without batch norm", "with batch norm"}
    for r in runs.values():
        assert len(r["train_loss"]) == r["steps_per_epoch"] and len(r["val_accuracy"]) == 1
        assert np.isfinite(r["train_loss"]).all()
    assert runs["with batch norm"]["val_accuracy"][0] > 0.5      # one epoch of BN learns
    reloaded = report["reloaded_model"]
    assert reloaded["compiled_val_accuracy"] == reloaded["eager_val_accuracy"]
    assert (tmp_path / "digits_bn.npz").exists()
    if _has("matplotlib"):
        assert (tmp_path / "digits_bn.png").stat().st_size > 10_000
    assert "reloaded + compiled model" in capsys.readouterr().out


def _has(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("cout", [1, 5, 16, 17])          # the direct path up to 16, GEMM beyond
@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (5, 1, 0, 1), (3, 1, 2, 2), ((2, 7), 1, (1, 3), 1), (3, 2, 1, 1), ((3, 9), 1, 1, 1)])
def test_weight_gradient_paths_match_torch(cout, kernel, stride, padding, dilation):
    x = rng.standard_normal((3, 4, 11, 13))
    w = rng.standard_normal((cout, 4) + ((kernel,) * 2 if isinstance(kernel, int) else kernel))
    y = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, stride, padding,
                                   dilation)
    gy = rng.standard_normal(tuple(y.shape))
    want = torch.nn.grad.conv2d_weight(torch.tensor(x), w.shape, torch.tensor(gy), stride,
                                       padding, dilation).numpy()
    got = G.conv2d_weight(x, w.shape, gy, stride, padding, dilation)
    np.testing.assert_allclose(got, want, atol=1e-11, rtol=1e-11)
    g32 = G.conv2d_weight(x.astype(np.float32), w.shape, gy.astype(np.float32), stride, padding,
                          dilation)
    np.testing.assert_allclose(g32, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # a non-finite input takes the im2col path, where it meets only its own taps
    x[0, 0, 5, 6] = np.inf
    with np.errstate(invalid="ignore"):
        want = torch.nn.grad.conv2d_weight(torch.tensor(x), w.shape, torch.tensor(gy), stride,
                                           padding, dilation).numpy()
        got = G.conv2d_weight(x, w.shape, gy, stride, padding, dilation)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


@pytest.mark.parametrize("shape, cout, kernel, stride, padding", [
    ((5, 64, 13, 13), 32, 3, 1, 1),          # chunks of 256 positions start mid-row, mid-image
    ((3, 128, 10, 9), 256, 3, 1, 1),         # 256 output channels: gw itself the GEMMs' product
    ((4, 130, 9, 23), 20, (3, 2), (1, 2), (1, 0))])
def test_weight_gradient_over_several_column_chunks(monkeypatch, shape, cout, kernel, stride,
                                                   padding):
    """The im2col weight gradient builds its columns chunk by chunk of output
    positions; chunks that start inside a row and an image give torch's
    gradient (Winograd, which would take the 3x3 layers, held off)."""
    monkeypatch.setattr(fastcnn._kernels._grad, "winograd_weight_pays", lambda *a: False)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((cout, shape[1]) + ((kernel,) * 2 if isinstance(kernel, int)
                                                else kernel))
    y = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, stride, padding)
    gy = rng.standard_normal(tuple(y.shape))
    want = torch.nn.grad.conv2d_weight(torch.tensor(x), w.shape, torch.tensor(gy), stride,
                                       padding).numpy()
    assert y.shape[0] * y.shape[2] * y.shape[3] > 256
    np.testing.assert_allclose(G.conv2d_weight(x, w.shape, gy, stride, padding), want,
                               atol=1e-11, rtol=1e-11)


def _weight_grad_definition(x, gy, w_shape, stride, padding, groups):
    """gw[o, i, kh, kw] = sum over images and outputs of gy * the input
    at that tap, from zero-padded x (2-D)."""
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = gy.shape[2:]
    cout_g, cin_g = w_shape[0] // groups, w_shape[1]
    gw = np.zeros(w_shape)
    for kh in range(w_shape[2]):
        for kw in range(w_shape[3]):
            xs = xp[:, :, kh:kh + sh * (oh - 1) + 1:sh, kw:kw + sw * (ow - 1) + 1:sw]
            for g in range(groups):
                gw[g * cout_g:(g + 1) * cout_g, :, kh, kw] = np.einsum(
                    "nohw,nihw->oi", gy[:, g * cout_g:(g + 1) * cout_g],
                    xs[:, g * cin_g:(g + 1) * cin_g])
    return gw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, cout, kernel, stride, padding", [
    ((64, 3, 32, 32), 6, (5, 5), (1, 1), (0, 0)),     # LeNet-5's first layer
    ((2, 5, 9, 11), 7, (3, 3), (1, 1), (1, 1)),       # odd channels, padded
    ((3, 2, 11, 13), 3, (3, 4), (2, 3), (1, 2)),      # strided: rows split by phase
    ((1, 1, 4, 5), 16, (3, 3), (1, 1), (3, 4)),       # padding past the kernel's reach
    ((2, 64, 9, 9), 16, (5, 5), (1, 1), (2, 2))])     # parts added by several threads
def test_direct_weight_gradient_matches_definition(dtype, x_shape, cout, kernel, stride,
                                                    padding):
    """The direct weight gradient (few output channels) on the operands
    direct_layout lays out, at any stride: the definition's values,
    bit-identical at every thread count."""
    from fastcnn._functional.conv_grad import _Geometry, _direct_workspace
    x = rng.standard_normal(x_shape).astype(dtype)
    w_shape = (cout, x_shape[1]) + kernel
    out = [(s + 2 * p - k) // st + 1 for s, p, k, st in zip(x_shape[2:], padding, kernel,
                                                              stride)]
    gy = rng.standard_normal((x_shape[0], cout, *out)).astype(dtype)
    geom = _Geometry("test", x_shape, w_shape, stride, padding, 1, 1, gy).kernel_geom(
        *x_shape[:2])
    direct = fastcnn._kernels._grad.conv_weight_direct

    def run():
        gw = np.zeros(w_shape, dtype)
        direct(geom, x, gy, *_direct_workspace(geom, gw), gw, fastcnn.get_num_threads())
        return gw
    got = run_threads(run)
    assert all(np.array_equal(got[0], r) for r in got)
    want = _weight_grad_definition(x.astype(np.float64), gy.astype(np.float64), w_shape,
                                   stride, padding, 1)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(got[0], want, rtol=tol, atol=tol * np.abs(want).max())
    gw = np.zeros(w_shape, dtype)
    xp, gp, partial = _direct_workspace(geom, gw)
    with pytest.raises(ValueError, match="conv_weight_direct: operand shapes"):
        direct(geom, x, gy, xp[:, :, :, 1:], gp, partial, gw, 1)
    with pytest.raises(ValueError, match="conv_weight_direct: operands must be C-contiguous"):
        direct(geom, x, gy.astype(np.float16), xp, gp, partial, gw, 1)
    with pytest.raises(ValueError, match="conv_weight_direct: gw or partial"):
        direct(geom, x, gy, xp, gp, partial[:gw.size * min(x_shape[0], 8) - 1], gw, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk_bytes, min_chunk", [(512 * 1024, 256), (1, 100)])
def test_small_weight_gradient_in_runs_of_positions(monkeypatch, dtype, chunk_bytes,
                                                     min_chunk):
    """A small weight gradient over many positions sums 8 runs of positions
    (a thread's each, several chunks a run with the small chunks), bit-identical
    at every thread count."""
    from fastcnn._functional import conv_grad
    monkeypatch.setattr(conv_grad, "_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(conv_grad, "_MIN_CHUNK", min_chunk)
    x = rng.standard_normal((3, 6, 40, 37)).astype(dtype)
    w_shape = (8, 3, 5, 3)
    gy = rng.standard_normal((3, 8, 20, 37)).astype(dtype)
    args = dict(stride=(2, 1), padding=(2, 1), groups=2)
    assert 3 * 20 * 37 >= conv_grad._PARTS * min_chunk
    assert np.prod(w_shape) <= conv_grad._PARTS_MAX_WEIGHTS
    want = _weight_grad_definition(x.astype(np.float64), gy.astype(np.float64), w_shape,
                                   args["stride"], args["padding"], 2)
    got = run_threads(lambda: G.conv2d_weight(x, w_shape, gy, **args))
    assert all(np.array_equal(got[0], r) for r in got)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(got[0], want, rtol=tol, atol=tol * np.abs(want).max())
    torch_gw = torch.nn.grad.conv2d_weight(torch.tensor(x), w_shape, torch.tensor(gy),
                                           **args).numpy()
    np.testing.assert_allclose(got[0], torch_gw, rtol=tol, atol=tol * np.abs(want).max())


def _winograd_geom(x_shape, w_shape, padding, gy):
    from fastcnn._functional.conv_grad import _Geometry
    return _Geometry("test", x_shape, w_shape, 1, padding, 1, 1, gy).kernel_geom(*x_shape[:2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# chunks of one tile row, of 7 tiles, of one 3x5-tile image (the first shape:
# two parts, fewer than 3 threads), and the default
@pytest.mark.parametrize("chunk_tiles", [1, 7, 15, fastcnn._kernels._grad.WINOGRAD_WEIGHT_CHUNK_TILES])
@pytest.mark.parametrize("x_shape, cout, padding", [
    ((2, 9, 11, 17), 13, 1),          # odd channels, outputs not whole tiles, non-square
    ((1, 3, 5, 7), 2, 0),             # one image, one tile row, tiles cut on both axes
    ((3, 5, 9, 9), 7, 2),             # padding past the kernel's reach: zero-gradient edges
    ((2, 17, 13, 6), 16, (1, 2))])    # different padding per axis
def test_winograd_weight_gradient_matches_definition(dtype, chunk_tiles, x_shape, cout,
                                                     padding):
    """The Winograd weight gradient (any chunking: one tile row, several
    images, all of them) against the definition, within a bound on the sum
    of |products|; bit-identical at every thread count, whether the threads
    take whole parts or share each chunk."""
    pads = (padding,) * 2 if isinstance(padding, int) else padding
    x = rng.standard_normal(x_shape)
    w_shape = (cout, x_shape[1], 3, 3)
    gy = rng.standard_normal((x_shape[0], cout, x_shape[2] + 2 * pads[0] - 2,
                              x_shape[3] + 2 * pads[1] - 2))
    geom = _winograd_geom(x_shape, w_shape, padding, gy)
    k = fastcnn._kernels._grad

    def run():
        threads = fastcnn.get_num_threads()
        gw = np.zeros(w_shape, dtype)
        work = np.empty(k.winograd_weight_workspace(geom, cout, chunk_tiles, threads), dtype)
        k.conv_weight_winograd(geom, x.astype(dtype), gy.astype(dtype), gw, work,
                               chunk_tiles, threads)
        return gw
    got = run_threads(run)
    assert all(np.array_equal(got[0], r) for r in got)
    want = _weight_grad_definition(x, gy, w_shape, (1, 1), pads, 1)
    bound = _weight_grad_definition(np.abs(x), np.abs(gy), w_shape, (1, 1), pads, 1)
    assert np.all(np.abs(got[0] - want) <= 64 * np.finfo(dtype).eps * bound)


def test_winograd_weight_gradient_where_it_applies():
    """Only 2-D 3x3 stride-1 undilated layers with enough channels, tiles and
    outputs a side take it; conv2d_weight then matches torch, and a non-finite
    input (which a transform would smear over its tile) takes the im2col path."""
    k = fastcnn._kernels._grad
    x = rng.standard_normal((4, 16, 20, 20))
    gy = rng.standard_normal((4, 24, 20, 20))
    assert k.winograd_weight_pays(_winograd_geom(x.shape, (24, 16, 3, 3), 1, gy), 24, 8)
    assert not k.winograd_weight_pays(_winograd_geom(x.shape, (24, 16, 5, 5), 2, gy), 24, 8)
    assert not k.winograd_weight_pays(_winograd_geom(x[:, :4].shape, (24, 4, 3, 3), 1, gy),
                                      24, 8)                         # too few channels
    assert not k.winograd_weight_pays(_winograd_geom(x[:1, :, :4, :4].shape, (24, 16, 3, 3), 1,
                                                     gy[:1, :, :4, :4]), 24, 8)  # one tile
    with pytest.raises(ValueError, match="needs a 2-D 3x3 stride-1"):
        k.conv_weight_winograd(_winograd_geom(x.shape, (24, 16, 5, 5), 2, gy), x, gy,
                               np.zeros((24, 16, 5, 5)), np.zeros(10**6), 16, 1)
    geom = _winograd_geom(x.shape, (24, 16, 3, 3), 1, gy)
    with pytest.raises(ValueError, match="scratch too small"):
        k.conv_weight_winograd(geom, x, gy, np.zeros((24, 16, 3, 3)), np.zeros(10), 16, 1)
    want = torch.nn.grad.conv2d_weight(torch.tensor(x), (24, 16, 3, 3), torch.tensor(gy),
                                       padding=1).numpy()
    np.testing.assert_allclose(G.conv2d_weight(x, (24, 16, 3, 3), gy, padding=1), want,
                               rtol=1e-9, atol=1e-12 * np.abs(want).max())
    x[1, 3, 7, 8] = -np.inf
    with np.errstate(invalid="ignore"):
        want = torch.nn.grad.conv2d_weight(torch.tensor(x), (24, 16, 3, 3), torch.tensor(gy),
                                           padding=1).numpy()
        got = G.conv2d_weight(x, (24, 16, 3, 3), gy, padding=1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert np.isfinite(got[:, :3]).all()          # channels without the Inf stay exact
    x[1, 3, 7, 8] = 0
    gy[2, 5, 0, 19] = np.nan
    want = torch.nn.grad.conv2d_weight(torch.tensor(x), (24, 16, 3, 3), torch.tensor(gy),
                                       padding=1).numpy()
    got = G.conv2d_weight(x, (24, 16, 3, 3), gy, padding=1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isfinite(got[:5]).all()


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=(2, 3), stride=(3, 4)),
                                dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(2, 3), stride=1, dilation=2, ceil_mode=True),
                                dict(kernel_size=3, stride=2, ceil_mode=True)])
def test_max_pool_backward_ties_and_nan_match_pytorch(kw):
    """The gradient goes where PyTorch's indices point: the first maximum of
    a window with ties, the last NaN of a window with NaN."""
    x = rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float64)      # many ties
    x[0, 0, 2, 3] = x[1, 2, 5, 5] = x[1, 2, 5, 6] = np.nan
    m = nn.MaxPool2d(**kw).double()
    y = m(x)
    gy = rng.standard_normal(y.shape)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, **kw).backward(torch.tensor(gy))
    np.testing.assert_array_equal(m.backward(gy), xt.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# rows of 4, 1, 16, 14 and 5 windows: whole 16-byte vectors of them, the last
# ones alone, and both in one row (float32 and float64)
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 2, 2, 2), (3, 1, 5, 33), (2, 2, 6, 29),
                                   (1, 2, 4, 11)])
def test_max_pool_2x2_backward_odd_sizes(dtype, shape):
    """2x2 / 2 pooling's backward (a kernel of its own): odd heights and
    widths leave a last row and column no window covers, whose gradient is
    0; ties, NaN and Inf go where PyTorch's indices point; any thread count."""
    x = rng.integers(-2, 3, shape).astype(dtype)
    x.flat[::7] = np.nan
    x.flat[3::11] = np.inf
    m = nn.MaxPool2d(2)
    y = m(x)
    gy = rng.standard_normal(y.shape).astype(dtype)
    got = run_threads(lambda: fastcnn.grad.max_pool_grad_from_output(gy, x, y, 2))
    assert all(np.array_equal(got[0], g) for g in got)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 2).backward(torch.tensor(gy))
    np.testing.assert_array_equal(got[0], xt.grad.numpy())


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(2, 3), stride=1, padding=(0, 1)),
                                dict(kernel_size=(1, 4), stride=(1, 3)),
                                dict(kernel_size=5, stride=3, padding=2),
                                dict(kernel_size=(3, 4), stride=2, padding=(1, 2))])
def test_max_pool_backward_long_rows(kw):
    """Overlapping windows on rows of more than one block of outputs (the
    search runs the windows inside the columns 64 at a time; strides 1, 2
    and 3 take three loops; padding wider than the stride included): ties,
    NaN and the edge windows as PyTorch's indices say, at any thread count."""
    x = rng.integers(0, 3, (2, 2, 5, 301)).astype(np.float32)
    x[0, 1, 2, 100:103] = np.nan
    x[1, 0, 4, 0] = x[1, 0, 4, 300] = np.nan
    y = F.max_pool2d(x, **kw)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    got = run_threads(lambda: fastcnn.grad.max_pool_grad_from_output(gy, x, y, **kw))
    assert all(np.array_equal(got[0], g) for g in got)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, **kw).backward(torch.tensor(gy))
    np.testing.assert_array_equal(got[0], xt.grad.numpy())



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_backward_planes_beyond_the_local_buffer(dtype):
    """A thread sums each plane in a buffer of its own up to 256 KiB and into
    the gradient itself beyond (a 200 x 200 plane: 160 KiB in float32, 320
    KiB in float64): both as PyTorch's indices say, at any thread count."""
    x = rng.integers(0, 4, (3, 2, 200, 200)).astype(dtype)
    x[1, 1, 50, 60:63] = np.nan
    y = F.max_pool2d(x, 3, 2, 1)
    gy = rng.standard_normal(y.shape).astype(dtype)
    got = run_threads(lambda: fastcnn.grad.max_pool_grad_from_output(gy, x, y, 3, 2, 1))
    assert all(np.array_equal(got[0], g) for g in got)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 3, 2, 1).backward(torch.tensor(gy))
    np.testing.assert_array_equal(got[0], xt.grad.numpy())

BAD_BACKWARD_CALLS = [
    lambda: G.conv2d_input((1, 2, 5), np.ones((3, 2, 3, 3)), np.ones((1, 3, 3, 3))),
    lambda: G.conv2d_input((1, 4, 5, 5), np.ones((3, 2, 3, 3)), np.ones((1, 3, 3, 3))),
    lambda: G.conv2d_input((1, 2, 5, 5), np.ones((3, 2, 3, 3), np.float32), np.ones((1, 3, 3, 3))),
    lambda: G.conv2d_weight(np.ones((1, 2, 5, 5)), (3, 2, 3, 3), np.ones((1, 3, 2, 2))),
    lambda: G.conv2d_weight(np.ones((1, 2, 5, 5)), (3, 2, 3, 3), np.ones((1, 3, 3, 3)), stride=0),
    lambda: G.conv2d_weight(np.ones((1, 2, 5, 5), np.int64), (3, 2, 3, 3), np.ones((1, 3, 3, 3))),
    lambda: G.conv2d_weight(np.ones((1, 2, 5, 5)), (3, 2, 3, 3), np.ones((1, 3, 3, 3)), groups=4),
    lambda: G.linear_grad(np.ones((2, 3)), np.ones((4, 3)), np.ones((2, 5))),
    lambda: G.activation_grad("nope", np.ones(3), np.ones(3)),
    lambda: G.activation_grad("silu", np.ones(3)),
    lambda: G.activation_grad("silu", np.ones(3), np.ones(4)),
    lambda: G.softmax_grad(np.ones((2, 3)), np.ones((2, 4)), 1),
    lambda: G.softmax_grad(np.ones((2, 3)), np.ones((2, 3)), 5),
    lambda: G.batch_norm_grad(np.ones((2, 3, 4)), np.ones((2, 3, 5))),
    lambda: G.layer_norm_grad(np.ones((2, 3)), np.ones((2, 4)), 3),
    lambda: G.max_pool_grad(np.ones((1, 2, 2, 2)), np.zeros((1, 2, 2, 3), np.int64),
                            (1, 2, 4, 4), 2),
    lambda: G.max_pool_grad_from_output(np.ones((1, 2, 2, 2)), np.ones((1, 2, 4, 4)),
                                        np.ones((1, 2, 3, 2)), 2),
    lambda: G.avg_pool_grad(np.ones((1, 2, 2, 2)), (1, 3, 4, 4), 2),
    lambda: F.cross_entropy_grad(np.ones((2, 3)), np.array([0.5, 1.0])),
    lambda: F.cross_entropy(np.ones((2, 3)), np.array([0, 1]), weight=np.ones(4)),
    lambda: F.cross_entropy(np.ones((2, 3)), np.array([0, 1]), label_smoothing=2.0),
    lambda: F.nll_loss(np.ones((2, 3)), np.array([[0, 1]])),
    lambda: F.mse_loss_grad(np.ones((2, 3)), np.ones((4, 3))),
    lambda: F.mse_loss(np.ones((2, 3)), np.ones((2, 3)), reduction="avg"),
    lambda: F.cross_entropy_grad(np.ones((2, 3)), np.array([0, 1]), grad_output=np.ones(2)),
    lambda: optim.SGD(nn.Linear(2, 2).parameters(), lr=-1.0),
    lambda: optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, nesterov=True),
    lambda: optim.Adam(nn.Linear(2, 2).parameters(), betas=(1.0, 0.9)),
    lambda: optim.SGD([], lr=0.1),
    lambda: optim.lr_scheduler.StepLR(optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), 0),
    lambda: fastcnn.set_grad_enabled("yes"),
]


@pytest.mark.parametrize("call", BAD_BACKWARD_CALLS, ids=[str(i) for i in
                                                          range(len(BAD_BACKWARD_CALLS))])
def test_bad_backward_input_is_a_clear_error(call):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert len(str(info.value)) > 10


def test_model_backward_bad_gradients():
    m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU())
    m(np.ones((1, 2, 5, 5), np.float32))
    with pytest.raises(TypeError, match="float"):
        m.backward(np.ones((1, 3, 3, 3), np.int64))
    with pytest.raises(ValueError, match="expected 1 gradient"):
        m.backward((np.ones((1, 3, 3, 3)), np.ones(2)))
    conv = nn.Conv2d(2, 3, 3)
    conv(np.ones((1, 2, 5, 5), np.float32))
    g = conv.backward(np.full((1, 3, 3, 3), np.nan, np.float32))    # NaN flows, no crash
    assert np.isnan(conv.weight.grad).all() and np.isnan(g).all() and g.shape == (1, 2, 5, 5)


def test_unsupported_op_backward_names_it():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return F.local_response_norm(self.conv(x), 2)
    m = Net()
    m(np.ones((1, 1, 5, 5), np.float32))
    with pytest.raises(NotImplementedError, match="local_response_norm"):
        m.backward(np.ones((1, 1, 3, 3), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_grads_and_channel_major_copies(dtype):
    """The backward's helpers on every thread: two gradients of one tensor
    summed (NumPy's broadcasting sum where shapes differ), and the (images,
    channels, inner) -> (channels, images, inner) copy; bad operands are
    refused before the kernels run."""
    from fastcnn import _kernels
    from fastcnn._functional.activation_grad import sum_grads
    a = rng.standard_normal((3, 5, 7, 40001)).astype(dtype)     # several chunks
    b = rng.standard_normal(a.shape).astype(dtype)
    got = run_threads(lambda: sum_grads(a, b))
    assert all(np.array_equal(g, a + b) for g in got)
    np.testing.assert_array_equal(sum_grads(a, b[:1]), a + b[:1])
    rows = np.empty((5, 3, 7 * 40001), dtype)
    for threads in (1, 2, 3):
        rows[:] = 0
        _kernels._linear.channel_major(a, rows, 3, 5, 7 * 40001, threads)
        np.testing.assert_array_equal(rows, a.reshape(3, 5, -1).transpose(1, 0, 2))
    with pytest.raises(ValueError, match="channel_major"):
        _kernels._linear.channel_major(a, rows[:2], 3, 5, 7 * 40001, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _kernels._act.add(a, b, np.empty(a.shape[::-1], dtype).T, 1)
    # fastcnn.set_flush_denormal reaches the sum on every thread
    tiny = np.full(a.shape, np.finfo(dtype).smallest_subnormal, dtype)
    if fastcnn.set_flush_denormal(True):
        try:
            assert all(not g.any() for g in run_threads(lambda: sum_grads(tiny, tiny)))
        finally:
            fastcnn.set_flush_denormal(False)
    assert all(g.all() for g in run_threads(lambda: sum_grads(tiny, tiny)))
