"""Export a fastcnn model to ONNX, from its traced op graph.

    fastcnn.onnx.export(model, (1, 3, 224, 224), "model.onnx")

The model is traced once in eval mode; each recorded op becomes ONNX nodes
(default domain, opset 17 unless asked otherwise), parameters and buffers
become initializers named by their state_dict keys. The batch dimension is
left open unless dynamic_batch=False.
"""
import copy
import os

import numpy as np

from fastcnn._functional.conv import conv_padding
from fastcnn._graph import Value, trace
from fastcnn.onnx._model import require_onnx

__all__ = ["export"]

MIN_EXPORT_OPSET = 17        # LayerNormalization needs 17


def export(model, input_shape, f=None, *, opset=MIN_EXPORT_OPSET, input_names=None,
           output_names=None, dynamic_batch=True, dtype=np.float32):
    """Trace `model` on an input of `input_shape` (a tuple, or a list of tuples
    for several inputs) and return the onnx.ModelProto; also write it to `f`
    (a path or a binary file) when given. Raises ValueError listing every op
    that has no ONNX form."""
    onnx = require_onnx()
    from onnx import helper
    if not MIN_EXPORT_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"fastcnn.onnx.export: opset must be between {MIN_EXPORT_OPSET} and "
                         f"{onnx.defs.onnx_opset_version()}, got {opset}")
    shapes = [tuple(input_shape)] if input_shape and np.isscalar(input_shape[0]) \
        else [tuple(s) for s in input_shape]
    rng = np.random.default_rng(0)
    examples = [rng.standard_normal(s).astype(dtype) for s in shapes]
    m = copy.deepcopy(model).eval()
    graph = trace(m, *examples)
    names = {id(a): k for k, a in m.state_dict().items()}
    ex = _Exporter(graph, names, opset, dynamic_batch)
    input_names = list(input_names or (["input"] if len(shapes) == 1
                                       else [f"input{i}" for i in range(len(shapes))]))
    output_names = list(output_names or (["output"] if len(graph.outputs) == 1
                                         else [f"output{i}" for i in range(len(graph.outputs))]))
    if len(input_names) != len(shapes) or len(output_names) != len(graph.outputs):
        raise ValueError(f"fastcnn.onnx.export: the model takes {len(shapes)} input(s) and gives "
                         f"{len(graph.outputs)} output(s); got {len(input_names)} input names "
                         f"and {len(output_names)} output names")
    for v, name in zip(graph.inputs, input_names):
        ex.names[v.id] = name
    ex.run()
    for v, name in zip(graph.outputs, output_names):
        ex.nodes.append(helper.make_node("Identity", [ex.name(v)], [name], name=f"/output/{name}"))

    def port(name, v):
        dims = list(v.shape)
        if dynamic_batch and dims:
            dims[0] = "batch"
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), dims)
    g = helper.make_graph(ex.nodes, type(model).__name__,
                          [port(n, v) for n, v in zip(input_names, graph.inputs)],
                          [port(n, v) for n, v in zip(output_names, graph.outputs)],
                          ex.initializers)
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version that opset allows, so older runtimes read the file
    proto = helper.make_model(g, opset_imports=opsets, producer_name="fastcnn",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto)
    if f is not None:
        data = proto.SerializeToString()
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as fh:
                fh.write(data)
        else:
            f.write(data)
    return proto


class _Exporter:
    def __init__(self, graph, param_names, opset, dynamic_batch):
        self.graph, self.param_names, self.opset = graph, param_names, opset
        self.dynamic_batch = dynamic_batch
        self.batch = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else None
        self.nodes, self.initializers = [], []
        self.names = {}           # value id -> ONNX name
        self._count = 0

    # ------------------------------------------------------------ naming
    def fresh(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, array, hint="const"):
        from onnx import numpy_helper
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def name(self, v, dtype=None):
        """The ONNX name of a graph argument (a constant becomes an initializer)."""
        if isinstance(v, Value):
            if v.id not in self.names:
                if v.kind != "const":
                    raise ValueError(f"fastcnn.onnx.export: {v} is used before it is computed")
                from onnx import numpy_helper
                key = self.param_names.get(id(v.const))
                name = key if key is not None and key not in {i.name for i in self.initializers} \
                    else self.fresh("const")
                self.initializers.append(numpy_helper.from_array(np.array(v.const, order="C"), name))
                self.names[v.id] = name
            return self.names[v.id]
        return self.const(np.asarray(v, dtype))

    def emit(self, op, inputs, scope, outputs=None, n_out=1, **attrs):
        from onnx import helper
        outputs = outputs or [self.fresh(f"{scope or 'x'}/{op}") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs),
                                           name=f"/{scope}/{op}_{len(self.nodes)}", **attrs))
        return outputs[0] if n_out == 1 else outputs

    # ------------------------------------------------------------ translation
    def run(self):
        missing = sorted({n.op for n in self.graph.nodes if getattr(self, f"op_{n.op}", None) is None})
        if missing:
            raise ValueError(f"fastcnn.onnx.export: no ONNX form for op(s) {', '.join(missing)}")
        for node in self.graph.nodes:
            b = node.arguments()
            y = getattr(self, f"op_{node.op}")(node, b, node.scope.replace(".", "/"))
            self.names[node.outputs[0].id] = y

    def activation(self, x, name, scope):
        if name is None:
            return x
        if name == "relu":
            return self.emit("Relu", [x], scope)
        if name == "relu6":
            return self.emit("Clip", [x, self.const(np.float32(0)), self.const(np.float32(6))], scope)
        if name == "silu":
            return self.emit("Mul", [x, self.emit("Sigmoid", [x], scope)], scope)
        raise ValueError(f"fastcnn.onnx.export: fused activation {name!r} has no ONNX form")

    def op_conv(self, node, b, scope):
        if b.get("padding_mode", "zeros") != "zeros":
            raise ValueError(f"fastcnn.onnx.export: {scope}: padding_mode "
                             f"{b['padding_mode']!r} has no ONNX Conv form")
        nd, w = b["nd"], b["weight"]
        kernel = tuple(w.shape[2:])
        stride = _tup(b["stride"], nd)
        dilation = _tup(b["dilation"], nd)
        before, after = conv_padding(b["padding"], nd, kernel, stride, dilation, "export")
        inputs = [self.name(b["input"]), self.name(w)]
        if b.get("bias") is not None:
            inputs.append(self.name(b["bias"]))
        y = self.emit("Conv", inputs, scope, kernel_shape=list(kernel), strides=list(stride),
                      pads=list(before) + list(after), dilations=list(dilation),
                      group=int(b["groups"]))
        return self.activation(y, b.get("activation"), scope)

    op_conv1d = op_conv2d = op_conv3d = op_conv

    def op_linear(self, node, b, scope):
        x, w, bias = b["input"], b["weight"], b.get("bias")
        if len(x.shape) == 2:
            inputs = [self.name(x), self.name(w)] + ([self.name(bias)] if bias is not None else [])
            y = self.emit("Gemm", inputs, scope, transB=1)
        else:
            wt = self.const(np.ascontiguousarray(w.const.T), "weight_t")
            y = self.emit("MatMul", [self.name(x), wt], scope)
            if bias is not None:
                y = self.emit("Add", [y, self.name(bias)], scope)
        return self.activation(y, b.get("activation"), scope)

    def _affine_defaults(self, b, c, dtype):
        w = b.get("weight")
        bias = b.get("bias")
        w = self.name(w) if w is not None else self.const(np.ones(c, dtype), "ones")
        bias = self.name(bias) if bias is not None else self.const(np.zeros(c, dtype), "zeros")
        return w, bias

    def op_batch_norm(self, node, b, scope):
        if b.get("training"):
            raise ValueError(f"fastcnn.onnx.export: {scope}: batch_norm in training mode")
        x = b["input"]
        w, bias = self._affine_defaults(b, x.shape[1], x.dtype)
        y = self.emit("BatchNormalization", [self.name(x), w, bias, self.name(b["running_mean"]),
                                             self.name(b["running_var"])], scope,
                      epsilon=float(b["eps"]))
        return self.activation(y, b.get("activation"), scope)

    def op_instance_norm(self, node, b, scope):
        x = b["input"]
        if not b.get("use_input_stats", True):
            raise ValueError(f"fastcnn.onnx.export: {scope}: instance_norm with running "
                             f"statistics has no ONNX form")
        w, bias = self._affine_defaults(b, x.shape[1], x.dtype)
        y = self.emit("InstanceNormalization", [self.name(x), w, bias], scope,
                      epsilon=float(b["eps"]))
        return self.activation(y, b.get("activation"), scope)

    def op_group_norm(self, node, b, scope):
        """(N, C, ...) -> (N, G, -1), instance-normalized, back, then the
        per-channel affine: valid in every opset."""
        x = b["input"]
        g, c = int(b["num_groups"]), x.shape[1]
        dtype = x.dtype
        xs = self.name(x)
        grouped = self.emit("Reshape", [xs, self.const(np.array([0, g, -1], np.int64))], scope)
        normed = self.emit("InstanceNormalization", [grouped, self.const(np.ones(g, dtype)),
                                                     self.const(np.zeros(g, dtype))], scope,
                           epsilon=float(b["eps"]))
        y = self.emit("Reshape", [normed, self.emit("Shape", [xs], scope)], scope)
        bshape = (c,) + (1,) * (len(x.shape) - 2)
        for key, op in (("weight", "Mul"), ("bias", "Add")):
            p = b.get(key)
            if p is not None:
                hint = self.param_names.get(id(p.const), f"group_norm_{key}")
                y = self.emit(op, [y, self.const(p.const.reshape(bshape), hint)], scope)
        return self.activation(y, b.get("activation"), scope)

    def op_layer_norm(self, node, b, scope):
        x = b["input"]
        shape = tuple(np.atleast_1d(b["normalized_shape"]))
        w, bias = self._affine_defaults(b, 1, x.dtype)
        if b.get("weight") is None:
            w = self.const(np.ones(shape, x.dtype), "ones")
        if b.get("bias") is None:
            bias = self.const(np.zeros(shape, x.dtype), "zeros")
        y = self.emit("LayerNormalization", [self.name(x), w, bias], scope, axis=-len(shape),
                      epsilon=float(b["eps"]))
        return self.activation(y, b.get("activation"), scope)

    # element-wise
    def _unary(onnx_op, **attrs):
        def run(self, node, b, scope):
            return self.emit(onnx_op, [self.name(b["input"])], scope, **attrs)
        return run

    op_relu = _unary("Relu")
    op_sigmoid = _unary("Sigmoid")
    op_tanh = _unary("Tanh")
    op_hardswish = _unary("HardSwish")

    def op_mish(self, node, b, scope):
        x = self.name(b["input"])
        if self.opset >= 18:
            return self.emit("Mish", [x], scope)
        return self.emit("Mul", [x, self.emit("Tanh", [self.emit("Softplus", [x], scope)], scope)],
                         scope)

    def op_relu6(self, node, b, scope):
        return self.activation(self.name(b["input"]), "relu6", scope)

    def op_silu(self, node, b, scope):
        return self.activation(self.name(b["input"]), "silu", scope)

    def op_hardtanh(self, node, b, scope):
        return self.emit("Clip", [self.name(b["input"]), self.const(np.float32(b["min_val"])),
                                  self.const(np.float32(b["max_val"]))], scope)

    def op_leaky_relu(self, node, b, scope):
        return self.emit("LeakyRelu", [self.name(b["input"])], scope,
                         alpha=float(b["negative_slope"]))

    def op_elu(self, node, b, scope):
        return self.emit("Elu", [self.name(b["input"])], scope, alpha=float(b["alpha"]))

    def op_hardsigmoid(self, node, b, scope):
        return self.emit("HardSigmoid", [self.name(b["input"])], scope, alpha=1 / 6, beta=0.5)

    def op_gelu(self, node, b, scope):
        x = self.name(b["input"])
        if self.opset >= 20:
            return self.emit("Gelu", [x], scope, approximate=b.get("approximate", "none"))
        if b.get("approximate", "none") != "none":
            raise ValueError("fastcnn.onnx.export: gelu(approximate='tanh') needs opset 20")
        dt = np.dtype(b["input"].dtype)
        half = self.emit("Mul", [x, self.const(np.array(0.5, dt))], scope)
        erf = self.emit("Erf", [self.emit("Mul", [x, self.const(np.array(2 ** -0.5, dt))], scope)],
                        scope)
        return self.emit("Mul", [half, self.emit("Add", [erf, self.const(np.array(1, dt))], scope)],
                         scope)

    def op_softmax(self, node, b, scope, kind="Softmax"):
        x = b["input"]
        dim = b.get("dim")
        dim = (0 if len(x.shape) in (0, 1, 3) else 1) if dim is None else dim
        return self.emit(kind, [self.name(x)], scope, axis=int(dim))

    def op_log_softmax(self, node, b, scope):
        return self.op_softmax(node, b, scope, "LogSoftmax")

    def _binary(onnx_op):
        def run(self, node, b, scope):
            args = b["args"]
            dtype = next(a.dtype for a in args if isinstance(a, Value))
            return self.emit(onnx_op, [self.name(a, dtype) for a in args], scope)
        return run

    op_add = _binary("Add")
    op_subtract = _binary("Sub")
    op_multiply = _binary("Mul")
    op_true_divide = op_divide = _binary("Div")
    op_maximum = _binary("Max")
    op_minimum = _binary("Min")

    # pooling
    def _pool(self, b, scope, kind, nd):
        kernel = _tup(b["kernel_size"], nd)
        stride = _tup(b.get("stride") or kernel, nd)
        pad = _tup(b.get("padding", 0), nd)
        attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                     ceil_mode=int(bool(b.get("ceil_mode", False))))
        if kind == "MaxPool":
            if b.get("return_indices"):
                raise ValueError(f"fastcnn.onnx.export: {scope}: max pooling with indices")
            attrs["dilations"] = list(_tup(b.get("dilation", 1), nd))
        else:
            if b.get("divisor_override") is not None:
                raise ValueError(f"fastcnn.onnx.export: {scope}: avg pooling with divisor_override")
            attrs["count_include_pad"] = int(bool(b.get("count_include_pad", True)))
        return self.emit(kind, [self.name(b["input"])], scope, **attrs)

    def _pooling(kind, nd):
        def run(self, node, b, scope):
            return self._pool(b, scope, kind, nd)
        return run

    op_max_pool1d, op_max_pool2d, op_max_pool3d = (
        _pooling("MaxPool", 1), _pooling("MaxPool", 2), _pooling("MaxPool", 3))
    op_avg_pool1d, op_avg_pool2d, op_avg_pool3d = (
        _pooling("AveragePool", 1), _pooling("AveragePool", 2), _pooling("AveragePool", 3))

    def _adaptive(self, node, b, scope, kind):
        x = b["input"]
        src, dst = x.shape[2:], node.outputs[0].shape[2:]
        if all(d == 1 for d in dst):
            return self.emit(f"Global{kind}", [self.name(x)], scope)
        if any(s % d for s, d in zip(src, dst)):
            raise ValueError(f"fastcnn.onnx.export: {scope}: adaptive pooling from {src} to "
                             f"{dst} (not a whole-window pooling) has no ONNX form")
        k = [s // d for s, d in zip(src, dst)]
        return self.emit(kind, [self.name(x)], scope, kernel_shape=k, strides=k)

    def op_adaptive_avg_pool1d(self, node, b, scope):
        return self._adaptive(node, b, scope, "AveragePool")

    op_adaptive_avg_pool2d = op_adaptive_avg_pool3d = op_adaptive_avg_pool1d

    def op_adaptive_max_pool1d(self, node, b, scope):
        if b.get("return_indices"):
            raise ValueError(f"fastcnn.onnx.export: {scope}: max pooling with indices")
        return self._adaptive(node, b, scope, "MaxPool")

    op_adaptive_max_pool2d = op_adaptive_max_pool3d = op_adaptive_max_pool1d

    # shapes
    def _target_shape(self, node):
        shape = list(node.outputs[0].shape)
        src = node.inputs()[0].shape
        if self.dynamic_batch and shape and src and shape[0] == src[0] == self.batch:
            shape[0] = 0              # Reshape: copy the (open) batch dimension
        return self.const(np.array(shape, np.int64), "shape")

    def op_reshape(self, node, b, scope):
        return self.emit("Reshape", [self.name(node.inputs()[0]), self._target_shape(node)], scope)

    def op_flatten(self, node, b, scope):
        x = b["input"]
        rank = max(len(x.shape), 1)
        if b.get("start_dim", 0) % rank == 1 and b.get("end_dim", -1) % rank == rank - 1:
            return self.emit("Flatten", [self.name(x)], scope, axis=1)
        return self.op_reshape(node, b, scope)

    op_unflatten = op_squeeze = op_expand_dims = op_ravel = op_reshape

    def op_transpose(self, node, b, scope):
        x = node.inputs()[0]
        axes = node.args[1] if len(node.args) > 1 else None
        perm = list(axes) if axes else list(reversed(range(len(x.shape))))
        return self.emit("Transpose", [self.name(x)], scope, perm=perm)

    def op_concatenate(self, node, b, scope):
        arrays = node.args[0]
        axis = node.kwargs.get("axis", node.args[1] if len(node.args) > 1 else 0)
        return self.emit("Concat", [self.name(a) for a in arrays], scope,
                         axis=int(axis) % len(node.outputs[0].shape))

    def op_mean(self, node, b, scope):
        x = node.args[0]
        axis = node.kwargs.get("axis", node.args[1] if len(node.args) > 1 else None)
        keep = int(bool(node.kwargs.get("keepdims", False)))
        axes = list(range(len(x.shape))) if axis is None else list(np.atleast_1d(axis))
        return self.emit("ReduceMean", [self.name(x), self.const(np.array(axes, np.int64))],
                         scope, keepdims=keep) if self.opset >= 18 else \
            self.emit("ReduceMean", [self.name(x)], scope, axes=[int(a) for a in axes], keepdims=keep)


def _tup(v, n):
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v),) * n
