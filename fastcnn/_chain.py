"""Convolution chains a plan runs as one step: a 1x1 expansion, a depthwise
convolution and a 1x1 projection (MobileNetV2's inverted residual blocks),
band by band with the tensors between them in each thread's cache
(_kernels._chain, conv_chain.h). The expansion may also be a network's first
layer: a square convolution over few channels (MobileNetV2's 3x3 stride-2
stem before its first depthwise layer), whose columns each band gathers.

find_chains picks them out of a rewritten node list; a Chain holds their
weights, packed once, and runs them on NCHW float32 arrays. Results agree
with the layers run one by one within rounding (a different summation
order); they are bit-identical for any thread count.
"""
import numpy as np

from fastcnn import _kernels
from fastcnn._functional.conv import layer_geometry
from fastcnn._graph import Value
from fastcnn._opinfo import info
from fastcnn._validation import FUSABLE_ACTIVATIONS, conv_output_size

__all__ = ["Chain", "find_chains", "conv_chain", "conv_layer", "input_layer", "producers"]

# The most columns (input channels x kernel taps) a first-layer expansion
# gathers: an image's 3 channels under a 3x3 kernel are 27.
FIRST_LAYER_COLUMNS = 32


class _Layer:
    """One 2-D float32 convolution of the graph with constant weights: its
    kernel geometry, weight, bias, activation and residual (a Value or None)."""

    def __init__(self, node, geom, weight, bias, activation, residual):
        self.node, self.geom, self.weight, self.bias = node, geom, weight, bias
        self.activation, self.residual = activation, residual

    @property
    def pointwise(self):
        return self.geom.pointwise

    @property
    def depthwise(self):
        return self.geom.depthwise

    @property
    def first_layer(self):
        """A square convolution over few input channels that the chain runs
        as a 1x1 expansion over its columns (at most FIRST_LAYER_COLUMNS of
        them, one group, no dilation, the same stride and padding both ways,
        padding as much after as before)."""
        g = self.geom
        return (g.groups == 1 and g.kernel_h == g.kernel_w > 1 and g.stride_h == g.stride_w
                and g.pad_h == g.pad_w and g.dilation_h == g.dilation_w == 1
                and g.in_channels * g.kernel_h * g.kernel_w <= FIRST_LAYER_COLUMNS
                and (g.out_h, g.out_w) == tuple(
                    conv_output_size(size, g.kernel_h, g.stride_h, g.pad_h, g.pad_h, 1)
                    for size in (g.in_h, g.in_w)))


def _const(v, resolve):
    if v is None:
        return None
    if not isinstance(v, Value):
        return np.asarray(v)
    v = resolve(v)
    return v.const if v.kind == "const" else False


def conv_layer(node, rewrite):
    """node as a _Layer the chain kernel can run, or None."""
    if info(node.op).family != "conv" or len(node.outputs) != 1:
        return None
    b = node.arguments()
    if not b or b.get("out") is not None or b.get("padding_mode", "zeros") != "zeros" \
            or b.get("algorithm") is not None:
        return None
    x = b.get("input")
    w = _const(b.get("weight"), rewrite.resolve)
    bias = _const(b.get("bias"), rewrite.resolve)
    activation = rewrite.activation_of(node)
    if (not isinstance(x, Value) or w is False or bias is False or w is None
            or w.ndim != 4 or w.dtype != np.float32 or len(x.shape) != 4
            or x.dtype != np.float32 or FUSABLE_ACTIVATIONS.get(activation, -1)
            not in _kernels._chain.ACTIVATIONS):
        return None
    geom = layer_geometry(node.op, 2, rewrite.resolve(x).shape, w.shape, b)
    return _Layer(node, geom, w, bias, activation, b.get("residual"))


def producers(nodes):
    """value id -> the node of `nodes` that produces it."""
    return {v.id: node for node in nodes for v in node.outputs}


def input_layer(node, producer, rewrite, readers):
    """The convolution whose output node reads, as a _Layer, where node is
    all that reads it and it adds no residual (so a fused step may keep it
    in cache); else None. producer: producers(nodes)."""
    src = rewrite.resolve(node.arguments()["input"])
    prod = producer.get(src.id)
    layer = conv_layer(prod, rewrite) if prod is not None else None
    if (layer is None or layer.residual is not None or prod.outputs[0] is not src
            or readers.get(src.id) != 1):
        return None
    return layer


def find_chains(nodes, rewrite, readers):
    """{id(projection node): (expansion layer, depthwise layer, projection
    layer)} for each expansion -> depthwise -> projection run whose inner
    outputs nothing else reads, where the chain kernel pays (see
    _kernels._chain.pays: on targets with fused multiply-adds)."""
    producer = producers(nodes)
    chains = {}
    for node in nodes:
        proj = conv_layer(node, rewrite)
        if proj is None or not proj.pointwise:
            continue
        dw = input_layer(node, producer, rewrite, readers)
        if dw is None or not dw.depthwise:
            continue
        exp = input_layer(dw.node, producer, rewrite, readers)
        if exp is None or not (exp.pointwise or exp.first_layer):
            continue
        if _kernels._chain.pays(True):
            chains[id(node)] = (exp, dw, proj)
    return chains


def _chain_geometry(expand, depthwise, project):
    """The chain kernel's geometry tuple (see _kernels._chain) from the layers'."""
    g_e, g_d, g_p = expand.geom, depthwise.geom, project.geom
    return (g_e.in_channels, g_d.in_h, g_d.in_w, g_d.in_channels, g_p.out_channels, g_d.out_h,
            g_d.out_w, g_d.kernel_h, g_d.kernel_w, g_d.stride_h, g_d.stride_w, g_d.pad_h,
            g_d.pad_w, g_d.dilation_h, g_d.dilation_w, g_e.in_h, g_e.in_w, g_e.kernel_h,
            g_e.stride_h, g_e.pad_h)


class Chain:
    """An expansion, a depthwise convolution and a projection, packed once
    for the instruction-set target bound now (a chain keeps that target's
    kernels, as a plan does)."""

    def __init__(self, expand, depthwise, project):
        self.batch = expand.geom.batch
        self.scopes = tuple(layer.node.scope for layer in (expand, depthwise, project))
        self.geom = _chain_geometry(expand, depthwise, project)
        self.input_shape = (self.batch, expand.geom.in_channels, expand.geom.in_h,
                            expand.geom.in_w)
        self.output_shape = (self.batch, self.geom[4]) + self.geom[5:7]
        self.activations = tuple(FUSABLE_ACTIVATIONS[layer.activation]
                                 for layer in (expand, depthwise, project))
        self._kernels = _kernels._chain
        self._l2 = _kernels._conv.cache_budgets()["l2"]
        self.packed = self._kernels.pack(self.geom, expand.weight, expand.bias,
                                         depthwise.weight, depthwise.bias, project.weight,
                                         project.bias, self._l2)
        self.scratch = self._kernels.plan(self.geom, True, self._l2)[2]

    def workspace_size(self, num_threads):
        return self.scratch * num_threads

    def bind(self, x, y, residual=None):
        """The chain's run on these arrays, checked once: a function
        (workspace, num_threads) -> None (a plan step's, on its buffers)."""
        a_e, a_d, a_p = self.activations
        return self._kernels.bind(self.geom, True, x, self.packed, residual, y,
                                  a_e, a_d, a_p, self._l2)

    def __call__(self, x, y, workspace, num_threads, residual=None):
        """y = the chain applied to x (+ residual before the last activation)."""
        self.bind(x, y, residual)(workspace, num_threads)


def conv_chain(input, residual=None, *, chain, out=None):
    """The op a plan records for a fused chain (its step calls the kernel
    directly; this is the same run with a workspace of its own)."""
    from fastcnn import _threads
    x = np.ascontiguousarray(input, np.float32)
    y = np.empty(chain.output_shape, np.float32) if out is None else out
    n = _threads.get_num_threads()
    chain(x, y, np.empty(chain.workspace_size(n), np.float32), n,
          None if residual is None else np.ascontiguousarray(residual))
    return y
