# Direct convolution over output planes: see _conv_direct.pyx.
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._conv_types cimport ConvGeom, ConvPlan, ConvTuning

cdef void direct_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                      ConvPlan* p) noexcept nogil
cdef void direct_forward(const ConvGeom* g, const ConvPlan* plan, const floating* x,
                         const floating* w, const floating* bias, floating* y,
                         const floating* res, floating* workspace, int activation,
                         int num_threads) noexcept nogil
