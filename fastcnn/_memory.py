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
