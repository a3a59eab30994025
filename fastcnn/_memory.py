"""The plan's memory: which buffer holds each value a node produces.

Values whose lifetimes do not overlap share a buffer (a value's buffer is
free again after its last reader; readers of its views count as readers),
and an element-wise op writes its output over an input read there for the
last time. The assignment is made once per plan; each executor allocates
its own buffers from it."""
import numpy as np

from fastcnn._opinfo import info

__all__ = ["MemoryPlan"]


class MemoryPlan:
    """slot_bytes: the size of each buffer; slot: value id -> its buffer's index;
    owner(v): the value whose memory a view v shows (v itself otherwise)."""

    def __init__(self, rewrite):
        nodes, resolve = rewrite.nodes, rewrite.resolve
        self._base = {}           # view value id -> the value whose memory it shows
        last = {}
        for i, node in enumerate(nodes):
            for v in node.inputs():
                last[self.owner(resolve(v)).id] = i
            if node.view:
                src = self.owner(resolve(node.inputs()[0]))
                for o in node.outputs:
                    self._base[o.id] = src
        for v in rewrite.graph.outputs:
            last[self.owner(resolve(v)).id] = len(nodes)
        self.slot = {}
        self.slot_bytes = []
        free = []                 # slots whose values have been read for the last time
        for i, node in enumerate(nodes):
            taken = None
            if info(node.op).elementwise and not node.view:
                for v in node.inputs():
                    v = self.owner(resolve(v))
                    if (v.id in self.slot and last.get(v.id) == i
                            and v.nbytes == node.outputs[0].nbytes):
                        taken = v
                        break
            for j, o in enumerate(node.outputs):
                if node.view:
                    continue
                if j == 0 and taken is not None:
                    self.slot[o.id] = self.slot[taken.id]
                    continue
                need = max(o.nbytes, 1)
                fits = [k for k, s in enumerate(free) if self.slot_bytes[s] >= need]
                if fits:
                    self.slot[o.id] = free.pop(min(fits, key=lambda k: self.slot_bytes[free[k]]))
                else:
                    self.slot[o.id] = len(self.slot_bytes)
                    self.slot_bytes.append(need)
            for vid in [vid for vid, li in last.items() if li == i]:
                s = self.slot.get(vid)
                if s is not None and not (taken is not None and vid == taken.id):
                    free.append(s)

    def owner(self, v):
        return self._base.get(v.id, v)

    def allocate(self):
        """A fresh set of buffers (uint8), one per slot."""
        return [np.empty(n, np.uint8) for n in self.slot_bytes]


class Scratch:
    """An executor's one workspace. Its steps run one at a time, so each
    step's scratch is a view of the same bytes, as many as the largest step
    needs on the threads it runs with: a plan holds one workspace instead of
    one per layer, and what one layer's kernel leaves in cache is where the
    next one's scratch lies."""

    ALIGN = 64          # bytes: a cache line, and any vector's alignment

    def __init__(self):
        self._bytes = np.empty(0, np.uint8)

    @property
    def nbytes(self):
        return self._bytes.nbytes

    def reserve(self, nbytes):
        """Grow to hold nbytes (at an aligned start); views made before stay
        valid but are remade by their getters."""
        if self._bytes.nbytes < nbytes + self.ALIGN:
            self._bytes = np.empty(nbytes + self.ALIGN, np.uint8)

    def getter(self, size_for, dtype, num_threads):
        """A function threads -> an array of size_for(threads) elements of
        dtype in this workspace (None when that is 0), made again only when
        the workspace grew or a larger thread count needs more; the workspace
        grows now for num_threads."""
        dtype = np.dtype(dtype)
        self.reserve(size_for(num_threads) * dtype.itemsize)
        held = [None, None]          # (the bytes the view is of, the view)

        def get(threads):
            size = size_for(threads)
            if size == 0:
                return None
            if held[0] is not self._bytes or held[1].size < size:
                self.reserve(size * dtype.itemsize)
                start = -self._bytes.ctypes.data % self.ALIGN
                held[:] = self._bytes, self._bytes[start:start + size * dtype.itemsize].view(dtype)
            return held[1]
        return get
