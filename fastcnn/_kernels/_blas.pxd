# The one place that touches BLAS. Kernels call gemm() on row-major matrices.
from scipy.linalg.cython_blas cimport sgemm, dgemm
from libc.math cimport ceil
from fastcnn._kernels._typedefs cimport floating, index_t


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


cdef enum:
    GEMM_MAX_TASKS = 8          # tasks per product: enough for 8 threads to share ...
    GEMM_TASK_FMAS = 1 << 25    # ... and one per 2^25 multiply-adds (0.2 ms of a core)


cdef inline index_t gemm_tasks(double fmas) noexcept nogil:
    """Tasks for a product the BLAS packs: one per GEMM_TASK_FMAS multiply-adds,
    2 to GEMM_MAX_TASKS (each task's GEMM packs its operands again, so no more
    than the threads need)."""
    return <index_t>min(<double>GEMM_MAX_TASKS, max(2.0, ceil(fmas / GEMM_TASK_FMAS)))


cdef inline void gemm_tiles(index_t m, index_t n, index_t want, index_t* row_block,
                            index_t* col_block) noexcept nogil:
    """Split an m x n product into about `want` tiles, from the shape alone
    (results never depend on the thread count): as many tiles as the shape
    gives up to want, then the squarest (a single-threaded GEMM runs faster
    the larger and squarer it is: packing is amortised over more
    multiplies); columns in multiples of 16."""
    cdef index_t rb, cb, rows, cols, tasks, score, best = -1, best_tasks = 0
    row_block[0] = m
    col_block[0] = n
    for rb in range(1, want + 1):
        cb = (want + rb - 1) // rb
        rows = (m + rb - 1) // rb
        cols = min(n, ((n + cb - 1) // cb + 15) // 16 * 16)
        tasks = ((m + rows - 1) // rows) * ((n + cols - 1) // cols)
        score = min(rows, cols)
        if min(tasks, want) > best_tasks or (min(tasks, want) == best_tasks and score > best):
            best_tasks = min(tasks, want)
            best = score
            row_block[0] = rows
            col_block[0] = cols
