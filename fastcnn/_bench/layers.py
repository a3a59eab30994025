"""Memory-bound layer suites (pooling, activations, softmax) and Linear.

Memory-bound rows report GB/s counted as the bytes an op must read and write
(input once, output once); their share of the limit compares the time with the
least time those bytes take at the read and write bandwidths measured in the
same run.
fastcnn writes into a preallocated `out=` array, the way a pipeline reuses its
buffers; the rivals allocate as their APIs do.
"""
import numpy as np

import fastcnn.functional as F
from fastcnn._bench.core import Case
from fastcnn._bench.machine import QUICK_BATCH, SHAPE



def _memory_case(name, group, fn, torch_fn, out_shape, quick=False, out_item=4):
    """out_item: bytes written per output element (12 with int64 indices)."""
    def make(batch, dtype, rivals):
        shape = (batch,) + SHAPE[1:]
        x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        y = np.empty((batch,) + out_shape, dtype)
        fns = {"fastcnn": lambda: fn(x, y)}
        if "torch" in rivals:
            import torch
            xt = torch.from_numpy(x)

            def run():
                with torch.no_grad():
                    torch_fn(xt)
            fns["torch"] = run
        return fns

    def traffic(batch):
        return batch * np.prod(SHAPE[1:]) * 4, batch * np.prod(out_shape) * out_item

    return Case(name=name, group=group, make=make, traffic=traffic,
                shape="x".join(map(str, SHAPE[1:])) + " -> " + "x".join(map(str, out_shape)),
                batches=(QUICK_BATCH if quick else SHAPE[0],))


def pool_cases(quick=False):
    c, h = SHAPE[1], SHAPE[2]
    tf = lambda: __import__("torch").nn.functional
    rows = [
        _memory_case("max_pool2d 3x3/s2/p1", "pool", lambda x, y: F.max_pool2d(x, 3, 2, 1, out=y),
                     lambda t: tf().max_pool2d(t, 3, 2, 1), (c, h // 2, h // 2), quick),
        _memory_case("max_pool2d 2x2", "pool", lambda x, y: F.max_pool2d(x, 2, out=y),
                     lambda t: tf().max_pool2d(t, 2), (c, h // 2, h // 2), quick),
        _memory_case("avg_pool2d 2x2", "pool", lambda x, y: F.avg_pool2d(x, 2, out=y),
                     lambda t: tf().avg_pool2d(t, 2), (c, h // 2, h // 2), quick),
        _memory_case("global avg pool", "pool", lambda x, y: F.adaptive_avg_pool2d(x, 1, out=y),
                     lambda t: tf().adaptive_avg_pool2d(t, 1), (c, 1, 1), quick),
        _memory_case("max_pool2d 3x3/s2/p1 + indices", "pool",
                     lambda x, y: F.max_pool2d(x, 3, 2, 1, return_indices=True, out=y),
                     lambda t: tf().max_pool2d(t, 3, 2, 1, return_indices=True),
                     (c, h // 2, h // 2), quick, out_item=12),
        _memory_case("max_pool3d 2x2x2 (8 channels, depth 8)", "pool",
                     lambda x, y: F.max_pool3d(x.reshape(-1, 8, 8, h, h), 2, out=y),
                     lambda t: tf().max_pool3d(t.reshape(-1, 8, 8, h, h), 2),
                     (8, 4, h // 2, h // 2), quick),
    ]
    return rows[:1] + rows[2:3] if quick else rows


def activation_cases(quick=False):
    full = SHAPE[1:]

    def torch_fn(name, **kw):
        return lambda t: getattr(__import__("torch").nn.functional, name)(t, **kw)
    rows = [
        _memory_case("relu", "activation", lambda x, y: F.relu(x, out=y), torch_fn("relu"), full,
                     quick),
        _memory_case("gelu", "activation", lambda x, y: F.gelu(x, out=y), torch_fn("gelu"), full,
                     quick),
        _memory_case("silu", "activation", lambda x, y: F.silu(x, out=y), torch_fn("silu"), full,
                     quick),
        _memory_case("softmax over channels", "activation",
                     lambda x, y: F.softmax(x, 1, out=y), torch_fn("softmax", dim=1), full, quick),
        _memory_case("softmax over rows (last dim)", "activation",
                     lambda x, y: F.softmax(x, -1, out=y), torch_fn("softmax", dim=-1), full,
                     quick),
        _memory_case("tanh", "activation", lambda x, y: F.tanh(x, out=y),
                     lambda t: __import__("torch").tanh(t), full, quick),
    ]
    return rows[:2] if quick else rows


def linear_cases(quick=False):
    def make(batch, dtype, rivals):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, 4096)).astype(dtype)
        w = (rng.standard_normal((1000, 4096)) * 0.01).astype(dtype)
        b = rng.standard_normal(1000).astype(dtype)
        y = np.empty((batch, 1000), dtype)
        fns = {"fastcnn": lambda: F.linear(x, w, b, out=y)}
        if "torch" in rivals:
            import torch
            xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))

            def run():
                with torch.no_grad():
                    torch.nn.functional.linear(xt, wt, bt)
            fns["torch"] = run
        return fns

    return [Case(name="linear 4096->1000", group="linear", make=make,
                 flops=lambda batch: 2.0 * batch * 4096 * 1000, shape="(B, 4096) -> (B, 1000)",
                 batches=(64,))]


def norm_cases(quick=False):
    """Normalizations on the 8x64x112x112 tensor. Eval-mode rows count one read
    and one write; statistics rows (train BN, LN, IN, GN) two reads and a write."""
    c = SHAPE[1]

    def case(name, fn, torch_fn, reads):
        def make(batch, dtype, rivals):
            rng = np.random.default_rng(0)
            shape = (batch,) + SHAPE[1:]
            x = rng.standard_normal(shape).astype(dtype)
            y = np.empty(shape, dtype)
            w = rng.standard_normal(c).astype(dtype)
            b = rng.standard_normal(c).astype(dtype)
            rm = rng.standard_normal(c).astype(dtype)
            rv = (rng.random(c) + 0.5).astype(dtype)
            fns = {"fastcnn": lambda: fn(x, y, w, b, rm, rv)}
            if "torch" in rivals:
                import torch
                ts = [torch.from_numpy(a.copy()) for a in (x, w, b, rm, rv)]

                def run():
                    with torch.no_grad():
                        torch_fn(torch, *ts)
                fns["torch"] = run
            return fns

        return Case(name=name, group="norm", make=make,
                    traffic=lambda batch: (batch * np.prod(SHAPE[1:]) * 4 * reads,
                                           batch * np.prod(SHAPE[1:]) * 4),
                    shape="x".join(map(str, SHAPE[1:])),
                    batches=(QUICK_BATCH if quick else SHAPE[0],))

    tf = lambda t: t.nn.functional
    rows = [
        case("batch_norm eval", lambda x, y, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b, out=y),
             lambda t, x, w, b, rm, rv: tf(t).batch_norm(x, rm, rv, w, b), 1),
        case("batch_norm eval + relu",
             lambda x, y, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b, out=y, activation="relu"),
             lambda t, x, w, b, rm, rv: tf(t).relu(tf(t).batch_norm(x, rm, rv, w, b)), 1),
        case("batch_norm train",
             lambda x, y, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b, True, out=y),
             lambda t, x, w, b, rm, rv: tf(t).batch_norm(x, rm, rv, w, b, True), 2),
        case("layer_norm (C, H, W)",
             lambda x, y, w, b, rm, rv: F.layer_norm(x, SHAPE[1:], out=y),
             lambda t, x, w, b, rm, rv: tf(t).layer_norm(x, SHAPE[1:]), 2),
        case("instance_norm", lambda x, y, w, b, rm, rv: F.instance_norm(x, out=y),
             lambda t, x, w, b, rm, rv: tf(t).instance_norm(x), 2),
        case("group_norm(32)", lambda x, y, w, b, rm, rv: F.group_norm(x, 32, w, b, out=y),
             lambda t, x, w, b, rm, rv: tf(t).group_norm(x, 32, w, b), 2),
        case("group_norm(32) + silu",
             lambda x, y, w, b, rm, rv: F.group_norm(x, 32, w, b, out=y, activation="silu"),
             lambda t, x, w, b, rm, rv: tf(t).silu(tf(t).group_norm(x, 32, w, b)), 2),
    ]
    return [rows[0], rows[-1]] if quick else rows
