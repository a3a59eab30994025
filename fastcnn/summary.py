"""fastcnn.summary: a per-layer table of shapes, parameters, multiply-adds and
receptive fields, from a traced forward pass."""
import copy
import math

import numpy as np

from fastcnn._graph import Value, trace
from fastcnn._opinfo import info
from fastcnn._validation import ntuple

__all__ = ["summary", "Summary"]


class Summary:
    """rows: one dict per layer call; totals: params, macs (multiply-accumulates),
    activation_bytes (every layer output), weight_bytes (parameters and buffers)."""

    def __init__(self, rows, params, macs, activation_bytes, weight_bytes):
        self.rows, self.params, self.macs = rows, params, macs
        self.activation_bytes, self.weight_bytes = activation_bytes, weight_bytes

    def __str__(self):
        head = ["Layer", "Type", "Output shape", "Params", "MACs", "RF", "Jump"]
        body = [[r["name"], r["type"], str(r["output_shape"]), f"{r['params']:,}",
                 f"{r['macs']:,}", _fmt(r["rf"]), _fmt(r["jump"])] for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
                  for i, h in enumerate(head)]
        line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
        out = [line, "-" * len(line)]
        for b in body:
            out.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(b, widths))))
        out += ["-" * len(line),
                f"Total params: {self.params:,}",
                f"Total MACs: {self.macs:,} ({self.macs / 1e9:.3f} G)",
                f"Activation memory: {self.activation_bytes:,} bytes "
                f"({self.activation_bytes / 2**20:.2f} MiB, every layer output)",
                f"Weight memory: {self.weight_bytes:,} bytes ({self.weight_bytes / 2**20:.2f} MiB)"]
        return "\n".join(out)

    def __repr__(self):
        # summary() has printed the table already; the REPL echo stays one line
        return (f"<Summary: {len(self.rows)} layers, {self.params:,} params, "
                f"{self.macs / 1e9:.3f} GMACs; print() it for the table>")


def _fmt(v):
    if v is None:
        return "-"
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


def summary(model, input_shape, *, dtype=np.float32, print_table=True):
    """Trace `model` on a zero-free random input of `input_shape` and return (and
    print) one row per layer: name, type, output shape, parameters,
    multiply-accumulates, and receptive field and jump (stride product) in
    input pixels, r_out = r_in + (k - 1) * d * jump_in, jump_out = jump_in * s.
    The model is not changed (it runs as an eval-mode copy)."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"summary: input_shape must be a tuple of ints, got {input_shape!r}") \
            from None
    if hasattr(model, "graph_for"):          # an ONNX model: one row per ONNX node
        result = _onnx_summary(model, shape, dtype)
        if print_table:
            print(result)
        return result
    m = copy.deepcopy(model).eval()
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    graph = trace(m, x)
    rf = _receptive_fields(graph)
    macs_by_scope = {}
    for node in graph.nodes:
        macs_by_scope[node.scope] = macs_by_scope.get(node.scope, 0) + _macs(node)
    rows = []
    activation = 0
    for name, module, outs in graph.module_calls:
        out = outs[0] if outs else None
        params = sum(p.size for p in module.parameters(recurse=False))
        if out is not None:
            activation += out.nbytes
        r = rf.get(out.id) if out is not None else None
        rows.append({"name": name, "type": type(module).__name__,
                     "output_shape": out.shape if out is not None else (),
                     "params": params, "macs": macs_by_scope.pop(name, 0),
                     "rf": r[0] if r else None, "jump": r[1] if r else None})
    # ops called in forward() itself (F.relu, residual adds) count toward the totals
    total_macs = sum(r["macs"] for r in rows) + sum(macs_by_scope.values())
    params = sum(p.size for p in model.parameters())
    weight_bytes = sum(p.nbytes for p in model.parameters()) + \
        sum(b.nbytes for b in model.buffers())
    result = Summary(rows, params, total_macs, activation, weight_bytes)
    if print_table:
        print(result)
    return result


def _onnx_summary(model, shape, dtype):
    graph = model.graph_for([shape], [dtype])
    rf = _receptive_fields(graph)
    op_types = {n.name: n.op_type for n in model.nodes}
    rows, activation = [], 0
    for node in graph.nodes:
        if node.view:
            continue
        out = node.outputs[0]
        activation += out.nbytes
        r = rf.get(out.id)
        params = sum(int(np.prod(v.shape, dtype=np.int64)) for v in node.inputs()
                     if v.kind == "const" and v.dtype.kind == "f")
        rows.append({"name": node.scope, "type": op_types.get(node.scope, node.op),
                     "output_shape": out.shape, "params": params, "macs": _macs(node),
                     "rf": r[0] if r else None, "jump": r[1] if r else None})
    weights = [a for a in model.initializers.values() if a.dtype.kind == "f"]
    return Summary(rows, sum(a.size for a in weights), sum(r["macs"] for r in rows), activation,
                   sum(a.nbytes for a in weights))


def _macs(node):
    if info(node.op).family == "conv":
        b = node.arguments()
        w = b["weight"]
        w_shape = w.shape if isinstance(w, Value) else np.shape(w)
        return int(np.prod(node.outputs[0].shape, dtype=np.int64)) * int(np.prod(w_shape[1:]))
    if node.op == "linear":
        b = node.arguments()
        w = b["weight"]
        w_shape = w.shape if isinstance(w, Value) else np.shape(w)
        return int(np.prod(node.outputs[0].shape, dtype=np.int64)) * int(w_shape[1])
    return 0


def _receptive_fields(graph):
    """value id -> (receptive field, jump), per spatial axis, for spatial values."""
    out = {}
    for v in graph.inputs:
        nd = len(v.shape) - 2
        out[v.id] = ((1,) * nd, (1,) * nd)
    for node in graph.nodes:
        ins = [out.get(v.id) for v in node.inputs() if v.id in out]
        if not ins or not info(node.op).spatial:
            continue
        r_in, j_in = max(ins, key=lambda t: t[0])
        nd = len(r_in)
        o = node.outputs[0]
        family = info(node.op).family
        if family in ("conv", "pool"):
            b = node.arguments()
            if family == "conv":
                w = b["weight"]
                kernel = tuple((w.shape if isinstance(w, Value) else np.shape(w))[2:])
            else:
                kernel = ntuple(b["kernel_size"] if "kernel_size" in b else b["kernel"], nd,
                                node.op, "kernel_size")
            stride = ntuple(b.get("stride") or kernel, nd, node.op, "stride")
            dilation = ntuple(b.get("dilation", 1), nd, node.op, "dilation")
            r = tuple(ri + (k - 1) * d * j for ri, k, d, j in zip(r_in, kernel, dilation, j_in))
            out[o.id] = (r, tuple(j * s for j, s in zip(j_in, stride)))
        elif family == "adaptive_pool":
            src = node.inputs()[0].shape[2:]
            dst = o.shape[2:]
            k = tuple(math.ceil(a / b) for a, b in zip(src, dst))
            s = tuple(max(1, a // b) for a, b in zip(src, dst))
            out[o.id] = (tuple(ri + (ki - 1) * j for ri, ki, j in zip(r_in, k, j_in)),
                         tuple(j * si for j, si in zip(j_in, s)))
        elif len(o.shape) == nd + 2:
            out[o.id] = (r_in, j_in)
    return out
