"""fastcnn.compile: a model as a preallocated inference plan."""
import threading
from collections import OrderedDict

import numpy as np

from fastcnn._autotune import check_setting
from fastcnn._graph import trace
from fastcnn._plan import Plan
from fastcnn.fusion import fuse
from fastcnn.nn.module import Module

__all__ = ["compile"]


class ReplanningPlan:
    """Plans per input shape, made on first use of each shape; the `LIMIT` most
    recently used are kept (a plan holds its buffers and packed weights)."""

    LIMIT = 8

    def __init__(self, model, dtype, autotune=False):
        self._model, self._dtype, self._plans = model, dtype, OrderedDict()
        self._autotune = autotune
        self._lock = threading.Lock()

    def _plan(self, x):
        """The plan for x's shape and dtype, made on first use."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"plan: input must be a numpy.ndarray, got {type(x).__name__}")
        key = (x.shape, x.dtype)
        with self._lock:                # one plan per shape even when threads race here
            plan = self._plans.get(key)
            if plan is None:
                plan = self._plans[key] = _make(self._model, x.shape, x.dtype, self._autotune)
                while len(self._plans) > self.LIMIT:
                    self._plans.popitem(last=False)
            else:
                self._plans.move_to_end(key)
        return plan

    def __call__(self, x, out=None):
        return self._plan(x)(x, out=out)

    def profile(self, x, repeat=5):
        """Plan.profile of the plan for x's shape (made if it is new)."""
        return self._plan(x).profile(x, repeat=repeat)

    @property
    def plans(self):
        """{(input shape, dtype): Plan} of the shapes kept, least recently used
        first (a copy)."""
        with self._lock:
            return OrderedDict(self._plans)

    @property
    def algorithms(self):
        """{(input shape, dtype): that plan's algorithms} of the shapes kept
        (with autotune each shape is timed on its own)."""
        return {key: plan.algorithms for key, plan in self.plans.items()}

    @property
    def nbytes(self):
        return sum(p.nbytes for p in self.plans.values())

    @property
    def weight_nbytes(self):
        """Bytes of prepacked weights over the plans kept (each packs its own)."""
        return sum(p.weight_nbytes for p in self.plans.values())


def _make(fused, input_shape, dtype, autotune=False):
    sample = np.random.default_rng(0).standard_normal(input_shape).astype(dtype)
    return Plan(trace(fused, sample), autotune=autotune)


def compile(model, input_shape, *, dtype=None, replan=False, autotune=False):
    """An inference plan for `model` on inputs of `input_shape`.

    The model is fused (fastcnn.fuse: BatchNorm folded, ReLU fused; traced
    and checked on this shape), traced into an op graph, and planned: every
    intermediate buffer and workspace is allocated once and reused across
    calls, buffers whose lifetimes do not overlap share memory, convolution
    weights are prepacked. A call allocates only the returned array (none
    with plan(x, out=y)). `plan.nbytes` is its memory for buffers and
    workspaces; `plan.weight_nbytes` for prepacked weights.

    dtype: of the inputs; by default the dtype of the model's floating-point
    parameters (float32 unless the model was made float64, e.g. with
    model.double()).

    Calling with another shape or dtype is an error, unless replan=True,
    which plans each new shape on first use (the 8 most recently used kept).

    autotune: False (default) runs each convolution with the algorithm the
    dispatcher's cost model picks, the same on every compile; True times
    every algorithm that can run it (on this machine, the thread count in
    use) and keeps the fastest; a mapping (a plan's `plan.algorithms`,
    {step name: algorithm}) gives those steps those algorithms.
    """
    if not isinstance(model, Module):
        raise TypeError(f"compile: expected a fastcnn.nn.Module, got {type(model).__name__}")
    check_setting(autotune, "compile")
    shape = tuple(int(s) for s in input_shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"compile: input_shape must be positive sizes, got {input_shape!r}")
    dtype = model_dtype(model) if dtype is None else np.dtype(dtype)
    fused = fuse(model, shape)
    if replan:
        r = ReplanningPlan(fused, dtype, autotune)
        r(np.zeros(shape, dtype))
        return r
    return _make(fused, shape, dtype, autotune)


def model_dtype(model):
    """The dtype of the model's floating-point parameters (float32 if it has none)."""
    dtypes = {p.dtype for p in model.parameters() if p is not None and p.dtype.kind == "f"}
    if len(dtypes) > 1:
        raise TypeError(f"compile: the model mixes parameter dtypes "
                        f"{sorted(str(d) for d in dtypes)}; convert it with model.to(dtype) "
                        f"or pass dtype=")
    return dtypes.pop() if dtypes else np.dtype(np.float32)
