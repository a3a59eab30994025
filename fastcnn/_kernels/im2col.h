/* im2col: the columns of a convolution, for any kernel, stride, dilation
 * and padding, in one to three spatial dimensions (leading sizes 1).
 *
 * cols[r][j] = x[img][c][od*sd + kd*dd - pd][oh*sh + kh*dh - ph][ow*sw + kw*dw - pw]
 * (zero where that is padding), for the rows r = (c - c0, kd, kh, kw) of the
 * channels c0 .. c1-1 and the flat output positions first + j, j < count,
 * over (img, od, oh, ow): one chunk may span images. Row r starts at
 * cols + r * ld.
 *
 * The positions of a chunk are runs along output rows. For each (c, kd, kh)
 * the source row of a run is found once and copied into the kernel_w
 * column rows it feeds (one per kw), each copy a contiguous or strided
 * read with its padded ends zeroed: the per-run bookkeeping is shared by
 * the kw taps and the copies are loops the compiler vectorises (a
 * constant stride of 2 included).
 */
#ifndef FASTCNN_IM2COL_H
#define FASTCNN_IM2COL_H

/* ceil(a / s) for a >= 0, without a division for the common strides. */
static inline long fcnn_im2col_ceil(long a, long s)
{
    return s == 1 ? a : s == 2 ? (a + 1) >> 1 : (a + s - 1) / s;
}

#define FCNN_DEFINE_IM2COL(SUFFIX, T)                                                     \
/* dst[j] = src[j * s] for j in [lo, hi), zero in [0, lo) and [hi, n). */                 \
static inline void fcnn_im2col_copy_##SUFFIX(T *restrict dst, const T *restrict src,       \
                                             long lo, long hi, long n, long s)            \
{                                                                                          \
    for (long j = 0; j < lo; j++)                                                          \
        dst[j] = 0;                                                                        \
    if (s == 1) {                                                                          \
        for (long j = lo; j < hi; j++)                                                     \
            dst[j] = src[j];                                                               \
    } else if (s == 2) {                                                                   \
        for (long j = lo; j < hi; j++)                                                     \
            dst[j] = src[2 * j];                                                           \
    } else {                                                                               \
        for (long j = lo; j < hi; j++)                                                     \
            dst[j] = src[j * s];                                                           \
    }                                                                                      \
    for (long j = hi; j < n; j++)                                                          \
        dst[j] = 0;                                                                        \
}                                                                                          \
                                                                                           \
/* The column rows of one (c, kd, kh): kernel[2] rows from cols on, ld apart. */          \
static void fcnn_im2col_rows_##SUFFIX(const T *x, long image_len, long c, long kd, long kh, \
                                      const long *size, const long *out, const long *kernel, \
                                      const long *stride, const long *pad, const long *dil, \
                                      long first, long count, T *cols, long ld)            \
{                                                                                          \
    long positions = out[0] * out[1] * out[2];                                             \
    long plane = size[0] * size[1] * size[2];                                              \
    long img = first / positions, pos = first % positions;                                 \
    long ow = pos % out[2], oh = pos / out[2] % out[1], od = pos / (out[1] * out[2]);      \
    long sw = stride[2], wmax = size[2];                                                   \
    for (long t = 0; t < count;) {                                                         \
        long run = out[2] - ow < count - t ? out[2] - ow : count - t;                      \
        long id = od * stride[0] + kd * dil[0] - pad[0];                                   \
        long ih = oh * stride[1] + kh * dil[1] - pad[1];                                   \
        int inside = id >= 0 && id < size[0] && ih >= 0 && ih < size[1];                  \
        const T *src = x + img * image_len + c * plane + (id * size[1] + ih) * size[2];    \
        T *dst = cols + t;                                                                 \
        for (long kw = 0; kw < kernel[2]; kw++, dst += ld) {                               \
            long iw0 = ow * sw + kw * dil[2] - pad[2], lo = 0, hi = 0;                     \
            if (inside && iw0 < wmax) {                                                    \
                lo = iw0 >= 0 ? 0 : fcnn_im2col_ceil(-iw0, sw);                            \
                hi = fcnn_im2col_ceil(wmax - iw0, sw);                                     \
                lo = lo < run ? lo : run;                                                  \
                hi = hi < run ? hi : run;                                                  \
                hi = hi > lo ? hi : lo;                                                    \
            }                                                                              \
            fcnn_im2col_copy_##SUFFIX(dst, src + iw0, lo, hi, run, sw);                    \
        }                                                                                  \
        t += run;                                                                          \
        ow = 0;                                                                            \
        if (++oh == out[1]) {                                                              \
            oh = 0;                                                                        \
            if (++od == out[0]) {                                                          \
                od = 0;                                                                    \
                img++;                                                                     \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}

FCNN_DEFINE_IM2COL(f32, float)
FCNN_DEFINE_IM2COL(f64, double)

#endif
