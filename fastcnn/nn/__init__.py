"""Layer classes mirroring torch.nn: same constructor arguments and state_dict keys."""
from fastcnn.nn.module import Module, Parameter, Identity
from fastcnn.nn.container import Sequential, ModuleList, ModuleDict
from fastcnn.nn.conv import (Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d,
                             ConvTranspose3d)
from fastcnn.nn.pooling import (MaxPool1d, MaxPool2d, MaxPool3d, AvgPool1d, AvgPool2d,
                                AvgPool3d, LPPool1d, LPPool2d, AdaptiveAvgPool1d,
                                AdaptiveAvgPool2d, AdaptiveAvgPool3d, AdaptiveMaxPool1d,
                                AdaptiveMaxPool2d, AdaptiveMaxPool3d)
from fastcnn.nn.activation import (ReLU, ReLU6, LeakyReLU, ELU, SELU, CELU, Hardtanh, Sigmoid,
                                   Tanh, SiLU, Hardswish, Hardsigmoid, GELU, Mish, Softplus,
                                   PReLU, Softmax, LogSoftmax, Softmin)
from fastcnn.nn.linear import (Linear, Flatten, Unflatten, Dropout, Dropout1d, Dropout2d,
                               Dropout3d)
from fastcnn.nn.normalization import (BatchNorm1d, BatchNorm2d, BatchNorm3d, InstanceNorm1d,
                                      InstanceNorm2d, InstanceNorm3d, GroupNorm, LayerNorm,
                                      LocalResponseNorm)
from fastcnn.nn.upsampling import (Upsample, PixelShuffle, PixelUnshuffle, ZeroPad2d,
                                   ConstantPad2d, ReflectionPad2d, ReplicationPad2d,
                                   CircularPad2d)
from fastcnn.nn.loss import CrossEntropyLoss, NLLLoss, MSELoss, BCEWithLogitsLoss
from fastcnn.nn import init

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Identity",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "LPPool1d",
    "LPPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
    "ReLU", "ReLU6", "LeakyReLU", "ELU", "SELU", "CELU", "Hardtanh", "Sigmoid", "Tanh", "SiLU",
    "Hardswish", "Hardsigmoid", "GELU", "Mish", "Softplus", "PReLU", "Softmax", "LogSoftmax",
    "Softmin",
    "Linear", "Flatten", "Unflatten", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
    "InstanceNorm3d", "GroupNorm", "LayerNorm", "LocalResponseNorm",
    "Upsample", "PixelShuffle", "PixelUnshuffle", "ZeroPad2d", "ConstantPad2d",
    "ReflectionPad2d", "ReplicationPad2d", "CircularPad2d",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss",
    "init",
]
