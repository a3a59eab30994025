"""ONNX operators of linear algebra and element-wise arithmetic."""
import numpy as np

from fastcnn._functional import linear as L
from fastcnn.onnx._registry import OPS, op, put


# ---------------------------------------------------------------- linear algebra

def linear(input, weight, bias, activation=None, out=None):
    return L.linear(input, weight, bias, out=out, activation=activation)


def gemm(a, b, c, alpha, beta, trans_a, trans_b, out=None):
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    y = alpha * (a @ b)
    if c is not None:
        y = y + beta * c
    return put(out, y.astype(a.dtype))


@op("Gemm")
def op_Gemm(b, node, x):
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    c = x[2] if len(x) > 2 else None
    a, w = x[0], x[1]
    if (not ta and alpha == 1.0 and w.const and a.array.dtype in (np.float32, np.float64)
            and w.array.dtype == a.array.dtype
            and (c is None or (c.const and beta == 1.0 and c.array.size == (w.array.shape[0] if tb else w.array.shape[1])))):
        weight = w.array if tb else np.ascontiguousarray(w.array.T)
        bias = None if c is None else np.ascontiguousarray(np.broadcast_to(c.array, (weight.shape[0],)), a.array.dtype)
        return b.call("linear", linear, [a, b.const(weight), None if bias is None else b.const(bias)], {})
    return b.call("gemm", gemm, [a, w, c, alpha, beta, ta, tb], {})


def matmul(a, b, out=None):
    return put(out, np.matmul(a, b))


@op("MatMul")
def op_MatMul(b, node, x):
    a, w = x
    if (w.const and w.array.ndim == 2 and a.array.ndim >= 1 and a.array.dtype == w.array.dtype
            and a.array.dtype in (np.float32, np.float64)):
        return b.call("linear", linear, [a, b.const(np.ascontiguousarray(w.array.T)), None], {})
    return b.call("matmul", matmul, [a, w], {})


# ---------------------------------------------------------------- element-wise arithmetic

def _binary(ufunc):
    def run(a, b, out=None):
        if out is not None and out.shape == np.broadcast_shapes(np.shape(a), np.shape(b)):
            return ufunc(a, b, out=out, casting="unsafe")
        return put(out, ufunc(a, b))
    return run


_BINARY = {"Add": ("add", np.add), "Sub": ("subtract", np.subtract),
           "Mul": ("multiply", np.multiply)}
for _name, (_op, _uf) in _BINARY.items():
    OPS[_name] = ((lambda o, f: lambda b, node, x: b.call(o, _binary(f), [x[0], x[1]], {}))(_op, _uf), None)


def power(a, b, out=None):
    """ONNX Pow: the result has the base's type (float32 ** int64 is float32)."""
    with np.errstate(all="ignore"):
        return put(out, np.power(a, b).astype(np.asarray(a).dtype))


OPS["Pow"] = (lambda b, node, x: b.call("power", power, [x[0], x[1]], {}), None)


def divide(a, b, out=None):
    if np.issubdtype(np.result_type(a, b), np.integer):
        return put(out, np.trunc(np.divide(a, b)).astype(np.result_type(a, b)))
    return _binary(np.true_divide)(a, b, out=out)


OPS["Div"] = (lambda b, node, x: b.call("divide", divide, [x[0], x[1]], {}), None)


def variadic(ufunc):
    def run(*arrays, out=None):
        result = arrays[0]
        for a in arrays[1:]:
            result = ufunc(result, a)
        return put(out, np.asarray(result))
    return run


OPS["Sum"] = (lambda b, node, x: b.call("sum_n", variadic(np.add), list(x), {}), None)
OPS["Max"] = (lambda b, node, x: b.call("max_n", variadic(np.maximum), list(x), {}), None)
OPS["Min"] = (lambda b, node, x: b.call("min_n", variadic(np.minimum), list(x), {}), None)


def _ufunc1(ufunc):
    def run(a, out=None):
        return put(out, ufunc(a))
    return run


for _name, _uf in {"Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Neg": np.negative,
                   "Abs": np.abs, "Reciprocal": np.reciprocal}.items():
    OPS[_name] = ((lambda n, f: lambda b, node, x: b.call(n, _ufunc1(f), [x[0]], {}))(_name.lower(), _uf), None)


for _name, _uf in {"Floor": np.floor, "Ceil": np.ceil, "Round": np.rint, "Sign": np.sign,
                   "Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Asin": np.arcsin,
                   "Acos": np.arccos, "Atan": np.arctan, "Sinh": np.sinh, "Cosh": np.cosh,
                   "Asinh": np.arcsinh, "Acosh": np.arccosh, "Atanh": np.arctanh,
                   "Not": np.logical_not}.items():
    OPS[_name] = ((lambda n, f: lambda b, node, x: b.call(n, _ufunc1(f), [x[0]], {}))(_name.lower(), _uf), None)


def celu(x, alpha, out=None):
    with np.errstate(over="ignore"):
        y = np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(x / alpha))
    return put(out, y.astype(x.dtype))


@op("Celu")
def op_Celu(b, node, x):
    alpha = float(node.attrs.get("alpha", 1.0))
    return b.call("celu", celu, [x[0], np.array(alpha, x[0].array.dtype)], {})


# ---------------------------------------------------------------- comparisons and selection

def _compare(ufunc):
    def run(a, b, out=None):
        return put(out, ufunc(a, b))
    return run


for _name, _uf in {"Greater": np.greater, "Less": np.less, "Equal": np.equal,
                   "GreaterOrEqual": np.greater_equal, "LessOrEqual": np.less_equal,
                   "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}.items():
    OPS[_name] = ((lambda n, f: lambda b, node, x: b.call(n, _compare(f), [x[0], x[1]], {}))(
        _name.lower(), _uf), None)


def where(condition, a, b, out=None):
    return put(out, np.where(condition, a, b))


@op("Where")
def op_Where(b, node, x):
    return b.call("where", where, [x[0], x[1], x[2]], {})
