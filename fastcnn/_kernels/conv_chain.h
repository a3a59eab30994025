/* A chain of convolutions run band by band (the "conv_chain" plan step):
 * an optional 1x1 expansion, a depthwise convolution and a 1x1 projection,
 * as in MobileNetV2's inverted residual blocks.
 *
 * Run layer by layer, the expanded tensor (6x the block's channels) and the
 * depthwise output go to memory and back, and the depthwise kernel turns its
 * channels into vector lanes and back. Here one task takes a band of output
 * rows of one image and keeps both tensors in its scratch, channels in
 * vector lanes from start to end:
 *   1. the expansion computes the input rows the band reads, output channels
 *      in lanes and pixels in registers (the blocked_oc register tile), and
 *      stores each pixel's channel vectors at their place in a zero-padded
 *      buffer buf[block][row][column][lane], with bias and clamp (ReLU,
 *      ReLU6); without an expansion the input rows are transposed into it;
 *   2. the depthwise kernel (conv_dw.h) reads that buffer as it lies and
 *      writes mid[block][position][lane], with bias and clamp;
 *   3. the projection reads mid one block of VL channels at a time (each
 *      lane a channel, each pixel VL apart), output channels in lanes again,
 *      and writes the output planes with bias, residual and clamp.
 * A band recomputes the expanded rows it shares with the next (its halo).
 * Every output is one fixed sum (the expansion over its input channels in
 * order, the depthwise over its taps, the projection over the channel blocks
 * in order), whatever the bands and the thread count.
 */
#ifndef FASTCNN_CONV_CHAIN_H
#define FASTCNN_CONV_CHAIN_H

#include <string.h>
#include "conv_block.h"
#include "conv_dw.h"

#define FCNN_CHAIN_VL (FCNN_VEC_BYTES / 4)
#define FCNN_CHAIN_P FCNN_OC_WIDE_P           /* pixels per register tile */
#define FCNN_CHAIN_V FCNN_OC_WIDE_V           /* channel vectors per register tile */
#define FCNN_CHAIN_TILE (FCNN_CHAIN_V * FCNN_CHAIN_VL)

/* acc[j][v] (+)= sum over c < cin of x[c * ld_c + j * LDP] * w[c][v][lane]:
 * P pixels LDP apart, V vectors of output channels (w packed [cin][TILE]). */
#define FCNN_DEFINE_CHAIN_TILE(NAME, LDP)                                                 \
static inline __attribute__((always_inline)) void fcnn_chain_tile_##NAME(                \
    const float *x, long ld_c, const float *w, long cin, float *acc_io, int accumulate)  \
{                                                                                        \
    enum { P = FCNN_CHAIN_P, V = FCNN_CHAIN_V, VL = FCNN_CHAIN_VL };                     \
    fcnn_vec_f32 acc[P][V];                                                              \
    _Pragma("GCC unroll 16")                                                             \
    for (int j = 0; j < P; j++) {                                                        \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < V; v++)                                                      \
            acc[j][v] = accumulate ? *(const fcnn_vec_f32 *)(acc_io + (j * V + v) * VL)  \
                                   : (fcnn_vec_f32){0};                                  \
    }                                                                                    \
    for (long c = 0; c < cin; c++) {                                                     \
        const float *xc = x + c * ld_c;                                                  \
        fcnn_vec_f32 wv[V];                                                              \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < V; v++)                                                      \
            wv[v] = *(const fcnn_vec_f32 *)(w + (c * V + v) * VL);                       \
        _Pragma("GCC unroll 16")                                                         \
        for (int j = 0; j < P; j++) {                                                    \
            float b = xc[j * (LDP)];                                                     \
            _Pragma("GCC unroll 8")                                                      \
            for (int v = 0; v < V; v++)                                                  \
                acc[j][v] += b * wv[v];                                                  \
        }                                                                                \
    }                                                                                    \
    _Pragma("GCC unroll 16")                                                             \
    for (int j = 0; j < P; j++) {                                                        \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < V; v++)                                                      \
            *(fcnn_vec_f32 *)(acc_io + (j * V + v) * VL) = acc[j][v];                    \
    }                                                                                    \
}

FCNN_DEFINE_CHAIN_TILE(planes, 1)                 /* NCHW input: pixels side by side */
FCNN_DEFINE_CHAIN_TILE(lanes, FCNN_CHAIN_VL)      /* channels in lanes: pixels VL apart */

/* The geometry of one chain; cexp = the depthwise channels (= cin without an
 * expansion). Sizes in elements. */
typedef struct {
    long cin, in_h, in_w, cexp, cout, out_h, out_w;
    long kh, kw, sh, sw, ph, pw, dh, dw;
    int expand;                         /* whether a 1x1 expansion comes first */
    long blocks;                        /* ceil(cexp / VL): the depthwise's channel blocks */
    long wp;                            /* padded row length of the depthwise's input */
    long band_rows;                     /* output rows per band */
} fcnn_chain_geom;

static inline long fcnn_chain_rows_read(const fcnn_chain_geom *g, long rows)
{
    return (rows - 1) * g->sh + (g->kh - 1) * g->dh + 1;
}

/* Scratch elements one task needs: the padded expanded rows, the depthwise
 * output (plus a tile of slack the projection's last tile reads past), one
 * tile of input pixels copied at a plane's end, and the register tile. */
static inline long fcnn_chain_scratch(const fcnn_chain_geom *g, long rows)
{
    enum { P = FCNN_CHAIN_P, VL = FCNN_CHAIN_VL };
    return g->blocks * VL * (fcnn_chain_rows_read(g, rows) * g->wp + rows * g->out_w + P)
           + g->cin * P + P * FCNN_CHAIN_TILE;
}

/* Clamp each lane to [0, hi] where clamp is set (ReLU: hi = inf; ReLU6: 6). */
static inline __attribute__((always_inline)) fcnn_vec_f32 fcnn_chain_clamp(
    fcnn_vec_f32 v, int clamp, fcnn_vec_f32 hi)
{
    return clamp ? fcnn_dw_clamp_f32(v, (fcnn_vec_f32){0}, hi) : v;
}

/* Steps 1-2 for the output rows oh0 .. oh1 - 1 of one image: mid gets the
 * depthwise output, [block][(oh - oh0) * out_w + ow][lane].
 * x: the image's input planes; we: expansion weights [tile][cin][TILE], be
 * its biases (padded to whole tiles); wd: depthwise weights [block][tap][VL],
 * bd its biases [block][VL]. */
static void fcnn_chain_depthwise(
    const fcnn_chain_geom *g, const float *x, const float *we, const float *be,
    int clamp_e, float hi_e, const float *wd, const float *bd, int clamp_d, float hi_d,
    long oh0, long oh1, float *scratch, float *mid)
{
    enum { P = FCNN_CHAIN_P, V = FCNN_CHAIN_V, VL = FCNN_CHAIN_VL, TILE = FCNN_CHAIN_TILE };
    const long rows = oh1 - oh0, nrows = fcnn_chain_rows_read(g, rows);
    const long ih0 = oh0 * g->sh - g->ph, plane = g->in_h * g->in_w;
    const long r0 = ih0 > 0 ? ih0 : 0;
    const long r1 = ih0 + nrows < g->in_h ? ih0 + nrows : g->in_h;
    const long block_len = nrows * g->wp * VL, mid_len = rows * g->out_w * VL + P * VL;
    const long taps = g->kh * g->kw;
    float *buf = scratch;
    float *xt = buf + g->blocks * block_len + g->blocks * mid_len;
    float *acc = xt + g->cin * P;
    const fcnn_vec_f32 hev = (fcnn_vec_f32){0} + hi_e;
    /* the last block's lanes past cexp must hold zeros, not 0 * Inf = NaN
     * from an infinite input: the projection multiplies them by zero again */
    const long used = g->cexp - (g->blocks - 1) * VL;
    fcnn_tr_mask_f32 keep;
    for (int l = 0; l < VL; l++)
        keep[l] = l < used ? -1 : 0;

    if (!g->expand) {
        /* no expansion: the depthwise kernel of the "depthwise" algorithm,
         * which transposes the input rows itself, one block at a time */
        for (long blk = 0; blk < g->blocks; blk++) {
            const long planes = g->cexp - blk * VL < VL ? g->cexp - blk * VL : VL;
            fcnn_dw_rows_f32(x + blk * VL * plane, planes, g->in_h, g->in_w,
                             wd + blk * taps * VL, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw,
                             g->dh, g->dw, g->out_w, oh0, oh1, g->wp, 1, bd + blk * VL,
                             clamp_d, 0, hi_d, buf, mid + blk * mid_len);
        }
        return;
    }
    /* zero what the expansion does not write: rows above and below the
     * input, and the padding columns either side of each input row */
    for (long blk = 0; blk < g->blocks; blk++) {
        float *b = buf + blk * block_len;
        for (long r = 0; r < nrows; r++) {
            const long ih = ih0 + r;
            float *row = b + r * g->wp * VL;
            if (ih < 0 || ih >= g->in_h) {
                memset(row, 0, g->wp * VL * sizeof(float));
                continue;
            }
            const long left = g->pw < g->wp ? g->pw : g->wp;
            memset(row, 0, left * VL * sizeof(float));
            if (g->pw + g->in_w < g->wp)
                memset(row + (g->pw + g->in_w) * VL, 0,
                       (g->wp - g->pw - g->in_w) * VL * sizeof(float));
        }
    }
    /* the expansion over the input rows r0 .. r1 - 1 (pixels q0 .. q1 - 1 of each plane) */
    const long q1 = r1 * g->in_w, tiles = (g->blocks + V - 1) / V;
    for (long t = 0; t < tiles; t++) {
        const float *wt = we + t * g->cin * TILE;
        for (long q = r0 * g->in_w; q < q1; q += P) {
            const long n = q1 - q < P ? q1 - q : P;
            if (q + P <= plane) {
                fcnn_chain_tile_planes(x + q, plane, wt, g->cin, acc, 0);
            } else {        /* the tile would read past the last plane: copy it */
                for (long c = 0; c < g->cin; c++)
                    for (long j = 0; j < P; j++)
                        xt[c * P + j] = j < n ? x[c * plane + q + j] : 0;
                fcnn_chain_tile_planes(xt, P, wt, g->cin, acc, 0);
            }
            for (long j = 0; j < n; j++) {
                const long ih = (q + j) / g->in_w, iw = (q + j) % g->in_w;
                const long col = g->pw + iw;
                if (col >= g->wp)
                    continue;
                for (int v = 0; v < V; v++) {
                    const long blk = t * V + v;
                    if (blk >= g->blocks)
                        break;
                    fcnn_vec_f32 e = *(const fcnn_vec_f32 *)(acc + (j * V + v) * VL)
                                     + *(const fcnn_vec_f32 *)(be + blk * VL);
                    e = fcnn_chain_clamp(e, clamp_e, hev);
                    if (blk == g->blocks - 1)
                        e = (fcnn_vec_f32)((fcnn_tr_mask_f32)e & keep);
                    *(fcnn_vec_f32 *)(buf + blk * block_len + ((ih - ih0) * g->wp + col) * VL) = e;
                }
            }
        }
    }
    /* the depthwise convolution of each block, as the "depthwise" algorithm */
    for (long blk = 0; blk < g->blocks; blk++) {
        const float *b = buf + blk * block_len;
        float *out = mid + blk * mid_len;
        const float *w = wd + blk * taps * VL, *bias = bd + blk * VL;
        if (g->kh == 3 && g->kw == 3 && g->dh == 1 && g->dw == 1 && g->sw == 1)
            fcnn_dw_taps_f32(b, g->wp, w, 3, 3, g->sh, 1, 1, 1, rows, g->out_w, 1, bias,
                             clamp_d, 0, hi_d, out);
        else if (g->kh == 3 && g->kw == 3 && g->dh == 1 && g->dw == 1 && g->sw == 2)
            fcnn_dw_taps_f32(b, g->wp, w, 3, 3, g->sh, 2, 1, 1, rows, g->out_w, 1, bias,
                             clamp_d, 0, hi_d, out);
        else
            fcnn_dw_taps_f32(b, g->wp, w, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw, rows,
                             g->out_w, 1, bias, clamp_d, 0, hi_d, out);
    }
}

/* Step 3: the projection of mid (the output rows oh0 .. oh1 - 1) into the
 * image's output planes y: ((sum + bias) + residual), clamped.
 * wp: [tile][blocks * VL][TILE]; bp: biases padded to whole tiles. */
static void fcnn_chain_project(
    const fcnn_chain_geom *g, const float *mid, const float *wp, const float *bp,
    const float *res, int clamp_p, float hi_p, long oh0, long oh1, float *acc, float *y)
{
    enum { P = FCNN_CHAIN_P, V = FCNN_CHAIN_V, VL = FCNN_CHAIN_VL, TILE = FCNN_CHAIN_TILE };
    const long count = (oh1 - oh0) * g->out_w, plane = g->out_h * g->out_w;
    const long mid_len = count * VL + P * VL, tiles = (g->cout + TILE - 1) / TILE;
    const long first = oh0 * g->out_w;
    for (long t = 0; t < tiles; t++) {
        const float *wt = wp + t * g->blocks * VL * TILE;
        const long channels = g->cout - t * TILE < TILE ? g->cout - t * TILE : TILE;
        for (long q = 0; q < count; q += P) {
            const long n = count - q < P ? count - q : P;
            for (long blk = 0; blk < g->blocks; blk++)
                fcnn_chain_tile_lanes(mid + blk * mid_len + q * VL, 1, wt + blk * VL * TILE,
                                      VL, acc, blk > 0);
            for (long k = 0; k < channels; k++) {
                const long oc = t * TILE + k, v = k / VL, lane = k % VL;
                float *yr = y + oc * plane + first + q;
                const float *rr = res ? res + oc * plane + first + q : NULL;
                const float b = bp[oc];
                for (long j = 0; j < n; j++) {
                    float s = acc[(j * V + v) * VL + lane] + b;
                    if (rr)
                        s += rr[j];
                    if (clamp_p)
                        s = s < 0 ? 0 : s > hi_p ? hi_p : s;
                    yr[j] = s;
                }
            }
        }
    }
}

/* One task: the output rows oh0 .. oh1 - 1 of one image, all three steps. */
static inline void fcnn_chain_band(
    const fcnn_chain_geom *g, const float *x, const float *we, const float *be, int clamp_e,
    float hi_e, const float *wd, const float *bd, int clamp_d, float hi_d, const float *wp,
    const float *bp, const float *res, int clamp_p, float hi_p, long oh0, long oh1,
    float *scratch, float *y)
{
    enum { P = FCNN_CHAIN_P, VL = FCNN_CHAIN_VL };
    const long rows = oh1 - oh0;
    float *mid = scratch + g->blocks * fcnn_chain_rows_read(g, rows) * g->wp * VL;
    float *acc = mid + g->blocks * (rows * g->out_w * VL + P * VL) + g->cin * P;
    fcnn_chain_depthwise(g, x, we, be, clamp_e, hi_e, wd, bd, clamp_d, hi_d, oh0, oh1,
                         scratch, mid);
    fcnn_chain_project(g, mid, wp, bp, res, clamp_p, hi_p, oh0, oh1, acc, y);
}

#endif
