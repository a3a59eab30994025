"""The algorithm each convolution of a plan runs, chosen once per plan.

By default the dispatcher's cost model picks it (_kernels._conv.select, with
the weights prepacked): deterministic, the same kernels on every compile of
the same model on the same instruction-set target. compile(...,
autotune=True) and fastcnn.onnx.load(..., autotune=True) instead time every
algorithm that can run the layer, on its geometry, with its weights packed as
the plan packs them, on the thread count in use, and keep the fastest.
plan.algorithms records the choices by step name (the layer's module path,
numbered from #2 when a module runs more than once), and autotune=<that
mapping> replays them: every step named gets its algorithm, the others the
dispatcher's. Timings on a busy machine move, so two autotuned compiles may
differ; a replayed mapping does not.
"""
import time
from collections.abc import Mapping

import numpy as np

from fastcnn import _kernels
from fastcnn._functional.conv import ConvEngine, ieee_safe
from fastcnn._opinfo import info

__all__ = ["Tuner", "check_setting"]

REPEAT = 3          # timed runs per candidate, after one warm-up run (best kept)
SLOW = 3.0          # a candidate this much slower than the best, warm, is not timed further


def check_setting(autotune, where):
    if isinstance(autotune, bool):
        return autotune
    if isinstance(autotune, Mapping):
        choices = dict(autotune)
        for name, algorithm in choices.items():
            if not isinstance(name, str) or not isinstance(algorithm, str):
                raise TypeError(f"{where}: autotune maps step names to algorithm names "
                                f"(str -> str), got {name!r} -> {algorithm!r}")
        return choices
    raise TypeError(f"{where}: autotune must be True, False or a mapping of step names to "
                    f"algorithms (a plan's .algorithms), got {type(autotune).__name__}")


def _step_names(nodes):
    """id(node) -> name for each convolution node, in execution order."""
    names, seen = {}, {}
    for node in nodes:
        if info(node.op).family != "conv":
            continue
        base = node.scope or node.op
        seen[base] = seen.get(base, 0) + 1
        names[id(node)] = base if seen[base] == 1 else f"{base}#{seen[base]}"
    return names


class Tuner:
    """The algorithms of one plan's convolution steps (shared by its executors)."""

    def __init__(self, nodes, autotune, where="compile"):
        self._setting = check_setting(autotune, where)
        self._where = where
        self._names = _step_names(nodes)
        self._chosen = {}
        if isinstance(self._setting, dict):
            unknown = sorted(set(self._setting) - set(self._names.values()))
            if unknown:
                raise ValueError(f"{where}: autotune names steps this plan does not have: "
                                 f"{unknown}; its convolution steps are "
                                 f"{list(self._names.values())}")

    @property
    def algorithms(self):
        """{step name: algorithm} of the convolution steps, in execution order."""
        return {self._names[k]: a for k, a in self._chosen.items()}

    def algorithm(self, node, geom, x_shape, w, bias, activation, num_threads):
        """The algorithm of this node's step (chosen on first call)."""
        key = id(node)
        if key not in self._chosen:
            self._chosen[key] = self._choose(node, geom, x_shape, w, bias, activation,
                                             num_threads)
        return self._chosen[key]

    def _choose(self, node, geom, x_shape, w, bias, activation, num_threads):
        conv = _kernels._conv
        if isinstance(self._setting, dict) and self._names[id(node)] in self._setting:
            name = self._names[id(node)]
            algorithm = self._setting[name]
            usable = _candidates(geom, w, num_threads)
            if algorithm not in usable:
                raise ValueError(f"{self._where}: autotune gives step {name!r} the algorithm "
                                 f"{algorithm!r}, which cannot run it here; usable: {usable}")
            return algorithm
        if self._setting is True:
            return _fastest(geom, x_shape, w, bias, activation, num_threads)
        return _weights_safe(conv.select(geom, True), w, num_threads)


def _weights_safe(algorithm, w, num_threads):
    """im2col instead of the direct kernel for weights holding NaN or Inf
    (see ieee_safe; Winograd's inputs are checked on every call)."""
    return ieee_safe(algorithm, None, w, num_threads) if algorithm == "direct" else algorithm


def _candidates(geom, w, num_threads):
    """The algorithms that can run this geometry with these weights."""
    conv = _kernels._conv
    return [a for a in conv.ALGORITHMS.values() if conv.applicable(geom, a)
            and _weights_safe(a, w, num_threads) == a]


def _fastest(geom, x_shape, w, bias, activation, num_threads):
    """The candidate with the least best-of-REPEAT time on random inputs."""
    x = np.random.default_rng(0).standard_normal(x_shape).astype(w.dtype)
    y = np.empty((x_shape[0], w.shape[0]) + geom.out_spatial(len(x_shape) - 2), w.dtype)
    best_algorithm, best = None, float("inf")
    for algorithm in _candidates(geom, w, num_threads):
        engine = ConvEngine(geom, w.dtype, algorithm)
        weights = engine.pack(w, num_threads)
        workspace = np.empty(engine.workspace_size(num_threads), w.dtype)
        run = lambda: engine.forward(x, weights, bias, y, workspace, activation, num_threads)
        run()
        t = _timed(run)
        if t < SLOW * best:
            t = min([t] + [_timed(run) for _ in range(REPEAT - 1)])
        if t < best:
            best_algorithm, best = algorithm, t
    return best_algorithm


def _timed(run):
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0
