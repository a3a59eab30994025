# The register-blocked kernel as a GEMM (conv_block.h), over the fused float
# type: Winograd's products and the transposed convolution by taps.
from fastcnn._kernels._typedefs cimport floating, index_t

cdef extern from "conv_block.h" nogil:
    enum:
        FCNN_BLOCK_OCB
        FCNN_BLOCK_SPLAT_F32
        FCNN_BLOCK_SPLAT_F64
        FCNN_OC_VL_F32
        FCNN_OC_VL_F64
    void fcnn_block_gemm_f32(const float* x, long ld_c, const float* w, long cin, float* out,
                             long ld_out, long lanes)
    void fcnn_block_gemm_f64(const double* x, long ld_c, const double* w, long cin,
                             double* out, long ld_out, long lanes)


cdef inline index_t block_splat(index_t itemsize) noexcept nogil:
    """Copies of each weight in the kernel's packed panels (conv_block.h)."""
    return FCNN_BLOCK_SPLAT_F32 if itemsize == 4 else FCNN_BLOCK_SPLAT_F64


cdef inline index_t block_vector(index_t itemsize) noexcept nogil:
    """Lanes per vector: block_gemm computes whole vectors of lanes."""
    return FCNN_OC_VL_F32 if itemsize == 4 else FCNN_OC_VL_F64


cdef inline void block_gemm(const floating* x, index_t ld_c, const floating* w, index_t k,
                            floating* out, index_t ld_out, index_t lanes) noexcept nogil:
    """out (FCNN_BLOCK_OCB rows of `lanes`, ld_out apart) = w^T x, w one packed
    block [k][FCNN_BLOCK_OCB][splat], x k rows of `lanes` (ld_c apart); the
    lanes rounded up to whole vectors, which x's and out's rows must hold."""
    if floating is float:
        fcnn_block_gemm_f32(x, ld_c, w, k, out, ld_out, lanes)
    else:
        fcnn_block_gemm_f64(x, ld_c, w, k, out, ld_out, lanes)
