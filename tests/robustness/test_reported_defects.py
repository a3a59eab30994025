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


# ------------------------------------------------------------ clear errors

@requires_torch
def test_loading_a_pytorch_checkpoint_says_what_it_is(tmp_path):
    path = tmp_path / "lenet.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(ValueError, match="is a PyTorch checkpoint .*torch.load"):
        fastcnn.load(path)


def test_loading_a_zip_that_is_not_an_npz(tmp_path):
    import zipfile
    path = tmp_path / "notes.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="not an .npz of arrays.*'readme.txt'"):
        fastcnn.load(path)


@requires_torch
def test_state_dicts_of_pytorch_parameters_load(rng):
    tm = torch.nn.Conv2d(3, 4, 3)
    m = nn.Conv2d(3, 4, 3)
    m.load_state_dict(dict(tm.named_parameters()))            # Parameters, requires_grad
    np.testing.assert_array_equal(m.weight, tm.weight.detach().numpy())
    m.load_state_dict(tm.state_dict())                         # plain tensors
    np.testing.assert_array_equal(m.bias, tm.bias.detach().numpy())


def test_summary_cli_on_an_onnx_model_with_an_open_batch(tmp_path, capsys):
    pytest.importorskip("onnx")
    from fastcnn import models, onnx as fonnx
    from fastcnn.__main__ import main
    path = tmp_path / "lenet.onnx"
    fonnx.export(models.lenet5(), (1, 3, 32, 32), path)       # batch axis left open
    assert main(["summary", str(path)]) == 0
    assert "Total params" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--input-shape has 3 sizes, the model's input "
                                         "'input' has 4 \\(\\?,3,32,32\\)"):
        main(["summary", str(path), "--input-shape", "1,3,32"])
    with pytest.raises(SystemExit, match="fastcnn summary: Conv2d: expected input of shape"):
        main(["summary", "resnet18", "--input-shape", "3,3"])


def test_summary_prints_the_table_once(capsys):
    from fastcnn import models
    s = fastcnn.summary(models.lenet5(), (1, 3, 32, 32))
    printed = capsys.readouterr().out
    assert "Total params" in printed and "Total params" in str(s)
    assert "Total params" not in repr(s) and repr(s).startswith("<Summary: ")


def test_compile_takes_the_dtype_of_the_weights(rng):
    from fastcnn import models
    m = models.lenet5(dtype=np.float64).eval()
    assert {p.dtype for p in m.parameters()} == {np.dtype(np.float64)}
    x = rng.standard_normal((2, 3, 32, 32))
    plan = fastcnn.compile(m, x.shape)
    assert plan(x).dtype == np.float64
    assert_close(plan(x), m(x), reduction=400)
    m.float()
    assert fastcnn.compile(m, x.shape)(x.astype(np.float32)).dtype == np.float32


def test_module_dtype_conversions():
    bn = nn.BatchNorm2d(3)
    assert bn.double() is bn
    assert bn.weight.dtype == bn.running_var.dtype == np.float64
    assert bn.num_batches_tracked.dtype == np.int64            # integer buffers stay
    bn.to(np.float32)
    assert bn.running_mean.dtype == np.float32
    assert bn.to("cpu") is bn and bn.to(dtype=np.float64).weight.dtype == np.float64
    with pytest.raises(TypeError, match="only floating dtypes"):
        bn.to(np.int32)
    with pytest.raises(ValueError, match="CPU only"):
        bn.to("cuda")


def test_onnx_export_without_onnx_says_what_to_install(monkeypatch):
    from fastcnn import models, onnx as fonnx
    monkeypatch.setitem(sys.modules, "onnx", None)             # import onnx fails
    with pytest.raises(ImportError, match='pip install "fastcnn\\[onnx\\]"'):
        fonnx.export(models.lenet5(), (1, 3, 32, 32))


def test_filter_grid_of_empty_weights_is_a_clear_error(tmp_path):
    pytest.importorskip("PIL")
    from fastcnn import viz
    with pytest.raises(ValueError, match="filter_grid: the weights have no filters"):
        viz.filter_grid(np.zeros((0, 3, 3, 3)), tmp_path / "f.png")


def test_header_compiles_without_warnings_as_c_and_cpp(tmp_path):
    import shutil
    import sysconfig
    src = tmp_path / "use.c"
    src.write_text("#include <fastcnn.h>\nint main(void) { return 0; }\n")
    includes = [f"-I{fastcnn.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
    for compiler, lang in (("gcc", "c"), ("g++", "c++")):
        if shutil.which(compiler) is None:
            continue
        run = subprocess.run([compiler, "-x", lang, "-Wall", "-Wextra", "-Werror",
                              "-fsyntax-only", *includes, str(src)], capture_output=True,
                             text=True)
        assert run.returncode == 0, run.stderr


# ------------------------------------------------------------ PyTorch's refusals

@requires_torch
@pytest.mark.parametrize("call", [
    lambda f, x: f.dropout(x, 0.5, training=float("nan")),
    lambda f, x: f.dropout(x, 0.5, training=1),
    lambda f, x: f.max_pool1d(x[0, 0, :0], 2),               # (0, 10): the channel axis empty
    lambda f, x: f.max_pool2d(x[:, :0], 2),
    lambda f, x: f.adaptive_max_pool2d(x[:, :0], 2),
    lambda f, x: f.avg_pool3d(x[:, :, None, :3], 4, padding=2, ceil_mode=True),
    lambda f, x: f.prelu(x, x[0, :, :1, 0]),                 # a 2-D weight
    lambda f, x: f.group_norm(x[:1, :, 0, 0], 3),            # one value per group
], ids=["dropout-training-nan", "dropout-training-int", "max_pool1d-empty-channels",
        "max_pool2d-empty-channels", "adaptive-empty-channels", "avg_pool3d-smaller-than-kernel",
        "prelu-2d-weight", "group_norm-one-value"])
def test_what_pytorch_refuses_is_refused(call, rng):
    x = rng.standard_normal((2, 3, 4, 10)).astype(np.float32)
    with pytest.raises(Exception):
        call(torch.nn.functional, torch.from_numpy(x))
    with pytest.raises((ValueError, TypeError)):
        call(F, x)


@requires_torch
def test_empty_batches_in_training_norms_follow_pytorch():
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    assert F.batch_norm(np.zeros((0, 3), np.float32), rm, rv, training=True).shape == (0, 3)
    assert (rm == 0).all() and (rv == 1).all()                 # statistics unchanged
    assert F.instance_norm(np.zeros((2, 3, 0), np.float32)).shape == (2, 3, 0)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(np.zeros((1, 3), np.float32), None, None, training=True)
    bn = nn.BatchNorm2d(3).train()
    assert bn(np.zeros((0, 3, 4, 4), np.float32)).shape == (0, 3, 4, 4)
    tbn = torch.nn.BatchNorm2d(3).train()
    tbn(torch.zeros(0, 3, 4, 4))
    assert int(bn.num_batches_tracked) == int(tbn.num_batches_tracked)


def test_unflatten_of_a_scalar_is_a_clear_error():
    with pytest.raises(ValueError, match="unflatten: expected an input with at least one"):
        F.unflatten(np.array(np.inf, np.float32), 0, (0,))
