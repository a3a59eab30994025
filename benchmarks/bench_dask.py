"""Batch inference throughput: one process vs fastcnn.dask on a LocalCluster.

    python benchmarks/bench_dask.py [--images 2048] [--nets resnet18,mobilenet_v2]

For each network (ONNX, exported by fastcnn, 224x224, batch 16, chunks of
64 images): images/s of the single-process plan at 2 threads, of a
LocalCluster of 2 workers x 1 fastcnn thread, and of 1 worker x 2 fastcnn
threads, over the same images: a .npy file (in the page cache) that the
single process and the workers read chunk by chunk, as `fastcnn predict` does. Every worker has loaded and compiled the model
before the clock starts (a warm-up job); each figure is the best of --rounds
jobs, the configurations taking turns so a busy moment hits all alike.
"""
import argparse
import os
import tempfile
import time

import numpy as np

import fastcnn
import fastcnn.dask
import fastcnn.onnx
from fastcnn._config import cpu_name
from fastcnn.dask._cli import read_images

CHUNK, BATCH = 64, 16


def single(model_path, images_path, threads):
    model = fastcnn.onnx.load(model_path)
    images = np.load(images_path, mmap_mode="r")
    with fastcnn.threads(threads):
        model(np.array(images[:BATCH]))                      # plan made before the clock
        t = time.perf_counter()
        for c in range(0, len(images), CHUNK):
            chunk = np.array(images[c:c + CHUNK])
            for b in range(0, len(chunk), BATCH):
                model(chunk[b:b + BATCH])
        return time.perf_counter() - t


def distributed_job(client, model_path, images_path, threads):
    images = read_images(images_path, CHUNK)
    y = fastcnn.dask.predict(model_path, images, num_threads=threads, batch_size=BATCH)
    y[:CHUNK * 2].compute()                                   # every worker loads the model
    t = time.perf_counter()
    y.sum().compute()
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--nets", default="resnet18,mobilenet_v2")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    from dask.distributed import Client, LocalCluster
    copies = max(1, args.images // CHUNK)
    n = copies * CHUNK
    clusters = {"2 workers x 1 thread": (2, 1), "1 worker x 2 threads": (1, 2)}
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, fastcnn {fastcnn.__version__} "
          f"({fastcnn.get_isa()} kernels); {n} images of 3x224x224, batch {BATCH}, "
          f"chunks of {CHUNK}; best of {args.rounds} rounds")
    print("| network | configuration | images/s | vs one process |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        images_path = os.path.join(tmp, "images.npy")
        images = np.lib.format.open_memmap(images_path, "w+", np.float32, (n, 3, 224, 224))
        rng = np.random.default_rng(0)
        for c in range(0, n, CHUNK):
            images[c:c + CHUNK] = rng.standard_normal((CHUNK, 3, 224, 224), np.float32)
        images.flush()
        del images
        for net in args.nets.split(","):
            path = os.path.join(tmp, f"{net}.onnx")
            fastcnn.onnx.export(getattr(fastcnn.models, net)().eval(), (1, 3, 224, 224), path)
            best = {"one process, 2 threads": float("inf"), **{k: float("inf") for k in clusters}}
            running = {}
            for name, (workers, threads) in clusters.items():
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                       processes=True, dashboard_address=":0")
                running[name] = (cluster, Client(cluster, set_as_default=False), threads)
            try:
                for _ in range(args.rounds):
                    best["one process, 2 threads"] = min(best["one process, 2 threads"],
                                                         single(path, images_path, 2))
                    for name, (cluster, client, threads) in running.items():
                        with client.as_current():
                            best[name] = min(best[name], distributed_job(
                                client, path, images_path, threads))
            finally:
                for cluster, client, _ in running.values():
                    client.close()
                    cluster.close()
            base = n / best["one process, 2 threads"]
            for name, seconds in best.items():
                print(f"| {net} | {name} | {n / seconds:.1f} | {n / seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
