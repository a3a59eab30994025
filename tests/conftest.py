import numpy as np
import pytest

import fastcnn

try:
    import torch
except ImportError:  # parity tests skip cleanly without PyTorch
    torch = None


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


requires_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def assert_close(actual, expected, reduction=1, dtype=None):
    """Compare with a tolerance that grows with the reduction length, scaled to the
    magnitude of the expected values (about 1e-5 * sqrt(K) relative for float32)."""
    dtype = np.dtype(dtype or actual.dtype)
    eps = 1e-5 if dtype == np.float32 else 1e-12
    tol = eps * max(1.0, np.sqrt(reduction))
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def run_threads(fn, counts=(1, 2, 3)):
    """Run fn under each thread count; return the list of results."""
    out = []
    for n in counts:
        with fastcnn.threads(n):
            out.append(fn())
    return out
