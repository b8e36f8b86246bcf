"""The CPU backward, for 1, 2 or 3 spatial axes alike, two ways, and a third for rank 1
(:func:`._tuning.backward_by_cells` and :func:`._tuning.backward_by_shifts` choose):

- by windows: ``dx`` is the strided correlation of ``dy`` with the kernel and ``dkernel`` the
  GEMM of the same ``dy`` windows with ``x`` over batch x space; each piece of the input gathers
  its windows once (``k^R`` tap slices of ``F`` values per pixel, from its own zero-padded slab of
  ``dy``), for its rows of ``dx`` and its share of ``dkernel``, while they are in cache.
- by cells: in uncropped output coordinates ``u = o + pad_before``, cells ``c = u // s`` per axis
  hold ``s^R*F`` values, and input pixel ``i`` is read by cells ``i + delta``, ``delta`` in ``0 ..
  span - 1``, ``span = (k - 1)*d // s + 1`` per axis. Each piece copies its ``dy`` once into its
  cells (the crop undone, zeros around), laid flat on a grid padded by ``span - 1`` cells per
  axis, so cell ``i + delta`` is a fixed number of rows after cell ``i``: one GEMM of the cells by
  every shift's weights, then ``dx`` adds each shift's products from its row offset on; one GEMM
  of the cells by ``x`` placed at each shift's offset gives every shift's ``dkernel``. No
  windows; the grid's padding rows are computed and dropped, and where ``k`` is not a multiple
  of ``s`` the weights hold zeros, so it pays only where the gather dominates.
- by shifts (rank 1, undilated, ungrouped, ``k`` a multiple of ``s``): pixel ``i``'s window is
  the ``k*F`` values of ``dy`` from index ``i*s - pad_before`` on, contiguous in a channels-last
  image, so its ``k/s`` cell shifts are, for every pixel at once, ``(pixels, s*F)`` views of
  ``dy`` (rows ``s*F`` apart; a run of images is one such run where each image of ``dy`` is
  ``length*s`` long, as 'same' makes it): ``dx`` is ``k/s`` GEMMs of those views accumulated
  into its rows, ``dkernel`` one GEMM per shift with ``x``; nothing is copied. Pixels whose
  window crosses their image's edge (a few per image) get their ``dx`` rows from their
  zero-padded windows, and where a run of images holds them, their shares of ``dkernel`` from
  the views (the next image's values) are taken back and their windows' added.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import array_api_extra as xpx
from array_api_compat import (array_namespace, device, is_jax_namespace, is_numpy_namespace,
                              is_torch_namespace)

from .._spec import ConvTransposeSpec
from ._arrays import (Scratch, add_into, by_group, compute_dtype, empty, from_channels_last,
                      grouped_matmul, in_caller_layout, itemsize, kernel_by_group,
                      pixels_by_group, set_into, to_channels_last, zeros)
from ._blas import InOrder, matmul, on_one_blas_thread, share
from ._placement import cells_by_stride
from ._tuning import (Tuning, backward_by_cells, backward_by_shifts, backward_cells_budget,
                      backward_windows_budget, few_filters, input_pieces, pieces,
                      pieces_make_no_tensors, taps_outermost)


@on_one_blas_thread
def conv2d_transpose_backward(dy, x, kernel, spec: ConvTransposeSpec, *, tuning=Tuning()):
    """Gradients (dx, dkernel, dbias) of the forward for an upstream gradient ``dy``."""
    xp = array_namespace(x)
    out_dtype = x.dtype
    work = compute_dtype(xp, out_dtype)
    dy = xp.astype(to_channels_last(xp, dy, spec), work, copy=False)
    x = xp.astype(to_channels_last(xp, x, spec), work, copy=False)
    by_filter = taps_outermost(xp, spec, tuning) and few_filters(spec)
    if backward_by_cells(xp, spec, tuning):
        dx, dkernel = _backward_by_cells(xp, dy, x, xp.astype(kernel, work, copy=False), spec,
                                         tuning, work, out_dtype)
        dbias = _bias_gradient(xp, dy, spec, by_filter)
        return (dx, xp.astype(dkernel, out_dtype, copy=False),
                xp.astype(dbias, out_dtype, copy=False))
    if backward_by_shifts(xp, spec, tuning):
        dx, dkernel = _backward_by_shifts(xp, dy, x, xp.astype(kernel, work, copy=False), spec,
                                          tuning, work, out_dtype)
        # Inf - Inf from the shares taken back (see _backward_by_shifts) is NaN where the
        # windows give Inf: a non-finite dkernel the rule chose this way (NumPy, torch) is
        # recomputed by them; a forced choice, or a traced JAX array, keeps its own.
        if (tuning.backward_by_shifts or is_jax_namespace(xp)
                or bool(xp.all(xp.isfinite(dkernel)))):
            dbias = _bias_gradient(xp, dy, spec, by_filter)
            return (dx, xp.astype(dkernel, out_dtype, copy=False),
                    xp.astype(dbias, out_dtype, copy=False))
    kernel_rows = kernel_by_group(xp, xp.astype(kernel, work, copy=False), spec.groups)
    bytes_per_pixel = math.prod(spec.kernel_size) * spec.filters * itemsize(xp, work)
    chosen = pieces(spec, tuning, bytes_per_pixel,
                    backward_windows_budget(xp, spec, bytes_per_pixel, itemsize(xp, work)))
    whole = len(chosen) == 1 and spec.data_format == "channels_last"
    dx = None if whole else empty(xp, spec.input_shape, out_dtype, device(x))
    dkernel = InOrder()                       # (G, taps*Fg, Cg), summed over the pieces
    torch_dkernel = None                      # torch's instead, summed by addmm_ (_torch_piece)
    scratch = Scratch()                       # the pieces' windows and dx rows

    def backward_piece(numbered):
        nonlocal dx, torch_dkernel
        index, (n0, n1, r0, r1) = numbered
        windows = _windows(xp, dy, spec, n0, n1, r0, r1, scratch,  # (G, pixels, taps*Fg)
                           by_filter and spec.groups == 1)
        if pieces_make_no_tensors(xp, spec) and not whole:     # torch: one thread, in order
            torch_dkernel = _torch_piece(xp, windows[0, ...], kernel_rows[0, ...],
                                         x[n0:n1, r0:r1, ...], dx, torch_dkernel, scratch, spec,
                                         (n0, n1, r0, r1))
            return
        dx_piece = xp.permute_dims(grouped_matmul(xp, windows, kernel_rows), (1, 0, 2))
        dx_piece = xp.reshape(dx_piece, (n1 - n0, r1 - r0, *spec.in_spatial[1:], -1))
        dx_piece = xp.astype(from_channels_last(xp, dx_piece, spec), out_dtype, copy=False)
        if whole:       # contiguous already
            dx = dx_piece
        elif spec.data_format == "channels_first":
            dx = set_into(xp, dx, (slice(n0, n1), slice(None), slice(r0, r1), ...), dx_piece)
        else:
            dx = set_into(xp, dx, (slice(n0, n1), slice(r0, r1), ...), dx_piece)
        dkernel.add(index, grouped_matmul(xp, xp.matrix_transpose(windows),
                                          pixels_by_group(xp, x[n0:n1, r0:r1, ...], spec.groups)))

    share(backward_piece, enumerate(chosen))
    dkernel = dkernel.total if torch_dkernel is None else torch_dkernel
    if dkernel is None:                       # an empty batch
        dkernel = xp.zeros(kernel_rows.shape, dtype=work, device=device(x))
    dkernel = xp.reshape(dkernel, (spec.groups, *spec.kernel_size, spec.filters_per_group, -1))
    dkernel = xp.permute_dims(dkernel, (*range(1, spec.rank + 2), 0, spec.rank + 2))
    dkernel = xp.reshape(dkernel, spec.kernel_shape)
    dbias = _bias_gradient(xp, dy, spec, by_filter)
    return dx, xp.astype(dkernel, out_dtype, copy=False), xp.astype(dbias, out_dtype, copy=False)


def _bias_gradient(xp, dy, spec: ConvTransposeSpec, by_filter: bool):
    """``dy`` (channels-last) summed over all but its filters, ``by_filter`` one filter at a
    time (:func:`._tuning.few_filters`; pix2pix_out's 3 filters: 1.38 -> 0.07 ms)."""
    axes = tuple(range(spec.rank + 1))
    if not by_filter:
        return xp.sum(dy, axis=axes)
    return xp.stack([xp.sum(dy[..., f], axis=axes) for f in range(spec.filters)])


def _torch_piece(torch, windows, kernel_rows, x_piece, dx, dkernel, scratch: Scratch,
                 spec: ConvTransposeSpec, piece):
    """One of several pieces of the backward by windows on torch (one group), making no tensor
    (a tensor per piece takes new heap each piece on torch: :class:`._arrays.Scratch`): the piece's
    rows of ``dx`` by ``mm`` straight into ``dx`` where they are contiguous there (channels-last
    in the compute dtype), else into ``scratch`` and set into ``dx``; ``dkernel`` (``None``
    before the first piece) summed by ``addmm_``. Returns ``dkernel``."""
    n0, n1, r0, r1 = piece
    x_rows = torch.reshape(x_piece, (-1, spec.in_channels))
    if dkernel is None:
        dkernel = torch.unsqueeze(windows.T @ x_rows, 0)
    else:
        dkernel[0, ...].addmm_(windows.T, x_rows)
    if spec.data_format == "channels_last" and dx.dtype == windows.dtype:
        torch.mm(windows, kernel_rows, out=dx[n0:n1, r0:r1, ...].view(-1, spec.in_channels))
        return dkernel
    dx_rows = scratch.view(torch, "dx", (windows.shape[0], spec.in_channels), windows.dtype,
                           windows.device)
    torch.mm(windows, kernel_rows, out=dx_rows)
    dx_piece = from_channels_last(torch, torch.reshape(
        dx_rows, (n1 - n0, r1 - r0, *spec.in_spatial[1:], -1)), spec)
    index = ((slice(n0, n1), slice(None), slice(r0, r1), ...)
             if spec.data_format == "channels_first" else (slice(n0, n1), slice(r0, r1), ...))
    dx[index] = dx_piece
    return dkernel


def _backward_by_cells(xp, dy, x, kernel, spec: ConvTransposeSpec, tuning: Tuning, work, out_dtype):
    """The backward over cells of ``dy`` (see the module docstring); ``dy`` and ``x`` channels-last
    in the compute dtype ``work``, ``kernel`` in Keras' layout; returns ``dx`` (the caller's
    layout, ``out_dtype``) and ``dkernel`` (``work``)."""
    groups, cg = spec.groups, spec.channels_per_group
    spans = tuple((k - 1) * d // s + 1 for k, d, s in zip(spec.kernel_size, spec.dilation_rate,
                                                          spec.strides))
    shifts = math.prod(spans)
    weights = _cell_weights(xp, kernel, spec, spans)              # (G, s^R*Fg, shifts*Cg)
    bytes_per_pixel = math.prod(spec.strides) * spec.filters * itemsize(xp, work)
    chosen = pieces(spec, tuning, bytes_per_pixel,
                    backward_cells_budget(xp, spec, spans, bytes_per_pixel, itemsize(xp, work)))
    dx = empty(xp, spec.input_shape, out_dtype, device(x))
    dkernel = InOrder()

    def backward_piece(numbered):
        nonlocal dx
        index, (n0, n1, r0, r1) = numbered
        # The piece's cells on a grid padded by span - 1 cells per axis; laid flat, a pixel's
        # shifted cells are a fixed number of rows on, so each shift is one row range of them.
        grid = (n1 - n0, r1 - r0 + spans[0] - 1,
                *(n + span - 1 for n, span in zip(spec.in_spatial[1:], spans[1:])))
        rows = math.prod(grid)
        offsets = [sum(delta * math.prod(grid[axis + 2:]) for axis, delta in enumerate(shift))
                   for shift in itertools.product(*(range(span) for span in spans))]
        cells = _cells(xp, dy, spec, grid, n0, n1, r0, offsets[-1], work, device(x))
        cells = xp.reshape(by_group(xp, xp.reshape(cells, (cells.shape[0], -1, spec.filters)),
                                    groups, 2), (groups, cells.shape[0], -1))
        inside = (slice(None), slice(0, r1 - r0), *(slice(0, n) for n in spec.in_spatial[1:]),
                  ...)
        x_grid = set_into(xp, zeros(xp, (*grid, spec.in_channels), work, device(x)), inside,
                          x[n0:n1, r0:r1, ...])
        x_grid = pixels_by_group(xp, x_grid, groups)             # (G, rows, Cg)
        # One GEMM by every shift's weights; dx adds each shift's products from its rows on.
        products = grouped_matmul(xp, cells, weights)            # (G, cell rows, shifts*Cg)
        parts = [products[:, offset:offset + rows, shift * cg:(shift + 1) * cg]
                 for shift, offset in enumerate(offsets)]
        dx_grid = parts[0] if shifts == 1 else parts[0] + parts[1]
        for part in parts[2:]:
            dx_grid = add_into(xp, dx_grid, ..., part)
        # dkernel's shifts likewise in one GEMM: x placed at each shift's rows instead.
        x_shifted = zeros(xp, products.shape, work, device(x))
        for shift, offset in enumerate(offsets):
            x_shifted = set_into(xp, x_shifted, (slice(None), slice(offset, offset + rows),
                                                 slice(shift * cg, (shift + 1) * cg)), x_grid)
        dkernel.add(index, grouped_matmul(xp, xp.matrix_transpose(cells), x_shifted))
        dx_piece = xp.reshape(xp.permute_dims(dx_grid, (1, 0, 2)), (*grid, spec.in_channels))
        dx_piece = xp.astype(from_channels_last(xp, dx_piece[inside], spec), out_dtype,
                             copy=False)
        if spec.data_format == "channels_first":
            dx = set_into(xp, dx, (slice(n0, n1), slice(None), slice(r0, r1), ...), dx_piece)
        else:
            dx = set_into(xp, dx, (slice(n0, n1), slice(r0, r1), ...), dx_piece)

    share(backward_piece, enumerate(chosen))
    dkernel = dkernel.total
    if dkernel is None:                       # an empty batch
        dkernel = xp.zeros(weights.shape, dtype=work, device=device(x))
    return dx, _taps_of_cells(xp, dkernel, spec, spans)


def _backward_by_shifts(xp, dy, x, kernel, spec: ConvTransposeSpec, tuning: Tuning, work,
                        out_dtype):
    """The rank-1 backward by cell shifts (see the module docstring): ``dy`` and ``x``
    channels-last in the compute dtype ``work``, ``kernel`` in Keras' layout ``(k, F, C)``;
    returns ``dx`` (the caller's layout, ``out_dtype``) and ``dkernel`` (``work``)."""
    (k,), (s,), (pad,), (out,), (length,) = (spec.kernel_size, spec.strides, spec.pad_before,
                                             spec.out_spatial, spec.in_spatial)
    batch, channels, cell = spec.batch, spec.in_channels, s * spec.filters
    shifts = k // s
    # Pixels lo..hi-1 read a window inside their own image's dy; the others cross its edge.
    lo = min(length, max(0, -(-pad // s)))
    hi = min(length, max(lo, (out + pad - k) // s + 1))
    kernel_shifts = xp.reshape(kernel, (shifts, cell, channels))   # tap delta*s + rho, filter f
    kernel_rows = xp.reshape(kernel, (k * spec.filters, channels))
    dy_flat, x_rows = xp.reshape(dy, (-1,)), xp.reshape(x, (-1, channels))
    dx = empty(xp, (batch * length, channels), work, device(x))
    dkernel = zeros(xp, (shifts, cell, channels), work, device(x))
    scratch = Scratch()                 # the pieces' shift products and edge windows
    # Runs of images share one flat row stride only where an image of dy is length cells long.
    pixels = tuning.piece_pixels or batch * length
    for n0, n1, r0, r1 in input_pieces(spec, pixels if out == length * s else min(pixels, length)):
        first, stop = n0 * length + max(r0, lo), (n1 - 1) * length + min(r1, hi)
        if lo < hi and first < stop:
            # Pixel g's window is the k*F values of dy from its offset on: shift delta of every
            # pixel at once is one (rows, s*F) view of dy, a row of s*F values per pixel.
            offset = (n0 * out + max(r0, lo) * s - pad) * spec.filters
            cells = [xp.reshape(dy_flat[offset + delta * cell:
                                        offset + (delta + stop - first) * cell],
                                (stop - first, cell)) for delta in range(shifts)]
            dx = _multiply_shifts_into(xp, dx, slice(first, stop), cells, kernel_shifts,
                                       scratch)
            rows = x_rows[first:stop, ...]
            parts = [grouped_matmul(xp, xp.matrix_transpose(cells[delta])[None, ...],
                                    rows[None, ...])[0, ...] for delta in range(shifts)]
            # Pixels between the piece's images read across an image's edge: their shares are
            # taken back here (their dx rows are set below).
            crossing = [g - first for n in range(n0, n1)
                        for i in itertools.chain(range(lo), range(hi, length))
                        if first <= (g := n * length + i) < stop]
            if crossing:
                taken = xp.asarray(crossing, device=device(x))
                crossing_rows = xp.take(rows, taken, axis=0)
                # Inf - Inf here is the caller's check (conv2d_transpose_backward), not a warning.
                with (xp.errstate(invalid="ignore") if is_numpy_namespace(xp)
                      else contextlib.nullcontext()):
                    parts = [part - matmul(xp, xp.matrix_transpose(xp.take(shifted, taken,
                                                                           axis=0)),
                                           crossing_rows) for shifted, part in zip(cells, parts)]
            dkernel = dkernel + xp.stack(parts)
        # The pixels whose windows cross their image's edge, by their zero-padded windows.
        for e0, e1 in ((r0, min(r1, lo)), (max(r0, hi), r1)):
            if e0 < e1:
                windows = _windows(xp, dy, spec, n0, n1, e0, e1, scratch)[0, ...]  # (pixels, k*F)
                dx_images = set_into(xp, xp.reshape(dx, (batch, length, channels)),
                                     (slice(n0, n1), slice(e0, e1), slice(None)),
                                     xp.reshape(matmul(xp, windows, kernel_rows),
                                                (n1 - n0, e1 - e0, -1)))
                dx = xp.reshape(dx_images, (-1, channels))
                edge_rows = xp.reshape(x[n0:n1, e0:e1, ...], (-1, channels))
                dkernel = dkernel + xp.reshape(matmul(xp, xp.matrix_transpose(windows), edge_rows),
                                               dkernel.shape)
    dx = xp.reshape(dx, (batch, length, channels))
    if spec.data_format != "channels_last" or work != out_dtype:
        dx = in_caller_layout(xp, dx, spec, out_dtype)
    return dx, xp.reshape(dkernel, spec.kernel_shape)


def _multiply_shifts_into(xp, dx, rows, cells, kernel_shifts, scratch: Scratch):
    """``dx[rows] = sum over shifts of cells[delta] @ kernel_shifts[delta]``: NumPy by BLAS into
    the rows themselves (one more product for each later shift, in ``scratch``, added), torch by
    ``addmm_`` accumulating there; elsewhere the sum is set."""
    if is_numpy_namespace(xp):
        target = dx[rows, ...]
        matmul(xp, cells[0], kernel_shifts[0, ...], out=target)
        for delta in range(1, len(cells)):
            target += matmul(xp, cells[delta], kernel_shifts[delta, ...], out=scratch.view(
                xp, "products", target.shape, target.dtype, device(target)))
        return dx
    if is_torch_namespace(xp):
        target = dx[rows, ...]
        xp.mm(cells[0], kernel_shifts[0, ...], out=target)
        for delta in range(1, len(cells)):
            target.addmm_(cells[delta], kernel_shifts[delta, ...])
        return dx
    products = cells[0] @ kernel_shifts[0, ...]
    for delta in range(1, len(cells)):
        products = products + cells[delta] @ kernel_shifts[delta, ...]
    return set_into(xp, dx, (rows, slice(None)), products)


def _cell_weights(xp, kernel, spec: ConvTransposeSpec, spans):
    """The kernel as one matrix per group, (G, s^R*Fg, shifts*Cg): row ``(rho, f)`` and column
    block ``delta`` (a cell shift, ``0..span-1`` per axis) hold tap ``t`` where ``t*d == delta*s
    + rho`` along every axis, zeros where no tap lands."""
    rank = spec.rank
    padded = xp.zeros((*(span * s for span, s in zip(spans, spec.strides)),
                       *kernel.shape[rank:]), dtype=kernel.dtype, device=device(kernel))
    padded = set_into(xp, padded, (*(slice(0, (k - 1) * d + 1, d) for k, d in
                                     zip(spec.kernel_size, spec.dilation_rate)), ...), kernel)
    split = xp.reshape(padded, (*cells_by_stride(spans, spec.strides), spec.filters_per_group,
                                spec.groups, spec.channels_per_group))
    order = (2 * rank + 1, *range(1, 2 * rank, 2), 2 * rank, *range(0, 2 * rank, 2),
             2 * rank + 2)
    return xp.reshape(xp.permute_dims(split, order),
                      (spec.groups, -1, math.prod(spans) * spec.channels_per_group))


def _taps_of_cells(xp, dkernel_cells, spec: ConvTransposeSpec, spans):
    """The gradient (G, s^R*Fg, shifts*Cg) of :func:`_cell_weights`' matrices as the Keras
    kernel's ``(*taps, Fg, Cin)``: the inverse of its layout, the entries no tap lands on
    dropped."""
    rank = spec.rank
    split = xp.reshape(dkernel_cells, (spec.groups, *spec.strides, spec.filters_per_group,
                                       *spans, spec.channels_per_group))
    order = (*(a for axis in range(rank) for a in (rank + 2 + axis, 1 + axis)), rank + 1, 0,
             2 * rank + 2)
    full = xp.reshape(xp.permute_dims(split, order),
                      (*(span * s for span, s in zip(spans, spec.strides)),
                       spec.filters_per_group, spec.in_channels))
    return full[(*(slice(0, (k - 1) * d + 1, d) for k, d in zip(spec.kernel_size,
                                                                  spec.dilation_rate)), ...)]


def _cells(xp, dy, spec: ConvTransposeSpec, grid, n0, n1, r0, extra_rows, work, device_):
    """The piece's cells of ``dy`` (uncropped output coordinates, ``s`` per axis, grid ``grid``
    from row ``r0`` on), flat: ``(rows + extra_rows, s^R*F)``, one row per cell, zeros where the
    crop, the grid's edges and the ``extra_rows`` lie outside ``dy``."""
    firsts = [(r0 if axis == 0 else 0) * s - pad
              for axis, (s, pad) in enumerate(zip(spec.strides, spec.pad_before))]
    slab = _slab(xp, dy, spec, n0, n1, firsts,
                 [first + cells * s for first, cells, s in zip(firsts, grid[1:], spec.strides)])
    rank, rows = spec.rank, math.prod(grid)
    split = xp.reshape(slab, (grid[0], *cells_by_stride(grid[1:], spec.strides), spec.filters))
    order = (0, *range(1, 2 * rank, 2), *range(2, 2 * rank + 1, 2), 2 * rank + 1)
    if not (is_numpy_namespace(xp) or is_torch_namespace(xp)):
        cells = xp.reshape(xp.permute_dims(split, order), (rows, -1))
        return xp.concat([cells, xp.zeros((extra_rows, cells.shape[1]), dtype=work,
                                          device=device_)])
    # One copy: the slab goes straight into the cells' (cells, residues) view of the buffer.
    values = math.prod(spec.strides) * spec.filters
    cells = empty(xp, (rows + extra_rows, values), work, device_)
    cells[rows:, ...] = 0
    grid_view = xp.reshape(cells[:rows, ...], (grid[0], *grid[1:], *spec.strides, spec.filters))
    inverse = sorted(range(len(order)), key=order.__getitem__)
    grid_view = xp.permute_dims(grid_view, tuple(inverse))
    grid_view[...] = split
    return cells


def _slab(xp, dy, spec: ConvTransposeSpec, n0, n1, firsts, stops):
    """Images ``n0:n1`` of ``dy`` from index ``firsts[a]`` to ``stops[a]`` along each spatial axis
    ``a``, zero-padded where those fall outside ``dy`` (a view where nothing does)."""
    index, widths = [slice(n0, n1)], [(0, 0)]
    for first, stop, out in zip(firsts, stops, spec.out_spatial):
        lo = min(max(first, 0), out)
        hi = min(max(stop, lo), out)
        before = min(max(lo - first, 0), stop - first)
        index.append(slice(lo, hi))
        widths.append((before, stop - first - before - (hi - lo)))
    slab = dy[(*index, slice(None))]
    if any(before or after for before, after in widths):
        slab = xpx.pad(slab, widths + [(0, 0)], xp=xp)
    return slab


def _piece_slab(xp, dy, spec: ConvTransposeSpec, n0, n1, geometry):
    """The slab of ``dy`` that the piece's pixels meet (``geometry``: per axis the piece's
    ``(start, length, k, s, d, pad_before)``), zero-padded where it falls outside ``dy``."""
    return _slab(xp, dy, spec, n0, n1,
                 [start * s - pad for start, _, _, s, _, pad in geometry],
                 [(start + length - 1) * s + (k - 1) * d - pad + 1
                  for start, length, k, s, d, pad in geometry])


def _windows(xp, dy, spec: ConvTransposeSpec, n0, n1, r0, r1, scratch: Scratch,
             taps_outer: bool = False):
    """The ``dy`` values each input pixel of the piece meets, (G, pixels, taps*Fg), on NumPy and
    torch in ``scratch``; with ``taps_outer`` (one group), the transposed view of a ``(taps*F,
    pixels)`` buffer, whose copies move runs of the image width where a few filters innermost
    would move runs of a few values (:func:`._tuning.few_filters`).

    Along each axis, input index ``i`` meets full-output index ``i*s + t*d``, index ``i*s + t*d
    - pad_before`` of ``dy``. NumPy and torch copy each tap's strided slice of ``dy`` into the
    buffer and set zeros where it falls outside ``dy`` (a zero-padded slab of ``dy`` to stack from
    cost a copy of the piece's ``dy``: 16 MB on HiFi-GAN's up2 and up4); other namespaces stack
    the tap slices of the piece's zero-padded slab (the slab alone, never a padded copy of all of
    ``dy``, which doubled a 3-D layer's memory)."""
    starts, lengths = (r0,) + (0,) * (spec.rank - 1), (r1 - r0, *spec.in_spatial[1:])
    geometry = list(zip(starts, lengths, spec.kernel_size, spec.strides, spec.dilation_rate,
                        spec.pad_before))
    pixels, taps = (n1 - n0) * math.prod(lengths), math.prod(spec.kernel_size)
    in_place = is_numpy_namespace(xp) or is_torch_namespace(xp)
    cells = spec.kernel_size == spec.strides and spec.dilation_rate == (1,) * spec.rank
    taps_outer = taps_outer and in_place and not cells
    if taps_outer:
        stacked = scratch.view(xp, "windows", (taps, spec.filters, n1 - n0, *lengths), dy.dtype,
                               device(dy))
    elif in_place:
        stacked = scratch.view(xp, "windows", (n1 - n0, *lengths, taps, spec.filters), dy.dtype,
                               device(dy))
    if cells:
        # Kernel == stride: each pixel's window is its own cell of s values per axis, so the
        # windows are the slab's cells reordered by one copy (unet3d_k2's backward: 550 -> 450
        # ms on NumPy, 455 -> 418 on torch against stacking its 8 tap slices; the same bits).
        slab = _piece_slab(xp, dy, spec, n0, n1, geometry)
        cells = xp.reshape(slab, (n1 - n0, *cells_by_stride(lengths, spec.strides), -1))
        rank = spec.rank
        order = (0, *range(1, 2 * rank, 2), *range(2, 2 * rank + 1, 2), 2 * rank + 1)
        if in_place:
            stacked = xp.reshape(stacked, (n1 - n0, *lengths, *spec.kernel_size, -1))
            stacked[...] = xp.permute_dims(cells, order)
        else:
            stacked = xp.permute_dims(cells, order)
    elif in_place:
        taps_firsts_bounds = []
        for tap in itertools.product(*(range(k) for k in spec.kernel_size)):
            firsts = [start * s + t * d - pad
                      for t, (start, _, _, s, d, pad) in zip(tap, geometry)]
            # Pixel i of the piece reads dy index first + i*s: inside dy for i in [lo, hi).
            bounds = [(min(length, max(0, -(first // s))),
                       max(0, min(length, (out - 1 - first) // s + 1)))
                      for first, (_, length, _, s, _, _), out
                      in zip(firsts, geometry, spec.out_spatial)]
            taps_firsts_bounds.append((firsts, bounds))
        # Zeros first, for every tap at once: along each axis, the pixels some tap reads outside
        # dy (one fill per edge rather than per tap); each tap's copy then overwrites its inside.
        for axis, length in enumerate(lengths):
            lo = max(bounds[axis][0] for _, bounds in taps_firsts_bounds)
            hi = min(bounds[axis][1] for _, bounds in taps_firsts_bounds)
            for outside in (slice(0, lo), slice(max(lo, hi), length)):
                if outside.start < outside.stop:
                    target = [slice(None)] * (spec.rank + 3)
                    target[axis + 3 if taps_outer else axis + 1] = outside
                    stacked[tuple(target)] = 0
        for index, (firsts, bounds) in enumerate(taps_firsts_bounds):
            if all(lo < hi for lo, hi in bounds):
                inside = tuple(slice(lo, hi) for lo, hi in bounds)
                tap_slice = dy[(slice(n0, n1), *(
                    slice(first + lo * s, first + (hi - 1) * s + 1, s)
                    for first, (lo, hi), s in zip(firsts, bounds, spec.strides)), slice(None))]
                if taps_outer:
                    stacked[(index, slice(None), slice(None), *inside)] = xp.permute_dims(
                        tap_slice, (spec.rank + 1, *range(spec.rank + 1)))
                else:
                    stacked[(slice(None), *inside, index)] = tap_slice
        if taps_outer:
            return xp.matrix_transpose(xp.reshape(stacked, (1, taps * spec.filters, pixels)))
    else:
        slab = _piece_slab(xp, dy, spec, n0, n1, geometry)
        windows = [slab[(slice(None), *(
            slice(t * d, t * d + (length - 1) * s + 1, s)
            for t, d, s, length in zip(tap, spec.dilation_rate, spec.strides, lengths)),
            slice(None))]
                   for tap in itertools.product(*(range(k) for k in spec.kernel_size))]
        stacked = xp.stack(windows, axis=spec.rank + 1)
    grouped = by_group(xp, xp.reshape(stacked, (pixels, taps, -1)), spec.groups, 2)
    return xp.reshape(grouped, (spec.groups, grouped.shape[1], -1))
