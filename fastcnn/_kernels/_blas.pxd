# The one place that touches BLAS. Kernels call gemm() on row-major matrices.
from scipy.linalg.cython_blas cimport sgemm, dgemm
from fastcnn._kernels._typedefs cimport floating


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha * op(A) @ op(B) + beta * C.

    BLAS is column-major, so this computes C^T = op(B)^T op(A)^T: the operands
    swap places and the row-major leading dimensions pass through unchanged.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


cdef void blas_enter() noexcept nogil
cdef void blas_leave() noexcept nogil
