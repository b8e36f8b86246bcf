"""The CPU backward, for 1, 2 or 3 spatial axes alike: ``dx`` is the strided correlation of
``dy`` with the kernel and ``dkernel`` the GEMM of the same ``dy`` windows with ``x`` over batch x
space; each piece of the input gathers its windows once (from its own zero-padded slab of ``dy``),
for its rows of ``dx`` and its share of ``dkernel``, while they are in cache."""

from __future__ import annotations

import itertools
import math

import array_api_extra as xpx
from array_api_compat import array_namespace, device

from .._spec import ConvTransposeSpec
from ._arrays import (by_group, compute_dtype, empty, from_channels_last, grouped_matmul,
                      itemsize, kernel_by_group, pixels_by_group, set_into, to_channels_last)
from ._placement import cells_by_stride
from ._tuning import Tuning, backward_budget, pieces


def conv2d_transpose_backward(dy, x, kernel, spec: ConvTransposeSpec, *, tuning=Tuning()):
    """Gradients (dx, dkernel, dbias) of the forward for an upstream gradient ``dy``."""
    xp = array_namespace(x)
    out_dtype = x.dtype
    work = compute_dtype(xp, out_dtype)
    dy = xp.astype(to_channels_last(xp, dy, spec), work, copy=False)
    x = xp.astype(to_channels_last(xp, x, spec), work, copy=False)
    kernel_rows = kernel_by_group(xp, xp.astype(kernel, work, copy=False), spec.groups)
    bytes_per_pixel = math.prod(spec.kernel_size) * spec.filters * itemsize(xp, work)
    chosen = pieces(spec, tuning, bytes_per_pixel,
                    backward_budget(xp, spec, bytes_per_pixel, itemsize(xp, work)))
    whole = len(chosen) == 1 and spec.data_format == "channels_last"
    dx = None if whole else empty(xp, spec.input_shape, out_dtype, device(x))
    dkernel = None                            # (G, taps*Fg, Cg), summed over the pieces
    for n0, n1, r0, r1 in chosen:
        windows = _windows(xp, dy, spec, n0, n1, r0, r1)                  # (G, pixels, taps*Fg)
        dx_piece = xp.permute_dims(grouped_matmul(xp, windows, kernel_rows), (1, 0, 2))
        dx_piece = xp.reshape(dx_piece, (n1 - n0, r1 - r0, *spec.in_spatial[1:], -1))
        dx_piece = xp.astype(from_channels_last(xp, dx_piece, spec), out_dtype, copy=False)
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
    dkernel = xp.reshape(dkernel, (spec.groups, *spec.kernel_size, spec.filters_per_group, -1))
    dkernel = xp.permute_dims(dkernel, (*range(1, spec.rank + 2), 0, spec.rank + 2))
    dkernel = xp.reshape(dkernel, spec.kernel_shape)
    dbias = xp.sum(dy, axis=tuple(range(spec.rank + 1)))
    return dx, xp.astype(dkernel, out_dtype, copy=False), xp.astype(dbias, out_dtype, copy=False)


def _windows(xp, dy, spec: ConvTransposeSpec, n0, n1, r0, r1):
    """The ``dy`` values each input pixel of the piece meets, (G, pixels, taps*Fg).

    Along each axis, input index ``i`` meets full-output index ``i*s + t*d``, index ``i*s + t*d
    - pad_before`` of ``dy``: the piece's slab of ``dy`` (the indices its pixels meet) is
    zero-padded where those fall outside ``dy``, the slab alone, so the copy is a piece's worth
    (a padded copy of the whole ``dy`` doubled a 3-D layer's memory); with nothing outside, the
    slab is a view."""
    starts, lengths = (r0,) + (0,) * (spec.rank - 1), (r1 - r0, *spec.in_spatial[1:])
    index, widths = [slice(n0, n1)], [(0, 0)]
    for start, length, k, s, d, pad, out in zip(starts, lengths, spec.kernel_size, spec.strides,
                                                spec.dilation_rate, spec.pad_before,
                                                spec.out_spatial):
        first, stop = start * s - pad, (start + length - 1) * s + (k - 1) * d - pad + 1
        lo = min(max(first, 0), out)
        hi = min(max(stop, lo), out)
        before = min(max(lo - first, 0), stop - first)
        index.append(slice(lo, hi))
        widths.append((before, stop - first - before - (hi - lo)))
    slab = dy[(*index, slice(None))]
    if any(before or after for before, after in widths):
        slab = xpx.pad(slab, widths + [(0, 0)], xp=xp)
    pixels, taps = (n1 - n0) * math.prod(lengths), math.prod(spec.kernel_size)
    if spec.kernel_size == spec.strides and spec.dilation_rate == (1,) * spec.rank:
        # Kernel == stride: each pixel's window is its own cell of s values per axis, so the
        # windows are the slab's cells reordered by one copy (unet3d_k2's backward: 550 -> 450
        # ms on NumPy, 455 -> 418 on torch against stacking its 8 tap slices; the same bits).
        cells = xp.reshape(slab, (n1 - n0, *cells_by_stride(lengths, spec.strides), -1))
        rank = spec.rank
        order = (0, *range(1, 2 * rank, 2), *range(2, 2 * rank + 1, 2), 2 * rank + 1)
        stacked = xp.reshape(xp.permute_dims(cells, order), (pixels, taps, -1))
    else:
        windows = [slab[(slice(None), *(
            slice(t * d, t * d + (length - 1) * s + 1, s)
            for t, d, s, length in zip(tap, spec.dilation_rate, spec.strides, lengths)),
            slice(None))]
                   for tap in itertools.product(*(range(k) for k in spec.kernel_size))]
        stacked = xp.reshape(xp.stack(windows, axis=spec.rank + 1), (pixels, taps, -1))
    grouped = by_group(xp, stacked, spec.groups, 2)                        # (G, pixels, taps, Fg)
    return xp.reshape(grouped, (spec.groups, grouped.shape[1], -1))
