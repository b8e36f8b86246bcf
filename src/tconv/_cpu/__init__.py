"""The vectorized CPU path, written once against the Python array API standard.

It serves every namespace ``array_api_compat`` knows (NumPy, torch, array-api-strict, JAX, ...)
with one code path; the only framework tests are measured choices (:mod:`._tuning`: NumPy's
``matmul(out=)`` and torch's ``addmm(out=)`` where each output cell takes one product), JAX's lack
of in-place writes, and huge pages for torch's large CPU buffers (:func:`._arrays.empty`).
The only writes are into buffers made here: in place (adds into views of them, ``__setitem__``)
where the namespace allows, functional ``.at[]`` on JAX, so ``jax.jit`` and ``jax.grad`` trace
straight through and nothing the caller passed is written to.

Every rank (1, 2 or 3 spatial axes) goes through the same code: arrays are channels-last
``(N, *spatial, C)`` views, taps are tap blocks per axis combined by ``itertools.product``.

Forward: multiply first, then place. One GEMM ``x (pixels, Cin) @ (Cin, taps*F)`` gives every
input pixel's contribution through every tap, then :mod:`._placement` adds blocks of taps that
land together as strided adds (``prod(ceil(k/s))`` over the axes). No FLOP is spent on the
zeros of the "dilate the input, then convolve" view, no input is copied per tap (the im2col
alternative copies ``taps*Cin`` values per pixel, this writes ``taps*F``, and measured faster
on every 2-D benchmark layer, most of all for image outputs with 1-3 channels), and a padding
zero never multiplies a kernel tap, so a non-finite tap reaches only what it reaches from a real
pixel. The input goes through in pieces (runs of images, or bands along the first spatial axis
of one image) whose products fit in cache, so they are placed while still in cache. Where every
output cell takes exactly one product (kernel == stride) and the input has few channels, NumPy
multiplies straight into the output instead (``matmul(out=)``), with no products array at all;
torch multiplies every piece of every placement into one reused products buffer (a set-once
one's bias added by the GEMM).

Long rank-1 inputs (HiFi-GAN's k4 s2 layers) go by stride phase instead (:mod:`._phases`, chosen
by :func:`._tuning.by_phase`): per phase one GEMM of shared input windows by the phase's taps
(a reduction over taps x ``Cin``), written straight into the phase's view of the output: no
products array, no adds.

Kernels a whole number of strides long go by cells where that moves fewer values than the adds
(:mod:`._cells`, chosen by :func:`._tuning.by_cells`: fcn_x8's k16 s8, HiFi-GAN's up2 on NumPy): the
sub-pixel decomposition in uncropped output coordinates, one GEMM of the same input windows
(``span`` pixels per axis a cell) by a kernel with every residue's taps side by side, the products
then interleaved into the output with Keras' crop in one copy per run of cells. The phases and
the cells multiply window zeros by taps and taps' zero rows by pixels, so NaN and Inf reach more
outputs there than the definition says: a measured choice of either takes a finite kernel (a
non-finite one goes to the placements).

Backward (:mod:`._backward`): one gather of ``dy`` windows per piece (each tap's strided slice
of ``dy`` copied into one buffer every piece reuses, zeros where it falls outside ``dy``; taps
outermost where the forward takes them with a few filters, :func:`._tuning.few_filters`) feeds
the ``dx`` and ``dkernel`` GEMMs; on torch a piece makes no tensor at all (``dx`` rows multiplied
into ``dx``, ``dkernel`` summed by ``addmm_``: a tensor per piece took new heap each piece, see
:class:`._arrays.Scratch`), so its pieces hold at most a cache size of windows
(:func:`._tuning.backward_windows_budget`); where many taps share a cell of ``s`` output pixels
per axis and the gather is the cost (fcn_x8's k16 s8: 256 tap slices of 21 values per pixel;
chosen by :func:`._tuning.backward_by_cells`), each piece copies its ``dy`` once into cells
instead, laid flat so that every cell shift is a row offset: one GEMM for ``dx`` (then adds of
shifted row ranges) and one for ``dkernel``. Long rank-1 NumPy and torch inputs whose kernel is
a whole number of strides (HiFi-GAN's k4 s2 layers; :func:`._tuning.backward_by_shifts`) gather
nothing: each cell shift of every pixel's window is a view of ``dy`` itself, one GEMM per shift
for ``dx`` (torch's ``addmm_`` accumulating) and one for ``dkernel``.
Every result is a new C-contiguous array in the caller's layout, as TensorFlow and torch
return.

NumPy's GEMMs go in blocks fixed by their shapes, one BLAS thread each, shared out over the
threads the caller allows (:mod:`._blas`), so the bits do not depend on the thread count; the
forward's pieces go over the same threads, in turns of pieces whose outputs do not meet
(:func:`._tuning.disjoint_turns`), at least two a turn where the products allow
(:func:`._tuning.forward_budget`), so NumPy's adds run on every thread too; a piece shares its
own GEMM's blocks over the threads the pieces leave.

Modules: ``_blas`` (NumPy's GEMMs in fixed blocks), ``_arrays`` (layouts, dtype rule, buffers on
huge pages, writes, the grouped GEMM),
``_tuning`` (pieces and the measured choices, as a :class:`Tuning` value tests set),
``_placement`` (the forward's modes), ``_phases`` (the forward by stride phase), ``_cells`` (the
forward by cells), ``_backward``.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace, device

from .._spec import ConvTransposeSpec
from ._arrays import compute_dtype, itemsize, to_channels_last
from ._backward import conv2d_transpose_backward
from ._blas import on_one_blas_thread, share
from ._cells import forward_by_cells
from ._phases import forward_by_phase
from ._placement import make_placement
from ._tuning import Tuning, by_cells, by_phase, disjoint_turns, forward_budget, pieces

__all__ = ["Tuning", "compute_dtype", "conv2d_transpose", "conv2d_transpose_backward"]


@on_one_blas_thread
def conv2d_transpose(x, kernel, bias, spec: ConvTransposeSpec, *, tuning=Tuning()):
    """Forward pass; ``x`` in ``spec.data_format``, result in the same layout and dtype."""
    xp = array_namespace(x)
    out_dtype = x.dtype
    work = compute_dtype(xp, out_dtype)
    x = xp.astype(to_channels_last(xp, x, spec), work, copy=False)
    kernel = xp.astype(kernel, work, copy=False)
    if bias is not None:
        bias = xp.astype(bias, work, copy=False)
    if by_cells(xp, spec, tuning) and (tuning.by_cells or _finite(xp, kernel)):
        return forward_by_cells(xp, x, kernel, bias, spec, tuning, out_dtype, device(x))
    if by_phase(xp, spec, tuning) and (tuning.by_phase or _finite(xp, kernel)):
        return forward_by_phase(xp, x, kernel, bias, spec, tuning, out_dtype, device(x))
    placement = make_placement(xp, spec, tuning, bias, work, out_dtype, device(x))
    bytes_per_pixel = math.prod(spec.kernel_size) * spec.filters * itemsize(xp, work)

    def place(piece):
        n0, n1, r0, r1 = piece
        placement.add(x[n0:n1, r0:r1, ...], kernel, n0, r0)

    chosen = pieces(spec, tuning, bytes_per_pixel, forward_budget(xp, spec, bytes_per_pixel))
    for turn in disjoint_turns(spec, chosen):
        share(place, turn)
    return placement.output(out_dtype)


def _finite(xp, kernel) -> bool:
    """Whether every tap is finite. The forwards by phase and by cells multiply taps by their
    windows' zeros (outside the input), which gives a NaN or Inf tap outputs the definition keeps
    it from (``Inf * 0``); the placements never multiply a padding zero, so a non-finite kernel
    goes to them unless a :class:`Tuning` forces the windows."""
    return bool(xp.all(xp.isfinite(kernel)))
