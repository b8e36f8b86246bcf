"""Dask arrays: one task per batch chunk, each a plain :func:`tconv.conv2d_transpose` call.

Images are independent along the batch axis, so a batch larger than memory streams through the
scheduler chunk by chunk. Every output pixel depends on every input channel and on a window of
input pixels, so the other axes cannot be split: an input chunked along them is first rechunked
to whole images (dask moves data for that), and the output comes chunked along the batch only.
The kernel and the bias are made single chunks and reach every task whole.

Each block is an ordinary array (NumPy, or CuPy for a CuPy-backed dask array), dispatched as any
caller's array would be. Nothing is computed before ``.compute()``.
"""

from __future__ import annotations

import dask
import dask.array as da
from dask.array.utils import meta_from_array

from ._spec import ConvTransposeSpec


def _batch_chunked(x):
    return x.rechunk({1: -1, 2: -1, 3: -1})


def _options(spec: ConvTransposeSpec, output_padding, backend: str) -> dict:
    return dict(strides=spec.strides, padding=spec.padding, output_padding=output_padding,
                data_format=spec.data_format, dilation_rate=spec.dilation_rate,
                groups=spec.groups, backend=backend)


def conv2d_transpose(x, kernel, bias, spec: ConvTransposeSpec, output_padding, backend):
    from ._dispatch import conv2d_transpose as conv2d_transpose_block

    options = _options(spec, output_padding, backend)

    def block(x_block, kernel, bias):
        return conv2d_transpose_block(x_block, kernel, bias, **options)

    axes = "nhwc" if spec.data_format == "channels_last" else "nchw"
    return da.blockwise(
        block, axes,
        _batch_chunked(x), axes,
        # Indices absent from the output: the whole (single-chunk) array reaches every task.
        kernel.rechunk(-1), "ABCD",
        None if bias is None else bias.rechunk(-1), None if bias is None else "E",
        adjust_chunks=dict(zip(axes[1:], spec.output_shape[1:])),
        concatenate=True, dtype=x.dtype, meta=meta_from_array(x, ndim=4),
    )


def conv2d_transpose_backward(dy, x, kernel, spec: ConvTransposeSpec, output_padding, backend):
    from ._dispatch import conv2d_transpose_backward as backward_block

    options = _options(spec, output_padding, backend)
    x = _batch_chunked(x)
    dy = dy.rechunk((x.chunks[0], -1, -1, -1))
    (kernel_whole,) = kernel.rechunk(-1).to_delayed().ravel()
    # One task per batch chunk yields all three gradients of that chunk.
    parts = [dask.delayed(backward_block, nout=3)(dy_block, x_block, kernel_whole, **options)
             for dy_block, x_block in zip(dy.to_delayed().ravel(), x.to_delayed().ravel())]
    meta = meta_from_array(x, ndim=4)
    dx = da.concatenate([
        da.from_delayed(part[0], shape=(rows,) + spec.input_shape[1:], dtype=x.dtype, meta=meta)
        for part, rows in zip(parts, x.chunks[0])], axis=0)
    # The kernel and bias gradients sum over the batch: per-chunk partials, then a tree sum.
    dkernel = da.stack([da.from_delayed(part[1], shape=spec.kernel_shape, dtype=x.dtype,
                                        meta=meta) for part in parts])
    dbias = da.stack([da.from_delayed(part[2], shape=(spec.filters,), dtype=x.dtype,
                                      meta=meta_from_array(x, ndim=1)) for part in parts])
    return dx, dkernel.sum(axis=0), dbias.sum(axis=0)
