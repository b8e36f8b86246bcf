"""The forward's placements: where each input piece's tap products are added, one class per mode,
for 1, 2 or 3 spatial axes alike.

Along each spatial axis, tap ``t`` sends input index ``i`` to full-output index ``i*s + t*d``.
The output buffer is viewed as cells of ``s`` along every axis, ``(N, cells_1, s_1, cells_2, s_2,
..., F)``, so a block of taps sharing a shift along every axis (one block per axis, the blocks
combined by ``itertools.product``) lands as one strided add:

- :class:`IntoUncropped`: filters innermost, the uncropped output; Keras' crop is copied out at
  the end.
- :class:`IntoOutput`: the same layout clipped to the output itself, its grid starting at Keras'
  crop, when that takes no more adds on any axis (:func:`_output_grid_fits`) and the caller wants
  channels-last in the compute dtype: nothing is copied.
- :class:`TapsOutermost`: ``(G, Fg, N, cells_1, s_1, ...)``, one add per tap of runs of the last
  spatial axis' length (image outputs of 1-3 filters on NumPy), cropped and transposed at the
  end.

A buffer starts as the bias (zeros without one), so the products add onto it; where every cell
takes exactly one product (kernel == stride on every axis, nothing cropped), the products plus
the bias are set into an unset one instead: no fill, no adds (on NumPy, BLAS writes them there
itself: ``_FiltersInnermost._multiply_into_output``; on torch, ``addmm`` adds the bias into a
products buffer every piece reuses: ``_multiply_into_scratch``, where torch multiplies the pieces
of the other placements with filters innermost too).
"""

from __future__ import annotations

import itertools
import math

from .._spec import ConvTransposeSpec
from ._arrays import (Scratch, add_into, empty, grouped_matmul, in_caller_layout,
                      kernel_by_group, pixels_by_group, set_into, zeros)
from ._blas import matmul
from ._tuning import (Tuning, few_filters, multiplies_into_output, multiplies_into_scratch,
                      taps_outermost)


def make_placement(xp, spec: ConvTransposeSpec, tuning: Tuning, bias, dtype, out_dtype, device_):
    """The placement for this call (see the module docstring for when each applies)."""
    if taps_outermost(xp, spec, tuning):
        return TapsOutermost(xp, spec, bias, dtype, device_)
    if (spec.data_format == "channels_last" and dtype == out_dtype
            and all(_output_grid_fits(spec, axis) for axis in range(spec.rank))):
        return IntoOutput(xp, spec, bias, dtype, device_)
    return IntoUncropped(xp, spec, bias, dtype, device_)


def tap_blocks(kernel_size: int, stride: int, dilation: int, offset: int = 0):
    """Taps grouped into blocks ``(first, stop, shift, residue)`` that land together.

    Along one axis, tap ``t`` moves input index ``i`` to index ``i*s + t*d - offset = (i +
    shift)*s + residue`` of a buffer that starts ``offset`` into the full output. Undilated,
    the taps with one shift take consecutive residues, so one strided add places the whole
    block; dilated taps go one by one.
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
    must be whole grid cells, and starting off the stride grid must not split a tap block in two
    (k=5, s=2 with the crop at 1 keeps 3 blocks; k=4, s=2 goes from 2 to 3 blocks, whose more and
    shorter adds cost more than the crop copy they save)."""
    kernel_size, stride, dilation = (spec.kernel_size[axis], spec.strides[axis],
                                     spec.dilation_rate[axis])
    out_size, pad = spec.out_spatial[axis], spec.pad_before[axis]
    return (out_size % stride == 0 and len(tap_blocks(kernel_size, stride, dilation, pad))
            == len(tap_blocks(kernel_size, stride, dilation)))


def _starting_buffer(xp, shape, bias, dtype, device_):
    """The buffer products add onto: ``bias`` (already shaped to broadcast over ``shape``), or
    zeros. Starting from the bias saves a pass over the output to add it afterwards."""
    if bias is None:
        return zeros(xp, shape, dtype, device_)
    return set_into(xp, empty(xp, shape, dtype, device_), ..., bias)


def _uncropped_extent(spec: ConvTransposeSpec, blocks) -> tuple:
    """Grid cells of the uncropped buffer along each axis (``blocks``: that axis' tap blocks): up
    to the last landing cell, and to the crop's end when output_padding reaches past it (nothing
    lands there)."""
    return tuple(max(length + axis_blocks[-1][2], -(-(pad + out) // stride))
                 for length, axis_blocks, pad, out, stride
                 in zip(spec.in_spatial, blocks, spec.pad_before, spec.out_spatial, spec.strides))


def cells_by_stride(cells, strides) -> tuple:
    """``(cells_1, s_1, cells_2, s_2, ...)``: the spatial part of a buffer's grid view."""
    return tuple(size for pair in zip(cells, strides) for size in pair)


def _crop(spec: ConvTransposeSpec):
    """The spatial slices that keep Keras' output out of the uncropped one."""
    return tuple(slice(pad, pad + out) for pad, out in zip(spec.pad_before, spec.out_spatial))


def _interleaved(rank: int) -> tuple:
    """The axes order taking ``(N, *spatial, *taps, F)`` products to ``(N, i_1, t_1, ..., F)``,
    the order of the buffer's grid view."""
    return (0, *(a for axis in range(1, rank + 1) for a in (axis, axis + rank)), 2 * rank + 1)


class _FiltersInnermost:
    """Adds tap blocks of ``(N, *spatial, *taps, F)`` products into a buffer viewed as
    ``(N, cells_1, s_1, ..., F)`` that starts ``_offsets()`` along each axis into the full
    output; what lands outside it is dropped."""

    def __init__(self, xp, spec: ConvTransposeSpec, bias, dtype, device_):
        self.xp, self.spec = xp, spec
        self.blocks = [tap_blocks(k, s, d, offset) for k, s, d, offset in zip(
            spec.kernel_size, spec.strides, spec.dilation_rate, self._offsets())]
        self.cells = self._grid()
        shape = (spec.batch, *cells_by_stride(self.cells, spec.strides), spec.filters)
        # Kernel == stride (unet's k2 s2), uncropped: each cell takes exactly one product, so the
        # products (plus the bias, while in cache) are set into an unset buffer, no adds.
        self.set_once = all(
            len(blocks) == 1 and blocks[0] == (0, stride, 0, 0) and cells == length
            for blocks, stride, cells, length
            in zip(self.blocks, spec.strides, self.cells, spec.in_spatial))
        self.scratch = Scratch()
        if self.set_once:
            self.bias = bias
            self.full = empty(xp, shape, dtype, device_)
        else:       # the buffer starts as the bias
            self.bias = None
            self.full = _starting_buffer(xp, shape, bias, dtype, device_)

    def add(self, x_piece, kernel, n0: int, r0: int):
        """Multiply the input piece ``x[n0:n0+nb, r0:r0+rows]`` (a band along the first spatial
        axis) by every tap and add it in place."""
        xp, spec = self.xp, self.spec
        nb, *piece_spatial = x_piece.shape[:-1]
        if self.set_once and multiplies_into_output(xp, spec):
            self._multiply_into_output(x_piece, kernel, n0, r0)
            return
        order = _interleaved(spec.rank)
        if multiplies_into_scratch(xp, spec):
            products = xp.reshape(self._multiply_into_scratch(x_piece, kernel),
                                  (nb, *piece_spatial, *spec.kernel_size, spec.filters))
            if self.set_once:
                index = (slice(n0, n0 + nb), slice(r0, r0 + piece_spatial[0]), ...)
                self.full = set_into(xp, self.full, index, xp.permute_dims(products, order))
            else:
                self._add_blocks(products, n0, r0)
            return
        fg = spec.filters_per_group
        # (G, pixels, Cg) @ (G, Cg, taps*Fg), then filters innermost: (N, *spatial, *taps, G*Fg).
        products = grouped_matmul(xp, pixels_by_group(xp, x_piece, spec.groups),
                                  xp.matrix_transpose(kernel_by_group(xp, kernel, spec.groups)))
        products = xp.reshape(products, (spec.groups, -1, math.prod(spec.kernel_size), fg))
        products = xp.permute_dims(products, (1, 2, 0, 3))
        products = xp.reshape(products, (nb, *piece_spatial, *spec.kernel_size, spec.filters))
        if self.set_once:
            if self.bias is not None:
                products = add_into(xp, products, ..., self.bias)
            index = (slice(n0, n0 + nb), slice(r0, r0 + piece_spatial[0]), ...)
            self.full = set_into(xp, self.full, index, xp.permute_dims(products, order))
            return
        self._add_blocks(products, n0, r0)

    def _add_blocks(self, products, n0: int, r0: int):
        """Add a piece's ``(nb, *spatial, *taps, F)`` products, block of taps by block."""
        xp, spec = self.xp, self.spec
        nb, *piece_spatial = products.shape[:spec.rank + 1]
        order = _interleaved(spec.rank)
        starts = (r0,) + (0,) * (spec.rank - 1)
        for blocks in itertools.product(*self.blocks):
            inputs, taps, target = [], [], [slice(n0, n0 + nb)]
            for (first, stop, shift, residue), start, length, cells in zip(
                    blocks, starts, piece_spatial, self.cells):
                # Input indices i land on grid cell start + i + shift: keep those inside.
                i0, i1 = max(0, -shift - start), min(length, cells - shift - start)
                if i0 >= i1:
                    break
                cell = start + i0 + shift
                inputs.append(slice(i0, i1))
                taps.append(slice(first, stop))
                target += [slice(cell, cell + i1 - i0), slice(residue, residue + stop - first)]
            else:
                block = products[(slice(None), *inputs, *taps, slice(None))]
                self.full = add_into(xp, self.full, (*target, slice(None)),
                                     xp.permute_dims(block, order))

    def _multiply_into_scratch(self, x_piece, kernel):
        """A piece's products, ``(pixels, taps*F)``, by torch's ``mm`` into one buffer every
        piece reuses (:class:`._arrays.Scratch`), a set-once piece's bias added by the GEMM
        (``addmm``): a fresh products tensor each piece cost page faults and heap, the bias a
        pass of its own (unet3d's k2 s2: about 25% of the call's CPU time)."""
        torch, spec = self.xp, self.spec
        rows = torch.reshape(x_piece, (-1, spec.in_channels))
        columns = torch.reshape(kernel, (-1, spec.in_channels)).T         # (C, taps*F), a view
        out = self.scratch.view(torch, "products", (rows.shape[0], columns.shape[1]),
                                rows.dtype, rows.device)
        if self.bias is None:
            return torch.mm(rows, columns, out=out)
        return torch.addmm(self.bias.repeat(math.prod(spec.kernel_size)), rows, columns, out=out)

    def _multiply_into_output(self, x_piece, kernel, n0: int, r0: int):
        """Set once by NumPy's ``matmul(..., out=)``, straight into the buffer: with the taps of
        every axis but the last fixed, a piece's products are ``(..., W, s_last*F)`` matrices
        whose rows (``s_last*F`` values) are contiguous in the buffer, so BLAS writes each
        output value once, with no products array and no copy (when it wins:
        :func:`._tuning.multiplies_into_output`). The bias rides along as an input channel of
        ones (a pass adding it afterwards cost a third more)."""
        np, spec = self.xp, self.spec
        nb, rows = x_piece.shape[:2]
        # Kernel (*taps, F, C) as rows (*taps, s_last*F, C); the bias, tiled, as one more column.
        kernel = np.reshape(kernel, (*spec.kernel_size[:-1], -1, spec.in_channels))
        if self.bias is not None:
            ones = np.ones((*x_piece.shape[:-1], 1), dtype=x_piece.dtype)
            x_piece = np.concatenate((x_piece, ones), axis=-1)
            bias = np.broadcast_to(np.reshape(np.tile(self.bias, spec.kernel_size[-1]), (-1, 1)),
                                   (*kernel.shape[:-1], 1))
            kernel = np.concatenate((kernel, bias), axis=-1)
        piece = self.full[n0:n0 + nb, r0:r0 + rows, ...]
        for taps in itertools.product(*(range(k) for k in spec.kernel_size[:-1])):
            index = [slice(None), slice(None)]
            for axis, tap in enumerate(taps):
                index += [tap] if axis == 0 else [slice(None), tap]
            view = piece[tuple(index)]                    # (nb, rows, ..., W, s_last, F)
            matmul(np, x_piece, np.matrix_transpose(kernel[taps]),
                   out=np.reshape(view, (*view.shape[:-2], -1)))


class IntoUncropped(_FiltersInnermost):
    """Filters innermost into the uncropped output; Keras' crop is copied out at the end."""

    def _offsets(self):
        return (0,) * self.spec.rank

    def _grid(self):
        return _uncropped_extent(self.spec, self.blocks)

    def output(self, out_dtype):
        """The result: a new C-contiguous array in the caller's layout and dtype."""
        spec = self.spec
        full = self.xp.reshape(self.full, (spec.batch, *(cells * stride for cells, stride
                                                         in zip(self.cells, spec.strides)),
                                           spec.filters))
        return in_caller_layout(self.xp, full[(slice(None), *_crop(spec), slice(None))], spec,
                                out_dtype)


class IntoOutput(_FiltersInnermost):
    """Filters innermost into the output itself: a grid that starts at Keras' crop
    (``pad_before``) and holds ``out / s`` cells along each axis."""

    def _offsets(self):
        return self.spec.pad_before

    def _grid(self):
        return tuple(out // stride for out, stride in zip(self.spec.out_spatial, self.spec.strides))

    def output(self, out_dtype):
        return self.xp.reshape(self.full, self.spec.output_shape)


class TapsOutermost:
    """One add per tap of ``(G, Fg, N, *spatial)`` products into ``(G, Fg, N, cells_1, s_1,
    ...)``: runs of the last spatial axis' length where filters innermost would add runs of a
    few."""

    def __init__(self, xp, spec: ConvTransposeSpec, bias, dtype, device_):
        self.xp, self.spec = xp, spec
        blocks = [tap_blocks(k, s, d)
                  for k, s, d in zip(spec.kernel_size, spec.strides, spec.dilation_rate)]
        # Per axis, each tap's (tap, shift, residue).
        self.taps = [[(tap, shift, residue + tap - first)
                      for first, stop, shift, residue in axis_blocks
                      for tap in range(first, stop)] for axis_blocks in blocks]
        self.cells = _uncropped_extent(spec, blocks)
        if bias is not None:
            bias = xp.reshape(bias, (spec.groups, spec.filters_per_group,
                                     *(1,) * (1 + 2 * spec.rank)))
        shape = (spec.groups, spec.filters_per_group, spec.batch,
                 *cells_by_stride(self.cells, spec.strides))
        self.full = _starting_buffer(xp, shape, bias, dtype, device_)

    def add(self, x_piece, kernel, n0: int, r0: int):
        """Multiply the input piece ``x[n0:n0+nb, r0:r0+rows]`` by every tap and add it in place."""
        xp, spec = self.xp, self.spec
        nb, *piece_spatial = x_piece.shape[:-1]
        # (G, taps*Fg, Cg) @ (G, Cg, pixels): kernel rows times pixels.
        products = grouped_matmul(xp, kernel_by_group(xp, kernel, spec.groups),
                                  xp.matrix_transpose(pixels_by_group(xp, x_piece, spec.groups)))
        products = xp.reshape(products, (spec.groups, *spec.kernel_size, spec.filters_per_group,
                                         nb, *piece_spatial))
        starts = (r0,) + (0,) * (spec.rank - 1)
        for taps in itertools.product(*self.taps):
            index = [slice(None), slice(None), slice(n0, n0 + nb)]
            for (_, shift, residue), start, length in zip(taps, starts, piece_spatial):
                index += [slice(start + shift, start + shift + length), residue]
            self.full = add_into(xp, self.full, tuple(index),
                                 products[(slice(None), *(tap for tap, _, _ in taps), ...)])

    def output(self, out_dtype):
        """The result: a new C-contiguous array in the caller's layout and dtype."""
        spec = self.spec
        full = self.xp.reshape(self.full, (spec.filters, spec.batch, *(
            cells * stride for cells, stride in zip(self.cells, spec.strides))))
        cropped = full[(slice(None), slice(None), *_crop(spec))]
        if spec.data_format == "channels_first" or not few_filters(spec):
            return in_caller_layout(self.xp, self.xp.permute_dims(
                cropped, (*range(1, spec.rank + 2), 0)), spec, out_dtype)
        # Channels-last with a few filters: one copy per filter, runs of the image width.
        return self.xp.stack([self.xp.astype(cropped[f, ...], out_dtype, copy=False)
                              for f in range(spec.filters)], axis=-1)
