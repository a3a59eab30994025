"""fastcnn.dask.predict: a model over a Dask array of images, chunk by chunk."""
import numpy as np

from fastcnn.dask._runner import payload_of, run_chunk, runner

__all__ = ["predict", "require_dask"]


def require_dask():
    try:
        import dask.array as da
    except ImportError:
        raise ImportError('fastcnn.dask needs Dask: pip install "fastcnn[dask]"') from None
    return da


def _positive(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"fastcnn.dask.predict: {what} must be a positive int, got {value!r}")
    return int(value)


def predict(model, images, *, num_threads=1, batch_size=16, output=None, chunk_size=None):
    """The model's outputs for every image, as a Dask array (computed lazily
    on whatever Dask scheduler is current: a distributed Client, or Dask's
    local threads).

    model: an ONNX file path, ONNX bytes, or a fastcnn model (nn.Module, in
    eval mode on the workers); it travels to the workers as bytes, once per
    worker (scattered to every worker of the current distributed client), and
    is loaded and compiled once per worker process.
    images: a Dask array (N, C, H, W) chunked along N (other axes are made
    whole), or a NumPy array (then split into chunks of chunk_size rows,
    default 64 batches). Its dtype must be the model's input dtype.
    num_threads: fastcnn threads per task (Dask's nanny sets OMP_NUM_THREADS=1
    in its workers; fastcnn uses this number whatever it says). Run workers
    with one task thread each, and num_threads x workers at most the cores.
    batch_size: images per call of the model within a chunk; the last batch
    of a chunk is what remains.
    output: for an ONNX model, the name of the value to return (a layer's
    features); default its first output.

    The model is loaded here first, so a model that does not load, or images
    it cannot take, fail before any task is sent.
    """
    da = require_dask()
    num_threads = _positive(num_threads, "num_threads")
    batch_size = _positive(batch_size, "batch_size")
    payload = payload_of(model, output)
    local = runner(payload, num_threads)       # fails here on a model that does not load
    if isinstance(images, np.ndarray):
        rows = _positive(chunk_size, "chunk_size") if chunk_size is not None else 64 * batch_size
        images = da.from_array(images, chunks=(rows,) + images.shape[1:])
    elif not isinstance(images, da.Array):
        raise TypeError(f"fastcnn.dask.predict: images must be a dask.array.Array or a "
                        f"numpy.ndarray, got {type(images).__name__}")
    elif chunk_size is not None:
        images = images.rechunk({0: _positive(chunk_size, "chunk_size")})
    item_shape = tuple(int(s) for s in images.shape[1:])
    _check_images(local, images, item_shape)
    images = images.rechunk({axis: -1 for axis in range(1, images.ndim)})
    if images.shape[0] == 0:
        raise ValueError("fastcnn.dask.predict: no images (the array has 0 rows)")
    sample = local(np.zeros((1,) + item_shape, local.dtype), 1)
    out_item = sample.shape[1:]
    in_nd, out_nd = images.ndim, 1 + len(out_item)
    layout = {"drop_axis": list(range(out_nd, in_nd))} if out_nd < in_nd else \
        {"new_axis": list(range(in_nd, out_nd))} if out_nd > in_nd else {}
    return images.map_blocks(
        run_chunk, _model_key(payload), num_threads, batch_size, item_shape, local.dtype,
        dtype=sample.dtype, chunks=(images.chunks[0],) + tuple((s,) for s in out_item),
        meta=np.empty((0,) * out_nd, sample.dtype), token="fastcnn-predict", **layout)


def _model_key(payload):
    """The payload as one key of the graph: with a distributed client, data
    scattered to every worker (a worker that joins later copies it from a
    peer), so the model's bytes neither pass through the scheduler nor travel
    with the tasks; with Dask's local schedulers, a literal of the graph."""
    try:
        from distributed import get_client
        client = get_client()
    except (ImportError, ValueError):           # no distributed, or no client
        import dask
        return dask.delayed(payload, pure=True)
    # a key of its own per call (hash=False): with content-hashed keys, a call
    # made while the previous call's future of the same model is being
    # released can find its data forgotten ("lost dependencies"); the workers
    # still load each model once (their runners are keyed by the bytes' digest)
    return client.scatter(payload, broadcast=True, hash=False)


def _check_images(local, images, item_shape):
    if images.ndim < 2:
        raise ValueError(f"fastcnn.dask.predict: images must be (N, C, ...), got shape "
                         f"{images.shape}")
    if images.dtype != local.dtype:
        raise TypeError(f"fastcnn.dask.predict: the model takes {local.dtype} images, got "
                        f"{images.dtype} (convert with images.astype({str(local.dtype)!r}))")
    want = local.input_shape
    if want is not None and (len(want) != images.ndim or any(
            d is not None and d != s for d, s in zip(want[1:], item_shape))):
        shown = ", ".join("N" if i == 0 else "?" if d is None else str(d)
                          for i, d in enumerate(want))
        raise ValueError(f"fastcnn.dask.predict: the model takes images of shape ({shown}), "
                         f"got {images.shape}")
