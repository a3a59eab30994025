"""Concurrency: many Python threads on the same and on different models,
thread-count settings that stay in their thread, and inference after fork()
and in multiprocessing workers ('fork' and 'spawn')."""
import multiprocessing
import os
import threading
import time

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import models, nn

THREADS = 8
CALLS = 200


def _lenet():
    fastcnn.manual_seed(0)
    return models.lenet5().eval()


def _gn_net():
    fastcnn.manual_seed(1)
    return models.groupnorm_cnn().eval()


def _input(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _hammer(fns, calls=CALLS):
    """Run each fn `calls` times in its own thread, all at once; return the
    results of every call per thread and any exception raised."""
    results = [[] for _ in fns]
    errors = []
    start = threading.Barrier(len(fns))

    def worker(k, fn):
        try:
            start.wait()
            for _ in range(calls):
                results[k].append(fn())
        except Exception as exc:          # reported below, never lost in a thread
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(k, fn)) for k, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    return results


def test_threads_share_one_compiled_plan():
    model = _lenet()
    x = _input((4, 3, 32, 32))
    plan = fastcnn.compile(model, x.shape)
    expected = plan(x)
    results = _hammer([lambda: plan(x)] * THREADS)
    for per_thread in results:
        for y in per_thread:
            np.testing.assert_array_equal(y, expected)
    assert len(plan._executors) <= THREADS      # executors made on demand, then reused


def test_threads_share_one_eager_model_and_run_different_models():
    lenet, gn = _lenet(), _gn_net()
    xl, xg = _input((2, 3, 32, 32), 1), _input((2, 3, 64, 64), 2)
    gn_plan = fastcnn.compile(gn, xg.shape)
    jobs = [(lambda: lenet(xl), lenet(xl)), (lambda: gn(xg), gn(xg)),
            (lambda: gn_plan(xg), gn_plan(xg))]
    jobs = (jobs * 3)[:THREADS]
    results = _hammer([fn for fn, _ in jobs], calls=CALLS // 4)
    for (_, want), per_thread in zip(jobs, results):
        for y in per_thread:
            np.testing.assert_array_equal(y, want)


def test_threads_share_an_onnx_model():
    pytest.importorskip("onnx")
    import io
    import fastcnn.onnx as fonnx
    buf = io.BytesIO()
    fonnx.export(_lenet(), (1, 3, 32, 32), buf)
    model = fonnx.load(buf.getvalue())
    xs = [_input((n, 3, 32, 32), n) for n in (1, 2, 3, 5)]
    wants = [model(x) for x in xs]
    fns = [(lambda x=x: model(x)) for x in xs] * 2
    results = _hammer(fns, calls=50)
    for k, per_thread in enumerate(results):
        for y in per_thread:
            np.testing.assert_array_equal(y, wants[k % 4])


def test_kernels_release_the_gil():
    """While one Python thread is inside a long convolution, another keeps
    running Python code: the kernel holds no GIL. The main thread stamps the
    time in a loop; stamps must cover most of the call (a kernel holding the
    GIL would leave only the Python wrapper's few microseconds). No timing
    threshold, so a busy machine cannot fail it."""
    x = _input((32, 64, 56, 56))
    w = _input((64, 64, 3, 3)) * 0.05
    y = np.empty_like(x)
    F.conv2d(x[:1], w, None, 1, 1)
    entered, done = threading.Event(), threading.Event()
    window = []

    def convolve():
        with fastcnn.threads(1):
            entered.set()
            t0 = time.perf_counter()
            F.conv2d(x, w, None, 1, 1, out=y)
            window.extend([t0, time.perf_counter()])
        done.set()

    worker = threading.Thread(target=convolve)
    worker.start()
    entered.wait()
    stamps = []
    while not done.is_set():
        stamps.append(time.perf_counter())
    worker.join()
    t0, t1 = window
    inside = [t for t in stamps if t0 < t < t1]
    covered = (max(inside) - min(inside)) / (t1 - t0) if inside else 0.0
    print(f"\n{len(inside)} stamps cover {covered:.0%} of the {(t1 - t0) * 1e3:.0f} ms call")
    assert len(inside) > 100 and covered > 0.3


def test_single_threaded_kernels_in_many_python_threads_agree():
    """Python threads each running one-thread kernels at once (whether they
    overlap in time is a benchmark's question: test_kernels_release_the_gil
    checks that they can) all get the serial result."""
    x = _input((1, 64, 28, 28))
    w = _input((64, 64, 3, 3)) * 0.05
    want = F.conv2d(x, w, None, 1, 1)
    results = []

    def call():
        with fastcnn.threads(1):
            results.append(F.conv2d(x, w, None, 1, 1))
    n = 40
    _hammer([call] * THREADS, calls=n)
    assert len(results) == n * THREADS
    for r in results:
        np.testing.assert_array_equal(r, want)


def test_thread_settings_stay_in_their_thread():
    seen = {}
    inside = threading.Event()
    checked = threading.Event()

    def pinned():
        with fastcnn.threads(1):
            seen["inside"] = fastcnn.get_num_threads()
            inside.set()
            checked.wait(10)
        seen["after"] = fastcnn.get_num_threads()

    default = fastcnn.get_num_threads()
    t = threading.Thread(target=pinned)
    t.start()
    inside.wait(10)
    seen["other thread"] = fastcnn.get_num_threads()
    with fastcnn.threads(3):
        seen["main pinned"] = fastcnn.get_num_threads()
    checked.set()
    t.join(10)
    assert seen == {"inside": 1, "other thread": default, "main pinned": 3, "after": default}


# ---------------------------------------------------------------- processes

def _infer(seed):
    """Module level, so 'spawn' workers can import it."""
    model = _lenet()
    return model(_input((2, 3, 32, 32), seed))


def test_inference_after_fork():
    """GNU OpenMP cannot start thread teams in a forked child (it would
    hang); fastcnn runs single-threaded there and results are the same."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    with fastcnn.threads(2):
        want = _infer(3)                 # the parent's OpenMP threads exist now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                         # child
        try:
            with fastcnn.threads(2):
                y = _infer(3)
            ok = np.array_equal(y, want) and fastcnn.get_num_threads() == 1
            os.write(write, b"ok" if ok else b"wrong")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.time() + 120
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the forked child hung")
    assert os.read(read, 10) == b"ok"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_workers(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method}")
    with fastcnn.threads(2):
        want = [_infer(s) for s in range(3)]
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        got = pool.map_async(_infer, range(3)).get(timeout=300)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_layer_objects_hold_no_hidden_shared_state():
    """Two layers with the same arguments compute independently (no caches
    shared through globals)."""
    fastcnn.manual_seed(0)
    a = nn.Conv2d(3, 4, 3)
    fastcnn.manual_seed(1)
    b = nn.Conv2d(3, 4, 3)
    x = _input((1, 3, 8, 8))
    ya = a(x)
    yb = b(x)
    assert not np.array_equal(ya, yb)
    np.testing.assert_array_equal(a(x), ya)
