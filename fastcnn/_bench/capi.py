"""The capi suite: what a call costs through the C-API (include/fastcnn.h)
against the kernel alone and the Python API, on a tiny convolution where the
overhead shows. Each contender runs CALLS calls, so milliseconds read as
microseconds per call."""
import numpy as np

import fastcnn.functional as F
from fastcnn._bench.core import Case

CALLS = 1000


def cases(quick=False):
    def make(b, dtype, rivals):
        from fastcnn import _capi
        x = np.ones((1, 3, 8, 8), np.float32)
        w = np.ones((8, 3, 3, 3), np.float32)
        y = np.empty((1, 8, 8, 8), np.float32)

        def python():
            for _ in range(CALLS):
                F.conv2d(x, w, None, 1, 1, out=y)
        return {"fastcnn": lambda: _capi._run_tiny_convs(True, CALLS),
                "kernel": lambda: _capi._run_tiny_convs(False, CALLS),
                "python_api": python}

    return [Case(name="conv C-API call", group="capi", make=make, batches=(1,),
                 shape=f"1x3x8x8->8 3x3, ms per {CALLS} calls = us per call")]
