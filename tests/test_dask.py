"""fastcnn.dask on a real dask.distributed.LocalCluster (worker processes,
started by spawn, Dask's default): results equal to the single-process plan's,
the model loaded once per worker, fastcnn's threads despite the nanny's
OMP_NUM_THREADS=1, a worker killed mid-job, bad chunks and bad models."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastcnn

distributed = pytest.importorskip("distributed", reason="needs the dask extra")
pytest.importorskip("onnx", reason="the ONNX form needs onnx")
import dask  # noqa: E402
import dask.array as da  # noqa: E402
import fastcnn.dask  # noqa: E402
import fastcnn.onnx  # noqa: E402
from fastcnn.dask._runner import worker_stats  # noqa: E402

ITEM = (3, 32, 32)


def _cluster(**kw):
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", **kw)
    return cluster, distributed.Client(cluster)


@pytest.fixture(scope="module")
def client():
    cluster, client = _cluster()
    yield client
    client.close()
    cluster.close()


def _lenet(seed):
    fastcnn.manual_seed(seed)
    return fastcnn.models.lenet5().eval()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dask") / "lenet.onnx"
    fastcnn.onnx.export(_lenet(1), (1,) + ITEM, str(path))
    return str(path)


def _images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n,) + ITEM).astype(np.float32)


def _batched(fn, x, chunk, batch):
    """The single-process reference: the same chunks cut into the same batches."""
    parts = []
    for c in range(0, len(x), chunk):
        block = x[c:c + chunk]
        parts += [fn(np.ascontiguousarray(block[b:b + batch])) for b in range(0, len(block), batch)]
    return np.concatenate(parts)


def _stats(client):
    return client.run(worker_stats)


def test_onnx_outputs_equal_the_single_process_plan(client, onnx_file):
    x = _images(200)
    model = fastcnn.onnx.load(onnx_file)
    y = fastcnn.dask.predict(onnx_file, da.from_array(x, chunks=(48,) + ITEM), batch_size=16)
    got = y.compute()
    assert got.shape == (200, 10) and got.dtype == np.float32
    # chunks of 48 = 3 batches of 16, the last chunk 8: the batches match, so the bits do
    np.testing.assert_array_equal(got, _batched(model, x, 48, 16))


def test_fastcnn_model_and_remainder_batches(client):
    model = _lenet(2)
    x = _images(101, seed=3)                # chunks of 30 rows, batches of 7: remainders both
    y = fastcnn.dask.predict(model, da.from_array(x, chunks=(30,) + ITEM), batch_size=7)
    plans = {}

    def plan(b):
        if b.shape not in plans:
            plans[b.shape] = fastcnn.compile(model, b.shape)
        return plans[b.shape](b)
    np.testing.assert_array_equal(y.compute(), _batched(plan, x, 30, 7))
    eager = model(x)
    np.testing.assert_allclose(y.compute(), eager, rtol=1e-5, atol=1e-5)


def test_one_image_and_a_layers_features(client, onnx_file):
    x = _images(1)
    y = fastcnn.dask.predict(onnx_file, da.from_array(x, chunks=(1,) + ITEM))
    np.testing.assert_array_equal(y.compute(), fastcnn.onnx.load(onnx_file)(x))
    import onnx
    proto = onnx.load(onnx_file)
    name = next(n.output[0] for n in proto.graph.node if n.op_type == "Flatten")
    feats = fastcnn.dask.predict(onnx_file, da.from_array(_images(20), chunks=(8,) + ITEM),
                                 output=name, batch_size=4).compute()
    assert feats.shape == (20, 16 * 5 * 5)
    with pytest.raises(ValueError, match="no value named 'nope'"):
        fastcnn.dask.predict(onnx_file, da.from_array(x, chunks=(1,) + ITEM), output="nope")


def test_model_loaded_once_per_worker(client):
    model = _lenet(4)                       # weights no earlier test used: a new payload
    before = _stats(client)
    x = _images(160)
    fastcnn.dask.predict(model, da.from_array(x, chunks=(8,) + ITEM), batch_size=8).compute()
    after = _stats(client)
    chunks = {w: after[w]["chunks"] - before[w]["chunks"] for w in after}
    loads = {w: after[w]["loads"] - before[w]["loads"] for w in after}
    assert sum(chunks.values()) == 20
    for w in after:                         # a worker that ran chunks loaded the model once
        assert loads[w] == (1 if chunks[w] else 0), (chunks, loads)
    assert max(chunks.values()) > 1


def test_threads_honoured_despite_omp_num_threads(client):
    assert set(client.run(os.environ.get, "OMP_NUM_THREADS").values()) == {"1"}
    x = _images(64)
    for threads in (2, 1):
        fastcnn.dask.predict(_lenet(5), da.from_array(x, chunks=(16,) + ITEM),
                             num_threads=threads).compute()
        ran = [s["threads"] for s in _stats(client).values() if s["threads"] is not None]
        assert ran and set(ran) == {threads}


def test_a_chunk_of_the_wrong_shape_or_dtype_is_named(client, onnx_file):
    good = da.from_array(_images(16), chunks=(16,) + ITEM)
    for bad, what in ((np.zeros((16, 3, 30, 30), np.float32), r"shape \(16, 3, 30, 30\)"),
                      (np.zeros((16,) + ITEM, np.float64), r"shape \(16, 3, 32, 32\), dtype float64")):
        lying = da.from_delayed(dask.delayed(np.array)(bad), shape=(16,) + ITEM,
                                dtype=np.float32)
        y = fastcnn.dask.predict(onnx_file, da.concatenate([good, lying]))
        with pytest.raises(ValueError, match=r"chunk 1 \(rows 16 to 31\): expected images of "
                                             r"shape \(rows, 3, 32, 32\) and dtype float32, "
                                             r"got " + what):
            y.compute()
    x = _images(32)                         # the cluster is still usable
    np.testing.assert_array_equal(
        fastcnn.dask.predict(onnx_file, da.from_array(x, chunks=(16,) + ITEM)).compute(),
        _batched(fastcnn.onnx.load(onnx_file), x, 16, 16))


def _task_keys(client):
    return client.run_on_scheduler(lambda dask_scheduler: set(map(str, dask_scheduler.tasks)))


def test_bad_models_and_inputs_fail_before_any_task(client, onnx_file, tmp_path):
    x = da.from_array(_images(4), chunks=(2,) + ITEM)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    before = _task_keys(client)     # earlier tests' tasks may still be leaving: compare keys
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        fastcnn.dask.predict(str(broken), x)
    with pytest.raises(FileNotFoundError):
        fastcnn.dask.predict(str(tmp_path / "missing.onnx"), x)
    with pytest.raises(TypeError, match="takes float32 images, got float64"):
        fastcnn.dask.predict(onnx_file, x.astype(np.float64))
    with pytest.raises(ValueError, match=r"takes images of shape \(N, 3, 32, 32\)"):
        fastcnn.dask.predict(onnx_file, da.zeros((4, 3, 28, 28), dtype=np.float32, chunks=2))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        fastcnn.dask.predict(onnx_file, x, batch_size=0)
    with pytest.raises(TypeError, match="ONNX file path, ONNX bytes or a fastcnn.nn.Module"):
        fastcnn.dask.predict(42, x)
    assert _task_keys(client) <= before         # nothing submitted


def _finished_chunks(client):
    return client.run_on_scheduler(lambda dask_scheduler: sum(
        ts.state == "memory" for key, ts in dask_scheduler.tasks.items()
        if "fastcnn-predict" in str(key)))


def test_a_worker_killed_mid_job_and_every_row_once():
    cluster, client = _cluster()
    try:
        x = _images(480, seed=7)
        model = _lenet(6)
        y = fastcnn.dask.predict(model, da.from_array(x, chunks=(4,) + ITEM), batch_size=4)
        pids = client.run(os.getpid)
        job = client.compute(y)
        deadline = time.monotonic() + 60
        while _finished_chunks(client) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not job.done(), "the job ended before the kill"
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        got = job.result()
        np.testing.assert_array_equal(got, _batched(fastcnn.compile(model, (4,) + ITEM), x, 4, 4))
        # the nanny started a new worker process in place of the killed one
        client.wait_for_workers(2, timeout=60)
        assert set(client.run(os.getpid).values()) != set(pids.values())
    finally:
        client.close()
        cluster.close()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fastcnn", "predict", *args],
                          capture_output=True, text=True, timeout=300, cwd=os.path.expanduser("~"))


def test_cli_as_documented(onnx_file, tmp_path):
    x = _images(100, seed=9)
    np.save(tmp_path / "x.npy", x)
    run = _cli(onnx_file, "--input", str(tmp_path / "x.npy"), "--output",
               str(tmp_path / "y.npy"), "--scheduler", "local", "--workers", "2", "--threads",
               "1", "--batch-size", "16", "--chunk-size", "32")
    assert run.returncode == 0, run.stderr
    assert "100 images in" in run.stdout and "images/s" in run.stdout
    assert run.stdout.count("tcp://") >= 1
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"),
                                  _batched(fastcnn.onnx.load(onnx_file), x, 32, 16))
    run = _cli(onnx_file, "--input", str(tmp_path / "x.npy"), "--output",
               str(tmp_path / "y.zarr"), "--workers", "1", "--quiet", "--chunk-size", "32")
    if run.returncode == 0:                 # zarr is part of the dask extra
        np.testing.assert_array_equal(da.from_zarr(str(tmp_path / "y.zarr")).compute(),
                                      np.load(tmp_path / "y.npy"))
    else:
        assert "zarr" in run.stderr, run.stderr


def test_cli_refuses_before_starting_anything(onnx_file, tmp_path):
    np.save(tmp_path / "x.npy", _images(4))
    cases = [
        (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers sizes a local cluster"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--scheduler", "somewhere"], "--scheduler must be 'local' or an address"),
    ]
    for extra, message in cases:
        run = _cli(onnx_file, "--input", str(tmp_path / "x.npy"), "--output",
                   str(tmp_path / "y.npy"), *extra)
        assert run.returncode == 2 and message in run.stderr, run.stderr
    run = _cli(onnx_file, "--input", str(tmp_path / "missing.npy"), "--output",
               str(tmp_path / "y.npy"))
    assert run.returncode == 2 and "no such file" in run.stderr
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    run = _cli(str(tmp_path / "bad.onnx"), "--input", str(tmp_path / "x.npy"), "--output",
               str(tmp_path / "y.npy"))
    assert run.returncode == 2 and "not a valid ONNX model" in run.stderr
