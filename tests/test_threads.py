import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import fastcnn
import fastcnn.functional as F


@pytest.fixture(autouse=True)
def _reset():
    fastcnn.set_num_threads(None)
    yield
    fastcnn.set_num_threads(None)


def test_set_and_get():
    fastcnn.set_num_threads(3)
    assert fastcnn.get_num_threads() == 3
    fastcnn.set_num_threads(None)
    assert fastcnn.get_num_threads() >= 1


def test_context_manager_restores_and_nests():
    fastcnn.set_num_threads(2)
    with fastcnn.threads(1):
        assert fastcnn.get_num_threads() == 1
        with fastcnn.threads(4):
            assert fastcnn.get_num_threads() == 4
        assert fastcnn.get_num_threads() == 1
    assert fastcnn.get_num_threads() == 2


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                       ("2", TypeError)])
def test_bad_thread_counts(bad, error):
    with pytest.raises(error, match="threads"):
        fastcnn.set_num_threads(bad)
    with pytest.raises(error, match="threads"):
        with fastcnn.threads(bad):
            pass


def test_thread_counts_above_the_limit_are_refused():
    limit = fastcnn.MAX_THREADS
    fastcnn.set_num_threads(limit)                # the limit itself is fine
    assert fastcnn.get_num_threads() == limit
    for n in (limit + 1, 100000, 2**40):
        with pytest.raises(ValueError, match=f"set_num_threads: at most {limit} threads"):
            fastcnn.set_num_threads(n)
        with pytest.raises(ValueError, match=f"threads: at most {limit} threads"):
            with fastcnn.threads(n):
                pass
    assert fastcnn.get_num_threads() == limit     # refused: nothing changed


def test_openmp_counts_above_the_limit_are_an_error_not_a_crash():
    x = np.ones((1, 4, 6, 6), np.float32)
    w = np.ones((4, 4, 3, 3), np.float32)
    with threadpool_limits(100000, user_api="openmp"):
        with pytest.raises(ValueError, match="OpenMP's thread count .* is 100000, above "
                                             "fastcnn's limit of 1024"):
            F.conv2d(x, w)
        with fastcnn.threads(2):                  # fastcnn's own setting takes precedence
            assert F.conv2d(x, w).shape == (1, 4, 4, 4)
    code = ("import numpy as np, fastcnn.functional as F\n"
            "try:\n    F.relu(np.ones(3, np.float32))\n"
            "except ValueError as e:\n    print(e)\n")
    env = dict(os.environ, OMP_NUM_THREADS="100000")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OMP_NUM_THREADS" in out.stdout and "1024" in out.stdout


def test_threadpoolctl_openmp_limit_makes_fastcnn_single_threaded():
    default = fastcnn.get_num_threads()
    with threadpool_limits(1, user_api="openmp"):
        assert fastcnn.get_num_threads() == 1
    assert fastcnn.get_num_threads() == default


def test_omp_num_threads_environment():
    code = "import fastcnn; print(fastcnn.get_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "1"


def _scipy_blas_threads():
    for info in threadpool_info():
        if info["user_api"] == "blas" and "scipy_openblas-" in os.path.basename(info["filepath"]):
            return info["num_threads"]
    return None


def test_blas_thread_setting_is_left_unchanged():
    x = np.random.default_rng(0).standard_normal((2, 16, 12, 12)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
    before = _scipy_blas_threads()
    with fastcnn.threads(2):
        F.conv2d(x, w, padding=1)
    assert _scipy_blas_threads() == before
    with threadpool_limits(1, user_api="blas"):
        F.conv2d(x, w, padding=1)
        assert _scipy_blas_threads() in (None, 1)
    assert _scipy_blas_threads() == before


def test_concurrent_calls_from_python_threads_match():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 32, 20, 20)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    expected = F.conv2d(x, w, padding=1)
    before = _scipy_blas_threads()
    results, errors = [], []

    def worker():
        try:
            for _ in range(20):
                results.append(F.conv2d(x, w, padding=1))
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 80
    for r in results:
        np.testing.assert_array_equal(r, expected)
    assert _scipy_blas_threads() == before


def test_show_config_prints_the_essentials(capsys):
    fastcnn.show_config()
    out = capsys.readouterr().out
    for word in ("fastcnn", "simd:", "openmp", "blas", "threads"):
        assert word in out
    assert os.path.isdir(fastcnn.get_include()) or not os.path.exists(fastcnn.get_include())
