"""The forward by cells: the sub-pixel decomposition in uncropped output coordinates, one GEMM
for every residue at once.

Along one axis, the uncropped output index ``u = o + pad_before`` splits into a cell ``c = u //
s`` and a residue ``rho = u % s``. Input index ``i`` reaches ``u = i*s + t*d``, so cell ``c``
takes the inputs ``c - delta`` for ``delta`` in ``0 .. span - 1``, ``span = (k-1)*d // s + 1``,
the same inputs for every residue (tap ``t`` with ``t*d = delta*s + rho``). So each cell's
outputs, all ``s`` residues per axis and every filter, are one row of ONE GEMM: the cell's window
of ``span`` input pixels per axis (zeros outside the input; :func:`._phases.input_windows`, the
same windows the forward by phase reads) times a ``(span^rank * Cin, s^rank * F)`` kernel, zero
rows where a residue has no tap at a window position. Compared with multiply-then-place the
reduction is ``span^rank`` times longer and nothing is added; compared with the phases the GEMM is
``s^rank`` times wider and one call per piece. The bias is added to each piece's products while
they are in cache, not by a column of ones as the phases do: OpenBLAS' sgemm gives bits that
depend on its thread count for reductions over 384 long that are not a multiple of 16 (HiFi-GAN
up1's 2 x 512 channels + 1), and ``span^rank * Cin`` alone usually is one.

The products ``(cells, residues, F)`` are then interleaved into the output with Keras' crop (and
output_padding) in the same copy: NumPy and torch view the output (in the caller's layout) as
cells of ``s`` starting at the first whole cell, and each piece sets at most three runs per axis
(a partial first cell, whole cells, a partial last cell) straight from the products. Other
namespaces (JAX functionally) set the products into an uncropped buffer and crop it at the end.

Like the phases, zero kernel rows meet window values and zero window values meet taps, so NaN
and Inf reach more outputs here than the definition says (the placements keep them exact, and
take every non-finite kernel the rule would send here).
Pieces are runs of images or bands of cell rows whose windows and products fit
:data:`._tuning.CACHE_BYTES`; NumPy and torch multiply every piece into one reused products
buffer (``matmul(out=)``). Groups multiply a block-diagonal kernel (correct, not fast).
"""

from __future__ import annotations

import functools
import itertools
import math

from array_api_compat import is_numpy_namespace, is_torch_namespace

from .._spec import ConvTransposeSpec
from ._arrays import (Scratch, add_into, empty, in_caller_layout, itemsize, set_into,
                      to_channels_last)
from ._blas import matmul, share
from ._phases import input_windows
from ._placement import cells_by_stride
from ._tuning import Tuning, cells_budget, grid_pieces


class _Axis:
    """One axis' cells: the first cell any output reaches (``first_cell``), how many (``rows``),
    the window (``span`` input pixels from ``first`` for window 0, as :func:`input_windows` reads
    them), where the output starts in the first cell (``crop``), and per window position and
    residue the tap that meets it (``None`` where none)."""

    def __init__(self, kernel_size, stride, dilation, pad_before, out_size):
        self.stride, self.out_size = stride, out_size
        self.span = (kernel_size - 1) * dilation // stride + 1
        self.first_cell = pad_before // stride
        self.rows = -(-(pad_before + out_size) // stride) - self.first_cell
        self.first = self.first_cell - self.span + 1
        self.crop = pad_before - self.first_cell * stride

        def tap(position, residue):        # window position a holds input c - (span - 1 - a)
            reach = (self.span - 1 - position) * stride + residue
            return reach // dilation if reach % dilation == 0 and reach < kernel_size * dilation \
                else None
        self.taps = [[tap(a, rho) for rho in range(stride)] for a in range(self.span)]

    def runs(self):
        """``(out_start, cells, width, cell, residue)``: runs of the output, ``cells`` cells of
        ``width`` outputs each, taken from product cells ``cell ..`` at residues ``residue ..``."""
        s, crop, out = self.stride, self.crop, self.out_size
        head = min(out, (s - crop) % s)
        whole = (out - head) // s
        tail = out - head - whole * s
        runs = []
        if head:
            runs.append((0, 1, head, 0, crop))
        if whole:
            runs.append((head, whole, s, int(head > 0), 0))
        if tail:
            runs.append((head + whole * s, 1, tail, int(head > 0) + whole, 0))
        return runs


def forward_by_cells(xp, x, kernel, bias, spec: ConvTransposeSpec, tuning: Tuning, out_dtype,
                     device_):
    """The forward of the channels-last ``x`` (compute dtype) by cells; the result in the
    caller's layout and ``out_dtype``."""
    axes = [_Axis(*geometry) for geometry in zip(
        spec.kernel_size, spec.strides, spec.dilation_rate, spec.pad_before, spec.out_spatial)]
    weights = xp.matrix_transpose(_cells_kernel(xp, kernel, axes, spec, device_))
    columns, width = weights.shape
    if bias is not None:        # per residue, the bias of every filter
        bias = xp.reshape(xp.broadcast_to(xp.reshape(bias, (1, -1)), (width // spec.filters,
                                                                       spec.filters)), (1, -1))
    in_place = is_numpy_namespace(xp) or is_torch_namespace(xp)
    if in_place:
        out = empty(xp, spec.output_shape, out_dtype, device_)
        target = to_channels_last(xp, out, spec)        # a view: the runs are set through it
    else:
        full = empty(xp, (spec.batch, *cells_by_stride([a.rows for a in axes], spec.strides),
                          spec.filters), x.dtype, device_)
    cells = tuning.piece_pixels
    if cells is None:
        cells = cells_budget(xp) // ((columns + width) * itemsize(xp, x.dtype))
    row_cells = math.prod(axis.rows for axis in axes[1:])
    scratch = Scratch()         # the pieces' products
    rank = spec.rank
    # (nb, rows..., s..., F) -> (nb, rows_1, s_1, ..., F): the output's order.
    order = (0, *(a for i in range(1, rank + 1) for a in (i, i + rank)), 2 * rank + 1)

    def multiply_piece(piece):      # pieces' outputs do not meet: each cell its own outputs
        nonlocal full
        n0, n1, j0, j1 = piece
        windows = input_windows(xp, x[n0:n1, ...], axes, j0, j1, False, device_)
        rows = xp.reshape(windows, (-1, columns))
        if in_place:
            products = matmul(xp, rows, weights, out=scratch.view(
                xp, "products", (rows.shape[0], width), x.dtype, device_))
            if bias is not None:
                products = add_into(xp, products, ..., bias)
        else:
            products = matmul(xp, rows, weights)
            if bias is not None:
                products = products + bias
        products = xp.reshape(products, (n1 - n0, j1 - j0, *(a.rows for a in axes[1:]),
                                         *spec.strides, spec.filters))
        if in_place:
            _set_runs(xp, target, products, order, axes, n0, n1, j0, j1)
        else:
            full = set_into(xp, full, (slice(n0, n1), slice(j0, j1), ...),
                            xp.permute_dims(products, order))

    share(multiply_piece, grid_pieces(spec.batch, axes[0].rows, row_cells, cells))
    if in_place:
        return out
    full = xp.reshape(full, (spec.batch, *(a.rows * a.stride for a in axes), spec.filters))
    cropped = full[(slice(None), *(slice(a.crop, a.crop + a.out_size) for a in axes),
                    slice(None))]
    return in_caller_layout(xp, cropped, spec, out_dtype)


def _cells_kernel(xp, kernel, axes, spec: ConvTransposeSpec, device_):
    """The kernel by cells, transposed: ``(s^rank * F, span^rank * Cin)``, rows residues then
    filters, columns in the windows' order (window positions, then input channels); zeros where
    a residue has no tap at a window position; block-diagonal by group. One gather of the
    kernel's ``(tap, filter)`` rows, each ``Cin`` contiguous values: the products are ``windows @
    weights.T``, which BLAS takes without a copy (transposing the kernel cost 45 of HiFi-GAN up1's
    190 ms on the loaded VM)."""
    fg, cin = spec.filters_per_group, spec.in_channels
    taps = math.prod(spec.kernel_size)
    tap_rows = _tap_rows(spec.kernel_size, spec.strides, spec.dilation_rate)
    rows = xp.reshape(kernel, (taps * fg, cin))
    if taps in tap_rows:
        rows = xp.concat((rows, xp.zeros((fg, cin), dtype=kernel.dtype, device=device_)))
    cells, positions = math.prod(spec.strides), math.prod(axis.span for axis in axes)
    index = (xp.reshape(xp.asarray(tap_rows, device=device_), (cells, 1, positions)) * fg
             + xp.reshape(xp.arange(fg, device=device_), (1, fg, 1)))
    weights = xp.take(rows, xp.reshape(index, (-1,)), axis=0)    # (cells * fg * positions, cin)
    if spec.groups > 1:
        groups, cg = spec.groups, spec.channels_per_group
        weights = xp.reshape(weights, (cells, 1, fg, positions, groups, cg))
        group = xp.arange(groups, device=device_)
        same = xp.reshape(group, (groups, 1, 1, 1, 1)) == xp.reshape(group, (1, 1, 1, groups, 1))
        weights = xp.where(same, weights, xp.zeros((), dtype=kernel.dtype, device=device_))
    return xp.reshape(weights, (cells * spec.filters, positions * cin))


@functools.cache
def _tap_rows(kernel_size: tuple, strides: tuple, dilation_rate: tuple) -> list:
    """Per (residues, window positions), in that order: the tap's index in the flattened taps,
    or ``prod(kernel_size)`` (the zero tap) where it has none along some axis."""
    axes = [_Axis(k, s, d, 0, 1) for k, s, d in zip(kernel_size, strides, dilation_rate)]
    rows = []
    for residues in itertools.product(*(range(axis.stride) for axis in axes)):
        for positions in itertools.product(*(range(axis.span) for axis in axes)):
            flat = 0
            for axis, k, a, rho in zip(axes, kernel_size, positions, residues):
                tap = axis.taps[a][rho]
                if tap is None:
                    flat = math.prod(kernel_size)
                    break
                flat = flat * k + tap
            rows.append(flat)
    return rows


def _set_runs(xp, target, products, order, axes, n0, n1, j0, j1):
    """Set a piece's products (cells ``j0:j1`` of the first axis) into the channels-last view
    ``target`` of the output: per combination of runs along the axes, one copy into the output
    viewed as ``(nb, cells_1, width_1, ..., F)``."""
    first_runs = []
    for start, cells, width, cell, residue in axes[0].runs():
        lo, hi = max(cell, j0), min(cell + cells, j1)
        if lo < hi:
            first_runs.append((start + (lo - cell) * width, hi - lo, width, lo - j0, residue))
    for runs in itertools.product(first_runs, *(axis.runs() for axis in axes[1:])):
        out_index, shape, cell_index, residue_index = [slice(n0, n1)], [n1 - n0], [], []
        for start, cells, width, cell, residue in runs:
            out_index.append(slice(start, start + cells * width))
            shape += [cells, width]
            cell_index.append(slice(cell, cell + cells))
            residue_index.append(slice(residue, residue + width))
        view = xp.reshape(target[(*out_index, slice(None))], (*shape, target.shape[-1]),
                          copy=False)
        view[...] = xp.permute_dims(
            products[(slice(None), *cell_index, *residue_index, slice(None))], order)
