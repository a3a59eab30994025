# Shared types for every kernel: one fused float type so each kernel is written once.
from cython cimport floating

ctypedef Py_ssize_t index_t
