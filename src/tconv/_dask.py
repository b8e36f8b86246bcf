"""Dask arrays: one task per batch chunk, each a plain :func:`tconv.conv2d_transpose` call.

Images are independent along the batch axis, so a batch larger than memory streams through the
scheduler chunk by chunk. Every output pixel depends on every input channel and on a window of
input pixels, so the other axes cannot be split: an input chunked along them is first rechunked
to whole images (dask moves data for that), and the output comes chunked along the batch only.
The kernel and the bias are made single chunks and reach every task whole.

Each block is an ordinary array (NumPy, or CuPy for a CuPy-backed dask array) computed with the
call's options, by the backend (or, for CuPy on the GPU backend, the interop route) any caller's
array of that kind would get. Nothing is computed before ``.compute()``.
"""

from __future__ import annotations

import array_api_compat
import dask
import dask.array as da
from dask.array.utils import meta_from_array

from ._backends import select_backend
from ._spec import ConvTransposeSpec, spec_for


def _batch_chunked(x):
    return x.rechunk({1: -1, 2: -1, 3: -1})


def _block_implementation(spec: ConvTransposeSpec, x_block):
    """The module computing one block, and the spec of that block (its batch is the chunk's)."""
    block_spec = spec_for(spec.options, x_block.shape, spec.kernel_shape)
    if spec.backend != "cpu" and array_api_compat.is_cupy_array(x_block):
        from . import _interop

        return _interop, block_spec
    return select_backend(spec.backend, x_block), block_spec


def _forward_block(x_block, kernel, bias, spec: ConvTransposeSpec):
    implementation, block_spec = _block_implementation(spec, x_block)
    return implementation.conv2d_transpose(x_block, kernel, bias, block_spec)


def _backward_block(dy_block, x_block, kernel, spec: ConvTransposeSpec):
    implementation, block_spec = _block_implementation(spec, x_block)
    return implementation.conv2d_transpose_backward(dy_block, x_block, kernel, block_spec)


def conv2d_transpose(x, kernel, bias, spec: ConvTransposeSpec):
    def block(x_block, kernel, bias):
        return _forward_block(x_block, kernel, bias, spec)

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


def conv2d_transpose_backward(dy, x, kernel, spec: ConvTransposeSpec):
    x = _batch_chunked(x)
    dy = dy.rechunk((x.chunks[0], -1, -1, -1))
    (kernel_whole,) = kernel.rechunk(-1).to_delayed().ravel()
    # One task per batch chunk yields all three gradients of that chunk.
    parts = [dask.delayed(_backward_block, nout=3)(dy_block, x_block, kernel_whole, spec)
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
