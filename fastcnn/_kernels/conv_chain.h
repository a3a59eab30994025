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

#include <stdint.h>
#include <string.h>
#include "conv_block.h"
#include "conv_dw.h"
#include "im2col.h"

#define FCNN_CHAIN_VL (FCNN_VEC_BYTES / 4)
/* Two register tiles, blocked_oc's shapes: WIDE (more pixels) and TALL (more
 * channel vectors); each stage takes the one that pads its pixels and
 * channels less (7x7 planes: 49 pixels fill 7 tall tiles of 7, against 4
 * wide ones of 14 with AVX-512). Weights are packed per block of VL
 * channels, in a whole number of tiles of either shape (PAD_BLOCKS). */
#define FCNN_CHAIN_PW FCNN_OC_WIDE_P
#define FCNN_CHAIN_VW FCNN_OC_WIDE_V
#define FCNN_CHAIN_PT FCNN_OC_TALL_P
#define FCNN_CHAIN_VT FCNN_OC_TALL_V
#define FCNN_CHAIN_PMAX FCNN_CHAIN_PW
#define FCNN_CHAIN_VMAX FCNN_CHAIN_VT
#define FCNN_CHAIN_PAD_BLOCKS (FCNN_CHAIN_VW * FCNN_CHAIN_VT)
#define FCNN_CHAIN_LINE (64 / (long)sizeof(float))      /* floats per cache line */
#define FCNN_CHAIN_GROUP_MAX 2      /* tiles the projection's epilogue takes at most */

/* The float whose bits are `bits`, splatted where it is used and not
 * hoisted out of the loop around it: the expansion tile's clamp bound,
 * held in a general register until its epilogue. As a vector (or a float)
 * kept from before the loop over tiles it held one of the 16 vector
 * registers that AVX2's tall tile needs for its multiply-adds, and one
 * weight vector went to the stack and back for every input channel
 * (MobileNetV2's chains ran 6-11 % slower on AVX2). */
static inline __attribute__((always_inline)) fcnn_vec_f32 fcnn_chain_splat_bits(uint32_t bits)
{
    float x;
    __asm__ volatile("" : "+r"(bits));
    memcpy(&x, &bits, sizeof x);
    return (fcnn_vec_f32){0} + x;
}

/* acc[j][v] = sum over b < nb, c < cin of x[b * ld_b + c * ld_c + j * LDP]
 *                                        * w[v * ld_w + (b * cin + c) * VL + lane]:
 * P pixels LDP apart, V vectors of output channels, the input channels in nb
 * runs of cin (the depthwise output's blocks of lanes) summed in order.
 * With each input channel it fetches one line of pf towards L2 (the first
 * pf_lines lines): the next tile's weights, spread over the tiles that
 * share these, so streaming cold weights overlaps the multiply-adds.
 * A statement macro: both tiles below keep acc in registers. */
#define FCNN_CHAIN_ACCUMULATE(acc, LDP, P, V, x, ld_c, ld_b, nb, w, ld_w, cin, pf, pf_lines) \
    _Pragma("GCC unroll 16")                                                             \
    for (int j = 0; j < P; j++) {                                                        \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < V; v++)                                                      \
            acc[j][v] = (fcnn_vec_f32){0};                                               \
    }                                                                                    \
    for (long b = 0; b < nb; b++, x += ld_b, w += cin * FCNN_CHAIN_VL)                   \
        for (long c = 0; c < cin; c++) {                                                 \
            const float *xc = x + c * ld_c;                                              \
            if (b * cin + c < pf_lines)                                                  \
                __builtin_prefetch(pf + (b * cin + c) * FCNN_CHAIN_LINE, 0, 2);          \
            fcnn_vec_f32 wv[V];                                                          \
            _Pragma("GCC unroll 8")                                                      \
            for (int v = 0; v < V; v++)                                                  \
                wv[v] = *(const fcnn_vec_f32 *)(w + v * ld_w + c * FCNN_CHAIN_VL);       \
            _Pragma("GCC unroll 16")                                                     \
            for (int j = 0; j < P; j++) {                                                \
                float s = xc[j * (LDP)];                                                 \
                _Pragma("GCC unroll 8")                                                  \
                for (int v = 0; v < V; v++)                                              \
                    acc[j][v] += s * wv[v];                                              \
            }                                                                            \
        }

/* The projection's tile: the sums stored to acc_io[j][v] (its epilogue
 * turns VL x VL blocks of them into runs of pixels per channel). Not
 * inlined: in its caller, vectors the epilogue keeps (the clamp's bound and
 * zero) took registers that AVX2's tall tile needs, so one weight vector was
 * reloaded from memory for every pixel (MobileNetV2, AVX2: 3-4 % of the
 * network; a call per tile costs under 1 %). */
#define FCNN_DEFINE_CHAIN_TILE(NAME, LDP, P, V)                                           \
static __attribute__((noinline)) void fcnn_chain_tile_##NAME(                             \
    const float *x, long ld_c, long ld_b, long nb, const float *w, long ld_w, long cin,  \
    float *acc_io, const float *pf, long pf_lines)                                       \
{                                                                                        \
    fcnn_vec_f32 acc[P][V];                                                              \
    FCNN_CHAIN_ACCUMULATE(acc, LDP, P, V, x, ld_c, ld_b, nb, w, ld_w, cin, pf, pf_lines) \
    _Pragma("GCC unroll 16")                                                             \
    for (int j = 0; j < P; j++) {                                                        \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < V; v++)                                                      \
            *(fcnn_vec_f32 *)(acc_io + (j * V + v) * FCNN_CHAIN_VL) = acc[j][v];         \
    }                                                                                    \
}

/* The expansion's tile over NCHW input (pixels side by side): each sum,
 * straight from its register, + bias, clamped to [0, hi] where clamp is
 * set, masked by keep[v] (zero lanes past the channels), stored at
 * dst + v * ld_dst + off[j] for the vectors v < nv and pixels with
 * off[j] >= 0. Storing from registers spares a round trip through memory
 * and a division per pixel: with 16-32 input channels (MobileNetV2's wide
 * blocks) that epilogue took a quarter of the expansion's time. */
#define FCNN_DEFINE_CHAIN_EXPAND_TILE(NAME, P, V)                                         \
static inline __attribute__((always_inline)) void fcnn_chain_expand_tile_##NAME(         \
    const float *x, long ld_c, const float *w, long ld_w, long cin, const float *pf,     \
    long pf_lines, const float *bias, int clamp, uint32_t hi_bits,                       \
    const fcnn_tr_mask_f32 *keep, int nv, float *dst, long ld_dst, const long *off)      \
{                                                                                        \
    fcnn_vec_f32 acc[P][V];                                                              \
    FCNN_CHAIN_ACCUMULATE(acc, 1, P, V, x, ld_c, 0, 1, w, ld_w, cin, pf, pf_lines)       \
    const fcnn_vec_f32 hi = fcnn_chain_splat_bits(hi_bits);                              \
    _Pragma("GCC unroll 16")                                                             \
    for (int j = 0; j < P; j++) {                                                        \
        if (off[j] < 0)                                                                  \
            continue;                                                                    \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < V; v++) {                                                    \
            if (v >= nv)                                                                 \
                break;                                                                   \
            fcnn_vec_f32 e = acc[j][v] + *(const fcnn_vec_f32 *)(bias + v * FCNN_CHAIN_VL); \
            if (clamp)                                                                   \
                e = fcnn_clamp_f32(e, (fcnn_vec_f32){0}, hi);                            \
            e = (fcnn_vec_f32)((fcnn_tr_mask_f32)e & keep[v]);                           \
            *(fcnn_vec_f32 *)(dst + v * ld_dst + off[j]) = e;                            \
        }                                                                                \
    }                                                                                    \
}

FCNN_DEFINE_CHAIN_EXPAND_TILE(wide, FCNN_CHAIN_PW, FCNN_CHAIN_VW)
FCNN_DEFINE_CHAIN_EXPAND_TILE(tall, FCNN_CHAIN_PT, FCNN_CHAIN_VT)
/* The projection reads the depthwise output: channels in lanes, pixels VL apart */
FCNN_DEFINE_CHAIN_TILE(lanes_wide, FCNN_CHAIN_VL, FCNN_CHAIN_PW, FCNN_CHAIN_VW)
FCNN_DEFINE_CHAIN_TILE(lanes_tall, FCNN_CHAIN_VL, FCNN_CHAIN_PT, FCNN_CHAIN_VT)
/* and one block of outputs (16 channels with AVX-512, a first-layer chain's
 * projection): the wide tile's pixels, one vector, no multiply-add on padding */
FCNN_DEFINE_CHAIN_TILE(lanes_one, FCNN_CHAIN_VL, FCNN_CHAIN_PW, 1)

/* Whether the tall tile pads `pixels` x `blocks` less than the wide one. */
static inline int fcnn_chain_tall(long pixels, long blocks)
{
    enum { PW = FCNN_CHAIN_PW, VW = FCNN_CHAIN_VW, PT = FCNN_CHAIN_PT, VT = FCNN_CHAIN_VT };
    const long wide = (pixels + PW - 1) / PW * PW * ((blocks + VW - 1) / VW * VW);
    const long tall = (pixels + PT - 1) / PT * PT * ((blocks + VT - 1) / VT * VT);
    return tall < wide;
}

/* The lines of the next tile's weights (n floats at w) unit `part` of
 * `parts` fetches, one per input channel of its tile call: where the next
 * tile starts and how many lines remain from there (0 for the last tile). */
static inline long fcnn_chain_prefetch_part(const float **pf, const float *w, long n,
                                            long part, long per_part)
{
    const long lines = (n + FCNN_CHAIN_LINE - 1) / FCNN_CHAIN_LINE, first = part * per_part;
    *pf = w + first * FCNN_CHAIN_LINE;
    return first < lines ? lines - first : 0;
}

/* The tiles of P pixels the projection's epilogue takes at once: as many
 * as fill whole vectors of pixels, where that is at most GROUP_MAX tiles
 * (AVX2's tall tiles of 4 pixels: 2; SSE's wide ones of 6: 2), else one
 * (AVX2's wide tiles of 6 and AVX-512's of 7 and 14 fill 3/4 to 7/8 of a
 * vector already). With a tile at a time, AVX2's tall tiles turned
 * half-empty blocks of VL pixels and stored every run in parts: in
 * MobileNetV2 (AVX2) the 56x56 and 112x112 blocks' chains (24 outputs: tall
 * tiles) ran 0.90-0.94x their time in pairs. Groups of 4 wide tiles made
 * the 7x7 blocks' chains slower at batch 8 (1.06-1.07x), so the most is 2. */
static inline long fcnn_chain_group(long P)
{
    long tiles = 1;
    while ((tiles * P) % FCNN_CHAIN_VL)
        tiles++;
    return tiles <= FCNN_CHAIN_GROUP_MAX ? tiles : 1;
}

/* Floats the projection's sums take: a group of either tile. */
static inline long fcnn_chain_acc_size(void)
{
    const long wide = fcnn_chain_group(FCNN_CHAIN_PW) * FCNN_CHAIN_PW * FCNN_CHAIN_VW;
    const long tall = fcnn_chain_group(FCNN_CHAIN_PT) * FCNN_CHAIN_PT * FCNN_CHAIN_VT;
    return (wide > tall ? wide : tall) * FCNN_CHAIN_VL;
}

/* The geometry of one chain; cexp = the depthwise channels (= cin without an
 * expansion). Sizes in elements. The expansion is 1x1 (ek = 1: it reads cin
 * planes of in_h x in_w), or an ek x ek convolution at stride es with
 * padding ep over xc planes of xh x xw (a network's first layer, few
 * channels): then cin = xc ek ek, and each task gathers the columns of the
 * rows it expands (im2col.h) and runs them as a 1x1 expansion. */
typedef struct {
    long cin, in_h, in_w, cexp, cout, out_h, out_w;
    long kh, kw, sh, sw, ph, pw, dh, dw;
    long xc, xh, xw, ek, es, ep;
    int expand;                         /* whether an expansion comes first */
    long blocks;                        /* ceil(cexp / VL): the depthwise's channel blocks */
    long wp;                            /* padded row length of the depthwise's input */
    long band_rows;                     /* output rows per band */
} fcnn_chain_geom;

static inline long fcnn_chain_rows_read(const fcnn_chain_geom *g, long rows)
{
    return (rows - 1) * g->sh + (g->kh - 1) * g->dh + 1;
}

/* The columns an ek x ek expansion gathers for the rows a task reads (one
 * plane of them per column row, and a tile of slack the last tile reads past). */
static inline long fcnn_chain_cols(const fcnn_chain_geom *g, long rows)
{
    return g->ek > 1 ? g->cin * fcnn_chain_rows_read(g, rows) * g->in_w + FCNN_CHAIN_PMAX : 0;
}

/* Scratch elements one task needs: the padded expanded rows, the depthwise
 * output (plus a tile of slack the projection's last tile reads past), one
 * tile of input pixels copied at a plane's end, the projection's sums and
 * the expansion's columns. */
static inline long fcnn_chain_scratch(const fcnn_chain_geom *g, long rows)
{
    enum { P = FCNN_CHAIN_PMAX, VL = FCNN_CHAIN_VL };
    return g->blocks * VL * (fcnn_chain_rows_read(g, rows) * g->wp + rows * g->out_w + P)
           + g->cin * P + fcnn_chain_acc_size() + fcnn_chain_cols(g, rows);
}

/* Clamp each lane to [0, hi] where clamp is set (ReLU: hi = inf; ReLU6: 6). */
static inline __attribute__((always_inline)) fcnn_vec_f32 fcnn_chain_clamp(
    fcnn_vec_f32 v, int clamp, fcnn_vec_f32 hi)
{
    return clamp ? fcnn_clamp_f32(v, (fcnn_vec_f32){0}, hi) : v;
}

/* Where a task's parts lie in its scratch (rows: its output rows): the
 * padded expanded rows buf[block][row][column][lane], the depthwise output
 * mid[block][position][lane] (a tile of slack after each block), a tile of
 * input pixels copied at a plane's end, the projection's sums and the columns.
 * When the threads share one task, they share buf and mid and each has xt,
 * acc and cols. */
typedef struct {
    long rows, nrows, ih0, block_len, mid_len;
    float *buf, *mid, *xt, *acc, *cols;
} fcnn_chain_task;

static inline fcnn_chain_task fcnn_chain_layout(const fcnn_chain_geom *g, long oh0, long oh1,
                                                float *shared, float *own)
{
    enum { P = FCNN_CHAIN_PMAX, VL = FCNN_CHAIN_VL };
    fcnn_chain_task t;
    t.rows = oh1 - oh0;
    t.nrows = fcnn_chain_rows_read(g, t.rows);
    t.ih0 = oh0 * g->sh - g->ph;
    t.block_len = t.nrows * g->wp * VL;
    t.mid_len = t.rows * g->out_w * VL + P * VL;
    t.buf = shared;
    t.mid = shared + g->blocks * t.block_len;
    t.xt = own + g->blocks * (t.block_len + t.mid_len);
    t.acc = t.xt + g->cin * P;
    t.cols = t.acc + fcnn_chain_acc_size();
    return t;
}

/* The input pixels the expansion computes (those of the input rows the
 * task reads) and its register tile's shape for them. */
static inline void fcnn_chain_expand_shape(const fcnn_chain_geom *g, const fcnn_chain_task *t,
                                           long *q0, long *q1, int *tall)
{
    const long r0 = t->ih0 > 0 ? t->ih0 : 0;
    const long r1 = t->ih0 + t->nrows < g->in_h ? t->ih0 + t->nrows : g->in_h;
    *q0 = r0 * g->in_w;
    *q1 = r1 > r0 ? r1 * g->in_w : *q0;
    *tall = fcnn_chain_tall(*q1 - *q0, g->blocks);
}

/* The units [*u0, *u1) of `units` that part `part` of `parts` takes:
 * contiguous runs, as OpenMP's static schedule deals them. */
static inline void fcnn_chain_part(long units, long part, long parts, long *u0, long *u1)
{
    const long chunk = (units + parts - 1) / parts;
    *u0 = part * chunk < units ? part * chunk : units;
    *u1 = *u0 + chunk < units ? *u0 + chunk : units;
}

/* Step 1: the expansion's units (tiles of V blocks of channels x tiles of P
 * input pixels, pixels fastest) of the tiles of blocks bt0 .. bt1 - 1, in
 * one run, each stored with bias and clamp at its places in buf. One run
 * keeps the divisions out of the tiles: with AVX2's 6-pixel tiles and 16
 * input channels a tile is ~100 cycles of multiply-adds.
 * x: the image's input planes; we: weights [block][cin][VL]; be: biases [block][VL]. */
static void fcnn_chain_expand_tiles(const fcnn_chain_geom *g, const fcnn_chain_task *t,
                                    const float *x, const float *we, const float *be,
                                    int clamp_e, float hi_e, long bt0, long bt1)
{
    enum { VL = FCNN_CHAIN_VL };
    long q0, q1;
    int tall;
    if (!g->expand)
        return;
    fcnn_chain_expand_shape(g, t, &q0, &q1, &tall);
    const int V = tall ? FCNN_CHAIN_VT : FCNN_CHAIN_VW;
    const long P = tall ? FCNN_CHAIN_PT : FCNN_CHAIN_PW;
    const long ptiles = (q1 - q0 + P - 1) / P, ld_w = g->cin * VL;
    const long u0 = bt0 * ptiles, u1 = bt1 * ptiles;
    if (u0 >= u1)
        return;
    /* the planes the tiles read: the input's, or the columns of an ek x ek
     * expansion (its rows q0 / in_w on, gathered here: each part of a shared
     * task gathers its own) */
    const float *planes = x;
    long plane = g->in_h * g->in_w, base = 0;
    if (g->ek > 1) {
        const long size[3] = {1, g->xh, g->xw}, out[3] = {1, g->in_h, g->in_w};
        const long kernel[3] = {1, g->ek, g->ek}, stride[3] = {1, g->es, g->es};
        const long pad[3] = {0, g->ep, g->ep}, dil[3] = {1, 1, 1};
        plane = q1 - q0;
        base = q0;
        for (long c = 0; c < g->xc; c++)
            for (long kh = 0; kh < g->ek; kh++)
                fcnn_im2col_rows_f32(x, 0, c, 0, kh, size, out, kernel, stride, pad, dil, q0,
                                     plane, t->cols + (c * g->ek + kh) * g->ek * plane, plane);
        planes = t->cols;
    }
    /* the last block's lanes past cexp must hold zeros, not 0 * Inf = NaN
     * from an infinite input: the projection multiplies them by zero again */
    const long used = g->cexp - (g->blocks - 1) * VL;
    uint32_t hi_bits;
    memcpy(&hi_bits, &hi_e, sizeof hi_bits);
    long bt = u0 / ptiles, pt = u0 % ptiles;
    long ih = (q0 + pt * P) / g->in_w, iw = (q0 + pt * P) % g->in_w;
    fcnn_tr_mask_f32 keep[FCNN_CHAIN_VMAX];
    int nv = 0;
    for (long u = u0; u < u1; u++) {
        const long blk0 = bt * V, q = q0 + pt * P, n = q1 - q < P ? q1 - q : P;
        const float *wt = we + blk0 * ld_w, *src = planes + (q - base);
        long ld_c = plane;
        if (u == u0 || pt == 0) {   /* a new tile of blocks: its masks */
            for (int v = 0; v < V; v++)
                for (int l = 0; l < VL; l++)
                    keep[v][l] = blk0 + v < g->blocks - 1 || l < used ? -1 : 0;
            nv = g->blocks - blk0 < V ? (int)(g->blocks - blk0) : V;
        }
        /* where each pixel's vectors go in buf (-1: past the tile, or a
         * column the depthwise does not read); (ih, iw) walks on to the
         * next tile's first pixel */
        long off[FCNN_CHAIN_PMAX];
        for (long j = 0; j < P; j++) {
            const long col = g->pw + iw;
            off[j] = j < n && col < g->wp ? ((ih - t->ih0) * g->wp + col) * VL : -1;
            if (++iw == g->in_w) {
                iw = 0;
                ih++;
            }
        }
        const float *pf = wt;
        const long pf_lines = blk0 + V < g->blocks
            ? fcnn_chain_prefetch_part(&pf, wt + V * ld_w, V * ld_w, pt, g->cin) : 0;
        if (planes == x && q + P > plane) { /* it would read past the last plane: copy it */
            for (long c = 0; c < g->cin; c++)
                for (long j = 0; j < P; j++)
                    t->xt[c * P + j] = j < n ? x[c * plane + q + j] : 0;
            src = t->xt;
            ld_c = P;
        }
        float *dst = t->buf + blk0 * t->block_len;
        if (tall)
            fcnn_chain_expand_tile_tall(src, ld_c, wt, ld_w, g->cin, pf, pf_lines,
                                        be + blk0 * VL, clamp_e, hi_bits, keep, nv, dst,
                                        t->block_len, off);
        else
            fcnn_chain_expand_tile_wide(src, ld_c, wt, ld_w, g->cin, pf, pf_lines,
                                        be + blk0 * VL, clamp_e, hi_bits, keep, nv, dst,
                                        t->block_len, off);
        if (++pt == ptiles) {
            pt = 0;
            bt++;
            ih = q0 / g->in_w;
            iw = 0;
        }
    }
}

/* Step 2, one unit: block blk's depthwise output, into mid. With an
 * expansion, buf's rows above and below the input and its padding columns
 * are zeroed first (the expansion writes the rest); without one, the
 * "depthwise" algorithm's kernel transposes the input rows itself.
 * wd: weights [block][tap][VL]; bd: biases [block][VL]. */
static void fcnn_chain_depthwise_unit(const fcnn_chain_geom *g, const fcnn_chain_task *t,
                                      const float *x, const float *wd, const float *bd,
                                      int clamp_d, float hi_d, long oh0, long blk)
{
    enum { VL = FCNN_CHAIN_VL };
    const long taps = g->kh * g->kw;
    float *b = t->buf + blk * t->block_len, *out = t->mid + blk * t->mid_len;
    const float *w = wd + blk * taps * VL, *bias = bd + blk * VL;
    if (!g->expand) {
        const long planes = g->cexp - blk * VL < VL ? g->cexp - blk * VL : VL;
        fcnn_dw_rows_f32(x + blk * VL * g->in_h * g->in_w, planes, g->in_h, g->in_w, w,
                         g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw, g->out_w,
                         oh0, oh0 + t->rows, g->wp, 1, bias, clamp_d, 0, hi_d, b, out);
        return;
    }
    for (long r = 0; r < t->nrows; r++) {
        const long ih = t->ih0 + r;
        float *row = b + r * g->wp * VL;
        if (ih < 0 || ih >= g->in_h) {
            memset(row, 0, g->wp * VL * sizeof(float));
            continue;
        }
        memset(row, 0, (g->pw < g->wp ? g->pw : g->wp) * VL * sizeof(float));
        if (g->pw + g->in_w < g->wp)
            memset(row + (g->pw + g->in_w) * VL, 0,
                   (g->wp - g->pw - g->in_w) * VL * sizeof(float));
    }
    if (g->kh == 3 && g->kw == 3 && g->dh == 1 && g->dw == 1 && g->sw == 1)
        fcnn_dw_taps_f32(b, g->wp, w, 3, 3, g->sh, 1, 1, 1, t->rows, g->out_w, 1, bias,
                         clamp_d, 0, hi_d, out);
    else if (g->kh == 3 && g->kw == 3 && g->dh == 1 && g->dw == 1 && g->sw == 2)
        fcnn_dw_taps_f32(b, g->wp, w, 3, 3, g->sh, 2, 1, 1, t->rows, g->out_w, 1, bias,
                         clamp_d, 0, hi_d, out);
    else
        fcnn_dw_taps_f32(b, g->wp, w, g->kh, g->kw, g->sh, g->sw, g->dh, g->dw, t->rows,
                         g->out_w, 1, bias, clamp_d, 0, hi_d, out);
}

/* The tiles of blocks the expansion cuts its channels into (one block a
 * tile without an expansion). */
static inline long fcnn_chain_block_tile(const fcnn_chain_geom *g, const fcnn_chain_task *t)
{
    long q0, q1;
    int tall;
    if (!g->expand)
        return 1;
    fcnn_chain_expand_shape(g, t, &q0, &q1, &tall);
    return tall ? FCNN_CHAIN_VT : FCNN_CHAIN_VW;
}

/* Steps 1 and 2, part `part` of `parts` of a task the threads share: the
 * expansion of a run of whole tiles of blocks, then those blocks' depthwise
 * output. Each part reads back only the blocks of buf it wrote, so the parts
 * need no barrier between the two steps (one barrier fewer per task; the
 * projection, which sums over every block, waits for all of them). */
static void fcnn_chain_expand_depthwise_part(
    const fcnn_chain_geom *g, const fcnn_chain_task *t, const float *x, const float *we,
    const float *be, int clamp_e, float hi_e, const float *wd, const float *bd, int clamp_d,
    float hi_d, long oh0, long part, long parts)
{
    const long V = fcnn_chain_block_tile(g, t);
    long bt0, bt1;
    fcnn_chain_part((g->blocks + V - 1) / V, part, parts, &bt0, &bt1);
    fcnn_chain_expand_tiles(g, t, x, we, be, clamp_e, hi_e, bt0, bt1);
    const long b1 = bt1 * V < g->blocks ? bt1 * V : g->blocks;
    for (long blk = bt0 * V; blk < b1; blk++)
        fcnn_chain_depthwise_unit(g, t, x, wd, bd, clamp_d, hi_d, oh0, blk);
}

/* Step 3, part `part` of `parts`: the projection's units (tiles of V
 * output blocks x groups of G tiles of P positions of mid, positions
 * fastest) in one run, each into the output planes y (the image's):
 * ((sum + bias) + residual), clamped. wp: [output block][blocks * VL][VL];
 * bp: biases [output block][VL]. */
static void fcnn_chain_project_part(const fcnn_chain_geom *g, const fcnn_chain_task *t,
                                    const float *wp, const float *bp, const float *res,
                                    int clamp_p, float hi_p, long oh0, long part, long parts,
                                    float *y)
{
    enum { VL = FCNN_CHAIN_VL };
    const long count = t->rows * g->out_w, plane = g->out_h * g->out_w;
    const long out_blocks = (g->cout + VL - 1) / VL, ld_w = g->blocks * VL * VL;
    const int one = out_blocks == 1, tall = !one && fcnn_chain_tall(count, out_blocks);
    const int V = one ? 1 : tall ? FCNN_CHAIN_VT : FCNN_CHAIN_VW;
    const long P = tall ? FCNN_CHAIN_PT : FCNN_CHAIN_PW, G = fcnn_chain_group(P);
    const long ptiles = (count + P - 1) / P, groups = (ptiles + G - 1) / G;
    long u0, u1;
    fcnn_chain_part((out_blocks + V - 1) / V * groups, part, parts, &u0, &u1);
    const fcnn_vec_f32 hiv = (fcnn_vec_f32){0} + hi_p;
    long bt = u0 / groups - 1, gi = groups - 1;
    if (u0 % groups) {
        bt = u0 / groups;
        gi = u0 % groups - 1;
    }
    for (long u = u0; u < u1; u++) {
        if (++gi == groups) {
            gi = 0;
            bt++;
        }
        const long ob0 = bt * V, q = gi * G * P;
        const long n = count - q < G * P ? count - q : G * P, c0 = ob0 * VL;
        const long channels = g->cout - c0 < V * VL ? g->cout - c0 : V * VL;
        const float *wt = wp + ob0 * ld_w;
        for (long k = 0; k < G && q + k * P < count; k++) {
            const long pt = gi * G + k;
            const float *x = t->mid + (q + k * P) * VL, *pf = wt;
            float *acc = t->acc + k * P * V * VL;
            const long pf_lines = ob0 + V < out_blocks
                ? fcnn_chain_prefetch_part(&pf, wt + V * ld_w, V * ld_w, pt, g->blocks * VL) : 0;
            if (one)
                fcnn_chain_tile_lanes_one(x, 1, t->mid_len, g->blocks, wt, ld_w, VL, acc, pf,
                                          pf_lines);
            else if (tall)
                fcnn_chain_tile_lanes_tall(x, 1, t->mid_len, g->blocks, wt, ld_w, VL, acc, pf,
                                           pf_lines);
            else
                fcnn_chain_tile_lanes_wide(x, 1, t->mid_len, g->blocks, wt, ld_w, VL, acc, pf,
                                           pf_lines);
        }
        /* the group's VL-pixel x VL-channel blocks turned by register
         * transposes into runs of pixels per channel, then ((sum + bias) +
         * residual), clamped; a run shorter than a vector (the group's last,
         * or every run where a tile has fewer pixels than lanes) read and
         * written in part */
        const long first = oh0 * g->out_w + q;
        for (long j0 = 0; j0 < n; j0 += VL) {
            const long m = n - j0 < VL ? n - j0 : VL;
            for (int v = 0; v < V && v * VL < channels; v++) {
                fcnn_vec_f32 r[VL];
                for (int j = 0; j < VL; j++)
                    r[j] = j < m ? *(const fcnn_vec_f32 *)(t->acc + ((j0 + j) * V + v) * VL)
                                 : (fcnn_vec_f32){0};
                fcnn_transpose_f32(r);
                for (long l = 0; l < VL && v * VL + l < channels; l++) {
                    const long oc = c0 + v * VL + l;
                    float *yr = y + oc * plane + first + j0;
                    fcnn_vec_f32 sum = r[l] + bp[oc];
                    if (res) {
                        const float *rr = res + oc * plane + first + j0;
                        sum += m == VL ? *(const fcnn_vec_f32 *)rr : fcnn_load_part_f32(rr, m);
                    }
                    sum = fcnn_chain_clamp(sum, clamp_p, hiv);
                    if (m == VL)
                        *(fcnn_vec_f32 *)yr = sum;
                    else
                        fcnn_store_part_f32(yr, m, sum);
                }
            }
        }
    }
}

/* One task on one thread: the output rows oh0 .. oh1 - 1 of one image, all
 * three steps (x, res, y: the image's). */
static inline void fcnn_chain_band(
    const fcnn_chain_geom *g, const float *x, const float *we, const float *be, int clamp_e,
    float hi_e, const float *wd, const float *bd, int clamp_d, float hi_d, const float *wp,
    const float *bp, const float *res, int clamp_p, float hi_p, long oh0, long oh1,
    float *scratch, float *y)
{
    const fcnn_chain_task t = fcnn_chain_layout(g, oh0, oh1, scratch, scratch);
    fcnn_chain_expand_depthwise_part(g, &t, x, we, be, clamp_e, hi_e, wd, bd, clamp_d, hi_d,
                                     oh0, 0, 1);
    fcnn_chain_project_part(g, &t, wp, bp, res, clamp_p, hi_p, oh0, 0, 1, y);
}

#endif
