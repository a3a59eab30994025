"""The denormal suite: ops on normal inputs against the same ops on denormal
inputs (x * 1e-39), with IEEE gradual underflow (the default) and with
fastcnn.set_flush_denormal(True). The ratio columns are slowdowns: denormal
time / normal time."""
import numpy as np

import fastcnn
import fastcnn.functional as F
from fastcnn._bench.core import Case

TINY = np.float32(1e-39)        # below float32's smallest normal (1.2e-38)


def _case(name, make_op, shape):
    def make(batch, dtype, rivals):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        xd = (x * TINY).astype(np.float32)
        op = make_op(rng)

        def flushed():
            fastcnn.set_flush_denormal(True)
            try:
                op(xd)
            finally:
                fastcnn.set_flush_denormal(False)
        return {"fastcnn": lambda: op(x), "denormal": lambda: op(xd),
                "denormal_ftz": flushed}
    return Case(name=name, group="denormal", make=make, batches=(1,),
                shape="x".join(map(str, shape)) + " (ratio = slowdown)")


def _conv(rng):
    w = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32)
    return lambda x: F.conv2d(x, w, None, 1, 1)


def cases(quick=False):
    rows = [
        _case("conv2d 3x3", _conv, (64, 56, 56)),
        _case("gelu", lambda rng: F.gelu, (64, 56, 56)),
        _case("softmax over channels", lambda rng: (lambda x: F.softmax(x, 1)), (64, 56, 56)),
        _case("batch_norm eval", lambda rng: (lambda x: F.batch_norm(
            x, np.zeros(64, np.float32), np.ones(64, np.float32))), (64, 56, 56)),
    ]
    return rows[:2] if quick else rows
