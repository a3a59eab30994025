# Blocked direct convolution over output channels: see _conv_blocked_oc.pyx.
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._conv_types cimport ConvGeom, ConvPlan, ConvTuning, MaxPoolWindow

cdef bint blocked_oc_applies(const ConvGeom* g) noexcept nogil
cdef void blocked_oc_plan(const ConvGeom* layer, const ConvTuning* t, index_t itemsize,
                          ConvPlan* p) noexcept nogil
cdef index_t blocked_oc_packed_size(const ConvGeom* g, const ConvPlan* cp,
                                    index_t itemsize) noexcept nogil
cdef void blocked_oc_pack(const ConvGeom* g, const ConvPlan* cp, const floating* w,
                          floating* packed, int num_threads) noexcept nogil
cdef void blocked_oc_forward(const ConvGeom* layer, const ConvPlan* cp, const floating* x,
                             const floating* packed, const floating* bias, floating* y,
                             const floating* res, floating* workspace, int activation,
                             int num_threads) noexcept nogil
cdef bint blocked_oc_pool_applies(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                                  const MaxPoolWindow* pool) noexcept nogil
cdef void blocked_oc_pool_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                               const MaxPoolWindow* pool, ConvPlan* p) noexcept nogil
cdef void blocked_oc_pool_forward(const ConvGeom* layer, const ConvPlan* cp,
                                  const MaxPoolWindow* pool, const floating* x,
                                  const floating* packed, const floating* bias, floating* y,
                                  floating* workspace, int activation,
                                  int num_threads) noexcept nogil
