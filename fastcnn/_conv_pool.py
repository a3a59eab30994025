"""A convolution and the max pool after it, run as one plan step: a
network's stem (ResNet's 7x7 stride-2 convolution, its folded BatchNorm and
ReLU, then a 3x3 stride-2 max pool). Run as two steps, the convolution
writes its whole output (3.2 MB at batch 1) and the pool reads it back;
fused, each blocked_oc task keeps its rows' sums in its scratch, pools them
there and writes only the pooled rows (_kernels._conv.max_pool_bind).

find_conv_pools picks the pairs out of a rewritten node list: a float32
convolution with constant weights that the dispatcher runs with blocked_oc,
an activation that keeps order (none, ReLU, ReLU6: it commutes with the
maximum), nothing else reading its output, and a max pool without indices,
dilation or ceil_mode. Results are bit-identical for any thread count, and
equal to the two steps' (the same sums; the maximum and the epilogue commute).
"""
import numpy as np

from fastcnn import _kernels
from fastcnn._chain import input_layer, producers
from fastcnn._functional.conv import ConvEngine
from fastcnn._functional.pool import pool_window
from fastcnn._graph import Value
from fastcnn._validation import FUSABLE_ACTIVATIONS

__all__ = ["ConvMaxPool", "find_conv_pools", "conv_max_pool"]


def _window(node):
    """(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w) of a max_pool2d
    node the kernel can fuse, or None."""
    if node.op != "max_pool2d" or len(node.outputs) != 1:
        return None
    b = node.arguments()
    if (not b or b.get("out") is not None or b.get("return_indices") or b.get("ceil_mode")
            or not isinstance(b.get("input"), Value)):
        return None
    try:
        kernel, stride, padding, dilation = pool_window(
            2, node.op, b["kernel_size"], b.get("stride"), b.get("padding", 0),
            b.get("dilation", 1))
    except (TypeError, ValueError):
        return None
    if dilation != (1, 1):
        return None
    return kernel + stride + padding


def find_conv_pools(nodes, rewrite, readers):
    """{id(pool node): (pool node, conv layer, window)} for each convolution -> max pool
    pair the fused kernel runs (see the module's docstring)."""
    producer = producers(nodes)
    pairs = {}
    for node in nodes:
        window = _window(node)
        if window is None:
            continue
        conv = input_layer(node, producer, rewrite, readers)
        if (conv is None
                or FUSABLE_ACTIVATIONS[conv.activation] not in _kernels._conv.POOL_ACTIVATIONS
                or not _kernels._conv.max_pool_applies(conv.geom, window, 4)
                or _kernels._conv.select(conv.geom, True) != "blocked_oc"):
            continue
        pairs[id(node)] = (node, conv, window)
    return pairs


class ConvMaxPool:
    """A convolution and a max pool, its weights packed once for the
    instruction-set target bound now (kept, as a plan keeps its kernels)."""

    def __init__(self, conv, window, pool_scope, num_threads):
        g = conv.geom
        self.geom, self.window = g, window
        self.scopes = (conv.node.scope, pool_scope)
        self.activation = FUSABLE_ACTIVATIONS[conv.activation]
        self.bias = None if conv.bias is None else np.ascontiguousarray(conv.bias, np.float32)
        self._kernels = _kernels._conv
        self.input_shape = (g.batch, g.in_channels, g.in_h, g.in_w)
        self.output_shape = (g.batch, g.out_channels) + self._kernels.max_pool_output(g, window)
        self.packed = ConvEngine(g, np.float32, "blocked_oc").pack(
            np.ascontiguousarray(conv.weight), num_threads)
        self._shared, self._per_thread = self._kernels.max_pool_plan(g, window, 4)

    def workspace_size(self, num_threads):
        return self._shared + self._per_thread * num_threads

    def bind(self, x, y, residual=None):
        """The run on these arrays, checked once: a function (workspace,
        num_threads) -> None (a plan step's, on its buffers). A residual is
        not taken (the rewrite fuses no pool after a convolution with one)."""
        if residual is not None:
            raise ValueError("conv_max_pool: a fused max pool takes no residual")
        return self._kernels.max_pool_bind(self.geom, self.window, x, self.packed, self.bias,
                                           y, self.activation)

    def __call__(self, x, y, workspace, num_threads, residual=None):
        """y = max_pool(act(conv(x) + bias))."""
        self.bind(x, y, residual)(workspace, num_threads)


def conv_max_pool(input, residual=None, *, conv_pool, out=None):
    """The op a plan records for a fused convolution and max pool (its step
    calls the kernel directly; this is the same run with a workspace of its own)."""
    from fastcnn import _threads
    x = np.ascontiguousarray(input, np.float32).reshape(conv_pool.input_shape)
    y = np.empty(conv_pool.output_shape, np.float32) if out is None else out
    n = _threads.get_num_threads()
    conv_pool(x, y, np.empty(conv_pool.workspace_size(n), np.float32), n, residual)
    return y
