"""The forward transposed convolution: implicit GEMM by stride phase (sub-pixel decomposition).

Along each spatial axis (depth, height, width), output index ``o = q*s + p`` (phase ``p < s``)
receives input index ``i`` through tap ``t`` exactly when ``i*s + t*d - pad = o``, i.e.
``i = q + (p + pad - t*d) / s`` with the division exact. So the output pixels of one phase
``(p_d, p_h, p_w)`` form a plain correlation of the input with the taps of that phase, and each
program computes a ``BLOCK_M`` (pixels of one phase) x ``BLOCK_N`` (filters of one group) tile,
reducing over that phase's taps x the group's input channels. No multiply touches the zeros of
the "dilate the input, then convolve" view. Along each axis the matching taps of a phase are
``t0, t0 + step, ...`` with ``step = s / gcd(s, d)`` (from the host); ``t0`` is found per program
by a scalar scan of the taps. The grid's second axis enumerates ``s_d * s_h * s_w`` phases x
groups.

Ranks 1 and 2 run with a depth (and for rank 1 a height) of 1: ``DEPTH`` False compiles no depth
arithmetic at all (``_common``). Tensors are read and written through their strides in
(N, D, H, W, C) order; operands whose channels are not adjacent in memory (channels_first) are
first copied channels-last, and channels_first results are channels-last in memory (see
``_host.unit_channel_stride``). Bias is added in the fp32 (fp64) epilogue.
"""

import math

import triton
import triton.language as tl

from ._autotune import autotune_gemm
from ._common import (block_range, grouped_tile, inside, inside_depth, load_pixels,
                      multiply_accumulate, split_pixel)
from ._host import (as_volume, axis_strides, ceil_div, empty_image, gemm_geometry, gemm_grid,
                    unit_channel_stride, volume)


@triton.jit
def _first_tap(phase, pad, KSIZE: tl.constexpr, STRIDE: tl.constexpr, DIL: tl.constexpr):
    """The lowest tap reaching ``phase``, or KSIZE when none does."""
    first = KSIZE
    for countdown in tl.static_range(KSIZE):
        tap = KSIZE - 1 - countdown
        first = tl.where((phase + pad - tap * DIL) % STRIDE == 0, tap, first)
    return first


@triton.jit
def _phase_taps(first, KSIZE: tl.constexpr, TAP_STEP: tl.constexpr):
    """How many taps, ``first, first + TAP_STEP, ...`` below KSIZE, reach a phase."""
    return tl.where(first < KSIZE, (KSIZE - 1 - first) // TAP_STEP + 1, 0)


@autotune_gemm("forward")
@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    x_stride_n, x_stride_h, x_stride_w, x_stride_c,
    y_stride_n, y_stride_h, y_stride_w, y_stride_c,
    in_h, in_w, out_h, out_w, rows_per_phase, cols_per_phase, pad_top, pad_left, in_channels,
    GEMM_M, GEMM_N, GEMM_K,  # batch * pixels per phase, filters per group, channels per group
    # depth last, so that a 2-D launch (sizes 1, constants) compiles to the 2-D kernel exactly
    x_stride_d, y_stride_d, in_d, out_d, depths_per_phase, pad_front,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    STRIDE_D: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,
    TAP_STEP_D: tl.constexpr, TAP_STEP_H: tl.constexpr, TAP_STEP_W: tl.constexpr,
    DEPTH: tl.constexpr, GROUPS: tl.constexpr,
    ACC: tl.constexpr, INPUT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    tile_m, tile_n = grouped_tile(tl.program_id(0), GEMM_M, GEMM_N, BLOCK_M, BLOCK_N, GROUP_M)
    # grid axis 1: (phase_d, phase_h, phase_w, group), row-major
    phase = tl.program_id(1) // GROUPS
    group = tl.program_id(1) % GROUPS
    phase_h = phase // STRIDE_W
    phase_w = phase % STRIDE_W
    if DEPTH:
        phase_d = phase_h // STRIDE_H
        phase_h = phase_h % STRIDE_H

    pixel = block_range(tile_m * BLOCK_M, BLOCK_M, INDEX_64)  # index among the phase's pixels
    filt = block_range(tile_n * BLOCK_N, BLOCK_N, INDEX_64)   # filter within the group
    chan = block_range(0, BLOCK_K, INDEX_64)                  # input channel within the group
    pixel_ok = pixel < GEMM_M
    filt_ok = filt < GEMM_N
    n, qz, qy, qx = split_pixel(pixel, depths_per_phase, rows_per_phase, cols_per_phase, DEPTH)
    x_image = x_ptr + n * x_stride_n
    chan_base = group * GEMM_K                            # first input channel of the group

    first_h = _first_tap(phase_h, pad_top, KH, STRIDE_H, DIL_H)
    first_w = _first_tap(phase_w, pad_left, KW, STRIDE_W, DIL_W)
    taps_h = _phase_taps(first_h, KH, TAP_STEP_H)
    taps_w = _phase_taps(first_w, KW, TAP_STEP_W)
    plane_taps = taps_h * taps_w
    taps = plane_taps
    if DEPTH:
        first_d = _first_tap(phase_d, pad_front, KD, STRIDE_D, DIL_D)
        taps = _phase_taps(first_d, KD, TAP_STEP_D) * plane_taps
    chan_blocks = tl.cdiv(GEMM_K, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    # One flat loop over (tap depth, tap row, tap column, channel block): see CONTRIBUTING,
    # Tuning notes.
    for step in range(0, taps * chan_blocks):
        chan_block = step % chan_blocks
        tap = step // chan_blocks
        image = x_image
        row_ok = pixel_ok
        kernel_tap = 0                                    # flat (td, th, tw) of the kernel
        if DEPTH:
            td = first_d + (tap // plane_taps) * TAP_STEP_D
            tap = tap % plane_taps
            iz = qz + (phase_d + pad_front - td * DIL_D) // STRIDE_D
            image = x_image + iz * x_stride_d
            row_ok = pixel_ok & inside_depth(iz, in_d)
            kernel_tap = td * KH * KW
        th = first_h + (tap // taps_w) * TAP_STEP_H
        tw = first_w + (tap % taps_w) * TAP_STEP_W
        # Exact divisions (the tap matches the phase), so truncation and floor agree.
        iy = qy + (phase_h + pad_top - th * DIL_H) // STRIDE_H
        ix = qx + (phase_w + pad_left - tw * DIL_W) // STRIDE_W
        c = chan_block * BLOCK_K + chan
        c_ok = c < GEMM_K
        a = load_pixels(image, iy, ix, chan_base + c, x_stride_h, x_stride_w, x_stride_c,
                        row_ok & inside(iy, ix, in_h, in_w), c_ok)
        # kernel (KD, KH, KW, filters per group, in_channels), contiguous
        w_row = (kernel_tap + th * KW + tw) * GEMM_N
        b = tl.load(w_ptr + (w_row + filt)[None, :] * in_channels + (chan_base + c)[:, None],
                    mask=c_ok[:, None] & filt_ok[None, :], other=0.0)
        acc = multiply_accumulate(acc, a, b, ACC, INPUT_PRECISION)

    if bias_ptr is not None:
        acc += tl.load(bias_ptr + group * GEMM_N + filt, mask=filt_ok, other=0.0).to(ACC)[None, :]
    oy = qy * STRIDE_H + phase_h
    ox = qx * STRIDE_W + phase_w
    y_ptrs = (y_ptr + n[:, None] * y_stride_n + oy[:, None] * y_stride_h
              + ox[:, None] * y_stride_w + (group * GEMM_N + filt)[None, :] * y_stride_c)
    out_ok = pixel_ok & (oy < out_h) & (ox < out_w)
    if DEPTH:
        oz = qz * STRIDE_D + phase_d
        y_ptrs += oz[:, None] * y_stride_d
        out_ok = out_ok & (oz < out_d)
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=out_ok[:, None] & filt_ok[None, :])


def forward(x, kernel, bias, spec):
    """y = conv_transpose(x, kernel) + bias for torch tensors ``x`` (``spec.data_format``, rank
    1, 2 or 3), ``kernel`` (Keras layout), ``bias`` (filters,) or None; y in x's data_format and
    dtype (channels adjacent in memory, see ``empty_image``)."""
    y = empty_image(x, spec.output_shape, spec.data_format)
    if y.numel() == 0:
        return y
    geometry = volume(spec)
    per_phase = [ceil_div(size, stride)
                 for size, stride in zip(geometry.out_size, geometry.strides)]
    gemm_m = spec.batch * math.prod(per_phase)
    x = unit_channel_stride(x, spec.data_format)
    kernel = kernel.contiguous()
    bias = None if bias is None else bias.contiguous()
    grid = gemm_grid(gemm_m, spec.filters_per_group, math.prod(geometry.strides) * spec.groups)
    x_volume, y_volume = as_volume(x, spec), as_volume(y, spec)
    x_strides = axis_strides(x_volume, spec.data_format)
    y_strides = axis_strides(y_volume, spec.data_format)
    (in_d, *in_plane), (out_d, *out_plane) = geometry.in_size, geometry.out_size
    (pad_front, *pad_plane), (depths_per_phase, *plane_per_phase) = geometry.pad_before, per_phase
    _forward_kernel[grid](
        x_volume, kernel, bias, y_volume,
        *(x_strides[axis] for axis in "NHWC"), *(y_strides[axis] for axis in "NHWC"),
        *in_plane, *out_plane, *plane_per_phase, *pad_plane, spec.in_channels,
        gemm_m, spec.filters_per_group, spec.channels_per_group,
        x_strides["D"], y_strides["D"], in_d, out_d, depths_per_phase, pad_front,
        **gemm_geometry(geometry, x.dtype, x, y, kernel), GROUPS=spec.groups,
        **{f"TAP_STEP_{axis}": stride // math.gcd(stride, dilation)
           for axis, stride, dilation in zip("DHW", geometry.strides, geometry.dilation)},
    )
    return y
