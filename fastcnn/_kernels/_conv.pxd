# The convolution dispatcher (_conv.pyx): the algorithm chosen per shape, its
# plan, its packed weights and the forward pass, over every algorithm module.
from fastcnn._kernels._typedefs cimport index_t
from fastcnn._kernels._conv_types cimport ConvGeom, ConvPlan

cdef int conv_select_algorithm(const ConvGeom* g, bint weights_packed) noexcept nogil
cdef ConvPlan conv_make_plan(const ConvGeom* g, int algorithm, index_t itemsize) noexcept nogil
cdef index_t conv_packed_size(const ConvGeom* g, int algorithm, index_t itemsize) noexcept nogil

cdef void conv_pack_weights_f32(const ConvGeom* g, int algorithm, const float* w,
                                float* packed, int num_threads) noexcept nogil
cdef void conv_pack_weights_f64(const ConvGeom* g, int algorithm, const double* w,
                                double* packed, int num_threads) noexcept nogil
# weights: the (out, in/groups, *kernel) array for algorithms whose
# conv_packed_size is 0, else the array conv_pack_weights_* wrote (Winograd,
# blocked, blocked_oc, pointwise and depthwise pack theirs).
# residual: NULL, or an array shaped as y (not y) added before the activation.
cdef void conv_forward_f32(const ConvGeom* g, const ConvPlan* plan,
                           const float* x, const float* weights, const float* bias,
                           float* y, const float* residual, float* workspace,
                           int activation, int num_threads) noexcept nogil
cdef void conv_forward_f64(const ConvGeom* g, const ConvPlan* plan,
                           const double* x, const double* weights, const double* bias,
                           double* y, const double* residual, double* workspace,
                           int activation, int num_threads) noexcept nogil
