"""The vectorized CPU path, written once against the Python array API standard.

It serves every namespace ``array_api_compat`` knows (NumPy, torch, array-api-strict, JAX, ...)
with one code path; the only framework test is a measured layout choice (``_taps_outermost``)
and JAX's lack of in-place writes. The only writes are into buffers made here: in place (adds
into views of them, ``__setitem__``) where the namespace allows, functional ``.at[]`` on JAX,
so ``jax.jit`` and ``jax.grad`` trace straight through and nothing the caller passed is
written to.

Forward: multiply first, then place. One GEMM ``x (pixels, Cin) @ (Cin, kh*kw*F)`` gives every
input pixel's contribution through every tap; tap ``t`` sends input row ``i`` to full-output row
``i*s + t*d``. Undilated taps come in blocks of ``s`` consecutive taps that share the shift
``t // s`` and take residues ``0..s-1``, so each block is one strided add into the full output
viewed as (rows of s, s): ``ceil(kh/s) * ceil(kw/s)`` adds in all, then a crop by Keras' padding
(or, when the crop falls on the stride grid, adds clipped to the output itself).
No FLOP is spent on the zeros of the "dilate the input, then convolve" view, no input is copied
per tap (the im2col alternative copies ``kh*kw*Cin`` values per pixel, this writes ``kh*kw*F``, and
measured faster on every benchmark layer, most of all for image outputs with 1-3 channels), and a
padding zero never multiplies a kernel tap, so a non-finite tap reaches only what it reaches
from a real pixel. The input goes through in pieces (runs of images, or bands of rows of one
image) whose products fit in ``CACHE_BYTES``, so they are placed while still in cache.

Backward: ``dx`` is the strided correlation of ``dy`` with the kernel and ``dkernel`` the GEMM of
the same ``dy`` windows with ``x`` over batch x space; the windows are gathered once for both.
Every result is a new C-contiguous array in the caller's layout, as TensorFlow and torch return.
"""

from __future__ import annotations

import array_api_extra as xpx
from array_api_compat import array_namespace, device, is_jax_namespace, is_torch_namespace

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


# Workspace per forward piece. A piece's products stay in cache while they are placed: with the
# products of the whole batch in memory, placing them cost more than the GEMM on the benchmark
# layers; in cache-sized pieces the GEMM runs as fast (or faster) and placing costs a fraction.
CACHE_BYTES = 8 * 2**20
# JAX cannot add into a buffer in place (outside jit each piece would copy the whole output), so
# it runs in one piece unless the products exceed this memory bound.
WORKSPACE_BYTES = 256 * 2**20


def _add_into(xp, buffer, index, values):
    """``buffer[index] += values`` for a buffer made here: into a view of it where the namespace
    writes in place (``array_api_extra.at`` would also write the view back onto itself), else
    functionally (JAX)."""
    if is_jax_namespace(xp):
        return xpx.at(buffer)[index].add(values)
    target = buffer[index]
    target += values
    return buffer


def _set_into(xp, buffer, index, values):
    """``buffer[index] = values`` for a buffer made here, in place but on JAX."""
    if is_jax_namespace(xp):
        return xpx.at(buffer)[index].set(values)
    buffer[index] = values
    return buffer


def _itemsize(xp, dtype) -> int:
    return 8 if dtype == xp.float64 else 4


def _input_pieces(spec: ConvTransposeSpec, bytes_per_pixel: int, budget: int):
    """``(n0, n1, r0, r1)`` pieces of the input whose products fit in ``budget`` bytes: runs of
    whole images when one fits, else bands of rows of one image."""
    h, w = spec.in_height, spec.in_width
    pixels = max(1, budget // bytes_per_pixel)
    if pixels >= h * w:
        images = pixels // (h * w)
        return [(n0, min(spec.batch, n0 + images), 0, h) for n0 in range(0, spec.batch, images)]
    rows = max(1, pixels // w)
    return [(n, n + 1, r0, min(h, r0 + rows)) for n in range(spec.batch) for r0 in range(0, h, rows)]


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


def _taps_outermost(xp, spec: ConvTransposeSpec) -> bool:
    """Which products layout places faster: an add moves runs of ``taps per block x filters``
    contiguous values with filters innermost, or of ``in_width`` values with taps outermost.
    NumPy's strided add is slow on runs of a few values, so image outputs (1-3 filters) take the
    latter there (pix2pix's 3-filter output: 6.0 -> 4.0 ms); torch's add vectorizes short runs
    and the taps-outermost GEMM and adds cost it more (2.9 -> 4.3 ms), so torch never does."""
    return (not is_torch_namespace(xp)
            and spec.filters_per_group * spec.strides[1] < spec.in_width)


class _Placement:
    """The forward's output buffer, and how products are added into it.

    The output is viewed as rows of ``s`` by columns of ``s`` so that a tap block (or a tap)
    lands as one strided add: filters innermost, ``(N, rows, sh, cols, sw, F)``, or, with taps
    outermost, ``(G, Fg, N, rows, sh, cols, sw)``. Usually the buffer is the uncropped output:
    ``rows`` and ``cols`` reach the last landing row and the crop's end when output_padding
    reaches past it (nothing lands there), and Keras' crop is copied out at the end. When the
    crop starts and ends on the stride grid (k=3 or k=2 with s=2 'same'/'valid', say) and the
    caller wants NHWC in the compute dtype, the buffer is the output itself: adds are clipped
    to it and nothing is copied. It starts as the bias (zeros without one).
    """

    def __init__(self, xp, spec: ConvTransposeSpec, bias, dtype, out_dtype, device_):
        self.xp, self.spec = xp, spec
        (sh, sw), (dh, dw) = spec.strides, spec.dilation_rate
        self.blocks_h = _tap_blocks(spec.kernel_height, sh, dh)
        self.blocks_w = _tap_blocks(spec.kernel_width, sw, dw)
        self.taps_outermost = _taps_outermost(xp, spec)
        self.direct = (not self.taps_outermost and spec.data_format == "channels_last"
                       and dtype == out_dtype
                       and spec.pad_top % sh == 0 and spec.out_height % sh == 0
                       and spec.pad_left % sw == 0 and spec.out_width % sw == 0)
        if self.direct:   # grid rows [row0, row0 + rows) are the output
            self.row0, self.rows = spec.pad_top // sh, spec.out_height // sh
            self.col0, self.cols = spec.pad_left // sw, spec.out_width // sw
        else:
            self.row0 = self.col0 = 0
            self.rows = max(spec.in_height + self.blocks_h[-1][2],
                            -(-(spec.pad_top + spec.out_height) // sh))
            self.cols = max(spec.in_width + self.blocks_w[-1][2],
                            -(-(spec.pad_left + spec.out_width) // sw))
        if self.taps_outermost:
            shape = (spec.groups, spec.filters_per_group, spec.batch, self.rows, sh, self.cols, sw)
        else:
            shape = (spec.batch, self.rows, sh, self.cols, sw, spec.filters)
        if bias is None:
            self.full = xp.zeros(shape, dtype=dtype, device=device_)
        else:   # products add onto the bias: no pass over the output to add it afterwards
            if self.taps_outermost:
                bias = xp.reshape(bias, (spec.groups, spec.filters_per_group, 1, 1, 1, 1, 1))
            self.full = _set_into(xp, xp.empty(shape, dtype=dtype, device=device_), ..., bias)

    def add(self, x_piece, kernel, n0: int, r0: int):
        """Multiply the input piece ``x[n0:n0+nb, r0:r0+hr]`` by every tap and add it in place."""
        if self.taps_outermost:
            self._add_taps_outermost(x_piece, kernel, n0, r0)
        else:
            self._add_filters_innermost(x_piece, kernel, n0, r0)

    def _add_filters_innermost(self, x_piece, kernel, n0, r0):
        xp, spec = self.xp, self.spec
        nb, hr, w = x_piece.shape[:3]
        kh, kw, f = spec.kernel_height, spec.kernel_width, spec.filters
        products = xp.reshape(_tap_products(xp, x_piece, kernel, spec), (nb, hr, w, kh, kw, f))
        for first_h, stop_h, shift_h, residue_h in self.blocks_h:
            # Input rows i land on grid row i + shift - row0: keep those inside the buffer.
            i0 = max(0, self.row0 - shift_h - r0)
            i1 = min(hr, self.rows + self.row0 - shift_h - r0)
            for first_w, stop_w, shift_w, residue_w in self.blocks_w:
                j0 = max(0, self.col0 - shift_w)
                j1 = min(w, self.cols + self.col0 - shift_w)
                if i0 >= i1 or j0 >= j1:
                    continue
                block = products[:, i0:i1, j0:j1, first_h:stop_h, first_w:stop_w, :]
                row = r0 + i0 + shift_h - self.row0
                col = j0 + shift_w - self.col0
                index = (slice(n0, n0 + nb), slice(row, row + i1 - i0),
                         slice(residue_h, residue_h + stop_h - first_h),
                         slice(col, col + j1 - j0),
                         slice(residue_w, residue_w + stop_w - first_w), slice(None))
                self.full = _add_into(xp, self.full, index,
                                      xp.permute_dims(block, (0, 1, 3, 2, 4, 5)))

    def _add_taps_outermost(self, x_piece, kernel, n0, r0):
        xp, spec = self.xp, self.spec
        nb, hr, w = x_piece.shape[:3]
        g, fg, cg = spec.groups, spec.filters_per_group, spec.channels_per_group
        kh, kw = spec.kernel_height, spec.kernel_width
        m = nb * hr * w
        # kernel (kh, kw, Fg, Cin) -> (G, T*Fg, Cg); products (G, T*Fg, M): kernel rows times pixels.
        k_rows = xp.reshape(kernel, (kh * kw * fg, g, cg))
        x_cols = xp.reshape(x_piece, (m, g, cg))
        if g == 1:
            products = k_rows[:, 0, :] @ xp.matrix_transpose(x_cols[:, 0, :])
        else:
            products = xp.matmul(xp.permute_dims(k_rows, (1, 0, 2)), xp.permute_dims(x_cols, (1, 2, 0)))
        products = xp.reshape(products, (g, kh, kw, fg, nb, hr, w))
        for first_h, stop_h, shift_h, residue_h in self.blocks_h:
            for tap_h in range(first_h, stop_h):
                row = shift_h + r0
                for first_w, stop_w, shift_w, residue_w in self.blocks_w:
                    for tap_w in range(first_w, stop_w):
                        index = (slice(None), slice(None), slice(n0, n0 + nb),
                                 slice(row, row + hr), residue_h + tap_h - first_h,
                                 slice(shift_w, shift_w + w), residue_w + tap_w - first_w)
                        self.full = _add_into(xp, self.full, index, products[:, tap_h, tap_w, ...])

    def output(self, out_dtype):
        """The result: a new C-contiguous array in the caller's layout and dtype."""
        xp, spec = self.xp, self.spec
        (sh, sw) = spec.strides
        if self.direct:
            return xp.reshape(self.full, spec.output_shape)
        rows = slice(spec.pad_top, spec.pad_top + spec.out_height)
        cols = slice(spec.pad_left, spec.pad_left + spec.out_width)
        if self.taps_outermost:
            full = xp.reshape(self.full, (spec.filters, spec.batch, self.rows * sh, self.cols * sw))
            cropped = xp.permute_dims(full[:, :, rows, cols], (1, 2, 3, 0))
        else:
            full = xp.reshape(self.full, (spec.batch, self.rows * sh, self.cols * sw, spec.filters))
            cropped = full[:, rows, cols, :]
        return _in_caller_layout(xp, cropped, spec, out_dtype)


def _tap_products(xp, x, kernel, spec: ConvTransposeSpec):
    """Every input pixel times every tap: (N, H, W, kh*kw, filters), one GEMM (batched by group)."""
    n, h, w = x.shape[:3]
    g = spec.groups
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


def _in_caller_layout(xp, a_nhwc, spec: ConvTransposeSpec, dtype):
    """A new C-contiguous ``dtype`` array holding the NHWC view ``a_nhwc`` in the caller's layout,
    as TensorFlow and torch return theirs."""
    a = _from_nhwc(xp, a_nhwc, spec)
    out = xp.empty(a.shape, dtype=dtype, device=device(a))
    return _set_into(xp, out, ..., xp.astype(a, dtype, copy=False))


def conv2d_transpose(x, kernel, bias, spec: ConvTransposeSpec):
    """Forward pass; ``x`` in ``spec.data_format``, result in the same layout and dtype."""
    xp = array_namespace(x)
    out_dtype = x.dtype
    work = compute_dtype(xp, out_dtype)
    x = xp.astype(_to_nhwc(xp, x, spec), work, copy=False)
    kernel = xp.astype(kernel, work, copy=False)
    if bias is not None:
        bias = xp.astype(bias, work, copy=False)
    placement = _Placement(xp, spec, bias, work, out_dtype, device(x))
    budget = WORKSPACE_BYTES if is_jax_namespace(xp) else CACHE_BYTES
    bytes_per_pixel = spec.kernel_height * spec.kernel_width * spec.filters * _itemsize(xp, work)
    for n0, n1, r0, r1 in _input_pieces(spec, bytes_per_pixel, budget):
        placement.add(x[n0:n1, r0:r1, ...], kernel, n0, r0)
    return placement.output(out_dtype)


def conv2d_transpose_backward(dy, x, kernel, spec: ConvTransposeSpec):
    """Gradients (dx, dkernel, dbias) of the forward for an upstream gradient ``dy``.

    Large inputs go through in pieces, as in the forward: each piece gathers its ``dy`` windows
    once, for its rows of ``dx`` and for its share of ``dkernel``, while they are still in cache.
    """
    xp = array_namespace(x)
    out_dtype = x.dtype
    work = compute_dtype(xp, out_dtype)
    dy = xp.astype(_to_nhwc(xp, dy, spec), work, copy=False)
    x = xp.astype(_to_nhwc(xp, x, spec), work, copy=False)
    kernel = xp.astype(kernel, work, copy=False)
    g, h, w = spec.groups, spec.in_height, spec.in_width
    kh, kw = spec.kernel_height, spec.kernel_width
    (sh, sw), (dh, dw) = spec.strides, spec.dilation_rate
    fg, cg = spec.filters_per_group, spec.channels_per_group
    # Input pixel i meets dy row i*s + t*d - pad_top through tap t; pad dy so all of them exist.
    reach_h = (h - 1) * sh + (kh - 1) * dh - spec.pad_top
    reach_w = (w - 1) * sw + (kw - 1) * dw - spec.pad_left
    dy = xpx.pad(dy, [(0, 0), (spec.pad_top, max(0, reach_h - (spec.out_height - 1))),
                      (spec.pad_left, max(0, reach_w - (spec.out_width - 1))), (0, 0)], xp=xp)
    # dx: correlate dy with the kernel, kernel (kh, kw, Fg, Cin) -> (T, G, Fg, Cg).
    weights = xp.permute_dims(xp.reshape(kernel, (kh * kw, fg, g, cg)), (0, 2, 1, 3))
    # Windows of a few cache sizes go in one piece: each further piece costs a copy of its dx rows
    # and a slice per tap (fcn_x8's 256 taps), which outweighs the cache. Above that, a piece's
    # windows are read by two GEMMs next to its dx rows: half the forward's budget; and each piece
    # adds a partial dkernel, so pieces hold at least 16 of those to keep the adds a small share.
    itemsize = _itemsize(xp, work)
    bytes_per_pixel = kh * kw * spec.filters * itemsize
    windows_bytes = bytes_per_pixel * spec.batch * h * w
    if is_jax_namespace(xp):
        budget = WORKSPACE_BYTES
    elif windows_bytes <= 4 * CACHE_BYTES:
        budget = windows_bytes
    else:
        budget = max(CACHE_BYTES // 2, 16 * kh * kw * spec.filters * cg * itemsize)
    pieces = _input_pieces(spec, bytes_per_pixel, budget)
    dkernel = None
    if len(pieces) != 1 or spec.data_format == "channels_first":   # (no pieces: empty batch)
        dx = xp.empty(spec.input_shape, dtype=out_dtype, device=device(x))
    for n0, n1, r0, r1 in pieces:
        m = (n1 - n0) * (r1 - r0) * w
        windows = [dy[n0:n1, th * dh + r0 * sh: th * dh + (r1 - 1) * sh + 1: sh,
                      tw * dw: tw * dw + (w - 1) * sw + 1: sw, :]
                   for th in range(kh) for tw in range(kw)]
        cols = xp.reshape(xp.stack(windows, axis=3), (m, kh * kw, g, fg))   # (m, T, G, Fg)
        dx_piece = xp.reshape(_grouped_matmul(xp, cols, weights, g), (n1 - n0, r1 - r0, w, -1))
        dx_piece = xp.astype(_from_nhwc(xp, dx_piece, spec), out_dtype, copy=False)
        if len(pieces) == 1 and spec.data_format == "channels_last":
            dx = dx_piece    # the whole of dx, contiguous already
        elif spec.data_format == "channels_first":
            dx = _set_into(xp, dx, (slice(n0, n1), slice(None), slice(r0, r1), ...), dx_piece)
        else:
            dx = _set_into(xp, dx, (slice(n0, n1), slice(r0, r1), ...), dx_piece)
        part = _kernel_gradient(xp, cols, x[n0:n1, r0:r1, ...], g)
        dkernel = part if dkernel is None else dkernel + part
    if dkernel is None:   # an empty batch
        dkernel = xp.zeros((g, kh * kw * fg, cg), dtype=work, device=device(x))
    dkernel = xp.permute_dims(xp.reshape(dkernel, (g, kh, kw, fg, cg)), (1, 2, 3, 0, 4))
    dkernel = xp.reshape(dkernel, (kh, kw, fg, spec.in_channels))
    dbias = xp.sum(dy, axis=(0, 1, 2))
    return dx, xp.astype(dkernel, out_dtype, copy=False), xp.astype(dbias, out_dtype, copy=False)


def _kernel_gradient(xp, cols, x_piece, groups: int):
    """``cols`` (M, T, G, Fg) against the input pixels (M, G*Cg): (G, T*Fg, Cg), one GEMM per
    group; with one group a 2-D product of the transposed view, which BLAS takes without copying."""
    m, taps, _, fg = cols.shape
    x_rows = xp.reshape(x_piece, (m, groups, -1))
    if groups == 1:
        product = xp.matrix_transpose(xp.reshape(cols, (m, taps * fg))) @ x_rows[:, 0, :]
        return xp.expand_dims(product, axis=0)
    cols_t = xp.reshape(xp.permute_dims(cols, (2, 1, 3, 0)), (groups, taps * fg, m))
    return xp.matmul(cols_t, xp.permute_dims(x_rows, (1, 0, 2)))
