"""Loading ONNX models into fastcnn plans."""
import os
import threading
import warnings
from collections import OrderedDict, namedtuple

import numpy as np

from fastcnn._graph import Graph, Node, Value
from fastcnn._autotune import check_setting
from fastcnn._plan import Plan
from fastcnn.fusion import fold_batch_norm
from fastcnn.onnx._ops import OPS, SUPPORTED_MIN_OPSET, silu

__all__ = ["load", "OnnxModel", "UnsupportedOperatorError"]

Port = namedtuple("Port", ["name", "shape", "dtype"])
_PLAN_CACHE = 8          # plans kept per model (one per input shape), least recently used out
_FOLD_LIMIT = 64         # the most elements of an input folded into a plan as a constant


class UnsupportedOperatorError(ValueError):
    """The model uses operators (or operator settings) fastcnn cannot run; the
    message lists every one of them."""


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("fastcnn.onnx needs the onnx package: pip install \"fastcnn[onnx]\"") from None
    return onnx


class _NodeSpec:
    """An ONNX node with attributes as Python values."""
    __slots__ = ("op_type", "name", "domain", "inputs", "outputs", "attrs")

    def __init__(self, op_type, name, domain, inputs, outputs, attrs):
        self.op_type, self.name, self.domain = op_type, name, domain
        self.inputs, self.outputs, self.attrs = list(inputs), list(outputs), attrs


def load(model, *, autotune=False):
    """Load an ONNX model from a path, bytes, or an onnx.ModelProto.

    The graph is checked, constants folded, BatchNormalization after Conv
    folded into the Conv, x * sigmoid(x) turned into SiLU, and every operator
    checked: unsupported ones are all listed in one UnsupportedOperatorError.
    Plans are made per input shape on first use (see OnnxModel), choosing
    their convolutions' algorithms as fastcnn.compile's autotune says."""
    onnx = require_onnx()
    proto = _read(onnx, model)
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        # Operator versions onnx has since deprecated (GroupNormalization-18)
        # are still valid models; fastcnn runs them as defined.
        if "is deprecated in domain_version" not in str(exc):
            raise ValueError(f"fastcnn.onnx.load: the model is not valid ONNX: {exc}") from None
    return OnnxModel(proto, autotune)


def _read(onnx, model):
    from google.protobuf.message import DecodeError
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, where = bytes(model), "the given bytes"
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"fastcnn.onnx.load: no such file {path!r}")
        with open(path, "rb") as fh:
            data = fh.read()
        where = repr(path)
    else:
        raise TypeError(f"fastcnn.onnx.load: expected a path, bytes or onnx.ModelProto, got "
                        f"{type(model).__name__}")
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"fastcnn.onnx.load: {where} is not a valid ONNX model (truncated or "
                         f"corrupt?): {exc}") from None
    if not proto.graph.node and not proto.graph.output:
        raise ValueError(f"fastcnn.onnx.load: {where} holds no ONNX graph (truncated or corrupt?)")
    return proto


class OnnxModel:
    """An ONNX model run by fastcnn. `run(output_names, {name: array})` as ONNX
    Runtime, or `model(*arrays)`. `inputs` and `outputs` describe the ports
    (shape entries are None where the model leaves a dimension open)."""

    def __init__(self, proto, autotune=False):
        onnx = require_onnx()
        self._autotune = check_setting(autotune, "fastcnn.onnx.load")
        from onnx import numpy_helper
        self._numpy_helper = numpy_helper
        self._mapping = onnx.helper.tensor_dtype_to_np_dtype
        graph = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        newest = onnx.defs.onnx_opset_version()
        if not SUPPORTED_MIN_OPSET <= self.opset <= newest:
            raise UnsupportedOperatorError(
                f"fastcnn.onnx.load: opset {self.opset} is outside the supported range "
                f"{SUPPORTED_MIN_OPSET} to {newest}")
        self.initializers = OrderedDict((t.name, numpy_helper.to_array(t)) for t in graph.initializer)
        self.nodes = [_NodeSpec(n.op_type, n.name or f"{n.op_type}_{k}", n.domain, n.input, n.output,
                                {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
                      for k, n in enumerate(graph.node)]
        self.inputs = [self._port(v) for v in graph.input if v.name not in self.initializers]
        self.outputs = [self._port(v) for v in graph.output]
        self._check_operators()
        self._fold_constant_nodes()
        self._widen_float16()
        self._fold_batch_norm()
        self._fuse_silu()
        self._fuse_group_norm()
        self._plans = OrderedDict()
        self._plans_lock = threading.Lock()
        self._fold_level = None     # see _folded

    # ------------------------------------------------------------ description
    def _port(self, value_info):
        t = value_info.type.tensor_type
        dims = (tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
                if t.HasField("shape") else None)
        dtype = np.dtype(self._mapping(t.elem_type)) if t.elem_type else np.dtype(np.float32)
        return Port(value_info.name, dims, dtype)

    def _check_operators(self):
        problems = []
        for node in self.nodes:
            entry = OPS.get(node.op_type)
            if node.domain not in ("", "ai.onnx"):
                problems.append((node, f"domain {node.domain!r} is not supported"))
            elif entry is None:
                problems.append((node, "operator not supported"))
            elif entry[1] is not None:
                reason = entry[1](node, self.opset)
                if reason:
                    problems.append((node, reason))
        if problems:
            lines = [f"  {n.name} ({n.op_type}, opset {self.opset}): {why}" for n, why in problems]
            raise UnsupportedOperatorError(
                f"fastcnn.onnx.load: {len(problems)} unsupported operator(s):\n" + "\n".join(lines))

    # ------------------------------------------------------------ graph rewrites
    def _consumers(self):
        uses = {}
        for node in self.nodes:
            for name in node.inputs:
                uses.setdefault(name, []).append(node)
        for port in self.outputs:
            uses.setdefault(port.name, []).append(None)
        return uses

    def _widen_float16(self):
        """float16 weights and activations are computed in float32 (fastcnn's
        kernels take float32 and float64); inputs are taken and outputs given
        in float16 as the model declares them."""
        half = np.dtype(np.float16)
        wide = [k for k, a in self.initializers.items() if a.dtype == half]
        ports = [p for p in self.inputs + self.outputs if p.dtype == half]
        casts = [n for n in self.nodes if n.op_type == "Cast" and self._mapping(
            int(n.attrs.get("to", 0))) == half] if wide or ports else []
        if not (wide or ports or casts):
            return
        for k in wide:
            self.initializers[k] = self.initializers[k].astype(np.float32)
        for node in casts:
            node.attrs["to"] = 1                        # TensorProto.FLOAT
        warnings.warn("fastcnn.onnx.load: a float16 model: fastcnn computes it in float32 "
                      "(its inputs and outputs stay float16)", stacklevel=4)

    def _fold_constant_nodes(self):
        keep = []
        for node in self.nodes:
            if node.op_type == "Constant":
                self.initializers[node.outputs[0]] = _constant_value(self, node)
            else:
                keep.append(node)
        self.nodes = keep

    def _fold_batch_norm(self):
        """Conv whose only reader is an inference BatchNormalization with
        constant parameters: scale the filters, shift the bias, drop the BN."""
        uses = self._consumers()
        producer = {o: n for n in self.nodes for o in n.outputs}
        init = self.initializers
        drop = set()
        for bn in self.nodes:
            if bn.op_type != "BatchNormalization" or bn.attrs.get("training_mode", 0):
                continue
            conv = producer.get(bn.inputs[0])
            if conv is None or conv.op_type != "Conv" or len(uses.get(bn.inputs[0], [])) != 1:
                continue
            params = bn.inputs[1:5]
            if not all(p in init for p in params) or conv.inputs[1] not in init or \
                    (len(conv.inputs) > 2 and conv.inputs[2] and conv.inputs[2] not in init):
                continue
            gamma, beta, mean, var = (init[p] for p in params)
            b = init[conv.inputs[2]] if len(conv.inputs) > 2 and conv.inputs[2] else None
            new_w, new_b = fold_batch_norm(init[conv.inputs[1]], b, mean, var,
                                           float(bn.attrs.get("epsilon", 1e-5)), gamma, beta)
            wname, bname = f"{conv.name}::folded_weight", f"{conv.name}::folded_bias"
            init[wname], init[bname] = new_w, new_b
            conv.inputs = [conv.inputs[0], wname, bname]
            conv.outputs = [bn.outputs[0]]
            drop.add(id(bn))
        self.nodes = [n for n in self.nodes if id(n) not in drop]

    def _fuse_silu(self):
        """Mul(x, Sigmoid(x)) -> SiLU (so it can join the layer before it)."""
        uses = self._consumers()
        producer = {o: n for n in self.nodes for o in n.outputs}
        drop = set()
        for mul in self.nodes:
            if mul.op_type != "Mul" or len(mul.inputs) != 2:
                continue
            for a, s in (mul.inputs, reversed(mul.inputs)):
                sig = producer.get(s)
                if sig is not None and sig.op_type == "Sigmoid" and sig.inputs[0] == a \
                        and len(uses.get(s, [])) == 1:
                    mul.op_type, mul.inputs = "FastcnnSiLU", [a]
                    drop.add(id(sig))
                    break
        self.nodes = [n for n in self.nodes if id(n) not in drop]

    def _fuse_group_norm(self):
        """GroupNorm as exporters write it for opsets before 18 -> one
        GroupNormalization (per-channel scale and bias, as opset 21 has it):
        Reshape(x, [0, G, -1]), InstanceNormalization with unit scale and zero
        bias, Reshape back to Shape(x), Mul by a per-channel weight, Add a
        per-channel bias; every intermediate read only by the next step."""
        uses = self._consumers()
        producer = {o: n for n in self.nodes for o in n.outputs}
        init = self.initializers

        def only(name, op_type):
            node = producer.get(name)
            if node is not None and node.op_type == op_type and len(uses.get(name, [])) == 1:
                return node
            return None

        def per_channel(name):
            a = init.get(name)
            return a.reshape(-1) if a is not None and a.ndim >= 2 and \
                a.shape[1:] == (1,) * (a.ndim - 1) and a.dtype.kind == "f" else None

        drop = set()
        for add in self.nodes:
            if add.op_type != "Add":
                continue
            mul, bias = _data_and_param(add, only, "Mul", per_channel)
            back, weight = _data_and_param(mul, only, "Reshape", per_channel)
            inorm = back and only(back.inputs[0], "InstanceNormalization")
            grouped = inorm and only(inorm.inputs[0], "Reshape")
            shape = back and producer.get(back.inputs[1])
            if not (grouped and shape is not None and shape.op_type == "Shape"
                    and not shape.attrs and shape.inputs[0] == grouped.inputs[0]):
                continue
            target = init.get(grouped.inputs[1])
            unit, zero = (init.get(k) for k in inorm.inputs[1:3])
            if target is None or target.shape != (3,) or target[0] != 0 or target[2] != -1 or \
                    target[1] < 1 or grouped.attrs.get("allowzero", 0) or \
                    unit is None or zero is None or not (np.all(unit == 1) and np.all(zero == 0)) \
                    or weight is None or bias is None or weight.shape != bias.shape or \
                    weight.size % int(target[1]):
                continue
            wname, bname = f"{add.name}::group_norm_weight", f"{add.name}::group_norm_bias"
            init[wname], init[bname] = weight, bias
            add.op_type, add.inputs = "GroupNormalization", [grouped.inputs[0], wname, bname]
            add.attrs = {"num_groups": int(target[1]),
                         "epsilon": float(inorm.attrs.get("epsilon", 1e-5))}
            drop.update(id(n) for n in (mul, back, inorm, grouped))
            if len(uses.get(shape.outputs[0], [])) == 1:
                drop.add(id(shape))
        self.nodes = [n for n in self.nodes if id(n) not in drop]

    # ------------------------------------------------------------ running
    def _plan_for(self, arrays):
        return self._plan_and_feed(arrays)[0]

    def _plan_and_feed(self, arrays):
        """The plan for these inputs, and the inputs it takes: the inputs whose
        values an operator needs as constants (a Reshape's shape, Slice's
        starts, Resize's scales fed at run time) are folded into the plan,
        made per value; the rest are fed to it."""
        folded, graph = self._folded(arrays)
        key = tuple((a.shape, a.dtype.str, a.tobytes() if k in folded else None)
                    for k, a in enumerate(arrays))
        fed = [a for k, a in enumerate(arrays) if k not in folded]
        with self._plans_lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan, fed
        if graph is None:
            graph = self.graph_for([a.shape for a in arrays], [a.dtype for a in arrays],
                                   {k: arrays[k] for k in folded})
        plan = Plan(graph, autotune=self._autotune, where="fastcnn.onnx.load")
        with self._plans_lock:
            plan = self._plans.setdefault(key, plan)    # another thread may have made one
            if len(self._plans) > _PLAN_CACHE:
                self._plans.popitem(last=False)
        return plan, fed

    def _folded(self, arrays):
        """Which inputs the plan takes as constants: none, until building the
        graph fails for a value that is not constant; then the small integer
        inputs, then every small input (at most _FOLD_LIMIT elements each).
        Also the graph, when finding that out built it."""
        graph = None
        if self._fold_level is None:
            shapes, dtypes = [a.shape for a in arrays], [a.dtype for a in arrays]
            failure = None
            for level in range(3):
                values = {k: a for k, a in enumerate(arrays) if self._foldable(a, level)}
                if level and len(values) == len(failure[1]):
                    continue                    # folds nothing more than the last level
                try:
                    graph = self.graph_for(shapes, dtypes, values)
                except UnsupportedOperatorError as exc:
                    if "not constant" not in str(exc):
                        raise
                    failure = (exc, values)
                    continue
                self._fold_level = level
                break
            else:
                raise failure[0]
        return {k for k, a in enumerate(arrays) if self._foldable(a, self._fold_level)}, graph

    @staticmethod
    def _foldable(array, level):
        if level == 0 or array.size > _FOLD_LIMIT:
            return False
        return level == 2 or array.dtype.kind in "iu"

    def graph_for(self, shapes, dtypes=None, values=None):
        """The op graph for inputs of these shapes (constants folded); `values`
        maps input positions to the values they are fixed to."""
        dtypes = [np.dtype(np.float32) if np.dtype(d) == np.float16 else d
                  for d in (dtypes or [p.dtype for p in self.inputs])]   # see _widen_float16
        values = values or {}
        b = _Builder(self)
        rng = np.random.default_rng(0)
        env = {name: _Entry(arr, None) for name, arr in self.initializers.items()}
        for k, (port, shape, dtype) in enumerate(zip(self.inputs, shapes, dtypes)):
            if k in values:
                env[port.name] = _Entry(np.array(values[k]), None)
                continue
            dtype = np.dtype(dtype)
            sample = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                      else np.zeros(shape, dtype))
            v = Value(shape, dtype, "input", name=port.name)
            b.graph.inputs.append(v)
            env[port.name] = _Entry(sample, v)
        # Each node also runs once on a random sample input, for its output
        # shape; sqrt/log of negative samples are no one's concern.
        with np.errstate(all="ignore"):
            for node in self.nodes:
                xs = [env.get(name) if name else None for name in node.inputs]
                missing = [name for name, e in zip(node.inputs, xs) if name and e is None]
                if missing:
                    raise ValueError(f"fastcnn.onnx: node {node.name} reads undefined {missing}")
                builder = _FASTCNN_OPS.get(node.op_type) or OPS[node.op_type][0]
                b.scope = node.name
                outs = builder(b, node, xs)
                for name, e in zip(node.outputs, outs):
                    if name:
                        env[name] = e
        for port in self.outputs:
            e = env[port.name]
            b.graph.outputs.append(e.value if e.value is not None else b.const_value(e.array))
        return b.graph

    def _check_feed(self, port, x):
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x, port.dtype)
            except (TypeError, ValueError):
                raise TypeError(f"input {port.name!r}: expected an array, got {type(x).__name__}") from None
        if x.dtype != port.dtype:
            raise TypeError(f"input {port.name!r}: expected dtype {port.dtype}, got {x.dtype}")
        if port.shape is not None and (len(port.shape) != x.ndim or any(
                d is not None and d != s for d, s in zip(port.shape, x.shape))):
            want = "(" + ", ".join("?" if d is None else str(d) for d in port.shape) + ")"
            raise ValueError(f"input {port.name!r}: expected shape {want}, got {x.shape}")
        return x

    def run(self, output_names, input_feed):
        """ONNX Runtime's convention: a list of the outputs named (None: all)."""
        if not isinstance(input_feed, dict):
            raise TypeError("run: input_feed must be a dict of input name -> array")
        unknown = [k for k in input_feed if k not in [p.name for p in self.inputs]]
        missing = [p.name for p in self.inputs if p.name not in input_feed]
        if unknown or missing:
            raise ValueError(f"run: inputs {missing} missing, {unknown} unknown; the model "
                             f"takes {[p.name for p in self.inputs]}")
        arrays = [self._check_feed(p, input_feed[p.name]) for p in self.inputs]
        arrays = [a.astype(np.float32) if a.dtype == np.float16 else a for a in arrays]
        plan, fed = self._plan_and_feed(arrays)
        results = plan(*fed)
        results = results if isinstance(results, tuple) else (results,)
        results = tuple(r.astype(np.float16) if p.dtype == np.float16 else r
                        for r, p in zip(results, self.outputs))
        names = [p.name for p in self.outputs]
        if output_names is None:
            return list(results)
        bad = [n for n in output_names if n not in names]
        if bad:
            raise ValueError(f"run: unknown outputs {bad}; the model gives {names}")
        return [results[names.index(n)] for n in output_names]

    def __call__(self, *arrays):
        if len(arrays) != len(self.inputs):
            raise TypeError(f"expected {len(self.inputs)} input(s), got {len(arrays)}")
        out = self.run(None, {p.name: a for p, a in zip(self.inputs, arrays)})
        return out[0] if len(out) == 1 else tuple(out)

    def __repr__(self):
        return (f"OnnxModel(opset {self.opset}, {len(self.nodes)} nodes, inputs={self.inputs}, "
                f"outputs={self.outputs})")


def _constant_value(model, node):
    a = node.attrs
    nh = model._numpy_helper
    if "value" in a:
        return nh.to_array(a["value"])
    if "value_float" in a:
        return np.array(a["value_float"], np.float32)
    if "value_floats" in a:
        return np.array(a["value_floats"], np.float32)
    if "value_int" in a:
        return np.array(a["value_int"], np.int64)
    if "value_ints" in a:
        return np.array(a["value_ints"], np.int64)
    raise ValueError(f"fastcnn.onnx: Constant node {node.name} has no supported value")


class _Entry:
    """A value while building: its array on the sample input, and its graph
    Value (None for constants)."""
    __slots__ = ("array", "value")

    def __init__(self, array, value):
        self.array, self.value = array, value

    @property
    def const(self):
        return self.value is None


class _Builder:
    def __init__(self, model):
        self.model = model
        self.opset = model.opset
        self.graph = Graph()
        self.scope = ""             # the ONNX node being translated
        self._consts = {}

    def const(self, array):
        return _Entry(np.asarray(array), None)

    def const_value(self, array):
        """The graph Value of a constant (one per array)."""
        entry = self._consts.get(id(array))
        if entry is None:           # the entry keeps `array` alive, so its id stays unique
            a = np.asarray(array)
            entry = self._consts[id(array)] = (Value(a.shape, a.dtype, "const", const=a), array)
        return entry[0]

    def tensor(self, proto):
        return self.model._numpy_helper.to_array(proto)

    def dtype(self, onnx_type):
        return np.dtype(self.model._mapping(onnx_type))

    def constant_value(self, node):
        return _constant_value(self.model, node)

    def unsupported(self, node, why):
        raise UnsupportedOperatorError(f"fastcnn.onnx: {node.name} ({node.op_type}, opset "
                                       f"{self.opset}) needs {why}")

    def _graph_arg(self, a):
        if isinstance(a, _Entry):
            return a.value if a.value is not None else self.const_value(a.array)
        if isinstance(a, (list, tuple)):
            return type(a)(self._graph_arg(x) for x in a)
        return a

    @staticmethod
    def _sample(a):
        if isinstance(a, _Entry):
            return a.array
        if isinstance(a, (list, tuple)):
            return type(a)(_Builder._sample(x) for x in a)
        return a

    def call(self, op, fn, args, kwargs, n_out=1, view=False):
        """Fold (all inputs constant) or record one node; return its outputs."""
        entries = [a for a in args if isinstance(a, _Entry)] + \
            [a for a in kwargs.values() if isinstance(a, _Entry)]
        result = fn(*[self._sample(a) for a in args], **{k: self._sample(v) for k, v in kwargs.items()})
        results = result if isinstance(result, tuple) else (result,)
        if all(e.const for e in entries):
            return [self.const(np.array(r)) for r in results]
        outs = [Value(np.shape(r), np.asarray(r).dtype, "op") for r in results]
        self.graph.nodes.append(Node(op, fn, [self._graph_arg(a) for a in args],
                                     {k: self._graph_arg(v) for k, v in kwargs.items()}, outs,
                                     self.scope, view=view))
        return [_Entry(np.asarray(r), v) for r, v in zip(results, outs)]


def _data_and_param(node, only, op_type, param):
    """For a binary node (or None): (the op_type node its data input comes
    from, read there only, and param(its other input)), either order; (None,
    None) when neither order fits."""
    if node is None or len(node.inputs) != 2:
        return None, None
    for data, other in (node.inputs, reversed(node.inputs)):
        source, value = only(data, op_type), param(other)
        if source is not None and value is not None:
            return source, value
    return None, None


def _silu_builder(b, node, x):
    return b.call("silu", silu, [x[0]], {})


_FASTCNN_OPS = {"FastcnnSiLU": _silu_builder}
