# Winograd F(4x4, 3x3) and F(4x4, 2x2) transforms, one axis at a time over
# runs of tiles (so the compiler vectorises them across tiles): the forward
# convolution's (_conv_winograd.pyx: V = B^T d B, Y = A^T M A, U = G g G^T) and the
# weight gradient's (_grad.pyx), which uses the same matrices transposed
# (Lavin and Gray): gw = G^T [(A gy A^T) . (B^T d B)] G per 4x4 tile of the
# output gradient gy and the 6x6 input tile d under it.
from libc.string cimport memcpy, memset
from fastcnn._kernels._typedefs cimport floating, index_t


cdef inline index_t _div_up(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline void _gather_columns(const floating* row, index_t width, index_t first,
                                 index_t tiles, floating* dst) noexcept nogil:
    """dst[t] = row[first + 4 t] for t < tiles, zero where that is outside the row."""
    cdef index_t t, lo, hi
    lo = min(tiles, _div_up(-first, 4)) if first < 0 else 0
    hi = max(lo, min(tiles, _div_up(width - first, 4)))
    for t in range(lo):
        dst[t] = 0
    for t in range(lo, hi):
        dst[t] = row[first + 4 * t]
    for t in range(hi, tiles):
        dst[t] = 0


cdef inline void wino_bt(index_t a, const floating* s0, const floating* s1,
                          const floating* s2, const floating* s3, const floating* s4,
                          const floating* s5, floating* d, index_t ld_d,
                          index_t n) noexcept nogil:
    """d[k * ld_d + t] = (B^T (s0[t], .., s_{a-1}[t]))[k] for k < a, t < n: one
    axis of the input transform, over n tiles (s5 unread when a = 5)."""
    cdef index_t t
    cdef floating x0, x1, x2, x3, x4, x5
    # typed constants: Cython would write bare literals as double and force
    # the whole expression into scalar double arithmetic
    cdef floating k2 = 2, k3 = 3, k4 = 4, k5 = 5
    if a == 5:
        for t in range(n):
            x0, x1, x2, x3, x4 = s0[t], s1[t], s2[t], s3[t], s4[t]
            d[t] = k2 * x0 - x1 - k2 * x2 + x3
            d[ld_d + t] = -k2 * x1 - x2 + x3
            d[2 * ld_d + t] = k2 * x1 - k3 * x2 + x3
            d[3 * ld_d + t] = x3 - x1
            d[4 * ld_d + t] = k2 * x1 - x2 - k2 * x3 + x4
        return
    for t in range(n):
        x0, x1, x2, x3, x4, x5 = s0[t], s1[t], s2[t], s3[t], s4[t], s5[t]
        d[t] = k4 * x0 - k5 * x2 + x4
        d[ld_d + t] = -k4 * x1 - k4 * x2 + x3 + x4
        d[2 * ld_d + t] = k4 * x1 - k4 * x2 - x3 + x4
        d[3 * ld_d + t] = -k2 * x1 - x2 + k2 * x3 + x4
        d[4 * ld_d + t] = k2 * x1 - x2 - k2 * x3 + x4
        d[5 * ld_d + t] = k4 * x1 - k5 * x3 + x5


cdef inline void wino_at(index_t a, const floating* s0, const floating* s1,
                          const floating* s2, const floating* s3, const floating* s4,
                          const floating* s5, floating* d, index_t ld_d, index_t step,
                          index_t n) noexcept nogil:
    """d[i * ld_d + t * step] = (A^T (s0[t], .., s_{a-1}[t]))[i] for i < 4,
    t < n: one axis of the output transform (s5 unread when a = 5)."""
    cdef index_t t
    cdef floating m0, m1, m2, m3, m4, m5
    cdef floating k2 = 2, k4 = 4, k8 = 8     # typed, see wino_bt
    if a == 5:
        for t in range(n):
            m0, m1, m2, m3, m4 = s0[t], s1[t], s2[t], s3[t], s4[t]
            d[t * step] = m0 + m1 + m2 + m3
            d[ld_d + t * step] = m1 - m2 + k2 * m3
            d[2 * ld_d + t * step] = m1 + m2 + k4 * m3
            d[3 * ld_d + t * step] = m1 - m2 + k8 * m3 + m4
        return
    for t in range(n):
        m0, m1, m2, m3, m4, m5 = s0[t], s1[t], s2[t], s3[t], s4[t], s5[t]
        d[t * step] = m0 + m1 + m2 + m3 + m4
        d[ld_d + t * step] = m1 - m2 + k2 * m3 - k2 * m4
        d[2 * ld_d + t * step] = m1 + m2 + k4 * m3 + k4 * m4
        d[3 * ld_d + t * step] = m1 - m2 + k8 * m3 - k8 * m4 + m5


cdef inline index_t wino_input_scratch(index_t a, index_t rows, index_t tiles_w) noexcept nogil:
    """Elements of scratch wino_input needs for `rows` tile rows of tiles_w
    tiles: the input rows they read, zero-padded; their 4 column phases; and
    their a row transforms."""
    cdef index_t nr = 4 * rows + a - 4, n = nr * (tiles_w + 1)
    return 4 * n + 4 * (n + 1) + a * n


cdef inline void wino_input(index_t a, index_t in_h, index_t in_w, index_t pad_h,
                            index_t pad_w, const floating* xc, index_t th0, index_t th1,
                            index_t tiles_w, index_t ld, floating* scratch, floating* tmp,
                            floating* v, index_t ld_xi, index_t pad) noexcept nogil:
    """V[xi * ld_xi + t] = (B^T d_t B)[xi] for the tiles t of tile rows th0..th1-1
    of one channel, and `pad` zeros after them (the rest of the last vector).

    The nr input rows the tiles read are copied, zero-padded, into rows of
    4 pw elements (pw = tiles_w + 1 tile starts), and the copy split in one
    pass into its 4 column phases (phase q holds padded columns 4 j + q), so
    the row transform reads tile columns 0..a-1 as contiguous vectors
    (columns 4 and 5 are phases 0 and 1 of the next tile start). The row
    transform then runs once per input row (rows 4 and 5 of a tile are rows
    0 and 1 of the next) over all nr rows at once, each row's last start
    computed and left unread; and the column transform over all the block's
    tiles at once: loops of hundreds of elements rather than of one row's
    tiles_w, which the compiler vectorises whole (tiles_w is 14 or 7 in
    ResNet-18). Each value is computed by the same sums as one tile at a time.
    scratch: wino_input_scratch(a, th1 - th0, tiles_w) elements.
    """
    cdef index_t nt = (th1 - th0) * tiles_w
    cdef index_t pw = tiles_w + 1, wp = 4 * pw
    cdef index_t nr = 4 * (th1 - th0) + a - 4, n = nr * pw
    cdef index_t lead = min(max(pad_w, 0), wp)
    cdef index_t first = max(-pad_w, 0)             # first input column copied
    cdef index_t count = max(0, min(in_w - first, wp - lead))
    cdef index_t i, ih, k, r, th
    cdef floating* buf = scratch                    # nr padded rows of wp
    cdef floating* p0 = buf + n * 4                 # phases, n + 1 each (one past: 0)
    cdef floating* p1 = p0 + (n + 1)
    cdef floating* p2 = p1 + (n + 1)
    cdef floating* p3 = p2 + (n + 1)
    cdef floating* hr = p3 + (n + 1)                # row transforms: hr[k * n + row * pw + tw]
    cdef floating* row
    for i in range(nr):
        ih = 4 * th0 - pad_h + i
        row = buf + i * wp
        if ih < 0 or ih >= in_h:
            memset(row, 0, wp * sizeof(floating))
            continue
        memset(row, 0, lead * sizeof(floating))
        memcpy(row + lead, xc + ih * in_w + first, count * sizeof(floating))
        memset(row + lead + count, 0, (wp - lead - count) * sizeof(floating))
    for i in range(n):
        p0[i] = buf[4 * i]
        p1[i] = buf[4 * i + 1]
        p2[i] = buf[4 * i + 2]
        p3[i] = buf[4 * i + 3]
    p0[n] = 0
    p1[n] = 0
    # B^T along the rows: hr[k][row][tw]
    wino_bt(a, p0, p1, p2, p3, p0 + 1, p1 + 1, hr, n, n)
    # gathered by tile row: tmp[r * a + k][(th - th0) tiles_w + tw], input row 4 (th - th0) + r
    for th in range(th0, th1):
        for r in range(a):
            for k in range(a):
                memcpy(tmp + (r * a + k) * ld + (th - th0) * tiles_w,
                       hr + k * n + (4 * (th - th0) + r) * pw, tiles_w * sizeof(floating))
    # then B^T down columns: V[kr * a + k][t]
    for k in range(a):
        wino_bt(a, tmp + k * ld, tmp + (a + k) * ld, tmp + (2 * a + k) * ld,
                 tmp + (3 * a + k) * ld, tmp + (4 * a + k) * ld, tmp + (5 * a + k) * ld,
                 v + k * ld_xi, a * ld_xi, nt)
    if pad > 0:
        for k in range(a * a):
            memset(v + k * ld_xi + nt, 0, pad * sizeof(floating))


cdef inline void wino_a(const floating* s0, const floating* s1, const floating* s2,
                        const floating* s3, floating* d, index_t ld_d,
                        index_t n) noexcept nogil:
    """d[k * ld_d + t] = (A (s0[t], .., s3[t]))[k] for k < 6, t < n, A the
    6x4 transpose of wino_at's A^T: one axis of the output gradient's
    transform (3x3 kernels)."""
    cdef index_t t
    cdef floating m0, m1, m2, m3
    cdef floating k2 = 2, k4 = 4, k8 = 8     # typed, see wino_bt
    for t in range(n):
        m0, m1, m2, m3 = s0[t], s1[t], s2[t], s3[t]
        d[t] = m0
        d[ld_d + t] = m0 + m1 + m2 + m3
        d[2 * ld_d + t] = m0 - m1 + m2 - m3
        d[3 * ld_d + t] = m0 + k2 * m1 + k4 * m2 + k8 * m3
        d[4 * ld_d + t] = m0 - k2 * m1 + k4 * m2 - k8 * m3
        d[5 * ld_d + t] = m3


cdef inline void wino_gt(const floating* s0, const floating* s1, const floating* s2,
                         const floating* s3, const floating* s4, const floating* s5,
                         floating* d, index_t ld_d, index_t step, index_t n) noexcept nogil:
    """d[k * ld_d + t * step] = (G^T (s0[t], .., s5[t]))[k] for k < 3, t < n:
    one axis of the weight gradient's output transform, G the 6x3 filter
    transform of F(4x4, 3x3) (the forward's weight packing reads G from here)."""
    cdef index_t t
    cdef floating m0, m1, m2, m3, m4, m5
    cdef floating q = 0.25, s = 1.0 / 6, e = 1.0 / 12, f = 1.0 / 24
    for t in range(n):
        m0, m1, m2, m3, m4, m5 = s0[t], s1[t], s2[t], s3[t], s4[t], s5[t]
        d[t * step] = q * m0 - s * (m1 + m2) + f * (m3 + m4)
        d[ld_d + t * step] = s * (m2 - m1) + e * (m3 - m4)
        d[2 * ld_d + t * step] = s * (m3 + m4 - m1 - m2) + m5


cdef inline void wino_grad_tiles(bint input, const floating* plane, index_t h, index_t w,
                                 index_t pad_h, index_t pad_w, index_t th0, index_t th1,
                                 index_t tiles_w, floating* cols, floating* tmp,
                                 floating* v, index_t ld_xi) noexcept nogil:
    """The weight gradient's tiles of tile rows th0..th1-1 of one plane (h x w,
    zeros outside), t counting them row by row: with input, the input tiles
    V[xi * ld_xi + t] = (B^T d_t B)[xi] (6x6, from row 4 th - pad_h, column
    4 tw - pad_w); else the output gradient's (A g_t A^T)[xi] (4x4, no
    padding). Each tile row's columns are gathered tile by tile (cols: 6
    runs of the tiles), so both axes' transforms run over every tile at once.
    tmp: 36 runs of the tiles."""
    cdef index_t nt = (th1 - th0) * tiles_w, taps = 6 if input else 4
    cdef index_t r, q, k, th, ih, at
    cdef floating* row
    for r in range(taps):
        for th in range(th0, th1):
            ih = 4 * th + r - (pad_h if input else 0)
            at = (th - th0) * tiles_w
            for q in range(taps):
                if 0 <= ih < h:
                    _gather_columns(plane + ih * w, w, q - (pad_w if input else 0), tiles_w,
                                    cols + q * nt + at)
                else:
                    memset(cols + q * nt + at, 0, tiles_w * sizeof(floating))
        row = tmp + r * 6 * nt
        if input:
            wino_bt(6, cols, cols + nt, cols + 2 * nt, cols + 3 * nt, cols + 4 * nt,
                    cols + 5 * nt, row, nt, nt)
        else:
            wino_a(cols, cols + nt, cols + 2 * nt, cols + 3 * nt, row, nt, nt)
    for k in range(6):
        if input:
            wino_bt(6, tmp + k * nt, tmp + (6 + k) * nt, tmp + (12 + k) * nt,
                    tmp + (18 + k) * nt, tmp + (24 + k) * nt, tmp + (30 + k) * nt,
                    v + k * ld_xi, 6 * ld_xi, nt)
        else:
            wino_a(tmp + k * nt, tmp + (6 + k) * nt, tmp + (12 + k) * nt, tmp + (18 + k) * nt,
                   v + k * ld_xi, 6 * ld_xi, nt)
