"""ONNX import: every operator against onnx's reference implementation on
small random graphs; exported PyTorch networks against PyTorch; errors."""
import io

import numpy as np
import pytest

import fastcnn
from conftest import requires_torch, torch

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import fastcnn.onnx as fonnx  # noqa: E402

NEWEST = onnx.defs.onnx_opset_version()
R = np.random.default_rng(7)


def f32(*shape, low=None):
    a = R.standard_normal(shape).astype(np.float32)
    return np.abs(a) + low if low is not None else a


def _vi(name, array):
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                         array.shape)


def _model(nodes, inputs, inits, outputs, opset):
    graph = helper.make_graph(nodes, "test", [_vi(n, a) for n, a in inputs.items()], outputs,
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check(nodes, inputs, inits=None, opset=17, rtol=1e-5, atol=1e-5, outputs=None,
          expected=None):
    """Run the graph on the reference evaluator (or take `expected`, for the
    few cases where onnx's reference departs from the operator's definition)
    and on fastcnn; compare."""
    nodes = nodes if isinstance(nodes, list) else [nodes]
    inits = inits or {}
    outputs = outputs or [o for o in nodes[-1].output if o]
    if expected is None:
        untyped = _model(nodes, inputs, inits,
                         [helper.make_empty_tensor_value_info(o) for o in outputs], opset)
        expected = ReferenceEvaluator(untyped).run(None, inputs)
    typed = _model(nodes, inputs, inits, [_vi(o, np.asarray(e)) for o, e in zip(outputs, expected)],
                   opset)
    model = fonnx.load(typed.SerializeToString())
    for _ in range(2):                      # the second run reuses the plan
        got = model.run(None, inputs)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            e = np.asarray(e)
            assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, e.shape, g.dtype, e.dtype)
            if e.dtype.kind == "f":
                np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
            else:
                np.testing.assert_array_equal(g, e)
    return model


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


# ---------------------------------------------------------------- convolution

CONV_CASES = [
    dict(x=(1, 3, 9, 7), w=(5, 3, 3, 3), attrs=dict(pads=[1, 1, 1, 1])),
    dict(x=(2, 4, 8, 8), w=(6, 2, 3, 3), attrs=dict(group=2, strides=[2, 2]), bias=True),
    dict(x=(1, 3, 10, 9), w=(4, 3, 3, 2), attrs=dict(pads=[0, 1, 2, 0], dilations=[2, 1])),
    dict(x=(1, 5, 9, 8), w=(5, 1, 3, 3), attrs=dict(group=5, auto_pad="SAME_UPPER",
                                                    strides=[2, 2]), bias=True),
    dict(x=(1, 3, 8, 9), w=(4, 3, 4, 4), attrs=dict(auto_pad="SAME_LOWER")),
    dict(x=(1, 3, 8, 9), w=(4, 3, 3, 3), attrs=dict(auto_pad="VALID", strides=[3, 4])),
    dict(x=(2, 3, 11), w=(4, 3, 3), attrs=dict(pads=[2, 1], strides=[2]), bias=True),
    dict(x=(1, 2, 5, 6, 4), w=(3, 2, 3, 2, 1), attrs=dict(pads=[1, 0, 0, 1, 1, 0])),
    dict(x=(1, 3, 7, 7), w=(8, 3, 1, 1), attrs=dict(strides=[2, 2]), bias=True),
    dict(x=(1, 3, 5, 5), w=(2, 3, 2, 2), attrs=dict(kernel_shape=[2, 2], strides=[5, 5])),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c['x']}-{c['w']}-{c['attrs']}")
def test_conv(case):
    inputs = {"x": f32(*case["x"])}
    inits = {"w": f32(*case["w"])}
    names = ["x", "w"]
    if case.get("bias"):
        inits["b"] = f32(case["w"][0])
        names.append("b")
    check(node("Conv", names, **case["attrs"]), inputs, inits)


def test_conv_weight_as_graph_input():
    check(node("Conv", ["x", "w"], pads=[1, 1, 1, 1]), {"x": f32(1, 3, 6, 6), "w": f32(4, 3, 3, 3)})


def test_conv_batchnorm_relu_folded():
    c = 6
    inits = {"w": f32(c, 3, 3, 3), "b": f32(c), "g": f32(c), "beta": f32(c), "m": f32(c),
             "v": f32(c, low=0.5)}
    nodes = [node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["n"], epsilon=1e-3),
             node("Relu", ["n"])]
    model = check(nodes, {"x": f32(2, 3, 8, 8)}, inits, rtol=1e-4, atol=1e-5)
    assert [n.op_type for n in model.nodes] == ["Conv", "Relu"]
    plan = model._plan_for([np.zeros((2, 3, 8, 8), np.float32)])
    assert [n.op for n in plan.nodes] == ["conv"]          # relu fused into the conv


def test_batchnorm_with_two_readers_not_folded():
    c = 4
    inits = {"w": f32(c, 3, 1, 1), "g": f32(c), "beta": f32(c), "m": f32(c), "v": f32(c, low=0.5)}
    nodes = [node("Conv", ["x", "w"], ["c"]),
             node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["n"]),
             node("Add", ["n", "c"])]
    model = check(nodes, {"x": f32(1, 3, 5, 5)}, inits)
    assert "BatchNormalization" in [n.op_type for n in model.nodes]


def test_sigmoid_mul_becomes_silu():
    nodes = [node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"])]
    model = check(nodes, {"x": f32(2, 3, 4, 5)})
    assert [n.op_type for n in model.nodes] == ["FastcnnSiLU"]


# ---------------------------------------------------------------- pooling

POOL_CASES = [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[3, 2], pads=[1, 0, 0, 1], strides=[1, 2])),
    ("MaxPool", dict(kernel_shape=[2, 2], dilations=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[0, 1, 2, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[0, 1, 2, 1], count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], auto_pad="SAME_LOWER")),
    ("LpPool", dict(kernel_shape=[2, 2], strides=[2, 2], p=3)),
    ("LpPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
]


@pytest.mark.parametrize("op,attrs", POOL_CASES, ids=lambda v: str(v))
def test_pool_2d(op, attrs):
    check(node(op, ["x"], **attrs), {"x": f32(2, 3, 9, 8)}, opset=18)


def test_pool_1d_3d():
    check(node("MaxPool", ["x"], kernel_shape=[3], strides=[2], pads=[1, 1]), {"x": f32(1, 2, 11)})
    check(node("AveragePool", ["x"], kernel_shape=[2, 2, 2], strides=[2, 1, 2]),
          {"x": f32(1, 2, 5, 4, 6)})


def test_maxpool_indices():
    check(node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2]),
          {"x": f32(2, 3, 6, 5)})
    check(node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
          {"x": f32(1, 2, 7, 7)})


@pytest.mark.parametrize("op,attrs", [("GlobalAveragePool", {}), ("GlobalMaxPool", {}),
                                      ("GlobalLpPool", {"p": 3}), ("GlobalLpPool", {})])
@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (1, 3, 7), (1, 2, 3, 2, 4)])
def test_global_pool(op, attrs, shape):
    x = f32(*shape)
    if op != "GlobalLpPool" and len(shape) == 4:
        check(node(op, ["x"], **attrs), {"x": x})
        return
    # onnx's reference has no GlobalLpPool and reduces the wrong axes of
    # GlobalMaxPool outside 2-D: NumPy, from the operator's definition
    axes = tuple(range(2, x.ndim))
    p = attrs.get("p", 2)
    expected = {"GlobalAveragePool": x.mean(axes, keepdims=True),
                "GlobalMaxPool": x.max(axes, keepdims=True),
                "GlobalLpPool": (np.abs(x) ** p).sum(axes, keepdims=True) ** (1 / p)}[op]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, expected.shape)
    model = fonnx.load(_model([node(op, ["x"], **attrs)], {"x": x}, {}, [y], 17))
    np.testing.assert_allclose(model(x), expected, rtol=1e-5)


def _plan_ops(model, x):
    model(x)
    return [n.op for n in model._plan_for([x]).nodes]


@pytest.mark.parametrize("op,attrs,plan_op", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), "max_pool2d"),
    ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]), "avg_pool2d"),
    ("MaxPool", dict(kernel_shape=[3], strides=[2], pads=[1, 1]), "max_pool1d"),
    ("GlobalAveragePool", {}, "adaptive_avg_pool2d"),
    ("GlobalMaxPool", {}, "adaptive_max_pool2d"),
    ("MaxPool", dict(kernel_shape=[3, 2], pads=[1, 0, 0, 1]), "max_pool"),   # asymmetric
])
def test_pooling_runs_as_the_functional_op(op, attrs, plan_op):
    # symmetric pooling is the functional op itself, which plans bind to a
    # pooling step (as in a compiled nn model) instead of a Python call
    nd = len(attrs.get("kernel_shape", [0, 0] if plan_op.endswith("2d") else [0, 0, 0]))
    x = f32(1, 3, *(7, 6, 5)[:nd])
    model = check(node(op, ["x"], **attrs), {"x": x})
    assert _plan_ops(model, x) == [plan_op]


def test_global_pool_rank_error():
    x = f32(1, 2, 2, 2, 2, 2)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 2, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="GlobalAveragePool.*1-3 spatial dimensions"):
        fonnx.load(_model([node("GlobalAveragePool", ["x"])], {"x": x}, {}, [y], 17))(x)


def test_pool_storage_order_rejected():
    with pytest.raises(fonnx.UnsupportedOperatorError, match="storage_order"):
        check(node("MaxPool", ["x"], kernel_shape=[2, 2], storage_order=1), {"x": f32(1, 1, 4, 4)})


# ---------------------------------------------------------------- normalization

def test_batch_norm():
    c = 5
    params = {"g": f32(c), "b": f32(c), "m": f32(c), "v": f32(c, low=0.1)}
    for shape in ((2, c, 4, 3), (3, c), (1, c, 3, 2, 2)):
        x = f32(*shape)
        bn = node("BatchNormalization", ["x", "g", "b", "m", "v"], epsilon=1e-4)
        for opset in (15, NEWEST):
            check(bn, {"x": x}, params, opset=opset, rtol=1e-4)
        # opsets 7 to 14: inference when only Y is asked for (onnx's reference
        # runs training statistics there): NumPy
        bshape = (-1,) + (1,) * (x.ndim - 2)
        p = {k: v.reshape(bshape) for k, v in params.items()}
        expected = (p["g"] * (x - p["m"]) / np.sqrt(p["v"] + 1e-4) + p["b"]).astype(np.float32)
        for opset in (7, 9):
            check(bn, {"x": x}, params, opset=opset, rtol=1e-4, expected=[expected])


def test_instance_norm():
    check(node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-3), {"x": f32(2, 3, 5, 4)},
          {"s": f32(3), "b": f32(3)}, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_layer_norm(axis):
    x = f32(2, 3, 4, 5)
    shape = x.shape[axis:]
    check(node("LayerNormalization", ["x", "s", "b"], axis=axis), {"x": x},
          {"s": f32(*shape), "b": f32(*shape)}, rtol=1e-4, atol=1e-4)
    check(node("LayerNormalization", ["x", "s"], axis=axis, epsilon=1e-2), {"x": x},
          {"s": f32(*shape)}, rtol=1e-4, atol=1e-4)


def test_group_norm():
    x = f32(2, 6, 4, 3)
    check(node("GroupNormalization", ["x", "s", "b"], num_groups=3), {"x": x},
          {"s": f32(3), "b": f32(3)}, opset=18, rtol=1e-4, atol=1e-4)
    if NEWEST >= 21:
        check(node("GroupNormalization", ["x", "s", "b"], num_groups=2, epsilon=1e-3), {"x": x},
              {"s": f32(6), "b": f32(6)}, opset=21, rtol=1e-4, atol=1e-4)


def _group_norm_graph(groups=3, unit=1.0, swap=False, shared_mul=False):
    """GroupNorm as exporters write it before opset 18 (Reshape, unit-scale
    InstanceNormalization, Reshape back, per-channel Mul and Add)."""
    c = 6
    mul_in = ["w", "r2"] if swap else ["r2", "w"]
    nodes = [node("Reshape", ["x", "g"], ["r1"]),
             node("InstanceNormalization", ["r1", "one", "zero"], ["n"], epsilon=1e-3),
             node("Shape", ["x"], ["s"]), node("Reshape", ["n", "s"], ["r2"]),
             node("Mul", mul_in, ["m"]), node("Add", ["bias", "m"] if swap else ["m", "bias"])]
    outputs = ["y", "m"] if shared_mul else None
    inits = {"g": np.array([0, groups, -1], np.int64),
             "one": np.full(groups, unit, np.float32), "zero": np.zeros(groups, np.float32),
             "w": f32(c, 1, 1), "bias": f32(c, 1, 1)}
    return nodes, inits, outputs


@pytest.mark.parametrize("swap", [False, True])
def test_group_norm_pattern_becomes_one_node(swap):
    nodes, inits, _ = _group_norm_graph(swap=swap)
    model = check(nodes, {"x": f32(2, 6, 4, 5)}, inits, rtol=1e-4, atol=1e-4)
    assert [n.op_type for n in model.nodes] == ["GroupNormalization"]
    assert _plan_ops(model, f32(2, 6, 4, 5)) == ["group_norm"]


@pytest.mark.parametrize("kind", ["unit", "shared_mul"])
def test_group_norm_pattern_kept_when_it_does_not_fit(kind):
    # a scale that is not 1, or an intermediate another node reads, keeps the nodes
    nodes, inits, outputs = _group_norm_graph(unit=2.0 if kind == "unit" else 1.0,
                                              shared_mul=kind == "shared_mul")
    model = check(nodes, {"x": f32(2, 6, 4, 5)}, inits, rtol=1e-4, atol=1e-4, outputs=outputs)
    assert "GroupNormalization" not in [n.op_type for n in model.nodes]


def test_exported_group_norm_net_plans_like_the_model():
    from fastcnn import models
    from fastcnn.onnx import export
    fastcnn.manual_seed(0)
    net = models.groupnorm_cnn().eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    buf = io.BytesIO()
    export(net, x.shape, buf)
    model = fonnx.load(buf.getvalue())
    np.testing.assert_allclose(model(x), net(x), rtol=1e-4, atol=1e-5)
    ops = _plan_ops(model, x)
    assert ops.count("group_norm") == ops.count("conv") and "instance_norm" not in ops


@pytest.mark.parametrize("size", [3, 4, 5])
def test_lrn(size):
    # onnx's reference LRN loops over the batch instead of the channels: the
    # definition in NumPy instead (window c - floor((size-1)/2) .. c + ceil((size-1)/2))
    x = f32(2, 7, 3, 4)
    sq = x.astype(np.float64) ** 2
    lo, hi = (size - 1) // 2, size // 2
    total = np.stack([sq[:, max(0, c - lo):c + hi + 1].sum(1) for c in range(7)], axis=1)
    expected = (x / (1.5 + 1e-2 / size * total) ** 0.7).astype(np.float32)
    check(node("LRN", ["x"], size=size, alpha=1e-2, beta=0.7, bias=1.5), {"x": x},
          expected=[expected], rtol=1e-5)


# ---------------------------------------------------------------- activations

ACTIVATIONS = [
    ("Relu", {}, 14), ("LeakyRelu", {"alpha": 0.2}, 16), ("Sigmoid", {}, 13), ("Tanh", {}, 13),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 6), ("HardSwish", {}, 14),
    ("Elu", {"alpha": 0.7}, 6), ("Selu", {}, 6), ("Selu", {"alpha": 1.5, "gamma": 2.0}, 6),
    ("Softplus", {}, 1), ("Mish", {}, 18), ("Erf", {}, 13), ("Sqrt", {}, 13), ("Exp", {}, 13),
    ("Log", {}, 13), ("Neg", {}, 13), ("Abs", {}, 13), ("Reciprocal", {}, 13),
]


@pytest.mark.parametrize("op,attrs,since", ACTIVATIONS, ids=lambda v: str(v))
def test_unary(op, attrs, since):
    x = f32(2, 3, 4, 5) * 3
    if op in ("Sqrt", "Log"):
        x = np.abs(x) + 0.1
    if op == "Reciprocal":
        x = np.where(np.abs(x) < 0.1, 1.0, x).astype(np.float32)
    check(node(op, ["x"], **attrs), {"x": x}, opset=max(since, 17), rtol=1e-5, atol=1e-6)


def test_gelu():
    if NEWEST < 20:
        pytest.skip("Gelu needs opset 20")
    for approx in ("none", "tanh"):
        check(node("Gelu", ["x"], approximate=approx), {"x": f32(3, 4, 5) * 3}, opset=20,
              rtol=1e-5, atol=1e-6)


def test_prelu():
    check(node("PRelu", ["x", "s"]), {"x": f32(2, 3, 4, 4)}, {"s": f32(3, 1, 1)})
    check(node("PRelu", ["x", "s"]), {"x": f32(2, 3, 4, 4)}, {"s": f32(1)})


def test_clip():
    x = f32(2, 3, 4) * 5
    check(node("Clip", ["x"], min=-1.0, max=2.0), {"x": x}, opset=7)
    check(node("Clip", ["x", "lo", "hi"]), {"x": x}, {"lo": np.float32(0), "hi": np.float32(6)}, opset=13)
    check(node("Clip", ["x", "lo"]), {"x": x}, {"lo": np.float32(0)}, opset=13)
    check(node("Clip", ["x", "", "hi"]), {"x": x}, {"hi": np.float32(0.5)}, opset=13)
    check(node("Clip", ["x"]), {"x": x}, opset=13)
    check(node("Clip", ["x", "lo", "hi"]), {"x": x, "lo": np.array(-0.5, np.float32),
                                           "hi": np.array(1.0, np.float32)}, opset=13)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax(op):
    x = f32(2, 3, 4, 5) * 3
    for axis in (-1, 1, 2):
        check(node(op, ["x"], axis=axis), {"x": x}, opset=13)
    # before opset 13 the input is coerced to 2-D at axis (onnx's reference
    # ignores that): NumPy
    for axis in (-1, 1, 2, None):
        rows = x.reshape(int(np.prod(x.shape[:(1 if axis is None else axis % 4)])), -1)
        e = np.exp(rows - rows.max(1, keepdims=True))
        e = e / e.sum(1, keepdims=True)
        e = (e if op == "Softmax" else np.log(e)).reshape(x.shape).astype(np.float32)
        attrs = {} if axis is None else {"axis": axis}
        check(node(op, ["x"], **attrs), {"x": x}, opset=11, expected=[e])


# ---------------------------------------------------------------- linear algebra

def test_gemm():
    a, w, c = f32(4, 6), f32(5, 6), f32(5)
    check(node("Gemm", ["a", "w", "c"], transB=1), {"a": a}, {"w": w, "c": c})
    check(node("Gemm", ["a", "w"], transB=1), {"a": a}, {"w": w})
    check(node("Gemm", ["a", "w", "c"]), {"a": a}, {"w": w.T.copy(), "c": c})
    check(node("Gemm", ["a", "w", "c"], transA=1, alpha=0.5, beta=2.0), {"a": a.T.copy()},
          {"w": w.T.copy(), "c": f32(4, 5)})
    check(node("Gemm", ["a", "w", "c"], transB=1), {"a": a, "w": w}, {"c": f32(1, 5)})


def test_matmul():
    check(node("MatMul", ["a", "w"]), {"a": f32(2, 3, 6)}, {"w": f32(6, 4)})
    check(node("MatMul", ["a", "w"]), {"a": f32(6)}, {"w": f32(6, 4)})
    check(node("MatMul", ["a", "w"]), {"a": f32(2, 3, 6), "w": f32(2, 6, 4)})
    check(node("MatMul", ["a", "w"]), {"a": f32(3, 6), "w": f32(6)})


# ---------------------------------------------------------------- element-wise arithmetic

@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow"])
def test_binary_broadcast(op):
    a = f32(2, 3, 4, 5, low=0.5)
    for b in (f32(2, 3, 4, 5, low=0.5), f32(3, 1, 1, low=0.5), f32(5, low=0.5),
              np.array(1.5, np.float32)):
        check(node(op, ["a", "b"]), {"a": a, "b": b})
        check(node(op, ["b", "a"]), {"a": a}, {"b": b})


def test_integer_div():
    a = np.array([7, -7, 9, -9], np.int64)
    b = np.array([2, 2, -4, -4], np.int64)
    check(node("Div", ["a", "b"]), {"a": a, "b": b})


@pytest.mark.parametrize("op", ["Sum", "Max", "Min"])
def test_variadic(op):
    check(node(op, ["a", "b", "c"]), {"a": f32(2, 3, 4), "b": f32(3, 4)}, {"c": f32(4)})
    check(node(op, ["a"]), {"a": f32(2, 3)})


# ---------------------------------------------------------------- shapes and data movement

def test_flatten_reshape_transpose():
    x = f32(2, 3, 4, 5)
    for axis in (0, 1, 2, -1):
        check(node("Flatten", ["x"], axis=axis), {"x": x})
    check(node("Reshape", ["x", "s"]), {"x": x}, {"s": np.array([2, -1, 5], np.int64)})
    check(node("Reshape", ["x", "s"]), {"x": x}, {"s": np.array([0, 0, 20], np.int64)})
    check(node("Transpose", ["x"], perm=[0, 2, 3, 1]), {"x": x})
    check(node("Transpose", ["x"]), {"x": x})


def test_squeeze_unsqueeze():
    x = f32(2, 1, 4, 1)
    check(node("Squeeze", ["x"], axes=[1]), {"x": x}, opset=11)
    check(node("Squeeze", ["x", "a"]), {"x": x}, {"a": np.array([-1, 1], np.int64)}, opset=13)
    check(node("Squeeze", ["x"]), {"x": x}, opset=13)
    check(node("Unsqueeze", ["x"], axes=[0, 5]), {"x": x}, opset=11)
    check(node("Unsqueeze", ["x", "a"]), {"x": x}, {"a": np.array([-1, 1], np.int64)}, opset=13)


def test_concat_split():
    check(node("Concat", ["a", "b", "c"], axis=1), {"a": f32(2, 3, 4), "b": f32(2, 1, 4)},
          {"c": f32(2, 2, 4)})
    x = f32(2, 6, 4)
    check(node("Split", ["x"], ["p", "q"], axis=1, split=[2, 4]), {"x": x}, opset=11)
    check(node("Split", ["x", "s"], ["p", "q", "r"], axis=1), {"x": x},
          {"s": np.array([1, 2, 3], np.int64)}, opset=13)
    check(node("Split", ["x"], ["p", "q", "r"], axis=-1), {"x": f32(2, 3, 6)}, opset=13)
    if NEWEST >= 18:
        check(node("Split", ["x"], ["p", "q", "r"], axis=1, num_outputs=3), {"x": f32(2, 7, 3)},
              opset=18)


def test_slice():
    x = f32(4, 6, 8)
    ints = lambda *v: np.array(v, np.int64)  # noqa: E731
    check(node("Slice", ["x", "s", "e"]), {"x": x}, {"s": ints(1, 0), "e": ints(3, 4)})
    check(node("Slice", ["x", "s", "e", "a", "t"]), {"x": x},
          {"s": ints(-1, 1), "e": ints(-9, 2**62), "a": ints(2, 0), "t": ints(-2, 2)})
    check(node("Slice", ["x", "s", "e", "a"]), {"x": x},
          {"s": ints(2), "e": ints(-1), "a": ints(-2)})
    check(node("Slice", ["x"], starts=[1], ends=[100], axes=[1]), {"x": x}, opset=9)


def test_gather():
    x = f32(4, 5, 3)
    check(node("Gather", ["x", "i"], axis=1), {"x": x}, {"i": np.array([0, -1, 2], np.int64)})
    check(node("Gather", ["x", "i"]), {"x": x}, {"i": np.array([[1, 0], [3, 3]], np.int64)})
    check(node("Gather", ["x", "i"], axis=2), {"x": x}, {"i": np.array(1, np.int64)})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(mode):
    x = f32(1, 2, 5, 6)
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)
    check(node("Pad", ["x", "p"], mode=mode), {"x": x}, {"p": pads})
    if mode == "constant":
        check(node("Pad", ["x", "p", "v"], mode=mode), {"x": x},
              {"p": pads, "v": np.array(1.5, np.float32)})
        # negative pads crop (onnx's reference rejects them): NumPy
        cropped = np.pad(x[:, :, 1:, :-2], [(0, 0), (0, 0), (0, 1), (2, 0)])
        check(node("Pad", ["x", "p"]), {"x": x},
              {"p": np.array([0, 0, -1, 2, 0, 0, 1, -2], np.int64)}, expected=[cropped])
        check(node("Pad", ["x"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=2.0), {"x": x}, opset=7)
    if NEWEST >= 18:
        check(node("Pad", ["x", "p", "", "a"], mode=mode), {"x": x},
              {"p": np.array([1, 2, 2, 1], np.int64), "a": np.array([2, 3], np.int64)}, opset=18)


def test_identity_dropout_constant():
    x = f32(2, 3)
    check(node("Identity", ["x"]), {"x": x})
    check(node("Dropout", ["x"], ratio=0.5), {"x": x}, opset=10)
    check(node("Dropout", ["x"], ["y", "m"]), {"x": x}, opset=13)
    c = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(f32(3), "c"))
    check([c, node("Add", ["x", "c"])], {"x": x})
    c = helper.make_node("Constant", [], ["c"], value_float=2.5)
    check([c, node("Mul", ["x", "c"])], {"x": x})


def test_shape_arithmetic_is_folded():
    """The usual exported flatten: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    x = f32(2, 3, 4, 5)
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "zero"], ["n"], axis=0),
        node("Unsqueeze", ["n", "ax"], ["n1"]),
        node("Concat", ["n1", "minus1"], ["target"], axis=0),
        node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("ConstantOfShape", ["shp"], ["ones"],
                         value=numpy_helper.from_array(np.array([2.0], np.float32))),
        node("Mul", ["r", "ones"]),
    ]
    inits = {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64), "shp": np.array([2, 60], np.int64)}
    model = check(nodes, {"x": x}, inits)
    plan = model._plan_for([x])
    assert [n.op for n in plan.nodes if not n.view] == ["multiply"]
    check(node("Shape", ["x"], start=1, end=-1), {"x": x}, opset=15)


def test_cast():
    x = f32(3, 4) * 10
    check(node("Cast", ["x"], to=TensorProto.INT64), {"x": x})
    check(node("Cast", ["x"], to=TensorProto.DOUBLE), {"x": x})
    check([node("Cast", ["x"], ["i"], to=TensorProto.INT32), node("Cast", ["i"], to=TensorProto.FLOAT)],
          {"x": x})


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceSum"])
def test_reduce(op):
    x = f32(2, 3, 4, 5)
    for keepdims in (0, 1):
        check(node(op, ["x"], axes=[2, 3], keepdims=keepdims), {"x": x}, opset=11)
        check(node(op, ["x"], keepdims=keepdims), {"x": x}, opset=11)
    check(node(op, ["x", "a"], keepdims=1), {"x": x}, {"a": np.array([-1, 1], np.int64)}, opset=18)
    check(node(op, ["x", "a"], keepdims=0, noop_with_empty_axes=1), {"x": x},
          {"a": np.array([], np.int64)}, opset=18)


RESIZE_CASES = [
    dict(mode="nearest", scales=[1, 1, 2, 2]),
    dict(mode="nearest", scales=[1, 1, 1.5, 0.5], nearest_mode="floor",
         coordinate_transformation_mode="asymmetric"),
    dict(mode="nearest", sizes=[1, 2, 7, 5], nearest_mode="round_prefer_ceil"),
    dict(mode="linear", scales=[1, 1, 2, 2]),
    dict(mode="linear", sizes=[1, 2, 9, 3], coordinate_transformation_mode="align_corners"),
    dict(mode="linear", scales=[1, 1, 2, 3], coordinate_transformation_mode="pytorch_half_pixel"),
    dict(mode="linear", scales=[1, 1, 0.5, 2], coordinate_transformation_mode="asymmetric"),
]


@pytest.mark.parametrize("case", RESIZE_CASES, ids=lambda c: str(c))
def test_resize(case):
    case = dict(case)
    x = f32(1, 2, 4, 6)
    scales, sizes = case.pop("scales", None), case.pop("sizes", None)
    inits = {"roi": np.array([], np.float32)}
    names = ["x", "roi"]
    if scales is not None:
        inits["scales"] = np.array(scales, np.float32)
        names.append("scales")
    else:
        inits["sizes"] = np.array(sizes, np.int64)
        names += ["", "sizes"]
    check(node("Resize", names, **case), {"x": x}, inits, opset=13)


def test_upsample():
    x = f32(1, 2, 3, 4)
    check(node("Upsample", ["x", "s"], mode="nearest"), {"x": x},
          {"s": np.array([1, 1, 2, 3], np.float32)}, opset=9)
    expected = x.repeat(2, axis=2).repeat(2, axis=3)      # opset 7 scales attribute
    check(node("Upsample", ["x"], mode="nearest", scales=[1.0, 1.0, 2.0, 2.0]), {"x": x}, opset=7,
          expected=[expected])
    linear = np.array([[0, 0.5, 1, 1], [1, 1.5, 2, 2]], np.float32).reshape(1, 1, 2, 4)
    check(node("Upsample", ["x"], mode="linear", scales=[1.0, 1.0, 1.0, 2.0]),
          {"x": np.array([[0, 1], [1, 2]], np.float32).reshape(1, 1, 2, 2)}, opset=7,
          expected=[linear])


# ---------------------------------------------------------------- model object and errors

def _small_model(opset=17, batch="N"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])
    g = helper.make_graph([node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"])],
                          "small", [x], [y], [numpy_helper.from_array(f32(4, 3, 3, 3), "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_model_api_and_dynamic_batch(tmp_path):
    proto = _small_model()
    path = tmp_path / "small.onnx"
    onnx.save(proto, str(path))
    ref = ReferenceEvaluator(proto)
    for source in (str(path), path, proto, proto.SerializeToString()):
        model = fonnx.load(source)
        assert model.inputs[0].name == "x" and model.inputs[0].shape == (None, 3, 8, 8)
        assert model.outputs[0].dtype == np.float32
        for n in (1, 3):
            x = f32(n, 3, 8, 8)
            expected = ref.run(None, {"x": x})[0]
            np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(model.run(["y"], {"x": x})[0], expected, rtol=1e-5, atol=1e-5)
    assert "opset 17" in repr(model)


def test_run_errors():
    model = fonnx.load(_small_model(batch=2))
    with pytest.raises(ValueError, match="missing"):
        model.run(None, {})
    with pytest.raises(ValueError, match="unknown"):
        model.run(None, {"x": f32(2, 3, 8, 8), "z": f32(1)})
    with pytest.raises(ValueError, match=r"expected shape \(2, 3, 8, 8\)"):
        model(f32(1, 3, 8, 8))
    with pytest.raises(TypeError, match="dtype float32"):
        model(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="unknown outputs"):
        model.run(["nope"], {"x": f32(2, 3, 8, 8)})
    with pytest.raises(TypeError, match="1 input"):
        model(f32(2, 3, 8, 8), f32(2, 3, 8, 8))


def test_nan_passes_through():
    model = fonnx.load(_small_model(batch=1))
    x = f32(1, 3, 8, 8)
    x[0, 0, 4, 4] = np.nan
    y = model(x)
    assert np.isnan(y[0, :, 3:6, 3:6]).all() and not np.isnan(y[0, :, 0, 0]).any()


def test_unsupported_operators_listed_at_load():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])
    nodes = [node("Relu", ["x"], ["a"], name="ok"), node("Hardmax", ["a"], ["b"], name="hm"),
             node("LpNormalization", ["b"], ["c"], name="lpn"),
             node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], storage_order=1, name="mp")]
    proto = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(fonnx.UnsupportedOperatorError) as info:
        fonnx.load(proto)
    msg = str(info.value)
    assert "3 unsupported" in msg
    for part in ("hm (Hardmax, opset 17)", "lpn (LpNormalization, opset 17)",
                 "mp (MaxPool, opset 17): storage_order"):
        assert part in msg
    assert "ok (Relu" not in msg


def test_other_domain_rejected():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    n = helper.make_node("Custom", ["x"], ["y"], domain="com.example", name="c")
    proto = helper.make_model(helper.make_graph([n], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("com.example", 1)])
    with pytest.raises(fonnx.UnsupportedOperatorError, match="domain 'com.example'"):
        fonnx.load(proto)


def test_old_opset_rejected():
    with pytest.raises(fonnx.UnsupportedOperatorError, match="opset 6"):
        fonnx.load(_small_model(opset=6))


def test_truncated_and_corrupt_files(tmp_path):
    data = _small_model().SerializeToString()
    for bad in (data[: len(data) // 2], data[:7], b"\x00\xff" * 40, b"not an onnx model at all"):
        path = tmp_path / "bad.onnx"
        path.write_bytes(bad)
        with pytest.raises(ValueError, match="not a valid ONNX model|holds no ONNX graph"):
            fonnx.load(str(path))
        with pytest.raises(ValueError):
            fonnx.load(bad)
    with pytest.raises(FileNotFoundError, match="no such file"):
        fonnx.load(str(tmp_path / "missing.onnx"))
    with pytest.raises(TypeError, match="expected a path"):
        fonnx.load(3)


def test_invalid_graph_rejected():
    # Conv weight with the wrong channel count: a clear error, never a crash
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])
    g = helper.make_graph([node("Conv", ["x", "w"])], "g", [x], [y],
                          [numpy_helper.from_array(f32(4, 2, 3, 3), "w")])
    model = fonnx.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(ValueError, match="Conv.*expected input with 2 channels"):
        model(f32(1, 3, 8, 8))


def test_threads_do_not_change_results():
    model = fonnx.load(_small_model(batch=2))
    x = f32(2, 3, 8, 8)
    results = []
    for n in (1, 2, 3):
        with fastcnn.threads(n):
            results.append(model(x))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# ---------------------------------------------------------------- exported PyTorch networks

@requires_torch
@pytest.mark.parametrize("name,batch", [("lenet5", 4), ("resnet18", 1), ("mobilenet_v2", 2),
                                        ("groupnorm_cnn", 3)])
def test_exported_networks_match_torch(name, batch):
    from fastcnn import models
    from fastcnn._bench.torch_nets import torch_twin
    ctor, sample = models.REFERENCE_NETWORKS[name]
    fastcnn.manual_seed(0)
    model = ctor().eval()
    rng = np.random.default_rng(3)
    for key, v in model.state_dict().items():      # non-trivial BatchNorm statistics
        if key.endswith("running_var"):
            v[...] = rng.uniform(0.5, 2.0, v.shape)
        elif key.endswith("running_mean"):
            v[...] = rng.normal(0.0, 0.2, v.shape)
    twin = torch_twin(name, model).eval()
    buf = io.BytesIO()
    shape = (batch,) + sample
    torch.onnx.export(twin, torch.zeros(shape), buf, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    loaded = fonnx.load(buf.getvalue())
    assert loaded.inputs[0].shape == (None,) + sample
    for n in (batch, batch + 1):
        x = rng.standard_normal((n,) + sample).astype(np.float32)
        with torch.no_grad():
            expected = twin(torch.from_numpy(x)).numpy()
        got = loaded.run(["logits"], {"input": x})[0]
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(scale, 1.0))


# ---------------------------------------------------------------- export

def _export_roundtrip(model, shape, batches=(2, 3), rtol=1e-4, atol=1e-5, opset=17):
    """Export; the file must run on onnx's reference and on fastcnn.onnx with
    the model's own outputs, for several batch sizes (the batch stays open)."""
    proto = fonnx.export(model, shape, opset=opset)
    onnx.checker.check_model(proto)
    loaded = fonnx.load(proto.SerializeToString())
    ref = ReferenceEvaluator(proto)
    for n in batches:
        x = f32(n, *shape[1:])
        expected = model(x)
        np.testing.assert_allclose(ref.run(None, {"input": x})[0], expected, rtol=rtol, atol=atol)
        np.testing.assert_allclose(loaded(x), expected, rtol=rtol, atol=atol)
    return proto


class _ManyOps(fastcnn.nn.Module):
    def __init__(self):
        super().__init__()
        nn = fastcnn.nn
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.gn = nn.GroupNorm(2, 8)
        self.pool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.mp = nn.MaxPool2d(2, 1)
        self.ln = nn.LayerNorm(2)
        self.fc = nn.Linear(8 * 2 * 2, 5)
        self.acts = nn.Sequential(nn.ReLU6(), nn.LeakyReLU(0.1), nn.ELU(0.5), nn.Hardswish(),
                                  nn.Hardsigmoid(), nn.GELU(), nn.Tanh(), nn.Mish(), nn.SiLU(),
                                  nn.Hardtanh(-0.5, 0.8), nn.Sigmoid())

    def forward(self, x):
        y = fastcnn.functional.relu(self.bn(self.conv(x)))
        y = self.acts(self.dw(y)) + 0.5 * y
        y = self.gn(self.inorm(y))
        y = self.mp(self.pool(y))                     # (N, 8, 2, 2)
        y = self.ln(y)
        z = self.fc(y.reshape(y.shape[0], -1))
        return fastcnn.functional.log_softmax(z, dim=1)


def test_export_many_ops():
    fastcnn.manual_seed(0)
    model = _ManyOps().eval()
    model.bn.running_var[...] = np.linspace(0.5, 2, 8, dtype=np.float32)
    _export_roundtrip(model, (1, 3, 11, 12))


def test_export_conv1d_conv3d():
    nn = fastcnn.nn
    fastcnn.manual_seed(0)
    m1 = nn.Sequential(nn.Conv1d(2, 4, 3, padding=2, dilation=2), nn.MaxPool1d(2), nn.Flatten(),
                       nn.Linear(4 * 4, 3)).eval()
    _export_roundtrip(m1, (1, 2, 9))
    m3 = nn.Sequential(nn.Conv3d(2, 3, (3, 2, 2), stride=(1, 2, 1)), nn.AdaptiveAvgPool3d(1),
                       nn.Flatten()).eval()
    _export_roundtrip(m3, (1, 2, 5, 6, 4))


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "mobilenet_v2", "groupnorm_cnn"])
def test_export_reference_networks(name):
    from fastcnn import models
    ctor, sample = models.REFERENCE_NETWORKS[name]
    fastcnn.manual_seed(0)
    model = ctor().eval()
    small = sample if name in ("lenet5", "groupnorm_cnn") else (3, 64, 64)
    proto = fonnx.export(model, (1,) + small)
    loaded = fonnx.load(proto.SerializeToString())
    x = f32(2, *small)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    # the file runs as the model's own compiled plan does, step for step and
    # kernel for kernel: what keeps fastcnn.onnx.load as fast as fastcnn.compile
    native, plan = fastcnn.compile(model, x.shape), loaded._plan_for([x])
    steps = lambda p: [(op, shape) for op, _, shape, _ in p.profile(x, repeat=1)]
    assert steps(plan) == steps(native)
    assert list(plan.algorithms.values()) == list(native.algorithms.values())
    names = [i.name for i in proto.graph.initializer]
    for key in model.state_dict():          # initializers are named after the parameters
        if "num_batches" not in key:
            assert any(n == key or n.startswith(key + "_") for n in names), key


def test_export_to_file_and_errors(tmp_path):
    nn = fastcnn.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    path = tmp_path / "m.onnx"
    fonnx.export(model, (1, 3, 8, 8), path, dynamic_batch=False)
    loaded = fonnx.load(path)
    assert loaded.inputs[0].shape == (1, 3, 8, 8)
    x = f32(1, 3, 8, 8)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="opset must be between"):
        fonnx.export(model, (1, 3, 8, 8), opset=9)
    bad = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")).eval()
    with pytest.raises(ValueError, match="padding_mode 'circular'"):
        fonnx.export(bad, (1, 3, 8, 8))
    with pytest.raises(ValueError, match="no ONNX form for op"):
        fonnx.export(nn.Sequential(nn.LocalResponseNorm(3)).eval(), (1, 3, 8, 8))


@requires_torch
def test_torch_export_with_where_softplus_resize_and_open_sizes():
    """What torch.onnx.export writes for F.softplus (Softplus, or Greater +
    Where), torch.where and F.interpolate, with the batch and image size open:
    against ONNX Runtime on several shapes (an empty batch, which ONNX Runtime
    refuses to reshape, by its shape)."""
    ort = pytest.importorskip("onnxruntime")

    class Model(torch.nn.Module):
        def forward(self, x):
            y = torch.nn.functional.softplus(x, beta=2.0, threshold=3.0)
            z = torch.where(x > 0, y, -x)
            z = torch.nn.functional.interpolate(z, scale_factor=2, mode="bilinear",
                                                align_corners=False)
            return torch.argmax(z, dim=1, keepdim=True).float() + z.flatten(2).mean(-1)[..., None, None]

    f = io.BytesIO()
    torch.onnx.export(Model().eval(), (torch.randn(2, 3, 8, 8),), f, opset_version=17,
                      dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    model, session = fonnx.load(f.getvalue()), ort.InferenceSession(f.getvalue())
    rng = np.random.default_rng(0)
    for shape in [(2, 3, 8, 8), (5, 3, 6, 10), (1, 3, 1, 1)]:
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(model(x), session.run(None, {"x": x})[0], rtol=1e-5,
                                   atol=1e-5)
    assert model(np.zeros((0, 3, 4, 4), np.float32)).shape == (0, 3, 8, 8)


@requires_torch
def test_float16_export_runs_in_float32_as_onnx_runtime():
    ort = pytest.importorskip("onnxruntime")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).eval().half()
    f = io.BytesIO()
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8).half(),), f, opset_version=17,
                      dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    with pytest.warns(UserWarning, match="float16 model: fastcnn computes it in float32"):
        loaded = fonnx.load(f.getvalue())
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float16)
    got = loaded(x)
    expected = ort.InferenceSession(f.getvalue()).run(None, {"x": x})[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32),
                               rtol=2e-3, atol=2e-3)
