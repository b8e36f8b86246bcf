"""The forward transposed convolution: implicit GEMM by stride phase (sub-pixel decomposition).

Output row ``oy = qy*s + p`` (phase ``p < s``) receives input row ``i`` through tap ``t`` exactly
when ``i*s + t*d - pad = oy``, i.e. ``i = qy + (p + pad - t*d) / s`` with the division exact. So
the output pixels of one phase form a plain correlation of the input with the taps of that phase,
and each program computes a ``BLOCK_M`` (pixels of one phase) x ``BLOCK_N`` (filters of one group)
tile, reducing over that phase's taps x the group's input channels. No multiply touches the zeros
of the "dilate the input, then convolve" view. The matching taps of a phase are ``t0, t0 + step,
...`` with ``step = s / gcd(s, d)`` (from the host); ``t0`` is found per program by a scalar scan of
the taps.

Tensors are read and written through their strides in (N, H, W, C) order; operands whose channels
are not adjacent in memory (channels_first) are first copied channels-last, and channels_first
results are channels-last in memory (see ``_host.unit_channel_stride``). Bias is added in the
fp32 (fp64) epilogue.
"""

import math

import triton
import triton.language as tl

from ._autotune import autotune_gemm
from ._common import (block_range, grouped_tile, inside, load_pixels, multiply_accumulate,
                      split_pixel)
from ._host import empty_image, gemm_geometry, gemm_grid, nhwc_strides, unit_channel_stride


@triton.jit
def _first_tap(phase, pad, KSIZE: tl.constexpr, STRIDE: tl.constexpr, DIL: tl.constexpr):
    """The lowest tap reaching ``phase``, or KSIZE when none does."""
    first = KSIZE
    for countdown in tl.static_range(KSIZE):
        tap = KSIZE - 1 - countdown
        first = tl.where((phase + pad - tap * DIL) % STRIDE == 0, tap, first)
    return first


@autotune_gemm("forward")
@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    x_stride_n, x_stride_h, x_stride_w, x_stride_c,
    y_stride_n, y_stride_h, y_stride_w, y_stride_c,
    in_h, in_w, out_h, out_w, rows_per_phase, cols_per_phase, pad_top, pad_left, in_channels,
    GEMM_M, GEMM_N, GEMM_K,  # batch * pixels per phase, filters per group, channels per group
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    DIL_H: tl.constexpr, DIL_W: tl.constexpr, TAP_STEP_H: tl.constexpr, TAP_STEP_W: tl.constexpr,
    GROUPS: tl.constexpr, ACC: tl.constexpr, INPUT_PRECISION: tl.constexpr, INDEX_64: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    tile_m, tile_n = grouped_tile(tl.program_id(0), GEMM_M, GEMM_N, BLOCK_M, BLOCK_N, GROUP_M)
    phase = tl.program_id(1) // GROUPS
    group = tl.program_id(1) % GROUPS
    phase_h = phase // STRIDE_W
    phase_w = phase % STRIDE_W

    pixel = block_range(tile_m * BLOCK_M, BLOCK_M, INDEX_64)  # index among the phase's pixels
    filt = block_range(tile_n * BLOCK_N, BLOCK_N, INDEX_64)   # filter within the group
    chan = block_range(0, BLOCK_K, INDEX_64)                  # input channel within the group
    pixel_ok = pixel < GEMM_M
    filt_ok = filt < GEMM_N
    n, qy, qx = split_pixel(pixel, rows_per_phase, cols_per_phase)
    x_image = x_ptr + n * x_stride_n
    chan_base = group * GEMM_K                            # first input channel of the group

    first_h = _first_tap(phase_h, pad_top, KH, STRIDE_H, DIL_H)
    first_w = _first_tap(phase_w, pad_left, KW, STRIDE_W, DIL_W)
    taps_h = tl.where(first_h < KH, (KH - 1 - first_h) // TAP_STEP_H + 1, 0)
    taps_w = tl.where(first_w < KW, (KW - 1 - first_w) // TAP_STEP_W + 1, 0)
    chan_blocks = tl.cdiv(GEMM_K, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    # One flat loop over (tap row, tap column, channel block): see CONTRIBUTING, Tuning notes.
    for step in range(0, taps_h * taps_w * chan_blocks):
        chan_block = step % chan_blocks
        tap = step // chan_blocks
        th = first_h + (tap // taps_w) * TAP_STEP_H
        tw = first_w + (tap % taps_w) * TAP_STEP_W
        # Exact divisions (the tap matches the phase), so truncation and floor agree.
        iy = qy + (phase_h + pad_top - th * DIL_H) // STRIDE_H
        ix = qx + (phase_w + pad_left - tw * DIL_W) // STRIDE_W
        c = chan_block * BLOCK_K + chan
        c_ok = c < GEMM_K
        a = load_pixels(x_image, iy, ix, chan_base + c, x_stride_h, x_stride_w, x_stride_c,
                        pixel_ok & inside(iy, ix, in_h, in_w), c_ok)
        # kernel (KH, KW, filters per group, in_channels), contiguous
        w_row = (th * KW + tw) * GEMM_N
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
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=out_ok[:, None] & filt_ok[None, :])


def forward(x, kernel, bias, spec):
    """y = conv2d_transpose(x, kernel) + bias for torch tensors ``x`` (``spec.data_format``),
    ``kernel`` (Keras layout), ``bias`` (filters,) or None; y in x's data_format and dtype
    (channels adjacent in memory, see ``empty_image``)."""
    y = empty_image(x, spec.output_shape, spec.data_format)
    if y.numel() == 0:
        return y
    stride_h, stride_w = spec.strides
    rows_per_phase = triton.cdiv(spec.out_height, stride_h)
    cols_per_phase = triton.cdiv(spec.out_width, stride_w)
    gemm_m = spec.batch * rows_per_phase * cols_per_phase
    x = unit_channel_stride(x, spec.data_format)
    kernel = kernel.contiguous()
    bias = None if bias is None else bias.contiguous()
    grid = gemm_grid(gemm_m, spec.filters_per_group, stride_h * stride_w * spec.groups)
    _forward_kernel[grid](
        x, kernel, bias, y,
        *nhwc_strides(x, spec.data_format), *nhwc_strides(y, spec.data_format),
        spec.in_height, spec.in_width, spec.out_height, spec.out_width,
        rows_per_phase, cols_per_phase, spec.pad_top, spec.pad_left, spec.in_channels,
        gemm_m, spec.filters_per_group, spec.channels_per_group,
        **gemm_geometry(spec, x.dtype, x, y, kernel), GROUPS=spec.groups,
        **{f"TAP_STEP_{axis}": stride // math.gcd(stride, dilation)
           for axis, stride, dilation in zip("HW", spec.strides, spec.dilation_rate)},
    )
    return y
