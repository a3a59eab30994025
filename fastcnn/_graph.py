"""The op graph behind fastcnn.compile, fastcnn.summary and ONNX import.

A Graph is a list of Nodes in execution order. Each Node calls one function
(a fastcnn functional op, a NumPy ufunc, or a view such as reshape) on Values:
graph inputs, constants (weights), or earlier nodes' outputs.

Graphs come from tracing (`trace(model, example)`) or from ONNX import. While
tracing, every call of a `@traceable` functional op and every NumPy ufunc on a
traced array is recorded with its real result, so shapes are known; data
flow follows array identity (an in-place op rebinds its array to a new Value).
Module calls are recorded too (name, type, output), for summary().
"""
import functools
import inspect
import itertools
import threading

import numpy as np

from fastcnn._opinfo import NUMPY_RECORDED, NUMPY_VIEWS

__all__ = ["Value", "Node", "Graph", "Tracer", "traceable", "trace", "TraceError", "tracing",
           "recording", "root_array"]


class TraceError(RuntimeError):
    """forward() did something the graph cannot record."""


class Value:
    """One array in a graph: a graph input, a constant, or a node's output."""
    _ids = itertools.count()

    __slots__ = ("id", "shape", "dtype", "kind", "const", "node", "name")

    def __init__(self, shape, dtype, kind, const=None, name=None):
        self.id = next(Value._ids)
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.kind = kind              # "input", "const" or "op"
        self.const = const
        self.node = None
        self.name = name

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __repr__(self):
        return f"Value({self.name or self.id}, {self.shape}, {self.dtype}, {self.kind})"


class Node:
    """outputs = fn(*args, **kwargs) with Values in args and kwargs.

    view: the output shares the input's memory (reshape, flatten, slicing).
    inplace: the op wrote into args[0] (its output replaces that array).
    """
    __slots__ = ("op", "fn", "args", "kwargs", "outputs", "scope", "view", "inplace",
                 "_inputs", "_arguments")

    def __init__(self, op, fn, args, kwargs, outputs, scope="", view=False, inplace=False):
        self.op, self.fn, self.args, self.kwargs = op, fn, args, kwargs
        self.outputs, self.scope, self.view, self.inplace = outputs, scope, view, inplace
        self._inputs = self._arguments = None       # worked out once, when first asked
        for v in outputs:
            v.node = self

    def inputs(self):
        """The Values this node reads (a node's call never changes)."""
        if self._inputs is None:
            self._inputs = [a for a in itertools.chain(_flat(self.args),
                                                       _flat(self.kwargs.values()))
                            if isinstance(a, Value)]
        return self._inputs

    def arguments(self):
        """The call's arguments by parameter name, defaults filled in ({} when
        fn's signature cannot bind them); a dict the caller must not change."""
        if self._arguments is None:
            self._arguments = self._bind()
        return self._arguments

    def _bind(self):
        names, defaults = _parameters(self.fn)
        if names is not None and len(self.args) <= len(names) and \
                all(k in names for k in self.kwargs):
            bound = dict(zip(names, self.args))
            if not any(k in bound for k in self.kwargs):
                bound.update(self.kwargs)
                if all(n in bound or n in defaults for n in names):
                    return {n: bound[n] if n in bound else defaults[n] for n in names}
        try:       # what the fast path does not cover: *args, **kwargs, errors
            b = _signature(self.fn).bind(*self.args, **self.kwargs)
        except (TypeError, ValueError):
            return {}
        b.apply_defaults()
        return dict(b.arguments)

    def __repr__(self):
        return f"Node({self.op}, {[v.shape for v in self.outputs]}, scope={self.scope!r})"


@functools.lru_cache(maxsize=1024)
def _signature(fn):
    return inspect.signature(fn)


@functools.lru_cache(maxsize=1024)
def _parameters(fn):
    """(parameter names in order, {name: default}) of a signature without *args
    or **kwargs (keyword-only parameters last, as Python orders them), else
    (None, None): binding by hand is several times faster than inspect's."""
    try:
        params = list(_signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None, None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY) for p in params):
        return None, None
    names = tuple(p.name for p in params)
    return names, {p.name: p.default for p in params if p.default is not p.empty}


def _flat(items):
    for item in items:
        if isinstance(item, (list, tuple)):
            yield from _flat(item)
        else:
            yield item


class Graph:
    def __init__(self):
        self.inputs = []
        self.outputs = []
        self.nodes = []
        self.module_calls = []      # (name, module, output Value(s)) in call order, leaf modules

    def __repr__(self):
        return (f"Graph({len(self.nodes)} nodes, inputs={[v.shape for v in self.inputs]}, "
                f"outputs={[v.shape for v in self.outputs]})")


# ---------------------------------------------------------------- tracing

class _TraceState(threading.local):
    tracer = None           # a class default: no AttributeError to raise and catch per call


_state = _TraceState()


def _tracer():
    return _state.tracer


def tracing():
    """Whether this thread is recording a graph (fastcnn.compile's trace or a
    training-mode forward)."""
    return _state.tracer is not None


class TracedArray(np.ndarray):
    """An array seen by the tracer: NumPy ufuncs and common methods on it are
    recorded as graph nodes."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        tracer = _tracer()
        if tracer is None:
            base = [i.view(np.ndarray) if isinstance(i, TracedArray) else i for i in inputs]
            return getattr(ufunc, method)(*base, **kwargs)
        return tracer.ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        tracer = _tracer()
        if tracer is not None:
            return tracer.array_function(func, args, kwargs)
        base = [a.view(np.ndarray) if isinstance(a, TracedArray) else a for a in args]
        return func(*base, **kwargs)

    # methods that would bypass the tracer
    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _tracer().view_op("reshape", np.reshape, self, (shape,))

    def view(self, *args, **kwargs):
        if not args and not kwargs or (args and args[0] in (np.ndarray, TracedArray)):
            return np.ndarray.view(self, *args, **kwargs)
        raise TraceError("fastcnn.compile: ndarray.view(...) with a dtype is not supported in forward()")

    def flatten(self, order="C"):
        return _tracer().view_op("flatten", np.reshape, self, ((-1,),))

    ravel = flatten

    def __getitem__(self, key):
        tracer = _tracer()
        if tracer is None:
            return np.ndarray.__getitem__(self.view(np.ndarray), key)
        return tracer.view_op("getitem", _getitem, self, (key,))

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _tracer().view_op("transpose", np.transpose, self, (axes or None,))

    def astype(self, dtype, *args, **kwargs):
        return _tracer().op_call("astype", _astype, (self, np.dtype(dtype)), {})

    def copy(self, order="C"):
        return _tracer().op_call("copy", np.copy, (self,), {})

    # reductions as methods: through NumPy's functions, which the tracer records
    def sum(self, *args, **kwargs):
        return np.sum(self, *args, **kwargs)

    def mean(self, *args, **kwargs):
        return np.mean(self, *args, **kwargs)

    def max(self, *args, **kwargs):
        return np.max(self, *args, **kwargs)

    def min(self, *args, **kwargs):
        return np.min(self, *args, **kwargs)

    def __setitem__(self, key, value):
        tracer = _tracer()
        if tracer is None:
            np.ndarray.__setitem__(self.view(np.ndarray), key, value)
        else:
            tracer.setitem(self, key, value)


def root_array(a):
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a


def _is_view_of(result, source):
    """Whether result shows source's memory (an empty view shares no bytes,
    so it is recognised by the array it was made from)."""
    if np.shares_memory(result, source):
        return True
    return result.size == 0 and root_array(result) is root_array(source)


def _holds(seq, types):
    """Whether a list or tuple has an item of `types` (most hold only ints)."""
    for item in seq:
        if isinstance(item, types):
            return True
    return False


def _data_pointer(a):
    return a.__array_interface__["data"][0]


def _getitem(x, key):
    return x[key]


def _astype(x, dtype, out=None):
    if out is None:
        return x.astype(dtype)
    out[...] = x
    return out


class Tracer:
    def __init__(self, model):
        self.graph = Graph()
        self.values = {}          # id(array object) -> Value
        self.keep = []            # keeps traced objects alive so ids stay unique
        self.depth = 0            # > 0 inside a recorded op: nested calls are not recorded
        self.scopes = [""]
        self.names = {id(m): n for n, m in model.named_modules()} if model is not None else {}

    # -- values
    def wrap(self, array, value):
        t = np.asarray(array).view(TracedArray)
        self.values[id(t)] = value
        self.keep.append(t)
        return t

    def value_of(self, obj):
        if isinstance(obj, np.ndarray):
            v = self.values.get(id(obj))
            if v is not None:
                return v
            if isinstance(obj, TracedArray):
                raise TraceError("fastcnn.compile: forward() used an array the tracer did not "
                                 "see produced (an unsupported NumPy operation?)")
            const = Value(obj.shape, obj.dtype, "const", const=obj)
            self.values[id(obj)] = const
            self.keep.append(obj)
            return const
        return obj

    def to_graph(self, obj):
        """Arguments as the graph stores them: arrays become Values."""
        if isinstance(obj, np.ndarray):
            return self.value_of(obj)
        if isinstance(obj, (list, tuple)) and _holds(obj, (np.ndarray, list, tuple)):
            return type(obj)(self.to_graph(o) for o in obj)
        return obj

    @staticmethod
    def unwrap(obj):
        if isinstance(obj, TracedArray):
            return obj.view(np.ndarray)
        if isinstance(obj, (list, tuple)) and _holds(obj, (TracedArray, list, tuple)):
            return type(obj)(Tracer.unwrap(o) for o in obj)
        return obj

    # -- recording
    def record(self, op, fn, args, kwargs, result, view=False, inplace_target=None):
        """Add a node; return its result as traced arrays. An in-place op's
        result is its target array, now bound to the node's output Value."""
        g_args = self.to_graph(args)
        g_kwargs = {k: self.to_graph(v) for k, v in kwargs.items()}
        results = result if isinstance(result, tuple) else (result,)
        outs = [Value(np.shape(r), np.asarray(r).dtype, "op") for r in results]
        node = Node(op, fn, g_args, g_kwargs, outs, self.scopes[-1], view=view,
                    inplace=inplace_target is not None)
        self.graph.nodes.append(node)
        self.recorded(node, results)
        wrapped = []
        for i, (r, v) in enumerate(zip(results, outs)):
            if i == 0 and inplace_target is not None:
                self.values[id(inplace_target)] = v
                wrapped.append(inplace_target)
            else:
                wrapped.append(self.wrap(r, v))
        return tuple(wrapped) if isinstance(result, tuple) else wrapped[0]

    # -- what a subclass (the training recorder) adds
    def recorded(self, node, results):
        """Called for each new node with its results (plain arrays)."""

    def before_inplace(self, target):
        """Called before an op overwrites `target`, an array the graph has seen."""

    def call(self, op, fn, args, kwargs):
        """Run a recorded op on plain arrays."""
        return fn(*args, **kwargs)

    def setitem(self, target, key, value):
        raise TraceError("fastcnn.compile: item assignment on an intermediate array in forward() "
                         "is not supported")

    def other_function(self, func, args, kwargs):
        raise TraceError(f"fastcnn.compile: numpy.{func.__name__} is not supported in forward()")

    def op_call(self, op, fn, args, kwargs):
        if self.depth:
            return fn(*self.unwrap(args), **self.unwrap(kwargs))
        inplace_target = None
        out = kwargs.get("out")
        if kwargs.get("inplace") or (out is not None and args and out is args[0]) or \
                (op.endswith("_") and args and isinstance(args[0], np.ndarray)):
            inplace_target = args[0]        # relu_(x), f(x, inplace=True), f(x, out=x)
        elif out is not None:
            raise TraceError(f"fastcnn.compile: {op}(out=...) into another array inside "
                             f"forward() is not supported; use the returned array")
        if inplace_target is not None:
            self.before_inplace(inplace_target)
        self.depth += 1
        try:
            result = self.call(op, fn, self.unwrap(args), self.unwrap(kwargs))
        finally:
            self.depth -= 1
        first = args[0] if args and isinstance(args[0], np.ndarray) else None
        if (inplace_target is None and first is not None and isinstance(result, np.ndarray)
                and _is_view_of(self.unwrap(result), self.unwrap(first))):
            if result.shape == first.shape and _data_pointer(result) == _data_pointer(first):
                return first                # identity (e.g. dropout in eval mode): no node
            return self.record(op, fn, args, kwargs, result, view=True)   # flatten, reshape
        return self.record(op, fn, args, kwargs, result, inplace_target=inplace_target)

    def view_op(self, op, fn, x, extra):
        result = fn(x.view(np.ndarray), *extra)
        return self.record(op, fn, (x,) + tuple(extra), {}, result, view=True)

    def ufunc(self, ufunc, method, inputs, kwargs):
        if method != "__call__" or ufunc.nout != 1:
            raise TraceError(f"fastcnn.compile: numpy.{ufunc.__name__}.{method} is not supported "
                             f"in forward()")
        out = kwargs.pop("out", None)
        if kwargs:
            raise TraceError(f"fastcnn.compile: numpy.{ufunc.__name__} with {sorted(kwargs)} is "
                             f"not supported in forward()")
        if out is not None:
            out = out[0] if isinstance(out, tuple) else out
            if not any(out is i for i in inputs):
                raise TraceError("fastcnn.compile: a ufunc writing into an unrelated array is not "
                                 "supported in forward()")
        base = self.unwrap(tuple(inputs))
        if out is not None:
            self.before_inplace(out)
        result = ufunc(*base, out=self.unwrap(out)) if out is not None else ufunc(*base)
        fn = functools.partial(_ufunc_call, ufunc)
        # x += y rebinds x to the result, a new Value (the planner may write it
        # into x's buffer when x is not read again)
        return self.record(ufunc.__name__, fn, tuple(inputs), {}, result, inplace_target=out)

    def array_function(self, func, args, kwargs):
        name = func.__name__
        if name in NUMPY_VIEWS:
            result = func(*self.unwrap(args), **self.unwrap(kwargs))
            return self.record(name, func, args, kwargs, result, view=True)
        if name in NUMPY_RECORDED:
            result = func(*self.unwrap(args), **self.unwrap(kwargs))
            return self.record(name, func, args, kwargs, result)
        return self.other_function(func, args, kwargs)

    # -- modules
    def module_call(self, module, args, kwargs):
        name = self.names.get(id(module), type(module).__name__)
        self.scopes.append(name)
        try:
            out = module.forward(*args, **kwargs)
        finally:
            self.scopes.pop()
        if not module._modules:
            outs = out if isinstance(out, tuple) else (out,)
            values = tuple(self.values.get(id(o)) for o in outs)
            self.graph.module_calls.append((name, module, values))
        return out


def _ufunc_call(ufunc, *args, out=None):
    return ufunc(*args, out=out) if out is not None else ufunc(*args)


def traceable(op):
    """Mark a functional op so the tracer records calls to it. Outside a
    trace it costs one attribute lookup."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            tracer = _state.tracer
            if tracer is None:
                return fn(*args, **kwargs)
            return tracer.op_call(op, fn, args, kwargs)
        wrapper.__wrapped_op__ = fn
        return wrapper
    return decorate


_hook_lock = threading.Lock()
_hook_users = 0
# What Module.__call__ runs instead of forward() while any thread traces (nn
# reads it here: the graph layer sits below nn and never imports it).
module_call_hook = None


def _module_hook(module, args, kwargs):
    """Installed on Module.__call__ while any thread traces; records only in
    the tracing thread."""
    tracer = _tracer()
    if tracer is None:
        return module.forward(*args, **kwargs)
    return tracer.module_call(module, args, kwargs)


def _hook(install):
    global _hook_users, module_call_hook
    with _hook_lock:
        _hook_users += 1 if install else -1
        module_call_hook = _module_hook if _hook_users > 0 else None


class recording:
    """Install `tracer` as this thread's tracer while the block runs (a
    training-mode forward's recorder)."""

    def __init__(self, tracer):
        self.tracer = tracer

    def __enter__(self):
        if _state.tracer is not None:
            raise TraceError("a graph is already being recorded in this thread")
        _state.tracer = self.tracer
        _hook(True)
        return self.tracer

    def __exit__(self, *exc):
        _state.tracer = None
        _hook(False)
        return False


def trace(model, *examples):
    """Run model(*examples) once, recording every op into a Graph."""
    if _tracer() is not None:
        raise TraceError("fastcnn.compile: tracing is already in progress in this thread")
    tracer = Tracer(model if hasattr(model, "named_modules") else None)
    inputs = []
    for i, ex in enumerate(examples):
        v = Value(ex.shape, ex.dtype, "input", name=f"input{i}")
        tracer.graph.inputs.append(v)
        inputs.append(tracer.wrap(np.array(ex), v))
    _state.tracer = tracer
    _hook(True)
    try:
        out = model(*inputs)
    finally:
        _state.tracer = None
        _hook(False)
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        if not isinstance(o, np.ndarray):
            raise TraceError(f"fastcnn.compile: forward() must return arrays, got {type(o).__name__}")
        tracer.graph.outputs.append(tracer.value_of(o))
    return tracer.graph
