# Convolution by GEMM (1x1 and im2col): see _conv_gemm.pyx.
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._conv_types cimport ConvGeom, ConvPlan, ConvTuning

cdef void gemm_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                    ConvPlan* p) noexcept nogil
cdef void gemm_forward(const ConvGeom* g, const ConvPlan* cp, const floating* x,
                       const floating* w, const floating* bias, floating* y,
                       const floating* res, floating* workspace, int activation,
                       int num_threads) noexcept nogil
