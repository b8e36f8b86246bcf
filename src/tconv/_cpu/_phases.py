"""The forward by stride phase: one GEMM per phase, with a reduction over every tap of the phase,
written straight into the phase's view of the output (the sub-pixel decomposition).

Along one axis, output index ``o = q*s + r`` (Keras' cropped output) takes the taps ``t`` with
``(r + pad_before - t*d) % s == 0``, tap ``t`` reading input index ``q + shift``, ``shift = (r +
pad_before - t*d) // s``. So the outputs of residue ``r`` (per axis: a phase) are one GEMM of
input windows and the phase's taps: rows ``(n, q...)``, a reduction over the phase's taps x
``Cin`` (2-4x longer than multiply-then-place's ``Cin``), no products array, no adds, every output
value written once.

The windows are shared by every phase: window ``j`` (per axis) holds the ``T`` consecutive input
pixels ``j + u0 .. j + u0 + T - 1`` (zeros outside the input), ``T`` the widest span of shifts of
any phase and ``u0`` the smallest shift; a phase reads windows ``q + offset`` and multiplies the
window positions it has no tap for (dilation, or ``k % s != 0``) by zero rows. A column of ones
carries the bias. The windows cost ``prod(T)`` copies of the input, made one piece (runs of
images, or bands of windows along the first spatial axis) at a time so they are still in cache
when the phases read them.

NumPy writes each phase's products straight into the output's strided view (``matmul(out=)``:
BLAS takes the view's row stride); the other namespaces set the products into that view (JAX
functionally). Groups multiply block-diagonal phase kernels (correct, not fast: the rule in
:func:`._tuning.by_phase` leaves them to the placements).
"""

from __future__ import annotations

import itertools
import math

from array_api_compat import is_numpy_namespace

from .._spec import ConvTransposeSpec
from ._arrays import empty, in_caller_layout, itemsize, set_into
from ._blas import matmul, share
from ._tuning import Tuning, grid_pieces, phase_budget


def axis_phases(kernel_size: int, stride: int, dilation: int, pad_before: int, out_size: int):
    """Per residue ``r`` of one axis: ``(r, cells, taps)``, ``cells`` the outputs ``q*s + r``
    inside the output and ``taps`` a dict ``shift -> tap``."""
    return [(r, max(0, -(-(out_size - r) // stride)),
             {(r + pad_before - t * dilation) // stride: t for t in range(kernel_size)
              if (r + pad_before - t * dilation) % stride == 0})
            for r in range(stride)]


class _Axis:
    """One axis' phases and its windows: ``first`` (the smallest shift), ``span`` (pixels per
    window), ``rows`` (windows any phase reads) and, per phase, ``(residue, cells, offset, taps)``
    with ``taps[a]`` the tap at window position ``a`` (``None`` where it has none)."""

    def __init__(self, kernel_size, stride, dilation, pad_before, out_size):
        self.stride = stride
        phases = axis_phases(kernel_size, stride, dilation, pad_before, out_size)
        live = [(r, cells, taps) for r, cells, taps in phases if taps and cells]
        self.first = min((min(taps) for _, _, taps in live), default=0)
        self.span = max((max(taps) - min(taps) + 1 for _, _, taps in live), default=1)
        self.phases = [(r, cells, min(taps) - self.first,
                        [taps.get(min(taps) + a) for a in range(self.span)])
                       for r, cells, taps in live]
        self.rows = max((offset + cells for _, cells, offset, _ in self.phases), default=0)
        # Outputs of residues no tap reaches hold the bias alone.
        self.bare = [r for r, cells, taps in phases if cells and not taps]


def forward_by_phase(xp, x, kernel, bias, spec: ConvTransposeSpec, tuning: Tuning, out_dtype,
                     device_):
    """The forward of the channels-last ``x`` (compute dtype) by stride phase; the result in the
    caller's layout and ``out_dtype``."""
    axes = [_Axis(*geometry) for geometry in zip(
        spec.kernel_size, spec.strides, spec.dilation_rate, spec.pad_before, spec.out_spatial)]
    out = empty(xp, (spec.batch, *spec.out_spatial, spec.filters), x.dtype, device_)
    out = _set_bare_outputs(xp, out, axes, bias, spec)
    columns = math.prod(axis.span for axis in axes) * spec.in_channels + (bias is not None)
    phases = [(combo, _phase_kernel(xp, kernel, bias, combo, spec, device_))
              for combo in itertools.product(*(axis.phases for axis in axes))]
    if phases and all(axis.rows for axis in axes):
        pixels = tuning.piece_pixels
        if pixels is None:
            pixels = phase_budget(xp) // (columns * itemsize(xp, x.dtype))
        row_pixels = math.prod(axis.rows for axis in axes[1:])

        def multiply_piece(piece):      # pieces' outputs do not meet: one window, one cell
            nonlocal out
            n0, n1, j0, j1 = piece
            windows = input_windows(xp, x[n0:n1, ...], axes, j0, j1, bias is not None, device_)
            for combo, phase_kernel in phases:
                out = _multiply_phase(xp, out, windows, phase_kernel, combo, axes, n0, n1, j0, j1)

        share(multiply_piece, grid_pieces(spec.batch, axes[0].rows, row_pixels, pixels))
    if spec.data_format == "channels_last" and x.dtype == out_dtype:
        return out
    return in_caller_layout(xp, out, spec, out_dtype)


def _set_bare_outputs(xp, out, axes, bias, spec):
    """The bias (or zeros) into the outputs of residues without taps along some axis."""
    value = 0.0 if bias is None else bias
    for axis_number, axis in enumerate(axes):
        for r in axis.bare:
            index = [slice(None)] * (spec.rank + 2)
            index[axis_number + 1] = slice(r, None, axis.stride)
            out = set_into(xp, out, tuple(index), value)
    return out


def _tap_matrix(xp, kernel, taps, spec: ConvTransposeSpec, device_):
    """Kernel tap ``taps`` (one per axis) as a ``(Cin, F)`` matrix, block-diagonal by group;
    zeros where a window position has no tap."""
    if any(tap is None for tap in taps):
        return xp.zeros((spec.in_channels, spec.filters), dtype=kernel.dtype, device=device_)
    tap = xp.matrix_transpose(kernel[(*taps, ...)])                # (Cin, Fg)
    if spec.groups == 1:
        return tap
    cg, fg = spec.channels_per_group, spec.filters_per_group
    zeros = xp.zeros((cg, fg), dtype=kernel.dtype, device=device_)
    return xp.concat([xp.concat([tap[g * cg:(g + 1) * cg, :] if h == g else zeros
                                 for h in range(spec.groups)], axis=1)
                      for g in range(spec.groups)], axis=0)


def _phase_kernel(xp, kernel, bias, combo, spec: ConvTransposeSpec, device_):
    """The phase's ``(columns, F)`` kernel: one ``(Cin, F)`` block per window position (in the
    windows' column order), then the bias row."""
    blocks = [_tap_matrix(xp, kernel, taps, spec, device_)
              for taps in itertools.product(*(phase_taps for *_, phase_taps in combo))]
    if bias is not None:
        blocks.append(xp.reshape(bias, (1, -1)))
    return xp.concat(blocks, axis=0)


def input_windows(xp, x_piece, axes, j0: int, j1: int, ones: bool, device_):
    """Windows ``j0:j1`` (first axis; all of the others) of the images ``x_piece``: ``(nb,
    *rows, columns)``, each row the window's pixels in order (zeros outside the input), then a
    one for the bias; window ``j`` of an axis starts at input pixel ``j + axis.first`` and holds
    ``axis.span`` of them, ``axis.rows`` windows (the phases' axes here, the cells' in
    :mod:`._cells`). Each window position is one strided copy of the input."""
    nb, *spatial, channels = x_piece.shape
    rows = [j1 - j0] + [axis.rows for axis in axes[1:]]
    starts = [j0 + axes[0].first] + [axis.first for axis in axes[1:]]
    positions = list(itertools.product(*(range(axis.span) for axis in axes)))
    windows = xp.empty((nb, *rows, len(positions) * channels + ones), dtype=x_piece.dtype,
                       device=device_)
    for p, position in enumerate(positions):
        block = slice(p * channels, (p + 1) * channels)
        # Window j reads input pixel j + start + a: inside the input for j in [lo, hi).
        bounds = [(min(count, max(0, -(start + a))), max(0, min(count, length - start - a)))
                  for a, start, count, length in zip(position, starts, rows, spatial)]
        for axis, (lo, hi) in enumerate(bounds):
            for outside in (slice(0, lo), slice(max(lo, hi), rows[axis])):
                if outside.start < outside.stop:
                    index = [slice(None)] * (len(rows) + 1) + [block]
                    index[axis + 1] = outside
                    windows = set_into(xp, windows, tuple(index), 0.0)
        if all(lo < hi for lo, hi in bounds):
            a_start = [start + a for a, start in zip(position, starts)]
            windows = set_into(
                xp, windows, (slice(None), *(slice(lo, hi) for lo, hi in bounds), block),
                x_piece[(slice(None), *(slice(lo + s, hi + s) for (lo, hi), s
                                        in zip(bounds, a_start)), slice(None))])
    if ones:
        windows = set_into(xp, windows, (..., slice(-1, None)), 1.0)
    return windows


def _multiply_phase(xp, out, windows, phase_kernel, combo, axes, n0, n1, j0, j1):
    """One phase's products of the windows ``j0:j1`` into its view of the output."""
    (r, cells, offset, _), *rest = combo
    q0, q1 = max(0, j0 - offset), min(cells, j1 - offset)
    if q0 >= q1:
        return out
    stride = axes[0].stride
    source = [slice(q0 + offset - j0, q1 + offset - j0)]
    target = [slice(r + q0 * stride, r + (q1 - 1) * stride + 1, stride)]
    for (r, cells, offset, _), axis in zip(rest, axes[1:]):
        source.append(slice(offset, offset + cells))
        target.append(slice(r, r + (cells - 1) * axis.stride + 1, axis.stride))
    rows = windows[(slice(None), *source, slice(None))]
    index = (slice(n0, n1), *target, slice(None))
    if is_numpy_namespace(xp):
        matmul(xp, rows, phase_kernel, out=out[index])
        return out
    return set_into(xp, out, index, matmul(xp, rows, phase_kernel))
