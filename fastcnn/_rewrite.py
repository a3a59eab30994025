"""The plan's rewrites of a graph, before any memory is assigned: a residual
add moves into the convolution that feeds it, an activation into the layer
that feeds it, a relu of a value that already had relu applied is dropped
(relu is idempotent), a 1x1 expansion, depthwise convolution and 1x1
projection become one conv_chain node (see _chain), and a convolution and
the max pool after it one conv_max_pool node (see _conv_pool)."""
from fastcnn._chain import Chain, conv_chain, find_chains
from fastcnn._conv_pool import ConvMaxPool, conv_max_pool, find_conv_pools
from fastcnn._graph import Node, Value
from fastcnn._opinfo import info
from fastcnn._validation import FUSABLE_ACTIVATIONS

__all__ = ["Rewrite"]

# Activations a layer's kernel can apply in its last pass.
_FUSABLE = {name for name in FUSABLE_ACTIVATIONS if name}


class Rewrite:
    """nodes: the graph's nodes after the rewrites, in execution order;
    alias: value id -> the value now holding its data (a fused output);
    activation: id(node) -> the activation fused into that node."""

    def __init__(self, graph, num_threads=1):
        self.graph = graph
        self.alias = {}
        self.activation = {}
        self.nodes = self._fuse_max_pools(self._fuse_chains(self._elide_idempotent(
            self._fuse_activations(self._fuse_residuals(graph.nodes)))), num_threads)

    def activation_of(self, node):
        """The activation the node's kernel applies: fused here, or its own argument."""
        return self.activation.get(id(node)) or node.arguments().get("activation")

    def resolve(self, v):
        """The value that holds v's data after the rewrites."""
        while v.id in self.alias:
            v = self.alias[v.id]
        return v

    def _fused_activation(self, v):
        node = v.node
        if node is None:
            return None
        if info(node.op).idempotent:
            return node.op
        if info(node.op).fuses_activation:
            return self.activation_of(node)
        return None

    def _readers(self, nodes):
        """value id (aliases resolved) -> how many nodes (and graph outputs) read it."""
        readers = {}
        for node in nodes:
            for v in node.inputs():
                v = self.resolve(v)
                readers[v.id] = readers.get(v.id, 0) + 1
        for v in self.graph.outputs:
            v = self.resolve(v)
            readers[v.id] = readers.get(v.id, 0) + 1
        return readers

    def _fuse_residuals(self, nodes):
        """add(conv(x), r) -> conv(x, residual=r) when nothing else reads the
        convolution's output and r has the output's shape: the sum happens in
        the convolution's epilogue (before any activation fused later). The
        convolution moves to the add's place, after r is computed."""
        readers = self._readers(nodes)
        fused = {}                # id(conv node) -> replacement placed at the add
        drop = set()
        for node in nodes:
            if node.op != "add" or len(node.args) != 2 or node.kwargs:
                continue
            a, b = node.args
            if not (isinstance(a, Value) and isinstance(b, Value)):
                continue
            out = node.outputs[0]
            for conv_v, other in ((a, b), (b, a)):
                conv = conv_v.node
                if (conv is None or info(conv.op).family != "conv" or id(conv) in fused
                        or readers.get(conv_v.id) != 1 or len(conv.outputs) != 1
                        or conv_v.shape != out.shape or other.shape != out.shape
                        or conv_v.dtype != other.dtype or other is conv_v):
                    continue
                bound = conv.arguments()
                if "residual" not in bound or bound["residual"] is not None \
                        or bound.get("activation") is not None:
                    continue
                fused[id(conv)] = Node(conv.op, conv.fn, conv.args,
                                       dict(conv.kwargs, residual=other), conv.outputs,
                                       conv.scope)
                fused[id(node)] = fused[id(conv)]
                drop.add(id(conv))
                self.alias[out.id] = conv_v
                break
        result = []
        for node in nodes:
            if id(node) in drop:
                continue
            result.append(fused.get(id(node), node))
        return result

    def _fuse_activations(self, nodes):
        """activation(layer(x)) -> layer(x, activation=...) when nothing else
        reads the layer's output: one pass over memory instead of two."""
        readers = self._readers(nodes)
        keep = []
        for node in nodes:
            src = node.args[0] if node.args and isinstance(node.args[0], Value) else None
            src = self.resolve(src) if src is not None else None
            producer = src.node if src is not None else None
            if (node.op in _FUSABLE and producer is not None and info(producer.op).fuses_activation
                    and readers.get(src.id) == 1 and len(node.inputs()) == 1
                    and len(producer.outputs) == 1 and producer.outputs[0] is src
                    and id(producer) not in self.activation
                    and producer.arguments().get("activation") is None):
                self.activation[id(producer)] = node.op
                self.alias[node.outputs[0].id] = src
                continue
            keep.append(node)
        return keep

    def _elide_idempotent(self, nodes):
        keep = []
        for node in nodes:
            src = node.args[0] if node.args and isinstance(node.args[0], Value) else None
            if info(node.op).idempotent and src is not None and \
                    self._fused_activation(self.resolve(src)) == node.op:
                self.alias[node.outputs[0].id] = self.resolve(src)
                continue
            keep.append(node)
        return keep

    @staticmethod
    def _replaced(nodes, drop, fused):
        """nodes without those whose id is in drop, each whose id is in
        fused (id -> node) replaced by its fused node."""
        return [fused.get(id(node), node) for node in nodes if id(node) not in drop]

    def _fuse_chains(self, nodes):
        """expansion -> depthwise -> projection -> one conv_chain node in the
        projection's place, reading the expansion's input (and the
        projection's residual): the tensors between them get no buffers."""
        chains = find_chains(nodes, self, self._readers(nodes))
        drop = {id(layer.node) for layers in chains.values() for layer in layers[:2]}
        fused = {}
        for key, (expand, depthwise, project) in chains.items():
            fused[key] = Node("conv_chain", conv_chain,
                              (self.resolve(expand.node.arguments()["input"]), project.residual),
                              {"chain": Chain(expand, depthwise, project)},
                              project.node.outputs, project.node.scope)
        return self._replaced(nodes, drop, fused)

    def _fuse_max_pools(self, nodes, num_threads):
        """convolution -> max pool -> one conv_max_pool node in the pool's
        place, reading the convolution's input: the convolution's output
        gets no buffer (num_threads: for packing the weights)."""
        pairs = find_conv_pools(nodes, self, self._readers(nodes))
        drop = {id(conv.node) for _, conv, _ in pairs.values()}
        fused = {}
        for key, (pool, conv, window) in pairs.items():
            fused[key] = Node("conv_max_pool", conv_max_pool,
                              (self.resolve(conv.node.arguments()["input"]), None),
                              {"conv_pool": ConvMaxPool(conv, window, pool.scope, num_threads)},
                              pool.outputs, conv.node.scope)
        return self._replaced(nodes, drop, fused)
