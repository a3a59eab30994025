"""The op registry: what the tracer, the planner and summary know of each op a
graph records (fastcnn's functional ops, the forms the ONNX importer records,
NumPy functions and ufuncs), by the name its nodes carry."""
from dataclasses import dataclass

__all__ = ["OpInfo", "info", "NUMPY_VIEWS", "NUMPY_RECORDED"]


@dataclass(frozen=True)
class OpInfo:
    family: str = "other"          # conv, conv_transpose, pool, adaptive_pool, linear, norm, activation,
                                   # elementwise, shape, numpy
    nd: int = 0                    # spatial axes of conv and pool ops (0: an argument says)
    elementwise: bool = False      # may write its output over an input read for the last time
    takes_out: bool = True         # the planner passes it out=
    fuses_activation: bool = False  # its kernel applies relu / relu6 / silu in its last pass
    idempotent: bool = False       # op(op(x)) == op(x)
    spatial: bool = True           # its output keeps the input's spatial axes (receptive fields)


def _table():
    ops = {"conv": OpInfo("conv", fuses_activation=True),
           "conv_transpose": OpInfo("conv_transpose"),
           "conv_transpose_onnx": OpInfo("conv_transpose"),
           "conv_chain": OpInfo("conv_chain"), "conv_max_pool": OpInfo("conv_max_pool")}
    for nd in (1, 2, 3):
        ops[f"conv{nd}d"] = OpInfo("conv", nd, fuses_activation=True)
        ops[f"conv_transpose{nd}d"] = OpInfo("conv_transpose", nd)
        for kind in ("max", "avg"):
            ops[f"{kind}_pool{nd}d"] = OpInfo("pool", nd)
            ops[f"adaptive_{kind}_pool{nd}d"] = OpInfo("adaptive_pool", nd)
    for nd in (1, 2):
        ops[f"lp_pool{nd}d"] = OpInfo("pool", nd)
    for name in ("max_pool", "avg_pool", "lp_pool"):                 # ONNX, nd from arguments
        ops[name] = OpInfo("pool")
    ops["global_lp_pool"] = OpInfo("adaptive_pool")                  # ONNX
    ops["linear"] = OpInfo("linear", fuses_activation=True, spatial=False)
    for name in ("batch_norm", "instance_norm", "group_norm", "layer_norm"):
        ops[name] = OpInfo("norm", fuses_activation=True)
    for name in ("relu", "relu6"):
        ops[name] = OpInfo("activation", elementwise=True, idempotent=True)
    for name in ("leaky_relu", "elu", "selu", "celu", "hardtanh", "sigmoid", "tanh", "silu",
                 "hardswish", "hardsigmoid", "gelu", "mish", "softplus"):
        ops[name] = OpInfo("activation", elementwise=True)
    for name in ("relu_", "leaky_relu_", "elu_", "hardtanh_"):         # in place: no out=
        ops[name] = OpInfo("activation", takes_out=False)
    for name in ("add", "subtract", "multiply", "true_divide", "divide", "negative", "exp",
                 "log", "sqrt", "absolute"):                          # NumPy ufuncs
        ops[name] = OpInfo("elementwise", elementwise=True)
    for name in ("softmax", "log_softmax"):
        ops[name] = OpInfo("activation", spatial=False)
    for name in ("dropout", "dropout1d", "dropout2d", "dropout3d"):
        ops[name] = OpInfo("dropout", takes_out=False)
    for name in ("flatten", "unflatten"):
        ops[name] = OpInfo("shape", takes_out=False, spatial=False)
    for name in NUMPY_RECORDED + NUMPY_VIEWS + ("getitem", "astype"):
        ops[name] = OpInfo("numpy", takes_out=name in _NUMPY_TAKES_OUT,
                           elementwise=name in ("maximum", "minimum"),
                           spatial=name not in ("reshape", "transpose", "getitem"))
    return ops


# NumPy functions the tracer records inside forward(): views of their input,
# and computations; the ones the planner gives out=.
NUMPY_VIEWS = ("reshape", "squeeze", "expand_dims", "transpose", "ravel")
NUMPY_RECORDED = ("concatenate", "stack", "mean", "sum", "amax", "amin", "max", "min",
                  "maximum", "minimum", "where", "clip", "copy", "pad")
_NUMPY_TAKES_OUT = {"concatenate", "stack", "mean", "sum", "amax", "amin", "max", "min",
                    "maximum", "minimum", "clip", "astype"}

_OPS = _table()
_DEFAULT = OpInfo()


def info(op):
    """What is known of the op named `op` (defaults for an op the table does not list)."""
    return _OPS.get(op, _DEFAULT)
