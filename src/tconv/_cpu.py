"""The vectorized CPU path, written once against the Python array API standard.

It serves every namespace ``array_api_compat`` knows (NumPy, torch, array-api-strict, JAX, ...):
no framework is named here, and nothing is assigned in place, so ``jax.jit`` and ``jax.grad``
trace straight through.

Forward, by stride phase (sub-pixel decomposition). Output row ``oy = q*s + p`` (phase ``p``,
``0 <= p < s``) receives input row ``i`` through tap ``t`` exactly when ``i*s + t*d - pad_top =
oy``, i.e. ``i = q + (p + pad_top - t*d) / s`` with the division exact. So each phase is a plain
correlation of the input with the taps whose ``(p + pad_top - t*d) % s == 0``: gather the shifted
input windows of those taps side by side along channels, and one GEMM per phase makes that
phase's output pixels. No FLOP is spent on the zeros of the "dilate the input, then convolve"
view. The phases are then interleaved by a stack and a reshape, and cropped to the output size.

Backward: ``dx`` is the strided correlation of ``dy`` with the kernel and ``dkernel`` the GEMM of
the same ``dy`` windows with ``x`` over batch x space; the windows are gathered once for both.
"""

from __future__ import annotations

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


def _phase_taps(phase: int, pad: int, kernel_size: int, stride: int, dilation: int):
    """(tap, input offset) for the taps that reach output phase ``phase``."""
    taps = []
    for tap in range(kernel_size):
        shift = phase + pad - tap * dilation
        if shift % stride == 0:
            taps.append((tap, shift // stride))
    return taps


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


def _padded_rows(xp, a, axis_taps, counts, spec_in_hw):
    """Zero-pad ``a`` (NHWC) so that every phase window ``[offset, offset + count)`` is in range.

    Returns the padded array and the (top, left) index of the original origin in it.
    """
    pads = []
    for taps_per_phase, count, length in zip(axis_taps, counts, spec_in_hw):
        offsets = [offset for taps in taps_per_phase for _, offset in taps] or [0]
        pads.append((max(0, -min(offsets)), max(0, count - 1 + max(offsets) - (length - 1))))
    if any(before or after for before, after in pads):
        a = xpx.pad(a, [(0, 0), pads[0], pads[1], (0, 0)], xp=xp)
    return a, pads[0][0], pads[1][0]


def conv2d_transpose(xp, x, kernel, bias, spec: ConvTransposeSpec):
    """Forward pass; ``x`` in ``spec.data_format``, result in the same layout and dtype."""
    out_dtype = x.dtype
    work = compute_dtype(xp, out_dtype)
    x = xp.astype(_to_nhwc(xp, x, spec), work, copy=False)
    kernel = xp.astype(kernel, work, copy=False)
    n, g = spec.batch, spec.groups
    (sh, sw), (dh, dw) = spec.strides, spec.dilation_rate
    # Every phase covers ceil(out / s) rows/cols; the interleaved result is cropped at the end.
    qh, qw = -(-spec.out_height // sh), -(-spec.out_width // sw)
    taps_h = [_phase_taps(p, spec.pad_top, spec.kernel_height, sh, dh) for p in range(sh)]
    taps_w = [_phase_taps(p, spec.pad_left, spec.kernel_width, sw, dw) for p in range(sw)]
    x, top, left = _padded_rows(xp, x, (taps_h, taps_w), (qh, qw),
                                (spec.in_height, spec.in_width))
    # kernel (kh, kw, Fg, Cin) -> (kh, kw, G, Cg, Fg): each tap's GEMM operand, by group.
    k_taps = xp.reshape(kernel, (spec.kernel_height, spec.kernel_width,
                                 spec.filters_per_group, g, spec.channels_per_group))
    k_taps = xp.permute_dims(k_taps, (0, 1, 3, 4, 2))
    rows = []
    for ph in range(sh):
        phases_of_row = []
        for pw in range(sw):
            taps = [(th, oh, tw, ow) for th, oh in taps_h[ph] for tw, ow in taps_w[pw]]
            if not taps:  # no tap reaches this phase: its pixels are bias only
                phases_of_row.append(xp.zeros((n, qh, qw, spec.filters), dtype=work,
                                              device=device(x)))
                continue
            windows = [x[:, top + oh: top + oh + qh, left + ow: left + ow + qw, :]
                       for _, oh, _, ow in taps]
            cols = xp.reshape(xp.stack(windows, axis=3),
                              (n * qh * qw, len(taps), g, spec.channels_per_group))
            weights = xp.stack([k_taps[th, tw, ...] for th, _, tw, _ in taps], axis=0)
            phase = _grouped_matmul(xp, cols, weights, g)
            phases_of_row.append(xp.reshape(phase, (n, qh, qw, spec.filters)))
        rows.append(xp.stack(phases_of_row, axis=3))             # (N, qh, qw, sw, F)
    y = xp.stack(rows, axis=2)                                    # (N, qh, sh, qw, sw, F)
    y = xp.reshape(y, (n, qh * sh, qw * sw, spec.filters))[:, :spec.out_height, :spec.out_width, :]
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
    # dkernel: (G, T*Fg, M) @ (G, M, Cg), one GEMM over batch x space per group.
    cols_t = xp.reshape(xp.permute_dims(cols, (2, 1, 3, 0)), (g, kh * kw * fg, m))
    x_groups = xp.permute_dims(xp.reshape(x, (m, g, cg)), (1, 0, 2))
    dkernel = xp.matmul(cols_t, x_groups)                                # (G, T*Fg, Cg)
    dkernel = xp.permute_dims(xp.reshape(dkernel, (g, kh, kw, fg, cg)), (1, 2, 3, 0, 4))
    dkernel = xp.reshape(dkernel, (kh, kw, fg, spec.in_channels))
    dbias = xp.sum(dy, axis=(0, 1, 2))
    return (_from_nhwc(xp, xp.astype(dx, out_dtype, copy=False), spec),
            xp.astype(dkernel, out_dtype, copy=False), xp.astype(dbias, out_dtype, copy=False))
