"""fastcnn: NumPy-native CNN layers for the CPU.

OpenMP kernels (GIL released) over OpenBLAS, with torch.nn.functional and
torch.nn twins in fastcnn.functional and fastcnn.nn.
"""
__version__ = "0.1.0"

from fastcnn._threads import get_num_threads, set_num_threads, threads
from fastcnn._kernels._omp import set_flush_denormal
from fastcnn.nn.init import manual_seed
from fastcnn import functional, nn
from fastcnn._config import get_include, show_config
from fastcnn.fusion import fuse
from fastcnn.compile import compile
from fastcnn.summary import summary
from fastcnn.serialization import save, load
from fastcnn import models

__all__ = ["__version__", "functional", "nn", "get_num_threads", "set_num_threads",
           "threads", "set_flush_denormal", "manual_seed", "get_include", "show_config", "fuse",
           "compile", "summary", "models", "save", "load"]
