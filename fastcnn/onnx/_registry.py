"""The ONNX operator registry and the helpers every operator module uses.

Each ONNX node is translated by a builder `op_<Type>(b, node, x)` that calls
b.call(op, fn, args, kwargs): with constant inputs the result is folded into a
constant; otherwise a graph node is recorded (its result computed on the
sample input, so shapes are known). Functions given to b.call accept out=, so
the planner can run them into preallocated buffers.
"""
import math

import numpy as np

__all__ = ["OPS", "SUPPORTED_MIN_OPSET", "op", "put", "rows_cols", "attr_str", "ints"]

# op_type -> (builder, check(node, opset) -> reason it cannot run, or None)
OPS = {}
SUPPORTED_MIN_OPSET = 7


def op(name, check=None):
    def register(fn):
        OPS[name] = (fn, check)
        return fn
    return register


def put(out, result):
    """Write result into out (when the planner gave one) and return it."""
    if out is None:
        return result
    np.copyto(out, result, casting="unsafe")
    return out

def rows_cols(shape, axis):
    """The 2-D shape ONNX Flatten (and softmax's opset<13 coercion) gives `shape`."""
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def attr_str(node, name, default):
    """A string attribute of an ONNX node (stored as bytes), or `default`."""
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def ints(entry):
    """A constant input's values as a list of Python ints."""
    return [int(v) for v in np.asarray(entry.array).reshape(-1)]
