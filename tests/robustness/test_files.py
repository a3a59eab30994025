"""Hostile files and checkpoints: ONNX models with random corruption,
truncated or damaged .npz checkpoints, state_dicts with wrong dtypes. Each
must load correctly or fail with ValueError/TypeError (or the ONNX
UnsupportedOperatorError, a ValueError), never crash; a model that does load
must run or refuse its input with a clear error."""
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcnn
from fastcnn import nn

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _small_model():
    fastcnn.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).eval()


@pytest.fixture(scope="module")
def onnx_bytes():
    pytest.importorskip("onnx")
    import fastcnn.onnx
    buf = io.BytesIO()
    fastcnn.onnx.export(_small_model(), (1, 3, 8, 8), buf)
    return buf.getvalue()


@settings(max_examples=300, **SETTINGS)
@given(data=st.data())
def test_corrupt_onnx_models(onnx_bytes, data):
    import fastcnn.onnx as fonnx
    raw = bytearray(onnx_bytes)
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice", "zero"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "splice":
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i:i + 16] = bytes(min(16, len(raw) - i))
    try:
        model = fonnx.load(bytes(raw))
    except (ValueError, TypeError):
        return
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    try:
        out = model.run(None, {p.name: x for p in model.inputs})
    except (ValueError, TypeError):
        return
    assert all(isinstance(o, np.ndarray) for o in out)


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_damaged_checkpoints(tmp_path_factory, data):
    model = _small_model()
    path = tmp_path_factory.mktemp("ckpt") / "model.npz"
    fastcnn.save(model.state_dict(), path)
    raw = bytearray(path.read_bytes())
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 6))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
    path.write_bytes(bytes(raw))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    try:
        state = fastcnn.load(path)
        model.load_state_dict(state)
    except (ValueError, TypeError):
        # a failed load leaves the model as it was
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, before[k])
        return
    x = np.zeros((1, 3, 8, 8), np.float32)
    assert model(x).shape == (1, 5)


@pytest.mark.parametrize("bad", [
    lambda v: v.astype(np.complex64),
    lambda v: v.astype(object),
    lambda v: v.astype("U8"),
    lambda v: v.astype(np.float32).reshape(-1)[:1],
    lambda v: "not an array",
    lambda v: None,
])
def test_state_dict_with_wrong_values_is_refused(bad):
    model = _small_model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = model.state_dict()
    state["0.weight"] = bad(state["0.weight"])
    with pytest.raises((ValueError, TypeError), match="0.weight"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_state_dict_of_other_numeric_dtypes_is_converted():
    model = _small_model()
    state = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    assert model.state_dict()["0.weight"].dtype == np.float32


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, w=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="could not be read"):
        fastcnn.load(path)
