from fastcnn._kernels._typedefs cimport index_t

cdef enum:
    NORM_BATCH = 0
    NORM_INSTANCE = 1
    NORM_GROUP = 2
    NORM_LAYER = 3

# x viewed as (batch, channels, spatial); statistics per group of the kind.
cdef struct NormGeom:
    index_t batch, channels, spatial
    index_t groups            # GroupNorm's num_groups (unused otherwise)
    index_t chunks_per_plane  # set by norm_geom
    int kind

cdef NormGeom norm_geom(int kind, index_t batch, index_t channels, index_t spatial,
                        index_t groups) noexcept nogil
# Groups of statistics, and the doubles of scratch the kernel needs for its
# partial sums (partial) and per-group mean, var and rstd (3 * groups).
cdef index_t norm_groups(const NormGeom* g) noexcept nogil
cdef index_t norm_partial_size(const NormGeom* g) noexcept nogil
# y = normalize(x) (y may be x). given_mean / given_var: per channel, or NULL
# to compute the statistics (returned per group in mean and var, biased).
cdef void norm_forward_f32(const NormGeom* g, const float* x, float* y, const float* weight,
                           const float* bias, const double* given_mean, const double* given_var,
                           double eps, double* partial, double* mean, double* var, double* rstd,
                           int activation, int num_threads) noexcept nogil
cdef void norm_forward_f64(const NormGeom* g, const double* x, double* y, const double* weight,
                           const double* bias, const double* given_mean,
                           const double* given_var, double eps, double* partial, double* mean,
                           double* var, double* rstd, int activation,
                           int num_threads) noexcept nogil
