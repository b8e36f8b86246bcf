"""The CPU backward: ``dx`` is the strided correlation of ``dy`` with the kernel and ``dkernel``
the GEMM of the same ``dy`` windows with ``x`` over batch x space; each piece of the input gathers
its windows once, for its rows of ``dx`` and its share of ``dkernel``, while they are in cache."""

from __future__ import annotations

import array_api_extra as xpx
from array_api_compat import array_namespace, device

from .._spec import ConvTransposeSpec
from ._arrays import (by_group, compute_dtype, from_nhwc, grouped_matmul, itemsize,
                      kernel_by_group, pixels_by_group, set_into, to_nhwc)
from ._tuning import Tuning, backward_budget, pieces


def conv2d_transpose_backward(dy, x, kernel, spec: ConvTransposeSpec, *, tuning=Tuning()):
    """Gradients (dx, dkernel, dbias) of the forward for an upstream gradient ``dy``."""
    xp = array_namespace(x)
    out_dtype = x.dtype
    work = compute_dtype(xp, out_dtype)
    dy = _padded_to_every_landing(xp, xp.astype(to_nhwc(xp, dy, spec), work, copy=False), spec)
    x = xp.astype(to_nhwc(xp, x, spec), work, copy=False)
    kernel_rows = kernel_by_group(xp, xp.astype(kernel, work, copy=False), spec.groups)
    bytes_per_pixel = spec.kernel_height * spec.kernel_width * spec.filters * itemsize(xp, work)
    chosen = pieces(spec, tuning, bytes_per_pixel,
                    backward_budget(xp, spec, bytes_per_pixel, itemsize(xp, work)))
    whole = len(chosen) == 1 and spec.data_format == "channels_last"
    dx = None if whole else xp.empty(spec.input_shape, dtype=out_dtype, device=device(x))
    dkernel = None                            # (G, taps*Fg, Cg), summed over the pieces
    for n0, n1, r0, r1 in chosen:
        windows = _windows(xp, dy, spec, n0, n1, r0, r1)                  # (G, pixels, taps*Fg)
        dx_piece = xp.permute_dims(grouped_matmul(xp, windows, kernel_rows), (1, 0, 2))
        dx_piece = xp.reshape(dx_piece, (n1 - n0, r1 - r0, spec.in_width, -1))
        dx_piece = xp.astype(from_nhwc(xp, dx_piece, spec), out_dtype, copy=False)
        if whole:       # contiguous already
            dx = dx_piece
        elif spec.data_format == "channels_first":
            dx = set_into(xp, dx, (slice(n0, n1), slice(None), slice(r0, r1), ...), dx_piece)
        else:
            dx = set_into(xp, dx, (slice(n0, n1), slice(r0, r1), ...), dx_piece)
        part = grouped_matmul(xp, xp.matrix_transpose(windows),
                              pixels_by_group(xp, x[n0:n1, r0:r1, ...], spec.groups))
        dkernel = part if dkernel is None else dkernel + part
    if dkernel is None:                       # an empty batch
        dkernel = xp.zeros(kernel_rows.shape, dtype=work, device=device(x))
    kh, kw, fg = spec.kernel_height, spec.kernel_width, spec.filters_per_group
    dkernel = xp.permute_dims(xp.reshape(dkernel, (spec.groups, kh, kw, fg, -1)), (1, 2, 3, 0, 4))
    dkernel = xp.reshape(dkernel, spec.kernel_shape)
    dbias = xp.sum(dy, axis=(0, 1, 2))
    return dx, xp.astype(dkernel, out_dtype, copy=False), xp.astype(dbias, out_dtype, copy=False)


def _padded_to_every_landing(xp, dy, spec: ConvTransposeSpec):
    """``dy`` (NHWC) zero-padded so that every row an input pixel meets exists: pixel ``i`` meets
    full-output row ``i*s + t*d``, row ``i*s + t*d - pad_top`` of ``dy``."""
    (sh, sw), (dh, dw) = spec.strides, spec.dilation_rate
    reach_h = (spec.in_height - 1) * sh + (spec.kernel_height - 1) * dh - spec.pad_top
    reach_w = (spec.in_width - 1) * sw + (spec.kernel_width - 1) * dw - spec.pad_left
    widths = [(0, 0), (spec.pad_top, max(0, reach_h - (spec.out_height - 1))),
              (spec.pad_left, max(0, reach_w - (spec.out_width - 1))), (0, 0)]
    if not any(before or after for before, after in widths):   # 'valid', k <= s: no copy
        return dy
    return xpx.pad(dy, widths, xp=xp)


def _windows(xp, dy_padded, spec: ConvTransposeSpec, n0, n1, r0, r1):
    """The ``dy`` values each input pixel of the piece meets, (G, pixels, taps*Fg)."""
    (sh, sw), (dh, dw) = spec.strides, spec.dilation_rate
    w = spec.in_width
    windows = [dy_padded[n0:n1, th * dh + r0 * sh: th * dh + (r1 - 1) * sh + 1: sh,
                         tw * dw: tw * dw + (w - 1) * sw + 1: sw, :]
               for th in range(spec.kernel_height) for tw in range(spec.kernel_width)]
    stacked = xp.reshape(xp.stack(windows, axis=3), ((n1 - n0) * (r1 - r0) * w, len(windows), -1))
    grouped = by_group(xp, stacked, spec.groups, 2)                        # (G, pixels, taps, Fg)
    return xp.reshape(grouped, (spec.groups, grouped.shape[1], -1))
