"""The vectorized CPU path, written once against the Python array API standard.

It serves every namespace ``array_api_compat`` knows (NumPy, torch, array-api-strict, JAX, ...):
no framework is named here. The only writes go through ``array_api_extra.at`` into buffers made
here (in place where the namespace allows, functional ``.at[]`` on JAX), so ``jax.jit`` and
``jax.grad`` trace straight through and nothing the caller passed is written to.

Forward: multiply first, then place. One GEMM ``x (N*H*W, Cin) @ (Cin, kh*kw*F)`` gives every
input pixel's contribution through every tap; tap ``t`` sends input row ``i`` to full-output row
``i*s + t*d``. Undilated taps come in blocks of ``s`` consecutive taps that share the shift
``t // s`` and take residues ``0..s-1``, so each block is one strided add into the full output
viewed as (rows of s, s): ``ceil(kh/s) * ceil(kw/s)`` adds in all, then a crop by Keras' padding.
No FLOP is spent on the zeros of the "dilate the input, then convolve" view, no input is copied
per tap (the im2col alternative copies ``kh*kw*Cin`` values per pixel, this writes ``kh*kw*F``, and
measured faster on every benchmark layer, most of all for image outputs with 1-3 channels), and a
padding zero never multiplies a kernel tap, so a non-finite tap reaches only what it reaches
from a real pixel. The products buffer is bounded: above ``WORKSPACE_BYTES`` the batch runs in
chunks.

Backward: ``dx`` is the strided correlation of ``dy`` with the kernel and ``dkernel`` the GEMM of
the same ``dy`` windows with ``x`` over batch x space; the windows are gathered once for both.
"""

from __future__ import annotations

import dataclasses

import array_api_extra as xpx
from array_api_compat import device

from ._spec import ConvTransposeSpec


def _to_nhwc(xp, a, spec: ConvTransposeSpec):
    return xp.permute_dims(a, (0, 2, 3, 1)) if spec.data_format == "channels_first" else a


def _from_nhwc(xp, a, spec: ConvTransposeSpec):
    return xp.permute_dims(a, (0, 3, 1, 2)) if spec.data_format == "channels_first" else a


def compute_dtype(xp, dtype):
    """Half precision types accumulate in float32; float32 and float64 compute as they are."""
    if dtype == xp.float32 or dtype == xp.float64:
        return dtype
    return xp.float32


def _grouped_matmul(xp, cols, weights, groups: int):
    """``cols`` (M, T, G, Kg) times ``weights`` (T, G, Kg, Fg) summed over T and Kg -> (M, G*Fg).

    One GEMM per group (a batched one when groups > 1) over the gathered taps.
    """
    m, taps, _, k_per_group = cols.shape
    f_per_group = weights.shape[-1]
    if groups == 1:
        out = xp.reshape(cols, (m, taps * k_per_group)) @ xp.reshape(
            weights, (taps * k_per_group, f_per_group))
        return out
    cols = xp.permute_dims(cols, (2, 0, 1, 3))                    # (G, M, T, Kg)
    cols = xp.reshape(cols, (groups, m, taps * k_per_group))
    weights = xp.permute_dims(weights, (1, 0, 2, 3))              # (G, T, Kg, Fg)
    weights = xp.reshape(weights, (groups, taps * k_per_group, f_per_group))
    out = xp.matmul(cols, weights)                                # (G, M, Fg)
    return xp.reshape(xp.permute_dims(out, (1, 0, 2)), (m, groups * f_per_group))


# Bound on the forward's products buffer; a larger batch runs in chunks of whole images.
WORKSPACE_BYTES = 256 * 2**20


def _itemsize(xp, dtype) -> int:
    return 8 if dtype == xp.float64 else 4


def _batch_chunks(spec: ConvTransposeSpec, bytes_per_image: int):
    """``[start, stop)`` batch ranges whose workspace stays within ``WORKSPACE_BYTES``."""
    per_chunk = max(1, WORKSPACE_BYTES // max(1, bytes_per_image))
    if spec.batch <= per_chunk:
        return [(0, spec.batch)]
    return [(start, min(spec.batch, start + per_chunk))
            for start in range(0, spec.batch, per_chunk)]


def _tap_products(xp, x, kernel, spec: ConvTransposeSpec):
    """Every input pixel times every tap: (N, H, W, kh*kw, filters), one GEMM (batched by group)."""
    n, h, w, g = spec.batch, spec.in_height, spec.in_width, spec.groups
    taps = spec.kernel_height * spec.kernel_width
    fg, cg = spec.filters_per_group, spec.channels_per_group
    m = n * h * w
    # kernel (kh, kw, Fg, Cin) -> (T*Fg, G, Cg): rows of the right operand, by group.
    k_rows = xp.reshape(kernel, (taps * fg, g, cg))
    if g == 1:
        products = xp.reshape(x, (m, cg)) @ xp.matrix_transpose(k_rows[:, 0, :])
        return xp.reshape(products, (n, h, w, taps, fg))
    x_groups = xp.permute_dims(xp.reshape(x, (m, g, cg)), (1, 0, 2))         # (G, M, Cg)
    products = xp.matmul(x_groups, xp.permute_dims(k_rows, (1, 2, 0)))       # (G, M, T*Fg)
    products = xp.permute_dims(xp.reshape(products, (g, m, taps, fg)), (1, 2, 0, 3))
    return xp.reshape(products, (n, h, w, taps, g * fg))


def _tap_blocks(kernel_size: int, stride: int, dilation: int):
    """Taps grouped into blocks ``(first, stop, shift, residue)`` that land together.

    Tap ``t`` moves input row ``i`` to full-output row ``i*s + t*d = (i + shift)*s + residue``.
    Undilated, the taps ``[shift*s, shift*s + s)`` share one shift and take consecutive residues
    from 0, so one strided add places the whole block; dilated taps go one by one.
    """
    if dilation == 1:
        return [(first, min(kernel_size, first + stride), first // stride, 0)
                for first in range(0, kernel_size, stride)]
    return [(tap, tap + 1, tap * dilation // stride, tap * dilation % stride)
            for tap in range(kernel_size)]


def _forward_by_scatter(xp, x, kernel, spec: ConvTransposeSpec):
    """Multiply first, then add each tap block's products into place: (N, out_h, out_w, F)."""
    n, h, w, f = spec.batch, spec.in_height, spec.in_width, spec.filters
    (sh, sw), (dh, dw) = spec.strides, spec.dilation_rate
    blocks_h = _tap_blocks(spec.kernel_height, sh, dh)
    blocks_w = _tap_blocks(spec.kernel_width, sw, dw)
    products = xp.reshape(_tap_products(xp, x, kernel, spec),
                          (n, h, w, spec.kernel_height, spec.kernel_width, f))
    # The full (uncropped) output as (N, rows of s, s, cols of s, s, F), long enough for the
    # last landing row and for the crop's end when output_padding reaches past it (zeros).
    rows = max(h + blocks_h[-1][2], -(-(spec.pad_top + spec.out_height) // sh))
    cols = max(w + blocks_w[-1][2], -(-(spec.pad_left + spec.out_width) // sw))
    full = xp.zeros((n, rows, sh, cols, sw, f), dtype=products.dtype, device=device(x))
    for first_h, stop_h, shift_h, residue_h in blocks_h:
        for first_w, stop_w, shift_w, residue_w in blocks_w:
            block = products[:, :, :, first_h:stop_h, first_w:stop_w, :]   # (N, H, W, bh, bw, F)
            full = xpx.at(full)[:, shift_h:shift_h + h, residue_h:residue_h + stop_h - first_h,
                                shift_w:shift_w + w, residue_w:residue_w + stop_w - first_w,
                                :].add(xp.permute_dims(block, (0, 1, 3, 2, 4, 5)))
    full = xp.reshape(full, (n, rows * sh, cols * sw, f))
    return full[:, spec.pad_top:spec.pad_top + spec.out_height,
                spec.pad_left:spec.pad_left + spec.out_width, :]


def conv2d_transpose(xp, x, kernel, bias, spec: ConvTransposeSpec):
    """Forward pass; ``x`` in ``spec.data_format``, result in the same layout and dtype."""
    out_dtype = x.dtype
    work = compute_dtype(xp, out_dtype)
    x = xp.astype(_to_nhwc(xp, x, spec), work, copy=False)
    kernel = xp.astype(kernel, work, copy=False)
    chunks = _batch_chunks(spec, spec.in_height * spec.in_width * spec.kernel_height
                           * spec.kernel_width * spec.filters * _itemsize(xp, work))
    if len(chunks) == 1:
        y = _forward_by_scatter(xp, x, kernel, spec)
    else:
        y = xp.concat([_forward_by_scatter(xp, x[start:stop, ...], kernel,
                                           dataclasses.replace(spec, batch=stop - start))
                       for start, stop in chunks], axis=0)
    if bias is not None:
        y = y + xp.astype(bias, work, copy=False)
    return _from_nhwc(xp, xp.astype(y, out_dtype, copy=False), spec)


def conv2d_transpose_backward(xp, dy, x, kernel, spec: ConvTransposeSpec):
    """Gradients (dx, dkernel, dbias) of the forward for an upstream gradient ``dy``."""
    out_dtype = x.dtype
    work = compute_dtype(xp, out_dtype)
    dy = xp.astype(_to_nhwc(xp, dy, spec), work, copy=False)
    x = xp.astype(_to_nhwc(xp, x, spec), work, copy=False)
    kernel = xp.astype(kernel, work, copy=False)
    n, g = spec.batch, spec.groups
    h, w = spec.in_height, spec.in_width
    kh, kw = spec.kernel_height, spec.kernel_width
    (sh, sw), (dh, dw) = spec.strides, spec.dilation_rate
    fg, cg = spec.filters_per_group, spec.channels_per_group
    m = n * h * w
    # Input pixel i meets dy row i*s + t*d - pad_top through tap t; pad dy so all of them exist.
    reach_h = (h - 1) * sh + (kh - 1) * dh - spec.pad_top
    reach_w = (w - 1) * sw + (kw - 1) * dw - spec.pad_left
    dy = xpx.pad(dy, [(0, 0), (spec.pad_top, max(0, reach_h - (spec.out_height - 1))),
                      (spec.pad_left, max(0, reach_w - (spec.out_width - 1))), (0, 0)], xp=xp)
    windows = [dy[:, th * dh: th * dh + (h - 1) * sh + 1: sh, tw * dw: tw * dw + (w - 1) * sw + 1: sw, :]
               for th in range(kh) for tw in range(kw)]
    cols = xp.reshape(xp.stack(windows, axis=3), (m, kh * kw, g, fg))   # (M, T, G, Fg)
    # dx: correlate dy with the kernel, kernel (kh, kw, Fg, Cin) -> (T, G, Fg, Cg).
    weights = xp.permute_dims(xp.reshape(kernel, (kh * kw, fg, g, cg)), (0, 2, 1, 3))
    dx = xp.reshape(_grouped_matmul(xp, cols, weights, g), (n, h, w, spec.in_channels))
    # dkernel: (G, T*Fg, M) @ (G, M, Cg), one GEMM over batch x space per group; with one group
    # a 2-D product of the transposed view, which BLAS takes without copying.
    if g == 1:
        dkernel = xp.matrix_transpose(xp.reshape(cols, (m, kh * kw * fg))) @ xp.reshape(x, (m, cg))
        dkernel = xp.reshape(dkernel, (1, kh * kw * fg, cg))
    else:
        cols_t = xp.reshape(xp.permute_dims(cols, (2, 1, 3, 0)), (g, kh * kw * fg, m))
        x_groups = xp.permute_dims(xp.reshape(x, (m, g, cg)), (1, 0, 2))
        dkernel = xp.matmul(cols_t, x_groups)                            # (G, T*Fg, Cg)
    dkernel = xp.permute_dims(xp.reshape(dkernel, (g, kh, kw, fg, cg)), (1, 2, 3, 0, 4))
    dkernel = xp.reshape(dkernel, (kh, kw, fg, spec.in_channels))
    dbias = xp.sum(dy, axis=(0, 1, 2))
    return (_from_nhwc(xp, xp.astype(dx, out_dtype, copy=False), spec),
            xp.astype(dkernel, out_dtype, copy=False), xp.astype(dbias, out_dtype, copy=False))
