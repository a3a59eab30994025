"""PyTorch's own OpInfo sample inputs (torch.testing._internal's op_db) for the
functional ops added for the segmentation, detection and generative CNNs:
every sample, in float32 and float64, through fastcnn and through PyTorch."""
import numpy as np
import pytest

import fastcnn.functional as F
from conftest import requires_torch, torch

pytest.importorskip("expecttest", reason="PyTorch's OpInfo database needs expecttest")

OPS = {
    "nn.functional.conv_transpose1d": F.conv_transpose1d,
    "nn.functional.conv_transpose2d": F.conv_transpose2d,
    "nn.functional.conv_transpose3d": F.conv_transpose3d,
    "nn.functional.interpolate": F.interpolate,
    "nn.functional.pad": F.pad,
    "nn.functional.pixel_shuffle": F.pixel_shuffle,
    "nn.functional.pixel_unshuffle": F.pixel_unshuffle,
    "nn.functional.softplus": F.softplus,
    "nn.functional.celu": F.celu,
}


def _numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy(v) for v in value)
    return value


def _op_infos():
    if torch is None:
        return []
    from torch.testing._internal.common_methods_invocations import op_db
    return [op for op in op_db if op.name in OPS]


@requires_torch
@pytest.mark.parametrize("info", _op_infos(),
                         ids=lambda op: f"{op.name.split('.')[-1]}-{op.variant_test_name}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_sample_as_pytorch(info, dtype):
    fn = OPS[info.name]
    samples = list(info.sample_inputs("cpu", getattr(torch, dtype)))
    assert samples
    for k, sample in enumerate(samples):
        args, kwargs = _numpy(sample.args), _numpy(sample.kwargs)
        try:
            with torch.no_grad():
                expected = info.op(sample.input, *sample.args, **sample.kwargs)
        except (RuntimeError, ValueError, NotImplementedError, TypeError, IndexError):
            with pytest.raises((ValueError, TypeError)):
                fn(_numpy(sample.input), *args, **kwargs)
            continue
        got = fn(_numpy(sample.input), *args, **kwargs)
        expected = expected.numpy()
        assert got.shape == expected.shape and got.dtype == expected.dtype, (k, sample)
        tol = 1e-4 if dtype == "float32" else 1e-10
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, err_msg=f"sample {k}: "
                                   f"{sample.input.shape} {sample.args} {sample.kwargs}")
