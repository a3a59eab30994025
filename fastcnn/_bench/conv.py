"""The convolution suite: ResNet-18 and MobileNetV2 layer shapes."""
import numpy as np

import fastcnn.functional as F
from fastcnn import _kernels
from fastcnn._bench.core import Case
from fastcnn._functional.conv import ConvGeometry

# (name, group, C_in, C_out, H=W, kernel, stride, padding, groups)
RESNET18 = [
    ("resnet18.conv1 7x7/2", "7x7", 3, 64, 224, 7, 2, 3, 1),
    ("resnet18.layer1 3x3", "3x3", 64, 64, 56, 3, 1, 1, 1),
    ("resnet18.layer2 3x3/2", "3x3", 64, 128, 56, 3, 2, 1, 1),
    ("resnet18.layer2 3x3", "3x3", 128, 128, 28, 3, 1, 1, 1),
    ("resnet18.layer3 3x3/2", "3x3", 128, 256, 28, 3, 2, 1, 1),
    ("resnet18.layer3 3x3", "3x3", 256, 256, 14, 3, 1, 1, 1),
    ("resnet18.layer4 3x3/2", "3x3", 256, 512, 14, 3, 2, 1, 1),
    ("resnet18.layer4 3x3", "3x3", 512, 512, 7, 3, 1, 1, 1),
    ("resnet18.layer2 down 1x1/2", "1x1", 64, 128, 56, 1, 2, 0, 1),
    ("resnet18.layer4 down 1x1/2", "1x1", 256, 512, 14, 1, 2, 0, 1),
]
MOBILENET_V2 = [
    ("mobilenetv2 stem 3x3/2", "3x3", 3, 32, 224, 3, 2, 1, 1),
    ("mobilenetv2 dw32 3x3", "depthwise", 32, 32, 112, 3, 1, 1, 32),
    ("mobilenetv2 dw96 3x3/2", "depthwise", 96, 96, 112, 3, 2, 1, 96),
    ("mobilenetv2 dw144 3x3", "depthwise", 144, 144, 56, 3, 1, 1, 144),
    ("mobilenetv2 dw192 3x3/2", "depthwise", 192, 192, 28, 3, 2, 1, 192),
    ("mobilenetv2 dw576 3x3", "depthwise", 576, 576, 14, 3, 1, 1, 576),
    ("mobilenetv2 dw960 3x3", "depthwise", 960, 960, 7, 3, 1, 1, 960),
    ("mobilenetv2 1x1 16->96", "1x1", 16, 96, 112, 1, 1, 0, 1),
    ("mobilenetv2 1x1 144->24", "1x1", 144, 24, 56, 1, 1, 0, 1),
    ("mobilenetv2 1x1 32->192", "1x1", 32, 192, 28, 1, 1, 0, 1),
    ("mobilenetv2 1x1 384->96", "1x1", 384, 96, 14, 1, 1, 0, 1),
    ("mobilenetv2 1x1 160->960", "1x1", 160, 960, 7, 1, 1, 0, 1),
    ("mobilenetv2 1x1 320->1280", "1x1", 320, 1280, 7, 1, 1, 0, 1),
]
QUICK = {"resnet18.layer1 3x3", "resnet18.layer3 3x3/2", "resnet18.conv1 7x7/2",
         "resnet18.layer4 down 1x1/2", "mobilenetv2 dw144 3x3", "mobilenetv2 1x1 144->24"}


def cases(quick=False):
    out = []
    for name, group, cin, cout, hw, k, s, p, g in RESNET18 + MOBILENET_V2:
        if quick and name not in QUICK:
            continue
        out.append(_conv_case(name, group, cin, cout, hw, k, s, p, g))
    return out


def _conv_case(name, group, cin, cout, hw, k, s, p, g):
    out_hw = (hw + 2 * p - k) // s + 1

    def make(batch, dtype, rivals):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, cin, hw, hw)).astype(dtype)
        w = (rng.standard_normal((cout, cin // g, k, k)) * 0.1).astype(dtype)
        b = rng.standard_normal(cout).astype(dtype)
        y = np.empty((batch, cout, out_hw, out_hw), dtype)
        fns = {"fastcnn": lambda: F.conv2d(x, w, b, s, p, 1, g, out=y)}
        if "torch" in rivals:
            import torch
            xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))

            def torch_fn():
                with torch.no_grad():
                    torch.nn.functional.conv2d(xt, wt, bt, s, p, 1, g)
            fns["torch"] = torch_fn
        return fns

    def flops(batch):
        return 2.0 * batch * cout * out_hw * out_hw * (cin // g) * k * k

    def effective(batch):
        geom = ConvGeometry.of(batch, cin, cout, g, (hw, hw), (out_hw, out_hw), (k, k), (s, s),
                               (p, p), (1, 1))
        return _kernels._conv.select(geom) == "winograd"

    return Case(name=name, group=group, make=make, flops=flops, effective=effective,
                shape=f"{cin}x{hw}x{hw} -> {cout}x{out_hw}x{out_hw}")
