"""fastcnn: NumPy-native CNN layers for the CPU.

OpenMP kernels (GIL released) over OpenBLAS, with torch.nn.functional and
torch.nn twins in fastcnn.functional and fastcnn.nn; training through
Module.backward, fastcnn.optim and the backward functions of fastcnn.grad.
"""

try:
    from fastcnn import _kernels
except ImportError as exc:  # the source tree, where nothing is compiled
    import os as _os
    _here = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _kernel_dir = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "_kernels")
    _compiled = any(f.endswith((".so", ".pyd")) for _, _, files in _os.walk(_kernel_dir)
                    for f in files)
    if _os.path.exists(_os.path.join(_here, "setup.py")) and not _compiled:
        raise ImportError(
            f"fastcnn was imported from its source tree ({_here}), which holds no compiled "
            f"kernels ({exc}). Python puts the current folder first on sys.path for "
            f"'python -m' and 'python -c'. Use the installed command instead (`fastcnn bench`), "
            f"run Python from another folder, or build in place with `pip install -e .`."
        ) from exc
    raise
from fastcnn._version import __version__
from fastcnn import _malloc
_malloc.tune()
from fastcnn._threads import MAX_THREADS, get_num_threads, set_num_threads, threads
from fastcnn._kernels._omp import set_flush_denormal
from fastcnn._random import manual_seed
from fastcnn._autograd.mode import no_grad, enable_grad, set_grad_enabled, is_grad_enabled
from fastcnn import functional, nn, grad, optim
from fastcnn._config import get_include, get_isa, set_max_isa, show_config
from fastcnn.fusion import fuse
from fastcnn.compile import compile
from fastcnn.summary import summary
from fastcnn.serialization import save, load
from fastcnn import models

__all__ = ["__version__", "functional", "nn", "MAX_THREADS", "get_num_threads",
           "set_num_threads", "threads", "set_flush_denormal", "manual_seed", "get_include",
           "get_isa", "set_max_isa", "show_config", "fuse", "compile", "summary", "models",
           "save", "load", "grad", "optim", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled"]

_LAZY = ("onnx", "viz", "dask")     # imported on first use, as torch.onnx: `import fastcnn` stays fast


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return importlib.import_module(f"fastcnn.{name}")
    raise AttributeError(f"module 'fastcnn' has no attribute {name!r}")
