"""fastcnn: NumPy-native CNN layers for the CPU.

OpenMP kernels (GIL released) over OpenBLAS, with torch.nn.functional and
torch.nn twins in fastcnn.functional and fastcnn.nn.
"""
__version__ = "0.1.0"

try:
    from fastcnn import _kernels
except ImportError as exc:  # the source tree, where nothing is compiled
    import os as _os
    _here = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    if _os.path.exists(_os.path.join(_here, "setup.py")):
        raise ImportError(
            f"fastcnn was imported from its source tree ({_here}), which holds no compiled "
            f"kernels ({exc}). Python puts the current folder first on sys.path for "
            f"'python -m' and 'python -c'. Use the installed command instead (`fastcnn bench`), "
            f"run Python from another folder, or build in place with `pip install -e .`."
        ) from exc
    raise
from fastcnn._threads import MAX_THREADS, get_num_threads, set_num_threads, threads
from fastcnn._kernels._omp import set_flush_denormal
from fastcnn.nn.init import manual_seed
from fastcnn import functional, nn
from fastcnn._config import get_include, get_isa, set_max_isa, show_config
from fastcnn.fusion import fuse
from fastcnn.compile import compile
from fastcnn.summary import summary
from fastcnn.serialization import save, load
from fastcnn import models

__all__ = ["__version__", "functional", "nn", "MAX_THREADS", "get_num_threads",
           "set_num_threads", "threads", "set_flush_denormal", "manual_seed", "get_include",
           "get_isa", "set_max_isa", "show_config", "fuse", "compile", "summary", "models",
           "save", "load"]
