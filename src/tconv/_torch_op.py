"""``tconv.conv2d_transpose`` for torch tensors as a ``torch.library`` custom op pair.

The forward op and the backward op are opaque to torch: ``register_fake`` gives ``torch.compile``
their output shapes (from :func:`tconv.make_spec`, as everywhere), and ``register_autograd`` wires
the backward op as the forward's gradient, so autograd and ``torch.compile(fullgraph=True)`` see one
node each and never break the graph. Custom ops take simple arguments only, so the spec travels as
its options and is rebuilt inside with ``make_spec``. The backward selects its backend from the same
``backend`` option and the same device as the forward did, hence it runs where the forward ran.

Imported by the dispatcher only when the caller's arrays are torch tensors.
"""

from __future__ import annotations

from typing import Optional

import torch

from ._backends import select_backend
from ._spec import ConvTransposeSpec, make_spec


def _op_arguments(spec: ConvTransposeSpec) -> dict:
    """The spec's options as the custom ops' keyword arguments (ints, lists, strings)."""
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in spec.options.keywords().items()}


def _rebuild_spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate,
                  groups, backend) -> ConvTransposeSpec:
    return make_spec(x.shape, kernel.shape, strides=strides, padding=padding,
                     output_padding=output_padding, data_format=data_format,
                     dilation_rate=dilation_rate, groups=groups, backend=backend)


@torch.library.custom_op("tconv::conv2d_transpose", mutates_args=())
def conv2d_transpose_op(x: torch.Tensor, kernel: torch.Tensor, bias: Optional[torch.Tensor],
                        strides: list[int], padding: str, output_padding: Optional[list[int]],
                        data_format: str, dilation_rate: list[int], groups: int,
                        backend: str) -> torch.Tensor:
    spec = _rebuild_spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate,
                         groups, backend)
    y = select_backend(backend, x).conv2d_transpose(x, kernel, bias, spec)
    # Fake tensors are contiguous; the real output must have the strides compile planned for.
    return y.contiguous()


@conv2d_transpose_op.register_fake
def _(x, kernel, bias, strides, padding, output_padding, data_format, dilation_rate, groups,
      backend):
    spec = _rebuild_spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate,
                         groups, backend)
    return x.new_empty(spec.output_shape)


@torch.library.custom_op("tconv::conv2d_transpose_backward", mutates_args=())
def conv2d_transpose_backward_op(dy: torch.Tensor, x: torch.Tensor, kernel: torch.Tensor,
                                 strides: list[int], padding: str,
                                 output_padding: Optional[list[int]], data_format: str,
                                 dilation_rate: list[int], groups: int,
                                 backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = _rebuild_spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate,
                         groups, backend)
    gradients = select_backend(backend, x).conv2d_transpose_backward(dy, x, kernel, spec)
    return tuple(g.contiguous() for g in gradients)


@conv2d_transpose_backward_op.register_fake
def _(dy, x, kernel, strides, padding, output_padding, data_format, dilation_rate, groups,
      backend):
    spec = _rebuild_spec(x, kernel, strides, padding, output_padding, data_format, dilation_rate,
                         groups, backend)
    return x.new_empty(x.shape), kernel.new_empty(kernel.shape), x.new_empty((spec.filters,))


_OPTION_NAMES = ("strides", "padding", "output_padding", "data_format", "dilation_rate", "groups",
                 "backend")


def _setup_context(ctx, inputs, output):
    x, kernel, bias, *options = inputs
    ctx.save_for_backward(x, kernel)
    ctx.options = dict(zip(_OPTION_NAMES, options))
    ctx.has_bias = bias is not None


def _backward(ctx, dy):
    x, kernel = ctx.saved_tensors
    # Upstream gradients are often broadcast views (stride 0); the kernels want dense memory.
    dx, dkernel, dbias = conv2d_transpose_backward_op(dy.contiguous(), x, kernel, **ctx.options)
    # One gradient per forward input: tensors first, then None for each option.
    return (dx, dkernel, dbias if ctx.has_bias else None) + (None,) * len(_OPTION_NAMES)


conv2d_transpose_op.register_autograd(_backward, setup_context=_setup_context)


def _setup_backward_context(ctx, inputs, output):
    dy, x, kernel, *options = inputs
    ctx.save_for_backward(dy, x, kernel)
    ctx.options = dict(zip(_OPTION_NAMES, options))


def _backward_of_backward(ctx, grad_dx, grad_dkernel, grad_dbias):
    """Double backward (gradient penalties, gradgradcheck). With F the forward, linear in x and
    in the kernel: <dx, a> = <dy, F(a, kernel)>, <dkernel, b> = <dy, F(x, b)>, <dbias, c> = <dy,
    c broadcast>; each gradient below is one of those pairings differentiated."""
    dy, x, kernel = ctx.saved_tensors
    options = ctx.options
    grad_dy = (conv2d_transpose_op(grad_dx, kernel, grad_dbias, **options)
               + conv2d_transpose_op(x, grad_dkernel, None, **options))
    grad_x = conv2d_transpose_backward_op(dy, x, grad_dkernel, **options)[0]
    grad_kernel = conv2d_transpose_backward_op(dy, grad_dx, kernel, **options)[1]
    return (grad_dy, grad_x, grad_kernel) + (None,) * len(_OPTION_NAMES)


conv2d_transpose_backward_op.register_autograd(_backward_of_backward,
                                               setup_context=_setup_backward_context)


def conv2d_transpose(x, kernel, bias, spec: ConvTransposeSpec):
    """The forward on torch tensors, differentiable and traceable."""
    return conv2d_transpose_op(x, kernel, bias, **_op_arguments(spec))


def conv2d_transpose_backward(dy, x, kernel, spec: ConvTransposeSpec):
    """The explicit backward on torch tensors, traceable."""
    return conv2d_transpose_backward_op(dy, x, kernel, **_op_arguments(spec))
