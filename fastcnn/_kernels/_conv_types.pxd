# The convolution's types, shared by the dispatcher (_conv) and the algorithm
# modules (_conv_<algorithm>): the geometry, the algorithm codes, the plan and
# the cache-derived working-set sizes the plans are made with.
from fastcnn._kernels._typedefs cimport index_t

# Every convolution runs as 3-D over (D, H, W); 1-D and 2-D set the leading
# sizes to 1. Padding is the amount before each axis; the amount after is
# implied by the output size, so asymmetric padding ('same', ONNX pads) is free.
cdef struct ConvGeom:
    index_t batch, in_channels, out_channels, groups
    index_t in_d, in_h, in_w
    index_t out_d, out_h, out_w
    index_t kernel_d, kernel_h, kernel_w
    index_t stride_d, stride_h, stride_w
    index_t pad_d, pad_h, pad_w
    index_t dilation_d, dilation_h, dilation_w

cdef enum:
    CONV_GEMM_1X1 = 0   # 1x1, stride 1, no padding: the input already is the GEMM operand
    CONV_IM2COL = 1     # column tiles gathered per task, then one GEMM per task
    CONV_DIRECT = 2     # depthwise and few channels per group: no GEMM
    CONV_WINOGRAD = 3   # F(4x4, 3x3) / F(4x4, 2x2) for 2-D 3x3 / 2x2 stride 1: 36 / 25
                        # products on transformed tiles
    CONV_BLOCKED = 4    # 2-D direct, vectors over output pixels (few output channels)
    CONV_BLOCKED_OC = 5 # 2-D direct, vectors over output channels, pixels in registers
    CONV_DEPTHWISE = 6  # 2-D depthwise, vectors over channels (small planes)
    CONV_BLOCKED_OC_UNPACKED = 7  # CONV_BLOCKED_OC reading unpacked weights: each
                                  # thread packs a channel block's weights into its scratch
    CONV_POINTWISE = 8  # 1x1, stride 1, no padding: direct over the input as it lies,
                        # vectors over positions, output channels in registers

# Each algorithm's plan: how its work is cut into tasks and its scratch laid
# out (see its module). Chosen from the shape alone, never from the thread
# count, so each output element is computed the same way whatever the number
# of threads.

# gemm_1x1, im2col: tasks are (group, output-channel block, image, column tile)
cdef struct GemmPlan:
    index_t col_tile                # output positions per tile
    index_t n_col_tiles
    index_t m_block                 # output channels per block
    index_t n_m_blocks
    bint shared_col                 # im2col once per tile, shared by the channel blocks
    bint split                      # each GEMM issued as blocks for a small-matrix kernel
    bint im2col                     # columns gathered, else (gemm_1x1) the input is the operand

# winograd: tasks are (image, block of tile rows), or (shared) output-channel blocks
cdef struct WinogradPlan:
    index_t tiles_h
    index_t tiles_w
    index_t rows_per_task           # tile rows a task takes, at most
    index_t tasks_per_image
    index_t tiles_per_task
    bint shared                     # few tiles: V for all tiles shared, tasks are channel blocks
    index_t m_block                 # shared: output channels a task takes, at most
    index_t n_m_blocks              # shared: the tasks

# blocked: tasks are (image, group, channel block, lane block) over planes
# padded and split by stride phase, wq lanes per output row
cdef struct BlockedPlan:
    index_t wq
    index_t hq
    index_t channel_stride          # elements per padded channel (all phases, plus slack)
    index_t images_per_chunk        # images padded at a time (bounds the shared scratch)
    index_t lanes                   # lanes holding output, (out_h - 1) * wq + out_w
    index_t col_tile                # lanes per block
    index_t n_col_tiles             # lane blocks
    index_t m_block                 # output channels per block
    index_t n_m_blocks

# blocked_oc (and its unpacked form): tasks are (image, group, channel block,
# block of rows_per_task output rows) over padded planes of hq rows of wq (or
# the input's own planes, where there is no padding)
cdef struct BlockedOcPlan:
    index_t wq
    index_t hq
    index_t channel_stride          # elements per padded channel (plus slack)
    index_t images_per_chunk        # images padded at a time (bounds the shared scratch)
    index_t n_col_tiles             # kernel calls per row (up to the tile's pixels each)
    index_t m_block                 # output channels per block
    index_t n_m_blocks
    index_t chunk_channels          # input channels per pass (their weights stay in L1)
    index_t rows_per_task
    index_t row_blocks
    index_t pack_offset             # unpacked: where a thread's packed channel block starts
                                    # in its scratch (> 0); 0: the weights come packed
    bint tall                       # the kernel shape with more channels, fewer pixels
    bint block_major                # tasks taken channel block by block, not image by image
    bint flat                       # a 1x1 layer's planes run as one row of out_h * out_w
    bint unpadded                   # no padding: the kernels read the input as it lies
    # with a max pool fused (blocked_oc_pool_plan): tasks are runs of pooled rows
    index_t pool_rows_per_task
    index_t pool_row_blocks
    index_t pool_tile_offset        # where a thread's pooled tile starts in its scratch

# A max pool over a convolution's output (no dilation, padding at most half
# the window, rounding down): the window, and the pooled size.
cdef struct MaxPoolWindow:
    index_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w
    index_t out_h, out_w

# pointwise: tasks are (image, group, col_tile positions, run of rows_per_task
# channel blocks of m_block); chunk_channels input channels per pass (their
# columns of the input stay in L1 for the whole run)
cdef struct PointwisePlan:
    index_t col_tile
    index_t n_col_tiles
    index_t m_block
    index_t n_m_blocks
    index_t chunk_channels
    index_t rows_per_task           # channel blocks per run
    index_t row_blocks              # runs

# depthwise over channels: tasks are (image, block of m_block channels, block
# of rows_per_task output rows)
cdef struct DepthwisePlan:
    index_t m_block
    index_t n_m_blocks
    index_t wq                      # the padded input row length
    index_t rows_per_task
    index_t row_blocks

# A convolution's plan: the algorithm, its tasks and scratch, and the plan of
# that algorithm (only its member is set; the direct algorithm needs none).
cdef struct ConvPlan:
    int algorithm
    index_t n_tasks
    index_t workspace_per_thread    # elements of scratch per thread
    index_t workspace_shared        # elements of scratch shared by all threads (first)
    GemmPlan gemm
    WinogradPlan winograd
    BlockedPlan blocked
    BlockedOcPlan blocked_oc
    PointwisePlan pointwise
    DepthwisePlan depthwise

# Working-set sizes and BLAS facts the plans are made with (the dispatcher's
# one copy, set by _conv.set_cache_sizes and the loader; see _conv.pyx).
cdef struct ConvTuning:
    index_t oc_weight_bytes         # blocked_oc: one chunk of weights, in L1
    index_t oc_partial_bytes        # blocked_oc: a task's partial sums
    index_t dw_task_bytes           # depthwise: a task's padded rows and outputs
    index_t l2_bytes                # one core's L2
    index_t wino_budget_bytes       # Winograd: a task's transformed tiles
    bint small_gemm                 # the BLAS multiplies small matrices without packing
