"""The gradients of the transposed convolution: dgrad (d input), wgrad (d kernel), d bias.

With the forward's placement along each spatial axis ``o = i*s + t*d - pad`` (axes depth,
height, width; ranks 1 and 2 have unit leading axes and ``DEPTH`` False, see ``_common``):

- dgrad: ``dx[n, i, c] = sum over taps t and filters f of dy[n, o(i, t), f] * kernel[t, f, c]``
  (``i``, ``t``, ``o`` triples over depth, height, width), a strided correlation of dy with the
  kernel: implicit GEMM, ``M = N*D*H*W`` input pixels, ``N`` = channels per group, reduction
  over the ``KD*KH*KW`` taps x filters per group. Taps that land outside dy read zeros (masked).
- wgrad: ``dkernel[t, f, c] = sum over n, i of dy[n, o(i, t), f] * x[n, i, c]``, one GEMM per
  tap and group reducing over the N*D*H*W pixels. The reduction is long and the GEMM small, so it is
  split (split-K) into float32 (float64) partials, summed by a second kernel in a fixed order:
  deterministic, no float atomics.
- d bias: dy summed over batch and space, the same two passes.
"""

import math

import torch
import triton
import triton.language as tl

from ._autotune import INTERPRETED, autotune_gemm
from ._common import (block_range, grouped_tile, inside, inside_depth, load_pixels,
                      multiply_accumulate, split_pixel, split_slice)
from ._host import (accumulator, accumulator_dtype, as_volume, axis_strides, ceil_div,
                    empty_image, gemm_geometry, gemm_grid, needs_64bit_index,
                    unit_channel_stride, volume)

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
    # depth last, so that a 2-D launch (sizes 1, constants) compiles to the 2-D kernel exactly
    dy_stride_d, dx_stride_d, in_d, out_d, pad_front,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    STRIDE_D: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr, DEPTH: tl.constexpr,
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
    n, i_d, i, j = split_pixel(pixel, in_d, in_h, in_w, DEPTH)
    dy_image = dy_ptr + n * dy_stride_n
    filt_base = group * GEMM_K
    chan_base = group * GEMM_N
    filt_blocks = tl.cdiv(GEMM_K, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    # One flat loop over (tap depth, tap row, tap column, filter block)
    for step in range(0, KD * KH * KW * filt_blocks):
        filt_block = step % filt_blocks
        tap = step // filt_blocks                         # flat (td, th, tw) of the kernel
        plane_tap = tap
        image = dy_image
        row_ok = pixel_ok
        if DEPTH:
            plane_tap = tap % (KH * KW)
            oz = i_d * STRIDE_D + (tap // (KH * KW)) * DIL_D - pad_front
            image = dy_image + oz * dy_stride_d
            row_ok = pixel_ok & inside_depth(oz, out_d)
        th = plane_tap // KW
        tw = plane_tap % KW
        oy = i * STRIDE_H + th * DIL_H - pad_top
        ox = j * STRIDE_W + tw * DIL_W - pad_left
        f = filt_block * BLOCK_K + filt
        f_ok = f < GEMM_K
        a = load_pixels(image, oy, ox, filt_base + f, dy_stride_h, dy_stride_w, dy_stride_c,
                        row_ok & inside(oy, ox, out_h, out_w), f_ok)
        # kernel (KD, KH, KW, filters per group, in_channels), contiguous
        b = tl.load(w_ptr + (tap * GEMM_K + f)[:, None] * in_channels + (chan_base + chan)[None, :],
                    mask=f_ok[:, None] & chan_ok[None, :], other=0.0)
        acc = multiply_accumulate(acc, a, b, ACC, INPUT_PRECISION)

    dx_ptrs = (dx_ptr + n[:, None] * dx_stride_n + i[:, None] * dx_stride_h
               + j[:, None] * dx_stride_w + (chan_base + chan)[None, :] * dx_stride_c)
    if DEPTH:
        dx_ptrs += i_d[:, None] * dx_stride_d
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=pixel_ok[:, None] & chan_ok[None, :])


@autotune_gemm("wgrad", "SPLIT_K")
@triton.jit
def _wgrad_kernel(
    dy_ptr, x_ptr, partial_ptr,
    dy_stride_n, dy_stride_h, dy_stride_w, dy_stride_c,
    x_stride_n, x_stride_h, x_stride_w, x_stride_c,
    in_h, in_w, out_h, out_w, pad_top, pad_left, in_channels, SPLIT_K,
    GEMM_M, GEMM_N, GEMM_K,  # filters per group, channels per group, batch * input pixels
    # depth last, so that a 2-D launch (sizes 1, constants) compiles to the 2-D kernel exactly
    dy_stride_d, x_stride_d, in_d, out_d, pad_front,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    STRIDE_D: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr, DEPTH: tl.constexpr,
    GROUPS: tl.constexpr,
    ACC: tl.constexpr, INPUT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    tile_m, tile_n = grouped_tile(tl.program_id(0), GEMM_M, GEMM_N, BLOCK_M, BLOCK_N, GROUP_M)
    tap = tl.program_id(1) // GROUPS                      # flat (td, th, tw) of the kernel
    group = tl.program_id(1) % GROUPS
    split = tl.program_id(2)
    plane_tap = tap
    if DEPTH:
        td = tap // (KH * KW)
        plane_tap = tap % (KH * KW)
    th = plane_tap // KW
    tw = plane_tap % KW
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
        n, i_d, i, j = split_pixel(pixel, in_d, in_h, in_w, DEPTH)
        oy = i * STRIDE_H + th * DIL_H - pad_top
        ox = j * STRIDE_W + tw * DIL_W - pad_left
        pixel_ok = pixel < end
        dy_ok = pixel_ok & inside(oy, ox, out_h, out_w)
        dy_offset = n * dy_stride_n + oy * dy_stride_h + ox * dy_stride_w
        if DEPTH:
            oz = i_d * STRIDE_D + td * DIL_D - pad_front
            dy_ok = dy_ok & inside_depth(oz, out_d)
            dy_offset += oz * dy_stride_d
        dy_t = tl.load(dy_ptr + dy_offset[:, None] + dy_chan[None, :],
                       mask=dy_ok[:, None] & filt_ok[None, :], other=0.0)
        x_offset = n * x_stride_n + i * x_stride_h + j * x_stride_w
        if DEPTH:
            x_offset += i_d * x_stride_d
        b = tl.load(x_ptr + x_offset[:, None] + x_chan[None, :],
                    mask=pixel_ok[:, None] & chan_ok[None, :], other=0.0)
        acc = multiply_accumulate(acc, tl.trans(dy_t), b, ACC, INPUT_PRECISION)

    # partials (SPLIT_K, KD, KH, KW, filters per group, in_channels), contiguous
    rows = (split * KD * KH * KW + tap) * GEMM_M + filt
    tl.store(partial_ptr + rows[:, None] * in_channels + (group * GEMM_N + chan)[None, :], acc,
             mask=filt_ok[:, None] & chan_ok[None, :])


@triton.jit
def _bias_partial_kernel(
    dy_ptr, partial_ptr,
    dy_stride_n, dy_stride_h, dy_stride_w, dy_stride_c,
    out_h, out_w, filters, rows, rows_per_split,
    dy_stride_d, out_d,  # depth last: a 2-D launch compiles to the 2-D kernel exactly
    DEPTH: tl.constexpr, ACC: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_ROWS: tl.constexpr,
    BLOCK_F: tl.constexpr,
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
        n, oz, oy, ox = split_pixel(row, out_d, out_h, out_w, DEPTH)
        offset = n * dy_stride_n + oy * dy_stride_h + ox * dy_stride_w
        if DEPTH:
            offset += oz * dy_stride_d
        acc += tl.load(dy_ptr + offset[:, None] + filt[None, :] * dy_stride_c,
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
    wanted = ceil_div(_PROGRAMS_PER_SM * processors, programs)
    return max(1, min(wanted, length // min_per_split))


def _sum_partials(partials: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    length = out.numel()
    _sum_partials_kernel[(ceil_div(length, _SUM_BLOCK),)](
        partials, out, partials.shape[0], length, ACC=accumulator(out.dtype), BLOCK=_SUM_BLOCK)
    return out


def dgrad(dy, kernel, spec):
    """dx for torch tensors ``dy`` (forward output layout, any rank) and ``kernel`` (Keras
    layout)."""
    dx = empty_image(dy, spec.input_shape, spec.data_format)
    if dx.numel() == 0:
        return dx
    geometry = volume(spec)
    dy = unit_channel_stride(dy, spec.data_format)
    kernel = kernel.contiguous()
    gemm_m = spec.batch * math.prod(geometry.in_size)
    dy_volume, dx_volume = as_volume(dy, spec), as_volume(dx, spec)
    dy_strides = axis_strides(dy_volume, spec.data_format)
    dx_strides = axis_strides(dx_volume, spec.data_format)
    (in_d, *in_plane), (out_d, *out_plane) = geometry.in_size, geometry.out_size
    pad_front, *pad_plane = geometry.pad_before
    _dgrad_kernel[gemm_grid(gemm_m, spec.channels_per_group, spec.groups)](
        dy_volume, kernel, dx_volume,
        *(dy_strides[axis] for axis in "NHWC"), *(dx_strides[axis] for axis in "NHWC"),
        *in_plane, *out_plane, *pad_plane, spec.in_channels,
        gemm_m, spec.channels_per_group, spec.filters_per_group,
        dy_strides["D"], dx_strides["D"], in_d, out_d, pad_front,
        **gemm_geometry(geometry, dy.dtype, dy, dx, kernel),
    )
    return dx


def wgrad(dy, x, spec):
    """dkernel (Keras layout, x's dtype) for torch tensors ``dy`` and ``x`` in spec's layout."""
    geometry = volume(spec)
    dy = unit_channel_stride(dy, spec.data_format)
    x = unit_channel_stride(x, spec.data_format)
    gemm_k = spec.batch * math.prod(geometry.in_size)
    tiles = (ceil_div(spec.filters_per_group, _NOMINAL_TILE)
             * ceil_div(spec.channels_per_group, _NOMINAL_TILE) * geometry.taps * spec.groups)
    splits = reduction_splits(tiles, gemm_k, _MIN_PIXELS_PER_SPLIT, _processors(x))
    dkernel = x.new_empty(spec.kernel_shape)
    partials = x.new_empty((splits, *spec.kernel_shape), dtype=accumulator_dtype(x.dtype))
    grid = gemm_grid(spec.filters_per_group, spec.channels_per_group,
                     geometry.taps * spec.groups, splits)
    dy_volume, x_volume = as_volume(dy, spec), as_volume(x, spec)
    dy_strides = axis_strides(dy_volume, spec.data_format)
    x_strides = axis_strides(x_volume, spec.data_format)
    (in_d, *in_plane), (out_d, *out_plane) = geometry.in_size, geometry.out_size
    pad_front, *pad_plane = geometry.pad_before
    # Every program stores its whole tile, zeros for an empty batch: partials need no clearing.
    _wgrad_kernel[grid](
        dy_volume, x_volume, partials,
        *(dy_strides[axis] for axis in "NHWC"), *(x_strides[axis] for axis in "NHWC"),
        *in_plane, *out_plane, *pad_plane, spec.in_channels, splits,
        spec.filters_per_group, spec.channels_per_group, gemm_k,
        dy_strides["D"], x_strides["D"], in_d, out_d, pad_front,
        **gemm_geometry(geometry, x.dtype, dy, x, partials), GROUPS=spec.groups,
    )
    return _sum_partials(partials, dkernel)


def bias_grad(dy, spec):
    """dbias (filters,) in dy's dtype: dy summed over batch and space."""
    geometry = volume(spec)
    rows = spec.batch * math.prod(geometry.out_size)
    block_f = min(128, 1 << (spec.filters - 1).bit_length())   # the next power of 2
    filter_blocks = ceil_div(spec.filters, block_f)
    splits = reduction_splits(filter_blocks, rows, _MIN_ROWS_PER_SPLIT, _processors(dy))
    rows_per_split = ceil_div(rows, splits)
    dbias = dy.new_empty((spec.filters,))
    partials = dy.new_empty((splits, spec.filters), dtype=accumulator_dtype(dy.dtype))
    dy_volume = as_volume(dy, spec)
    dy_strides = axis_strides(dy_volume, spec.data_format)
    out_d, *out_plane = geometry.out_size
    _bias_partial_kernel[(filter_blocks, splits)](
        dy_volume, partials, *(dy_strides[axis] for axis in "NHWC"),
        *out_plane, spec.filters, rows, rows_per_split, dy_strides["D"], out_d,
        DEPTH=geometry.depth_walked, ACC=accumulator(dy.dtype), INDEX_64=needs_64bit_index(dy),
        BLOCK_ROWS=_BIAS_BLOCK_ROWS, BLOCK_F=block_f,
    )
    return _sum_partials(partials, dbias)


def gradients(dy, x, kernel, spec):
    """(dx, dkernel, dbias), with dy and x made channel-contiguous once for all three."""
    dy = unit_channel_stride(dy, spec.data_format)
    x = unit_channel_stride(x, spec.data_format)
    return dgrad(dy, kernel, spec), wgrad(dy, x, spec), bias_grad(dy, spec)
