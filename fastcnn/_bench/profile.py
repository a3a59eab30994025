"""The profile suite: a network's compiled plan timed step by step beside ONNX
Runtime's own profile of the same ONNX file, block by block.

fastcnn's side is Plan.profile: every step timed in execution order, the best
of `repeat` passes over the whole plan (so each step finds the caches the steps
before it left). ONNX Runtime's side is its `enable_profiling` trace of
`ORT_RUNS` calls, each node's fastest `_kernel_time`. The two graphs are fused
differently (a fastcnn conv_chain is three ONNX Runtime nodes; ONNX Runtime
names a fused convolution after its last fused node), so both are summed per
block: the module path up to its first numbered child (`layer1.0`,
`features.3`); steps of top-level modules are summed by kind (conv, pooling,
linear, other). Where one fastcnn step runs layers of several blocks (a chain
with a network's first layer as its expansion, a stem convolution with its
max pool), those blocks are one row on both sides (`features.0-1`,
`conv + pooling (top level)`). A block's rate counts its multiply-adds
(fastcnn.summary) x 2 over fastcnn's time, as a share of the sgemm rate
measured in the same run;
`w` marks a block with a Winograd layer (an effective rate: the direct
multiplies counted, fewer done).
"""
import importlib.util
import json
import os
import re
import tempfile

import numpy as np

import fastcnn
from fastcnn import models
from fastcnn._bench.nets import onnx_bytes

NETS = ("resnet18", "mobilenet_v2")
QUICK = ("lenet5",)
ORT_RUNS = 40
# op kinds of top-level steps, by fastcnn op and ONNX Runtime op type
_KINDS = {"conv": "conv", "conv_max_pool": "conv", "Conv": "conv", "max_pool2d": "pooling",
          "MaxPool": "pooling",
          "adaptive_avg_pool2d": "pooling", "GlobalAveragePool": "pooling",
          "AveragePool": "pooling", "linear": "linear", "Gemm": "linear", "MatMul": "linear"}


def block_of(path, op):
    """The block a step or node belongs to: its dotted module path up to the
    first numbered component, or "<kind> (top level)"."""
    parts = [p for p in re.split(r"[./]", path) if p]
    for k in range(1, len(parts)):
        if parts[k].isdigit():
            return ".".join(parts[:k + 1])
    return f"{_KINDS.get(op, 'other')} (top level)"


def _fused_blocks(node):
    """The blocks whose layers one fused step runs (None: not a fused step)."""
    if node.op == "conv_chain":
        return [block_of(s, "conv") for s in node.kwargs["chain"].scopes]
    if node.op == "conv_max_pool":
        conv, pool = node.kwargs["conv_pool"].scopes
        return [block_of(conv, "conv"), block_of(pool, "max_pool2d")]
    return None


def _row_name(blocks):
    """`features.0-1` for numbered blocks; `conv + pooling (top level)` for
    top-level ones."""
    top = " (top level)"
    if all(b.endswith(top) for b in blocks):
        return " + ".join(b[:-len(top)] for b in blocks) + top
    return blocks[0] + "-" + blocks[-1].rsplit(".", 1)[-1]


def merged_blocks(plan):
    """{block: the row it is summed into} for blocks whose layers one step
    runs together (a conv_chain's or a conv_max_pool's layers in more than
    one block)."""
    out = {}
    for node in plan.nodes:
        blocks = _fused_blocks(node)
        if blocks is None:
            continue
        blocks = list(dict.fromkeys(blocks))
        if len(blocks) > 1:
            row = _row_name(blocks)
            out.update((b, row) for b in blocks)
    return out


def _merge(blocks, merged):
    """blocks ({block: ms or [ms, [algorithms]]}) with merged blocks summed."""
    out = {}
    for block, v in blocks.items():
        key = merged.get(block, block)
        if isinstance(v, list):
            entry = out.setdefault(key, [0.0, []])
            entry[0] += v[0]
            entry[1] += [a for a in v[1] if a not in entry[1]]
        else:
            out[key] = out.get(key, 0.0) + v
    return out


def fastcnn_blocks(plan, x, repeat):
    """{block: [ms, [algorithms]]} in execution order, from plan.profile."""
    algorithms = plan.algorithms
    best = None
    for _ in range(max(1, repeat)):
        steps = plan.profile(x, repeat=1)
        best = steps if best is None else \
            [(a[0], a[1], a[2], min(a[3], b[3])) for a, b in zip(best, steps)]
    out = {}
    for op, scope, _, ms in best:
        entry = out.setdefault(block_of(scope, op), [0.0, []])
        entry[0] += ms
        alg = algorithms.get(scope) or (op if op != "conv" else None)
        if alg and alg not in entry[1]:
            entry[1].append(alg)
    return out


def ort_blocks(data, x, nthreads):
    """{block: ms} from ONNX Runtime's profile of ORT_RUNS calls."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = nthreads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(ORT_RUNS):
            sess.run(None, {name: x})
        with open(sess.end_profiling()) as fh:
            events = json.load(fh)
    best, ops = {}, {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"][:-len("_kernel_time")]
            best[node] = min(best.get(node, float("inf")), e["dur"] / 1e3)
            ops[node] = e.get("args", {}).get("op_name", "")
    out = {}
    for node, ms in best.items():
        key = block_of(node, ops[node])
        out[key] = out.get(key, 0.0) + ms
    return out


def block_macs(name):
    """{block: multiply-adds of one image} from fastcnn.summary."""
    from fastcnn.summary import summary
    ctor, sample_shape = models.REFERENCE_NETWORKS[name]
    out = {}
    for row in summary(ctor().eval(), (1,) + sample_shape, print_table=False).rows:
        if row["macs"]:
            key = block_of(row["name"], "conv" if row["type"].startswith("Conv") else
                           "linear" if row["type"] == "Linear" else row["type"])
            out[key] = out.get(key, 0) + row["macs"]
    return out


def measure(name, batch, nthreads, rivals, repeat, sgemm_gflops):
    """One table's rows: per block fastcnn ms, its rate and share of the
    sgemm rate, and ONNX Runtime's ms (when installed)."""
    ctor, sample_shape = models.REFERENCE_NETWORKS[name]
    fastcnn.manual_seed(0)
    model = ctor().eval()
    x = np.random.default_rng(0).standard_normal((batch,) + sample_shape).astype(np.float32)
    with fastcnn.threads(nthreads):
        plan = fastcnn.compile(model, x.shape)
        merged = merged_blocks(plan)
        ours = _merge(fastcnn_blocks(plan, x, repeat), merged)
        theirs = _merge(ort_blocks(onnx_bytes(name, model, batch), x, nthreads), merged) \
            if "onnxruntime" in rivals and importlib.util.find_spec("onnx") else {}
    macs = _merge(block_macs(name), merged)
    rows = []
    for block in list(ours) + [b for b in theirs if b not in ours]:
        ms, algs = ours.get(block, (None, []))
        row = {"suite": "profile", "case": name, "batch": batch, "threads": nthreads,
               "block": block, "algorithms": algs, "fastcnn_ms": ms,
               "onnxruntime_ms": theirs.get(block)}
        if ms and macs.get(block):
            row["gflops"] = 2.0 * macs[block] * batch / ms / 1e6
            row["pct_peak"] = 100.0 * row["gflops"] / sgemm_gflops
            row["effective_rate"] = "winograd" in algs
        rows.append(row)
    return rows


def run(nets, batches, threads, rivals, repeat, limits):
    rows = []
    for name in nets:
        for batch in batches:
            for nthreads in threads:
                rows += measure(name, batch, nthreads, rivals, repeat,
                                limits[nthreads]["sgemm_gflops"])
    return rows


def _ms(v):
    return "-" if v is None else f"{v:.3f}"


def table(rows):
    """One markdown table per (network, batch, threads), with totals."""
    out = []
    keys = []
    for row in rows:
        k = (row["case"], row["batch"], row["threads"])
        if k not in keys:
            keys.append(k)
    for name, batch, nthreads in keys:
        part = [r for r in rows if (r["case"], r["batch"], r["threads"]) == (name, batch, nthreads)]
        has_ort = any(r["onnxruntime_ms"] is not None for r in part)
        head = ["block", "fastcnn steps", "fastcnn ms", "GFLOP/s", "% of sgemm"]
        head += ["ONNX Runtime ms", "ONNX Runtime / fastcnn"] if has_ort else []
        lines = [f"{name}, batch {batch}, {nthreads} thread{'s' if nthreads > 1 else ''}:", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in part:
            mark = " w" if r.get("effective_rate") else ""
            cells = [r["block"], ", ".join(r["algorithms"]) or "-", _ms(r["fastcnn_ms"]),
                     f"{r['gflops']:.0f}{mark}" if "gflops" in r else "-",
                     f"{r['pct_peak']:.0f}{mark}" if "pct_peak" in r else "-"]
            if has_ort:
                ratio = (f"{r['onnxruntime_ms'] / r['fastcnn_ms']:.2f}x"
                         if r["fastcnn_ms"] and r["onnxruntime_ms"] else "-")
                cells += [_ms(r["onnxruntime_ms"]), ratio]
            lines.append("| " + " | ".join(cells) + " |")
        ours = sum(r["fastcnn_ms"] or 0.0 for r in part)
        total = ["total", "", f"{ours:.3f}", "", ""]
        if has_ort:
            theirs = sum(r["onnxruntime_ms"] or 0.0 for r in part)
            total += [f"{theirs:.3f}", f"{theirs / ours:.2f}x" if ours else "-"]
        lines.append("| " + " | ".join(total) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)
