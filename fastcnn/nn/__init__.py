"""Layer classes mirroring torch.nn: same constructor arguments and state_dict keys."""
from fastcnn.nn.module import Module, Parameter, Sequential, ModuleList, ModuleDict, Identity
from fastcnn.nn.conv import Conv1d, Conv2d, Conv3d
from fastcnn.nn import init

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Identity",
           "Conv1d", "Conv2d", "Conv3d", "init"]
