"""A float64 reference written from the definition, sharing no code with tconv.

Keras' docs define the layer as the transpose of a convolution: every input pixel (i, j) scatters
``x[n, i, j, :] @ kernel[ky, kx].T`` onto output pixel ``(i*s + ky*d - pad_top, j*s + kx*d -
pad_left)``; what lands outside the output is dropped. The output length is Keras'
``deconv_output_length``; the 'same' split is TensorFlow's (half the overhang before, rounded
down). Explicit crops ``((top, bottom), (left, right))`` (PyTorch's and ``tf.nn``'s numeric
padding) take ``top``/``left`` off the start of the full scatter ``(L - 1)*s + k_eff`` and
``bottom``/``right`` off its end, then ``output_padding`` rows/columns (default 0) are added at
the bottom/right; an explicit ``output_shape`` replaces the output length and keeps the
placement. Loops on purpose: slow and obvious, for tiny shapes only.
"""

import numpy as np


def output_length(length, k, s, d, padding, output_padding):
    k_eff = k + (k - 1) * (d - 1)
    if output_padding is None:
        return length * s + max(k_eff - s, 0) if padding == "valid" else length * s
    pad = k_eff // 2 if padding == "same" else 0
    return (length - 1) * s + k_eff - 2 * pad + output_padding


def _geometry(h, w, kh, kw, strides, padding, output_padding, dilation, output_shape):
    full = [(n - 1) * s + k + (k - 1) * (d - 1)
            for n, k, s, d in zip((h, w), (kh, kw), strides, dilation)]
    if not isinstance(padding, str):  # explicit crops ((top, bottom), (left, right))
        op = (0, 0) if output_padding is None else output_padding
        out = [f - before - after + o for f, (before, after), o in zip(full, padding, op)]
        return output_shape or out, [before for before, _ in padding]
    op = (None, None) if output_padding is None else output_padding
    out = output_shape or [output_length(n, k, s, d, padding.lower(), o)
                           for n, k, s, d, o in zip((h, w), (kh, kw), strides, dilation, op)]
    return out, [max(0, f - o) // 2 for f, o in zip(full, out)]


def _landings(x_shape, kernel_shape, strides, padding, output_padding, dilation, output_shape):
    """Every (input pixel, tap) whose scatter lands inside the output, with where it lands:
    ``(i, j, ky, kx, oy, ox)``; and the output size."""
    _, h, w, _ = x_shape
    kh, kw = kernel_shape[:2]
    (oh, ow), (pt, pl) = _geometry(h, w, kh, kw, strides, padding, output_padding, dilation,
                                   output_shape)
    landings = []
    for i in range(h):
        for j in range(w):
            for ky in range(kh):
                for kx in range(kw):
                    oy = i * strides[0] + ky * dilation[0] - pt
                    ox = j * strides[1] + kx * dilation[1] - pl
                    if 0 <= oy < oh and 0 <= ox < ow:
                        landings.append((i, j, ky, kx, oy, ox))
    return landings, (oh, ow)


def forward(x, kernel, bias=None, strides=(1, 1), padding="valid", output_padding=None,
            dilation=(1, 1), groups=1, output_shape=None):
    """x (N, H, W, Cin) channels_last, kernel (kh, kw, F/groups, Cin) -> (N, Oh, Ow, F)."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, _, _, cin = x.shape
    fg = kernel.shape[2]
    cg = cin // groups
    landings, (oh, ow) = _landings(x.shape, kernel.shape, strides, padding, output_padding,
                                   dilation, output_shape)
    y = np.zeros((n, oh, ow, fg * groups))
    for i, j, ky, kx, oy, ox in landings:
        for g in range(groups):
            xs = x[:, i, j, g * cg:(g + 1) * cg]                 # (N, Cg)
            ks = kernel[ky, kx, :, g * cg:(g + 1) * cg]          # (Fg, Cg)
            y[:, oy, ox, g * fg:(g + 1) * fg] += xs @ ks.T
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y


def backward(dy, x, kernel, strides=(1, 1), padding="valid", output_padding=None,
             dilation=(1, 1), groups=1, output_shape=None):
    """Gradients of ``sum(forward(x, kernel, bias) * dy)`` by the same scatter, transposed."""
    dy = np.asarray(dy, np.float64)
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    cg = x.shape[3] // groups
    fg = kernel.shape[2]
    landings, _ = _landings(x.shape, kernel.shape, strides, padding, output_padding, dilation,
                            output_shape)
    dx = np.zeros_like(x)
    dk = np.zeros_like(kernel)
    for i, j, ky, kx, oy, ox in landings:
        for g in range(groups):
            gy = dy[:, oy, ox, g * fg:(g + 1) * fg]              # (N, Fg)
            ks = kernel[ky, kx, :, g * cg:(g + 1) * cg]          # (Fg, Cg)
            dx[:, i, j, g * cg:(g + 1) * cg] += gy @ ks
            dk[ky, kx, :, g * cg:(g + 1) * cg] += gy.T @ x[:, i, j, g * cg:(g + 1) * cg]
    return dx, dk, dy.sum(axis=(0, 1, 2))
