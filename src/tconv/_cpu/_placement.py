"""The forward's placements: where each input piece's tap products are added, one class per mode.

Tap ``t`` sends input row ``i`` to full-output row ``i*s + t*d``. The output buffer is viewed as
rows of ``s`` by columns of ``s``, so a block of taps sharing a shift lands as one strided add:

- :class:`IntoUncropped`: filters innermost, ``(N, rows, sh, cols, sw, F)``, the uncropped output;
  Keras' crop is copied out at the end.
- :class:`IntoOutput`: the same layout clipped to the output itself, its grid starting at Keras'
  crop, when that takes no more adds (:func:`_output_grid_fits`) and the caller wants NHWC in
  the compute dtype: nothing is copied.
- :class:`TapsOutermost`: ``(G, Fg, N, rows, sh, cols, sw)``, one add per tap of runs of
  ``in_width`` values (image outputs of 1-3 filters on NumPy), cropped and transposed at the end.

A buffer starts as the bias (zeros without one), so the products add onto it; where every cell
takes exactly one product (kernel == stride, nothing cropped), the products plus the bias are set
into an unset one instead.
"""

from __future__ import annotations

from .._spec import ConvTransposeSpec
from ._arrays import (add_into, grouped_matmul, in_caller_layout, kernel_by_group,
                      pixels_by_group, set_into)
from ._tuning import Tuning, taps_outermost


def make_placement(xp, spec: ConvTransposeSpec, tuning: Tuning, bias, dtype, out_dtype, device_):
    """The placement for this call (see the module docstring for when each applies)."""
    if taps_outermost(xp, spec, tuning):
        return TapsOutermost(xp, spec, bias, dtype, device_)
    if (spec.data_format == "channels_last" and dtype == out_dtype
            and all(_output_grid_fits(spec, axis) for axis in (0, 1))):
        return IntoOutput(xp, spec, bias, dtype, device_)
    return IntoUncropped(xp, spec, bias, dtype, device_)


def tap_blocks(kernel_size: int, stride: int, dilation: int, offset: int = 0):
    """Taps grouped into blocks ``(first, stop, shift, residue)`` that land together.

    Tap ``t`` moves input row ``i`` to row ``i*s + t*d - offset = (i + shift)*s + residue`` of a
    buffer that starts ``offset`` rows into the full output. Undilated, the taps with one shift
    take consecutive residues, so one strided add places the whole block; dilated taps go one
    by one.
    """
    if dilation == 1:
        shifts = range((-offset) // stride, (kernel_size - 1 - offset) // stride + 1)
        return [(max(0, offset + shift * stride), min(kernel_size, offset + (shift + 1) * stride),
                 shift, max(0, offset + shift * stride) - offset - shift * stride)
                for shift in shifts]
    return [(tap, tap + 1, (tap * dilation - offset) // stride, (tap * dilation - offset) % stride)
            for tap in range(kernel_size)]


def _output_grid_fits(spec: ConvTransposeSpec, axis: int) -> bool:
    """Whether the output itself, viewed as a grid starting at Keras' crop, takes the adds: it
    must be whole grid rows, and starting off the stride grid must not split a tap block in two
    (k=5, s=2 with the crop at 1 keeps 3 blocks; k=4, s=2 goes from 2 to 3 blocks, whose more and
    shorter adds cost more than the crop copy they save)."""
    kernel_size, stride = spec.kernel_shape[axis], spec.strides[axis]
    out_size, pad = ((spec.out_height, spec.pad_top) if axis == 0
                     else (spec.out_width, spec.pad_left))
    dilation = spec.dilation_rate[axis]
    return (out_size % stride == 0 and len(tap_blocks(kernel_size, stride, dilation, pad))
            == len(tap_blocks(kernel_size, stride, dilation)))


def _starting_buffer(xp, shape, bias, dtype, device_):
    """The buffer products add onto: ``bias`` (already shaped to broadcast over ``shape``), or
    zeros. Starting from the bias saves a pass over the output to add it afterwards."""
    if bias is None:
        return xp.zeros(shape, dtype=dtype, device=device_)
    return set_into(xp, xp.empty(shape, dtype=dtype, device=device_), ..., bias)


def _uncropped_extent(spec: ConvTransposeSpec, blocks_h, blocks_w):
    """Grid rows and columns of the uncropped buffer: up to the last landing row (column), and to
    the crop's end when output_padding reaches past it (nothing lands there)."""
    (sh, sw) = spec.strides
    return (max(spec.in_height + blocks_h[-1][2], -(-(spec.pad_top + spec.out_height) // sh)),
            max(spec.in_width + blocks_w[-1][2], -(-(spec.pad_left + spec.out_width) // sw)))


class _FiltersInnermost:
    """Adds tap blocks of ``(N, H, W, kh, kw, F)`` products into a buffer viewed as
    ``(N, rows, sh, cols, sw, F)`` that starts ``_offsets()`` rows and columns into the full
    output; what lands outside it is dropped."""

    def __init__(self, xp, spec: ConvTransposeSpec, bias, dtype, device_):
        self.xp, self.spec = xp, spec
        offset_h, offset_w = self._offsets()
        self.blocks_h = tap_blocks(spec.kernel_height, spec.strides[0], spec.dilation_rate[0],
                                   offset_h)
        self.blocks_w = tap_blocks(spec.kernel_width, spec.strides[1], spec.dilation_rate[1],
                                   offset_w)
        self.rows, self.cols = self._grid()
        shape = (spec.batch, self.rows, spec.strides[0], self.cols, spec.strides[1], spec.filters)
        # Kernel == stride (unet's k2 s2), uncropped: each cell takes exactly one product, so the
        # products (plus the bias, while in cache) are set into an unset buffer, no adds.
        self.set_once = (self._one_block_fills(self.blocks_h, 0, self.rows)
                         and self._one_block_fills(self.blocks_w, 1, self.cols))
        if self.set_once:
            self.bias = bias
            self.full = xp.empty(shape, dtype=dtype, device=device_)
        else:
            self.full = _starting_buffer(xp, shape, bias, dtype, device_)

    def _one_block_fills(self, blocks, axis: int, cells: int) -> bool:
        in_size = self.spec.in_height if axis == 0 else self.spec.in_width
        return (len(blocks) == 1 and blocks[0] == (0, self.spec.strides[axis], 0, 0)
                and cells == in_size)

    def add(self, x_piece, kernel, n0: int, r0: int):
        """Multiply the input piece ``x[n0:n0+nb, r0:r0+hr]`` by every tap and add it in place."""
        xp, spec = self.xp, self.spec
        nb, hr, w = x_piece.shape[:3]
        kh, kw, fg = spec.kernel_height, spec.kernel_width, spec.filters_per_group
        # (G, pixels, Cg) @ (G, Cg, taps*Fg), then filters innermost: (N, H, W, kh, kw, G*Fg).
        products = grouped_matmul(xp, pixels_by_group(xp, x_piece, spec.groups),
                                  xp.matrix_transpose(kernel_by_group(xp, kernel, spec.groups)))
        products = xp.permute_dims(xp.reshape(products, (spec.groups, -1, kh * kw, fg)),
                                   (1, 2, 0, 3))
        products = xp.reshape(products, (nb, hr, w, kh, kw, spec.filters))
        if self.set_once:
            if self.bias is not None:
                products = add_into(xp, products, ..., self.bias)
            index = (slice(n0, n0 + nb), slice(r0, r0 + hr), ...)
            self.full = set_into(xp, self.full, index, xp.permute_dims(products, (0, 1, 3, 2, 4, 5)))
            return
        for first_h, stop_h, shift_h, residue_h in self.blocks_h:
            # Input rows i land on grid row i + shift: keep those inside the buffer.
            i0 = max(0, -shift_h - r0)
            i1 = min(hr, self.rows - shift_h - r0)
            for first_w, stop_w, shift_w, residue_w in self.blocks_w:
                j0 = max(0, -shift_w)
                j1 = min(w, self.cols - shift_w)
                if i0 >= i1 or j0 >= j1:
                    continue
                block = products[:, i0:i1, j0:j1, first_h:stop_h, first_w:stop_w, :]
                row = r0 + i0 + shift_h
                col = j0 + shift_w
                index = (slice(n0, n0 + nb), slice(row, row + i1 - i0),
                         slice(residue_h, residue_h + stop_h - first_h),
                         slice(col, col + j1 - j0),
                         slice(residue_w, residue_w + stop_w - first_w), slice(None))
                self.full = add_into(xp, self.full, index,
                                     xp.permute_dims(block, (0, 1, 3, 2, 4, 5)))


class IntoUncropped(_FiltersInnermost):
    """Filters innermost into the uncropped output; Keras' crop is copied out at the end."""

    def _offsets(self):
        return 0, 0

    def _grid(self):
        return _uncropped_extent(self.spec, self.blocks_h, self.blocks_w)

    def output(self, out_dtype):
        """The result: a new C-contiguous array in the caller's layout and dtype."""
        spec = self.spec
        (sh, sw) = spec.strides
        full = self.xp.reshape(self.full,
                               (spec.batch, self.rows * sh, self.cols * sw, spec.filters))
        cropped = full[:, spec.pad_top:spec.pad_top + spec.out_height,
                       spec.pad_left:spec.pad_left + spec.out_width, :]
        return in_caller_layout(self.xp, cropped, spec, out_dtype)


class IntoOutput(_FiltersInnermost):
    """Filters innermost into the output itself: a grid that starts at Keras' crop
    (``pad_top``, ``pad_left``) and holds ``out_height / sh`` by ``out_width / sw`` cells."""

    def _offsets(self):
        return self.spec.pad_top, self.spec.pad_left

    def _grid(self):
        spec = self.spec
        return spec.out_height // spec.strides[0], spec.out_width // spec.strides[1]

    def output(self, out_dtype):
        return self.xp.reshape(self.full, self.spec.output_shape)


class TapsOutermost:
    """One add per tap of ``(G, Fg, N, H, W)`` products into ``(G, Fg, N, rows, sh, cols, sw)``:
    runs of ``in_width`` values where filters innermost would add runs of a few."""

    def __init__(self, xp, spec: ConvTransposeSpec, bias, dtype, device_):
        self.xp, self.spec = xp, spec
        (sh, sw), (dh, dw) = spec.strides, spec.dilation_rate
        self.blocks_h = tap_blocks(spec.kernel_height, sh, dh)
        self.blocks_w = tap_blocks(spec.kernel_width, sw, dw)
        self.rows, self.cols = _uncropped_extent(spec, self.blocks_h, self.blocks_w)
        if bias is not None:
            bias = xp.reshape(bias, (spec.groups, spec.filters_per_group, 1, 1, 1, 1, 1))
        shape = (spec.groups, spec.filters_per_group, spec.batch, self.rows, sh, self.cols, sw)
        self.full = _starting_buffer(xp, shape, bias, dtype, device_)

    def add(self, x_piece, kernel, n0: int, r0: int):
        """Multiply the input piece ``x[n0:n0+nb, r0:r0+hr]`` by every tap and add it in place."""
        xp, spec = self.xp, self.spec
        nb, hr, w = x_piece.shape[:3]
        kh, kw = spec.kernel_height, spec.kernel_width
        # (G, taps*Fg, Cg) @ (G, Cg, pixels): kernel rows times pixels.
        products = grouped_matmul(xp, kernel_by_group(xp, kernel, spec.groups),
                                  xp.matrix_transpose(pixels_by_group(xp, x_piece, spec.groups)))
        products = xp.reshape(products, (spec.groups, kh, kw, spec.filters_per_group, nb, hr, w))
        for first_h, stop_h, shift_h, residue_h in self.blocks_h:
            for tap_h in range(first_h, stop_h):
                row = shift_h + r0
                for first_w, stop_w, shift_w, residue_w in self.blocks_w:
                    for tap_w in range(first_w, stop_w):
                        index = (slice(None), slice(None), slice(n0, n0 + nb),
                                 slice(row, row + hr), residue_h + tap_h - first_h,
                                 slice(shift_w, shift_w + w), residue_w + tap_w - first_w)
                        self.full = add_into(xp, self.full, index, products[:, tap_h, tap_w, ...])

    def output(self, out_dtype):
        """The result: a new C-contiguous array in the caller's layout and dtype."""
        spec = self.spec
        (sh, sw) = spec.strides
        full = self.xp.reshape(self.full,
                               (spec.filters, spec.batch, self.rows * sh, self.cols * sw))
        cropped = full[:, :, spec.pad_top:spec.pad_top + spec.out_height,
                       spec.pad_left:spec.pad_left + spec.out_width]
        return in_caller_layout(self.xp, self.xp.permute_dims(cropped, (1, 2, 3, 0)), spec,
                                out_dtype)
