# Winograd F(4x4, 3x3) and F(4x4, 2x2): see _conv_winograd.pyx.
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._conv_types cimport ConvGeom, ConvPlan, ConvTuning

cdef bint winograd_applies(const ConvGeom* g) noexcept nogil
cdef void winograd_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                        ConvPlan* p) noexcept nogil
cdef index_t winograd_packed_size(const ConvGeom* g, const ConvPlan* cp,
                                  index_t itemsize) noexcept nogil
cdef void winograd_pack(const ConvGeom* g, const ConvPlan* plan, const floating* w,
                        floating* u, int num_threads) noexcept nogil
cdef void winograd_forward(const ConvGeom* g, const ConvPlan* cp, const floating* x,
                           const floating* u, const floating* bias, floating* y,
                           const floating* res, floating* workspace, int activation,
                           int num_threads) noexcept nogil
