"""Recording a training-mode forward and walking it back.

`record(module, args, kwargs)` runs module.forward under the graph tracer
(fastcnn._graph), which sees every fastcnn functional op, NumPy ufunc and
NumPy function the forward calls, residual `+=` and `x + self.conv(x)`
included; the recorder keeps, for each recorded array, the values the forward
computed, plus what a backward rule needs beyond its inputs and outputs
(max pooling's indices, dropout's generator state). An op that overwrites an
array the tape still needs (`out += identity`, `relu(x, inplace=True)`)
first moves the old values into a copy, so the tape keeps what the forward
saw. The tape is kept on the module until `module.backward(grad)` walks it
in reverse through the rules of fastcnn._autograd.rules, accumulating each
parameter's gradient into its .grad; then it is freed.

Compiled plans and eval-mode calls never record (no cost).
"""
import collections

import numpy as np

from fastcnn import _graph, _malloc
from fastcnn._functional import activation_grad as _ag
from fastcnn._autograd import rules as _rules
from fastcnn._autograd.parameter import Parameter

__all__ = ["record", "Tape"]


class _Recorder(_graph.Tracer):
    """The graph tracer, keeping the forward's arrays for backward."""

    def __init__(self, model):
        super().__init__(model)
        self.data = {}                              # Value id -> the array's values
        self.extra = {}                             # Node id -> what its rule saved
        self.by_root = collections.defaultdict(list)  # id(root array) -> Value ids on it
        self.needed = set()                          # Value ids some rule reads the data of
        self.fused = {}                              # Value id -> node that may read it
        self.pending = None

    def _remember(self, value, array):
        self.data[value.id] = array
        self.by_root[id(_graph.root_array(array))].append(value.id)

    def wrap(self, array, value):
        t = super().wrap(array, value)
        self._remember(value, t.view(np.ndarray))
        return t

    def recorded(self, node, results):
        reads = _rules.READS.get(node.op, _rules.READS_ALL)
        if "in" in reads:
            self.needed.update(v.id for v in node.inputs())
        if "out" in reads:
            self.needed.update(v.id for v in node.outputs)
        elif node.op in _rules.FUSED_OUTPUT:          # read when it fused an activation:
            for v in node.outputs:                     # decided if an in-place op comes
                self.fused[v.id] = node
        for v, r in zip(node.outputs, results):
            if isinstance(r, np.ndarray):
                self._remember(v, r.view(np.ndarray) if type(r) is not np.ndarray else r)
        if self.pending is not None:
            self.extra[id(node)] = self.pending
            self.pending = None

    def before_inplace(self, target):
        """Saved by copy: every recorded array on target's memory that a rule
        will read gets its values copied before the op writes."""
        for vid in self.by_root.pop(id(_graph.root_array(target)), ()):
            a = self.data.get(vid)
            if a is None:
                continue
            node = self.fused.get(vid)
            if vid in self.needed or (node is not None
                                      and node.arguments().get("activation") is not None):
                self.data[vid] = a.copy()

    def call(self, op, fn, args, kwargs):
        hook = _rules.FORWARD_HOOKS.get(op)
        if hook is None:
            return fn(*args, **kwargs)
        result, self.pending = hook(fn, args, kwargs)
        return result

    def setitem(self, target, key, value):
        """x[key] = value on a recorded array: in place, as a node whose rule
        routes the gradient to the assigned value and the untouched rest."""
        self.before_inplace(target)
        plain = target.view(np.ndarray)
        plain[key] = self.unwrap(value)
        self.record("setitem", _setitem, (target, key, value), {}, plain,
                    inplace_target=target)

    def other_function(self, func, args, kwargs):
        """A NumPy function with no backward rule: computed and recorded, so
        backward names it if a gradient has to flow through it."""
        result = func(*self.unwrap(args), **self.unwrap(kwargs))
        return self.record(f"numpy.{func.__name__}", func, args, kwargs, result)


def _setitem(x, key, value):
    x = x.copy()
    x[key] = value
    return x


def record(module, args, kwargs):
    """module(*args, **kwargs) with its forward recorded on module's tape;
    returns plain arrays."""
    recorder = _Recorder(module)
    inputs, originals = [], {}
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and not isinstance(a, Parameter):
            v = _graph.Value(a.shape, a.dtype, "input", name=f"input{i}")
            recorder.graph.inputs.append(v)
            wrapped = recorder.wrap(a, v)
            originals[id(wrapped)] = a
            a = wrapped
        inputs.append(a)
    with _graph.recording(recorder):
        out = recorder.module_call(module, tuple(inputs), kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        recorder.graph.outputs.append(recorder.values.get(id(o)) if isinstance(o, np.ndarray)
                                      else None)
    object.__setattr__(module, "_tape", Tape(type(module).__name__, recorder,
                                             isinstance(out, tuple)))
    # an input returned (written in place) is returned as the caller's own array
    if isinstance(out, tuple):
        return tuple(originals.get(id(o)) if id(o) in originals else _graph.Tracer.unwrap(o)
                     for o in out)
    return originals[id(out)] if id(out) in originals else _graph.Tracer.unwrap(out)


class Tape:
    """One recorded forward: its graph, arrays and saved extras."""

    def __init__(self, name, recorder, several):
        self.name = name
        self.graph = recorder.graph
        self.data = recorder.data
        self.extra = recorder.extra
        self.several = several

    def array(self, obj):
        """A graph argument's array (or the argument itself when it is not a Value)."""
        if isinstance(obj, _graph.Value):
            return obj.const if obj.kind == "const" else self.data[obj.id]
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.array(o) for o in obj)
        return obj

    def _wanted(self, input_grad):
        """Values whose gradient backward computes: the inputs (with
        input_grad), parameters with requires_grad, and whatever depends on them."""
        wanted = set()
        if input_grad:
            wanted.update(v.id for v in self.graph.inputs)
        for node in self.graph.nodes:
            for v in node.inputs():
                if v.kind == "const" and isinstance(v.const, Parameter) and v.const.requires_grad:
                    wanted.add(v.id)
            if any(v.id in wanted for v in node.inputs()):
                wanted.update(o.id for o in node.outputs)
        return wanted

    def output_grads(self, grad_output):
        """{output Value id: gradient}, checked against the outputs."""
        where = f"{self.name}.backward"
        outs = self.graph.outputs
        several = self.several or isinstance(grad_output, tuple)
        grads_out = grad_output if several else (grad_output,)
        if not isinstance(grads_out, tuple) or len(grads_out) != len(outs):
            raise ValueError(f"{where}: expected {len(outs)} gradient(s), one per output, got "
                             f"{len(grads_out) if isinstance(grads_out, tuple) else 1}")
        grads = {}
        for i, (v, g) in enumerate(zip(outs, grads_out)):
            if g is None or v is None:
                continue
            g = np.asarray(g)
            if g.shape != v.shape:
                raise ValueError(f"{where}: gradient {i} must have the output's shape "
                                 f"{v.shape}, got {g.shape}")
            if g.dtype.kind != "f":
                raise TypeError(f"{where}: gradient {i} must be a float array, got {g.dtype}")
            grads[v.id] = g.astype(v.dtype, copy=False)
        return grads

    def backward(self, grads, input_grad):
        """Walk the tape back from output_grads(); returns the input gradients."""
        with _malloc.held():                       # the next step reuses this memory
            return self._backward(grads, input_grad)

    def _backward(self, grads, input_grad):
        where = f"{self.name}.backward"
        wanted = self._wanted(input_grad)
        given = list(grads.values())
        for node in reversed(self.graph.nodes):
            gouts = [grads.pop(o.id, None) for o in node.outputs]
            if all(g is None for g in gouts):
                continue
            rule = _rules.RULES.get(node.op)
            positional = node.op in _rules.POSITIONAL
            named = list(enumerate(node.args)) + list(node.kwargs.items()) if positional \
                else node.arguments().items()
            targets = {name: arg for name, arg in named if _has_wanted(arg, wanted)}
            if not targets:
                continue
            if rule is None:
                raise NotImplementedError(
                    f"{where}: no backward for {node.op!r} (in {node.scope or 'forward'}): "
                    f"fastcnn cannot differentiate through it")
            ctx = _rules.Context(node, self, targets, gouts, positional)
            for name, g in rule(ctx).items():
                if name in targets and g is not None:
                    _accumulate(grads, targets[name], g, wanted)
            for o in node.outputs:
                self.data.pop(o.id, None)                  # free what no earlier node reads
        params = [(v.const, grads.pop(v.id, None)) for v in self._params()]
        params = [(p, g) for p, g in params if g is not None]
        results = tuple(grads.get(v.id) if input_grad else None for v in self.graph.inputs)
        reachable = given + [g for _, g in params] + [r for r in results if r is not None]
        for p, g in params:
            if p.grad is not None:
                p.grad += g
            elif _own(g, p, reachable):
                p.grad = g.reshape(p.shape)
            else:
                p.grad = np.array(g, dtype=p.dtype, copy=True).reshape(p.shape)
        self.data = self.extra = None
        if not input_grad:
            return None
        return results if len(results) != 1 else results[0]

    def _params(self):
        seen = set()
        for node in self.graph.nodes:
            for v in node.inputs():
                if v.kind == "const" and isinstance(v.const, Parameter) and v.id not in seen:
                    seen.add(v.id)
                    yield v


def _own(g, p, reachable):
    """Whether g can become p.grad as it is: a fresh array of p's dtype and
    size (no view) whose memory no other array the caller can reach shares
    (the gradients given, returned, or set on another parameter); else
    p.grad is a copy."""
    return (isinstance(g, np.ndarray) and g.base is None and g.dtype == p.dtype
            and g.size == p.size and g.flags.c_contiguous and g.flags.writeable
            and sum(o is g or np.may_share_memory(o, g) for o in reachable) == 1)


def _has_wanted(arg, wanted):
    if isinstance(arg, _graph.Value):
        return arg.id in wanted
    if isinstance(arg, (list, tuple)):
        return any(_has_wanted(a, wanted) for a in arg)
    return False


def _accumulate(grads, target, g, wanted):
    if isinstance(target, (list, tuple)):
        for t, gi in zip(target, g):
            if gi is not None:
                _accumulate(grads, t, gi, wanted)
        return
    if not isinstance(target, _graph.Value) or target.id not in wanted:
        return
    if g.shape != target.shape:
        g = np.broadcast_to(g, target.shape) if g.ndim == 0 else g.reshape(target.shape)
    prev = grads.get(target.id)
    grads[target.id] = g if prev is None else _ag.sum_grads(prev, g)
