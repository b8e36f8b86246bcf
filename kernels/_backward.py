"""The gradients of the transposed convolution: dgrad (d input), wgrad (d kernel), d bias.

With the forward's placement ``oy = i*s + t*d - pad``:

- dgrad: ``dx[n, i, j, c] = sum over taps and filters of dy[n, oy, ox, f] * kernel[t, f, c]``, a
  strided correlation of dy with the kernel: implicit GEMM, ``M = N*H*W`` input pixels,
  ``N`` = channels per group, reduction over taps x filters per group. Taps that land outside dy
  read zeros (masked).
- wgrad: ``dkernel[t, f, c] = sum over n, i, j of dy[n, oy, ox, f] * x[n, i, j, c]``, one GEMM per
  tap and group reducing over the N*H*W pixels. The reduction is long and the GEMM small, so it is
  split (split-K) into float32 (float64) partials, summed by a second kernel in a fixed order:
  deterministic, no float atomics.
- d bias: dy summed over batch and space, the same two passes.
"""

import torch
import triton
import triton.language as tl

from ._autotune import INTERPRETED, autotune_gemm
from ._common import (block_range, grouped_tile, inside, load_pixels, multiply_accumulate,
                      split_pixel, split_slice)
from ._host import (accumulator, accumulator_dtype, empty_image, gemm_geometry, gemm_grid,
                    needs_64bit_index, nhwc_strides, unit_channel_stride)

# Programs per SM a split reduction aims for, and the least work one split is worth (CONTRIBUTING,
# Tuning notes).
_PROGRAMS_PER_SM = 2
_MIN_PIXELS_PER_SPLIT = 2048
_MIN_ROWS_PER_SPLIT = 4096
_NOMINAL_TILE = 64
_BIAS_BLOCK_ROWS = 32
_SUM_BLOCK = 1024


@autotune_gemm("dgrad")
@triton.jit
def _dgrad_kernel(
    dy_ptr, w_ptr, dx_ptr,
    dy_stride_n, dy_stride_h, dy_stride_w, dy_stride_c,
    dx_stride_n, dx_stride_h, dx_stride_w, dx_stride_c,
    in_h, in_w, out_h, out_w, pad_top, pad_left, in_channels,
    GEMM_M, GEMM_N, GEMM_K,  # batch * input pixels, channels per group, filters per group
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    DIL_H: tl.constexpr, DIL_W: tl.constexpr,
    ACC: tl.constexpr, INPUT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    tile_m, tile_n = grouped_tile(tl.program_id(0), GEMM_M, GEMM_N, BLOCK_M, BLOCK_N, GROUP_M)
    group = tl.program_id(1)
    pixel = block_range(tile_m * BLOCK_M, BLOCK_M, INDEX_64)
    chan = block_range(tile_n * BLOCK_N, BLOCK_N, INDEX_64)
    filt = block_range(0, BLOCK_K, INDEX_64)
    pixel_ok = pixel < GEMM_M
    chan_ok = chan < GEMM_N
    n, i, j = split_pixel(pixel, in_h, in_w)
    dy_image = dy_ptr + n * dy_stride_n
    filt_base = group * GEMM_K
    chan_base = group * GEMM_N
    filt_blocks = tl.cdiv(GEMM_K, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for step in range(0, KH * KW * filt_blocks):
        filt_block = step % filt_blocks
        tap = step // filt_blocks
        th = tap // KW
        tw = tap % KW
        oy = i * STRIDE_H + th * DIL_H - pad_top
        ox = j * STRIDE_W + tw * DIL_W - pad_left
        f = filt_block * BLOCK_K + filt
        f_ok = f < GEMM_K
        a = load_pixels(dy_image, oy, ox, filt_base + f, dy_stride_h, dy_stride_w, dy_stride_c,
                        pixel_ok & inside(oy, ox, out_h, out_w), f_ok)
        # kernel (KH, KW, filters per group, in_channels), contiguous
        b = tl.load(w_ptr + (tap * GEMM_K + f)[:, None] * in_channels + (chan_base + chan)[None, :],
                    mask=f_ok[:, None] & chan_ok[None, :], other=0.0)
        acc = multiply_accumulate(acc, a, b, ACC, INPUT_PRECISION)

    dx_ptrs = (dx_ptr + n[:, None] * dx_stride_n + i[:, None] * dx_stride_h
               + j[:, None] * dx_stride_w + (chan_base + chan)[None, :] * dx_stride_c)
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=pixel_ok[:, None] & chan_ok[None, :])


@autotune_gemm("wgrad", "SPLIT_K")
@triton.jit
def _wgrad_kernel(
    dy_ptr, x_ptr, partial_ptr,
    dy_stride_n, dy_stride_h, dy_stride_w, dy_stride_c,
    x_stride_n, x_stride_h, x_stride_w, x_stride_c,
    in_h, in_w, out_h, out_w, pad_top, pad_left, in_channels, SPLIT_K,
    GEMM_M, GEMM_N, GEMM_K,  # filters per group, channels per group, batch * input pixels
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    DIL_H: tl.constexpr, DIL_W: tl.constexpr, GROUPS: tl.constexpr,
    ACC: tl.constexpr, INPUT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    tile_m, tile_n = grouped_tile(tl.program_id(0), GEMM_M, GEMM_N, BLOCK_M, BLOCK_N, GROUP_M)
    tap = tl.program_id(1) // GROUPS
    group = tl.program_id(1) % GROUPS
    split = tl.program_id(2)
    th = tap // KW
    tw = tap % KW
    filt = block_range(tile_m * BLOCK_M, BLOCK_M, INDEX_64)
    chan = block_range(tile_n * BLOCK_N, BLOCK_N, INDEX_64)
    pixel_offsets = block_range(0, BLOCK_K, INDEX_64)
    filt_ok = filt < GEMM_M
    chan_ok = chan < GEMM_N
    dy_chan = (group * GEMM_M + filt) * dy_stride_c
    x_chan = (group * GEMM_N + chan) * x_stride_c
    start, end = split_slice(split, tl.cdiv(GEMM_K, SPLIT_K), GEMM_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for first in range(start, end, BLOCK_K):
        pixel = first + pixel_offsets
        n, i, j = split_pixel(pixel, in_h, in_w)
        oy = i * STRIDE_H + th * DIL_H - pad_top
        ox = j * STRIDE_W + tw * DIL_W - pad_left
        pixel_ok = pixel < end
        dy_ok = pixel_ok & inside(oy, ox, out_h, out_w)
        dy_t = tl.load(dy_ptr + (n * dy_stride_n + oy * dy_stride_h + ox * dy_stride_w)[:, None]
                       + dy_chan[None, :], mask=dy_ok[:, None] & filt_ok[None, :], other=0.0)
        b = tl.load(x_ptr + (n * x_stride_n + i * x_stride_h + j * x_stride_w)[:, None]
                    + x_chan[None, :], mask=pixel_ok[:, None] & chan_ok[None, :], other=0.0)
        acc = multiply_accumulate(acc, tl.trans(dy_t), b, ACC, INPUT_PRECISION)

    # partials (SPLIT_K, KH, KW, filters per group, in_channels), contiguous
    rows = (split * KH * KW + tap) * GEMM_M + filt
    tl.store(partial_ptr + rows[:, None] * in_channels + (group * GEMM_N + chan)[None, :], acc,
             mask=filt_ok[:, None] & chan_ok[None, :])


@triton.jit
def _bias_partial_kernel(
    dy_ptr, partial_ptr,
    dy_stride_n, dy_stride_h, dy_stride_w, dy_stride_c,
    out_h, out_w, filters, rows, rows_per_split,
    ACC: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_F: tl.constexpr,
):
    """partial[split, f] = sum of dy[.., f] over the split's output pixels."""
    filt = block_range(tl.program_id(0) * BLOCK_F, BLOCK_F, INDEX_64)
    split = tl.program_id(1)
    row_offsets = block_range(0, BLOCK_ROWS, INDEX_64)
    filt_ok = filt < filters
    start, end = split_slice(split, rows_per_split, rows)
    acc = tl.zeros((BLOCK_ROWS, BLOCK_F), dtype=ACC)
    for first in range(start, end, BLOCK_ROWS):
        row = first + row_offsets
        n, oy, ox = split_pixel(row, out_h, out_w)
        acc += tl.load(dy_ptr + (n * dy_stride_n + oy * dy_stride_h + ox * dy_stride_w)[:, None]
                       + filt[None, :] * dy_stride_c,
                       mask=(row < end)[:, None] & filt_ok[None, :], other=0.0).to(ACC)
    tl.store(partial_ptr + split * filters + filt, tl.sum(acc, axis=0), mask=filt_ok)


@triton.jit
def _sum_partials_kernel(partial_ptr, out_ptr, splits, length, ACC: tl.constexpr,
                         BLOCK: tl.constexpr):
    """out = partial.sum(axis=0), summed in split order (the same bits every run)."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offsets < length
    total = tl.zeros((BLOCK,), dtype=ACC)
    for split in range(0, splits):
        total += tl.load(partial_ptr + split * length + offsets, mask=ok, other=0.0)
    tl.store(out_ptr + offsets, total.to(out_ptr.dtype.element_ty), mask=ok)


def _processors(tensor: torch.Tensor) -> int:
    """Streaming multiprocessors to fill; the interpreter runs one program at a time."""
    if INTERPRETED or not tensor.is_cuda:
        return 1
    return torch.cuda.get_device_properties(tensor.device).multi_processor_count


def reduction_splits(programs: int, length: int, min_per_split: int, processors: int) -> int:
    """How many slices to cut a reduction of ``length`` into so that ``programs`` tiles fill the
    GPU, keeping at least ``min_per_split`` items per slice."""
    wanted = triton.cdiv(_PROGRAMS_PER_SM * processors, programs)
    return max(1, min(wanted, length // min_per_split))


def _sum_partials(partials: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    length = out.numel()
    _sum_partials_kernel[(triton.cdiv(length, _SUM_BLOCK),)](
        partials, out, partials.shape[0], length, ACC=accumulator(out.dtype), BLOCK=_SUM_BLOCK)
    return out


def dgrad(dy, kernel, spec):
    """dx for torch tensors ``dy`` (forward output layout) and ``kernel`` (Keras layout)."""
    dx = empty_image(dy, spec.input_shape, spec.data_format)
    if dx.numel() == 0:
        return dx
    dy = unit_channel_stride(dy, spec.data_format)
    kernel = kernel.contiguous()
    gemm_m = spec.batch * spec.in_height * spec.in_width
    _dgrad_kernel[gemm_grid(gemm_m, spec.channels_per_group, spec.groups)](
        dy, kernel, dx,
        *nhwc_strides(dy, spec.data_format), *nhwc_strides(dx, spec.data_format),
        spec.in_height, spec.in_width, spec.out_height, spec.out_width,
        spec.pad_top, spec.pad_left, spec.in_channels,
        gemm_m, spec.channels_per_group, spec.filters_per_group,
        **gemm_geometry(spec, dy.dtype, dy, dx, kernel),
    )
    return dx


def wgrad(dy, x, spec):
    """dkernel (Keras layout, x's dtype) for torch tensors ``dy`` and ``x`` in spec's layout."""
    dy = unit_channel_stride(dy, spec.data_format)
    x = unit_channel_stride(x, spec.data_format)
    gemm_k = spec.batch * spec.in_height * spec.in_width
    taps = spec.kernel_height * spec.kernel_width
    tiles = (triton.cdiv(spec.filters_per_group, _NOMINAL_TILE)
             * triton.cdiv(spec.channels_per_group, _NOMINAL_TILE) * taps * spec.groups)
    splits = reduction_splits(tiles, gemm_k, _MIN_PIXELS_PER_SPLIT, _processors(x))
    dkernel = x.new_empty(spec.kernel_shape)
    partials = x.new_empty((splits, *spec.kernel_shape), dtype=accumulator_dtype(x.dtype))
    grid = gemm_grid(spec.filters_per_group, spec.channels_per_group, taps * spec.groups, splits)
    # Every program stores its whole tile, zeros for an empty batch: partials need no clearing.
    _wgrad_kernel[grid](
        dy, x, partials,
        *nhwc_strides(dy, spec.data_format), *nhwc_strides(x, spec.data_format),
        spec.in_height, spec.in_width, spec.out_height, spec.out_width,
        spec.pad_top, spec.pad_left, spec.in_channels, splits,
        spec.filters_per_group, spec.channels_per_group, gemm_k,
        **gemm_geometry(spec, x.dtype, dy, x, partials), GROUPS=spec.groups,
    )
    return _sum_partials(partials, dkernel)


def bias_grad(dy, spec):
    """dbias (filters,) in dy's dtype: dy summed over batch and space."""
    rows = spec.batch * spec.out_height * spec.out_width
    block_f = min(128, triton.next_power_of_2(spec.filters))
    filter_blocks = triton.cdiv(spec.filters, block_f)
    splits = reduction_splits(filter_blocks, rows, _MIN_ROWS_PER_SPLIT, _processors(dy))
    rows_per_split = triton.cdiv(rows, splits)
    dbias = dy.new_empty((spec.filters,))
    partials = dy.new_empty((splits, spec.filters), dtype=accumulator_dtype(dy.dtype))
    _bias_partial_kernel[(filter_blocks, splits)](
        dy, partials, *nhwc_strides(dy, spec.data_format),
        spec.out_height, spec.out_width, spec.filters, rows, rows_per_split,
        ACC=accumulator(dy.dtype), INDEX_64=needs_64bit_index(dy),
        BLOCK_ROWS=_BIAS_BLOCK_ROWS, BLOCK_F=block_f,
    )
    return _sum_partials(partials, dbias)


def gradients(dy, x, kernel, spec):
    """(dx, dkernel, dbias), with dy and x made channel-contiguous once for all three."""
    dy = unit_channel_stride(dy, spec.data_format)
    x = unit_channel_stride(x, spec.data_format)
    return dgrad(dy, kernel, spec), wgrad(dy, x, spec), bias_grad(dy, spec)
