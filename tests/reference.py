"""A float64 reference written from the definition, sharing no code with tconv.

Keras' docs define the layers as the transpose of a convolution: every input pixel ``p`` (one
index per spatial axis) scatters ``x[n, *p, :] @ kernel[*t].T`` through every kernel tap ``t``
onto output pixel ``p*s + t*d - pad_before`` (per axis); what lands outside the output is
dropped. The output length is Keras' ``deconv_output_length``; the 'same' split is
TensorFlow's (half the overhang before, rounded down). Explicit crops, one ``(before, after)``
pair per axis (PyTorch's and ``tf.nn``'s numeric padding), take ``before`` off the start of the
full scatter ``(L - 1)*s + k_eff`` and ``after`` off its end, then ``output_padding`` (default 0)
is added at the end; an explicit ``output_shape`` replaces the output length and keeps the
placement. Any rank (1, 2 or 3 spatial axes), channels_last. Loops on purpose: slow and
obvious, for tiny shapes only.
"""

import itertools

import numpy as np


def output_length(length, k, s, d, padding, output_padding):
    k_eff = k + (k - 1) * (d - 1)
    if output_padding is None:
        return length * s + max(k_eff - s, 0) if padding == "valid" else length * s
    pad = k_eff // 2 if padding == "same" else 0
    return (length - 1) * s + k_eff - 2 * pad + output_padding


def _per_axis(value, rank):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank


def _geometry(in_sizes, k_sizes, strides, padding, output_padding, dilation, output_shape):
    """The output's spatial size and the crop before, per axis."""
    full = [(n - 1) * s + k + (k - 1) * (d - 1)
            for n, k, s, d in zip(in_sizes, k_sizes, strides, dilation)]
    if not isinstance(padding, str):  # explicit crops, (before, after) per axis
        op = (0,) * len(full) if output_padding is None else output_padding
        out = [f - before - after + o for f, (before, after), o in zip(full, padding, op)]
        return output_shape or out, [before for before, _ in padding]
    op = (None,) * len(full) if output_padding is None else output_padding
    out = output_shape or [output_length(n, k, s, d, padding.lower(), o)
                           for n, k, s, d, o in zip(in_sizes, k_sizes, strides, dilation, op)]
    return out, [max(0, f - o) // 2 for f, o in zip(full, out)]


def _landings(x_shape, kernel_shape, strides, padding, output_padding, dilation, output_shape):
    """Every (input pixel, tap) whose scatter lands inside the output, with where it lands:
    ``(pixel, tap, landing)`` index tuples; and the output's spatial size."""
    in_sizes, k_sizes = x_shape[1:-1], kernel_shape[:-2]
    rank = len(in_sizes)
    strides, dilation = _per_axis(strides, rank), _per_axis(dilation, rank)
    if output_padding is not None:
        output_padding = _per_axis(output_padding, rank)
    out, pads = _geometry(in_sizes, k_sizes, strides, padding, output_padding, dilation,
                          output_shape)
    landings = []
    for pixel in itertools.product(*map(range, in_sizes)):
        for tap in itertools.product(*map(range, k_sizes)):
            landing = tuple(i * s + t * d - p for i, t, s, d, p in
                            zip(pixel, tap, strides, dilation, pads))
            if all(0 <= o < size for o, size in zip(landing, out)):
                landings.append((pixel, tap, landing))
    return landings, tuple(out)


def forward(x, kernel, bias=None, strides=1, padding="valid", output_padding=None, dilation=1,
            groups=1, output_shape=None):
    """x (N, *spatial, Cin) channels_last, kernel (*k, F/groups, Cin) -> (N, *out, F)."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, cin = x.shape[0], x.shape[-1]
    fg = kernel.shape[-2]
    cg = cin // groups
    landings, out = _landings(x.shape, kernel.shape, strides, padding, output_padding, dilation,
                              output_shape)
    y = np.zeros((n, *out, fg * groups))
    for pixel, tap, landing in landings:
        for g in range(groups):
            xs = x[(slice(None), *pixel, slice(g * cg, (g + 1) * cg))]           # (N, Cg)
            ks = kernel[(*tap, slice(None), slice(g * cg, (g + 1) * cg))]        # (Fg, Cg)
            y[(slice(None), *landing, slice(g * fg, (g + 1) * fg))] += xs @ ks.T
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y


def backward(dy, x, kernel, strides=1, padding="valid", output_padding=None, dilation=1,
             groups=1, output_shape=None):
    """Gradients of ``sum(forward(x, kernel, bias) * dy)`` by the same scatter, transposed."""
    dy = np.asarray(dy, np.float64)
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    cg = x.shape[-1] // groups
    fg = kernel.shape[-2]
    landings, _ = _landings(x.shape, kernel.shape, strides, padding, output_padding, dilation,
                            output_shape)
    dx = np.zeros_like(x)
    dk = np.zeros_like(kernel)
    for pixel, tap, landing in landings:
        for g in range(groups):
            cin, fout = slice(g * cg, (g + 1) * cg), slice(g * fg, (g + 1) * fg)
            gy = dy[(slice(None), *landing, fout)]                               # (N, Fg)
            ks = kernel[(*tap, slice(None), cin)]                                # (Fg, Cg)
            dx[(slice(None), *pixel, cin)] += gy @ ks
            dk[(*tap, slice(None), cin)] += gy.T @ x[(slice(None), *pixel, cin)]
    return dx, dk, dy.sum(axis=tuple(range(dy.ndim - 1)))
