"""The C-API (include/fastcnn.h) and the Cython API (fastcnn/kernels.pxd),
compiled here with the system C compiler: a C extension module, a program
embedding CPython, and a Cython module; each checked against the Python API."""
import ctypes
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from conftest import assert_close

CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")

EXTENSION = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>
#include <fastcnn.h>

static int get(PyObject *o, Py_buffer *b, int writable)
{
    return PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0));
}

/* conv2d(x, w, b, y, n, c, h, w, m, k, stride, pad, dilation, groups, act) -> status */
static PyObject *conv2d(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *bo, *yo;
    long long n, c, h, wd, m, k, s, p, d, g;
    int act;
    Py_buffer x, w, b, y;
    fcnn_conv_params prm = {0};
    size_t need;
    void *ws;
    fcnn_status st;
    if (!PyArg_ParseTuple(args, "OOOOLLLLLLLLLLi", &xo, &wo, &bo, &yo, &n, &c, &h, &wd, &m,
                          &k, &s, &p, &d, &g, &act))
        return NULL;
    if (get(xo, &x, 0) || get(wo, &w, 0) || get(yo, &y, 1))
        return NULL;
    if (bo != Py_None && get(bo, &b, 0))
        return NULL;
    prm.ndim = 2; prm.batch = n; prm.in_channels = c; prm.out_channels = m; prm.groups = g;
    prm.in_size[0] = h; prm.in_size[1] = wd; prm.kernel[0] = prm.kernel[1] = k;
    prm.stride[0] = prm.stride[1] = s; prm.padding[0] = prm.padding[1] = p;
    prm.dilation[0] = prm.dilation[1] = d; prm.activation = act;
    st = fcnn_conv_workspace_size(&prm, FCNN_FLOAT32, 0, 0, &need);
    if (st == FCNN_OK) {
        ws = need ? malloc(need) : NULL;
        Py_BEGIN_ALLOW_THREADS
        st = fcnn_conv2d_f32(&prm, x.buf, w.buf, bo == Py_None ? NULL : b.buf, y.buf, ws, need);
        Py_END_ALLOW_THREADS
        free(ws);
    }
    PyBuffer_Release(&x); PyBuffer_Release(&w); PyBuffer_Release(&y);
    if (bo != Py_None) PyBuffer_Release(&b);
    return PyLong_FromLong(st);
}

/* max_pool2d(x, y, n, c, h, w, k, s, p, ceil) -> status */
static PyObject *max_pool2d(PyObject *self, PyObject *args)
{
    PyObject *xo, *yo;
    long long n, c, h, w, k, s, p;
    int ceil;
    Py_buffer x, y;
    fcnn_pool2d_params prm = {0};
    fcnn_status st;
    if (!PyArg_ParseTuple(args, "OOLLLLLLLi", &xo, &yo, &n, &c, &h, &w, &k, &s, &p, &ceil))
        return NULL;
    if (get(xo, &x, 0) || get(yo, &y, 1))
        return NULL;
    prm.batch = n; prm.channels = c; prm.in_h = h; prm.in_w = w;
    prm.kernel_h = prm.kernel_w = k; prm.stride_h = prm.stride_w = s;
    prm.pad_h = prm.pad_w = p; prm.ceil_mode = ceil;
    st = fcnn_max_pool2d_f32(&prm, x.buf, y.buf, NULL);
    PyBuffer_Release(&x); PyBuffer_Release(&y);
    return PyLong_FromLong(st);
}

/* group_norm(x, y, weight, bias, n, c, spatial, groups, eps) -> status */
static PyObject *group_norm(PyObject *self, PyObject *args)
{
    PyObject *xo, *yo, *wo, *bo;
    long long n, c, sp, g;
    double eps;
    Py_buffer x, y, w, b;
    fcnn_status st;
    if (!PyArg_ParseTuple(args, "OOOOLLLLd", &xo, &yo, &wo, &bo, &n, &c, &sp, &g, &eps))
        return NULL;
    if (get(xo, &x, 0) || get(yo, &y, 1) || get(wo, &w, 0) || get(bo, &b, 0))
        return NULL;
    st = fcnn_group_norm_f32(n, c, sp, g, x.buf, y.buf, w.buf, b.buf, eps, FCNN_ACT_NONE);
    PyBuffer_Release(&x); PyBuffer_Release(&y); PyBuffer_Release(&w); PyBuffer_Release(&b);
    return PyLong_FromLong(st);
}

/* bad_calls() -> list of (name, status) for invalid arguments */
static PyObject *bad_calls(PyObject *self, PyObject *unused)
{
    float buf[64] = {0};
    float out[64];
    fcnn_conv_params p = {0};
    fcnn_pool2d_params q = {0};
    size_t need = 0;
    int64_t oh, ow, o3[3];
    PyObject *r = PyList_New(0);
#define ADD(name, expr) do { PyObject *t = Py_BuildValue("(si)", name, (int)(expr)); \
                             PyList_Append(r, t); Py_DECREF(t); } while (0)
    p.ndim = 2; p.batch = 1; p.in_channels = 1; p.out_channels = 1; p.groups = 1;
    p.in_size[0] = p.in_size[1] = 4; p.kernel[0] = p.kernel[1] = 3;
    p.stride[0] = p.stride[1] = 1; p.dilation[0] = p.dilation[1] = 1;
    fcnn_conv_workspace_size(&p, FCNN_FLOAT32, 0, 0, &need);
    {
        void *ws = malloc(need);
        ADD("ok", fcnn_conv2d_f32(&p, buf, buf, NULL, out, ws, need));
        free(ws);
    }
    ADD("no workspace", fcnn_conv2d_f32(&p, buf, buf, NULL, out, NULL, need));
    ADD("null params", fcnn_conv2d_f32(NULL, buf, buf, NULL, out, NULL, 0));
    ADD("null input", fcnn_conv2d_f32(&p, NULL, buf, NULL, out, NULL, 0));
    ADD("ndim mismatch", fcnn_conv1d_f32(&p, buf, buf, NULL, out, NULL, 0));
    p.activation = 99;
    ADD("bad activation", fcnn_conv2d_f32(&p, buf, buf, NULL, out, NULL, 0));
    p.activation = 0; p.kernel[0] = 9;
    ADD("kernel larger than input", fcnn_conv2d_f32(&p, buf, buf, NULL, out, NULL, 0));
    p.kernel[0] = 3; p.stride[1] = 0;
    ADD("zero stride", fcnn_conv2d_f32(&p, buf, buf, NULL, out, NULL, 0));
    p.stride[1] = 1; p.groups = 2; p.in_channels = 3; p.out_channels = 2;
    ADD("groups not dividing", fcnn_conv2d_f32(&p, buf, buf, NULL, out, NULL, 0));
    p.groups = 1; p.in_channels = 1; p.out_channels = 1;
    p.batch = (int64_t)1 << 40; p.in_channels = (int64_t)1 << 30;
    ADD("overflowing sizes", fcnn_conv2d_f32(&p, buf, buf, NULL, out, NULL, 0));
    p.batch = 1; p.in_channels = 64; p.out_channels = 64;
    p.in_size[0] = p.in_size[1] = 56; p.padding[0] = p.padding[1] = 1;
    fcnn_conv_workspace_size(&p, FCNN_FLOAT32, 0, 0, &need);
    ADD("workspace too small", fcnn_conv2d_f32(&p, buf, buf, NULL, out, buf, need - 1));
    ADD("workspace size bad dtype", fcnn_conv_workspace_size(&p, (fcnn_dtype)7, 0, 0, &need));
    ADD("conv2d output size", fcnn_conv2d_output_size(7, 7, 9, 9, 1, 1, 0, 0, 1, 1, &oh, &ow));
    ADD("conv output size null", fcnn_conv_output_size(&p, NULL));
    q.batch = 1; q.channels = 1; q.in_h = q.in_w = 4; q.kernel_h = q.kernel_w = 2;
    q.pad_h = 2;
    ADD("pool padding above half kernel", fcnn_max_pool2d_f32(&q, buf, out, NULL));
    q.pad_h = 0; q.ceil_mode = 5;
    ADD("pool bad flag", fcnn_max_pool2d_f32(&q, buf, out, NULL));
    q.ceil_mode = 0; q.dilation_h = 2;
    ADD("avg pool dilation", fcnn_avg_pool2d_f32(&q, buf, out));
    ADD("group norm groups", fcnn_group_norm_f32(1, 6, 4, 4, buf, out, NULL, NULL, 1e-5, 0));
    ADD("group norm negative size", fcnn_group_norm_f32(1, -6, 4, 3, buf, out, NULL, NULL, 1e-5, 0));
    ADD("batch norm inference without stats",
        fcnn_batch_norm_f32(1, 2, 4, buf, out, NULL, NULL, NULL, NULL, 0, 0.1, 1e-5, 0));
    ADD("batch norm training one value",
        fcnn_batch_norm_f32(1, 2, 1, buf, out, NULL, NULL, NULL, NULL, 1, 0.1, 1e-5, 0));
    ADD("layer norm nan eps", fcnn_layer_norm_f32(2, 4, buf, out, NULL, NULL, 0.0 / 0.0, 0));
    ADD("linear zero rows", fcnn_linear_f32(0, 4, 4, buf, buf, NULL, out, 0));
    ADD("activation unknown", fcnn_activation_f32(42, 4, buf, out, 0, 0));
    ADD("softmax null", fcnn_softmax_f32(1, 4, 1, NULL, out, 0));
    ADD("threads negative", fcnn_set_num_threads(-1));
    ADD("threads above the limit", fcnn_set_num_threads(FCNN_MAX_THREADS + 1));
    ADD("conv3d ok", (p.ndim = 3, p.in_size[2] = 5, p.kernel[2] = 3, p.stride[2] = 1,
                      p.dilation[2] = 1, p.padding[2] = 0, p.in_channels = 1,
                      p.out_channels = 1, p.padding[0] = p.padding[1] = 0,
                      p.in_size[0] = p.in_size[1] = 3, fcnn_conv_output_size(&p, o3)));
#undef ADD
    return r;
}

static PyObject *strerror_(PyObject *self, PyObject *args)
{
    int s;
    if (!PyArg_ParseTuple(args, "i", &s))
        return NULL;
    return PyUnicode_FromString(fcnn_strerror((fcnn_status)s));
}

static PyObject *reimport(PyObject *self, PyObject *unused)
{
    if (import_fastcnn() < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* time_conv(x, w, y, calls) -> seconds per call of fcnn_conv2d_f32 on 1x3x8x8 */
static PyObject *time_conv(PyObject *self, PyObject *args)
{
    PyObject *xo, *wo, *yo;
    long calls, i;
    Py_buffer x, w, y;
    fcnn_conv_params p = {0};
    size_t need;
    void *ws;
    struct timespec t0, t1;
    if (!PyArg_ParseTuple(args, "OOOl", &xo, &wo, &yo, &calls))
        return NULL;
    if (get(xo, &x, 0) || get(wo, &w, 0) || get(yo, &y, 1))
        return NULL;
    p.ndim = 2; p.batch = 1; p.in_channels = 3; p.out_channels = 8; p.groups = 1;
    p.in_size[0] = p.in_size[1] = 8; p.kernel[0] = p.kernel[1] = 3;
    p.stride[0] = p.stride[1] = 1; p.padding[0] = p.padding[1] = 1;
    p.dilation[0] = p.dilation[1] = 1;
    fcnn_conv_workspace_size(&p, FCNN_FLOAT32, 0, 0, &need);
    ws = need ? malloc(need) : NULL;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (i = 0; i < calls; i++)
        fcnn_conv2d_f32(&p, x.buf, w.buf, NULL, y.buf, ws, need);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(ws);
    PyBuffer_Release(&x); PyBuffer_Release(&w); PyBuffer_Release(&y);
    return PyFloat_FromDouble(((t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec))
                              / calls);
}

static PyObject *threads(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(fcnn_get_num_threads());
}

static PyObject *set_threads(PyObject *self, PyObject *args)
{
    int n;
    if (!PyArg_ParseTuple(args, "i", &n))
        return NULL;
    return PyLong_FromLong(fcnn_set_num_threads(n));
}

static PyMethodDef methods[] = {
    {"threads", threads, METH_NOARGS, NULL},
    {"set_threads", set_threads, METH_VARARGS, NULL},
    {"conv2d", conv2d, METH_VARARGS, NULL},
    {"max_pool2d", max_pool2d, METH_VARARGS, NULL},
    {"group_norm", group_norm, METH_VARARGS, NULL},
    {"bad_calls", bad_calls, METH_NOARGS, NULL},
    {"strerror", strerror_, METH_VARARGS, NULL},
    {"reimport", reimport, METH_NOARGS, NULL},
    {"time_conv", time_conv, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fcnn_capi_ext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_fcnn_capi_ext(void)
{
    if (import_fastcnn() < 0)
        return NULL;
    return PyModule_Create(&module);
}
"""

# conv 2->4 (3x3, pad 1) -> group norm (2 groups) -> relu -> max pool 2x2, on
# 1x2x6x6 inputs made by a formula both sides compute alike
EMBEDDED = r"""
#include <stdio.h>
#include <stdlib.h>
#include <fastcnn.h>

static float value(long i, long mul, long mod) { return (float)((double)(i * mul % mod) / 37.0 - 1.0); }

int main(void)
{
    fcnn_conv_params p = {0};
    fcnn_pool2d_params q = {0};
    size_t need;
    long i;
    float *x = malloc(72 * sizeof(float)), *w = malloc(72 * sizeof(float));
    float *b = malloc(4 * sizeof(float)), *y = malloc(144 * sizeof(float));
    float *z = malloc(36 * sizeof(float));
    void *ws;
    fcnn_status s;
    Py_Initialize();
    if (import_fastcnn() < 0) { PyErr_Print(); return 2; }
    printf("version %s abi %d isa %s threads %d\n", fcnn_version(), FCNN_ABI_VERSION,
           fcnn_isa(), fcnn_get_num_threads());
    for (i = 0; i < 72; i++) { x[i] = value(i, 29, 73); w[i] = value(i, 17, 71) / 4; }
    for (i = 0; i < 4; i++) b[i] = value(i, 5, 11);
    p.ndim = 2; p.batch = 1; p.in_channels = 2; p.out_channels = 4; p.groups = 1;
    p.in_size[0] = p.in_size[1] = 6; p.kernel[0] = p.kernel[1] = 3;
    p.stride[0] = p.stride[1] = 1; p.padding[0] = p.padding[1] = 1;
    p.dilation[0] = p.dilation[1] = 1;
    Py_BEGIN_ALLOW_THREADS             /* the kernels never need the GIL */
    s = fcnn_conv_workspace_size(&p, FCNN_FLOAT32, 0, 0, &need);
    ws = need ? malloc(need) : NULL;
    if (s == FCNN_OK) s = fcnn_conv2d_f32(&p, x, w, b, y, ws, need);
    if (s == FCNN_OK) s = fcnn_group_norm_f32(1, 4, 36, 2, y, y, NULL, NULL, 1e-5, FCNN_ACT_NONE);
    if (s == FCNN_OK) s = fcnn_activation_f32(FCNN_ACT_RELU, 144, y, y, 0, 0);
    q.batch = 1; q.channels = 4; q.in_h = q.in_w = 6; q.kernel_h = q.kernel_w = 2;
    if (s == FCNN_OK) s = fcnn_max_pool2d_f32(&q, y, z, NULL);
    Py_END_ALLOW_THREADS
    if (s != FCNN_OK) { printf("error %s\n", fcnn_strerror(s)); return 1; }
    for (i = 0; i < 36; i++) printf("%.9g\n", z[i]);
    free(x); free(w); free(b); free(y); free(z); free(ws);
    return Py_FinalizeEx() < 0 ? 3 : 0;
}
"""

CYTHON_MODULE = """
# cython: language_level=3
from fastcnn.kernels cimport *
import numpy as np

import_fastcnn()

def conv2d_relu(float[:, :, :, ::1] x, float[:, :, :, ::1] w, float[::1] b, int pad):
    cdef fcnn_conv_params p
    cdef size_t need
    cdef int64_t out[3]
    cdef fcnn_status s
    cdef float[:, :, :, ::1] y
    cdef char[::1] ws
    p.ndim = 2
    p.batch, p.in_channels, p.out_channels, p.groups = x.shape[0], x.shape[1], w.shape[0], 1
    p.in_size[0], p.in_size[1] = x.shape[2], x.shape[3]
    p.kernel[0], p.kernel[1] = w.shape[2], w.shape[3]
    p.stride[0] = p.stride[1] = 1
    p.padding[0] = p.padding[1] = pad
    p.dilation[0] = p.dilation[1] = 1
    p.activation = FCNN_ACT_RELU
    s = fcnn_conv_output_size(&p, out)
    if s != FCNN_OK:
        raise ValueError(fcnn_strerror(s).decode())
    y = np.empty((x.shape[0], w.shape[0], out[0], out[1]), np.float32)
    fcnn_conv_workspace_size(&p, FCNN_FLOAT32, 0, 0, &need)
    ws = np.empty(max(need, 1), np.int8)
    with nogil:
        s = fcnn_conv2d_f32(&p, &x[0, 0, 0, 0], &w[0, 0, 0, 0], &b[0], &y[0, 0, 0, 0],
                            &ws[0], need)
    if s != FCNN_OK:
        raise ValueError(fcnn_strerror(s).decode())
    return np.asarray(y)


def softmax_dim1(double[:, :, ::1] x):
    y = np.empty_like(np.asarray(x))
    cdef double[:, :, ::1] yv = y
    with nogil:
        fcnn_softmax_f64(x.shape[0], x.shape[1], x.shape[2], &x[0, 0, 0], &yv[0, 0, 0], 0)
    return y
"""


def _flags():
    cfg = sysconfig.get_config_var
    include = sysconfig.get_paths()["include"]
    return ["-O2", "-fPIC", f"-I{include}", f"-I{fastcnn.get_include()}"], cfg


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    """The C extension module, compiled against fastcnn.get_include()."""
    d = tmp_path_factory.mktemp("capi_ext")
    src = d / "fcnn_capi_ext.c"
    src.write_text(EXTENSION)
    flags, cfg = _flags()
    target = d / ("fcnn_capi_ext" + cfg("EXT_SUFFIX"))
    subprocess.run([CC, "-shared", *flags, str(src), "-o", str(target)], check=True,
                   capture_output=True, text=True)
    spec = importlib.util.spec_from_file_location("fcnn_capi_ext", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("case", [
    (2, 3, 9, 8, 5, 3, 1, 1, 1, 1, "relu"),
    (1, 4, 7, 7, 8, 3, 2, 1, 1, 2, None),
    (1, 64, 14, 14, 64, 3, 1, 1, 1, 1, "relu6"),    # Winograd / blocked paths
    (1, 8, 12, 12, 6, 1, 1, 0, 1, 1, "silu"),        # 1x1
    (1, 3, 16, 16, 8, 5, 1, 4, 2, 1, None),          # dilation
])
def test_conv2d_matches_python(ext, case, rng):
    n, c, h, w, m, k, s, p, d, g, act = case
    codes = {None: 0, "relu": 1, "relu6": 2, "silu": 3}
    x = _data(rng, n, c, h, w)
    wt = _data(rng, m, c // g, k, k)
    b = _data(rng, m)
    expected = F.conv2d(x, wt, b, s, p, d, g, activation=act)
    y = np.full_like(expected, np.nan)
    assert ext.conv2d(x, wt, b, y, n, c, h, w, m, k, s, p, d, g, codes[act]) == 0
    np.testing.assert_array_equal(y, expected)
    y2 = np.empty_like(expected)
    assert ext.conv2d(x, wt, None, y2, n, c, h, w, m, k, s, p, d, g, 0) == 0
    np.testing.assert_array_equal(y2, F.conv2d(x, wt, None, s, p, d, g))


def test_max_pool_and_group_norm_match_python(ext, rng):
    x = _data(rng, 2, 6, 11, 10)
    expected = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    y = np.empty_like(expected)
    assert ext.max_pool2d(x, y, 2, 6, 11, 10, 3, 2, 1, 1) == 0
    np.testing.assert_array_equal(y, expected)
    wt, b = _data(rng, 6), _data(rng, 6)
    expected = F.group_norm(x, 3, wt, b, 1e-5)
    y = np.empty_like(x)
    assert ext.group_norm(x, y, wt, b, 2, 6, 110, 3, 1e-5) == 0
    np.testing.assert_array_equal(y, expected)


def test_bad_arguments_return_statuses(ext):
    got = dict(ext.bad_calls())
    ARG, SHAPE, OVERFLOW, WORKSPACE = 1, 2, 3, 5
    assert got == {
        "ok": 0, "no workspace": ARG, "null params": ARG, "null input": ARG, "ndim mismatch": ARG,
        "bad activation": ARG, "kernel larger than input": SHAPE, "zero stride": SHAPE,
        "groups not dividing": SHAPE, "overflowing sizes": OVERFLOW,
        "workspace too small": WORKSPACE, "workspace size bad dtype": ARG,
        "conv2d output size": SHAPE, "conv output size null": ARG,
        "pool padding above half kernel": SHAPE, "pool bad flag": ARG, "avg pool dilation": ARG,
        "group norm groups": SHAPE, "group norm negative size": SHAPE,
        "batch norm inference without stats": ARG, "batch norm training one value": SHAPE,
        "layer norm nan eps": ARG, "linear zero rows": SHAPE, "activation unknown": ARG,
        "softmax null": ARG, "threads negative": ARG, "threads above the limit": ARG,
        "conv3d ok": 0,
    }
    assert "workspace too small" in ext.strerror(WORKSPACE)
    assert ext.strerror(123) == "unknown fcnn_status"


def test_abi_version_mismatch_is_an_import_error(ext, monkeypatch):
    class FakeTable(ctypes.Structure):
        _fields_ = [("abi_version", ctypes.c_int)]
    table = FakeTable(999)
    name = b"fastcnn._capi._API"
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    capsule = new(ctypes.addressof(table), name, None)

    class FakeModule:
        _API = capsule
    monkeypatch.setitem(sys.modules, "fastcnn._capi", FakeModule)
    with pytest.raises(ImportError, match="FCNN_ABI_VERSION 2 but the installed fastcnn "
                                          "provides 999"):
        ext.reimport()
    monkeypatch.undo()
    ext.reimport()                      # the real table again


def test_threads_are_shared_with_python(ext):
    """fcnn_set_num_threads and fastcnn.set_num_threads are one setting."""
    previous = fastcnn._threads._omp.get_threads_setting()
    try:
        fastcnn.set_num_threads(3)
        assert ext.threads() == 3
        assert ext.set_threads(2) == 0
        assert fastcnn.get_num_threads() == 2
        assert ext.set_threads(fastcnn.MAX_THREADS) == 0
        assert ext.set_threads(100000) != 0       # refused, the setting unchanged
        assert fastcnn.get_num_threads() == fastcnn.MAX_THREADS
        assert ext.set_threads(0) == 0            # back to OpenMP's default
        assert ext.threads() == fastcnn._threads._omp.max_threads()
    finally:
        fastcnn._threads._omp.set_threads_setting_py(previous)


def test_embedded_program(tmp_path):
    """A C program embedding CPython runs conv -> group norm -> relu -> pool."""
    src = tmp_path / "pipeline.c"
    src.write_text(EMBEDDED)
    flags, cfg = _flags()
    libdir = cfg("LIBDIR")
    libs = [f"-L{libdir}", f"-lpython{cfg('LDVERSION') or cfg('VERSION')}",
            *(cfg("LIBS") or "").split(), *(cfg("SYSLIBS") or "").split()]
    if cfg("Py_ENABLE_SHARED"):
        libs.append(f"-Wl,-rpath,{libdir}")
    else:
        libs += (cfg("LINKFORSHARED") or "").split()
    prog = tmp_path / "pipeline"
    subprocess.run([CC, *flags, str(src), "-o", str(prog), *libs], check=True,
                   capture_output=True, text=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
               PYTHONHOME=sys.base_prefix)
    run = subprocess.run([str(prog)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.split("\n")
    # the table reports the target the kernels run (FASTCNN_MAX_ISA reaches the program too)
    assert lines[0].startswith(f"version {fastcnn.__version__} abi 2 isa {fastcnn.get_isa()} "
                               f"threads ")
    got = np.array([float(v) for v in lines[1:37]], np.float32).reshape(1, 4, 3, 3)

    def value(i, mul, mod):
        return (np.asarray(i) * mul % mod / 37.0 - 1.0).astype(np.float32)
    i = np.arange(72)
    x = value(i, 29, 73).reshape(1, 2, 6, 6)
    w = (value(i, 17, 71) / np.float32(4)).reshape(4, 2, 3, 3)
    b = value(np.arange(4), 5, 11)
    y = F.max_pool2d(F.relu(F.group_norm(F.conv2d(x, w, b, 1, 1), 2)), 2)
    assert_close(got, y, 18)


CYTHON = pytest.importorskip("Cython")


def test_cython_module_cimports_kernels(tmp_path, rng):
    (tmp_path / "uses_fastcnn.pyx").write_text(CYTHON_MODULE)
    (tmp_path / "setup.py").write_text(textwrap.dedent(f"""
        from setuptools import setup, Extension
        from Cython.Build import cythonize
        setup(ext_modules=cythonize([Extension("uses_fastcnn", ["uses_fastcnn.pyx"],
              include_dirs={[fastcnn.get_include()]!r})], include_path={[os.path.dirname(os.path.dirname(fastcnn.__file__))]!r}),
              script_args=["build_ext", "--inplace"])
    """))
    run = subprocess.run([sys.executable, "setup.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    spec = importlib.util.spec_from_file_location(
        "uses_fastcnn", next(tmp_path.glob("uses_fastcnn*" + sysconfig.get_config_var("EXT_SUFFIX"))))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, w, b = _data(rng, 2, 3, 7, 9), _data(rng, 5, 3, 3, 3), _data(rng, 5)
    np.testing.assert_array_equal(module.conv2d_relu(x, w, b, 1),
                                  F.conv2d(x, w, b, 1, 1, activation="relu"))
    for shape in [(4, 10, 1), (3, 10, 37)]:
        z = rng.standard_normal(shape)
        np.testing.assert_array_equal(module.softmax_dim1(z), F.softmax(z, 1))
    with pytest.raises(ValueError, match="invalid sizes"):
        module.conv2d_relu(x[:, :, :2, :2].copy(), w, b, 0)


def test_c_api_timing_loop_computes_the_conv(ext):
    """The loop the C-API benchmark times (benchmarks/bench_capi.py) runs and
    computes what the Python API does; its overhead is measured there, not here."""
    x = np.ones((1, 3, 8, 8), np.float32)
    w = np.ones((8, 3, 3, 3), np.float32)
    y = np.empty((1, 8, 8, 8), np.float32)
    assert ext.time_conv(x, w, y, 1000) > 0
    np.testing.assert_array_equal(y, F.conv2d(x, w, None, 1, 1))


def test_header_thread_limit_is_the_kernels():
    header = (pathlib.Path(fastcnn.get_include()) / "fastcnn.h").read_text()
    assert re.search(r"#define FCNN_MAX_THREADS (\d+)", header).group(1) == \
        str(fastcnn.MAX_THREADS)


def test_generated_function_table_is_current():
    """fastcnn.h's fcnn_api, _capi.pyx's declaration of it and the code that
    fills it come from one list (tools/capi.py), kernels.pxd's declarations
    from the header's functions; this fails when one of them was edited by
    hand or its source changed without regenerating."""
    tool = pathlib.Path(__file__).resolve().parent.parent / "tools" / "capi.py"
    if not tool.exists():
        pytest.skip("needs the source tree's tools/capi.py")
    run = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


class _ConvParams(ctypes.Structure):
    _fields_ = [("ndim", ctypes.c_int)] + \
        [(f, ctypes.c_int64) for f in ("batch", "in_channels", "out_channels", "groups")] + \
        [(f, ctypes.c_int64 * 3) for f in ("in_size", "kernel", "stride", "padding", "dilation")] + \
        [("activation", ctypes.c_int)]


class _PoolParams(ctypes.Structure):
    _fields_ = [(f, ctypes.c_int64) for f in ("batch", "channels", "in_h", "in_w", "kernel_h",
                                              "kernel_w", "stride_h", "stride_w", "pad_h",
                                              "pad_w", "dilation_h", "dilation_w")] + \
        [("ceil_mode", ctypes.c_int), ("count_include_pad", ctypes.c_int),
         ("divisor_override", ctypes.c_int64)]


def _api_function(name, *argtypes):
    """A function of the published fcnn_api table, through ctypes: its place is
    its field's in the header's table (an int, then one pointer per field)."""
    header = pathlib.Path(fastcnn.get_include(), "fastcnn.h").read_text()
    block = header[header.index("typedef struct fcnn_api {"):header.index("} fcnn_api;")]
    fields = re.findall(r"\(\*(\w+)\)\(", block)
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    table = get(fastcnn._capi._API, b"fastcnn._capi._API")
    address = table + ctypes.sizeof(ctypes.c_void_p) * (1 + fields.index(name))
    return ctypes.CFUNCTYPE(ctypes.c_int, *argtypes)(ctypes.c_void_p.from_address(address).value)


def test_output_sizes_agree_with_the_python_formulas():
    """The C-API computes output sizes in int64 with overflow checks, the Python
    API with unbounded ints: the two must give the same sizes and refuse the
    same shapes."""
    import fastcnn._capi  # noqa: F401
    from fastcnn._functional.pool import pool_output_size
    from fastcnn._validation import conv_output_size
    conv = _api_function("conv_output_size", ctypes.POINTER(_ConvParams), ctypes.POINTER(ctypes.c_int64 * 3))
    pool = _api_function("pool2d_output_size", ctypes.POINTER(_PoolParams), ctypes.POINTER(ctypes.c_int64),
                         ctypes.POINTER(ctypes.c_int64))
    out3, oh, ow = (ctypes.c_int64 * 3)(), ctypes.c_int64(), ctypes.c_int64()
    checked = 0
    for size in (1, 2, 5, 7, 8, 13):
        for kernel in (1, 2, 3, 4, 7):
            for stride in (1, 2, 3, 5):
                for dilation in (1, 2, 3):
                    for pad in (0, 1, 2, 3):
                        p = _ConvParams(ndim=1, batch=1, in_channels=1, out_channels=1, groups=1)
                        p.in_size[0], p.kernel[0], p.stride[0] = size, kernel, stride
                        p.padding[0], p.dilation[0] = pad, dilation
                        want = conv_output_size(size, kernel, stride, pad, pad, dilation)
                        status = conv(ctypes.byref(p), ctypes.byref(out3))
                        assert (status == 0) == (want >= 1), (size, kernel, stride, pad, dilation)
                        if status == 0:
                            assert out3[0] == want
                        if 2 * pad > kernel:
                            continue            # pooling's padding limit, as PyTorch's
                        for ceil_mode in (0, 1):
                            q = _PoolParams(batch=1, channels=1, in_h=size, in_w=1,
                                            kernel_h=kernel, kernel_w=1, stride_h=stride,
                                            stride_w=1, pad_h=pad, dilation_h=dilation,
                                            dilation_w=1, ceil_mode=ceil_mode)
                            want = pool_output_size(size, kernel, stride, pad, dilation,
                                                    ceil_mode)
                            status = pool(ctypes.byref(q), ctypes.byref(oh), ctypes.byref(ow))
                            assert (status == 0) == (want >= 1), (size, kernel, stride, pad)
                            if status == 0:
                                assert oh.value == want
                            checked += 1
    assert checked > 1000
