"""Ranks 1 and 3 on the 2-D Triton kernels: every backend and route serves every rank Keras has.

The Triton kernels compute rank 2 (the CPU path computes every rank itself). :func:`lowered`
wraps a 2-D backend with
the backend contract (``conv2d_transpose(x, kernel, bias, spec)`` and
``conv2d_transpose_backward(dy, x, kernel, spec)``) for specs of any rank:

- rank 1 is rank 2 with a height of 1: the input, the kernel and ``dy`` get a unit axis (views,
  nothing copied) and the results lose it again;
- rank 3 is a sum over the kernel's depth taps. Depth tap ``td`` sends input depth ``i`` to
  output depth ``i*s + td*d - pad_front``, so with depth folded into the batch, ``x (N, D, H, W,
  C) -> (N*D, H, W, C)``, the 2-D transposed convolution with ``kernel[td]`` gives every depth's
  contribution through that tap, and one strided add along depth places it (what falls outside
  the output dropped). No FLOP is spent on a product that is dropped by more than the 2-D crop.
  The backward is the same loop transposed: per tap, the ``dy`` depths that tap reads
  (zeros beyond the output) against the folded input give that tap's ``dx`` share and
  ``dkernel[td]``.

Rank 2 never comes here (``_backends.select_backend`` hands 4-D arrays to the backend itself).
Like the CPU path, this writes only into buffers it made: in place where the namespace allows,
functionally on JAX, so ``jax.jit`` and ``jax.grad`` trace through.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import array_api_extra as xpx
from array_api_compat import array_namespace, device, is_jax_namespace

from ._cpu._arrays import add_into, compute_dtype
from ._spec import ConvTransposeSpec


@functools.cache
def lowered(backend):
    """``backend`` (a 2-D backend module) serving specs of rank 1 and 3."""
    return _Lowered(backend)


class _Lowered:
    """The backend contract for specs of rank 1 or 3 (rank 2 goes to the backend itself)."""

    def __init__(self, backend):
        self.backend = backend

    def conv2d_transpose(self, x, kernel, bias, spec: ConvTransposeSpec):
        forward = _forward_rank1 if spec.rank == 1 else _forward_rank3
        return forward(self.backend, x, kernel, bias, spec)

    def conv2d_transpose_backward(self, dy, x, kernel, spec: ConvTransposeSpec):
        backward = _backward_rank1 if spec.rank == 1 else _backward_rank3
        return backward(self.backend, dy, x, kernel, spec)


def _plane_spec(spec: ConvTransposeSpec, *, unit_height: bool, batch: int,
                data_format: str) -> ConvTransposeSpec:
    """A rank-2 spec: ``spec``'s axes under a unit height (rank 1, ``unit_height``), or its
    last two axes (rank 3, depth folded into ``batch``)."""
    def axes(values, unit):
        return (unit, *values) if unit_height else tuple(values[1:])

    options = spec.options
    output_padding, output_shape = options.output_padding, options.output_shape
    padding = options.padding
    plane_options = replace(
        options, rank=2, data_format=data_format, strides=axes(options.strides, 1),
        dilation_rate=axes(options.dilation_rate, 1),
        padding=padding if isinstance(padding, str) else axes(padding, (0, 0)),
        output_padding=None if output_padding is None else axes(output_padding, 0),
        output_shape=None if output_shape is None else axes(output_shape, 1))
    return replace(spec, options=plane_options, batch=batch,
                   kernel_size=axes(spec.kernel_size, 1), in_spatial=axes(spec.in_spatial, 1),
                   out_spatial=axes(spec.out_spatial, 1), pad_before=axes(spec.pad_before, 0))


# --- rank 1: a height of 1 -------------------------------------------------------------------

def _height_axis(spec: ConvTransposeSpec) -> int:
    return 1 if spec.data_format == "channels_last" else 2


def _forward_rank1(backend, x, kernel, bias, spec):
    xp = array_namespace(x)
    axis = _height_axis(spec)
    plane = _plane_spec(spec, unit_height=True, batch=spec.batch, data_format=spec.data_format)
    y = backend.conv2d_transpose(xp.expand_dims(x, axis=axis), xp.expand_dims(kernel, axis=0),
                                 bias, plane)
    return xp.squeeze(y, axis=axis)


def _backward_rank1(backend, dy, x, kernel, spec):
    xp = array_namespace(x)
    axis = _height_axis(spec)
    plane = _plane_spec(spec, unit_height=True, batch=spec.batch, data_format=spec.data_format)
    dx, dkernel, dbias = backend.conv2d_transpose_backward(
        xp.expand_dims(dy, axis=axis), xp.expand_dims(x, axis=axis),
        xp.expand_dims(kernel, axis=0), plane)
    return xp.squeeze(dx, axis=axis), xp.squeeze(dkernel, axis=0), dbias


# --- rank 3: a sum over depth taps ---------------------------------------------------------

def _channels_last(xp, a, spec: ConvTransposeSpec):
    return xp.permute_dims(a, (0, 2, 3, 4, 1)) if spec.data_format == "channels_first" else a


def _in_caller_layout(xp, a, spec: ConvTransposeSpec, dtype):
    """A new C-contiguous ``dtype`` array holding the channels-last ``a`` in the caller's
    layout."""
    if spec.data_format == "channels_first":
        a = xp.permute_dims(a, (0, 4, 1, 2, 3))
    if is_jax_namespace(xp) or (a.dtype == dtype and spec.data_format == "channels_last"):
        return xp.astype(a, dtype, copy=False)
    out = xp.empty(a.shape, dtype=dtype, device=device(a))
    out[...] = xp.astype(a, dtype, copy=False)
    return out


def _landing_depths(spec: ConvTransposeSpec, tap: int) -> tuple[int, int, int]:
    """For depth tap ``tap``: the input depths ``[i0, i1)`` that land inside the output, and
    the output depth the first of them lands on."""
    (length, *_), (stride, *_) = spec.in_spatial, spec.strides
    shift = tap * spec.dilation_rate[0] - spec.pad_before[0]
    i0 = max(0, -(shift // stride))          # ceil(-shift / stride), at least 0
    i1 = min(length, (spec.out_spatial[0] - 1 - shift) // stride + 1)
    return i0, i1, i0 * stride + shift


def _folded(xp, a, spec: ConvTransposeSpec):
    """Channels-last ``(N, D, H, W, C)`` folded to ``(N*D, H, W, C)``."""
    a = _channels_last(xp, a, spec)
    return xp.reshape(a, (a.shape[0] * a.shape[1], *a.shape[2:]))


def _forward_rank3(backend, x, kernel, bias, spec):
    xp = array_namespace(x)
    n, (d, *_), (od, oh, ow) = spec.batch, spec.in_spatial, spec.out_spatial
    work = compute_dtype(xp, x.dtype)
    plane = _plane_spec(spec, unit_height=False, batch=n * d, data_format="channels_last")
    x_folded = _folded(xp, x, spec)
    out = xp.zeros((n, od, oh, ow, spec.filters), dtype=work, device=device(x))
    if bias is not None:
        out = add_into(xp, out, ..., xp.astype(bias, work, copy=False))
    stride = spec.strides[0]
    for tap in range(spec.kernel_size[0]):
        i0, i1, first = _landing_depths(spec, tap)
        if i0 >= i1:
            continue
        y = backend.conv2d_transpose(x_folded, kernel[tap, ...], None, plane)
        y = xp.reshape(y, (n, d, oh, ow, spec.filters))[:, i0:i1, ...]
        index = (slice(None), slice(first, first + (i1 - i0 - 1) * stride + 1, stride), ...)
        out = add_into(xp, out, index, xp.astype(y, work, copy=False))
    return _in_caller_layout(xp, out, spec, x.dtype)


def _backward_rank3(backend, dy, x, kernel, spec):
    xp = array_namespace(x)
    n, (d, h, w), c = spec.batch, spec.in_spatial, spec.in_channels
    od, stride = spec.out_spatial[0], spec.strides[0]
    work = compute_dtype(xp, x.dtype)
    plane = _plane_spec(spec, unit_height=False, batch=n * d, data_format="channels_last")
    x_folded = _folded(xp, x, spec)
    dy_last = _channels_last(xp, dy, spec)
    # Tap td reads dy depths i*s + td*d - pad_front, i in [0, D): pad dy so all of them exist.
    reach = (d - 1) * stride + (spec.kernel_size[0] - 1) * spec.dilation_rate[0]
    before, after = spec.pad_before[0], max(0, reach - spec.pad_before[0] - (od - 1))
    dy_padded = dy_last
    if before or after:
        dy_padded = xpx.pad(dy_last, [(0, 0), (before, after), (0, 0), (0, 0), (0, 0)], xp=xp)
    dx, dkernel = None, []
    for tap in range(spec.kernel_size[0]):
        start = tap * spec.dilation_rate[0]
        dy_tap = dy_padded[:, start:start + (d - 1) * stride + 1:stride, ...]
        dy_tap = xp.reshape(dy_tap, (n * d, *dy_tap.shape[2:]))
        dx_tap, dkernel_tap, _ = backend.conv2d_transpose_backward(dy_tap, x_folded,
                                                                   kernel[tap, ...], plane)
        dx_tap = xp.astype(dx_tap, work, copy=False)
        dx = dx_tap if dx is None else add_into(xp, dx, ..., dx_tap)
        dkernel.append(dkernel_tap)
    dx = _in_caller_layout(xp, xp.reshape(dx, (n, d, h, w, c)), spec, x.dtype)
    dbias = xp.astype(xp.sum(xp.astype(dy_last, work, copy=False), axis=(0, 1, 2, 3)), x.dtype)
    return dx, xp.stack(dkernel, axis=0), dbias
