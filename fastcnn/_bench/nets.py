"""The network suite: reference networks, fastcnn eager and compiled, side by
side with PyTorch and (when installed) ONNX Runtime and OpenVINO on the same
weights; the rivals' ONNX model is exported by fastcnn.onnx.export."""
import importlib.util
import io

import numpy as np

import fastcnn
from fastcnn import models
from fastcnn._bench.core import Case

# (network, batch sizes); GroupNorm net and LeNet at their usual batches
ROWS = [("lenet5", (64,)), ("resnet18", (1, 8)), ("mobilenet_v2", (1, 8)),
        ("groupnorm_cnn", (8,))]
QUICK = [("lenet5", (64,)), ("resnet18", (1,)), ("mobilenet_v2", (1,))]


def onnx_bytes(name, model, batch):
    """`model` exported to ONNX by fastcnn.onnx.export (for the ONNX rivals)."""
    from fastcnn.onnx import export
    shape = (batch,) + models.REFERENCE_NETWORKS[name][1]
    buf = io.BytesIO()
    export(model, shape, buf)
    return buf.getvalue()


def onnx_rivals(data, x, rivals):
    """{rival: fn} running the ONNX model `data` on x with ONNX Runtime and
    OpenVINO (those of them in rivals), on fastcnn's thread count."""
    fns = {}
    if "onnxruntime" in rivals:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = fastcnn.get_num_threads()
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        fns["onnxruntime"] = lambda: sess.run(None, {name: x})
    if "openvino" in rivals:
        import openvino as ov
        core = ov.Core()
        # f32 explicitly: on CPUs with AMX or avx512_bf16 OpenVINO otherwise
        # runs in bf16, which is not the same computation
        compiled = core.compile_model(core.read_model(io.BytesIO(data)), "CPU", {
            "INFERENCE_NUM_THREADS": fastcnn.get_num_threads(), "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        fns["openvino"] = lambda: request.infer({0: x})
    return fns


def contenders(name, b, rivals, eager=True, onnx_load=True):
    """(plan, {contender: fn}) for reference network `name` at batch b: the
    compiled plan ("fastcnn"), the same model through fastcnn.onnx.load of its
    exported file ("onnx_load", when onnx is installed; onnx_load=False leaves
    it out), the eager model, and the rivals asked for, all on the same
    weights and input."""
    ctor, sample_shape = models.REFERENCE_NETWORKS[name]
    fastcnn.manual_seed(0)
    model = ctor().eval()
    shape = (b,) + sample_shape
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    plan = fastcnn.compile(model, shape)
    out = np.empty(plan.output_specs[0][0], np.float32)
    fns = {"fastcnn": lambda: plan(x, out=out)}
    wants_file = onnx_load or any(r in rivals for r in ("onnxruntime", "openvino"))
    data = (onnx_bytes(name, model, b)
            if wants_file and importlib.util.find_spec("onnx") else None)
    if data is not None and onnx_load:
        from fastcnn import onnx as fonnx
        loaded = fonnx.load(data)
        loaded(x)                                 # plan once, outside the timing
        fns["onnx_load"] = lambda: loaded.run(None, {"input": x})
    if eager:
        fns["eager"] = lambda: model(x)
    if "torch" in rivals:
        import torch
        from fastcnn._bench.torch_nets import torch_twin
        twin = torch_twin(name, model)
        xt = torch.from_numpy(x)

        def run_torch():
            with torch.no_grad():
                twin(xt)
        fns["torch"] = run_torch
    if data is not None:
        fns.update(onnx_rivals(data, x, rivals))
    return plan, fns


def net_case(name, batch):
    sample_shape = models.REFERENCE_NETWORKS[name][1]

    def make(b, dtype, rivals):
        return contenders(name, b, rivals)[1]

    return Case(name=name, group="nets", make=make, flops=net_flops(name), batches=(batch,),
                shape="x".join(map(str, sample_shape)))


def net_flops(name):
    """flops(batch) of reference network `name` (2 per multiply-accumulate),
    counted once by fastcnn.summary."""
    ctor, sample_shape = models.REFERENCE_NETWORKS[name]
    macs = []

    def flops(batch):
        if not macs:
            from fastcnn.summary import summary
            macs.append(summary(ctor().eval(), (1,) + sample_shape, print_table=False).macs)
        return 2.0 * macs[0] * batch
    return flops


def cases(quick=False):
    return [net_case(name, b) for name, batches in (QUICK if quick else ROWS) for b in batches]
