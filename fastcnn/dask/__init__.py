"""Batch inference on Dask: a fastcnn model over a Dask array of images.

    from dask.distributed import Client, LocalCluster
    import dask.array as da, fastcnn.dask

    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    images = da.from_npy_stack("images/")               # (N, 3, 224, 224) float32
    logits = fastcnn.dask.predict("resnet18.onnx", images, num_threads=1, batch_size=16)
    logits.to_zarr("logits.zarr")

Each worker process loads the model once (it travels as bytes, so workers
need no shared path) and compiles it for its own CPU; chunks are cut into
batches of batch_size. The command-line form is `fastcnn predict`.
Needs the dask extra: pip install "fastcnn[dask]".
"""
from fastcnn.dask._predict import predict
from fastcnn.dask._runner import worker_stats

__all__ = ["predict", "worker_stats"]
