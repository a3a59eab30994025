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

from fastcnn._graph import Value, trace
from fastcnn.onnx._export_ops import EXPORTS
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
    names = {id(a): k for k, a in m.state_dict(keep_vars=True).items()}
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
    """Names, initializers and nodes of the ONNX graph being written."""

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

    # ------------------------------------------------------------ translation (_export_ops)
    def run(self):
        missing = sorted({n.op for n in self.graph.nodes if n.op not in EXPORTS})
        if missing:
            raise ValueError(f"fastcnn.onnx.export: no ONNX form for op(s) {', '.join(missing)}")
        for node in self.graph.nodes:
            y = EXPORTS[node.op](self, node, node.arguments(), node.scope.replace(".", "/"))
            self.names[node.outputs[0].id] = y
