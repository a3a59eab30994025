"""The onnx suite: the same .onnx files (the reference networks exported by
fastcnn.onnx.export) run by fastcnn.onnx and by ONNX Runtime and OpenVINO
where installed, in one process."""
import numpy as np

import fastcnn
from fastcnn import models
from fastcnn._bench.core import Case
from fastcnn._bench.nets import net_flops, onnx_bytes, onnx_rivals

ROWS = [("lenet5", (64,)), ("resnet18", (1, 8)), ("mobilenet_v2", (1, 8)),
        ("groupnorm_cnn", (8,))]
QUICK = [("lenet5", (64,)), ("resnet18", (1,)), ("mobilenet_v2", (1,))]


def _case(name, batch):
    ctor, sample_shape = models.REFERENCE_NETWORKS[name]
    files = {}

    def make(b, dtype, rivals):
        from fastcnn import onnx as fonnx
        if np.dtype(dtype) != np.float32:
            raise ValueError("the onnx suite runs float32 models only")
        if b not in files:
            fastcnn.manual_seed(0)
            files[b] = onnx_bytes(name, ctor().eval(), b)
        data = files[b]
        model = fonnx.load(data)
        x = np.random.default_rng(0).standard_normal((b,) + sample_shape).astype(np.float32)
        model(x)                                  # plan once, outside the timing
        fns = {"fastcnn": lambda: model.run(None, {"input": x})}
        fns.update(onnx_rivals(data, x, rivals))
        return fns

    return Case(name=name, group="onnx", make=make, flops=net_flops(name), batches=(batch,),
                shape="x".join(map(str, sample_shape)))


def cases(quick=False):
    return [_case(name, b) for name, batches in (QUICK if quick else ROWS) for b in batches]
