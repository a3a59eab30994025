"""The backward rule of each recorded op, by the name its graph node carries.

A rule takes a Context (the call's arguments as the forward saw them, its
outputs, the output gradient, what its forward hook saved) and returns
{argument: gradient} for the arguments the tape wants (ctx.needs). Rules of
fastcnn's functional ops name arguments as the function's signature does;
rules of NumPy ufuncs and functions (positional) use argument positions.
FORWARD_HOOKS run an op while recording when its backward needs more than
the op returns (max pooling's indices, dropout's random state).
"""
from fastcnn._autograd import rules_nn, rules_numpy

__all__ = ["Context", "RULES", "POSITIONAL", "FORWARD_HOOKS", "READS", "READS_ALL",
           "FUSED_OUTPUT"]


class Context:
    """What a rule sees of one recorded call."""

    __slots__ = ("node", "args", "pos", "kw", "outputs", "grad", "grads", "extra", "targets")

    def __init__(self, node, tape, targets, grads, positional):
        self.node = node
        self.targets = targets
        if positional:
            self.pos = [tape.array(a) for a in node.args]
            self.kw = {k: tape.array(v) for k, v in node.kwargs.items()}
            self.args = None
        else:
            self.args = {k: tape.array(v) for k, v in node.arguments().items()}
            self.pos = self.kw = None
        self.outputs = [tape.data.get(o.id) for o in node.outputs]
        self.grads = grads
        self.grad = grads[0]
        self.extra = tape.extra.get(id(node))

    def needs(self, name):
        return name in self.targets


RULES = {**rules_nn.RULES, **rules_numpy.RULES}

# What a rule reads of the forward's arrays beyond their shapes: "in" (the
# call's array arguments), "out" (its outputs), both, or neither. An in-place
# op copies an array away first only if a recorded rule will read it.
_SHAPES_ONLY = ("add", "subtract", "negative", "positive", "flatten", "unflatten", "reshape",
                "squeeze", "expand_dims", "ravel", "transpose", "getitem", "copy", "pad",
                "pixel_shuffle", "pixel_unshuffle", "concatenate", "stack", "sum", "mean",
                "dropout", "dropout1d", "dropout2d", "dropout3d") + tuple(
    f"{kind}_pool{nd}d" for kind in ("avg", "adaptive_max", "adaptive_avg") for nd in (1, 2, 3))
_OUTPUT_ONLY = ("relu", "relu_", "sigmoid", "tanh", "exp", "sqrt", "softmax", "log_softmax",
                "softmin")
# ops that read their inputs only (their output too when they ran a fused
# activation: FUSED_OUTPUT)
_INPUT_ONLY = ("conv", "conv1d", "conv2d", "conv3d", "conv_transpose", "conv_transpose1d",
               "conv_transpose2d", "conv_transpose3d", "linear", "batch_norm", "instance_norm",
               "group_norm", "layer_norm", "prelu", "relu6", "leaky_relu", "leaky_relu_",
               "hardtanh", "hardtanh_", "silu", "hardswish", "hardsigmoid", "gelu", "mish",
               "softplus", "selu", "celu", "multiply", "square", "log", "absolute")
READS = {**{op: () for op in _SHAPES_ONLY}, **{op: ("out",) for op in _OUTPUT_ONLY},
         **{op: ("in",) for op in _INPUT_ONLY}}
READS_ALL = ("in", "out")
FUSED_OUTPUT = frozenset(op for op in _INPUT_ONLY if op.startswith(("conv", "linear"))
                         or op.endswith("_norm"))
POSITIONAL = frozenset(rules_numpy.RULES)
FORWARD_HOOKS = rules_nn.FORWARD_HOOKS
