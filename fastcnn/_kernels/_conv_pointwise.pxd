# Pointwise (1x1) convolution: see _conv_pointwise.pyx.
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._conv_types cimport ConvGeom, ConvPlan, ConvTuning

cdef void pointwise_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                         ConvPlan* p) noexcept nogil
cdef index_t pointwise_packed_size(const ConvGeom* g, const ConvPlan* cp,
                                   index_t itemsize) noexcept nogil
cdef void pointwise_pack(const ConvGeom* g, const ConvPlan* cp, const floating* w,
                         floating* packed, int num_threads) noexcept nogil
cdef void pointwise_forward(const ConvGeom* g, const ConvPlan* cp, const floating* x,
                            const floating* packed, const floating* bias, floating* y,
                            const floating* res, floating* workspace, int activation,
                            int num_threads) noexcept nogil
