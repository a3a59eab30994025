"""A model as it travels to Dask workers, and as each worker process runs it.

The model travels as bytes (an ONNX file's, or a pickled fastcnn model), one
key in the task graph, so Dask moves it to a worker once, not with every
task. A worker process loads and compiles it once, on its first chunk, for
its own CPU (its own ISA target), and keeps it for every later chunk.
"""
import hashlib
import os
import pickle
import threading
import time

import numpy as np

from fastcnn._kernels import _omp
from fastcnn._threads import threads
from fastcnn.compile import compile as compile_plan, model_dtype
from fastcnn.nn.module import Module

__all__ = ["Payload", "payload_of", "runner", "run_chunk", "worker_stats"]


class Payload:
    """A model as bytes: kind "onnx" (an ONNX file's bytes) or "pickle" (a
    pickled fastcnn model); `output` names the ONNX value to return (None:
    the model's first output)."""
    __slots__ = ("kind", "data", "output", "digest")

    def __init__(self, kind, data, output=None):
        self.kind, self.data, self.output = kind, bytes(data), output
        self.digest = hashlib.sha256(self.data).hexdigest()

    def __getstate__(self):
        return self.kind, self.data, self.output, self.digest

    def __setstate__(self, state):
        self.kind, self.data, self.output, self.digest = state

    def __repr__(self):
        return f"Payload({self.kind}, {len(self.data)} bytes, output={self.output!r})"


def payload_of(model, output=None):
    """The Payload of an ONNX path, ONNX bytes, or a fastcnn model."""
    if isinstance(model, Payload):
        return model
    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as fh:
            return Payload("onnx", fh.read(), output)
    if isinstance(model, (bytes, bytearray, memoryview)):
        return Payload("onnx", model, output)
    if isinstance(model, Module):
        if output is not None:
            raise ValueError("fastcnn.dask: output= names a value of an ONNX model; for a "
                             "fastcnn model, pass a model whose forward returns the features "
                             "(or export it with fastcnn.onnx.export)")
        return Payload("pickle", pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    raise TypeError(f"fastcnn.dask: model must be an ONNX file path, ONNX bytes or a "
                    f"fastcnn.nn.Module, got {type(model).__name__}")


def _onnx_with_output(data, output):
    """The ONNX model's bytes with `output` (any value it computes) as its only output."""
    import onnx
    proto = onnx.load_from_string(data)
    computed = {name for node in proto.graph.node for name in node.output}
    if output not in computed:
        raise ValueError(f"fastcnn.dask: the model computes no value named {output!r}; "
                         f"its outputs are {[o.name for o in proto.graph.output]}")
    inferred = onnx.shape_inference.infer_shapes(proto)
    info = next((v for v in list(inferred.graph.value_info) + list(inferred.graph.output)
                 if v.name == output), None)
    if info is None:
        info = onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)
    del proto.graph.output[:]
    proto.graph.output.append(info)
    return proto.SerializeToString()


class Runner:
    """A payload loaded in this process: runs chunks in batches of batch_size,
    the last batch being what remains."""

    _PLANS = 4        # compiled plans a pickled model keeps (one per batch size seen)

    def __init__(self, payload, num_threads):
        self.num_threads = num_threads
        with threads(num_threads):
            if payload.kind == "onnx":
                from fastcnn import onnx as fonnx
                data = payload.data if payload.output is None \
                    else _onnx_with_output(payload.data, payload.output)
                self._onnx = fonnx.load(data)
                if len(self._onnx.inputs) != 1:
                    raise ValueError(f"fastcnn.dask: the model takes "
                                     f"{len(self._onnx.inputs)} inputs; batch inference "
                                     f"feeds one")
                port = self._onnx.inputs[0]
                self.input_shape, self.dtype = port.shape, port.dtype
            else:
                self._model = pickle.loads(payload.data).eval()
                self._onnx, self._plans = None, {}
                self.input_shape = None
                self.dtype = model_dtype(self._model)

    def _batch(self, x):
        if self._onnx is not None:
            out = self._onnx(x)
            return out[0] if isinstance(out, tuple) else out
        plan = self._plans.pop(x.shape, None)
        if plan is None:
            plan = compile_plan(self._model, x.shape, dtype=self.dtype)
        self._plans[x.shape] = plan            # the most recent last
        while len(self._plans) > self._PLANS:
            self._plans.pop(next(iter(self._plans)))
        return plan(x)

    def __call__(self, x, batch_size):
        with threads(self.num_threads):
            out = None
            for start in range(0, len(x), batch_size):
                y = self._batch(np.ascontiguousarray(x[start:start + batch_size]))
                if out is None:
                    out = np.empty((len(x),) + y.shape[1:], y.dtype)
                out[start:start + len(y)] = y
        return out


# This process's runners and counters (a worker's: see worker_stats).
_RUNNERS = {}
_STATS = {"loads": 0, "chunks": 0, "images": 0, "seconds": 0.0, "threads": None}
_LOCK = threading.Lock()


def runner(payload, num_threads):
    """This process's Runner for the payload, loaded on first use."""
    key = (payload.digest, payload.output, num_threads)
    with _LOCK:
        r = _RUNNERS.get(key)
        if r is None:
            r = _RUNNERS[key] = Runner(payload, num_threads)
            _STATS["loads"] += 1
    return r


def worker_stats():
    """This process's counters: models loaded, chunks and images run, seconds
    spent in the model, and the threads OpenMP gave the last chunk's setting. On a
    cluster: client.run(fastcnn.dask.worker_stats)."""
    with _LOCK:
        return dict(_STATS)


def run_chunk(chunk, payload, num_threads, batch_size, item_shape, dtype, block_info=None):
    """The task: one chunk of images (rows, *item_shape) through the model."""
    where = "a chunk"
    if block_info:
        start, stop = block_info[0]["array-location"][0]
        where = f"chunk {block_info[0]['chunk-location'][0]} (rows {start} to {stop - 1})"
    if not isinstance(chunk, np.ndarray) or chunk.shape[1:] != tuple(item_shape) \
            or chunk.dtype != dtype:
        got = (f"shape {getattr(chunk, 'shape', None)}, dtype {getattr(chunk, 'dtype', None)}"
               if isinstance(chunk, np.ndarray) else type(chunk).__name__)
        raise ValueError(f"fastcnn.dask: {where}: expected images of shape "
                         f"(rows, {', '.join(map(str, item_shape))}) and dtype {dtype}, "
                         f"got {got}")
    if num_threads > 1 and _omp.in_forked_child():
        raise RuntimeError("fastcnn.dask: this worker was started by fork(), where fastcnn "
                           "runs one thread; start workers with spawn or forkserver (Dask's "
                           "distributed.worker.multiprocessing-method) or use num_threads=1")
    r = runner(payload, num_threads)
    t0 = time.perf_counter()
    y = r(chunk, batch_size)
    with _LOCK:
        _STATS["chunks"] += 1
        _STATS["images"] += len(chunk)
        _STATS["seconds"] += time.perf_counter() - t0
        _STATS["threads"] = _omp.team_size(num_threads)
    return y
