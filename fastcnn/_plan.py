"""Plans: a Graph run with every buffer allocated once.

Plan(graph) rewrites the graph (_rewrite: residual adds and activations
fused into the layers before them), assigns each value a buffer (_memory:
values whose lifetimes do not overlap share one), and binds each node to its
arrays once: convolutions and linear layers call their kernels directly
(weights prepacked, e.g. Winograd transforms; one workspace, sized once, that
the steps share as they run one after another), other
ops call the functional op with out=. A call only fills in the inputs and
copies the results into fresh arrays (or the caller's `out`).

A plan reads the layers' arrays when it is built: it is a snapshot of the
weights, independent of the model afterwards.
"""
import contextlib
import threading

import numpy as np

from fastcnn import _threads
from fastcnn._graph import Value
from fastcnn._memory import MemoryPlan, Scratch
from fastcnn._opinfo import info
from fastcnn import _kernels
from fastcnn._autotune import Tuner
from fastcnn._functional.conv import ConvEngine, conv_run, layer_geometry
from fastcnn._functional import conv_transpose as T
from fastcnn._functional import pool as P
from fastcnn._rewrite import Rewrite
from fastcnn._validation import FUSABLE_ACTIVATIONS, ntuple

__all__ = ["Plan"]

def _bound_input(desc, shape):
    """The array a step reads for this input on every call, bound once: a
    plan buffer or a view of one, lying contiguously (reshaped to `shape`);
    None when the step must take it per call (a call's input, or a strided
    view, which is copied per call, as its values change from call to call)."""
    if desc[0] != "fixed" or not isinstance(desc[1], np.ndarray) \
            or not desc[1].flags.c_contiguous:
        return None
    return desc[1].reshape(shape)


class Plan:
    """A compiled graph; call it like the model: plan(x) or plan(x, out=y).

    Thread-safe: each call runs on an executor (buffers and workspaces) no
    other call is using; concurrent calls get executors of their own, made on
    demand and kept for reuse, all sharing the packed weights."""

    def __init__(self, graph, num_threads=None, autotune=False, where="compile"):
        self._num_threads = num_threads or _threads.get_num_threads()
        self._rewrite = Rewrite(graph, self._num_threads)
        self._memory = MemoryPlan(self._rewrite)
        self._packed = {}                 # weights packed once for every executor
        self._tuner = Tuner(self._rewrite.nodes, autotune, where)  # and algorithms chosen once
        first = self._new_executor()
        self._executors = [first]
        self._idle = [first]
        self._lock = threading.Lock()

    def _new_executor(self):
        return _Executor(self._rewrite, self._memory, self._num_threads, self._packed,
                         self._tuner)

    @property
    def graph(self):
        return self._rewrite.graph

    @property
    def nodes(self):
        """The graph's nodes after the rewrites, in execution order."""
        return self._rewrite.nodes

    @property
    def algorithms(self):
        """{step name: algorithm} of each convolution step (see _autotune;
        compile(..., autotune=plan.algorithms) makes a plan with the same)."""
        return self._tuner.algorithms

    @property
    def input_specs(self):
        """(shape, dtype) of each input."""
        return self._executors[0].input_specs

    @property
    def output_specs(self):
        """(shape, dtype) of each output."""
        return self._executors[0].output_specs

    @property
    def weight_nbytes(self):
        """Bytes of prepacked weights (shared by every executor)."""
        return self._executors[0].weight_nbytes

    @property
    def nbytes(self):
        """Buffers and workspaces of every executor made so far."""
        return sum(e.nbytes for e in self._executors)

    @contextlib.contextmanager
    def _executor(self):
        """An executor no other call is using, made if all are busy; back to
        the idle list afterwards."""
        with self._lock:
            executor = self._idle.pop() if self._idle else None
        if executor is None:
            executor = self._new_executor()
            with self._lock:
                self._executors.append(executor)
        try:
            yield executor
        finally:
            with self._lock:
                self._idle.append(executor)

    def __call__(self, *inputs, out=None):
        with self._executor() as executor:
            return executor(*inputs, out=out)

    def profile(self, *inputs, repeat=5):
        """Time each step on these inputs (best of `repeat` runs): a list of
        (op, module, output shape, milliseconds), in execution order."""
        with self._executor() as executor:
            return executor.profile(*inputs, repeat=repeat)


class _Executor:
    """A plan's buffers bound to its steps: runs one call at a time."""

    def __init__(self, rewrite, memory, num_threads, packed, tuner):
        self._packed, self._tuner = packed, tuner
        self._rewrite, self._memory = rewrite, memory
        self._resolve = rewrite.resolve
        graph = self.graph = rewrite.graph
        self.nodes = rewrite.nodes
        self.input_specs = [(v.shape, v.dtype) for v in graph.inputs]
        self.output_specs = [(v.shape, v.dtype) for v in graph.outputs]
        self.num_threads = num_threads
        self.weight_nbytes = 0
        self.workspace_nbytes = 0       # workspaces steps own (transposed convolutions)
        self._scratch = Scratch()       # the workspace the other steps share
        self._input_pos = {v.id: k for k, v in enumerate(graph.inputs)}
        self._buffers = memory.allocate()
        self._fixed = {}          # value id -> array bound once (constants, buffers, views)
        self._dynamic_views = {}  # value id -> (node) views of inputs, made per call
        bound = [(node, self._bind(node)) for node in self.nodes]
        self.steps = [s for _, s in bound if s is not None]
        self._step_nodes = [n for n, s in bound if s is not None]
        self._outputs = [self._resolve(v) for v in graph.outputs]

    @property
    def nbytes(self):
        """Its buffers and workspaces (the shared one as large as it has grown)."""
        return (sum(b.nbytes for b in self._buffers) + self.workspace_nbytes
                + self._scratch.nbytes)

    # ------------------------------------------------------------ binding
    def _value_array(self, v):
        """The array bound once for v, or None when it depends on the call's inputs."""
        v = self._resolve(v)
        if v.id in self._fixed:
            return self._fixed[v.id]
        if v.kind == "const":
            return v.const
        if v.kind == "input" or v.id in self._dynamic_views:
            return None
        slot = self._memory.slot.get(v.id)
        if slot is None:
            return None
        arr = self._buffers[slot][:v.nbytes].view(v.dtype).reshape(v.shape)
        self._fixed[v.id] = arr
        return arr

    def _getter(self, a):
        """A descriptor of one argument: ('fixed', value) or ('value', Value)."""
        if isinstance(a, Value):
            arr = self._value_array(a)
            if arr is not None:
                return ("fixed", arr)
            return ("value", self._resolve(a))
        if isinstance(a, (list, tuple)) and any(isinstance(x, Value) for x in a):
            return ("seq", type(a), [self._getter(x) for x in a])
        return ("fixed", a)

    def _get(self, desc, inputs):
        kind = desc[0]
        if kind == "fixed":
            return desc[1]
        if kind == "seq":
            return desc[1](self._get(d, inputs) for d in desc[2])
        v = desc[1]
        if v.kind == "input":
            return inputs[self._input_pos[v.id]]
        node, descs = self._dynamic_views[v.id]
        return node.fn(*[self._get(d, inputs) for d in descs], **node.kwargs)

    def _bind(self, node):
        out_v = node.outputs[0]
        if node.view:
            descs = [self._getter(a) for a in node.args]
            if all(d[0] == "fixed" for d in descs):
                self._fixed[out_v.id] = node.fn(*[d[1] for d in descs], **node.kwargs)
            else:
                self._dynamic_views[out_v.id] = (node, descs)
            return None
        if info(node.op).family == "conv":
            step = self._conv_step(node)
            if step is not None:
                return step
        if info(node.op).family == "conv_transpose":
            step = self._conv_transpose_step(node)
            if step is not None:
                return step
        if node.op == "conv_chain":
            return self._fused_step(node, node.kwargs["chain"])
        if node.op == "conv_max_pool":
            return self._fused_step(node, node.kwargs["conv_pool"])
        if node.op == "linear":
            step = self._linear_step(node)
            if step is not None:
                return step
        if node.op in P.PLAN_OPS:
            step = self._pool_step(node)
            if step is not None:
                return step
        return self._python_step(node)

    def _python_step(self, node):
        arg_descs = [self._getter(a) for a in node.args]
        kw_descs = {k: self._getter(v) for k, v in node.kwargs.items()
                    if k not in ("out", "inplace")}
        if id(node) in self._rewrite.activation:
            kw_descs["activation"] = ("fixed", self._rewrite.activation[id(node)])
        outs = [self._value_array(o) for o in node.outputs]
        fn = node.fn
        takes_out = len(node.outputs) == 1 and info(node.op).takes_out
        get = self._get

        def step(inputs):
            args = [get(d, inputs) for d in arg_descs]
            kwargs = {k: get(d, inputs) for k, d in kw_descs.items()}
            if takes_out:
                fn(*args, out=outs[0], **kwargs)
            else:
                result = fn(*args, **kwargs)
                results = result if isinstance(result, tuple) else (result,)
                for o, r in zip(outs, results):
                    np.copyto(o, r)
        return step

    def _conv_step(self, node):
        b = node.arguments()
        nd = info(node.op).nd or b["nd"]
        if b.get("padding_mode", "zeros") != "zeros" or b.get("out") is not None:
            return None
        x_desc = self._getter(b["input"])
        w = self._value_array(b["weight"]) if isinstance(b["weight"], Value) else None
        bias = b.get("bias")
        bias = self._value_array(bias) if isinstance(bias, Value) else None if bias is None else np.asarray(bias)
        if w is None or (isinstance(b.get("bias"), Value) and bias is None):
            return None
        x_shape = self._resolve(b["input"]).shape
        if len(x_shape) == nd + 1:
            x_shape = (1,) + x_shape
        geom = layer_geometry(node.op, nd, x_shape, w.shape, b)
        # Weights are packed once here, so Winograd pays off sooner than in eager calls.
        # Winograd inputs holding NaN or Inf run with im2col (see ieee_safe), checked per call.
        # The step keeps the engine (its kernels, for which its weights are packed)
        # whatever fastcnn.set_max_isa binds later.
        all_finite = _kernels._act.all_finite
        act = FUSABLE_ACTIVATIONS[self._rewrite.activation_of(node)]
        bias = None if bias is None else np.ascontiguousarray(bias)
        raw_w = np.ascontiguousarray(w)
        algorithm = self._tuner.algorithm(node, geom, x_shape, raw_w, bias, act, self.num_threads)
        engine = ConvEngine(geom, w.dtype, algorithm)
        weights = raw_w
        if engine.packed_size:
            key = (b["weight"].id, geom, algorithm, _kernels.isa)
            weights = self._packed.get(key)
            if weights is None:
                weights = self._packed[key] = engine.pack(raw_w, self.num_threads)
            self.weight_nbytes += weights.nbytes
        workspace = self._scratch.getter(engine.workspace_size, w.dtype, self.num_threads)
        y = self._value_array(node.outputs[0]).reshape((x_shape[0], w.shape[0])
                                                       + geom.out_spatial(nd))
        get = self._get
        x_fixed = _bound_input(x_desc, x_shape)
        res_desc = self._getter(b["residual"]) if b.get("residual") is not None else None

        def step(inputs):
            n = _threads.get_num_threads()
            x = x_fixed if x_fixed is not None else np.ascontiguousarray(get(x_desc, inputs)).reshape(x_shape)
            ws = workspace(n)
            res = None if res_desc is None else np.ascontiguousarray(get(res_desc, inputs)).reshape(y.shape)
            if algorithm == "winograd" and not all_finite(x, n):
                conv_run(geom, x, raw_w, bias, y, act, n, "im2col", res)
                return
            engine.forward(x, weights, bias, y, ws, act, n, res)
        return step

    def _conv_transpose_step(self, node):
        """A transposed convolution by taps with its scratch allocated once, or
        by phases with every phase's weights packed once (the columns route,
        for dilated kernels and small strided outputs, runs as the functional
        op)."""
        b = node.arguments()
        if node.op == "conv_transpose_onnx":    # its window: `begin` into the full extent
            stride, padding, dilation = b["strides"], b["begin"], b["dilations"]
            groups = b["group"]
        else:
            nd = info(node.op).nd or b["nd"]
            stride, padding, dilation = (ntuple(b.get(k, 1 if k != "padding" else 0), nd,
                                                node.op, k)
                                         for k in ("stride", "padding", "dilation"))
            groups = b.get("groups", 1)
        weight, bias = b["weight"], b.get("bias")
        w = self._value_array(weight) if isinstance(weight, Value) else None
        if isinstance(bias, Value):
            bias = self._value_array(bias)
            if bias is None:
                return None
        if w is None or b.get("out") is not None or min(padding) < 0:
            return None
        nd = w.ndim - 2
        x_shape = self._resolve(b["input"]).shape
        y_shape = node.outputs[0].shape
        if len(x_shape) == nd + 1:
            x_shape, y_shape = (1,) + x_shape, (1,) + y_shape
        w = np.ascontiguousarray(w)
        bias = None if bias is None else np.ascontiguousarray(bias)
        y = self._value_array(node.outputs[0]).reshape(y_shape)
        x_desc, get = self._getter(b["input"]), self._get
        if T.by_taps(x_shape, y_shape, w.shape, stride, padding, dilation):
            engine = T.ByTaps(x_shape, w, groups, stride, self.num_threads, own_workspace=True)
            self.weight_nbytes += engine.packed.nbytes if engine.packed is not w else 0
            self.workspace_nbytes += engine.workspace.nbytes
        else:
            if not T.by_phases(y_shape, w.shape, groups, stride, dilation):
                return None
            key = ("conv_transpose", weight.id, x_shape, y_shape, groups, tuple(stride),
                   tuple(padding), _kernels.isa)
            engine = T.CompiledPhases(x_shape, y_shape, w, groups, stride, padding,
                                      self.num_threads, self._packed.get(key))
            self._packed[key] = engine.packed
            self.weight_nbytes += engine.weight_nbytes
            self.workspace_nbytes += engine.nbytes

        def step(inputs):
            x = np.ascontiguousarray(get(x_desc, inputs)).reshape(x_shape)
            engine(x, bias, y, _threads.get_num_threads())
        return step

    def _fused_step(self, node, fused):
        """Layers run as one step (_chain's Chain, _conv_pool's ConvMaxPool):
        their weights were packed by the rewrite, their workspace is the
        executor's scratch; node.args: the input, then a residual if any."""
        x_desc = self._getter(node.args[0])
        res_v = node.args[1] if len(node.args) > 1 else None
        res_desc = self._getter(res_v) if res_v is not None else None
        y = self._value_array(node.outputs[0]).reshape(fused.output_shape)
        workspace = self._scratch.getter(fused.workspace_size, np.float32, self.num_threads)
        self.weight_nbytes += fused.packed.nbytes
        get = self._get
        x_fixed = _bound_input(x_desc, fused.input_shape)
        res_fixed = None if res_desc is None else _bound_input(res_desc, fused.output_shape)
        if x_fixed is not None and (res_desc is None or res_fixed is not None):
            # the step's arrays are checked here and a call only runs the
            # kernel (a chain's checks cost several microseconds; MobileNetV2
            # has 17 chains)
            run = fused.bind(x_fixed, y, res_fixed)

            def bound_step(inputs):
                n = _threads.get_num_threads()
                run(workspace(n), n)
            return bound_step

        def step(inputs):
            n = _threads.get_num_threads()
            x = np.ascontiguousarray(get(x_desc, inputs)).reshape(fused.input_shape)
            res = None if res_desc is None else \
                np.ascontiguousarray(get(res_desc, inputs)).reshape(fused.output_shape)
            fused(x, y, workspace(n), n, res)
        return step

    def _linear_step(self, node):
        b = node.arguments()
        if b.get("out") is not None or not isinstance(b.get("weight"), Value):
            return None
        w = self._value_array(b["weight"])
        bias = b.get("bias")
        bias = self._value_array(bias) if isinstance(bias, Value) else bias
        if w is None:
            return None
        x_v = self._resolve(b["input"])
        rows = int(np.prod(x_v.shape[:-1], dtype=np.int64))
        x_desc = self._getter(b["input"])
        act = FUSABLE_ACTIVATIONS[self._rewrite.activation_of(node)]
        w = np.ascontiguousarray(w)
        bias = None if bias is None else np.ascontiguousarray(bias)
        y = self._value_array(node.outputs[0]).reshape(rows, w.shape[0])
        x_fixed = _bound_input(x_desc, (rows, w.shape[1]))
        get = self._get

        def step(inputs):
            x = x_fixed if x_fixed is not None else \
                np.ascontiguousarray(get(x_desc, inputs)).reshape(rows, w.shape[1])
            _kernels._linear.linear(x, w, bias, y, act, _threads.get_num_threads())
        return step

    def _pool_step(self, node):
        """Pooling with its arguments checked once, its workspace the executor's scratch:
        the step only calls the kernel (a Python step would check them again on
        every call, which costs most in a network whose weights have just
        pushed that code out of the caches)."""
        b = node.arguments()
        if not b or b.get("out") is not None:
            return None
        nd = P.PLAN_OPS[node.op][0]
        x_v = self._resolve(b["input"])
        shape = tuple(x_v.shape)
        if len(shape) == nd + 1:
            shape = (1,) + shape
        if len(shape) != nd + 2 or 0 in shape[1:]:
            return None
        bound = P.plan_kernel(node.op, shape, b)
        if bound is None:
            return None
        out_shape, run = bound
        y = self._value_array(node.outputs[0]).reshape(out_shape)
        x_desc = self._getter(b["input"])
        x_fixed = _bound_input(x_desc, shape)
        dtype = np.float64 if node.op.startswith("adaptive") else y.dtype
        workspace = self._scratch.getter(run.workspace_size, dtype, self.num_threads)
        get = self._get

        def step(inputs):
            n = _threads.get_num_threads()
            x = x_fixed if x_fixed is not None else \
                np.ascontiguousarray(get(x_desc, inputs)).reshape(shape)
            run(x, y, None, n, workspace(n))
        return step

    # ------------------------------------------------------------ running
    def __call__(self, *inputs, out=None):
        if len(inputs) != len(self.input_specs):
            raise TypeError(f"plan: expected {len(self.input_specs)} input(s), got {len(inputs)}")
        for k, (x, (shape, dtype)) in enumerate(zip(inputs, self.input_specs)):
            if not isinstance(x, np.ndarray):
                raise TypeError(f"plan: input {k} must be a numpy.ndarray, got {type(x).__name__}")
            if x.shape != shape or x.dtype != dtype:
                raise ValueError(f"plan: compiled for input {k} of shape {shape} and dtype "
                                 f"{dtype}, got shape {x.shape} and dtype {x.dtype}; compile "
                                 f"again for other shapes (or compile with replan=True)")
        for step in self.steps:
            step(inputs)
        results = self._results(out, inputs)
        return results[0] if len(results) == 1 else tuple(results)

    def profile(self, *inputs, repeat=5):
        """Time each step on these inputs (best of `repeat` runs): a list of
        (op, module, output shape, milliseconds), in execution order."""
        import time
        self(*inputs)
        best = [float("inf")] * len(self.steps)
        for _ in range(repeat):
            for k, step in enumerate(self.steps):
                t0 = time.perf_counter()
                step(inputs)
                best[k] = min(best[k], time.perf_counter() - t0)
        return [(n.op, n.scope, n.outputs[0].shape, t * 1e3)
                for n, t in zip(self._step_nodes, best)]

    def _results(self, out, inputs):
        if out is None:
            outs = [np.empty(s, d) for s, d in self.output_specs]
        else:
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            if len(outs) != len(self.output_specs):
                raise ValueError(f"plan: out must hold {len(self.output_specs)} array(s)")
            for o, (s, d) in zip(outs, self.output_specs):
                if not isinstance(o, np.ndarray) or o.shape != s or o.dtype != d:
                    raise ValueError(f"plan: out must be an array of shape {s} and dtype {d}")
        for o, v in zip(outs, self._outputs):
            src = self._value_array(v)
            np.copyto(o, src if src is not None else self._get(("value", v), inputs))
        return outs
