"""Device helpers shared by the kernels: tile order, index ranges, pixel coordinates and bounds,
reduction slices, the multiply-accumulate step.

Every kernel addresses (N, D, H, W, C) volumes. ``DEPTH`` (a constexpr) says whether the depth
axis is walked at all: it is False for ranks 1 and 2 (and a rank-3 call of depth 1 everywhere),
and then the depth coordinate is the constant 0 and no depth arithmetic is emitted, so the 2-D
specialisation compiles to the 2-D kernel."""

import triton
import triton.language as tl


@triton.jit
def grouped_tile(pid, GEMM_M, GEMM_N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 GROUP_M: tl.constexpr):
    """(tile row, tile column) of program ``pid``, GROUP_M tile rows at a time so that programs
    running together share their operand tiles in L2 (the Triton matmul tutorial's ordering)."""
    tiles_m = tl.cdiv(GEMM_M, BLOCK_M)
    tiles_n = tl.cdiv(GEMM_N, BLOCK_N)
    tiles_per_group = GROUP_M * tiles_n
    first_m = (pid // tiles_per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    tile_m = first_m + ((pid % tiles_per_group) % group_rows)
    tile_n = (pid % tiles_per_group) // group_rows
    return tile_m, tile_n


@triton.jit
def block_range(first, BLOCK: tl.constexpr, INDEX_64: tl.constexpr):
    """``first + arange(BLOCK)``, in int64 when offsets may pass 2**31 (``INDEX_64``), so that
    every offset computed from it is 64-bit too."""
    offsets = first + tl.arange(0, BLOCK)
    if INDEX_64:
        offsets = offsets.to(tl.int64)
    return offsets


@triton.jit
def split_pixel(pixel, depth, height, width, DEPTH: tl.constexpr):
    """(image, depth, row, column) of flat pixel indices over (batch, depth, height, width),
    row-major like the tensors; the depth is 0 when not ``DEPTH`` (a depth of 1)."""
    if DEPTH:
        image = pixel // (depth * height * width)
        z = (pixel // (height * width)) % depth
    else:
        image = pixel // (height * width)
        z = 0
    return image, z, (pixel // width) % height, pixel % width


@triton.jit
def inside(y, x, height, width):
    """Whether pixel (y, x) lies in a height x width image (taps off its edge read zeros)."""
    return (y >= 0) & (y < height) & (x >= 0) & (x < width)


@triton.jit
def inside_depth(z, depth):
    """Whether depth ``z`` lies in ``[0, depth)`` (taps off the volume's ends read zeros)."""
    return (z >= 0) & (z < depth)


@triton.jit
def load_pixels(image, y, x, channel, stride_h, stride_w, stride_c, pixel_ok, channel_ok):
    """The (pixels x channels) tile ``image[y, x, channel]``, zeros where masked off; ``image``
    holds each pixel's image base pointer."""
    return tl.load(image[:, None] + y[:, None] * stride_h + x[:, None] * stride_w
                   + channel[None, :] * stride_c,
                   mask=pixel_ok[:, None] & channel_ok[None, :], other=0.0)


@triton.jit
def split_slice(split, per_split, length):
    """[start, end) of slice ``split`` of a reduction of ``length`` cut ``per_split`` a slice."""
    start = split * per_split
    return start, min(start + per_split, length)


@triton.jit
def multiply_accumulate(acc, a, b, ACC: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b: tensor cores through ``tl.dot``, or for float64 a broadcast FMA (no fp64
    ``tl.dot`` is relied on)."""
    tl.static_assert(a.shape[1] == b.shape[0], "a @ b needs a's columns to be b's rows")
    if ACC == tl.float64:
        acc += tl.sum(a.to(tl.float64)[:, :, None] * b.to(tl.float64)[None, :, :], axis=1)
    else:
        # tl.dot's tensor-core tiles: every side at least 16 (the FMA configs' K of 8 is float64's)
        tl.static_assert(a.shape[0] >= 16, "tl.dot needs BLOCK_M >= 16")
        tl.static_assert(a.shape[1] >= 16, "tl.dot needs BLOCK_K >= 16")
        tl.static_assert(b.shape[1] >= 16, "tl.dot needs BLOCK_N >= 16")
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    return acc
