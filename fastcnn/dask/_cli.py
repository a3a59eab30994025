"""`fastcnn predict`: an ONNX model over a file of images, on a Dask cluster.

    fastcnn predict MODEL.onnx --input X.npy --output Y.npy --scheduler local \\
        --workers 2 --threads 1 --batch-size 16

Inputs: a .npy file (read by the workers, row range by row range), a folder
of .npy files (Dask's npy stack, or files concatenated in name order), or a
.zarr array. Outputs: a .npy file written by this process as chunks finish,
a folder (Dask's to_npy_stack) or a .zarr array (to_zarr), both written by
the workers. With --scheduler tcp://HOST:PORT, inputs and outputs must be on
storage every worker sees.
"""
import os
import sys
import time

import numpy as np

__all__ = ["add_arguments", "run"]


def add_arguments(p):
    p.add_argument("model", help="an .onnx file")
    p.add_argument("--input", required=True, help=".npy file, folder of .npy files, or .zarr")
    p.add_argument("--output", required=True, help=".npy file, folder, or .zarr")
    p.add_argument("--scheduler", help="'local' (a cluster on this machine) or tcp://HOST:PORT "
                                       "(an existing one); default: local")
    p.add_argument("--workers", type=int, help="local workers (default: the cores divided by "
                                               "--threads)")
    p.add_argument("--threads", type=int, default=1, help="fastcnn threads per worker")
    p.add_argument("--batch-size", type=int, default=16, help="images per model call")
    p.add_argument("--chunk-size", type=int, help="images per task (default: 64 batches)")
    p.add_argument("--output-name", help="an ONNX value to return instead of the model's "
                                         "output (a layer's features)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    """The job; returns the exit status (messages name what was wrong)."""
    try:
        return _run(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"fastcnn predict: {exc}", file=sys.stderr)
        return 2


def _run(args):
    from fastcnn.dask._predict import predict, require_dask
    require_dask()
    remote = args.scheduler not in (None, "local")
    if remote and args.workers is not None:
        raise ValueError("--workers sizes a local cluster; with --scheduler "
                         f"{args.scheduler} the cluster has its own workers")
    if remote and not args.scheduler.startswith(("tcp://", "tls://", "ucx://")):
        raise ValueError(f"--scheduler must be 'local' or an address such as "
                         f"tcp://HOST:PORT, got {args.scheduler!r}")
    for name in ("threads", "batch_size", "chunk_size", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    images = read_images(args.input, args.chunk_size or 64 * args.batch_size)
    # the model loads here, before any cluster starts or task is sent
    outputs = predict(args.model, images, num_threads=args.threads, batch_size=args.batch_size,
                      output=args.output_name)
    from dask.distributed import Client, LocalCluster, get_task_stream
    cluster = None
    t0 = time.perf_counter()
    if remote:
        client = Client(args.scheduler)
    else:
        workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
    started = time.perf_counter() - t0
    try:
        with get_task_stream(client) as stream:
            t0 = time.perf_counter()
            write_outputs(client, outputs, args.output, Progress(len(outputs), args.quiet))
            seconds = time.perf_counter() - t0
        nworkers = len(client.scheduler_info()["workers"])
        print(summary(stream.data, outputs.chunks[0], seconds, started, nworkers, args))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return 0


def _npy_rows(path, start, stop):
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def read_images(path, chunk_rows):
    """A Dask array over the images at path, read by the tasks (never here)."""
    import dask
    import dask.array as da
    if not os.path.exists(path):
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    if path.rstrip("/").endswith(".zarr"):
        return da.from_zarr(path)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "info")):
            return da.from_npy_stack(path)
        files = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
        if not files:
            raise ValueError(f"--input {path}: a folder with no .npy files")
        parts = []
        for name in files:
            f = os.path.join(path, name)
            head = np.load(f, mmap_mode="r")
            parts.append(da.from_delayed(dask.delayed(_npy_rows, pure=True)(f, 0, len(head)),
                                         shape=head.shape, dtype=head.dtype))
        return da.concatenate(parts)
    head = np.load(path, mmap_mode="r")
    if head.ndim < 2:
        raise ValueError(f"--input {path}: expected images (N, C, H, W), got shape {head.shape}")
    parts = [da.from_delayed(dask.delayed(_npy_rows, pure=True)(path, a, min(a + chunk_rows,
                                                                            len(head))),
                             shape=(min(a + chunk_rows, len(head)) - a,) + head.shape[1:],
                             dtype=head.dtype)
             for a in range(0, len(head), chunk_rows)]
    if not parts:
        raise ValueError(f"--input {path}: no images (shape {head.shape})")
    return da.concatenate(parts)


def write_outputs(client, outputs, path, progress):
    """Compute every chunk; a .npy output is written here as chunks finish, a
    folder or .zarr by the workers from the finished chunks."""
    import dask.array as da
    from dask.distributed import as_completed, futures_of
    rows = np.cumsum((0,) + outputs.chunks[0])
    finished = client.persist(outputs)
    target = None
    if path.endswith(".npy"):
        target = np.lib.format.open_memmap(path, mode="w+", dtype=outputs.dtype,
                                           shape=outputs.shape)
    for future in as_completed(futures_of(finished)):
        k = future.key[1]                   # the chunk's place along the rows
        if target is not None:
            target[rows[k]:rows[k + 1]] = future.result()
        else:
            future.result()                 # raises the task's error, if any
        progress.add(rows[k + 1] - rows[k])
    progress.close()
    if target is not None:
        target.flush()
    elif path.rstrip("/").endswith(".zarr"):
        finished.to_zarr(path, overwrite=True)
    else:
        da.to_npy_stack(path, finished)


class Progress:
    """images done / total and the rate, on one line of stderr."""

    def __init__(self, total, quiet):
        self.total, self.quiet, self.done = total, quiet, 0
        self.t0 = self.shown = time.perf_counter()

    def add(self, n):
        self.done += n
        now = time.perf_counter()
        if not self.quiet and (now - self.shown > 0.5 or self.done == self.total):
            self.shown = now
            width = 30
            bar = "#" * (width * self.done // max(self.total, 1))
            rate = self.done / max(now - self.t0, 1e-9)
            print(f"\r[{bar:<{width}}] {self.done}/{self.total} images, {rate:.1f} images/s",
                  end="", file=sys.stderr, flush=True)

    def close(self):
        if not self.quiet:
            print(file=sys.stderr)


def summary(records, chunk_rows, seconds, started, nworkers, args):
    """Images/s overall and per worker, from the scheduler's task stream."""
    per = {}
    for r in records:
        key = r.get("key")
        if not (isinstance(key, tuple) and str(key[0]).startswith("fastcnn-predict")):
            continue
        busy = sum(s["stop"] - s["start"] for s in r.get("startstops", ())
                   if s.get("action") == "compute")
        images, total = per.get(r["worker"], (0, 0.0))
        per[r["worker"]] = (images + chunk_rows[key[1]], total + busy)
    n = sum(chunk_rows)
    lines = [f"fastcnn predict: {n} images in {seconds:.2f} s, {n / seconds:.1f} images/s "
             f"({nworkers} workers x {args.threads} fastcnn threads, batch {args.batch_size}; "
             f"cluster ready in {started:.1f} s)",
             f"{'worker':<28} {'images':>8} {'busy s':>8} {'images/s':>9}"]
    for worker, (images, busy) in sorted(per.items()):
        lines.append(f"{worker:<28} {images:>8} {busy:>8.2f} {images / max(busy, 1e-9):>9.1f}")
    return "\n".join(lines)
